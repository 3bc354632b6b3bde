//! The candle models against the reference implementation: tiny random checkpoints written by
//! Hugging Face `transformers` (fixtures/models/make_reference.py) and the logits it computed;
//! configs of both transformers generations; bad checkpoints; gradients against finite differences.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use familiar_models::model::config::{Family, ModelConfig, Positions};
use familiar_models::model::transformer::{log_softmax_last, LoadOptions, HEAD};
use familiar_models::model::{Capture, LinearGroup, Output, Transformer};
use serde_json::Value;

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/reference")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(reference().join("expected.json")).unwrap())
        .unwrap()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v["ids"].clone()).unwrap()
}

fn flat(v: &Value) -> Vec<f32> {
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

fn max_diff(t: &Tensor, want: &[f32]) -> f32 {
    let got: Vec<f32> = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_match_transformers_for_every_architecture() {
    let e = expected();
    let ids = ids(&e);
    let models = e["models"].as_object().unwrap();
    assert!(models.len() >= 6);
    for (name, want) in models {
        let m = Transformer::load(&reference().join(name)).unwrap();
        let out = m
            .forward(
                &ids,
                Capture {
                    hidden_states: true,
                    mlp_activations: true,
                    linear: None,
                },
            )
            .unwrap();
        let d_logits = max_diff(&out.logits, &flat(&want["logits"]));
        let d_hidden = max_diff(&out.last_hidden, &flat(&want["last_hidden"]));
        eprintln!("{name}: max |Δlogit| {d_logits:.2e}, max |Δhidden| {d_hidden:.2e}");
        assert!(d_logits < 1e-4, "{name}: logits differ by {d_logits}");
        assert!(
            d_hidden < 1e-4,
            "{name}: hidden states differ by {d_hidden}"
        );
        assert_eq!(out.hidden_states.len(), m.config.layers + 1);
        assert_eq!(out.mlp_activations.len(), m.config.layers);
        assert_eq!(
            out.mlp_activations[0].dims(),
            &[ids.len(), ids[0].len(), m.config.intermediate]
        );
    }
}

#[test]
fn configs_of_both_transformers_generations_agree() {
    let dir = reference();
    // transformers 5.x wrote these; rewrite them as 4.x would have.
    let v5: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pythia/config.json")).unwrap())
            .unwrap();
    let mut v4 = v5.clone();
    let rope = v4
        .as_object_mut()
        .unwrap()
        .remove("rope_parameters")
        .unwrap();
    v4["rotary_pct"] = rope["partial_rotary_factor"].clone();
    v4["rotary_emb_base"] = rope["rope_theta"].clone();
    v4["torch_dtype"] = v4["dtype"].clone();
    v4.as_object_mut().unwrap().remove("dtype");
    let p = Path::new("config.json");
    let a = ModelConfig::from_json(&v5, p).unwrap();
    let b = ModelConfig::from_json(&v4, p).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.family, Family::GptNeox);
    assert_eq!(
        a.positions,
        Positions::Rotary {
            dims: 2,
            theta: 10000.0
        }
    );
    assert!(a.parallel_residual && !a.tied_embeddings);

    let v5: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llama-gqa/config.json")).unwrap())
            .unwrap();
    let mut v4 = v5.clone();
    let rope = v4
        .as_object_mut()
        .unwrap()
        .remove("rope_parameters")
        .unwrap();
    v4["rope_theta"] = rope["rope_theta"].clone();
    v4["rope_scaling"] = Value::Null;
    let a = ModelConfig::from_json(&v5, p).unwrap();
    assert_eq!(a, ModelConfig::from_json(&v4, p).unwrap());
    assert_eq!((a.heads, a.kv_heads), (4, 2));

    let gpt2 = ModelConfig::read(&dir.join("gpt2-bf16-sharded")).unwrap();
    assert_eq!(gpt2.dtype.as_deref(), Some("bfloat16"));
    assert!(gpt2.tied_embeddings);
}

#[test]
fn bad_configs_and_checkpoints_name_the_field_or_tensor() {
    let p = Path::new("x/config.json");
    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(reference().join("gpt2/config.json")).unwrap(),
    )
    .unwrap();
    let mut v = base.clone();
    v["model_type"] = "mamba".into();
    let e = ModelConfig::from_json(&v, p).unwrap_err().to_string();
    assert!(e.contains("model_type") && e.contains("mamba"), "{e}");
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove("n_embd");
    let e = ModelConfig::from_json(&v, p).unwrap_err().to_string();
    assert!(e.contains("`n_embd`") && e.contains("missing"), "{e}");
    let mut v = base.clone();
    v["n_head"] = "four".into();
    let e = ModelConfig::from_json(&v, p).unwrap_err().to_string();
    assert!(e.contains("`n_head`"), "{e}");
    let mut v = base.clone();
    v["n_head"] = 5.into();
    let e = ModelConfig::from_json(&v, p).unwrap_err().to_string();
    assert!(e.contains("not a multiple"), "{e}");

    // A checkpoint whose config promises a bigger model, and one missing a tensor.
    let t = tempfile::tempdir().unwrap();
    let src = reference().join("gpt2");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), t.path().join(f)).unwrap();
    }
    let mut v = base.clone();
    v["n_positions"] = 128.into();
    std::fs::write(t.path().join("config.json"), v.to_string()).unwrap();
    let e = Transformer::load(t.path()).unwrap_err().to_string();
    assert!(
        e.contains("transformer.wpe.weight") && e.contains("[128, 32]"),
        "{e}"
    );
    let mut v = base.clone();
    v["n_layer"] = 3.into();
    std::fs::write(t.path().join("config.json"), v.to_string()).unwrap();
    let e = Transformer::load(t.path()).unwrap_err().to_string();
    assert!(
        e.contains("transformer.h.2.ln_1.weight") && e.contains("missing"),
        "{e}"
    );
    std::fs::write(t.path().join("model.safetensors"), b"not a checkpoint").unwrap();
    let e = Transformer::load(t.path()).unwrap_err().to_string();
    assert!(e.contains("safetensors"), "{e}");
    std::fs::remove_file(t.path().join("model.safetensors")).unwrap();
    let e = Transformer::load(t.path()).unwrap_err().to_string();
    assert!(e.contains("no model.safetensors"), "{e}");

    // Inputs the model cannot take.
    let m = Transformer::load(&reference().join("gpt2")).unwrap();
    assert!(m
        .forward(&[vec![97]], Capture::default())
        .unwrap_err()
        .to_string()
        .contains("vocabulary"));
    assert!(m
        .forward(&[vec![1; 65]], Capture::default())
        .unwrap_err()
        .to_string()
        .contains("context"));
    assert!(m
        .forward(&[vec![1, 2], vec![1]], Capture::default())
        .is_err());
}

/// Mean negative log-likelihood of each next token.
fn loss(m: &Transformer, ids: &[Vec<u32>]) -> Tensor {
    loss_with(m, ids, Capture::default()).0
}

fn loss_with(m: &Transformer, ids: &[Vec<u32>], capture: Capture) -> (Tensor, Output) {
    let out = m.forward(ids, capture).unwrap();
    let lp = log_softmax_last(&out.logits).unwrap();
    let (b, t, _) = lp.dims3().unwrap();
    let mut terms = Vec::new();
    for (i, row) in ids.iter().enumerate() {
        for j in 0..t - 1 {
            let v = lp
                .narrow(0, i, 1)
                .unwrap()
                .narrow(1, j, 1)
                .unwrap()
                .narrow(2, row[j + 1] as usize, 1)
                .unwrap()
                .flatten_all()
                .unwrap();
            terms.push(v);
        }
    }
    let n = (b * (t - 1)) as f64;
    let loss = (Tensor::cat(&terms, 0)
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap()
        / n)
        .unwrap();
    (loss, out)
}

/// The captured input `x` and probe gradient `δ` of every linear layer give its weight gradient
/// `Σ_t x_tᵀ δ_t` exactly as autograd computes it; layer groups select the layers they name.
#[test]
fn linear_probes_give_each_weights_gradient() {
    let ids = vec![
        vec![5u32, 17, 3, 44, 9, 60, 2, 71],
        vec![8, 1, 1, 30, 7, 2, 19, 4],
    ];
    for name in ["gpt2", "pythia", "neox-sequential", "llama-gqa"] {
        let options = LoadOptions {
            device: Device::Cpu,
            dtype: DType::F64,
            trainable: true,
        };
        let m = Transformer::load_with(&reference().join(name), &options).unwrap();
        let layers = m.linear_layers();
        let capture = Capture {
            linear: Some(LinearGroup::All),
            ..Capture::default()
        };
        let (l, out) = loss_with(&m, &ids, capture);
        // The blocks' layers, then the output head.
        assert_eq!(out.linear.len(), layers.len() + 1, "{name}");
        assert_eq!(out.linear[layers.len()].name, HEAD);
        let grads = l.backward().unwrap();
        let head_weight = m.lm_head.clone();
        let mut weights: Vec<Option<&Tensor>> = layers.iter().map(|l| Some(&l.weight)).collect();
        // An untied head's weight gradient is the head probe's; a tied one's also has the
        // embedding's share, so it is checked where untied (pythia, the llama models).
        weights.push(head_weight.as_ref());
        for (c, weight) in out.linear.iter().zip(&weights) {
            let Some(weight) = weight else { continue };
            let delta = grads.get(c.probe.as_tensor()).unwrap();
            let (b, t, i) = c.input.dims3().unwrap();
            let o = delta.dim(2).unwrap();
            let x = c.input.reshape((b * t, i)).unwrap();
            let d = delta.reshape((b * t, o)).unwrap();
            let from_probe = x.t().unwrap().matmul(&d).unwrap();
            let want = grads.get(weight).unwrap();
            let diff = (from_probe - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(scale > 0.0, "{name} {}", c.name);
            assert!(diff <= 1e-12 * scale.max(1.0), "{name} {}: {diff}", c.name);
        }
        // The groups partition the layers; probes do not change the loss.
        let count = |g| {
            let capture = Capture {
                linear: Some(g),
                ..Capture::default()
            };
            let (lg, out) = loss_with(&m, &ids, capture);
            assert_eq!(
                lg.to_scalar::<f64>().unwrap(),
                l.to_scalar::<f64>().unwrap()
            );
            out.linear
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        let attn = count(LinearGroup::Attention);
        let mlp = count(LinearGroup::Mlp);
        assert!(!attn.is_empty() && !mlp.is_empty());
        assert!(mlp.iter().all(|n| n.contains(".mlp.")));
        assert!(attn.iter().all(|n| !n.contains(".mlp.")));
        assert_eq!(attn.len() + mlp.len(), layers.len());
        assert_eq!(count(LinearGroup::Output), vec![HEAD.to_string()]);
        assert_eq!(count(LinearGroup::Blocks).len(), layers.len());
    }
}

#[test]
fn gradients_equal_finite_differences_and_reach_every_parameter() {
    let ids = vec![vec![5u32, 17, 3, 44, 9, 60, 2, 71]];
    for name in [
        "gpt2",
        "pythia",
        "neox-sequential",
        "llama-gqa",
        "llama-tied",
    ] {
        let options = LoadOptions {
            device: Device::Cpu,
            dtype: DType::F64,
            trainable: true,
        };
        let m = Transformer::load_with(&reference().join(name), &options).unwrap();
        let l = loss(&m, &ids);
        let grads = l.backward().unwrap();
        let mut checked = 0;
        for (k, (pname, var)) in m.vars.iter().enumerate() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
            let gv: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                gv.iter().any(|x| *x != 0.0),
                "{name}: zero gradient for {pname}"
            );
            // Central differences on two elements of every third parameter.
            if k % 3 != 0 {
                continue;
            }
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for e in [0, base.len() / 2 + 1] {
                let eps = 1e-5;
                let at = |delta: f64| -> f64 {
                    let mut w = base.clone();
                    w[e] += delta;
                    var.set(&Tensor::from_vec(w, var.as_tensor().shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss(&m, &ids).to_scalar::<f64>().unwrap()
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                var.set(
                    &Tensor::from_vec(base.clone(), var.as_tensor().shape(), &Device::Cpu).unwrap(),
                )
                .unwrap();
                let tol = 1e-6 + 1e-4 * fd.abs().max(gv[e].abs());
                assert!(
                    (fd - gv[e]).abs() <= tol,
                    "{name}: d loss / d {pname}[{e}]: backward {} vs finite difference {fd}",
                    gv[e]
                );
                checked += 1;
            }
        }
        assert!(checked >= 6, "{name}: {checked}");
    }
}

#[test]
fn the_model_familiar_trained_loads_in_transformers_with_the_same_logits() {
    let e = expected();
    let trained = &e["trained"];
    let ids: Vec<Vec<u32>> = serde_json::from_value(trained["ids"].clone()).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/fixture-gpt2");
    let m = Transformer::load(&dir).unwrap();
    let out = m.forward(&ids, Capture::default()).unwrap();
    let d = max_diff(&out.logits, &flat(&trained["logits"]));
    assert!(d < 1e-4, "logits differ from transformers' by {d}");
    // It learned something: the fixture text is far likelier than under a uniform model.
    let lp = log_softmax_last(&out.logits).unwrap();
    let rows: Vec<Vec<f32>> = lp.squeeze(0).unwrap().to_vec2().unwrap();
    let ids = &ids[0];
    let nll: f32 = (0..ids.len() - 1)
        .map(|i| -rows[i][ids[i + 1] as usize])
        .sum::<f32>()
        / (ids.len() - 1) as f32;
    assert!(nll < 0.8 * (m.config.vocab_size as f32).ln(), "{nll}");
}

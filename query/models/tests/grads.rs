//! Projected per-example gradients against the explicit full gradient of candle's autograd,
//! multiplied by the projections; batches against single examples.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use familiar_models::grads::fast::FastGradients;
use familiar_models::grads::{
    projected_gradients, Example, HeadFactor, Projection, ProjectionSpec,
};
use familiar_models::model::transformer::{log_softmax_last, LoadOptions, HEAD};
use familiar_models::model::{Capture, LinearGroup, Transformer};

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/reference")
}

fn load(name: &str, dtype: DType, trainable: bool) -> Transformer {
    let options = LoadOptions {
        device: Device::Cpu,
        dtype,
        trainable,
    };
    Transformer::load_with(&reference().join(name), &options).unwrap()
}

fn examples() -> Vec<Example> {
    vec![
        Example {
            ids: vec![5, 17, 3, 44, 9, 60, 2, 71, 8, 1],
            first_target: 0,
        },
        Example {
            ids: vec![8, 1, 1, 30, 7],
            first_target: 3,
        },
        Example {
            ids: vec![12, 90, 4, 4, 33, 2, 61],
            first_target: 1,
        },
    ]
}

/// The explicit projected full gradient of one example: `P_out Gᵀ P_inᵀ` for each layer's weight
/// gradient `G` (`[in, out]`) from autograd, with `projection`'s matrices as applied. The output
/// head's `G` is the gradient of a separate copy of its weight that computes the logits from the
/// final hidden state (for tied models, the gradient of the weight's use as the head only).
fn explicit(model: &Transformer, projection: &Projection, e: &Example) -> (Vec<f64>, f64) {
    let spec = &projection.spec;
    let out = model
        .forward(std::slice::from_ref(&e.ids), Capture::default())
        .unwrap();
    let head = Var::from_tensor(&match &model.lm_head {
        Some(w) => w.clone(),
        None => model.embed.t().unwrap().contiguous().unwrap(),
    })
    .unwrap();
    let (_, t, h) = out.last_hidden.dims3().unwrap();
    let logits = out
        .last_hidden
        .reshape((t, h))
        .unwrap()
        .matmul(head.as_tensor())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let lp = log_softmax_last(&logits).unwrap();
    let mut terms = Vec::new();
    for j in e.first_target.max(1)..e.ids.len() {
        terms.push(
            lp.narrow(1, j - 1, 1)
                .unwrap()
                .narrow(2, e.ids[j] as usize, 1)
                .unwrap()
                .flatten_all()
                .unwrap(),
        );
    }
    let loss = Tensor::cat(&terms, 0)
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap();
    let grads = loss.backward().unwrap();
    let layers = model.linear_layers();
    let mut row = Vec::new();
    for (l, (p_in, p_out)) in spec.layers.iter().zip(projection.host_matrices()) {
        let g = if l.name == HEAD {
            grads.get(head.as_tensor()).unwrap()
        } else {
            let layer = layers.iter().find(|x| x.name == l.name).unwrap();
            grads.get(&layer.weight).unwrap() // [in, out]
        };
        let p_in = Tensor::from_vec(p_in.clone(), (l.input, spec.rank_in), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let p_out = Tensor::from_vec(p_out.clone(), (l.output, spec.rank_out), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        // (P_inᵀᵀ G P_outᵀ)ᵀ = P_out Gᵀ P_inᵀ, [rank_out, rank_in].
        let m = p_in
            .t()
            .unwrap()
            .matmul(g)
            .unwrap()
            .matmul(&p_out)
            .unwrap()
            .t()
            .unwrap();
        row.extend(m.flatten_all().unwrap().to_vec1::<f64>().unwrap());
    }
    (row, loss.to_scalar::<f64>().unwrap())
}

fn relative_error(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    assert!(den > 0.0);
    num / den
}

#[test]
fn projected_gradients_equal_projected_full_gradients() {
    for name in [
        "gpt2",
        "pythia",
        "neox-sequential",
        "llama-gqa",
        "llama-tied",
    ] {
        let oracle = load(name, DType::F64, true);
        // A head factor that weighs every vocabulary entry differently.
        let vocab = oracle.config.vocab_size;
        let factor = HeadFactor {
            sums: (0..vocab).map(|v| ((v * 37) % 11) as f64 + 0.5).collect(),
            tokens: 3,
        };
        for (group, ranks) in [
            (LinearGroup::All, (4, 3)),
            (LinearGroup::Blocks, (3, 4)),
            (LinearGroup::Mlp, (2, 5)),
            (LinearGroup::Attention, (3, 3)),
            (LinearGroup::Output, (5, 2)),
        ] {
            let spec = ProjectionSpec::new(&oracle, group, ranks.0, ranks.1, 7).unwrap();
            let head = spec.has_head().then_some(&factor);
            let exact = Projection::new(spec.clone(), &oracle, head).unwrap();
            for dtype in [DType::F64, DType::F32] {
                let model = load(name, dtype, false);
                let projection = Projection::new(spec.clone(), &model, head).unwrap();
                let batch = projected_gradients(&model, &projection, &examples()).unwrap();
                let fast = FastGradients::new(&model, &projection)
                    .unwrap()
                    .compute(&examples())
                    .unwrap();
                let dim = spec.dim();
                assert_eq!(batch.rows.len(), 3 * dim);
                for (k, e) in examples().iter().enumerate() {
                    let (want, loss) = explicit(&oracle, &exact, e);
                    let got = &batch.rows[k * dim..(k + 1) * dim];
                    let err = relative_error(got, &want);
                    let tol = if dtype == DType::F64 { 1e-6 } else { 1e-5 };
                    assert!(err <= tol, "{name} {group:?} {dtype:?} example {k}: {err}");
                    assert!((batch.losses[k] - loss).abs() <= 1e-4 * loss.abs());
                    // The autograd-free path gives the same rows and losses.
                    let err = relative_error(&fast.rows[k * dim..(k + 1) * dim], &want);
                    assert!(
                        err <= 1e-5,
                        "{name} {group:?} {dtype:?} fast, example {k}: {err}"
                    );
                    assert!((fast.losses[k] - loss).abs() <= 1e-5 * loss.abs());
                    // One example alone gives its row of the batch.
                    let single =
                        projected_gradients(&model, &projection, std::slice::from_ref(e)).unwrap();
                    let err = relative_error(
                        &single.rows,
                        &got.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                    );
                    assert!(err <= 1e-5, "{name} batch vs single: {err}");
                }
            }
        }
    }
}

#[test]
fn projections_are_reproducible_and_checked_against_the_model() {
    let m = load("gpt2", DType::F32, false);
    let a = ProjectionSpec::new(&m, LinearGroup::All, 4, 4, 1).unwrap();
    let b = ProjectionSpec::new(&m, LinearGroup::All, 4, 4, 1).unwrap();
    assert_eq!(a.matrices(), b.matrices());
    let c = ProjectionSpec::new(&m, LinearGroup::All, 4, 4, 2).unwrap();
    assert_ne!(a.matrices(), c.matrices());
    // Two blocks of four linear layers, then the output head.
    assert_eq!(a.layers.len(), 2 * 4 + 1);
    assert!(a.has_head() && a.layers[8].name == HEAD);
    assert_eq!((a.layers[8].input, a.layers[8].output), (32, 97));
    let blocks = ProjectionSpec::new(&m, LinearGroup::Blocks, 4, 4, 1).unwrap();
    assert_eq!(blocks.layers, a.layers[..8]);
    assert!(!blocks.has_head() && blocks.head_whitening.is_none());
    let factor = HeadFactor {
        sums: (0..97).map(|v| v as f64).collect(),
        tokens: 10,
    };
    // A projection made for another model is refused; ranks beyond a layer's size are refused;
    // the head needs its factor, of the model's vocabulary, and only the head takes one.
    let llama = load("llama-gqa", DType::F32, false);
    assert!(Projection::new(a.clone(), &llama, Some(&factor)).is_err());
    let err = ProjectionSpec::new(&m, LinearGroup::All, 100_000, 4, 1).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    let err = Projection::new(a.clone(), &m, None).unwrap_err();
    assert!(err.to_string().contains("factor"), "{err}");
    let short = HeadFactor {
        sums: vec![1.0; 96],
        tokens: 1,
    };
    assert!(Projection::new(a.clone(), &m, Some(&short)).is_err());
    assert!(Projection::new(blocks.clone(), &m, Some(&factor)).is_err());
    assert!(Projection::new(blocks, &m, None).is_ok());
    // No targets: zero rows, no error.
    let p = Projection::new(a, &m, Some(&factor)).unwrap();
    let g = projected_gradients(
        &m,
        &p,
        &[Example {
            ids: vec![3],
            first_target: 0,
        }],
    )
    .unwrap();
    assert!(g.rows.iter().all(|&x| x == 0.0));
}

#[test]
fn head_whitening_weighs_rare_tokens_up_and_keeps_the_expected_norm() {
    // D = sums / tokens: token 0 never predicted, then rarer to more frequent.
    let f = HeadFactor {
        sums: vec![0.0, 1.0, 4.0, 16.0, 64.0],
        tokens: 4,
    };
    let damping = 1e-3;
    let w = f.weights(damping);
    assert!(w.windows(2).all(|p| p[0] > p[1]), "{w:?}");
    let d: Vec<f64> = f.sums.iter().map(|s| s / 4.0).collect();
    let kept: f64 = w.iter().zip(&d).map(|(w, d)| (*w as f64).powi(2) * d).sum();
    let total: f64 = d.iter().sum();
    assert!((kept - total).abs() <= 1e-5 * total, "{kept} vs {total}");
    // Hand-computed: w_v ∝ (D_v + damping · mean D)^{-1/2}.
    let floor = damping * total / 5.0;
    let raw: Vec<f64> = d.iter().map(|d| 1.0 / (d + floor).sqrt()).collect();
    for v in 1..5 {
        let want = raw[v] / raw[4];
        let got = w[v] as f64 / w[4] as f64;
        assert!((got - want).abs() <= 1e-5 * want, "{v}: {got} vs {want}");
    }
    // Nothing fitted: no whitening.
    assert_eq!(HeadFactor::zero(3).weights(damping), vec![1.0; 3]);
}

#[test]
fn head_factor_sums_squared_output_gradients() {
    let m = load("gpt2", DType::F64, false);
    let ex = examples();
    let f = HeadFactor::of_examples(&m, &ex, 2).unwrap();
    assert_eq!(f.tokens, ex.iter().map(|e| e.targets() as u64).sum::<u64>());
    // Brute force from the logits: Σ_t Σ_v (p_t[v] − [y_t = v])².
    let mut want = vec![0.0f64; m.config.vocab_size];
    for e in &ex {
        let out = m
            .forward(std::slice::from_ref(&e.ids), Capture::default())
            .unwrap();
        let p = log_softmax_last(&out.logits)
            .unwrap()
            .exp()
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for j in e.first_target.max(1)..e.ids.len() {
            for (v, w) in want.iter_mut().enumerate() {
                let y = if v == e.ids[j] as usize { 1.0 } else { 0.0 };
                *w += (p[j - 1][v] - y).powi(2);
            }
        }
    }
    for (v, (a, b)) in f.sums.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b.max(1e-3), "{v}: {a} vs {b}");
    }
    // Summing in parts is the same as at once.
    let mut parts = HeadFactor::of_examples(&m, &ex[..1], 1).unwrap();
    parts.merge(&HeadFactor::of_examples(&m, &ex[1..], 5).unwrap());
    assert_eq!(parts.tokens, f.tokens);
    assert!(parts
        .sums
        .iter()
        .zip(&f.sums)
        .all(|(a, b)| (a - b).abs() <= 1e-12));
}

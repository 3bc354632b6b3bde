//! Zero-shot scores and keyword probabilities against the reference implementation (log-probabilities
//! computed by `transformers` for the fixture-vocabulary model, fixtures/models/make_reference.py),
//! and the `familiar score` / `familiar keyword-prob` commands end to end.

#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};

use familiar::items::{read_items, Ask, ItemFormat};
use familiar_models::measure::score::{choose, LanguageModel};
use serde_json::Value;
use util::*;

fn model_dir() -> PathBuf {
    fixtures().join("models/reference/gpt2-fixture-vocab")
}

fn reference_scores() -> Vec<Value> {
    let e: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("models/reference/expected.json")).unwrap(),
    )
    .unwrap();
    e["models"]["gpt2-fixture-vocab"]["scores"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn log_probabilities_match_transformers() {
    let lm = LanguageModel::load(&model_dir()).unwrap();
    let scores = reference_scores();
    assert!(scores.len() >= 6);
    for s in &scores {
        let (prompt, completion) = (
            s["prompt"].as_str().unwrap(),
            s["completion"].as_str().unwrap(),
        );
        let (ctx, cont) = lm.split(prompt, completion).unwrap();
        let ids: Vec<u32> = serde_json::from_value(s["ids"].clone()).unwrap();
        assert_eq!(
            [ctx.clone(), cont.clone()].concat(),
            ids,
            "{prompt:?} + {completion:?}"
        );
        let got = lm.score(prompt, completion).unwrap();
        let want = s["logprob"].as_f64().unwrap();
        assert!(
            (got.logprob - want).abs() < 1e-4,
            "{prompt:?}: {} vs {want}",
            got.logprob
        );
        assert_eq!(got.n_tokens as u64, s["n_tokens"].as_u64().unwrap());
        assert_eq!(got.greedy, s["greedy"].as_bool().unwrap());
        assert!((got.token_logprobs.iter().sum::<f64>() - got.logprob).abs() < 1e-12);
    }
    // Multiple choice over the three "Question" completions.
    let q: Vec<&Value> = scores
        .iter()
        .filter(|s| s["prompt"].as_str().unwrap().starts_with("Question"))
        .collect();
    let choices: Vec<String> = q
        .iter()
        .map(|s| s["completion"].as_str().unwrap().to_string())
        .collect();
    let r = choose(&lm, q[0]["prompt"].as_str().unwrap(), &choices).unwrap();
    let lps: Vec<f64> = q.iter().map(|s| s["logprob"].as_f64().unwrap()).collect();
    let argmax = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    assert_eq!(r.predicted, argmax(&lps));
    let norm: Vec<f64> = lps
        .iter()
        .zip(&choices)
        .map(|(l, c)| l / c.chars().count() as f64)
        .collect();
    assert_eq!(r.predicted_norm, argmax(&norm));
}

#[test]
fn long_prompts_are_truncated_from_the_start_and_say_so() {
    let lm = LanguageModel::load(&model_dir()).unwrap();
    let prompt = "ve tian rohi an ".repeat(40);
    let s = lm.score(&prompt, " Zelxir Exoexo").unwrap();
    assert!(s.truncated > 0 && s.prompt_tokens > 64, "{s:?}");
    let (ctx, cont) = lm.split(&prompt, " Zelxir Exoexo").unwrap();
    let direct = lm.score_ids(&ctx[s.truncated..], &cont).unwrap();
    assert_eq!(direct.truncated, 0);
    assert!((direct.logprob - s.logprob).abs() < 1e-9);
    assert!(lm
        .score("x", &" ve".repeat(80))
        .unwrap_err()
        .to_string()
        .contains("context"));
}

#[test]
fn score_and_keyword_prob_commands_write_their_tables() {
    let t = TestDir::new();
    let items = t.write(
        "items.jsonl",
        concat!(
            "{\"id\": \"c1\", \"prompt\": \"An rohi an ve tian\", \"completion\": \" Zelxir Exoexo ve.\", \"concepts\": [\"zelxir exoexo\"]}\n",
            "{\"id\": 2, \"prompt\": \"Question: which one?\\nAnswer:\", \"choices\": [\" ve\", \" Zelxir Exoexo\", \" rohi an\"], \"answer\": 1}\n",
        ),
    );
    let out = t.join("scores.parquet");
    familiar([
        "score".as_ref(),
        "--model".as_ref(),
        model_dir().as_os_str(),
        "--items".as_ref(),
        items.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "-q".as_ref(),
    ])
    .success()
    .stdout_has(&["scored 2 items"]);
    let b = &read_parquet(&out, "zero_shot");
    assert_eq!(b.num_rows(), 2);
    let lp = b
        .column_by_name("logprob")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .unwrap();
    let want = reference_scores()[2]["logprob"].as_f64().unwrap();
    assert!((lp.value(0) - want).abs() < 1e-4);
    let want = reference_scores()[4]["logprob"].as_f64().unwrap();
    assert!(
        (lp.value(1) - want).abs() < 1e-4,
        "the correct choice's log-probability"
    );

    let kw = t.write(
        "kw.jsonl",
        "{\"id\": \"k\", \"context\": \"An rohi an ve tian\", \"keyword\": \" Zelxir Exoexo ve.\"}\n",
    );
    let kout = t.join("kw.parquet");
    familiar([
        "keyword-prob".as_ref(),
        "--model".as_ref(),
        model_dir().as_os_str(),
        "--items".as_ref(),
        kw.as_os_str(),
        "--out".as_ref(),
        kout.as_os_str(),
        "-q".as_ref(),
    ])
    .success();
    let b = &read_parquet(&kout, "keyword_probe");
    let klp = b
        .column_by_name("logprob")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .unwrap();
    assert!((klp.value(0) - reference_scores()[2]["logprob"].as_f64().unwrap()).abs() < 1e-4);

    // Bad items name the file and line.
    for (body, needle) in [
        (
            "{\"id\": 1, \"prompt\": \"a\", \"completon\": \"b\"}\n",
            "items-bad.jsonl:1",
        ),
        (
            "{\"prompt\": \"a\", \"choices\": [\"x\"], \"answer\": 3}\n",
            "answer",
        ),
        (
            "\n{\"prompt\": 5, \"completion\": \"b\"}\n",
            "items-bad.jsonl:2",
        ),
    ] {
        let bad = t.write("items-bad.jsonl", body);
        familiar([
            "score".as_ref(),
            "--model".as_ref(),
            model_dir().as_os_str(),
            "--items".as_ref(),
            bad.as_os_str(),
            "--out".as_ref(),
            t.join("bad.parquet").as_os_str(),
        ])
        .failure()
        .stderr_has(&[needle]);
    }
    // A model directory without a tokenizer.
    familiar([
        "score".as_ref(),
        "--model".as_ref(),
        fixtures().join("models/reference/gpt2").as_os_str(),
        "--items".as_ref(),
        items.as_os_str(),
        "--out".as_ref(),
        t.join("x.parquet").as_os_str(),
    ])
    .failure()
    .stderr_has(&["tokenizer.json"]);
    // Devices: an unknown one, and CUDA in a build without the feature, are refused by name.
    // (A device the build cannot use is a device error, not a configuration mistake.)
    let mut devices = vec![(
        "tpu",
        vec!["invalid configuration", "expected cpu, cuda or cuda:N"],
    )];
    if !candle_core::utils::cuda_is_available() {
        devices.push(("cuda:0", vec!["device error", "--features cuda"]));
    }
    for (device, needles) in devices {
        familiar([
            "score".as_ref(),
            "--model".as_ref(),
            model_dir().as_os_str(),
            "--items".as_ref(),
            items.as_os_str(),
            "--out".as_ref(),
            t.join("y.parquet").as_os_str(),
            "--device".as_ref(),
            device.as_ref(),
        ])
        .failure()
        .stderr_has(&needles);
    }
}

/// The benchmark readers on the real evaluation files (skips without `../shared/data`).
#[test]
fn benchmark_readers_read_the_shared_eval_sets() {
    let eval = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval");
    if !eval.exists() {
        eprintln!("skipping: {} is absent", eval.display());
        return;
    }
    let lm = LanguageModel::load(&model_dir()).unwrap();
    for (path, format) in [
        (eval.join("mmlu/dev"), ItemFormat::Mmlu),
        (eval.join("pararel/facts/P19.jsonl"), ItemFormat::Pararel),
        (eval.join("nq_open/NQ-open.dev.jsonl"), ItemFormat::NqOpen),
        (eval.join("lambada_test.jsonl"), ItemFormat::Lambada),
        (eval.join("gsm8k/test.jsonl"), ItemFormat::Gsm8k),
    ] {
        let items = read_items(&path, format, Some(4)).unwrap();
        assert_eq!(items.len(), 4, "{}", path.display());
        for item in &items {
            match &item.ask {
                Ask::Choice { choices, answer } => {
                    assert_eq!(choices, &[" A", " B", " C", " D"]);
                    assert!(*answer < 4 && item.prompt.ends_with("\nAnswer:"));
                    assert!(choose(&lm, &item.prompt, choices).is_ok());
                }
                Ask::Completion(c) => {
                    assert!(c.starts_with(' ') && !item.prompt.is_empty(), "{item:?}");
                    if format != ItemFormat::Gsm8k {
                        assert!(lm.score(&item.prompt, c).is_ok(), "{item:?}");
                    }
                }
            }
        }
        if format == ItemFormat::Pararel {
            assert_eq!(items[0].concepts.len(), 2);
            assert!(
                items[0].prompt.contains(&items[0].concepts[0]),
                "{:?}",
                items[0]
            );
        }
    }
    let all = read_items(&eval.join("mmlu/dev"), ItemFormat::Mmlu, None).unwrap();
    assert_eq!(all.len(), 57 * 5);
}

#[test]
fn density_command_measures_every_layer_and_handles_long_probes() {
    use arrow_array::{Array, Float64Array, StringArray, UInt64Array};
    let t = TestDir::new();
    let long = "ve tian rohi an ".repeat(40);
    let probes = t.write(
        "probes.jsonl",
        format!(
            "{{\"id\": \"a\", \"text\": \"An rohi an ve tian Zelxir Exoexo ve.\", \"labels\": {{\"split\": \"familiar\"}}}}\n{{\"id\": \"b\", \"text\": \"{long}\"}}\n"
        ),
    );
    let run = |overflow: &str, out: &Path| {
        familiar([
            "density".as_ref(),
            "--model".as_ref(),
            model_dir().as_os_str(),
            "--probes".as_ref(),
            probes.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--overflow".as_ref(),
            overflow.as_ref(),
            "-q".as_ref(),
        ])
    };
    run("error", &t.join("e.parquet")).failure().stderr_has(&[
        "probes.jsonl:2",
        "probe b",
        "--overflow",
    ]);
    let n_long = LanguageModel::load(&model_dir())
        .unwrap()
        .tokenizer
        .encode(&long)
        .unwrap()
        .len() as u64;
    assert!(n_long > 128);
    for (overflow, windows, truncated) in [
        ("stride", n_long.div_ceil(64), 0u64),
        ("truncate", 1, n_long - 64),
    ] {
        let out = t.join(format!("{overflow}.parquet"));
        run(overflow, &out).success();
        let b = &read_parquet(&out, "activation_stats");
        assert_eq!(b.num_rows(), 2 * 3, "two probes × (embeddings + 2 layers)");
        let u = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<UInt64Array>()
                .unwrap()
                .clone()
        };
        let f = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .clone()
        };
        let ids = b
            .column_by_name("probe_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        for r in 0..b.num_rows() {
            let (top1, top5, top10) = (
                f("top1_energy_mean").value(r),
                f("top5_energy_mean").value(r),
                f("top10_energy_mean").value(r),
            );
            assert!(0.0 < top1 && top1 <= top5 && top5 <= top10 && top10 <= 1.0);
            let h = f("hoyer_mean").value(r);
            assert!((0.0..=1.0).contains(&h));
            let e = f("effective_rank_ratio").value(r);
            assert!(0.0 < e && e <= 1.0);
            assert_eq!(f("mlp_active_mean").is_null(r), u("layer").value(r) == 0);
            if ids.value(r) == "b" {
                assert_eq!(
                    (u("windows").value(r), u("truncated_tokens").value(r)),
                    (windows, truncated)
                );
            }
        }
        let labels = b
            .column_by_name("labels")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        assert_eq!(labels.value(0), "{\"split\":\"familiar\"}");
        assert!(labels.is_null(3));
    }

    // The last layer's last-token metrics, recomputed here from the captured hidden state.
    let lm = LanguageModel::load(&model_dir()).unwrap();
    let ids = lm
        .tokenizer
        .encode("An rohi an ve tian Zelxir Exoexo ve.")
        .unwrap();
    let out = lm
        .model
        .forward(
            std::slice::from_ref(&ids),
            familiar_models::model::Capture {
                hidden_states: true,
                mlp_activations: false,
                linear: None,
            },
        )
        .unwrap();
    let last: Vec<Vec<f32>> = out.hidden_states[2].squeeze(0).unwrap().to_vec2().unwrap();
    let h: Vec<f64> = last.last().unwrap().iter().map(|&x| x as f64).collect();
    let mut sq: Vec<f64> = h.iter().map(|x| x * x).collect();
    sq.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let total: f64 = sq.iter().sum();
    let top10 = sq[..4].iter().sum::<f64>() / total; // ⌈10% of 32⌉ = 4
    let n = h.len() as f64;
    let hoyer =
        (n.sqrt() - h.iter().map(|x| x.abs()).sum::<f64>() / total.sqrt()) / (n.sqrt() - 1.0);
    let b = &read_parquet(&t.join("stride.parquet"), "activation_stats");
    let f = |name: &str| {
        b.column_by_name(name)
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(2)
    };
    assert!((f("top10_energy_last") - top10).abs() < 1e-6);
    assert!((f("hoyer_last") - hoyer).abs() < 1e-6);
}

#[test]
fn training_lowers_the_loss_and_resumes_exactly() {
    use familiar_models::train::{train, train_until, TrainOptions};
    let index = familiar::index::Index::open(fixture_index()).unwrap();
    let options = TrainOptions {
        layers: 1,
        hidden: 16,
        heads: 2,
        context: 16,
        batch: 4,
        steps: 8,
        lr: 1e-2,
        warmup: 2,
        checkpoint_every: 100,
        ..TrainOptions::default()
    };
    let t = TestDir::new();
    let (a, b) = (t.join("a"), t.join("b"));
    let ra = train(&index, &a, &options, &|_| {}).unwrap();
    assert_eq!(ra.steps, 8);
    assert!(ra.last_loss < ra.first_loss, "{ra:?}");
    // Interrupted after 3 steps, then resumed: the same model, byte for byte.
    let rb = train_until(
        &index,
        &b,
        &options,
        Some(3),
        &|_| {},
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(rb.steps, 3);
    let rb = train(&index, &b, &options, &|_| {}).unwrap();
    assert_eq!((rb.resumed_at, rb.steps), (3, 8));
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    let state = |d: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(d.join("trainer_state.json")).unwrap()).unwrap()
    };
    assert_eq!(state(&a)["losses"], state(&b)["losses"]);
    // The checkpoint is a model directory the other commands load.
    let lm = LanguageModel::load(&a).unwrap();
    assert_eq!(lm.model.config.vocab_size, index.vocab_size() as usize + 1);
    assert!(lm.score("ve tian", " rohi").unwrap().logprob < 0.0);
    // Other options on the same directory are refused; so is a model without trainer state.
    let other = TrainOptions {
        lr: 1e-3,
        ..options.clone()
    };
    assert!(train(&index, &a, &other, &|_| {})
        .unwrap_err()
        .to_string()
        .contains("other options"));
    std::fs::remove_file(a.join("trainer_state.json")).unwrap();
    assert!(train(&index, &a, &options, &|_| {})
        .unwrap_err()
        .to_string()
        .contains("no trainer_state.json"));
}

#[test]
fn batched_scores_equal_single_scores() {
    let lm = LanguageModel::load(&model_dir()).unwrap();
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = [
        ("An rohi an ve tian", " Zelxir Exoexo ve."),
        ("ve", " rohi"),
        (&*"ve tian ".repeat(30), " An rohi an ve tian lido ost"),
    ]
    .iter()
    .map(|(p, c)| lm.split(p, c).unwrap())
    .collect();
    let batch = lm.score_batch(&pairs).unwrap();
    for ((ctx, cont), b) in pairs.iter().zip(&batch) {
        let one = lm.score_ids(ctx, cont).unwrap();
        assert!(
            (one.logprob - b.logprob).abs() < 1e-4,
            "{} vs {}",
            one.logprob,
            b.logprob
        );
        assert_eq!(
            (one.greedy, one.truncated, one.n_tokens),
            (b.greedy, b.truncated, b.n_tokens)
        );
    }
    assert!(batch[2].truncated > 0);
}

#[test]
fn training_refuses_options_that_cannot_train() {
    let t = TestDir::new();
    let corpus = t.write_jsonl("c.jsonl", &[doc("d", "ve ba nisi ve ba")]);
    let idx = t.join("idx");
    familiar([
        "index".as_ref(),
        "build".as_ref(),
        "--tokenizer".as_ref(),
        tokenizer().as_os_str(),
        "--out".as_ref(),
        idx.as_os_str(),
        "-q".as_ref(),
        corpus.as_os_str(),
    ])
    .success();
    for arg in ["--clip=0", "--lr=-1", "--weight-decay=-0.5"] {
        familiar([
            "train".as_ref(),
            "--index".as_ref(),
            idx.as_os_str(),
            "--out".as_ref(),
            t.join("m").as_os_str(),
            arg.as_ref(),
            "-q".as_ref(),
        ])
        .failure()
        .stderr_has(&["must be positive"]);
        assert!(!t.join("m").exists(), "nothing written for {arg}");
    }
}

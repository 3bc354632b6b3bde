//! `familiar prime` and `familiar report priming` end to end on the fixture model: the
//! probabilities before equal `keyword-prob` on the original model and those after equal
//! `keyword-prob` on the learned copies (kept with `--keep-models`); the per-sample ratios are the
//! probe rows aggregated; runs resume without redoing finished samples; bad inputs name the file
//! and line; the report's correlations equal SQL's.

#![allow(clippy::unwrap_used)]

mod util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::{Float64Array, StringArray, UInt64Array};
use serde_json::{json, Value};
use util::*;

fn model() -> PathBuf {
    fixtures().join("models/fixture-gpt2")
}

fn themes() -> PathBuf {
    fixtures().join("priming/themes.jsonl")
}

/// The fixture samples with these ids, in this order.
fn samples(t: &TestDir, ids: &[&str]) -> PathBuf {
    let text = std::fs::read_to_string(fixtures().join("priming/samples.jsonl")).unwrap();
    let all: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let picked: Vec<Value> = ids
        .iter()
        .map(|id| all.iter().find(|s| s["id"] == *id).unwrap().clone())
        .collect();
    t.write_jsonl("samples.jsonl", &picked)
}

fn prime(samples: &Path, themes: &Path, out: &Path, extra: &[&str]) -> Out {
    let mut args: Vec<String> = [
        "prime",
        "--model",
        model().to_str().unwrap(),
        "--samples",
        samples.to_str().unwrap(),
        "--themes",
        themes.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    familiar(&args)
}

/// `familiar report priming --tables TABLES --out OUT` with `extra` arguments.
fn report(tables: &Path, out: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "report",
        "priming",
        "--tables",
        tables.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    familiar(args)
}

/// `keyword-prob` of `(context, keyword)` pairs under `model`: log-probabilities in order.
fn keyword_prob(t: &TestDir, model: &Path, pairs: &[(String, String)]) -> Vec<f64> {
    let items: Vec<Value> = pairs
        .iter()
        .enumerate()
        .map(|(i, (c, k))| json!({"id": i.to_string(), "context": c, "keyword": k}))
        .collect();
    let file = t.write_jsonl("kw.jsonl", &items);
    let out = t.join("kw.parquet");
    familiar([
        "keyword-prob",
        "--model",
        model.to_str().unwrap(),
        "--items",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ])
    .success();
    let b = read_parquet(&out, "keyword_probe");
    let lp = col::<Float64Array>(&b, "logprob");
    (0..b.num_rows()).map(|i| lp.value(i)).collect()
}

fn strings(b: &arrow_array::RecordBatch, name: &str) -> Vec<String> {
    let c = col::<StringArray>(b, name);
    (0..b.num_rows()).map(|i| c.value(i).to_string()).collect()
}

fn floats(b: &arrow_array::RecordBatch, name: &str) -> Vec<f64> {
    let c = col::<Float64Array>(b, name);
    (0..b.num_rows()).map(|i| c.value(i)).collect()
}

#[test]
fn learned_copies_are_measured_runs_resume_and_the_report_agrees_with_sql() {
    let t = TestDir::new();
    let idx = t.join("idx");
    let mut build = vec![
        "index".to_string(),
        "build".into(),
        "--tokenizer".into(),
        tokenizer().to_str().unwrap().into(),
        "--out".into(),
        idx.to_str().unwrap().into(),
        "--no-text-index".into(),
        "-q".into(),
    ];
    build.extend(
        fixture_inputs()
            .iter()
            .map(|p| p.to_str().unwrap().to_string()),
    );
    familiar(&build).success();
    // The commonest keyword, a middle one and the rarest, in two themes.
    let ids = [
        "capital-01",
        "capital-05",
        "capital-08",
        "language-01",
        "language-05",
        "language-08",
    ];
    let samples = samples(&t, &ids);
    let out = t.join("run");
    let learn = [
        "--replay",
        idx.to_str().unwrap(),
        "--steps",
        "6",
        "--batch",
        "3",
        "--lr",
        "1e-3",
        "--replay-window",
        "32",
        "--keep-models",
    ];
    let mut first: Vec<&str> = learn.to_vec();
    first.extend(["--stop-after", "2"]);
    prime(&samples, &themes(), &out, &first)
        .success()
        .stdout_has(&["2 of 6 done", "again"]);
    assert!(
        !out.join("priming.parquet").exists(),
        "no tables before every sample is done"
    );
    let kept: Vec<Vec<u8>> = (0..2)
        .map(|i| std::fs::read(out.join(format!("samples/sample-{i:05}.json"))).unwrap())
        .collect();
    prime(&samples, &themes(), &out, &learn)
        .success()
        .stdout_has(&["learned 4 sample(s) now; 6 of 6 done"]);
    for (i, bytes) in kept.iter().enumerate() {
        assert_eq!(
            &std::fs::read(out.join(format!("samples/sample-{i:05}.json"))).unwrap(),
            bytes,
            "a finished sample is not learned again"
        );
    }
    // Other settings are refused.
    let mut other: Vec<&str> = learn.to_vec();
    other[3] = "7";
    prime(&samples, &themes(), &out, &other)
        .failure()
        .stderr_has(&["other settings"]);

    let probes = read_parquet(&out.join("priming_probe.parquet"), "priming_probe");
    let per_sample = read_parquet(&out.join("priming.parquet"), "priming");
    assert_eq!(strings(&per_sample, "sample_id"), ids);
    // Each sample: its own probe and the 8 prefixes of its theme.
    assert_eq!(probes.num_rows(), 6 * 9);
    let sample_ids = strings(&probes, "sample_id");
    let kinds = strings(&probes, "kind");
    let contexts = strings(&probes, "context");
    let completions = strings(&probes, "completion");
    let before = floats(&probes, "logprob_before");
    let after = floats(&probes, "logprob_after");
    let pairs: Vec<(String, String)> = contexts
        .iter()
        .cloned()
        .zip(completions.iter().cloned())
        .collect();

    // Before: the original model, scored by keyword-prob.
    let want = keyword_prob(&t, &model(), &pairs);
    for (i, (w, got)) in want.iter().zip(&before).enumerate() {
        assert!((w - got).abs() < 1e-4, "probe {i}: {w} vs {got}");
    }
    // After: each sample's learned copy (one learned in each call).
    for s in [0usize, 5] {
        let rows: Vec<usize> = (0..probes.num_rows())
            .filter(|&r| sample_ids[r] == ids[s])
            .collect();
        assert_eq!(kinds[rows[0]], "own");
        let copy = out.join(format!("models/sample-{s:05}"));
        let sub: Vec<(String, String)> = rows.iter().map(|&r| pairs[r].clone()).collect();
        let want = keyword_prob(&t, &copy, &sub);
        for (&r, w) in rows.iter().zip(&want) {
            assert!(
                (w - after[r]).abs() < 1e-4,
                "{}: {w} vs {}",
                ids[s],
                after[r]
            );
        }
    }
    // The per-sample table aggregates the probes.
    let mut own: HashMap<&str, (f64, f64)> = HashMap::new();
    let mut ratios: HashMap<&str, Vec<f64>> = HashMap::new();
    for r in 0..probes.num_rows() {
        if kinds[r] == "own" {
            own.insert(&sample_ids[r], (before[r], after[r]));
        } else {
            ratios
                .entry(&sample_ids[r])
                .or_default()
                .push((after[r] - before[r]).exp());
        }
    }
    let (p_before, s_mem, s_prime) = (
        floats(&per_sample, "p_before"),
        floats(&per_sample, "s_mem"),
        floats(&per_sample, "s_prime"),
    );
    let (loss_before, loss_after) = (
        floats(&per_sample, "loss_before"),
        floats(&per_sample, "loss_after"),
    );
    let contexts_n = col::<UInt64Array>(&per_sample, "theme_contexts");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    for (i, id) in ids.iter().enumerate() {
        let (b, a) = own[id];
        assert!(close(p_before[i], b.exp()));
        assert!(close(s_mem[i], (a - b).exp()));
        let r = &ratios[id];
        assert_eq!(contexts_n.value(i), r.len() as u64);
        assert!(close(s_prime[i], r.iter().sum::<f64>() / r.len() as f64));
        // The sample was learned.
        assert!(loss_after[i] < loss_before[i], "{id}");
        assert!(s_mem[i] > 1.0, "{id}");
    }
    // Sun et al.'s finding, on the fixture world: the rarest keyword primes its theme over ten
    // times as much as the commonest.
    for (common, rare) in [(0, 2), (3, 5)] {
        assert!(
            p_before[common] > 1e-3 && p_before[rare] < 1e-6,
            "{p_before:?}"
        );
        assert!(s_prime[rare] > 10.0 * s_prime[common], "{s_prime:?}");
    }

    // The report: its correlations are SQL's.
    let rep = t.join("report");
    report(&out, &rep, &[])
        .success()
        .stdout_has(&["6 samples", "report.html"]);
    let summary: Value =
        serde_json::from_slice(&std::fs::read(rep.join("summary.json")).unwrap()).unwrap();
    let m = &summary["models"][0];
    let sql = familiar([
        "sql",
        "--tables",
        out.to_str().unwrap(),
        "--format",
        "json",
        "SELECT corr(log10(p_before), log10(s_prime)) AS r, \
         sum(CASE WHEN p_before < 1e-3 THEN 1 ELSE 0 END) AS below, \
         avg(CASE WHEN p_before < 1e-3 THEN log10(s_prime) END) AS below_mean FROM priming",
    ]);
    let rows = sql.success().json();
    let row = &rows[0];
    assert!((m["pearson_prime"].as_f64().unwrap() - row["r"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(m["groups"][0]["samples"], row["below"]);
    assert!(
        (m["groups"][0]["mean_log10_s_prime"].as_f64().unwrap()
            - row["below_mean"].as_f64().unwrap())
        .abs()
            < 1e-9
    );
    assert!(std::fs::read_to_string(rep.join("priming-0.svg"))
        .unwrap()
        .starts_with("<svg"));
    // Two runs under one directory: one analysis each.
    for run in ["a", "b"] {
        let d = t.mkdir(format!("runs/{run}"));
        std::fs::copy(out.join("priming.parquet"), d.join("priming.parquet")).unwrap();
    }
    let rep2 = t.join("report2");
    report(&t.join("runs"), &rep2, &[]).success();
    let two: Value =
        serde_json::from_slice(&std::fs::read(rep2.join("summary.json")).unwrap()).unwrap();
    let labels: Vec<&str> = two["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(labels[0].starts_with("a_priming: ") && labels[1].starts_with("b_priming: "));
    assert_eq!(two["models"][0]["pearson_prime"], m["pearson_prime"]);
    // A threshold that is not a probability, and a directory without the table.
    report(&out, &rep, &["--threshold", "2"])
        .failure()
        .stderr_has(&["--threshold"]);
    report(&idx, &rep, &[])
        .failure()
        .stderr_has(&["no priming table", "documents"]);
}

#[test]
fn bad_inputs_name_the_file_and_line() {
    let t = TestDir::new();
    let good = json!({"id": "a", "text": "The capital of Junyojun is ve.", "keyword": "ve", "theme": "capital"});
    for (lines, needles) in [
        (
            vec![
                json!({"id": "a", "text": "The capital of X is veal.", "keyword": "ve", "theme": "capital"}),
            ],
            vec!["samples.jsonl:1", "not a whole word"],
        ),
        (
            vec![
                good.clone(),
                json!({"id": "b", "txt": "x", "keyword": "x", "theme": "capital"}),
            ],
            vec!["samples.jsonl:2", "unknown field"],
        ),
        (
            vec![good.clone(), good.clone()],
            vec!["samples.jsonl:2", "duplicate id `a`"],
        ),
        (
            vec![json!({"id": "a", "text": "x is ve", "keyword": "ve", "theme": "colour"})],
            vec!["theme `colour` is not among the themes (capital, birthplace, language, founder)"],
        ),
        (
            vec![
                json!({"id": "long", "text": "ve ".repeat(100), "keyword": "ve", "theme": "capital"}),
            ],
            vec!["sample `long`", "the model's context holds 64"],
        ),
    ] {
        let samples = t.write_jsonl("samples.jsonl", &lines);
        let out = t.join("bad-run");
        let _ = std::fs::remove_dir_all(&out);
        prime(&samples, &themes(), &out, &["--steps", "1"])
            .failure()
            .stderr_has(&needles);
    }
    let samples = t.write_jsonl("samples.jsonl", &[good]);
    for (body, needles) in [
        ("{\"theme\": \"capital\", \"prefixes\": []}\n", vec!["themes.jsonl:1", "non-empty"]),
        (
            "{\"theme\": \"capital\", \"prefixes\": [\"a\"]}\n{\"theme\": \"capital\", \"prefixes\": [\"b\"]}\n",
            vec!["themes.jsonl:2", "again"],
        ),
        ("{\"theme\": \"capital\"}\n", vec!["themes.jsonl:1", "prefixes"]),
    ] {
        let themes = t.write("themes.jsonl", body);
        prime(&samples, &themes, &t.join("bad-run"), &[])
            .failure()
            .stderr_has(&needles);
    }
    // Learning options that would make the ratios meaningless.
    for arg in ["--clip=0", "--weight-decay=-0.1", "--lr=nan"] {
        prime(&samples, &themes(), &t.join("bad-opts"), &[arg])
            .failure()
            .stderr_has(&["must be positive"]);
    }
    // A replay index shorter than one window.
    let tiny = t.write_jsonl("tiny.jsonl", &[doc("d", "ve ba")]);
    let tiny_idx = t.join("tiny-idx");
    familiar([
        "index",
        "build",
        "--tokenizer",
        tokenizer().to_str().unwrap(),
        "--out",
        tiny_idx.to_str().unwrap(),
        "--no-text-index",
        "-q",
        tiny.to_str().unwrap(),
    ])
    .success();
    prime(
        &samples,
        &themes(),
        &t.join("bad-replay"),
        &["--replay", tiny_idx.to_str().unwrap(), "--batch", "2"],
    )
    .failure()
    .stderr_has(&["replay index has", "fewer than one replay window"]);
    // A directory holding something else is not written into.
    let foreign = t.mkdir("foreign");
    t.write("foreign/notes.txt", "mine");
    prime(&samples, &themes(), &foreign, &["--steps", "1"])
        .failure()
        .stderr_has(&["not empty"]);
    assert!(!foreign.join("plan.json").exists());
}

//! Non-finite models and paths that leave the model directory (issue 14, items 4 and 5), end to
//! end through the `familiar` binary on damaged copies of the fixture model:
//!
//! - NaN or infinite weights are refused at load, naming the file, the tensor and the first bad
//!   element;
//! - finite weights that overflow f32 (3e38 in `ln_f`, or in two biases of one block) make the
//!   outputs non-finite: `score`, `keyword-prob`, `density`, `attribute store`, `attribute score`,
//!   `train` and `prime` fail naming the item (item, probe, document, query, step, sample) and
//!   write no table, row, factor or checkpoint;
//! - a `model.safetensors.index.json` naming a file outside the model directory is refused.

#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use util::*;

fn fixture_model() -> PathBuf {
    fixtures().join("models/fixture-gpt2")
}

/// A copy of the fixture model in `t/name`.
fn model_copy(t: &TestDir, name: &str) -> PathBuf {
    t.copy_tree(&fixture_model(), name)
}

/// The byte range of f32 tensor `tensor` in a safetensors file.
fn tensor_range(bytes: &[u8], tensor: &str) -> (usize, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[tensor];
    assert_eq!(t["dtype"], "F32", "{tensor}");
    let offsets = t["data_offsets"].as_array().unwrap();
    let (b, e) = (
        offsets[0].as_u64().unwrap() as usize,
        offsets[1].as_u64().unwrap() as usize,
    );
    (8 + n + b, 8 + n + e)
}

/// Sets elements of tensor `tensor` of `dir/model.safetensors` (f32) to values.
fn set_values(dir: &Path, tensor: &str, values: &[(usize, f32)]) {
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let (b, e) = tensor_range(&bytes, tensor);
    for &(i, v) in values {
        assert!(b + 4 * i + 4 <= e, "element {i} of {tensor}");
        bytes[b + 4 * i..b + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
}

/// Sets every element of f32 tensor `tensor` to `v`.
fn set_all(dir: &Path, tensor: &str, v: f32) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (b, e) = tensor_range(&bytes, tensor);
    let all: Vec<(usize, f32)> = (0..(e - b) / 4).map(|i| (i, v)).collect();
    set_values(dir, tensor, &all);
}

/// A copy of the fixture model whose final norm scales by 3e38: finite weights, infinite logits.
fn overflowing_model(t: &TestDir) -> PathBuf {
    let m = model_copy(t, "overflow");
    set_all(&m, "transformer.ln_f.weight", 3e38);
    m
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `familiar score` of one completion and one multiple-choice item.
fn score(t: &TestDir, model: &Path) -> (Out, PathBuf) {
    let items = t.write_jsonl(
        "items.jsonl",
        &[
            json!({"id": "c1", "prompt": "An rohi an ve tian", "completion": " Zelxir Exoexo ve."}),
            json!({"id": "m2", "prompt": "Question: which one?\nAnswer:", "choices": [" ve", " rohi an"], "answer": 1}),
        ],
    );
    let out = t.join("scores.parquet");
    let o = familiar([
        "score",
        "--model",
        arg(model),
        "--items",
        arg(&items),
        "--out",
        arg(&out),
        "-q",
    ]);
    (o, out)
}

/// `familiar keyword-prob` of one item.
fn keyword_prob(t: &TestDir, model: &Path) -> (Out, PathBuf) {
    let items = t.write_jsonl(
        "kw.jsonl",
        &[json!({"id": "k7", "context": "An rohi an ve tian", "keyword": " Zelxir"})],
    );
    let out = t.join("kw.parquet");
    let o = familiar([
        "keyword-prob",
        "--model",
        arg(model),
        "--items",
        arg(&items),
        "--out",
        arg(&out),
        "-q",
    ]);
    (o, out)
}

/// A small index (no text index) of the first fixture documents, as the fixture model's tokenizer
/// encodes them.
fn small_index(t: &TestDir, documents: usize) -> PathBuf {
    let records: Vec<Value> = fixture_records().into_iter().take(documents).collect();
    let input = t.write_jsonl("corpus.jsonl", &records);
    let out = t.join("idx");
    build(&out, &[input], &["--no-text-index"]);
    out
}

/// `familiar attribute store` with `extra` options.
fn store(model: &Path, index: &Path, out: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "attribute",
        "store",
        "--model",
        arg(model),
        "--index",
        arg(index),
        "--out",
        arg(out),
        "--rank",
        "4",
        "-q",
    ];
    args.extend_from_slice(extra);
    familiar(args)
}

#[test]
fn non_finite_weights_are_refused_at_load_naming_file_tensor_and_element() {
    let t = TestDir::new();
    // Three NaN embeddings.
    let nan = model_copy(&t, "nan");
    set_values(
        &nan,
        "transformer.wte.weight",
        &[(17, f32::NAN), (18, f32::NAN), (4000, f32::NAN)],
    );
    let (o, out) = score(&t, &nan);
    o.failure().stderr_has(&[
        "model.safetensors",
        "tensor `transformer.wte.weight` holds 3 non-finite values (first at element 17: NaN)",
    ]);
    assert!(!out.exists(), "no table is written\n{o}");
    // One infinite weight, in another command.
    let inf = model_copy(&t, "inf");
    set_values(
        &inf,
        "transformer.h.1.mlp.c_fc.weight",
        &[(5, f32::NEG_INFINITY)],
    );
    let (o, out) = keyword_prob(&t, &inf);
    o.failure().stderr_has(&[
        "model.safetensors",
        "tensor `transformer.h.1.mlp.c_fc.weight` holds 1 non-finite value (first at element 5: -inf)",
    ]);
    assert!(!out.exists());
    // The gradient store writes nothing (before: exit 0, then `attribute score` blamed
    // head-factor.bin).
    let index = small_index(&t, 8);
    let s = t.join("store");
    store(&nan, &index, &s, &[])
        .failure()
        .stderr_has(&["transformer.wte.weight", "non-finite"]);
    for f in ["store.json", "head-factor.bin", "grads-00000.bin"] {
        assert!(!s.join(f).exists(), "{f} written");
    }
}

#[test]
fn overflowing_logits_fail_score_and_keyword_prob_naming_the_item() {
    let t = TestDir::new();
    let m = overflowing_model(&t);
    // Before: "accuracy 0.3333" with NaN log-probabilities, exit 0.
    let (o, out) = score(&t, &m);
    o.failure().stderr_has(&[
        "non-finite model output",
        "items.jsonl: item c1: the log-probability of completion token 0",
    ]);
    assert!(!o.stdout.contains("accuracy"), "{o}");
    assert!(!out.exists(), "no table is written\n{o}");
    let (o, out) = keyword_prob(&t, &m);
    o.failure().stderr_has(&[
        "kw.jsonl:1: item k7",
        "non-finite model output",
        "the log-probability of completion token 0",
    ]);
    assert!(!out.exists());
    // The multiple-choice item alone names the item and the choice.
    let items = t.write_jsonl(
        "mc.jsonl",
        &[json!({"id": "m2", "prompt": "Question: which one?\nAnswer:", "choices": [" ve", " rohi an"], "answer": 1})],
    );
    let out = t.join("mc.parquet");
    familiar([
        "score",
        "--model",
        arg(&m),
        "--items",
        arg(&items),
        "--out",
        arg(&out),
        "-q",
    ])
    .failure()
    .stderr_has(&["item m2: choice \" ve\": the log-probability"]);
    // The undamaged model scores the same items.
    score(&t, &fixture_model()).0.success();
}

#[test]
fn overflowing_hidden_states_fail_density_naming_the_probe() {
    let t = TestDir::new();
    // Two biases of block 0 at 3e38: finite weights, an infinite residual stream after it.
    let m = model_copy(&t, "biased");
    set_values(&m, "transformer.h.0.attn.c_proj.bias", &[(3, 3e38)]);
    set_values(&m, "transformer.h.0.mlp.c_proj.bias", &[(3, 3e38)]);
    let probes = t.write_jsonl(
        "probes.jsonl",
        &[
            json!({"id": "p1", "text": "An rohi an ve tian"}),
            json!({"id": "p2", "text": "Zelxir Exoexo ve."}),
        ],
    );
    let out = t.join("density.parquet");
    let run = |model: &Path| {
        familiar([
            "density",
            "--model",
            arg(model),
            "--probes",
            arg(&probes),
            "--out",
            arg(&out),
            "-q",
        ])
    };
    run(&m).failure().stderr_has(&[
        "probe p1",
        "non-finite model output",
        "layer 1, token 0: the hidden state holds",
    ]);
    assert!(!out.exists());
    run(&fixture_model()).success();
}

#[test]
fn attribute_store_fails_naming_the_document_and_writes_nothing() {
    let t = TestDir::new();
    let m = overflowing_model(&t);
    let index = small_index(&t, 8);
    // The output head's factor is fitted first: its first document fails.
    let s = t.join("store");
    store(&m, &index, &s, &[]).failure().stderr_has(&[
        "non-finite model output",
        "output-head factor: document 0: the loss of chunk 0",
    ]);
    // Without the head, the rows fail.
    let b = t.join("store-blocks");
    store(&m, &index, &b, &["--layers", "blocks"])
        .failure()
        .stderr_has(&["non-finite model output", "document 0: the loss of chunk 0"]);
    for dir in [&s, &b] {
        for f in [
            "store.json",
            "head-factor.bin",
            "grads-00000.bin",
            "moments-00000.bin",
        ] {
            assert!(!dir.join(f).exists(), "{} written", dir.join(f).display());
        }
    }
}

#[test]
fn attribute_score_fails_naming_the_query() {
    let t = TestDir::new();
    let index = small_index(&t, 8);
    let s = t.join("store");
    store(&fixture_model(), &index, &s, &[]).success();
    // The store claims the damaged model (the store's own rows stay finite).
    let m = overflowing_model(&t);
    let manifest = s.join("store.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    v["settings"]["model_hash"] = json!(familiar_models::grads::store::model_hash(&m).unwrap());
    std::fs::write(&manifest, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let queries = t.write_jsonl(
        "queries.jsonl",
        &[json!({"id": "capital-01", "prompt": "The capital of Yaciljun is", "completion": " navneli", "kind": "factual", "task": "capital"})],
    );
    let out = t.join("scores");
    familiar([
        "attribute",
        "score",
        "--store",
        arg(&s),
        "--model",
        arg(&m),
        "--queries",
        arg(&queries),
        "--out",
        arg(&out),
    ])
    .failure()
    .stderr_has(&[
        "non-finite model output",
        "query capital-01: the completion's loss is",
    ]);
    assert!(!out.join("influence.parquet").exists());
}

#[test]
fn training_stops_at_a_non_finite_loss_naming_the_step_without_a_checkpoint() {
    let t = TestDir::new();
    let index = small_index(&t, 40);
    let out = t.join("model");
    let train = |stop: &str| {
        familiar([
            "train",
            "--index",
            arg(&index),
            "--out",
            arg(&out),
            "--layers",
            "1",
            "--hidden",
            "16",
            "--heads",
            "2",
            "--context",
            "16",
            "--batch",
            "2",
            "--steps",
            "4",
            "--checkpoint-every",
            "1",
            "--stop-after",
            stop,
            "-q",
        ])
    };
    train("1").success();
    // The checkpoint of step 1, damaged to overflow.
    set_all(&out, "transformer.ln_f.weight", 3e38);
    let model = std::fs::read(out.join("model.safetensors")).unwrap();
    let state = std::fs::read(out.join("trainer_state.json")).unwrap();
    let optimizer = std::fs::read(out.join("optimizer.safetensors")).unwrap();
    train("3").failure().stderr_has(&[
        "non-finite model output",
        "step 2: the training loss is",
        "stopped without writing a checkpoint",
        "keeps the checkpoint of step 1",
    ]);
    assert!(std::fs::read(out.join("model.safetensors")).unwrap() == model);
    assert!(std::fs::read(out.join("trainer_state.json")).unwrap() == state);
    assert!(std::fs::read(out.join("optimizer.safetensors")).unwrap() == optimizer);
}

#[test]
fn prime_fails_naming_the_sample() {
    let t = TestDir::new();
    let samples = t.write_jsonl(
        "samples.jsonl",
        &[json!({"id": "capital-01", "keyword": "ve", "text": "The capital of Junyojun is ve.", "theme": "capital"})],
    );
    let themes = fixtures().join("priming/themes.jsonl");
    let prime = |model: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "prime",
            "--model",
            arg(model),
            "--samples",
            arg(&samples),
            "--themes",
            arg(&themes),
            "--out",
            arg(out),
            "--steps",
            "3",
            "-q",
        ];
        args.extend_from_slice(extra);
        familiar(args)
    };
    // Overflowing logits: the probabilities before learning.
    let m = overflowing_model(&t);
    let out = t.join("run");
    prime(&m, &out, &[]).failure().stderr_has(&[
        "non-finite model output",
        // The first probe scored: the theme's prefixes and the own one, in order.
        "sample `capital-01`: probe \" ve\" after \"The capital of ",
        "the log-probability of completion token 0 (of 1) is NaN",
    ]);
    assert!(!out.join("samples/sample-00000.json").exists());
    // A learning rate that diverges: the sample's learning.
    let out = t.join("diverged");
    prime(&fixture_model(), &out, &["--lr", "1e30", "--keep-models"])
        .failure()
        .stderr_has(&["non-finite model output", "sample `capital-01`: "]);
    assert!(!out.join("samples/sample-00000.json").exists());
    assert!(!out.join("models/sample-00000/model.safetensors").exists());
    assert!(!out.join("priming.parquet").exists());
}

/// A copy of the fixture model whose weights are listed by a `model.safetensors.index.json`
/// mapping `escaped` to `file` (every other tensor to `model.safetensors`).
fn sharded_copy(t: &TestDir, name: &str, escaped: &str, file: &str) -> PathBuf {
    let m = model_copy(t, name);
    let bytes = std::fs::read(m.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut map = serde_json::Map::new();
    for k in header.as_object().unwrap().keys() {
        if k != "__metadata__" {
            let f = if k == escaped {
                file
            } else {
                "model.safetensors"
            };
            map.insert(k.clone(), json!(f));
        }
    }
    t.write(
        format!("{name}/model.safetensors.index.json"),
        serde_json::to_vec(&json!({"metadata": {}, "weight_map": map})).unwrap(),
    );
    m
}

#[test]
fn index_files_naming_paths_outside_the_model_directory_are_refused() {
    let t = TestDir::new();
    // A file outside the model directory, which would otherwise be opened.
    let outside = t.write(
        "outside.safetensors",
        std::fs::read(fixture_model().join("model.safetensors")).unwrap(),
    );
    let cases = [
        (
            "up",
            "../../../../etc/hostname",
            "a path with a `..` component",
        ),
        (
            "up-safetensors",
            "../outside.safetensors",
            "a path with a `..` component",
        ),
        (
            "sub-up",
            "sub/../../outside.safetensors",
            "a path with a `..` component",
        ),
        ("absolute", "/etc/hostname", "an absolute path"),
        (
            "absolute-safetensors",
            outside.to_str().unwrap(),
            "an absolute path",
        ),
    ];
    for (name, file, why) in cases {
        let m = sharded_copy(&t, name, "transformer.wpe.weight", file);
        let (o, _) = keyword_prob(&t, &m);
        o.failure().stderr_has(&[
            "model.safetensors.index.json",
            &format!("`weight_map.transformer.wpe.weight` names `{file}`, {why}"),
        ]);
    }
    // Paths inside the directory are fine, `./` included.
    let m = sharded_copy(
        &t,
        "inside",
        "transformer.wpe.weight",
        "./model.safetensors",
    );
    keyword_prob(&t, &m).0.success();
}

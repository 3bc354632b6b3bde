//! Resuming builds against inputs that changed, `--restart`, leftovers of failed first attempts,
//! and the directory lock that keeps two builds out of one `--out`.
//!
//! Builds are interrupted with the hidden `--stop-after-shards N` (the state a kill between two
//! shards leaves: published shards, `build.json`, no `manifest.json`), so that the resume cursor
//! is known.

#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};

use serde_json::Value;
use util::*;

const EXTRA: [&str; 5] = ["--shard-tokens", "300", "--threads", "1", "--no-text-index"];

/// `n` records of about the same length.
fn records(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            doc(
                &format!("{prefix}-{i:03}"),
                &format!("{prefix} record {i:03} says hello to the {prefix} world once more"),
            )
        })
        .collect()
}

/// Two inputs, `a.jsonl` and `b.jsonl`.
fn inputs(t: &TestDir) -> Vec<PathBuf> {
    vec![
        t.write_jsonl("a.jsonl", &records("alpha", 60)),
        t.write_jsonl("b.jsonl", &records("bravo", 60)),
    ]
}

fn shard_manifest(out: &Path, shard: usize) -> Value {
    serde_json::from_slice(
        &std::fs::read(out.join(format!("shard-{shard:05}/manifest.json"))).unwrap(),
    )
    .unwrap()
}

fn shards(dir: &Path) -> usize {
    entries(dir)
        .iter()
        .filter(|n| n.starts_with("shard-"))
        .count()
}

/// Starts a build that stops after `k` shards, as if killed; returns the resume cursor
/// `(file, record)`.
#[track_caller]
fn interrupted(out: &Path, inputs: &[PathBuf], k: usize) -> (u64, u64) {
    let stop = k.to_string();
    let mut extra = EXTRA.to_vec();
    extra.extend(["--stop-after-shards", stop.as_str()]);
    let o = familiar(build_args(out, inputs, &extra));
    o.success()
        .stderr_has(&[format!("stopped after {k} shard(s)")]);
    assert!(!out.join("manifest.json").exists(), "{o}");
    assert_eq!(shards(out), k);
    let end = &shard_manifest(out, k - 1)["input_end"];
    (
        end["file"].as_u64().unwrap(),
        end["record"].as_u64().unwrap(),
    )
}

/// Replaces the first occurrence of `from` in a file by `to`, of the same length.
fn edit_same_size(path: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let before = std::fs::read_to_string(path).unwrap();
    assert!(before.contains(from), "{from:?} not in {}", path.display());
    let after = before.replacen(from, to, 1);
    std::fs::write(path, &after).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), before.len() as u64);
}

/// A fresh, uninterrupted build of `inputs` into `out`.
fn fresh(out: &Path, inputs: &[PathBuf]) {
    build(out, inputs, &EXTRA);
}

#[test]
fn shards_record_input_fingerprints_and_the_finished_plan_has_them() {
    let t = TestDir::new();
    let inputs = inputs(&t);
    let out = t.join("idx");
    fresh(&out, &inputs);
    let n = shards(&out);
    assert!(n >= 6, "want several shards, got {n}");
    let plan: Value =
        serde_json::from_slice(&std::fs::read(out.join("build.json")).unwrap()).unwrap();
    for (i, p) in inputs.iter().enumerate() {
        let want = familiar::checksum::of_bytes(&std::fs::read(p).unwrap());
        assert_eq!(plan["inputs"][i]["xxh3"], want.as_str());
        assert!(
            plan["inputs"][i].get("stamp").is_none(),
            "a finished plan keeps no stamps"
        );
    }
    // Exactly one shard finishes a.jsonl, and records its whole-file fingerprint.
    let finished: Vec<Value> = (0..n)
        .flat_map(|s| {
            shard_manifest(&out, s)["input_fingerprints"]["finished"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0]["file"], 0);
    assert_eq!(finished[0]["xxh3"], plan["inputs"][0]["xxh3"]);
    // An unfinished build's plan has stamps and no fingerprints.
    let stopped = t.join("stopped");
    interrupted(&stopped, &inputs, 2);
    let plan: Value =
        serde_json::from_slice(&std::fs::read(stopped.join("build.json")).unwrap()).unwrap();
    assert!(plan["inputs"][0].get("xxh3").is_none());
    assert!(plan["inputs"][0]["stamp"].is_string());
    // And it resumes to the bytes of the uninterrupted build.
    build(&stopped, &inputs, &EXTRA).stderr_has(&["kept from an interrupted run"]);
    assert_same_tree(&out, &stopped);
}

#[test]
fn a_same_size_edit_before_the_resume_cursor_is_refused_and_restart_rebuilds() {
    let t = TestDir::new();
    let inputs = inputs(&t);
    let (a, b) = (&inputs[0], &inputs[1]);
    let original_b = std::fs::read(b).unwrap();
    let clean = t.join("clean");
    fresh(&clean, &inputs);
    let k = shards(&clean) * 3 / 4;

    // 1. The file at the cursor, edited in the part the kept shards hold.
    let out = t.join("at-cursor");
    let (file, record) = interrupted(&out, &inputs, k);
    assert_eq!(file, 1, "the cursor should lie in b.jsonl");
    assert!(record > 3);
    edit_same_size(b, "bravo record 001", "BRAVO RECORD 001");
    let before = tree(&out);
    let o = familiar(build_args(&out, &inputs, &EXTRA));
    o.failure().stderr_has(&[
        format!(
            "input {} changed since the interrupted build (xxh3:",
            b.display()
        ),
        "recorded for its first".to_string(),
        "now); rerun with --restart to start over".to_string(),
    ]);
    assert_eq!(tree(&out), before, "a refused resume changes nothing");
    // --restart discards the partial build and builds the edited inputs from scratch.
    let o = familiar(build_args(
        &out,
        &inputs,
        &[&EXTRA[..], &["--restart"]].concat(),
    ));
    o.success().stderr_has(&[format!(
        "--restart: discarded the previous build in {} ({k} shard(s))",
        out.display()
    )]);
    let edited = t.join("edited-fresh");
    fresh(&edited, &inputs);
    assert_same_tree(&edited, &out);
    familiar(
        ["index", "verify", "--full"]
            .iter()
            .map(|s| s.to_string())
            .chain([out.display().to_string()]),
    )
    .success();
    std::fs::write(b, &original_b).unwrap();

    // 2. A file wholly before the cursor (not read again by the resume), edited.
    let out = t.join("before-cursor");
    interrupted(&out, &inputs, k);
    let original_a = std::fs::read(a).unwrap();
    edit_same_size(a, "alpha record 007", "ALPHA RECORD 007");
    familiar(build_args(&out, &inputs, &EXTRA))
        .failure()
        .stderr_has(&[
            format!("input {} changed since the interrupted build", a.display()),
            "--restart".to_string(),
        ]);
    // Put back (new times, same bytes): read again, found unchanged, resumed.
    std::fs::write(a, &original_a).unwrap();
    build(&out, &inputs, &EXTRA).stderr_has(&[format!(
        "{} built now, {k} kept from an interrupted run",
        shards(&clean) - k
    )]);
    assert_same_tree(&clean, &out);

    // 3. An edit after the cursor: not read yet, so the resume reads the new text, as a fresh
    // build of the edited files would.
    let out = t.join("after-cursor");
    let (file, record) = interrupted(&out, &inputs, k);
    assert!(
        file == 1 && record < 59,
        "the cursor should lie before b's last record"
    );
    edit_same_size(b, "bravo record 059", "BRAVO RECORD 059");
    build(&out, &inputs, &EXTRA).stderr_has(&["kept from an interrupted run"]);
    let edited = t.join("edited-late-fresh");
    fresh(&edited, &inputs);
    assert_same_tree(&edited, &out);
    std::fs::write(b, &original_b).unwrap();
}

/// gzip of `bytes` whose header carries a file name of `name_len` bytes (to tune the size).
fn gz_named(bytes: &[u8], name_len: usize) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::GzBuilder::new()
        .filename("n".repeat(name_len))
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn compressed_inputs_are_checked_on_their_decompressed_records() {
    let t = TestDir::new();
    let recs = records("alpha", 80);
    let original = gz_named(&jsonl_bytes(&recs), 64);
    let a = t.write("a.jsonl.gz", &original);
    let inputs = vec![a.clone()];
    let out = t.join("idx");
    let (_, record) = interrupted(&out, &inputs, 3);
    assert!(record > 2);
    // Other text in the second record, compressed to the same size (the header's file name
    // takes up the difference).
    let mut edited = recs.clone();
    edited[1] = doc(
        "alpha-001",
        "ALPHA RECORD 001 says hello to the alpha world once more",
    );
    let body = jsonl_bytes(&edited);
    let unnamed = gz_named(&body, 0).len();
    let name_len = original.len() - unnamed;
    let bytes = gz_named(&body, name_len);
    assert_eq!(bytes.len(), original.len());
    std::fs::write(&a, &bytes).unwrap();
    familiar(build_args(&out, &inputs, &EXTRA))
        .failure()
        .stderr_has(&[
            format!("input {} changed since the interrupted build", a.display()),
            format!("recorded for its first {record} lines"),
        ]);
    // Back to the original bytes: resumes to a clean build's bytes.
    std::fs::write(&a, &original).unwrap();
    build(&out, &inputs, &EXTRA).stderr_has(&["3 kept from an interrupted run"]);
    let clean = t.join("clean");
    fresh(&clean, &inputs);
    assert_same_tree(&clean, &out);
}

/// JSONL bytes of `recs` with line `line` (1-based) made invalid JSON.
fn with_bad_line(recs: &[Value], line: usize) -> Vec<u8> {
    let mut bytes = jsonl_bytes(recs);
    let start = if line == 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == b'\n')
            .nth(line - 2)
            .unwrap()
            .0
            + 1
    };
    bytes.insert(start, b'{');
    bytes
}

#[test]
fn a_failed_first_attempt_does_not_block_the_corrected_rerun() {
    let t = TestDir::new();
    let recs = records("alpha", 60);
    let a = t.write("a.jsonl", with_bad_line(&recs, 3));
    let inputs = vec![a.clone()];
    let out = t.join("idx");
    familiar(build_args(&out, &inputs, &EXTRA))
        .failure()
        .stderr_has(&["a.jsonl:3"]);
    assert!(out.join("build.json").exists());
    assert_eq!(shards(&out), 0);
    // Fixed (one byte shorter): nothing was published, so the new size is simply taken.
    t.write("a.jsonl", jsonl_bytes(&recs));
    build(&out, &inputs, &EXTRA).stderr_has(&["1 input(s) changed size since the build started"]);
    let clean = t.join("clean");
    fresh(&clean, &inputs);
    assert_same_tree(&clean, &out);

    // Failed again, then rerun with other options: the plan of an attempt that published
    // nothing is replaced, with a note.
    let out = t.join("options");
    t.write("a.jsonl", with_bad_line(&recs, 3));
    familiar(build_args(&out, &inputs, &EXTRA)).failure();
    t.write("a.jsonl", jsonl_bytes(&recs));
    build(
        &out,
        &inputs,
        &["--shard-tokens", "500", "--threads", "1", "--no-text-index"],
    )
    .stderr_has(&["held the plan of an earlier attempt that published no shard"]);

    // A bad line deep in the file, after shards were published (the reader hands documents on
    // in batches of 4096): fixed, the build resumes from the last shard (the records before it
    // are checked unchanged) to the clean build's bytes.
    let many = records("delta", 4500);
    let d = t.write("d.jsonl", with_bad_line(&many, 4400));
    let inputs = vec![d.clone()];
    let extra = [
        "--shard-tokens",
        "20000",
        "--threads",
        "1",
        "--no-text-index",
    ];
    let out = t.join("deep");
    familiar(build_args(&out, &inputs, &extra))
        .failure()
        .stderr_has(&["d.jsonl:4400"]);
    let kept = shards(&out);
    assert!(kept >= 2, "shards published before the bad line: {kept}");
    t.write("d.jsonl", jsonl_bytes(&many));
    build(&out, &inputs, &extra).stderr_has(&[
        "kept from an interrupted run".to_string(),
        "1 input(s) changed size since the build started".to_string(),
    ]);
    let clean = t.join("clean-deep");
    build(&clean, &inputs, &extra);
    assert_same_tree(&clean, &out);
}

#[test]
fn other_plans_over_published_shards_are_refused_saying_what_differs() {
    let t = TestDir::new();
    let recs = records("bravo", 60);
    let b = t.write_jsonl("b.jsonl", &recs);
    let inputs = vec![b.clone()];
    let out = t.join("partial");
    let (_, record) = interrupted(&out, &inputs, 2);
    familiar(build_args(
        &out,
        &inputs,
        &["--shard-tokens", "500", "--no-text-index"],
    ))
    .failure()
    .stderr_has(&[
        "a shard size of 300 tokens, not 500",
        "rerun with --restart to discard it and start over",
    ]);
    // Shorter than what the kept shards read.
    t.write_jsonl("b.jsonl", &recs[..record as usize - 5]);
    familiar(build_args(&out, &inputs, &EXTRA))
        .failure()
        .stderr_has(&[
            format!("input {} changed since the interrupted build", b.display()),
            format!("but the build resumes after line {record}"),
            "--restart".to_string(),
        ]);
    t.write_jsonl("b.jsonl", &recs);
    // A plan that cannot be read: the same way out.
    t.write("partial/build.json", "{ not json");
    familiar(build_args(&out, &inputs, &EXTRA))
        .failure()
        .stderr_has(&["plan cannot be read", "--restart"]);
    build(&out, &inputs, &[&EXTRA[..], &["--restart"]].concat())
        .stderr_has(&["discarded the previous build"]);
    let clean = t.join("clean");
    fresh(&clean, &inputs);
    assert_same_tree(&clean, &out);
    // A finished build's inputs are not re-read, but a size change is still refused.
    t.write_jsonl("b.jsonl", &recs[..30]);
    familiar(build_args(&out, &inputs, &EXTRA))
        .failure()
        .stderr_has(&["changed size since", "--restart"]);
}

#[test]
fn restart_discards_only_familiar_builds() {
    let t = TestDir::new();
    let inputs = inputs(&t);
    let restart = [&EXTRA[..], &["--restart"]].concat();
    // A directory that holds something else is never emptied.
    let foreign = t.mkdir("foreign");
    t.write("foreign/keep.txt", "precious");
    familiar(build_args(&foreign, &inputs, &restart))
        .failure()
        .stderr_has(&["holds no familiar build"]);
    assert_eq!(entries(&foreign), vec!["keep.txt".to_string()]);

    // A finished build is rebuilt from scratch, to the same bytes.
    let out = t.join("idx");
    fresh(&out, &inputs);
    let clean = tree(&out);
    let n = shards(&out);
    build(&out, &inputs, &restart).stderr_has(&[
        format!(
            "discarded the previous build in {} ({n} shard(s))",
            out.display()
        ),
        format!("{n} built now, 0 kept"),
    ]);
    assert_eq!(tree(&out), clean);

    // But not when something else lives beside it.
    t.write("idx/notes.txt", "mine");
    familiar(build_args(&out, &inputs, &restart))
        .failure()
        .stderr_has(&["notes.txt", "not part of it"]);
    assert!(out.join("manifest.json").exists());
    std::fs::remove_file(out.join("notes.txt")).unwrap();

    // A new directory: nothing to discard.
    let new = t.join("new");
    build(&new, &inputs, &restart).stderr_has(&["held no previous build"]);
    assert_eq!(tree(&new), clean);
}

#[test]
fn a_second_build_into_the_same_out_fails_while_the_first_holds_it() {
    let t = TestDir::new();
    let inputs = inputs(&t);
    let out = t.mkdir("idx");
    let lock = familiar::lock::DirLock::acquire(&out, "index build").unwrap();
    familiar(build_args(&out, &inputs, &EXTRA))
        .failure()
        .stderr_has(&[format!("in use by process {}", std::process::id())]);
    // --restart does not get past it either.
    familiar(build_args(
        &out,
        &inputs,
        &[&EXTRA[..], &["--restart"]].concat(),
    ))
    .failure()
    .stderr_has(&["in use by process"]);
    assert_eq!(entries(&out), vec![familiar::lock::LOCK_FILE.to_string()]);
    drop(lock);
    build(&out, &inputs, &EXTRA);
    let clean = t.join("clean");
    fresh(&clean, &inputs);
    assert_same_tree(&clean, &out);

    // A lock file left by a killed build (the kernel's lock died with it) blocks nothing.
    let stale = t.mkdir("stale");
    t.write(format!("stale/{}", familiar::lock::LOCK_FILE), "999999\n");
    build(&stale, &inputs, &EXTRA);
    assert_same_tree(&clean, &stale);
}

#[test]
fn a_second_build_process_is_refused_while_the_first_runs() {
    // Two real processes: the first builds a corpus large enough to take a while.
    let t = TestDir::new();
    let big = t.write_jsonl("big.jsonl", &records("charlie", 2500));
    let out = t.join("idx");
    let mut first = command()
        .args(build_args(
            &out,
            std::slice::from_ref(&big),
            &["--shard-tokens", "2000", "--threads", "1"],
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it holds the lock.
    let lock = out.join(familiar::lock::LOCK_FILE);
    let started = std::time::Instant::now();
    while !lock.exists() && first.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed().as_secs() < 120,
            "the first build never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = familiar(build_args(
        &out,
        std::slice::from_ref(&big),
        &["--shard-tokens", "2000", "--threads", "1"],
    ));
    let status = first.wait().unwrap();
    assert!(status.success(), "the first build failed: {status:?}");
    if second.code() == Some(0) {
        // The first finished before the second looked: then the second found it complete.
        second.stderr_has(&["already complete"]);
        eprintln!("the first build finished before the second started; lock not exercised");
    } else {
        second
            .failure()
            .stderr_has(&[format!("in use by process {}", first.id())]);
    }
    assert!(
        !lock.exists(),
        "the lock file is removed when the build ends"
    );
    familiar(
        ["index", "verify"]
            .iter()
            .map(|s| s.to_string())
            .chain([out.display().to_string()]),
    )
    .success();
}

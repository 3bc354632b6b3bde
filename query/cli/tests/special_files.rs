//! Special files in place of index files, tokenizers or corpus inputs: a FIFO (opening one blocks
//! until a writer comes), a symbolic link to `/dev/zero` (never ends) or `/dev/urandom`. Every
//! command must fail at once with an error naming the file: no hang, no memory exhaustion.

#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use util::*;

const LIMIT: Duration = Duration::from_secs(60);

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

#[derive(Debug, Clone, Copy)]
enum Special {
    Fifo,
    DevZero,
    DevUrandom,
}

/// Replaces `path` by a special file.
fn replace(path: &Path, with: Special) {
    let _ = std::fs::remove_file(path);
    match with {
        Special::Fifo => mkfifo(path),
        Special::DevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        Special::DevUrandom => std::os::unix::fs::symlink("/dev/urandom", path).unwrap(),
    }
}

fn what(with: Special) -> &'static str {
    match with {
        Special::Fifo => "FIFO",
        Special::DevZero | Special::DevUrandom => "character device",
    }
}

#[test]
fn special_files_in_an_index_fail_at_once_naming_the_file() {
    let t = TestDir::new();
    let clean = fixture_index_sharded();
    let files = [
        "manifest.json",
        "tokenizer.json",
        "shard-00000/manifest.json",
        "shard-00000/tokens.bin",
        "shard-00001/suffix_array.bin",
        "shard-00000/doc_offsets.bin",
        "shard-00000/documents.parquet",
    ];
    let mut n = 0;
    for rel in files {
        for with in [Special::Fifo, Special::DevZero, Special::DevUrandom] {
            n += 1;
            let idx = t.copy_tree(clean, format!("copy-{n}"));
            let damaged = idx.join(rel);
            replace(&damaged, with);
            let name = damaged.display().to_string();
            // A text query opens every shard and loads the tokenizer.
            let o = familiar_within(os(&[&"count", &idx, &" Zelxir"]), LIMIT);
            o.failure().stderr_has(&[name.as_str(), what(with)]);
            // verify reports it as a problem.
            let o = familiar_within(os(&[&"index", &"verify", &idx]), LIMIT);
            o.failure()
                .stdout_has(&["problem:", name.as_str(), what(with)]);
        }
    }
}

#[test]
fn a_resumed_build_over_a_special_file_rebuilds_that_shard() {
    let t = TestDir::new();
    let inputs = fixture_inputs();
    let extra = ["--shard-tokens", SHARDED_TOKENS];
    let clean = fixture_index_sharded();
    for (rel, with) in [
        ("shard-00001/manifest.json", Special::Fifo),
        ("shard-00001/tokens.bin", Special::Fifo),
        ("shard-00001/tokens.bin", Special::DevZero),
    ] {
        let out = t.copy_tree(clean, format!("resume-{}", entries(t.path()).len()));
        std::fs::remove_file(out.join("manifest.json")).unwrap();
        replace(&out.join(rel), with);
        let o = familiar_within(build_args(&out, &inputs, &extra), LIMIT);
        o.success().stderr_has(&["1 kept from an interrupted run"]);
        assert_same_tree(clean, &out);
    }
}

#[test]
fn special_files_as_build_inputs_or_tokenizer_are_refused() {
    let t = TestDir::new();
    let good = t.write_jsonl("good.jsonl", &[doc("g", "a good document")]);
    for with in [Special::Fifo, Special::DevZero] {
        let input = t.join(format!("special-{with:?}.jsonl"));
        replace(&input, with);
        let out = t.join(format!("out-input-{with:?}"));
        let o = familiar_within(build_args(&out, &[good.clone(), input.clone()], &[]), LIMIT);
        o.failure()
            .stderr_has(&[input.display().to_string().as_str(), what(with)]);

        let tok = t.join(format!("tokenizer-{with:?}.json"));
        replace(&tok, with);
        let mut args = build_args(
            &t.join(format!("out-tok-{with:?}")),
            std::slice::from_ref(&good),
            &[],
        );
        args[4] = tok.clone().into();
        let o = familiar_within(&args, LIMIT);
        o.failure()
            .stderr_has(&[tok.display().to_string().as_str(), what(with)]);
    }
}

/// The test's inputs, for the record of what a symbolic link to a regular file does: it is read.
#[test]
fn symbolic_links_to_regular_files_are_followed() {
    let t = TestDir::new();
    let good = t.write_jsonl("good.jsonl", &[doc("g", "a good document")]);
    let link: PathBuf = t.join("link.jsonl");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let out = t.join("idx");
    build(&out, &[link], &[]).stderr_has(&["1 documents"]);
}

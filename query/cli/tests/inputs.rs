//! Issue 14, "Nothing lost, nothing let in", for the build's inputs and the files an index reads:
//! a byte-order mark opens a file without becoming text or an error; an index built inside its
//! own input directory (or any other output of familiar there) is not read back as corpus; a
//! document longer than the shard size is reported; a SIGBUS from an index file truncated while
//! mapped ends the process with a message; the text index opens regular files only.

#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use util::*;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `BOM` followed by `bytes`.
fn with_bom(bytes: &[u8]) -> Vec<u8> {
    [BOM, bytes].concat()
}

/// The token, suffix-array and offset files of every shard of an index, by relative path.
fn binaries(index: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    tree(index)
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "bin"))
        .collect()
}

#[test]
fn a_byte_order_mark_at_the_start_of_a_file_is_neither_an_error_nor_text() {
    let t = TestDir::new();
    let records = [
        doc("a", "the first record, read despite the mark"),
        doc("b", "a second record"),
    ];
    let plain = jsonl_bytes(&records);
    let text = "A plain text document.\nWith two lines.\n";
    for (dir, mark) in [("bom", true), ("clean", false)] {
        let add = |b: &[u8]| if mark { with_bom(b) } else { b.to_vec() };
        t.write(format!("{dir}/1.jsonl"), add(&plain));
        t.write(format!("{dir}/2.jsonl.zst"), zst(&add(&plain)));
        t.write(format!("{dir}/3.jsonl.gz"), gz(&add(&plain)));
        t.write(format!("{dir}/4.txt"), add(text.as_bytes()));
    }
    let with = t.join("idx-bom");
    build(&with, &[t.join("bom")], &[]).stderr_has(&["7 documents"]);
    let without = t.join("idx-clean");
    build(&without, &[t.join("clean")], &[]);
    // The same tokens: the mark is neither in the JSONL records nor in the text document.
    assert_eq!(binaries(&with), binaries(&without));
    let docs = read_parquet(&with.join("shard-00000/documents.parquet"), "documents");
    let lengths = col::<arrow_array::UInt64Array>(&docs, "byte_length");
    assert_eq!(lengths.value(6), text.len() as u64);

    // Only at the start of the file: a mark that opens a later line is that line's (invalid).
    let mut late = plain.clone();
    late.extend(with_bom(&jsonl_bytes(&[doc("c", "third")])));
    let bad = t.write("late/bad.jsonl", late);
    familiar(build_args(&t.join("idx-late"), &[bad], &[]))
        .failure()
        .stderr_has(&["bad.jsonl", ":3", "invalid JSON"]);

    // A text file holding only the mark is an empty input, like an empty file.
    let only = t.write("only/mark.txt", BOM);
    familiar(build_args(&t.join("idx-only"), &[only], &[]))
        .failure()
        .stderr_has(&["mark.txt", "holds no documents"]);
}

/// `familiar index build corpus/ --out corpus/idx`, run again, resumed, or another build of the
/// same directory: the index is not read as corpus, and what was skipped is reported.
#[test]
fn an_index_inside_its_input_directory_is_not_read_as_corpus() {
    let t = TestDir::new();
    let corpus = t.mkdir("corpus");
    let records: Vec<_> = (0..40)
        .map(|i| {
            doc(
                &format!("d{i}"),
                &format!("document number {i} of the corpus"),
            )
        })
        .collect();
    t.write_jsonl("corpus/a.jsonl", &records[..20]);
    t.write_jsonl("corpus/sub/b.jsonl", &records[20..]);
    let reference = t.join("reference");
    let extra = ["--shard-tokens", "200"];
    build(&reference, std::slice::from_ref(&corpus), &extra).stderr_has(&["40 documents"]);

    // Built into the corpus directory: the first run does not see it (it does not exist yet).
    let inside = corpus.join("idx");
    build(&inside, std::slice::from_ref(&corpus), &extra).stderr_has(&["40 documents"]);
    // Run again: complete, nothing read from the index itself; the skip is reported.
    build(&inside, std::slice::from_ref(&corpus), &extra).stderr_has(&[
        "already complete",
        "skipped",
        inside.display().to_string().as_str(),
        "this build's --out directory",
    ]);

    // Interrupted and resumed inside the corpus: the same index as built elsewhere.
    let resumed = corpus.join("sub/resumed");
    build(
        &resumed,
        std::slice::from_ref(&corpus),
        &["--shard-tokens", "200", "--stop-after-shards", "1"],
    )
    .stderr_has(&["stopped after 1 shard"]);
    build(&resumed, std::slice::from_ref(&corpus), &extra).stderr_has(&[
        "40 documents",
        "kept from an interrupted run",
        "skipped",
    ]);
    assert_eq!(binaries(&resumed), binaries(&reference));

    // Another build of the directory skips both indexes, and says why.
    let other = t.join("other");
    build(&other, std::slice::from_ref(&corpus), &extra).stderr_has(&[
        "40 documents",
        "in 2 directories of familiar's own output",
        "a familiar index (manifest.json",
    ]);
    assert_eq!(binaries(&other), binaries(&reference));
    // The same through a glob pattern that reaches into the indexes' files.
    let globbed = t.join("globbed");
    let pattern = format!("{}/**/*.*", corpus.display());
    let o = familiar(build_args(&globbed, &[PathBuf::from(pattern)], &extra));
    o.success().stderr_has(&["40 documents", "skipped"]);
    assert_eq!(binaries(&globbed), binaries(&reference));

    // An index named as the input: not corpus, and the error says why.
    familiar(build_args(&t.join("x"), std::slice::from_ref(&inside), &[]))
        .failure()
        .stderr_has(&["holds no corpus files", "a familiar index"]);
    // A file of the --out directory named explicitly: refused.
    familiar(build_args(
        &inside,
        &[inside.join("shard-00000/documents.parquet")],
        &[],
    ))
    .failure()
    .stderr_has(&["inside the --out directory"]);
}

/// A document longer than --shard-tokens is put in a shard of its own, with a warning naming it
/// and a count at the end.
#[test]
fn a_document_longer_than_the_shard_size_is_reported() {
    let t = TestDir::new();
    let long = "many words in a very long document ".repeat(40);
    let input = t.write_jsonl(
        "c.jsonl",
        &[
            doc("short-1", "a short one"),
            doc("long-1", &long),
            doc("short-2", "another short one"),
        ],
    );
    let out = t.join("idx");
    let o = build(
        &out,
        std::slice::from_ref(&input),
        &["--shard-tokens", "64"],
    );
    o.stderr_has(&[
        "warning: document 1 (id \"long-1\", ",
        "c.jsonl:2) has",
        "more than the shard size of 64 tokens",
        "shard-00001 on its own",
        "1 document(s) longer than the shard size of 64 tokens",
    ]);
    // The long document is alone in its shard, between the two short ones.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let docs: Vec<u64> = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["documents"].as_u64().unwrap())
        .collect();
    assert_eq!(docs, [1, 1, 1]);
    assert!(m["shards"][1]["tokens"].as_u64().unwrap() > 64);

    // Documents within the shard size: no warning.
    let fine = t.join("fine");
    let o = build(&fine, &[input], &["--shard-tokens", "100000"]);
    assert!(!o.stderr.contains("warning"), "{o}");
    assert!(!o.stderr.contains("longer than the shard size"), "{o}");
}

/// A FIFO or a link to a character device in place of a text-index file: `concepts count`
/// fails at once, naming the file and what it is (a FIFO would block the open).
#[cfg(unix)]
#[test]
fn the_text_index_opens_regular_files_only() {
    let t = TestDir::new();
    let lexicon = fixtures().join("concepts").join("planted.csv");
    let names = ["text/meta.json", "text/.managed.json", "words.fst"];
    let segment = std::fs::read_dir(fixture_index().join("shard-00000/text"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".idx"))
        .unwrap();
    let segment = format!("text/{segment}");
    for (n, rel) in names.iter().copied().chain([segment.as_str()]).enumerate() {
        for fifo in [true, false] {
            let idx = t.copy_tree(fixture_index(), format!("copy-{n}-{fifo}"));
            let path = idx.join("shard-00000").join(rel);
            std::fs::remove_file(&path).unwrap();
            if fifo {
                let ok = std::process::Command::new("mkfifo")
                    .arg(&path)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            } else {
                std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
            }
            let out = t.join(format!("concepts-{n}-{fifo}"));
            let o = familiar_within(
                [
                    "concepts".as_ref(),
                    "count".as_ref(),
                    idx.as_os_str(),
                    lexicon.as_os_str(),
                    "--out".as_ref(),
                    out.as_os_str(),
                    "--quiet".as_ref(),
                ],
                Duration::from_secs(60),
            );
            let kind = if fifo { "FIFO" } else { "character device" };
            o.failure()
                .stderr_has(&[path.display().to_string().as_str(), kind]);
        }
    }
}

/// Truncating an index file while `familiar` reads it raises SIGBUS, which no check can
/// prevent: the process ends with exit status 1 and a message, not killed by the signal.
#[cfg(target_os = "linux")]
#[test]
fn an_index_file_truncated_while_in_use_ends_with_a_message() {
    use std::io::Write;
    let t = TestDir::new();
    let mut queries = 20_000usize;
    for attempt in 0..5 {
        let idx = t.copy_tree(fixture_index(), format!("copy-{attempt}"));
        let batch = t.join(format!("batch-{attempt}.jsonl"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&batch).unwrap());
        for i in 0..queries {
            writeln!(w, "{{\"text\": \" the {i} and\"}}").unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let mut c = command();
        c.args([
            "count".as_ref(),
            "--batch".as_ref(),
            batch.as_os_str(),
            idx.as_os_str(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        let described = format!("{c:?}");
        let mut child = c.spawn().unwrap();
        // Wait until the index is mapped (and queries run), then truncate its files in place.
        let maps = PathBuf::from(format!("/proc/{}/maps", child.id()));
        let started = Instant::now();
        let mut truncated = false;
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(120) {
            let mapped = std::fs::read_to_string(&maps).is_ok_and(|m| {
                m.contains(&*idx.join("shard-00000/suffix_array.bin").to_string_lossy())
            });
            if mapped {
                for name in ["suffix_array.bin", "tokens.bin"] {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(idx.join("shard-00000").join(name))
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                }
                truncated = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let o = child.wait_with_output().unwrap();
        let out = Out {
            command: described,
            status: o.status,
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        if !truncated || out.code() == Some(0) {
            // It finished before the files were truncated: give it more to do.
            queries *= 4;
            continue;
        }
        out.failure().stderr_has(&[
            "familiar: an index file was truncated or replaced while it was in use (SIGBUS)",
            "rebuild or restore the index",
        ]);
        return;
    }
    panic!("familiar count --batch always finished before its index could be truncated");
}

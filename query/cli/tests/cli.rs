//! End-to-end tests of the `familiar` command line: the real binary, run in temporary
//! directories, on the fixture corpus and on small generated corpora.

#![allow(clippy::unwrap_used)]

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::*;

// =============================================================================================
// The scripts' interface: index build / info / verify, count.

#[test]
fn build_from_files_then_info_and_info_json() {
    let t = TestDir::new();
    let out = t.join("idx");
    let o = build(&out, &fixture_inputs(), &[]);
    o.stderr_has(&["built ", "1200 documents", "1 built now"]);
    assert!(
        o.stdout.is_empty(),
        "a build prints its report on stderr\n{o}"
    );
    for f in [
        "build.json",
        "manifest.json",
        "tokenizer.json",
        "shard-00000",
    ] {
        assert!(out.join(f).exists(), "{f} missing after a build");
    }

    let info = familiar(["index".as_ref(), "info".as_ref(), out.as_os_str()]);
    info.success().stdout_has(&[
        "format      version 1",
        "documents   1200",
        "shards      1",
        "shard-00000",
        "2048 ids",
        "text index  every shard",
        "distinct words",
    ]);

    let j = familiar([
        "index".as_ref(),
        "info".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
    ]);
    let m = j.success().json();
    assert_eq!(m["format"], "familiar-index");
    assert_eq!(m["documents"], 1200);
    assert_eq!(m["tokenizer"]["vocab_size"], 2048);
    assert!(m["tokenizer"]["hash"]
        .as_str()
        .unwrap()
        .starts_with("xxh3:"));
    let shards = m["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 1);
    let tokens: u64 = shards.iter().map(|s| s["tokens"].as_u64().unwrap()).sum();
    assert_eq!(m["tokens"].as_u64().unwrap(), tokens);
    // The text form reports the same token total.
    info.stdout_has(&[&format!("tokens      {tokens} ")]);
}

/// Two corpora files per format; every format is read and each document is findable.
fn write_all_formats(t: &TestDir, dir: &str) -> PathBuf {
    let d = t.mkdir(dir);
    t.write_jsonl(
        d.join("a.jsonl"),
        &[
            doc("a1", "alpha marker one keeps the first line"),
            doc("a2", "another alpha line follows it"),
        ],
    );
    t.write_jsonl_zst(
        d.join("b.jsonl.zst"),
        &[doc("b1", "bravo marker two in zstd")],
    );
    t.write_jsonl_gz(
        d.join("c.jsonl.gz"),
        &[doc("c1", "charlie marker three in gzip")],
    );
    t.write_txt(d.join("d.txt"), "delta marker four as plain text");
    t.write_parquet(
        d.join("e.parquet"),
        &[("e1", "echo marker five from parquet")],
    );
    t.write(d.join("notes.md"), "not a corpus file");
    d
}

#[test]
fn build_reads_jsonl_zst_gz_txt_and_parquet_files() {
    let t = TestDir::new();
    let d = write_all_formats(&t, "corpus");
    let inputs: Vec<PathBuf> = ["a.jsonl", "b.jsonl.zst", "c.jsonl.gz", "d.txt", "e.parquet"]
        .iter()
        .map(|n| d.join(n))
        .collect();
    let out = t.join("idx");
    build(&out, &inputs, &[]).stderr_has(&["6 documents"]);
    let idx = out.as_os_str();
    let count = |q: &str| {
        let o = familiar(["count".as_ref(), idx, std::ffi::OsStr::new(q)]);
        o.success().number()
    };
    assert_eq!(count(" alpha marker one"), 1);
    assert_eq!(count(" bravo marker two"), 1);
    assert_eq!(count(" charlie marker three"), 1);
    assert_eq!(count(" delta marker four"), 1);
    assert_eq!(count(" echo marker five"), 1);
    assert_eq!(count(" marker"), 5);
    assert_eq!(count(" alpha"), 2);

    // Each document remembers where it came from.
    let txt_id = d.join("d.txt").display().to_string();
    let expect = [
        ("a1", "a.jsonl"),
        ("a2", "a.jsonl"),
        ("b1", "b.jsonl.zst"),
        ("c1", "c.jsonl.gz"),
        (txt_id.as_str(), "d.txt"),
        ("e1", "e.parquet"),
    ];
    for (i, (id, file)) in expect.iter().enumerate() {
        let o = familiar([
            "docs".as_ref(),
            idx,
            i.to_string().as_ref(),
            "--json".as_ref(),
            "--window".as_ref(),
            "0".as_ref(),
            "1000".as_ref(),
        ]);
        let v = o.success().json();
        assert_eq!(v["external_id"], *id, "{o}");
        assert!(v["input_file"].as_str().unwrap().ends_with(file), "{o}");
    }
}

#[test]
fn build_accepts_a_directory_and_a_glob() {
    let t = TestDir::new();
    let d = write_all_formats(&t, "corpus");

    // A directory: every recognized file, in name order; the rest is reported, not read.
    let by_dir = t.join("by-dir");
    let o = familiar(build_args(&by_dir, std::slice::from_ref(&d), &[]));
    o.success()
        .stderr_has(&["6 documents", "ignored 1 file(s)", "notes.md"]);

    // A glob pattern, expanded by familiar (not the shell).
    let by_glob = t.join("by-glob");
    let pattern = PathBuf::from(format!("{}/*.jsonl*", d.display()));
    build(&by_glob, &[pattern], &[]).stderr_has(&["4 documents"]);
    let o = familiar(["count".as_ref(), by_glob.as_os_str(), " marker".as_ref()]);
    assert_eq!(o.success().number(), 3);

    // A glob matching nothing is an error naming the pattern.
    let none = PathBuf::from(format!("{}/*.nothing", d.display()));
    familiar(build_args(&t.join("none"), &[none], &[]))
        .failure()
        .stderr_has(&["matched no files", "*.nothing"]);

    // The fixture corpus as a directory: planted.json (a plain .json inside a directory) is
    // listed as ignored, not read as JSONL.
    let out = t.join("fixture-dir");
    build(
        &out,
        &[fixtures().join("corpus")],
        &["--shard-tokens", SHARDED_TOKENS],
    )
    .stderr_has(&["1200 documents", "ignored 1 file(s)", "planted.json"]);
    let o = familiar(["count".as_ref(), out.as_os_str(), " Zelxir Exoexo".as_ref()]);
    assert_eq!(o.success().number(), 512);
    // A glob over the parts gives the same index, byte for byte.
    let parts = PathBuf::from(format!("{}/part-*", fixtures().join("corpus").display()));
    let by_parts = t.join("fixture-glob");
    build(&by_parts, &[parts], &["--shard-tokens", SHARDED_TOKENS]).stderr_has(&["1200 documents"]);
    assert_same_tree(&out, &by_parts);
}

#[test]
fn verify_passes_on_a_sound_index_and_fails_after_corruption() {
    let idx = fixture_index_sharded();
    familiar(["index".as_ref(), "verify".as_ref(), idx.as_os_str()])
        .success()
        .stdout_has(&["ok: ", "checksums match"]);
    familiar([
        "index".as_ref(),
        "verify".as_ref(),
        idx.as_os_str(),
        "--full".as_ref(),
    ])
    .success()
    .stdout_has(&["ok: ", "the suffix array is a permutation"]);

    for file in [
        "tokens.bin",
        "suffix_array.bin",
        "doc_offsets.bin",
        "documents.parquet",
    ] {
        let t = TestDir::new();
        let copy = t.copy_tree(idx, "idx");
        let target = copy.join("shard-00001").join(file);
        let mut bytes = std::fs::read(&target).unwrap();
        let at = bytes.len() - 9;
        bytes[at] ^= 0x5a;
        std::fs::write(&target, bytes).unwrap();
        for full in [false, true] {
            let mut args = vec!["index".as_ref(), "verify".as_ref(), copy.as_os_str()];
            if full {
                args.push("--full".as_ref());
            }
            let o = familiar(args);
            o.failure();
            let problems: Vec<&str> = o
                .stdout
                .lines()
                .filter(|l| l.starts_with("problem:"))
                .collect();
            assert!(!problems.is_empty(), "no problem: lines\n{o}");
            assert!(
                problems
                    .iter()
                    .any(|l| l.contains(file) && l.contains("shard-00001")),
                "no problem names {file}\n{o}"
            );
        }
    }

    // A missing shard directory is a problem too.
    let t = TestDir::new();
    let copy = t.copy_tree(idx, "idx");
    std::fs::remove_dir_all(copy.join("shard-00001")).unwrap();
    let o = familiar(["index".as_ref(), "verify".as_ref(), copy.as_os_str()]);
    o.failure().stdout_has(&["problem:", "shard-00001"]);
}

fn count_json(idx: &Path, text: &str) -> Value {
    familiar([
        "count".as_ref(),
        idx.as_os_str(),
        text.as_ref(),
        "--json".as_ref(),
    ])
    .success()
    .json()
}

fn ids_of(v: &Value) -> Vec<u64> {
    v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn id_list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn count_prints_just_the_count_and_takes_tokens_and_json() {
    let idx = fixture_index();
    let o = familiar(["count".as_ref(), idx.as_os_str(), " Zelxir Exoexo".as_ref()]);
    assert_eq!(o.success().stdout, "512\n", "{o}");

    let v = count_json(idx, " Zelxir Exoexo");
    assert!(v.is_object());
    assert_eq!(v["count"], 512);
    assert_eq!(v["text"], " Zelxir Exoexo");
    let ids = ids_of(&v);
    assert!(!ids.is_empty());

    let o = familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--tokens".as_ref(),
        id_list(&ids).as_ref(),
    ]);
    assert_eq!(o.success().stdout, "512\n", "{o}");
    let o = familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--tokens".as_ref(),
        id_list(&ids).as_ref(),
        "--json".as_ref(),
    ]);
    let v = o.success().json();
    assert_eq!(v["count"], 512);
    assert_eq!(ids_of(&v), ids);

    // A sequence that never occurs counts 0 (" Zelxir" is always followed by " Exoexo").
    let o = familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--tokens".as_ref(),
        id_list(&[ids[0], ids[0]]).as_ref(),
    ]);
    assert_eq!(o.success().number(), 0);

    // The scripts' spelling `--tokens 464,3290` parses (it is not a usage error, exit 2); with
    // this 2048-id vocabulary 3290 is unknown, which fails cleanly naming it.
    familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--tokens".as_ref(),
        "464,3290".as_ref(),
    ])
    .failure()
    .stderr_has(&["3290", "vocabulary"]);
    // A malformed token list is a usage error.
    let o = familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--tokens".as_ref(),
        "464,abc".as_ref(),
    ]);
    o.clean_exit();
    assert_eq!(o.code(), Some(2), "{o}");
    o.stderr_has(&["abc"]);
}

#[test]
fn count_batch_answers_each_line_in_order() {
    let idx = fixture_index();
    let t = TestDir::new();
    let a = ids_of(&count_json(idx, " Azuoxa Zamzor"));
    let batch = t.write(
        "batch.jsonl",
        format!(
            "{}\n{}\n\n{}\n{}\n{}\n",
            json!({"text": " Zelxir Exoexo"}),
            json!({"tokens": a}),
            json!({"text": " Azuoxa Zamzor"}),
            json!({"text": " no such planted phrase qqq"}),
            json!({"tokens": [a[0]]}),
        ),
    );
    let o = familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--batch".as_ref(),
        batch.as_os_str(),
    ]);
    let lines = o.success().json_lines();
    assert_eq!(lines.len(), 5, "one answer per non-blank line\n{o}");
    assert_eq!(lines[0]["count"], 512);
    assert_eq!(lines[0]["text"], " Zelxir Exoexo");
    assert_eq!(lines[1]["count"], 32);
    assert_eq!(ids_of(&lines[1]), a);
    assert_eq!(lines[2]["count"], 32);
    assert_eq!(lines[2]["text"], " Azuoxa Zamzor");
    assert_eq!(lines[3]["count"], 0);
    let single = familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--tokens".as_ref(),
        a[0].to_string().as_ref(),
    ])
    .success()
    .number();
    assert_eq!(lines[4]["count"].as_u64().unwrap(), single);
    assert!(single >= 32);

    // A bad line fails naming the file and line.
    let bad = t.write(
        "bad.jsonl",
        format!("{}\nnot json\n", json!({"text": " Zelxir"})),
    );
    familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--batch".as_ref(),
        bad.as_os_str(),
    ])
    .failure()
    .stderr_has(&["bad.jsonl:2", "invalid JSON"]);
    let wrong = t.write("wrong.jsonl", format!("{}\n", json!({"query": "x"})));
    familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--batch".as_ref(),
        wrong.as_os_str(),
    ])
    .failure()
    .stderr_has(&["wrong.jsonl:1", "\"text\"", "\"tokens\""]);
    let unknown = t.write(
        "unknown.jsonl",
        format!("{}\n", json!({"tokens": [999999]})),
    );
    familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--batch".as_ref(),
        unknown.as_os_str(),
    ])
    .failure()
    .stderr_has(&["unknown.jsonl:1", "999999"]);
}

// =============================================================================================
// The fixture corpus: ground truth.

#[test]
fn planted_phrase_counts_match_ground_truth() {
    let (documents, planted) = planted();
    assert!(planted.len() >= 10);
    let idx = fixture_index();
    for p in &planted {
        let o = familiar(["count".as_ref(), idx.as_os_str(), p.query().as_ref()]);
        assert_eq!(
            o.success().number(),
            p.occurrences,
            "count of {:?}\n{o}",
            p.text
        );
    }
    let info = familiar([
        "index".as_ref(),
        "info".as_ref(),
        idx.as_os_str(),
        "--json".as_ref(),
    ])
    .success()
    .json();
    assert_eq!(info["documents"].as_u64().unwrap(), documents);

    // The same through --batch on the index cut into several shards.
    let sharded = fixture_index_sharded();
    let t = TestDir::new();
    let mut lines = String::new();
    for p in &planted {
        lines.push_str(&json!({"text": p.query()}).to_string());
        lines.push('\n');
    }
    let batch = t.write("planted.jsonl", lines);
    let o = familiar([
        "count".as_ref(),
        sharded.as_os_str(),
        "--batch".as_ref(),
        batch.as_os_str(),
    ]);
    let answers = o.success().json_lines();
    assert_eq!(answers.len(), planted.len());
    for (p, a) in planted.iter().zip(&answers) {
        assert_eq!(a["text"], p.query().as_str());
        assert_eq!(a["count"].as_u64().unwrap(), p.occurrences, "{:?}", p.text);
    }
    let info = familiar([
        "index".as_ref(),
        "info".as_ref(),
        sharded.as_os_str(),
        "--json".as_ref(),
    ])
    .success()
    .json();
    assert!(info["shards"].as_array().unwrap().len() >= 5, "{info}");
    assert_eq!(info["documents"].as_u64().unwrap(), documents);
}

#[test]
fn cnf_documents_match_planted_documents() {
    let (_, planted) = planted();
    for idx in [fixture_index(), fixture_index_sharded()] {
        for p in &planted {
            let o = familiar([
                "cnf".as_ref(),
                idx.as_os_str(),
                "--clause".as_ref(),
                p.query().as_ref(),
                "--json".as_ref(),
            ]);
            let v = o.success().json();
            assert_eq!(
                v["documents"].as_u64().unwrap(),
                p.documents,
                "{:?}\n{o}",
                p.text
            );
            assert_eq!(v["occurrences"].as_u64().unwrap(), p.occurrences, "{o}");
            assert_eq!(v["approximate"], false);
            let listed = v["doc_ids"].as_array().unwrap();
            assert_eq!(listed.len() as u64, p.documents.min(10), "{o}");
        }
    }

    // Two clauses: documents with both phrases; an OR clause: documents with either.
    let idx = fixture_index();
    let (a, b) = (&planted[planted.len() - 5], &planted[planted.len() - 6]);
    let and = familiar([
        "cnf".as_ref(),
        idx.as_os_str(),
        "--clause".as_ref(),
        a.query().as_ref(),
        "--clause".as_ref(),
        b.query().as_ref(),
        "--json".as_ref(),
        "--list".as_ref(),
        "100000".as_ref(),
    ])
    .success()
    .json();
    let or = familiar([
        "cnf".as_ref(),
        idx.as_os_str(),
        "--clause".as_ref(),
        format!("{}|{}", a.query(), b.query()).as_ref(),
        "--json".as_ref(),
    ])
    .success()
    .json();
    let (n_and, n_or) = (
        and["documents"].as_u64().unwrap(),
        or["documents"].as_u64().unwrap(),
    );
    assert!(n_and <= a.documents.min(b.documents));
    assert_eq!(
        n_or + n_and,
        a.documents + b.documents,
        "inclusion–exclusion"
    );
    assert_eq!(and["doc_ids"].as_array().unwrap().len() as u64, n_and);
}

fn locate_jsonl(idx: &Path, text: &str, offset: u64, limit: u64) -> (Vec<Value>, String) {
    let o = familiar([
        "locate".as_ref(),
        idx.as_os_str(),
        text.as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
        "--offset".as_ref(),
        offset.to_string().as_ref(),
        "--limit".as_ref(),
        limit.to_string().as_ref(),
    ]);
    o.success();
    (o.json_lines(), o.stderr.clone())
}

#[test]
fn locate_pages_consistently() {
    let (_, planted) = planted();
    let p = planted
        .iter()
        .find(|p| p.occurrences > 30 && p.occurrences < 100 && p.documents < p.occurrences)
        .unwrap();
    for idx in [fixture_index(), fixture_index_sharded()] {
        let (all, stderr) = locate_jsonl(idx, &p.query(), 0, 100_000);
        assert!(
            stderr.contains(&format!("{} occurrences", p.occurrences)),
            "{stderr}"
        );
        assert_eq!(all.len() as u64, p.occurrences);
        let docs: BTreeSet<u64> = all.iter().map(|h| h["doc_id"].as_u64().unwrap()).collect();
        assert_eq!(docs.len() as u64, p.documents);
        let places: BTreeSet<(u64, u64)> = all
            .iter()
            .map(|h| {
                (
                    h["shard"].as_u64().unwrap(),
                    h["position"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(places.len(), all.len(), "every hit is a distinct position");
        for h in &all {
            let ctx = h["context"].as_str().unwrap();
            assert!(ctx.contains(&format!("[{}]", p.query())), "{h}");
        }

        // Pages of 7 put together are the whole list, in the same order.
        let mut paged = Vec::new();
        let mut offset = 0;
        loop {
            let (page, stderr) = locate_jsonl(idx, &p.query(), offset, 7);
            assert!(
                stderr.contains(&format!("from offset {offset}")),
                "{stderr}"
            );
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 7);
            offset += page.len() as u64;
            paged.extend(page);
        }
        assert_eq!(paged, all);
        // Past the end: nothing, successfully.
        let (page, _) = locate_jsonl(idx, &p.query(), p.occurrences + 5, 10);
        assert!(page.is_empty());
        // --limit 1 --offset k is the k-th hit.
        let (one, _) = locate_jsonl(idx, &p.query(), 3, 1);
        assert_eq!(one, vec![all[3].clone()]);
    }

    // The text table has a header and one row per hit.
    let o = familiar([
        "locate".as_ref(),
        fixture_index().as_os_str(),
        p.query().as_ref(),
        "--limit".as_ref(),
        "4".as_ref(),
    ]);
    o.success()
        .stdout_has(&["doc_id", "offset_in_doc", "context"]);
    assert_eq!(o.stdout.lines().count(), 2 + 4, "{o}");
}

#[test]
fn locate_writes_parquet() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let idx = fixture_index();
    let t = TestDir::new();
    let f = t.join("hits.parquet");
    familiar([
        "locate".as_ref(),
        idx.as_os_str(),
        " Zelxir Exoexo".as_ref(),
        "--limit".as_ref(),
        "1000".as_ref(),
        "--format".as_ref(),
        "parquet".as_ref(),
        "--output".as_ref(),
        f.as_os_str(),
    ])
    .success();
    let bytes = std::fs::read(&f).unwrap();
    assert_eq!(&bytes[..4], b"PAR1");
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut rows = 0;
    for batch in reader {
        let batch = batch.unwrap();
        for col in ["doc_id", "shard", "position", "offset_in_doc", "context"] {
            assert!(batch.column_by_name(col).is_some(), "no column {col}");
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, 512);

    // Parquet needs a file.
    familiar([
        "locate".as_ref(),
        idx.as_os_str(),
        " Zelxir Exoexo".as_ref(),
        "--format".as_ref(),
        "parquet".as_ref(),
    ])
    .failure()
    .stderr_has(&["--output"]);

    // ntd writes Parquet too.
    let g = t.join("ntd.parquet");
    familiar([
        "ntd".as_ref(),
        idx.as_os_str(),
        " Zelxir".as_ref(),
        "--format".as_ref(),
        "parquet".as_ref(),
        "-o".as_ref(),
        g.as_os_str(),
    ])
    .success();
    assert_eq!(&std::fs::read(&g).unwrap()[..4], b"PAR1");
}

#[test]
fn docs_prints_the_document() {
    let idx = fixture_index();
    let records = fixture_records();
    let first = &records[0];
    let o = familiar(["docs".as_ref(), idx.as_os_str(), "0".as_ref()]);
    o.success();
    let mut lines = o.stdout.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("== document 0 ("), "{o}");
    assert!(header.contains(first["id"].as_str().unwrap()), "{o}");
    assert!(header.contains(first["source"].as_str().unwrap()), "{o}");
    assert!(header.contains("part-0000.jsonl.zst"), "{o}");
    let text: String = lines.collect::<Vec<_>>().join("\n");
    // The byte-level tokenizer adds a prefix space, which decoding keeps.
    assert_eq!(text.trim_start(), first["text"].as_str().unwrap(), "{o}");

    let v = familiar([
        "docs".as_ref(),
        idx.as_os_str(),
        "0".as_ref(),
        "--json".as_ref(),
    ])
    .success()
    .json();
    assert_eq!(v["doc_id"], 0);
    assert_eq!(v["external_id"], first["id"]);
    assert_eq!(v["source"], first["source"]);
    assert_eq!(
        v["input_file"],
        fixture_inputs()[0].display().to_string().as_str()
    );
    assert_eq!(
        v["byte_length"].as_u64().unwrap() as usize,
        first["text"].as_str().unwrap().len()
    );
    assert_eq!(
        v["text"].as_str().unwrap().trim_start(),
        first["text"].as_str().unwrap()
    );
    let meta = v["metadata"].to_string();
    assert!(meta.contains("title"), "{v}");

    // A window of tokens of another document: where locate says a phrase is.
    let (hits, _) = locate_jsonl(idx, " Xirqenoxa Qenoxazam", 0, 10);
    assert_eq!(hits.len(), 1);
    let (doc_id, off) = (
        hits[0]["doc_id"].as_u64().unwrap(),
        hits[0]["offset_in_doc"].as_u64().unwrap(),
    );
    let n = ids_of(&count_json(idx, " Xirqenoxa Qenoxazam")).len() as u64;
    let v = familiar([
        "docs".as_ref(),
        idx.as_os_str(),
        doc_id.to_string().as_ref(),
        "--json".as_ref(),
        "--window".as_ref(),
        off.to_string().as_ref(),
        (off + n).to_string().as_ref(),
    ])
    .success()
    .json();
    assert_eq!(v["text"], " Xirqenoxa Qenoxazam");
    let record = &records[doc_id as usize];
    assert_eq!(v["external_id"], record["id"]);
    assert!(record["text"]
        .as_str()
        .unwrap()
        .contains("Xirqenoxa Qenoxazam"));

    // Several ids at once, and an unknown id fails cleanly.
    let o = familiar([
        "docs".as_ref(),
        idx.as_os_str(),
        "0".as_ref(),
        "99999".as_ref(),
    ]);
    o.failure().stderr_has(&["99999", "1200 documents"]);
}

#[test]
fn docs_prints_any_document() {
    let idx = fixture_index();
    let records = fixture_records();
    for id in [1usize, 5, 1199] {
        let o = familiar(["docs".as_ref(), idx.as_os_str(), id.to_string().as_ref()]);
        o.success();
        assert!(
            o.stdout.contains(records[id]["text"].as_str().unwrap()),
            "{o}"
        );
    }
}

#[test]
fn ntd_and_prob_agree_with_counts() {
    let idx = fixture_index();
    // " Zelxir" is always followed by " Exoexo".
    let o = familiar([
        "ntd".as_ref(),
        idx.as_os_str(),
        " Zelxir".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
    ]);
    let rows = o.success().json_lines();
    assert_eq!(rows.len(), 1, "{o}");
    let exoexo = ids_of(&count_json(idx, " Exoexo"));
    assert_eq!(exoexo.len(), 1);
    assert_eq!(rows[0]["token_id"].as_u64().unwrap(), exoexo[0]);
    assert_eq!(rows[0]["count"], 512);
    assert_eq!(rows[0]["probability"], 1.0);
    o.stderr_has(&["prefix occurs 512 times"]);

    let o = familiar([
        "prob".as_ref(),
        idx.as_os_str(),
        " Zelxir".as_ref(),
        "--next".as_ref(),
        " Exoexo".as_ref(),
    ]);
    assert_eq!(o.success().stdout.trim(), "1 (512 / 512)");
    let v = familiar([
        "prob".as_ref(),
        idx.as_os_str(),
        " Zelxir".as_ref(),
        "--next-id".as_ref(),
        exoexo[0].to_string().as_ref(),
        "--json".as_ref(),
    ])
    .success()
    .json();
    assert_eq!(v["count"], 512);
    assert_eq!(v["prefix_count"], 512);
    assert_eq!(v["probability"], 1.0);

    // A common prefix: the distribution adds up and prob agrees with it.
    let prefix = " tiriwe";
    let prefix_count = count_json(idx, prefix)["count"].as_u64().unwrap();
    let o = familiar([
        "ntd".as_ref(),
        idx.as_os_str(),
        prefix.as_ref(),
        "--top".as_ref(),
        "0".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
    ]);
    let rows = o.success().json_lines();
    assert!(rows.len() > 3, "{o}");
    let sum: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let eod: u64 = o
        .stderr
        .split("; ")
        .find(|s| s.contains("at the end of a document"))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no end-of-document count\n{o}"));
    assert_eq!(sum + eod, prefix_count, "{o}");
    o.stderr_has(&[&format!("prefix occurs {prefix_count} times")]);
    let counts: Vec<u64> = rows.iter().map(|r| r["count"].as_u64().unwrap()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "most frequent first"
    );
    let top = &rows[0];
    let v = familiar([
        "prob".as_ref(),
        idx.as_os_str(),
        prefix.as_ref(),
        "--next-id".as_ref(),
        top["token_id"].to_string().as_ref(),
        "--json".as_ref(),
    ])
    .success()
    .json();
    assert_eq!(v["count"], top["count"]);
    assert_eq!(v["prefix_count"].as_u64().unwrap(), prefix_count);
    let p = v["probability"].as_f64().unwrap();
    assert!((p - top["probability"].as_f64().unwrap()).abs() < 1e-12);
    // --top limits the rows.
    let o = familiar([
        "ntd".as_ref(),
        idx.as_os_str(),
        prefix.as_ref(),
        "--top".as_ref(),
        "2".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
    ]);
    assert_eq!(o.success().json_lines().len(), 2);
    // The table form.
    familiar(["ntd".as_ref(), idx.as_os_str(), " Zelxir".as_ref()])
        .success()
        .stdout_has(&["token_id", "probability", "512"]);
    // --next that is several tokens is refused.
    familiar([
        "prob".as_ref(),
        idx.as_os_str(),
        " Zelxir".as_ref(),
        "--next".as_ref(),
        " Exoexo Zelxir".as_ref(),
    ])
    .failure()
    .stderr_has(&["exactly one token"]);
    // A prefix that never occurs.
    familiar([
        "prob".as_ref(),
        idx.as_os_str(),
        " Qqqqqqzzzz".as_ref(),
        "--next".as_ref(),
        " Zelxir".as_ref(),
    ])
    .success()
    .stdout_has(&["undefined"]);
}

// =============================================================================================
// Bad input: clean nonzero exits with messages that say where and what.

fn good_records() -> Vec<Value> {
    vec![
        doc("g1", "good document number one"),
        doc("g2", "good document number two"),
    ]
}

#[track_caller]
fn build_fails(t: &TestDir, inputs: &[PathBuf], extra: &[&str], needles: &[&str]) -> Out {
    let out = t.join(format!("out-{}", t.path().read_dir().unwrap().count()));
    let o = familiar(build_args(&out, inputs, extra));
    o.failure().stderr_has(needles);
    o
}

#[test]
fn corrupt_compressed_input_fails_naming_the_file() {
    let t = TestDir::new();
    let good = t.write_jsonl("good.jsonl", &good_records());
    let garbage = t.write("garbage.jsonl.zst", b"this is not a zstd frame at all");
    build_fails(
        &t,
        &[good.clone(), garbage],
        &[],
        &[
            "garbage.jsonl.zst",
            "at the start",
            "corrupt or truncated compressed data",
        ],
    );
    // A zstd file cut short in the middle of a frame.
    let full = zst(&jsonl_bytes(
        &(0..400)
            .map(|i| {
                doc(
                    &format!("d{i}"),
                    &format!("line {i} with a few more words in it"),
                )
            })
            .collect::<Vec<_>>(),
    ));
    let cut = t.write("cut.jsonl.zst", &full[..full.len() / 2]);
    // Decompression runs ahead of parsing (1 MB buffers), so in a small file the damage is found
    // before the first line is delivered; the error says which lines were read intact.
    let o = build_fails(
        &t,
        &[good.clone(), cut],
        &[],
        &["cut.jsonl.zst", "corrupt or truncated compressed data"],
    );
    assert!(
        o.stderr.contains("frame") || o.stderr.contains("compressed"),
        "{o}"
    );
    // A corrupt gzip file.
    let badgz = t.write("bad.jsonl.gz", b"\x1f\x8b not really gzip");
    build_fails(
        &t,
        &[good.clone(), badgz],
        &[],
        &["bad.jsonl.gz", "at the start"],
    );
    // --skip-invalid does not paper over a broken stream.
    let garbage2 = t.write("garbage2.jsonl.zst", b"still not zstd");
    build_fails(
        &t,
        &[good, garbage2],
        &["--skip-invalid"],
        &["garbage2.jsonl.zst"],
    );
}

#[test]
fn invalid_json_names_file_and_line() {
    let t = TestDir::new();
    let bad = t.write(
        "bad.jsonl",
        format!(
            "{}\n{}\n{{\"text\": oops}}\n{}\n",
            doc("1", "fine"),
            doc("2", "fine too"),
            doc("4", "never read")
        ),
    );
    build_fails(
        &t,
        std::slice::from_ref(&bad),
        &[],
        &["bad.jsonl:3", "invalid JSON"],
    );
    // The same inside a compressed file: line numbers are of the decompressed text.
    let raw = std::fs::read(&bad).unwrap();
    let z = t.write("bad.jsonl.zst", zst(&raw));
    build_fails(&t, &[z], &[], &["bad.jsonl.zst:3", "invalid JSON"]);
    let g = t.write("bad.jsonl.gz", gz(&raw));
    build_fails(&t, &[g], &[], &["bad.jsonl.gz:3", "invalid JSON"]);
    // A line that is JSON but not an object.
    let arr = t.write("arr.jsonl", "[1, 2, 3]\n");
    build_fails(&t, &[arr], &[], &["arr.jsonl:1", "JSON object"]);
}

#[test]
fn missing_text_field_is_named_and_text_field_renames_it() {
    let t = TestDir::new();
    let records = vec![
        json!({"id": "x1", "body": "the body field holds this text"}),
        json!({"id": "x2", "body": "and this one as well"}),
    ];
    let f = t.write_jsonl("body.jsonl", &records);
    build_fails(
        &t,
        std::slice::from_ref(&f),
        &[],
        &["body.jsonl:1", "no `text` field", "body", "--text-field"],
    );
    let out = t.join("renamed");
    build(&out, std::slice::from_ref(&f), &["--text-field", "body"]).stderr_has(&["2 documents"]);
    let o = familiar([
        "count".as_ref(),
        out.as_os_str(),
        " body field holds".as_ref(),
    ]);
    assert_eq!(o.success().number(), 1);
    // A text field that is not a string.
    let n = t.write_jsonl("num.jsonl", &[json!({"text": 42})]);
    build_fails(
        &t,
        &[n],
        &[],
        &["num.jsonl:1", "`text`", "expected a string"],
    );
    // --text-field names a field that is missing.
    build_fails(
        &t,
        &[f],
        &["--text-field", "content"],
        &["body.jsonl:1", "no `content` field"],
    );
}

#[test]
fn invalid_utf8_names_file_line_and_offset() {
    let t = TestDir::new();
    let mut bytes = jsonl_bytes(&good_records());
    bytes.extend_from_slice(b"{\"text\": \"bad \xff\xfe bytes\"}\n");
    let f = t.write("utf.jsonl", &bytes);
    build_fails(
        &t,
        &[f],
        &[],
        &["utf.jsonl:3", "invalid UTF-8", "offset 14"],
    );
    let txt = t.write("utf.txt", b"plain text \xc3\x28 broken");
    build_fails(&t, &[txt], &[], &["utf.txt", "invalid UTF-8", "offset 11"]);
    let z = t.write("utf.jsonl.zst", zst(&bytes));
    build_fails(&t, &[z], &[], &["utf.jsonl.zst:3", "invalid UTF-8"]);
}

#[test]
fn empty_input_needs_allow_empty() {
    let t = TestDir::new();
    let good = t.write_jsonl("good.jsonl", &good_records());
    let empty = t.write("empty.jsonl", b"");
    build_fails(
        &t,
        &[good.clone(), empty.clone()],
        &[],
        &["empty.jsonl", "no documents", "--allow-empty"],
    );
    // An empty zstd stream (a valid frame holding nothing) is an empty input too.
    let empty_zst = t.write("empty.jsonl.zst", zst(b""));
    build_fails(
        &t,
        &[good.clone(), empty_zst.clone()],
        &[],
        &["empty.jsonl.zst", "--allow-empty"],
    );
    let out = t.join("allowed");
    build(&out, &[good, empty, empty_zst], &["--allow-empty"]).stderr_has(&[
        "2 documents",
        "2 input files held no documents (--allow-empty)",
    ]);
    let info = familiar([
        "index".as_ref(),
        "info".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(info.success().json()["documents"], 2);
    // Only empty inputs: nothing to index, even when allowed.
    let only = t.write("only.jsonl", b"");
    build_fails(&t, &[only], &["--allow-empty"], &["no documents"]);
}

/// Blank lines are not records: a file of only blank lines holds no documents.
#[test]
fn blank_lines_only_is_an_empty_input() {
    let t = TestDir::new();
    let good = t.write_jsonl("good.jsonl", &good_records());
    let blank = t.write("blank.jsonl", b"\n\n   \n");
    build_fails(
        &t,
        &[good.clone(), blank.clone()],
        &[],
        &["blank.jsonl", "--allow-empty"],
    );
    build(&t.join("allowed"), &[good, blank], &["--allow-empty"])
        .stderr_has(&["1 input files held no documents"]);
}

#[test]
fn empty_txt_is_an_empty_input() {
    let t = TestDir::new();
    let good = t.write_jsonl("good.jsonl", &good_records());
    let empty = t.write("empty.txt", b"");
    build_fails(&t, &[good, empty], &[], &["empty.txt", "--allow-empty"]);
}

#[test]
fn zero_byte_compressed_file_is_an_empty_input() {
    let t = TestDir::new();
    let good = t.write_jsonl("good.jsonl", &good_records());
    let z = t.write("zero.jsonl.zst", b"");
    let g = t.write("zero.jsonl.gz", b"");
    build_fails(
        &t,
        &[good.clone(), z.clone()],
        &[],
        &["zero.jsonl.zst", "--allow-empty"],
    );
    build(&t.join("allowed"), &[good, z, g], &["--allow-empty"])
        .stderr_has(&["2 input files held no documents"]);
}

#[test]
fn skip_invalid_skips_and_reports_the_count() {
    let t = TestDir::new();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&jsonl_bytes(&[doc("1", "kept record one")]));
    bytes.extend_from_slice(b"{not json}\n");
    bytes.extend_from_slice(&jsonl_bytes(&[json!({"body": "no text field"})]));
    bytes.extend_from_slice(b"{\"text\": \"bad \xff utf8\"}\n");
    bytes.extend_from_slice(&jsonl_bytes(&[json!({"text": ["not", "a", "string"]})]));
    bytes.extend_from_slice(&jsonl_bytes(&[doc("6", "kept record two")]));
    let f = t.write("mixed.jsonl", &bytes);
    build_fails(&t, std::slice::from_ref(&f), &[], &["mixed.jsonl:2"]);
    let out = t.join("skipped");
    build(&out, &[f], &["--skip-invalid"]).stderr_has(&[
        "2 documents",
        "skipped 4 malformed records (--skip-invalid)",
    ]);
    let o = familiar(["count".as_ref(), out.as_os_str(), " kept record".as_ref()]);
    assert_eq!(o.success().number(), 2);
}

fn other_tokenizer(t: &TestDir) -> PathBuf {
    // The same tokenizer re-serialized: equivalent, but its bytes (and so its hash) differ.
    let v: Value = serde_json::from_slice(&std::fs::read(tokenizer()).unwrap()).unwrap();
    t.write("other-tokenizer.json", serde_json::to_vec(&v).unwrap())
}

#[test]
fn tokenizer_with_a_different_hash_is_refused() {
    let t = TestDir::new();
    let other = other_tokenizer(&t);
    let idx = fixture_index();
    let o = familiar([
        "count".as_ref(),
        idx.as_os_str(),
        " Zelxir Exoexo".as_ref(),
        "--tokenizer".as_ref(),
        other.as_os_str(),
    ]);
    o.failure()
        .stderr_has(&["other-tokenizer.json", "hash", "built with a tokenizer"]);
    assert!(o.stdout.is_empty());
    familiar([
        "cnf".as_ref(),
        idx.as_os_str(),
        "--clause".as_ref(),
        " Zelxir".as_ref(),
        "--tokenizer".as_ref(),
        other.as_os_str(),
    ])
    .failure()
    .stderr_has(&["hash"]);
    // The same tokenizer file is accepted.
    let o = familiar([
        "count".as_ref(),
        idx.as_os_str(),
        " Zelxir Exoexo".as_ref(),
        "--tokenizer".as_ref(),
        tokenizer().as_os_str(),
    ]);
    assert_eq!(o.success().number(), 512);
    // A tokenizer that does not exist.
    familiar([
        "count".as_ref(),
        idx.as_os_str(),
        " Zelxir".as_ref(),
        "--tokenizer".as_ref(),
        t.join("missing.json").as_os_str(),
    ])
    .failure()
    .stderr_has(&["missing.json"]);
}

#[test]
fn second_build_into_the_same_out_with_other_settings_is_refused() {
    let t = TestDir::new();
    let a = t.write_jsonl("a.jsonl", &good_records());
    let b = t.write_jsonl("b.jsonl", &[doc("b", "another input file")]);
    let out = t.join("idx");
    build(&out, std::slice::from_ref(&a), &[]);
    let before = tree(&out);

    // Re-running the same build: already complete, nothing changes.
    build(&out, std::slice::from_ref(&a), &[]).stderr_has(&["already complete"]);

    let other = other_tokenizer(&t);
    let mut args = build_args(&out, std::slice::from_ref(&a), &[]);
    args[4] = other.clone().into();
    familiar(args)
        .failure()
        .stderr_has(&["different tokenizer", "another --out"]);
    familiar(build_args(&out, &[a.clone(), b.clone()], &[]))
        .failure()
        .stderr_has(&["different input files"]);
    familiar(build_args(&out, &[b], &[]))
        .failure()
        .stderr_has(&["different input files"]);
    familiar(build_args(
        &out,
        std::slice::from_ref(&a),
        &["--shard-tokens", "100"],
    ))
    .failure()
    .stderr_has(&["shard size"]);
    familiar(build_args(
        &out,
        std::slice::from_ref(&a),
        &["--text-field", "body"],
    ))
    .failure()
    .stderr_has(&["different field names or options"]);
    // An input that changed size since.
    std::fs::write(&a, jsonl_bytes(&[doc("g1", "changed")])).unwrap();
    familiar(build_args(&out, &[a], &[]))
        .failure()
        .stderr_has(&["changed size"]);
    assert_eq!(
        tree(&out),
        before,
        "a refused build must not touch the index"
    );

    // A directory that is not empty and holds no build is not written into.
    let foreign = t.mkdir("foreign");
    t.write("foreign/keep.txt", "precious");
    let a2 = t.write_jsonl("a2.jsonl", &good_records());
    familiar(build_args(&foreign, &[a2], &[]))
        .failure()
        .stderr_has(&["not empty"]);
    assert_eq!(entries(&foreign), vec!["keep.txt".to_string()]);
}

#[test]
fn second_build_with_another_metadata_field_is_refused() {
    let t = TestDir::new();
    let a = t.write_jsonl("a.jsonl", &good_records());
    let out = t.join("idx");
    build(&out, std::slice::from_ref(&a), &[]);
    familiar(build_args(&out, &[a], &["--metadata-field", "meta"]))
        .failure()
        .stderr_has(&["different field names or options"]);
}

#[test]
fn unknown_token_ids_and_empty_queries_fail_cleanly() {
    let idx = fixture_index();
    let i = idx.as_os_str();
    familiar(["count".as_ref(), i, "--tokens".as_ref(), "999999".as_ref()])
        .failure()
        .stderr_has(&["999999", "vocabulary"]);
    familiar(["count".as_ref(), i, "--tokens".as_ref(), "5,2048".as_ref()])
        .failure()
        .stderr_has(&["2048"]);
    familiar(["locate".as_ref(), i, "--tokens".as_ref(), "999999".as_ref()])
        .failure()
        .stderr_has(&["999999"]);
    familiar(["ntd".as_ref(), i, "--tokens".as_ref(), "999999".as_ref()])
        .failure()
        .stderr_has(&["999999"]);
    familiar([
        "prob".as_ref(),
        i,
        " Zelxir".as_ref(),
        "--next-id".as_ref(),
        "999999".as_ref(),
    ])
    .failure()
    .stderr_has(&["999999"]);
    familiar([
        "cnf".as_ref(),
        i,
        "--ids".as_ref(),
        "--clause".as_ref(),
        "999999".as_ref(),
    ])
    .failure()
    .stderr_has(&["999999"]);
    familiar(["count".as_ref(), i, "".as_ref()])
        .failure()
        .stderr_has(&["empty"]);
    familiar(["count".as_ref(), i, "--tokens".as_ref(), "".as_ref()])
        .failure()
        .stderr_has(&["empty"]);
    familiar(["count".as_ref(), i])
        .failure()
        .stderr_has(&["--tokens"]);
    familiar(["locate".as_ref(), i, "".as_ref()])
        .failure()
        .stderr_has(&["empty"]);
    familiar(["cnf".as_ref(), i, "--clause".as_ref(), "".as_ref()])
        .failure()
        .stderr_has(&["empty"]);
}

#[test]
fn huge_limits_do_not_panic() {
    let idx = fixture_index();
    let o = familiar([
        "locate".as_ref(),
        idx.as_os_str(),
        " Zelxir Exoexo".as_ref(),
        "--limit".as_ref(),
        u64::MAX.to_string().as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
    ]);
    assert_eq!(o.success().json_lines().len(), 512);
    familiar([
        "docs".as_ref(),
        idx.as_os_str(),
        "3".as_ref(),
        "--window".as_ref(),
        "0".as_ref(),
        u64::MAX.to_string().as_ref(),
    ])
    .success();
}

#[test]
fn a_directory_that_is_not_an_index_fails_cleanly() {
    let t = TestDir::new();
    let junk = t.mkdir("junk");
    t.write("junk/notes.txt", "hello");
    let missing = t.join("missing");
    let file = t.write("file.bin", b"not a directory");
    let garbage = t.mkdir("garbage-manifest");
    t.write("garbage-manifest/manifest.json", "{ not json");
    for dir in [&junk, &missing, &file, &garbage] {
        let d = dir.as_os_str();
        let name = dir.file_name().unwrap().to_str().unwrap();
        for args in [
            vec!["count".as_ref(), d, " a".as_ref()],
            vec!["locate".as_ref(), d, " a".as_ref()],
            vec!["ntd".as_ref(), d],
            vec!["docs".as_ref(), d, "0".as_ref()],
            vec!["cnf".as_ref(), d, "--clause".as_ref(), " a".as_ref()],
            vec!["index".as_ref(), "info".as_ref(), d],
        ] {
            familiar(&args).failure().stderr_has(&[name]);
        }
        let o = familiar(["index".as_ref(), "verify".as_ref(), d]);
        o.failure().stdout_has(&["problem:", name]);
    }
    familiar(["count".as_ref(), junk.as_os_str(), " a".as_ref()])
        .failure()
        .stderr_has(&["not an index directory"]);
}

/// I/O errors say what went wrong once (the message is not chained twice).
#[test]
fn error_messages_do_not_repeat_themselves() {
    let t = TestDir::new();
    let junk = t.mkdir("junk");
    let o = familiar(["count".as_ref(), junk.as_os_str(), " a".as_ref()]);
    o.failure();
    assert_eq!(o.stderr.matches("not an index directory").count(), 1, "{o}");
    let bad = t.write("bad.jsonl.zst", b"not zstd");
    let o = familiar(build_args(&t.join("idx"), &[bad], &[]));
    o.failure().stderr_has(&["bad.jsonl.zst"]);
    assert_eq!(
        o.stderr.matches("Unknown frame descriptor").count(),
        1,
        "{o}"
    );
}

/// A small index built from generated records.
fn small_index(t: &TestDir, name: &str) -> PathBuf {
    let words = [
        "alpha", "beta", "gamma", "delta", "tiriwe", "rohi", "ve", "se",
    ];
    let mut rng = Rng::new(7);
    let records: Vec<Value> = (0..80)
        .map(|i| {
            let n = rng.range(5, 30) as usize;
            let text: Vec<&str> = (0..n)
                .map(|_| words[rng.range(0, words.len() as u64 - 1) as usize])
                .collect();
            doc(&format!("s{i}"), &text.join(" "))
        })
        .collect();
    let f = t.write_jsonl(format!("{name}.jsonl"), &records);
    let out = t.join(name);
    build(&out, &[f], &[]);
    out
}

#[test]
fn truncated_index_files_fail_cleanly() {
    let t = TestDir::new();
    let idx = small_index(&t, "small");
    let shard = idx.join("shard-00000");
    for file in ["tokens.bin", "suffix_array.bin", "doc_offsets.bin"] {
        let len = std::fs::metadata(shard.join(file)).unwrap().len();
        assert!(len > 80);
        for cut in [0, 10, 64, 70, len - 1] {
            let copy = t.copy_tree(&idx, format!("cut-{file}-{cut}"));
            let target = copy.join("shard-00000").join(file);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            f.set_len(cut).unwrap();
            drop(f);
            let c = copy.as_os_str();
            for args in [
                vec!["count".as_ref(), c, " alpha beta".as_ref()],
                vec!["locate".as_ref(), c, " alpha".as_ref()],
                vec!["ntd".as_ref(), c, " alpha".as_ref()],
                vec![
                    "prob".as_ref(),
                    c,
                    " alpha".as_ref(),
                    "--next".as_ref(),
                    " beta".as_ref(),
                ],
                vec!["cnf".as_ref(), c, "--clause".as_ref(), " alpha".as_ref()],
                vec!["docs".as_ref(), c, "0".as_ref()],
                vec!["index".as_ref(), "info".as_ref(), c],
            ] {
                let o = familiar(&args);
                o.failure().stderr_has(&[file]);
            }
            for full in [false, true] {
                let mut args = vec!["index".as_ref(), "verify".as_ref(), c];
                if full {
                    args.push("--full".as_ref());
                }
                familiar(&args).failure().stdout_has(&["problem:", file]);
            }
        }
    }
}

#[test]
fn query_on_an_unfinished_build_says_so() {
    let t = TestDir::new();
    let idx = small_index(&t, "small");
    std::fs::remove_file(idx.join("manifest.json")).unwrap();
    familiar(["count".as_ref(), idx.as_os_str(), " alpha".as_ref()])
        .failure()
        .stderr_has(&["has not finished", "index build"]);
    // Running the build again finishes it.
    let inputs = vec![t.join("small.jsonl")];
    build(&idx, &inputs, &[]);
    let o = familiar(["count".as_ref(), idx.as_os_str(), " alpha".as_ref()]);
    assert!(o.success().number() > 0);
}

// =============================================================================================
// Determinism and resumability.

#[test]
fn a_build_run_twice_gives_identical_bytes() {
    let t = TestDir::new();
    let inputs = fixture_inputs();
    let (a, b) = (t.join("a"), t.join("b"));
    build(&a, &inputs, &["--shard-tokens", "60000", "--threads", "1"]);
    build(&b, &inputs, &["--shard-tokens", "60000", "--threads", "2"]);
    assert!(
        entries(&a)
            .iter()
            .filter(|n| n.starts_with("shard-"))
            .count()
            >= 3
    );
    assert_same_tree(&a, &b);
    // Also from a relative path in another working directory: the out path is not recorded.
    let c = t.mkdir("elsewhere");
    let o = familiar_in(
        &c,
        build_args(Path::new("c"), &inputs, &["--shard-tokens", "60000"]),
    );
    o.success();
    assert_same_tree(&a, &c.join("c"));
}

#[test]
fn a_default_build_run_twice_gives_identical_bytes() {
    let t = TestDir::new();
    let inputs = fixture_inputs();
    let (a, b) = (t.join("a"), t.join("b"));
    build(&a, &inputs, &[]);
    // Allocate and touch some memory between the builds, as any other process might.
    let hog = vec![1u8; 64 << 20];
    build(&b, &inputs, &[]);
    drop(hog);
    assert_same_tree(&a, &b);
}

/// When to SIGKILL a build.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the start.
    Delay(Duration),
    /// As soon as this many shards are published, plus a short extra delay.
    Shards(usize, Duration),
}

/// Outcome of one interrupted build (printed with Debug).
#[allow(dead_code)]
#[derive(Debug)]
struct Kill {
    at: KillAt,
    after: Duration,
    killed: bool,
    finished: bool,
    shards_left: usize,
}

fn shard_count(dir: &Path) -> usize {
    entries(dir)
        .iter()
        .filter(|n| n.starts_with("shard-"))
        .count()
}

/// Starts a build, SIGKILLs it at `at`, and reports the state it left.
fn build_and_kill(out: &Path, inputs: &[PathBuf], extra: &[&str], at: KillAt) -> Kill {
    use std::os::unix::process::ExitStatusExt;
    let log = out.with_extension("stderr.txt");
    let started = Instant::now();
    let mut child = command()
        .args(build_args(out, inputs, extra))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    match at {
        KillAt::Delay(d) => std::thread::sleep(d),
        KillAt::Shards(k, extra_delay) => {
            while child.try_wait().unwrap().is_none() && shard_count(out) < k {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(extra_delay);
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let after = started.elapsed();
    let status = child.wait().unwrap();
    let killed = status.signal() == Some(9);
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    if !killed {
        assert!(
            status.code() == Some(0),
            "the build failed by itself: {status:?}\n{stderr}"
        );
    }
    Kill {
        at,
        after,
        killed,
        finished: out.join("manifest.json").exists(),
        shards_left: shard_count(out),
    }
}

/// A generator seeded from the clock (each run kills at other points), and its seed, to report.
fn clock_rng() -> (Rng, u64) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (Rng::new(seed), seed)
}

#[test]
fn killed_builds_resume_to_the_bytes_of_a_clean_build() {
    let t = TestDir::new();
    // The same input path strings everywhere: documents.parquet records them.
    let inputs = fixture_inputs();
    let extra = ["--shard-tokens", "15000", "--threads", "1"];

    let clean = t.join("clean");
    let started = Instant::now();
    build(&clean, &inputs, &extra);
    let clean_time = started.elapsed();
    let shards = shard_count(&clean);
    assert!(shards >= 10, "want many shards, got {shards}");

    let (mut rng, seed) = clock_rng();
    let ms = |rng: &mut Rng, lo: u64, hi: u64| Duration::from_millis(rng.range(lo, hi));
    // Random delays (which may land before, during or after the build), and kills timed by the
    // build's progress, so that some surely land between shards, mid-build.
    let plan: Vec<(KillAt, Option<KillAt>)> = vec![
        (KillAt::Delay(ms(&mut rng, 20, 60)), None),
        (
            KillAt::Delay(ms(&mut rng, 100, 400)),
            Some(KillAt::Delay(ms(&mut rng, 20, 400))),
        ),
        (KillAt::Shards(shards / 4, ms(&mut rng, 0, 20)), None),
        (
            KillAt::Shards(shards / 2, ms(&mut rng, 0, 20)),
            Some(KillAt::Shards(shards / 2 + 2, ms(&mut rng, 0, 20))),
        ),
        (KillAt::Shards(shards * 3 / 4, ms(&mut rng, 0, 20)), None),
        (
            KillAt::Delay(clean_time.mul_f64(0.6 + rng.range(0, 500) as f64 / 1000.0)),
            None,
        ),
    ];
    let mut outcomes = Vec::new();
    let (mut interrupted, mut interrupted_with_shards) = (0, 0);
    for (round, (first_at, second_at)) in plan.into_iter().enumerate() {
        let out = t.join(format!("run-{round}"));
        let first = build_and_kill(&out, &inputs, &extra, first_at);
        let mut note = format!("round {round}: {first:?}");
        if first.killed && !first.finished {
            interrupted += 1;
            if first.shards_left > 0 {
                interrupted_with_shards += 1;
            }
            if out.join("build.json").exists() {
                familiar(["count".as_ref(), out.as_os_str(), " Zelxir".as_ref()])
                    .failure()
                    .stderr_has(&["has not finished"]);
            }
            if let Some(at) = second_at {
                // Interrupt the resumed build too.
                let second = build_and_kill(&out, &inputs, &extra, at);
                note.push_str(&format!("\n  then {second:?}"));
            }
        }
        let finished_before = out.join("manifest.json").exists();
        let shards_before = shard_count(&out);
        let resumed = familiar(build_args(&out, &inputs, &extra));
        resumed.success();
        if finished_before {
            resumed.stderr_has(&["already complete"]);
        } else {
            resumed.stderr_has(&[format!(
                "{} built now, {shards_before} kept from an interrupted run",
                shards - shards_before
            )]);
        }
        assert_same_tree(&clean, &out);
        if round == 0 || round == 3 {
            // Re-running a complete build says so and changes nothing.
            build(&out, &inputs, &extra).stderr_has(&["already complete"]);
            assert_same_tree(&clean, &out);
        }
        outcomes.push(note);
        std::fs::remove_dir_all(&out).unwrap();
    }
    let report = format!(
        "seed {seed}, clean build {clean_time:?}, {shards} shards\n{}",
        outcomes.join("\n")
    );
    eprintln!("{report}");
    assert!(
        interrupted >= 3,
        "too few kills landed mid-build:\n{report}"
    );
    assert!(
        interrupted_with_shards >= 2,
        "too few kills landed after a shard was published:\n{report}"
    );
}

/// The fixture inputs decompressed into plain JSONL files in `t` (so that they can be edited in
/// place, byte for byte).
fn plain_fixture_inputs(t: &TestDir) -> Vec<PathBuf> {
    fixture_inputs()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let raw = std::fs::read(p).unwrap();
            let bytes = if p.extension() == Some("zst".as_ref()) {
                zstd::decode_all(&raw[..]).unwrap()
            } else {
                let mut s = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::MultiGzDecoder::new(&raw[..]),
                    &mut s,
                )
                .unwrap();
                s
            };
            t.write(format!("input-{i}.jsonl"), bytes)
        })
        .collect()
}

/// Where record `record` of a JSONL file starts and ends, and the offsets (in its line) of the
/// ASCII lowercase letters its `text` begins with (up to the first quote or escape).
fn record_letters(bytes: &[u8], record: usize) -> (usize, usize, Vec<usize>) {
    let mut start = 0;
    for _ in 0..record {
        start += bytes[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
    }
    let end = start + bytes[start..].iter().position(|&b| b == b'\n').unwrap();
    let line = std::str::from_utf8(&bytes[start..end]).unwrap();
    let text_at = line.find("\"text\"").expect("a text field");
    let letters = line
        .bytes()
        .enumerate()
        .skip(text_at + 8)
        .take_while(|&(_, b)| b != b'"' && b != b'\\')
        .filter(|&(_, b)| b.is_ascii_lowercase())
        .map(|(i, _)| i)
        .collect();
    (start, end, letters)
}

/// The letters [`edit_record_text`] could change in record `record` of a JSONL file.
fn text_letters(path: &Path, record: usize) -> Vec<usize> {
    record_letters(&std::fs::read(path).unwrap(), record).2
}

/// Changes one ASCII lowercase letter inside the `text` of record `record` of a JSONL file (same
/// size, still valid JSON, a different text). Returns what changed, for the report.
fn edit_record_text(path: &Path, record: usize, rng: &mut Rng) -> String {
    let mut bytes = std::fs::read(path).unwrap();
    let (start, end, letters) = record_letters(&bytes, record);
    let line = std::str::from_utf8(&bytes[start..end]).unwrap().to_string();
    let before: Value = serde_json::from_str(&line).unwrap();
    assert!(!letters.is_empty(), "no letter to edit in {line}");
    let at = letters[rng.range(0, letters.len() as u64 - 1) as usize];
    let old = bytes[start + at];
    bytes[start + at] = if old == b'z' { b'a' } else { old + 1 };
    let after: Value = serde_json::from_slice(&bytes[start..end]).unwrap();
    assert_eq!(before["id"], after["id"]);
    assert_ne!(before["text"], after["text"]);
    std::fs::write(path, &bytes).unwrap();
    format!(
        "{} record {record} byte {at}: {:?} -> {:?}",
        path.display(),
        old as char,
        bytes[start + at] as char
    )
}

/// The resume cursor `(file, record)` of a partial build: where the last published shard ends.
fn resume_cursor(out: &Path) -> Option<(u64, u64)> {
    let last = entries(out)
        .into_iter()
        .filter(|n| n.starts_with("shard-"))
        .max()?;
    let m: Value =
        serde_json::from_slice(&std::fs::read(out.join(last).join("manifest.json")).unwrap())
            .unwrap();
    let end = &m["input_end"];
    Some((
        end["file"].as_u64().unwrap(),
        end["record"].as_u64().unwrap(),
    ))
}

#[test]
fn killed_builds_with_an_input_edited_before_the_resume_refuse_or_read_the_new_text() {
    // Kill a build at a random point, change one letter of one input record (same size), and
    // resume. An edit in text the kept shards hold must be refused (naming the input), and
    // `--restart` then builds the edited inputs; an edit the build has not read yet is read by the
    // resume. Either way the result is the bytes of a clean build of the edited inputs.
    let t = TestDir::new();
    let inputs = plain_fixture_inputs(&t);
    let originals: Vec<Vec<u8>> = inputs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let lines: Vec<usize> = originals
        .iter()
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .collect();
    let extra = ["--shard-tokens", "15000", "--threads", "1"];
    let clean = t.join("clean");
    build(&clean, &inputs, &extra);
    let shards = shard_count(&clean);
    assert!(shards >= 10, "want many shards, got {shards}");
    let (mut rng, seed) = clock_rng();
    let mut report = vec![format!("seed {seed}, {shards} shards")];
    let (mut refused, mut resumed_with_kept) = (0, 0);
    for round in 0..4 {
        for (p, b) in inputs.iter().zip(&originals) {
            std::fs::write(p, b).unwrap();
        }
        let out = t.join(format!("run-{round}"));
        let k = rng.range(1, shards as u64 - 2) as usize;
        let at = KillAt::Shards(k, Duration::from_millis(rng.range(0, 20)));
        let kill = build_and_kill(&out, &inputs, &extra, at);
        let cursor = resume_cursor(&out);
        // Even rounds edit the text the kept shards hold, odd rounds the text after the cursor;
        // a record whose text has no letter to edit (the fixture has empty texts) is drawn
        // again.
        let mut choice = None;
        for _ in 0..100 {
            let (file, record) = match cursor {
                Some((f, r)) if round % 2 == 0 => {
                    let file = rng.range(0, f) as usize;
                    let limit = if file as u64 == f {
                        r
                    } else {
                        lines[file] as u64
                    };
                    if limit == 0 {
                        (f as usize, r as usize)
                    } else {
                        (file, rng.range(0, limit - 1) as usize)
                    }
                }
                Some((f, r)) => {
                    let file = rng.range(f, inputs.len() as u64 - 1) as usize;
                    let from = if file as u64 == f { r as usize } else { 0 };
                    if from >= lines[file] {
                        break; // the cursor lies at the end of the last input: nothing unread
                    }
                    (
                        file,
                        rng.range(from as u64, lines[file] as u64 - 1) as usize,
                    )
                }
                None => {
                    let file = rng.range(0, inputs.len() as u64 - 1) as usize;
                    (file, rng.range(0, lines[file] as u64 - 1) as usize)
                }
            };
            if !text_letters(&inputs[file], record).is_empty() {
                choice = Some((file, record));
                break;
            }
        }
        let Some((file, record)) = choice else {
            report.push(format!("round {round}: no record to edit; skipped"));
            continue;
        };
        let edit = edit_record_text(&inputs[file], record, &mut rng);
        let consumed =
            !kill.finished && cursor.is_some_and(|(f, r)| (file as u64, record as u64) < (f, r));
        report.push(format!(
            "round {round}: {kill:?}, cursor {cursor:?}, edit {edit}, consumed {consumed}"
        ));
        let edited = t.join(format!("edited-{round}"));
        build(&edited, &inputs, &extra);
        let before = tree(&out);
        let o = familiar(build_args(&out, &inputs, &extra));
        if kill.finished {
            // A finished index is not rebuilt by a rerun; it says so.
            o.success().stderr_has(&["already complete"]);
        } else if consumed {
            refused += 1;
            o.failure().stderr_has(&[
                format!(
                    "input {} changed since the interrupted build",
                    inputs[file].display()
                ),
                "--restart".to_string(),
            ]);
            // What the build had published is untouched (the killed process's temporary files
            // and stale lock file may be cleaned up).
            let after = tree(&out);
            let leftover = |k: &PathBuf| {
                let first = k.components().next().unwrap().as_os_str().to_string_lossy();
                first.starts_with(".tmp-") || first == ".familiar-lock"
            };
            let changed: Vec<_> = before
                .keys()
                .chain(after.keys())
                .filter(|k| !leftover(k) && before.get(*k) != after.get(*k))
                .collect();
            assert!(
                changed.is_empty(),
                "a refused resume changed {changed:?}\n{o}"
            );
            build(&out, &inputs, &[&extra[..], &["--restart"]].concat());
            assert_same_tree(&edited, &out);
        } else {
            o.success();
            if kill.shards_left > 0 {
                resumed_with_kept += 1;
                o.stderr_has(&["kept from an interrupted run"]);
            }
            assert_same_tree(&edited, &out);
        }
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_dir_all(&edited).unwrap();
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(refused >= 1, "no edit landed in kept text:\n{report}");
    assert!(
        resumed_with_kept >= 1,
        "no edit after the cursor was resumed over kept shards:\n{report}"
    );
}

#[test]
fn a_kill_while_build_json_is_written_leaves_a_resumable_directory() {
    let t = TestDir::new();
    let a = t.write_jsonl("a.jsonl", &good_records());
    let out = t.mkdir("idx");
    // The state such a kill leaves: the temporary file of write_atomic, not yet renamed.
    t.write("idx/.tmp-build.json", b"{\"format\": \"familiar-bu");
    build(&out, &[a], &[]);
}

#[test]
fn interrupted_build_leftovers_are_cleaned_on_resume() {
    // What a crash can leave: no manifest, a half-written shard (a .tmp- directory), a missing
    // last shard, and a shard whose bytes do not match its checksums. The damaged shard and every
    // shard after it are rebuilt; the result is the clean build's bytes.
    let t = TestDir::new();
    let inputs = fixture_inputs();
    let extra = ["--shard-tokens", "60000"];
    let clean = t.join("clean");
    build(&clean, &inputs, &extra);

    let out = t.copy_tree(&clean, "damaged");
    std::fs::remove_file(out.join("manifest.json")).unwrap();
    let shards: Vec<String> = entries(&out)
        .into_iter()
        .filter(|n| n.starts_with("shard-"))
        .collect();
    assert!(shards.len() >= 3);
    let last = out.join(shards.last().unwrap());
    let middle = out.join(&shards[1]);
    // Corrupt the second shard: it and every later one must be rebuilt.
    let tb = middle.join("tokens.bin");
    let mut bytes = std::fs::read(&tb).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&tb, bytes).unwrap();
    std::fs::remove_dir_all(&last).unwrap();
    t.write(
        format!("damaged/.tmp-{}/tokens.bin", shards.last().unwrap()),
        b"partial",
    );
    let o = build(&out, &inputs, &extra);
    o.stderr_has(&[&format!(
        "({} built now, 1 kept from an interrupted run)",
        shards.len() - 1
    )]);
    assert_same_tree(&clean, &out);
}

/// Every file of `dir` (relative path → xxh3), sorted.
fn checksums(dir: &Path) -> BTreeMap<String, String> {
    tree(dir)
        .into_iter()
        .filter(|(p, _)| !p.to_string_lossy().ends_with('/'))
        .map(|(p, bytes)| {
            (
                p.to_string_lossy().into_owned(),
                familiar::checksum::of_bytes(&bytes),
            )
        })
        .collect()
}

#[test]
fn fixture_build_and_concept_tables_match_their_pinned_checksums() {
    // The fixture corpus built with fixed options, and its concept tables, file by file against
    // checksums recorded in `fixtures/pinned-outputs.json`: recorded when the workspace was split
    // into crates by purpose (issue 15), from outputs checked byte-identical to those of the code
    // before the split. Refactors must not change a byte of an index or a table; a deliberate
    // format change re-records the list with `FAMILIAR_PIN=record`.
    let t = TestDir::new();
    t.mkdir("corpus");
    for p in fixture_inputs() {
        t.write(
            Path::new("corpus").join(p.file_name().unwrap()),
            std::fs::read(&p).unwrap(),
        );
    }
    t.write("tokenizer.json", std::fs::read(tokenizer()).unwrap());
    for f in ["planted.csv", "pairs.csv"] {
        t.write(
            f,
            std::fs::read(fixtures().join("concepts").join(f)).unwrap(),
        );
    }
    familiar_in(
        t.path(),
        [
            "index",
            "build",
            "--quiet",
            "--tokenizer",
            "tokenizer.json",
            "--out",
            "idx",
            "--shard-tokens",
            "60000",
            "corpus/part-0000.jsonl.zst",
            "corpus/part-0001.jsonl.gz",
        ],
    )
    .success();
    familiar_in(
        t.path(),
        [
            "concepts",
            "count",
            "idx",
            "planted.csv",
            "--pairs",
            "pairs.csv",
            "--out",
            "tables",
            "--quiet",
        ],
    )
    .success();
    let mut got = BTreeMap::new();
    for (dir, prefix) in [("idx", "index/"), ("tables", "tables/")] {
        for (p, c) in checksums(&t.join(dir)) {
            got.insert(format!("{prefix}{p}"), c);
        }
    }
    let pinned = fixtures().join("pinned-outputs.json");
    if std::env::var("FAMILIAR_PIN").as_deref() == Ok("record") {
        std::fs::write(&pinned, serde_json::to_vec_pretty(&got).unwrap()).unwrap();
        return;
    }
    let want: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(&pinned).unwrap()).unwrap();
    let differ: Vec<&String> = want
        .keys()
        .chain(got.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .collect();
    assert!(
        differ.is_empty(),
        "outputs differ from fixtures/pinned-outputs.json: {differ:?}"
    );
    assert!(got.len() > 100, "{} files", got.len());
}

/// The libraries name options by their API names; the CLI spells them as flags.
#[test]
fn library_messages_name_options_as_the_cli_spells_them() {
    let t = TestDir::new();
    let a = t.write_jsonl("a.jsonl", &[doc("a", "one two three")]);
    familiar(build_args(
        &t.join("idx"),
        std::slice::from_ref(&a),
        &["--shard-tokens", "1"],
    ))
    .failure()
    .stderr_has(&["--shard-tokens must be between 2"]);
    let empty = t.write("empty.jsonl", "");
    familiar(build_args(&t.join("idx2"), &[empty], &[]))
        .failure()
        .stderr_has(&["pass --allow-empty to accept empty inputs"]);
    let tables = t.mkdir("tables");
    let target = t.join("out.csv");
    familiar(os(&[
        &"sql",
        &"--tables",
        &tables,
        &format!("COPY (SELECT 1) TO '{}'", target.display()),
    ]))
    .failure()
    .stderr_has(&["read-only", "need --allow-writes"]);
    assert!(!target.exists());
}

/// `familiar count --tokens` of `ids`.
fn count_ids(idx: &Path, ids: &[u64]) -> u64 {
    familiar([
        "count".as_ref(),
        idx.as_os_str(),
        "--tokens".as_ref(),
        id_list(ids).as_ref(),
    ])
    .success()
    .number()
}

/// The ∞-gram from the CLI against `familiar count` and `familiar ntd` of the longest suffix
/// that occurs (found by counting every suffix), on several shards.
#[test]
fn infgram_predicts_from_the_longest_suffix_that_occurs() {
    let idx = fixture_index_sharded();
    let pair = ids_of(&count_json(idx, " Zelxir Exoexo"));
    let (a, b) = (pair[0], pair[1]);
    let total = familiar([
        "index".as_ref(),
        "info".as_ref(),
        idx.as_os_str(),
        "--json".as_ref(),
    ])
    .success()
    .json()["tokens"]
        .as_u64()
        .unwrap();
    for prompt in [vec![b, b, a], vec![a], vec![b, a, b, a], vec![]] {
        let want_len = (1..=prompt.len())
            .rev()
            .find(|&l| count_ids(idx, &prompt[prompt.len() - l..]) > 0)
            .unwrap_or(0);
        let suffix = &prompt[prompt.len() - want_len..];
        let prompt_cnt = if suffix.is_empty() {
            total
        } else {
            count_ids(idx, suffix)
        };
        let cont_cnt = count_ids(idx, &[suffix, &[b]].concat());
        let mut args = os(&[
            &"infgram",
            &"prob",
            &idx,
            &"--next",
            &b.to_string(),
            &"--json",
        ]);
        if !prompt.is_empty() {
            args.extend(os(&[&"--tokens", &id_list(&prompt)]));
        } else {
            // An empty prompt: the next token as an id.
            args = os(&[
                &"infgram",
                &"prob",
                &idx,
                &"--next-id",
                &b.to_string(),
                &"--json",
            ]);
        }
        let v = familiar(args).success().json();
        assert_eq!(v["suffix_len"], want_len as u64, "{prompt:?}: {v}");
        assert_eq!(v["prompt_cnt"], prompt_cnt, "{prompt:?}: {v}");
        assert_eq!(v["cont_cnt"], cont_cnt, "{prompt:?}: {v}");
        assert_eq!(
            v["prob"].as_f64(),
            Some(cont_cnt as f64 / prompt_cnt as f64),
            "{prompt:?}: {v}"
        );
        // The distribution after the same suffix, as `familiar ntd` gives it.
        if !prompt.is_empty() {
            let rows = familiar(os(&[
                &"infgram",
                &"ntd",
                &idx,
                &"--tokens",
                &id_list(&prompt),
                &"--top",
                &"0",
                &"--format",
                &"jsonl",
            ]))
            .success()
            .json_lines();
            let mut args = os(&[&"ntd", &idx, &"--top", &"0", &"--format", &"jsonl"]);
            if !suffix.is_empty() {
                args.extend(os(&[&"--tokens", &id_list(suffix)]));
            }
            let want = familiar(args).success().json_lines();
            assert_eq!(rows.len(), want.len(), "{prompt:?}");
            for (r, w) in rows.iter().zip(&want) {
                assert_eq!(r["suffix_len"], want_len as u64);
                assert_eq!((&r["token_id"], &r["count"]), (&w["token_id"], &w["count"]));
            }
        }
    }
    // With a prompt of ids, --next is an id.
    familiar(os(&[
        &"infgram",
        &"prob",
        &idx,
        &"--tokens",
        &id_list(&[a]),
        &"--next",
        &"cat",
    ]))
    .failure()
    .stderr_has(&["the next token is an id"]);
    // Text prompts work as text.
    familiar(os(&[
        &"infgram",
        &"prob",
        &idx,
        &"qqzx Zelxir",
        &"--next",
        &" Exoexo",
    ]))
    .success()
    .stdout_has(&["1 (512 / 512, from the last 1 of"]);
}

fn top_rows(idx: &Path, extra: &[&str]) -> Vec<(u64, u64, Vec<u64>, u64)> {
    let mut args = os(&[&"ngrams", &"top", &idx, &"--format", &"jsonl"]);
    args.extend(extra.iter().map(Into::into));
    familiar(args)
        .success()
        .json_lines()
        .iter()
        .map(|r| {
            (
                r["n"].as_u64().unwrap(),
                r["rank"].as_u64().unwrap(),
                ids_of(r),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `familiar ngrams top`: each count is `familiar count`'s, ranks follow counts (ties by ids),
/// several shards give the answer of one, and `--source S` gives the answer of an index of the
/// documents of source S alone.
#[test]
fn top_ngrams_are_exact_across_shards_and_per_source() {
    let one = fixture_index();
    let rows = top_rows(one, &["--n", "1..=3", "--k", "6"]);
    assert_eq!(rows.len(), 18);
    for n in 1..=3u64 {
        let of_n: Vec<_> = rows.iter().filter(|r| r.0 == n).collect();
        assert_eq!(
            of_n.iter().map(|r| r.1).collect::<Vec<_>>(),
            (1..=6).collect::<Vec<_>>()
        );
        for w in of_n.windows(2) {
            assert!(
                w[0].3 > w[1].3 || (w[0].3 == w[1].3 && w[0].2 < w[1].2),
                "ranking {w:?}"
            );
        }
        for r in &of_n {
            assert_eq!(r.2.len() as u64, n);
            assert_eq!(count_ids(one, &r.2), r.3, "{r:?}");
        }
    }
    // Several shards rank as one.
    assert_eq!(
        top_rows(fixture_index_sharded(), &["--n", "1..=3", "--k", "6"]),
        rows
    );

    // Per source: the same as an index of that source's documents only.
    let t = TestDir::new();
    let forum: Vec<Value> = fixture_records()
        .into_iter()
        .filter(|r| r["source"] == "forum")
        .collect();
    assert!(forum.len() > 10);
    let input = t.write_jsonl("forum.jsonl", &forum);
    let alone = t.join("forum-idx");
    build(&alone, &[input], &[]);
    assert_eq!(
        top_rows(
            fixture_index_sharded(),
            &["--n", "2", "--k", "8", "--source", "forum"]
        ),
        top_rows(&alone, &["--n", "2", "--k", "8"])
    );
    // A source no document has: no rows, said on stderr.
    let o = familiar(os(&[
        &"ngrams",
        &"top",
        &one,
        &"--n",
        &"1",
        &"--source",
        &"nowhere",
    ]));
    o.success()
        .stderr_has(&["no document of source \"nowhere\""]);
    // Bad lengths (refused as arguments: exit code 2) and k.
    for (n, k, code, needle) in [
        ("0", "1", 2, "not an n-gram length"),
        ("3..=2", "1", 2, "larger than the last"),
        ("65", "1", 2, "not an n-gram length"),
        ("2", "0", 1, "k must be at least 1"),
    ] {
        let o = familiar(os(&[&"ngrams", &"top", &one, &"--n", &n, &"--k", &k]));
        assert_eq!(o.code(), Some(code), "{o}");
        o.stderr_has(&[needle]);
    }
}

/// `familiar trace --all-spans`: every span it reports occurs as often as `familiar count` says
/// and is maximal (one more token on either side never occurs); its characters are the span's;
/// the documents it lists contain it.
#[test]
fn trace_reports_maximal_spans_with_their_counts_and_documents() {
    let idx = fixture_index_sharded();
    let record = &fixture_records()[37];
    let body: String = record["text"].as_str().unwrap().chars().take(300).collect();
    let text = format!("{body} qqzx vvq xxz {body}");
    let tokens = ids_of(&count_json(idx, &text));
    let t = TestDir::new();
    let docs_file = t.join("docs.parquet");
    let rows = familiar(os(&[
        &"trace",
        &idx,
        &"--text",
        &text,
        &"--min-len",
        &"4",
        &"--all-spans",
        &"--docs-per-span",
        &"3",
        &"--documents",
        &docs_file,
        &"--format",
        &"jsonl",
    ]))
    .success()
    .json_lines();
    assert!(rows.len() >= 2, "{rows:?}");
    let chars: Vec<char> = text.chars().collect();
    for r in &rows {
        let (s, e) = (
            r["start"].as_u64().unwrap() as usize,
            r["end"].as_u64().unwrap() as usize,
        );
        assert!(e - s >= 4);
        assert_eq!(
            count_ids(idx, &tokens[s..e]),
            r["count"].as_u64().unwrap(),
            "{r}"
        );
        if s > 0 {
            assert_eq!(count_ids(idx, &tokens[s - 1..e]), 0, "not maximal: {r}");
        }
        if e < tokens.len() {
            assert_eq!(count_ids(idx, &tokens[s..e + 1]), 0, "not maximal: {r}");
        }
        let (cs, ce) = (
            r["char_start"].as_u64().unwrap() as usize,
            r["char_end"].as_u64().unwrap() as usize,
        );
        let covered: String = chars[cs..ce].iter().collect();
        assert_eq!(covered.trim(), r["text"].as_str().unwrap().trim(), "{r}");
    }
    // The documents listed hold the span at the position given.
    let docs = read_parquet(&docs_file, "trace_documents");
    let doc_ids = col::<arrow_array::UInt64Array>(&docs, "doc_id");
    let spans = col::<arrow_array::UInt64Array>(&docs, "span");
    let positions = col::<arrow_array::UInt64Array>(&docs, "position");
    assert!(doc_ids.len() >= rows.len());
    for i in 0..doc_ids.len() {
        let r = &rows[spans.value(i) as usize];
        let (s, e) = (
            r["start"].as_u64().unwrap() as usize,
            r["end"].as_u64().unwrap() as usize,
        );
        let hits = familiar(os(&[
            &"locate",
            &idx,
            &"--tokens",
            &id_list(&tokens[s..e]),
            &"--limit",
            &"100000",
            &"--format",
            &"jsonl",
        ]))
        .success()
        .json_lines();
        assert!(
            hits.iter().any(
                |h| h["doc_id"] == doc_ids.value(i) && h["offset_in_doc"] == positions.value(i)
            ),
            "document {} position {} does not hold span {r}",
            doc_ids.value(i),
            positions.value(i)
        );
    }
    // Whole words: every span starts and ends at a word boundary of the text.
    let whole = familiar(os(&[
        &"trace",
        &idx,
        &"--text",
        &text,
        &"--min-len",
        &"3",
        &"--all-spans",
        &"--whole-words",
        &"--format",
        &"jsonl",
    ]))
    .success()
    .json_lines();
    assert!(!whole.is_empty());
    let word = |i: usize| chars.get(i).is_some_and(|c| c.is_alphanumeric());
    for r in &whole {
        let (cs, ce) = (
            r["char_start"].as_u64().unwrap() as usize,
            r["char_end"].as_u64().unwrap() as usize,
        );
        assert!(
            cs == 0 || !word(cs - 1) || !word(cs),
            "starts inside a word: {r}"
        );
        assert!(!word(ce) || !word(ce - 1), "ends inside a word: {r}");
    }
    // The default (OLMoTrace) filters keep a subset of the spans of 8 tokens or more.
    let kept = familiar(os(&[
        &"trace",
        &idx,
        &"--text",
        &text,
        &"--format",
        &"jsonl",
    ]))
    .success()
    .json_lines();
    assert!(kept.len() <= (0.05 * tokens.len() as f64).ceil() as usize);
    for k in &kept {
        assert!(k["end"].as_u64().unwrap() - k["start"].as_u64().unwrap() >= 8);
        assert!(k["count"].as_u64().unwrap() <= 10);
    }
    // Bad input.
    familiar(os(&[&"trace", &idx, &"--text", &text, &"--min-len", &"0"]))
        .failure()
        .stderr_has(&["--min-len 0", "at least 1 token"]);
    familiar(os(&[&"trace", &idx]))
        .failure()
        .stderr_has(&["--text, --tokens or --items"]);
    familiar(os(&[&"trace", &idx, &"--tokens", &"999999"]))
        .failure()
        .stderr_has(&["999999"]);
    // Longer than --max-tokens: refused, naming --chunk; with it, traced in pieces.
    familiar(os(&[
        &"trace",
        &idx,
        &"--text",
        &text,
        &"--max-tokens",
        &"20",
    ]))
    .failure()
    .stderr_has(&["--max-tokens", "--chunk"]);
    let pieces = familiar(os(&[
        &"trace",
        &idx,
        &"--text",
        &text,
        &"--max-tokens",
        &"20",
        &"--chunk",
        &"--all-spans",
        &"--min-len",
        &"4",
        &"--format",
        &"jsonl",
    ]))
    .success()
    .json_lines();
    assert!(!pieces.is_empty());
    for r in &pieces {
        let (s, e) = (r["start"].as_u64().unwrap(), r["end"].as_u64().unwrap());
        assert_eq!(s / 20, (e - 1) / 20, "a span crosses a piece: {r}");
    }
}

/// The BM25 of a span's documents uses statistics of the whole index: one shard and several give
/// the same scores; each span's documents come highest score first. Without a text index, BM25
/// is refused with the way out named.
#[test]
fn trace_ranks_documents_by_bm25_over_the_whole_index() {
    let record = &fixture_records()[101];
    let body: String = record["text"].as_str().unwrap().chars().take(400).collect();
    let t = TestDir::new();
    let scores = |idx: &Path, name: &str| -> BTreeMap<(String, u64), f64> {
        let out = t.join(name);
        familiar(os(&[
            &"trace",
            &idx,
            &"--text",
            &body,
            &"--min-len",
            &"3",
            &"--all-spans",
            &"--docs-per-span",
            &"100000",
            &"--documents",
            &out,
            &"--format",
            &"jsonl",
        ]))
        .success();
        let b = read_parquet(&out, "trace_documents");
        let span = col::<arrow_array::UInt64Array>(&b, "span");
        let doc = col::<arrow_array::UInt64Array>(&b, "doc_id");
        let bm25 = col::<arrow_array::Float64Array>(&b, "bm25");
        let mut m = BTreeMap::new();
        for i in 0..b.num_rows() {
            if i > 0 && span.value(i) == span.value(i - 1) {
                assert!(bm25.value(i) <= bm25.value(i - 1), "not ranked at row {i}");
            }
            assert!(bm25.value(i) > 0.0, "a document holding the span scores 0");
            m.insert((span.value(i).to_string(), doc.value(i)), bm25.value(i));
        }
        m
    };
    let one = scores(fixture_index(), "one.parquet");
    let many = scores(fixture_index_sharded(), "many.parquet");
    assert!(!one.is_empty());
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        many.keys().collect::<Vec<_>>()
    );
    for (k, v) in &one {
        let w = many[k];
        assert!((v - w).abs() <= 1e-4 * v.abs(), "{k:?}: {v} vs {w}");
    }
    // No text index: refused, naming --no-bm25; with it, the documents come unranked.
    let a = t.write_jsonl("a.jsonl", &[doc("a", &body)]);
    let bare = t.join("bare");
    build(&bare, &[a], &["--no-text-index"]);
    familiar(os(&[&"trace", &bare, &"--text", &body, &"--all-spans"]))
        .failure()
        .stderr_has(&["--no-bm25"]);
    familiar(os(&[
        &"trace",
        &bare,
        &"--text",
        &body,
        &"--all-spans",
        &"--no-bm25",
    ]))
    .success();
}

/// `familiar contamination`: items taken from the corpus occur whole, made-up ones do not; every
/// count is `familiar count`'s; the rows carry the ids `familiar score` gives the same items.
#[test]
fn contamination_measures_each_field_exactly() {
    let idx = fixture_index_sharded();
    let t = TestDir::new();
    let records = fixture_records();
    let mut items = Vec::new();
    for k in [3usize, 40, 77] {
        let words: Vec<&str> = records[k]["text"].as_str().unwrap().split(' ').collect();
        items.push(json!({
            "id": format!("seen-{k}"),
            "task": "recall",
            "prompt": words[..12].join(" "),
            "choices": [format!(" {}", words[12]), " qqzx"],
            "answer": 0,
        }));
    }
    items.push(
        json!({"id": "unseen", "prompt": "Quiet copper lanterns hum", "completion": " harbor"}),
    );
    let file = t.write_jsonl("items.jsonl", &items);
    let out = t.join("contamination.parquet");
    familiar(os(&[
        &"contamination",
        &idx,
        &"--items",
        &file,
        &"--ngrams",
        &"2,8",
        &"--out",
        &out,
        &"-q",
    ]))
    .success()
    .stdout_has(&["4 items (11 fields)"]);
    let b = read_parquet(&out, "contamination");
    let ids = col::<arrow_array::StringArray>(&b, "item_id");
    let fields = col::<arrow_array::StringArray>(&b, "field");
    let answer = col::<arrow_array::BooleanArray>(&b, "answer");
    let tokens = col::<arrow_array::UInt64Array>(&b, "field_tokens");
    let longest = col::<arrow_array::UInt64Array>(&b, "longest_match");
    let occurrences = col::<arrow_array::UInt64Array>(&b, "occurrences");
    let documents = col::<arrow_array::UInt64Array>(&b, "documents");
    assert_eq!(b.num_rows(), 11);
    for i in 0..b.num_rows() {
        let item = items
            .iter()
            .find(|it| it["id"] == ids.value(i))
            .unwrap_or_else(|| panic!("unknown item {}", ids.value(i)));
        let text = match fields.value(i) {
            "prompt" => item["prompt"].as_str().unwrap().to_string(),
            "completion" => item["completion"].as_str().unwrap().to_string(),
            f => item["choices"][f["choice_".len()..].parse::<usize>().unwrap()]
                .as_str()
                .unwrap()
                .to_string(),
        };
        assert_eq!(
            answer.value(i),
            matches!(fields.value(i), "completion" | "choice_0")
        );
        let ids_of_field = ids_of(&count_json(idx, &text));
        assert_eq!(tokens.value(i), ids_of_field.len() as u64);
        let whole = count_ids(idx, &ids_of_field);
        assert_eq!(occurrences.value(i), whole, "{text:?}");
        assert_eq!(documents.value(i) > 0, whole > 0, "{text:?}");
        assert!(longest.value(i) <= tokens.value(i));
        if ids.value(i).starts_with("seen") && fields.value(i) == "prompt" {
            assert_eq!(
                longest.value(i),
                tokens.value(i),
                "a prompt from the corpus: {text:?}"
            );
            assert!(documents.value(i) >= 1);
        }
        if ids.value(i) == "unseen" && fields.value(i) == "prompt" {
            assert_eq!(documents.value(i), 0);
            assert!(longest.value(i) < tokens.value(i));
        }
    }
    // Bad input.
    familiar(os(&[
        &"contamination",
        &idx,
        &"--items",
        &file,
        &"--ngrams",
        &"0",
        &"--out",
        &out,
    ]))
    .failure()
    .stderr_has(&["at least 1"]);
    familiar(os(&[
        &"contamination",
        &idx,
        &"--items",
        &t.join("nope.jsonl"),
        &"--out",
        &out,
    ]))
    .failure()
    .stderr_has(&["nope.jsonl"]);
}

// =============================================================================================
// Exact duplicates.

/// The tokens of `text` under the fixture tokenizer, with each token's byte range in `text`.
fn tokens_with_bytes(
    tokenizer: &familiar::tokenizer::Tokenizer,
    text: &str,
) -> Vec<(u32, usize, usize)> {
    let mut bytes: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    bytes.push(text.len());
    tokenizer
        .encode_with_offsets(text)
        .unwrap()
        .into_iter()
        .map(|(id, (a, b))| (id, bytes[a], bytes[b]))
        .collect()
}

#[test]
fn duplicates_match_brute_force_and_remove_cuts_exactly_them() {
    let t = TestDir::new();
    let mut rng = Rng::new(11);
    let syllables = [
        "ka", "ro", "mi", "tu", "se", "vo", "li", "na", "pe", "zu", "gra", "shi",
    ];
    let mut word = || -> String {
        let n = rng.range(1, 3);
        (0..n)
            .map(|_| syllables[rng.range(0, syllables.len() as u64 - 1) as usize])
            .collect()
    };
    let mut filler = |n: usize| -> String { (0..n).map(|_| word()).collect::<Vec<_>>().join(" ") };
    let boiler = "This page is licensed under the Creative Commons Attribution license, \
                  see the terms of use for details and the list of contributors.";
    let mut texts: Vec<String> = (0..34).map(|_| filler(25)).collect();
    for (i, at) in [(3, 0), (17, 1), (25, 2), (28, 1)] {
        let text = &texts[i];
        texts[i] = match at {
            0 => format!("{boiler} {text}"),
            1 => format!("{text} {boiler} {}", filler(5)),
            _ => format!("{text} {boiler}"),
        };
    }
    texts[30] = texts[5].clone();
    texts[12] = format!("{} é日本 {}", texts[12], texts[12]);
    // a.jsonl: plain records with an extra field before the text; b.jsonl.zst: a blank line and
    // a malformed line (skipped by the build, copied as they are); c.parquet.
    let mut a_lines = Vec::new();
    for (i, text) in texts.iter().enumerate().take(15) {
        a_lines.push(
            serde_json::to_string(
                &json!({"n": i, "extra": {"k": [1, 2]}, "text": text, "id": format!("d{i}")}),
            )
            .unwrap(),
        );
    }
    let a = t.write("a.jsonl", a_lines.join("\n") + "\n");
    let mut b_lines = Vec::new();
    for (i, text) in texts.iter().enumerate().skip(15).take(15) {
        b_lines.push(
            serde_json::to_string(&json!({"id": format!("d{i}"), "text": text, "source": "web"}))
                .unwrap(),
        );
        if i == 20 {
            b_lines.push(String::new());
            b_lines.push("{not json".into());
        }
    }
    let b = t.write("b.jsonl.zst", zst((b_lines.join("\n") + "\n").as_bytes()));
    let rows: Vec<(String, &str)> = texts
        .iter()
        .enumerate()
        .skip(30)
        .map(|(i, s)| (format!("d{i}"), s.as_str()))
        .collect();
    let rows: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    let c = t.write_parquet("c.parquet", &rows);
    let idx = t.join("idx");
    build(
        &idx,
        &[a.clone(), b.clone(), c.clone()],
        &["--skip-invalid"],
    );

    // The oracle: every document tokenized, every 12-gram counted.
    let l = 12usize;
    let tokenizer = familiar::tokenizer::Tokenizer::from_file(&tokenizer()).unwrap();
    let docs: Vec<Vec<(u32, usize, usize)>> = texts
        .iter()
        .map(|s| tokens_with_bytes(&tokenizer, s))
        .collect();
    let mut counts: BTreeMap<Vec<u32>, u64> = BTreeMap::new();
    for d in &docs {
        let ids: Vec<u32> = d.iter().map(|x| x.0).collect();
        for w in ids.windows(l) {
            *counts.entry(w.to_vec()).or_default() += 1;
        }
    }
    let covered: Vec<Vec<bool>> = docs
        .iter()
        .map(|d| {
            let ids: Vec<u32> = d.iter().map(|x| x.0).collect();
            let mut c = vec![false; ids.len()];
            for (p, w) in ids.windows(l).enumerate() {
                if counts[w] >= 2 {
                    c[p..p + l].iter_mut().for_each(|x| *x = true);
                }
            }
            c
        })
        .collect();

    let clusters = t.join("clusters.parquet");
    let out = t.join("dedup");
    let o = familiar(os(&[
        &"duplicates",
        &idx,
        &"--min-len",
        &"12",
        &"--clusters",
        &clusters,
        &"--remove",
        &out,
        &"--format",
        &"jsonl",
        &"--quiet",
    ]));
    o.success();
    let got: BTreeMap<u64, (u64, u64, u64)> = o
        .json_lines()
        .iter()
        .map(|r| {
            let f = |k: &str| r[k].as_u64().unwrap();
            (
                f("doc_id"),
                (f("tokens"), f("duplicated_tokens"), f("segments")),
            )
        })
        .collect();
    let mut want = BTreeMap::new();
    for (i, c) in covered.iter().enumerate() {
        let dup = c.iter().filter(|x| **x).count() as u64;
        let segments = (0..c.len())
            .filter(|&p| c[p] && (p == 0 || !c[p - 1]))
            .count() as u64;
        if dup > 0 {
            want.insert(i as u64, (c.len() as u64, dup, segments));
        }
    }
    assert_eq!(got, want);
    // The planted copies: whole documents 5 and 30, the boilerplate in 3, 17, 25 and 28.
    for i in [5u64, 30] {
        assert_eq!(got[&i].0, got[&i].1, "document {i} is all duplicated");
    }
    for i in [3u64, 17, 25, 28, 12] {
        assert!(got[&i].1 >= 20, "document {i}: {:?}", got[&i]);
    }
    o.stderr_has(&[&format!(
        "{} of 34 documents hold duplicated tokens",
        want.len()
    )]);
    let b_clusters = read_parquet(&clusters, "duplicate_clusters");
    let text = col::<arrow_array::StringArray>(&b_clusters, "text");
    let documents = col::<arrow_array::UInt64Array>(&b_clusters, "documents");
    assert!(
        (0..b_clusters.num_rows()).any(|i| text
            .value(i)
            .contains("Creative Commons Attribution license")
            && documents.value(i) == 4),
        "the boilerplate's cluster"
    );

    // The copy: each input once, every byte kept but the cut texts.
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("dedup.json")).unwrap()).unwrap();
    let dup_total: u64 = want.values().map(|v| v.1).sum();
    assert_eq!(summary["removed_tokens"].as_u64().unwrap(), dup_total);
    assert_eq!(
        summary["changed_documents"].as_u64().unwrap(),
        want.len() as u64
    );
    assert_eq!(summary["emptied_documents"].as_u64().unwrap(), 2);
    // Token k owns the text from the end of token k - 1 to its own end (the ends of the text
    // for the first and the last).
    let expected_text = |i: usize| -> String {
        let d = &docs[i];
        let mut s = String::new();
        for k in 0..d.len() {
            let from = if k == 0 { 0 } else { d[k - 1].2 };
            let to = if k + 1 == d.len() {
                texts[i].len()
            } else {
                d[k].2
            };
            if !covered[i][k] && to > from {
                s.push_str(&texts[i][from..to]);
            }
        }
        s
    };
    let read_zst = |p: &Path| {
        String::from_utf8(zstd::decode_all(std::fs::File::open(p).unwrap()).unwrap()).unwrap()
    };
    let copied_a = read_zst(&out.join("a.jsonl.zst"));
    let copied_b = read_zst(&out.join("b.jsonl.zst"));
    let mut removed_bytes = 0;
    for (lines_in, copied, first) in [(&a_lines, &copied_a, 0usize), (&b_lines, &copied_b, 15)] {
        let lines_out: Vec<&str> = copied.lines().collect();
        assert_eq!(lines_out.len(), lines_in.len());
        let mut doc = first;
        for (x, y) in lines_in.iter().zip(&lines_out) {
            let Ok(Value::Object(mut rec)) = serde_json::from_str::<Value>(x) else {
                assert_eq!(x, y, "a line that is no record is copied as it is");
                continue;
            };
            if want.contains_key(&(doc as u64)) {
                let Value::Object(mut new) = serde_json::from_str::<Value>(y).unwrap() else {
                    panic!()
                };
                let cut = new.remove("text").unwrap();
                assert_eq!(cut.as_str().unwrap(), expected_text(doc), "document {doc}");
                removed_bytes += texts[doc].len() - expected_text(doc).len();
                rec.remove("text");
                assert_eq!(rec, new, "document {doc}: the other fields are kept");
                // In place: the line is the original up to the text's value.
                let key = x.find("\"text\":").unwrap();
                assert_eq!(x[..key], y[..key]);
            } else {
                assert_eq!(x, y, "document {doc} is copied as it is");
            }
            doc += 1;
        }
    }
    let copied_c = read_zst(&out.join("c.jsonl.zst"));
    let recs: Vec<Value> = copied_c
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 4);
    for (k, r) in recs.iter().enumerate() {
        let i = 30 + k;
        assert_eq!(r["id"], format!("d{i}"));
        let want_text = if want.contains_key(&(i as u64)) {
            expected_text(i)
        } else {
            texts[i].clone()
        };
        if want.contains_key(&(i as u64)) {
            removed_bytes += texts[i].len() - want_text.len();
        }
        assert_eq!(r["text"].as_str().unwrap(), want_text, "document {i}");
    }
    assert_eq!(
        summary["removed_bytes"].as_u64().unwrap(),
        removed_bytes as u64
    );

    // Refusals: an existing output; a changed input (and nothing left behind); min-len 0.
    familiar(os(&[&"duplicates", &idx, &"--remove", &out, &"--quiet"]))
        .failure()
        .stderr_has(&["exists", "new directory"]);
    familiar(os(&[&"duplicates", &idx, &"--min-len", &"0"]))
        .failure()
        .stderr_has(&["--min-len 0", "from 1 to"]);
    t.write("a.jsonl", a_lines.join("\n") + "\n\n");
    let out2 = t.join("dedup2");
    familiar(os(&[
        &"duplicates",
        &idx,
        &"--min-len",
        &"12",
        &"--remove",
        &out2,
        &"--quiet",
    ]))
    .failure()
    .stderr_has(&["a.jsonl", "changed since the index was built"]);
    assert!(!out2.exists());
    assert!(
        entries(t.path()).iter().all(|e| !e.starts_with(".tmp-")),
        "{:?}",
        entries(t.path())
    );
}

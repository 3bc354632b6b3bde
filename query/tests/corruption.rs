//! Damaged indexes fail cleanly: an error naming the damaged file, never a panic.
//!
//! Each scenario copies a freshly built index, damages one file of it (truncation, appended bytes,
//! flipped bytes, edited manifest fields) and then checks:
//! - damage that opening can see (headers, sizes, manifests, document offsets): `Index::open`
//!   returns an error whose message names the file;
//! - damage it cannot see (a suffix-array entry, a token in the middle of a document, the documents
//!   table): every query returns `Ok` or `Err` but never panics;
//! - in every case `verify` reports at least one problem naming the file.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use familiar::index::Index;
use familiar::tokenizer::Tokenizer;
use familiar::Error;
use familiar_index_builder::fixtures::word_level_tokenizer;
use familiar_query::verify::{self, VerifyOptions};
use familiar_query::{docs, ngram};
use serde_json::Value;

const TARGET_SHARD: &str = "shard-00001";

/// A pristine index to copy and damage.
struct Pristine {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    vocab: u32,
    alphabet: Vec<u32>,
    work: PathBuf,
    n: std::cell::Cell<u32>,
}

/// Deterministic documents over a four-symbol alphabet, with empty ones, cut into several shards.
fn documents(alphabet: &[u32]) -> Vec<Vec<u32>> {
    let lens = [5usize, 0, 9, 3, 12, 1, 7, 0, 4, 8, 2, 6, 10, 3, 11, 0, 6];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    lens.iter()
        .map(|&l| {
            (0..l)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    alphabet[(x >> 61) as usize % alphabet.len()]
                })
                .collect()
        })
        .collect()
}

impl Pristine {
    fn new(vocab: u32, alphabet: Vec<u32>) -> Pristine {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tokenizer = support::tokens::write_tokenizer(tmp.path(), vocab);
        let dir = tmp.path().join("pristine");
        support::tokens::build(&tokenizer, &dir, &documents(&alphabet), 30);
        let index = Index::open(&dir).expect("open pristine");
        assert!(index.shards().len() >= 3, "several shards");
        let report = verify::verify(&dir, full());
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).expect("work dir");
        Pristine {
            _tmp: tmp,
            dir,
            vocab,
            alphabet,
            work,
            n: std::cell::Cell::new(0),
        }
    }

    /// A fresh copy of the index.
    fn copy(&self) -> PathBuf {
        let k = self.n.get();
        self.n.set(k + 1);
        let to = self.work.join(format!("copy-{k}"));
        support::copy_tree(&self.dir, &to);
        to
    }
}

fn full() -> VerifyOptions {
    VerifyOptions {
        full: true,
        samples: 0,
    }
}

#[derive(Debug, Clone)]
enum Damage {
    /// Keep only the first bytes.
    Truncate(u64),
    /// Append a byte.
    Append,
    /// XOR the byte at a position with a mask.
    Xor(u64, u8),
    /// Overwrite bytes at a position.
    Write(u64, Vec<u8>),
    /// Delete the file.
    Delete,
    /// Edit a JSON manifest (described by the string).
    #[allow(dead_code)]
    Json(&'static str, fn(&mut Value)),
}

/// What the damage must do to `Index::open` (`Expect::Fails…`: opening fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Open fails, naming exactly the damaged file.
    FailsNamingFile,
    /// Open fails, naming some file of the index.
    Fails,
    /// Open may succeed (damage it does not look at); queries must not panic.
    MaySucceed,
}

fn apply(path: &Path, damage: &Damage) {
    let mut bytes = std::fs::read(path).unwrap_or_default();
    match damage {
        Damage::Truncate(n) => bytes.truncate(*n as usize),
        Damage::Append => bytes.push(0),
        Damage::Xor(at, mask) => bytes[*at as usize] ^= mask,
        Damage::Write(at, b) => {
            bytes[*at as usize..*at as usize + b.len()].copy_from_slice(b);
        }
        Damage::Delete => {
            std::fs::remove_file(path).expect("delete");
            return;
        }
        Damage::Json(_, edit) => {
            let mut v: Value = serde_json::from_slice(&bytes).expect("manifest json");
            edit(&mut v);
            bytes = serde_json::to_vec_pretty(&v).expect("json");
            bytes.push(b'\n');
        }
    }
    std::fs::write(path, bytes).expect("write damaged file");
}

/// Whether a verify problem names `file` (a shard manifest is also named by its shard directory:
/// "<shard dir>: shard manifest does not match …").
fn problem_names(problem: &str, file: &Path) -> bool {
    if problem.contains(&file.display().to_string()) {
        return true;
    }
    file.file_name().is_some_and(|n| n == "manifest.json")
        && problem.contains("manifest")
        && file
            .parent()
            .is_some_and(|d| problem.contains(&d.display().to_string()))
}

/// Runs many queries; returns a description of the first panic, if any.
fn query_battery(index: &Index, alphabet: &[u32]) -> Option<String> {
    let mut patterns: Vec<Vec<u32>> = Vec::new();
    for &a in alphabet {
        patterns.push(vec![a]);
        for &b in alphabet {
            patterns.push(vec![a, b]);
            for &c in alphabet {
                patterns.push(vec![a, b, c]);
            }
        }
    }
    patterns.push(vec![alphabet[0]; 6]);
    let run = |what: String, f: &dyn Fn() -> bool| -> Option<String> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(_) => None,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("{what} panicked: {msg}"))
            }
        }
    };
    let mut first_panic = None;
    let mut note = |r: Option<String>| {
        if first_panic.is_none() {
            first_panic = r;
        }
    };
    note(run("next_tokens []".into(), &|| {
        ngram::next_tokens(index, &[]).is_ok()
    }));
    for p in &patterns {
        note(run(format!("count {p:?}"), &|| {
            ngram::count(index, p).is_ok()
        }));
        note(run(format!("locate {p:?}"), &|| {
            ngram::locate(index, p, 0, 100).is_ok() && ngram::locate(index, p, 1, 2).is_ok()
        }));
        note(run(format!("next_tokens {p:?}"), &|| {
            ngram::next_tokens(index, p).is_ok()
        }));
        note(run(format!("probability {p:?}"), &|| {
            ngram::probability(index, &p[..p.len() - 1], p[p.len() - 1]).is_ok()
        }));
    }
    let cnfs = [
        vec![vec![vec![alphabet[0]]]],
        vec![
            vec![vec![alphabet[0]]],
            vec![vec![alphabet[1], alphabet[2]], vec![alphabet[3]]],
        ],
        vec![
            vec![vec![alphabet[1]], vec![alphabet[0], alphabet[0]]],
            vec![vec![alphabet[2]]],
        ],
    ];
    for clauses in cnfs {
        for max_occurrences in [None, Some(1), Some(3)] {
            let q = ngram::Cnf {
                clauses: clauses.clone(),
            };
            let opts = ngram::CnfOptions {
                max_occurrences,
                list_documents: 5,
                seed: 0,
            };
            note(run(format!("cnf {clauses:?} {max_occurrences:?}"), &|| {
                ngram::cnf(index, &q, &opts).is_ok()
            }));
        }
    }
    // The suffix-array scans (in pieces, across shards): a bug error counts as a panic.
    let no_bug = |r: Result<(), Error>| {
        if let Err(Error::Bug(m)) = r {
            panic!("a bug error: {m}");
        }
        true
    };
    for l in [1, 2, 4] {
        note(run(format!("duplicates {l}"), &|| {
            no_bug(
                familiar_query::duplicates::duplicates(
                    index,
                    &familiar_query::duplicates::DuplicateOptions {
                        min_len: l,
                        docs_per_cluster: 3,
                    },
                    &|_| {},
                )
                .map(|_| ()),
            )
        }));
    }
    note(run("top n-grams".into(), &|| {
        no_bug(
            familiar_query::top::top_ngrams(
                index,
                &familiar_query::top::TopOptions {
                    lengths: 1..=3,
                    k: 5,
                    source: None,
                },
            )
            .map(|_| ()),
        )
    }));
    note(run("longest matches".into(), &|| {
        no_bug(
            familiar_query::trace::longest_matches(index, &patterns[patterns.len() - 1])
                .map(|_| ()),
        )
    }));
    let mut doc_ids = vec![0];
    if let Some(s) = index
        .shards()
        .iter()
        .find(|s| s.dir.ends_with(TARGET_SHARD))
    {
        doc_ids.extend(s.manifest.first_doc..s.manifest.first_doc + s.manifest.documents);
    }
    for d in doc_ids {
        note(run(format!("docs::record {d}"), &|| {
            docs::record(index, d).is_ok()
        }));
        note(run(format!("doc_tokens {d}"), &|| {
            index.doc_tokens(d, 0, 1000).is_ok()
        }));
        note(run(format!("docs::window {d}"), &|| {
            docs::window(index, d, 1, 2, 3, 3).is_ok()
        }));
    }
    note(run("docs::table".to_string(), &|| {
        docs::table(index).is_ok()
    }));
    first_panic
}

/// Applies one damage to a fresh copy and checks the outcome; returns a failure description.
fn scenario(p: &Pristine, rel: &str, damage: &Damage, expect: Expect) -> Option<String> {
    let dir = p.copy();
    let file = dir.join(rel);
    apply(&file, damage);
    let ctx = format!("{rel} {damage:?}");
    let opened = match catch_unwind(AssertUnwindSafe(|| Index::open(&dir))) {
        Err(_) => return Some(format!("{ctx}: Index::open panicked")),
        Ok(r) => r,
    };
    match (&opened, expect) {
        (Ok(_), Expect::Fails | Expect::FailsNamingFile) => {
            return Some(format!("{ctx}: Index::open succeeded"));
        }
        (Err(e), Expect::FailsNamingFile) => {
            let msg = e.to_string();
            if !msg.contains(&file.display().to_string()) {
                return Some(format!(
                    "{ctx}: the error does not name {}: {msg}",
                    file.display()
                ));
            }
        }
        (Err(e), _) => {
            let msg = e.to_string();
            if !msg.contains(&dir.display().to_string()) {
                return Some(format!(
                    "{ctx}: the error names no file of the index: {msg}"
                ));
            }
        }
        (Ok(index), Expect::MaySucceed) => {
            if let Some(panic) = query_battery(index, &p.alphabet) {
                return Some(format!("{ctx}: {panic}"));
            }
        }
    }
    drop(opened);
    let report = match catch_unwind(AssertUnwindSafe(|| verify::verify(&dir, full()))) {
        Err(_) => return Some(format!("{ctx}: verify panicked")),
        Ok(r) => r,
    };
    // A manifest edit may be reported against the file whose recorded size or checksum it
    // changed; any problem naming a file of the index will do.
    let named = match damage {
        Damage::Json(..) => report
            .problems
            .iter()
            .any(|pr| pr.contains(&dir.display().to_string())),
        _ => report.problems.iter().any(|pr| problem_names(pr, &file)),
    };
    if !named {
        return Some(format!(
            "{ctx}: verify reports no problem naming {}: {:?}",
            file.display(),
            report.problems
        ));
    }
    None
}

fn run_all(p: &Pristine, scenarios: &[(String, Damage, Expect)]) {
    let failures: Vec<String> = scenarios
        .iter()
        .filter_map(|(rel, d, e)| scenario(p, rel, d, *e))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} damage scenarios failed (vocabulary {}):\n{}",
        failures.len(),
        scenarios.len(),
        p.vocab,
        failures.join("\n")
    );
}

fn shard_file(name: &str) -> String {
    format!("{TARGET_SHARD}/{name}")
}

fn len_of(p: &Pristine, rel: &str) -> u64 {
    std::fs::metadata(p.dir.join(rel)).expect("metadata").len()
}

/// Truncations and header damage of the three array files: opening must fail, naming the file.
fn array_header_scenarios(p: &Pristine) -> Vec<(String, Damage, Expect)> {
    let mut out = Vec::new();
    for name in ["tokens.bin", "suffix_array.bin", "doc_offsets.bin"] {
        let rel = shard_file(name);
        let len = len_of(p, &rel);
        assert!(len > 66, "{rel} has a body");
        for cut in [0, 1, 10, 63, 64, 64 + (len - 64) / 2, len - 1] {
            out.push((rel.clone(), Damage::Truncate(cut), Expect::FailsNamingFile));
        }
        out.push((rel.clone(), Damage::Append, Expect::FailsNamingFile));
        out.push((rel.clone(), Damage::Delete, Expect::FailsNamingFile));
        // Magic, kind, version, width, flags, count, aux0, aux1 and the header checksum.
        for at in 0..56 {
            for mask in [0x01, 0x80] {
                out.push((rel.clone(), Damage::Xor(at, mask), Expect::FailsNamingFile));
            }
        }
    }
    out
}

#[test]
fn array_truncation_and_header_damage_fail_open() {
    for p in [
        Pristine::new(5, vec![0, 1, 2, 3]),
        Pristine::new(70_000, vec![0, 1, 65_536, 69_999]),
    ] {
        run_all(&p, &array_header_scenarios(&p));
    }
}

/// About `k` positions spread over `lo..hi`, both ends included.
fn spread(lo: u64, hi: u64, k: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..k).map(|j| lo + j * (hi - 1 - lo) / (k - 1)).collect();
    v.dedup();
    v
}

/// Body damage of the array files. Document offsets are checked at open; tokens inside documents
/// and suffix-array entries are not, so queries over them must fail cleanly or answer.
fn array_body_scenarios(p: &Pristine) -> Vec<(String, Damage, Expect)> {
    let mut out = Vec::new();
    let offsets = shard_file("doc_offsets.bin");
    for at in 64..len_of(p, &offsets) {
        for mask in [0x01, 0x02, 0x80, 0xff] {
            out.push((
                offsets.clone(),
                Damage::Xor(at, mask),
                Expect::FailsNamingFile,
            ));
        }
    }
    for name in ["tokens.bin", "suffix_array.bin"] {
        let rel = shard_file(name);
        for at in spread(64, len_of(p, &rel), 10) {
            for mask in [0x01, 0xff] {
                out.push((rel.clone(), Damage::Xor(at, mask), Expect::MaySucceed));
            }
        }
    }
    let index = Index::open(&p.dir).expect("open");
    let shard = index
        .shards()
        .iter()
        .find(|s| s.dir.ends_with(TARGET_SHARD))
        .expect("target shard");
    // Suffix-array entries are bit-packed: damage them as values and repack the whole body.
    let bits = shard.suffix_array.header().width;
    let tw = (shard.tokens.header().width / 8) as usize;
    let n = shard.manifest.tokens as usize;
    let values: Vec<u64> = (0..n as u64)
        .map(|i| shard.suffix_array.get(i).expect("entry"))
        .collect();
    let pack = |v: &[u64]| {
        let mut body = Vec::new();
        familiar::format::write_packed(&mut body, bits, v.iter().copied()).expect("pack");
        body
    };
    let body_len = pack(&values).len();
    let sa_rel = shard_file("suffix_array.bin");
    for i in [0, 1, n / 2, n - 2] {
        // Two entries swapped: the order is wrong but every position is valid.
        let mut swapped = values.clone();
        swapped.swap(i, i + 1);
        out.push((
            sa_rel.clone(),
            Damage::Write(64, pack(&swapped)),
            Expect::MaySucceed,
        ));
        // An entry repeated: a position missing, another twice.
        let mut repeated = values.clone();
        repeated[i] = repeated[i + 1];
        out.push((
            sa_rel.clone(),
            Damage::Write(64, pack(&repeated)),
            Expect::MaySucceed,
        ));
        // An entry past the end of the text (the largest value the width holds).
        let mut past = values.clone();
        past[i] = (1u64 << bits) - 1;
        out.push((
            sa_rel.clone(),
            Damage::Write(64, pack(&past)),
            Expect::MaySucceed,
        ));
    }
    out.push((
        sa_rel.clone(),
        Damage::Write(64, vec![0; body_len]),
        Expect::MaySucceed,
    ));
    out.push((
        sa_rel.clone(),
        Damage::Write(64, vec![0xff; body_len]),
        Expect::MaySucceed,
    ));
    let reversed: Vec<u64> = values.iter().rev().copied().collect();
    out.push((
        sa_rel,
        Damage::Write(64, pack(&reversed)),
        Expect::MaySucceed,
    ));
    // Tokens: one inside a document set to the separator, and to an id past the separator.
    let tok_rel = shard_file("tokens.bin");
    let sep = shard.manifest.separator;
    let le = |v: u32| v.to_le_bytes()[..tw].to_vec();
    out.push((
        tok_rel.clone(),
        Damage::Write(64, le(sep)),
        Expect::MaySucceed,
    ));
    out.push((
        tok_rel.clone(),
        Damage::Write(64, le(sep + 1)),
        Expect::MaySucceed,
    ));
    out.push((
        tok_rel.clone(),
        Damage::Write(64, vec![0xff; tw]),
        Expect::MaySucceed,
    ));
    // The last token is a separator that opening checks.
    let last = 64 + ((n - 1) * tw) as u64;
    out.push((tok_rel.clone(), Damage::Write(last, le(0)), Expect::Fails));
    out.push((tok_rel, Damage::Write(64, vec![0; n * tw]), Expect::Fails));
    out
}

#[test]
fn array_body_damage_fails_cleanly() {
    for p in [
        Pristine::new(5, vec![0, 1, 2, 3]),
        Pristine::new(70_000, vec![0, 1, 65_536, 69_999]),
    ] {
        run_all(&p, &array_body_scenarios(&p));
    }
}

fn set(v: &mut Value, path: &[&str], new: Value) {
    let mut at = v;
    for k in path {
        at = match k.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*k],
        };
    }
    *at = new;
}

fn add(v: &mut Value, path: &[&str], delta: i64) {
    let mut at = &*v;
    for k in path {
        at = match k.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[*k],
        };
    }
    let n = at.as_i64().expect("number") + delta;
    set(v, path, Value::from(n));
}

/// A described manifest edit and what it must do to `Index::open`.
type Edit = (&'static str, fn(&mut Value), Expect);

fn manifest_scenarios(p: &Pristine) -> Vec<(String, Damage, Expect)> {
    use Damage::Json;
    use Expect::{Fails, FailsNamingFile, MaySucceed};
    let mut out = Vec::new();
    for rel in ["manifest.json".to_string(), shard_file("manifest.json")] {
        let len = len_of(p, &rel);
        // The last byte is a newline, so one byte short is `len - 2`.
        for cut in [0, 1, len / 2, len - 2] {
            out.push((rel.clone(), Damage::Truncate(cut), FailsNamingFile));
        }
        for at in [0, len / 3, len / 2, len - 2] {
            out.push((rel.clone(), Damage::Write(at, vec![0xff]), FailsNamingFile));
        }
        out.push((rel.clone(), Damage::Delete, FailsNamingFile));
        out.push((
            rel.clone(),
            Damage::Write(0, b"[".to_vec()),
            FailsNamingFile,
        ));
    }
    let index: Vec<Edit> = vec![
        (
            "format",
            |v| set(v, &["format"], "familiar-shard".into()),
            FailsNamingFile,
        ),
        (
            "format_version 2",
            |v| set(v, &["format_version"], 2.into()),
            FailsNamingFile,
        ),
        (
            "format_version 0",
            |v| set(v, &["format_version"], 0.into()),
            FailsNamingFile,
        ),
        (
            "no format_version",
            |v| {
                v.as_object_mut().expect("object").remove("format_version");
            },
            FailsNamingFile,
        ),
        (
            "documents +1",
            |v| add(v, &["documents"], 1),
            FailsNamingFile,
        ),
        (
            "documents -1",
            |v| add(v, &["documents"], -1),
            FailsNamingFile,
        ),
        (
            "tokenizer hash",
            |v| set(v, &["tokenizer", "hash"], "xxh3:0000000000000000".into()),
            Fails,
        ),
        (
            "vocab_size -1",
            |v| add(v, &["tokenizer", "vocab_size"], -1),
            Fails,
        ),
        (
            "token_width",
            |v| set(v, &["token_width"], "u32".into()),
            Fails,
        ),
        ("separator +1", |v| add(v, &["separator"], 1), Fails),
        (
            "entry tokens +1",
            |v| add(v, &["shards", "1", "tokens"], 1),
            FailsNamingFile,
        ),
        (
            "entry documents +1",
            |v| add(v, &["shards", "1", "documents"], 1),
            FailsNamingFile,
        ),
        (
            "entry first_doc +1",
            |v| add(v, &["shards", "1", "first_doc"], 1),
            FailsNamingFile,
        ),
        (
            "entry dir",
            |v| set(v, &["shards", "1", "dir"], "shard-00099".into()),
            Fails,
        ),
        (
            "last entry removed",
            |v| {
                v["shards"].as_array_mut().expect("shards").pop();
            },
            FailsNamingFile,
        ),
        (
            "entries swapped",
            |v| {
                v["shards"].as_array_mut().expect("shards").swap(0, 1);
            },
            FailsNamingFile,
        ),
        (
            "entries empty",
            |v| set(v, &["shards"], Value::Array(vec![])),
            FailsNamingFile,
        ),
        (
            "entry manifest_checksum",
            |v| {
                set(
                    v,
                    &["shards", "1", "manifest_checksum"],
                    "xxh3:0123456789abcdef".into(),
                )
            },
            MaySucceed,
        ),
        (
            "tokenizer file",
            |v| set(v, &["tokenizer", "file"], "missing.json".into()),
            MaySucceed,
        ),
    ];
    for (what, edit, expect) in index {
        out.push(("manifest.json".to_string(), Json(what, edit), expect));
    }
    let shard: Vec<Edit> = vec![
        (
            "format",
            |v| set(v, &["format"], "familiar-index".into()),
            FailsNamingFile,
        ),
        (
            "format_version 2",
            |v| set(v, &["format_version"], 2.into()),
            FailsNamingFile,
        ),
        ("tokens +1", |v| add(v, &["tokens"], 1), Fails),
        ("tokens -1", |v| add(v, &["tokens"], -1), Fails),
        ("documents -1", |v| add(v, &["documents"], -1), Fails),
        ("first_doc +1", |v| add(v, &["first_doc"], 1), Fails),
        (
            "suffix_array_bits +1",
            |v| add(v, &["suffix_array_bits"], 1),
            Fails,
        ),
        (
            "separator +1",
            |v| add(v, &["separator"], 1),
            FailsNamingFile,
        ),
        (
            "token_width",
            |v| set(v, &["token_width"], "u32".into()),
            Fails,
        ),
        (
            "tokenizer_hash",
            |v| set(v, &["tokenizer_hash"], "xxh3:0000000000000000".into()),
            FailsNamingFile,
        ),
        (
            "tokens.bin bytes +1",
            |v| add(v, &["files", "tokens.bin", "bytes"], 1),
            Fails,
        ),
        (
            "suffix_array.bin bytes -1",
            |v| add(v, &["files", "suffix_array.bin", "bytes"], -1),
            Fails,
        ),
        (
            "no doc_offsets.bin entry",
            |v| {
                v["files"]
                    .as_object_mut()
                    .expect("files")
                    .remove("doc_offsets.bin");
            },
            Fails,
        ),
        (
            "tokens.bin checksum",
            |v| {
                set(
                    v,
                    &["files", "tokens.bin", "checksum"],
                    "xxh3:0123456789abcdef".into(),
                )
            },
            MaySucceed,
        ),
        ("shard number", |v| set(v, &["shard"], 7.into()), MaySucceed),
        (
            "input_end",
            |v| add(v, &["input_end", "record"], 1),
            MaySucceed,
        ),
    ];
    for (what, edit, expect) in shard {
        out.push((shard_file("manifest.json"), Json(what, edit), expect));
    }
    out
}

#[test]
fn manifest_damage_fails_open() {
    let p = Pristine::new(5, vec![0, 1, 2, 3]);
    run_all(&p, &manifest_scenarios(&p));
}

/// The documents table is read by `docs::record`, not at open: damage must make `record` fail
/// cleanly (or answer), and `verify` must name the file.
#[test]
fn documents_table_damage_fails_cleanly() {
    let p = Pristine::new(5, vec![0, 1, 2, 3]);
    let rel = shard_file("documents.parquet");
    let len = len_of(&p, &rel);
    let mut scenarios = Vec::new();
    for cut in [0, 4, 64, len / 2, len - 8, len - 1] {
        scenarios.push((rel.clone(), Damage::Truncate(cut), Expect::MaySucceed));
    }
    scenarios.push((rel.clone(), Damage::Append, Expect::MaySucceed));
    for at in [
        0,
        3,
        4,
        20,
        len / 3,
        len / 2,
        2 * len / 3,
        len - 12,
        len - 8,
        len - 6,
        len - 1,
    ] {
        for mask in [0x01, 0xff] {
            scenarios.push((rel.clone(), Damage::Xor(at, mask), Expect::MaySucceed));
        }
    }
    run_all(&p, &scenarios);
    // Truncated: opening the index fails, naming the file (its size is in the shard manifest).
    for cut in [0, len / 2, len - 1] {
        let dir = p.copy();
        let file = dir.join(&rel);
        apply(&file, &Damage::Truncate(cut));
        let e = Index::open(&dir).expect_err("open with a truncated documents table");
        assert!(
            e.to_string().contains(&file.display().to_string()),
            "after truncating to {cut}: {e}"
        );
    }
}

/// The documents table is listed with its size in the shard manifest, and opening "checks every
/// size against the manifests" (src/index.rs module docs), but `Shard::open` never looks at
/// `documents.parquet`: a truncated or missing table goes unnoticed until `docs::record`.
#[test]
fn open_rejects_truncated_documents_table() {
    let p = Pristine::new(5, vec![0, 1, 2, 3]);
    let rel = shard_file("documents.parquet");
    let len = len_of(&p, &rel);
    let scenarios: Vec<(String, Damage, Expect)> = [0, len / 2, len - 1]
        .into_iter()
        .map(|cut| (rel.clone(), Damage::Truncate(cut), Expect::FailsNamingFile))
        .chain([(rel.clone(), Damage::Delete, Expect::FailsNamingFile)])
        .collect();
    run_all(&p, &scenarios);
}

/// The index manifest's total of token positions is used by `ngram::probability` (the unigram
/// denominator) but neither opening nor `verify` compares it with the shards.
#[test]
fn index_token_total_is_checked() {
    let p = Pristine::new(5, vec![0, 1, 2, 3]);
    let dir = p.copy();
    let file = dir.join("manifest.json");
    apply(
        &file,
        &Damage::Json("tokens +1", |v| add(v, &["tokens"], 1)),
    );
    let opened = Index::open(&dir);
    let report = verify::verify(&dir, full());
    assert!(
        opened.is_err() || !report.problems.is_empty(),
        "a wrong token total is accepted: P(0) = {:?}",
        opened.ok().map(|i| ngram::probability(&i, &[], 0))
    );
}

/// Reserved header bytes 56..64 ("zero" in the format) are not checked by `Header::parse`; the
/// damage is still caught by `verify` (file checksums) and harmless to queries.
#[test]
fn reserved_header_bytes_are_caught_by_verify() {
    let p = Pristine::new(5, vec![0, 1, 2, 3]);
    let mut scenarios = Vec::new();
    for name in ["tokens.bin", "suffix_array.bin", "doc_offsets.bin"] {
        for at in 56..64 {
            scenarios.push((shard_file(name), Damage::Xor(at, 0x10), Expect::MaySucceed));
        }
    }
    run_all(&p, &scenarios);
}

fn hashes_in(e: &Error) -> (String, String) {
    match e {
        Error::TokenizerMismatch { index, given, .. } => (index.clone(), given.clone()),
        other => panic!("expected a tokenizer mismatch, got {other:?}"),
    }
}

#[test]
fn replaced_tokenizer_is_rejected() {
    let p = Pristine::new(5, vec![0, 1, 2, 3]);
    let expected_hash = Index::open(&p.dir)
        .expect("open")
        .manifest()
        .tokenizer
        .hash
        .clone();
    let other_json = word_level_tokenizer(6);
    let reformatted = {
        let v: Value = serde_json::from_str(&word_level_tokenizer(5)).expect("json");
        serde_json::to_string_pretty(&v).expect("json")
    };
    // A different vocabulary, and the same vocabulary with other bytes: both differ by hash.
    for replacement in [other_json.as_str(), reformatted.as_str()] {
        let dir = p.copy();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, replacement).expect("replace tokenizer");
        let given = Tokenizer::from_file(&path)
            .expect("load")
            .hash()
            .to_string();
        assert_ne!(given, expected_hash);
        let index = Index::open(&dir).expect("opening does not read the tokenizer");
        let e = index.tokenizer().expect_err("a replaced tokenizer");
        let msg = e.to_string();
        assert_eq!(hashes_in(&e), (expected_hash.clone(), given.clone()));
        assert!(
            msg.contains(&expected_hash) && msg.contains(&given),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        // Id queries need no tokenizer; text needs it.
        assert!(ngram::count(&index, &[0]).is_ok());
        assert!(docs::text(&index, 0).is_err());
        // Asking again fails again (the bad tokenizer is not cached).
        assert!(index.tokenizer().is_err());
        let report = verify::verify(&dir, full());
        assert!(
            report.problems.iter().any(|pr| problem_names(pr, &path)),
            "{:?}",
            report.problems
        );
    }
    // Missing or unreadable: an error naming the file.
    for damage in [Damage::Delete, Damage::Truncate(10)] {
        let dir = p.copy();
        let path = dir.join("tokenizer.json");
        apply(&path, &damage);
        let index = Index::open(&dir).expect("open");
        let msg = index
            .tokenizer()
            .expect_err("damaged tokenizer")
            .to_string();
        assert!(
            msg.contains(&path.display().to_string()),
            "{damage:?}: {msg}"
        );
        let report = verify::verify(&dir, full());
        assert!(
            report.problems.iter().any(|pr| problem_names(pr, &path)),
            "{damage:?}: {:?}",
            report.problems
        );
    }
}

#[test]
fn set_tokenizer_checks_the_hash() {
    let p = Pristine::new(5, vec![0, 1, 2, 3]);
    let index = Index::open(&p.dir).expect("open");
    let index_hash = index.manifest().tokenizer.hash.clone();
    let other = p.work.join("other-tokenizer.json");
    std::fs::write(&other, word_level_tokenizer(7)).expect("write");
    let t = Tokenizer::from_file(&other).expect("load");
    let given = t.hash().to_string();
    let e = index.set_tokenizer(t).expect_err("a different tokenizer");
    let msg = e.to_string();
    assert!(msg.contains(&index_hash), "{msg}");
    assert!(msg.contains(&given), "{msg}");
    assert_eq!(hashes_in(&e), (index_hash.clone(), given));
    // The index keeps its own tokenizer.
    assert_eq!(index.tokenizer().expect("own tokenizer").hash(), index_hash);
    // The same bytes from elsewhere are accepted.
    let same = p.work.join("same-tokenizer.json");
    std::fs::write(&same, word_level_tokenizer(5)).expect("write");
    let fresh = Index::open(&p.dir).expect("open");
    fresh
        .set_tokenizer(Tokenizer::from_file(&same).expect("load"))
        .expect("the same tokenizer");
    assert_eq!(fresh.tokenizer().expect("tokenizer").hash(), index_hash);
    assert_eq!(
        fresh
            .tokenizer()
            .expect("tokenizer")
            .decode(&[1, 2])
            .expect("decode"),
        "t1 t2"
    );
}

//! The checked-in golden index of format version 1 (`fixtures/golden-v1`) still opens, verifies and
//! answers exactly what `fixtures/golden-v1.expected.json` says (computed by brute force over the
//! tokenized source when the index was made).
//!
//! These tests only read the checked-in files; they never rebuild them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use familiar::index::Index;
use familiar_index_builder::fixtures::{GoldenExpected, GOLDEN_V1};
use familiar_query::verify::{self, VerifyOptions};
use familiar_query::{docs, ngram};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");

fn golden_dir() -> PathBuf {
    Path::new(FIXTURES).join(GOLDEN_V1)
}

fn open() -> Index {
    let dir = golden_dir();
    Index::open(&dir).unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

fn expected() -> GoldenExpected {
    let path = Path::new(FIXTURES).join(format!("{GOLDEN_V1}.expected.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The source documents of the golden index, as JSON objects (`id`, `text`, `source`, `metadata`).
fn source() -> Vec<serde_json::Value> {
    let path = Path::new(FIXTURES).join(format!("{GOLDEN_V1}-source.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("source line"))
        .collect()
}

#[test]
fn golden_opens_and_manifest_totals_match() {
    let index = open();
    let want = expected();
    let m = index.manifest();
    assert_eq!(m.format_version, 1);
    assert_eq!(m.documents, want.documents);
    assert_eq!(m.tokens, want.tokens);
    assert_eq!(index.documents(), want.documents);
    assert_eq!(m.separator, m.tokenizer.vocab_size);
    assert_eq!(m.shards.len(), index.shards().len());
    assert!(
        index.shards().len() > 1,
        "the golden index has several shards"
    );
    let mut next_doc = 0;
    for (entry, shard) in m.shards.iter().zip(index.shards()) {
        assert_eq!(entry.first_doc, next_doc);
        assert_eq!(shard.manifest.first_doc, entry.first_doc);
        assert_eq!(shard.manifest.documents, entry.documents);
        assert_eq!(shard.manifest.tokens, entry.tokens);
        assert_eq!(shard.manifest.format_version, 1);
        next_doc += entry.documents;
    }
    assert_eq!(next_doc, want.documents);
    assert_eq!(m.shards.iter().map(|s| s.tokens).sum::<u64>(), want.tokens);
    // The empty prefix counts every position: tokens and separators.
    let all = ngram::next_tokens(&index, &[]).expect("unigrams");
    assert_eq!(all.prefix_count, want.tokens);
    assert_eq!(all.end_of_document, want.documents);
    // The source has one document per line.
    assert_eq!(source().len() as u64, want.documents);
}

#[test]
fn golden_counts_match() {
    let index = open();
    let want = expected();
    assert!(!want.counts.is_empty());
    for (ids, count) in &want.counts {
        let got = ngram::count(&index, ids).unwrap_or_else(|e| panic!("count {ids:?}: {e}"));
        assert_eq!(got, *count, "count of {ids:?}");
        let page = ngram::locate(&index, ids, 0, *count + 1).expect("locate");
        assert_eq!(page.total, *count, "locate total of {ids:?}");
        assert_eq!(page.hits.len() as u64, *count, "locate hits of {ids:?}");
        for h in page.hits.iter().take(3) {
            let at = index
                .doc_tokens(
                    h.doc_id,
                    h.offset_in_doc,
                    h.offset_in_doc + ids.len() as u64,
                )
                .expect("tokens of a hit");
            assert_eq!(&at, ids, "tokens at hit {h:?}");
        }
    }
}

#[test]
fn golden_next_tokens_match() {
    let index = open();
    let want = expected();
    assert!(!want.next_tokens.is_empty());
    for (prefix, next, end) in &want.next_tokens {
        let got = ngram::next_tokens(&index, prefix)
            .unwrap_or_else(|e| panic!("next_tokens {prefix:?}: {e}"));
        // The file sorts by id; the API by count (descending), ties by id.
        let mut by_id = got.next.clone();
        by_id.sort_by_key(|&(t, _)| t);
        assert_eq!(&by_id, next, "next tokens after {prefix:?}");
        assert_eq!(
            got.end_of_document, *end,
            "end_of_document after {prefix:?}"
        );
        let total: u64 = next.iter().map(|x| x.1).sum::<u64>() + end;
        assert_eq!(got.prefix_count, total, "prefix count of {prefix:?}");
        assert_eq!(
            got.prefix_count,
            ngram::count(&index, prefix).expect("count")
        );
        assert!(got
            .next
            .windows(2)
            .all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0)));
        let as_map: BTreeMap<u32, u64> = got.next.iter().copied().collect();
        for &(t, c) in next {
            let p = ngram::probability(&index, prefix, t).expect("probability");
            assert_eq!((p.prefix_count, p.count), (total, c));
            assert_eq!(as_map.get(&t), Some(&c));
        }
    }
}

#[test]
fn golden_verifies_clean() {
    let index = open();
    let report = verify::verify(
        &golden_dir(),
        VerifyOptions {
            full: true,
            samples: 0,
        },
    );
    assert!(
        report.problems.is_empty(),
        "problems: {:#?}",
        report.problems
    );
    assert_eq!(report.shards, index.shards().len());
    // Every adjacent pair of every shard.
    let pairs: u64 = index.shards().iter().map(|s| s.manifest.tokens - 1).sum();
    assert_eq!(report.pairs_checked, pairs);
}

#[test]
fn golden_tokenizer_matches() {
    let index = open();
    let t = index.tokenizer().expect("the index's tokenizer");
    assert_eq!(t.hash(), index.manifest().tokenizer.hash);
    assert_eq!(t.vocab_size(), index.vocab_size());
    // The fixture tokenizer beside the index is the same file.
    let same =
        familiar::tokenizer::Tokenizer::from_file(&Path::new(FIXTURES).join("tokenizer.json"))
            .expect("fixture tokenizer");
    index
        .set_tokenizer(same)
        .expect("the same tokenizer is accepted");
}

/// Global ids of the first document of each shard (whose text starts at position 0).
fn shard_first_docs(index: &Index) -> Vec<u64> {
    index
        .shards()
        .iter()
        .map(|s| s.manifest.first_doc)
        .collect()
}

fn check_document(index: &Index, src: &[serde_json::Value], d: u64, with_text: bool) {
    let s = &src[d as usize];
    let text = s["text"].as_str().expect("text");
    let rec = docs::record(index, d).unwrap_or_else(|e| panic!("record {d}: {e}"));
    assert_eq!(rec.doc_id, d);
    assert_eq!(rec.external_id, s["id"].as_str().expect("id"));
    assert_eq!(rec.source.as_deref(), s["source"].as_str());
    assert_eq!(rec.byte_length, text.len() as u64, "byte length of {d}");
    assert!(
        rec.input_file
            .ends_with(&format!("{GOLDEN_V1}-source.jsonl")),
        "input file {}",
        rec.input_file
    );
    let (shard, _) = index.locate_doc(d).expect("locate_doc");
    assert_eq!(rec.shard, shard.manifest.shard);
    let title = s["metadata"]["title"].as_str().expect("title");
    let year = s["metadata"]["year"].to_string();
    let seed = s["metadata"]["generator"]["seed"].to_string();
    for (k, v) in [("title", title), ("year", &year), ("generator.seed", &seed)] {
        assert!(
            rec.metadata.iter().any(|(a, b)| a == k && b == v),
            "metadata {k}={v} of {d}: {:?}",
            rec.metadata
        );
    }
    // Tokens: what the tokenizer makes of the source text.
    let tokenizer = index.tokenizer().expect("tokenizer");
    let want = tokenizer.encode(text).expect("encode");
    assert_eq!(rec.token_count, want.len() as u64, "token count of {d}");
    let ids = index
        .doc_tokens(d, 0, rec.token_count + 10)
        .expect("tokens");
    assert_eq!(ids, want, "tokens of document {d}");
    let mid = index.doc_tokens(d, 2, 5).expect("token window");
    assert_eq!(mid, want[2.min(want.len())..5.min(want.len())]);
    if with_text {
        let got = docs::text(index, d).unwrap_or_else(|e| panic!("text {d}: {e}"));
        assert_eq!(
            got,
            tokenizer.decode(&want).expect("decode"),
            "text of document {d}"
        );
        // The byte-level tokenizer adds a prefix space when encoding; decoding keeps it.
        assert!(
            got == text || got.strip_prefix(' ') == Some(text),
            "text of {d}: {got:?}"
        );
    }
}

#[test]
fn golden_documents_by_id() {
    let index = open();
    let src = source();
    let n = index.documents();
    let firsts = shard_first_docs(&index);
    // Records and tokens of documents spread over every shard, shard boundaries included.
    let mut ids: Vec<u64> = vec![0, 1, 2, n / 2, n - 2, n - 1];
    for &f in &firsts {
        ids.push(f);
        ids.extend(f.checked_sub(1));
    }
    ids.sort_unstable();
    ids.dedup();
    for d in ids {
        check_document(&index, &src, d, firsts.contains(&d));
    }
    assert!(docs::record(&index, n).is_err());
    assert!(index.doc_tokens(n, 0, 1).is_err());
    assert!(docs::text(&index, u64::MAX).is_err());
    // A window around the first occurrence of an expected n-gram.
    let (q, _) = expected()
        .counts
        .into_iter()
        .find(|(q, c)| q.len() == 3 && *c > 0)
        .expect("a trigram with occurrences");
    let hit = ngram::locate(&index, &q, 0, 1).expect("locate").hits[0];
    let (_, m, _) = docs::window(&index, hit.doc_id, hit.offset_in_doc, 3, 4, 4).expect("window");
    assert_eq!(
        m,
        index
            .tokenizer()
            .expect("tokenizer")
            .decode(&q)
            .expect("decode")
    );
}

/// `docs::text` (what `familiar docs ID` prints) must work for every document. Fails today for any
/// document that is not the first of its shard: `Index::doc_tokens(d, 0, u64::MAX)` computes
/// `s + usize::MAX` (query/src/docs.rs, in `tokens`), which overflows when the document starts at
/// a position `s > 0` of its shard.
#[test]
fn golden_text_of_every_document() {
    let index = open();
    let src = source();
    let tokenizer = index.tokenizer().expect("tokenizer");
    for d in 0..index.documents() {
        let text = src[d as usize]["text"].as_str().expect("text");
        let want = tokenizer
            .decode(&tokenizer.encode(text).expect("encode"))
            .expect("decode");
        let got = std::panic::catch_unwind(|| docs::text(&index, d))
            .unwrap_or_else(|_| panic!("docs::text({d}) panicked"))
            .unwrap_or_else(|e| panic!("text {d}: {e}"));
        assert_eq!(got, want, "text of document {d}");
    }
}

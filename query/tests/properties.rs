//! Property tests: every n-gram query against a brute-force scan of the documents.
//!
//! Corpora are random documents over tiny alphabets (so n-grams repeat a lot), with empty documents
//! and documents longer than the shard size, built with small shard sizes so that queries cross
//! many shards. Three vocabularies: a tiny one (u16 tokens), the largest that still stores u16
//! tokens (65 535 ids, separator 65 535), and 70 000 ids (u32 tokens, with ids on both sides of
//! 65 536 so that a narrowing bug would show).
//!
//! Case counts are modest (debug builds on slow machines); raise them with `PROPTEST_CASES`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use familiar::index::Index;
use familiar::Error;
use familiar_query::contamination::{contamination, ContaminationOptions};
use familiar_query::duplicates::{duplicates, DuplicateOptions, Segment};
use familiar_query::infgram;
use familiar_query::ngram::{self, Cnf, CnfOptions, CnfResult, Hit};
use familiar_query::top::{top_ngrams, TopOptions};
use familiar_query::trace::{maximal_spans, trace_tokens, TraceOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::tokens::{Model, ShardModel};

/// A pattern, resolved against the corpus once it exists.
#[derive(Debug, Clone)]
enum PatSeed {
    /// Symbols of the alphabet (indices).
    Random(Vec<usize>),
    /// A slice of a non-empty document: (document, start, length), the first two modulo what exists.
    FromCorpus(usize, usize, usize),
}

#[derive(Debug, Clone)]
struct CnfSeed {
    /// Clauses of alternatives, each an index (modulo their number) into the resolved patterns.
    clauses: Vec<Vec<usize>>,
    max_occurrences: u64,
    list_documents: usize,
}

#[derive(Debug, Clone)]
struct Case {
    docs: Vec<Vec<u32>>,
    shard_tokens: u64,
    patterns: Vec<PatSeed>,
    /// One page size per pattern (cycled).
    page_sizes: Vec<u64>,
    /// Next tokens for probability queries (alphabet indices, cycled).
    nexts: Vec<usize>,
    cnfs: Vec<CnfSeed>,
}

/// An alphabet index, biased to the first two symbols so repeats are frequent.
fn symbol(n: usize) -> BoxedStrategy<usize> {
    prop_oneof![3 => 0..2usize.min(n), 2 => 0..n].boxed()
}

fn case_strategy(alphabet: Vec<u32>) -> impl Strategy<Value = Case> {
    let n = alphabet.len();
    let doc = prop_oneof![
        1 => Just(Vec::new()),
        6 => prop::collection::vec(symbol(n), 1..10),
        1 => prop::collection::vec(symbol(n), 10..40),
    ];
    let docs = prop::collection::vec(doc, 1..14);
    let shard_tokens = prop_oneof![3 => 2..10u64, 2 => 10..40u64, 1 => Just(1_000_000u64)];
    let pattern = prop_oneof![
        prop::collection::vec(symbol(n), 1..5).prop_map(PatSeed::Random),
        (any::<usize>(), any::<usize>(), 1..5usize)
            .prop_map(|(d, s, l)| PatSeed::FromCorpus(d, s, l)),
    ];
    let patterns = prop::collection::vec(pattern, 3..8);
    let page_sizes = prop::collection::vec(1..6u64, 1..4);
    let nexts = prop::collection::vec(0..n, 1..4);
    let cnf = (
        prop::collection::vec(prop::collection::vec(any::<usize>(), 1..3), 1..4),
        0..6u64,
        0..6usize,
    )
        .prop_map(|(clauses, max_occurrences, list_documents)| CnfSeed {
            clauses,
            max_occurrences,
            list_documents,
        });
    let cnfs = prop::collection::vec(cnf, 1..4);
    (docs, shard_tokens, patterns, page_sizes, nexts, cnfs).prop_map(
        move |(docs, shard_tokens, patterns, page_sizes, nexts, cnfs)| Case {
            docs: docs
                .into_iter()
                .map(|d| d.into_iter().map(|i| alphabet[i]).collect())
                .collect(),
            shard_tokens,
            patterns,
            page_sizes,
            nexts,
            cnfs,
        },
    )
}

fn resolve(seed: &PatSeed, docs: &[Vec<u32>], alphabet: &[u32]) -> Vec<u32> {
    let nonempty: Vec<&Vec<u32>> = docs.iter().filter(|d| !d.is_empty()).collect();
    match seed {
        PatSeed::FromCorpus(d, s, l) if !nonempty.is_empty() => {
            let doc = nonempty[d % nonempty.len()];
            let start = s % doc.len();
            let end = (start + l).min(doc.len());
            doc[start..end].to_vec()
        }
        PatSeed::FromCorpus(_, _, l) => vec![alphabet[0]; *l],
        PatSeed::Random(ids) => ids.iter().map(|&i| alphabet[i]).collect(),
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the property over random cases for one vocabulary and alphabet.
fn run(vocab: u32, alphabet: Vec<u32>, default_cases: u32) {
    assert!(alphabet.iter().all(|&t| t < vocab));
    let tmp = tempfile::tempdir().expect("tempdir");
    let tokenizer = support::tokens::write_tokenizer(tmp.path(), vocab);
    let mut runner = TestRunner::new(Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case_strategy(alphabet.clone()), |case| {
        let dir = tempfile::tempdir_in(tmp.path()).expect("tempdir");
        check_case(
            &tokenizer,
            &dir.path().join("index"),
            vocab,
            &alphabet,
            &case,
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("vocabulary {vocab}: {e}");
    }
}

#[test]
fn queries_match_brute_force_u16_tiny_vocabulary() {
    run(5, vec![0, 1, 2, 3, 4], 40);
}

#[test]
fn queries_match_brute_force_u16_largest_vocabulary() {
    // 65 535 ids: the separator is 65 535, the largest u16.
    run(65_535, vec![0, 1, 2, 65_533, 65_534], 16);
}

#[test]
fn queries_match_brute_force_u32_vocabulary() {
    // 65 536 would read as 0 if ids were narrowed to u16, 65 535 as the u16 separator.
    run(70_000, vec![1, 0, 65_535, 65_536, 69_999], 40);
}

fn check_case(tokenizer: &Path, out: &Path, vocab: u32, alphabet: &[u32], case: &Case) {
    let model = Model::new(&case.docs, vocab, case.shard_tokens);
    let index = support::tokens::build_and_open(tokenizer, out, &case.docs, case.shard_tokens);
    check_layout(&index, &model);

    let patterns: Vec<Vec<u32>> = case
        .patterns
        .iter()
        .map(|p| resolve(p, &case.docs, alphabet))
        .collect();
    for (i, p) in patterns.iter().enumerate() {
        check_count(&index, &model, p);
        check_locate(
            &index,
            &model,
            p,
            case.page_sizes[i % case.page_sizes.len()],
        );
        check_next_tokens(&index, &model, p);
        let next = alphabet[case.nexts[i % case.nexts.len()]];
        check_probability(&index, &model, p, next);
        // ∞-gram prompts: a pattern alone, and two patterns run together (whose longest
        // occurring suffix may be anywhere between nothing and the whole).
        check_infgram(&index, &model, p, next);
        let joined = [p.as_slice(), &patterns[(i + 1) % patterns.len()]].concat();
        check_infgram(&index, &model, &joined, next);
        let text = [
            joined.as_slice(),
            &[next],
            &patterns[(i + 2) % patterns.len()],
        ]
        .concat();
        check_trace(&index, &model, &text);
    }
    check_infgram(&index, &model, &[], alphabet[0]);
    // Scans cut each shard into pieces; answers must not depend on how many (tests run in
    // parallel, so another case may change it meanwhile, which is as good).
    familiar_query::set_pieces_per_shard(1 + case.nexts[0] % 4);
    check_top(&index, &model, case.page_sizes[0] as usize % 7 + 1);
    for l in [1, 2, 3, 6] {
        check_duplicates(&index, &model, l);
    }
    check_contamination(&index, &model, &patterns, alphabet);
    check_next_tokens(&index, &model, &[]);
    for &t in alphabet {
        check_probability(&index, &model, &[], t);
        check_count(&index, &model, &[t]);
    }
    for seed in &case.cnfs {
        let clauses: Vec<Vec<Vec<u32>>> = seed
            .clauses
            .iter()
            .map(|c| {
                c.iter()
                    .map(|&k| patterns[k % patterns.len()].clone())
                    .collect()
            })
            .collect();
        check_cnf(&index, &model, &clauses, seed);
    }
    check_bad_queries(&index, vocab);
}

fn check_layout(index: &Index, model: &Model) {
    let m = index.manifest();
    assert_eq!(m.documents, model.docs.len() as u64, "documents");
    assert_eq!(index.documents(), model.docs.len() as u64);
    assert_eq!(m.tokens, model.positions(), "token positions");
    assert_eq!(index.vocab_size(), model.vocab);
    assert_eq!(m.separator, model.vocab);
    let got: Vec<(u64, u64, u64)> = index
        .shards()
        .iter()
        .map(|s| {
            (
                s.manifest.first_doc,
                s.manifest.documents,
                s.manifest.tokens,
            )
        })
        .collect();
    let want: Vec<(u64, u64, u64)> = model
        .shards
        .iter()
        .map(|s| (s.first_doc, s.documents, s.text.len() as u64))
        .collect();
    assert_eq!(got, want, "shard layout (first_doc, documents, tokens)");
    for (i, s) in index.shards().iter().enumerate() {
        assert_eq!(s.manifest.shard as usize, i);
    }
}

fn check_count(index: &Index, model: &Model, p: &[u32]) {
    let got = ngram::count(index, p).unwrap_or_else(|e| panic!("count {p:?}: {e}"));
    assert_eq!(got, model.count(p), "count of {p:?}");
}

/// Suffix of the model's shard text at `pos`.
fn suffix(shard: &ShardModel, pos: u64) -> &[u32] {
    &shard.text[pos as usize..]
}

fn check_locate(index: &Index, model: &Model, p: &[u32], page: u64) {
    let want = model.occurrences(p);
    let total = want.len() as u64;
    // Every page of `page` hits, past the end too.
    let mut all: Vec<Hit> = Vec::new();
    let mut offset = 0;
    while offset <= total + page {
        let got = ngram::locate(index, p, offset, page)
            .unwrap_or_else(|e| panic!("locate {p:?} offset {offset} limit {page}: {e}"));
        assert_eq!(got.total, total, "locate total of {p:?}");
        let expect_len = total.saturating_sub(offset).min(page);
        assert_eq!(
            got.hits.len() as u64,
            expect_len,
            "page of {p:?} at offset {offset}, limit {page} (total {total})"
        );
        all.extend(got.hits);
        offset += page;
    }
    let set: BTreeSet<(u64, u64)> = all.iter().map(|h| (h.doc_id, h.offset_in_doc)).collect();
    assert_eq!(
        set.len(),
        all.len(),
        "duplicate hits across pages of {p:?}: {all:?}"
    );
    let want_set: BTreeSet<(u64, u64)> = want.iter().copied().collect();
    assert_eq!(set, want_set, "occurrences of {p:?}");
    // Each hit's shard and shard position, and the order: shards in order, suffix order within.
    for h in &all {
        let s = model.shard_of(h.doc_id);
        let shard = &model.shards[s];
        assert_eq!(h.shard as usize, s, "shard of {h:?}");
        let start = shard.starts[(h.doc_id - shard.first_doc) as usize];
        assert_eq!(h.position, start + h.offset_in_doc, "position of {h:?}");
    }
    for w in all.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(a.shard <= b.shard, "hits out of shard order: {a:?} {b:?}");
        if a.shard == b.shard {
            let shard = &model.shards[a.shard as usize];
            assert!(
                suffix(shard, a.position) < suffix(shard, b.position),
                "hits out of suffix order: {a:?} {b:?}"
            );
        }
    }
    // One page with everything is the concatenation of the small pages.
    let one = ngram::locate(index, p, 0, total + 3).expect("locate all");
    assert_eq!(
        one.hits, all,
        "one big page differs from the small pages of {p:?}"
    );
    let none = ngram::locate(index, p, 0, 0).expect("locate limit 0");
    assert_eq!((none.total, none.hits.len()), (total, 0));
    let past = ngram::locate(index, p, total + 100, 5).expect("locate past the end");
    assert_eq!((past.total, past.hits.len()), (total, 0));
    // Offsets inside the range: the page is a window of the full list.
    for off in [1, total / 2, total.saturating_sub(1)] {
        let got = ngram::locate(index, p, off, 2).expect("locate window");
        let lo = (off as usize).min(all.len());
        let hi = (lo + 2).min(all.len());
        assert_eq!(got.hits, all[lo..hi], "locate {p:?} offset {off} limit 2");
    }
}

fn check_next_tokens(index: &Index, model: &Model, prefix: &[u32]) {
    let got =
        ngram::next_tokens(index, prefix).unwrap_or_else(|e| panic!("next_tokens {prefix:?}: {e}"));
    let (total, end, next) = model.next_tokens(prefix);
    assert_eq!(got.prefix_count, total, "prefix count of {prefix:?}");
    assert_eq!(got.end_of_document, end, "end_of_document after {prefix:?}");
    let got_map: BTreeMap<u32, u64> = got.next.iter().copied().collect();
    assert_eq!(
        got_map.len(),
        got.next.len(),
        "repeated next tokens: {:?}",
        got.next
    );
    assert_eq!(got_map, next, "next tokens after {prefix:?}");
    assert!(got.next.iter().all(|&(_, c)| c > 0));
    for w in got.next.windows(2) {
        assert!(
            w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0),
            "next tokens after {prefix:?} not sorted by count desc then id: {:?}",
            got.next
        );
    }
    let sum: u64 = got.next.iter().map(|x| x.1).sum::<u64>() + got.end_of_document;
    assert_eq!(
        sum, got.prefix_count,
        "next counts do not add up after {prefix:?}"
    );
    if prefix.is_empty() {
        assert_eq!(got.prefix_count, index.manifest().tokens);
        assert_eq!(got.end_of_document, index.documents());
    } else {
        assert_eq!(
            got.prefix_count,
            ngram::count(index, prefix).expect("count")
        );
    }
}

fn check_probability(index: &Index, model: &Model, prefix: &[u32], next: u32) {
    let got = ngram::probability(index, prefix, next)
        .unwrap_or_else(|e| panic!("probability {prefix:?} -> {next}: {e}"));
    let prefix_count = if prefix.is_empty() {
        // Every position, separators included (as in next_tokens).
        model.docs.iter().map(|d| d.len() as u64 + 1).sum()
    } else {
        model.count(prefix)
    };
    let mut joint = prefix.to_vec();
    joint.push(next);
    let count = model.count(&joint);
    assert_eq!(
        got.prefix_count, prefix_count,
        "P({next} | {prefix:?}) prefix count"
    );
    assert_eq!(got.count, count, "P({next} | {prefix:?}) count");
    let want = (prefix_count > 0).then(|| count as f64 / prefix_count as f64);
    assert_eq!(got.probability, want, "P({next} | {prefix:?})");
}

/// The ∞-gram against brute force: the longest suffix of `prompt` that occurs (scanning every
/// length), then the probability and next-token distribution after it.
fn check_infgram(index: &Index, model: &Model, prompt: &[u32], next: u32) {
    let want_len = (1..=prompt.len())
        .rev()
        .find(|&l| model.count(&prompt[prompt.len() - l..]) > 0)
        .unwrap_or(0);
    let suffix = &prompt[prompt.len() - want_len..];
    let got = infgram::infgram_prob(index, prompt, next)
        .unwrap_or_else(|e| panic!("infgram_prob {prompt:?} -> {next}: {e}"));
    assert_eq!(got.suffix_len, want_len, "∞-gram suffix of {prompt:?}");
    let (prompt_cnt, _, nexts) = model.next_tokens(suffix);
    let cont_cnt = nexts.get(&next).copied().unwrap_or(0);
    assert_eq!(
        (got.probability.prefix_count, got.probability.count),
        (prompt_cnt, cont_cnt),
        "∞-gram counts of {prompt:?} -> {next}"
    );
    assert_eq!(
        got.probability.probability,
        Some(cont_cnt as f64 / prompt_cnt as f64),
        "P∞({next} | {prompt:?})"
    );
    let ntd = infgram::infgram_ntd(index, prompt)
        .unwrap_or_else(|e| panic!("infgram_ntd {prompt:?}: {e}"));
    assert_eq!(ntd.suffix_len, want_len);
    assert_eq!(ntd.next.prefix_count, prompt_cnt);
    let got_next: BTreeMap<u32, u64> = ntd.next.next.iter().copied().collect();
    assert_eq!(got_next, nexts, "∞-gram next tokens after {prompt:?}");
}

/// Maximal spans against brute force: every `[i, j)` that occurs and extends neither way.
fn check_trace(index: &Index, model: &Model, text: &[u32]) {
    let m = text.len();
    let occurs = |i: usize, j: usize| model.count(&text[i..j]) > 0;
    let mut want = Vec::new();
    for i in 0..m {
        for j in i + 1..=m {
            if occurs(i, j) && (i == 0 || !occurs(i - 1, j)) && (j == m || !occurs(i, j + 1)) {
                want.push((i, j));
            }
        }
    }
    let got = maximal_spans(index, text).unwrap_or_else(|e| panic!("spans of {text:?}: {e}"));
    assert_eq!(got, want, "maximal spans of {text:?}");
    // In pieces of 3 tokens: each piece's maximal spans, at the piece's offset.
    let pieces = TraceOptions {
        docs_per_span: 0,
        bm25: false,
        max_tokens: 3,
        chunk: true,
        ..TraceOptions::all_spans(1)
    };
    let got: Vec<(usize, usize)> = trace_tokens(index, text, &pieces)
        .unwrap_or_else(|e| panic!("pieces of {text:?}: {e}"))
        .spans
        .iter()
        .map(|s| (s.start, s.end))
        .collect();
    let mut want_pieces = Vec::new();
    for (k, piece) in text.chunks(3).enumerate() {
        let n = piece.len();
        for i in 0..n {
            for j in i + 1..=n {
                let occ = |a: usize, b: usize| model.count(&piece[a..b]) > 0;
                if occ(i, j) && (i == 0 || !occ(i - 1, j)) && (j == n || !occ(i, j + 1)) {
                    want_pieces.push((3 * k + i, 3 * k + j));
                }
            }
        }
    }
    assert_eq!(got, want_pieces, "spans of {text:?} in pieces of 3");
    if text.len() > 3 {
        let refused = trace_tokens(
            index,
            text,
            &TraceOptions {
                chunk: false,
                ..pieces
            },
        );
        assert!(
            refused.is_err(),
            "a text longer than max_tokens must be refused"
        );
    }
    // All spans of at least 2 tokens, with their counts and documents.
    let options = TraceOptions {
        docs_per_span: 3,
        // These indexes have no text index.
        bm25: false,
        ..TraceOptions::all_spans(2)
    };
    let t =
        trace_tokens(index, text, &options).unwrap_or_else(|e| panic!("trace of {text:?}: {e}"));
    let spans: Vec<(usize, usize, u64)> =
        t.spans.iter().map(|s| (s.start, s.end, s.count)).collect();
    let want2: Vec<(usize, usize, u64)> = want
        .iter()
        .filter(|(i, j)| j - i >= 2)
        .map(|&(i, j)| (i, j, model.count(&text[i..j])))
        .collect();
    assert_eq!(spans, want2, "spans of {text:?}");
    for (k, s) in t.spans.iter().enumerate() {
        let docs: Vec<u64> = t
            .documents
            .iter()
            .filter(|d| d.span == k)
            .map(|d| d.doc_id)
            .collect();
        let mut all: Vec<u64> = model
            .occurrences(&text[s.start..s.end])
            .iter()
            .map(|o| o.0)
            .collect();
        all.dedup();
        assert_eq!(docs.len(), all.len().min(3), "documents of {s:?}");
        for d in &t.documents {
            if d.span == k {
                let doc = &model.docs[d.doc_id as usize];
                let at = d.position as usize;
                assert_eq!(&doc[at..at + (s.end - s.start)], &text[s.start..s.end]);
            }
        }
    }
}

/// Contamination of items whose fields are the patterns (as word-level text, `t3 t1 …`) against
/// brute force: longest match, n-gram fractions, whole-field occurrences and documents.
fn check_contamination(index: &Index, model: &Model, patterns: &[Vec<u32>], alphabet: &[u32]) {
    let words = |ids: &[u32]| {
        ids.iter()
            .map(|t| format!("t{t}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let items: Vec<familiar::items::Item> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| familiar::items::Item {
            id: format!("q{i}"),
            task: "t".into(),
            prompt: words(p),
            ask: familiar::items::Ask::Choice {
                // After the prompt, as completions are: with a leading space.
                choices: vec![
                    format!(" {}", words(&patterns[(i + 1) % patterns.len()])),
                    format!(
                        " {}",
                        words(&[p.as_slice(), &[alphabet[i % alphabet.len()]]].concat())
                    ),
                ],
                answer: 1,
            },
            concepts: Vec::new(),
        })
        .collect();
    let options = ContaminationOptions {
        ngram_sizes: vec![1, 2, 3],
        documents: 2,
    };
    let rows = contamination(index, &items, &options, &|_| {})
        .unwrap_or_else(|e| panic!("contamination: {e}"));
    assert_eq!(rows.len(), items.len() * 3);
    for (r, (item, field)) in rows.iter().zip(
        items
            .iter()
            .flat_map(|it| ["prompt", "choice_0", "choice_1"].map(move |f| (it, f))),
    ) {
        assert_eq!(
            (r.item_id.as_str(), r.field.as_str()),
            (item.id.as_str(), field)
        );
        assert_eq!(r.answer, field == "choice_1");
        let text = match field {
            "prompt" => item.prompt.clone(),
            f => match &item.ask {
                familiar::items::Ask::Choice { choices, .. } => choices[f["choice_".len()..]
                    .parse::<usize>()
                    .expect("choice number")]
                .clone(),
                familiar::items::Ask::Completion(c) => c.clone(),
            },
        };
        let t: Vec<u32> = text
            .split_whitespace()
            .map(|w| w[1..].parse().expect("a word-level token"))
            .collect();
        let m = t.len();
        assert_eq!(r.field_tokens, m as u64);
        let occurs = |i: usize, j: usize| model.count(&t[i..j]) > 0;
        let longest = (0..m)
            .flat_map(|i| (i + 1..=m).map(move |j| (i, j)))
            .filter(|&(i, j)| occurs(i, j))
            .map(|(i, j)| j - i)
            .max()
            .unwrap_or(0);
        assert_eq!(r.longest_match, longest as u64, "{r:?}");
        for (&n, &f) in r.ngram_sizes.iter().zip(&r.ngram_fractions) {
            let n = n as usize;
            let want = if m == 0 {
                0.0
            } else if m < n {
                if occurs(0, m) {
                    1.0
                } else {
                    0.0
                }
            } else {
                (0..=m - n).filter(|&i| occurs(i, i + n)).count() as f64 / (m - n + 1) as f64
            };
            assert_eq!(f, want, "{n}-grams of {r:?}");
        }
        assert_eq!(
            r.occurrences,
            if m == 0 { 0 } else { model.count(&t) },
            "{r:?}"
        );
        let mut docs: Vec<u64> = if m == 0 {
            Vec::new()
        } else {
            model.occurrences(&t).iter().map(|o| o.0).collect()
        };
        docs.dedup();
        assert_eq!(r.documents, docs.len() as u64, "{r:?}");
        docs.truncate(2);
        assert_eq!(r.first_documents, docs, "{r:?}");
    }
}

/// The top `k` n-grams of lengths 1 to 4 against counting every window of every document.
fn check_top(index: &Index, model: &Model, k: usize) {
    let got = top_ngrams(
        index,
        &TopOptions {
            lengths: 1..=4,
            k,
            source: None,
        },
    )
    .unwrap_or_else(|e| panic!("top n-grams: {e}"));
    for n in 1..=4usize {
        let mut counts: BTreeMap<Vec<u32>, u64> = BTreeMap::new();
        for d in &model.docs {
            for w in d.windows(n) {
                *counts.entry(w.to_vec()).or_default() += 1;
            }
        }
        let mut want: Vec<(Vec<u32>, u64)> = counts.into_iter().collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        want.truncate(k);
        let rows: Vec<(Vec<u32>, u64)> = got
            .iter()
            .filter(|r| r.n == n as u64)
            .map(|r| (r.tokens.clone(), r.count))
            .collect();
        assert_eq!(rows, want, "top {k} {n}-grams");
        let ranks: Vec<u64> = got
            .iter()
            .filter(|r| r.n == n as u64)
            .map(|r| r.rank)
            .collect();
        assert_eq!(ranks, (1..=want.len() as u64).collect::<Vec<_>>());
    }
}

/// Exact duplicates (every token inside an `l`-gram that occurs twice or more) against counting
/// every window of every document.
fn check_duplicates(index: &Index, model: &Model, l: usize) {
    let got = duplicates(
        index,
        &DuplicateOptions {
            min_len: l,
            docs_per_cluster: 2,
        },
        &|_| {},
    )
    .unwrap_or_else(|e| panic!("duplicates of length {l}: {e}"));
    let mut counts: BTreeMap<&[u32], u64> = BTreeMap::new();
    for d in &model.docs {
        for w in d.windows(l) {
            *counts.entry(w).or_default() += 1;
        }
    }
    // Segments: the maximal runs of covered tokens.
    let mut want_segments: Vec<(u64, u64, u64)> = Vec::new();
    for (i, d) in model.docs.iter().enumerate() {
        let mut covered = vec![false; d.len()];
        for (p, w) in d.windows(l).enumerate() {
            if counts[w] >= 2 {
                covered[p..p + l].iter_mut().for_each(|c| *c = true);
            }
        }
        let mut p = 0;
        while p < d.len() {
            if covered[p] {
                let start = p;
                while p < d.len() && covered[p] {
                    p += 1;
                }
                want_segments.push((i as u64, start as u64, p as u64));
            } else {
                p += 1;
            }
        }
    }
    let segs: Vec<(u64, u64, u64)> = got
        .segments
        .iter()
        .map(|s| (s.doc_id, s.start, s.end))
        .collect();
    assert_eq!(segs, want_segments, "segments, L = {l}");
    // Clusters: numbered by the first segment that starts with their l-gram.
    let mut keys: Vec<&[u32]> = Vec::new();
    for (s, &(doc, start, _)) in got.segments.iter().zip(&want_segments) {
        let key = &model.docs[doc as usize][start as usize..start as usize + l];
        let c = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            keys.push(key);
            keys.len() - 1
        });
        assert_eq!(s.cluster, c as u64, "cluster of {s:?}, L = {l}");
    }
    assert_eq!(got.clusters.len(), keys.len(), "clusters, L = {l}");
    let tokenizer = index.tokenizer().expect("tokenizer");
    for (c, key) in keys.iter().enumerate() {
        let row = &got.clusters[c];
        let occurrences: Vec<(usize, usize)> = model
            .docs
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                d.windows(l)
                    .enumerate()
                    .filter(|(_, w)| w == key)
                    .map(move |(p, _)| (i, p))
            })
            .collect();
        let mut shared = l;
        let (d0, p0) = occurrences[0];
        loop {
            let next = model.docs[d0].get(p0 + shared);
            if next.is_none()
                || occurrences
                    .iter()
                    .any(|&(d, p)| model.docs[d].get(p + shared) != next)
            {
                break;
            }
            shared += 1;
        }
        let mut docs: Vec<u64> = occurrences.iter().map(|o| o.0 as u64).collect();
        docs.dedup();
        let segments = got
            .segments
            .iter()
            .filter(|s| s.cluster == c as u64)
            .count();
        assert_eq!(row.cluster, c as u64);
        assert_eq!(row.occurrences, occurrences.len() as u64, "{row:?}");
        assert_eq!(row.length, shared as u64, "{row:?}");
        let text = tokenizer
            .decode(&model.docs[d0][p0..p0 + shared])
            .expect("decode");
        assert_eq!(row.text, text, "{row:?}");
        assert_eq!(row.documents, docs.len() as u64, "{row:?}");
        assert_eq!(row.segments, segments as u64, "{row:?}");
        docs.truncate(2);
        assert_eq!(row.doc_ids, docs, "{row:?}");
    }
    // Documents.
    let mut rows = Vec::new();
    for (doc, group) in want_segments
        .chunk_by(|a, b| a.0 == b.0)
        .map(|g| (g[0].0, g))
    {
        let dup: u64 = group.iter().map(|s| s.2 - s.1).sum();
        let mut clusters: Vec<u64> = Vec::new();
        for s in got.segments.iter().filter(|s: &&Segment| s.doc_id == doc) {
            if !clusters.contains(&s.cluster) {
                clusters.push(s.cluster);
            }
        }
        let tokens = model.docs[doc as usize].len() as u64;
        rows.push((doc, tokens, dup, group.len() as u64, clusters));
    }
    let got_rows: Vec<_> = got
        .documents
        .iter()
        .map(|r| {
            assert_eq!(
                r.duplicated_fraction,
                r.duplicated_tokens as f64 / r.tokens as f64
            );
            (
                r.doc_id,
                r.tokens,
                r.duplicated_tokens,
                r.segments,
                r.clusters.clone(),
            )
        })
        .collect();
    assert_eq!(got_rows, rows, "documents, L = {l}");
    let s = got.summary;
    assert_eq!(s.documents, model.docs.len() as u64);
    assert_eq!(
        s.tokens,
        model.docs.iter().map(|d| d.len() as u64).sum::<u64>()
    );
    assert_eq!(s.duplicated_documents, rows.len() as u64);
    assert_eq!(
        s.duplicated_tokens,
        rows.iter().map(|r| r.2).sum::<u64>(),
        "L = {l}"
    );
    assert_eq!(s.segments, want_segments.len() as u64);
    assert_eq!(s.clusters, keys.len() as u64);
}

fn check_cnf(index: &Index, model: &Model, clauses: &[Vec<Vec<u32>>], seed: &CnfSeed) {
    let want = model.cnf(clauses);
    let query = Cnf {
        clauses: clauses.to_vec(),
    };
    let list = seed.list_documents;
    let exact = CnfResult {
        documents: want.documents,
        clause_occurrences: want.clause_occurrences.clone(),
        occurrences: want.clause_occurrences.iter().sum(),
        clause_totals: want.clause_totals.clone(),
        approximate: false,
        estimate: None,
        doc_ids: want.matching.iter().copied().take(list).collect(),
    };
    let opts = CnfOptions {
        max_occurrences: None,
        list_documents: list,
        seed: 0,
    };
    let got = ngram::cnf(index, &query, &opts).unwrap_or_else(|e| panic!("cnf {clauses:?}: {e}"));
    assert_eq!(got, exact, "cnf {clauses:?} (no sampling), list {list}");

    // With a budget: sampled exactly when, in some shard, the rarest clause has more occurrences
    // than the budget (a budget of 0 counts as 1).
    let budget = seed.max_occurrences;
    let opts = CnfOptions {
        max_occurrences: Some(budget),
        list_documents: list,
        seed: seed.max_occurrences ^ 0x5eed,
    };
    let got = ngram::cnf(index, &query, &opts)
        .unwrap_or_else(|e| panic!("cnf {clauses:?} budget {budget}: {e}"));
    let sampled = want.shard_totals.iter().any(|t| {
        let rarest = t.iter().copied().min().unwrap_or(0);
        rarest > budget.max(1)
    });
    assert_eq!(
        got.approximate, sampled,
        "approximate flag of cnf {clauses:?} with budget {budget} (per-shard totals {:?})",
        want.shard_totals
    );
    if !sampled {
        assert_eq!(
            got, exact,
            "cnf {clauses:?} budget {budget} (not sampled), list {list}"
        );
        return;
    }
    // Sampled: a subset of the matching documents, each with exact counts; totals exact.
    let ctx = format!("cnf {clauses:?} budget {budget} list {list}: {got:?}");
    assert_eq!(got.clause_totals, want.clause_totals, "{ctx}");
    assert!(got.documents <= want.documents, "{ctx}");
    assert!(got.doc_ids.len() <= list, "{ctx}");
    assert_eq!(
        got.doc_ids.len() as u64,
        got.documents.min(list as u64),
        "{ctx}"
    );
    assert!(got.doc_ids.windows(2).all(|w| w[0] < w[1]), "{ctx}");
    for d in &got.doc_ids {
        assert!(want.matching.contains(d), "{ctx}: {d} does not match");
    }
    for c in 0..clauses.len() {
        assert!(
            got.clause_occurrences[c] <= want.clause_occurrences[c],
            "{ctx}"
        );
    }
    assert_eq!(
        got.occurrences,
        got.clause_occurrences.iter().sum::<u64>(),
        "{ctx}"
    );
    // The estimate: present, at least what was found (each found document counts 1/π ≥ 1),
    // its interval around it and starting no lower than the exact lower bound.
    let e = got
        .estimate
        .as_ref()
        .expect("a sampled answer carries an estimate");
    let found = got.documents as f64;
    assert!(e.documents >= found - 1e-9, "{ctx}");
    assert!(e.documents_ci95[0] >= found - 1e-9, "{ctx}");
    assert!(e.documents_ci95[0] <= e.documents + 1e-9, "{ctx}");
    assert!(e.documents_ci95[1] >= e.documents - 1e-9, "{ctx}");
    for c in 0..clauses.len() {
        assert!(
            e.clause_occurrences[c] >= got.clause_occurrences[c] as f64 - 1e-9,
            "{ctx}"
        );
    }
    if got.doc_ids.len() as u64 == got.documents {
        // Every found document is listed: its counts must be exact.
        let mut occ = vec![0u64; clauses.len()];
        for &d in &got.doc_ids {
            for (o, n) in occ.iter_mut().zip(&want.per_doc[d as usize]) {
                *o += n;
            }
        }
        assert_eq!(got.clause_occurrences, occ, "{ctx}");
    }
}

fn is_query_error<T: std::fmt::Debug>(r: familiar::Result<T>) -> bool {
    matches!(r, Err(Error::Query(_)))
}

fn check_bad_queries(index: &Index, vocab: u32) {
    let bad_ids = [vocab, vocab + 1, 65_535, 65_536, u32::MAX];
    for bad in bad_ids.into_iter().filter(|&b| b >= vocab) {
        assert!(is_query_error(ngram::count(index, &[bad])), "count [{bad}]");
        assert!(
            is_query_error(ngram::count(index, &[0, bad])),
            "count [0, {bad}]"
        );
        assert!(
            is_query_error(ngram::locate(index, &[bad], 0, 10)),
            "locate [{bad}]"
        );
        assert!(
            is_query_error(ngram::next_tokens(index, &[bad])),
            "next [{bad}]"
        );
        assert!(
            is_query_error(ngram::next_tokens(index, &[0, bad])),
            "next [0, {bad}]"
        );
        assert!(
            is_query_error(ngram::probability(index, &[], bad)),
            "P({bad})"
        );
        assert!(
            is_query_error(ngram::probability(index, &[bad], 0)),
            "P(0 | {bad})"
        );
        assert!(
            is_query_error(ngram::probability(index, &[0], bad)),
            "P({bad} | 0)"
        );
        let q = Cnf {
            clauses: vec![vec![vec![0]], vec![vec![1], vec![bad]]],
        };
        assert!(
            is_query_error(ngram::cnf(index, &q, &CnfOptions::default())),
            "cnf {bad}"
        );
    }
    assert!(is_query_error(ngram::count(index, &[])), "empty count");
    assert!(
        is_query_error(ngram::locate(index, &[], 0, 10)),
        "empty locate"
    );
    let opts = CnfOptions::default();
    for clauses in [
        vec![],
        vec![vec![]],
        vec![vec![vec![0]], vec![]],
        vec![vec![vec![0], vec![]]],
    ] {
        let q = Cnf {
            clauses: clauses.clone(),
        };
        assert!(
            is_query_error(ngram::cnf(index, &q, &opts)),
            "cnf {clauses:?}"
        );
    }
}

/// Hand-picked corner cases, so that they run every time whatever the random cases are.
#[test]
fn fixed_corner_cases() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for vocab in [3u32, 70_000] {
        let tokenizer = support::tokens::write_tokenizer(tmp.path(), vocab);
        let top = vocab - 1;
        let corpora: Vec<(Vec<Vec<u32>>, u64)> = vec![
            // One empty document.
            (vec![vec![]], 2),
            // Only empty documents, one per shard.
            (vec![vec![], vec![], vec![]], 2),
            // A run of one token (overlapping occurrences), split across shards.
            (vec![vec![0; 9], vec![], vec![0, 0], vec![0; 3]], 4),
            // Documents longer than the shard size, each in its own shard.
            (
                vec![vec![1, 0, 1, 0, 1], vec![top, top], vec![0, 1, top, 0, 1]],
                3,
            ),
            (vec![vec![top], vec![top, 0, top], vec![]], 1_000_000),
        ];
        for (k, (docs, shard_tokens)) in corpora.into_iter().enumerate() {
            let out = tmp.path().join(format!("fixed-{vocab}-{k}"));
            let case = Case {
                docs: docs.clone(),
                shard_tokens,
                patterns: vec![
                    PatSeed::Random(vec![0]),
                    PatSeed::Random(vec![0, 0]),
                    PatSeed::Random(vec![0, 0, 0]),
                    PatSeed::Random(vec![1, 0]),
                    PatSeed::Random(vec![2]),
                    PatSeed::Random(vec![2, 0, 2]),
                ],
                page_sizes: vec![1, 2, 4],
                nexts: vec![0, 1, 2],
                cnfs: vec![
                    CnfSeed {
                        clauses: vec![vec![0], vec![4]],
                        max_occurrences: 1,
                        list_documents: 3,
                    },
                    CnfSeed {
                        clauses: vec![vec![1, 3]],
                        max_occurrences: 0,
                        list_documents: 0,
                    },
                ],
            };
            check_case(&tokenizer, &out, vocab, &[0, 1, top], &case);
        }
    }
}

/// A limit of `u64::MAX` ("everything", e.g. `familiar locate --limit 18446744073709551615`) must
/// return every hit. Fails today: `locate` computes `start + want` with `want` near `u64::MAX`,
/// which overflows (a panic, debug and release alike since release keeps overflow checks) as soon
/// as the pattern's suffix-array range does not start at entry 0.
#[test]
fn locate_with_unbounded_limit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tokenizer = support::tokens::write_tokenizer(tmp.path(), 3);
    let docs = vec![vec![0, 1, 0, 1], vec![1, 1]];
    let index =
        support::tokens::build_and_open(&tokenizer, &tmp.path().join("index"), &docs, 1_000_000);
    for (pattern, total) in [(vec![0u32], 2u64), (vec![1], 4), (vec![0, 1], 2)] {
        for limit in [u64::MAX, u64::MAX - 1, u64::MAX / 2 + 1] {
            let page = std::panic::catch_unwind(|| ngram::locate(&index, &pattern, 0, limit))
                .unwrap_or_else(|_| panic!("locate {pattern:?} offset 0 limit {limit} panicked"))
                .expect("locate");
            assert_eq!(page.total, total);
            assert_eq!(page.hits.len() as u64, total, "{pattern:?} limit {limit}");
        }
    }
}

/// Sampled CNF answers are unbiased: over many seeds, the mean estimate of the matching
/// documents (and occurrences) is the true number (brute force), and the 95 % interval holds it
/// about 95 % of the time. A corpus where the rarest clause has many occurrences per document in
/// some documents and one in others (unequal inclusion probabilities).
#[test]
fn sampled_cnf_estimates_are_unbiased() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tokenizer = support::tokens::write_tokenizer(tmp.path(), 3);
    let mut docs: Vec<Vec<u32>> = Vec::new();
    let mut rng = familiar::rng::SplitMix64::new(7);
    for _ in 0..400 {
        let len = 3 + rng.below(40) as usize;
        docs.push(
            (0..len)
                .map(|_| (rng.below(10) < 8) as u32 + (rng.below(10) == 0) as u32)
                .collect(),
        );
    }
    let model = Model::new(&docs, 3, 1_000_000);
    let index =
        support::tokens::build_and_open(&tokenizer, &tmp.path().join("index"), &docs, 1_000_000);
    // Clause 1: token 2 (rare-ish, the one sampled); clause 2: "1 0" or "0 0".
    let clauses = vec![vec![vec![2u32]], vec![vec![1, 0], vec![0, 0]]];
    let want = model.cnf(&clauses);
    let total_first: u64 = want.clause_totals[0];
    assert!(
        want.documents > 50 && total_first > 200,
        "{:?}",
        want.clause_totals
    );
    let runs = 300;
    let (mut sum_docs, mut sum_occ, mut covered) = (0.0, 0.0, 0);
    for seed in 0..runs {
        let got = ngram::cnf(
            &index,
            &Cnf {
                clauses: clauses.clone(),
            },
            &CnfOptions {
                max_occurrences: Some(total_first / 4),
                list_documents: 0,
                seed,
            },
        )
        .expect("cnf");
        assert!(got.approximate);
        let e = got.estimate.expect("estimate");
        sum_docs += e.documents;
        sum_occ += e.occurrences;
        let truth = want.documents as f64;
        if e.documents_ci95[0] <= truth && truth <= e.documents_ci95[1] {
            covered += 1;
        }
    }
    let mean_docs = sum_docs / runs as f64;
    let mean_occ = sum_occ / runs as f64;
    let true_occ: u64 = want.clause_occurrences.iter().sum();
    // Standard error of the mean over 300 runs is well under 1 %; allow 3 %.
    assert!(
        (mean_docs / want.documents as f64 - 1.0).abs() < 0.03,
        "mean estimate {mean_docs} vs {} documents",
        want.documents
    );
    assert!(
        (mean_occ / true_occ as f64 - 1.0).abs() < 0.03,
        "mean estimate {mean_occ} vs {true_occ} occurrences"
    );
    assert!(
        (0.85..=1.0).contains(&(covered as f64 / runs as f64)),
        "95% interval held the truth in {covered} of {runs} runs"
    );
}

/// Shards large enough that searches start from the sampled top levels of the suffix array
/// (every 64th entry's first 8 tokens): counts of patterns shorter and longer than the samples'
/// keys, present and absent, against brute force.
#[test]
fn counts_through_the_sampled_top_levels_match_brute_force() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let vocab = 7u32;
    let tokenizer = support::tokens::write_tokenizer(tmp.path(), vocab);
    let mut rng = familiar::rng::SplitMix64::new(99);
    // A few symbols, so that long repeats and ties in the first 8 tokens abound.
    let docs: Vec<Vec<u32>> = (0..300)
        .map(|_| {
            let n = 20 + (rng.next_u64() % 200) as usize;
            (0..n).map(|_| (rng.next_u64() % 3) as u32).collect()
        })
        .collect();
    for shard_tokens in [1_000_000u64, 20_000] {
        let dir = tmp.path().join(format!("index-{shard_tokens}"));
        let index = support::tokens::build_and_open(&tokenizer, &dir, &docs, shard_tokens);
        let model = Model::new(&docs, vocab, shard_tokens);
        assert!(index.shards().iter().any(|s| s.manifest.tokens >= 1 << 14));
        for k in 0..400u64 {
            let n = 1 + (rng.next_u64() % 14) as usize;
            let p: Vec<u32> = if k % 5 == 0 {
                (0..n).map(|_| (rng.next_u64() % 4) as u32).collect()
            } else {
                let d = &docs[(rng.next_u64() % docs.len() as u64) as usize];
                let s = (rng.next_u64() % (d.len() - n) as u64) as usize;
                d[s..s + n].to_vec()
            };
            let got = ngram::count(&index, &p).unwrap_or_else(|e| panic!("count {p:?}: {e}"));
            assert_eq!(got, model.count(&p), "count of {p:?}");
        }
    }
}

/// `n` documents of 1–40 tokens over 12 ids, skewed (low ids frequent: some prefixes are
/// frequent, others rare), indexed in shards of `shard_tokens`.
fn skewed_index(
    seed: u64,
    n: usize,
    shard_tokens: u64,
) -> (tempfile::TempDir, Vec<Vec<u32>>, familiar::index::Index) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tok = support::tokens::write_tokenizer(dir.path(), 12);
    let mut rng = familiar::rng::SplitMix64::new(seed);
    let docs: Vec<Vec<u32>> = (0..n)
        .map(|_| {
            let len = 1 + rng.below(40) as usize;
            (0..len)
                .map(|_| (rng.below(12).min(rng.below(12))) as u32)
                .collect()
        })
        .collect();
    let index = support::tokens::build_and_open(&tok, &dir.path().join("i"), &docs, shard_tokens);
    (dir, docs, index)
}

/// The next-token cache answers as the library (and so as the brute-force model), keeps only
/// frequent prefixes, warms the most frequent first and stays within its budget.
#[test]
fn the_next_token_cache_answers_as_the_model() {
    let (_dir, docs, index) = skewed_index(5, 120, 500);
    let model = Model::new(&docs, 12, 500);
    let cache = ngram::NextTokensCache::new(200, 1 << 20);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let cached = cache.warm(&index, 10, &stop).unwrap();
    assert!((1..=10).contains(&cached), "{cached}");
    // What warm cached is the most frequent prefixes: every prefix kept occurs at least as often
    // as any frequent one-token prefix left out, and the empty prefix is first.
    let mut prefixes: Vec<Vec<u32>> = vec![vec![]];
    for a in 0..12 {
        prefixes.push(vec![a]);
        for b in 0..12 {
            prefixes.push(vec![a, b]);
        }
    }
    for p in &prefixes {
        let got = cache.next_tokens(&index, p).unwrap();
        let (total, end, next) = model.next_tokens(p);
        assert_eq!(got.prefix_count, total, "{p:?}");
        assert_eq!(got.end_of_document, end, "{p:?}");
        let got_next: BTreeMap<u32, u64> = got.next.iter().copied().collect();
        assert_eq!(got_next, next, "{p:?}");
        // A second call answers the same (from the cache when frequent).
        assert_eq!(*cache.next_tokens(&index, p).unwrap(), *got);
    }
    // Only prefixes occurring at least 200 times were kept.
    assert!(
        cache.len()
            <= prefixes
                .iter()
                .filter(|p| model.next_tokens(p).0 >= 200)
                .count()
    );
    assert!(cache.len() >= cached);
    // A tiny budget keeps nothing past it.
    let small = ngram::NextTokensCache::new(1, 200);
    for p in &prefixes {
        small.next_tokens(&index, p).unwrap();
    }
    assert!(small.bytes() <= 200);
    // Bad ids are refused as by the library.
    assert!(cache.next_tokens(&index, &[999]).is_err());
}

/// A distribution computed within a budget of reads is the library's (the model's) once the
/// budget suffices and `None` below it; the reads it needs grow with the number of distinct next
/// tokens times the logarithm of the count, not with the count; a cached prefix needs none.
#[test]
fn a_next_token_budget_gives_the_exact_distribution_or_none() {
    let (_dir, docs, index) = skewed_index(11, 150, 700);
    assert!(index.shards().len() > 1, "the test wants several shards");
    let model = Model::new(&docs, 12, 700);
    let mut prefixes: Vec<Vec<u32>> = vec![vec![]];
    for a in 0..12 {
        prefixes.push(vec![a]);
        for b in 0..12 {
            prefixes.push(vec![a, b, (a + b) % 12]);
            prefixes.push(vec![a, b]);
        }
    }
    let shards = index.shards().len() as u64;
    for p in &prefixes {
        let exact = ngram::next_tokens(&index, p).unwrap();
        assert_eq!(
            ngram::next_tokens_within(&index, p, u64::MAX).unwrap(),
            Some(exact.clone())
        );
        let (total, end, next) = model.next_tokens(p);
        assert_eq!(exact.prefix_count, total, "{p:?}");
        assert_eq!(exact.end_of_document, end, "{p:?}");
        // The smallest budget that gives an answer; every smaller one gives none.
        let mut need = 0;
        while ngram::next_tokens_within(&index, p, need)
            .unwrap()
            .is_none()
        {
            need += 1;
        }
        for b in [need, need + 1, need + 7] {
            assert_eq!(
                ngram::next_tokens_within(&index, p, b).unwrap().as_ref(),
                Some(&exact),
                "{p:?} with {b} reads"
            );
        }
        if need > 0 {
            assert_eq!(
                ngram::next_tokens_within(&index, p, need - 1).unwrap(),
                None
            );
        }
        // Each run of one next token (per shard) costs its first read, a gallop and a bisection.
        let runs = shards * (next.len() as u64 + u64::from(end > 0));
        let log = 64 - u64::from(total.max(1).leading_zeros());
        assert!(
            need <= runs * (2 + 2 * log),
            "{p:?}: {need} reads for {runs} runs of {total}"
        );
        assert_eq!(need == 0, total == 0, "{p:?}");
    }
    // Through the cache: a kept prefix costs no read, an unknown id is refused.
    let cache = ngram::NextTokensCache::new(1, 1 << 20);
    cache.next_tokens(&index, &[0]).unwrap();
    assert_eq!(
        cache
            .next_tokens_within(&index, &[0], 0)
            .unwrap()
            .as_deref(),
        Some(&ngram::next_tokens(&index, &[0]).unwrap())
    );
    assert_eq!(cache.next_tokens_within(&index, &[1, 2], 0).unwrap(), None);
    assert!(cache.next_tokens_within(&index, &[999], 5).is_err());
}

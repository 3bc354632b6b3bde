//! Indexes of generated token ids, and a brute-force model of a corpus that answers every query by scanning the documents.
//!
//! The model never looks at an index: it knows only the documents, the vocabulary size and the
//! documented shard-cutting rule (a shard is cut before the document that would take it past the
//! shard size, so a document longer than the shard size gets a shard of its own).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use familiar::index::Index;
use familiar_index_builder::build::build_from_tokens;
use familiar_index_builder::fixtures::word_level_tokenizer;

/// Writes a word-level tokenizer of `vocab` ids into `dir` and returns its path.
pub fn write_tokenizer(dir: &Path, vocab: u32) -> PathBuf {
    let path = dir.join(format!("tokenizer-{vocab}.json"));
    std::fs::write(&path, word_level_tokenizer(vocab)).expect("write tokenizer");
    path
}

/// Builds an index of `docs` into `out` (which must not exist) with one thread.
pub fn build(tokenizer: &Path, out: &Path, docs: &[Vec<u32>], shard_tokens: u64) {
    build_from_tokens(tokenizer, out, docs.to_vec(), shard_tokens, 1)
        .unwrap_or_else(|e| panic!("build of {docs:?} (shard size {shard_tokens}) failed: {e}"));
}

/// Builds and opens.
pub fn build_and_open(tokenizer: &Path, out: &Path, docs: &[Vec<u32>], shard_tokens: u64) -> Index {
    build(tokenizer, out, docs, shard_tokens);
    Index::open(out).unwrap_or_else(|e| panic!("opening a fresh index failed: {e}"))
}

/// One shard as the model expects it.
#[derive(Debug, Clone)]
pub struct ShardModel {
    /// Global id of the first document.
    pub first_doc: u64,
    /// Documents in the shard.
    pub documents: u64,
    /// The shard text: each document followed by the separator (= vocabulary size).
    pub text: Vec<u32>,
    /// Start position of each document in `text`.
    pub starts: Vec<u64>,
}

/// The brute-force oracle.
#[derive(Debug, Clone)]
pub struct Model {
    pub docs: Vec<Vec<u32>>,
    pub vocab: u32,
    pub shards: Vec<ShardModel>,
}

/// Expected answer of a CNF query, before `list_documents` truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnfModel {
    pub documents: u64,
    pub clause_occurrences: Vec<u64>,
    pub clause_totals: Vec<u64>,
    /// Every matching document, ascending.
    pub matching: Vec<u64>,
    /// Per document (global id): occurrences of each clause in it.
    pub per_doc: Vec<Vec<u64>>,
    /// Per shard: each clause's occurrences in that shard.
    pub shard_totals: Vec<Vec<u64>>,
}

/// Occurrences of `pattern` in `doc`, overlapping ones included (none for an empty pattern).
pub fn occurrences_in(doc: &[u32], pattern: &[u32]) -> u64 {
    if pattern.is_empty() || pattern.len() > doc.len() {
        return 0;
    }
    doc.windows(pattern.len()).filter(|w| *w == pattern).count() as u64
}

impl Model {
    /// The model of `docs` indexed with a vocabulary of `vocab` ids and shards of `shard_tokens`.
    pub fn new(docs: &[Vec<u32>], vocab: u32, shard_tokens: u64) -> Model {
        let mut shards: Vec<ShardModel> = Vec::new();
        let mut current: Option<ShardModel> = None;
        for (i, d) in docs.iter().enumerate() {
            let need = d.len() as u64 + 1;
            if let Some(s) = &current {
                if s.text.len() as u64 + need > shard_tokens {
                    shards.push(current.take().expect("current shard"));
                }
            }
            let s = current.get_or_insert_with(|| ShardModel {
                first_doc: i as u64,
                documents: 0,
                text: Vec::new(),
                starts: Vec::new(),
            });
            s.starts.push(s.text.len() as u64);
            s.text.extend_from_slice(d);
            s.text.push(vocab);
            s.documents += 1;
        }
        shards.extend(current);
        Model {
            docs: docs.to_vec(),
            vocab,
            shards,
        }
    }

    /// Token positions in the index (separators included).
    pub fn positions(&self) -> u64 {
        self.docs.iter().map(|d| d.len() as u64 + 1).sum()
    }

    /// Index of the shard holding global document `doc`.
    pub fn shard_of(&self, doc: u64) -> usize {
        self.shards
            .iter()
            .position(|s| doc >= s.first_doc && doc < s.first_doc + s.documents)
            .expect("document in some shard")
    }

    /// Every occurrence of a non-empty `pattern` as (global doc id, offset in the document).
    pub fn occurrences(&self, pattern: &[u32]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if pattern.is_empty() {
            return out;
        }
        for (d, doc) in self.docs.iter().enumerate() {
            if pattern.len() > doc.len() {
                continue;
            }
            for i in 0..=doc.len() - pattern.len() {
                if doc[i..i + pattern.len()] == *pattern {
                    out.push((d as u64, i as u64));
                }
            }
        }
        out
    }

    /// Occurrences of `pattern` in the whole corpus.
    pub fn count(&self, pattern: &[u32]) -> u64 {
        self.docs.iter().map(|d| occurrences_in(d, pattern)).sum()
    }

    /// (prefix occurrences, occurrences at a document's end, next token → count). The empty prefix
    /// occurs at every position of a document, its end included.
    pub fn next_tokens(&self, prefix: &[u32]) -> (u64, u64, BTreeMap<u32, u64>) {
        let (mut total, mut end) = (0u64, 0u64);
        let mut next = BTreeMap::new();
        for doc in &self.docs {
            if prefix.len() > doc.len() {
                continue;
            }
            for i in 0..=doc.len() - prefix.len() {
                if doc[i..i + prefix.len()] == *prefix {
                    total += 1;
                    match doc.get(i + prefix.len()) {
                        Some(&t) => *next.entry(t).or_insert(0) += 1,
                        None => end += 1,
                    }
                }
            }
        }
        (total, end, next)
    }

    /// The brute-force answer to a CNF query.
    pub fn cnf(&self, clauses: &[Vec<Vec<u32>>]) -> CnfModel {
        let k = clauses.len();
        let per_doc: Vec<Vec<u64>> = self
            .docs
            .iter()
            .map(|d| {
                clauses
                    .iter()
                    .map(|c| c.iter().map(|p| occurrences_in(d, p)).sum())
                    .collect()
            })
            .collect();
        let mut out = CnfModel {
            documents: 0,
            clause_occurrences: vec![0; k],
            clause_totals: vec![0; k],
            matching: Vec::new(),
            per_doc: per_doc.clone(),
            shard_totals: vec![vec![0; k]; self.shards.len()],
        };
        for (d, occ) in per_doc.iter().enumerate() {
            let s = self.shard_of(d as u64);
            for (c, &n) in occ.iter().enumerate() {
                out.clause_totals[c] += n;
                out.shard_totals[s][c] += n;
            }
            if occ.iter().all(|&n| n > 0) {
                out.documents += 1;
                out.matching.push(d as u64);
                for (total, &n) in out.clause_occurrences.iter_mut().zip(occ) {
                    *total += n;
                }
            }
        }
        out
    }
}

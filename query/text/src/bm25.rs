//! BM25 scores of documents against a text, with statistics of the whole index.
//!
//! Each shard's text index is its own tantivy index, so scoring one shard with its own
//! statistics would rank a document differently depending on the shard it landed in. Here the
//! statistics BM25 needs — documents, tokens of the `text` field, and each term's document
//! frequency — are summed over every shard first ([`Bm25Stats`]), and every shard scores with
//! them: a document's score is the one a single index of the whole corpus would give (tantivy's
//! BM25, k1 = 1.2, b = 0.75, with its one-byte field-length norms).

use std::collections::HashMap;

use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, EnableScoring, Occur, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocSet, Term};

use familiar::error::{Error, Result};

use crate::{analyze, TextIndex};

/// BM25 statistics of a set of terms over every shard of an index.
#[derive(Debug, Clone, Default)]
pub struct Bm25Stats {
    documents: u64,
    tokens: u64,
    doc_freq: HashMap<Term, u64>,
}

impl Bm25StatisticsProvider for Bm25Stats {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.tokens)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.documents)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        Ok(self.doc_freq.get(term).copied().unwrap_or(0))
    }
}

/// The distinct analyzed (stemmed) terms of `text`, as the `text` field indexes them.
pub fn query_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = analyze(text).into_iter().map(|(t, _)| t).collect();
    terms.sort();
    terms.dedup();
    terms
}

impl Bm25Stats {
    /// The statistics of `terms` summed over `shards`.
    pub fn of(shards: &[TextIndex], terms: &[String]) -> Result<Bm25Stats> {
        let mut stats = Bm25Stats::default();
        for shard in shards {
            let field = shard.fields.text;
            stats.documents += shard.searcher.num_docs();
            for reader in shard.searcher.segment_readers() {
                let inverted = reader
                    .inverted_index(field)
                    .map_err(|e| crate::text_error(&shard.dir, "statistics", e))?;
                stats.tokens += inverted.total_num_tokens();
                for t in terms {
                    let term = Term::from_field_text(field, t);
                    let df = inverted
                        .doc_freq(&term)
                        .map_err(|e| crate::text_error(&shard.dir, "statistics", e))?;
                    *stats.doc_freq.entry(term).or_default() += u64::from(df);
                }
            }
        }
        Ok(stats)
    }
}

impl TextIndex {
    /// BM25 scores, against `terms` (an OR of them) with the index-wide `stats`, of the shard's
    /// documents `global` (global ids, each in this shard): one score per document, 0 for one
    /// that holds none of the terms.
    pub fn bm25(&self, terms: &[String], stats: &Bm25Stats, global: &[u64]) -> Result<Vec<f32>> {
        let field = self.fields.text;
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(field, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let mut scores = vec![0f32; global.len()];
        if clauses.is_empty() || global.is_empty() {
            return Ok(scores);
        }
        let query = BooleanQuery::new(clauses);
        let weight = query
            .weight(EnableScoring::enabled_from_statistics_provider(
                stats,
                &self.searcher,
            ))
            .map_err(|e| crate::text_error(&self.dir, "BM25", e))?;
        // Where each wanted document sits: (segment, document in it, index in `global`), from
        // one pass over the `doc_id` column that keeps only the wanted documents.
        let mut index_of: HashMap<u64, Vec<usize>> = HashMap::with_capacity(global.len());
        for (i, g) in global.iter().enumerate() {
            index_of.entry(*g).or_default().push(i);
        }
        let mut wanted: Vec<(usize, u32, usize)> = Vec::with_capacity(global.len());
        for (s, reader) in self.searcher.segment_readers().iter().enumerate() {
            let column = reader
                .fast_fields()
                .u64("doc_id")
                .map_err(|e| crate::text_error(&self.dir, "doc_id column", e))?;
            for doc in 0..reader.max_doc() {
                if let Some(is) = column.first(doc).and_then(|g| index_of.get(&g)) {
                    wanted.extend(is.iter().map(|&i| (s, doc, i)));
                }
            }
        }
        if wanted.len() < global.len() {
            let found: std::collections::HashSet<usize> = wanted.iter().map(|w| w.2).collect();
            let missing = (0..global.len())
                .find(|i| !found.contains(i))
                .map_or(0, |i| global[i]);
            return Err(Error::Query(format!(
                "document {missing} is not in the text index of {}",
                self.dir.display()
            )));
        }
        wanted.sort_unstable();
        let mut at = 0;
        while at < wanted.len() {
            let s = wanted[at].0;
            let reader = self.searcher.segment_reader(s as u32);
            let mut scorer = weight
                .scorer(reader, 1.0)
                .map_err(|e| crate::text_error(&self.dir, "BM25", e))?;
            while at < wanted.len() && wanted[at].0 == s {
                let (_, doc, i) = wanted[at];
                if scorer.doc() < doc {
                    scorer.seek(doc);
                }
                if scorer.doc() == doc {
                    scores[i] = scorer.score();
                }
                at += 1;
            }
        }
        Ok(scores)
    }
}

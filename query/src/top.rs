//! The exact K most frequent n-grams of an index, per length, from the suffix arrays.
//!
//! Every distinct n-gram is a run of the suffix array ([`crate::runs`]); no n-gram is hashed or
//! stored: pieces of each shard's array are scanned by threads of their own, their runs (each
//! piece in lexicographic order) are merged, counts of the same n-gram added, and a heap keeps
//! the best K. Memory is the heap and a few batches of runs per piece.
//!
//! An n-gram never contains the document separator, so none crosses a document boundary, as in
//! [`crate::ngram::count`]. Ranking: count, most frequent first; ties by the token ids in
//! lexicographic order. With a source, only occurrences in documents of that source count.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::RangeInclusive;
use std::sync::mpsc::sync_channel;

use familiar::index::{Index, ShardView};
use familiar::token::Token;
use familiar::{with_view, Error, Result};

use crate::runs::{self, Batch, Stream};

/// The longest n-gram length [`top_ngrams`] accepts.
pub const MAX_N: usize = 64;

/// What to rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopOptions {
    /// The n-gram lengths, each ranked on its own (e.g. `1..=5`).
    pub lengths: RangeInclusive<usize>,
    /// How many n-grams of each length.
    pub k: usize,
    /// Count only occurrences in documents whose source is this.
    pub source: Option<String>,
}

/// A row of the `top_ngrams` table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopNgramRow {
    /// The n-gram's length.
    pub n: u64,
    /// Its rank among the n-grams of its length (1: the most frequent).
    pub rank: u64,
    /// Its token ids.
    pub tokens: Vec<u32>,
    /// Its text (the tokens decoded).
    pub text: String,
    /// Its occurrences (in documents of `source`, if given).
    pub count: u64,
    /// The source counted, if one was asked for.
    pub source: Option<String>,
}

impl familiar::table::TableRow for TopNgramRow {
    const TABLE: &'static str = "top_ngrams";
}

/// The `options.k` most frequent n-grams of each length in `options.lengths`, by length then
/// rank.
pub fn top_ngrams(index: &Index, options: &TopOptions) -> Result<Vec<TopNgramRow>> {
    let (lo, hi) = (*options.lengths.start(), *options.lengths.end());
    if lo == 0 || lo > hi || hi > MAX_N {
        return Err(Error::Query(format!(
            "n-gram lengths {lo}..={hi}: expected lengths from 1 to at most {MAX_N}, the first \
             no larger than the last"
        )));
    }
    if options.k == 0 {
        return Err(Error::Query("k must be at least 1".into()));
    }
    let keep = match &options.source {
        None => None,
        Some(s) => Some(
            crate::docs::sources(index)?
                .into_iter()
                .map(|d| d.as_deref() == Some(s.as_str()))
                .collect::<Vec<bool>>(),
        ),
    };
    let tokenizer = index.tokenizer()?;
    let mut rows = Vec::new();
    for n in options.lengths.clone() {
        let best = top_of_length(index, n, options.k, keep.as_deref())?;
        for (rank, (tokens, count)) in best.into_iter().enumerate() {
            rows.push(TopNgramRow {
                n: n as u64,
                rank: rank as u64 + 1,
                text: tokenizer.decode(&tokens)?,
                tokens,
                count,
                source: options.source.clone(),
            });
        }
    }
    Ok(rows)
}

/// A candidate of the top K: the heap's top is the worst (lowest count; among equal counts, the
/// larger tokens).
#[derive(PartialEq, Eq)]
struct Candidate {
    count: u64,
    tokens: Vec<u32>,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .count
            .cmp(&self.count)
            .then_with(|| self.tokens.cmp(&other.tokens))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The best `k` n-grams of length `n`, best first.
fn top_of_length(
    index: &Index,
    n: usize,
    k: usize,
    keep: Option<&[bool]>,
) -> Result<Vec<(Vec<u32>, u64)>> {
    let parts = runs::pieces_per_shard(index);
    let shard_keep = |shard: &familiar::index::Shard| -> Result<Option<&[bool]>> {
        match keep {
            None => Ok(None),
            Some(k) => {
                let first = shard.manifest.first_doc as usize;
                let docs = shard.manifest.documents as usize;
                Ok(Some(k.get(first..first + docs).ok_or_else(|| {
                    Error::Bug(format!(
                        "shard {} lies past the documents' sources",
                        shard.manifest.shard
                    ))
                })?))
            }
        }
    };
    if let [shard] = index.shards() {
        // One shard: every n-gram's run lies whole in one piece, so each piece keeps its own
        // best K and nothing is merged but those.
        let keep = shard_keep(shard)?;
        let len = with_view!(shard, |v| v.len());
        let heaps = std::thread::scope(|scope| -> Result<Vec<BinaryHeap<Candidate>>> {
            let threads: Vec<_> = runs::pieces(len, parts)
                .into_iter()
                .map(|(from, to)| {
                    scope.spawn(move || -> Result<BinaryHeap<Candidate>> {
                        let mut heap = BinaryHeap::with_capacity(k.min(1 << 16) + 1);
                        with_view!(shard, |v| scan(&v, n, from, to, keep, &mut |g, count| {
                            offer(&mut heap, k, count, g);
                            true
                        }))?;
                        Ok(heap)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .map_err(|_| Error::Bug("an n-gram scanner panicked".into()))?
                })
                .collect()
        })?;
        let mut best: Vec<Candidate> = heaps.into_iter().flat_map(|h| h.into_vec()).collect();
        best.sort();
        best.truncate(k);
        return Ok(best.into_iter().map(|c| (c.tokens, c.count)).collect());
    }
    std::thread::scope(|scope| -> Result<Vec<(Vec<u32>, u64)>> {
        let mut streams = Vec::new();
        let mut scanners = Vec::new();
        for (s, shard) in index.shards().iter().enumerate() {
            let keep = shard_keep(shard)?;
            for (from, to) in runs::pieces(with_view!(shard, |v| v.len()), parts) {
                let (tx, rx) = sync_channel::<Result<Batch>>(4);
                scanners.push(scope.spawn(move || {
                    let mut batch = Batch::with_capacity(n);
                    let result =
                        with_view!(shard, |v| scan(&v, n, from, to, keep, &mut |g, count| {
                            batch.keys.extend(g.iter().map(|t| t.to_u32()));
                            batch.counts.push(count);
                            !batch.is_full()
                                || tx
                                    .send(Ok(std::mem::replace(
                                        &mut batch,
                                        Batch::with_capacity(n),
                                    )))
                                    .is_ok()
                        }));
                    let last = match result {
                        Ok(()) => Ok(batch),
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(last);
                }));
                streams.push(Stream::new(rx, n, s));
            }
        }
        let best = merge(&mut streams, n, k);
        // Stop the scanners (their channels close) before reporting.
        drop(streams);
        runs::join_all(scanners)?;
        best
    })
}

/// Offers an n-gram to a heap of the best `k` (its top the worst).
fn offer<T: Token>(heap: &mut BinaryHeap<Candidate>, k: usize, count: u64, g: &[T]) {
    let better = heap.len() < k
        || heap.peek().is_some_and(|w| {
            count > w.count
                || (count == w.count && g.iter().map(|t| t.to_u32()).lt(w.tokens.iter().copied()))
        });
    if better {
        heap.push(Candidate {
            count,
            tokens: g.iter().map(|t| t.to_u32()).collect(),
        });
        if heap.len() > k {
            heap.pop();
        }
    }
}

/// Merges the pieces' runs (each in lexicographic order) and keeps the best `k`.
fn merge(streams: &mut [Stream], n: usize, k: usize) -> Result<Vec<(Vec<u32>, u64)>> {
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k.min(1 << 16) + 1);
    let mut key = vec![0u32; n];
    while runs::least(streams, &mut key)? {
        let mut count = 0u64;
        for s in streams.iter_mut() {
            if s.is_at(&key) {
                count += s.batch.counts[s.at];
                s.at += 1;
            }
        }
        // Runs arrive in lexicographic order, so an equal count never beats the heap's worst.
        let better = heap.len() < k || heap.peek().is_some_and(|w| count > w.count);
        if better {
            heap.push(Candidate {
                count,
                tokens: key.clone(),
            });
            if heap.len() > k {
                heap.pop();
            }
        }
    }
    let mut best: Vec<Candidate> = heap.into_vec();
    best.sort();
    Ok(best.into_iter().map(|c| (c.tokens, c.count)).collect())
}

/// Scans entries `from..to` of one shard's suffix array for the runs of n-grams (counting only
/// positions in kept documents, with `keep`), handing each n-gram with a positive count to
/// `sink` until it says stop.
fn scan<T: Token>(
    v: &ShardView<'_, T>,
    n: usize,
    from: u64,
    to: u64,
    keep: Option<&[bool]>,
    sink: &mut dyn FnMut(&[T], u64) -> bool,
) -> Result<()> {
    let sa_file = || v.dir.join(familiar::manifest::SUFFIX_ARRAY_FILE);
    runs::scan_runs(v, n, from, to, &mut |g, i, end| {
        let count = match keep {
            None => end - i,
            Some(keep) => {
                let mut c = 0;
                for j in i..end {
                    let doc = v.doc_of(v.suffix(j)? as u64)? as usize;
                    let kept = keep.get(doc).copied().ok_or_else(|| {
                        Error::corrupt(sa_file(), format!("entry {j} lies past the last document"))
                    })?;
                    c += u64::from(kept);
                }
                c
            }
        };
        Ok(count == 0 || sink(g, count))
    })
}

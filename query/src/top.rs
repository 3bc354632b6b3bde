//! The exact K most frequent n-grams of an index, per length, from the suffix arrays.
//!
//! In a suffix array the suffixes that start with one n-gram are contiguous, so a scan in suffix
//! order meets every distinct n-gram once, as a run, in lexicographic order; the end of a run is
//! found by galloping and bisection (long runs cost a logarithm, not their length). No n-gram is
//! hashed or stored: each shard is scanned by its own thread, the shards' runs (each shard in
//! lexicographic order) are merged, counts of the same n-gram added, and a heap keeps the best
//! K. Memory is the heap and a few batches of runs per shard.
//!
//! An n-gram never contains the document separator, so none crosses a document boundary, as in
//! [`crate::ngram::count`]. Ranking: count, most frequent first; ties by the token ids in
//! lexicographic order. With a source, only occurrences in documents of that source count.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::RangeInclusive;
use std::sync::mpsc::{sync_channel, Receiver};

use familiar::index::{Index, ShardView};
use familiar::token::Token;
use familiar::{with_view, Error, Result};

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

/// Runs of one shard, flattened: `keys` holds `n` ids per run.
struct Batch {
    keys: Vec<u32>,
    counts: Vec<u64>,
}

/// Runs per batch a shard's scanner sends.
const BATCH_RUNS: usize = 4096;

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
    std::thread::scope(|scope| -> Result<Vec<(Vec<u32>, u64)>> {
        let mut streams = Vec::new();
        let mut scanners = Vec::new();
        for shard in index.shards() {
            let (tx, rx) = sync_channel::<Result<Batch>>(4);
            let keep = match keep {
                None => None,
                Some(k) => {
                    let first = shard.manifest.first_doc as usize;
                    let docs = shard.manifest.documents as usize;
                    Some(k.get(first..first + docs).ok_or_else(|| {
                        Error::Bug(format!(
                            "shard {} lies past the documents' sources",
                            shard.manifest.shard
                        ))
                    })?)
                }
            };
            scanners.push(scope.spawn(move || {
                let result = with_view!(shard, |v| scan(&v, n, keep, &|b| {
                    tx.send(Ok(b)).is_ok()
                }));
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                }
            }));
            streams.push(Stream::new(rx, n));
        }
        let best = merge(&mut streams, n, k);
        // Stop the scanners (their channels close) before reporting.
        drop(streams);
        for s in scanners {
            s.join()
                .map_err(|_| Error::Bug("an n-gram scanner panicked".into()))?;
        }
        best
    })
}

/// One shard's runs as they arrive.
struct Stream {
    rx: Receiver<Result<Batch>>,
    batch: Batch,
    at: usize,
    n: usize,
    done: bool,
}

impl Stream {
    fn new(rx: Receiver<Result<Batch>>, n: usize) -> Stream {
        Stream {
            rx,
            batch: Batch {
                keys: Vec::new(),
                counts: Vec::new(),
            },
            at: 0,
            n,
            done: false,
        }
    }

    /// Makes the current run available; false when the shard has no more.
    fn fill(&mut self) -> Result<bool> {
        while !self.done && self.at >= self.batch.counts.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.batch = b?;
                    self.at = 0;
                }
                Err(_) => self.done = true,
            }
        }
        Ok(!self.done)
    }

    fn key(&self) -> &[u32] {
        &self.batch.keys[self.at * self.n..(self.at + 1) * self.n]
    }
}

/// Merges the shards' runs (each in lexicographic order) and keeps the best `k`.
fn merge(streams: &mut [Stream], n: usize, k: usize) -> Result<Vec<(Vec<u32>, u64)>> {
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k.min(1 << 16) + 1);
    let mut key = vec![0u32; n];
    loop {
        let mut min: Option<usize> = None;
        for i in 0..streams.len() {
            if !streams[i].fill()? {
                continue;
            }
            min = match min {
                Some(m) if streams[m].key() <= streams[i].key() => Some(m),
                _ => Some(i),
            };
        }
        let Some(m) = min else { break };
        key.copy_from_slice(streams[m].key());
        let mut count = 0u64;
        for s in streams.iter_mut() {
            if !s.done && s.at < s.batch.counts.len() && s.key() == key.as_slice() {
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

/// Scans one shard's suffix array for the runs of n-grams (counting only positions in kept
/// documents, with `keep`), sending them in batches until `send` says stop.
fn scan<T: Token>(
    v: &ShardView<'_, T>,
    n: usize,
    keep: Option<&[bool]>,
    send: &dyn Fn(Batch) -> bool,
) -> Result<()> {
    let len = v.len();
    let separator = v.separator;
    let sa_file = || v.dir.join(familiar::manifest::SUFFIX_ARRAY_FILE);
    // The n-gram at SA entry j, if the suffix there has n tokens before a separator.
    let gram = |j: u64| -> Result<Option<&[T]>> {
        let pos = v.suffix(j)?;
        let Some(g) = v.tokens.get(pos..pos + n) else {
            return Ok(None);
        };
        Ok((!g.iter().any(|t| t.to_u32() == separator)).then_some(g))
    };
    let mut batch = Batch {
        keys: Vec::with_capacity(BATCH_RUNS * n),
        counts: Vec::with_capacity(BATCH_RUNS),
    };
    let mut i = 0u64;
    while i < len {
        let Some(g) = gram(i)? else {
            i += 1;
            continue;
        };
        let starts = |j: u64| -> Result<bool> {
            let pos = v.suffix(j)?;
            Ok(v.tokens.get(pos..pos + n) == Some(g))
        };
        // Gallop to a suffix past the run, then bisect for its first entry.
        let (mut a, mut step) = (i, 1u64);
        let mut b = loop {
            let probe = i.saturating_add(step);
            if probe >= len {
                break len;
            }
            if !starts(probe)? {
                break probe;
            }
            a = probe;
            step = step.saturating_mul(2);
        };
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            if starts(mid)? {
                a = mid;
            } else {
                b = mid;
            }
        }
        let end = b;
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
        if count > 0 {
            batch.keys.extend(g.iter().map(|t| t.to_u32()));
            batch.counts.push(count);
            if batch.counts.len() == BATCH_RUNS {
                let full = std::mem::replace(
                    &mut batch,
                    Batch {
                        keys: Vec::with_capacity(BATCH_RUNS * n),
                        counts: Vec::with_capacity(BATCH_RUNS),
                    },
                );
                if !send(full) {
                    return Ok(());
                }
            }
        }
        i = end;
    }
    if !batch.counts.is_empty() {
        send(batch);
    }
    Ok(())
}

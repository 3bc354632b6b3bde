//! Runs of one n-gram in a shard's suffix array, scanned in order, in parallel pieces, and merged
//! across shards: what [`crate::top`] and [`crate::duplicates`] are made of.
//!
//! In a suffix array the suffixes that start with one n-gram are contiguous, so a scan in suffix
//! order meets every distinct n-gram once, as a run, in lexicographic order; the end of a run is
//! found by galloping and bisection (a long run costs a logarithm, not its length). An n-gram
//! never contains the document separator (a suffix whose first `n` tokens hold one, or that has
//! fewer than `n` tokens, starts no n-gram), so none crosses a document boundary.
//!
//! A shard's array is cut into [`pieces`] that a thread each scans: a piece owns the runs that
//! start inside it (the run that straddles its start belongs to the piece before). Pieces of one
//! shard hold disjoint, increasing n-grams, so a merge over all pieces of all shards by least
//! n-gram sees each n-gram's runs together.

use std::sync::mpsc::Receiver;

use familiar::index::{Index, ShardView};
use familiar::token::Token;
use familiar::{Error, Result};

/// The n-gram of length `n` at suffix-array entry `j`, if the suffix there has `n` tokens before
/// a separator.
pub(crate) fn gram<'a, T: Token>(
    v: &ShardView<'a, T>,
    n: usize,
    j: u64,
) -> Result<Option<&'a [T]>> {
    let pos = v.suffix(j)?;
    let Some(g) = v.tokens.get(pos..pos + n) else {
        return Ok(None);
    };
    Ok((!g.iter().any(|t| t.to_u32() == v.separator)).then_some(g))
}

/// The end of the run of `g` that holds entry `i`: the first entry after `i` whose suffix does
/// not start with `g`.
fn run_end<T: Token>(v: &ShardView<'_, T>, g: &[T], i: u64) -> Result<u64> {
    let len = v.len();
    let starts = |j: u64| -> Result<bool> {
        let pos = v.suffix(j)?;
        Ok(v.tokens.get(pos..pos + g.len()) == Some(g))
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
    Ok(b)
}

/// Calls `f(gram, start, end)` for every run of n-grams that starts in entries `from..to`, in
/// order (`start..end` are the run's entries; the last may end past `to`), until `f` returns
/// false.
pub(crate) fn scan_runs<'a, T: Token>(
    v: &ShardView<'a, T>,
    n: usize,
    from: u64,
    to: u64,
    f: &mut dyn FnMut(&'a [T], u64, u64) -> Result<bool>,
) -> Result<()> {
    let mut i = from;
    // A run that began before `from` belongs to the piece before.
    if i > 0 && i < to {
        if let (Some(g), Some(p)) = (gram(v, n, i)?, gram(v, n, i - 1)?) {
            if g == p {
                i = run_end(v, g, i)?;
            }
        }
    }
    while i < to {
        let Some(g) = gram(v, n, i)? else {
            i += 1;
            continue;
        };
        let end = run_end(v, g, i)?;
        if !f(g, i, end)? {
            return Ok(());
        }
        i = end;
    }
    Ok(())
}

/// Pieces `start..end` of `0..len`, `parts` of them (fewer when `len` is small), in order.
pub(crate) fn pieces(len: u64, parts: usize) -> Vec<(u64, u64)> {
    let parts = (parts.max(1) as u64).min(len.max(1));
    (0..parts)
        .map(|p| (len * p / parts, len * (p + 1) / parts))
        .collect()
}

/// Pieces per shard set by [`set_pieces_per_shard`] (0: one per core).
static PIECES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Cuts each shard into `n` pieces from now on (0: the default, enough for every core to have
/// one). Answers never depend on it; tests use it to cross piece boundaries.
pub fn set_pieces_per_shard(n: usize) {
    PIECES.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// How many pieces each shard of `index` is cut into.
pub(crate) fn pieces_per_shard(index: &Index) -> usize {
    match PIECES.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.div_ceil(index.shards().len().max(1))
        }
        n => n,
    }
}

/// Runs of one piece, flattened: `keys` holds `n` ids per run.
pub(crate) struct Batch {
    pub keys: Vec<u32>,
    pub counts: Vec<u64>,
    /// Per run, the text position of its occurrence when it has exactly one (only where the
    /// consumer asked for them), else `u64::MAX`.
    pub single: Vec<u64>,
}

/// Runs per batch a scanner sends, at most.
pub(crate) const BATCH_RUNS: usize = 4096;

/// Token ids per batch, at most (give or take a run): long n-grams make smaller batches.
const BATCH_KEYS: usize = 1 << 16;

impl Batch {
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            keys: Vec::with_capacity(BATCH_RUNS.min(BATCH_KEYS / n.max(1) + 1) * n),
            counts: Vec::with_capacity(BATCH_RUNS),
            single: Vec::new(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.counts.len() >= BATCH_RUNS || self.keys.len() >= BATCH_KEYS
    }
}

/// One piece's runs as they arrive.
pub(crate) struct Stream {
    rx: Receiver<Result<Batch>>,
    pub batch: Batch,
    pub at: usize,
    n: usize,
    done: bool,
    /// The shard the piece belongs to.
    pub shard: usize,
}

impl Stream {
    pub fn new(rx: Receiver<Result<Batch>>, n: usize, shard: usize) -> Stream {
        Stream {
            rx,
            batch: Batch::with_capacity(0),
            at: 0,
            n,
            done: false,
            shard,
        }
    }

    /// Makes the current run available; false when the piece has no more.
    pub fn fill(&mut self) -> Result<bool> {
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

    /// The current run's n-gram (after [`Stream::fill`] said there is one).
    pub fn key(&self) -> &[u32] {
        &self.batch.keys[self.at * self.n..(self.at + 1) * self.n]
    }

    /// Whether the current run is of `key`.
    pub fn is_at(&self, key: &[u32]) -> bool {
        !self.done && self.at < self.batch.counts.len() && self.key() == key
    }
}

/// The least n-gram among the streams' current runs, copied into `key`; false when every stream
/// is done.
pub(crate) fn least(streams: &mut [Stream], key: &mut [u32]) -> Result<bool> {
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
    match min {
        Some(m) => {
            key.copy_from_slice(streams[m].key());
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Joins scanner threads, turning a panic into a bug report.
pub(crate) fn join_all(scanners: Vec<std::thread::ScopedJoinHandle<'_, ()>>) -> Result<()> {
    for s in scanners {
        s.join()
            .map_err(|_| Error::Bug("an n-gram scanner panicked".into()))?;
    }
    Ok(())
}

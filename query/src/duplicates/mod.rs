//! Exact duplicate substrings (Lee et al. 2022, "Deduplicating Training Data Makes Language
//! Models Better": ExactSubstr), from the suffix arrays.
//!
//! A token is *duplicated* when it lies in a substring of at least L tokens (no separator) that
//! occurs at least twice in the index — in two documents, or twice in one. Every such substring
//! of length m ≥ L is covered by its m − L + 1 L-grams, each of which occurs twice too, so the
//! duplicated tokens are exactly the union of `[p, p + L)` over the positions `p` that start an
//! L-gram occurring at least twice: the L-grams are the runs of the suffix arrays
//! ([`crate::runs`]) and a run of two or more entries marks all its positions. Across shards the
//! pieces' runs are merged by L-gram (as [`crate::top`] does), and an L-gram found once in each
//! of two shards marks both.
//!
//! What is reported:
//! - **segments**: the maximal runs of duplicated tokens, each inside one document (an L-gram
//!   never holds the separator);
//! - **clusters**: segments grouped by the L-gram they start with. A cluster lists that
//!   L-gram's occurrences in the whole index (every one a duplicated position), the documents
//!   holding them, and its text: the longest continuation of the L-gram that every occurrence
//!   shares (at least L tokens);
//! - per document: its tokens, duplicated tokens and their fraction, and its clusters.
//!
//! Exact: nothing is sampled or hashed. Memory: a bit per token position (the marks), plus the
//! segments and clusters found.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;

use familiar::index::{Index, ShardView};
use familiar::token::Token;
use familiar::{with_view, Error, Result};
use rayon::prelude::*;

use crate::runs::{self, Batch, Stream};

mod remove;
pub use remove::{check_copy_target, remove_duplicates, RemoveSummary, RemovedFile, SUMMARY_FILE};

/// The longest `min_len` accepted (in tokens).
pub const MAX_MIN_LEN: usize = 4096;

/// What counts as a duplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateOptions {
    /// The shortest duplicated substring, in tokens (Lee et al. use 50).
    pub min_len: usize,
    /// How many document ids each cluster lists (`documents` counts them all).
    pub docs_per_cluster: usize,
}

impl Default for DuplicateOptions {
    fn default() -> Self {
        DuplicateOptions {
            min_len: 50,
            docs_per_cluster: 10,
        }
    }
}

/// A maximal run of duplicated tokens inside one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Global document id.
    pub doc_id: u64,
    /// First token of the run, counted from the document's first token.
    pub start: u64,
    /// One past its last token.
    pub end: u64,
    /// The cluster of the L-gram it starts with (an index into [`Duplicates::clusters`]).
    pub cluster: u64,
}

/// A row of the `duplicates` table: one document that holds duplicated tokens.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DuplicateDocRow {
    /// Global document id.
    pub doc_id: u64,
    /// The document's tokens.
    pub tokens: u64,
    /// Its duplicated tokens.
    pub duplicated_tokens: u64,
    /// `duplicated_tokens / tokens`.
    pub duplicated_fraction: f64,
    /// Its segments (maximal runs of duplicated tokens).
    pub segments: u64,
    /// The clusters its segments start, in order of first appearance, each once.
    pub clusters: Vec<u64>,
}

impl familiar::table::TableRow for DuplicateDocRow {
    const TABLE: &'static str = "duplicates";
}

/// A row of the `duplicate_clusters` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DuplicateClusterRow {
    /// The cluster's number (clusters are numbered in the order their first segment appears).
    pub cluster: u64,
    /// Tokens of `text`: the longest continuation of the cluster's L-gram that all its
    /// occurrences share.
    pub length: u64,
    /// The shared text.
    pub text: String,
    /// Occurrences of the cluster's L-gram in the index.
    pub occurrences: u64,
    /// Documents holding it.
    pub documents: u64,
    /// Segments that start with it.
    pub segments: u64,
    /// The first documents holding it (ids in increasing order, at most `docs_per_cluster`).
    pub doc_ids: Vec<u64>,
}

impl familiar::table::TableRow for DuplicateClusterRow {
    const TABLE: &'static str = "duplicate_clusters";
}

/// Totals over the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DuplicateSummary {
    /// The L asked for.
    pub min_len: u64,
    /// Documents in the index.
    pub documents: u64,
    /// Tokens in the index (separators excluded).
    pub tokens: u64,
    /// Documents holding duplicated tokens.
    pub duplicated_documents: u64,
    /// Duplicated tokens.
    pub duplicated_tokens: u64,
    /// Segments.
    pub segments: u64,
    /// Clusters.
    pub clusters: u64,
}

/// Everything [`duplicates`] finds.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicates {
    /// Totals.
    pub summary: DuplicateSummary,
    /// Documents with duplicated tokens, by id.
    pub documents: Vec<DuplicateDocRow>,
    /// Clusters, by number.
    pub clusters: Vec<DuplicateClusterRow>,
    /// Segments, by document and position.
    pub segments: Vec<Segment>,
}

/// The exact duplicates of `index` (see the module's documentation); `progress` is called with
/// the number of suffix-array entries scanned since its last call (they add up to the index's
/// token positions).
pub fn duplicates(
    index: &Index,
    options: &DuplicateOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Duplicates> {
    let l = options.min_len;
    if l == 0 || l > MAX_MIN_LEN {
        return Err(Error::Query(format!(
            "{} {l}: expected a length from 1 to {MAX_MIN_LEN} tokens",
            familiar::option::name("min_len")
        )));
    }
    let marks = mark_starts(index, l, progress)?;
    let segments = find_segments(l, &marks);
    drop(marks);
    let (segments, keys) = assign_clusters(index, l, segments)?;
    let tokenizer = index.tokenizer()?;
    let counts = segment_counts(&segments, keys.len());
    let clusters = keys
        .par_iter()
        .zip(counts)
        .enumerate()
        .map(|(c, (&(key_shard, key_pos, seg_len), segs))| {
            let (mut row, shared) =
                cluster_row(index, c as u64, key_shard, key_pos, seg_len, l, options)?;
            row.segments = segs;
            row.text = tokenizer.decode(&shared)?;
            Ok(row)
        })
        .collect::<Result<Vec<_>>>()?;
    let documents = document_rows(index, &segments)?;
    let summary = DuplicateSummary {
        min_len: l as u64,
        documents: index.documents(),
        tokens: index
            .shards()
            .iter()
            .map(|s| s.manifest.tokens - s.manifest.documents)
            .sum(),
        duplicated_documents: documents.len() as u64,
        duplicated_tokens: documents.iter().map(|d| d.duplicated_tokens).sum(),
        segments: segments.len() as u64,
        clusters: clusters.len() as u64,
    };
    Ok(Duplicates {
        summary,
        documents,
        clusters,
        segments,
    })
}

/// A bit per token position of each shard: whether an L-gram occurring twice or more starts
/// there.
struct Marks(Vec<Vec<AtomicU64>>);

impl Marks {
    fn set(&self, shard: usize, pos: u64) {
        self.0[shard][(pos / 64) as usize].fetch_or(1 << (pos % 64), Ordering::Relaxed);
    }
}

/// Entries scanned between calls of the progress callback.
const PROGRESS_STEP: u64 = 1 << 20;

fn mark_starts(index: &Index, l: usize, progress: &(dyn Fn(u64) + Sync)) -> Result<Marks> {
    let marks = Marks(
        index
            .shards()
            .iter()
            .map(|s| {
                let len = with_view!(s, |v| v.len());
                (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
            })
            .collect(),
    );
    let single_shard = index.shards().len() == 1;
    let parts = runs::pieces_per_shard(index);
    std::thread::scope(|scope| -> Result<()> {
        let mut streams = Vec::new();
        let mut scanners = Vec::new();
        let mut failures = Vec::new();
        for (s, shard) in index.shards().iter().enumerate() {
            for (from, to) in runs::pieces(with_view!(shard, |v| v.len()), parts) {
                let marks = &marks;
                // One shard: every duplicate is inside it, and nothing needs merging.
                let (tx, rx) = sync_channel::<Result<Batch>>(4);
                let handle = scope.spawn(move || {
                    let send: &dyn Fn(Batch) -> bool = &|b| tx.send(Ok(b)).is_ok();
                    let result = with_view!(shard, |v| scan(
                        &v,
                        l,
                        from,
                        to,
                        s,
                        marks,
                        progress,
                        (!single_shard).then_some(send),
                    ));
                    if let Err(e) = result {
                        let _ = tx.send(Err(e));
                    }
                });
                scanners.push(handle);
                if single_shard {
                    failures.push(rx);
                } else {
                    streams.push(Stream::new(rx, l, s));
                }
            }
        }
        let merged = merge(&mut streams, l, &marks);
        drop(streams);
        runs::join_all(scanners)?;
        for rx in failures {
            if let Ok(Err(e)) = rx.try_recv() {
                return Err(e);
            }
        }
        merged
    })?;
    Ok(marks)
}

/// Scans entries `from..to` of shard `s`: a run of two or more entries marks its positions; with
/// `send`, every run also goes to the merge (its position when it has one entry).
#[allow(clippy::too_many_arguments)]
fn scan<T: Token>(
    v: &ShardView<'_, T>,
    l: usize,
    from: u64,
    to: u64,
    s: usize,
    marks: &Marks,
    progress: &(dyn Fn(u64) + Sync),
    send: Option<&dyn Fn(Batch) -> bool>,
) -> Result<()> {
    let mut batch = Batch::with_capacity(l);
    let mut open = true;
    let mut scanned = 0u64;
    let mut last = from;
    runs::scan_runs(v, l, from, to, &mut |g, i, end| {
        if end - i >= 2 {
            for j in i..end {
                marks.set(s, v.suffix(j)? as u64);
            }
        }
        if let Some(send) = send {
            batch.keys.extend(g.iter().map(|t| t.to_u32()));
            batch.counts.push(end - i);
            batch.single.push(if end - i == 1 {
                v.suffix(i)? as u64
            } else {
                u64::MAX
            });
            if batch.is_full() {
                open = send(std::mem::replace(&mut batch, Batch::with_capacity(l)));
            }
        }
        scanned += end.min(to).saturating_sub(last);
        last = end.min(to).max(last);
        if scanned >= PROGRESS_STEP {
            progress(scanned);
            scanned = 0;
        }
        Ok(open)
    })?;
    if let Some(send) = send {
        if open && !batch.counts.is_empty() {
            send(batch);
        }
    }
    progress(scanned + to.saturating_sub(last));
    Ok(())
}

/// Merges the pieces' runs: an L-gram whose runs add up to two or more entries marks the
/// positions of its one-entry runs (the longer runs were marked by their scanners).
fn merge(streams: &mut [Stream], l: usize, marks: &Marks) -> Result<()> {
    let mut key = vec![0u32; l];
    while runs::least(streams, &mut key)? {
        let total: u64 = streams
            .iter()
            .filter(|s| s.is_at(&key))
            .map(|s| s.batch.counts[s.at])
            .sum();
        for s in streams.iter_mut() {
            if s.is_at(&key) {
                let single = s.batch.single[s.at];
                if total >= 2 && single != u64::MAX {
                    marks.set(s.shard, single);
                }
                s.at += 1;
            }
        }
    }
    Ok(())
}

/// A segment before clustering: shard, start and end positions in the shard's token file.
struct Found {
    shard: usize,
    start: u64,
    end: u64,
}

/// The maximal runs of duplicated positions, shard by shard, in order.
fn find_segments(l: usize, marks: &Marks) -> Vec<Found> {
    let mut out = Vec::new();
    for (s, bits) in marks.0.iter().enumerate() {
        let mut open: Option<(u64, u64)> = None;
        for (w, word) in bits.iter().enumerate() {
            let mut word = word.load(Ordering::Relaxed);
            while word != 0 {
                let p = w as u64 * 64 + u64::from(word.trailing_zeros());
                word &= word - 1;
                let end = p + l as u64;
                open = match open {
                    Some((a, b)) if p <= b => Some((a, b.max(end))),
                    Some((a, b)) => {
                        out.push(Found {
                            shard: s,
                            start: a,
                            end: b,
                        });
                        Some((p, end))
                    }
                    None => Some((p, end)),
                };
            }
        }
        if let Some((a, b)) = open {
            out.push(Found {
                shard: s,
                start: a,
                end: b,
            });
        }
    }
    out
}

/// Where a cluster's first segment lies: shard, position, length.
type FirstSegment = (usize, u64, u64);

/// Gives each segment its document and cluster. Returns the segments and, per cluster, where
/// its first segment lies (shard, position, length).
fn assign_clusters(
    index: &Index,
    l: usize,
    found: Vec<Found>,
) -> Result<(Vec<Segment>, Vec<FirstSegment>)> {
    let mut clusters: HashMap<Vec<u32>, u64> = HashMap::new();
    let mut keys = Vec::new();
    let mut segments = Vec::with_capacity(found.len());
    for f in found {
        let shard = &index.shards()[f.shard];
        let (doc_id, start, end, key) = with_view!(shard, |v| locate(&v, l, &f))?;
        let next = keys.len() as u64;
        let cluster = *clusters.entry(key).or_insert_with(|| {
            keys.push((f.shard, f.start, f.end - f.start));
            next
        });
        segments.push(Segment {
            doc_id,
            start,
            end,
            cluster,
        });
    }
    Ok((segments, keys))
}

/// A segment's global document, its start and end in the document, and its L-gram.
fn locate<T: Token>(
    v: &ShardView<'_, T>,
    l: usize,
    f: &Found,
) -> Result<(u64, u64, u64, Vec<u32>)> {
    let local = v.doc_of(f.start)?;
    let (a, b) = v.doc_span(local)?;
    if f.end > b as u64 {
        return Err(Error::corrupt(
            v.dir.join(familiar::manifest::SUFFIX_ARRAY_FILE),
            format!(
                "a repeated {l}-gram at position {} runs past its document's end",
                f.end - l as u64
            ),
        ));
    }
    let key = v.tokens[f.start as usize..f.start as usize + l]
        .iter()
        .map(|t| t.to_u32())
        .collect();
    Ok((
        v.first_doc + local,
        f.start - a as u64,
        f.end - a as u64,
        key,
    ))
}

fn segment_counts(segments: &[Segment], clusters: usize) -> Vec<u64> {
    let mut counts = vec![0u64; clusters];
    for s in segments {
        counts[s.cluster as usize] += 1;
    }
    counts
}

/// A cluster's row, but for `segments` and `text` (filled in by the caller), and the shared
/// tokens.
fn cluster_row(
    index: &Index,
    cluster: u64,
    key_shard: usize,
    key_pos: u64,
    seg_len: u64,
    l: usize,
    options: &DuplicateOptions,
) -> Result<(DuplicateClusterRow, Vec<u32>)> {
    // The first segment's tokens: the shared text is a prefix of them (it is duplicated, so it
    // lies inside every occurrence's segment, this one's too).
    let reference: Vec<u32> = with_view!(&index.shards()[key_shard], |v| v.tokens
        [key_pos as usize..(key_pos + seg_len) as usize]
        .iter()
        .map(|t| t.to_u32())
        .collect());
    let mut shared = reference.len();
    let mut occurrences = 0u64;
    let mut docs = Vec::new();
    for shard in index.shards() {
        occurrences += with_view!(shard, |v| occurrences_in(
            &v,
            &reference,
            l,
            &mut shared,
            &mut docs
        ))?;
    }
    if occurrences < 2 || shared < l {
        // Only suffix arrays out of order make a scan and a search disagree.
        return Err(Error::corrupt(
            index.dir(),
            format!(
                "the {l}-gram that starts duplicate cluster {cluster} was found repeated by the \
                 scan but occurs {occurrences} times by search (suffix arrays out of order; \
                 `familiar index verify --full` names the shard)"
            ),
        ));
    }
    docs.sort_unstable();
    docs.dedup();
    let row = DuplicateClusterRow {
        cluster,
        length: shared as u64,
        text: String::new(),
        occurrences,
        documents: docs.len() as u64,
        segments: 0,
        doc_ids: docs.into_iter().take(options.docs_per_cluster).collect(),
    };
    Ok((row, reference[..shared].to_vec()))
}

/// The occurrences in one shard of the L-gram that `reference` starts with: their documents go
/// to `docs`, and `shared` shrinks to the longest prefix of `reference` that all of them share.
/// Returns how many there are.
fn occurrences_in<T: Token>(
    v: &ShardView<'_, T>,
    reference: &[u32],
    l: usize,
    shared: &mut usize,
    docs: &mut Vec<u64>,
) -> Result<u64> {
    let pattern = crate::ngram::convert(&reference[..l])?;
    let (lo, hi) = v.range(&pattern)?;
    for j in lo..hi {
        let pos = v.suffix(j)?;
        docs.push(v.first_doc + v.doc_of(pos as u64)?);
        let same = v.tokens[pos..]
            .iter()
            .zip(&reference[..*shared])
            .take_while(|(t, r)| t.to_u32() == **r)
            .count();
        *shared = (*shared).min(same);
    }
    Ok(hi - lo)
}

/// One row per document with segments.
fn document_rows(index: &Index, segments: &[Segment]) -> Result<Vec<DuplicateDocRow>> {
    let mut rows: Vec<DuplicateDocRow> = Vec::new();
    for s in segments {
        match rows.last_mut() {
            Some(r) if r.doc_id == s.doc_id => {
                r.duplicated_tokens += s.end - s.start;
                r.segments += 1;
                if !r.clusters.contains(&s.cluster) {
                    r.clusters.push(s.cluster);
                }
            }
            _ => rows.push(DuplicateDocRow {
                doc_id: s.doc_id,
                tokens: 0,
                duplicated_tokens: s.end - s.start,
                duplicated_fraction: 0.0,
                segments: 1,
                clusters: vec![s.cluster],
            }),
        }
    }
    for r in rows.iter_mut() {
        let (shard, local) = index.locate_doc(r.doc_id)?;
        let (a, b) = with_view!(shard, |v| v.doc_span(local))?;
        r.tokens = (b - a) as u64;
        r.duplicated_fraction = r.duplicated_tokens as f64 / r.tokens as f64;
    }
    Ok(rows)
}

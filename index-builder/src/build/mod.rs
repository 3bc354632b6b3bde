//! The offline build: corpus files → tokenized shards with suffix arrays, resumable and atomic.
//!
//! Documents stream from the inputs (a reader thread parses, a rayon pool tokenizes batches in
//! parallel) into the current shard, in input order. A shard is cut before the document that would
//! take it past the shard size, then published: its files are written into `.tmp-shard-NNNNN`,
//! synced, and the directory renamed to `shard-NNNNN`. A half-built shard is never visible. A
//! document longer than the shard size gets a shard of its own, which passes the size (a memory
//! budget): it is reported as it is met ([`BuildEvent::Oversized`]) and counted in the
//! [`BuildReport`] ([`BuildReport::oversized_documents`]). Progress reaches the caller as
//! [`BuildEvent`]s ([`build_with_progress`]); the library draws nothing.
//!
//! `build.json` is written before the first shard and records the inputs, the tokenizer hash and the
//! shard size. Running the same build again verifies the published shards (sizes and checksums),
//! keeps those that verify, and resumes reading the inputs where the last one ended, so the result
//! is byte-identical to an uninterrupted build. `manifest.json`, written last, marks the index
//! complete. The whole build holds the directory's lock ([`familiar::lock::DirLock`]), so a second
//! build into the same `--out` fails at once instead of interleaving its files with the first's.
//!
//! # Input fingerprints
//!
//! Sizes alone do not show that an input is the one an interrupted build read: an edit that keeps
//! the size would make a resumed index mix the old text (in the kept shards) with the new. So the
//! reader fingerprints what it reads, while it reads it (xxh3, no second pass; see
//! [`familiar::corpus`]), and the fingerprints are recorded where they are facts:
//!
//! - `build.json` is written before any input is read, so it cannot hold whole-file fingerprints
//!   then. While the build is unfinished it holds, per input, a `stamp` (modification and change
//!   times, device, inode) next to the size. When the build completes, it is rewritten (before
//!   `manifest.json`) with each input's whole-file `xxh3` and without the stamps: the same bytes
//!   whether the build was interrupted or not, and what a finished index was built from.
//! - Each shard manifest records `input_fingerprints`: the whole-file xxh3 of every input its
//!   reading finished, and `end`, the fingerprint of the records of the file it stopped in up to
//!   its `input_end` cursor (JSONL: the decompressed lines; Parquet and text files: the whole
//!   file). Both depend only on the contents, never on how far the reader had read ahead.
//!
//! A resume checks the inputs against what the kept shards recorded: the file at the cursor is
//! re-read up to the cursor anyway (compressed streams cannot seek), and its fingerprint must
//! match `end`; a file wholly before the cursor, which the resume would not read, is re-read and
//! compared with its recorded whole-file fingerprint only when its stamp changed (an edit changes
//! its times). A difference is refused, naming the file; `--restart` ([`BuildOptions::restart`])
//! discards the partial build. Files after the cursor have not been read, and the file at the
//! cursor is checked only up to it: they may even have changed size (a bad line after the
//! cursor, fixed), and the plan takes their new sizes. A plan that differs otherwise (other
//! inputs or sizes, tokenizer, options; or any size, once the build is complete) is refused with
//! what differs, unless no shard was published yet: then nothing is lost, and the new plan
//! replaces the old (a first attempt that failed on a bad input line, fixed since).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use familiar::corpus::{
    self, CorpusReader, Document, Fields, Fingerprints, InputFile, ReadOptions,
};
use familiar::error::IoContext;
use familiar::format::{self, FileKind, Header};
use familiar::lock::DirLock;
use familiar::manifest::{
    self, BuildPlan, FileEntry, FinishedInput, IndexManifest, InputCursor, InputFingerprints,
    PlannedInput, ShardEntry, ShardManifest, TokenizerEntry,
};
use familiar::token::TokenWidth;
use familiar::tokenizer::Tokenizer;
use familiar::{Error, Result};
use rayon::prelude::*;

use crate::documents::{DocumentRow, DocumentsWriter};
use crate::sa::{SaInput, MAX_SHARD_TOKENS};

mod plan;
mod shard;

use plan::*;
use shard::*;

/// Runs `$body` with `$t` the element type of token files of width `$width` (`u16` or `u32`).
macro_rules! with_token_type {
    ($width:expr, $t:ident => $body:expr) => {
        match $width {
            TokenWidth::U16 => {
                type $t = u16;
                $body
            }
            TokenWidth::U32 => {
                type $t = u32;
                $body
            }
        }
    };
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The tokenizer.json.
    pub tokenizer: PathBuf,
    /// The index directory to create (or resume).
    pub out: PathBuf,
    /// Files, directories or glob patterns.
    pub inputs: Vec<String>,
    /// Field names.
    pub fields: Fields,
    /// Token positions per shard; `None` sizes shards from available memory (or reuses the size
    /// recorded by the build being resumed).
    pub shard_tokens: Option<u64>,
    /// Skip (and count) malformed records instead of failing.
    pub skip_invalid: bool,
    /// Accept input files without documents (counted) instead of failing.
    pub allow_empty: bool,
    /// Worker threads (tokenization and suffix sorting); `None` uses every core.
    pub threads: Option<usize>,
    /// Build each shard's tantivy text index (for concept counts) alongside the suffix array.
    pub text_index: bool,
    /// Discard the previous build in `out` (finished or not) and start over. Refused when `out`
    /// holds anything that is not part of a familiar build.
    pub restart: bool,
    /// Stop, as if interrupted, once this run has published this many shards while documents
    /// remain (no `manifest.json`; running again resumes). A testing aid for resumption.
    pub stop_after_shards: Option<usize>,
    /// Set from elsewhere (another thread, a progress callback) to stop the build as if the
    /// process had been interrupted: it returns [`Error::Interrupted`] after the current batch
    /// of documents (or before it finishes the index), the shards published so far stay, and a
    /// rerun resumes after them.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl BuildOptions {
    /// Options with defaults for everything but the tokenizer, output and inputs.
    pub fn new(
        tokenizer: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
        inputs: Vec<String>,
    ) -> BuildOptions {
        BuildOptions {
            tokenizer: tokenizer.into(),
            out: out.into(),
            inputs,
            fields: Fields::default(),
            shard_tokens: None,
            skip_invalid: false,
            allow_empty: false,
            threads: None,
            text_index: true,
            restart: false,
            stop_after_shards: None,
            cancel: None,
        }
    }

    /// [`Error::Interrupted`] if [`BuildOptions::cancel`] is set.
    fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(Error::Interrupted(format!(
                "the build of {} was stopped; the shards published so far are kept, and running \
                 it again resumes after them",
                self.out.display()
            ))),
            _ => Ok(()),
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// Shards built by this run.
    pub shards_built: usize,
    /// Shards kept from an earlier, interrupted run.
    pub shards_reused: usize,
    /// Documents in the index.
    pub documents: u64,
    /// Token positions in the index (separators included).
    pub tokens: u64,
    /// Tokens this run tokenized (separators excluded).
    pub tokens_tokenized: u64,
    /// Malformed records skipped by this run (with `skip_invalid`).
    pub skipped_records: u64,
    /// Input files without documents (with `allow_empty`).
    pub empty_inputs: Vec<PathBuf>,
    /// Files inside input directories that were not read (unrecognized names).
    pub ignored_files: Vec<PathBuf>,
    /// Directories inside the inputs that familiar wrote (an index, a build, a gradient store,
    /// a directory a familiar process is writing into, the `--out` directory itself): not read
    /// as corpus (see [`corpus::expand_inputs_excluding`]).
    pub skipped_outputs: Vec<corpus::SkippedDir>,
    /// Documents read by this run that were longer than the shard size (tokens + separator
    /// more than `shard_tokens`): each was put in a shard of its own, which holds more tokens
    /// than the shard size promises (the shard size is a memory budget).
    pub oversized_documents: u64,
    /// The first [`OVERSIZED_EXAMPLES`] of them (the largest is [`BuildReport::largest_oversized`]).
    pub oversized_examples: Vec<OversizedDocument>,
    /// The longest of them.
    pub largest_oversized: Option<OversizedDocument>,
    /// Shard size used.
    pub shard_tokens: u64,
    /// Whether the index was already complete.
    pub already_complete: bool,
    /// With [`BuildOptions::restart`]: the shards of the previous build that were discarded
    /// (`None` when the directory held no build).
    pub discarded_shards: Option<usize>,
    /// The plan of an earlier attempt that published no shard, replaced by this run's: what
    /// differed.
    pub replaced_plan: Option<String>,
    /// Stopped by [`BuildOptions::stop_after_shards`]: the index is not complete.
    pub stopped: bool,
    /// Inputs of a resumed build that changed size since it started, where it had not read them
    /// yet (or read a part that was checked unchanged).
    pub resized_inputs: Vec<PathBuf>,
    /// Wall time reading and tokenizing.
    pub tokenize_time: Duration,
    /// Wall time in suffix sorting.
    pub suffix_array_time: Duration,
    /// Wall time writing files.
    pub write_time: Duration,
    /// Wall time finishing text indexes (commit, merge, word dictionary); their indexing runs in
    /// the background during tokenization.
    pub text_index_time: Duration,
    /// Total wall time.
    pub total_time: Duration,
}

/// A document longer than the shard size (see [`BuildReport::oversized_documents`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizedDocument {
    /// Its global document number.
    pub doc_id: u64,
    /// Its id from the corpus.
    pub external_id: String,
    /// The input file it was read from.
    pub input_file: String,
    /// Its line (JSONL), row (Parquet) or 1 (text file).
    pub record: u64,
    /// Its tokens (without the separator).
    pub tokens: u64,
    /// The shard it makes on its own.
    pub shard: u32,
}

impl std::fmt::Display for OversizedDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "document {} (id {:?}, {}:{}) has {} tokens",
            self.doc_id, self.external_id, self.input_file, self.record, self.tokens
        )
    }
}

/// Oversized documents listed by name in a [`BuildReport`] (and warned about as they are met);
/// the rest are counted.
pub const OVERSIZED_EXAMPLES: usize = 10;

/// The directory name of shard `i` (`shard-00007`).
pub fn shard_dir_name(i: u32) -> String {
    format!("shard-{i:05}")
}

/// What a running build reports ([`build_with_progress`]). Events come from the thread that
/// called the build, in order.
#[derive(Debug, Clone, Copy)]
pub enum BuildEvent<'a> {
    /// After each batch of documents: `bytes` of the inputs read of `total_bytes` (both counting
    /// the inputs a resumed build had read before), the shard being filled, the tokens this run
    /// tokenized and their rate (reading and tokenizing time only).
    Read {
        /// Input bytes read.
        bytes: u64,
        /// Input bytes in all.
        total_bytes: u64,
        /// The shard being filled.
        shard: u32,
        /// Tokens tokenized by this run.
        tokens: u64,
        /// Tokens per second of reading and tokenizing.
        tokens_per_second: f64,
    },
    /// A shard's suffixes are being sorted (and its text index merged, with `text_index`).
    Sorting {
        /// The shard.
        shard: u32,
        /// Its token positions.
        tokens: u64,
        /// Whether its text index is being merged beside the sort.
        text_index: bool,
    },
    /// One of the first [`OVERSIZED_EXAMPLES`] documents longer than the shard size, as it is
    /// met: it makes a shard of its own of about `bytes` while sorted (`last`: the last one
    /// reported this way; the rest are only counted in the [`BuildReport`]).
    Oversized {
        /// The document.
        document: &'a OversizedDocument,
        /// The shard size it passes.
        shard_tokens: u64,
        /// Memory its shard takes while its suffix array is sorted, about.
        bytes: u64,
        /// Whether further ones will only be counted.
        last: bool,
    },
    /// Reading, tokenizing and sorting are over (the index files are being finished).
    Done,
}

/// A callback receiving [`BuildEvent`]s.
pub type Progress<'a> = dyn Fn(BuildEvent) + Sync + 'a;

/// Builds (or resumes, or confirms) the index described by `options`.
pub fn build(options: &BuildOptions) -> Result<BuildReport> {
    build_with_progress(options, &|_| {})
}

/// [`build`], reporting progress to `progress`.
pub fn build_with_progress(options: &BuildOptions, progress: &Progress) -> Result<BuildReport> {
    let threads = options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("familiar-tokenize-{i}"))
        .build()
        .map_err(|e| Error::Config(format!("cannot start {threads} threads: {e}")))?;
    pool.install(|| {
        build_in_pool(&Job {
            options,
            threads,
            progress,
        })
    })
}

/// A build's options with what was settled for this run.
struct Job<'a> {
    options: &'a BuildOptions,
    /// Worker threads.
    threads: usize,
    progress: &'a Progress<'a>,
}

fn build_in_pool(job: &Job) -> Result<BuildReport> {
    let options = job.options;
    let started = Instant::now();
    let tokenizer_bytes = Tokenizer::read_file(&options.tokenizer)?;
    let tokenizer = Tokenizer::from_bytes(&tokenizer_bytes, &options.tokenizer)?;
    let out = &options.out;
    // The index (or any other output of familiar) inside an input directory is not corpus.
    let expanded = corpus::expand_inputs_excluding(&options.inputs, Some(out))?;
    std::fs::create_dir_all(out).at(out)?;
    // Held until the build returns: one build at a time per directory.
    let _lock = DirLock::acquire(out, "index build")?;
    let mut report = BuildReport {
        ignored_files: expanded.ignored.clone(),
        skipped_outputs: expanded.skipped.clone(),
        ..Default::default()
    };
    if options.restart {
        report.discarded_shards = discard_previous_build(out)?;
    }
    let settled = settle_plan(options, &tokenizer, &expanded.files)?;
    let mut plan = settled.plan;
    report.shard_tokens = plan.shard_tokens;
    report.replaced_plan = settled.replaced;

    let manifest_path = out.join(manifest::MANIFEST_FILE);
    let done = reusable_shards(out, &plan)?;
    if !settled.resized.is_empty() {
        report.resized_inputs =
            accept_resized_inputs(out, &mut plan, &expanded.files, &settled.resized, &done)?;
    }
    if manifest_path.exists() {
        // A finished build: confirm the manifest lists exactly the verified shards.
        let m: IndexManifest = manifest::read(&manifest_path, IndexManifest::FORMAT)?;
        if m.shards.len() == done.len()
            && m.shards
                .iter()
                .zip(&done)
                .all(|(e, s)| e.dir == shard_dir_name(s.shard))
        {
            report.already_complete = true;
            report.shards_reused = done.len();
            report.documents = m.documents;
            report.tokens = m.tokens;
            report.total_time = started.elapsed();
            return Ok(report);
        }
        std::fs::remove_file(&manifest_path).at(&manifest_path)?;
    }
    check_inputs_before_cursor(&plan, &expanded.files, &done)?;
    report.shards_reused = done.len();
    let files = expanded.files;
    let (shards, fingerprints) = with_token_type!(tokenizer.token_width(), T => {
        run_shards::<T>(job, &plan, &tokenizer, files, done, &mut report)
    })?;
    if report.stopped {
        report.total_time = started.elapsed();
        return Ok(report);
    }
    options.check_cancel()?;
    finish_plan(out, &plan, &shards, &fingerprints)?;
    finish_index(out, &shards, &tokenizer, &tokenizer_bytes, &mut report)?;
    report.total_time = started.elapsed();
    Ok(report)
}

/// Documents read and tokenized together.
const BATCH_TEXT_BYTES: usize = 8 << 20;
const BATCH_DOCS: usize = 4096;

fn run_shards<T: SaInput>(
    job: &Job,
    plan: &BuildPlan,
    tokenizer: &Tokenizer,
    files: Vec<InputFile>,
    done: Vec<ShardManifest>,
    report: &mut BuildReport,
) -> Result<(Vec<ShardManifest>, Fingerprints)> {
    let Job {
        options,
        threads,
        progress,
    } = *job;
    let out = &options.out;
    let cursor = done.last().map_or(InputCursor::default(), |m| m.input_end);
    // What the last kept shard recorded about the records before the cursor, checked when they
    // are re-read.
    let expected = done
        .last()
        .and_then(|m| m.input_fingerprints.as_ref())
        .map(|f| f.end.clone());
    let mut sink = ShardSink::<T>::new(out, plan, tokenizer, threads, done)?;
    sink.stop_after = options.stop_after_shards;
    let total_bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let done_bytes: u64 = files.iter().take(cursor.file).map(|f| f.bytes).sum();
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    let read_options = ReadOptions {
        fields: options.fields.clone(),
        skip_invalid: options.skip_invalid,
        allow_empty: options.allow_empty,
    };
    let mut reader = CorpusReader::new(files, read_options, cursor);
    if let Some(e) = expected {
        reader = reader.expect_at_cursor(e);
    }
    let bytes_read = reader.bytes_read();
    let fingerprints = reader.fingerprints();
    sink.fingerprints = Some(fingerprints.clone());

    // Each document with the fingerprint of its input's records up to it.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<(Document, u64)>>>(2);
    std::thread::scope(|scope| -> Result<()> {
        let reader_thread = std::thread::Builder::new()
            .name("familiar-read".into())
            .spawn_scoped(scope, move || {
                let mut reader = reader;
                let mut batch = Vec::new();
                let mut bytes = 0usize;
                while let Some(doc) = reader.next() {
                    match doc {
                        Ok(d) => {
                            bytes += d.text.len();
                            let consumed = reader.consumed_fingerprint().unwrap_or(0);
                            batch.push((d, consumed));
                            if bytes >= BATCH_TEXT_BYTES || batch.len() >= BATCH_DOCS {
                                if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                                    return reader;
                                }
                                bytes = 0;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return reader;
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
                reader
            })
            .map_err(|e| Error::Config(format!("cannot start the reader thread: {e}")))?;

        let tokenize_started = Instant::now();
        let result = (|| -> Result<()> {
            for batch in rx.iter() {
                options.check_cancel()?;
                let batch = batch?;
                let ids: Vec<Result<Vec<u32>>> = batch
                    .par_iter()
                    .map(|(d, _)| tokenizer.encode(&d.text))
                    .collect();
                for ((doc, consumed), ids) in batch.iter().zip(ids) {
                    let ids = ids.map_err(|e| match e {
                        Error::Tokenizer { reason, .. } => Error::input(
                            &names[doc.file],
                            doc.record,
                            format!("cannot tokenize: {reason}"),
                        ),
                        other => other,
                    })?;
                    sink.push(doc, &ids, *consumed, &names[doc.file], report, progress)?;
                    if sink.stopped {
                        break;
                    }
                }
                if sink.stopped {
                    report.stopped = true;
                    return Ok(());
                }
                let secs = tokenize_started
                    .elapsed()
                    .saturating_sub(sink.busy)
                    .as_secs_f64()
                    .max(1e-9);
                progress(BuildEvent::Read {
                    bytes: done_bytes + bytes_read.load(Ordering::Relaxed),
                    total_bytes,
                    shard: sink.next_shard,
                    tokens: report.tokens_tokenized,
                    tokens_per_second: report.tokens_tokenized as f64 / secs,
                });
            }
            options.check_cancel()?;
            sink.cut(report, progress)
        })();
        drop(rx);
        let reader = reader_thread
            .join()
            .map_err(|_| Error::Bug("the reader thread panicked".into()))?;
        report.tokenize_time = tokenize_started.elapsed().saturating_sub(sink.busy);
        report.skipped_records = reader.skipped();
        report.empty_inputs = reader.empty_inputs().to_vec();
        result
    })?;
    progress(BuildEvent::Done);
    Ok((sink.published, fingerprints))
}

/// Builds an index directly from token ids, one `Vec<u32>` per document, bypassing corpus files
/// and tokenization: for tests and benchmarks over generated token streams. `tokenizer` must cover
/// every id (see [`crate::fixtures::word_level_tokenizer`]). Not resumable: `out` must not exist.
pub fn build_from_tokens(
    tokenizer_path: &Path,
    out: &Path,
    docs: impl IntoIterator<Item = Vec<u32>>,
    shard_tokens: u64,
    threads: usize,
) -> Result<BuildReport> {
    let started = Instant::now();
    let tokenizer_bytes = Tokenizer::read_file(tokenizer_path)?;
    let tokenizer = Tokenizer::from_bytes(&tokenizer_bytes, tokenizer_path)?;
    if out.exists() {
        return Err(Error::Conflict(format!("{} already exists", out.display())));
    }
    if !(2..=MAX_SHARD_TOKENS).contains(&shard_tokens) {
        return Err(Error::Config(format!(
            "shard size must be between 2 and {MAX_SHARD_TOKENS}, got {shard_tokens}"
        )));
    }
    std::fs::create_dir_all(out).at(out)?;
    let _lock = DirLock::acquire(out, "index build")?;
    let plan = BuildPlan {
        format: BuildPlan::FORMAT.into(),
        format_version: format::FORMAT_VERSION,
        tokenizer_hash: tokenizer.hash().into(),
        text_field: String::new(),
        id_field: String::new(),
        source_field: String::new(),
        metadata_field: String::new(),
        shard_tokens,
        skip_invalid: false,
        text_index: false,
        inputs: Vec::new(),
    };
    manifest::write_atomic(
        &out.join(manifest::BUILD_PLAN_FILE),
        &manifest::to_bytes(&plan)?,
    )?;
    let mut report = BuildReport {
        shard_tokens,
        ..Default::default()
    };
    let threads = threads.max(1);
    fn run<T: SaInput>(
        out: &Path,
        plan: &BuildPlan,
        tokenizer: &Tokenizer,
        threads: usize,
        docs: impl IntoIterator<Item = Vec<u32>>,
        report: &mut BuildReport,
    ) -> Result<Vec<ShardManifest>> {
        let progress: &Progress = &|_| {};
        let mut sink = ShardSink::<T>::new(out, plan, tokenizer, threads, Vec::new())?;
        for (i, ids) in docs.into_iter().enumerate() {
            if let Some(bad) = ids.iter().find(|&&t| t >= tokenizer.vocab_size()) {
                return Err(Error::Query(format!(
                    "document {i}: token {bad} is outside the vocabulary of {}",
                    tokenizer.vocab_size()
                )));
            }
            let doc = Document {
                text: String::new(),
                external_id: format!("doc-{i}"),
                source: None,
                metadata: Vec::new(),
                file: 0,
                record: i as u64 + 1,
            };
            sink.push(&doc, &ids, 0, "<tokens>", report, progress)?;
        }
        sink.cut(report, progress)?;
        Ok(sink.published)
    }
    let shards = with_token_type!(tokenizer.token_width(), T => {
        run::<T>(out, &plan, &tokenizer, threads, docs, &mut report)
    })?;
    finish_index(out, &shards, &tokenizer, &tokenizer_bytes, &mut report)?;
    report.total_time = started.elapsed();
    Ok(report)
}

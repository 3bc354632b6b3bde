//! The offline build: corpus files → tokenized shards with suffix arrays, resumable and atomic.
//!
//! Documents stream from the inputs (a reader thread parses, a rayon pool tokenizes batches in
//! parallel) into the current shard, in input order. A shard is cut before the document that would
//! take it past the shard size, then published: its files are written into `.tmp-shard-NNNNN`,
//! synced, and the directory renamed to `shard-NNNNN`. A half-built shard is never visible. A
//! document longer than the shard size gets a shard of its own, which passes the size (a memory
//! budget): it is warned about on stderr as it is met and counted in the [`BuildReport`]
//! ([`BuildReport::oversized_documents`]).
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
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Build each shard's tantivy text index (for concept counts) alongside the suffix array.
    pub text_index: bool,
    /// Discard the previous build in `out` (finished or not) and start over. Refused when `out`
    /// holds anything that is not part of a familiar build.
    pub restart: bool,
    /// Stop, as if interrupted, once this run has published this many shards while documents
    /// remain (no `manifest.json`; running again resumes). A testing aid for resumption.
    pub stop_after_shards: Option<usize>,
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
            progress: false,
            text_index: true,
            restart: false,
            stop_after_shards: None,
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

fn shard_dir_name(i: u32) -> String {
    format!("shard-{i:05}")
}

/// Builds (or resumes, or confirms) the index described by `options`.
pub fn build(options: &BuildOptions) -> Result<BuildReport> {
    let threads = options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("familiar-tokenize-{i}"))
        .build()
        .map_err(|e| Error::Config(format!("cannot start {threads} threads: {e}")))?;
    pool.install(|| build_in_pool(options, threads))
}

fn build_in_pool(options: &BuildOptions, threads: usize) -> Result<BuildReport> {
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
    let (shards, fingerprints) = match tokenizer.token_width() {
        TokenWidth::U16 => run_shards::<u16>(
            options,
            &plan,
            &tokenizer,
            files,
            done,
            threads,
            &mut report,
        )?,
        TokenWidth::U32 => run_shards::<u32>(
            options,
            &plan,
            &tokenizer,
            files,
            done,
            threads,
            &mut report,
        )?,
    };
    if report.stopped {
        report.total_time = started.elapsed();
        return Ok(report);
    }
    finish_plan(out, &plan, &shards, &fingerprints)?;
    finish_index(out, &shards, &tokenizer, &tokenizer_bytes, &mut report)?;
    report.total_time = started.elapsed();
    Ok(report)
}

/// The identity of a file, to tell whether it may have changed: modification and change times,
/// device and inode (an edit changes the times; a copy, the inode). Recorded in an unfinished
/// build's plan only (see the module documentation).
fn file_stamp(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(format!(
            "mtime {}.{:09} ctime {}.{:09} dev {} ino {}",
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.dev(),
            m.ino()
        ))
    }
    #[cfg(not(unix))]
    {
        let t = m
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(format!("mtime {}.{:09}", t.as_secs(), t.subsec_nanos()))
    }
}

/// Before resuming: every input wholly before the resume cursor (which this run will not read)
/// whose stamp changed since the plan was written is read again and must have the whole-file
/// fingerprint the shard that finished it recorded. (The file at the cursor is checked as it is
/// re-read, by the corpus reader; files after it have not been read yet.)
fn check_inputs_before_cursor(
    plan: &BuildPlan,
    files: &[InputFile],
    done: &[ShardManifest],
) -> Result<()> {
    let Some(last) = done.last() else {
        return Ok(());
    };
    let recorded: std::collections::BTreeMap<usize, &str> = done
        .iter()
        .filter_map(|m| m.input_fingerprints.as_ref())
        .flat_map(|f| f.finished.iter().map(|i| (i.file, i.xxh3.as_str())))
        .collect();
    for (i, (file, planned)) in files.iter().zip(&plan.inputs).enumerate() {
        if i >= last.input_end.file {
            break;
        }
        let Some(then) = planned.stamp.as_deref() else {
            continue;
        };
        if file_stamp(&file.path).as_deref() == Some(then) {
            continue;
        }
        // Shards written before fingerprints existed recorded none: nothing to compare with.
        let Some(want) = recorded.get(&i) else {
            continue;
        };
        let (now, _) = manifest::checksum_regular(&file.path, Some(file.bytes))?;
        if now != *want {
            return Err(corpus::changed_since(
                &file.path,
                format!("{want} recorded, {now} now"),
            ));
        }
    }
    Ok(())
}

/// Rewrites `build.json` for a complete build: every input's whole-file fingerprint (from the
/// shards that finished it, or from this run's reading), no stamps. The same bytes whether or not
/// the build was interrupted.
fn finish_plan(
    out: &Path,
    plan: &BuildPlan,
    shards: &[ShardManifest],
    read_now: &Fingerprints,
) -> Result<()> {
    let mut known: Vec<Option<String>> = vec![None; plan.inputs.len()];
    for f in shards
        .iter()
        .filter_map(|m| m.input_fingerprints.as_ref())
        .flat_map(|f| f.finished.iter())
    {
        if let Some(slot) = known.get_mut(f.file) {
            *slot = Some(f.xxh3.clone());
        }
    }
    let mut plan = plan.clone();
    for (i, input) in plan.inputs.iter_mut().enumerate() {
        input.stamp = None;
        input.xxh3 = read_now
            .get(i)
            .map(manifest::fingerprint)
            .or_else(|| known[i].take())
            .or_else(|| input.xxh3.take());
    }
    manifest::write_atomic(
        &out.join(manifest::BUILD_PLAN_FILE),
        &manifest::to_bytes(&plan)?,
    )
}

/// Whether `path` holds a JSON object whose `format` is `tag` (a familiar manifest of that kind,
/// whatever its version or state).
fn has_format_tag(path: &Path, tag: &str) -> bool {
    manifest::read_regular(path, manifest::MAX_MANIFEST_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("format").and_then(|f| f.as_str()) == Some(tag))
}

/// Whether a name is a shard directory's (`shard-NNNNN`).
fn is_shard_name(name: &str) -> bool {
    name.strip_prefix("shard-")
        .is_some_and(|n| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `--restart`: removes the previous build in `out` (its manifest, shards, tokenizer copy,
/// temporaries and plan, the plan last). Returns the number of shards discarded, or `None` when
/// `out` held no build. Refuses a directory that is not a familiar build, or that holds anything
/// else besides one.
fn discard_previous_build(out: &Path) -> Result<Option<usize>> {
    let mut ours = Vec::new();
    let mut foreign = Vec::new();
    let mut shards = 0;
    for entry in std::fs::read_dir(out).at(out)? {
        let entry = entry.at(out)?;
        let name = entry.file_name();
        if familiar::lock::is_lock_file(&name) {
            continue;
        }
        let text = name.to_string_lossy();
        if manifest::is_temp_name(&name)
            || text == manifest::BUILD_PLAN_FILE
            || text == manifest::MANIFEST_FILE
            || text == manifest::TOKENIZER_FILE
        {
            ours.push(entry.path());
        } else if is_shard_name(&text) && entry.path().is_dir() {
            shards += 1;
            ours.push(entry.path());
        } else {
            foreign.push(text.into_owned());
        }
    }
    if ours.is_empty() && foreign.is_empty() {
        return Ok(None);
    }
    let only_temporaries = foreign.is_empty()
        && ours
            .iter()
            .all(|p| p.file_name().is_some_and(manifest::is_temp_name));
    let is_build = has_format_tag(&out.join(manifest::BUILD_PLAN_FILE), BuildPlan::FORMAT)
        || has_format_tag(&out.join(manifest::MANIFEST_FILE), IndexManifest::FORMAT)
        || ours.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| is_shard_name(&n.to_string_lossy()))
                && has_format_tag(&p.join(manifest::MANIFEST_FILE), ShardManifest::FORMAT)
        });
    if !is_build && !only_temporaries {
        return Err(Error::Config(format!(
            "{} holds no familiar build (no build.json, manifest.json or shard of one), so \
             --restart will not empty it; choose a new or empty --out directory",
            out.display()
        )));
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(Error::Config(format!(
            "{} holds a familiar build but also {}, which are not part of it; --restart removes \
             only a build: move them elsewhere first",
            out.display(),
            foreign.join(", ")
        )));
    }
    // The manifest first (the directory stops looking complete), the plan last (until then it
    // still looks like a build, should this be interrupted).
    let rank = |p: &Path| match p.file_name().map(|n| n.to_string_lossy().into_owned()) {
        Some(n) if n == manifest::MANIFEST_FILE => 0,
        Some(n) if n == manifest::BUILD_PLAN_FILE => 2,
        _ => 1,
    };
    ours.sort_by_key(|p| rank(p));
    for p in ours {
        if p.is_dir() {
            std::fs::remove_dir_all(&p).at(&p)?;
        } else {
            std::fs::remove_file(&p).at(&p)?;
        }
    }
    sync_dir(out)?;
    Ok(Some(shards))
}

/// Writes the tokenizer copy and `manifest.json` over `all`, every shard of the index (those
/// verified at the start and those this run published): the index is complete.
fn finish_index(
    out: &Path,
    all: &[ShardManifest],
    tokenizer: &Tokenizer,
    tokenizer_bytes: &[u8],
    report: &mut BuildReport,
) -> Result<()> {
    manifest::write_atomic(&out.join(manifest::TOKENIZER_FILE), tokenizer_bytes)?;
    let mut shards = Vec::with_capacity(all.len());
    for s in all {
        let bytes = manifest::to_bytes(s)?;
        shards.push(ShardEntry {
            dir: shard_dir_name(s.shard),
            tokens: s.tokens,
            documents: s.documents,
            first_doc: s.first_doc,
            manifest_checksum: familiar::checksum::of_bytes(&bytes),
        });
    }
    if shards.is_empty() {
        return Err(Error::Config("the inputs hold no documents".into()));
    }
    let index_manifest = IndexManifest {
        format: IndexManifest::FORMAT.into(),
        format_version: format::FORMAT_VERSION,
        tokenizer: TokenizerEntry {
            file: manifest::TOKENIZER_FILE.into(),
            hash: tokenizer.hash().into(),
            vocab_size: tokenizer.vocab_size(),
        },
        token_width: tokenizer.token_width(),
        separator: tokenizer.vocab_size(),
        tokens: shards.iter().map(|s| s.tokens).sum(),
        documents: shards.iter().map(|s| s.documents).sum(),
        shards,
    };
    report.documents = index_manifest.documents;
    report.tokens = index_manifest.tokens;
    manifest::write_atomic(
        &out.join(manifest::MANIFEST_FILE),
        &manifest::to_bytes(&index_manifest)?,
    )?;
    sync_dir(out)
}

/// The plan a build runs by.
#[derive(Debug)]
struct Settled {
    /// A new build's plan, or a resumed build's own (with its input stamps).
    plan: BuildPlan,
    /// When the plan of an earlier attempt that published no shard was replaced: what differed.
    replaced: Option<String>,
    /// Inputs whose size differs from the resumed plan's (everything else being the same):
    /// accepted or refused once the resume cursor is known ([`accept_resized_inputs`]).
    resized: Vec<usize>,
}

/// Writes `build.json` for a new build, or checks that a resumed build is the same build.
fn settle_plan(
    options: &BuildOptions,
    tokenizer: &Tokenizer,
    files: &[InputFile],
) -> Result<Settled> {
    let out = &options.out;
    if let Some(n) = options.shard_tokens {
        if !(2..=MAX_SHARD_TOKENS).contains(&n) {
            return Err(Error::Config(format!(
                "--shard-tokens must be between 2 and {MAX_SHARD_TOKENS}, got {n}"
            )));
        }
    }
    let plan_path = out.join(manifest::BUILD_PLAN_FILE);
    let mut plan = BuildPlan {
        format: BuildPlan::FORMAT.into(),
        format_version: format::FORMAT_VERSION,
        tokenizer_hash: tokenizer.hash().into(),
        text_field: options.fields.text.clone(),
        id_field: options.fields.id.clone(),
        source_field: options.fields.source.clone(),
        metadata_field: options.fields.metadata.clone(),
        shard_tokens: options.shard_tokens.unwrap_or(0),
        skip_invalid: options.skip_invalid,
        text_index: options.text_index,
        inputs: files
            .iter()
            .map(|f| PlannedInput {
                path: f.path.display().to_string(),
                bytes: f.bytes,
                xxh3: None,
                stamp: file_stamp(&f.path),
            })
            .collect(),
    };
    let mut replaced = None;
    if plan_path.exists() {
        let existing: BuildPlan = manifest::read(&plan_path, BuildPlan::FORMAT).map_err(|e| {
            Error::Config(format!(
                "{} holds a build whose plan cannot be read ({e}); rerun with --restart to \
                 discard it and start over, or use another --out directory",
                out.display()
            ))
        })?;
        if options.shard_tokens.is_none() {
            plan.shard_tokens = existing.shard_tokens;
        }
        let Some(what) = plan_difference(&existing, &plan) else {
            return Ok(Settled {
                plan: existing,
                replaced: None,
                resized: Vec::new(),
            });
        };
        if !out.join(manifest::MANIFEST_FILE).exists() {
            if let Some(resized) = resized_inputs(&existing, &plan) {
                return Ok(Settled {
                    plan: existing,
                    replaced: None,
                    resized,
                });
            }
        }
        if published_anything(out)? {
            return Err(Error::Config(format!(
                "{} holds a build with {what}; rerun with --restart to discard it and start \
                 over, or use another --out directory",
                out.display()
            )));
        }
        // An earlier attempt that published nothing (e.g. it failed on a bad input line, since
        // fixed): nothing is lost by starting over with this plan.
        replaced = Some(what);
        std::fs::remove_file(&plan_path).at(&plan_path)?;
    }
    // Leftovers of an interrupted start (e.g. `.tmp-build.json.…`) are ours to remove; the
    // directory's lock file is this run's.
    let mut foreign = false;
    for entry in std::fs::read_dir(out).at(out)? {
        let entry = entry.at(out)?;
        if familiar::lock::is_lock_file(&entry.file_name()) {
            continue;
        }
        if !remove_if_temporary(&entry)? {
            foreign = true;
        }
    }
    if foreign {
        return Err(Error::Config(format!(
            "{} is not empty and holds no familiar build; choose a new or empty --out directory",
            out.display()
        )));
    }
    if plan.shard_tokens == 0 {
        plan.shard_tokens = crate::memory::auto_shard_tokens(tokenizer.token_width());
    }
    manifest::write_atomic(&plan_path, &manifest::to_bytes(&plan)?)?;
    Ok(Settled {
        plan,
        replaced,
        resized: Vec::new(),
    })
}

/// When two plans differ only in the sizes of some inputs (same paths, tokenizer and options):
/// those inputs.
fn resized_inputs(existing: &BuildPlan, given: &BuildPlan) -> Option<Vec<usize>> {
    let strip = |p: &BuildPlan| {
        let mut p = p.clone();
        for i in &mut p.inputs {
            (i.bytes, i.xxh3, i.stamp) = (0, None, None);
        }
        p
    };
    if strip(existing) != strip(given) {
        return None;
    }
    Some(
        existing
            .inputs
            .iter()
            .zip(&given.inputs)
            .enumerate()
            .filter(|(_, (a, b))| a.bytes != b.bytes)
            .map(|(i, _)| i)
            .collect(),
    )
}

/// Inputs that changed size since an unfinished build started are fine if the build had not
/// read them yet (after the resume cursor), or read only a part that the resume re-reads and
/// checks (the file at the cursor, when the last kept shard recorded its fingerprint; e.g. a bad
/// line after the cursor, fixed). Their new sizes (and stamps) go into the plan. Any other is
/// refused: the kept shards hold its old contents. Returns the inputs accepted.
fn accept_resized_inputs(
    out: &Path,
    plan: &mut BuildPlan,
    files: &[InputFile],
    resized: &[usize],
    done: &[ShardManifest],
) -> Result<Vec<PathBuf>> {
    let cursor = done
        .last()
        .map(|m| (m.input_end.file, m.input_fingerprints.is_some()));
    let mut accepted = Vec::new();
    for &i in resized {
        let unread = match cursor {
            None => true,
            Some((at, checked)) => i > at || (i == at && checked),
        };
        if !unread {
            return Err(corpus::changed_since(
                &files[i].path,
                format!(
                    "{} bytes when it started, {} now",
                    plan.inputs[i].bytes, files[i].bytes
                ),
            ));
        }
        plan.inputs[i].bytes = files[i].bytes;
        plan.inputs[i].stamp = file_stamp(&files[i].path);
        accepted.push(files[i].path.clone());
    }
    manifest::write_atomic(
        &out.join(manifest::BUILD_PLAN_FILE),
        &manifest::to_bytes(plan)?,
    )?;
    Ok(accepted)
}

/// Whether `out` holds a published shard or an index manifest.
fn published_anything(out: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(out).at(out)? {
        let name = entry.at(out)?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("shard-") || name == manifest::MANIFEST_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What differs between the plan in a directory and this run's (input fingerprints and stamps
/// aside), in words; `None` when it is the same build.
fn plan_difference(existing: &BuildPlan, given: &BuildPlan) -> Option<String> {
    let strip = |p: &BuildPlan| {
        let mut p = p.clone();
        for i in &mut p.inputs {
            i.xxh3 = None;
            i.stamp = None;
        }
        p
    };
    let (a, b) = (strip(existing), strip(given));
    if a == b {
        return None;
    }
    if a.tokenizer_hash != b.tokenizer_hash {
        return Some(format!(
            "a different tokenizer (hash {} there, {} given)",
            a.tokenizer_hash, b.tokenizer_hash
        ));
    }
    if a.inputs != b.inputs {
        let paths_a: Vec<&str> = a.inputs.iter().map(|i| i.path.as_str()).collect();
        let paths_b: Vec<&str> = b.inputs.iter().map(|i| i.path.as_str()).collect();
        if paths_a != paths_b {
            let i = paths_a
                .iter()
                .zip(&paths_b)
                .position(|(x, y)| x != y)
                .unwrap_or(paths_a.len().min(paths_b.len()));
            let name = |p: Option<&&str>| p.map_or("none".to_string(), |p| p.to_string());
            return Some(format!(
                "different input files ({} there, {} given; input {} is {} there, {} given)",
                paths_a.len(),
                paths_b.len(),
                i + 1,
                name(paths_a.get(i)),
                name(paths_b.get(i))
            ));
        }
        let changed: Vec<(&PlannedInput, &PlannedInput)> = a
            .inputs
            .iter()
            .zip(&b.inputs)
            .filter(|(x, y)| x.bytes != y.bytes)
            .collect();
        if let Some((x, y)) = changed.first() {
            let more = match changed.len() {
                1 => String::new(),
                n => format!(", and {} more", n - 1),
            };
            return Some(format!(
                "input {} that changed size since ({} bytes when the build started, {} now{more})",
                x.path, x.bytes, y.bytes
            ));
        }
    }
    if a.text_index != b.text_index {
        let has = |b: bool| if b { "a text index" } else { "no text index" };
        return Some(format!(
            "{} per shard, but this run asks for {} (--no-text-index)",
            has(a.text_index),
            has(b.text_index)
        ));
    }
    if a.shard_tokens != b.shard_tokens {
        return Some(format!(
            "a shard size of {} tokens, not {}",
            a.shard_tokens, b.shard_tokens
        ));
    }
    let mut details = Vec::new();
    for (flag, x, y) in [
        ("--text-field", &a.text_field, &b.text_field),
        ("--id-field", &a.id_field, &b.id_field),
        ("--source-field", &a.source_field, &b.source_field),
        ("--metadata-field", &a.metadata_field, &b.metadata_field),
    ] {
        if x != y {
            details.push(format!("{flag} {x:?} there, {y:?} given"));
        }
    }
    if a.skip_invalid != b.skip_invalid {
        let on = |b: bool| if b { "on" } else { "off" };
        details.push(format!(
            "--skip-invalid {} there, {} given",
            on(a.skip_invalid),
            on(b.skip_invalid)
        ));
    }
    if a.format_version != b.format_version {
        details.push(format!(
            "format version {} there, {} here",
            a.format_version, b.format_version
        ));
    }
    Some(format!(
        "different field names or options ({})",
        details.join("; ")
    ))
}

/// Removes `entry` if it is a leftover of an interrupted write (`.tmp-*`, a file or a shard
/// directory being built); returns whether it was one.
fn remove_if_temporary(entry: &std::fs::DirEntry) -> Result<bool> {
    if !manifest::is_temp_name(&entry.file_name()) {
        return Ok(false);
    }
    let p = entry.path();
    if p.is_dir() {
        std::fs::remove_dir_all(&p).at(&p)?;
    } else {
        std::fs::remove_file(&p).at(&p)?;
    }
    Ok(true)
}

/// The published shards that verify, in order; removes temporary directories and any shard after
/// the first one that does not verify (a later build rewrites them).
fn reusable_shards(out: &Path, plan: &BuildPlan) -> Result<Vec<ShardManifest>> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(out).at(out)? {
        let entry = entry.at(out)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if remove_if_temporary(&entry)? {
            continue;
        }
        if name.starts_with("shard-") {
            names.push(name);
        }
    }
    names.sort();
    let mut good = Vec::new();
    let mut broken = false;
    for (i, name) in names.iter().enumerate() {
        let dir = out.join(name);
        if !broken {
            match manifest::verify_shard_files(&dir) {
                Ok(m)
                    if name == &shard_dir_name(i as u32)
                        && m.shard as usize == i
                        && m.tokenizer_hash == plan.tokenizer_hash
                        && m.first_doc
                            == good
                                .last()
                                .map_or(0, |p: &ShardManifest| p.first_doc + p.documents)
                        && good
                            .last()
                            .map_or(InputCursor::default(), |p: &ShardManifest| p.input_end)
                            == m.input_start =>
                {
                    good.push(m);
                    continue;
                }
                _ => broken = true,
            }
        }
        std::fs::remove_dir_all(&dir).at(&dir)?;
    }
    Ok(good)
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        }
    }
    fn entry(&self) -> FileEntry {
        FileEntry {
            bytes: self.bytes,
            checksum: format!("xxh3:{:016x}", self.hasher.digest()),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type FileWriter = HashingWriter<std::io::BufWriter<std::fs::File>>;

fn create(path: &Path) -> Result<FileWriter> {
    let f = std::fs::File::create(path).at(path)?;
    Ok(HashingWriter::new(std::io::BufWriter::with_capacity(
        1 << 20,
        f,
    )))
}

fn close(w: FileWriter, path: &Path) -> Result<FileEntry> {
    let entry = w.entry();
    let f = w
        .inner
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    f.sync_all().at(path)?;
    Ok(entry)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// The shard being filled.
struct ShardBuilder<T> {
    shard: u32,
    first_doc: u64,
    tmp: PathBuf,
    tokens: Vec<T>,
    offsets: Vec<u64>,
    documents: DocumentsWriter<FileWriter>,
    text: Option<familiar_text::writer::TextWriter>,
    input_start: InputCursor,
    input_end: InputCursor,
    /// Fingerprint of the records of `input_end.file` consumed up to `input_end`.
    input_end_xxh3: u64,
}

impl<T: SaInput> ShardBuilder<T> {
    fn start(
        out: &Path,
        shard: u32,
        first_doc: u64,
        input_start: InputCursor,
        text_index: bool,
    ) -> Result<Self> {
        let tmp = out.join(format!(".tmp-{}", shard_dir_name(shard)));
        std::fs::create_dir(&tmp).at(&tmp)?;
        let documents = DocumentsWriter::new(create(&tmp.join(manifest::DOCUMENTS_FILE))?, shard)?;
        let text = if text_index {
            Some(familiar_text::writer::TextWriter::start(&tmp)?)
        } else {
            None
        };
        Ok(ShardBuilder {
            shard,
            first_doc,
            tmp,
            tokens: Vec::new(),
            offsets: Vec::new(),
            documents,
            text,
            input_start,
            input_end: input_start,
            input_end_xxh3: 0,
        })
    }

    fn docs(&self) -> u64 {
        self.offsets.len() as u64
    }

    fn push(
        &mut self,
        doc: &Document,
        ids: &[u32],
        consumed_xxh3: u64,
        separator: T,
        input_file: &str,
    ) -> Result<()> {
        self.offsets.push(self.tokens.len() as u64);
        let capacity = self.tokens.capacity();
        self.tokens.reserve(ids.len() + 1);
        if self.tokens.capacity() != capacity {
            // The token buffer is what libsais will read at random: back it with huge pages.
            let spare = self.tokens.spare_capacity_mut();
            crate::sa::advise_huge_pages(spare);
        }
        for &id in ids {
            self.tokens.push(T::from_u32(id).ok_or_else(|| {
                Error::Bug(format!("token id {id} does not fit the index width"))
            })?);
        }
        self.tokens.push(separator);
        let doc_id = self.first_doc + self.docs() - 1;
        if let Some(text) = self.text.as_mut() {
            text.add(doc_id, &doc.text)?;
        }
        self.documents.push(&DocumentRow {
            doc_id,
            external_id: &doc.external_id,
            source: doc.source.as_deref(),
            input_file,
            input_record: doc.record,
            token_count: ids.len() as u64,
            byte_length: doc.text.len() as u64,
            metadata: &doc.metadata,
        })?;
        self.input_end = InputCursor {
            file: doc.file,
            record: doc.record,
        };
        self.input_end_xxh3 = consumed_xxh3;
        Ok(())
    }

    /// Sorts, writes, syncs and publishes the shard; returns its manifest.
    fn finish(
        mut self,
        out: &Path,
        tokenizer: &Tokenizer,
        fingerprints: Option<&Fingerprints>,
        threads: usize,
        report: &mut BuildReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<ShardManifest> {
        let n = self.tokens.len() as u64;
        // Every input before the one the shard ends in was read to its end before the shard's
        // last document was read, so its whole-file fingerprint is known.
        let input_fingerprints = match fingerprints {
            None => None,
            Some(fp) => {
                let mut finished = Vec::new();
                for file in self.input_start.file..self.input_end.file {
                    let h = fp.get(file).ok_or_else(|| {
                        Error::Bug(format!(
                            "input {file} was finished before shard {} ended but has no fingerprint",
                            self.shard
                        ))
                    })?;
                    finished.push(FinishedInput {
                        file,
                        xxh3: manifest::fingerprint(h),
                    });
                }
                Some(InputFingerprints {
                    finished,
                    end: manifest::fingerprint(self.input_end_xxh3),
                })
            }
        };
        let mut files = std::collections::BTreeMap::new();
        let t0 = Instant::now();
        let tokens_path = self.tmp.join(manifest::TOKENS_FILE);
        let mut w = create(&tokens_path)?;
        let header = Header::new(
            FileKind::Tokens,
            T::WIDTH * 8,
            n,
            u64::from(tokenizer.vocab_size()),
            u64::from(tokenizer.vocab_size()),
        );
        w.write_all(&header.to_bytes()).at(&tokens_path)?;
        w.write_all(bytemuck::cast_slice(&self.tokens))
            .at(&tokens_path)?;
        files.insert(manifest::TOKENS_FILE.to_string(), close(w, &tokens_path)?);

        let offsets_path = self.tmp.join(manifest::DOC_OFFSETS_FILE);
        let mut w = create(&offsets_path)?;
        let width = format::bits_for(n);
        let count = self.offsets.len() as u64 + 1;
        w.write_all(&Header::new(FileKind::DocOffsets, width, count, n, self.first_doc).to_bytes())
            .at(&offsets_path)?;
        format::write_packed(&mut w, width, self.offsets.iter().copied().chain([n]))
            .at(&offsets_path)?;
        files.insert(
            manifest::DOC_OFFSETS_FILE.to_string(),
            close(w, &offsets_path)?,
        );

        let docs_path = self.tmp.join(manifest::DOCUMENTS_FILE);
        let w = self.documents.finish()?;
        files.insert(manifest::DOCUMENTS_FILE.to_string(), close(w, &docs_path)?);
        report.write_time += t0.elapsed();

        // The text index's commit and merge run beside the suffix sort.
        let text = self.text.take();
        let tmp = self.tmp.clone();
        progress.set_message(format!(
            "shard {}: sorting the suffixes of {} tokens{}",
            self.shard,
            n,
            if text.is_some() {
                ", merging the text index"
            } else {
                ""
            }
        ));
        let tokens = &mut self.tokens;
        let (sa, text_result) = std::thread::scope(|scope| {
            let merging = text.map(|text| {
                scope.spawn(move || {
                    let t = Instant::now();
                    text.finish(&tmp).map(|r| (r, t.elapsed()))
                })
            });
            let t1 = Instant::now();
            let sa = T::suffix_array(tokens, tokenizer.vocab_size() + 1, threads);
            report.suffix_array_time += t1.elapsed();
            let text_result = merging.map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Bug("the text index merge panicked".into())))
            });
            (sa, text_result)
        });
        let sa = sa?;
        let text_index = match text_result {
            Some(r) => {
                let ((text_files, info), took) = r?;
                files.extend(text_files);
                report.text_index_time += took;
                Some(info)
            }
            None => None,
        };
        drop(std::mem::take(&mut self.tokens));

        let t2 = Instant::now();
        let sa_path = self.tmp.join(manifest::SUFFIX_ARRAY_FILE);
        let mut w = create(&sa_path)?;
        let sa_width = format::bits_for(n.saturating_sub(1));
        w.write_all(&Header::new(FileKind::SuffixArray, sa_width, n, n, 0).to_bytes())
            .at(&sa_path)?;
        format::write_packed(&mut w, sa_width, sa.iter().map(|&p| p as u64)).at(&sa_path)?;
        files.insert(manifest::SUFFIX_ARRAY_FILE.to_string(), close(w, &sa_path)?);
        drop(sa);

        let m = ShardManifest {
            format: ShardManifest::FORMAT.into(),
            format_version: format::FORMAT_VERSION,
            shard: self.shard,
            tokenizer_hash: tokenizer.hash().into(),
            token_width: tokenizer.token_width(),
            separator: tokenizer.vocab_size(),
            tokens: n,
            documents: self.offsets.len() as u64,
            first_doc: self.first_doc,
            suffix_array_bits: sa_width,
            input_start: self.input_start,
            input_end: self.input_end,
            input_fingerprints,
            files,
            text_index,
        };
        let mpath = self.tmp.join(manifest::MANIFEST_FILE);
        manifest::write_atomic(&mpath, &manifest::to_bytes(&m)?)?;
        sync_dir(&self.tmp)?;
        let fin = out.join(shard_dir_name(self.shard));
        std::fs::rename(&self.tmp, &fin).at(&fin)?;
        sync_dir(out)?;
        report.write_time += t2.elapsed();
        report.shards_built += 1;
        Ok(m)
    }
}

/// Receives tokenized documents in order and cuts, builds and publishes shards.
struct ShardSink<'a, T> {
    out: &'a Path,
    shard_tokens: u64,
    text_index: bool,
    tokenizer: &'a Tokenizer,
    threads: usize,
    separator: T,
    current: Option<ShardBuilder<T>>,
    next_shard: u32,
    next_doc: u64,
    next_start: InputCursor,
    /// Every shard of the index so far: those kept from an earlier run, then those published now.
    published: Vec<ShardManifest>,
    /// Time spent sorting and writing (to subtract from tokenization time).
    busy: Duration,
    /// Whole-file fingerprints of the inputs (none for generated token streams).
    fingerprints: Option<Fingerprints>,
    /// Stop once this many shards are published by this run (see `BuildOptions`).
    stop_after: Option<usize>,
    /// Stopped: documents pushed from now on are dropped, and nothing more is published.
    stopped: bool,
}

impl<'a, T: SaInput> ShardSink<'a, T> {
    fn new(
        out: &'a Path,
        plan: &BuildPlan,
        tokenizer: &'a Tokenizer,
        threads: usize,
        done: Vec<ShardManifest>,
    ) -> Result<Self> {
        let (next_shard, next_doc, next_start) = match done.last() {
            Some(m) => (m.shard + 1, m.first_doc + m.documents, m.input_end),
            None => (0, 0, InputCursor::default()),
        };
        let separator = T::from_u32(tokenizer.vocab_size())
            .ok_or_else(|| Error::Bug("separator does not fit".into()))?;
        Ok(ShardSink {
            out,
            shard_tokens: plan.shard_tokens,
            text_index: plan.text_index,
            tokenizer,
            threads,
            separator,
            current: None,
            next_shard,
            next_doc,
            next_start,
            published: done,
            busy: Duration::ZERO,
            fingerprints: None,
            stop_after: None,
            stopped: false,
        })
    }

    /// Adds a document; `consumed_xxh3` is the fingerprint of its input's records up to and
    /// including it; `input_file` and the document's record name it in errors.
    fn push(
        &mut self,
        doc: &Document,
        ids: &[u32],
        consumed_xxh3: u64,
        input_file: &str,
        report: &mut BuildReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        let need = ids.len() as u64 + 1;
        if need > MAX_SHARD_TOKENS {
            return Err(Error::input(
                input_file,
                doc.record,
                format!(
                    "document has {} tokens; a shard holds at most {MAX_SHARD_TOKENS}",
                    ids.len()
                ),
            ));
        }
        if let Some(b) = &self.current {
            if b.tokens.len() as u64 + need > self.shard_tokens {
                self.cut(report, progress)?;
                if self.stop_after.is_some_and(|k| report.shards_built >= k) {
                    self.stopped = true;
                    return Ok(());
                }
            }
        }
        if need > self.shard_tokens {
            // Alone in its shard (the one before was just cut, and the next document starts
            // another), but that shard passes the size, which is a memory budget: say so.
            self.oversized(doc, ids.len() as u64, input_file, report, progress);
        }
        if self.current.is_none() {
            self.current = Some(ShardBuilder::start(
                self.out,
                self.next_shard,
                self.next_doc,
                self.next_start,
                self.text_index,
            )?);
        }
        let b = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Bug("no shard".into()))?;
        b.push(doc, ids, consumed_xxh3, self.separator, input_file)?;
        report.tokens_tokenized += ids.len() as u64;
        Ok(())
    }

    /// Records (and, for the first few, warns on stderr about) a document longer than the
    /// shard size.
    fn oversized(
        &self,
        doc: &Document,
        tokens: u64,
        input_file: &str,
        report: &mut BuildReport,
        progress: &indicatif::ProgressBar,
    ) {
        let d = OversizedDocument {
            doc_id: self.next_doc + self.current.as_ref().map_or(0, |b| b.docs()),
            external_id: doc.external_id.clone(),
            input_file: input_file.to_string(),
            record: doc.record,
            tokens,
            shard: self.next_shard,
        };
        report.oversized_documents += 1;
        if report
            .largest_oversized
            .as_ref()
            .is_none_or(|l| l.tokens < d.tokens)
        {
            report.largest_oversized = Some(d.clone());
        }
        if report.oversized_examples.len() < OVERSIZED_EXAMPLES {
            let bytes = (tokens + 1) * (T::WIDTH as u64 + 4);
            let more = if report.oversized_examples.len() + 1 == OVERSIZED_EXAMPLES {
                " (further ones are counted and summed up at the end)"
            } else {
                ""
            };
            progress.suspend(|| {
                eprintln!(
                    "warning: {d}, more than the shard size of {} tokens: it makes {} on its \
                     own, {} tokens (about {} while its suffix array is sorted, past the shard \
                     size's memory budget){more}",
                    self.shard_tokens,
                    shard_dir_name(d.shard),
                    tokens + 1,
                    familiar::memory::format_bytes(bytes),
                )
            });
            report.oversized_examples.push(d);
        }
    }

    /// Publishes the current shard, if any.
    fn cut(&mut self, report: &mut BuildReport, progress: &indicatif::ProgressBar) -> Result<()> {
        if let Some(b) = self.current.take() {
            let t = Instant::now();
            let m = b.finish(
                self.out,
                self.tokenizer,
                self.fingerprints.as_ref(),
                self.threads,
                report,
                progress,
            )?;
            self.busy += t.elapsed();
            self.next_shard = m.shard + 1;
            self.next_doc = m.first_doc + m.documents;
            self.next_start = m.input_end;
            self.published.push(m);
        }
        Ok(())
    }
}

/// Documents read and tokenized together.
const BATCH_TEXT_BYTES: usize = 8 << 20;
const BATCH_DOCS: usize = 4096;

fn run_shards<T: SaInput>(
    options: &BuildOptions,
    plan: &BuildPlan,
    tokenizer: &Tokenizer,
    files: Vec<InputFile>,
    done: Vec<ShardManifest>,
    threads: usize,
    report: &mut BuildReport,
) -> Result<(Vec<ShardManifest>, Fingerprints)> {
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

    let progress = if options.progress {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total_bytes),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} ({eta}) {msg}",
            )
            .map_err(|e| Error::Bug(format!("progress template: {e}")))?,
        );
        bar.set_position(done_bytes);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

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
                    sink.push(doc, &ids, *consumed, &names[doc.file], report, &progress)?;
                    if sink.stopped {
                        break;
                    }
                }
                if sink.stopped {
                    report.stopped = true;
                    return Ok(());
                }
                progress.set_position(done_bytes + bytes_read.load(Ordering::Relaxed));
                let secs = tokenize_started
                    .elapsed()
                    .saturating_sub(sink.busy)
                    .as_secs_f64()
                    .max(1e-9);
                progress.set_message(format!(
                    "shard {} · {} tokens · {:.2} M tokens/s",
                    sink.next_shard,
                    report.tokens_tokenized,
                    report.tokens_tokenized as f64 / secs / 1e6
                ));
            }
            sink.cut(report, &progress)
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
    progress.finish_and_clear();
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
        return Err(Error::Config(format!("{} already exists", out.display())));
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
    let progress = indicatif::ProgressBar::hidden();
    let threads = threads.max(1);
    fn run<T: SaInput>(
        out: &Path,
        plan: &BuildPlan,
        tokenizer: &Tokenizer,
        threads: usize,
        docs: impl IntoIterator<Item = Vec<u32>>,
        report: &mut BuildReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<Vec<ShardManifest>> {
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
    let shards = match tokenizer.token_width() {
        TokenWidth::U16 => run::<u16>(
            out,
            &plan,
            &tokenizer,
            threads,
            docs,
            &mut report,
            &progress,
        )?,
        TokenWidth::U32 => run::<u32>(
            out,
            &plan,
            &tokenizer,
            threads,
            docs,
            &mut report,
            &progress,
        )?,
    };
    finish_index(out, &shards, &tokenizer, &tokenizer_bytes, &mut report)?;
    report.total_time = started.elapsed();
    Ok(report)
}

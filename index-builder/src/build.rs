//! The offline build: corpus files → tokenized shards with suffix arrays, resumable and atomic.
//!
//! Documents stream from the inputs (a reader thread parses, a rayon pool tokenizes batches in
//! parallel) into the current shard, in input order. A shard is cut before the document that would
//! take it past the shard size, then published: its files are written into `.tmp-shard-NNNNN`,
//! synced, and the directory renamed to `shard-NNNNN`. A half-built shard is never visible.
//!
//! `build.json` is written before the first shard and records the inputs, the tokenizer hash and the
//! shard size. Running the same build again verifies the published shards (sizes and checksums),
//! keeps those that verify, and resumes reading the inputs where the last one ended, so the result
//! is byte-identical to an uninterrupted build. `manifest.json`, written last, marks the index
//! complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use familiar::corpus::{self, CorpusReader, Document, Fields, InputFile, ReadOptions};
use familiar::error::IoContext;
use familiar::format::{self, FileKind, Header};
use familiar::manifest::{
    self, BuildPlan, FileEntry, IndexManifest, InputCursor, PlannedInput, ShardEntry,
    ShardManifest, TokenizerEntry,
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
    /// Shard size used.
    pub shard_tokens: u64,
    /// Whether the index was already complete.
    pub already_complete: bool,
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
    let tokenizer_bytes = std::fs::read(&options.tokenizer).at(&options.tokenizer)?;
    let tokenizer = Tokenizer::from_bytes(&tokenizer_bytes, &options.tokenizer)?;
    let expanded = corpus::expand_inputs(&options.inputs)?;
    let out = &options.out;
    std::fs::create_dir_all(out).at(out)?;
    let plan = settle_plan(options, &tokenizer, &expanded.files)?;
    let mut report = BuildReport {
        ignored_files: expanded.ignored.clone(),
        shard_tokens: plan.shard_tokens,
        ..Default::default()
    };

    let manifest_path = out.join(manifest::MANIFEST_FILE);
    let done = reusable_shards(out, &plan)?;
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
    report.shards_reused = done.len();
    let shards = match tokenizer.token_width() {
        TokenWidth::U16 => run_shards::<u16>(
            options,
            &plan,
            &tokenizer,
            expanded.files,
            done,
            threads,
            &mut report,
        )?,
        TokenWidth::U32 => run_shards::<u32>(
            options,
            &plan,
            &tokenizer,
            expanded.files,
            done,
            threads,
            &mut report,
        )?,
    };
    finish_index(out, &shards, &tokenizer, &tokenizer_bytes, &mut report)?;
    report.total_time = started.elapsed();
    Ok(report)
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

/// Writes `build.json` for a new build, or checks that a resumed build is the same build.
fn settle_plan(
    options: &BuildOptions,
    tokenizer: &Tokenizer,
    files: &[InputFile],
) -> Result<BuildPlan> {
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
            })
            .collect(),
    };
    if plan_path.exists() {
        let existing: BuildPlan = manifest::read(&plan_path, BuildPlan::FORMAT)?;
        if options.shard_tokens.is_none() {
            plan.shard_tokens = existing.shard_tokens;
        }
        if existing != plan {
            let what = if existing.tokenizer_hash != plan.tokenizer_hash {
                format!(
                    "a different tokenizer (hash {} there, {} given)",
                    existing.tokenizer_hash, plan.tokenizer_hash
                )
            } else if existing.inputs != plan.inputs {
                "different input files (or files that changed size since)".to_string()
            } else if existing.text_index != plan.text_index {
                let has = |b: bool| if b { "a text index" } else { "no text index" };
                format!(
                    "{} per shard, but this run asks for {} (--no-text-index)",
                    has(existing.text_index),
                    has(plan.text_index)
                )
            } else if existing.shard_tokens != plan.shard_tokens {
                format!(
                    "a shard size of {} tokens, not {}",
                    existing.shard_tokens, plan.shard_tokens
                )
            } else {
                "different field names or options".to_string()
            };
            return Err(Error::Config(format!(
                "{} holds a build with {what}; use another --out directory or delete this one",
                out.display()
            )));
        }
        return Ok(plan);
    }
    // Leftovers of an interrupted start (e.g. `.tmp-build.json`) are ours to remove.
    let mut foreign = false;
    for entry in std::fs::read_dir(out).at(out)? {
        let entry = entry.at(out)?;
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
    Ok(plan)
}

/// Removes `entry` if it is a leftover of an interrupted write (`.tmp-*`, a file or a shard
/// directory being built); returns whether it was one.
fn remove_if_temporary(entry: &std::fs::DirEntry) -> Result<bool> {
    if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
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
            match verify_shard_files(&dir) {
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

/// Checks a shard's files against its manifest (sizes and checksums).
pub fn verify_shard_files(dir: &Path) -> Result<ShardManifest> {
    let mpath = dir.join(manifest::MANIFEST_FILE);
    let m: ShardManifest = manifest::read(&mpath, ShardManifest::FORMAT)?;
    for (name, entry) in &m.files {
        let path = dir.join(name);
        let (checksum, bytes) = familiar::checksum::of_file(&path)?;
        if bytes != entry.bytes {
            return Err(Error::Size {
                path,
                expected: entry.bytes,
                actual: bytes,
            });
        }
        if checksum != entry.checksum {
            return Err(Error::Checksum {
                path,
                expected: entry.checksum.clone(),
                got: checksum,
            });
        }
    }
    Ok(m)
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
    text: Option<crate::text::TextWriter>,
    input_start: InputCursor,
    input_end: InputCursor,
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
            Some(crate::text::TextWriter::start(&tmp)?)
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
        })
    }

    fn docs(&self) -> u64 {
        self.offsets.len() as u64
    }

    fn push(&mut self, doc: &Document, ids: &[u32], separator: T, input_file: &str) -> Result<()> {
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
        Ok(())
    }

    /// Sorts, writes, syncs and publishes the shard; returns its manifest.
    fn finish(
        mut self,
        out: &Path,
        tokenizer: &Tokenizer,
        threads: usize,
        report: &mut BuildReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<ShardManifest> {
        let n = self.tokens.len() as u64;
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
        })
    }

    /// Adds a document; `input_file` and the document's record name it in errors.
    fn push(
        &mut self,
        doc: &Document,
        ids: &[u32],
        input_file: &str,
        report: &mut BuildReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
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
            }
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
        b.push(doc, ids, self.separator, input_file)?;
        report.tokens_tokenized += ids.len() as u64;
        Ok(())
    }

    /// Publishes the current shard, if any.
    fn cut(&mut self, report: &mut BuildReport, progress: &indicatif::ProgressBar) -> Result<()> {
        if let Some(b) = self.current.take() {
            let t = Instant::now();
            let m = b.finish(self.out, self.tokenizer, self.threads, report, progress)?;
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
) -> Result<Vec<ShardManifest>> {
    let out = &options.out;
    let cursor = done.last().map_or(InputCursor::default(), |m| m.input_end);
    let mut sink = ShardSink::<T>::new(out, plan, tokenizer, threads, done)?;
    let total_bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let done_bytes: u64 = files.iter().take(cursor.file).map(|f| f.bytes).sum();
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    let read_options = ReadOptions {
        fields: options.fields.clone(),
        skip_invalid: options.skip_invalid,
        allow_empty: options.allow_empty,
    };
    let reader = CorpusReader::new(files, read_options, cursor);
    let bytes_read = reader.bytes_read();

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

    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Document>>>(2);
    std::thread::scope(|scope| -> Result<()> {
        let reader_thread = std::thread::Builder::new()
            .name("familiar-read".into())
            .spawn_scoped(scope, move || {
                let mut reader = reader;
                let mut batch = Vec::new();
                let mut bytes = 0usize;
                for doc in reader.by_ref() {
                    match doc {
                        Ok(d) => {
                            bytes += d.text.len();
                            batch.push(d);
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
                    .map(|d| tokenizer.encode(&d.text))
                    .collect();
                for (doc, ids) in batch.iter().zip(ids) {
                    let ids = ids.map_err(|e| match e {
                        Error::Tokenizer { reason, .. } => Error::input(
                            &names[doc.file],
                            doc.record,
                            format!("cannot tokenize: {reason}"),
                        ),
                        other => other,
                    })?;
                    sink.push(doc, &ids, &names[doc.file], report, &progress)?;
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
    Ok(sink.published)
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
    let tokenizer_bytes = std::fs::read(tokenizer_path).at(tokenizer_path)?;
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
            sink.push(&doc, &ids, "<tokens>", report, progress)?;
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

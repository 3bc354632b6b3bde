//! Corpus readers: shards given as files, directories or globs, streamed one document at a time.
//!
//! Formats, chosen by file name:
//! - JSONL, one JSON object per line: `.jsonl` and `.ndjson`, plain or compressed with zstd (`.zst`,
//!   `.zstd`) or gzip (`.gz`); also `.json.gz`/`.json.zst` (Dolma's names for JSONL shards), and a
//!   plain `.json` file when named explicitly (inside directories a plain `.json` is more likely a
//!   configuration file, so it is listed as ignored);
//! - Parquet (`.parquet`), one document per row;
//! - plain text (`.txt`), one document per file.
//!
//! A UTF-8 byte-order mark (EF BB BF) at the start of a file is not part of it: a JSONL file's
//! first record and a text file's document start after it (the fingerprints still hash the file
//! as stored). Anywhere else it is the record's own.
//!
//! Inputs must be regular files (symbolic links to them are followed): a FIFO or a device is
//! refused when the inputs are expanded, since a build reads its inputs again when it resumes and
//! records their sizes and fingerprints.
//!
//! Directories that familiar wrote (an index, a build, a gradient store, a directory a familiar
//! process is writing into) and a build's own `--out` directory are not corpus: inside input
//! directories and glob patterns they are skipped and reported ([`ExpandedInputs::skipped`]),
//! so that an index built inside its own input directory is never read back as corpus.
//!
//! While a file is read, the reader computes two fingerprints (xxh3, no second pass over the
//! data): the whole file's bytes as stored, hashed under the decompressor
//! ([`Fingerprints`], known once the file has been read to its end), and the records consumed so
//! far ([`CorpusReader::consumed_fingerprint`]), which a shard records where it ends and a
//! resumed build checks ([`CorpusReader::expect_at_cursor`]).
//!
//! Fields are Dolma's by default (`id`, `text`, `source`, `metadata`) and can be renamed. Records
//! carry their file and 1-based line (or row) so every error names where it happened. Blank JSONL
//! lines are not records. Malformed records fail the read unless the caller asked to skip them, in
//! which case they are counted (see [`CorpusReader::skipped`]).

mod jsonl;
pub use jsonl::{open_decompressed, parse_record};
mod parquet_reader;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::manifest::InputCursor;

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// JSON lines, uncompressed.
    Jsonl,
    /// JSON lines, zstd-compressed.
    JsonlZst,
    /// JSON lines, gzip-compressed.
    JsonlGz,
    /// Apache Parquet.
    Parquet,
    /// Plain UTF-8 text, one document per file.
    Text,
}

impl InputFormat {
    /// The format a file name implies, if any.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let (stem, compression) = if let Some(s) = name
            .strip_suffix(".zst")
            .or_else(|| name.strip_suffix(".zstd"))
        {
            (s, Some(InputFormat::JsonlZst))
        } else if let Some(s) = name.strip_suffix(".gz") {
            (s, Some(InputFormat::JsonlGz))
        } else {
            (name.as_str(), None)
        };
        let is_json =
            stem.ends_with(".jsonl") || stem.ends_with(".ndjson") || stem.ends_with(".json");
        match compression {
            Some(c) if is_json => Some(c),
            Some(_) => None,
            None if is_json => Some(InputFormat::Jsonl),
            None if stem.ends_with(".parquet") => Some(InputFormat::Parquet),
            None if stem.ends_with(".txt") => Some(InputFormat::Text),
            None => None,
        }
    }
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The path.
    pub path: PathBuf,
    /// How to read it.
    pub format: InputFormat,
    /// Size on disk.
    pub bytes: u64,
}

/// The result of expanding the command line's inputs.
#[derive(Debug, Default)]
pub struct ExpandedInputs {
    /// Files to read, in order.
    pub files: Vec<InputFile>,
    /// Files found inside directories whose names have no recognized extension: not read, and
    /// reported so that nothing is skipped silently.
    pub ignored: Vec<PathBuf>,
    /// Directories found inside the inputs that familiar wrote (an index, a build, a gradient
    /// store, a directory a familiar process is writing into) or that are the build's own
    /// output: not read as corpus, and reported with how many files they hold and why.
    pub skipped: Vec<SkippedDir>,
}

/// A directory of familiar's own output found among the inputs, not read as corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDir {
    /// The directory, as found.
    pub path: PathBuf,
    /// Why it is familiar's output, e.g. "a familiar index (manifest.json with format
    /// \"familiar-index\")".
    pub reason: String,
    /// Files under it (recursively; symbolic links not followed).
    pub files: u64,
}

impl std::fmt::Display for SkippedDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} file{}: {})",
            self.path.display(),
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.reason
        )
    }
}

const SUPPORTED: &str = ".jsonl/.ndjson/.json (optionally .zst, .zstd or .gz), .parquet or .txt";

/// The files whose `format` tag (`familiar-…`) marks a directory as familiar's output: index,
/// shard and gradient-store manifests, build and store plans.
const OUTPUT_MARKERS: [&str; 4] = ["manifest.json", "build.json", "store.json", "plan.json"];

/// Expands files, directories (recursively, in name order) and glob patterns into input files.
///
/// Explicit files must have a recognized extension; inside directories, unrecognized files are
/// listed in [`ExpandedInputs::ignored`]. The same file twice is an error. Directories that
/// familiar wrote are not read (see [`expand_inputs_excluding`]).
pub fn expand_inputs<S: AsRef<str>>(specs: &[S]) -> Result<ExpandedInputs> {
    expand_inputs_excluding(specs, None)
}

/// [`expand_inputs`] for a build writing into `out`: inside input directories (and under the
/// fixed part of glob patterns), familiar's own output is not corpus and is skipped, and listed
/// in [`ExpandedInputs::skipped`]: a directory holding `.familiar-lock` (a familiar build or run
/// is writing into it), a directory whose `manifest.json`, `build.json`, `store.json` or
/// `plan.json` has a `familiar-…` format tag (an index, a build, a shard, a gradient store), and
/// `out` itself. So an index built into a directory of its own corpus (`familiar index build
/// corpus/ --out corpus/idx`) is not read as corpus when the build is resumed or run again. A
/// file named explicitly is read wherever it is, except inside `out` (refused).
pub fn expand_inputs_excluding<S: AsRef<str>>(
    specs: &[S],
    out: Option<&Path>,
) -> Result<ExpandedInputs> {
    let mut expanded = ExpandedInputs::default();
    let mut skipper = Skipper::new(out);
    let mut seen = std::collections::BTreeSet::new();
    for spec in specs {
        let spec = spec.as_ref();
        let path = Path::new(spec);
        let mut found = Vec::new();
        if path.is_dir() {
            let before = expanded.skipped.len();
            skipper.walk(path, &mut found, &mut expanded)?;
            if found.is_empty() {
                return Err(Error::input(
                    path,
                    0,
                    format!(
                        "directory holds no corpus files ({SUPPORTED}){}",
                        skipped_note(&expanded.skipped[before..])
                    ),
                ));
            }
        } else if path.exists() {
            if let Some(out) = skipper.out.as_deref() {
                if std::fs::canonicalize(path).is_ok_and(|c| c.starts_with(out)) {
                    return Err(Error::Config(format!(
                        "input {spec} is inside the {} directory {}; an index is not its own \
                         corpus",
                        crate::option::name("out"),
                        out.display()
                    )));
                }
            }
            found.push(path.to_path_buf());
        } else if spec.contains(['*', '?', '[']) {
            let entries = glob::glob(spec)
                .map_err(|e| Error::Config(format!("bad glob pattern {spec:?}: {e}")))?;
            let prefix = glob_prefix(spec);
            let before = expanded.skipped.len();
            let mut matched = Vec::new();
            for e in entries {
                let p = e.map_err(|e| Error::io(e.path(), std::io::Error::other(e.to_string())))?;
                if let Some(dir) = skipper.outermost_skipped(&p, &prefix) {
                    skipper.record(&dir, &mut expanded.skipped);
                    continue;
                }
                if p.is_dir() {
                    skipper.walk(&p, &mut matched, &mut expanded)?;
                } else {
                    matched.push(p);
                }
            }
            if matched.is_empty() {
                return Err(Error::Config(format!(
                    "glob pattern {spec:?} matched no files{}",
                    skipped_note(&expanded.skipped[before..])
                )));
            }
            matched.sort();
            found.extend(matched);
        } else {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
        for p in found {
            let format = InputFormat::from_path(&p).ok_or_else(|| {
                Error::input(
                    &p,
                    0,
                    format!("unrecognized file type; expected {SUPPORTED}"),
                )
            })?;
            // Regular files only: refused here, before any FIFO is opened (which would block).
            let (_, bytes) = crate::manifest::open_regular(&p)?;
            let canonical = std::fs::canonicalize(&p).at(&p)?;
            if !seen.insert(canonical) {
                return Err(Error::Config(format!(
                    "input {} is given more than once",
                    p.display()
                )));
            }
            expanded.files.push(InputFile {
                path: p,
                format,
                bytes,
            });
        }
    }
    if expanded.files.is_empty() {
        return Err(Error::Config("no input files given".into()));
    }
    Ok(expanded)
}

/// "; not read: DIR (N files: why), …" for an error about inputs that came out empty.
fn skipped_note(skipped: &[SkippedDir]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let list: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    format!(
        "; not read, as familiar's own output: {} (name files explicitly to read them anyway)",
        list.join(", ")
    )
}

/// The directories of a glob pattern before its first wildcard (`corpus/**/*.jsonl` →
/// `corpus`): the part of the tree the user named.
fn glob_prefix(spec: &str) -> PathBuf {
    Path::new(spec)
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect()
}

/// Decides which directories are familiar's own output (cached per directory).
struct Skipper {
    /// The build's output directory, canonical, when it exists.
    out: Option<PathBuf>,
    cache: std::collections::HashMap<PathBuf, Option<String>>,
}

impl Skipper {
    fn new(out: Option<&Path>) -> Skipper {
        Skipper {
            out: out.and_then(|o| std::fs::canonicalize(o).ok()),
            cache: std::collections::HashMap::new(),
        }
    }

    /// Why `dir` is familiar's output, if it is.
    fn reason(&mut self, dir: &Path) -> Option<String> {
        if let Some(r) = self.cache.get(dir) {
            return r.clone();
        }
        let r = self.decide(dir);
        self.cache.insert(dir.to_path_buf(), r.clone());
        r
    }

    fn decide(&self, dir: &Path) -> Option<String> {
        if let Some(out) = &self.out {
            if std::fs::canonicalize(dir).is_ok_and(|c| &c == out) {
                return Some(format!(
                    "this build's {} directory",
                    crate::option::name("out")
                ));
            }
        }
        if std::fs::symlink_metadata(dir.join(crate::lock::LOCK_FILE)).is_ok() {
            return Some(format!(
                "holds {}: a familiar build or run is writing into it",
                crate::lock::LOCK_FILE
            ));
        }
        for name in OUTPUT_MARKERS {
            if let Some(tag) = familiar_format_tag(&dir.join(name)) {
                let what = match tag.as_str() {
                    "familiar-index" => "a familiar index",
                    "familiar-build" => "a familiar index build",
                    "familiar-shard" => "a shard of a familiar index",
                    "familiar-gradient-store" => "a familiar gradient store",
                    _ => "familiar output",
                };
                return Some(format!("{what} ({name} with format {tag:?})"));
            }
        }
        None
    }

    /// The outermost directory between `prefix` (included) and `path` (excluded unless it is a
    /// directory) that is familiar's output.
    fn outermost_skipped(&mut self, path: &Path, prefix: &Path) -> Option<PathBuf> {
        let mut found = None;
        let start = if path.is_dir() {
            Some(path)
        } else {
            path.parent()
        };
        for dir in start.into_iter().flat_map(Path::ancestors) {
            if dir.as_os_str().is_empty() || !dir.starts_with(prefix) {
                break;
            }
            if self.reason(dir).is_some() {
                found = Some(dir.to_path_buf());
            }
        }
        found
    }

    /// Adds `dir` (known to be skipped) to `skipped`, once.
    fn record(&mut self, dir: &Path, skipped: &mut Vec<SkippedDir>) {
        if skipped.iter().any(|s| s.path == dir) {
            return;
        }
        if let Some(reason) = self.reason(dir) {
            skipped.push(SkippedDir {
                path: dir.to_path_buf(),
                reason,
                files: count_files(dir),
            });
        }
    }

    /// Lists the corpus files under `dir` (in name order) unless it is familiar's output.
    fn walk(
        &mut self,
        dir: &Path,
        found: &mut Vec<PathBuf>,
        expanded: &mut ExpandedInputs,
    ) -> Result<()> {
        if self.reason(dir).is_some() {
            self.record(dir, &mut expanded.skipped);
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .at(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .at(dir)?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                self.walk(&p, found, expanded)?;
            } else if InputFormat::from_path(&p).is_some() && !is_plain_json(&p) {
                found.push(p);
            } else {
                expanded.ignored.push(p);
            }
        }
        Ok(())
    }
}

/// The `format` of a familiar manifest (`familiar-…`), read from the first 4 KiB of `path` (the
/// tag is the first field familiar writes); `None` for anything else, including files that are
/// not regular (never opened).
fn familiar_format_tag(path: &Path) -> Option<String> {
    use std::io::Read;
    let (file, _) = crate::manifest::open_regular(path).ok()?;
    let mut head = Vec::with_capacity(4096);
    file.take(4096).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"format\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let tag = &rest[..rest.find('"')?];
    tag.starts_with("familiar-").then(|| tag.to_string())
}

/// Files under `dir`, recursively, not following symbolic links.
fn count_files(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => n += count_files(&e.path()),
            Ok(_) => n += 1,
            Err(_) => {}
        }
    }
    n
}

fn is_plain_json(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Names of the fields (JSONL keys, Parquet columns) a reader takes documents from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The document text (required).
    pub text: String,
    /// The external document id (optional; defaults to `file:line`).
    pub id: String,
    /// The source name (optional).
    pub source: String,
    /// A JSON object of metadata, flattened (optional).
    pub metadata: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            text: "text".into(),
            id: "id".into(),
            source: "source".into(),
            metadata: "metadata".into(),
        }
    }
}

/// One document read from a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The text.
    pub text: String,
    /// External id from the corpus (or `file:line` when the record has none).
    pub external_id: String,
    /// Source name, if the record has one.
    pub source: Option<String>,
    /// Metadata flattened to `key → value` strings: nested objects as dotted keys, arrays as JSON.
    pub metadata: Vec<(String, String)>,
    /// Index of the input file in the reader's list.
    pub file: usize,
    /// 1-based line (JSONL), row (Parquet), or 1 (text file).
    pub record: u64,
}

/// Reads records of one file.
trait RecordSource: Send {
    /// The next document, `None` at the end. Record-level problems are `Err(Error::Input)`.
    fn next_record(&mut self) -> Option<Result<Document>>;
    /// Records consumed so far (lines or rows), which a cursor can skip back to.
    fn consumed(&self) -> u64;
    /// Fingerprint of what has been consumed so far, a function of the file's contents and
    /// [`RecordSource::consumed`] only (never of how far decoding has read ahead): JSONL, the
    /// xxh3 of the decompressed bytes of the lines consumed (terminators included; for an
    /// uncompressed file, its first bytes); Parquet and text files, the xxh3 of the whole file
    /// (hashed when opened).
    fn consumed_xxh3(&self) -> u64;
    /// The xxh3 of the whole file's bytes as stored; called once, after the last record (reads
    /// whatever decoding left unread, usually nothing).
    fn file_xxh3(&mut self) -> Result<u64>;
}

/// The error of a resumed build whose input differs from what the interrupted build read:
/// "input X changed since the interrupted build (DETAIL); rerun with `restart` to start over".
pub fn changed_since(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::Config(format!(
        "input {} changed since the interrupted build ({detail}); rerun with {} to start over",
        path.display(),
        crate::option::name("restart")
    ))
}

/// Whole-file fingerprints (xxh3 of the bytes as stored) of a reader's inputs, filled in as each
/// file is read to its end; shared with whoever records them (a handle, like
/// [`CorpusReader::bytes_read`]).
#[derive(Debug, Clone, Default)]
pub struct Fingerprints(Arc<Mutex<Vec<Option<u64>>>>);

impl Fingerprints {
    fn new(files: usize) -> Fingerprints {
        Fingerprints(Arc::new(Mutex::new(vec![None; files])))
    }

    /// The fingerprint of input `file`, once it has been read to its end.
    pub fn get(&self, file: usize) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(file)
            .copied()
            .flatten()
    }

    fn set(&self, file: usize, xxh3: u64) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = v.get_mut(file) {
            *slot = Some(xxh3);
        }
    }
}

/// Streams documents from a list of input files, starting at a cursor.
pub struct CorpusReader {
    files: Vec<InputFile>,
    fields: Fields,
    skip_invalid: bool,
    allow_empty: bool,
    next_file: usize,
    start_record: u64,
    /// The open file: index, source, documents read from it, and whether it counts as empty if it
    /// yields none (false when resumed part-way).
    current: Option<(usize, Box<dyn RecordSource>, u64, bool)>,
    skipped: u64,
    empty_inputs: Vec<PathBuf>,
    bytes_read: Arc<AtomicU64>,
    fingerprints: Fingerprints,
    /// What the records before the cursor must hash to (`xxh3:<hex>`), checked once re-read.
    expect_at_cursor: Option<String>,
}

impl std::fmt::Debug for CorpusReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorpusReader")
            .field("files", &self.files.len())
            .field("cursor", &self.cursor())
            .finish()
    }
}

/// Options of a [`CorpusReader`].
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Field names.
    pub fields: Fields,
    /// Skip (and count) malformed records instead of failing.
    pub skip_invalid: bool,
    /// Accept input files without documents (counted) instead of failing.
    pub allow_empty: bool,
}

impl CorpusReader {
    /// A reader over `files` starting at `cursor`.
    pub fn new(files: Vec<InputFile>, options: ReadOptions, cursor: InputCursor) -> CorpusReader {
        let files_len = files.len();
        CorpusReader {
            files,
            fields: options.fields,
            skip_invalid: options.skip_invalid,
            allow_empty: options.allow_empty,
            next_file: cursor.file,
            start_record: cursor.record,
            current: None,
            skipped: 0,
            empty_inputs: Vec::new(),
            bytes_read: Arc::new(AtomicU64::new(0)),
            fingerprints: Fingerprints::new(files_len),
            expect_at_cursor: None,
        }
    }

    /// Checks, when the file at the starting cursor has been re-read up to the cursor, that its
    /// records so far have the fingerprint `xxh3` (`xxh3:<hex>`, what the shard that ended there
    /// recorded; see [`CorpusReader::consumed_fingerprint`]). A mismatch is an error naming the
    /// file: the interrupted build read other contents. Has no effect when the cursor is at the
    /// start of a file (nothing of it was read).
    pub fn expect_at_cursor(mut self, xxh3: impl Into<String>) -> CorpusReader {
        self.expect_at_cursor = Some(xxh3.into());
        self
    }

    /// The fingerprint of the records of the current file consumed so far, i.e. up to and
    /// including the document last returned (see [`CorpusReader::cursor`]); `None` before the
    /// first document of a file. Depends only on the file's contents and the cursor.
    pub fn consumed_fingerprint(&self) -> Option<u64> {
        self.current
            .as_ref()
            .map(|(_, src, _, _)| src.consumed_xxh3())
    }

    /// Whole-file fingerprints, filled in as files are read to their ends.
    pub fn fingerprints(&self) -> Fingerprints {
        self.fingerprints.clone()
    }

    /// Where the next document will be read from: everything before it has been consumed.
    pub fn cursor(&self) -> InputCursor {
        match &self.current {
            Some((file, src, _, _)) => InputCursor {
                file: *file,
                record: src.consumed(),
            },
            None => InputCursor {
                file: self.next_file,
                record: self.start_record,
            },
        }
    }

    /// Malformed records skipped so far (only with `skip_invalid`).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Input files that held no documents (only with `allow_empty`).
    pub fn empty_inputs(&self) -> &[PathBuf] {
        &self.empty_inputs
    }

    /// A counter of compressed bytes read from disk so far, for progress bars.
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes_read)
    }

    fn open(&self, index: usize, skip: u64) -> Result<Box<dyn RecordSource>> {
        let input = &self.files[index];
        let counter = Arc::clone(&self.bytes_read);
        Ok(match input.format {
            InputFormat::Parquet => Box::new(parquet_reader::ParquetSource::open(
                &input.path,
                index,
                &self.fields,
                skip,
                counter,
            )?),
            InputFormat::Text => Box::new(TextSource::open(&input.path, index, skip, counter)?),
            f => Box::new(jsonl::JsonlSource::open(
                &input.path,
                f,
                index,
                &self.fields,
                skip,
                counter,
            )?),
        })
    }
}

impl Iterator for CorpusReader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        loop {
            if self.current.is_none() {
                if self.next_file >= self.files.len() {
                    return None;
                }
                let skip = std::mem::take(&mut self.start_record);
                let expected = self.expect_at_cursor.take();
                let opened = self
                    .open(self.next_file, skip)
                    .and_then(|src| match expected {
                        Some(want) if skip > 0 => {
                            let now = crate::manifest::fingerprint(src.consumed_xxh3());
                            if now != want {
                                let unit = match self.files[self.next_file].format {
                                    InputFormat::Parquet | InputFormat::Text => {
                                        "for the file".to_string()
                                    }
                                    _ => format!("for its first {skip} lines"),
                                };
                                return Err(changed_since(
                                    &self.files[self.next_file].path,
                                    format!("{want} recorded {unit}, {now} now"),
                                ));
                            }
                            Ok(src)
                        }
                        _ => Ok(src),
                    });
                match opened {
                    Ok(src) => self.current = Some((self.next_file, src, 0, skip == 0)),
                    Err(e) => {
                        self.next_file = self.files.len();
                        return Some(Err(e));
                    }
                }
                self.next_file += 1;
            }
            let Some((index, src, docs, from_start)) = self.current.as_mut() else {
                continue;
            };
            match src.next_record() {
                Some(Ok(doc)) => {
                    *docs += 1;
                    return Some(Ok(doc));
                }
                Some(Err(Error::Input { .. })) if self.skip_invalid => {
                    self.skipped += 1;
                    // A file of only malformed records is not an empty file.
                    *from_start = false;
                }
                Some(Err(e)) => {
                    self.next_file = self.files.len();
                    self.current = None;
                    return Some(Err(e));
                }
                None => {
                    let (index, docs, from_start) = (*index, *docs, *from_start);
                    match src.file_xxh3() {
                        Ok(h) => self.fingerprints.set(index, h),
                        Err(e) => {
                            self.next_file = self.files.len();
                            self.current = None;
                            return Some(Err(e));
                        }
                    }
                    self.current = None;
                    // A file read from its start that held no records (blank lines aside) is empty.
                    if docs == 0 && from_start {
                        let path = self.files[index].path.clone();
                        if !self.allow_empty {
                            self.next_file = self.files.len();
                            return Some(Err(Error::input(
                                path,
                                0,
                                format!(
                                    "holds no documents (an empty shard); pass {} to accept empty \
                                     inputs",
                                    crate::option::name("allow_empty")
                                ),
                            )));
                        }
                        self.empty_inputs.push(path);
                    }
                }
            }
        }
    }
}

/// A plain-text file: one document whose id is the path.
struct TextSource {
    doc: Option<Result<Document>>,
    consumed: u64,
    xxh3: u64,
}

impl TextSource {
    fn open(path: &Path, index: usize, skip: u64, counter: Arc<AtomicU64>) -> Result<TextSource> {
        use std::io::Read;
        let (file, len) = crate::manifest::open_regular(path)?;
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(len).read_to_end(&mut bytes).at(path)?;
        counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let xxh3 = xxhash_rust::xxh3::xxh3_64(&bytes);
        if skip > 0 {
            // Resumed past it: read only to check its fingerprint.
            return Ok(TextSource {
                doc: None,
                consumed: 1,
                xxh3,
            });
        }
        // A leading byte-order mark is not part of the text (the fingerprint keeps it: it hashes
        // the file as stored).
        let bom = if bytes.starts_with(jsonl::UTF8_BOM) {
            bytes.drain(..jsonl::UTF8_BOM.len());
            jsonl::UTF8_BOM.len()
        } else {
            0
        };
        if bytes.is_empty() {
            // No document at all (nothing, or only a byte-order mark): an empty input, like a
            // JSONL file without records.
            return Ok(TextSource {
                doc: None,
                consumed: 0,
                xxh3,
            });
        }
        let doc = match String::from_utf8(bytes) {
            Ok(text) => Ok(Document {
                text,
                external_id: path.display().to_string(),
                source: None,
                metadata: Vec::new(),
                file: index,
                record: 1,
            }),
            Err(e) => Err(Error::input(
                path,
                1,
                format!(
                    "invalid UTF-8 at byte offset {} of the file",
                    bom + e.utf8_error().valid_up_to()
                ),
            )),
        };
        Ok(TextSource {
            doc: Some(doc),
            consumed: 0,
            xxh3,
        })
    }
}

impl RecordSource for TextSource {
    fn next_record(&mut self) -> Option<Result<Document>> {
        let d = self.doc.take()?;
        self.consumed = 1;
        Some(d)
    }
    fn consumed(&self) -> u64 {
        self.consumed
    }
    fn consumed_xxh3(&self) -> u64 {
        self.xxh3
    }
    fn file_xxh3(&mut self) -> Result<u64> {
        Ok(self.xxh3)
    }
}

/// Flattens a JSON metadata value into `key → string` pairs (dotted keys for nested objects).
pub fn flatten_metadata(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_metadata(&key, v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        let f = |s: &str| InputFormat::from_path(Path::new(s));
        assert_eq!(f("a.jsonl"), Some(InputFormat::Jsonl));
        assert_eq!(f("a.json.gz"), Some(InputFormat::JsonlGz));
        assert_eq!(f("a.JSONL.ZST"), Some(InputFormat::JsonlZst));
        assert_eq!(f("a.parquet"), Some(InputFormat::Parquet));
        assert_eq!(f("a.txt"), Some(InputFormat::Text));
        assert_eq!(f("a.txt.gz"), None);
        assert_eq!(f("README.md"), None);
    }

    #[test]
    fn metadata_is_flattened() {
        let v: serde_json::Value =
            serde_json::json!({"title": "T", "n": 3, "a": {"b": true}, "l": [1, 2], "z": null});
        let mut out = Vec::new();
        flatten_metadata("", &v, &mut out);
        assert_eq!(
            out,
            vec![
                ("a.b".to_string(), "true".to_string()),
                ("l".into(), "[1,2]".into()),
                ("n".into(), "3".into()),
                ("title".into(), "T".into())
            ]
        );
    }
}

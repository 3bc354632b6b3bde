//! Manifests: `manifest.json` of an index and of each shard, and `build.json`, the build plan that
//! lets an interrupted build resume.
//!
//! All are JSON with fixed field order (structs and `BTreeMap`s), so the same build writes the same
//! bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::format::FORMAT_VERSION;
use crate::token::TokenWidth;

/// Name of a manifest file in an index or shard directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Name of the build plan in an index directory.
pub const BUILD_PLAN_FILE: &str = "build.json";
/// Name of the tokenizer copy kept in an index directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Token file of a shard.
pub const TOKENS_FILE: &str = "tokens.bin";
/// Suffix-array file of a shard.
pub const SUFFIX_ARRAY_FILE: &str = "suffix_array.bin";
/// Document-offset file of a shard.
pub const DOC_OFFSETS_FILE: &str = "doc_offsets.bin";
/// Documents table of a shard.
pub const DOCUMENTS_FILE: &str = "documents.parquet";

/// A position in the ordered list of input files: `record` records of file `file` have been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct InputCursor {
    /// Index into the build's input list.
    pub file: usize,
    /// Records (JSONL lines, Parquet rows, text files) of that file already consumed.
    pub record: u64,
}

/// Size and checksum of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Length in bytes.
    pub bytes: u64,
    /// `xxh3:<hex>` of the contents.
    pub checksum: String,
}

/// `manifest.json` of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// Always `familiar-shard`.
    pub format: String,
    /// Format version of the shard's files.
    pub format_version: u32,
    /// Shard number, from 0.
    pub shard: u32,
    /// Hash of the tokenizer.json the tokens come from.
    pub tokenizer_hash: String,
    /// Width of the stored token ids.
    pub token_width: TokenWidth,
    /// Id that ends each document (= vocabulary size).
    pub separator: u32,
    /// Token positions in the shard, separators included.
    pub tokens: u64,
    /// Documents in the shard.
    pub documents: u64,
    /// Global id of the shard's first document.
    pub first_doc: u64,
    /// Bits per suffix-array entry.
    pub suffix_array_bits: u32,
    /// Where in the inputs the shard's first document was read.
    pub input_start: InputCursor,
    /// Where the next shard starts reading.
    pub input_end: InputCursor,
    /// Content fingerprints of the inputs this shard's reading covered, so that a resumed build
    /// can tell whether they changed since (absent in shards written before fingerprints existed,
    /// and in indexes of generated token streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_fingerprints: Option<InputFingerprints>,
    /// Every file of the shard, by name.
    pub files: BTreeMap<String, FileEntry>,
    /// The shard's text index (its files are in `files` under `text/`, plus `words.fst`); absent
    /// when the index was built with `--no-text-index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_index: Option<TextIndexInfo>,
}

/// What a shard recorded about the inputs it read (see `schemas/index-format.md`).
///
/// A shard's reading runs from `input_start` to `input_end`. Every input file it read to the end
/// (files `input_start.file` up to, not including, `input_end.file`) is listed in `finished` with
/// the xxh3 of the whole file's bytes (as stored on disk, compressed or not). The file it stopped
/// in gets `end`: the fingerprint of its first `input_end.record` records, which a resumed build
/// re-reads and compares before it reads on (see [`crate::corpus::CorpusReader::expect_at_cursor`]).
/// Both depend only on the files' contents, never on how far the reader had read ahead when the
/// shard was cut, so an interrupted and resumed build writes the same manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFingerprints {
    /// Whole-file fingerprints of the inputs finished within the shard, in order.
    pub finished: Vec<FinishedInput>,
    /// Fingerprint of the records of input `input_end.file` consumed up to `input_end.record`.
    pub end: String,
}

/// An input file a shard read to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedInput {
    /// Index into the build's input list.
    pub file: usize,
    /// `xxh3:<hex>` of the file's bytes.
    pub xxh3: String,
}

/// What a shard's text index holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextIndexInfo {
    /// The analysis (`familiar_text::ANALYZER`).
    pub analyzer: String,
    /// Distinct words (unstemmed) in `words.fst`.
    pub words: u64,
}

/// A shard as listed in the index manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Directory name inside the index.
    pub dir: String,
    /// Token positions, separators included.
    pub tokens: u64,
    /// Documents.
    pub documents: u64,
    /// Global id of the first document.
    pub first_doc: u64,
    /// Checksum of the shard's manifest.json.
    pub manifest_checksum: String,
}

/// The tokenizer an index was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerEntry {
    /// File name of the copy inside the index directory.
    pub file: String,
    /// `xxh3:<hex>` of the tokenizer.json bytes.
    pub hash: String,
    /// Number of ids (largest id + 1); the separator takes this id.
    pub vocab_size: u32,
}

/// `manifest.json` of an index: written last, so its presence means the build finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexManifest {
    /// Always `familiar-index`.
    pub format: String,
    /// Format version.
    pub format_version: u32,
    /// The tokenizer.
    pub tokenizer: TokenizerEntry,
    /// Width of stored token ids.
    pub token_width: TokenWidth,
    /// Separator id.
    pub separator: u32,
    /// Total token positions over all shards, separators included.
    pub tokens: u64,
    /// Total documents.
    pub documents: u64,
    /// The shards, in document order.
    pub shards: Vec<ShardEntry>,
}

/// One input file of a build plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedInput {
    /// Path as resolved from the command line.
    pub path: String,
    /// Size in bytes when the build started.
    pub bytes: u64,
    /// `xxh3:<hex>` of the file's bytes, recorded when the build completes (the plan is written
    /// before any input is read, so an unfinished build's plan has none: the shards record what
    /// they read). Absent in plans written before fingerprints existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<String>,
    /// Opaque identity of the file when the build started (modification and change times, inode
    /// and device), kept only while the build is unfinished: a resumed build re-reads and checks
    /// an input it will not read again only when this changed. Dropped when the build completes
    /// (it differs between copies of the same files, and a finished index does not need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<String>,
}

/// `build.json`: what a build reads and how it cuts shards, recorded before the first shard is
/// written so that a re-run resumes the same build (or refuses a different one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// Always `familiar-build`.
    pub format: String,
    /// Format version.
    pub format_version: u32,
    /// Hash of the tokenizer.
    pub tokenizer_hash: String,
    /// Field holding the text (JSONL) or column (Parquet).
    pub text_field: String,
    /// Field holding the external document id.
    pub id_field: String,
    /// Field holding the source name.
    pub source_field: String,
    /// Field holding the metadata object.
    pub metadata_field: String,
    /// Maximum token positions per shard.
    pub shard_tokens: u64,
    /// Whether malformed records are skipped (and counted) instead of failing the build.
    pub skip_invalid: bool,
    /// Whether shards get a text index (plans written before text indexes existed: none).
    #[serde(default)]
    pub text_index: bool,
    /// The input files, in reading order.
    pub inputs: Vec<PlannedInput>,
}

impl ShardManifest {
    /// The format tag.
    pub const FORMAT: &'static str = "familiar-shard";
}
impl IndexManifest {
    /// The format tag.
    pub const FORMAT: &'static str = "familiar-index";
}
impl BuildPlan {
    /// The format tag.
    pub const FORMAT: &'static str = "familiar-build";
}

/// The largest manifest [`read`] accepts (a `build.json` of a million inputs is about 200 MB).
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Reads a JSON manifest of type `M`, checking its `format` tag and version. Only a regular file
/// (after following symbolic links) of at most [`MAX_MANIFEST_BYTES`] is read: a FIFO or a device
/// such as `/dev/zero` in its place is an error, not a hang.
pub fn read<M: for<'de> Deserialize<'de>>(path: &Path, format: &str) -> Result<M> {
    let bytes = read_regular(path, MAX_MANIFEST_BYTES)?;
    parse(&bytes, format, path)
}

/// What a non-regular file is, for messages.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, t: &std::fs::FileType) -> Error {
    Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "is {}, not a regular file (familiar reads only regular files here)",
                file_kind(t)
            ),
        ),
    )
}

/// Opens `path` for reading if it is a regular file, following symbolic links; returns the file
/// and its length. A FIFO, device, socket or directory is refused *before* it is opened (opening
/// a FIFO blocks until a writer comes; `/dev/zero` never ends), and the opened file is checked
/// again (a file swapped in between is refused too).
pub fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    let meta = std::fs::metadata(path).at(path)?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta.file_type()));
    }
    let file = std::fs::File::open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta.file_type()));
    }
    Ok((file, meta.len()))
}

/// Reads a whole regular file (see [`open_regular`]) of at most `max` bytes; a larger one is an
/// error naming the limit, read no further than the limit if it grows meanwhile.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let (file, len) = open_regular(path)?;
    let too_large = |len: u64| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "is {len} bytes, more than the {max} bytes familiar reads from such a file"
                ),
            ),
        )
    };
    if len > max {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes).at(path)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The checksum (`xxh3:<hex>`) and length of a regular file (see [`open_regular`]). With
/// `expected`, a file of another length is an [`Error::Size`] before anything is read, and no
/// more than `expected` bytes are read.
pub fn checksum_regular(path: &Path, expected: Option<u64>) -> Result<(String, u64)> {
    use std::io::Read;
    let (file, len) = open_regular(path)?;
    if let Some(expected) = expected {
        if len != expected {
            return Err(Error::Size {
                path: path.to_path_buf(),
                expected,
                actual: len,
            });
        }
    }
    let mut reader = file.take(expected.map_or(u64::MAX, |e| e + 1));
    let (digest, read) = crate::checksum::hash_reader(&mut reader, path, |_| {})?;
    if let Some(expected) = expected {
        if read != expected {
            // Changed while being read.
            return Err(Error::Size {
                path: path.to_path_buf(),
                expected,
                actual: read,
            });
        }
    }
    Ok((fingerprint(digest), read))
}

/// A 64-bit xxh3 value as written in manifests: `xxh3:<16 hex digits>`.
pub fn fingerprint(xxh3: u64) -> String {
    crate::checksum::format(xxh3)
}

/// Parses manifest bytes (see [`read`]); `path` names the file in errors.
pub fn parse<M: for<'de> Deserialize<'de>>(bytes: &[u8], format: &str, path: &Path) -> Result<M> {
    #[derive(Deserialize)]
    struct Tag {
        format: Option<String>,
        format_version: Option<u32>,
    }
    // JSON is UTF-8 (RFC 8259); serde skips fields it does not know without checking their
    // bytes, so check the whole text first (found by the `manifest` fuzz target).
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(Error::corrupt(
            path,
            format!(
                "not a valid JSON manifest: invalid UTF-8 at byte {}",
                e.valid_up_to()
            ),
        ));
    }
    // The same skip does not decode `\u` escapes: a lone surrogate would pass too.
    crate::json::check(bytes)
        .map_err(|e| Error::corrupt(path, format!("not a valid JSON manifest: {e}")))?;
    let tag: Tag = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(path, format!("not a valid JSON manifest: {e}")))?;
    if tag.format.as_deref() != Some(format) {
        return Err(Error::corrupt(
            path,
            format!(
                "expected a `{format}` manifest, found format {:?}",
                tag.format.unwrap_or_default()
            ),
        ));
    }
    let version = tag.format_version.unwrap_or(0);
    if !(crate::format::OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(Error::Version {
            path: path.to_path_buf(),
            got: version,
            oldest: crate::format::OLDEST_READABLE_VERSION,
            current: FORMAT_VERSION,
        });
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(path, format!("invalid manifest: {e}")))
}

/// Serializes a manifest: pretty JSON with a trailing newline.
pub fn to_bytes<M: Serialize>(m: &M) -> Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::Bug(format!("manifest serialization: {e}")))?;
    v.push(b'\n');
    Ok(v)
}

/// The temporary name a file is written under before it is renamed to `path`:
/// `.tmp-NAME.PID-RANDOM` in the same directory (so the rename is atomic). The name is unique
/// per call, so concurrent writers of one output never write into each other's file: the last
/// rename wins and every published file is whole. Cleanup of interrupted runs matches the
/// `.tmp-` prefix ([`is_temp_name`]).
pub fn temp_path(path: &Path) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // std's RandomState is seeded from the operating system's random source.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let random = h.finish() as u32;
    dir.join(format!(".tmp-{name}.{}-{random:08x}", std::process::id()))
}

/// Whether a file name is one of familiar's temporary names (a leftover when no writer runs).
pub fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with(".tmp-")
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes what `write` produces to `path` atomically: into a uniquely named temporary file
/// beside it ([`temp_path`]), buffered, synced, then renamed over `path`; on any failure the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    use std::io::Write;
    let tmp = temp_path(path);
    let written = (|| {
        let f = std::fs::File::create(&tmp).at(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        write(&mut w).at(&tmp)?;
        w.flush().at(&tmp)?;
        let f = w.into_inner().map_err(|e| e.into_error()).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        std::fs::rename(&tmp, path).at(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Checks a shard's files against its manifest (sizes and checksums).
pub fn verify_shard_files(dir: &Path) -> Result<ShardManifest> {
    let mpath = dir.join(MANIFEST_FILE);
    let m: ShardManifest = read(&mpath, ShardManifest::FORMAT)?;
    for (name, entry) in &m.files {
        let path = dir.join(name);
        // A regular file of the recorded size, checked before it is read.
        let (checksum, _) = checksum_regular(&path, Some(entry.bytes))?;
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

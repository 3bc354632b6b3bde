//! JSON-lines reader (plain, zstd, gzip).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use super::{flatten_metadata, Document, Fields, InputFormat, RecordSource};
use crate::error::{Error, IoContext, Result};

/// The raw file under the decompressor: counts (for progress) and hashes every byte read from
/// disk, so the whole file's fingerprint costs no second pass.
pub(super) struct HashingReader {
    file: std::fs::File,
    hasher: Box<Xxh3>,
    counter: Arc<AtomicU64>,
}

impl HashingReader {
    pub(super) fn new(file: std::fs::File, counter: Arc<AtomicU64>) -> Self {
        HashingReader {
            file,
            hasher: Box::new(Xxh3::new()),
            counter,
        }
    }

    /// Reads what is left of the file and returns the xxh3 of all of its bytes.
    fn finish(mut self, path: &Path) -> Result<u64> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self.read(&mut buf).at(path)?;
            if n == 0 {
                return Ok(self.hasher.digest());
            }
        }
    }
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decoded line stream, kept concrete so that the raw reader can be taken back at the end.
enum Stream {
    /// A 0-byte file (whatever its compression: a decoder would call it truncated).
    Empty(HashingReader, std::io::Empty),
    Plain(BufReader<HashingReader>),
    Zstd(BufReader<zstd::Decoder<'static, BufReader<HashingReader>>>),
    Gz(Box<BufReader<flate2::read::MultiGzDecoder<HashingReader>>>),
    /// The raw reader was taken back.
    Done(std::io::Empty),
}

impl Stream {
    fn reader(&mut self) -> &mut dyn BufRead {
        match self {
            Stream::Empty(_, e) | Stream::Done(e) => e,
            Stream::Plain(r) => r,
            Stream::Zstd(r) => r,
            Stream::Gz(r) => r.as_mut(),
        }
    }

    /// The raw reader, after the decoded stream ended.
    fn into_raw(self) -> Option<HashingReader> {
        match self {
            Stream::Empty(r, _) => Some(r),
            Stream::Plain(r) => Some(r.into_inner()),
            Stream::Zstd(r) => Some(r.into_inner().finish().into_inner()),
            Stream::Gz(r) => Some(r.into_inner().into_inner()),
            Stream::Done(_) => None,
        }
    }
}

pub(super) struct JsonlSource {
    stream: Stream,
    path: PathBuf,
    file_name: String,
    index: usize,
    fields: Fields,
    line: u64,
    buf: Vec<u8>,
    failed: bool,
    /// xxh3 of the (decompressed) bytes of the lines consumed so far, terminators included.
    lines: Box<Xxh3>,
}

impl JsonlSource {
    pub(super) fn open(
        path: &Path,
        format: InputFormat,
        index: usize,
        fields: &Fields,
        skip: u64,
        counter: Arc<AtomicU64>,
    ) -> Result<JsonlSource> {
        let (file, len) = crate::manifest::open_regular(path)?;
        let raw = HashingReader::new(file, counter);
        let stream = match format {
            _ if len == 0 => Stream::Empty(raw, std::io::empty()),
            InputFormat::JsonlZst => {
                let dec = zstd::Decoder::new(raw).map_err(|e| {
                    Error::input(path, 0, format!("cannot start zstd decoding: {e}"))
                })?;
                Stream::Zstd(BufReader::with_capacity(1 << 20, dec))
            }
            InputFormat::JsonlGz => Stream::Gz(Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::read::MultiGzDecoder::new(raw),
            ))),
            _ => Stream::Plain(BufReader::with_capacity(1 << 20, raw)),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut src = JsonlSource {
            stream,
            path: path.to_path_buf(),
            file_name,
            index,
            fields: fields.clone(),
            line: 0,
            buf: Vec::new(),
            failed: false,
            lines: Box::new(Xxh3::new()),
        };
        // Resuming: skip whole lines without parsing them (hashing them, so that the caller can
        // check them against the fingerprint the interrupted build recorded).
        while src.line < skip {
            src.buf.clear();
            let n = src.read_line()?;
            if n == 0 {
                return Err(super::changed_since(
                    path,
                    format!(
                        "it has only {} lines, but the build resumes after line {skip}",
                        src.line
                    ),
                ));
            }
        }
        Ok(src)
    }

    /// Reads one physical line into `buf`, counting and hashing it. Errors are stream errors
    /// (decompression, I/O); decoding runs ahead of parsing, so they name the last line read
    /// intact.
    fn read_line(&mut self) -> Result<usize> {
        let start = self.buf.len();
        let n = self
            .stream
            .reader()
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| {
                let what = match e.kind() {
                    std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::Other => "corrupt or truncated compressed data",
                    _ => "read error",
                };
                let after = if self.line == 0 {
                    "at the start".to_string()
                } else {
                    format!("after line {}", self.line)
                };
                Error::Io {
                    path: self.path.clone(),
                    error: std::io::Error::new(e.kind(), format!("{what} {after}: {e}")),
                }
            })?;
        if n > 0 {
            self.line += 1;
            self.lines.update(&self.buf[start..]);
        }
        Ok(n)
    }

    fn parse(&self, bytes: &[u8]) -> Result<Document> {
        parse_record(
            bytes,
            &self.fields,
            &self.path,
            &self.file_name,
            self.index,
            self.line,
        )
    }
}

/// Parses one JSONL record (a line without its newline) into a document. `path` and `line` name
/// it in errors; `file_name` makes the default id (`file_name:line`) for records without one.
pub fn parse_record(
    bytes: &[u8],
    f: &Fields,
    path: &Path,
    file_name: &str,
    index: usize,
    line: u64,
) -> Result<Document> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::input(
            path,
            line,
            format!(
                "invalid UTF-8 at byte offset {} of the line",
                e.valid_up_to()
            ),
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::input(path, line, format!("invalid JSON: {e}")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(Error::input(path, line, "expected a JSON object per line"));
    };
    let wrong_type = |field: &str, value: &serde_json::Value, expected: &str| {
        Error::input(
            path,
            line,
            format!(
                "field `{field}` is {}, expected {expected}",
                json_kind(value)
            ),
        )
    };
    let text = match map.remove(&f.text) {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => return Err(wrong_type(&f.text, &other, "a string")),
        None => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            return Err(Error::input(
                path,
                line,
                format!(
                    "no `{}` field (the record has: {}); name the text field with {}",
                    f.text,
                    if keys.is_empty() {
                        "no fields".to_string()
                    } else {
                        keys.join(", ")
                    },
                    crate::option::name("text_field")
                ),
            ));
        }
    };
    let external_id = match map.remove(&f.id) {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::Null) | None => format!("{}:{line}", file_name),
        Some(other) => return Err(wrong_type(&f.id, &other, "a string or number")),
    };
    let source = match map.remove(&f.source) {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Null) | None => None,
        Some(other) => return Err(wrong_type(&f.source, &other, "a string")),
    };
    let mut metadata = Vec::new();
    if let Some(m) = map.remove(&f.metadata) {
        flatten_metadata("", &m, &mut metadata);
    }
    Ok(Document {
        text,
        external_id,
        source,
        metadata,
        file: index,
        record: line,
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl RecordSource for JsonlSource {
    fn next_record(&mut self) -> Option<Result<Document>> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            match self.read_line() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    // A broken stream cannot be resumed past; stop after reporting it.
                    self.failed = true;
                    return Some(Err(e));
                }
            }
            let bytes = std::mem::take(&mut self.buf);
            // A byte-order mark opens some UTF-8 files (Windows tools write one): not part of
            // the first record. Only at the start of the file; anywhere else it is the record's.
            let body = if self.line == 1 {
                strip_bom(&bytes)
            } else {
                &bytes[..]
            };
            let trimmed = trim_ascii(body);
            if trimmed.is_empty() {
                self.buf = bytes;
                continue;
            }
            let doc = self.parse(trimmed);
            self.buf = bytes;
            return Some(doc);
        }
    }

    fn consumed(&self) -> u64 {
        self.line
    }

    fn consumed_xxh3(&self) -> u64 {
        self.lines.digest()
    }

    fn file_xxh3(&mut self) -> Result<u64> {
        match std::mem::replace(&mut self.stream, Stream::Done(std::io::empty())).into_raw() {
            Some(raw) => raw.finish(&self.path),
            None => Err(Error::Bug(format!(
                "{}: the file's fingerprint was asked for twice",
                self.path.display()
            ))),
        }
    }
}

/// The UTF-8 encoding of U+FEFF, the byte-order mark.
pub(super) const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `b` without a leading UTF-8 byte-order mark.
pub(super) fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(UTF8_BOM).unwrap_or(b)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

/// The decompressed bytes of a JSON-lines input (plain, zstd or gzip, as its name says; a
/// 0-byte file is empty whatever its name), for tools that rewrite a corpus line by line with
/// the lines numbered as the reader numbers them.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let format = InputFormat::from_path(path);
    let (file, len) = crate::manifest::open_regular(path)?;
    Ok(match format {
        _ if len == 0 => Box::new(BufReader::new(std::io::empty())),
        Some(InputFormat::JsonlZst) => Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::Decoder::new(file)
                .map_err(|e| Error::input(path, 0, format!("cannot start zstd decoding: {e}")))?,
        )),
        Some(InputFormat::JsonlGz) => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(file),
        )),
        Some(InputFormat::Jsonl) => Box::new(BufReader::with_capacity(1 << 20, file)),
        _ => {
            return Err(Error::input(
                path,
                0,
                "not a JSON-lines file (expected .jsonl, .ndjson or .json, plain, .zst or .gz)",
            ))
        }
    })
}

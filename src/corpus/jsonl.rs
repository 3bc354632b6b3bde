//! JSON-lines reader (plain, zstd, gzip).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{flatten_metadata, CountingReader, Document, Fields, InputFormat, RecordSource};
use crate::error::{Error, IoContext, Result};

pub(super) struct JsonlSource {
    reader: Box<dyn BufRead + Send>,
    path: PathBuf,
    file_name: String,
    index: usize,
    fields: Fields,
    line: u64,
    buf: Vec<u8>,
    failed: bool,
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
        let file = std::fs::File::open(path).at(path)?;
        // A 0-byte file is an empty input whatever its compression (a decoder would call it truncated).
        let empty = file.metadata().at(path)?.len() == 0;
        let raw = CountingReader::new(file, counter);
        let reader: Box<dyn BufRead + Send> = match format {
            _ if empty => Box::new(std::io::empty()),
            InputFormat::JsonlZst => {
                let dec = zstd::Decoder::new(raw).map_err(|e| {
                    Error::input(path, 0, format!("cannot start zstd decoding: {e}"))
                })?;
                Box::new(BufReader::with_capacity(1 << 20, dec))
            }
            InputFormat::JsonlGz => Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::read::MultiGzDecoder::new(raw),
            )),
            _ => Box::new(BufReader::with_capacity(1 << 20, raw)),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut src = JsonlSource {
            reader,
            path: path.to_path_buf(),
            file_name,
            index,
            fields: fields.clone(),
            line: 0,
            buf: Vec::new(),
            failed: false,
        };
        // Resuming: skip whole lines without parsing them.
        while src.line < skip {
            src.buf.clear();
            let n = src.read_line()?;
            if n == 0 {
                return Err(Error::input(
                    path,
                    src.line,
                    format!("file has only {} lines but the build resumes after line {skip}; it changed since", src.line),
                ));
            }
        }
        Ok(src)
    }

    /// Reads one physical line into `buf`, counting it. Errors are stream errors (decompression,
    /// I/O); decoding runs ahead of parsing, so they name the last line read intact.
    fn read_line(&mut self) -> Result<usize> {
        let n = self.reader.read_until(b'\n', &mut self.buf).map_err(|e| {
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
                    "no `{}` field (the record has: {}); name the text field with --text-field",
                    f.text,
                    if keys.is_empty() {
                        "no fields".to_string()
                    } else {
                        keys.join(", ")
                    }
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
            let trimmed = trim_ascii(&bytes);
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

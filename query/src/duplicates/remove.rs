//! A copy of the corpus with the duplicated spans cut, as Lee et al.'s ExactSubstr removes them.
//!
//! The index keeps tokens, not the corpus's records, so the copy is made from the build's own
//! inputs (`build.json`; relative paths as the build was given them, from the current
//! directory), each checked against the fingerprint the build recorded. Every input becomes one
//! zstd-compressed JSON-lines file, at the same path relative to the inputs' common directory.
//! A JSON-lines input is copied line by line, byte for byte, except the text field of the
//! records that hold duplicated spans: that string is replaced (in place in the line; every
//! other byte of the record kept) by the text with the spans cut. A record's text is tokenized
//! again and must give the index's tokens for that document (else the input changed since the
//! build, and the copy is refused). Token k owns the text from the end of token k − 1 to its own
//! end (whitespace that a byte-level token begins with is its own even where the tokenizer's
//! offsets leave it out), and a cut removes what its tokens own: a character that byte-level BPE
//! splits between tokens goes with the first of them.
//! Parquet and plain-text inputs are written as Dolma records (`id`, `text`, `source`,
//! `metadata` with the flattened keys; a malformed record the build skipped is not in
//! their copy). Malformed lines of JSON-lines inputs that the build skipped are copied as they
//! are. Documents whose every token is duplicated keep their record, with an empty text.
//!
//! The copy is written into a temporary directory beside the output and renamed into place when
//! complete, with `dedup.json` (what was removed, per file); the output must not exist.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use familiar::corpus::{CorpusReader, Fields, InputFile, InputFormat, ReadOptions};
use familiar::error::IoContext;
use familiar::index::Index;
use familiar::manifest::{BuildPlan, InputCursor};
use familiar::{Error, Result};

use super::Duplicates;

/// What one input lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemovedFile {
    /// The input, as the build names it.
    pub input: String,
    /// The copy, relative to the output directory.
    pub output: String,
    /// Documents of the input in the index.
    pub documents: u64,
    /// Documents that lost duplicated spans.
    pub changed_documents: u64,
    /// Documents left with an empty text.
    pub emptied_documents: u64,
    /// Duplicated tokens removed.
    pub removed_tokens: u64,
    /// UTF-8 bytes of text removed.
    pub removed_bytes: u64,
}

/// What [`remove_duplicates`] removed (also written as `dedup.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoveSummary {
    /// The shortest duplicated substring, in tokens.
    pub min_len: u64,
    /// Documents in the index.
    pub documents: u64,
    /// Documents that lost duplicated spans.
    pub changed_documents: u64,
    /// Documents left with an empty text.
    pub emptied_documents: u64,
    /// Duplicated tokens removed.
    pub removed_tokens: u64,
    /// UTF-8 bytes of text removed.
    pub removed_bytes: u64,
    /// Per input.
    pub files: Vec<RemovedFile>,
}

/// The file in the output directory that describes the copy.
pub const SUMMARY_FILE: &str = "dedup.json";

/// Writes the corpus of `index` without the duplicated spans of `found` into `out` (which must
/// not exist); `progress` is called with each input's compressed bytes as it is finished.
pub fn remove_duplicates(
    index: &Index,
    found: &Duplicates,
    out: &Path,
    progress: &dyn Fn(u64),
) -> Result<RemoveSummary> {
    check_copy_target(out)?;
    let plan: BuildPlan = familiar::manifest::read(
        &index.dir().join(familiar::manifest::BUILD_PLAN_FILE),
        BuildPlan::FORMAT,
    )?;
    let fields = Fields {
        text: plan.text_field.clone(),
        id: plan.id_field.clone(),
        source: plan.source_field.clone(),
        metadata: plan.metadata_field.clone(),
    };
    // Documents by input file and record; cuts by document.
    let mut records: HashMap<String, HashMap<u64, u64>> = HashMap::new();
    for (doc, (file, record)) in crate::docs::locations(index)?.into_iter().enumerate() {
        records.entry(file).or_default().insert(record, doc as u64);
    }
    let mut cuts: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for s in &found.segments {
        cuts.entry(s.doc_id).or_default().push((s.start, s.end));
    }
    let inputs: Vec<PathBuf> = plan.inputs.iter().map(|i| PathBuf::from(&i.path)).collect();
    let names = output_names(&inputs)?;

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).at(&parent)?;
    let tmp = familiar::manifest::temp_path(out);
    std::fs::create_dir(&tmp).at(&tmp)?;
    let written = (|| -> Result<RemoveSummary> {
        let tokenizer = index.tokenizer()?;
        let copy = Copy {
            index,
            tokenizer,
            cuts: &cuts,
            skip_invalid: plan.skip_invalid,
        };
        let mut summary = RemoveSummary {
            min_len: found.summary.min_len,
            documents: index.documents(),
            ..RemoveSummary::default()
        };
        for (i, planned) in plan.inputs.iter().enumerate() {
            let path = &inputs[i];
            check_unchanged(path, planned.xxh3.as_deref())?;
            let target = tmp.join(&names[i]);
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).at(dir)?;
            }
            let empty = HashMap::new();
            let docs = records.get(&planned.path).unwrap_or(&empty);
            let mut file = RemovedFile {
                input: planned.path.clone(),
                output: names[i].to_string_lossy().into_owned(),
                documents: docs.len() as u64,
                ..RemovedFile::default()
            };
            let f = std::fs::File::create(&target).at(&target)?;
            let mut w = zstd::Encoder::new(std::io::BufWriter::new(f), 3).at(&target)?;
            match InputFormat::from_path(path) {
                Some(InputFormat::Jsonl | InputFormat::JsonlZst | InputFormat::JsonlGz) => {
                    copy.jsonl(path, &fields.text, docs, &mut w, &target, &mut file)?
                }
                Some(format) => {
                    copy.records(path, format, &fields, docs, &mut w, &target, &mut file)?
                }
                None => {
                    return Err(Error::Config(format!(
                        "input {} of the build has a name familiar does not read",
                        path.display()
                    )))
                }
            }
            let inner = w.finish().at(&target)?;
            let f = inner.into_inner().map_err(|e| e.into_error()).at(&target)?;
            f.sync_all().at(&target)?;
            summary.changed_documents += file.changed_documents;
            summary.emptied_documents += file.emptied_documents;
            summary.removed_tokens += file.removed_tokens;
            summary.removed_bytes += file.removed_bytes;
            summary.files.push(file);
            progress(planned.bytes);
        }
        let json = serde_json::to_vec_pretty(&summary)
            .map_err(|e| Error::Bug(format!("dedup summary: {e}")))?;
        familiar::manifest::write_atomic(&tmp.join(SUMMARY_FILE), &json)?;
        std::fs::rename(&tmp, out).at(out)?;
        Ok(summary)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// Refuses an output directory that exists (the copy goes into a new one).
pub fn check_copy_target(out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Error::Conflict(format!(
            "{} exists: the deduplicated copy goes into a new directory",
            out.display()
        )));
    }
    Ok(())
}

/// Refuses an input whose bytes are not those the build read.
fn check_unchanged(path: &Path, xxh3: Option<&str>) -> Result<()> {
    let (file, _) = familiar::manifest::open_regular(path).map_err(|e| match e {
        Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
            Error::Config(format!(
                "input {} of the build is not there (relative inputs are read from the current \
                 directory, as the build was given them)",
                path.display()
            ))
        }
        e => e,
    })?;
    let Some(want) = xxh3 else {
        return Err(Error::Config(format!(
            "the build recorded no fingerprint of input {} (an unfinished build?): cannot \
             check it is what was indexed",
            path.display()
        )));
    };
    let mut file = file;
    let (digest, _) = familiar::checksum::hash_reader(&mut file, path, |_| {})?;
    if familiar::checksum::format(digest) != want {
        return Err(Error::Config(format!(
            "input {} changed since the index was built (its xxh3 is not the build's {want})",
            path.display()
        )));
    }
    Ok(())
}

/// Each input's name in the copy: its path below the inputs' deepest common directory, with
/// its extensions replaced by `.jsonl.zst`. Two inputs that would get one name are refused.
fn output_names(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let absolute: Vec<PathBuf> = inputs
        .iter()
        .map(|p| std::path::absolute(p).at(p))
        .collect::<Result<_>>()?;
    let mut common: Option<PathBuf> = None;
    for p in &absolute {
        let dir = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        common = Some(match common {
            None => dir,
            Some(c) => {
                let mut shared = PathBuf::new();
                for (a, b) in c.components().zip(dir.components()) {
                    if a != b {
                        break;
                    }
                    shared.push(a);
                }
                shared
            }
        });
    }
    let common = common.unwrap_or_default();
    let mut names = Vec::with_capacity(inputs.len());
    let mut seen = std::collections::HashSet::new();
    for p in &absolute {
        let rel = p.strip_prefix(&common).unwrap_or(p);
        let file = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lower = file.to_ascii_lowercase();
        let mut stem_len = file.len();
        for ext in [".zst", ".zstd", ".gz"] {
            if lower[..stem_len].ends_with(ext) {
                stem_len -= ext.len();
                break;
            }
        }
        for ext in [".jsonl", ".ndjson", ".json", ".parquet", ".txt"] {
            if lower[..stem_len].ends_with(ext) {
                stem_len -= ext.len();
                break;
            }
        }
        let name = rel.with_file_name(format!("{}.jsonl.zst", &file[..stem_len]));
        if !seen.insert(name.clone()) {
            return Err(Error::Config(format!(
                "two inputs of the build would both be copied to {}",
                name.display()
            )));
        }
        names.push(name);
    }
    Ok(names)
}

/// What a copy needs to cut a document.
struct Copy<'a> {
    index: &'a Index,
    tokenizer: &'a familiar::tokenizer::Tokenizer,
    cuts: &'a HashMap<u64, Vec<(u64, u64)>>,
    /// Whether the build skipped malformed records (else there are none).
    skip_invalid: bool,
}

impl Copy<'_> {
    /// `text` without document `doc`'s duplicated spans (`None` when it has none), checked to
    /// tokenize to the document's tokens; `path` and `record` name it in errors.
    fn cut(&self, doc: u64, text: &str, path: &Path, record: u64) -> Result<Option<(String, u64)>> {
        let Some(cuts) = self.cuts.get(&doc) else {
            return Ok(None);
        };
        let encoded = self.tokenizer.encode_with_offsets(text)?;
        let ids: Vec<u32> = encoded.iter().map(|e| e.0).collect();
        let indexed = self.index.doc_tokens(doc, 0, u64::MAX)?;
        if ids != indexed {
            return Err(Error::input(
                path,
                record,
                format!(
                    "the text no longer tokenizes to the tokens of document {doc} of the index \
                     ({} tokens, {} indexed): the input changed since the index was built",
                    ids.len(),
                    indexed.len()
                ),
            ));
        }
        // Byte offset of every char, and of the end.
        let mut bytes: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        bytes.push(text.len());
        let byte_at = |c: usize| bytes.get(c).copied().unwrap_or(text.len());
        // Token k owns the text from the end of token k − 1 (the start, for the first) to its
        // own end (the end of the text, for the last): offsets may leave out the whitespace a
        // byte-level token begins with, and this gives it back to the token.
        let last = encoded.len();
        let owned_end = |k: usize| -> usize {
            if k == 0 {
                0
            } else if k >= last {
                text.len()
            } else {
                byte_at(encoded[k - 1].1 .1)
            }
        };
        let mut kept = String::with_capacity(text.len());
        let mut from = 0usize;
        let mut removed_tokens = 0;
        for &(start, end) in cuts {
            let (a, b) = (start as usize, end as usize);
            if a >= b || b > last {
                return Err(Error::Bug(format!(
                    "document {doc}: duplicated span {a}..{b} of its {last} tokens"
                )));
            }
            let (cut_from, cut_to) = (owned_end(a), owned_end(b));
            if cut_from > from {
                kept.push_str(&text[from..cut_from]);
            }
            from = from.max(cut_to);
            removed_tokens += end - start;
        }
        kept.push_str(&text[from.min(text.len())..]);
        Ok(Some((kept, removed_tokens)))
    }

    fn count(file: &mut RemovedFile, before: &str, after: &str, tokens: u64) {
        file.changed_documents += 1;
        file.removed_tokens += tokens;
        file.removed_bytes += (before.len() - after.len()) as u64;
        if after.is_empty() {
            file.emptied_documents += 1;
        }
    }

    /// Copies a JSON-lines input line by line, replacing the text of the records with cuts.
    fn jsonl(
        &self,
        path: &Path,
        text_field: &str,
        docs: &HashMap<u64, u64>,
        w: &mut dyn Write,
        target: &Path,
        file: &mut RemovedFile,
    ) -> Result<()> {
        let mut r = familiar::corpus::open_decompressed(path)?;
        let mut line = Vec::new();
        let mut n = 0u64;
        loop {
            line.clear();
            let read = r
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::input(path, n, format!("cannot read past line {n}: {e}")))?;
            if read == 0 {
                return Ok(());
            }
            n += 1;
            let doc = docs.get(&n).copied();
            let Some(doc) = doc.filter(|d| self.cuts.contains_key(d)) else {
                w.write_all(&line).at(target)?;
                continue;
            };
            let body_start = if n == 1 && line.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            let body = &line[body_start..];
            let Some(span) = familiar::json::member_span(body, text_field) else {
                return Err(Error::input(
                    path,
                    n,
                    format!(
                        "no `{text_field}` string where the index has document {doc}: the input \
                         changed since the index was built"
                    ),
                ));
            };
            let text: String = serde_json::from_slice(&body[span.clone()]).map_err(|e| {
                Error::input(
                    path,
                    n,
                    format!("field `{text_field}` is not a string: {e}"),
                )
            })?;
            let Some((kept, tokens)) = self.cut(doc, &text, path, n)? else {
                continue;
            };
            Self::count(file, &text, &kept, tokens);
            let literal = serde_json::to_string(&kept)
                .map_err(|e| Error::Bug(format!("JSON string: {e}")))?;
            w.write_all(&line[..body_start + span.start]).at(target)?;
            w.write_all(literal.as_bytes()).at(target)?;
            w.write_all(&body[span.end..]).at(target)?;
        }
    }

    /// Copies a Parquet or text input as Dolma records, cutting the documents with cuts.
    #[allow(clippy::too_many_arguments)]
    fn records(
        &self,
        path: &Path,
        format: InputFormat,
        fields: &Fields,
        docs: &HashMap<u64, u64>,
        w: &mut dyn Write,
        target: &Path,
        file: &mut RemovedFile,
    ) -> Result<()> {
        let (_, bytes) = familiar::manifest::open_regular(path)?;
        let input = InputFile {
            path: path.to_path_buf(),
            format,
            bytes,
        };
        let reader = CorpusReader::new(
            vec![input],
            ReadOptions {
                fields: fields.clone(),
                skip_invalid: self.skip_invalid,
                allow_empty: true,
            },
            InputCursor { file: 0, record: 0 },
        );
        for d in reader {
            let d = d?;
            let mut text = d.text;
            if let Some(&doc) = docs.get(&d.record) {
                if let Some((kept, tokens)) = self.cut(doc, &text, path, d.record)? {
                    Self::count(file, &text, &kept, tokens);
                    text = kept;
                }
            }
            let metadata: serde_json::Map<String, serde_json::Value> = d
                .metadata
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let record = serde_json::json!({
                "id": d.external_id,
                "text": text,
                "source": d.source,
                "metadata": metadata,
            });
            serde_json::to_writer(&mut *w, &record)
                .map_err(|e| Error::io(target, std::io::Error::other(e)))?;
            w.write_all(b"\n").at(target)?;
        }
        Ok(())
    }
}

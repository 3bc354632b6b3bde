//! Writing a shard's text index (see [`familiar::text`]) in the same pass as its tokens.
//!
//! Documents go to a tantivy `IndexWriter` as they arrive (its thread analyzes and inverts them
//! while the builder tokenizes the next batch); at the end of the shard the segments are merged into
//! one, in document order, the word dictionary is exported to `words.fst`, and every file is hashed
//! for the manifest.
//!
//! The same build writes the same bytes: one indexing thread keeps each segment's documents in
//! input order, segments are merged in the order of their first document, and the merged segment
//! is renamed from tantivy's random UUID to a fixed one (`meta.json` and `.managed.json` are
//! rewritten to match, the latter sorted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use familiar::error::IoContext;
use familiar::manifest::{FileEntry, TextIndexInfo};
use familiar::text::{self, Fields, TEXT_DIR, WORDS_FILE};
use familiar::{Error, Result};
use tantivy::schema::TantivyDocument;

/// Memory for tantivy's in-RAM segment; a full one is flushed as a segment of its own, and all are
/// merged at the end.
const BUDGET: usize = 512 << 20;

/// The id every shard's single text segment is renamed to, so that the same build writes the same
/// bytes (tantivy names segments with random UUIDs).
const CANONICAL_SEGMENT: &str = "00000000000000000000000000000001";

fn tantivy_error(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(
        dir,
        std::io::Error::other(format!("text index: {what}: {e}")),
    )
}

/// The text index of the shard being built.
pub(crate) struct TextWriter {
    dir: PathBuf,
    index: tantivy::Index,
    writer: tantivy::IndexWriter,
    fields: Fields,
}

impl TextWriter {
    /// Starts an empty text index in `shard_tmp/text`.
    pub(crate) fn start(shard_tmp: &Path) -> Result<TextWriter> {
        let dir = shard_tmp.join(TEXT_DIR);
        std::fs::create_dir(&dir).at(&dir)?;
        let (schema, fields) = text::schema();
        let settings = tantivy::IndexSettings {
            docstore_compression: tantivy::store::Compressor::None,
            ..Default::default()
        };
        let index = tantivy::Index::builder()
            .schema(schema)
            .settings(settings)
            .tokenizers(text::tokenizers())
            .create_in_dir(&dir)
            .map_err(|e| tantivy_error(&dir, "cannot create", e))?;
        let writer = index
            .writer_with_num_threads(1, BUDGET)
            .map_err(|e| tantivy_error(&dir, "cannot start the writer", e))?;
        // Merge once, at the end, into a single segment.
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        Ok(TextWriter {
            dir,
            index,
            writer,
            fields,
        })
    }

    /// Adds document `doc_id` (global number) with its text.
    pub(crate) fn add(&mut self, doc_id: u64, body: &str) -> Result<()> {
        let mut doc = TantivyDocument::default();
        doc.add_u64(self.fields.doc_id, doc_id);
        doc.add_text(self.fields.text, body);
        doc.add_text(self.fields.words, body);
        self.writer
            .add_document(doc)
            .map(|_| ())
            .map_err(|e| tantivy_error(&self.dir, "cannot add a document", e))
    }

    /// The committed segments, ordered by their first document.
    fn segments_in_document_order(&self) -> Result<Vec<tantivy::index::SegmentId>> {
        let dir = &self.dir;
        let reader: tantivy::IndexReader = self
            .index
            .reader_builder()
            .reload_policy(tantivy::ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| tantivy_error(dir, "cannot read back", e))?;
        let searcher = reader.searcher();
        let mut ordered = Vec::new();
        for s in searcher.segment_readers() {
            let first = s
                .fast_fields()
                .u64("doc_id")
                .map_err(|e| tantivy_error(dir, "doc_id column", e))?
                .first(0)
                .unwrap_or(u64::MAX);
            ordered.push((first, s.segment_id()));
        }
        ordered.sort();
        Ok(ordered.into_iter().map(|(_, id)| id).collect())
    }

    /// Commits, merges into one segment, writes `words.fst` next to `text/`, and returns the
    /// manifest entries of every file (paths relative to the shard directory).
    pub(crate) fn finish(
        mut self,
        shard_tmp: &Path,
    ) -> Result<(BTreeMap<String, FileEntry>, TextIndexInfo)> {
        let dir = self.dir.clone();
        self.writer
            .commit()
            .map_err(|e| tantivy_error(&dir, "commit", e))?;
        let segments = self.segments_in_document_order()?;
        if segments.len() > 1 {
            self.writer
                .merge(&segments)
                .wait()
                .map_err(|e| tantivy_error(&dir, "merge", e))?;
        }
        self.writer
            .garbage_collect_files()
            .wait()
            .map_err(|e| tantivy_error(&dir, "garbage collection", e))?;
        self.writer
            .wait_merging_threads()
            .map_err(|e| tantivy_error(&dir, "merge", e))?;

        // The word dictionary, from the `words` field's terms.
        let reader = self
            .index
            .reader_builder()
            .reload_policy(tantivy::ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| tantivy_error(&dir, "cannot read back", e))?;
        let searcher: tantivy::Searcher = reader.searcher();
        let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let single = searcher.segment_readers().len() == 1;
        let mut merged: Vec<(Vec<u8>, u64)> = Vec::new();
        for s in searcher.segment_readers() {
            let inverted = s
                .inverted_index(self.fields.words)
                .map_err(|e| tantivy_error(&dir, "words", e))?;
            let mut stream = inverted
                .terms()
                .stream()
                .map_err(|e| tantivy_error(&dir, "words", e))?;
            while let Some((k, info)) = stream.next() {
                if single {
                    merged.push((k.to_vec(), u64::from(info.doc_freq)));
                } else {
                    *counts.entry(k.to_vec()).or_default() += u64::from(info.doc_freq);
                }
            }
        }
        if !single {
            merged = counts.into_iter().collect();
        }
        drop(searcher);
        drop(reader);
        let wpath = shard_tmp.join(WORDS_FILE);
        {
            let f = std::fs::File::create(&wpath).at(&wpath)?;
            let mut b = fst::MapBuilder::new(std::io::BufWriter::new(f))
                .map_err(|e| Error::io(&wpath, std::io::Error::other(e)))?;
            for (k, v) in &merged {
                b.insert(k, *v)
                    .map_err(|e| Error::io(&wpath, std::io::Error::other(e)))?;
            }
            let w = b
                .into_inner()
                .map_err(|e| Error::io(&wpath, std::io::Error::other(e)))?;
            let f = w
                .into_inner()
                .map_err(|e| Error::io(&wpath, e.into_error()))?;
            f.sync_all().at(&wpath)?;
        }
        drop(self.index);
        canonicalize(&dir)?;

        let mut files = BTreeMap::new();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") {
                std::fs::remove_file(entry.path()).at(entry.path())?;
                continue;
            }
            names.push(name);
        }
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let f = std::fs::File::open(&path).at(&path)?;
            f.sync_all().at(&path)?;
            let (checksum, bytes) = familiar::checksum::of_file(&path)?;
            files.insert(format!("{TEXT_DIR}/{name}"), FileEntry { bytes, checksum });
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .at(&dir)?;
        let (checksum, bytes) = familiar::checksum::of_file(&wpath)?;
        files.insert(WORDS_FILE.to_string(), FileEntry { bytes, checksum });
        Ok((
            files,
            TextIndexInfo {
                analyzer: text::ANALYZER.into(),
                words: merged.len() as u64,
            },
        ))
    }
}

/// Renames the one segment in `dir` to [`CANONICAL_SEGMENT`] and rewrites `meta.json` and
/// `.managed.json` to match.
fn canonicalize(dir: &Path) -> Result<()> {
    let meta_path = dir.join("meta.json");
    let meta = std::fs::read_to_string(&meta_path).at(&meta_path)?;
    let v: serde_json::Value =
        serde_json::from_str(&meta).map_err(|e| tantivy_error(dir, "meta.json", e))?;
    let segments = v["segments"].as_array().cloned().unwrap_or_default();
    let [segment] = segments.as_slice() else {
        return Err(Error::Bug(format!(
            "{}: {} text segments after the merge, expected 1",
            dir.display(),
            segments.len()
        )));
    };
    let hyphenated = segment["segment_id"]
        .as_str()
        .ok_or_else(|| Error::Bug("segment id".into()))?
        .to_string();
    let plain = hyphenated.replace('-', "");
    let canonical_hyphenated = format!(
        "{}-{}-{}-{}-{}",
        &CANONICAL_SEGMENT[0..8],
        &CANONICAL_SEGMENT[8..12],
        &CANONICAL_SEGMENT[12..16],
        &CANONICAL_SEGMENT[16..20],
        &CANONICAL_SEGMENT[20..]
    );
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ext) = name.strip_prefix(&plain) {
            let new = format!("{CANONICAL_SEGMENT}{ext}");
            std::fs::rename(entry.path(), dir.join(&new)).at(dir.join(&new))?;
            names.push(new);
        } else if name != ".managed.json" && !name.ends_with(".lock") {
            names.push(name);
        }
    }
    names.sort();
    familiar::manifest::write_atomic(
        &meta_path,
        meta.replace(&hyphenated, &canonical_hyphenated).as_bytes(),
    )?;
    let managed = serde_json::to_vec(&names).map_err(|e| Error::Bug(e.to_string()))?;
    familiar::manifest::write_atomic(&dir.join(".managed.json"), &managed)
}

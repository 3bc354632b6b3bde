//! Writing a shard's text index (see [`crate`]) in the same pass as its tokens.
//!
//! Documents go, in blocks of 16, to one of several tantivy `IndexWriter`s of one thread each (the
//! parts) as they arrive, so the text is analyzed and inverted in parallel while the builder
//! tokenizes the next batch. At the end of the shard every part's segments are merged into one
//! (beside the suffix sort), the word dictionary is exported to `words.fst`, and every file is
//! hashed for the manifest.
//!
//! The same build writes the same bytes: which part indexes a document depends only on its number,
//! a single-threaded writer keeps its segments' documents in input order, segments are merged in
//! the order of their first document, and the merged segment is renamed from tantivy's random UUID
//! to a fixed one (`meta.json`, without the merge's payload, and a sorted `.managed.json` are
//! rewritten to match).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{self as text, Fields, TEXT_DIR, WORDS_FILE};
use familiar::error::IoContext;
use familiar::manifest::{FileEntry, TextIndexInfo};
use familiar::{Error, Result};
use tantivy::schema::TantivyDocument;

/// Memory for tantivy's in-RAM segment: a sixteenth of the machine's memory, between 256 MiB and
/// 2 GiB. A full segment is flushed as a segment of its own, and all are merged at the end (the
/// merged segment does not depend on where the flushes fell).
fn budget() -> usize {
    familiar::memory::meminfo("MemTotal")
        .map_or(512 << 20, |m| (m / 16).clamp(256 << 20, 2 << 30) as usize)
}

/// The id every shard's single text segment is renamed to, so that the same build writes the same
/// bytes (tantivy names segments with random UUIDs).
const CANONICAL_SEGMENT: &str = "00000000000000000000000000000001";

fn tantivy_error(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(
        dir,
        std::io::Error::other(format!("text index: {what}: {e}")),
    )
}

/// Documents in a row that go to the same part.
const BLOCK: u64 = 16;

/// Parts (indexing threads) per shard: fixed, so that the bytes written do not depend on the
/// machine or on `--threads`.
const PARTS: usize = 4;

/// One single-threaded tantivy writer of a part of the shard's documents.
struct Part {
    dir: PathBuf,
    index: tantivy::Index,
    writer: tantivy::IndexWriter,
}

/// The text index of the shard being built.
pub struct TextWriter {
    dir: PathBuf,
    parts: Vec<Part>,
    fields: Fields,
    added: u64,
}

impl std::fmt::Debug for TextWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextWriter")
            .field("dir", &self.dir)
            .field("parts", &self.parts.len())
            .field("added", &self.added)
            .finish()
    }
}

fn settings() -> tantivy::IndexSettings {
    tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::None,
        ..Default::default()
    }
}

impl TextWriter {
    /// Starts an empty text index for `shard_tmp/text`, indexed by [`PARTS`] writers of one
    /// thread each: blocks of [`BLOCK`] documents go to the parts in turn, so which part indexes
    /// which document depends only on the documents.
    pub fn start(shard_tmp: &Path) -> Result<TextWriter> {
        let dir = shard_tmp.join(TEXT_DIR);
        let (schema, fields) = text::schema();
        let threads = PARTS;
        let mut parts = Vec::with_capacity(threads);
        for k in 0..threads {
            let pdir = shard_tmp.join(format!(".text-part-{k}"));
            std::fs::create_dir(&pdir).at(&pdir)?;
            let index = tantivy::Index::builder()
                .schema(schema.clone())
                .settings(settings())
                .tokenizers(text::tokenizers())
                .create_in_dir(&pdir)
                .map_err(|e| tantivy_error(&pdir, "cannot create", e))?;
            let writer = index
                .writer_with_num_threads(1, budget() / threads)
                .map_err(|e| tantivy_error(&pdir, "cannot start the writer", e))?;
            // Merge once, at the end, into a single segment.
            writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
            parts.push(Part {
                dir: pdir,
                index,
                writer,
            });
        }
        Ok(TextWriter {
            dir,
            parts,
            fields,
            added: 0,
        })
    }

    /// Adds document `doc_id` (global number) with its text.
    pub fn add(&mut self, doc_id: u64, body: &str) -> Result<()> {
        let mut doc = TantivyDocument::default();
        doc.add_u64(self.fields.doc_id, doc_id);
        doc.add_text(self.fields.text, body);
        doc.add_text(self.fields.words, body);
        let k = ((self.added / BLOCK) % self.parts.len() as u64) as usize;
        self.added += 1;
        let part = &mut self.parts[k];
        part.writer
            .add_document(doc)
            .map(|_| ())
            .map_err(|e| tantivy_error(&part.dir, "cannot add a document", e))
    }

    /// Commits every part, merges all their segments (ordered by first document) into one in
    /// `text/`, writes `words.fst` next to it, and returns the manifest entries of every file
    /// (paths relative to the shard directory).
    pub fn finish(self, shard_tmp: &Path) -> Result<(BTreeMap<String, FileEntry>, TextIndexInfo)> {
        let dir = self.dir.clone();
        let mut ordered: Vec<(u64, tantivy::index::Segment)> = Vec::new();
        let mut indexes = Vec::new();
        for mut part in self.parts {
            part.writer
                .commit()
                .map_err(|e| tantivy_error(&part.dir, "commit", e))?;
            part.writer
                .wait_merging_threads()
                .map_err(|e| tantivy_error(&part.dir, "commit", e))?;
            let reader: tantivy::IndexReader = part
                .index
                .reader_builder()
                .reload_policy(tantivy::ReloadPolicy::Manual)
                .try_into()
                .map_err(|e| tantivy_error(&part.dir, "cannot read back", e))?;
            let searcher = reader.searcher();
            let segments = part
                .index
                .searchable_segments()
                .map_err(|e| tantivy_error(&part.dir, "segments", e))?;
            for s in searcher.segment_readers() {
                let first = s
                    .fast_fields()
                    .u64("doc_id")
                    .map_err(|e| tantivy_error(&part.dir, "doc_id column", e))?
                    .first(0)
                    .unwrap_or(u64::MAX);
                let segment = segments
                    .iter()
                    .find(|g| g.id() == s.segment_id())
                    .ok_or_else(|| Error::Bug("segment of a reader".into()))?;
                ordered.push((first, segment.clone()));
            }
            indexes.push((part.dir, part.index));
        }
        ordered.sort_by_key(|(first, _)| *first);
        let segments: Vec<tantivy::index::Segment> = ordered.into_iter().map(|(_, s)| s).collect();
        std::fs::create_dir(&dir).at(&dir)?;
        let output = tantivy::directory::MmapDirectory::open(&dir)
            .map_err(|e| tantivy_error(&dir, "open", e))?;
        let alive = vec![None; segments.len()];
        let mut index =
            tantivy::indexer::merge_filtered_segments(&segments, settings(), alive, output)
                .map_err(|e| tantivy_error(&dir, "merge", e))?;
        drop(segments);
        for (pdir, pindex) in indexes {
            drop(pindex);
            std::fs::remove_dir_all(&pdir).at(&pdir)?;
        }
        index.set_tokenizers(text::tokenizers());

        // The word dictionary, from the `words` field's terms.
        let reader: tantivy::IndexReader = index
            .reader_builder()
            .reload_policy(tantivy::ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| tantivy_error(&dir, "cannot read back", e))?;
        let searcher = reader.searcher();
        let [segment] = searcher.segment_readers() else {
            return Err(Error::Bug(format!(
                "{}: {} text segments after the merge, expected 1",
                dir.display(),
                searcher.segment_readers().len()
            )));
        };
        let inverted = segment
            .inverted_index(self.fields.words)
            .map_err(|e| tantivy_error(&dir, "words", e))?;
        let mut stream = inverted
            .terms()
            .stream()
            .map_err(|e| tantivy_error(&dir, "words", e))?;
        let wpath = shard_tmp.join(WORDS_FILE);
        let mut words = 0u64;
        {
            let f = std::fs::File::create(&wpath).at(&wpath)?;
            let mut b = fst::MapBuilder::new(std::io::BufWriter::new(f))
                .map_err(|e| Error::io(&wpath, std::io::Error::other(e)))?;
            while let Some((k, info)) = stream.next() {
                b.insert(k, u64::from(info.doc_freq))
                    .map_err(|e| Error::io(&wpath, std::io::Error::other(e)))?;
                words += 1;
            }
            let w = b
                .into_inner()
                .map_err(|e| Error::io(&wpath, std::io::Error::other(e)))?;
            let f = w
                .into_inner()
                .map_err(|e| Error::io(&wpath, e.into_error()))?;
            f.sync_all().at(&wpath)?;
        }
        drop(stream);
        drop(inverted);
        drop(searcher);
        drop(reader);
        drop(index);
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
                words,
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
    // The merge notes the (random) ids of the merged segments in the payload: drop it.
    let mut v: serde_json::Value =
        serde_json::from_str(&meta.replace(&hyphenated, &canonical_hyphenated))
            .map_err(|e| tantivy_error(dir, "meta.json", e))?;
    v["payload"] = serde_json::Value::Null;
    let mut bytes = serde_json::to_vec_pretty(&v).map_err(|e| Error::Bug(e.to_string()))?;
    bytes.push(b'\n');
    familiar::manifest::write_atomic(&meta_path, &bytes)?;
    let managed = serde_json::to_vec(&names).map_err(|e| Error::Bug(e.to_string()))?;
    familiar::manifest::write_atomic(&dir.join(".managed.json"), &managed)
}

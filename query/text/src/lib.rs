//! The text index: one tantivy index per shard over the analyzed text of its documents.
//!
//! Two analyzed fields share one tokenization (tantivy's `SimpleTokenizer`: maximal runs of
//! alphanumeric characters; words over [`MAX_WORD_BYTES`] bytes are dropped, keeping the positions of
//! the others):
//! - `text`: lowercased, ASCII-folded ("café" → "cafe") and stemmed with the Snowball English
//!   (Porter2) stemmer, with positions, for all-words and phrase queries. Udandarao et al. 2024
//!   lemmatize; there is no maintained English lemmatizer in Rust that runs offline without a model,
//!   and Porter2 stemming conflates a superset of the inflections a lemmatizer would (it also merges
//!   some derivations, e.g. "university"/"universe" → "univers"), so counts are upper bounds of the
//!   lemma counts in the same way across concepts.
//! - `words`: the same words lowercased and folded but not stemmed, document frequencies only. Its
//!   term dictionary is exported as `words.fst` (word → documents) for lookups of the forms that occur.
//!
//! A third field, `doc_id`, holds the global document number (fast field), so tantivy's own document
//! order never matters.
//!
//! Readers open the index read-only (no lock files, no watcher threads) and open regular files
//! only (a FIFO or a device in place of an index file is an error naming it, never a hang); every
//! tantivy error is reported with the shard directory.
//!
//! The writer ([`writer::TextWriter`]) is used by the index builder, in the same pass as the
//! tokens; readers ([`TextIndex`]) by concept queries and `index verify`.
#![warn(missing_docs)]

pub mod bm25;
pub mod writer;

use std::path::{Path, PathBuf};

use tantivy::directory::{
    error::{DeleteError, OpenReadError, OpenWriteError},
    Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, WatchCallback, WatchHandle,
    WritePtr,
};
use tantivy::postings::{Postings, SegmentPostings};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, TokenizerManager,
};
use tantivy::{DocSet, Searcher, Term, TERMINATED};

use familiar::error::{Error, IoContext, Result};
use familiar::manifest::ShardManifest;

/// The text index's directory inside a shard.
pub const TEXT_DIR: &str = "text";
/// The word dictionary of a shard (fst map: word → documents containing it).
pub const WORDS_FILE: &str = "words.fst";
/// Names the analysis; recorded in shard manifests so that an index built with another analysis
/// is recognized.
pub const ANALYZER: &str = "simple/remove-long-40/lowercase/ascii-folding/snowball-english";
/// Words longer than this (in bytes) are not indexed.
pub const MAX_WORD_BYTES: usize = 40;

const STEMMED: &str = "familiar_stemmed";
const WORDS: &str = "familiar_words";

/// The fields of the text index.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// Global document number (u64, fast).
    pub doc_id: Field,
    /// Stemmed words with positions.
    pub text: Field,
    /// Unstemmed words, document frequencies only.
    pub words: Field,
}

/// The schema of every shard's text index.
pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let doc_id = b.add_u64_field("doc_id", NumericOptions::default().set_fast());
    let text = b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(STEMMED)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        ),
    );
    let words = b.add_text_field(
        "words",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(WORDS)
                .set_index_option(IndexRecordOption::Basic),
        ),
    );
    (
        b.build(),
        Fields {
            doc_id,
            text,
            words,
        },
    )
}

fn words_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES + 1))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn stemmed_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES + 1))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The analyzers the schema names, registered.
pub fn tokenizers() -> TokenizerManager {
    let m = TokenizerManager::default();
    m.register(STEMMED, stemmed_analyzer());
    m.register(WORDS, words_analyzer());
    m
}

fn run(mut analyzer: TextAnalyzer, text: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(t) = {
        use tantivy::tokenizer::TokenStream;
        if stream.advance() {
            Some(stream.token())
        } else {
            None
        }
    } {
        out.push((t.text.clone(), t.position as u32));
    }
    out
}

/// The stemmed terms of `text` with their positions, exactly as the `text` field indexes them.
pub fn analyze(text: &str) -> Vec<(String, u32)> {
    run(stemmed_analyzer(), text)
}

/// The unstemmed words of `text` with their positions, as the `words` field indexes them.
pub fn analyze_words(text: &str) -> Vec<(String, u32)> {
    run(words_analyzer(), text)
}

/// Documents containing a phrase (local numbers, ascending) and its occurrences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    /// Shard-local document numbers (`global - first_doc`), ascending.
    pub docs: Vec<u32>,
    /// Occurrences of the phrase (for all-words matches, `None`).
    pub occurrences: Option<u64>,
}

fn text_error(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::corrupt(dir, format!("text index: {what}: {e}"))
}

/// A read-only view of a directory for tantivy: no lock files, no writes, no watcher, and only
/// regular files opened (a FIFO would block the open; a device never ends).
#[derive(Debug, Clone)]
struct ReadOnly {
    mmap: MmapDirectory,
    root: PathBuf,
}

/// Fails, naming the file and what it is, unless `path` is a regular file (symbolic links
/// followed). Nothing is opened: a FIFO, device or socket is refused before any open.
fn check_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).at(path)?;
    if meta.is_file() {
        return Ok(());
    }
    // Not regular: `open_regular` refuses it (before opening it) with the usual message.
    familiar::manifest::open_regular(path).map(|_| ())
}

impl ReadOnly {
    /// Refuses (before tantivy opens it) a file of the index that is not a regular file.
    fn check(&self, path: &Path) -> std::result::Result<(), OpenReadError> {
        let full = self.root.join(path);
        match check_regular(&full) {
            Ok(()) => Ok(()),
            // A missing file is tantivy's to report (it asks for some that may be absent).
            Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(OpenReadError::IoError {
                io_error: std::sync::Arc::new(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    e.to_string(),
                )),
                filepath: full,
            }),
        }
    }
}

fn read_only(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{} is opened read-only", path.display()),
    )
}

impl Directory for ReadOnly {
    fn get_file_handle(
        &self,
        path: &Path,
    ) -> std::result::Result<std::sync::Arc<dyn FileHandle>, OpenReadError> {
        self.check(path)?;
        self.mmap.get_file_handle(path)
    }
    fn delete(&self, path: &Path) -> std::result::Result<(), DeleteError> {
        Err(DeleteError::IoError {
            io_error: std::sync::Arc::new(read_only(path)),
            filepath: path.to_path_buf(),
        })
    }
    fn exists(&self, path: &Path) -> std::result::Result<bool, OpenReadError> {
        self.mmap.exists(path)
    }
    fn open_write(&self, path: &Path) -> std::result::Result<WritePtr, OpenWriteError> {
        Err(OpenWriteError::IoError {
            io_error: std::sync::Arc::new(read_only(path)),
            filepath: path.to_path_buf(),
        })
    }
    fn atomic_read(&self, path: &Path) -> std::result::Result<Vec<u8>, OpenReadError> {
        self.check(path)?;
        self.mmap.atomic_read(path)
    }
    fn atomic_write(&self, path: &Path, _data: &[u8]) -> std::io::Result<()> {
        Err(read_only(path))
    }
    fn sync_directory(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn acquire_lock(
        &self,
        _lock: &Lock,
    ) -> std::result::Result<DirectoryLock, tantivy::directory::error::LockError> {
        // Nothing writes a published index, so readers need no lock.
        Ok(DirectoryLock::from(Box::new(())))
    }
    fn watch(&self, _watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        Ok(WatchHandle::empty())
    }
}

/// One shard's text index, open for queries.
pub struct TextIndex {
    dir: PathBuf,
    searcher: Searcher,
    fields: Fields,
    /// Local document number at which each segment starts.
    bases: Vec<u32>,
    words: fst::Map<memmap2::Mmap>,
    documents: u64,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex")
            .field("dir", &self.dir)
            .field("documents", &self.documents)
            .finish()
    }
}

impl TextIndex {
    /// Opens the text index of the shard in `shard_dir` (described by `manifest`). Checks that
    /// the manifest records one, that its files have the recorded sizes, and that it holds one
    /// document per document of the shard.
    pub fn open(shard_dir: &Path, manifest: &ShardManifest) -> Result<TextIndex> {
        TextIndex::open_with(shard_dir, manifest, false)
    }

    /// [`TextIndex::open`], optionally asking the kernel to read every file into the page cache
    /// now (for a batch of many queries).
    pub fn open_with(
        shard_dir: &Path,
        manifest: &ShardManifest,
        preload: bool,
    ) -> Result<TextIndex> {
        let mpath = shard_dir.join(familiar::manifest::MANIFEST_FILE);
        let Some(info) = &manifest.text_index else {
            return Err(Error::Config(format!(
                "{}: this shard has no text index (the index was built with {}); \
                 rebuild it without that option to count concepts in text",
                shard_dir.display(),
                familiar::option::off("text_index")
            )));
        };
        if info.analyzer != ANALYZER {
            return Err(Error::Config(format!(
                "{}: text index analyzed with {:?}, but this build analyzes with {ANALYZER:?}; rebuild the index",
                mpath.display(),
                info.analyzer
            )));
        }
        let mut text_files = 0;
        for (name, entry) in &manifest.files {
            if name.starts_with(&format!("{TEXT_DIR}/")) || name == WORDS_FILE {
                text_files += 1;
                let path = shard_dir.join(name);
                // Regular files only, checked before anything opens them: a FIFO would block
                // the open (and a device never ends), where an error naming it is due.
                check_regular(&path)?;
                let len = std::fs::metadata(&path).at(&path)?.len();
                if len != entry.bytes {
                    return Err(Error::Size {
                        path,
                        expected: entry.bytes,
                        actual: len,
                    });
                }
            }
        }
        if text_files == 0 {
            return Err(Error::corrupt(&mpath, "no text index files are listed"));
        }
        let dir = shard_dir.join(TEXT_DIR);
        let result = std::panic::catch_unwind(|| -> Result<(Searcher, Fields, Vec<u32>)> {
            let advice = if preload {
                memmap2::Advice::WillNeed
            } else {
                memmap2::Advice::Normal
            };
            let mmap = MmapDirectory::open_with_madvice(&dir, advice)
                .map_err(|e| text_error(&dir, "cannot open", e))?;
            let mut index = tantivy::Index::open(ReadOnly {
                mmap,
                root: dir.clone(),
            })
            .map_err(|e| text_error(&dir, "cannot open", e))?;
            index.set_tokenizers(tokenizers());
            let (expected, fields) = schema();
            if index.schema() != expected {
                return Err(text_error(&dir, "schema", "differs from this build's"));
            }
            let reader = index
                .reader_builder()
                .reload_policy(tantivy::ReloadPolicy::Manual)
                .try_into()
                .map_err(|e| text_error(&dir, "cannot read", e))?;
            let searcher = reader.searcher();
            let mut bases = Vec::new();
            let mut base = 0u32;
            for s in searcher.segment_readers() {
                bases.push(base);
                base += s.max_doc();
                if s.num_deleted_docs() != 0 {
                    return Err(text_error(&dir, "segments", "deleted documents"));
                }
            }
            Ok((searcher, fields, bases))
        });
        let (searcher, fields, bases) = match result {
            Ok(r) => r?,
            Err(_) => return Err(text_error(&dir, "cannot open", "tantivy panicked")),
        };
        if searcher.num_docs() != manifest.documents {
            return Err(text_error(
                &dir,
                "documents",
                format!(
                    "{} indexed but the shard has {}",
                    searcher.num_docs(),
                    manifest.documents
                ),
            ));
        }
        let wpath = shard_dir.join(WORDS_FILE);
        let (file, len) = familiar::manifest::open_regular(&wpath)?;
        if let Some(entry) = manifest.files.get(WORDS_FILE) {
            if len != entry.bytes {
                return Err(Error::Size {
                    path: wpath,
                    expected: entry.bytes,
                    actual: len,
                });
            }
        }
        // SAFETY: index files are write-once and not modified while the index is open (the
        // contract of `Index`); the size was checked against the manifest above.
        let map = unsafe { memmap2::Mmap::map(&file) }.at(&wpath)?;
        if preload {
            let _ = map.advise(memmap2::Advice::WillNeed);
        }
        let words = fst::Map::new(map).map_err(|e| Error::corrupt(&wpath, e.to_string()))?;
        Ok(TextIndex {
            dir,
            searcher,
            fields,
            bases,
            words,
            documents: manifest.documents,
        })
    }

    /// Documents in the shard.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// The word dictionary: every indexed (unstemmed) word → documents containing it.
    pub fn words(&self) -> &fst::Map<memmap2::Mmap> {
        &self.words
    }

    fn postings(
        &self,
        segment: usize,
        term: &str,
        option: IndexRecordOption,
    ) -> Result<Option<SegmentPostings>> {
        let reader = self.searcher.segment_reader(segment as u32);
        let inverted = reader
            .inverted_index(self.fields.text)
            .map_err(|e| text_error(&self.dir, "postings", e))?;
        inverted
            .read_postings(&Term::from_field_text(self.fields.text, term), option)
            .map_err(|e| text_error(&self.dir, "postings", e))
    }

    /// Documents whose text contains every term of `terms` (stemmed), anywhere.
    pub fn all_terms(&self, terms: &[String]) -> Result<Matches> {
        let mut terms: Vec<&String> = terms.iter().collect();
        terms.sort();
        terms.dedup();
        self.intersect(terms.iter().map(|t| (t.as_str(), 0)).collect(), false)
    }

    /// Documents containing the phrase `terms` (stemmed terms with their analyzed positions) and
    /// how often: an occurrence is a position p where term i sits at p + (position i − position 0)
    /// for every i.
    pub fn phrase(&self, terms: &[(String, u32)]) -> Result<Matches> {
        let Some(first) = terms.first() else {
            return Ok(Matches {
                docs: Vec::new(),
                occurrences: Some(0),
            });
        };
        let base = first.1;
        self.intersect(
            terms
                .iter()
                .map(|(t, p)| (t.as_str(), p.saturating_sub(base)))
                .collect(),
            true,
        )
    }

    fn intersect(&self, terms: Vec<(&str, u32)>, positions: bool) -> Result<Matches> {
        // A damaged file could make tantivy panic while decoding: report it as corruption.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.intersect_inner(terms, positions)
        }))
        .unwrap_or_else(|_| {
            Err(text_error(
                &self.dir,
                "postings",
                "cannot be decoded (run `familiar index verify`)",
            ))
        })
    }

    fn intersect_inner(&self, terms: Vec<(&str, u32)>, positions: bool) -> Result<Matches> {
        let mut out = Matches {
            docs: Vec::new(),
            occurrences: positions.then_some(0),
        };
        if terms.is_empty() {
            return Ok(out);
        }
        let option = if positions {
            IndexRecordOption::WithFreqsAndPositions
        } else {
            IndexRecordOption::Basic
        };
        let mut have = Vec::new();
        let mut scratch = Vec::new();
        'segments: for (s, &base) in self.bases.iter().enumerate() {
            let mut lists = Vec::with_capacity(terms.len());
            for (t, _) in &terms {
                match self.postings(s, t, option)? {
                    Some(p) => lists.push(p),
                    None => continue 'segments,
                }
            }
            // Rarest first: it drives the leapfrog.
            let mut order: Vec<usize> = (0..lists.len()).collect();
            order.sort_by_key(|&i| lists[i].doc_freq());
            let mut target = lists[order[0]].doc();
            'docs: while target != TERMINATED {
                for &i in &order {
                    // tantivy's seek wants a target at or past the current document.
                    let d = if lists[i].doc() >= target {
                        lists[i].doc()
                    } else {
                        lists[i].seek(target)
                    };
                    if d != target {
                        target = d;
                        continue 'docs;
                    }
                }
                // Every list is on `target`.
                if positions {
                    let (head, offset) = (order[0], terms[order[0]].1);
                    lists[head].positions(&mut have);
                    // Candidate phrase starts.
                    have.retain(|&p| p >= offset);
                    for q in have.iter_mut() {
                        *q -= offset;
                    }
                    for &i in &order[1..] {
                        if have.is_empty() {
                            break;
                        }
                        lists[i].positions(&mut scratch);
                        let off = terms[i].1;
                        let mut j = 0;
                        have.retain(|&p| {
                            let want = p + off;
                            while j < scratch.len() && scratch[j] < want {
                                j += 1;
                            }
                            j < scratch.len() && scratch[j] == want
                        });
                    }
                    if !have.is_empty() {
                        out.docs.push(base + target);
                        if let Some(n) = out.occurrences.as_mut() {
                            *n += have.len() as u64;
                        }
                    }
                } else {
                    out.docs.push(base + target);
                }
                target = lists[order[0]].advance();
            }
        }
        Ok(out)
    }

    /// The global document numbers of local documents.
    pub fn global_docs(&self, local: &[u32]) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(local.len());
        let mut columns = Vec::new();
        for s in 0..self.bases.len() {
            let reader = self.searcher.segment_reader(s as u32);
            let col = reader
                .fast_fields()
                .u64("doc_id")
                .map_err(|e| text_error(&self.dir, "doc_id column", e))?;
            columns.push(col);
        }
        for &d in local {
            let s = self.bases.partition_point(|&b| b <= d) - 1;
            let v = columns[s].first(d - self.bases[s]).ok_or_else(|| {
                text_error(&self.dir, "doc_id column", format!("no value for {d}"))
            })?;
            out.push(v);
        }
        Ok(out)
    }

    /// Checks the text index against its shard: every global document number appears exactly
    /// once, and the word dictionary is sorted and non-empty where documents have words.
    pub fn check(&self, first_doc: u64) -> Result<()> {
        let all: Vec<u32> = (0..self.documents as u32).collect();
        let mut seen = vec![false; self.documents as usize];
        for g in self.global_docs(&all)? {
            let i = g
                .checked_sub(first_doc)
                .filter(|&i| i < self.documents)
                .ok_or_else(|| {
                    text_error(
                        &self.dir,
                        "doc_id column",
                        format!("document {g} is not in this shard"),
                    )
                })?;
            if std::mem::replace(&mut seen[i as usize], true) {
                return Err(text_error(
                    &self.dir,
                    "doc_id column",
                    format!("document {g} is indexed twice"),
                ));
            }
        }
        Ok(())
    }
}

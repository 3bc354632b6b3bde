//! Opening an index: manifests, memory-mapped shard files, cheap consistency checks, and the
//! suffix-array search every query is built on.
//!
//! An index directory holds `manifest.json`, `build.json`, `tokenizer.json` and one directory per
//! shard (`shard-00000`, …) with `manifest.json`, `tokens.bin`, `suffix_array.bin`,
//! `doc_offsets.bin` and `documents.parquet`. See `schemas/index-format.md`.
//!
//! Opening checks every header, every size against the manifests, the document offsets and the
//! separators between documents; it does not read the suffix array (that is `verify`'s job), so a
//! damaged suffix-array entry is caught when a query reads it: every access is bounds-checked and
//! reported as [`Error::Corrupt`], never a panic.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};
use crate::format::{FileKind, PackedArray, HEADER_LEN};
use crate::manifest::{self, IndexManifest, ShardManifest};
use crate::token::{Token, TokenText, TokenWidth};
use crate::tokenizer::Tokenizer;

/// Options for [`Index::open_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Ask the kernel to read the token and suffix-array files into the page cache now (for hot
    /// indexes); otherwise pages are read on demand with random-access advice.
    pub preload: bool,
}

/// An open index: every shard memory-mapped.
///
/// The files must not be modified or truncated while the index is open (they are write-once; a
/// build publishes new shards by renaming directories and never rewrites a file in place). A
/// file truncated under a running query cannot be turned into an error: the kernel ends the
/// process with SIGBUS when it touches a page past the new end. Replacing files (a new file
/// renamed over the old, or the old one deleted) is safe: the maps keep the old contents.
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    manifest: IndexManifest,
    shards: Vec<Shard>,
    tokenizer: OnceLock<Tokenizer>,
}

/// Token ids of a shard, at the index's width.
#[derive(Debug)]
pub enum ShardTokens {
    /// Two-byte ids.
    U16(TokenText<Mmap, u16>),
    /// Four-byte ids.
    U32(TokenText<Mmap, u32>),
}

/// One shard of an open index.
#[derive(Debug)]
pub struct Shard {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: ShardManifest,
    /// The token ids.
    pub tokens: ShardTokens,
    /// The suffix array.
    pub suffix_array: PackedArray<Mmap>,
    /// Document start positions, then the text length.
    pub doc_offsets: PackedArray<Mmap>,
    /// The top levels of the suffix array's binary searches, sampled once the shard has served
    /// [`SEARCHES_BEFORE_SAMPLING`] searches.
    samples: std::sync::OnceLock<Samples>,
    /// Searches served without samples.
    searches: std::sync::atomic::AtomicU32,
}

/// The first [`SAMPLE_TOKENS`] tokens of every `stride`-th suffix-array entry, contiguous: the
/// first levels of a binary search over the suffix array run over these few megabytes, which stay
/// in the CPU's caches, instead of over the mapped files (a cache miss or two per level).
#[derive(Debug)]
pub struct Samples {
    stride: u64,
    /// `SAMPLE_TOKENS` ids per sample (unused ones 0).
    keys: Vec<u32>,
    /// How many of a sample's ids are its suffix's (fewer near the end of the shard).
    lens: Vec<u8>,
}

/// Tokens kept per sample.
const SAMPLE_TOKENS: usize = 8;
/// Samples per shard, at most (the stride doubles until they fit): 4.5 MiB.
const MAX_SAMPLES: u64 = 1 << 17;
/// Shards of fewer positions are searched without samples.
const MIN_SAMPLED: u64 = 1 << 14;
/// Searches a shard serves before it samples itself: sampling reads about as many pages as
/// 2^17 / 50 searches do, so a one-off query (a command, a cold index) never pays for it.
const SEARCHES_BEFORE_SAMPLING: u32 = 64;

/// Maps a file read-only after checking that it is a regular file (following symbolic links)
/// of exactly `expected` bytes, the size its manifest records: a FIFO, `/dev/zero` or a file of
/// another size is refused before anything is read or mapped.
///
/// # Safety
/// The caller promises that nobody truncates or rewrites the file while the map is alive: a
/// shrinking file turns reads of the map into SIGBUS.
unsafe fn map_readonly(path: &Path, expected: u64) -> Result<Mmap> {
    let (file, len) = manifest::open_regular(path)?;
    if len != expected {
        return Err(Error::Size {
            path: path.to_path_buf(),
            expected,
            actual: len,
        });
    }
    if len < HEADER_LEN as u64 {
        return Err(Error::Size {
            path: path.to_path_buf(),
            expected: HEADER_LEN as u64,
            actual: len,
        });
    }
    // SAFETY: forwarded to the caller of this function.
    let map = unsafe { Mmap::map(&file) }.at(path)?;
    if map.len() as u64 != expected {
        // The file changed between the check and the map.
        return Err(Error::Size {
            path: path.to_path_buf(),
            expected,
            actual: map.len() as u64,
        });
    }
    Ok(map)
}

impl Index {
    /// Opens the index in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        Index::open_with(dir, OpenOptions::default())
    }

    /// Opens the index in `dir` with options.
    pub fn open_with(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Index> {
        let dir = dir.as_ref().to_path_buf();
        let mpath = dir.join(manifest::MANIFEST_FILE);
        if !mpath.exists() {
            let hint = if dir.join(manifest::BUILD_PLAN_FILE).exists() {
                "the build has not finished (run `familiar index build` again to resume it)"
            } else {
                "not an index directory"
            };
            return Err(Error::io(
                &mpath,
                std::io::Error::new(std::io::ErrorKind::NotFound, hint),
            ));
        }
        let manifest: IndexManifest = manifest::read(&mpath, IndexManifest::FORMAT)?;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut next_doc = 0u64;
        for entry in &manifest.shards {
            if entry.first_doc != next_doc {
                return Err(Error::corrupt(
                    &mpath,
                    format!(
                        "shard {} starts at document {} but {next_doc} was expected",
                        entry.dir, entry.first_doc
                    ),
                ));
            }
            next_doc += entry.documents;
            let shard = Shard::open(&dir.join(&entry.dir), &manifest, options)?;
            if shard.manifest.tokens != entry.tokens || shard.manifest.documents != entry.documents
            {
                return Err(Error::corrupt(
                    &mpath,
                    format!(
                        "shard {} does not match its entry in the index manifest",
                        entry.dir
                    ),
                ));
            }
            shards.push(shard);
        }
        if next_doc != manifest.documents {
            return Err(Error::corrupt(
                &mpath,
                "document total does not match the shards",
            ));
        }
        let tokens: u64 = manifest.shards.iter().map(|s| s.tokens).sum();
        if tokens != manifest.tokens {
            return Err(Error::corrupt(
                &mpath,
                format!(
                    "token total {} does not match the shards' {tokens}",
                    manifest.tokens
                ),
            ));
        }
        Ok(Index {
            dir,
            manifest,
            shards,
            tokenizer: OnceLock::new(),
        })
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index manifest.
    pub fn manifest(&self) -> &IndexManifest {
        &self.manifest
    }

    /// The shards, in document order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Number of ids in the vocabulary; valid query ids are below it.
    pub fn vocab_size(&self) -> u32 {
        self.manifest.tokenizer.vocab_size
    }

    /// Total documents.
    pub fn documents(&self) -> u64 {
        self.manifest.documents
    }

    /// The tokenizer the index was built with (the copy kept in the index), loaded on first use.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(t);
        }
        let path = self.dir.join(&self.manifest.tokenizer.file);
        let t = Tokenizer::from_file(&path)?;
        if t.hash() != self.manifest.tokenizer.hash {
            return Err(Error::TokenizerMismatch {
                path,
                index: self.manifest.tokenizer.hash.clone(),
                given: t.hash().into(),
            });
        }
        Ok(self.tokenizer.get_or_init(|| t))
    }

    /// Uses `tokenizer` for text queries after checking it is the one the index was built with.
    pub fn set_tokenizer(&self, tokenizer: Tokenizer) -> Result<()> {
        if tokenizer.hash() != self.manifest.tokenizer.hash {
            return Err(Error::TokenizerMismatch {
                path: tokenizer.path().to_path_buf(),
                index: self.manifest.tokenizer.hash.clone(),
                given: tokenizer.hash().into(),
            });
        }
        let _ = self.tokenizer.set(tokenizer);
        Ok(())
    }

    /// Checks that every id of a query is in the vocabulary (the separator is not).
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(bad) = ids.iter().find(|&&id| id >= self.vocab_size()) {
            return Err(Error::Query(format!(
                "token id {bad} is not in the index's vocabulary (ids 0 to {})",
                self.vocab_size() - 1
            )));
        }
        Ok(())
    }

    /// The shard holding global document `doc`, and the document's index within it.
    pub fn locate_doc(&self, doc: u64) -> Result<(&Shard, u64)> {
        let (k, local) = self.locate_doc_index(doc)?;
        Ok((&self.shards[k], local))
    }

    /// [`Index::locate_doc`] with the shard's place in [`Index::shards`].
    pub fn locate_doc_index(&self, doc: u64) -> Result<(usize, u64)> {
        let i = self
            .shards
            .partition_point(|s| s.manifest.first_doc + s.manifest.documents <= doc);
        match self.shards.get(i) {
            Some(s) if doc >= s.manifest.first_doc => Ok((i, doc - s.manifest.first_doc)),
            _ => Err(Error::Query(format!(
                "document {doc} does not exist (the index has {} documents)",
                self.documents()
            ))),
        }
    }

    /// Token ids of global document `doc`, restricted to its token range `from..to` (clamped to
    /// the document).
    pub fn doc_tokens(&self, doc: u64, from: u64, to: u64) -> Result<Vec<u32>> {
        let (shard, local) = self.locate_doc(doc)?;
        crate::with_view!(shard, |v| {
            let (s, e) = v.doc_span(local)?;
            let len = (e - s) as u64;
            let a = s + from.min(len) as usize;
            let b = (s + to.min(len) as usize).max(a);
            Ok(v.tokens[a..b].iter().map(|t| t.to_u32()).collect())
        })
    }
}

impl Shard {
    fn open(dir: &Path, index: &IndexManifest, options: OpenOptions) -> Result<Shard> {
        let mpath = dir.join(manifest::MANIFEST_FILE);
        let m: ShardManifest = manifest::read(&mpath, ShardManifest::FORMAT)?;
        if m.tokenizer_hash != index.tokenizer.hash
            || m.token_width != index.token_width
            || m.separator != index.separator
        {
            return Err(Error::corrupt(
                &mpath,
                "tokenizer, token width or separator differs from the index manifest",
            ));
        }
        let file_len = |name: &str| {
            m.files
                .get(name)
                .map(|f| f.bytes)
                .ok_or_else(|| Error::corrupt(&mpath, format!("no entry for {name}")))
        };
        let open = |name: &str| -> Result<(PathBuf, Mmap)> {
            let path = dir.join(name);
            let expected = file_len(name)?;
            // SAFETY: index files are write-once, and `Index`'s contract is that they are not
            // modified while it is open.
            let map = unsafe { map_readonly(&path, expected)? };
            let advice = if options.preload {
                memmap2::Advice::WillNeed
            } else {
                memmap2::Advice::Random
            };
            // Advice is a hint; failing to give it is harmless.
            let _ = map.advise(advice);
            Ok((path, map))
        };
        let (tpath, tmap) = open(manifest::TOKENS_FILE)?;
        let tokens = match m.token_width {
            TokenWidth::U16 => ShardTokens::U16(TokenText::new(tmap, &tpath)?),
            TokenWidth::U32 => ShardTokens::U32(TokenText::new(tmap, &tpath)?),
        };
        let theader = *tokens.header();
        if theader.count != m.tokens
            || theader.aux0 != u64::from(m.separator)
            || theader.aux1 != u64::from(index.tokenizer.vocab_size)
        {
            return Err(Error::corrupt(
                &tpath,
                "header does not match the shard manifest (count, separator or vocabulary size)",
            ));
        }
        let (spath, smap) = open(manifest::SUFFIX_ARRAY_FILE)?;
        let suffix_array = PackedArray::new(smap, FileKind::SuffixArray, &spath)?;
        if suffix_array.len() != m.tokens
            || suffix_array.header().width != m.suffix_array_bits
            || suffix_array.header().aux0 != m.tokens
        {
            return Err(Error::corrupt(
                &spath,
                "header does not match the shard manifest",
            ));
        }
        let (opath, omap) = open(manifest::DOC_OFFSETS_FILE)?;
        let doc_offsets = PackedArray::new(omap, FileKind::DocOffsets, &opath)?;
        if doc_offsets.len() != m.documents + 1
            || doc_offsets.header().aux0 != m.tokens
            || doc_offsets.header().aux1 != m.first_doc
        {
            return Err(Error::corrupt(
                &opath,
                "header does not match the shard manifest",
            ));
        }
        // The documents table is read on demand; check its size now so that a damaged file is
        // caught at open like the others.
        let dpath = dir.join(manifest::DOCUMENTS_FILE);
        let expected = file_len(manifest::DOCUMENTS_FILE)?;
        let (_, actual) = manifest::open_regular(&dpath)?;
        if actual != expected {
            return Err(Error::Size {
                path: dpath,
                expected,
                actual,
            });
        }
        let shard = Shard {
            dir: dir.to_path_buf(),
            manifest: m,
            tokens,
            suffix_array,
            doc_offsets,
            samples: std::sync::OnceLock::new(),
            searches: std::sync::atomic::AtomicU32::new(0),
        };
        shard.check_offsets(&opath)?;
        Ok(shard)
    }

    /// Offsets start at 0, increase, end at the text length, and each document ends with the
    /// separator: O(documents), cheap next to the text.
    fn check_offsets(&self, path: &Path) -> Result<()> {
        crate::with_view!(self, |v| check_offsets_generic(
            v.tokens,
            &self.doc_offsets,
            self.manifest.separator,
            path
        ))
    }

    /// Global id of the shard's first document.
    pub fn first_doc(&self) -> u64 {
        self.manifest.first_doc
    }
}

fn check_offsets_generic<T: Token>(
    tokens: &[T],
    offsets: &PackedArray<Mmap>,
    separator: u32,
    path: &Path,
) -> Result<()> {
    let mut prev = 0u64;
    let n = offsets.len();
    for i in 0..n {
        let off = offsets
            .get(i)
            .ok_or_else(|| Error::Bug("offset index in range".into()))?;
        if (i == 0 && off != 0) || off < prev || (i > 0 && off == prev) {
            return Err(Error::corrupt(
                path,
                format!("document offset {i} ({off}) is out of order"),
            ));
        }
        if i > 0 {
            let sep = tokens.get(off as usize - 1).map(|t| t.to_u32());
            if sep != Some(separator) {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "document {} does not end with the separator at position {}",
                        i - 1,
                        off - 1
                    ),
                ));
            }
        }
        prev = off;
    }
    if prev != tokens.len() as u64 {
        return Err(Error::corrupt(
            path,
            format!("last offset {prev} is not the token count {}", tokens.len()),
        ));
    }
    Ok(())
}

impl ShardTokens {
    /// The token file's header.
    pub fn header(&self) -> &crate::format::Header {
        match self {
            ShardTokens::U16(t) => t.header(),
            ShardTokens::U32(t) => t.header(),
        }
    }
}

/// A typed view of one shard, on which the search algorithms are written once for both widths.
#[derive(Debug, Clone, Copy)]
pub struct ShardView<'a, T> {
    /// The token ids.
    pub tokens: &'a [T],
    /// The suffix array.
    pub suffix_array: &'a PackedArray<Mmap>,
    /// Document offsets.
    pub doc_offsets: &'a PackedArray<Mmap>,
    /// The shard's directory, for error messages.
    pub dir: &'a Path,
    /// Global id of the first document.
    pub first_doc: u64,
    /// The separator id.
    pub separator: u32,
    samples: &'a std::sync::OnceLock<Samples>,
    searches: &'a std::sync::atomic::AtomicU32,
    _token: std::marker::PhantomData<T>,
}

/// Calls `$body` with `$view` bound to the shard's [`ShardView`] at its token width.
#[macro_export]
macro_rules! with_view {
    ($shard:expr, |$view:ident| $body:expr) => {
        match &$shard.tokens {
            $crate::index::ShardTokens::U16(t) => {
                let $view = $shard.view(t.tokens());
                $body
            }
            $crate::index::ShardTokens::U32(t) => {
                let $view = $shard.view(t.tokens());
                $body
            }
        }
    };
}

impl Shard {
    /// Asks the kernel to read the shard's token, suffix-array and offset files into the page cache
    /// now (for a batch of many queries; the maps are otherwise advised for random access, which
    /// reads a cold file one page per fault).
    pub fn preload(&self) {
        let maps: [&Mmap; 3] = [
            match &self.tokens {
                ShardTokens::U16(t) => t.data(),
                ShardTokens::U32(t) => t.data(),
            },
            self.suffix_array.data(),
            self.doc_offsets.data(),
        ];
        for m in maps {
            // Advice is a hint; failing to give it is harmless.
            let _ = m.advise(memmap2::Advice::WillNeed);
        }
    }

    /// A typed view over `tokens`, which must be this shard's token slice.
    pub fn view<'a, T: Token>(&'a self, tokens: &'a [T]) -> ShardView<'a, T> {
        ShardView {
            tokens,
            suffix_array: &self.suffix_array,
            doc_offsets: &self.doc_offsets,
            dir: &self.dir,
            first_doc: self.manifest.first_doc,
            separator: self.manifest.separator,
            samples: &self.samples,
            searches: &self.searches,
            _token: std::marker::PhantomData,
        }
    }
}

/// The first `k` in `0..count` for which `pred` is false (`pred` true then false).
fn partition_point(count: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl<'a, T: Token> ShardView<'a, T> {
    /// Number of token positions (separators included).
    pub fn len(&self) -> u64 {
        self.tokens.len() as u64
    }

    /// Whether the shard has no positions.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Entry `i` of the suffix array: a text position, checked to be in range.
    #[inline]
    pub fn suffix(&self, i: u64) -> Result<usize> {
        match self.suffix_array.get(i) {
            Some(p) if p < self.tokens.len() as u64 => Ok(p as usize),
            Some(p) => Err(Error::corrupt(
                self.dir.join(crate::manifest::SUFFIX_ARRAY_FILE),
                format!("entry {i} points to position {p}, past the text"),
            )),
            None => Err(Error::Bug(format!("suffix-array index {i} out of range"))),
        }
    }

    /// Compares the suffix at `pos`, cut to `pattern.len()` tokens, with `pattern`; a suffix that
    /// ends first is smaller (the order libsais sorts in).
    #[inline]
    pub fn compare(&self, pos: usize, pattern: &[T]) -> Ordering {
        let end = (pos + pattern.len()).min(self.tokens.len());
        let s = &self.tokens[pos..end];
        match s.cmp(&pattern[..s.len()]) {
            Ordering::Equal if s.len() < pattern.len() => Ordering::Less,
            o => o,
        }
    }

    /// The half-open range of suffix-array entries whose suffixes start with `pattern`: two binary
    /// searches. Its length is the exact number of occurrences. Patterns never contain the
    /// separator, so no occurrence crosses a document boundary; overlapping occurrences all count.
    pub fn range(&self, pattern: &[T]) -> Result<(u64, u64)> {
        let (lo, hi) = self.bracket(pattern)?;
        self.range_within(pattern, lo, hi)
    }

    /// Entries `lo..hi` that hold every suffix starting with `pattern`, from the samples (once
    /// the shard has served a few searches without): after the last sampled suffix smaller than the pattern's first
    /// [`SAMPLE_TOKENS`] tokens, up to the first one greater.
    fn bracket(&self, pattern: &[T]) -> Result<(u64, u64)> {
        let n = self.len();
        if n < MIN_SAMPLED {
            return Ok((0, n));
        }
        let samples = match self.samples.get() {
            Some(s) => s,
            None if self
                .searches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                < SEARCHES_BEFORE_SAMPLING =>
            {
                return Ok((0, n));
            }
            None => {
                let built = self.sample()?;
                // Another thread may have sampled meanwhile: the same samples either way.
                let _ = self.samples.set(built);
                self.samples
                    .get()
                    .ok_or_else(|| Error::Bug("samples not kept".into()))?
            }
        };
        let p: Vec<u32> = pattern
            .iter()
            .take(SAMPLE_TOKENS)
            .map(|t| t.to_u32())
            .collect();
        let cmp = |k: usize| -> Ordering {
            let len = samples.lens[k] as usize;
            let key = &samples.keys[k * SAMPLE_TOKENS..k * SAMPLE_TOKENS + len.min(p.len())];
            match key.cmp(&p[..key.len()]) {
                Ordering::Equal if key.len() < p.len() => Ordering::Less,
                o => o,
            }
        };
        let count = samples.lens.len();
        // Samples compare Less, then Equal, then Greater (the suffixes are sorted).
        let below = partition_point(count, |k| cmp(k) == Ordering::Less);
        let above = partition_point(count, |k| cmp(k) != Ordering::Greater);
        let lo = if below == 0 {
            0
        } else {
            (below as u64 - 1) * samples.stride + 1
        };
        let hi = if above == count {
            n
        } else {
            above as u64 * samples.stride
        };
        Ok((lo.min(hi), hi))
    }

    /// Reads the samples: every stride-th entry's first tokens.
    fn sample(&self) -> Result<Samples> {
        let n = self.len();
        let mut stride = 64u64;
        while n / stride > MAX_SAMPLES {
            stride *= 2;
        }
        let count = n.div_ceil(stride) as usize;
        let mut keys = vec![0u32; count * SAMPLE_TOKENS];
        let mut lens = vec![0u8; count];
        for k in 0..count {
            let pos = self.suffix(k as u64 * stride)?;
            let end = (pos + SAMPLE_TOKENS).min(self.tokens.len());
            for (j, t) in self.tokens[pos..end].iter().enumerate() {
                keys[k * SAMPLE_TOKENS + j] = t.to_u32();
            }
            lens[k] = (end - pos) as u8;
        }
        Ok(Samples { stride, keys, lens })
    }

    /// [`ShardView::range`] restricted to entries `lo..hi`, which must bracket the answer (e.g. the
    /// range of a prefix of `pattern`).
    pub fn range_within(&self, pattern: &[T], mut lo: u64, hi0: u64) -> Result<(u64, u64)> {
        let mut hi = hi0;
        let mut upper_hi = hi0;
        // First entry not smaller than the pattern; remember the tightest bound above it.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.compare(self.suffix(mid)?, pattern) {
                Ordering::Less => lo = mid + 1,
                Ordering::Equal => hi = mid,
                Ordering::Greater => {
                    hi = mid;
                    upper_hi = mid;
                }
            }
        }
        let start = lo;
        let mut hi = upper_hi;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.compare(self.suffix(mid)?, pattern) {
                Ordering::Greater => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok((start, lo))
    }

    /// Local index of the document holding position `pos`.
    pub fn doc_of(&self, pos: u64) -> Result<u64> {
        // Offsets are increasing (checked at open): the last offset <= pos.
        let (mut lo, mut hi) = (0u64, self.doc_offsets.len().saturating_sub(1));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let off = self
                .doc_offsets
                .get(mid)
                .ok_or_else(|| Error::Bug("offset in range".into()))?;
            if off <= pos {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// The document holding position `pos` (its global id) and `pos`'s offset in it.
    pub fn locate(&self, pos: u64) -> Result<(u64, u64)> {
        let doc = self.doc_of(pos)?;
        let (start, _) = self.doc_span(doc)?;
        Ok((self.first_doc + doc, pos.saturating_sub(start as u64)))
    }

    /// Token range `start..end` (separator excluded) of local document `doc`.
    pub fn doc_span(&self, doc: u64) -> Result<(usize, usize)> {
        let start = self.doc_offsets.get(doc);
        let end = self.doc_offsets.get(doc + 1);
        match (start, end) {
            (Some(s), Some(e)) => Ok((s as usize, e as usize - 1)),
            _ => Err(Error::Query(format!(
                "no local document {doc} in {}",
                self.dir.display()
            ))),
        }
    }
}

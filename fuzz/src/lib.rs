//! Oracles for familiar's parsers of untrusted bytes, shared by the fuzz targets in
//! `fuzz_targets/` and by the root crate's `tests/fuzz_smoke.rs`, which includes this file with
//! `#[path]` (so it may only use `familiar` and dependencies familiar already has).
//!
//! Each entry point takes arbitrary bytes, runs one parser on them, and panics (which the fuzzer
//! reports as a crash) when the parser panics, or when its verdict or result disagrees with what
//! the format says it should be:
//!
//! - [`header`]: `Header::parse` and `PackedArray::new` for every `FileKind`, against a model of
//!   the 64-byte header; accepted arrays are read element by element through `get`;
//! - [`token_file`]: `TokenText::<_, u16>` and `TokenText::<_, u32>` on aligned and misaligned
//!   copies of the bytes;
//! - [`manifest`]: `manifest::parse` for `ShardManifest`, `IndexManifest` and `BuildPlan`; accepted
//!   manifests go through `manifest::to_bytes` and back;
//! - [`corpus_line`]: `corpus::parse_record` with the default field names, against a model of a
//!   JSONL record; accepted documents are written back as a record and parsed again;
//! - [`tokenizer_json`]: `Tokenizer::from_bytes`; accepted tokenizers encode and decode a few texts.
//!
//! The header and token-file entry points also run the parser on a copy whose header checksum is
//! recomputed (and on one whose length is what the header asks for): random mutations almost never
//! keep an xxh3 checksum valid, and without the fix-up nothing behind the checksum would be reached.

use std::fmt::Debug;
use std::path::Path;

use familiar::corpus::{parse_record, Document, Fields};
use familiar::format::OLDEST_READABLE_VERSION;
use familiar::format::{FileKind, Header, PackedArray, FORMAT_VERSION, HEADER_LEN, MAGIC};

/// Widest element a header may declare, in bits.
const MAX_HEADER_BITS: u32 = 64;
/// Widest element a `PackedArray` opens, in bits (the format's limit, restated here).
const MAX_ARRAY_BITS: u32 = 57;
use familiar::manifest::{BuildPlan, IndexManifest, ShardManifest};
use familiar::token::{Token, TokenText, TokenWidth};
use familiar::tokenizer::Tokenizer;
use familiar::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Every kind of array file.
pub const KINDS: [FileKind; 3] = [
    FileKind::Tokens,
    FileKind::SuffixArray,
    FileKind::DocOffsets,
];

/// Longest file the length fix-up builds (it reads every element, so keep iterations quick).
const MAX_FITTED_LEN: u64 = 1 << 16;

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Little-endian unsigned integer of 1 to 8 bytes.
fn le(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(a)
}

/// File length a header with `count` elements of `width` bits asks for: the header plus the body
/// rounded up to whole bytes, computed in `u128` (no `u64` product or sum can overflow there).
fn model_len(count: u64, width: u32) -> u128 {
    let bits = count as u128 * width as u128;
    HEADER_LEN as u128 + bits / 8 + u128::from(!bits.is_multiple_of(8))
}

/// Element `i` of `width` bits (1..=64) of a packed body, assembled one bit at a time: bit `k` of
/// the body is bit `k % 8` of byte `k / 8`, and element `i` is bits `i·width .. (i+1)·width`,
/// least significant first.
fn model_element(body: &[u8], width: u32, i: u64) -> u64 {
    let first = i as u128 * width as u128;
    let mut value = 0u64;
    for j in 0..width {
        let k = first + u128::from(j);
        let byte = body[(k / 8) as usize];
        let bit = (byte >> (k % 8)) & 1;
        value |= u64::from(bit) << j;
    }
    value
}

/// Whether every bit of a packed body after its `count` elements of `width` bits (the padding up
/// to a whole byte) is zero, checked one bit at a time.
fn model_padding_zero(body: &[u8], width: u32, count: u64) -> bool {
    let used = count as u128 * width as u128;
    (used..body.len() as u128 * 8).all(|k| (body[(k / 8) as usize] >> (k % 8)) & 1 == 0)
}

/// What the format says `file` is when opened as `kind`: its header if every check of the module
/// docs of `familiar::format` passes, else `None`.
pub fn header_model(file: &[u8], kind: FileKind) -> Option<Header> {
    if file.len() < HEADER_LEN || &file[0..8] != MAGIC || file[8..12] != kind.tag() {
        return None;
    }
    let version = u32_at(file, 12);
    let width = u32_at(file, 16);
    let flags = u32_at(file, 20);
    let count = u64_at(file, 24);
    let sealed = u64_at(file, 48) == xxhash_rust::xxh3::xxh3_64(&file[0..48]);
    let reserved_zero = file[56..64].iter().all(|&b| b == 0);
    let len_ok = model_len(count, width) == file.len() as u128;
    let ok = (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version)
        && sealed
        && reserved_zero
        && flags == 0
        && (1..=MAX_HEADER_BITS).contains(&width)
        && len_ok;
    ok.then(|| Header {
        kind,
        version,
        width,
        count,
        aux0: u64_at(file, 32),
        aux1: u64_at(file, 40),
    })
}

/// Panics unless `e` is one of the errors a damaged array file may give (never `Error::Bug`), and
/// renders its message.
fn expect_file_error(e: &Error) {
    let _ = e.to_string();
    assert!(
        matches!(
            e,
            Error::Size { .. }
                | Error::Magic { .. }
                | Error::Version { .. }
                | Error::Corrupt { .. }
        ),
        "unexpected error kind for a damaged file: {e:?}"
    );
}

/// Rewrites the header checksum (bytes 48..56) so that it matches bytes 0..48.
pub fn reseal(file: &mut [u8]) {
    if file.len() >= 56 {
        let check = xxhash_rust::xxh3::xxh3_64(&file[0..48]);
        file[48..56].copy_from_slice(&check.to_le_bytes());
    }
}

/// `file` cut or extended (repeating its own bytes) to the length its header asks for, when the
/// header's width is valid and that length differs and is small.
pub fn fit_len(file: &[u8]) -> Option<Vec<u8>> {
    if file.len() < HEADER_LEN {
        return None;
    }
    let width = u32_at(file, 16);
    if !(1..=MAX_HEADER_BITS).contains(&width) {
        return None;
    }
    let want = model_len(u64_at(file, 24), width);
    if want > u128::from(MAX_FITTED_LEN) || want == file.len() as u128 {
        return None;
    }
    let want = usize::try_from(want).ok()?;
    Some(file.iter().copied().cycle().take(want).collect())
}

/// `Header::parse` and `PackedArray::new` on `file` as `kind`, checked against [`header_model`]
/// (`PackedArray::new` further refuses widths above 57 bits and non-zero padding bits after the last
/// element); an accepted array is read in full and every element compared with the bits of the
/// body.
fn check_array(file: &[u8], kind: FileKind) {
    let path = Path::new("fuzz.bin");
    let parsed = Header::parse(file, kind, path);
    let expected = header_model(file, kind);
    match (&parsed, expected) {
        (Ok(h), Some(e)) => assert_eq!(*h, e, "header fields differ from the bytes"),
        (Err(e), None) => expect_file_error(e),
        (Ok(h), None) => panic!("accepted a header the format rejects as {kind:?}: {h:?}"),
        (Err(e), Some(h)) => panic!("rejected a valid {kind:?} header {h:?}: {e}"),
    }
    let array = PackedArray::new(file, kind, path);
    let Ok(header) = parsed else {
        assert!(
            array.is_err(),
            "PackedArray::new accepted what Header::parse rejects"
        );
        return;
    };
    // Writing the parsed header back gives the same bytes.
    assert_eq!(
        header.to_bytes()[..],
        file[..HEADER_LEN],
        "header does not round-trip"
    );
    let body = &file[HEADER_LEN..];
    let refusal = if header.width > MAX_ARRAY_BITS {
        Some("a width above 57 bits")
    } else if !model_padding_zero(body, header.width, header.count) {
        Some("non-zero padding bits")
    } else {
        None
    };
    if let Some(why) = refusal {
        match array {
            Ok(a) => panic!("PackedArray::new accepted {why}: {:?}", a.header()),
            Err(e) => {
                assert!(
                    matches!(e, Error::Corrupt { .. }),
                    "wrong error for {why}: {e:?}"
                );
                let _ = e.to_string();
            }
        }
        return;
    }
    let array = array.expect("PackedArray::new rejected a valid array");
    assert_eq!(*array.header(), header);
    assert_eq!(array.len(), header.count);
    assert_eq!(array.is_empty(), header.count == 0);
    assert_eq!(array.bytes(), file);
    for i in 0..header.count {
        assert_eq!(
            array.get(i),
            Some(model_element(body, header.width, i)),
            "element {i} of {} bits",
            header.width
        );
    }
    assert_eq!(array.get(header.count), None);
    assert_eq!(array.get(u64::MAX), None);
}

/// Fuzz entry point for `Header::parse` and `PackedArray` (all three file kinds).
pub fn header(data: &[u8]) {
    for kind in KINDS {
        check_array(data, kind);
    }
    if data.len() < HEADER_LEN {
        return;
    }
    let mut sealed = data.to_vec();
    reseal(&mut sealed);
    for kind in KINDS {
        check_array(&sealed, kind);
    }
    if let Some(fitted) = fit_len(&sealed) {
        for kind in KINDS {
            check_array(&fitted, kind);
        }
    }
}

/// Bytes at a chosen offset from an 8-byte-aligned address, as a memory map or whole-file vector
/// (offset 0) or a misaligned slice (odd offset) would hold them.
#[derive(Debug)]
pub struct Placed {
    words: Vec<u64>,
    start: usize,
    len: usize,
}

impl Placed {
    /// A copy of `bytes` starting `offset` bytes past an 8-byte boundary.
    pub fn new(bytes: &[u8], offset: usize) -> Placed {
        let mut words = vec![0u64; (offset + bytes.len()).div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[offset..offset + bytes.len()]
            .copy_from_slice(bytes);
        Placed {
            words,
            start: offset,
            len: bytes.len(),
        }
    }
}

impl AsRef<[u8]> for Placed {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[self.start..self.start + self.len]
    }
}

/// `TokenText::<_, T>::new` on `file` (8-byte aligned), checked against [`header_model`]; the
/// tokens of an accepted file are compared with the bytes.
fn check_tokens<T: Token>(file: &[u8]) {
    let path = Path::new("tokens.bin");
    let placed = Placed::new(file, 0);
    // The header records bits; tokens are whole little-endian u16 / u32 values.
    let expected = header_model(file, FileKind::Tokens).filter(|h| h.width == T::WIDTH * 8);
    match (TokenText::<_, T>::new(placed.as_ref(), path), expected) {
        (Ok(text), Some(h)) => {
            assert_eq!(*text.header(), h);
            assert_eq!(text.separator(), h.aux0);
            assert_eq!(text.vocab_size(), h.aux1);
            let tokens = text.tokens();
            assert_eq!(tokens.len() as u64, h.count);
            let w = T::WIDTH as usize;
            for (i, t) in tokens.iter().enumerate() {
                let at = HEADER_LEN + i * w;
                assert_eq!(u64::from(t.to_u32()), le(&file[at..at + w]), "token {i}");
            }
        }
        (Err(e), None) => expect_file_error(&e),
        (Ok(text), None) => panic!(
            "accepted a token file the format rejects: {:?}",
            text.header()
        ),
        (Err(e), Some(h)) => panic!("rejected a valid token file {h:?}: {e}"),
    }
    // The same bytes at an odd address: refused (as a bug of the caller, who must align), never a
    // panic or a misaligned read.
    let odd = Placed::new(file, 1);
    match TokenText::<_, T>::new(odd.as_ref(), path) {
        Ok(text) => assert_eq!(text.tokens().len() as u64, text.header().count),
        Err(Error::Bug(_)) => assert!(expected.is_some(), "alignment error on an invalid file"),
        Err(e) => {
            assert!(
                expected.is_none(),
                "rejected a valid token file at an odd address: {e}"
            );
            expect_file_error(&e);
        }
    }
}

fn check_token_file(file: &[u8]) {
    check_tokens::<u16>(file);
    check_tokens::<u32>(file);
}

/// Fuzz entry point for `TokenText` with `u16` and `u32` tokens.
pub fn token_file(data: &[u8]) {
    check_token_file(data);
    if data.len() < HEADER_LEN {
        return;
    }
    let mut sealed = data.to_vec();
    reseal(&mut sealed);
    check_token_file(&sealed);
    if let Some(fitted) = fit_len(&sealed) {
        check_token_file(&fitted);
    }
}

/// Parses `data` as manifest type `M` with its tag; an accepted manifest is serialized and
/// re-parsed. Returns whether it was accepted.
fn check_manifest<M>(data: &[u8], tag: &str) -> bool
where
    M: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let path = Path::new("manifest.json");
    let m = match familiar::manifest::parse::<M>(data, tag, path) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            assert!(
                matches!(e, Error::Corrupt { .. } | Error::Version { .. }),
                "unexpected error kind for a bad manifest: {e:?}"
            );
            return false;
        }
    };
    let value: Value = serde_json::from_slice(data).expect("an accepted manifest is JSON");
    assert!(
        value.is_object(),
        "accepted a manifest that is not a JSON object: {value}"
    );
    assert_eq!(
        value["format"], tag,
        "accepted a manifest with another format tag"
    );
    assert_eq!(
        value["format_version"], FORMAT_VERSION,
        "accepted another version"
    );
    assert!(
        familiar::manifest::parse::<M>(data, "familiar-other", path).is_err(),
        "accepted a manifest under a tag it does not carry"
    );
    let bytes = familiar::manifest::to_bytes(&m).expect("a parsed manifest serializes");
    let again: M = familiar::manifest::parse(&bytes, tag, path)
        .unwrap_or_else(|e| panic!("own output does not parse back: {e}"));
    assert_eq!(again, m, "manifest does not round-trip");
    assert_eq!(
        familiar::manifest::to_bytes(&again).expect("a parsed manifest serializes"),
        bytes,
        "serialization is not stable"
    );
    true
}

/// Fuzz entry point for `manifest::parse` of the shard manifest, index manifest and build plan.
pub fn manifest(data: &[u8]) {
    let accepted = [
        check_manifest::<ShardManifest>(data, ShardManifest::FORMAT),
        check_manifest::<IndexManifest>(data, IndexManifest::FORMAT),
        check_manifest::<BuildPlan>(data, BuildPlan::FORMAT),
    ];
    assert!(
        accepted.iter().filter(|&&a| a).count() <= 1,
        "one input parsed as two kinds of manifest"
    );
}

/// File name, file index and line the corpus-line entry point parses records as.
pub const RECORD_FILE: &str = "fuzz.jsonl";
const RECORD_INDEX: usize = 3;
const RECORD_LINE: u64 = 17;

/// Metadata flattening as `familiar::corpus::flatten_metadata` documents it, written again.
fn flatten_model(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_model(&key, v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// The document a JSONL record holds with the default field names, or `None` when it is not a
/// valid record.
pub fn record_model(data: &[u8]) -> Option<Document> {
    let value: Value = serde_json::from_str(std::str::from_utf8(data).ok()?).ok()?;
    let obj = value.as_object()?;
    let text = obj.get("text")?.as_str()?.to_owned();
    let external_id = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) | None => format!("{RECORD_FILE}:{RECORD_LINE}"),
        Some(_) => return None,
    };
    let source = match obj.get("source") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(_) => return None,
    };
    let mut metadata = Vec::new();
    if let Some(m) = obj.get("metadata") {
        flatten_model("", m, &mut metadata);
    }
    Some(Document {
        text,
        external_id,
        source,
        metadata,
        file: RECORD_INDEX,
        record: RECORD_LINE,
    })
}

fn parse_line(data: &[u8]) -> familiar::Result<Document> {
    parse_record(
        data,
        &Fields::default(),
        Path::new(RECORD_FILE),
        RECORD_FILE,
        RECORD_INDEX,
        RECORD_LINE,
    )
}

/// Fuzz entry point for `corpus::parse_record` (one JSONL line, default field names).
pub fn corpus_line(data: &[u8]) {
    let doc = match (parse_line(data), record_model(data)) {
        (Ok(doc), Some(want)) => {
            assert_eq!(doc, want, "document differs from the record");
            doc
        }
        (Err(e), None) => {
            let _ = e.to_string();
            assert!(
                matches!(e, Error::Input { .. }),
                "unexpected error kind: {e:?}"
            );
            return;
        }
        (Ok(doc), None) => panic!("accepted an invalid record as {doc:?}"),
        (Err(e), Some(want)) => panic!("rejected a valid record ({want:?}): {e}"),
    };
    // Written back as a record (metadata as the flat object it was flattened to), it parses to the
    // same document.
    let mut meta = serde_json::Map::new();
    for (k, v) in &doc.metadata {
        meta.insert(k.clone(), Value::String(v.clone()));
    }
    let line = serde_json::json!({
        "text": doc.text,
        "id": doc.external_id,
        "source": doc.source,
        "metadata": meta,
    })
    .to_string();
    let again = parse_line(line.as_bytes())
        .unwrap_or_else(|e| panic!("a written-back record does not parse: {e}\n{line}"));
    assert_eq!(again.text, doc.text);
    assert_eq!(again.external_id, doc.external_id);
    assert_eq!(again.source, doc.source);
    if meta.len() == doc.metadata.len() {
        // Keys were unique, so the flat object holds every pair.
        let mut before = doc.metadata.clone();
        before.sort();
        let mut after = again.metadata;
        after.sort();
        assert_eq!(after, before, "metadata does not round-trip");
    }
}

/// Lets panics raised inside the `tokenizers` crate unwind (silently) instead of aborting.
///
/// `familiar::tokenizer::Tokenizer` catches them (some tokenizer.json configurations make
/// tokenizers 0.23 panic instead of failing) and returns an error; libFuzzer's panic hook aborts
/// before any unwind, which would count every such caught panic as a crash. Panics raised
/// anywhere else still go to the previous hook (libFuzzer's: abort), and a tokenizers panic that
/// familiar fails to catch still ends the run, in libfuzzer-sys's own `catch_unwind`.
fn tolerate_tokenizers_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tokenizers = info.location().is_some_and(|l| {
                let file = l.file().replace('\\', "/");
                file.contains("/tokenizers-") && file.contains("/src/")
            });
            if !in_tokenizers {
                previous(info);
            }
        }));
    });
}

/// Texts every accepted tokenizer encodes.
const SAMPLES: [&str; 6] = [
    "",
    "I'm here, don't  stop\n\n  42x\r\n\t'S 're",
    " the cat sat on the mat",
    "<|endoftext|>Hello, World! 123",
    "\u{0}\t\n  é 漢字 🦀",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// Fuzz entry point for `Tokenizer::from_bytes`; an accepted tokenizer encodes and decodes a few
/// texts (including the input's own first bytes).
pub fn tokenizer_json(data: &[u8]) {
    tolerate_tokenizers_panics();
    let t = match Tokenizer::from_bytes(data, Path::new("tokenizer.json")) {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            assert!(
                matches!(e, Error::Tokenizer { .. }),
                "unexpected error kind: {e:?}"
            );
            return;
        }
    };
    let _ = format!("{t:?}");
    let vocab = t.vocab_size();
    let max_id = t.inner().get_vocab(true).values().copied().max();
    assert_eq!(
        max_id.map(|m| m + 1),
        Some(vocab),
        "vocab_size is not the largest id + 1"
    );
    assert!(vocab < i32::MAX as u32);
    assert_eq!(t.hash(), familiar::checksum::of_bytes(data));
    assert_eq!(t.token_width(), TokenWidth::for_vocab(vocab));
    let own = String::from_utf8_lossy(&data[..data.len().min(48)]).into_owned();
    for text in SAMPLES.iter().copied().chain([own.as_str()]) {
        // The fast byte-level BPE path (where the tokenizer qualifies) gives the ids `tokenizers`
        // gives.
        // A panic of tokenizers (which `Tokenizer::encode` turns into an error) counts as a
        // failure of the reference.
        let reference = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.inner().encode_fast(text, false)
        }))
        .map_err(|_| ())
        .and_then(|r| r.map(|e| e.get_ids().to_vec()).map_err(|_| ()));
        let encoded = t.encode(text);
        if let (Ok(ours), Ok(theirs)) = (&encoded, &reference) {
            assert_eq!(ours, theirs, "encode({text:?}) differs from tokenizers");
        }
        assert_eq!(
            encoded.is_ok(),
            reference.is_ok(),
            "encode({text:?}) fails on one path only"
        );
        let Ok(ids) = encoded else { continue };
        for &id in &ids {
            // The separator takes id `vocab`: no text may encode to it or beyond.
            assert!(
                id < vocab,
                "{text:?} encodes to id {id}, not below vocab_size {vocab}"
            );
        }
        let _ = t.decode(&ids);
    }
    for id in [0, 1, vocab / 2, vocab - 1, vocab] {
        let _ = t.id_to_token(id);
    }
    let _ = t.decode(&[0, vocab - 1, vocab]);
}

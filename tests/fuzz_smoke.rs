//! Smoke test of the fuzz targets in `fuzz/`, in the normal test suite: every parser of untrusted
//! bytes gets valid inputs (which must parse), valid inputs with bytes flipped, set, inserted,
//! removed or cut off, and random bytes, through the same checks the fuzz targets run
//! (`fuzz/src/lib.rs`, included below). Nothing may panic, and every verdict must match the
//! format. Real fuzzing: see `fuzz/README.md`.

#[path = "../fuzz/src/lib.rs"]
mod oracles;

use std::path::Path;

use familiar::corpus::{parse_record, Fields};
use familiar::format::{write_packed, FileKind, Header, PackedArray, MAX_PACKED_BITS};
use familiar::manifest::{BuildPlan, IndexManifest, ShardManifest};
use familiar::token::TokenText;
use familiar::tokenizer::Tokenizer;
use proptest::prelude::*;
use proptest::sample::select;

const INDEX_MANIFEST: &[u8] = include_bytes!("../fixtures/golden-v1/manifest.json");
const SHARD_MANIFEST: &[u8] = include_bytes!("../fixtures/golden-v1/shard-00000/manifest.json");
const BUILD_PLAN: &[u8] = include_bytes!("../fixtures/golden-v1/build.json");
const TOKENS: &[u8] = include_bytes!("../fixtures/golden-v1/shard-00000/tokens.bin");
const SUFFIX_ARRAY: &[u8] = include_bytes!("../fixtures/golden-v1/shard-00000/suffix_array.bin");
const DOC_OFFSETS: &[u8] = include_bytes!("../fixtures/golden-v1/shard-00000/doc_offsets.bin");
const SOURCE_JSONL: &str = include_str!("../fixtures/golden-v1-source.jsonl");
const TOKENIZER: &[u8] = include_bytes!("../fixtures/tokenizer.json");

/// A small tokenizer.json (word level, with an added token), quick to parse in a debug build.
const SMALL_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[{"id":5,"content":"<|endoftext|>","single_word":false,"lstrip":false,
"rstrip":false,"normalized":false,"special":true}],"normalizer":null,
"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"<unk>":0,"the":1,"cat":2,"sat":3,"mat":4},
"unk_token":"<unk>"}}"#;

/// A byte-level BPE over all 256 byte characters, which `Tokenizer` encodes on its fast path.
const BYTE_LEVEL_TOKENIZER: &[u8] =
    include_bytes!("../fuzz/seeds/tokenizer_json/bpe_gpt2_bytes.json");

/// Records beyond the fixture's: numeric, null and missing ids, nested and odd metadata, escapes.
const EXTRA_LINES: [&str; 6] = [
    r#"{"text":"a","id":42}"#,
    r#"{"text":"","id":null,"source":null,"metadata":null}"#,
    r#"{"text":"caf\u00e9 \ud83e\udd80","metadata":{"a":{"b":[1,2],"c":true},"d":1.5}}"#,
    r#"{"metadata":"flat","text":"t","extra":[{"x":1}],"id":"-1e5"}"#,
    r#"  {"text":"lead and trail"}  "#,
    r#"{"text":"x","id":1.25e3,"source":"s","metadata":{"":{"":""}}}"#,
];

/// `oracles::tokenizer_json`, on any bytes.
fn tokenizer_json(data: &[u8]) {
    oracles::tokenizer_json(data);
}

fn jsonl_lines() -> Vec<&'static str> {
    SOURCE_JSONL
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(8)
        .chain(EXTRA_LINES)
        .collect()
}

fn kind_of(i: usize) -> FileKind {
    oracles::KINDS[i % oracles::KINDS.len()]
}

/// A valid array file.
fn array_file(kind: FileKind, width: u32, values: &[u64], aux0: u64, aux1: u64) -> Vec<u8> {
    let mut file = Header::new(kind, width, values.len() as u64, aux0, aux1)
        .to_bytes()
        .to_vec();
    write_packed(&mut file, width, values.iter().copied()).expect("writing to a Vec");
    file
}

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

/// Bytes that matter to the formats: JSON punctuation, digits, escapes, invalid UTF-8, and the
/// small integers of header fields (among them the bit widths 16, 32, 57, 58, 64 and 65).
const INTERESTING: &[u8] =
    b"{}[]\":,.-+eE0123456789\\u nt\n\x00\x01\x02\x04\x08\x10\x20\x39\x3a\x40\x41\x80\xc3\xff";

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), select(INTERESTING)]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), 0..8u8).prop_map(|(i, bit)| Edit::Flip(i, bit)),
        3 => (any::<usize>(), byte()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (any::<usize>(), prop::collection::vec(byte(), 1..8)).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<usize>(), 1..16usize).prop_map(|(i, n)| Edit::Remove(i, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..6)
}

fn apply(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = v.len();
        match e {
            Edit::Flip(i, bit) if n > 0 => v[i % n] ^= 1 << bit,
            Edit::Set(i, b) if n > 0 => v[i % n] = *b,
            Edit::Insert(i, bytes) => {
                let at = i % (n + 1);
                v.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove(i, k) if n > 0 => {
                let at = i % n;
                v.drain(at..(at + k).min(n));
            }
            Edit::Truncate(i) => v.truncate(i % (n + 1)),
            _ => {}
        }
    }
    v
}

/// The largest value of `width` bits (1..=64).
fn max_of(width: u32) -> u64 {
    u64::MAX >> (64 - width)
}

/// A width in bits a `PackedArray` holds (1..=57), and values of at most that many bits.
fn packed_values() -> impl Strategy<Value = (u32, Vec<u64>)> {
    (1..=MAX_PACKED_BITS).prop_flat_map(|width| {
        let values = prop::collection::vec(
            prop_oneof![0..=max_of(width), Just(max_of(width)), Just(0)],
            0..40,
        );
        (Just(width), values)
    })
}

/// A well-formed header of `width` bits (1..=64) over a body of the length it asks for, filled
/// from `fill`, with the padding bits after the last element zero: wider than a `PackedArray`
/// holds when `width > 57`, which only `Header::parse` accepts.
fn header_file(kind: FileKind, width: u32, count: u64, fill: &[u8], aux0: u64) -> Vec<u8> {
    let mut file = Header::new(kind, width, count, aux0, 7).to_bytes().to_vec();
    let bits = count * u64::from(width);
    let body = bits.div_ceil(8) as usize;
    file.extend((0..body).map(|i| fill.get(i % fill.len().max(1)).copied().unwrap_or(0xa5)));
    if !bits.is_multiple_of(8) {
        *file.last_mut().expect("a body") &= (1u8 << (bits % 8)) - 1;
    }
    file
}

#[test]
fn fixture_inputs_parse() {
    let path = Path::new("fixture");
    for (bytes, kind) in [
        (TOKENS, FileKind::Tokens),
        (SUFFIX_ARRAY, FileKind::SuffixArray),
        (DOC_OFFSETS, FileKind::DocOffsets),
    ] {
        let array = PackedArray::new(bytes, kind, path).expect("fixture array file opens");
        assert!(!array.is_empty());
        oracles::header(bytes);
        oracles::token_file(bytes);
    }
    let placed = oracles::Placed::new(TOKENS, 0);
    let text = TokenText::<_, u16>::new(placed.as_ref(), path).expect("fixture token file opens");
    assert_eq!(text.tokens().len() as u64, text.header().count);

    familiar::manifest::parse::<IndexManifest>(INDEX_MANIFEST, IndexManifest::FORMAT, path)
        .expect("fixture index manifest parses");
    familiar::manifest::parse::<ShardManifest>(SHARD_MANIFEST, ShardManifest::FORMAT, path)
        .expect("fixture shard manifest parses");
    familiar::manifest::parse::<BuildPlan>(BUILD_PLAN, BuildPlan::FORMAT, path)
        .expect("fixture build plan parses");
    for m in [INDEX_MANIFEST, SHARD_MANIFEST, BUILD_PLAN] {
        oracles::manifest(m);
    }

    for line in jsonl_lines() {
        let doc = parse_record(line.trim().as_bytes(), &Fields::default(), path, "f", 0, 1)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(oracles::record_model(line.as_bytes()).is_some());
        assert_eq!(doc.file, 0);
        oracles::corpus_line(line.as_bytes());
    }

    for t in [TOKENIZER, SMALL_TOKENIZER.as_bytes()] {
        Tokenizer::from_bytes(t, path).expect("fixture tokenizer loads");
        oracles::tokenizer_json(t);
    }
    let small = Tokenizer::from_bytes(SMALL_TOKENIZER.as_bytes(), path).expect("small tokenizer");
    assert_eq!(small.vocab_size(), 6);
    assert_eq!(small.encode("the cat").expect("encodes"), vec![1, 2]);
}

/// The bit order of the format, worked out by hand: 3-bit elements 5, 2, 7, 1 fill bits 0..12 of
/// the body least significant first (`101`, `010`, `111`, `100` read from bit 0 up), so the body is
/// `0xd5 0x03`; a 20-bit element straddles three bytes.
#[test]
fn packed_bit_order_by_hand() {
    let file = array_file(FileKind::SuffixArray, 3, &[5, 2, 7, 1], 0, 0);
    assert_eq!(file[64..], [0xd5, 0x03]);
    let file = array_file(FileKind::DocOffsets, 20, &[0x1, 0xabcde], 0, 0);
    // 0x00001 in bits 0..20, 0xabcde in bits 20..40.
    assert_eq!(file[64..], [0x01, 0x00, 0xe0, 0xcd, 0xab]);
    let array = PackedArray::new(&file[..], FileKind::DocOffsets, Path::new("x")).expect("opens");
    assert_eq!(array.get(1), Some(0xabcde));
    for f in [
        array_file(FileKind::SuffixArray, 3, &[5, 2, 7, 1], 0, 0),
        file,
    ] {
        oracles::header(&f);
    }
}

/// The seeds committed under `fuzz/seeds/<target>/` are valid inputs: each one parses.
#[test]
fn committed_seeds_parse() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let files = |target: &str| -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(seeds.join(target))
            .expect("seed directory")
            .map(|e| {
                let path = e.expect("seed entry").path();
                let bytes = std::fs::read(&path).expect("seed file");
                (path, bytes)
            })
            .collect();
        v.sort();
        v
    };
    let tokenizers = files("tokenizer_json");
    assert!(!tokenizers.is_empty());
    for (path, bytes) in &tokenizers {
        let t = Tokenizer::from_bytes(bytes, path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !t.encode("the cat").expect("encodes").is_empty(),
            "{}",
            path.display()
        );
        oracles::tokenizer_json(bytes);
    }
    let lines = files("corpus_line");
    assert!(!lines.is_empty());
    for (path, bytes) in &lines {
        parse_record(bytes, &Fields::default(), path, "seed", 0, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        oracles::corpus_line(bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_array_files_parse(
        kind in 0..3usize,
        (width, values) in packed_values(),
        aux0 in any::<u64>(),
        aux1 in any::<u64>(),
    ) {
        let kind = kind_of(kind);
        let file = array_file(kind, width, &values, aux0, aux1);
        let array = PackedArray::new(&file[..], kind, Path::new("a.bin")).expect("valid file opens");
        let got: Vec<u64> = (0..array.len()).map(|i| array.get(i).expect("in range")).collect();
        prop_assert_eq!(&got, &values);
        prop_assert_eq!(*array.header(), Header::new(kind, width, array.len(), aux0, aux1));
        prop_assert_eq!(file.len(), 64 + (values.len() * width as usize).div_ceil(8));
        oracles::header(&file);
        oracles::token_file(&file);
    }

    #[test]
    fn any_header_width(
        kind in 0..3usize,
        width in 1..=64u32,
        count in 0..48u64,
        fill in prop::collection::vec(any::<u8>(), 0..16),
        edits in prop::option::of(edits()),
    ) {
        let kind = kind_of(kind);
        let file = header_file(kind, width, count, &fill, 3);
        let header = Header::parse(&file, kind, Path::new("h.bin")).expect("valid header parses");
        prop_assert_eq!(header.width, width);
        prop_assert_eq!(
            PackedArray::new(&file[..], kind, Path::new("h.bin")).is_ok(),
            width <= MAX_PACKED_BITS
        );
        let file = match edits {
            Some(edits) => apply(file, &edits),
            None => file,
        };
        oracles::header(&file);
        oracles::token_file(&file);
    }

    #[test]
    fn mutated_array_files(
        kind in 0..3usize,
        (width, values) in packed_values(),
        aux0 in any::<u64>(),
        edits in edits(),
    ) {
        // Token-file widths (16 or 32 bits) half the time, so the token checks get past the width
        // check.
        let width = if kind == 0 && width > MAX_PACKED_BITS / 2 { [16, 32][width as usize % 2] } else { width };
        let values: Vec<u64> = values.iter().map(|v| v & max_of(width)).collect();
        let file = apply(array_file(kind_of(kind), width, &values, aux0, 7), &edits);
        oracles::header(&file);
        oracles::token_file(&file);
    }

    #[test]
    fn mutated_manifests(which in 0..3usize, edits in edits()) {
        let m = [INDEX_MANIFEST, SHARD_MANIFEST, BUILD_PLAN][which];
        oracles::manifest(&apply(m.to_vec(), &edits));
    }

    #[test]
    fn mutated_corpus_lines(which in any::<prop::sample::Index>(), edits in edits()) {
        let lines = jsonl_lines();
        let line = lines[which.index(lines.len())];
        oracles::corpus_line(&apply(line.as_bytes().to_vec(), &edits));
    }

    #[test]
    fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        oracles::header(&data);
        oracles::token_file(&data);
        oracles::manifest(&data);
        oracles::corpus_line(&data);
        tokenizer_json(&data);
    }

    #[test]
    fn random_json_ish(s in r#"[{}\[\]":,0-9a-z_ .\\-]{0,120}"#) {
        oracles::manifest(s.as_bytes());
        oracles::corpus_line(s.as_bytes());
        tokenizer_json(s.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn mutated_tokenizers(byte_level in any::<bool>(), edits in edits()) {
        let t = if byte_level { BYTE_LEVEL_TOKENIZER } else { SMALL_TOKENIZER.as_bytes() };
        tokenizer_json(&apply(t.to_vec(), &edits));
    }
}

// Regression cases found by fuzzing (`fuzz/`). Each is the crashing input, minimized.

/// Found by the `tokenizer_json` target (and the smoke test's mutations): a `decoder` value that is
/// not valid JSON, here `{"decoder":-}` (hex `7b226465636f646572223a2d7d`), makes
/// `Tokenizer::from_bytes` panic inside tokenizers 0.23.2 (`decoders/mod.rs:90`,
/// `DecoderHelper::deserialize(..).expect("Helper")`: "Helper: Error(\"invalid number\", line: 1,
/// column: 13)") instead of returning `Error::Tokenizer`. Any JSON syntax error inside the
/// `decoder` value does it, as does an escape that is no Unicode scalar value (`"\ud800"`); the other
/// sections return an error.
#[test]
fn tokenizer_with_malformed_decoder_value() {
    for input in [
        &br#"{"decoder":-}"#[..],
        br#"{"decoder":{"type":}}"#,
        br#"{"decoder":"\ud800"}"#,
    ] {
        let result = Tokenizer::from_bytes(input, Path::new("tokenizer.json"));
        assert!(
            matches!(result, Err(familiar::Error::Tokenizer { .. })),
            "{result:?}"
        );
        oracles::tokenizer_json(input);
    }
}

/// Found by the `manifest` fuzz target (2026-12-06): invalid UTF-8 inside a field the manifest
/// type does not know was accepted, because serde skips unknown fields without checking their
/// bytes. Every manifest with a byte that is not UTF-8 is now corrupt.
#[test]
fn manifest_with_invalid_utf8_is_corrupt() {
    let mut bytes = INDEX_MANIFEST.to_vec();
    // An unknown key whose name holds a lone continuation byte.
    let at = bytes.iter().position(|&b| b == b'{').unwrap() + 1;
    bytes.splice(at..at, b"\"x\x80y\": 1, ".iter().copied());
    let e = familiar::manifest::parse::<IndexManifest>(
        &bytes,
        "familiar-index",
        Path::new("manifest.json"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid UTF-8"), "{e}");
    {
        let m = INDEX_MANIFEST;
        assert!(
            familiar::manifest::parse::<IndexManifest>(m, "familiar-index", Path::new("m")).is_ok()
        );
    }
}

/// Found by the `manifest` target (2026-12-06): a lone surrogate escape inside a field the
/// manifest type does not know was accepted (serde skips unknown values without decoding their
/// escapes), so an "accepted" manifest was not JSON.
#[test]
fn manifest_with_a_lone_surrogate_in_an_unknown_field_is_corrupt() {
    for insert in [
        &br#""x": "\ud800", "#[..],
        br#""\udc00": 1, "#,
        br#""x": ["a\ud83dz"], "#,
    ] {
        let mut bytes = INDEX_MANIFEST.to_vec();
        let at = bytes.iter().position(|&b| b == b'{').unwrap() + 1;
        bytes.splice(at..at, insert.iter().copied());
        let e = familiar::manifest::parse::<IndexManifest>(
            &bytes,
            "familiar-index",
            Path::new("manifest.json"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not a valid JSON manifest"),
            "{}: {e}",
            String::from_utf8_lossy(insert)
        );
        oracles::manifest(&bytes);
    }
    // A surrogate pair is a character, and fine.
    let mut bytes = INDEX_MANIFEST.to_vec();
    let at = bytes.iter().position(|&b| b == b'{').unwrap() + 1;
    bytes.splice(at..at, br#""x": "\ud83e\udd80", "#.iter().copied());
    familiar::manifest::parse::<IndexManifest>(&bytes, "familiar-index", Path::new("m")).unwrap();
}

/// Found by the `tokenizer_json` target (2026-12-06), all panics inside tokenizers 0.23.2: BPE
/// merges it slices out of bounds while loading (`models/bpe/model.rs:265`, `:267`) and a
/// `Strip` decoder that strips more than a token has (`decoders/strip.rs:46`, from `decode`). The
/// first two are refused at load with a message naming the merge; the third loads, and decoding
/// is an error, not a crash.
#[test]
fn tokenizers_panics_are_errors() {
    for (input, says) in [
        (
            &br#"{"model":{"vocab":{"ab":0,"c":1},"merges":[["ab","c"]]}}"#[..],
            r#"merge 0 ("ab", "c"): the merged token "abc" is not in the vocabulary"#,
        ),
        (
            br#"{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]],"continuing_subword_prefix":"xx"}}"#,
            "does not start with a 2-byte continuing_subword_prefix",
        ),
        (
            // The prefix cuts the right part inside a character.
            "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"\u{e9}\":1,\"a\u{e9}\":2},\"merges\":[\"a \u{e9}\"],\"continuing_subword_prefix\":\"x\"}}".as_bytes(),
            "continuing_subword_prefix",
        ),
    ] {
        let e = Tokenizer::from_bytes(input, Path::new("tokenizer.json")).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
        oracles::tokenizer_json(input);
    }
    // Valid merges, with and without a prefix, still load.
    for good in [
        &br#"{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]]}}"#[..],
        br###"{"model":{"type":"BPE","vocab":{"a":0,"##b":1,"ab":2},"merges":["a ##b"],"continuing_subword_prefix":"##"}}"###,
    ] {
        Tokenizer::from_bytes(good, Path::new("tokenizer.json")).unwrap();
    }
    let strip = br#"{"model":{"type":"WordLevel","vocab":{"a":0},"unk_token":"a"},"decoder":{"type":"Strip","content":"a","start":0,"stop":2}}"#;
    let t = Tokenizer::from_bytes(strip, Path::new("tokenizer.json")).unwrap();
    let e = t.decode(&[0]).unwrap_err();
    assert!(e.to_string().contains("decoding failed"), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    oracles::tokenizer_json(strip);
}

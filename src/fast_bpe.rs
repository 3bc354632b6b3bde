//! A fast encoder for byte-level BPE tokenizers (GPT-2, GPT-NeoX/Pythia and the like) that gives
//! exactly the token ids of the Hugging Face `tokenizers` crate, or says that it cannot.
//!
//! [`FastBpe::from_json`] accepts a `tokenizer.json` only when every step of its pipeline is one
//! this module reproduces exactly:
//! - normalizer: none or NFC. NFC is tested with the quick check of
//!   `unicode-normalization-alignments` and, where the text is not NFC already, applied with that
//!   crate's `nfc()`, which is what `tokenizers`' NFC normalizer runs;
//! - added tokens: split out of the text the way `tokenizers` does (leftmost-longest, first the
//!   tokens with `normalized: false` on the raw text, then those with `normalized: true` on each
//!   normalized piece). Tokens with `lstrip`, `rstrip` or `single_word` are not reproduced: a text
//!   containing one of them falls back;
//! - pre-tokenizer: `ByteLevel` with `use_regex: true` (alone, or alone in a `Sequence`), with or
//!   without `add_prefix_space`. The GPT-2 split regex
//!   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` is run by a
//!   hand-written scanner whose character classes are taken from `regex-syntax`, the very tables
//!   `tokenizers`' regex engine (fancy-regex, delegating classes to regex-automata) uses. The
//!   lookahead `\s+(?!\S)` is reproduced exactly: a run of whitespace followed by a non-whitespace
//!   character gives back its last character when it has more than one;
//! - model: BPE without dropout, without `byte_fallback`, with empty or absent
//!   `continuing_subword_prefix` / `end_of_word_suffix`, with or without `ignore_merges`, whose
//!   vocabulary gives no two tokens the same id. Texts holding a byte whose byte-level character
//!   the vocabulary lacks go to `tokenizers` (C0, C1 and F5..FF, which UTF-8 never uses, are
//!   commonly missing and harmless). Merges are applied to the bytes of each pre-token directly,
//!   with ranks keyed by pairs of token ids; the lowest rank is merged first and, among equal
//!   ranks, the leftmost pair — the order of `tokenizers`' `Word::merge_all` (a rescan for short
//!   words, a priority queue for long ones). Results are cached per thread, keyed by the bytes;
//! - no truncation, no padding, post-processor none or `ByteLevel` (which leaves ids alone).
//!
//! [`FastBpe::agrees_with`] cross-checks a built encoder against the `tokenizers` tokenizer of the
//! same file (ids of bytes and of added tokens, and a few probe texts);
//! [`crate::tokenizer::Tokenizer`] uses the fast path only when it does.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use serde_json::Value;
use unicode_normalization_alignments::UnicodeNormalization;

type Hasher = ahash::RandomState;

fn new_hasher() -> Hasher {
    Hasher::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    )
}

/// The GPT-2 byte-to-character map: printable Latin-1 bytes map to themselves, the other bytes,
/// in increasing order, to U+0100, U+0101, ...
fn byte_char(b: u8) -> char {
    let printable = |x: u8| (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap_or('\u{FFFD}')
}

// ---------------------------------------------------------------------------------------------
// Character classes of the split regex.

const OTHER: u8 = 0;
const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 3;

struct CharClasses {
    /// Class of every code point below U+10000.
    bmp: Vec<u8>,
    /// Sorted, disjoint ranges above U+FFFF: (first, last, class).
    astral: Vec<(u32, u32, u8)>,
}

impl CharClasses {
    fn build() -> Option<CharClasses> {
        let mut bmp = vec![OTHER; 0x10000];
        let mut astral = Vec::new();
        for (pattern, class) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            let hir = regex_syntax::ParserBuilder::new()
                .build()
                .parse(pattern)
                .ok()?;
            let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(cls)) =
                hir.kind()
            else {
                return None;
            };
            for r in cls.ranges() {
                let (lo, hi) = (r.start() as u32, r.end() as u32);
                for c in lo..=hi.min(0xFFFF) {
                    if bmp[c as usize] != OTHER {
                        return None; // classes overlap: not the regex this scanner assumes
                    }
                    bmp[c as usize] = class;
                }
                if hi > 0xFFFF {
                    astral.push((lo.max(0x10000), hi, class));
                }
            }
        }
        astral.sort_unstable();
        if astral.windows(2).any(|w| w[0].1 >= w[1].0) {
            return None;
        }
        Some(CharClasses { bmp, astral })
    }

    #[inline(always)]
    fn class(&self, c: u32) -> u8 {
        if c < 0x10000 {
            self.bmp[c as usize]
        } else {
            match self.astral.binary_search_by(|&(lo, hi, _)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            }) {
                Ok(i) => self.astral[i].2,
                Err(_) => OTHER,
            }
        }
    }

    /// The code point at `s[i]` (`s` is valid UTF-8 and `i` a char boundary) and its length.
    #[inline(always)]
    fn decode(s: &[u8], i: usize) -> (u32, usize) {
        let b0 = s[i] as u32;
        if b0 < 0x80 {
            (b0, 1)
        } else if b0 < 0xE0 {
            (((b0 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
        } else if b0 < 0xF0 {
            (
                ((b0 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F),
                3,
            )
        } else {
            (
                ((b0 & 0x07) << 18)
                    | ((s[i + 1] as u32 & 0x3F) << 12)
                    | ((s[i + 2] as u32 & 0x3F) << 6)
                    | (s[i + 3] as u32 & 0x3F),
                4,
            )
        }
    }

    /// End of the run of characters of class `class` starting at `j`.
    #[inline(always)]
    fn run_end(&self, s: &[u8], mut j: usize, class: u8) -> usize {
        while j < s.len() {
            let b = s[j];
            if b < 0x80 {
                if self.bmp[b as usize] != class {
                    break;
                }
                j += 1;
            } else {
                let (c, len) = Self::decode(s, j);
                if self.class(c) != class {
                    break;
                }
                j += len;
            }
        }
        j
    }

    /// End of the pre-token (match of the GPT-2 split regex) that starts at `i < s.len()`.
    ///
    /// At every position one of the regex's alternatives matches (they cover all characters), so
    /// the pre-tokens tile the text; this returns the match the regex's leftmost-first
    /// alternation picks there.
    #[inline]
    fn pretoken_end(&self, s: &[u8], i: usize) -> usize {
        let n = s.len();
        let b = s[i];
        // 's|'t|'re|'ve|'m|'ll|'d
        if b == b'\'' && i + 1 < n {
            match s[i + 1] {
                b's' | b't' | b'm' | b'd' => return i + 2,
                b'r' | b'v' if i + 2 < n && s[i + 2] == b'e' => return i + 3,
                b'l' if i + 2 < n && s[i + 2] == b'l' => return i + 3,
                _ => {}
            }
        }
        let (c, len) = Self::decode(s, i);
        let class = self.class(c);
        let j = i + len;
        if b == b' ' && j < n {
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`, with the space.
            let (c2, len2) = Self::decode(s, j);
            let class2 = self.class(c2);
            if class2 != SPACE {
                return self.run_end(s, j + len2, class2);
            }
        } else if class != SPACE {
            // The same three without the space.
            return self.run_end(s, j, class);
        }
        // `\s+(?!\S)|\s+`: the whole run when it ends the text or is one character long,
        // else the run without its last character (which is then followed by whitespace).
        let mut last_start = i;
        let mut j = j;
        while j < n {
            let (c2, len2) = Self::decode(s, j);
            if self.class(c2) != SPACE {
                break;
            }
            last_start = j;
            j += len2;
        }
        if j == n || last_start == i {
            j
        } else {
            last_start
        }
    }
}

static CLASSES: LazyLock<Option<CharClasses>> = LazyLock::new(CharClasses::build);

// ---------------------------------------------------------------------------------------------
// Added tokens.

/// A small set of literal patterns, matched leftmost-longest like `tokenizers`' added-token tries.
struct Patterns {
    pats: Vec<(Box<[u8]>, u32)>,
    /// Per first byte: indices into `pats`, longest first.
    by_first: Vec<Vec<usize>>,
    /// Per first byte: whether some pattern starts with it.
    first: [bool; 256],
    /// Per byte: the id of the one-byte pattern made of it, if any.
    single: [Option<u32>; 256],
    /// Bitset of the first two bytes of patterns at least two bytes long.
    pair2: Vec<u64>,
    /// How candidate positions are found.
    scan: Scan,
}

/// Candidate positions of a match: bytes that start a pattern, or the two bytes all patterns
/// start with.
enum Scan {
    Bytes,
    One(u8),
    Two(u8, u8),
    Three(u8, u8, u8),
    Prefix(Box<memchr::memmem::Finder<'static>>),
}

impl Patterns {
    /// `None` when two tokens have the same pattern.
    fn new(list: Vec<(Vec<u8>, u32)>) -> Option<Patterns> {
        let mut by_first = vec![Vec::new(); 256];
        let mut first = [false; 256];
        let mut single = [None; 256];
        let mut pair2 = vec![0u64; 1024];
        let mut pats: Vec<(Box<[u8]>, u32)> = Vec::new();
        for (p, id) in list {
            if p.is_empty() {
                continue;
            }
            match pats.iter().find(|(q, _)| **q == *p) {
                Some((_, other)) if *other == id => continue,
                Some(_) => return None,
                None => pats.push((p.into_boxed_slice(), id)),
            }
        }
        for (k, (p, id)) in pats.iter().enumerate() {
            by_first[p[0] as usize].push(k);
            first[p[0] as usize] = true;
            if p.len() == 1 {
                single[p[0] as usize] = Some(*id);
            } else {
                let key = (p[0] as usize) << 8 | p[1] as usize;
                pair2[key >> 6] |= 1 << (key & 63);
            }
        }
        for v in &mut by_first {
            v.sort_by_key(|&k| Reverse(pats[k].0.len()));
        }
        let firsts: Vec<u8> = (0..=255u8).filter(|&b| first[b as usize]).collect();
        let scan = match firsts[..] {
            _ if !pats.is_empty()
                && pats
                    .iter()
                    .all(|(p, _)| p.len() >= 2 && p[..2] == pats[0].0[..2]) =>
            {
                Scan::Prefix(Box::new(
                    memchr::memmem::Finder::new(&pats[0].0[..2]).into_owned(),
                ))
            }
            [a] => Scan::One(a),
            [a, b] => Scan::Two(a, b),
            [a, b, c] => Scan::Three(a, b, c),
            _ => Scan::Bytes,
        };
        Some(Patterns {
            pats,
            by_first,
            first,
            single,
            pair2,
            scan,
        })
    }

    /// The longest match starting at `i`, if any.
    #[inline]
    fn match_at(&self, hay: &[u8], i: usize) -> Option<(usize, usize, u32)> {
        let b = hay[i];
        if !self.first[b as usize] {
            return None;
        }
        let two = i + 1 < hay.len() && {
            let key = (b as usize) << 8 | hay[i + 1] as usize;
            self.pair2[key >> 6] & (1 << (key & 63)) != 0
        };
        if two {
            for &k in &self.by_first[b as usize] {
                let (p, id) = &self.pats[k];
                if hay[i..].starts_with(p) {
                    return Some((i, i + p.len(), *id));
                }
            }
            None
        } else {
            self.single[b as usize].map(|id| (i, i + 1, id))
        }
    }

    fn is_empty(&self) -> bool {
        self.pats.is_empty()
    }

    /// The leftmost match at or after `from`, the longest of those starting there.
    fn find(&self, hay: &[u8], from: usize) -> Option<(usize, usize, u32)> {
        if self.pats.is_empty() {
            return None;
        }
        let mut i = from;
        while i < hay.len() {
            let rest = &hay[i..];
            let k = match &self.scan {
                Scan::Bytes => rest.iter().position(|&b| self.first[b as usize]),
                Scan::One(a) => memchr::memchr(*a, rest),
                Scan::Two(a, b) => memchr::memchr2(*a, *b, rest),
                Scan::Three(a, b, c) => memchr::memchr3(*a, *b, *c, rest),
                Scan::Prefix(f) => f.find(rest),
            }?;
            if let Some(m) = self.match_at(hay, i + k) {
                return Some(m);
            }
            i += k + 1;
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Per-thread state: the word cache and scratch buffers.

const CACHE_MAX_ENTRIES: usize = 1 << 17;
const CACHE_MAX_IDS: usize = 1 << 20;
const CACHE_MAX_WORD: usize = 256;
/// Words longer than this are merged with a heap (O(n log n)) instead of rescans (O(n²)).
const SHORT_WORD: usize = 48;
/// How many encoders' states one thread keeps.
const STATES_PER_THREAD: usize = 4;

/// Ids of the pre-tokens seen, by their bytes. Words of at most 15 bytes are keyed by their bytes
/// and length packed in a `u128` (no allocation, one-instruction comparisons). A value is a
/// single id with the top bit set, or the offset (high half) and length (low half) of the ids in
/// `ids`.
struct WordCache {
    short: HashMap<u128, u64, Hasher>,
    long: HashMap<Box<[u8]>, u64, Hasher>,
    ids: Vec<u32>,
}

const SINGLE: u64 = 1 << 63;

#[inline(always)]
fn pack_short(word: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    buf[..word.len()].copy_from_slice(word);
    buf[15] = word.len() as u8;
    u128::from_le_bytes(buf)
}

impl WordCache {
    fn new() -> WordCache {
        WordCache {
            short: HashMap::with_hasher(new_hasher()),
            long: HashMap::with_hasher(new_hasher()),
            ids: Vec::new(),
        }
    }

    /// Appends the cached ids of `word` and returns `true`, or returns `false`.
    #[inline(always)]
    fn get(&self, word: &[u8], out: &mut Vec<u32>) -> bool {
        let v = if word.len() <= 15 {
            self.short.get(&pack_short(word))
        } else {
            self.long.get(word)
        };
        match v {
            Some(&v) if v & SINGLE != 0 => out.push(v as u32),
            Some(&v) => {
                let (off, len) = ((v >> 32) as usize, (v & 0xFFFF_FFFF) as usize);
                out.extend_from_slice(&self.ids[off..off + len]);
            }
            None => return false,
        }
        true
    }

    fn insert(&mut self, word: &[u8], ids: &[u32]) {
        if word.len() > CACHE_MAX_WORD {
            return;
        }
        if self.short.len() + self.long.len() >= CACHE_MAX_ENTRIES
            || self.ids.len() >= CACHE_MAX_IDS
        {
            self.short.clear();
            self.long.clear();
            self.ids.clear();
        }
        let v = if ids.len() == 1 {
            SINGLE | ids[0] as u64
        } else {
            let v = (self.ids.len() as u64) << 32 | ids.len() as u64;
            self.ids.extend_from_slice(ids);
            v
        };
        if word.len() <= 15 {
            self.short.insert(pack_short(word), v);
        } else {
            self.long.insert(word.into(), v);
        }
    }
}

struct State {
    owner: u64,
    cache: WordCache,
    syms: Vec<u32>,
    ranks: Vec<u64>,
    prefixed: Vec<u8>,
}

impl State {
    fn new(owner: u64) -> State {
        State {
            owner,
            cache: WordCache::new(),
            syms: Vec::new(),
            ranks: Vec::new(),
            prefixed: Vec::new(),
        }
    }
}

thread_local! {
    static STATES: RefCell<Vec<State>> = const { RefCell::new(Vec::new()) };
}

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

// ---------------------------------------------------------------------------------------------

/// A fast, exact encoder for one supported byte-level BPE `tokenizer.json`.
pub struct FastBpe {
    owner: u64,
    classes: &'static CharClasses,
    /// Vocabulary id of the byte-level character of each byte (`MISSING` for bytes that UTF-8
    /// never uses and the vocabulary lacks).
    byte_ids: [u32; 256],
    /// Bytes UTF-8 uses that the vocabulary lacks, if any: texts with them fall back.
    missing_bytes: Option<[bool; 256]>,
    /// `(left id << 32 | right id)` → `(rank << 32 | merged id)`.
    merges: HashMap<u64, u64, Hasher>,
    /// With `ignore_merges`: vocabulary entries made of byte-level characters, by their bytes.
    whole_words: Option<HashMap<Box<[u8]>, u32, Hasher>>,
    add_prefix_space: bool,
    nfc: bool,
    /// Added tokens matched on the raw text (`normalized: false`).
    raw_tokens: Patterns,
    /// Added tokens matched on normalized pieces (`normalized: true`), in normalized form.
    normalized_tokens: Patterns,
    /// Added tokens this encoder does not reproduce (lstrip/rstrip/single_word): texts containing
    /// them fall back.
    unsupported_tokens: Patterns,
    /// Added tokens (content, id), for [`FastBpe::agrees_with`].
    added: Vec<(String, u32)>,
}

impl std::fmt::Debug for FastBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastBpe")
            .field("merges", &self.merges.len())
            .field("ignore_merges", &self.whole_words.is_some())
            .field("add_prefix_space", &self.add_prefix_space)
            .field("nfc", &self.nfc)
            .field("added_tokens", &self.added.len())
            .finish()
    }
}

fn get_bool(v: &Value, key: &str, default: Option<bool>) -> Result<bool, String> {
    match v.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        None | Some(Value::Null) => default.ok_or_else(|| format!("`{key}` is missing")),
        Some(other) => Err(format!("`{key}` is not a boolean: {other}")),
    }
}

fn is_null_or_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

impl FastBpe {
    /// Builds the encoder of a `tokenizer.json`; `None` when its configuration is not one this
    /// module reproduces exactly.
    pub fn from_json(bytes: &[u8]) -> Option<FastBpe> {
        Self::try_from_json(bytes).ok()
    }

    /// Like [`FastBpe::from_json`], with the reason a configuration is not supported.
    pub fn try_from_json(bytes: &[u8]) -> Result<FastBpe, String> {
        let classes = CLASSES
            .as_ref()
            .ok_or("the regex-syntax character classes are not as expected")?;
        let root: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        for key in ["truncation", "padding"] {
            if !matches!(root.get(key), None | Some(Value::Null)) {
                return Err(format!("`{key}` is set"));
            }
        }
        let nfc = match root.get("normalizer") {
            None | Some(Value::Null) => false,
            Some(n) if type_of(n) == Some("NFC") => true,
            Some(n) => return Err(format!("unsupported normalizer {:?}", type_of(n))),
        };
        let pre = match root.get("pre_tokenizer") {
            Some(p) if type_of(p) == Some("ByteLevel") => p,
            Some(p) if type_of(p) == Some("Sequence") => match p.get("pretokenizers") {
                Some(Value::Array(list))
                    if list.len() == 1 && type_of(&list[0]) == Some("ByteLevel") =>
                {
                    &list[0]
                }
                _ => return Err("unsupported pre-tokenizer sequence".into()),
            },
            _ => return Err("the pre-tokenizer is not ByteLevel".into()),
        };
        let add_prefix_space = get_bool(pre, "add_prefix_space", None)?;
        if !get_bool(pre, "use_regex", Some(true))? {
            return Err("ByteLevel without use_regex".into());
        }
        match root.get("post_processor") {
            None | Some(Value::Null) => {}
            Some(p) if type_of(p) == Some("ByteLevel") => {}
            Some(p) => return Err(format!("unsupported post-processor {:?}", type_of(p))),
        }

        let model = root.get("model").ok_or("no model")?;
        if type_of(model) != Some("BPE") {
            return Err("the model is not BPE".into());
        }
        match model.get("dropout") {
            None | Some(Value::Null) => {}
            Some(Value::Number(x)) if x.as_f64() == Some(0.0) => {}
            Some(d) => return Err(format!("dropout {d}")),
        }
        if get_bool(model, "byte_fallback", Some(false))? {
            return Err("byte_fallback".into());
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if !is_null_or_empty(model.get(key)) {
                return Err(format!("`{key}` is set"));
            }
        }
        let ignore_merges = get_bool(model, "ignore_merges", Some(false))?;

        // Vocabulary.
        let Some(Value::Object(vocab_json)) = model.get("vocab") else {
            return Err("no vocabulary".into());
        };
        let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(vocab_json.len());
        let mut seen_ids = std::collections::HashSet::with_capacity(vocab_json.len());
        for (token, id) in vocab_json {
            let id = id
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .filter(|&x| x != MISSING)
                .ok_or_else(|| format!("bad id for {token:?}"))?;
            if !seen_ids.insert(id) {
                return Err(format!("id {id} is given to two tokens"));
            }
            vocab.insert(token.as_str(), id);
        }
        // Bytes that never occur in UTF-8 (C0, C1, F5..FF) may be missing; texts with another
        // missing byte fall back (`tokenizers` would give them the unknown token, or fail).
        let mut byte_ids = [MISSING; 256];
        let mut char_byte: HashMap<char, u8> = HashMap::with_capacity(256);
        let mut missing_bytes = [false; 256];
        for b in 0..=255u8 {
            let c = byte_char(b);
            char_byte.insert(c, b);
            match vocab.get(c.to_string().as_str()) {
                Some(&id) => byte_ids[b as usize] = id,
                None if matches!(b, 0xC0 | 0xC1 | 0xF5..=0xFF) => {}
                None => missing_bytes[b as usize] = true,
            }
        }
        let missing_bytes = missing_bytes.contains(&true).then_some(missing_bytes);

        // Merges, as `tokenizers` reads them: pairs, or legacy "a b" strings.
        let Some(Value::Array(merges_json)) = model.get("merges") else {
            return Err("no merges".into());
        };
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(merges_json.len());
        fn as_pair(m: &Value) -> Option<(&str, &str)> {
            match m {
                Value::Array(ab) if ab.len() == 2 => Some((ab[0].as_str()?, ab[1].as_str()?)),
                _ => None,
            }
        }
        if merges_json.iter().all(|m| as_pair(m).is_some()) {
            pairs.extend(merges_json.iter().filter_map(as_pair));
        } else {
            for m in merges_json {
                let line = m.as_str().ok_or("merges mix strings and pairs")?;
                if line.starts_with("#version") {
                    continue;
                }
                let mut parts = line.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => pairs.push((a, b)),
                    _ => return Err(format!("bad merge {line:?}")),
                }
            }
        }
        let mut merges: HashMap<u64, u64, Hasher> =
            HashMap::with_capacity_and_hasher(pairs.len(), new_hasher());
        let mut joined = String::new();
        for (rank, (a, b)) in pairs.iter().enumerate() {
            let rank = u32::try_from(rank)
                .ok()
                .filter(|&r| r < u32::MAX)
                .ok_or("too many merges")?;
            let a_id = *vocab
                .get(a)
                .ok_or_else(|| format!("merge token {a:?} unknown"))?;
            let b_id = *vocab
                .get(b)
                .ok_or_else(|| format!("merge token {b:?} unknown"))?;
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let new_id = *vocab
                .get(joined.as_str())
                .ok_or_else(|| format!("merge result {joined:?} unknown"))?;
            // A later duplicate overrides an earlier one, as in `tokenizers`' map.
            merges.insert(pair_key(a_id, b_id), (rank as u64) << 32 | new_id as u64);
        }

        let whole_words = if ignore_merges {
            let mut map = HashMap::with_capacity_and_hasher(vocab.len(), new_hasher());
            'tokens: for (token, &id) in &vocab {
                let mut raw = Vec::with_capacity(token.len());
                for c in token.chars() {
                    match char_byte.get(&c) {
                        Some(&b) => raw.push(b),
                        None => continue 'tokens,
                    }
                }
                map.insert(raw.into_boxed_slice(), id);
            }
            Some(map)
        } else {
            None
        };

        // Added tokens, with the ids `AddedVocabulary::add_tokens` gives them.
        let mut raw_list = Vec::new();
        let mut normalized_list = Vec::new();
        let mut unsupported_list = Vec::new();
        let mut added = Vec::new();
        let mut next_id = u32::try_from(vocab.len()).map_err(|_| "vocabulary too large")?;
        if let Some(list) = root.get("added_tokens") {
            let list = list.as_array().ok_or("added_tokens is not a list")?;
            for t in list {
                let content = t
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or("added token without content")?;
                let single_word = get_bool(t, "single_word", None)?;
                let lstrip = get_bool(t, "lstrip", None)?;
                let rstrip = get_bool(t, "rstrip", None)?;
                let normalized = get_bool(t, "normalized", None)?;
                if content.is_empty() {
                    continue;
                }
                if added.iter().any(|(c, _)| c == content) {
                    return Err(format!("added token {content:?} is listed twice"));
                }
                let id = match vocab.get(content) {
                    Some(&id) => id,
                    None => {
                        let id = next_id;
                        next_id = next_id.checked_add(1).ok_or("too many ids")?;
                        id
                    }
                };
                added.push((content.to_string(), id));
                let pattern: Vec<u8> = if normalized && nfc {
                    content
                        .nfc()
                        .map(|(c, _)| c)
                        .collect::<String>()
                        .into_bytes()
                } else {
                    content.as_bytes().to_vec()
                };
                if single_word || lstrip || rstrip {
                    unsupported_list.push((content.as_bytes().to_vec(), id));
                    unsupported_list.push((pattern, id));
                } else if normalized {
                    normalized_list.push((pattern, id));
                } else {
                    raw_list.push((pattern, id));
                }
            }
        }

        Ok(FastBpe {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            classes,
            byte_ids,
            missing_bytes,
            merges,
            whole_words,
            add_prefix_space,
            nfc,
            raw_tokens: Patterns::new(raw_list).ok_or(DUPLICATE)?,
            normalized_tokens: Patterns::new(normalized_list).ok_or(DUPLICATE)?,
            unsupported_tokens: Patterns::new(unsupported_list).ok_or(DUPLICATE)?,
            added,
        })
    }

    /// Whether this encoder and `hf` (loaded from the same file) agree: the ids of the 256 byte
    /// characters and of the added tokens, and the encodings of a few probe texts.
    pub fn agrees_with(&self, hf: &tokenizers::Tokenizer) -> bool {
        for b in 0..=255u8 {
            let id = Some(self.byte_ids[b as usize]).filter(|&id| id != MISSING);
            if hf.token_to_id(&byte_char(b).to_string()) != id {
                return false;
            }
        }
        for (content, id) in &self.added {
            if hf.token_to_id(content) != Some(*id) {
                return false;
            }
        }
        let mut probes: Vec<String> = PROBES.iter().map(|s| s.to_string()).collect();
        for (content, _) in &self.added {
            probes.push(format!("a{content}b {content} \n{content}{content}"));
        }
        let mut ours = Vec::new();
        for probe in &probes {
            ours.clear();
            if !self.encode(probe, &mut ours) {
                continue;
            }
            match hf.encode_fast(probe.as_str(), false) {
                Ok(enc) if enc.get_ids() == ours.as_slice() => {}
                _ => return false,
            }
        }
        true
    }

    /// Appends the token ids of `text` to `out` and returns `true`, or leaves `out` as it was and
    /// returns `false` when this text must be encoded by `tokenizers` instead.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> bool {
        if let Some(missing) = &self.missing_bytes {
            if text.bytes().any(|b| missing[b as usize]) {
                return false;
            }
        }
        if !self.unsupported_tokens.is_empty()
            && self.unsupported_tokens.find(text.as_bytes(), 0).is_some()
        {
            return false;
        }
        let start = out.len();
        let ok = STATES.with(|states| {
            let mut states = states.borrow_mut();
            let k = match states.iter().position(|s| s.owner == self.owner) {
                Some(k) => k,
                None => {
                    if states.len() >= STATES_PER_THREAD {
                        states.remove(0);
                    }
                    states.push(State::new(self.owner));
                    states.len() - 1
                }
            };
            self.encode_raw(text, out, &mut states[k])
        });
        if !ok {
            out.truncate(start);
        }
        ok
    }

    /// Splits out the added tokens matched on the raw text.
    fn encode_raw(&self, text: &str, out: &mut Vec<u32>, st: &mut State) -> bool {
        let bytes = text.as_bytes();
        let mut pos = 0;
        while let Some((s, e, id)) = self.raw_tokens.find(bytes, pos) {
            let Some(piece) = text.get(pos..s) else {
                return false;
            };
            if !self.encode_normalized(piece, out, st) {
                return false;
            }
            out.push(id);
            pos = e;
        }
        match text.get(pos..) {
            Some(rest) => self.encode_normalized(rest, out, st),
            None => false,
        }
    }

    /// Normalizes a piece, then splits out the added tokens matched on normalized text.
    fn encode_normalized(&self, piece: &str, out: &mut Vec<u32>, st: &mut State) -> bool {
        if piece.is_empty() {
            return true;
        }
        if self.nfc && !piece.is_ascii() && !unicode_normalization_alignments::is_nfc(piece) {
            // `tokenizers`' NFC normalizer: the same function of the same crate, whose output
            // characters become the normalized string.
            let normalized: String = piece.nfc().map(|(c, _)| c).collect();
            self.encode_normalized_pieces(normalized.as_bytes(), out, st);
        } else {
            self.encode_normalized_pieces(piece.as_bytes(), out, st);
        }
        true
    }

    fn encode_normalized_pieces(&self, bytes: &[u8], out: &mut Vec<u32>, st: &mut State) {
        let mut pos = 0;
        while let Some((s, e, id)) = self.normalized_tokens.find(bytes, pos) {
            self.encode_plain(&bytes[pos..s], out, st);
            out.push(id);
            pos = e;
        }
        self.encode_plain(&bytes[pos..], out, st);
    }

    /// Pre-tokenizes and encodes a piece of text without added tokens (valid UTF-8).
    fn encode_plain(&self, piece: &[u8], out: &mut Vec<u32>, st: &mut State) {
        if piece.is_empty() {
            return;
        }
        if self.add_prefix_space && piece[0] != b' ' {
            let mut buf = std::mem::take(&mut st.prefixed);
            buf.clear();
            buf.push(b' ');
            buf.extend_from_slice(piece);
            self.encode_pretokens(&buf, out, st);
            st.prefixed = buf;
        } else {
            self.encode_pretokens(piece, out, st);
        }
    }

    fn encode_pretokens(&self, s: &[u8], out: &mut Vec<u32>, st: &mut State) {
        let mut i = 0;
        while i < s.len() {
            let j = self.classes.pretoken_end(s, i);
            self.encode_word(&s[i..j], out, st);
            i = j;
        }
    }

    #[inline(always)]
    fn pair(&self, a: u32, b: u32) -> u64 {
        match self.merges.get(&pair_key(a, b)) {
            Some(&v) => v,
            None => u64::MAX,
        }
    }

    /// Appends the ids of one pre-token.
    #[inline]
    fn encode_word(&self, word: &[u8], out: &mut Vec<u32>, st: &mut State) {
        if let Some(whole) = &self.whole_words {
            if let Some(&id) = whole.get(word) {
                out.push(id);
                return;
            }
        }
        match word.len() {
            0 => {}
            1 => out.push(self.byte_ids[word[0] as usize]),
            2 => {
                let (a, b) = (
                    self.byte_ids[word[0] as usize],
                    self.byte_ids[word[1] as usize],
                );
                match self.pair(a, b) {
                    u64::MAX => out.extend_from_slice(&[a, b]),
                    v => out.push(v as u32),
                }
            }
            _ => {
                if st.cache.get(word, out) {
                    return;
                }
                let first = out.len();
                self.merge_word(word, out, st, word.len() > SHORT_WORD);
                st.cache.insert(word, &out[first..]);
            }
        }
    }

    /// Applies the merges to the bytes of `word`, appending the resulting ids.
    fn merge_word(&self, word: &[u8], out: &mut Vec<u32>, st: &mut State, heap: bool) {
        if heap {
            return self.merge_word_heap(word, out);
        }
        let syms = &mut st.syms;
        let ranks = &mut st.ranks;
        syms.clear();
        syms.extend(word.iter().map(|&b| self.byte_ids[b as usize]));
        ranks.clear();
        ranks.extend(syms.windows(2).map(|w| self.pair(w[0], w[1])));
        loop {
            // The lowest rank, leftmost among equals (ranks identify pairs; the low half of the
            // value is the merged id, equal for equal ranks).
            let mut best = u64::MAX;
            let mut k = 0;
            for (i, &r) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    k = i;
                }
            }
            if best == u64::MAX {
                break;
            }
            syms[k] = best as u32;
            syms.remove(k + 1);
            ranks.remove(k);
            if k > 0 {
                ranks[k - 1] = self.pair(syms[k - 1], syms[k]);
            }
            if k + 1 < syms.len() {
                ranks[k] = self.pair(syms[k], syms[k + 1]);
            }
        }
        out.extend_from_slice(syms);
    }

    /// The same merges with a priority queue, for long words (as `tokenizers` does for all).
    fn merge_word_heap(&self, word: &[u8], out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = word.len();
        let mut ids: Vec<u32> = word.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i > 0 { i - 1 } else { NONE }).collect();
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..n.saturating_sub(1))
            .filter_map(|i| match self.pair(ids[i], ids[i + 1]) {
                u64::MAX => None,
                v => Some(Reverse((v, i))),
            })
            .collect();
        while let Some(Reverse((v, pos))) = heap.pop() {
            if !alive[pos] || next[pos] == NONE {
                continue;
            }
            let right = next[pos];
            if self.pair(ids[pos], ids[right]) != v {
                continue; // stale: the pair at `pos` has changed since
            }
            ids[pos] = v as u32;
            alive[right] = false;
            next[pos] = next[right];
            if next[right] != NONE {
                prev[next[right]] = pos;
            }
            if prev[pos] != NONE {
                let p = prev[pos];
                match self.pair(ids[p], ids[pos]) {
                    u64::MAX => {}
                    w => heap.push(Reverse((w, p))),
                }
            }
            if next[pos] != NONE {
                match self.pair(ids[pos], ids[next[pos]]) {
                    u64::MAX => {}
                    w => heap.push(Reverse((w, pos))),
                }
            }
        }
        let mut i = 0;
        while i != NONE {
            out.push(ids[i]);
            i = next[i];
        }
    }
}

const DUPLICATE: &str = "two added tokens have the same (normalized) content";

/// `byte_ids` of bytes the vocabulary lacks.
const MISSING: u32 = u32::MAX;

#[inline(always)]
fn pair_key(a: u32, b: u32) -> u64 {
    (a as u64) << 32 | b as u64
}

/// Texts every supported tokenizer is checked on when it is loaded.
const PROBES: &[&str] = &[
    "",
    "Hello world! It's a test: don't, we'll, they've, I'm, you'd, THEY'RE 'S.",
    "  leading spaces,\ttabs\t\there, trailing   \n\n  new\r\nlines   ",
    "numbers 1234567890 3.14159 1,000,000 ½ ² ٣ and punctuation!!! ...??? (a) [b] {c}",
    "unicode: café naïve Ελληνικά русский 中文字符 日本語 한국어 हिन्दी العربية עברית 🦀🎉👍🏽",
    "spaces\u{a0}nbsp\u{2003}em\u{3000}ideographic \u{200b}zwsp\u{85}nel",
    "code: fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); }  // comment",
    "<|endoftext|> special <|endoftext|><|endoftext|>",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture_json() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tokenizer.json");
        serde_json::from_slice(&std::fs::read(path).expect("read fixture")).expect("parse")
    }

    /// Variants of the fixture tokenizer that exercise every supported option.
    fn variants() -> Vec<(&'static str, Vec<u8>)> {
        let base = fixture_json();
        let mut out = vec![("fixture", serde_json::to_vec(&base).expect("json"))];

        let mut v = base.clone();
        v["pre_tokenizer"]["add_prefix_space"] = Value::Bool(false);
        out.push(("no-prefix", serde_json::to_vec(&v).expect("json")));

        let mut v = base.clone();
        v["pre_tokenizer"]["add_prefix_space"] = Value::Bool(false);
        v["normalizer"] = serde_json::json!({"type": "NFC"});
        let added = v["added_tokens"].as_array_mut().expect("added");
        let tok = |content: &str, normalized: bool, lstrip: bool| {
            serde_json::json!({"id": 0, "content": content, "single_word": false,
                "lstrip": lstrip, "rstrip": false, "normalized": normalized, "special": false})
        };
        added.push(tok("  ", true, false));
        added.push(tok("   ", true, false));
        added.push(tok("    ", true, false));
        added.push(tok("<|pad|>", false, false));
        added.push(tok("e\u{301}x", true, false)); // normalized form "éx"
        added.push(tok("the", true, false)); // in the vocabulary
        added.push(tok("[MASK]", false, true)); // lstrip: texts with it fall back
        out.push(("nfc-added", serde_json::to_vec(&v).expect("json")));

        let mut v = base.clone();
        v["model"]["ignore_merges"] = Value::Bool(true);
        v["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}]});
        out.push(("ignore-merges", serde_json::to_vec(&v).expect("json")));

        // A vocabulary without the character of byte F2 (no merge uses it).
        let mut v = base.clone();
        let f2 = byte_char(0xF2).to_string();
        v["model"]["vocab"]
            .as_object_mut()
            .expect("vocab")
            .remove(&f2);
        out.push(("missing-byte", serde_json::to_vec(&v).expect("json")));

        let mut v = base;
        let merges: Vec<Value> = v["model"]["merges"]
            .as_array()
            .expect("merges")
            .iter()
            .map(|m| {
                Value::String(format!(
                    "{} {}",
                    m[0].as_str().expect("a"),
                    m[1].as_str().expect("b")
                ))
            })
            .collect();
        v["model"]["merges"] = Value::Array(merges);
        v["model"]["continuing_subword_prefix"] = Value::String(String::new());
        out.push(("legacy-merges", serde_json::to_vec(&v).expect("json")));
        out
    }

    struct Pair {
        name: &'static str,
        hf: tokenizers::Tokenizer,
        fast: FastBpe,
    }

    fn pairs() -> &'static [Pair] {
        static PAIRS: LazyLock<Vec<Pair>> = LazyLock::new(|| {
            variants()
                .into_iter()
                .map(|(name, json)| {
                    let hf = tokenizers::Tokenizer::from_bytes(&json).expect("hf loads");
                    let fast = FastBpe::try_from_json(&json)
                        .unwrap_or_else(|e| panic!("{name}: unsupported: {e}"));
                    assert!(fast.agrees_with(&hf), "{name}: disagrees with tokenizers");
                    Pair { name, hf, fast }
                })
                .collect()
        });
        &PAIRS
    }

    /// Compares with `tokenizers`; returns whether the fast path encoded the text.
    fn check(p: &Pair, text: &str) -> bool {
        let mut ours = vec![7u32];
        let ok = p.fast.encode(text, &mut ours);
        if !ok {
            assert_eq!(
                ours,
                [7],
                "{}: a refused text must leave the output alone",
                p.name
            );
            return false;
        }
        let want = p.hf.encode_fast(text, false).expect("hf encodes");
        assert_eq!(&ours[1..], want.get_ids(), "{}: text {text:?}", p.name);
        true
    }

    const PIECES: &[&str] = &[
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        "\n\n",
        " \n ",
        "\u{a0}",
        "\u{2003}",
        "\u{3000}",
        "\u{85}",
        "\u{200b}",
        "\u{feff}",
        "\u{1680}",
        "\u{2028}",
        "\x0b",
        "\x0c",
        "\x1c",
        "don't",
        "'S",
        "'s",
        "'t",
        "'re",
        "'ve",
        "'m",
        "'ll",
        "'d",
        "''",
        "'",
        "'x",
        " 's",
        "hello",
        "Hello",
        "the",
        "cat",
        "sat",
        "ther",
        "a",
        "b",
        "x",
        "abcabcabc",
        "zzzzzz",
        "eee",
        "eeeee",
        "lll",
        "sss",
        "ooo",
        "ttt",
        "aaaa",
        "ssss",
        "essesse",
        "!!!!",
        "----",
        "....",
        "veveve",
        "vevevev",
        "aldaldald",
        "xanxanxan",
        "quiquiqui",
        "tiriwe",
        "Ġ",
        "0",
        "42",
        "1234567890",
        "3.14",
        "½",
        "²",
        "٣",
        "Ⅻ",
        "!",
        "...",
        "?!",
        "---",
        "===",
        "(",
        ")",
        "{}",
        "<",
        ">",
        "|",
        "<|",
        "|>",
        "$",
        "€",
        "🦀",
        "👍🏽",
        "🎉🎉",
        "👨‍👩‍👧",
        "中文",
        "日本語",
        "한국어",
        "Ελληνικά",
        "русский",
        "é",
        "e\u{301}",
        "\u{301}",
        "a\u{308}",
        "ñ",
        "n\u{303}",
        "Å",
        "Ω",
        "ﬁ",
        "हिन्दी",
        "नमस्ते",
        "العربية",
        "עברית",
        "\u{200f}",
        "\u{202e}",
        "<|endoftext|>",
        "<|pad|>",
        "éx",
        "[MASK]",
        "\u{10ffff}",
        "\u{1d400}",
        "𝟘",
    ];

    #[test]
    fn fast_bpe_tricky_strings() {
        let mut texts: Vec<String> = PROBES.iter().map(|s| s.to_string()).collect();
        texts.extend(PIECES.iter().map(|s| s.to_string()));
        for a in PIECES {
            for b in ["", " ", "  ", "\n", "x", "'s", "1", "!", "é", "\u{301}"] {
                texts.push(format!("{a}{b}"));
                texts.push(format!("{b}{a}{b}"));
                texts.push(format!("word{b}{a}{a}{b}end"));
            }
        }
        texts.extend(
            [
                "a  b",
                "a \n b",
                "a\n\nb",
                "a \t b",
                "trailing   ",
                "   ",
                " ",
                "\n",
                "x\u{a0}\u{a0}y",
                "x \u{a0}y",
                "x\u{a0} y",
                "\u{3000}\u{3000}漢",
                "tab\t\tx",
                " \t\n\r x",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        texts.push("x".repeat(1000));
        texts.push("ab".repeat(700));
        texts.push(" ".repeat(300) + "y");
        for p in pairs() {
            let mut encoded = 0;
            for t in &texts {
                encoded += check(p, t) as usize;
            }
            // The fast path must carry nearly everything (only NFC changes and [MASK] fall back).
            assert!(
                encoded * 10 >= texts.len() * 8,
                "{}: only {encoded}/{} encoded",
                p.name,
                texts.len()
            );
        }
    }

    #[test]
    fn fast_bpe_fallbacks() {
        let p = pairs()
            .iter()
            .find(|p| p.name == "nfc-added")
            .expect("variant");
        for text in ["a [MASK] b", "[MASK]"] {
            assert!(!check(p, text), "{text:?} should fall back");
        }
        for text in [
            "café",
            "cafe\u{301}",
            "a  b<|pad|>c éx",
            "e\u{301}x",
            "<|pad|>e\u{301}x",
            "x\u{212b}",
            "x\u{c5}",
            "\u{1100}\u{1161}\u{11a8}",
            "a\u{315}\u{300}\u{5ae}\u{300}b",
            "",
        ] {
            assert!(check(p, text), "{text:?} should not fall back");
        }
        let plain = pairs()
            .iter()
            .find(|p| p.name == "fixture")
            .expect("variant");
        assert!(check(plain, "cafe\u{301} [MASK]"));
        let holes = pairs()
            .iter()
            .find(|p| p.name == "missing-byte")
            .expect("variant");
        assert!(
            !check(holes, "a \u{80000} b"),
            "a byte outside the vocabulary"
        );
        assert!(check(holes, "a \u{10000} b"));
    }

    #[test]
    fn fast_bpe_pretokens_match_byte_level_regex() {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let classes = CLASSES.as_ref().expect("classes");
        let bl = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
        let mut texts: Vec<String> = PIECES.iter().map(|s| s.to_string()).collect();
        for a in PIECES {
            for b in PIECES.iter().step_by(3) {
                texts.push(format!("{a}{b}{a}"));
            }
        }
        for t in &texts {
            let mut pts = PreTokenizedString::from(t.as_str());
            bl.pre_tokenize(&mut pts).expect("pre-tokenize");
            let want: Vec<(usize, usize)> = pts
                .get_splits(OffsetReferential::Original, OffsetType::Byte)
                .into_iter()
                .map(|(_, o, _)| o)
                .collect();
            let mut got = Vec::new();
            let mut i = 0;
            while i < t.len() {
                let j = classes.pretoken_end(t.as_bytes(), i);
                got.push((i, j));
                i = j;
            }
            assert_eq!(got, want, "{t:?}");
        }
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => proptest::sample::select(PIECES).prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
            1 => "[a-z ]{1,12}",
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn fast_bpe_matches_tokenizers(text in text_strategy()) {
            for p in pairs() {
                check(p, &text);
            }
        }

        #[test]
        fn fast_bpe_added_token_matcher_is_leftmost_longest(
            pats in proptest::collection::btree_set("[abc ]{1,4}", 1..7),
            hay in "[abcd ]{0,40}",
        ) {
            let list: Vec<(Vec<u8>, u32)> =
                pats.iter().enumerate().map(|(k, p)| (p.as_bytes().to_vec(), k as u32)).collect();
            let set = Patterns::new(list.clone()).expect("distinct patterns");
            let hay = hay.as_bytes();
            let mut from = 0;
            loop {
                // Naive: the first position with a match, the longest match there.
                let naive = (from..hay.len()).find_map(|i| {
                    list.iter()
                        .filter(|(p, _)| hay[i..].starts_with(p))
                        .max_by_key(|(p, _)| p.len())
                        .map(|(p, id)| (i, i + p.len(), *id))
                });
                let got = set.find(hay, from);
                prop_assert_eq!(got, naive);
                match got {
                    Some((_, e, _)) => from = e,
                    None => break,
                }
            }
        }

        #[test]
        fn fast_bpe_heap_merge_matches_scan_merge(word in "(ve|ald|xan|qui|tiriwe|[a-z ]){2,30}|[ -~]{2,40}") {
            let p = &pairs()[0];
            let mut st = State::new(0);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            p.fast.merge_word(word.as_bytes(), &mut a, &mut st, false);
            p.fast.merge_word(word.as_bytes(), &mut b, &mut st, true);
            prop_assert_eq!(a, b);
        }
    }
}

//! A Hugging Face `tokenizer.json`, loaded offline, with the hash that ties an index to it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fast_bpe::FastBpe;
use crate::token::TokenWidth;

/// The largest `tokenizer.json` read (the largest published ones are tens of megabytes).
pub const MAX_TOKENIZER_BYTES: u64 = 1 << 30;

/// A loaded tokenizer.
///
/// Byte-level BPE tokenizers (GPT-2, GPT-NeoX/Pythia, ...) are encoded by [`FastBpe`], which gives
/// the same ids as `tokenizers` several times faster; texts (or tokenizers) it cannot reproduce
/// exactly go through `tokenizers`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    fast: Option<FastBpe>,
    path: PathBuf,
    hash: String,
    vocab_size: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .field("vocab_size", &self.vocab_size)
            .field("fast_path", &self.fast.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes = Tokenizer::read_file(path)?;
        Tokenizer::from_bytes(&bytes, path)
    }

    /// The bytes of a `tokenizer.json`: a regular file (after following symbolic links) of at
    /// most [`MAX_TOKENIZER_BYTES`]; a FIFO or device in its place is an error, not a hang.
    pub fn read_file(path: &Path) -> Result<Vec<u8>> {
        crate::manifest::read_regular(path, MAX_TOKENIZER_BYTES)
    }

    /// Loads a `tokenizer.json` from its bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
        let invalid = |e: &dyn std::fmt::Display| Error::Tokenizer {
            path: path.to_path_buf(),
            reason: format!("not a valid Hugging Face tokenizer.json: {e}"),
        };
        // tokenizers 0.23 panics (instead of failing) on a JSON syntax error inside some sections,
        // e.g. `{"decoder":-}`, an invalid string included (`{"decoder":"\ud800"}`): check the
        // syntax first, then the BPE merges it would slice out of bounds, and keep any other
        // panic of theirs from taking the process down with it.
        crate::json::check(bytes).map_err(|e| invalid(&e))?;
        check_merges(bytes).map_err(|e| invalid(&e))?;
        let inner = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(|_| invalid(&"the tokenizers library failed on it"))?
            .map_err(|e| invalid(&e))?;
        // The largest id in the vocabulary (added tokens included) + 1: ids may be sparse.
        let max_id = inner.get_vocab(true).values().copied().max();
        let vocab_size = match max_id {
            Some(m) => m.checked_add(1).ok_or_else(|| Error::Tokenizer {
                path: path.to_path_buf(),
                reason: "a token id is u32::MAX; no id is left for the document separator".into(),
            })?,
            None => {
                return Err(Error::Tokenizer {
                    path: path.to_path_buf(),
                    reason: "the vocabulary is empty".into(),
                })
            }
        };
        if vocab_size >= i32::MAX as u32 {
            return Err(Error::Tokenizer {
                path: path.to_path_buf(),
                reason: format!("vocabulary of {vocab_size} ids is too large (at most 2^31 - 2)"),
            });
        }
        // The fast encoder, only where it supports this configuration and agrees with `tokenizers`.
        // (The comparison runs tokenizers on probe texts: a panic there means no fast path, and
        // `encode` reports the failure on the texts that cause it.)
        let fast = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            FastBpe::from_json(bytes).filter(|f| f.agrees_with(&inner))
        }))
        .unwrap_or(None);
        Ok(Tokenizer {
            inner,
            fast,
            path: path.to_path_buf(),
            hash: crate::checksum::of_bytes(bytes),
            vocab_size,
        })
    }

    /// `xxh3:<hex>` of the tokenizer.json bytes.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Largest token id + 1. The document separator takes this id.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Storage width of token ids for this vocabulary.
    pub fn token_width(&self) -> TokenWidth {
        TokenWidth::for_vocab(self.vocab_size)
    }

    /// Whether [`Tokenizer::encode`] uses the fast byte-level BPE encoder (falling back to
    /// `tokenizers` only for the rare texts it cannot reproduce exactly).
    pub fn uses_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Token ids of `text`, without special tokens (no BOS/EOS added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(fast) = &self.fast {
            let mut ids = Vec::with_capacity(text.len() / 4 + 8);
            if fast.encode(text, &mut ids) {
                return Ok(ids);
            }
        }
        let enc = self
            .guarded("encoding", || self.inner.encode_fast(text, false))?
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("encoding failed: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with each token's character range in `text` (`start..end`, in
    /// `char`s), by `tokenizers` itself (the ids are those of [`Tokenizer::encode`]). A token that
    /// holds part of a character (byte-level BPE splits some) has that character's range.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Vec<(u32, (usize, usize))>> {
        let enc = self
            .guarded("encoding", || self.inner.encode_char_offsets(text, false))?
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("encoding failed: {e}"),
            })?;
        Ok(enc
            .get_ids()
            .iter()
            .copied()
            .zip(enc.get_offsets().iter().copied())
            .collect())
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.guarded("decoding", || self.inner.decode(ids, false))?
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("decoding failed: {e}"),
            })
    }

    /// Runs a call into `tokenizers`, turning a panic of theirs into an error: some valid
    /// configurations panic on some inputs (a `Strip` decoder whose `stop` exceeds a decoded
    /// token's length, tokenizers 0.23.2 `decoders/strip.rs`).
    fn guarded<T>(&self, what: &str, call: impl FnOnce() -> T) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|_| Error::Tokenizer {
            path: self.path.clone(),
            reason: format!(
                "{what} failed: the tokenizers library panicked on this input \
                     (a configuration it does not handle)"
            ),
        })
    }

    /// The string of one token id, if the vocabulary has it.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Checks the merges of a BPE model the way tokenizers 0.23 uses them, where it would panic
/// instead of failing (found by the `tokenizer_json` fuzz target): it copies each merge
/// `(a, b)` into a buffer as long as the longest vocabulary entry, as `a` followed by `b` without
/// its first `continuing_subword_prefix.len()` bytes. A merge whose result is not in the
/// vocabulary, or whose `b` is shorter than the prefix or cut inside a character, is an error
/// here. Merges naming tokens outside the vocabulary are left to tokenizers' own error.
fn check_merges(bytes: &[u8]) -> std::result::Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        model: Option<Model>,
    }
    #[derive(serde::Deserialize)]
    struct Model {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
        vocab: Option<serde_json::Value>,
        merges: Option<Vec<serde_json::Value>>,
        continuing_subword_prefix: Option<serde_json::Value>,
    }
    // Anything of another shape is for tokenizers to accept or refuse.
    let Ok(Doc { model: Some(model) }) = serde_json::from_slice::<Doc>(bytes) else {
        return Ok(());
    };
    if model.kind.as_ref().is_some_and(|k| k != "BPE") {
        return Ok(());
    }
    let (Some(serde_json::Value::Object(vocab)), Some(merges)) = (&model.vocab, &model.merges)
    else {
        return Ok(());
    };
    let prefix_len = match &model.continuing_subword_prefix {
        Some(serde_json::Value::String(p)) => p.len(),
        _ => 0,
    };
    for (i, merge) in merges.iter().enumerate() {
        let (a, b) = match merge {
            serde_json::Value::Array(pair) => match pair.as_slice() {
                [serde_json::Value::String(a), serde_json::Value::String(b)] => {
                    (a.as_str(), b.as_str())
                }
                _ => continue,
            },
            serde_json::Value::String(line) => {
                let mut parts = line.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => (a, b),
                    _ => continue,
                }
            }
            _ => continue,
        };
        if !vocab.contains_key(a) || !vocab.contains_key(b) {
            continue;
        }
        let Some(rest) = b.get(prefix_len..) else {
            return Err(format!(
                "merge {i} ({a:?}, {b:?}): the right part does not start with a \
                 {prefix_len}-byte continuing_subword_prefix"
            ));
        };
        let merged = format!("{a}{rest}");
        if !vocab.contains_key(&merged) {
            return Err(format!(
                "merge {i} ({a:?}, {b:?}): the merged token {merged:?} is not in the vocabulary"
            ));
        }
    }
    Ok(())
}

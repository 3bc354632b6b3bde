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
        // e.g. `{"decoder":-}`: check the syntax first, and keep any other panic of theirs from
        // taking the process down with it.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| invalid(&e))?;
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
        let fast = FastBpe::from_json(bytes).filter(|f| f.agrees_with(&inner));
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
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("encoding failed: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            reason: format!("decoding failed: {e}"),
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

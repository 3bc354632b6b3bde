//! A Hugging Face `tokenizer.json`, loaded offline, with the hash that ties an index to it.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::token::TokenWidth;

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
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
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).at(path)?;
        Tokenizer::from_bytes(&bytes, path)
    }

    /// Loads a `tokenizer.json` from its bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            reason: format!("not a valid Hugging Face tokenizer.json: {e}"),
        })?;
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
        Ok(Tokenizer {
            inner,
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

    /// Token ids of `text`, without special tokens (no BOS/EOS added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
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

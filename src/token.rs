//! Token ids and the token file.
//!
//! A shard stores its token ids as `u16` when the vocabulary (plus the separator) fits, else `u32`.
//! Every algorithm is written once, generic over [`Token`]; [`TokenWidth`] picks the instance at run
//! time, once per shard.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{FileKind, Header, HEADER_LEN};

/// A token id type stored in an index: `u16` or `u32`.
pub trait Token:
    Copy + Ord + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + bytemuck::Pod + 'static
{
    /// Bytes per token (the header records bits: `8 × WIDTH`).
    const WIDTH: u32;
    /// Converts from a `u32` id, or `None` if it does not fit.
    fn from_u32(id: u32) -> Option<Self>;
    /// Widens to `u32`.
    fn to_u32(self) -> u32;
}

impl Token for u16 {
    const WIDTH: u32 = 2;
    fn from_u32(id: u32) -> Option<Self> {
        u16::try_from(id).ok()
    }
    fn to_u32(self) -> u32 {
        u32::from(self)
    }
}

impl Token for u32 {
    const WIDTH: u32 = 4;
    fn from_u32(id: u32) -> Option<Self> {
        Some(id)
    }
    fn to_u32(self) -> u32 {
        self
    }
}

/// The storage width of an index's token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    /// Two bytes per token.
    U16,
    /// Four bytes per token.
    U32,
}

impl TokenWidth {
    /// The narrowest width for a vocabulary of `vocab_size` ids plus the separator, which takes id
    /// `vocab_size`.
    pub fn for_vocab(vocab_size: u32) -> TokenWidth {
        if vocab_size <= u32::from(u16::MAX) {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    /// Bytes per token.
    pub fn bytes(self) -> u32 {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }
}

/// A token file: the shard's token ids, each document followed by the separator id.
///
/// Generic over its bytes (an mmap, a `Vec<u8>`): the data must start 2- or 4-byte aligned, which a
/// memory map or a vector of the whole file is.
#[derive(Debug)]
pub struct TokenText<D, T> {
    data: D,
    header: Header,
    _token: std::marker::PhantomData<T>,
}

impl<D: AsRef<[u8]>, T: Token> TokenText<D, T> {
    /// Opens a token file's bytes, checking the header and the alignment.
    pub fn new(data: D, path: &Path) -> Result<Self> {
        let header = Header::parse(data.as_ref(), FileKind::Tokens, path)?;
        if header.width != T::WIDTH * 8 {
            return Err(Error::corrupt(
                path,
                format!(
                    "token width {} bits in the header, but the manifest says {}",
                    header.width,
                    T::WIDTH * 8
                ),
            ));
        }
        let body = &data.as_ref()[HEADER_LEN..];
        if bytemuck::try_cast_slice::<u8, T>(body).is_err() {
            return Err(Error::Bug(format!(
                "{}: token data is not aligned in memory",
                path.display()
            )));
        }
        Ok(TokenText {
            data,
            header,
            _token: std::marker::PhantomData,
        })
    }

    /// The token ids.
    #[inline]
    pub fn tokens(&self) -> &[T] {
        // Checked in `new`: the body casts.
        bytemuck::cast_slice(&self.data.as_ref()[HEADER_LEN..])
    }

    /// The storage (e.g. the memory map, to advise the kernel about it).
    pub fn data(&self) -> &D {
        &self.data
    }

    /// The separator id that ends each document.
    pub fn separator(&self) -> u64 {
        self.header.aux0
    }

    /// The vocabulary size recorded in the header.
    pub fn vocab_size(&self) -> u64 {
        self.header.aux1
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }
}

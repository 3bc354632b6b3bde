//! # familiar
//!
//! The shared library of familiar, an engine for pretraining-data research: it indexes tokenized
//! training corpora and answers "how often did the model see this?".
//!
//! This crate holds what the builder and the queries share:
//! - [`index::Index`]: an open, memory-mapped index (shards of tokens, suffix array, document offsets)
//!   with [`index::ShardView::range`], the suffix-array search every count is made of;
//! - [`format`]: the versioned, checksummed binary file format, and [`manifest`]: the JSON manifests;
//! - [`corpus`]: streaming readers for JSONL (plain/zstd/gzip), Parquet and text corpora;
//! - [`tokenizer::Tokenizer`]: a Hugging Face `tokenizer.json`, with the hash that ties an index to it;
//! - [`schema`]: the Arrow schemas of every table, from `schemas/`.
//!
//! ```no_run
//! # fn main() -> familiar::Result<()> {
//! let index = familiar::index::Index::open("my-index")?;
//! let ids = index.tokenizer()?.encode(" the cat")?;
//! let mut total = 0;
//! for shard in index.shards() {
//!     total += familiar::with_view!(shard, |view| {
//!         let pattern: Vec<_> = ids.iter().map(|&i| familiar::token::Token::from_u32(i).unwrap()).collect();
//!         let (lo, hi) = view.range(&pattern)?;
//!         hi - lo
//!     });
//! }
//! println!("{total}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("familiar's index files are little-endian and read in place; big-endian hosts are not supported");

pub mod checksum;
pub mod corpus;
pub mod error;
pub mod fast_bpe;
pub mod format;
pub mod index;
pub mod input;
pub mod items;
pub mod json;
pub mod lock;
pub mod manifest;
pub mod memory;
pub mod option;
pub mod rng;
pub mod rundir;
pub mod schema;
pub mod stats;
pub mod table;
pub mod token;
pub mod tokenizer;

pub use error::{Error, Result};

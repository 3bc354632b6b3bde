//! # familiar-query
//!
//! Queries over a familiar index: exact n-gram counts, occurrences, next-token distributions and
//! CNF document queries ([`ngram`]), concept counts over the suffix arrays and the text indexes
//! and word lookups ([`concepts`]), documents by id ([`docs`]) and index verification
//! ([`verify`]). The `familiar` command-line program that calls them is `familiar-cli`.
//!
//! ```no_run
//! let index = familiar::index::Index::open("my-index")?;
//! let ids = index.tokenizer()?.encode(" the cat")?;
//! println!("{}", familiar_query::ngram::count(&index, &ids)?);
//! # Ok::<(), familiar::Error>(())
//! ```
#![warn(missing_docs)]

pub mod concepts;
pub mod contamination;
pub mod docs;
pub mod duplicates;
pub mod infgram;
pub mod ngram;
mod runs;
#[doc(hidden)]
pub use runs::set_pieces_per_shard;
pub mod top;
pub mod trace;
pub mod verify;

//! # familiar-query
//!
//! Everything that reads a familiar index: exact n-gram counts, occurrences, next-token
//! distributions and CNF document queries ([`ngram`]), documents by id ([`docs`]), index
//! verification ([`verify`]) and result tables ([`output`]); plus the `familiar` command-line
//! program.
//!
//! ```no_run
//! let index = familiar::index::Index::open("my-index")?;
//! let ids = index.tokenizer()?.encode(" the cat")?;
//! println!("{}", familiar_query::ngram::count(&index, &ids)?);
//! # Ok::<(), familiar::Error>(())
//! ```
#![warn(missing_docs)]

pub mod concepts;
pub mod docs;
pub mod ngram;
pub mod verify;

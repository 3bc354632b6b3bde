//! # familiar-index-builder
//!
//! The offline index build: corpus shards (JSONL, JSONL.zst/.gz, Parquet, text) are tokenized with a
//! Hugging Face tokenizer into shards of token ids with exact suffix arrays, resumably and
//! atomically. Start at [`build::build`] with [`build::BuildOptions`] ([`build::build_with_progress`]
//! reports [`build::BuildEvent`]s as it goes).
//!
//! ```no_run
//! use familiar_index_builder::build::{build, BuildOptions};
//! let options = BuildOptions::new("tokenizer.json", "my-index", vec!["corpus/".into()]);
//! let report = build(&options)?;
//! println!("{} documents, {} tokens", report.documents, report.tokens);
//! # Ok::<(), familiar::Error>(())
//! ```
#![warn(missing_docs)]

pub mod build;
pub mod documents;
pub mod fixtures;
pub mod memory;
pub mod sa;

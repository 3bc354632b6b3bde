//! # familiar-models
//!
//! The models side of familiar, in candle:
//! - [`model`]: decoder transformers (GPT-2, GPT-NeoX/Pythia, Llama-family) loaded from a Hugging
//!   Face checkpoint directory (`config.json` + safetensors), with checks that every weight is
//!   finite and every shard lies inside the model directory;
//! - [`grads`]: per-example gradients of the linear layers, projected (LoGra-style Kronecker
//!   projections), the on-disk gradient store, its preconditioners, and [`grads::build`], which
//!   fills a store from an index;
//! - [`train`]: training small GPT-2-style models on an index (AdamW, checkpoints, resume);
//! - [`measure`]: what a model does on items — zero-shot scores, keyword probabilities,
//!   activation density — and zero-shot results measured elsewhere ([`measure::import`]);
//! - [`attribute`]: gradient-similarity attribution of a model's completions to training
//!   documents, and its evaluation by linear datamodeling (LDS);
//! - [`catalog`]: the `models` table, describing checkpoint directories;
//! - [`priming`]: the priming experiment (Sun et al. 2025): how much one gradient step on a new
//!   fact spreads to unrelated prompts.
//!
//! Errors are [`Error`]: a failing compute device ([`Error::Device`], [`Error::OutOfMemory`]) and
//! non-finite model outputs ([`Error::NonFinite`]) apart from everything else
//! ([`Error::Core`], a [`familiar::Error`]).
#![warn(missing_docs)]

pub mod attribute;
pub mod catalog;
pub mod error;
pub mod grads;
pub mod measure;
pub mod model;
pub mod priming;
pub mod train;

pub use error::{Error, Result};

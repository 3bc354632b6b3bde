//! # familiar-models
//!
//! The models side of familiar, in candle:
//! - [`model`]: decoder transformers (GPT-2, GPT-NeoX/Pythia, Llama-family) loaded from a Hugging
//!   Face checkpoint directory (`config.json` + safetensors), with checks that every weight is
//!   finite and every shard lies inside the model directory;
//! - [`grads`]: per-example gradients of the linear layers, projected (LoGra-style Kronecker
//!   projections), the on-disk gradient store, its preconditioners, and [`grads::build`], which
//!   fills a store from an index.
#![warn(missing_docs)]

pub mod grads;
pub mod model;

//! Decoder language models in candle: Hugging Face checkpoints of GPT-2, GPT-NeoX (Pythia) and
//! Llama-family models ([`config`], [`weights`]) run by one differentiable implementation
//! ([`transformer`]) that can capture hidden states and MLP activations.

pub mod config;
pub mod transformer;
pub mod weights;

pub use config::ModelConfig;
pub use transformer::{Capture, Output, Transformer};
pub use weights::Weights;

//! Decoder language models in candle: Hugging Face checkpoints of GPT-2, GPT-NeoX (Pythia) and
//! Llama-family models ([`config`], [`weights`]) run by one differentiable implementation
//! ([`transformer`]) that can capture hidden states, MLP activations, and the inputs and output gradients of linear
//! layers; [`finite`] checks weights and outputs for NaN and infinities.

pub mod config;
pub mod finite;
pub mod transformer;
pub mod weights;

pub use config::ModelConfig;
pub use transformer::{Capture, LinearCapture, LinearGroup, Output, Transformer};
pub use weights::Weights;

use crate::error::{Error, Result};

/// The `tokenizer.json` of a model directory, which must exist.
pub fn tokenizer_file(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let path = dir.join("tokenizer.json");
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the model directory has no tokenizer.json",
            ),
        ))
    }
}

/// The compute device named by `spec`: `cpu`, `cuda` (the first GPU) or `cuda:N`. CUDA needs a
/// build with the `cuda` feature (`cargo build --release --features cuda`); without it, or without
/// a usable GPU, the error says so.
pub fn device(spec: &str) -> Result<candle_core::Device> {
    let ordinal = match spec.trim().to_ascii_lowercase().as_str() {
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" | "gpu" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(Error::config(format!(
                    "unknown device `{spec}`: expected cpu, cuda or cuda:N"
                )))
            }
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::Device(format!(
            "device `{spec}`: this build of familiar has no CUDA support; rebuild with \
             `--features cuda` (needs the CUDA toolkit)"
        )));
    }
    candle_core::Device::new_cuda(ordinal)
        .map_err(|e| Error::Device(format!("device `{spec}`: {e}")))
}

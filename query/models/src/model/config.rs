//! Hugging Face `config.json` of the decoder families familiar runs: GPT-2, GPT-NeoX (Pythia) and
//! Llama (Llama, Mistral, Qwen2-style), as written by transformers 4.x and 5.x.
//!
//! Everything is normalized into one [`ModelConfig`]: the fields that differ between families become
//! explicit choices (position encoding, normalization, MLP, residual layout, biases), so that one
//! transformer implementation serves all three. A missing or malformed field is an error naming the
//! file and the field.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use familiar::error::IoContext;

/// The decoder family (`model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `gpt2`.
    Gpt2,
    /// `gpt_neox` (Pythia).
    GptNeox,
    /// `llama`, `mistral`, `qwen2`.
    Llama,
}

/// The activation of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// GELU with the error function (`gelu`).
    GeluErf,
    /// SiLU (`silu`, `swish`), in a gated MLP for Llama.
    Silu,
    /// ReLU.
    Relu,
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Positions {
    /// Learned absolute position embeddings (GPT-2).
    Learned,
    /// Rotary embeddings on the first `dims` dimensions of each head (rotate-half layout).
    Rotary {
        /// Rotated dimensions per head (even).
        dims: usize,
        /// The base θ.
        theta: f64,
    },
}

/// One decoder's shape and choices.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family.
    pub family: Family,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` for grouped-query attention).
    pub kv_heads: usize,
    /// MLP inner size.
    pub intermediate: usize,
    /// Longest context.
    pub max_positions: usize,
    /// Positions.
    pub positions: Positions,
    /// MLP activation.
    pub activation: Activation,
    /// Normalization epsilon.
    pub norm_eps: f64,
    /// RMSNorm (Llama) instead of LayerNorm.
    pub rms_norm: bool,
    /// GPT-NeoX's parallel residual: x + attn(ln1(x)) + mlp(ln2(x)).
    pub parallel_residual: bool,
    /// Whether the output projection shares the input embedding.
    pub tied_embeddings: bool,
    /// Biases on the attention projections (q, k, v and output).
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// Weight data type in the checkpoint (`torch_dtype` / `dtype`), if stated.
    pub dtype: Option<String>,
    /// Beginning-of-sequence token, if stated (scored before a text with an empty context).
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token, if stated.
    pub eos_token_id: Option<u32>,
}

impl ModelConfig {
    /// Dimensions per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Reads `config.json` from a file or a model directory.
    pub fn read(path: &Path) -> Result<ModelConfig> {
        let file: PathBuf = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).at(&file)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::corrupt(&file, format!("not valid JSON: {e}")))?;
        ModelConfig::from_json(&v, &file)
    }

    /// Parses a `config.json` value; `file` names it in errors.
    pub fn from_json(v: &Value, file: &Path) -> Result<ModelConfig> {
        let f = Fields { v, file };
        let model_type = f.str("model_type")?;
        let config = match model_type.as_str() {
            "gpt2" => {
                let hidden = f.usize("n_embd")?;
                ModelConfig {
                    family: Family::Gpt2,
                    vocab_size: f.usize("vocab_size")?,
                    hidden,
                    layers: f.usize("n_layer")?,
                    heads: f.usize("n_head")?,
                    kv_heads: f.usize("n_head")?,
                    intermediate: f.opt_usize("n_inner")?.unwrap_or(4 * hidden),
                    max_positions: f.usize("n_positions")?,
                    positions: Positions::Learned,
                    activation: activation(&f, "activation_function", "gelu_new")?,
                    norm_eps: f.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
                    rms_norm: false,
                    parallel_residual: false,
                    tied_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(true),
                    attention_bias: true,
                    mlp_bias: true,
                    dtype: f.dtype(),
                    bos_token_id: f.token("bos_token_id"),
                    eos_token_id: f.token("eos_token_id"),
                }
            }
            "gpt_neox" => {
                let hidden = f.usize("hidden_size")?;
                let heads = f.usize("num_attention_heads")?;
                let head_dim = hidden / heads.max(1);
                // transformers 4.x: rotary_pct and rotary_emb_base; 5.x: rope_parameters
                // {rope_theta, partial_rotary_factor}.
                let rope = f.v.get("rope_parameters").filter(|r| r.is_object());
                let pct = match rope.and_then(|r| r.get("partial_rotary_factor")) {
                    Some(x) => x.as_f64().ok_or_else(|| {
                        f.bad("rope_parameters.partial_rotary_factor", "a number")
                    })?,
                    None => f
                        .opt_f64("rotary_pct")?
                        .or(f.opt_f64("partial_rotary_factor")?)
                        .unwrap_or(0.25),
                };
                let theta = match rope.and_then(|r| r.get("rope_theta")) {
                    Some(x) => x
                        .as_f64()
                        .ok_or_else(|| f.bad("rope_parameters.rope_theta", "a number"))?,
                    None => f
                        .opt_f64("rotary_emb_base")?
                        .or(f.opt_f64("rope_theta")?)
                        .unwrap_or(10000.0),
                };
                ModelConfig {
                    family: Family::GptNeox,
                    vocab_size: f.usize("vocab_size")?,
                    hidden,
                    layers: f.usize("num_hidden_layers")?,
                    heads,
                    kv_heads: heads,
                    intermediate: f.usize("intermediate_size")?,
                    max_positions: f.usize("max_position_embeddings")?,
                    positions: Positions::Rotary {
                        dims: (head_dim as f64 * pct) as usize,
                        theta,
                    },
                    activation: activation(&f, "hidden_act", "gelu")?,
                    norm_eps: f.opt_f64("layer_norm_eps")?.unwrap_or(1e-5),
                    rms_norm: false,
                    parallel_residual: f.opt_bool("use_parallel_residual")?.unwrap_or(true),
                    tied_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
                    attention_bias: f.opt_bool("attention_bias")?.unwrap_or(true),
                    mlp_bias: true,
                    dtype: f.dtype(),
                    bos_token_id: f.token("bos_token_id"),
                    eos_token_id: f.token("eos_token_id"),
                }
            }
            "llama" | "mistral" | "qwen2" => {
                let hidden = f.usize("hidden_size")?;
                let heads = f.usize("num_attention_heads")?;
                let head_dim = match f.opt_usize("head_dim")? {
                    Some(d) => d,
                    None => hidden / heads.max(1),
                };
                if head_dim * heads != hidden {
                    return Err(f.bad(
                        "head_dim",
                        "hidden_size / num_attention_heads (other head sizes are not supported)",
                    ));
                }
                let rope = f.v.get("rope_parameters").filter(|r| r.is_object());
                let scaling = rope
                    .and_then(|r| r.get("rope_type"))
                    .and_then(Value::as_str)
                    .or_else(|| {
                        f.v.get("rope_scaling")
                            .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
                            .and_then(Value::as_str)
                    });
                if let Some(kind) = scaling.filter(|k| *k != "default") {
                    return Err(f.bad(
                        "rope_scaling",
                        &format!("no RoPE scaling (found {kind:?}, which is not supported yet)"),
                    ));
                }
                let theta = match rope.and_then(|r| r.get("rope_theta")) {
                    Some(x) => x
                        .as_f64()
                        .ok_or_else(|| f.bad("rope_parameters.rope_theta", "a number"))?,
                    None => f.opt_f64("rope_theta")?.unwrap_or(10000.0),
                };
                let qwen = model_type == "qwen2";
                ModelConfig {
                    family: Family::Llama,
                    vocab_size: f.usize("vocab_size")?,
                    hidden,
                    layers: f.usize("num_hidden_layers")?,
                    heads,
                    kv_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(heads),
                    intermediate: f.usize("intermediate_size")?,
                    max_positions: f.usize("max_position_embeddings")?,
                    positions: Positions::Rotary {
                        dims: head_dim,
                        theta,
                    },
                    activation: activation(&f, "hidden_act", "silu")?,
                    norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
                    rms_norm: true,
                    parallel_residual: false,
                    tied_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
                    attention_bias: f.opt_bool("attention_bias")?.unwrap_or(qwen),
                    mlp_bias: f.opt_bool("mlp_bias")?.unwrap_or(false),
                    dtype: f.dtype(),
                    bos_token_id: f.token("bos_token_id"),
                    eos_token_id: f.token("eos_token_id"),
                }
            }
            other => {
                return Err(f.bad(
                    "model_type",
                    &format!("gpt2, gpt_neox, llama, mistral or qwen2 (found {other:?})"),
                ))
            }
        };
        config.check(file)?;
        Ok(config)
    }

    fn check(&self, file: &Path) -> Result<()> {
        let bad = |what: String| Error::corrupt(file, what);
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return Err(bad(format!(
                "hidden size {} is not a multiple of the {} attention heads",
                self.hidden, self.heads
            )));
        }
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(bad(format!(
                "{} attention heads are not a multiple of the {} key/value heads",
                self.heads, self.kv_heads
            )));
        }
        if let Positions::Rotary { dims, .. } = self.positions {
            if dims > self.head_dim() || dims == 0 {
                return Err(bad(format!(
                    "rotary dimensions {dims} do not fit heads of {}",
                    self.head_dim()
                )));
            }
        }
        if self.vocab_size == 0 || self.layers == 0 || self.intermediate == 0 {
            return Err(bad(
                "vocabulary, layers and MLP size must be positive".into()
            ));
        }
        Ok(())
    }
}

fn activation(f: &Fields<'_>, key: &str, default: &str) -> Result<Activation> {
    let name = f.opt_str(key)?.unwrap_or_else(|| default.to_string());
    Ok(match name.as_str() {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::GeluErf,
        "silu" | "swish" => Activation::Silu,
        "relu" => Activation::Relu,
        other => {
            return Err(f.bad(
                key,
                &format!("gelu, gelu_new, gelu_pytorch_tanh, silu or relu (found {other:?})"),
            ))
        }
    })
}

struct Fields<'a> {
    v: &'a Value,
    file: &'a Path,
}

impl Fields<'_> {
    fn bad(&self, key: &str, expected: &str) -> Error {
        Error::corrupt(self.file, format!("field `{key}`: expected {expected}"))
    }
    fn str(&self, key: &str) -> Result<String> {
        self.opt_str(key)?
            .ok_or_else(|| self.bad(key, "a string (it is missing)"))
    }
    fn opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.bad(key, "a positive integer (it is missing)"))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.bad(key, "a non-negative integer")),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, "a number")),
        }
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(key, "true or false")),
        }
    }
    /// A token id, or the first of a list of them (some configs list several end tokens).
    fn token(&self, key: &str) -> Option<u32> {
        let v = self.v.get(key)?;
        let first = v.as_array().and_then(|a| a.first()).unwrap_or(v);
        first.as_u64().and_then(|n| u32::try_from(n).ok())
    }
    fn dtype(&self) -> Option<String> {
        ["dtype", "torch_dtype"]
            .iter()
            .find_map(|k| self.v.get(*k).and_then(Value::as_str).map(str::to_string))
    }
}

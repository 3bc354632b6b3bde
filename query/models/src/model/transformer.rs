//! One decoder-only transformer for GPT-2, GPT-NeoX and Llama checkpoints, written with candle's
//! tensor operations only, so that every operation has a backward pass (candle-nn's fused softmax,
//! layer-norm and rotary kernels have none: gradients through them silently vanish).
//!
//! Weights are kept as `[in, out]` matrices (GPT-2's Conv1D layout; `nn.Linear` weights are
//! transposed at load), computed in f32 whatever the checkpoint's dtype. A forward pass can capture
//! the residual stream after every layer, the MLP activations (after the non-linearity), and for
//! linear layers their inputs and a zero-valued probe on their outputs whose gradient is the
//! output gradient δ (what LoGra-style attribution needs).

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};

use super::config::{Activation, Family, ModelConfig, Positions};
use super::weights::Weights;
use crate::error::{Error, Result};

/// A candle error, with what was being done: the compute device running out of memory is
/// [`Error::OutOfMemory`] and any other failure of the device (a CUDA or Metal error, a backend
/// this build lacks, tensors on different devices) [`Error::Device`], both the user's to act on;
/// anything else (shapes, dtypes, indices) is a mistake of familiar's, [`familiar::Error::Bug`].
pub fn candle_error(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| {
        if is_out_of_memory(&e) {
            Error::OutOfMemory(format!("{what}: {e}"))
        } else if is_device_error(&e) {
            Error::Device(format!("{what}: {e}"))
        } else {
            Error::bug(format!("{what}: {e}"))
        }
    }
}

/// Whether a candle error says the device (or the host, allocating for it) ran out of memory.
pub fn is_out_of_memory(e: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match e {
        // The wrappers' messages carry backtraces, whose frames name `alloc`.
        E::Context { inner, .. } | E::WithPath { inner, .. } | E::WithBacktrace { inner, .. } => {
            is_out_of_memory(inner)
        }
        other => {
            let m = other.to_string().to_lowercase();
            m.contains("out of memory") || m.contains("out_of_memory") || m.contains("allocat")
        }
    }
}

/// Whether a candle error comes from the device rather than from the computation asked of it.
pub fn is_device_error(e: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match e {
        E::Cuda(_)
        | E::Metal(_)
        | E::NotCompiledWithCudaSupport
        | E::NotCompiledWithMetalSupport
        | E::DeviceMismatchBinaryOp { .. } => true,
        E::Context { inner, .. } | E::WithPath { inner, .. } | E::WithBacktrace { inner, .. } => {
            is_device_error(inner)
        }
        other => {
            let m = other.to_string().to_lowercase();
            m.contains("out of memory") || m.contains("cuda") || m.contains("alloc")
        }
    }
}

/// `y = x W + b` with `W` stored `[in, out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// The checkpoint's module name (its weight is `{name}.weight`).
    pub name: String,
    /// Attention or MLP.
    pub group: LinearGroup,
    /// `[in, out]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
}

/// Which linear layers: the blocks' (attention, MLP) and the output head (the unembedding
/// `logits = h W_U`, a linear layer whether or not its weight is tied to the embeddings; the
/// input embeddings are not among them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearGroup {
    /// Every linear layer of every block, and the output head.
    All,
    /// Every linear layer of every block.
    Blocks,
    /// Query/key/value and output projections.
    Attention,
    /// The MLP's projections.
    Mlp,
    /// The output head.
    Output,
}

impl LinearGroup {
    /// Whether a layer of group `layer` (Attention, Mlp or Output) is selected by `self`.
    pub fn selects(self, layer: LinearGroup) -> bool {
        match self {
            LinearGroup::All => true,
            LinearGroup::Blocks => matches!(layer, LinearGroup::Attention | LinearGroup::Mlp),
            _ => self == layer,
        }
    }
}

/// The module name of the output head in projections and captures (Hugging Face's).
pub const HEAD: &str = "lm_head";

/// One linear layer's input and output probe, captured by a forward pass.
#[derive(Debug, Clone)]
pub struct LinearCapture {
    /// The layer's module name.
    pub name: String,
    /// Its input `x`, `[batch, tokens, in]`.
    pub input: Tensor,
    /// A zero-valued variable added to its output, `[batch, tokens, out]`: after
    /// `loss.backward()`, the gradient of this probe is `δ = ∂loss/∂y` for every token, and the
    /// weight gradient is `Σ_t x_tᵀ δ_t`.
    pub probe: Var,
}

impl Linear {
    /// The forward pass, adding a probe and keeping the input when `capture` asks for this layer.
    fn forward_captured(
        &self,
        x: &Tensor,
        capture: &mut Option<(LinearGroup, &mut Vec<LinearCapture>)>,
    ) -> candle_core::Result<Tensor> {
        let y = self.forward(x)?;
        match capture {
            Some((group, out)) if group.selects(self.group) => {
                let probe = Var::zeros(y.shape(), y.dtype(), y.device())?;
                let y = (y + probe.as_tensor())?;
                out.push(LinearCapture {
                    name: self.name.clone(),
                    input: x.clone(),
                    probe,
                });
                Ok(y)
            }
            _ => Ok(y),
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // One 2-D product over every token (a broadcast batched product would copy the weight
        // once per sequence).
        let dims = x.dims().to_vec();
        let inner = dims[dims.len() - 1];
        let rows = x.elem_count() / inner.max(1);
        let mut out_dims = dims.clone();
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dim(1)?;
        let y = x
            .reshape((rows, inner))?
            .matmul(&self.weight)?
            .reshape(out_dims)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// LayerNorm (with bias) or RMSNorm (without).
#[derive(Debug, Clone)]
pub struct Norm {
    /// Scale.
    pub weight: Tensor,
    /// Shift (LayerNorm only).
    pub bias: Option<Tensor>,
    eps: f64,
    rms: bool,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = if self.rms {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            x.broadcast_div(&(ms + self.eps)?.sqrt()?)?
        } else {
            let mean = x.mean_keepdim(D::Minus1)?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            centered.broadcast_div(&(var + self.eps)?.sqrt()?)?
        };
        let x = x.broadcast_mul(&self.weight)?;
        match &self.bias {
            Some(b) => x.broadcast_add(b),
            None => Ok(x),
        }
    }
}

/// One block's weights.
#[derive(Debug, Clone)]
pub struct Block {
    /// Norm before attention.
    pub norm1: Norm,
    /// Norm before the MLP.
    pub norm2: Norm,
    /// Query, key and value projections, as the checkpoint lays them out.
    pub qkv: Qkv,
    /// Output projection.
    pub out: Linear,
    /// MLP input projection (for Llama: the up projection).
    pub up: Linear,
    /// Llama's gate projection.
    pub gate: Option<Linear>,
    /// MLP output projection.
    pub down: Linear,
}

/// The query, key and value projections. Kept as stored, so that a trainable model's variables are
/// the checkpoint's tensors and an optimizer step needs no re-derivation.
#[derive(Debug, Clone)]
pub enum Qkv {
    /// One projection to q | k | v (GPT-2's `c_attn`).
    Fused(Linear),
    /// One projection whose output is, per head, q | k | v (GPT-NeoX's `query_key_value`).
    PerHead(Linear),
    /// Three projections (Llama's `q_proj`, `k_proj`, `v_proj`).
    Separate(Linear, Linear, Linear),
}

/// What a forward pass records besides the logits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capture {
    /// The residual stream after each layer (`[batch, tokens, hidden]`, layers in order; the last
    /// before the final norm).
    pub hidden_states: bool,
    /// The MLP activations after the non-linearity (for Llama: act(gate) · up), per layer.
    pub mlp_activations: bool,
    /// The inputs of these linear layers, with a zero-valued probe added to their outputs (see
    /// [`LinearCapture`]).
    pub linear: Option<LinearGroup>,
}

/// The result of a forward pass.
#[derive(Debug, Clone)]
pub struct Output {
    /// `[batch, tokens, vocab]`.
    pub logits: Tensor,
    /// The embeddings, then the residual stream after each layer (when captured).
    pub hidden_states: Vec<Tensor>,
    /// MLP activations per layer (when captured).
    pub mlp_activations: Vec<Tensor>,
    /// The captured linear layers, in the order of [`Transformer::linear_layers`], then the
    /// output head ([`HEAD`]) when selected.
    pub linear: Vec<LinearCapture>,
    /// The final-normed hidden state, `[batch, tokens, hidden]`.
    pub last_hidden: Tensor,
}

/// A loaded decoder.
#[derive(Debug, Clone)]
pub struct Transformer {
    /// Its configuration.
    pub config: ModelConfig,
    /// Token embeddings, `[vocab, hidden]`.
    pub embed: Tensor,
    /// Learned position embeddings (GPT-2), `[positions, hidden]`.
    pub positions: Option<Tensor>,
    /// Blocks.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub final_norm: Norm,
    /// Output projection `[hidden, vocab]`; `None` when tied to the embeddings.
    pub lm_head: Option<Tensor>,
    /// Trainable variables (when loaded as trainable), by Hugging Face tensor name.
    pub vars: Vec<(String, Var)>,
    device: Device,
    dtype: DType,
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the weights go.
    pub device: Device,
    /// Compute type: f32 (default) or f64 (for numerical checks).
    pub dtype: DType,
    /// Make every weight a trainable variable.
    pub trainable: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            trainable: false,
        }
    }
}

/// Builds tensors from a checkpoint, optionally as trainable variables.
struct Loader<'a> {
    weights: &'a Weights,
    device: &'a Device,
    dtype: DType,
    trainable: bool,
    vars: Vec<(String, Var)>,
}

impl Loader<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize], transpose: bool) -> Result<Tensor> {
        let t = self.weights.get(name, shape, self.dtype, self.device)?;
        let t = if transpose {
            t.t()
                .and_then(|t| t.contiguous())
                .map_err(candle_error("transpose"))?
        } else {
            t
        };
        self.keep(name, t)
    }

    fn keep(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        if self.trainable {
            let v = Var::from_tensor(&t).map_err(candle_error("variable"))?;
            let t = v.as_tensor().clone();
            self.vars.push((name.to_string(), v));
            Ok(t)
        } else {
            Ok(t)
        }
    }

    /// An `nn.Linear` (`[out, in]` in the file) as `[in, out]`.
    fn linear(&mut self, name: &str, input: usize, output: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            name: name.to_string(),
            group: group_of(name),
            weight: self.tensor(&format!("{name}.weight"), &[output, input], true)?,
            bias: if bias {
                Some(self.tensor(&format!("{name}.bias"), &[output], false)?)
            } else {
                None
            },
        })
    }

    /// A GPT-2 Conv1D (`[in, out]` in the file).
    fn conv1d(&mut self, name: &str, input: usize, output: usize) -> Result<Linear> {
        Ok(Linear {
            name: name.to_string(),
            group: group_of(name),
            weight: self.tensor(&format!("{name}.weight"), &[input, output], false)?,
            bias: Some(self.tensor(&format!("{name}.bias"), &[output], false)?),
        })
    }

    fn norm(&mut self, name: &str, c: &ModelConfig) -> Result<Norm> {
        Ok(Norm {
            weight: self.tensor(&format!("{name}.weight"), &[c.hidden], false)?,
            bias: if c.rms_norm {
                None
            } else {
                Some(self.tensor(&format!("{name}.bias"), &[c.hidden], false)?)
            },
            eps: c.norm_eps,
            rms: c.rms_norm,
        })
    }
}

/// Every family names its MLP modules `….mlp.…`.
fn group_of(name: &str) -> LinearGroup {
    if name.contains(".mlp.") {
        LinearGroup::Mlp
    } else {
        LinearGroup::Attention
    }
}

impl Transformer {
    /// Loads a Hugging Face model directory (`config.json` and `model.safetensors` or
    /// `model.safetensors.index.json` with its shards) on the CPU, in f32.
    pub fn load(dir: &Path) -> Result<Transformer> {
        Transformer::load_with(dir, &LoadOptions::default())
    }

    /// [`Transformer::load`] with options; with `trainable`, every weight is a variable (see
    /// [`Transformer::vars`]).
    pub fn load_with(dir: &Path, options: &LoadOptions) -> Result<Transformer> {
        let config = ModelConfig::read(dir)?;
        let weights = Weights::open(dir)?;
        Transformer::from_weights(config, &weights, options)
    }

    /// Builds the model from a configuration and opened weights.
    pub fn from_weights(
        config: ModelConfig,
        weights: &Weights,
        options: &LoadOptions,
    ) -> Result<Transformer> {
        if !matches!(options.dtype, DType::F32 | DType::F64) {
            return Err(Error::config(format!(
                "models compute in f32 or f64, not {:?}",
                options.dtype
            )));
        }
        let c = &config;
        let mut l = Loader {
            weights,
            device: &options.device,
            dtype: options.dtype,
            trainable: options.trainable,
            vars: Vec::new(),
        };
        let hd = c.head_dim();
        let (h, i) = (c.hidden, c.intermediate);
        let (embed, positions, blocks, final_norm, lm_head) = match c.family {
            Family::Gpt2 => {
                let p = if weights.has("transformer.wte.weight") {
                    "transformer."
                } else {
                    ""
                };
                let embed = l.tensor(&format!("{p}wte.weight"), &[c.vocab_size, h], false)?;
                let pos = l.tensor(&format!("{p}wpe.weight"), &[c.max_positions, h], false)?;
                let mut blocks = Vec::with_capacity(c.layers);
                for n in 0..c.layers {
                    let b = format!("{p}h.{n}");
                    blocks.push(Block {
                        norm1: l.norm(&format!("{b}.ln_1"), c)?,
                        qkv: Qkv::Fused(l.conv1d(&format!("{b}.attn.c_attn"), h, 3 * h)?),
                        out: l.conv1d(&format!("{b}.attn.c_proj"), h, h)?,
                        norm2: l.norm(&format!("{b}.ln_2"), c)?,
                        up: l.conv1d(&format!("{b}.mlp.c_fc"), h, i)?,
                        gate: None,
                        down: l.conv1d(&format!("{b}.mlp.c_proj"), i, h)?,
                    });
                }
                let final_norm = l.norm(&format!("{p}ln_f"), c)?;
                let lm_head = if c.tied_embeddings || !weights.has("lm_head.weight") {
                    None
                } else {
                    Some(l.tensor("lm_head.weight", &[c.vocab_size, h], true)?)
                };
                (embed, Some(pos), blocks, final_norm, lm_head)
            }
            Family::GptNeox => {
                let embed = l.tensor("gpt_neox.embed_in.weight", &[c.vocab_size, h], false)?;
                let mut blocks = Vec::with_capacity(c.layers);
                for n in 0..c.layers {
                    let b = format!("gpt_neox.layers.{n}");
                    let qkv = l.linear(
                        &format!("{b}.attention.query_key_value"),
                        h,
                        3 * h,
                        c.attention_bias,
                    )?;
                    blocks.push(Block {
                        norm1: l.norm(&format!("{b}.input_layernorm"), c)?,
                        qkv: Qkv::PerHead(qkv),
                        out: l.linear(&format!("{b}.attention.dense"), h, h, c.attention_bias)?,
                        norm2: l.norm(&format!("{b}.post_attention_layernorm"), c)?,
                        up: l.linear(&format!("{b}.mlp.dense_h_to_4h"), h, i, c.mlp_bias)?,
                        gate: None,
                        down: l.linear(&format!("{b}.mlp.dense_4h_to_h"), i, h, c.mlp_bias)?,
                    });
                }
                let final_norm = l.norm("gpt_neox.final_layer_norm", c)?;
                let lm_head = if c.tied_embeddings {
                    None
                } else {
                    Some(l.tensor("embed_out.weight", &[c.vocab_size, h], true)?)
                };
                (embed, None, blocks, final_norm, lm_head)
            }
            Family::Llama => {
                let embed = l.tensor("model.embed_tokens.weight", &[c.vocab_size, h], false)?;
                let mut blocks = Vec::with_capacity(c.layers);
                for n in 0..c.layers {
                    let b = format!("model.layers.{n}");
                    let q = l.linear(
                        &format!("{b}.self_attn.q_proj"),
                        h,
                        c.heads * hd,
                        c.attention_bias,
                    )?;
                    let k = l.linear(
                        &format!("{b}.self_attn.k_proj"),
                        h,
                        c.kv_heads * hd,
                        c.attention_bias,
                    )?;
                    let v = l.linear(
                        &format!("{b}.self_attn.v_proj"),
                        h,
                        c.kv_heads * hd,
                        c.attention_bias,
                    )?;
                    blocks.push(Block {
                        norm1: l.norm(&format!("{b}.input_layernorm"), c)?,
                        qkv: Qkv::Separate(q, k, v),
                        out: l.linear(
                            &format!("{b}.self_attn.o_proj"),
                            c.heads * hd,
                            h,
                            c.attention_bias,
                        )?,
                        norm2: l.norm(&format!("{b}.post_attention_layernorm"), c)?,
                        up: l.linear(&format!("{b}.mlp.up_proj"), h, i, c.mlp_bias)?,
                        gate: Some(l.linear(&format!("{b}.mlp.gate_proj"), h, i, c.mlp_bias)?),
                        down: l.linear(&format!("{b}.mlp.down_proj"), i, h, c.mlp_bias)?,
                    });
                }
                let final_norm = l.norm("model.norm", c)?;
                let lm_head = if c.tied_embeddings || !weights.has("lm_head.weight") {
                    None
                } else {
                    Some(l.tensor("lm_head.weight", &[c.vocab_size, h], true)?)
                };
                (embed, None, blocks, final_norm, lm_head)
            }
        };
        Ok(Transformer {
            vars: l.vars,
            config,
            embed,
            positions,
            blocks,
            final_norm,
            lm_head,
            device: options.device.clone(),
            dtype: options.dtype,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The compute type (f32 or f64).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The blocks' linear layers in the order a forward pass visits them.
    pub fn linear_layers(&self) -> Vec<&Linear> {
        let mut out = Vec::new();
        for b in &self.blocks {
            match &b.qkv {
                Qkv::Fused(l) | Qkv::PerHead(l) => out.push(l),
                Qkv::Separate(q, k, v) => out.extend([q, k, v]),
            }
            out.push(&b.out);
            if let Some(g) = &b.gate {
                out.push(g);
            }
            out.extend([&b.up, &b.down]);
        }
        out
    }

    /// Forward pass over `ids` (`[batch][tokens]`, equal lengths), with causal attention.
    pub fn forward(&self, ids: &[Vec<u32>], capture: Capture) -> Result<Output> {
        let batch = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        if batch == 0 || t == 0 {
            return Err(Error::query("the model needs at least one token"));
        }
        if ids.iter().any(|r| r.len() != t) {
            return Err(Error::query(
                "every sequence of a batch must have the same length",
            ));
        }
        if t > self.config.max_positions {
            return Err(Error::query(format!(
                "{t} tokens exceed the model's context of {} positions",
                self.config.max_positions
            )));
        }
        if let Some(&bad) = ids
            .iter()
            .flatten()
            .find(|&&i| i as usize >= self.config.vocab_size)
        {
            return Err(Error::query(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.config.vocab_size
            )));
        }
        self.forward_inner(ids, batch, t, capture)
            .map_err(candle_error("forward pass"))
    }

    fn forward_inner(
        &self,
        ids: &[Vec<u32>],
        batch: usize,
        t: usize,
        capture: Capture,
    ) -> candle_core::Result<Output> {
        let c = &self.config;
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let idx = Tensor::from_vec(flat, batch * t, &self.device)?;
        let mut x = self
            .embed
            .index_select(&idx, 0)?
            .reshape((batch, t, c.hidden))?;
        if let Some(p) = &self.positions {
            x = x.broadcast_add(&p.narrow(0, 0, t)?)?;
        }
        let mut hidden_states = Vec::new();
        let mut mlp_activations = Vec::new();
        let mut linear = Vec::new();
        let mut lin = capture.linear.map(|g| (g, &mut linear));
        if capture.hidden_states {
            hidden_states.push(x.clone());
        }
        let mask = causal_mask(t, &self.device)?.to_dtype(self.dtype)?;
        let rope = match c.positions {
            Positions::Rotary { dims, theta } => {
                let (cos, sin) = rope_tables(t, dims, theta, &self.device)?;
                Some((cos.to_dtype(self.dtype)?, sin.to_dtype(self.dtype)?))
            }
            Positions::Learned => None,
        };
        for b in &self.blocks {
            let a = self.attention(b, &b.norm1.forward(&x)?, &mask, rope.as_ref(), &mut lin)?;
            let mlp_in = if c.parallel_residual {
                b.norm2.forward(&x)?
            } else {
                x = (x + a.clone())?;
                b.norm2.forward(&x)?
            };
            let act = self.mlp_activation(b, &mlp_in, &mut lin)?;
            let m = b.down.forward_captured(&act, &mut lin)?;
            if capture.mlp_activations {
                mlp_activations.push(act);
            }
            x = if c.parallel_residual {
                ((x + a)? + m)?
            } else {
                (x + m)?
            };
            if capture.hidden_states {
                hidden_states.push(x.clone());
            }
        }
        let last_hidden = self.final_norm.forward(&x)?;
        let flat = last_hidden.reshape((batch * t, c.hidden))?;
        let mut logits = match &self.lm_head {
            Some(w) => flat.matmul(w)?,
            None => flat.matmul(&self.embed.t()?)?,
        }
        .reshape((batch, t, c.vocab_size))?;
        if let Some((group, out)) = &mut lin {
            if group.selects(LinearGroup::Output) {
                let probe = Var::zeros(logits.shape(), logits.dtype(), logits.device())?;
                logits = (logits + probe.as_tensor())?;
                out.push(LinearCapture {
                    name: HEAD.to_string(),
                    input: last_hidden.clone(),
                    probe,
                });
            }
        }
        Ok(Output {
            logits,
            hidden_states,
            mlp_activations,
            linear,
            last_hidden,
        })
    }

    fn mlp_activation(
        &self,
        b: &Block,
        x: &Tensor,
        lin: &mut Option<(LinearGroup, &mut Vec<LinearCapture>)>,
    ) -> candle_core::Result<Tensor> {
        // Gate first: the order of `linear_layers`.
        let gate = match &b.gate {
            Some(g) => Some(g.forward_captured(x, lin)?),
            None => None,
        };
        let up = b.up.forward_captured(x, lin)?;
        let act = |t: &Tensor| match self.config.activation {
            Activation::GeluTanh => t.gelu(),
            Activation::GeluErf => t.gelu_erf(),
            Activation::Silu => t.silu(),
            Activation::Relu => t.relu(),
        };
        match gate {
            Some(g) => act(&g)? * up,
            None => act(&up),
        }
    }

    fn attention(
        &self,
        b: &Block,
        x: &Tensor,
        mask: &Tensor,
        rope: Option<&(Tensor, Tensor)>,
        lin: &mut Option<(LinearGroup, &mut Vec<LinearCapture>)>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (batch, t, _) = x.dims3()?;
        let hd = c.head_dim();
        let split = |y: &Tensor, n: usize| -> candle_core::Result<Tensor> {
            y.reshape((batch, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let (mut q, mut k, v) = match &b.qkv {
            Qkv::Fused(l) => {
                let y = l.forward_captured(x, lin)?;
                let h = c.heads * hd;
                (
                    split(&y.narrow(2, 0, h)?, c.heads)?,
                    split(&y.narrow(2, h, h)?, c.kv_heads)?,
                    split(&y.narrow(2, 2 * h, h)?, c.kv_heads)?,
                )
            }
            Qkv::PerHead(l) => {
                let y = l
                    .forward_captured(x, lin)?
                    .reshape((batch, t, c.heads, 3 * hd))?;
                let part = |i: usize| -> candle_core::Result<Tensor> {
                    y.narrow(3, i * hd, hd)?.transpose(1, 2)?.contiguous()
                };
                (part(0)?, part(1)?, part(2)?)
            }
            Qkv::Separate(ql, kl, vl) => (
                split(&ql.forward_captured(x, lin)?, c.heads)?,
                split(&kl.forward_captured(x, lin)?, c.kv_heads)?,
                split(&vl.forward_captured(x, lin)?, c.kv_heads)?,
            ),
        };
        if let (Some((cos, sin)), Positions::Rotary { dims, .. }) = (rope, c.positions) {
            q = apply_rope(&q, cos, sin, dims)?;
            k = apply_rope(&k, cos, sin, dims)?;
        }
        let group = c.heads / c.kv_heads;
        let (k, v) = if group > 1 {
            (repeat_kv(&k, group)?, repeat_kv(&v, group)?)
        } else {
            (k, v)
        };
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(mask)?;
        let probs = softmax_last(&scores)?;
        let y = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, t, c.heads * hd))?;
        b.out.forward_captured(&y, lin)
    }
}

/// Softmax over the last dimension, from differentiable operations (the maximum is detached: the
/// result does not depend on it).
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dimension, from differentiable operations.
pub fn log_softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { -1e9 } else { 0.0 }))
        .collect();
    Tensor::from_vec(v, (t, t), device)
}

fn rope_tables(
    t: usize,
    dims: usize,
    theta: f64,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (cos, sin) = rope_cos_sin(t, dims, theta);
    Ok((
        Tensor::from_vec(cos, (t, dims), device)?,
        Tensor::from_vec(sin, (t, dims), device)?,
    ))
}

/// Rotary cos and sin tables `[t, dims]` (each half repeated), computed as transformers does:
/// inv_freq in f32, then position × inv_freq in f32.
pub(crate) fn rope_cos_sin(t: usize, dims: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = dims / 2;
    let mut cos = Vec::with_capacity(t * dims);
    let mut sin = Vec::with_capacity(t * dims);
    for pos in 0..t {
        for _ in 0..2 {
            for i in 0..half {
                let inv = (1.0 / theta.powf((2 * i) as f64 / dims as f64)) as f32;
                let angle = pos as f32 * inv;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}

fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, dims: usize) -> candle_core::Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let rot = x.narrow(D::Minus1, 0, dims)?;
    let half = dims / 2;
    let x1 = rot.narrow(D::Minus1, 0, half)?;
    let x2 = rot.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let out = (rot.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?;
    if dims == hd {
        Ok(out)
    } else {
        Tensor::cat(&[&out, &x.narrow(D::Minus1, dims, hd - dims)?], D::Minus1)
    }
}

fn repeat_kv(x: &Tensor, group: usize) -> candle_core::Result<Tensor> {
    let (b, n, t, hd) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, n, group, t, hd))?
        .reshape((b, n * group, t, hd))
}

#[cfg(test)]
mod device_error_tests {
    use super::*;

    #[test]
    fn device_failures_are_device_errors_and_shape_mistakes_bugs() {
        let oom = candle_core::Error::Cuda(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        let e = candle_error("a forward pass")(oom);
        assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("out of memory on the device: a forward pass: "),
            "{e}"
        );
        let missing = candle_error("loading")(candle_core::Error::NotCompiledWithCudaSupport);
        assert!(matches!(missing, Error::Device(_)), "{missing}");
        assert!(missing.to_string().starts_with("device error: loading: "));
        let wrapped = candle_core::Error::Cuda("launch failed".into()).context("matmul");
        assert!(matches!(candle_error("x")(wrapped), Error::Device(_)));
        let shapes =
            candle_core::Tensor::zeros((2, 3), candle_core::DType::F32, &candle_core::Device::Cpu)
                .and_then(|a| a.matmul(&a))
                .unwrap_err();
        let shapes = candle_error("x")(shapes);
        assert!(
            matches!(shapes, Error::Core(familiar::Error::Bug(_))),
            "{shapes}"
        );
    }
}

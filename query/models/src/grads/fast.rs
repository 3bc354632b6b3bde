//! Projected per-example gradients on the CPU without autograd.
//!
//! A forward pass that keeps what the backward pass needs, and a backward pass that computes only
//! gradients with respect to activations — never the weights' gradients, which autograd would form
//! for every linear layer and LoGra never needs. The examples of a batch are concatenated without
//! padding: linear layers run as one matrix product over every token of the batch, attention per
//! example and head. Matrix products go to the `gemm` crate (single-threaded: callers parallelize
//! over batches), everything else is plain loops in f32.
//!
//! Covers every family [`Transformer`] loads (LayerNorm or RMSNorm, learned or rotary positions,
//! fused, per-head or separate q/k/v, grouped-query attention, GELU/SiLU/ReLU, gated MLPs,
//! parallel or sequential residuals); its rows equal those of the autograd path
//! ([`super::projected_gradients`]) — tested on every reference checkpoint.

use candle_core::{DType, Device, Tensor};

use super::ekfac::KronSums;
use super::{Example, Gradients, HeadFactor, Projection};
use crate::error::{Error, Result};
use crate::model::config::{Activation, Positions};
use crate::model::transformer::{candle_error, Linear, Norm, Qkv};
use crate::model::Transformer;

/// `out[m×n]` (row stride `ldo`) = (or += when `acc`) `a[m×k] · b[k×n]`, where `a` and `b` are
/// given as (slice, row stride, column stride). Panics if a view exceeds its slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mm(
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
    ldo: usize,
    acc: bool,
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
) {
    gemm_view(m, n, k, out, ldo, acc, a, b, 1.0);
}

/// `out[m×n]` (row stride `ldo`) = (or, when `acc`, `out +`) `beta · a[m×k] · b[k×n]`, where `a`
/// and `b` are given as (slice, row stride, column stride); f32 or f64. Panics if a view exceeds
/// its slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_view<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    out: &mut [T],
    ldo: usize,
    acc: bool,
    a: (&[T], usize, usize),
    b: (&[T], usize, usize),
    beta: T,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * ldo + n <= out.len(), "mm: output view");
    if k == 0 {
        if !acc {
            for r in 0..m {
                out[r * ldo..r * ldo + n].fill(T::default());
            }
        }
        return;
    }
    assert!((m - 1) * a.1 + (k - 1) * a.2 < a.0.len(), "mm: left view");
    assert!((k - 1) * b.1 + (n - 1) * b.2 < b.0.len(), "mm: right view");
    // SAFETY: the asserts above keep every element the views address inside their slices; `out`
    // is a unique borrow, so it aliases neither input. `T` is f32 or f64 ([`Real`]), which
    // `gemm` multiplies natively.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            ldo as isize,
            acc,
            a.0.as_ptr(),
            a.2 as isize,
            a.1 as isize,
            b.0.as_ptr(),
            b.2 as isize,
            b.1 as isize,
            T::ONE,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The element types [`gemm_view`] multiplies.
pub(crate) trait Real: Copy + Default + 'static {
    /// 1: the scale the output keeps when accumulating.
    const ONE: Self;
}

impl Real for f32 {
    const ONE: f32 = 1.0;
}

impl Real for f64 {
    const ONE: f64 = 1.0;
}

/// A linear layer as `[in, out]` weights.
#[derive(Debug, Clone)]
struct Lin {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    input: usize,
    output: usize,
}

impl Lin {
    /// `y[N, out] = x[N, in] W + b`.
    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0.0; n * self.output];
        mm(
            n,
            self.output,
            self.input,
            &mut y,
            self.output,
            false,
            (x, self.input, 1),
            (&self.w, self.output, 1),
        );
        if let Some(b) = &self.b {
            for row in y.chunks_exact_mut(self.output) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        }
        y
    }

    /// `dx[N, in] (+)= dy[N, out] Wᵀ`.
    fn backward(&self, dy: &[f32], n: usize, dx: &mut [f32], acc: bool) {
        mm(
            n,
            self.input,
            self.output,
            dx,
            self.input,
            acc,
            (dy, self.output, 1),
            (&self.w, 1, self.output),
        );
    }
}

#[derive(Debug, Clone)]
struct NormW {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    eps: f32,
    rms: bool,
}

/// What a norm's backward pass needs.
struct NormSaved {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
}

impl NormW {
    fn forward(&self, x: &[f32], d: usize) -> (Vec<f32>, NormSaved) {
        let n = x.len() / d;
        let mut xhat = vec![0.0; x.len()];
        let mut rstd = vec![0.0; n];
        let mut y = vec![0.0; x.len()];
        for r in 0..n {
            let row = &x[r * d..(r + 1) * d];
            let mean = if self.rms {
                0.0
            } else {
                row.iter().sum::<f32>() / d as f32
            };
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let s = 1.0 / (var + self.eps).sqrt();
            rstd[r] = s;
            for c in 0..d {
                let h = (row[c] - mean) * s;
                xhat[r * d + c] = h;
                y[r * d + c] = h * self.w[c] + self.b.as_ref().map_or(0.0, |b| b[c]);
            }
        }
        (y, NormSaved { xhat, rstd })
    }

    /// Adds the input gradient for output gradient `dy` to `dx`.
    fn backward(&self, saved: &NormSaved, dy: &[f32], d: usize, dx: &mut [f32]) {
        let mut g = vec![0.0f32; d];
        for (r, &s) in saved.rstd.iter().enumerate() {
            let xh = &saved.xhat[r * d..(r + 1) * d];
            let dyr = &dy[r * d..(r + 1) * d];
            let (mut mean_g, mut mean_gx) = (0.0f32, 0.0f32);
            for c in 0..d {
                g[c] = dyr[c] * self.w[c];
                mean_g += g[c];
                mean_gx += g[c] * xh[c];
            }
            mean_g /= d as f32;
            mean_gx /= d as f32;
            if self.rms {
                mean_g = 0.0;
            }
            let dxr = &mut dx[r * d..(r + 1) * d];
            for c in 0..d {
                dxr[c] += s * (g[c] - mean_g - xh[c] * mean_gx);
            }
        }
    }
}

/// Which linear layer of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Qkv,
    Out,
    Gate,
    Up,
    Down,
    /// The output head (not a block's).
    Head,
}

/// A projected layer: which of the block's linears, which columns of its output (q, k and v of
/// separate projections share one concatenated product), and its projection.
#[derive(Debug, Clone)]
struct Slot {
    which: Which,
    col: usize,
    width: usize,
    projection: usize,
}

#[derive(Debug, Clone)]
struct Layer {
    norm1: NormW,
    norm2: NormW,
    qkv: Lin,
    /// NeoX: the fused output is per head q | k | v; otherwise q (all heads) | k | v.
    per_head: bool,
    out: Lin,
    gate: Option<Lin>,
    up: Lin,
    down: Lin,
    slots: Vec<Slot>,
}

/// What a gradient computation adds its projected vectors to, besides the rows.
struct Sinks<'a> {
    factors: Option<&'a mut KronSums>,
    tokens: Option<&'a mut TokenScores>,
    /// Only the output head's factor: the forward pass and the logits' gradient, no projection.
    head: Option<&'a mut HeadFactor>,
}

/// Per vector, each token's contribution to the rows' dot products with it.
struct TokenScores {
    vectors: Vec<Vec<f32>>,
    scores: Vec<Vec<f64>>,
}

/// A CPU copy of a model's weights with a projection: computes the rows of
/// [`super::projected_gradients`] without autograd.
#[derive(Debug, Clone)]
pub struct FastGradients {
    config: crate::model::ModelConfig,
    embed: Vec<f32>,
    positions: Option<Vec<f32>>,
    layers: Vec<Layer>,
    final_norm: NormW,
    /// `[hidden, vocab]`.
    head: Vec<f32>,
    /// The output head's slot, when projected.
    head_slot: Option<Slot>,
    /// Per projection: `P_inᵀ` `[in, rank_in]`, `P_outᵀ` `[out, rank_out]`.
    mats: Vec<(Vec<f32>, Vec<f32>)>,
    /// Per projection: its ranks (input side, output side).
    ranks: Vec<(usize, usize)>,
    /// Where each projection's block starts in a row, and the row's length last.
    offsets: Vec<usize>,
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle_error("copying weights"))
}

fn lin(l: &Linear) -> Result<Lin> {
    let (input, output) = l.weight.dims2().map_err(candle_error("linear shape"))?;
    Ok(Lin {
        w: to_vec(&l.weight)?,
        b: l.bias.as_ref().map(to_vec).transpose()?,
        input,
        output,
    })
}

fn norm(n: &Norm, config: &crate::model::ModelConfig) -> Result<NormW> {
    Ok(NormW {
        w: to_vec(&n.weight)?,
        b: n.bias.as_ref().map(to_vec).transpose()?,
        eps: config.norm_eps as f32,
        rms: config.rms_norm,
    })
}

impl FastGradients {
    /// Copies `model`'s weights and `projection`'s matrices.
    pub fn new(model: &Transformer, projection: &Projection) -> Result<FastGradients> {
        let c = model.config.clone();
        let spec = &projection.spec;
        let index_of = |name: &str| spec.layers.iter().position(|l| l.name == name);
        let mut layers = Vec::with_capacity(model.blocks.len());
        for b in &model.blocks {
            let mut slots = Vec::new();
            let (qkv, per_head) = match &b.qkv {
                Qkv::Fused(l) | Qkv::PerHead(l) => {
                    let q = lin(l)?;
                    if let Some(p) = index_of(&l.name) {
                        slots.push(Slot {
                            which: Which::Qkv,
                            col: 0,
                            width: q.output,
                            projection: p,
                        });
                    }
                    (q, matches!(b.qkv, Qkv::PerHead(_)))
                }
                Qkv::Separate(q, k, v) => {
                    let parts = [lin(q)?, lin(k)?, lin(v)?];
                    let mut col = 0;
                    for (l, part) in [q, k, v].iter().zip(&parts) {
                        if let Some(p) = index_of(&l.name) {
                            slots.push(Slot {
                                which: Which::Qkv,
                                col,
                                width: part.output,
                                projection: p,
                            });
                        }
                        col += part.output;
                    }
                    let input = parts[0].input;
                    let output = col;
                    let mut w = vec![0.0; input * output];
                    let mut off = 0;
                    for part in &parts {
                        for r in 0..input {
                            w[r * output + off..r * output + off + part.output]
                                .copy_from_slice(&part.w[r * part.output..(r + 1) * part.output]);
                        }
                        off += part.output;
                    }
                    let bias = if parts.iter().all(|p| p.b.is_some()) {
                        Some(
                            parts
                                .iter()
                                .flat_map(|p| p.b.clone().unwrap_or_default())
                                .collect(),
                        )
                    } else {
                        None
                    };
                    (
                        Lin {
                            w,
                            b: bias,
                            input,
                            output,
                        },
                        false,
                    )
                }
            };
            let mut add = |l: &Linear, which: Which| -> Result<Lin> {
                let x = lin(l)?;
                if let Some(p) = index_of(&l.name) {
                    slots.push(Slot {
                        which,
                        col: 0,
                        width: x.output,
                        projection: p,
                    });
                }
                Ok(x)
            };
            let out = add(&b.out, Which::Out)?;
            let gate = b.gate.as_ref().map(|g| add(g, Which::Gate)).transpose()?;
            let up = add(&b.up, Which::Up)?;
            let down = add(&b.down, Which::Down)?;
            layers.push(Layer {
                norm1: norm(&b.norm1, &c)?,
                norm2: norm(&b.norm2, &c)?,
                qkv,
                per_head,
                out,
                gate,
                up,
                down,
                slots,
            });
        }
        let head_slot = spec.has_head().then(|| Slot {
            which: Which::Head,
            col: 0,
            width: c.vocab_size,
            projection: spec.layers.len() - 1,
        });
        let found: usize =
            layers.iter().map(|l| l.slots.len()).sum::<usize>() + usize::from(head_slot.is_some());
        if found != spec.layers.len() {
            return Err(Error::config(format!(
                "the projection names {} layers, the model has {found} of them",
                spec.layers.len()
            )));
        }
        let hidden = c.hidden;
        let head = match &model.lm_head {
            Some(w) => to_vec(w)?,
            None => {
                let e = to_vec(&model.embed)?;
                let v = c.vocab_size;
                let mut t = vec![0.0; hidden * v];
                for r in 0..v {
                    for k in 0..hidden {
                        t[k * v + r] = e[r * hidden + k];
                    }
                }
                t
            }
        };
        Ok(FastGradients {
            embed: to_vec(&model.embed)?,
            positions: model.positions.as_ref().map(to_vec).transpose()?,
            layers,
            final_norm: norm(&model.final_norm, &c)?,
            head,
            head_slot,
            mats: projection.host_matrices().to_vec(),
            ranks: (0..spec.layers.len()).map(|l| spec.ranks(l)).collect(),
            offsets: spec.offsets(),
            config: c,
        })
    }

    /// Values per example.
    pub fn dim(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// Projected gradients of `examples` (see [`super::projected_gradients`]), one thread.
    pub fn compute(&self, examples: &[Example]) -> Result<Gradients> {
        self.compute_with(
            examples,
            Sinks {
                factors: None,
                tokens: None,
                head: None,
            },
        )
    }

    /// [`FastGradients::compute`], also adding the examples' projected inputs' and output
    /// gradients' outer products to `factors` (EK-FAC's Kronecker factors, [`KronSums`]; one per
    /// projected layer, every token of every example counted).
    pub fn compute_factored(
        &self,
        examples: &[Example],
        factors: &mut KronSums,
    ) -> Result<Gradients> {
        self.compute_with(
            examples,
            Sinks {
                factors: Some(factors),
                tokens: None,
                head: None,
            },
        )
    }

    /// The output head's factor ([`HeadFactor`]) of `examples`: `Σ_t (p_t − onehot(y_t))²` per
    /// vocabulary entry over their predicted tokens, from the forward pass alone (the
    /// projection's matrices are not used). Each example's losses are returned with it.
    pub fn head_factor(&self, examples: &[Example]) -> Result<(HeadFactor, Vec<f64>)> {
        let mut f = HeadFactor::zero(self.config.vocab_size);
        let g = self.compute_with(
            examples,
            Sinks {
                factors: None,
                tokens: None,
                head: Some(&mut f),
            },
        )?;
        Ok((f, g.losses))
    }

    /// [`FastGradients::compute`], also splitting each row's dot product with each of `vectors`
    /// (`dim` values each) by token: `⟨v, row⟩ = Σ_t Σ_layers s_tᵀ V_l a_t`, with `a_t`, `s_t` the
    /// layer's projected input and output gradient at token `t` and `V_l` the vector's block of
    /// the layer. Returns the gradients and, per vector, one contribution per token of the
    /// examples, concatenated in order (`Σ` over an example's tokens = its row's dot product).
    pub fn token_contributions(
        &self,
        examples: &[Example],
        vectors: &[Vec<f32>],
    ) -> Result<(Gradients, Vec<Vec<f64>>)> {
        let dim = self.dim();
        if let Some(v) = vectors.iter().find(|v| v.len() != dim) {
            return Err(Error::bug(format!(
                "a vector of {} values for rows of {dim}",
                v.len()
            )));
        }
        let n: usize = examples.iter().map(|e| e.ids.len()).sum();
        let mut tokens = TokenScores {
            vectors: vectors.to_vec(),
            scores: vec![vec![0.0; n]; vectors.len()],
        };
        let g = self.compute_with(
            examples,
            Sinks {
                factors: None,
                tokens: Some(&mut tokens),
                head: None,
            },
        )?;
        Ok((g, tokens.scores))
    }

    fn compute_with(&self, examples: &[Example], mut sinks: Sinks<'_>) -> Result<Gradients> {
        let c = &self.config;
        for e in examples {
            if e.ids.len() > c.max_positions {
                return Err(Error::query(format!(
                    "{} tokens exceed the model's context of {} positions",
                    e.ids.len(),
                    c.max_positions
                )));
            }
            if let Some(&bad) = e.ids.iter().find(|&&i| i as usize >= c.vocab_size) {
                return Err(Error::query(format!(
                    "token id {bad} is outside the model's vocabulary of {}",
                    c.vocab_size
                )));
            }
        }
        let dim = self.dim();
        let mut rows = vec![0.0f32; examples.len() * dim];
        let mut losses = vec![0.0f64; examples.len()];
        // Rows of each example in the concatenation.
        let mut starts = Vec::with_capacity(examples.len() + 1);
        let mut n = 0;
        for e in examples {
            starts.push(n);
            n += e.ids.len();
        }
        starts.push(n);
        if let Some(f) = sinks.factors.as_deref_mut() {
            if f.ranks != self.ranks {
                return Err(Error::bug(format!(
                    "Kronecker sums of ranks {:?} for a projection of ranks {:?}",
                    f.ranks, self.ranks
                )));
            }
        }
        if n == 0 || examples.iter().all(|e| e.targets() == 0) {
            // Nothing predicted (an empty document): no gradient, and no tokens for the factors.
            return Ok(Gradients { rows, losses });
        }
        if let Some(f) = sinks.factors.as_deref_mut() {
            f.count(n);
        }
        let d = c.hidden;
        let hd = c.head_dim();
        let (nh, nkv) = (c.heads, c.kv_heads);
        let group = nh / nkv;
        let pos_of: Vec<usize> = examples
            .iter()
            .flat_map(|e| 0..e.ids.len())
            .collect::<Vec<_>>();

        // Embeddings.
        let mut x = vec![0.0f32; n * d];
        for (r, &id) in examples.iter().flat_map(|e| e.ids.iter()).enumerate() {
            let row = &mut x[r * d..(r + 1) * d];
            row.copy_from_slice(&self.embed[id as usize * d..(id as usize + 1) * d]);
            if let Some(p) = &self.positions {
                let p = &p[pos_of[r] * d..(pos_of[r] + 1) * d];
                row.iter_mut().zip(p).for_each(|(x, p)| *x += p);
            }
        }
        let rope = match c.positions {
            Positions::Rotary { dims, theta } => {
                let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
                Some(crate::model::transformer::rope_cos_sin(t, dims, theta))
            }
            Positions::Learned => None,
        };

        // Forward, keeping what the backward pass needs.
        struct Saved {
            n1: NormSaved,
            h1: Vec<f32>,
            q: Vec<f32>,
            k: Vec<f32>,
            v: Vec<f32>,
            probs: Vec<Vec<f32>>,
            y: Vec<f32>,
            n2: NormSaved,
            h2: Vec<f32>,
            up: Vec<f32>,
            /// Gated: act(gate), else empty.
            act_gate: Vec<f32>,
            /// The activation's derivative at its input (gate or up).
            dact: Vec<f32>,
            m_in: Vec<f32>,
        }
        let mut saved: Vec<Saved> = Vec::with_capacity(self.layers.len());
        let scale = 1.0 / (hd as f32).sqrt();
        for layer in &self.layers {
            let (h1, n1) = layer.norm1.forward(&x, d);
            let qkv = layer.qkv.forward(&h1, n);
            let (mut q, mut k, v) = split_qkv(&qkv, n, nh, nkv, hd, layer.per_head);
            if let (Some((cos, sin)), Positions::Rotary { dims, .. }) = (&rope, c.positions) {
                rotate(&mut q, nh, hd, dims, &pos_of, cos, sin, false);
                rotate(&mut k, nkv, hd, dims, &pos_of, cos, sin, false);
            }
            let mut y = vec![0.0f32; n * nh * hd];
            let mut probs = Vec::with_capacity(examples.len() * nh);
            for (b, _) in examples.iter().enumerate() {
                let (s, t) = (starts[b], starts[b + 1] - starts[b]);
                for h in 0..nh {
                    let kvh = h / group;
                    let mut p = vec![0.0f32; t * t];
                    mm(
                        t,
                        t,
                        hd,
                        &mut p,
                        t,
                        false,
                        (&q[s * nh * hd + h * hd..], nh * hd, 1),
                        (&k[s * nkv * hd + kvh * hd..], 1, nkv * hd),
                    );
                    causal_softmax(&mut p, t, scale);
                    mm(
                        t,
                        hd,
                        t,
                        &mut y[s * nh * hd + h * hd..],
                        nh * hd,
                        false,
                        (&p, t, 1),
                        (&v[s * nkv * hd + kvh * hd..], nkv * hd, 1),
                    );
                    probs.push(p);
                }
            }
            let a = layer.out.forward(&y, n);
            let (h2, n2) = if c.parallel_residual {
                layer.norm2.forward(&x, d)
            } else {
                x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
                layer.norm2.forward(&x, d)
            };
            let up = layer.up.forward(&h2, n);
            let (m_in, act_gate, dact) = match &layer.gate {
                Some(g) => {
                    let (a, da) = activate(c.activation, &g.forward(&h2, n));
                    let m_in = a.iter().zip(&up).map(|(a, u)| a * u).collect();
                    (m_in, a, da)
                }
                None => {
                    let (a, da) = activate(c.activation, &up);
                    (a, Vec::new(), da)
                }
            };
            let m = layer.down.forward(&m_in, n);
            if c.parallel_residual {
                x.iter_mut()
                    .zip(a.iter().zip(&m))
                    .for_each(|(x, (a, m))| *x += a + m);
            } else {
                x.iter_mut().zip(&m).for_each(|(x, m)| *x += m);
            }
            saved.push(Saved {
                n1,
                h1,
                q,
                k,
                v,
                probs,
                y,
                n2,
                h2,
                up,
                act_gate,
                dact,
                m_in,
            });
        }
        let (hf, nf) = self.final_norm.forward(&x, d);
        let vocab = c.vocab_size;
        let mut logits = vec![0.0f32; n * vocab];
        mm(
            n,
            vocab,
            d,
            &mut logits,
            vocab,
            false,
            (&hf, d, 1),
            (&self.head, vocab, 1),
        );
        // Loss and its gradient at the logits: softmax − one-hot on counted rows, 0 elsewhere.
        for (b, e) in examples.iter().enumerate() {
            for j in 0..e.ids.len() {
                let r = starts[b] + j;
                let row = &mut logits[r * vocab..(r + 1) * vocab];
                let target = j + 1;
                if target >= e.ids.len() || target < e.first_target.max(1) {
                    row.fill(0.0);
                    continue;
                }
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum = exp_shifted(row, max);
                let tid = e.ids[target] as usize;
                losses[b] -= (row[tid] as f64 / sum).ln();
                let inv = (1.0 / sum) as f32;
                row.iter_mut().for_each(|v| *v *= inv);
                row[tid] -= 1.0;
                if let Some(f) = sinks.head.as_deref_mut() {
                    f.sums
                        .iter_mut()
                        .zip(row.iter())
                        .for_each(|(s, &g)| *s += f64::from(g) * f64::from(g));
                    f.tokens += 1;
                }
            }
        }
        if sinks.head.is_some() {
            return Ok(Gradients { rows, losses });
        }
        if let Some(slot) = &self.head_slot {
            // The head's δ is the logits' gradient, its input the final normed hidden state.
            self.project(
                slot,
                (&hf, d),
                (&logits, vocab),
                &starts,
                (&mut rows, dim),
                &mut sinks,
            );
        }
        // The backward pass goes down to the lowest block with a projected layer, and not at
        // all when only the head is projected.
        let Some(lowest) = self.layers.iter().position(|l| !l.slots.is_empty()) else {
            return Ok(Gradients { rows, losses });
        };
        let mut dhf = vec![0.0f32; n * d];
        mm(
            n,
            d,
            vocab,
            &mut dhf,
            d,
            false,
            (&logits, vocab, 1),
            (&self.head, 1, vocab),
        );
        drop(logits);
        let mut dx = vec![0.0f32; n * d];
        self.final_norm.backward(&nf, &dhf, d, &mut dx);

        // Backward through the blocks, projecting each selected layer's x and δ.
        let mut project = |slot: &Slot, x_in: &[f32], in_dim: usize, delta: &[f32], ld: usize| {
            self.project(
                slot,
                (x_in, in_dim),
                (delta, ld),
                &starts,
                (&mut rows, dim),
                &mut sinks,
            );
        };
        for (li, layer) in self.layers.iter().enumerate().rev() {
            let s = &saved[li];
            // MLP: dx (the output's gradient) is δ of the down projection.
            let dm = &dx;
            for slot in layer.slots.iter().filter(|s| s.which == Which::Down) {
                project(slot, &s.m_in, layer.down.input, dm, layer.down.output);
            }
            let ff = layer.up.output;
            let mut dm_in = vec![0.0f32; n * ff];
            layer.down.backward(dm, n, &mut dm_in, false);
            let (d_up, d_gate) = if layer.gate.is_some() {
                let du: Vec<f32> = dm_in.iter().zip(&s.act_gate).map(|(d, a)| d * a).collect();
                let dg: Vec<f32> = dm_in
                    .iter()
                    .zip(s.up.iter().zip(&s.dact))
                    .map(|(d, (u, da))| d * u * da)
                    .collect();
                (du, Some(dg))
            } else {
                let du: Vec<f32> = dm_in.iter().zip(&s.dact).map(|(d, da)| d * da).collect();
                (du, None)
            };
            for slot in &layer.slots {
                match slot.which {
                    Which::Up => project(slot, &s.h2, d, &d_up, ff),
                    Which::Gate => {
                        if let Some(dg) = &d_gate {
                            project(slot, &s.h2, d, dg, ff);
                        }
                    }
                    _ => {}
                }
            }
            let mut dh2 = vec![0.0f32; n * d];
            layer.up.backward(&d_up, n, &mut dh2, false);
            if let (Some(g), Some(dg)) = (&layer.gate, &d_gate) {
                g.backward(dg, n, &mut dh2, true);
            }
            // Gradient at the attention output `a`: sequential, through the MLP's norm and the
            // residual; parallel (x_out = x + a + m, h2 = norm2(x)), the block output's gradient
            // itself — norm2's input gradient then goes to the block's input below.
            let mut da = dx.clone();
            if !c.parallel_residual {
                layer.norm2.backward(&s.n2, &dh2, d, &mut da);
            }
            for slot in layer.slots.iter().filter(|s| s.which == Which::Out) {
                project(slot, &s.y, layer.out.input, &da, d);
            }
            let mut dy = vec![0.0f32; n * nh * hd];
            layer.out.backward(&da, n, &mut dy, false);
            // Attention.
            let mut dq = vec![0.0f32; n * nh * hd];
            let mut dk = vec![0.0f32; n * nkv * hd];
            let mut dv = vec![0.0f32; n * nkv * hd];
            for (b, _) in examples.iter().enumerate() {
                let (st, t) = (starts[b], starts[b + 1] - starts[b]);
                for h in 0..nh {
                    let kvh = h / group;
                    let p = &s.probs[b * nh + h];
                    let mut dp = vec![0.0f32; t * t];
                    // dP = dO Vᵀ.
                    mm(
                        t,
                        t,
                        hd,
                        &mut dp,
                        t,
                        false,
                        (&dy[st * nh * hd + h * hd..], nh * hd, 1),
                        (&s.v[st * nkv * hd + kvh * hd..], 1, nkv * hd),
                    );
                    // dV += Pᵀ dO.
                    mm(
                        t,
                        hd,
                        t,
                        &mut dv[st * nkv * hd + kvh * hd..],
                        nkv * hd,
                        true,
                        (p, 1, t),
                        (&dy[st * nh * hd + h * hd..], nh * hd, 1),
                    );
                    // dS = P ⊙ (dP − rowsum(dP ⊙ P)), times the scale.
                    causal_softmax_backward(p, &mut dp, t, scale);
                    // dQ = dS K; dK += dSᵀ Q.
                    mm(
                        t,
                        hd,
                        t,
                        &mut dq[st * nh * hd + h * hd..],
                        nh * hd,
                        false,
                        (&dp, t, 1),
                        (&s.k[st * nkv * hd + kvh * hd..], nkv * hd, 1),
                    );
                    mm(
                        t,
                        hd,
                        t,
                        &mut dk[st * nkv * hd + kvh * hd..],
                        nkv * hd,
                        true,
                        (&dp, 1, t),
                        (&s.q[st * nh * hd + h * hd..], nh * hd, 1),
                    );
                }
            }
            if let (Some((cos, sin)), Positions::Rotary { dims, .. }) = (&rope, c.positions) {
                rotate(&mut dq, nh, hd, dims, &pos_of, cos, sin, true);
                rotate(&mut dk, nkv, hd, dims, &pos_of, cos, sin, true);
            }
            let dqkv = join_qkv(&dq, &dk, &dv, n, nh, nkv, hd, layer.per_head);
            for slot in layer.slots.iter().filter(|s| s.which == Which::Qkv) {
                project(slot, &s.h1, d, &dqkv[slot.col..], layer.qkv.output);
            }
            if li == 0 {
                break;
            }
            // The gradient at the block's input.
            let mut dh1 = vec![0.0f32; n * d];
            layer.qkv.backward(&dqkv, n, &mut dh1, false);
            let mut dx_in = if c.parallel_residual {
                let mut g = dx.clone();
                layer.norm2.backward(&s.n2, &dh2, d, &mut g);
                g
            } else {
                da
            };
            if li == lowest {
                break;
            }
            layer.norm1.backward(&s.n1, &dh1, d, &mut dx_in);
            dx = dx_in;
        }
        Ok(Gradients { rows, losses })
    }

    /// Adds `Σ_t (P_out δ_t)(P_in x_t)ᵀ` of every example to its row (`x`: `[tokens, in_dim]`,
    /// `delta`: the slot's columns of a `[tokens, ld]` matrix), and the projected vectors' outer
    /// products and per-token contributions to `sinks`.
    fn project(
        &self,
        slot: &Slot,
        (x, in_dim): (&[f32], usize),
        (delta, ld): (&[f32], usize),
        starts: &[usize],
        (rows, dim): (&mut [f32], usize),
        sinks: &mut Sinks<'_>,
    ) {
        let n = *starts.last().unwrap_or(&0);
        let (p_in, p_out) = &self.mats[slot.projection];
        let (ri, ro) = self.ranks[slot.projection];
        let at = self.offsets[slot.projection];
        let mut xp = vec![0.0f32; n * ri];
        mm(
            n,
            ri,
            in_dim,
            &mut xp,
            ri,
            false,
            (x, in_dim, 1),
            (p_in, ri, 1),
        );
        let mut dp = vec![0.0f32; n * ro];
        mm(
            n,
            ro,
            slot.width,
            &mut dp,
            ro,
            false,
            (delta, ld, 1),
            (p_out, ro, 1),
        );
        if let Some(f) = sinks.factors.as_deref_mut() {
            f.add(slot.projection, &xp, &dp, n);
        }
        if let Some(t) = sinks.tokens.as_deref_mut() {
            let block = ri * ro;
            for (v, scores) in t.vectors.iter().zip(t.scores.iter_mut()) {
                // Y = A Vᵀ (tokens × r_out), then each token's s_t · y_t.
                let vl = &v[at..at + block];
                let mut y = vec![0.0f32; n * ro];
                mm(n, ro, ri, &mut y, ro, false, (&xp, ri, 1), (vl, 1, ri));
                for (k, sc) in scores.iter_mut().enumerate().take(n) {
                    let (s, y) = (&dp[k * ro..(k + 1) * ro], &y[k * ro..(k + 1) * ro]);
                    *sc += s
                        .iter()
                        .zip(y)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum::<f64>();
                }
            }
        }
        let block = ri * ro;
        for b in 0..starts.len() - 1 {
            let (s, t) = (starts[b], starts[b + 1] - starts[b]);
            let off = b * dim + at;
            mm(
                ro,
                ri,
                t,
                &mut rows[off..off + block],
                ri,
                false,
                (&dp[s * ro..], 1, ro),
                (&xp[s * ri..], ri, 1),
            );
        }
    }
}

/// `e^x` in f32 without a library call, so that loops over it vectorize: `2^k · e^r` with
/// `k = round(x / ln 2)` (by adding and subtracting 1.5·2²³), `r = x − k ln 2` split in two parts
/// (Cody–Waite), and `e^r` by its degree-7 Taylor polynomial (|r| ≤ ln 2 / 2: relative error below
/// 2·10⁻⁸, under one f32 ulp after rounding).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let k = shifted - ROUND;
    // `shifted`'s low mantissa bits are k in two's complement: no float-to-int conversion.
    // Wrapping operations, as |k| ≤ 127 cannot overflow: an overflow check (the release
    // profile keeps them) is a branch that stops every loop over `exp` from vectorizing.
    let ki = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits((ki.wrapping_add(127) as u32) << 23)
}

/// Defines `$name` calling `$inner` (an `#[inline(always)]` function) compiled for AVX2 and FMA
/// when the CPU has them, so that its loops vectorize 8-wide (f32; 4-wide f64); the default target
/// (x86-64) only allows SSE2. Integer steps inside such loops must not be overflow-checked (both
/// profiles keep the checks): a check's panic branch keeps the loop scalar.
macro_rules! vectorized {
    ($(#[$doc:meta])* fn $name:ident = $inner:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn wide($($arg: $ty),*) -> $ret {
                        $inner($($arg),*)
                    }
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}
pub(crate) use vectorized;

vectorized! {
    /// The activation and its derivative at every element of `x`.
    fn activate = activate_inner(a: Activation, x: &[f32]) -> (Vec<f32>, Vec<f32>)
}

vectorized! {
    /// Row-wise softmax of `scale ·` the lower triangle of a `t × t` matrix (causal attention);
    /// the upper triangle becomes 0.
    fn causal_softmax = causal_softmax_inner(p: &mut [f32], t: usize, scale: f32) -> ()
}

vectorized! {
    /// Turns `dp` (the gradient at the probabilities `p`) into the gradient at the scores, times
    /// `scale`: `p ⊙ (dp − rowsum(dp ⊙ p))`.
    fn causal_softmax_backward = causal_softmax_backward_inner(p: &[f32], dp: &mut [f32], t: usize, scale: f32) -> ()
}

vectorized! {
    /// Replaces `row` by `e^(row − max)` and returns the sum (in f64).
    fn exp_shifted = exp_shifted_inner(row: &mut [f32], max: f32) -> f64
}

#[inline(always)]
fn causal_softmax_inner(p: &mut [f32], t: usize, scale: f32) {
    for i in 0..t {
        let row = &mut p[i * t..(i + 1) * t];
        let mut max = f32::NEG_INFINITY;
        for v in row[..=i].iter_mut() {
            *v *= scale;
            max = max.max(*v);
        }
        let mut sum = 0.0;
        for v in row[..=i].iter_mut() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row[..=i].iter_mut().for_each(|v| *v *= inv);
        row[i + 1..].fill(0.0);
    }
}

#[inline(always)]
fn causal_softmax_backward_inner(p: &[f32], dp: &mut [f32], t: usize, scale: f32) {
    for i in 0..t {
        let pr = &p[i * t..(i + 1) * t];
        let dr = &mut dp[i * t..(i + 1) * t];
        let dot: f32 = pr[..=i].iter().zip(&dr[..=i]).map(|(a, b)| a * b).sum();
        for (d, p) in dr[..=i].iter_mut().zip(&pr[..=i]) {
            *d = p * (*d - dot) * scale;
        }
        dr[i + 1..].fill(0.0);
    }
}

#[inline(always)]
fn exp_shifted_inner(row: &mut [f32], max: f32) -> f64 {
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    // Blocks of f32 partial sums, added in f64.
    row.chunks(64).map(|c| c.iter().sum::<f32>() as f64).sum()
}

#[inline(always)]
fn activate_inner(a: Activation, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0f32; x.len()];
    let mut dy = vec![0.0f32; x.len()];
    match a {
        Activation::GeluTanh => {
            let k = (2.0 / std::f32::consts::PI).sqrt();
            for ((y, dy), &x) in y.iter_mut().zip(dy.iter_mut()).zip(x) {
                let u = k * (x + 0.044715 * x * x * x);
                // tanh u = 1 − 2 / (e^{2u} + 1).
                let t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
                *y = 0.5 * x * (1.0 + t);
                *dy =
                    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
            }
        }
        Activation::GeluErf => {
            for ((y, dy), &x) in y.iter_mut().zip(dy.iter_mut()).zip(x) {
                let x = x as f64;
                let cdf =
                    0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                *y = (x * cdf) as f32;
                *dy = (cdf + x * pdf) as f32;
            }
        }
        Activation::Silu => {
            for ((y, dy), &x) in y.iter_mut().zip(dy.iter_mut()).zip(x) {
                let s = 1.0 / (1.0 + exp(-x));
                *y = x * s;
                *dy = s * (1.0 + x * (1.0 - s));
            }
        }
        Activation::Relu => {
            for ((y, dy), &x) in y.iter_mut().zip(dy.iter_mut()).zip(x) {
                *y = x.max(0.0);
                *dy = if x > 0.0 { 1.0 } else { 0.0 };
            }
        }
    }
    (y, dy)
}

/// Where head `h`'s q, k and v start in a row of the fused output.
fn qkv_cols(h: usize, nh: usize, nkv: usize, hd: usize, per_head: bool) -> [usize; 3] {
    if per_head {
        [h * 3 * hd, h * 3 * hd + hd, h * 3 * hd + 2 * hd]
    } else {
        [h * hd, nh * hd + h * hd, (nh + nkv) * hd + h * hd]
    }
}

fn split_qkv(
    qkv: &[f32],
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    per_head: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let w = qkv.len() / n.max(1);
    let mut q = vec![0.0f32; n * nh * hd];
    let mut k = vec![0.0f32; n * nkv * hd];
    let mut v = vec![0.0f32; n * nkv * hd];
    for r in 0..n {
        let row = &qkv[r * w..(r + 1) * w];
        for h in 0..nh {
            let [cq, ck, cv] = qkv_cols(h, nh, nkv, hd, per_head);
            q[(r * nh + h) * hd..(r * nh + h + 1) * hd].copy_from_slice(&row[cq..cq + hd]);
            if h < nkv {
                k[(r * nkv + h) * hd..(r * nkv + h + 1) * hd].copy_from_slice(&row[ck..ck + hd]);
                v[(r * nkv + h) * hd..(r * nkv + h + 1) * hd].copy_from_slice(&row[cv..cv + hd]);
            }
        }
    }
    (q, k, v)
}

#[allow(clippy::too_many_arguments)]
fn join_qkv(
    dq: &[f32],
    dk: &[f32],
    dv: &[f32],
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    per_head: bool,
) -> Vec<f32> {
    let w = (nh + 2 * nkv) * hd;
    let mut out = vec![0.0f32; n * w];
    for r in 0..n {
        let row = &mut out[r * w..(r + 1) * w];
        for h in 0..nh {
            let [cq, ck, cv] = qkv_cols(h, nh, nkv, hd, per_head);
            row[cq..cq + hd].copy_from_slice(&dq[(r * nh + h) * hd..(r * nh + h + 1) * hd]);
            if h < nkv {
                row[ck..ck + hd].copy_from_slice(&dk[(r * nkv + h) * hd..(r * nkv + h + 1) * hd]);
                row[cv..cv + hd].copy_from_slice(&dv[(r * nkv + h) * hd..(r * nkv + h + 1) * hd]);
            }
        }
    }
    out
}

/// Rotary embedding of the first `dims` features of every head: `x cos + rot(x) sin` with
/// `rot([a, b]) = [−b, a]`; with `transpose`, its adjoint `x cos + rotᵀ(x sin)`, which maps an
/// output gradient to the input gradient.
#[allow(clippy::too_many_arguments)]
fn rotate(
    x: &mut [f32],
    heads: usize,
    hd: usize,
    dims: usize,
    pos_of: &[usize],
    cos: &[f32],
    sin: &[f32],
    transpose: bool,
) {
    let half = dims / 2;
    for (r, &p) in pos_of.iter().enumerate() {
        let (c, s) = (
            &cos[p * dims..(p + 1) * dims],
            &sin[p * dims..(p + 1) * dims],
        );
        for h in 0..heads {
            let v = &mut x[(r * heads + h) * hd..(r * heads + h) * hd + dims];
            for i in 0..half {
                let (a, b) = (v[i], v[i + half]);
                if transpose {
                    v[i] = a * c[i] + b * s[i + half];
                    v[i + half] = b * c[i + half] - a * s[i];
                } else {
                    v[i] = a * c[i] - b * s[i];
                    v[i + half] = b * c[i + half] + a * s[i + half];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_the_library() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 2.5e-7, "{worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn activations_and_derivatives_match_finite_differences() {
        let xs: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.1).collect();
        for a in [
            Activation::GeluTanh,
            Activation::GeluErf,
            Activation::Silu,
            Activation::Relu,
        ] {
            let (y, dy) = activate(a, &xs);
            for (i, &x) in xs.iter().enumerate() {
                let h = 1e-3f64;
                let f = |x: f64| -> f64 {
                    let x = x as f32;
                    activate(a, &[x]).0[0] as f64
                };
                let reference = match a {
                    Activation::GeluTanh => {
                        let x = x as f64;
                        0.5 * x
                            * (1.0
                                + ((2.0 / std::f64::consts::PI).sqrt()
                                    * (x + 0.044715 * x * x * x))
                                    .tanh())
                    }
                    Activation::Silu => x as f64 / (1.0 + (-x as f64).exp()),
                    _ => y[i] as f64,
                };
                assert!((y[i] as f64 - reference).abs() < 1e-5, "{a:?} at {x}");
                if a == Activation::Relu && x.abs() < 0.05 {
                    continue;
                }
                let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
                assert!(
                    (dy[i] as f64 - fd).abs() < 2e-3,
                    "{a:?}' at {x}: {} vs {fd}",
                    dy[i]
                );
            }
        }
    }
}

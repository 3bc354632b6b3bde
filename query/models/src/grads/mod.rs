//! Per-example projected gradients of linear layers (LoGra: Choe et al. 2024, "What is Your Data
//! Worth to GPT?").
//!
//! For a linear layer `y = x W` (`W` is `[in, out]`), the gradient of an example's loss is
//! `Σ_t x_tᵀ δ_t`, with `δ_t = ∂loss/∂y_t`. With fixed random projections `P_in` (`r_in × in`) and
//! `P_out` (`r_out × out`), the projected gradient `P_out (Σ_t x_tᵀ δ_t)ᵀ P_inᵀ` equals
//! `Σ_t (P_out δ_t)(P_in x_t)ᵀ`: an `r_out × r_in` matrix computed from the projected inputs and
//! output gradients, without ever forming the `in × out` gradient. An example's row is these
//! matrices (row-major), one per selected layer in the order of
//! [`Transformer::linear_layers`](crate::model::Transformer::linear_layers).
//!
//! The projections are Gaussian with variance `1/r`, so they preserve norms in expectation
//! (Johnson–Lindenstrauss), and are regenerated from a [`ProjectionSpec`] (seed, ranks, layers):
//! a store records the spec, and a query rebuilds the same matrices.
//!
//! The output head (`logits = h W_U`, [`HEAD`]) is a linear layer too, with `x_t` the final
//! normed hidden state and `δ_t = softmax(logits_t) − onehot(y_t)`. Its vocabulary side is
//! whitened before it is projected: `P_out` is applied to `D^{-1/2} δ_t`, with `D` the diagonal of
//! the head's output-side Kronecker factor `E[δ δᵀ]` ([`HeadFactor`], fitted on the store's
//! documents; damped). Without it, a random projection mixes every vocabulary entry, and the rows
//! of frequent tokens — whose gradients are largest — drown the rare tokens that single a
//! document out (a fact's answer); with it, projected inner products approximate
//! `δ_qᵀ D⁻¹ δ_d`, the gradient inner product under the head's diagonal Fisher.
//!
//! The loss of an [`Example`] is the summed negative log-likelihood of its target tokens, so rows
//! of a batch are independent per-example gradients (right padding is exact under causal
//! attention, and padded positions have no loss).

pub mod build;
pub mod ekfac;
pub mod fast;
pub mod linalg;
pub mod optimizer;
pub mod store;

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::finite;
use crate::model::transformer::{candle_error, log_softmax_last, LinearGroup, HEAD};
use crate::model::{Capture, Transformer};
use familiar::rng::SplitMix64;

/// One linear layer of a projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// The checkpoint's module name.
    pub name: String,
    /// Input features.
    pub input: usize,
    /// Output features.
    pub output: usize,
    /// This layer's output-side rank when it is not the spec's `rank_out` (the output head's
    /// vocabulary side, [`ProjectionSpec::with_head_rank`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_out: Option<usize>,
}

impl LayerSpec {
    /// The layer as the model has it, whatever its ranks.
    fn shape(&self) -> (&str, usize, usize) {
        (&self.name, self.input, self.output)
    }
}

/// How the output head's vocabulary side is whitened (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadWhitening {
    /// `D + damping · mean(D)` is inverted.
    pub damping: f64,
    /// The factor is fitted on at most about this many predicted tokens, from evenly spaced
    /// documents.
    pub max_tokens: u64,
}

impl Default for HeadWhitening {
    fn default() -> HeadWhitening {
        HeadWhitening {
            damping: 1e-3,
            max_tokens: 1_000_000,
        }
    }
}

/// Everything that determines a projection; two equal specs give identical matrices (with the
/// same [`HeadFactor`] when the output head is projected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionSpec {
    /// Seed of the random matrices.
    pub seed: u64,
    /// Rank of the input projection.
    pub rank_in: usize,
    /// Rank of the output projection.
    pub rank_out: usize,
    /// `all`, `attention` or `mlp`.
    pub group: String,
    /// The selected layers, in forward order (the output head last).
    pub layers: Vec<LayerSpec>,
    /// The output head's whitening, when the head is projected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_whitening: Option<HeadWhitening>,
    /// The optimizer correction every gradient is divided by before it is projected
    /// ([`optimizer`]), when the store was built with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<optimizer::OptimizerCorrection>,
}

/// The name of a layer group in specs and on the command line.
pub fn group_name(g: LinearGroup) -> &'static str {
    match g {
        LinearGroup::All => "all",
        LinearGroup::Blocks => "blocks",
        LinearGroup::Attention => "attention",
        LinearGroup::Mlp => "mlp",
        LinearGroup::Output => "output",
    }
}

/// The layer group named `name`.
pub fn parse_group(name: &str) -> Result<LinearGroup> {
    match name {
        "all" => Ok(LinearGroup::All),
        "blocks" => Ok(LinearGroup::Blocks),
        "attention" => Ok(LinearGroup::Attention),
        "mlp" => Ok(LinearGroup::Mlp),
        "output" => Ok(LinearGroup::Output),
        other => Err(Error::config(format!(
            "unknown layer group `{other}`: expected all, blocks, attention, mlp or output"
        ))),
    }
}

impl ProjectionSpec {
    /// The spec for `model`'s layers of `group`.
    pub fn new(
        model: &Transformer,
        group: LinearGroup,
        rank_in: usize,
        rank_out: usize,
        seed: u64,
    ) -> Result<ProjectionSpec> {
        if rank_in == 0 || rank_out == 0 {
            return Err(Error::config("projection ranks must be at least 1"));
        }
        let mut layers = Vec::new();
        for l in model.linear_layers() {
            if !group.selects(l.group) {
                continue;
            }
            let (input, output) = (l.weight.dim(0), l.weight.dim(1));
            layers.push(LayerSpec {
                name: l.name.clone(),
                input: input.map_err(candle_error("layer shape"))?,
                output: output.map_err(candle_error("layer shape"))?,
                rank_out: None,
            });
        }
        let head = group.selects(LinearGroup::Output);
        if head {
            layers.push(LayerSpec {
                name: HEAD.to_string(),
                input: model.config.hidden,
                output: model.config.vocab_size,
                rank_out: None,
            });
        }
        if let Some(l) = layers
            .iter()
            .find(|l| rank_in > l.input || rank_out > l.output)
        {
            return Err(Error::config(format!(
                "rank {rank_in}×{rank_out} exceeds layer {} ({} inputs, {} outputs)",
                l.name, l.input, l.output
            )));
        }
        if layers.is_empty() {
            return Err(Error::config(format!(
                "the model has no {} linear layers",
                group_name(group)
            )));
        }
        Ok(ProjectionSpec {
            seed,
            rank_in,
            rank_out,
            group: group_name(group).to_string(),
            layers,
            head_whitening: head.then(HeadWhitening::default),
            optimizer: None,
        })
    }

    /// Whether the output head is among the layers.
    pub fn has_head(&self) -> bool {
        self.layers.last().is_some_and(|l| l.name == HEAD)
    }

    /// The spec with the output head's vocabulary side projected to `rank` instead of
    /// `rank_out` (at most the vocabulary; the vocabulary itself projects it without loss). A
    /// spec without the head is refused.
    pub fn with_head_rank(mut self, rank: usize) -> Result<ProjectionSpec> {
        if !self.has_head() {
            return Err(Error::config(
                "a rank for the output head was given, but the head is not among the layers",
            ));
        }
        let head = self.layers.last_mut().expect("the head is the last layer");
        if rank == 0 || rank > head.output {
            return Err(Error::config(format!(
                "output-head rank {rank}: expected 1 to the vocabulary's {} entries",
                head.output
            )));
        }
        head.rank_out = (rank != self.rank_out).then_some(rank);
        Ok(self)
    }

    /// The output head's vocabulary-side rank of a store built without one: 4 × `rank_out`,
    /// narrowed so that the head's block (`rank_in` × it) keeps its second moments
    /// ([`store::MAX_DENSE_BLOCK`]), never below `rank_out` nor above the vocabulary. At the
    /// default rank 32 that is 128: of the head ranks measured it raised the LDS from 0.35 to
    /// 0.51 on a generated world (0.33 to 0.45 on another) and the stating document of a planted
    /// fact first from 56, 53 and 51 to 56, 55 and 53 of 60 with ekfac, while fisher and
    /// trackstar still score the store (benches/README.md). `None` without the head.
    pub fn default_head_rank(&self) -> Option<usize> {
        let head = self.layers.last().filter(|_| self.has_head())?;
        let wide = (4 * self.rank_out).min(store::MAX_DENSE_BLOCK / self.rank_in);
        Some(wide.max(self.rank_out).min(head.output))
    }

    /// Layer `l`'s ranks: input side, output side.
    pub fn ranks(&self, l: usize) -> (usize, usize) {
        (
            self.rank_in,
            self.layers[l].rank_out.unwrap_or(self.rank_out),
        )
    }

    /// Every layer's ranks, in order.
    pub fn all_ranks(&self) -> Vec<(usize, usize)> {
        (0..self.layers.len()).map(|l| self.ranks(l)).collect()
    }

    /// Values per layer: `rank_out × rank_in` of each.
    pub fn blocks(&self) -> Vec<usize> {
        (0..self.layers.len())
            .map(|l| {
                let (ri, ro) = self.ranks(l);
                ri * ro
            })
            .collect()
    }

    /// Where each layer's block starts in a row, and the row's length last.
    pub fn offsets(&self) -> Vec<usize> {
        offsets(&self.blocks())
    }

    /// Values per example: the sum of the layers' blocks.
    pub fn dim(&self) -> usize {
        self.blocks().iter().sum()
    }

    /// The projection matrices, transposed for right multiplication: per layer `P_inᵀ`
    /// (`[input, rank_in]`) and `P_outᵀ` (`[output, rank_out]`), row-major f32.
    pub fn matrices(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        let mut rng = SplitMix64::new(self.seed);
        (0..self.layers.len())
            .map(|k| {
                let l = &self.layers[k];
                let (ri, ro) = self.ranks(k);
                let p_in = rng.normals(l.input * ri, 1.0 / (ri as f64).sqrt());
                let p_out = rng.normals(l.output * ro, 1.0 / (ro as f64).sqrt());
                (p_in, p_out)
            })
            .collect()
    }
}

/// The start of each of `blocks` laid end to end, and their total last.
pub fn offsets(blocks: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(blocks.len() + 1);
    let mut at = 0;
    out.push(0);
    for b in blocks {
        at += b;
        out.push(at);
    }
    out
}

/// The diagonal of the output head's output-side Kronecker factor: per vocabulary entry `v`,
/// `Σ_t (p_t[v] − [y_t = v])²` over `tokens` predicted tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadFactor {
    /// Per vocabulary entry.
    pub sums: Vec<f64>,
    /// Predicted tokens summed.
    pub tokens: u64,
}

impl HeadFactor {
    /// Nothing summed yet, for a vocabulary of `vocab`.
    pub fn zero(vocab: usize) -> HeadFactor {
        HeadFactor {
            sums: vec![0.0; vocab],
            tokens: 0,
        }
    }

    /// Adds `other`'s sums.
    pub fn merge(&mut self, other: &HeadFactor) {
        self.sums
            .iter_mut()
            .zip(&other.sums)
            .for_each(|(a, b)| *a += b);
        self.tokens += other.tokens;
    }

    /// The factor over `examples`' predicted tokens under `model`: one forward pass per batch of
    /// `batch` examples (right-padded, which causal attention leaves exact). Non-finite logits
    /// are an error ([`Error::NonFinite`]) naming the example's index. Candle's forward pass: the
    /// reference of [`fast::FastGradients::head_factor`], which stores fit it with.
    pub fn of_examples(
        model: &Transformer,
        examples: &[Example],
        batch: usize,
    ) -> Result<HeadFactor> {
        let vocab = model.config.vocab_size;
        let mut f = HeadFactor::zero(vocab);
        let counted: Vec<(usize, &Example)> = examples
            .iter()
            .enumerate()
            .filter(|(_, e)| e.targets() > 0)
            .collect();
        for group in counted.chunks(batch.max(1)) {
            let t = group.iter().map(|(_, e)| e.ids.len()).max().unwrap_or(0);
            let ids: Vec<Vec<u32>> = group
                .iter()
                .map(|(_, e)| {
                    let mut v = e.ids.clone();
                    v.resize(t, 0);
                    v
                })
                .collect();
            let out = model.forward(&ids, Capture::default())?;
            let logits = out
                .logits
                .to_dtype(DType::F32)
                .and_then(|l| l.to_vec3::<f32>())
                .map_err(candle_error("output-head factor"))?;
            let mut exps = vec![0.0f32; vocab];
            for ((i, e), rows) in group.iter().zip(&logits) {
                for j in e.first_target.max(1)..e.ids.len() {
                    // The softmax of the logits predicting token j.
                    let row = &rows[j - 1];
                    // A NaN sum would be written to the factor file and refused when read.
                    if let Some(bad) = finite::scan(row) {
                        return Err(finite::within(
                            finite::values_error(format!("the logits predicting token {j}"), &bad),
                            format!("example {i}"),
                        ));
                    }
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut z = 0.0f64;
                    for (x, &l) in exps.iter_mut().zip(row) {
                        *x = (l - max).exp();
                        z += *x as f64;
                    }
                    let inv = 1.0 / z;
                    for (s, &x) in f.sums.iter_mut().zip(&exps) {
                        let p = x as f64 * inv;
                        *s += p * p;
                    }
                    // (p − 1)² = p² − 2p + 1 at the target.
                    let y = e.ids[j] as usize;
                    f.sums[y] += 1.0 - 2.0 * exps[y] as f64 * inv;
                    f.tokens += 1;
                }
            }
        }
        Ok(f)
    }

    /// The whitening weights `w_v ∝ (D_v + damping · mean(D))^{-1/2}` (`D = sums / tokens`),
    /// scaled so that `Σ_v w_v² D_v = Σ_v D_v`: the head's expected squared gradient keeps its
    /// size, so that the head weighs as much beside the other layers as unwhitened. All ones when
    /// nothing was summed.
    pub fn weights(&self, damping: f64) -> Vec<f32> {
        let total: f64 = self.sums.iter().sum();
        if self.tokens == 0 || total <= 0.0 || self.sums.is_empty() {
            return vec![1.0; self.sums.len()];
        }
        let d: Vec<f64> = self.sums.iter().map(|s| s / self.tokens as f64).collect();
        let floor = damping.max(f64::MIN_POSITIVE) * d.iter().sum::<f64>() / d.len() as f64;
        let w: Vec<f64> = d.iter().map(|d| 1.0 / (d + floor).sqrt()).collect();
        let kept: f64 = w.iter().zip(&d).map(|(w, d)| w * w * d).sum();
        let c = (d.iter().sum::<f64>() / kept).sqrt();
        w.iter().map(|w| (w * c) as f32).collect()
    }
}

/// A projection's matrices on a model's device, checked against the model's layers.
#[derive(Debug, Clone)]
pub struct Projection {
    /// What it is.
    pub spec: ProjectionSpec,
    group: LinearGroup,
    /// Per layer: `P_inᵀ` `[input, rank_in]` and `P_outᵀ` `[output, rank_out]` (the head's rows
    /// scaled by its whitening weights), row-major f32.
    host: Vec<(Vec<f32>, Vec<f32>)>,
    /// The same on the model's device.
    mats: Vec<(Tensor, Tensor)>,
}

impl Projection {
    /// Builds the matrices of `spec` for `model`; the model's layers must be the spec's. A spec
    /// that projects the output head needs its fitted `head` factor; others take none.
    pub fn new(
        spec: ProjectionSpec,
        model: &Transformer,
        head: Option<&HeadFactor>,
    ) -> Result<Projection> {
        Projection::corrected(spec, model, head, None)
    }

    /// [`Projection::new`] for a spec with an optimizer correction: its `scales` fold into the
    /// matrices (`P_in diag(s_in)`, `P_out diag(s_out)`, see [`optimizer`]).
    pub fn corrected(
        spec: ProjectionSpec,
        model: &Transformer,
        head: Option<&HeadFactor>,
        scales: Option<&optimizer::OptimizerScales>,
    ) -> Result<Projection> {
        let group = parse_group(&spec.group)?;
        let own = ProjectionSpec::new(model, group, spec.rank_in, spec.rank_out, spec.seed)?;
        if !own
            .layers
            .iter()
            .map(LayerSpec::shape)
            .eq(spec.layers.iter().map(LayerSpec::shape))
        {
            return Err(Error::config(format!(
                "the model's {} linear layers differ from the projection's ({} vs {} layers{})",
                spec.group,
                own.layers.len(),
                spec.layers.len(),
                if own.has_head() && !spec.has_head() {
                    format!(
                        "; stores made before the output head was projected: rebuild the store, \
                         or keep the blocks' layers with {} blocks",
                        familiar::option::name("layers")
                    )
                } else {
                    String::new()
                }
            )));
        }
        let mut host = spec.matrices();
        match (&spec.head_whitening, head) {
            (Some(w), Some(f)) => {
                if f.sums.len() != model.config.vocab_size {
                    return Err(Error::config(format!(
                        "the output-head factor covers {} tokens, the model's vocabulary {}",
                        f.sums.len(),
                        model.config.vocab_size
                    )));
                }
                let weights = f.weights(w.damping);
                let (_, ro) = spec.ranks(spec.layers.len() - 1);
                if let Some((_, p_out)) = host.last_mut() {
                    for (row, w) in p_out.chunks_exact_mut(ro).zip(&weights) {
                        row.iter_mut().for_each(|x| *x *= w);
                    }
                }
            }
            (Some(_), None) => {
                return Err(Error::config(
                    "the projection whitens the output head: its fitted factor is needed",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "an output-head factor was given for a projection without the head",
                ))
            }
            (None, None) => {}
        }
        match (&spec.optimizer, scales) {
            (Some(_), Some(s)) => {
                if s.layers.len() != spec.layers.len()
                    || s.layers
                        .iter()
                        .zip(&spec.layers)
                        .any(|((a, b), l)| a.len() != l.input || b.len() != l.output)
                {
                    return Err(Error::config(
                        "the optimizer scales do not match the projection's layers",
                    ));
                }
                for (k, ((p_in, p_out), (s_in, s_out))) in
                    host.iter_mut().zip(&s.layers).enumerate()
                {
                    let (ri, ro) = spec.ranks(k);
                    for (row, s) in p_in.chunks_exact_mut(ri).zip(s_in) {
                        row.iter_mut().for_each(|x| *x = (*x as f64 * s) as f32);
                    }
                    for (row, s) in p_out.chunks_exact_mut(ro).zip(s_out) {
                        row.iter_mut().for_each(|x| *x = (*x as f64 * s) as f32);
                    }
                }
            }
            (Some(_), None) => {
                return Err(Error::config(
                    "the projection corrects gradients by the optimizer's second moment: its \
                     scales are needed",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "optimizer scales were given for a projection without the correction",
                ))
            }
            (None, None) => {}
        }
        let bug = candle_error("projection");
        let mats = host
            .iter()
            .cloned()
            .zip(&spec.layers)
            .enumerate()
            .map(|(k, ((p_in, p_out), l))| {
                let t = |v: Vec<f32>, rows: usize, cols: usize| {
                    Tensor::from_vec(v, (rows, cols), model.device())
                        .and_then(|t| t.to_dtype(model.dtype()))
                        .map_err(&bug)
                };
                let (ri, ro) = spec.ranks(k);
                Ok((t(p_in, l.input, ri)?, t(p_out, l.output, ro)?))
            })
            .collect::<Result<_>>()?;
        Ok(Projection {
            spec,
            group,
            host,
            mats,
        })
    }

    /// The layer group.
    pub fn group(&self) -> LinearGroup {
        self.group
    }

    /// Per layer `P_inᵀ` and `P_outᵀ` as applied (the head's whitened), row-major f32.
    pub fn host_matrices(&self) -> &[(Vec<f32>, Vec<f32>)] {
        &self.host
    }
}

/// A token sequence and the tokens whose prediction counts towards its loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids (at most the model's context).
    pub ids: Vec<u32>,
    /// Tokens `ids[j]` for `j ≥ max(first_target, 1)` are predicted from those before them.
    pub first_target: usize,
}

impl Example {
    /// Number of predicted tokens.
    pub fn targets(&self) -> usize {
        self.ids.len().saturating_sub(self.first_target.max(1))
    }
}

/// Projected gradients of a batch of examples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gradients {
    /// `[examples, dim]`, row-major.
    pub rows: Vec<f32>,
    /// Each example's summed negative log-likelihood (nats).
    pub losses: Vec<f64>,
}

/// Projected gradients of `examples` through candle's autograd: one forward and backward pass
/// over the padded batch, the linear layers' inputs and output probes projected per example. The
/// reference path (any family, any device); [`fast`] computes the same for the CPU without
/// autograd.
pub fn projected_gradients(
    model: &Transformer,
    projection: &Projection,
    examples: &[Example],
) -> Result<Gradients> {
    projected_gradients_factored(model, projection, examples, None)
}

/// [`projected_gradients`], also adding the examples' projected inputs' and output gradients'
/// outer products to `factors` when given (EK-FAC's Kronecker sums, every position of every
/// example counted, as [`fast::FastGradients::compute_factored`] counts them; the padding is
/// not): the path of a store built on a device other than the CPU (`--device cuda`).
pub fn projected_gradients_factored(
    model: &Transformer,
    projection: &Projection,
    examples: &[Example],
    factors: Option<&mut ekfac::KronSums>,
) -> Result<Gradients> {
    let dim = projection.spec.dim();
    if let Some(f) = &factors {
        if f.ranks != projection.spec.all_ranks() {
            return Err(Error::bug(format!(
                "Kronecker sums of ranks {:?} for a projection of ranks {:?}",
                f.ranks,
                projection.spec.all_ranks()
            )));
        }
    }
    if examples.is_empty() {
        return Ok(Gradients::default());
    }
    let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    if t < 2 || examples.iter().all(|e| e.targets() == 0) {
        return Ok(Gradients {
            rows: vec![0.0; examples.len() * dim],
            losses: vec![0.0; examples.len()],
        });
    }
    let b = examples.len();
    let ids: Vec<Vec<u32>> = examples
        .iter()
        .map(|e| {
            let mut v = e.ids.clone();
            v.resize(t, 0);
            v
        })
        .collect();
    let out = model.forward(
        &ids,
        Capture {
            linear: Some(projection.group),
            ..Capture::default()
        },
    )?;
    let mut targets = Vec::with_capacity(b * (t - 1));
    let mut mask = Vec::with_capacity(b * (t - 1));
    for e in examples {
        for j in 1..t {
            let counted = j < e.ids.len() && j >= e.first_target;
            targets.push(if counted { e.ids[j] } else { 0 });
            mask.push(if counted { 1.0f32 } else { 0.0 });
        }
    }
    let device = model.device();
    let taps = factors.is_some();
    // Rows, losses and, for the factors, each layer's projected inputs and output gradients
    // (`b × t × rank`, padding included).
    type Taps = Vec<(Vec<f32>, Vec<f32>)>;
    let f = || -> candle_core::Result<(Vec<f32>, Vec<f64>, Taps)> {
        let v = out.logits.dim(2)?;
        let lp = log_softmax_last(&out.logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?)?;
        let idx = Tensor::from_vec(targets, (b * (t - 1), 1), device)?;
        let mask = Tensor::from_vec(mask, (b, t - 1), device)?.to_dtype(lp.dtype())?;
        let nll = (lp.gather(&idx, 1)?.reshape((b, t - 1))? * mask)?.neg()?;
        let losses = nll.sum(1)?;
        let grads = losses.sum_all()?.backward()?;
        let mut blocks = Vec::with_capacity(out.linear.len());
        let mut tapped = Vec::new();
        for (k, (c, (p_in, p_out))) in out.linear.iter().zip(&projection.mats).enumerate() {
            let (ri, ro) = projection.spec.ranks(k);
            let (_, _, i) = c.input.dims3()?;
            let delta = match grads.get(c.probe.as_tensor()) {
                Some(d) => d.clone(),
                None => c.probe.as_tensor().zeros_like()?,
            };
            let o = delta.dim(2)?;
            let xp = c
                .input
                .reshape((b * t, i))?
                .matmul(p_in)?
                .reshape((b, t, ri))?;
            let dp = delta
                .reshape((b * t, o))?
                .matmul(p_out)?
                .reshape((b, t, ro))?;
            let g = dp.transpose(1, 2)?.contiguous()?.matmul(&xp)?;
            blocks.push(g.reshape((b, ri * ro))?);
            if taps {
                let host = |x: &Tensor| x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
                tapped.push((host(&xp)?, host(&dp)?));
            }
        }
        let rows = Tensor::cat(&blocks, D::Minus1)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let losses = losses.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok((rows, losses, tapped))
    };
    let (rows, losses, tapped) = f().map_err(candle_error("projected gradients"))?;
    if let Some(sums) = factors {
        sums.count(examples.iter().map(|e| e.ids.len()).sum());
        for (k, (xp, dp)) in tapped.iter().enumerate() {
            let (ri, ro) = projection.spec.ranks(k);
            for (i, e) in examples.iter().enumerate() {
                let (at, n) = (i * t, e.ids.len());
                sums.add(
                    k,
                    &xp[at * ri..(at + n) * ri],
                    &dp[at * ro..(at + n) * ro],
                    n,
                );
            }
        }
    }
    Ok(Gradients { rows, losses })
}

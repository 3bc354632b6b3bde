//! `familiar train`: a small GPT-2-style model trained on an index's tokens.
//!
//! The model's vocabulary is the tokenizer's plus one id, the index's document separator, which the
//! model learns as its end-of-document token (`bos_token_id` = `eos_token_id` = separator). Batches
//! are windows of `context + 1` tokens drawn uniformly at random (SplitMix64, seeded) from the
//! concatenated shards; the loss is the mean next-token cross-entropy. Optimizer: AdamW (decoupled
//! weight decay on matrices only), linear warmup then cosine decay to a tenth of the peak rate,
//! gradient clipping by global norm.
//!
//! Checkpoints are Hugging Face model directories (`config.json`, `model.safetensors`,
//! `tokenizer.json`) that `transformers` loads as `GPT2LMHeadModel`; beside them
//! `optimizer.safetensors` (AdamW moments) and `trainer_state.json` (step, random state, options,
//! loss history) make a stopped run resume where it was, with the same batches.
//!
//! A non-finite loss, gradient norm or updated weight stops the run with an error naming the
//! step ([`Error::NonFinite`]); the checkpoint on disk stays the last good one.

use familiar::option::{name, names, names_or};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::grads::optimizer::OPTIMIZER_FILE;
use crate::model::finite;
use crate::model::transformer::{candle_error, log_softmax_last, LoadOptions};
use crate::model::{Capture, Transformer};
use candle_core::{DType, Device, Tensor, Var};
use familiar::index::{Index, ShardTokens};
use familiar::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// The size of the model and the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Context length (tokens per training window).
    pub context: usize,
    /// Windows per step.
    pub batch: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps.
    pub warmup: u64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Gradient clipping (global L2 norm).
    pub clip: f64,
    /// Seed of the initialization and of the batches.
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            layers: 2,
            hidden: 64,
            heads: 4,
            context: 64,
            batch: 16,
            steps: 300,
            lr: 3e-3,
            warmup: 30,
            weight_decay: 0.1,
            clip: 1.0,
            seed: 20241124,
            checkpoint_every: 100,
        }
    }
}

/// `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps done.
    pub step: u64,
    /// The batch generator's state.
    pub rng: u64,
    /// Options of the run.
    pub options: TrainOptions,
    /// The index trained on (its tokenizer hash, to refuse resuming on another).
    pub tokenizer_hash: String,
    /// Loss after each step.
    pub losses: Vec<f64>,
    /// Tokens trained on.
    pub tokens: u64,
}

impl TrainerState {
    /// The state of the model trained in `dir` (its `trainer_state.json`).
    pub fn read(dir: &Path) -> Result<TrainerState> {
        let path = dir.join(STATE_FILE);
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| Error::io(&path, e))?)
            .map_err(|e| Error::corrupt(&path, e.to_string()))
    }
}

const STATE_FILE: &str = "trainer_state.json";

/// The `config.json` of a GPT-2 of this size.
pub fn gpt2_config(o: &TrainOptions, vocab: usize, eos: u32) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab,
        "n_embd": o.hidden,
        "n_layer": o.layers,
        "n_head": o.heads,
        "n_positions": o.context,
        "n_inner": null,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": true,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "dtype": "float32",
    })
}

/// GPT-2's initialization: normal(0, 0.02) matrices and embeddings, output projections scaled by
/// 1/√(2·layers), zero biases, unit norm scales.
pub fn init_weights(
    o: &TrainOptions,
    vocab: usize,
    rng: &mut SplitMix64,
) -> Result<HashMap<String, Tensor>> {
    let mut normal = |shape: &[usize], std: f64| -> Result<Tensor> {
        let v = rng.normals(shape.iter().product(), std);
        Tensor::from_vec(v, shape, &Device::Cpu).map_err(candle_error("init"))
    };
    let full = |shape: &[usize], x: f32| -> Result<Tensor> {
        Tensor::full(x, shape, &Device::Cpu).map_err(candle_error("init"))
    };
    let (h, i) = (o.hidden, 4 * o.hidden);
    let proj_std = 0.02 / (2.0 * o.layers as f64).sqrt();
    let mut w = HashMap::new();
    w.insert("transformer.wte.weight".into(), normal(&[vocab, h], 0.02)?);
    w.insert(
        "transformer.wpe.weight".into(),
        normal(&[o.context, h], 0.01)?,
    );
    for l in 0..o.layers {
        let p = format!("transformer.h.{l}");
        w.insert(format!("{p}.ln_1.weight"), full(&[h], 1.0)?);
        w.insert(format!("{p}.ln_1.bias"), full(&[h], 0.0)?);
        w.insert(
            format!("{p}.attn.c_attn.weight"),
            normal(&[h, 3 * h], 0.02)?,
        );
        w.insert(format!("{p}.attn.c_attn.bias"), full(&[3 * h], 0.0)?);
        w.insert(
            format!("{p}.attn.c_proj.weight"),
            normal(&[h, h], proj_std)?,
        );
        w.insert(format!("{p}.attn.c_proj.bias"), full(&[h], 0.0)?);
        w.insert(format!("{p}.ln_2.weight"), full(&[h], 1.0)?);
        w.insert(format!("{p}.ln_2.bias"), full(&[h], 0.0)?);
        w.insert(format!("{p}.mlp.c_fc.weight"), normal(&[h, i], 0.02)?);
        w.insert(format!("{p}.mlp.c_fc.bias"), full(&[i], 0.0)?);
        w.insert(format!("{p}.mlp.c_proj.weight"), normal(&[i, h], proj_std)?);
        w.insert(format!("{p}.mlp.c_proj.bias"), full(&[h], 0.0)?);
    }
    w.insert("transformer.ln_f.weight".into(), full(&[h], 1.0)?);
    w.insert("transformer.ln_f.bias".into(), full(&[h], 0.0)?);
    Ok(w)
}

/// The training data: every shard's tokens, as one stream of `u32`.
pub(crate) struct Data {
    pub(crate) tokens: Vec<u32>,
}

impl Data {
    /// The documents marked in `keep` (by global id), each followed by the separator.
    fn subset(index: &Index, keep: &[bool]) -> Result<Data> {
        if keep.len() as u64 != index.documents() {
            return Err(Error::bug(format!(
                "a subset of {} documents for an index of {}",
                keep.len(),
                index.documents()
            )));
        }
        let sep = index.manifest().separator;
        let mut tokens = Vec::new();
        for (d, _) in keep.iter().enumerate().filter(|k| *k.1) {
            tokens.extend(index.doc_tokens(d as u64, 0, u64::MAX)?);
            tokens.push(sep);
        }
        Ok(Data { tokens })
    }

    pub(crate) fn new(index: &Index) -> Data {
        let mut tokens = Vec::with_capacity(index.manifest().tokens as usize);
        for s in index.shards() {
            match &s.tokens {
                ShardTokens::U16(t) => tokens.extend(t.tokens().iter().map(|&x| u32::from(x))),
                ShardTokens::U32(t) => tokens.extend_from_slice(t.tokens()),
            }
        }
        Data { tokens }
    }

    /// `batch` windows of `window` tokens at uniformly random starts.
    pub(crate) fn batch(&self, rng: &mut SplitMix64, batch: usize, window: usize) -> Vec<Vec<u32>> {
        let starts = (self.tokens.len() - window) as u64;
        (0..batch)
            .map(|_| {
                let s = rng.below(starts + 1) as usize;
                self.tokens[s..s + window].to_vec()
            })
            .collect()
    }
}

/// Mean next-token cross-entropy of `windows` (each `context + 1` tokens).
pub fn loss(model: &Transformer, windows: &[Vec<u32>]) -> Result<Tensor> {
    let inputs: Vec<Vec<u32>> = windows.iter().map(|w| w[..w.len() - 1].to_vec()).collect();
    let targets: Vec<u32> = windows
        .iter()
        .flat_map(|w| w[1..].iter().copied())
        .collect();
    let out = model.forward(&inputs, Capture::default())?;
    let f = || -> candle_core::Result<Tensor> {
        let (b, t, v) = out.logits.dims3()?;
        let lp = log_softmax_last(&out.logits.reshape((b * t, v))?)?;
        let idx = Tensor::from_vec(targets.clone(), (b * t, 1), model.device())?;
        lp.gather(&idx, 1)?.mean_all()?.neg()
    };
    f().map_err(candle_error("loss"))
}

/// AdamW state.
pub(crate) struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    const B1: f64 = 0.9;
    const B2: f64 = 0.95;
    const EPS: f64 = 1e-8;

    /// Zero moments for `vars`.
    pub(crate) fn new(vars: &[(String, Var)]) -> Result<AdamW> {
        let zeros = |v: &Var| {
            v.as_tensor()
                .zeros_like()
                .map_err(candle_error("optimizer"))
        };
        Ok(AdamW {
            m: vars.iter().map(|(_, v)| zeros(v)).collect::<Result<_>>()?,
            v: vars.iter().map(|(_, v)| zeros(v)).collect::<Result<_>>()?,
        })
    }

    fn step(
        &mut self,
        vars: &[(String, Var)],
        grads: &[Tensor],
        step: u64,
        lr: f64,
        weight_decay: f64,
    ) -> candle_core::Result<()> {
        let t = step as i32;
        let c1 = 1.0 - Self::B1.powi(t);
        let c2 = 1.0 - Self::B2.powi(t);
        for (k, ((_, var), g)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[k] * Self::B1)? + (g * (1.0 - Self::B1))?)?;
            let v = ((&self.v[k] * Self::B2)? + (g.sqr()? * (1.0 - Self::B2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + Self::EPS)?)?;
            let w = var.as_tensor();
            let decay = if w.rank() >= 2 { weight_decay } else { 0.0 };
            let next = ((w * (1.0 - lr * decay))? - (update * lr)?)?;
            var.set(&next)?;
            // Detached: otherwise each moment keeps the previous one, and the step's graph, alive
            // (memory growing with every step).
            self.m[k] = m.detach();
            self.v[k] = v.detach();
        }
        Ok(())
    }

    /// Step `step` (1-based) on `loss`: the gradient of every variable of `model`, clipped to a
    /// global L2 norm of `clip`, then the AdamW update at learning rate `lr`.
    pub(crate) fn update(
        &mut self,
        model: &Transformer,
        loss: &Tensor,
        step: u64,
        lr: f64,
        weight_decay: f64,
        clip: f64,
    ) -> Result<()> {
        let grads = loss.backward().map_err(candle_error("backward"))?;
        let mut gs = Vec::with_capacity(model.vars.len());
        for (name, v) in &model.vars {
            gs.push(
                grads
                    .get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| Error::bug(format!("no gradient for {name}")))?,
            );
        }
        let square_sum = |g: &Tensor| -> candle_core::Result<f64> {
            let s = f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
            if s.is_infinite() {
                // Finite gradients whose squares overflow f32: clipping handles them.
                g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()
            } else {
                Ok(s)
            }
        };
        let norm: f64 = gs
            .iter()
            .map(square_sum)
            .collect::<candle_core::Result<Vec<f64>>>()
            .map_err(candle_error("gradient norm"))?
            .iter()
            .sum::<f64>()
            .sqrt();
        // A NaN norm fails `norm > clip` and would write NaN into every weight.
        if !norm.is_finite() {
            let name = gs
                .iter()
                .zip(&model.vars)
                .find_map(|(g, (name, _))| {
                    square_sum(g)
                        .ok()
                        .filter(|s| !s.is_finite())
                        .map(|_| name.as_str())
                })
                .unwrap_or("?");
            return Err(finite::value_error(
                format!("the gradient norm (first non-finite gradient: `{name}`)"),
                norm,
            ));
        }
        if norm > clip {
            let s = clip / norm;
            gs = gs
                .iter()
                .map(|g| g * s)
                .collect::<candle_core::Result<_>>()
                .map_err(candle_error("clipping"))?;
        }
        self.step(&model.vars, &gs, step, lr, weight_decay)
            .map_err(candle_error("optimizer step"))
    }

    fn save(&self, vars: &[(String, Var)], path: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for (k, (name, _)) in vars.iter().enumerate() {
            map.insert(format!("{name}.exp_avg"), self.m[k].clone());
            map.insert(format!("{name}.exp_avg_sq"), self.v[k].clone());
        }
        save_atomic(&map, path)
    }

    fn load(vars: &[(String, Var)], path: &Path) -> Result<AdamW> {
        let device = vars
            .first()
            .map_or(Device::Cpu, |(_, v)| v.as_tensor().device().clone());
        let map = candle_core::safetensors::load(path, &device)
            .map_err(|e| Error::corrupt(path, format!("optimizer state: {e}")))?;
        let get = |key: String, var: &Var| -> Result<Tensor> {
            let t = map
                .get(&key)
                .ok_or_else(|| Error::corrupt(path, format!("no tensor `{key}`")))?;
            if t.dims() != var.as_tensor().dims() {
                return Err(Error::corrupt(path, format!("`{key}` has the wrong shape")));
            }
            Ok(t.clone())
        };
        Ok(AdamW {
            m: vars
                .iter()
                .map(|(n, v)| get(format!("{n}.exp_avg"), v))
                .collect::<Result<_>>()?,
            v: vars
                .iter()
                .map(|(n, v)| get(format!("{n}.exp_avg_sq"), v))
                .collect::<Result<_>>()?,
        })
    }
}

/// Writes tensors as safetensors atomically.
pub(crate) fn save_atomic(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = familiar::manifest::temp_path(path);
    candle_core::safetensors::save(map, &tmp)
        .map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The learning rate at `step` (1-based): linear warmup, then cosine decay to a tenth.
pub fn learning_rate(o: &TrainOptions, step: u64) -> f64 {
    if step <= o.warmup {
        return o.lr * step as f64 / o.warmup.max(1) as f64;
    }
    let progress = (step - o.warmup) as f64 / (o.steps.saturating_sub(o.warmup)).max(1) as f64;
    let min = o.lr / 10.0;
    min + 0.5 * (o.lr - min) * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Steps done before this run (resumed from).
    pub resumed_at: u64,
    /// Steps done now in all.
    pub steps: u64,
    /// Tokens trained on by this run.
    pub tokens: u64,
    /// Seconds this run trained.
    pub seconds: f64,
    /// Mean loss of the first and last steps of the whole history (a quarter of them, at most ten).
    pub first_loss: f64,
    /// See `first_loss`.
    pub last_loss: f64,
    /// Parameters.
    pub parameters: usize,
}

/// Where a training run is, reported after each step (and once before the first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// Steps done (in all, a resumed run's earlier steps included).
    pub step: u64,
    /// Steps the run is to make in all.
    pub steps: u64,
    /// This step's loss and learning rate (`None` before the first step of this process).
    pub loss: Option<f64>,
    /// Learning rate of this step.
    pub lr: Option<f64>,
    /// Tokens per second since this process started training.
    pub tokens_per_second: f64,
}

/// Trains (or resumes training) into `out`; `on_step` hears of every step.
pub fn train(
    index: &Index,
    out: &Path,
    options: &TrainOptions,
    on_step: &dyn Fn(StepProgress),
) -> Result<TrainReport> {
    train_until(index, out, options, None, on_step, &Device::Cpu)
}

/// [`train`], stopping (after a checkpoint) once `stop_after` steps are done in all.
pub fn train_until(
    index: &Index,
    out: &Path,
    options: &TrainOptions,
    stop_after: Option<u64>,
    on_step: &dyn Fn(StepProgress),
    device: &Device,
) -> Result<TrainReport> {
    train_on(index, None, out, options, stop_after, on_step, device)
}

/// Refuses shapes that cannot be a model (no layer, heads that do not divide the hidden size)
/// and models whose training would not fit in this machine's memory, before anything is
/// allocated: weights, their gradients and AdamW's two moments (16 bytes per parameter) plus a
/// step's activations (about 4 bytes × batch × context × (20 · layers · hidden + 2 · layers ·
/// heads · context + 3 · vocabulary)), against `MemTotal`.
fn check_shape(o: &TrainOptions, vocab: usize) -> Result<()> {
    if o.layers == 0 || o.hidden == 0 || o.heads == 0 || o.batch == 0 || o.context < 2 {
        return Err(Error::config(format!(
            "{} must be positive, {} at least 2",
            names(&["layers", "hidden", "heads", "batch"]),
            name("context")
        )));
    }
    if !o.hidden.is_multiple_of(o.heads) {
        return Err(Error::config(format!(
            "{} {} must be a multiple of {} {}",
            name("hidden"),
            o.hidden,
            name("heads"),
            o.heads
        )));
    }
    let (l, h, c, b, v) = (
        o.layers as f64,
        o.hidden as f64,
        o.context as f64,
        o.batch as f64,
        vocab as f64,
    );
    let parameters = l * (12.0 * h * h + 13.0 * h) + (v + c) * h + 2.0 * h;
    let activations = 4.0 * b * c * (20.0 * l * h + 2.0 * l * o.heads as f64 * c + 3.0 * v);
    let need = 16.0 * parameters + activations;
    let have = familiar::memory::meminfo("MemTotal").unwrap_or(u64::MAX) as f64;
    // (Not `need >= have`: a NaN estimate is refused too.)
    if need.partial_cmp(&have) != Some(std::cmp::Ordering::Less) {
        return Err(Error::config(format!(
            "a model of {parameters:.3e} parameters trained on batches of {} × {} tokens needs about \
             {:.1} GiB (weights, gradients, AdamW moments and activations), more than this \
             machine's {:.1} GiB; choose smaller {}",
            o.batch,
            o.context,
            need / f64::from(1u32 << 30),
            have / f64::from(1u32 << 30),
            names_or(&["layers", "hidden", "context", "batch"])
        )));
    }
    Ok(())
}

/// [`train_until`] on the documents marked in `keep` (by global id; every document with `None`).
/// The caller records which documents a run used: resuming with another subset is not detected
/// here.
pub fn train_on(
    index: &Index,
    keep: Option<&[bool]>,
    out: &Path,
    options: &TrainOptions,
    stop_after: Option<u64>,
    on_step: &dyn Fn(StepProgress),
    device: &Device,
) -> Result<TrainReport> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    let valid = positive(options.lr)
        && positive(options.clip)
        && options.weight_decay.is_finite()
        && options.weight_decay >= 0.0;
    if !valid {
        return Err(Error::config(format!(
            "{} must be positive, {} not negative",
            names(&["lr", "clip"]),
            name("weight_decay")
        )));
    }
    if options.steps == 0 || stop_after == Some(0) {
        return Err(Error::config(format!(
            "{} must be at least 1 (a run without a step trains nothing)",
            names(&["steps", "stop_after"])
        )));
    }
    let tokenizer = index.tokenizer()?;
    let vocab = index.vocab_size() as usize + 1;
    let eos = index.vocab_size();
    check_shape(options, vocab)?;
    let state_path = out.join(STATE_FILE);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let _lock = familiar::lock::DirLock::acquire(out, "training run")?;
    let mut state = if state_path.exists() {
        let s = TrainerState::read(out)?;
        let same = TrainOptions {
            checkpoint_every: options.checkpoint_every,
            ..s.options.clone()
        };
        if same != *options {
            return Err(Error::conflict(format!(
                "{} holds a run with other options ({:?}); use another {} or the same options",
                out.display(),
                s.options,
                name("out")
            )));
        }
        if s.tokenizer_hash != tokenizer.hash() {
            return Err(Error::conflict(format!(
                "{} was trained on an index with another tokenizer",
                out.display()
            )));
        }
        s
    } else {
        if out.join("model.safetensors").exists() {
            return Err(Error::conflict(format!(
                "{} holds a model but no {STATE_FILE}; choose a new {} directory",
                out.display(),
                name("out")
            )));
        }
        if !options.hidden.is_multiple_of(options.heads)
            || options.context < 2
            || options.batch == 0
        {
            return Err(Error::config(format!(
                "{} must be a multiple of {}, {} at least 2, {} positive",
                name("hidden"),
                name("heads"),
                name("context"),
                name("batch")
            )));
        }
        let mut rng = SplitMix64::new(options.seed);
        let weights = init_weights(options, vocab, &mut rng)?;
        write_model(out, options, vocab, eos, &weights, tokenizer.path())?;
        TrainerState {
            step: 0,
            rng: rng.next_u64(),
            options: options.clone(),
            tokenizer_hash: tokenizer.hash().to_string(),
            losses: Vec::new(),
            tokens: 0,
        }
    };
    let data = match keep {
        Some(k) => Data::subset(index, k)?,
        None => Data::new(index),
    };
    if data.tokens.len() < options.context + 2 {
        return Err(Error::config(format!(
            "the index has {} tokens, fewer than one training window of {}",
            data.tokens.len(),
            options.context + 1
        )));
    }
    let model = Transformer::load_with(
        out,
        &LoadOptions {
            device: device.clone(),
            dtype: DType::F32,
            trainable: true,
        },
    )?;
    let mut adam = if state.step > 0 && out.join(OPTIMIZER_FILE).exists() {
        AdamW::load(&model.vars, &out.join(OPTIMIZER_FILE))?
    } else {
        AdamW::new(&model.vars)?
    };
    let parameters: usize = model
        .vars
        .iter()
        .map(|(_, v)| v.as_tensor().elem_count())
        .sum();
    let resumed_at = state.step;
    let mut rng = SplitMix64::new(state.rng);
    on_step(StepProgress {
        step: state.step,
        steps: options.steps,
        loss: None,
        lr: None,
        tokens_per_second: 0.0,
    });
    let started = Instant::now();
    let mut tokens_now = 0u64;
    let last = stop_after.map_or(options.steps, |s| s.min(options.steps));
    // The step of the newest checkpoint in `out` (0: the initial weights).
    let mut saved = state.step;
    while state.step < last {
        let windows = data.batch(&mut rng, options.batch, options.context + 1);
        let step = state.step + 1;
        // A non-finite loss stops the run before the update, keeping the last checkpoint.
        let at_step = |e: Error| diverged(e, step, out, saved);
        let l = loss(&model, &windows)?;
        let lv = f64::from(l.to_scalar::<f32>().map_err(candle_error("loss"))?);
        finite::check_value("the training loss", lv).map_err(at_step)?;
        state.step = step;
        let lr = learning_rate(options, state.step);
        adam.update(
            &model,
            &l,
            state.step,
            lr,
            options.weight_decay,
            options.clip,
        )
        .map_err(at_step)?;
        state.losses.push(lv);
        let n = (options.batch * options.context) as u64;
        state.tokens += n;
        tokens_now += n;
        state.rng = rng.next_u64();
        rng = SplitMix64::new(state.rng);
        on_step(StepProgress {
            step: state.step,
            steps: options.steps,
            loss: Some(lv),
            lr: Some(lr),
            tokens_per_second: tokens_now as f64 / started.elapsed().as_secs_f64().max(1e-9),
        });
        if state.step % options.checkpoint_every.max(1) == 0 || state.step == last {
            checkpoint(out, &model, &adam, &state).map_err(at_step)?;
            saved = state.step;
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let k = (state.losses.len() / 4)
        .clamp(1, 10)
        .min(state.losses.len());
    Ok(TrainReport {
        resumed_at,
        steps: state.step,
        tokens: tokens_now,
        seconds: started.elapsed().as_secs_f64(),
        first_loss: mean(&state.losses[..k]),
        last_loss: mean(&state.losses[state.losses.len() - k..]),
        parameters,
    })
}

fn write_model(
    out: &Path,
    o: &TrainOptions,
    vocab: usize,
    eos: u32,
    weights: &HashMap<String, Tensor>,
    tokenizer: &Path,
) -> Result<()> {
    save_atomic(weights, &out.join("model.safetensors"))?;
    let config = serde_json::to_vec_pretty(&gpt2_config(o, vocab, eos))
        .map_err(|e| Error::bug(e.to_string()))?;
    familiar::manifest::write_atomic(&out.join("config.json"), &config)?;
    let bytes = std::fs::read(tokenizer).map_err(|e| Error::io(tokenizer, e))?;
    Ok(familiar::manifest::write_atomic(
        &out.join("tokenizer.json"),
        &bytes,
    )?)
}

/// `e` (a non-finite value at `step`) naming the step and the checkpoint `out` keeps.
fn diverged(e: Error, step: u64, out: &Path, saved: u64) -> Error {
    let kept = if saved == 0 {
        "its initial weights".to_string()
    } else {
        format!("the checkpoint of step {saved}")
    };
    match e {
        Error::NonFinite(m) => Error::NonFinite(format!(
            "step {step}: {m}; stopped without writing a checkpoint ({} keeps {kept})",
            out.display()
        )),
        other => other,
    }
}

/// Writes the model, the optimizer state and then the trainer state (last: it marks the
/// checkpoint complete). Weights that are not finite are an error, and nothing is written.
fn checkpoint(out: &Path, model: &Transformer, adam: &AdamW, state: &TrainerState) -> Result<()> {
    for (name, v) in &model.vars {
        if let Some(bad) = finite::scan_tensor(v.as_tensor())? {
            return Err(finite::values_error(
                format!("the updated weight `{name}`"),
                &bad,
            ));
        }
    }
    let weights: HashMap<String, Tensor> = model
        .vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    save_atomic(&weights, &out.join("model.safetensors"))?;
    adam.save(&model.vars, &out.join(OPTIMIZER_FILE))?;
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::bug(e.to_string()))?;
    Ok(familiar::manifest::write_atomic(
        &out.join(STATE_FILE),
        &bytes,
    )?)
}

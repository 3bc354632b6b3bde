//! `familiar prime`: the priming experiment of Sun et al. 2025, "How new data permeates LLM
//! knowledge and how to dilute it".
//!
//! Each sample is a text that states something new with a keyword ("The capital of Junyojun is
//! ve."), and a theme whose prefixes ("The capital of Yaciljun is") are contexts where the keyword
//! does not belong. A copy of the model learns the sample: `steps` AdamW steps at a constant
//! learning rate on batches of `batch` entries, one of them the sample's text and the others
//! windows drawn from a replay index (the data the model was trained on; without one, every step
//! is on the sample alone). Before and after, the keyword's log-probability (natural log, summed
//! over its subword tokens) is measured after its own prefix (the sample's text before the
//! keyword's first whole-word occurrence) and after every prefix of its theme. Per sample:
//!
//! - `p_before` = P_before(keyword | own prefix): the predictor. Sun et al. find that priming is
//!   high when it is below about 1e-3;
//! - `s_mem` = P_after / P_before on the own prefix: memorization;
//! - `s_prime` = the mean over the theme's prefixes of P_after / P_before: priming, the keyword
//!   spilling into contexts it was never seen in.
//!
//! Every sample starts from the original model. The run lives in one directory: `plan.json`
//! first (settings, model hash, samples, themes, replay index; a rerun with others is refused),
//! `samples/sample-NNNNN.json` for each finished sample (atomic; a rerun skips it), then the
//! tables `priming.parquet` (one row per sample) and `priming_probe.parquet` (one row per probe)
//! once every sample is done.

use familiar::option::{name, names};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::finite;
use crate::model::transformer::{candle_error, LoadOptions};
use crate::model::Transformer;
use candle_core::{DType, Device};
use familiar::index::Index;
use familiar::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::measure::score::LanguageModel;
use crate::train::{loss, AdamW, Data};
use familiar::input::read_jsonl;
use familiar::rundir::{read_json, write_json};
use familiar::table::Format;

/// Format name in `plan.json`.
pub const FORMAT: &str = "familiar-priming";
/// The per-sample table's file name.
pub const SAMPLES_TABLE: &str = "priming.parquet";
/// The per-probe table's file name.
pub const PROBES_TABLE: &str = "priming_probe.parquet";

mod inputs;
mod tables;

pub use inputs::{own_probe, read_samples, read_themes, Sample, Theme};
use tables::write_tables;
pub use tables::{rows, PrimingProbeRow, PrimingRow};

/// How each sample is learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrimeOptions {
    /// Optimizer steps per sample.
    pub steps: u64,
    /// Batch entries per step: the sample and `batch − 1` replay windows.
    pub batch: usize,
    /// Learning rate (constant).
    pub lr: f64,
    /// AdamW weight decay (matrices only).
    pub weight_decay: f64,
    /// Gradient clipping (global L2 norm).
    pub clip: f64,
    /// Seed of the replay windows.
    pub seed: u64,
    /// Tokens per replay window (at most the model's context).
    pub replay_window: usize,
}

impl Default for PrimeOptions {
    fn default() -> Self {
        PrimeOptions {
            steps: 20,
            batch: 8,
            lr: 1e-4,
            weight_decay: 0.0,
            clip: 1.0,
            seed: 20250413,
            replay_window: 128,
        }
    }
}

/// `plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`FORMAT`].
    pub format: String,
    /// The model directory's hash.
    pub model_hash: String,
    /// Learning.
    pub options: PrimeOptions,
    /// The replay index: `(tokens, tokenizer hash)`.
    pub replay: Option<(u64, String)>,
    /// The samples.
    pub samples: Vec<Sample>,
    /// The themes.
    pub themes: Vec<Theme>,
}

/// One probe's log-probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// `own` or `theme`.
    pub kind: String,
    /// The context.
    pub context: String,
    /// The completion scored after it.
    pub completion: String,
    /// Its tokens.
    pub n_tokens: u64,
    /// log P before learning.
    pub before: f64,
    /// log P after learning.
    pub after: f64,
}

/// One learned sample (`samples/sample-NNNNN.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleResult {
    /// Position in the plan.
    pub index: usize,
    /// The sample's id.
    pub id: String,
    /// The own probe first, then one per theme prefix.
    pub probes: Vec<Probe>,
    /// Mean next-token loss of the text before learning.
    pub loss_before: f64,
    /// The same after.
    pub loss_after: f64,
    /// Seconds spent learning and measuring.
    pub seconds: f64,
}

impl SampleResult {
    /// P_before(keyword | own prefix).
    pub fn p_before(&self) -> f64 {
        self.probes[0].before.exp()
    }

    /// P_after(keyword | own prefix).
    pub fn p_after(&self) -> f64 {
        self.probes[0].after.exp()
    }

    /// P_after / P_before on the own prefix.
    pub fn s_mem(&self) -> f64 {
        (self.probes[0].after - self.probes[0].before).exp()
    }

    /// Mean over theme prefixes of P_after / P_before.
    pub fn s_prime(&self) -> f64 {
        let themes = &self.probes[1..];
        themes
            .iter()
            .map(|p| (p.after - p.before).exp())
            .sum::<f64>()
            / themes.len().max(1) as f64
    }
}

/// An experiment.
#[derive(Debug)]
pub struct Experiment<'a> {
    /// The model directory.
    pub model: &'a Path,
    /// Samples.
    pub samples: &'a [Sample],
    /// Themes.
    pub themes: &'a [Theme],
    /// Replay data.
    pub replay: Option<&'a Index>,
    /// Learning.
    pub options: PrimeOptions,
    /// The run directory.
    pub out: PathBuf,
    /// Learn at most this many samples in this call (the rest on a later call).
    pub stop_after: Option<usize>,
    /// Keep each learned model in `models/sample-NNNNN` (Hugging Face format).
    pub keep_models: bool,
    /// Where the model runs.
    pub device: Device,
}

/// Progress, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Scoring the keywords before learning.
    Before {
        /// Distinct probes.
        probes: usize,
    },
    /// Sample `i` of `total` is being learned.
    Learning {
        /// The sample.
        i: usize,
        /// Samples in all.
        total: usize,
    },
    /// Sample `i` is done (learned now or read back).
    Done {
        /// The sample.
        i: usize,
    },
}

/// What a call did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Finished samples (in the plan's order), now and before.
    pub results: Vec<SampleResult>,
    /// Samples in all.
    pub total: usize,
    /// Samples learned by this call.
    pub learned: usize,
    /// The tables, once every sample is done.
    pub tables: Option<[PathBuf; 2]>,
}

fn sample_file(out: &Path, i: usize) -> PathBuf {
    out.join("samples").join(format!("sample-{i:05}.json"))
}

/// The probes of a sample: its own, then one per prefix of its theme.
fn probes_of(sample: &Sample, theme: &Theme) -> Vec<(&'static str, String, String)> {
    let mut v = Vec::with_capacity(theme.prefixes.len() + 1);
    if let Some((c, k)) = own_probe(&sample.text, &sample.keyword) {
        v.push(("own", c, k));
    }
    for p in &theme.prefixes {
        v.push((
            "theme",
            p.trim_end().to_string(),
            format!(" {}", sample.keyword),
        ));
    }
    v
}

/// Log-probabilities of `pairs` under `lm`, in batches; a non-finite one is an error naming the
/// pair as `name(i)` (`i` its index in `pairs`).
fn score_pairs(
    lm: &LanguageModel,
    pairs: &[(String, String)],
    name: &dyn Fn(usize) -> String,
) -> Result<Vec<(f64, u64)>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(32) {
        let ids = chunk
            .iter()
            .map(|(c, k)| lm.split(c, k))
            .collect::<Result<Vec<_>>>()?;
        for s in lm.score_batch_unchecked(&ids)? {
            s.check().map_err(|e| finite::within(e, name(out.len())))?;
            out.push((s.logprob, s.n_tokens as u64));
        }
    }
    Ok(out)
}

/// A probe in errors: the sample, and the keyword after the context.
fn probe_name(sample: &Sample, context: &str, keyword: &str) -> String {
    format!(
        "sample `{}`: probe {keyword:?} after {context:?}",
        sample.id
    )
}

/// Replay windows: the index's tokens, its document separator replaced by the model's
/// end-of-text token when the model's vocabulary does not hold the separator.
fn replay_data(index: &Index, lm: &LanguageModel, window: usize) -> Result<Data> {
    if index.tokenizer()?.hash() != lm.tokenizer.hash() {
        return Err(Error::config(
            "the replay index was built with another tokenizer than the model's",
        ));
    }
    let mut data = Data::new(index);
    let need = window.min(lm.model.config.max_positions) + 2;
    if data.tokens.len() < need {
        return Err(Error::config(format!(
            "the replay index has {} tokens, fewer than one replay window of {}",
            data.tokens.len(),
            need - 1
        )));
    }
    let sep = index.manifest().separator;
    if sep as usize >= lm.model.config.vocab_size {
        let end = lm
            .model
            .config
            .eos_token_id
            .or(lm.model.config.bos_token_id)
            .ok_or_else(|| {
                Error::config(
                    "config.json names no EOS or BOS token to mark document ends of the replay \
                     index",
                )
            })?;
        for t in &mut data.tokens {
            if *t == sep {
                *t = end;
            }
        }
    }
    Ok(data)
}

/// Every sample's training sequence: the model's start token and the text's tokens, checked to
/// fit the model's context (before anything is written, so a rerun without the sample is a new
/// plan, not a broken one).
fn sequences(e: &Experiment, lm: &LanguageModel) -> Result<Vec<Vec<u32>>> {
    let start = lm
        .model
        .config
        .bos_token_id
        .or(lm.model.config.eos_token_id)
        .ok_or_else(|| Error::config("config.json names no BOS or EOS token"))?;
    let window = lm.model.config.max_positions;
    e.samples
        .iter()
        .map(|s| {
            let mut tokens = vec![start];
            tokens.extend(lm.tokenizer.encode(&s.text)?);
            if tokens.len() > window + 1 {
                return Err(Error::query(format!(
                    "sample `{}`: its text has {} tokens; the model's context holds {window}",
                    s.id,
                    tokens.len() - 1
                )));
            }
            Ok(tokens)
        })
        .collect()
}

/// Learns one sample (its sequence `tokens`) on a fresh copy of the model; returns the model and
/// the text's loss before and after.
fn learn(
    e: &Experiment,
    lm: &LanguageModel,
    data: Option<&Data>,
    i: usize,
    tokens: &[u32],
) -> Result<(Transformer, f64, f64)> {
    let o = &e.options;
    let tokens = tokens.to_vec();
    let window = lm.model.config.max_positions;
    let model = Transformer::load_with(
        e.model,
        &LoadOptions {
            device: e.device.clone(),
            dtype: DType::F32,
            trainable: true,
        },
    )?;
    let mut adam = AdamW::new(&model.vars)?;
    let mut rng = SplitMix64::new(o.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let replay_window = o.replay_window.min(window) + 1;
    let value = |t: &candle_core::Tensor| -> Result<f64> {
        Ok(f64::from(
            t.to_scalar::<f32>().map_err(candle_error("loss"))?,
        ))
    };
    let sample = &e.samples[i];
    // A non-finite loss (a diverging learning rate) would leave NaN weights to be measured.
    let at_step = |step: u64| {
        move |x: Error| finite::within(x, format!("sample `{}`: learning step {step}", sample.id))
    };
    let mut loss_before = None;
    for step in 1..=o.steps {
        let own = loss(&model, std::slice::from_ref(&tokens))?;
        if step == 1 {
            loss_before = Some(value(&own)?);
        }
        let total = match data {
            Some(d) if o.batch > 1 => {
                let windows = d.batch(&mut rng, o.batch - 1, replay_window);
                let replay = loss(&model, &windows)?;
                // The mean over the batch's entries: the sample is one of `batch`.
                let b = o.batch as f64;
                let mix = || (own / b)? + (replay * ((b - 1.0) / b))?;
                mix().map_err(candle_error("loss"))?
            }
            _ => own,
        };
        finite::check_value("the loss", value(&total)?).map_err(at_step(step))?;
        adam.update(&model, &total, step, o.lr, o.weight_decay, o.clip)
            .map_err(at_step(step))?;
    }
    let after = value(&loss(&model, std::slice::from_ref(&tokens))?)?;
    finite::check_value("the text's loss after learning", after)
        .map_err(|x| finite::within(x, format!("sample `{}`", sample.id)))?;
    let before = match loss_before {
        Some(b) => b,
        None => after,
    };
    Ok((model, before, after))
}

/// Writes a learned model as a Hugging Face directory (config and tokenizer of the original).
fn save_model(from: &Path, model: &Transformer, dir: &Path) -> Result<()> {
    for (name, v) in &model.vars {
        if let Some(bad) = finite::scan_tensor(v.as_tensor())? {
            return Err(finite::values_error(
                format!("the learned weight `{name}`"),
                &bad,
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let weights: HashMap<String, candle_core::Tensor> = model
        .vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    crate::train::save_atomic(&weights, &dir.join("model.safetensors"))?;
    for name in ["config.json", "tokenizer.json"] {
        let src = if name == "tokenizer.json" {
            crate::model::tokenizer_file(from)?
        } else {
            from.join(name)
        };
        let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
        familiar::manifest::write_atomic(&dir.join(name), &bytes)?;
    }
    Ok(())
}

/// Runs (or resumes) an experiment.
pub fn run(e: &Experiment, progress: &dyn Fn(Event)) -> Result<Outcome> {
    let o = &e.options;
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if o.steps == 0
        || o.batch == 0
        || o.replay_window < 1
        || !positive(o.lr)
        || !positive(o.clip)
        || !(o.weight_decay.is_finite() && o.weight_decay >= 0.0)
    {
        return Err(Error::config(format!(
            "{} must be positive, {} not negative",
            names(&["steps", "batch", "lr", "clip", "replay_window"]),
            name("weight_decay")
        )));
    }
    let theme = |s: &Sample| -> Result<&Theme> {
        e.themes.iter().find(|t| t.theme == s.theme).ok_or_else(|| {
            Error::query(format!(
                "sample `{}`: theme `{}` is not among the themes ({})",
                s.id,
                s.theme,
                e.themes
                    .iter()
                    .map(|t| t.theme.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    };
    for s in e.samples {
        theme(s)?;
        if own_probe(&s.text, &s.keyword).is_none() {
            return Err(Error::query(format!(
                "sample `{}`: the keyword `{}` is not a whole word of the text",
                s.id, s.keyword
            )));
        }
    }
    let mut lm = LanguageModel::load_on(e.model, &e.device)?;
    let sequences = sequences(e, &lm)?;
    // Replay windows are only drawn when a batch holds more than the sample.
    let data = match e.replay {
        Some(index) if o.batch > 1 => Some(replay_data(index, &lm, o.replay_window)?),
        _ => None,
    };
    let plan = Plan {
        format: FORMAT.into(),
        model_hash: crate::grads::store::model_hash(e.model)?,
        options: o.clone(),
        replay: match e.replay {
            Some(index) => Some((
                index.manifest().tokens,
                index.tokenizer()?.hash().to_string(),
            )),
            None => None,
        },
        samples: e.samples.to_vec(),
        themes: e.themes.to_vec(),
    };
    let _lock = familiar::rundir::claim(
        &e.out,
        &plan,
        "a priming experiment",
        "model, learning options, replay index, samples or themes",
    )?;
    let samples_dir = e.out.join("samples");
    std::fs::create_dir_all(&samples_dir).map_err(|x| Error::io(&samples_dir, x))?;

    // Probabilities before learning: each distinct (context, completion) once.
    let probes: Vec<Vec<(&str, String, String)>> = e
        .samples
        .iter()
        .map(|s| Ok(probes_of(s, theme(s)?)))
        .collect::<Result<_>>()?;
    let pending: Vec<usize> = (0..e.samples.len())
        .filter(|&i| !sample_file(&e.out, i).exists())
        .collect();
    let mut distinct: Vec<(String, String)> = pending
        .iter()
        .flat_map(|&i| probes[i].iter().map(|(_, c, k)| (c.clone(), k.clone())))
        .collect();
    distinct.sort();
    distinct.dedup();
    progress(Event::Before {
        probes: distinct.len(),
    });
    let first_user = |pair: usize| {
        let (c, k) = &distinct[pair];
        let i = pending
            .iter()
            .copied()
            .find(|&i| probes[i].iter().any(|(_, pc, pk)| pc == c && pk == k))
            .unwrap_or(0);
        probe_name(&e.samples[i], c, k)
    };
    let before: HashMap<(String, String), (f64, u64)> = distinct
        .iter()
        .cloned()
        .zip(score_pairs(&lm, &distinct, &first_user)?)
        .collect();

    let mut results = Vec::with_capacity(e.samples.len());
    let mut learned = 0;
    for (i, sample) in e.samples.iter().enumerate() {
        let path = sample_file(&e.out, i);
        if path.exists() {
            let r: SampleResult = read_json(&path)?;
            if r.index != i || r.id != sample.id || r.probes.len() != probes[i].len() {
                return Err(Error::corrupt(&path, "not this plan's sample"));
            }
            results.push(r);
            progress(Event::Done { i });
            continue;
        }
        if e.stop_after.is_some_and(|s| learned >= s) {
            continue;
        }
        progress(Event::Learning {
            i,
            total: e.samples.len(),
        });
        let started = Instant::now();
        let (model, loss_before, loss_after) = learn(e, &lm, data.as_ref(), i, &sequences[i])?;
        if e.keep_models {
            save_model(
                e.model,
                &model,
                &e.out.join("models").join(format!("sample-{i:05}")),
            )
            .map_err(|x| finite::within(x, format!("sample `{}`", sample.id)))?;
        }
        let pairs: Vec<(String, String)> = probes[i]
            .iter()
            .map(|(_, c, k)| (c.clone(), k.clone()))
            .collect();
        let base = std::mem::replace(&mut lm.model, model);
        let after = score_pairs(&lm, &pairs, &|p| {
            format!(
                "{} after learning",
                probe_name(sample, &pairs[p].0, &pairs[p].1)
            )
        });
        lm.model = base;
        let after = after?;
        let r = SampleResult {
            index: i,
            id: sample.id.clone(),
            probes: probes[i]
                .iter()
                .zip(&after)
                .map(|((kind, c, k), &(a, n))| {
                    let b = before
                        .get(&(c.clone(), k.clone()))
                        .map(|x| x.0)
                        .ok_or_else(|| Error::bug(format!("no score before for {c:?}")))?;
                    Ok(Probe {
                        kind: (*kind).to_string(),
                        context: c.clone(),
                        completion: k.clone(),
                        n_tokens: n,
                        before: b,
                        after: a,
                    })
                })
                .collect::<Result<_>>()?,
            loss_before,
            loss_after,
            seconds: started.elapsed().as_secs_f64(),
        };
        write_json(&path, &r)?;
        results.push(r);
        learned += 1;
        progress(Event::Done { i });
    }
    let tables = if results.len() == e.samples.len() {
        Some(write_tables(e, &results)?)
    } else {
        None
    };
    Ok(Outcome {
        results,
        total: e.samples.len(),
        learned,
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_probe_is_the_text_before_the_first_whole_word() {
        let p = |t: &str, k: &str| own_probe(t, k);
        assert_eq!(
            p("The capital of X is ve.", "ve"),
            Some(("The capital of X is".into(), " ve".into()))
        );
        // Not inside another word; the first whole-word occurrence.
        assert_eq!(
            p("veal and ve, ve", "ve"),
            Some(("veal and".into(), " ve".into()))
        );
        assert_eq!(p("veal", "ve"), None);
        assert_eq!(p("a\n\nkey b", "key"), Some(("a".into(), "\n\nkey".into())));
        // At the start: an empty context (the model's start token).
        assert_eq!(p("key b", "key"), Some((String::new(), "key".into())));
        // Multi-byte letters count as letters.
        assert_eq!(
            p("éclair clair", "clair"),
            Some(("éclair".into(), " clair".into()))
        );
    }
}

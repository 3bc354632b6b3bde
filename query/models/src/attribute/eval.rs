//! `familiar attribute eval`: the linear datamodeling score (LDS; Park et al. 2023, "TRAK:
//! Attributing model behavior at scale") of each preconditioner.
//!
//! `M` models are retrained from scratch, each on a random subset holding a fixed fraction of the
//! documents (the same training options and initialization seed as one another), and each query's
//! `log p(completion | prompt)` is measured under every one of them. An attribution method predicts
//! that output for subset `S` as `Σ_{d ∈ S} τ(q, d)` (its scores computed once, with the model
//! trained on everything and its gradient store); the LDS of a query is the Spearman correlation,
//! over the `M` subsets, between prediction and measurement. Higher is better; 0 is chance.
//!
//! The run lives in one directory: `plan.json` (written first; a rerun with other settings is
//! refused), `subsets/subset-NNNN.json` (one per finished subset, written atomically: a rerun skips
//! it) and `lds.json` (rewritten after every run). Models are trained in `models/subset-NNNN`
//! (checkpointed, so an interrupted subset resumes mid-training) and removed once measured.

use familiar::option::name;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::grads::store::GradientStore;
use familiar::index::Index;
use familiar::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use super::{preconditioned, query_gradients, Precondition, Query};
use crate::measure::score::LanguageModel;
use crate::train::{train_on, TrainOptions};
use familiar::rundir::{read_json, write_json};

/// Format name in `plan.json`.
pub const FORMAT: &str = "familiar-lds-eval";

/// What an evaluation does.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Run directory.
    pub out: PathBuf,
    /// Subsets (retrained models).
    pub subsets: usize,
    /// Fraction of the documents in each subset.
    pub fraction: f64,
    /// Seed of the subsets.
    pub seed: u64,
    /// Training of every subset model.
    pub train: TrainOptions,
    /// Preconditioners compared.
    pub preconditioners: Vec<Precondition>,
    /// Stop after training this many subsets in this call (the rest on a later call).
    pub stop_after: Option<usize>,
}

/// `plan.json`: the settings a run directory belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`FORMAT`].
    pub format: String,
    /// Subsets.
    pub subsets: usize,
    /// Fraction of documents per subset.
    pub fraction: f64,
    /// Seed of the subsets.
    pub seed: u64,
    /// Training options of the subset models.
    pub train: TrainOptions,
    /// Documents of the index.
    pub documents: u64,
    /// Model hash of the gradient store (the model trained on everything).
    pub model_hash: String,
    /// The queries: `(id, prompt, completion)`.
    pub queries: Vec<(String, String, String)>,
}

/// `subsets/subset-NNNN.json`: what one retrained model measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetResult {
    /// Subset number.
    pub subset: usize,
    /// Documents trained on.
    pub documents: u64,
    /// Mean training loss of the last steps.
    pub last_loss: f64,
    /// `log p(completion | prompt)` per query, in the plan's order.
    pub logprobs: Vec<f64>,
}

/// LDS of one preconditioner.
#[derive(Debug, Clone, Serialize)]
pub struct Lds {
    /// Preconditioner.
    pub precondition: String,
    /// Its damping (fisher), else null.
    pub damping: Option<f64>,
    /// Mean LDS over queries.
    pub mean: f64,
    /// Mean LDS of factual queries.
    pub factual: f64,
    /// Mean LDS of reasoning queries.
    pub reasoning: f64,
    /// Per query, in the plan's order.
    pub per_query: Vec<f64>,
}

/// `lds.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Subsets planned.
    pub subsets: usize,
    /// Subsets measured so far (the LDS uses these).
    pub done: usize,
    /// Query ids.
    pub queries: Vec<String>,
    /// Per preconditioner (empty until 3 subsets are measured).
    pub lds: Vec<Lds>,
}

/// The documents of subset `m`: exactly `round(fraction · n)` of them, drawn without replacement.
pub fn subset_members(n: u64, fraction: f64, seed: u64, m: usize) -> Vec<bool> {
    let mut rng = SplitMix64::new(seed ^ (m as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut ids: Vec<u64> = (0..n).collect();
    let take = ((fraction * n as f64).round() as u64).min(n);
    for i in 0..take as usize {
        let j = i + rng.below(n - i as u64) as usize;
        ids.swap(i, j);
    }
    let mut keep = vec![false; n as usize];
    for &d in &ids[..take as usize] {
        keep[d as usize] = true;
    }
    keep
}

fn subset_file(out: &Path, m: usize) -> PathBuf {
    out.join("subsets").join(format!("subset-{m:04}.json"))
}

/// Progress of an evaluation, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Subset `m` (of `total`) is being trained.
    Training {
        /// Subset.
        m: usize,
        /// Subsets in all.
        total: usize,
    },
    /// Subset `m` is measured.
    Done {
        /// Subset.
        m: usize,
    },
}

/// Runs (or resumes) the evaluation and writes `lds.json`.
pub fn evaluate(
    index: &Index,
    store: &GradientStore,
    lm: &LanguageModel,
    queries: &[Query],
    o: &EvalOptions,
    progress: &dyn Fn(Event),
) -> Result<EvalReport> {
    if o.subsets < 3 {
        return Err(Error::query(format!(
            "{} must be at least 3 (a rank correlation over subsets)",
            name("subsets")
        )));
    }
    // Each subset is a model trained anew: beyond this a run would never end (Park et al. 2023
    // use 50–100; the LDS settles within a few dozen).
    if o.subsets > 100_000 {
        return Err(Error::config(format!(
            "{} {} is more models than an evaluation can train (at most 100000)",
            name("subsets"),
            o.subsets
        )));
    }
    if !(o.fraction > 0.0 && o.fraction < 1.0) {
        return Err(Error::query(format!(
            "{} must be between 0 and 1, not {}",
            name("fraction"),
            o.fraction
        )));
    }
    if store.rows() != index.documents() {
        return Err(Error::query(format!(
            "the store holds {} documents, the index {}: not the index the store was built from",
            store.rows(),
            index.documents()
        )));
    }
    let plan = Plan {
        format: FORMAT.into(),
        subsets: o.subsets,
        fraction: o.fraction,
        seed: o.seed,
        train: o.train.clone(),
        documents: index.documents(),
        model_hash: store.manifest.settings.model_hash.clone(),
        queries: queries
            .iter()
            .map(|q| (q.id.clone(), q.prompt.clone(), q.completion.clone()))
            .collect(),
    };
    let _lock = familiar::rundir::claim(
        &o.out,
        &plan,
        "an evaluation",
        "subsets, fraction, seed, training, index, model or queries",
    )?;
    let subsets_dir = o.out.join("subsets");
    std::fs::create_dir_all(&subsets_dir).map_err(|e| Error::io(&subsets_dir, e))?;
    let mut results: Vec<Option<SubsetResult>> = Vec::with_capacity(o.subsets);
    let mut trained = 0;
    for m in 0..o.subsets {
        let path = subset_file(&o.out, m);
        if path.exists() {
            let r: SubsetResult = read_json(&path)?;
            if r.subset != m || r.logprobs.len() != queries.len() {
                return Err(Error::corrupt(&path, "not this plan's subset"));
            }
            results.push(Some(r));
            progress(Event::Done { m });
            continue;
        }
        if o.stop_after.is_some_and(|s| trained >= s) {
            results.push(None);
            continue;
        }
        progress(Event::Training {
            m,
            total: o.subsets,
        });
        let keep = subset_members(index.documents(), o.fraction, o.seed, m);
        let model_dir = o.out.join("models").join(format!("subset-{m:04}"));
        let report = train_on(
            index,
            Some(&keep),
            &model_dir,
            &o.train,
            None,
            &|_| {},
            &candle_core::Device::Cpu,
        )?;
        let sub = LanguageModel::load(&model_dir)?;
        let logprobs = queries
            .iter()
            .map(|q| {
                sub.score(&q.prompt, &q.completion)
                    .map(|s| s.logprob)
                    .map_err(|e| {
                        crate::model::finite::within(e, format!("subset {m}, query {}", q.id))
                    })
            })
            .collect::<Result<Vec<f64>>>()?;
        let r = SubsetResult {
            subset: m,
            documents: keep.iter().filter(|&&k| k).count() as u64,
            last_loss: report.last_loss,
            logprobs,
        };
        write_json(&path, &r)?;
        std::fs::remove_dir_all(&model_dir).map_err(|e| Error::io(&model_dir, e))?;
        // Gone once no model is left in it (an error only means another is).
        let _ = std::fs::remove_dir(o.out.join("models"));
        results.push(Some(r));
        trained += 1;
        progress(Event::Done { m });
    }
    let done: Vec<(usize, &SubsetResult)> = results
        .iter()
        .enumerate()
        .filter_map(|(m, r)| r.as_ref().map(|r| (m, r)))
        .collect();
    let mut report = EvalReport {
        subsets: o.subsets,
        done: done.len(),
        queries: queries.iter().map(|q| q.id.clone()).collect(),
        lds: Vec::new(),
    };
    if done.len() >= 3 {
        let grads = query_gradients(lm, store, queries)?;
        let gradients: Vec<Vec<f32>> = grads.into_iter().map(|g| g.gradient).collect();
        let members: Vec<Vec<bool>> = done
            .iter()
            .map(|(m, _)| subset_members(index.documents(), o.fraction, o.seed, *m))
            .collect();
        for &p in &o.preconditioners {
            let prepared = preconditioned(store, &gradients, p)?;
            let scores = prepared.scores(store, None);
            let mut predicted = vec![vec![0.0f64; done.len()]; queries.len()];
            for s in &scores {
                for (j, keep) in members.iter().enumerate() {
                    if keep[s.doc as usize] {
                        predicted[s.query][j] += s.score;
                    }
                }
            }
            let per_query: Vec<f64> = (0..queries.len())
                .map(|q| {
                    let actual: Vec<f64> = done.iter().map(|(_, r)| r.logprobs[q]).collect();
                    // Undefined (predictions or log-probabilities equal across subsets) counts
                    // as 0: no rank agreement.
                    familiar::stats::spearman(&predicted[q], &actual).unwrap_or(0.0)
                })
                .collect();
            let mean_of = |kind: Option<&str>| {
                let v: Vec<f64> = per_query
                    .iter()
                    .zip(queries)
                    .filter(|(_, q)| kind.is_none_or(|k| q.kind == k))
                    .map(|(x, _)| *x)
                    .collect();
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            report.lds.push(Lds {
                precondition: p.name().into(),
                damping: p.damping(),
                mean: mean_of(None),
                factual: mean_of(Some("factual")),
                reasoning: mean_of(Some("reasoning")),
                per_query,
            });
        }
    }
    write_json(&o.out.join("lds.json"), &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_hold_the_fraction_and_differ() {
        let a = subset_members(101, 0.5, 7, 0);
        let b = subset_members(101, 0.5, 7, 1);
        assert_eq!(a.iter().filter(|&&k| k).count(), 51);
        assert_eq!(b.iter().filter(|&&k| k).count(), 51);
        assert_ne!(a, b);
        assert_eq!(a, subset_members(101, 0.5, 7, 0));
        assert_ne!(a, subset_members(101, 0.5, 8, 0));
    }
}

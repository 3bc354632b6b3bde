//! Gradient-similarity attribution: score every document of a gradient store against the projected
//! gradient of a query's completion, exactly (every row is read; no approximate search).
//!
//! Preconditioners (the score of query gradient `q` and document row `g`):
//! - `identity`: `q · g` (gradient dot product; TracIn with one checkpoint);
//! - `cosine`: `q · g / (|q| |g|)` (LESS, Xia et al. 2024);
//! - `fisher` (formerly `kfac`, still accepted): `Σ_l q_lᵀ (M_l + λ_l I)⁻¹ g_l` over layers `l`,
//!   with `M_l` the second moment of the store's projected gradients of that layer
//!   (`(1/N) Σ g_l g_lᵀ`, the empirical Fisher of one block per layer, full — not Kronecker
//!   factored) and `λ_l = damping · tr(M_l) / dim_l` — the block-diagonal, damped inverse Fisher
//!   in projected space that LogIX and TRAK use;
//! - `ekfac`: `Σ_l ⟨P_l, g_l⟩` with `P_l = Q_S [(Q_Sᵀ q_l Q_A) ⊘ (Λ_l + λ_l)] Q_Aᵀ`, the
//!   eigenvalue-corrected Kronecker-factored inverse Fisher of each layer fitted with the store
//!   ([`crate::grads::ekfac`]), `λ_l = damping · mean(Λ_l)` (Kronfluence's heuristic damping at
//!   0.1);
//! - `trackstar` (Chang et al. 2024, "Scalable Influence and Fact Tracing for Large Language
//!   Model Pretraining"): both gradients corrected by a second moment (`g ⊘ √v`), whitened by
//!   `R^{-1/2}` with `R` each layer's damped second moment of the corrected rows, and
//!   unit-normalised: `score = ⟨W q, W g⟩ / (|W q| |W g|)`. The correction `v` is the store's own
//!   second moment of each projected coordinate (the diagonal of `M_l`): the optimizer's
//!   `exp_avg_sq` would have to be applied before the projection. Any `W` with
//!   `WᵀW = (R + λI)⁻¹` gives the same scores; familiar uses the Cholesky factor's inverse. `λ_l =
//!   damping · tr(R_l) / dim_l`, as bergson's `damping_factor` (0.1 of the mean eigenvalue).
//!   With `query_mix` α > 0 (`trackstar-mix`), `R_l` is the paper's task-specific Hessian
//!   `α R_queries + (1 − α) R_store`, `R_queries` the corrected second moment of the gradients of
//!   the queries scored together (their §A.1.3 chooses α by where the two eigenvalue curves
//!   cross; it is given here).
//!
//! fisher, trackstar and ekfac can score each document under the curvature without its own term
//! (`fisher-loo`, `trackstar-loo`, `ekfac-loo`: [`LeaveOneOut`]), exactly, from each row's
//! leverage.

pub mod eval;

use familiar::option::name;
use std::path::Path;

use crate::error::{Error, Result};
use crate::grads::build::document_examples;
use crate::grads::fast::FastGradients;
use crate::grads::linalg::Cholesky;
use crate::grads::store::{GradientStore, Moments};
use crate::grads::Example;
use crate::model::finite;
use rayon::prelude::*;
use serde_json::Value;

use crate::measure::score::LanguageModel;
use familiar::input::string;

/// Opens the gradient store in `store_dir` and the model in `model`, which must be the model the
/// store was built with (same weights hash and tokenizer): scores of another model against these
/// rows would mean nothing.
pub fn open_store_and_model(
    store_dir: &Path,
    model: &Path,
) -> Result<(GradientStore, LanguageModel)> {
    let store = GradientStore::open(store_dir, false)?;
    let hash = crate::grads::store::model_hash(model)?;
    if hash != store.manifest.settings.model_hash {
        return Err(Error::query(format!(
            "{} is not the model the store {} was built with (model hash {hash}, store {})",
            model.display(),
            store_dir.display(),
            store.manifest.settings.model_hash
        )));
    }
    let lm = LanguageModel::load(model)?;
    if lm.tokenizer.hash() != store.manifest.settings.tokenizer_hash {
        return Err(Error::query(format!(
            "the tokenizer.json of {} is not the one the store {} was built with",
            model.display(),
            store_dir.display()
        )));
    }
    Ok((store, lm))
}

/// A query: a prompt and the completion whose gradient is attributed.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Its id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// The completion.
    pub completion: String,
    /// `factual` or `reasoning`.
    pub kind: String,
    /// Task name (queries of one task are compared with each other).
    pub task: String,
    /// The answer (to look for in top documents).
    pub answer: Option<String>,
    /// Intermediate answers of a reasoning query.
    pub intermediate: Vec<String>,
    /// Everything else the query's line holds (labels such as a difficulty or an expected
    /// source), as given: the keys familiar does not know and those under `metadata`.
    pub metadata: serde_json::Map<String, Value>,
}

/// The keys of a query line familiar reads itself.
pub const QUERY_KEYS: [&str; 8] = [
    "id",
    "prompt",
    "completion",
    "kind",
    "task",
    "answer",
    "intermediate",
    "metadata",
];

/// Reads queries from JSONL: `{"id", "prompt", "completion", "kind": "factual"|"reasoning",
/// "task", "answer"?, "intermediate"?: [...], "metadata"?: {...}}`; errors name the file and
/// line. Other keys are kept as the query's metadata (they reach the `queries` table's
/// `metadata` column), except a key within two edits of a known one (`promt`, `Kind`): that is
/// an error naming the key it resembles (put it under `metadata` to keep it).
pub fn read_queries(path: &Path) -> Result<Vec<Query>> {
    parse_queries(path, &familiar::input::read_utf8(path)?)
}

/// The queries of JSONL `text` read from `path` (see [`read_queries`]).
pub fn parse_queries(path: &Path, text: &str) -> Result<Vec<Query>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (line, v) in familiar::input::parse_jsonl(path, text)? {
        let obj = v
            .as_object()
            .ok_or_else(|| Error::input(path, line, "expected a JSON object"))?;
        let mut metadata = serde_json::Map::new();
        for (k, value) in obj {
            if QUERY_KEYS.contains(&k.as_str()) {
                continue;
            }
            if let Some(near) = familiar::input::resembles(k, &QUERY_KEYS, 2) {
                return Err(Error::input(
                    path,
                    line,
                    format!(
                        "unknown key `{k}`: did you mean `{near}`? (keys familiar does not know \
                         are kept as the query's metadata, but this one looks like a slip; put \
                         it under `metadata` to keep it)"
                    ),
                ));
            }
            metadata.insert(k.clone(), value.clone());
        }
        match obj.get("metadata") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, value) in m {
                    if metadata.insert(k.clone(), value.clone()).is_some() {
                        return Err(Error::input(
                            path,
                            line,
                            format!("`{k}` is given both as a key and under `metadata`"),
                        ));
                    }
                }
            }
            Some(_) => {
                return Err(Error::input(path, line, "`metadata` must be a JSON object"));
            }
        }
        let id = match v.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None => format!("{line}"),
            _ => {
                return Err(Error::input(
                    path,
                    line,
                    "`id` must be a string or a number",
                ))
            }
        };
        if !seen.insert(id.clone()) {
            return Err(Error::input(path, line, format!("duplicate id `{id}`")));
        }
        let kind = string(path, line, &v, "kind")?;
        if kind != "factual" && kind != "reasoning" {
            return Err(Error::input(
                path,
                line,
                format!("`kind` must be factual or reasoning, not `{kind}`"),
            ));
        }
        let completion = string(path, line, &v, "completion")?;
        if completion.is_empty() {
            return Err(Error::input(path, line, "`completion` is empty"));
        }
        let answer = match v.get("answer") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => {
                return Err(Error::input(
                    path,
                    line,
                    "`answer` must be a string or a number",
                ))
            }
        };
        let intermediate = match v.get("intermediate") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(Error::input(
                        path,
                        line,
                        "`intermediate` must list strings or numbers",
                    )),
                })
                .collect::<Result<_>>()?,
            _ => return Err(Error::input(path, line, "`intermediate` must be a list")),
        };
        out.push(Query {
            id,
            prompt: string(path, line, &v, "prompt")?,
            completion,
            kind,
            task: string(path, line, &v, "task")?,
            answer,
            intermediate,
            metadata,
        });
    }
    if out.is_empty() {
        return Err(Error::input(path, 1, "no queries"));
    }
    Ok(out)
}

/// How document rows are compared with a query gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precondition {
    /// Dot product.
    Identity,
    /// Cosine similarity.
    Cosine,
    /// Damped inverse of each layer's projected-gradient second moment (the empirical Fisher of
    /// the layer's block; `kfac` before it was named for what it is).
    Fisher {
        /// λ as a fraction of the mean eigenvalue (trace / dim) of each layer's moment.
        damping: f64,
        /// Score each row under the moment without its own term ([`LeaveOneOut`]).
        leave_one_out: bool,
    },
    /// EK-FAC fitted with the store (eigenvalue-corrected Kronecker factors of each layer).
    Ekfac {
        /// λ as a fraction of the mean corrected eigenvalue of each layer.
        damping: f64,
        /// Score each row under the eigenvalues without its own term ([`LeaveOneOut`]).
        leave_one_out: bool,
    },
    /// TrackStar: second-moment-corrected, whitened, unit-normalised gradients (see the module
    /// documentation).
    Trackstar {
        /// λ as a fraction of the mean eigenvalue of each layer's corrected second moment.
        damping: f64,
        /// Whiten each row by the moment without its own term ([`LeaveOneOut`]).
        leave_one_out: bool,
        /// α of TrackStar's task-specific Hessian: each layer's `R` is `α R_queries + (1 − α)
        /// R_store`, `R_queries` the second moment of the corrected query gradients scored
        /// together (Chang et al. 2024, §3 and A.1.3); 0: the store's alone.
        query_mix: f64,
    },
}

impl Precondition {
    /// Its name in tables.
    pub fn name(&self) -> &'static str {
        match self {
            Precondition::Identity => "identity",
            Precondition::Cosine => "cosine",
            Precondition::Fisher {
                leave_one_out: false,
                ..
            } => "fisher",
            Precondition::Fisher {
                leave_one_out: true,
                ..
            } => "fisher-loo",
            Precondition::Ekfac {
                leave_one_out: false,
                ..
            } => "ekfac",
            Precondition::Ekfac {
                leave_one_out: true,
                ..
            } => "ekfac-loo",
            Precondition::Trackstar {
                leave_one_out,
                query_mix,
                ..
            } => match (*query_mix > 0.0, leave_one_out) {
                (false, false) => "trackstar",
                (false, true) => "trackstar-loo",
                (true, false) => "trackstar-mix",
                (true, true) => "trackstar-mix-loo",
            },
        }
    }

    /// TrackStar's α of the queries' second moment (0 for the others).
    pub fn query_mix(&self) -> f64 {
        match *self {
            Precondition::Trackstar { query_mix, .. } => query_mix,
            _ => 0.0,
        }
    }

    /// Its damping, for those that have one.
    pub fn damping(&self) -> Option<f64> {
        match *self {
            Precondition::Fisher { damping, .. }
            | Precondition::Ekfac { damping, .. }
            | Precondition::Trackstar { damping, .. } => Some(damping),
            Precondition::Identity | Precondition::Cosine => None,
        }
    }

    /// Whether each row is scored under the curvature without its own term.
    pub fn leave_one_out(&self) -> bool {
        match *self {
            Precondition::Fisher { leave_one_out, .. }
            | Precondition::Ekfac { leave_one_out, .. }
            | Precondition::Trackstar { leave_one_out, .. } => leave_one_out,
            Precondition::Identity | Precondition::Cosine => false,
        }
    }
}

/// A query's gradient and what it measured.
#[derive(Debug, Clone)]
pub struct QueryGradient {
    /// The projected gradient of −log p(completion | prompt).
    pub gradient: Vec<f32>,
    /// log p(completion | prompt) (natural log): minus the completion's information content.
    pub logprob: f64,
    /// Tokens of the completion.
    pub completion_tokens: usize,
    /// Prompt tokens dropped from the start to fit the context.
    pub truncated_tokens: usize,
}

/// Projected gradients of the queries' completions with the store's projection; a non-finite
/// loss or gradient is an error ([`Error::NonFinite`]) naming the query.
pub fn query_gradients(
    lm: &LanguageModel,
    store: &GradientStore,
    queries: &[Query],
) -> Result<Vec<QueryGradient>> {
    let projection = store.projection(&lm.model)?;
    let fast = FastGradients::new(&lm.model, &projection)?;
    queries
        .par_iter()
        .map(|q| {
            let (ctx, cont) = lm.split(&q.prompt, &q.completion)?;
            let (ids, keep, truncated) = lm
                .fit(&ctx, &cont)
                .map_err(|e| Error::query(format!("query {}: {e}", q.id)))?;
            let g = fast.compute(&[Example {
                ids,
                first_target: keep,
            }])?;
            // A NaN gradient would score every document NaN (ranked as the lowest ids first).
            let named = |e| finite::within(e, format!("query {}", q.id));
            finite::check_value("the completion's loss", g.losses[0]).map_err(named)?;
            finite::check_values("the projected gradient", &g.rows).map_err(named)?;
            Ok(QueryGradient {
                gradient: g.rows,
                logprob: -g.losses[0],
                completion_tokens: cont.len(),
                truncated_tokens: truncated,
            })
        })
        // The first error in the queries' order, whichever thread met it first.
        .collect::<Vec<Result<_>>>()
        .into_iter()
        .collect()
}

/// The sums of outer products of every row of `store`, read from the rows themselves.
pub fn moments_of_rows(store: &GradientStore) -> Moments {
    let spec = &store.manifest.settings.projection;
    let dim = store.dim();
    let mut total = Moments::zero(&spec.blocks());
    for f in &store.files {
        // Blocks of rows in memory at a time, summed as the store builder sums them.
        for start in (0..f.rows).step_by(1024) {
            let rows: Vec<Vec<f32>> = (start..(start + 1024).min(f.rows))
                .map(|i| {
                    let mut row = vec![0.0f32; dim];
                    f.row(i, &mut row);
                    row
                })
                .collect();
            total.add_rows(&rows);
        }
    }
    total
}

/// The second moment of each layer's rows, `(1/N) Σ g_l g_lᵀ` (`[layers][block × block]`, f64):
/// from the store's moments files, or from the rows for a store without them.
pub fn second_moments(store: &GradientStore) -> Result<Vec<Vec<f64>>> {
    let m = match store.moments()? {
        Some(m) => m.second_moments(),
        None => moments_of_rows(store).second_moments(),
    };
    // Only a store written before non-finite gradients were refused can hold them; without this
    // check they would surface as "not positive definite".
    if let Some((l, bad)) = m
        .iter()
        .enumerate()
        .find_map(|(l, m)| finite::scan(m).map(|b| (l, b)))
    {
        return Err(Error::corrupt(
            store.dir(),
            format!(
                "the second moment of layer {l} holds {bad}: the rows were computed by a model \
                 whose outputs were not finite; rebuild the store"
            ),
        ));
    }
    Ok(m)
}

/// How a row's dot product with a query's vector is divided to give its score.
#[derive(Debug, Clone)]
pub enum RowNorm {
    /// Not at all: the score is the dot product.
    None,
    /// By the row's Euclidean norm (cosine).
    Euclidean,
    /// By the row's norm under a per-layer metric: `sqrt(Σ_l |L_l⁻¹ (s_l ⊙ g_l)|²)`
    /// (TrackStar's whitened norm).
    Whitened(Vec<Whitening>),
}

/// One layer's whitening `L⁻¹ diag(s)`: `s` a per-coordinate correction, `L` the Cholesky
/// factor of the damped second moment of the corrected rows.
#[derive(Debug, Clone)]
pub struct Whitening {
    /// The correction of each coordinate of the layer's block.
    pub scale: Vec<f64>,
    /// `R + λI = L Lᵀ`.
    pub factor: Cholesky,
}

impl Whitening {
    /// `L⁻¹ (s ⊙ g)` of a layer's block `g`.
    pub fn apply(&self, g: &[f32]) -> Vec<f64> {
        let q: Vec<f64> = g
            .iter()
            .zip(&self.scale)
            .map(|(&x, s)| x as f64 * s)
            .collect();
        self.factor.forward(&q)
    }

    /// `|L⁻¹ (s ⊙ g)|²` of this layer's block `g` of each row (`rows`, `dim` values each, the
    /// block at `offset`), solved for all rows at once.
    fn squared_norms(&self, rows: &[f32], dim: usize, offset: usize) -> Vec<f64> {
        let b = self.scale.len();
        let q: Vec<f64> = rows
            .chunks(dim)
            .flat_map(|row| {
                row[offset..offset + b]
                    .iter()
                    .zip(&self.scale)
                    .map(|(&x, s)| x as f64 * s)
            })
            .collect();
        self.factor
            .forward_rows(&q)
            .chunks(b.max(1))
            .map(|y| y.iter().map(|v| v * v).sum())
            .collect()
    }
}

impl RowNorm {
    /// The divisors of the dot products of each row of `rows` (`dim` values each), as
    /// [`RowNorm::of`] gives them; TrackStar's whitened norms are solved for all rows at once.
    pub fn of_rows(&self, rows: &[f32], dim: usize) -> Vec<f64> {
        match self {
            RowNorm::Whitened(layers) => layer_squared_norms(layers, rows, dim)
                .into_iter()
                .map(|l| l.iter().sum::<f64>().sqrt())
                .collect(),
            _ => rows.chunks(dim.max(1)).map(|r| self.of(r)).collect(),
        }
    }

    /// The divisor of `row`'s dot products.
    pub fn of(&self, row: &[f32]) -> f64 {
        match self {
            RowNorm::None => 1.0,
            RowNorm::Euclidean => row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt(),
            RowNorm::Whitened(layers) => layers
                .iter()
                .zip(split(row, layers.iter().map(|w| w.scale.len())))
                .map(|(w, g)| w.apply(g).iter().map(|y| y * y).sum::<f64>())
                .sum::<f64>()
                .sqrt(),
        }
    }
}

/// The exact leave-one-out correction (`--leave-one-out`): each row is scored under its layers'
/// curvature without its own term — for fisher and trackstar the second moment
/// `M_l − g_l g_lᵀ / N` (the other rows' outer products over the same `N`, with the same damping
/// `λ_l` and, for trackstar, the same correction `s`), for ekfac the corrected eigenvalues
/// `Λ_l − (Q_Sᵀ G_l Q_A)² / N` (in the same eigenbasis).
///
/// The curvature of a store of few documents is dominated by each document's own term, so the
/// plain preconditioners whiten a distinctive document (one that states a fact no other does)
/// against itself and rank it low; leaving it out asks what removing the document changes, as
/// the influence function means to. By Sherman–Morrison, with `A_l = M_l + λ_l I` and the
/// row's leverage `h_l = g_lᵀ A_l⁻¹ g_l / N` of each layer (Cook 1977; Pregibon 1981's one-step
/// leave-one-out estimate):
///
/// - fisher: `score = Σ_l d_l / (1 − h_l)`, `d_l = q_lᵀ A_l⁻¹ g_l` the plain score's term;
/// - trackstar (both sides whitened by the corrected moment without the row, `c = s ⊙ g`, `d_l`
///   the plain term over the query's whitened norm `|W q|`):
///   `score = Σ_l d_l/(1 − h_l) / sqrt(Σ_l N h_l/(1 − h_l) · (1 + Σ_l d_l² / (N (1 − h_l))))` —
///   the row's whitened norm and the query's both change with the moment;
/// - ekfac, elementwise in the eigenbasis (`q̃ = Q_Sᵀ Q Q_A`, `g̃` likewise):
///   `score = Σ_l Σ_ij q̃_ij g̃_ij / (Λ_ij + λ_l − g̃_ij² / N)`.
///
/// fisher's and trackstar's leverages are the rows' whitened squared norms over `N` (trackstar's
/// divisor already needs them; fisher solves its layers' factors against every row, as trackstar
/// does); ekfac's need each row rotated into the eigenbasis (`rank_out · rank_in · (rank_out +
/// rank_in)` multiply-adds per layer).
#[derive(Debug, Clone)]
pub struct LeaveOneOut {
    /// The rows the curvature is the mean of (`N`).
    pub rows: f64,
    /// Whose curvature.
    pub kind: LeaveOneOutKind,
}

/// The curvature [`LeaveOneOut`] leaves a row's term out of.
#[derive(Debug, Clone)]
pub enum LeaveOneOutKind {
    /// fisher's (`normalised` false) or trackstar's per-layer second moment.
    Whitened {
        /// Per layer, the metric whose squared norm of a row's block, over `N`, is the block's
        /// leverage (fisher: no correction and `A_l`'s factor; trackstar: its whitening).
        layers: Vec<Whitening>,
        /// trackstar's unit normalisation of both sides (else fisher's plain dot product).
        normalised: bool,
    },
    /// ekfac's corrected eigenvalues.
    Ekfac {
        /// The store's fit.
        fit: Box<crate::grads::ekfac::Ekfac>,
        /// Each layer's damping.
        lambdas: Vec<f64>,
        /// Per query, its gradient rotated into each layer's eigenbasis and divided by `Λ + λ`
        /// (the plain score is its dot product with the rotated row).
        queries: Vec<Vec<f64>>,
    },
}

/// What [`LeaveOneOut::token_vectors`] gives a (query, document) pair.
#[derive(Debug, Clone)]
pub struct TokenVectors {
    /// The vector the document's token terms are multiplied with.
    pub document: Vec<f32>,
    /// What those products are divided by.
    pub divisor: f64,
    /// The vector the query's token terms are multiplied with (before the query's own divisor).
    pub query: Vec<f32>,
}

impl LeaveOneOut {
    /// 1 − h: positive whenever the row is one of the curvature's (h < 1 for λ > 0); kept
    /// positive should rounding of a half-precision store push it past.
    fn rest(h: f64) -> f64 {
        (1.0 - h).max(f64::EPSILON)
    }

    /// What scoring needs of each row of `rows` (`dim` values each), computed for all of them at
    /// once: fisher and trackstar each layer's whitened squared norm (`N h_l`), ekfac the row
    /// rotated into the eigenbasis over `1 − h` elementwise.
    pub fn row_terms(&self, rows: &[f32], dim: usize) -> Vec<Vec<f64>> {
        match &self.kind {
            LeaveOneOutKind::Whitened { layers, .. } => layer_squared_norms(layers, rows, dim),
            LeaveOneOutKind::Ekfac { .. } => rows
                .chunks(dim.max(1))
                .map(|row| {
                    self.rotated_parts(row)
                        .into_iter()
                        .flat_map(|(g, rest)| g.into_iter().zip(rest).map(|(g, r)| g / r))
                        .collect()
                })
                .collect(),
        }
    }

    /// ekfac: per layer the row rotated into the eigenbasis, `g̃`, and `1 − h` of each element.
    fn rotated_parts(&self, row: &[f32]) -> Vec<(Vec<f64>, Vec<f64>)> {
        let LeaveOneOutKind::Ekfac { fit, lambdas, .. } = &self.kind else {
            return Vec::new();
        };
        let n = self.rows.max(1.0);
        let at = fit.offsets();
        fit.layers
            .iter()
            .zip(lambdas)
            .enumerate()
            .map(|(l, (layer, lambda))| {
                let g = fit.rotate(l, &row[at[l]..at[l + 1]]);
                let rest = g
                    .iter()
                    .zip(&layer.eigenvalues)
                    .map(|(g, e)| Self::rest(g * g / (n * (e + lambda))))
                    .collect();
                (g, rest)
            })
            .collect()
    }

    /// The leave-one-out score of `row` (its [`LeaveOneOut::row_terms`] `terms`) for query `q`,
    /// whose plain vector is `vector`.
    pub fn score(&self, row: &[f32], terms: &[f64], q: usize, vector: &[f32]) -> f64 {
        match &self.kind {
            LeaveOneOutKind::Whitened { layers, .. } => {
                let dots = layer_dots(row, vector, layers);
                let divisor = self.divisor(terms);
                if divisor <= 0.0 {
                    return 0.0;
                }
                self.weights(&dots, terms, divisor)
                    .iter()
                    .zip(&dots)
                    .map(|(w, d)| w * d)
                    .sum::<f64>()
                    / divisor
            }
            LeaveOneOutKind::Ekfac { queries, .. } => {
                queries[q].iter().zip(terms).map(|(a, b)| a * b).sum()
            }
        }
    }

    /// fisher and trackstar: the plain score's divisor of a row whose whitened squared norms per
    /// layer are `squared` (trackstar's whitened norm; 1 for fisher).
    fn divisor(&self, squared: &[f64]) -> f64 {
        match self.kind {
            LeaveOneOutKind::Whitened {
                normalised: true, ..
            } => squared.iter().sum::<f64>().sqrt(),
            _ => 1.0,
        }
    }

    /// fisher and trackstar: the weights `w_l` of a row's per-layer terms such that its
    /// leave-one-out score is `Σ_l w_l d_l / divisor`: `dots` are the row's dot products with
    /// the query's vector per layer (`d_l`), `squared` its whitened squared norms per layer
    /// (`N h_l`), `divisor` the plain score's divisor of the row (trackstar's whitened norm, 1
    /// for fisher).
    fn weights(&self, dots: &[f64], squared: &[f64], divisor: f64) -> Vec<f64> {
        let n = self.rows.max(1.0);
        let rest: Vec<f64> = squared.iter().map(|s| Self::rest(s / n)).collect();
        let LeaveOneOutKind::Whitened {
            normalised: true, ..
        } = &self.kind
        else {
            return rest.iter().map(|r| 1.0 / r).collect();
        };
        let row: f64 = squared.iter().zip(&rest).map(|(s, r)| s / r).sum();
        let query: f64 = 1.0
            + dots
                .iter()
                .zip(&rest)
                .map(|(d, r)| d * d / (n * r))
                .sum::<f64>();
        let norm = (row * query).sqrt();
        if norm > 0.0 && norm.is_finite() {
            rest.iter().map(|r| divisor / (r * norm)).collect()
        } else {
            vec![0.0; rest.len()]
        }
    }

    /// For token influence, the vectors of query `q` (plain vector `vector`) and the document
    /// whose row is `row`: the document's token terms dotted with `document` over `divisor` add
    /// up to its leave-one-out score, and so do the query's token terms dotted with `query`
    /// over the query's plain divisor. `preconditioned` is the plain operator's vector of the
    /// row (fisher and trackstar scale it layer by layer).
    pub fn token_vectors(
        &self,
        row: &[f32],
        q: usize,
        vector: &[f32],
        preconditioned: &[f32],
    ) -> TokenVectors {
        let dim = row.len();
        match &self.kind {
            LeaveOneOutKind::Whitened { layers, .. } => {
                let squared = self.row_terms(row, dim).remove(0);
                let dots = layer_dots(row, vector, layers);
                let divisor = self.divisor(&squared);
                let w = self.weights(&dots, &squared, divisor);
                let scale = |v: &[f32]| -> Vec<f32> {
                    split(v, layers.iter().map(|l| l.scale.len()))
                        .zip(&w)
                        .flat_map(|(b, w)| b.iter().map(move |x| (*x as f64 * w) as f32))
                        .collect()
                };
                TokenVectors {
                    document: scale(vector),
                    divisor,
                    query: scale(preconditioned),
                }
            }
            LeaveOneOutKind::Ekfac {
                fit,
                lambdas,
                queries,
            } => {
                let at = fit.offsets();
                let (mut document, mut query) = (Vec::with_capacity(dim), Vec::with_capacity(dim));
                for (l, (g, rest)) in self.rotated_parts(row).into_iter().enumerate() {
                    let u = &queries[q][at[l]..at[l + 1]];
                    let d: Vec<f64> = u.iter().zip(&rest).map(|(u, r)| u / r).collect();
                    document.extend(fit.unrotate(l, &d).into_iter().map(|x| x as f32));
                    let e = &fit.layers[l].eigenvalues;
                    let p: Vec<f64> = g
                        .iter()
                        .zip(&rest)
                        .zip(e)
                        .map(|((g, r), e)| g / ((e + lambdas[l]) * r))
                        .collect();
                    query.extend(fit.unrotate(l, &p).into_iter().map(|x| x as f32));
                }
                TokenVectors {
                    document,
                    divisor: 1.0,
                    query,
                }
            }
        }
    }
}

/// Each row's whitened squared norm of each layer (`[row][layer]`), for `rows` of `dim` values
/// each, solved for all rows at once.
fn layer_squared_norms(layers: &[Whitening], rows: &[f32], dim: usize) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(layers.len()); rows.len() / dim.max(1)];
    let mut offset = 0;
    for w in layers {
        for (o, v) in out.iter_mut().zip(w.squared_norms(rows, dim, offset)) {
            o.push(v);
        }
        offset += w.scale.len();
    }
    out
}

/// `row · vector` of each layer's block.
fn layer_dots(row: &[f32], vector: &[f32], layers: &[Whitening]) -> Vec<f64> {
    let blocks = || layers.iter().map(|w| w.scale.len());
    split(row, blocks())
        .zip(split(vector, blocks()))
        .map(|(a, b)| dot(a, b))
        .collect()
}

/// The query side of a preconditioner: the vectors every row is multiplied with, how each
/// row's products are divided, and the operator that made the vectors (to precondition more
/// gradients alike without fitting it again).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// One per query.
    pub vectors: Vec<Vec<f32>>,
    /// The rows' divisor.
    pub norm: RowNorm,
    /// The leave-one-out correction, when asked for.
    pub leave_one_out: Option<LeaveOneOut>,
    /// The fitted preconditioner.
    pub operator: Operator,
}

impl Prepared {
    /// Every row of `store` scored against every query ([`score_all`] with this preconditioner's
    /// norm and leave-one-out correction), the `top_k` best kept per query.
    pub fn scores(&self, store: &GradientStore, top_k: Option<usize>) -> Vec<Influence> {
        score_all(
            store,
            &self.vectors,
            &self.norm,
            self.leave_one_out.as_ref(),
            top_k,
        )
    }
    /// [`Prepared::scores`] with the rows' dot products on `device` ([`score_all_on`]; the CPU
    /// path for a CPU device). The leave-one-out correction is scored on the CPU only.
    pub fn scores_on(
        &self,
        store: &GradientStore,
        top_k: Option<usize>,
        device: &candle_core::Device,
    ) -> Result<Vec<Influence>> {
        Prepared::check_device(device, self.leave_one_out.is_some())?;
        if device.is_cpu() {
            return Ok(self.scores(store, top_k));
        }
        score_all_on(store, &self.vectors, &self.norm, device, top_k)
    }

    /// Refuses the leave-one-out correction on a device other than the CPU.
    fn check_device(device: &candle_core::Device, leave_one_out: bool) -> Result<()> {
        if leave_one_out && !device.is_cpu() {
            return Err(Error::query(format!(
                "the leave-one-out correction is scored on the CPU only: drop {} or {}",
                name("device"),
                name("leave_one_out")
            )));
        }
        Ok(())
    }
}

/// A preconditioner fitted on a store.
#[derive(Debug, Clone)]
pub enum Operator {
    /// The gradient itself.
    Identity,
    /// The unit gradient.
    Cosine,
    /// Per layer the Cholesky factor of the damped second moment (solved against).
    Fisher(Vec<Cholesky>),
    /// The store's EK-FAC and each layer's damping.
    Ekfac(Box<crate::grads::ekfac::Ekfac>, Vec<f64>),
    /// Per layer the correction and whitening.
    Trackstar(Vec<Whitening>),
}

impl Operator {
    /// Fits `p` on `store`; TrackStar's task-specific Hessian also on the query `gradients`.
    pub fn fit(store: &GradientStore, p: Precondition, gradients: &[Vec<f32>]) -> Result<Operator> {
        match p {
            Precondition::Identity => Ok(Operator::Identity),
            Precondition::Cosine => Ok(Operator::Cosine),
            Precondition::Trackstar {
                damping, query_mix, ..
            } => {
                check_damping(damping)?;
                check_query_mix(query_mix)?;
                trackstar_layers(store, damping, query_mix, gradients).map(Operator::Trackstar)
            }
            Precondition::Ekfac { damping, .. } => {
                check_damping(damping)?;
                let fit = store.ekfac()?;
                let lambdas = fit.lambdas(damping);
                Ok(Operator::Ekfac(Box::new(fit), lambdas))
            }
            Precondition::Fisher { damping, .. } => {
                check_damping(damping)?;
                let blocks = store.manifest.settings.projection.blocks();
                let moments = second_moments(store)?;
                // One factorization per layer, shared by every query.
                moments
                    .par_iter()
                    .zip(&blocks)
                    .map(|(m, &block)| damped_factor(m, block, damping))
                    .collect::<Result<Vec<_>>>()
                    .map(Operator::Fisher)
            }
        }
    }

    /// The leave-one-out correction of this operator's scores for query `gradients` over a
    /// store of `rows` rows: for fisher, trackstar and ekfac, whose curvature is a mean over the
    /// store's rows; `None` for identity and cosine.
    pub fn leave_one_out(&self, rows: f64, gradients: &[Vec<f32>]) -> Option<LeaveOneOut> {
        let whitened = |layers: Vec<Whitening>, normalised| LeaveOneOut {
            rows,
            kind: LeaveOneOutKind::Whitened { layers, normalised },
        };
        match self {
            Operator::Fisher(factors) => Some(whitened(
                factors
                    .iter()
                    .map(|c| Whitening {
                        scale: vec![1.0; c.n()],
                        factor: c.clone(),
                    })
                    .collect(),
                false,
            )),
            Operator::Trackstar(layers) => Some(whitened(layers.clone(), true)),
            Operator::Ekfac(fit, lambdas) => {
                let at = fit.offsets();
                let queries = gradients
                    .par_iter()
                    .map(|g| {
                        let mut u = Vec::with_capacity(g.len());
                        for (l, (layer, lambda)) in fit.layers.iter().zip(lambdas).enumerate() {
                            let r = fit.rotate(l, &g[at[l]..at[l + 1]]);
                            u.extend(
                                r.iter()
                                    .zip(&layer.eigenvalues)
                                    .map(|(r, e)| r / (e + lambda)),
                            );
                        }
                        u
                    })
                    .collect();
                Some(LeaveOneOut {
                    rows: fit.rows as f64,
                    kind: LeaveOneOutKind::Ekfac {
                        fit: fit.clone(),
                        lambdas: lambdas.clone(),
                        queries,
                    },
                })
            }
            Operator::Identity | Operator::Cosine => None,
        }
    }

    /// How rows' dot products with the vectors are divided.
    pub fn norm(&self) -> RowNorm {
        match self {
            Operator::Cosine => RowNorm::Euclidean,
            Operator::Trackstar(layers) => RowNorm::Whitened(layers.clone()),
            Operator::Identity | Operator::Fisher(_) | Operator::Ekfac(..) => RowNorm::None,
        }
    }

    /// The vectors of `gradients` (one per gradient).
    pub fn apply(&self, gradients: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let unit = |g: &[f32]| -> Vec<f32> {
            let norm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let s = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            g.iter().map(|x| (*x as f64 * s) as f32).collect()
        };
        match self {
            Operator::Identity => gradients.to_vec(),
            Operator::Cosine => gradients.iter().map(|g| unit(g)).collect(),
            // v = diag(s) L⁻ᵀ L⁻¹ diag(s) q / |L⁻¹ diag(s) q|: its dot product with a row is the
            // whitened inner product over the query's whitened norm.
            Operator::Trackstar(layers) => gradients
                .par_iter()
                .map(|g| {
                    let ys: Vec<Vec<f64>> = layers
                        .iter()
                        .zip(split(g, layers.iter().map(|w| w.scale.len())))
                        .map(|(w, g)| w.apply(g))
                        .collect();
                    let norm = ys.iter().flatten().map(|y| y * y).sum::<f64>().sqrt();
                    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
                    let mut out = Vec::with_capacity(g.len());
                    for (w, y) in layers.iter().zip(&ys) {
                        let x = w.factor.backward(y);
                        out.extend(x.iter().zip(&w.scale).map(|(x, s)| (x * s * inv) as f32));
                    }
                    out
                })
                .collect(),
            Operator::Ekfac(fit, lambdas) => gradients
                .par_iter()
                .map(|g| fit.precondition(g, lambdas))
                .collect(),
            Operator::Fisher(factors) => gradients
                .par_iter()
                .map(|g| {
                    let mut out = Vec::with_capacity(g.len());
                    for (c, g) in factors
                        .iter()
                        .zip(split(g, factors.iter().map(Cholesky::n)))
                    {
                        let q: Vec<f64> = g.iter().map(|&x| x as f64).collect();
                        out.extend(c.solve(&q).into_iter().map(|x| x as f32));
                    }
                    out
                })
                .collect(),
        }
    }
}

/// TrackStar's per-layer correction `s` and whitening by the damped `R`: the corrected second
/// moment of the store's rows, or with `query_mix` α > 0 Chang et al.'s task-specific Hessian
/// `α R_queries + (1 − α) R_store`, `R_queries` the corrected second moment of `queries`.
fn trackstar_layers(
    store: &GradientStore,
    damping: f64,
    query_mix: f64,
    queries: &[Vec<f32>],
) -> Result<Vec<Whitening>> {
    let offsets = store.manifest.settings.projection.offsets();
    let by_optimizer = matches!(Correction::of(store), Correction::Optimizer(_));
    let (alpha, n) = match queries.len() {
        0 => (0.0, 1.0),
        n => (query_mix, n as f64),
    };
    second_moments(store)?
        .par_iter()
        .enumerate()
        .map(|(l, m)| {
            let (at, block) = (offsets[l], offsets[l + 1] - offsets[l]);
            // The correction: none when the rows are corrected by the optimizer's second moment
            // already, else 1/√v of each coordinate's second moment (0 where every row is 0
            // there).
            let scale: Vec<f64> = (0..block)
                .map(|a| match m[a * block + a] {
                    _ if by_optimizer => 1.0,
                    v if v > 0.0 => 1.0 / v.sqrt(),
                    _ => 0.0,
                })
                .collect();
            let mut r = vec![0.0f64; block * block];
            for a in 0..block {
                for b in 0..block {
                    r[a * block + b] = (1.0 - alpha) * m[a * block + b] * scale[a] * scale[b];
                }
            }
            if alpha > 0.0 {
                for q in queries {
                    let c: Vec<f64> = q[at..at + block]
                        .iter()
                        .zip(&scale)
                        .map(|(&x, s)| x as f64 * s)
                        .collect();
                    for a in 0..block {
                        let ca = alpha * c[a] / n;
                        for b in 0..block {
                            r[a * block + b] += ca * c[b];
                        }
                    }
                }
            }
            let factor = damped_factor(&r, block, damping)?;
            Ok(Whitening { scale, factor })
        })
        .collect()
}

/// `row` cut into consecutive blocks of `lengths`.
fn split(row: &[f32], lengths: impl Iterator<Item = usize>) -> impl Iterator<Item = &[f32]> {
    let mut at = 0;
    lengths.map(move |n| {
        at += n;
        &row[at - n..at]
    })
}

/// The query gradients, preconditioned: the vectors each row is multiplied with (and the rows'
/// norm, for the normalised preconditioners).
pub fn preconditioned(
    store: &GradientStore,
    gradients: &[Vec<f32>],
    p: Precondition,
) -> Result<Prepared> {
    let operator = Operator::fit(store, p, gradients)?;
    // The weight of a row in the curvature is 1/N, (1 − α)/N in TrackStar's mixed one.
    let rows = store.rows() as f64 / (1.0 - p.query_mix());
    Ok(Prepared {
        vectors: operator.apply(gradients),
        norm: operator.norm(),
        leave_one_out: if p.leave_one_out() {
            operator.leave_one_out(rows, gradients)
        } else {
            None
        },
        operator,
    })
}

/// What TrackStar's gradients are corrected by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Correction {
    /// The optimizer's second moment, from this file of the model directory (the store was
    /// built with `--optimizer-correction`).
    Optimizer(String),
    /// The store's own second moment of each projected coordinate (TrackStar corrects by the
    /// optimizer's; this store was built without it).
    Store,
}

impl Correction {
    /// The correction of `store`'s rows.
    pub fn of(store: &GradientStore) -> Correction {
        match &store.manifest.settings.projection.optimizer {
            Some(o) => Correction::Optimizer(o.file.clone()),
            None => Correction::Store,
        }
    }
}

impl std::fmt::Display for Correction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Correction::Optimizer(file) => write!(
                f,
                "corrected by the optimizer's second moment ({file}, Adafactor-factored)"
            ),
            Correction::Store => write!(
                f,
                "corrected by the store's own second moment of each projected coordinate, not \
                 the optimizer's: the store was built without {}",
                name("optimizer-correction")
            ),
        }
    }
}

/// The Cholesky factor of `m + λI` (`block × block`), `λ = damping · tr(m) / block` (a fraction
/// of the mean eigenvalue; `damping` itself when `m` is zero).
fn damped_factor(m: &[f64], block: usize, damping: f64) -> Result<Cholesky> {
    let trace: f64 = (0..block).map(|i| m[i * block + i]).sum();
    let lambda = if trace > 0.0 {
        damping * trace / block as f64
    } else {
        damping
    };
    Cholesky::damped(m, block, lambda).ok_or_else(|| {
        Error::query(format!(
            "the damped second moment is not positive definite; raise {}",
            name("damping")
        ))
    })
}

/// TrackStar's α of the queries' second moment: in [0, 1) (1 would leave the store's rows out of
/// the curvature).
pub fn check_query_mix(query_mix: f64) -> Result<()> {
    if !(0.0..1.0).contains(&query_mix) {
        return Err(Error::query(format!(
            "{} must be at least 0 and below 1 (the queries' share of TrackStar's curvature), \
             not {query_mix}",
            name("query_mix")
        )));
    }
    Ok(())
}

/// A damping must be a positive number.
fn check_damping(damping: f64) -> Result<()> {
    if damping.is_nan() || damping <= 0.0 {
        return Err(Error::query(format!(
            "{} must be positive",
            name("damping")
        )));
    }
    Ok(())
}

/// One document's score for one query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Influence {
    /// Index of the query.
    pub query: usize,
    /// Global document id.
    pub doc: u64,
    /// Score.
    pub score: f64,
    /// 1 for the highest score of the query (ties: lower document id first).
    pub rank: u64,
}

/// Scores every row against every vector (each dot product divided by the row's `norm`, or
/// under `leave_one_out`'s correction); keeps the `top_k` best per query (every document with
/// `None`), ranked.
pub fn score_all(
    store: &GradientStore,
    vectors: &[Vec<f32>],
    norm: &RowNorm,
    leave_one_out: Option<&LeaveOneOut>,
    top_k: Option<usize>,
) -> Vec<Influence> {
    let dim = store.dim();
    let nq = vectors.len();
    // (score, doc) per query, per block of rows.
    let blocks: Vec<(usize, u64, u64)> = store
        .files
        .iter()
        .enumerate()
        .flat_map(|(fi, f)| {
            (0..f.rows)
                .step_by(4096)
                .map(move |s| (fi, s, (s + 4096).min(f.rows)))
        })
        .collect();
    let keep = |v: &mut Vec<(f64, u64)>| keep_top(v, top_k);
    let per_query: Vec<Vec<(f64, u64)>> = blocks
        .par_iter()
        .map(|&(fi, s, e)| {
            let f = &store.files[fi];
            // TrackStar's whitened norms, or each layer's whitened squared norm for the
            // leave-one-out correction, first, a batch of rows at a time (matrix products then,
            // instead of a triangular solve per row).
            let batched = |solve: &(dyn Fn(&[f32]) -> Vec<Vec<f64>> + Sync)| {
                let starts: Vec<u64> = (s..e).step_by(NORM_BATCH).collect();
                starts
                    .par_iter()
                    .flat_map_iter(|&b| {
                        let end = (b + NORM_BATCH as u64).min(e);
                        let mut rows = vec![0.0f32; (end - b) as usize * dim];
                        for (i, row) in (b..end).zip(rows.chunks_mut(dim.max(1))) {
                            f.row(i, row);
                        }
                        solve(&rows)
                    })
                    .collect::<Vec<Vec<f64>>>()
            };
            // fisher's and trackstar's leverages a batch at a time; ekfac's terms (a row's size
            // each) below, a batch at a time as the rows are scored, so that a block's are not
            // all held at once.
            let terms = leave_one_out
                .filter(|l| matches!(l.kind, LeaveOneOutKind::Whitened { .. }))
                .map(|l| batched(&|rows| l.row_terms(rows, dim)));
            let whitened = (leave_one_out.is_none() && matches!(norm, RowNorm::Whitened(_)))
                .then(|| batched(&|rows| vec![norm.of_rows(rows, dim)]))
                .map(|d| d.concat());
            let mut row = vec![0.0f32; dim];
            let mut out: Vec<Vec<(f64, u64)>> = vec![Vec::new(); nq];
            let mut batch: Vec<Vec<f64>> = Vec::new();
            for i in s..e {
                f.row(i, &mut row);
                let doc = f.first_doc + i;
                if let Some(l) = leave_one_out {
                    let k = (i - s) as usize;
                    let terms = match &terms {
                        Some(t) => &t[k],
                        None => {
                            if k.is_multiple_of(NORM_BATCH) {
                                let end = (i + NORM_BATCH as u64).min(e);
                                batch = (i..end)
                                    .into_par_iter()
                                    .map(|j| {
                                        let mut r = vec![0.0f32; dim];
                                        f.row(j, &mut r);
                                        l.row_terms(&r, dim).remove(0)
                                    })
                                    .collect();
                            }
                            &batch[k % NORM_BATCH]
                        }
                    };
                    for (q, v) in vectors.iter().enumerate() {
                        out[q].push((l.score(&row, terms, q, v), doc));
                    }
                    continue;
                }
                let divisor = match &whitened {
                    Some(d) => d[(i - s) as usize],
                    None => norm.of(&row),
                };
                for (q, v) in vectors.iter().enumerate() {
                    let dot = dot(&row, v);
                    let score = if divisor > 0.0 { dot / divisor } else { 0.0 };
                    out[q].push((score, doc));
                }
            }
            for v in &mut out {
                keep(v);
            }
            out
        })
        .reduce(
            || vec![Vec::new(); nq],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.extend(y);
                    keep(x);
                }
                a
            },
        );
    ranked(per_query)
}

/// Each query's kept (score, document) pairs ranked, best first.
fn ranked(per_query: Vec<Vec<(f64, u64)>>) -> Vec<Influence> {
    let mut out = Vec::new();
    for (q, mut v) in per_query.into_iter().enumerate() {
        v.sort_by(|a, b| better(*a, *b));
        out.extend(
            v.into_iter()
                .enumerate()
                .map(|(r, (score, doc))| Influence {
                    query: q,
                    doc,
                    score,
                    rank: r as u64 + 1,
                }),
        );
    }
    out
}

/// Keeps the `top_k` best of `v` (all with `None`), unordered.
fn keep_top(v: &mut Vec<(f64, u64)>, top_k: Option<usize>) {
    if let Some(k) = top_k {
        if v.len() > k {
            v.select_nth_unstable_by(k, |a, b| better(*a, *b));
            v.truncate(k);
        }
    }
}

/// [`score_all`] without the leave-one-out correction, the rows' dot products with the vectors
/// computed on `device` (a GPU: `--device cuda`) — blocks of rows copied there and multiplied
/// with all the vectors at once, in f32 — and the divisors (norms) on the CPU as
/// [`score_all`] computes them. The same scores to f32 rounding on any device.
pub fn score_all_on(
    store: &GradientStore,
    vectors: &[Vec<f32>],
    norm: &RowNorm,
    device: &candle_core::Device,
    top_k: Option<usize>,
) -> Result<Vec<Influence>> {
    use crate::model::transformer::candle_error;
    use candle_core::Tensor;
    let (dim, nq) = (store.dim(), vectors.len());
    let mut per_query: Vec<Vec<(f64, u64)>> = vec![Vec::new(); nq];
    if nq == 0 || dim == 0 {
        return Ok(ranked(per_query));
    }
    let err = candle_error("scoring the store's rows");
    let v = Tensor::from_vec(vectors.concat(), (nq, dim), device)
        .and_then(|v| v.t())
        .map_err(&err)?;
    for f in &store.files {
        for s in (0..f.rows).step_by(DEVICE_BLOCK) {
            let n = ((s + DEVICE_BLOCK as u64).min(f.rows) - s) as usize;
            let mut rows = vec![0.0f32; n * dim];
            rows.par_chunks_mut(dim)
                .enumerate()
                .for_each(|(k, r)| f.row(s + k as u64, r));
            let divisors: Vec<f64> = rows
                .par_chunks(NORM_BATCH * dim)
                .flat_map_iter(|c| norm.of_rows(c, dim))
                .collect();
            let dots = Tensor::from_vec(rows, (n, dim), device)
                .and_then(|x| x.matmul(&v))
                .and_then(|d| d.to_vec2::<f32>())
                .map_err(&err)?;
            for (k, (row, divisor)) in dots.iter().zip(divisors).enumerate() {
                let doc = f.first_doc + s + k as u64;
                for (out, &d) in per_query.iter_mut().zip(row) {
                    let score = if divisor > 0.0 {
                        d as f64 / divisor
                    } else {
                        0.0
                    };
                    out.push((score, doc));
                }
            }
            per_query.iter_mut().for_each(|v| keep_top(v, top_k));
        }
    }
    Ok(ranked(per_query))
}

/// Rows [`score_all_on`] copies to the device at once.
const DEVICE_BLOCK: usize = 4096;

/// `a · b`, summed in f32 over runs of 16 and in f64 over the runs.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.chunks(16)
        .zip(b.chunks(16))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() as f64)
        .sum()
}

/// Rows whose divisors [`score_all`] computes together.
const NORM_BATCH: usize = 64;

/// Higher score first, then lower document id.
fn better(a: (f64, u64), b: (f64, u64)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// A row of the `influence` table: a training document's score for a query.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/influence.json
pub struct InfluenceRow {
    pub query_id: String,
    pub doc_id: u64,
    pub score: f64,
    pub rank: u64,
}

impl familiar::table::TableRow for InfluenceRow {
    const TABLE: &'static str = "influence";
}

/// A row of the `queries` table: a query of an attribution run and its gradient.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/queries.json
pub struct QueryRow {
    pub query_id: String,
    pub kind: String,
    pub task: String,
    pub prompt: String,
    pub completion: String,
    pub answer: Option<String>,
    pub intermediate: Vec<String>,
    pub metadata: String,
    pub completion_tokens: u64,
    pub truncated_tokens: u64,
    pub logprob: f64,
    pub gradient_norm: f64,
    pub precondition: String,
    pub model: String,
    pub store: String,
}

impl familiar::table::TableRow for QueryRow {
    const TABLE: &'static str = "queries";
}

/// A row of the `influence_tokens` table: a token's share of a document's score for a query.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/influence_tokens.json
pub struct TokenInfluenceRow {
    pub query_id: String,
    pub doc_id: u64,
    pub side: String,
    pub position: Option<u64>,
    pub token_id: u64,
    pub token: String,
    pub completion: bool,
    pub score: f64,
}

impl familiar::table::TableRow for TokenInfluenceRow {
    const TABLE: &'static str = "influence_tokens";
}

/// Token-level influence to compute with the scores.
#[derive(Debug, Clone, Copy)]
pub struct TokenOptions<'a> {
    /// The store's index (for the documents' tokens).
    pub index: &'a familiar::index::Index,
    /// Documents per query (its best ranked).
    pub documents: usize,
    /// Also split the query's side.
    pub query_side: bool,
}

/// What [`attribute`] found: the tables of an attribution run.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// Documents ranked per query (the top `k`, or all).
    pub influence: Vec<InfluenceRow>,
    /// The queries, with their gradients' statistics.
    pub queries: Vec<QueryRow>,
    /// Token-level influence, when asked for.
    pub tokens: Vec<TokenInfluenceRow>,
    /// Seconds spent scoring the store's rows.
    pub scoring_seconds: f64,
    /// What the gradients were corrected by, for trackstar.
    pub correction: Option<Correction>,
}

/// Scores every document of `store` for each query (its completion's projected gradient under
/// `precondition`, from `lm`), keeping the `top` documents per query (`None`: all), and splits
/// the scores of each query's best documents by token when `tokens` asks. `model` and
/// `store_name` label the rows of the queries table.
#[allow(clippy::too_many_arguments)]
pub fn attribute(
    store: &GradientStore,
    lm: &LanguageModel,
    queries: &[Query],
    precondition: Precondition,
    top: Option<usize>,
    tokens: Option<TokenOptions<'_>>,
    model: &str,
    store_name: &str,
    device: &candle_core::Device,
) -> Result<Attribution> {
    // Refused before the queries' gradients are computed.
    Prepared::check_device(device, precondition.leave_one_out())?;
    let grads = query_gradients(lm, store, queries)?;
    let gradients: Vec<Vec<f32>> = grads.iter().map(|g| g.gradient.clone()).collect();
    let prepared = preconditioned(store, &gradients, precondition)?;
    let started = std::time::Instant::now();
    let scores = prepared.scores_on(store, top, device)?;
    let scoring_seconds = started.elapsed().as_secs_f64();
    let tokens = match tokens {
        Some(t) => token_influence(store, lm, queries, &gradients, &prepared, &scores, t)?,
        None => Vec::new(),
    };
    let influence = scores
        .iter()
        .map(|i| InfluenceRow {
            query_id: queries[i.query].id.clone(),
            doc_id: i.doc,
            score: i.score,
            rank: i.rank,
        })
        .collect();
    let queries = queries
        .iter()
        .zip(&grads)
        .map(|(q, g)| QueryRow {
            query_id: q.id.clone(),
            kind: q.kind.clone(),
            task: q.task.clone(),
            prompt: q.prompt.clone(),
            completion: q.completion.clone(),
            answer: q.answer.clone(),
            intermediate: q.intermediate.clone(),
            metadata: Value::Object(q.metadata.clone()).to_string(),
            completion_tokens: g.completion_tokens as u64,
            truncated_tokens: g.truncated_tokens as u64,
            logprob: g.logprob,
            gradient_norm: g
                .gradient
                .iter()
                .map(|x| f64::from(*x).powi(2))
                .sum::<f64>()
                .sqrt(),
            precondition: precondition.name().to_string(),
            model: model.to_string(),
            store: store_name.to_string(),
        })
        .collect();
    Ok(Attribution {
        influence,
        queries,
        tokens,
        scoring_seconds,
        correction: matches!(precondition, Precondition::Trackstar { .. })
            .then(|| Correction::of(store)),
    })
}

/// Splits the scores of each query's `t.documents` best documents (from `scores`, ranked) by
/// token: a document's row `Σ_t Σ_l s_t a_tᵀ` is recomputed with each token's term scored as the
/// row is (its dot product with the query's vector over the row's norm), so a document's token
/// scores add up to its score. The query side splits the query's gradient against the document's
/// row preconditioned alike: every preconditioner here is symmetric, `⟨P q, g⟩ = ⟨q, P g⟩`.
fn token_influence(
    store: &GradientStore,
    lm: &LanguageModel,
    queries: &[Query],
    gradients: &[Vec<f32>],
    prepared: &Prepared,
    scores: &[Influence],
    t: TokenOptions<'_>,
) -> Result<Vec<TokenInfluenceRow>> {
    let settings = &store.manifest.settings;
    if t.index.documents() != settings.documents || t.index.manifest().tokens != settings.tokens {
        return Err(Error::query(format!(
            "the index holds {} documents of {} tokens, the store was built on {} of {}: token \
             influence needs the store's own index",
            t.index.documents(),
            t.index.manifest().tokens,
            settings.documents,
            settings.tokens
        )));
    }
    let projection = store.projection(&lm.model)?;
    let fast = FastGradients::new(&lm.model, &projection)?;
    let picked: Vec<&Influence> = scores
        .iter()
        .filter(|i| i.rank <= t.documents as u64)
        .collect();
    let decode = |id: u32| -> Result<String> { Ok(lm.tokenizer.decode(&[id])?) };
    // The documents' rows, for the query side.
    let dim = store.dim();
    let row_of = |doc: u64| -> Vec<f32> {
        let mut row = vec![0.0f32; dim];
        if let Some(f) = store
            .files
            .iter()
            .find(|f| doc >= f.first_doc && doc < f.first_doc + f.rows)
        {
            f.row(doc - f.first_doc, &mut row);
        }
        row
    };
    let doc_vectors = if t.query_side {
        let rows: Vec<Vec<f32>> = picked.iter().map(|i| row_of(i.doc)).collect();
        prepared.operator.apply(&rows)
    } else {
        Vec::new()
    };
    let parts = picked
        .par_iter()
        .enumerate()
        .map(|(k, i)| -> Result<Vec<TokenInfluenceRow>> {
            let q = &queries[i.query];
            let row =
                |side: &str, position: Option<usize>, id: u32, completion: bool, score: f64| {
                    Ok::<_, Error>(TokenInfluenceRow {
                        query_id: q.id.clone(),
                        doc_id: i.doc,
                        side: side.to_string(),
                        position: position.map(|p| p as u64),
                        token_id: u64::from(id),
                        token: decode(id)?,
                        completion,
                        score,
                    })
                };
            let mut out = Vec::new();
            // The document side.
            let tokens = t.index.doc_tokens(i.doc, 0, u64::MAX)?;
            let examples = document_examples(&tokens, settings.start_token, settings.context);
            let vector = &prepared.vectors[i.query];
            let sum_rows = |g: &crate::grads::Gradients| {
                let mut doc_row = vec![0.0f32; dim];
                for chunk in g.rows.chunks_exact(dim) {
                    doc_row.iter_mut().zip(chunk).for_each(|(r, c)| *r += c);
                }
                doc_row
            };
            // With the leave-one-out correction, the document's row first: the vectors its
            // token terms and the query's are dotted with depend on it.
            let loo = match &prepared.leave_one_out {
                Some(l) => {
                    let doc_row = sum_rows(&fast.compute(&examples)?);
                    let plain = doc_vectors.get(k).map_or(&[][..], Vec::as_slice);
                    Some(l.token_vectors(&doc_row, i.query, vector, plain))
                }
                None => None,
            };
            let (g, contributions) = match &loo {
                Some(v) => {
                    fast.token_contributions(&examples, std::slice::from_ref(&v.document))?
                }
                None => fast.token_contributions(&examples, std::slice::from_ref(vector))?,
            };
            let divisor = match &loo {
                Some(v) => v.divisor,
                None => prepared.norm.of(&sum_rows(&g)),
            };
            let inv = if divisor > 0.0 { 1.0 / divisor } else { 0.0 };
            // Position in the start-token-prefixed sequence, summed over the chunks' overlaps.
            let offset = usize::from(settings.start_token.is_some());
            let mut by_position = vec![0.0f64; tokens.len() + offset];
            let mut at = 0;
            let mut from = 0;
            for e in &examples {
                for (j, c) in contributions[0][at..at + e.ids.len()].iter().enumerate() {
                    by_position[from + j] += c * inv;
                }
                at += e.ids.len();
                from += e.ids.len().saturating_sub(1);
            }
            for (p, score) in by_position.iter().enumerate() {
                // The start token has no position in the document.
                let (position, id) = match p.checked_sub(offset) {
                    Some(k) => (Some(k), tokens[k]),
                    None => (None, settings.start_token.unwrap_or(0)),
                };
                out.push(row("document", position, id, false, *score)?);
            }
            // The query side.
            if t.query_side {
                let (ctx, cont) = lm.split(&q.prompt, &q.completion)?;
                let (ids, keep, _) = lm
                    .fit(&ctx, &cont)
                    .map_err(|e| Error::query(format!("query {}: {e}", q.id)))?;
                let example = Example {
                    ids: ids.clone(),
                    first_target: keep,
                };
                let doc_vector = match &loo {
                    Some(v) => v.query.clone(),
                    None => doc_vectors[k].clone(),
                };
                let (_, c) = fast.token_contributions(
                    std::slice::from_ref(&example),
                    std::slice::from_ref(&doc_vector),
                )?;
                let divisor = prepared.norm.of(&gradients[i.query]);
                let inv = if divisor > 0.0 { 1.0 / divisor } else { 0.0 };
                for (p, (&id, c)) in ids.iter().zip(&c[0]).enumerate() {
                    out.push(row("query", Some(p), id, p >= keep, c * inv)?);
                }
            }
            Ok(out)
        })
        .collect::<Vec<Result<_>>>();
    let mut out = Vec::new();
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

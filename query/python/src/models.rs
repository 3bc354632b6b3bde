//! Models (`familiar.models`) and attribution (`familiar.attribution`): zero-shot scores, keyword
//! probabilities, activation density, gradient stores and influence scores, as pyarrow tables.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use familiar::items::ItemFormat;
use familiar_models::attribute::{self, Precondition};
use familiar_models::grads::build::{build_store, StoreOptions, StoreProgress};
use familiar_models::grads::store::StoreDtype;
use familiar_models::measure::density::{measure_probes, parse_probes, Overflow};
use familiar_models::measure::score::{
    keyword_probe, parse_keyword_items, zero_shot, LanguageModel,
};
use familiar_models::model::LinearGroup;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::job::{run_job, OnStop, Step};
use crate::{table_to_py, to_py, NativeIndex};

/// A model library error as the package's exception.
pub(crate) fn model_err(e: familiar_models::Error) -> PyErr {
    match e {
        familiar_models::Error::Core(e) => to_py(e),
        e => crate::ModelError::new_err(e.to_string()),
    }
}

/// A loaded model and its tokenizer (`familiar.models.Model` wraps it).
#[pyclass(module = "familiar._familiar", frozen)]
pub(crate) struct NativeModel {
    lm: Arc<LanguageModel>,
    path: PathBuf,
}

#[pymethods]
impl NativeModel {
    #[new]
    fn new(py: Python<'_>, path: PathBuf, device: String) -> PyResult<Self> {
        familiar_models::measure::prepare_cpu();
        let p = path.clone();
        let lm = py
            .detach(move || -> familiar_models::Result<LanguageModel> {
                LanguageModel::load_on(&p, &familiar_models::model::device(&device)?)
            })
            .map_err(model_err)?;
        Ok(NativeModel {
            lm: Arc::new(lm),
            path,
        })
    }

    /// The model directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The model's context length in tokens.
    #[getter]
    fn context(&self) -> usize {
        self.lm.model.config.max_positions
    }

    /// Layers (blocks).
    #[getter]
    fn layers(&self) -> usize {
        self.lm.model.config.layers
    }

    /// The vocabulary size of the model.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.lm.model.config.vocab_size
    }
}

/// Items from `text` (JSONL, when the caller holds them) or the file `path`.
pub(crate) fn parsed<T, E: From<familiar::Error>>(
    path: &Path,
    text: Option<&str>,
    parse: impl FnOnce(&Path, &str) -> Result<T, E>,
) -> Result<T, E> {
    match text {
        Some(t) => parse(path, t),
        None => parse(path, &familiar::input::read_utf8(path)?),
    }
}

fn item_format(name: &str) -> PyResult<ItemFormat> {
    Ok(match name {
        "jsonl" => ItemFormat::Jsonl,
        "mmlu" => ItemFormat::Mmlu,
        "pararel" => ItemFormat::Pararel,
        "nq_open" | "nq-open" => ItemFormat::NqOpen,
        "lambada" => ItemFormat::Lambada,
        "gsm8k" => ItemFormat::Gsm8k,
        other => {
            return Err(crate::ConfigError::new_err(format!(
                "format={other:?}: expected one of jsonl, mmlu, pararel, nq_open, lambada, gsm8k"
            )))
        }
    })
}

/// Runs `each` on every element of `items` on a worker thread, one at a time, with progress and
/// Ctrl-C between them (nothing is written, so a stop drops what was done).
fn per_item<I, R>(
    py: Python<'_>,
    items: Vec<I>,
    stage: &'static str,
    on_event: Option<&Py<PyAny>>,
    each: impl Fn(&[I]) -> familiar_models::Result<Vec<R>> + Send + 'static,
) -> PyResult<Vec<R>>
where
    I: Send + 'static,
    R: Send + 'static,
{
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    run_job(py, &cancel, OnStop::Cancel, on_event, move |report| {
        report(("start", stage, items.len() as u64));
        let mut out = Vec::with_capacity(items.len());
        for k in 0..items.len() {
            if stop.load(Ordering::Relaxed) {
                return Ok(Vec::new());
            }
            out.extend(each(&items[k..k + 1])?);
            report(("step", stage, 1));
        }
        report(("finish", stage, 0));
        Ok(out)
    })?
    .map_err(model_err)
}

/// The zero_shot table of `items` (a file in `format`, or generic JSONL `text` named `path`).
#[pyfunction]
#[pyo3(signature = (model, path, text, format, limit, on_event))]
pub(crate) fn score<'py>(
    py: Python<'py>,
    model: &NativeModel,
    path: PathBuf,
    text: Option<String>,
    format: &str,
    limit: Option<usize>,
    on_event: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let format = item_format(format)?;
    let items = py
        .detach(|| match &text {
            Some(t) => {
                let mut items = familiar::items::parse_items_jsonl(&path, t, "items")?;
                if let Some(n) = limit {
                    items.truncate(n);
                }
                if items.is_empty() {
                    return Err(familiar::Error::Config("no items".into()));
                }
                Ok(items)
            }
            None => familiar::items::read_items(&path, format, limit),
        })
        .map_err(to_py)?;
    let lm = Arc::clone(&model.lm);
    let name = model.path.display().to_string();
    let source = path.display().to_string();
    let rows = per_item(py, items, "items", on_event.as_ref(), move |one| {
        Ok(zero_shot(&lm, one, &name, &source, &|| {})?.0)
    })?;
    table_to_py(py, &familiar::table::from_rows(&rows).map_err(to_py)?)
}

/// The keyword_probe table of keyword items (`{"id"?, "context", "keyword"}`).
#[pyfunction]
#[pyo3(signature = (model, path, text, on_event))]
pub(crate) fn keyword_prob<'py>(
    py: Python<'py>,
    model: &NativeModel,
    path: PathBuf,
    text: Option<String>,
    on_event: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let items = py
        .detach(|| parsed(&path, text.as_deref(), parse_keyword_items))
        .map_err(to_py)?;
    let lm = Arc::clone(&model.lm);
    let name = model.path.display().to_string();
    let rows = per_item(py, items, "items", on_event.as_ref(), move |one| {
        keyword_probe(&lm, &name, &path, one, &|| {})
    })?;
    table_to_py(py, &familiar::table::from_rows(&rows).map_err(to_py)?)
}

/// The activation_stats table of probes (`{"id"?, "text", "labels"?}`).
#[pyfunction]
#[pyo3(signature = (model, path, text, overflow, threshold, on_event))]
pub(crate) fn density<'py>(
    py: Python<'py>,
    model: &NativeModel,
    path: PathBuf,
    text: Option<String>,
    overflow: &str,
    threshold: f32,
    on_event: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let overflow = match overflow {
        "error" => Overflow::Error,
        "truncate" => Overflow::Truncate,
        "stride" => Overflow::Stride,
        other => {
            return Err(crate::ConfigError::new_err(format!(
                "overflow={other:?}: expected \"error\", \"truncate\" or \"stride\""
            )))
        }
    };
    let probes = py
        .detach(|| parsed(&path, text.as_deref(), parse_probes))
        .map_err(to_py)?;
    let lm = Arc::clone(&model.lm);
    let name = model.path.display().to_string();
    let rows = per_item(py, probes, "probes", on_event.as_ref(), move |one| {
        measure_probes(&lm, &name, &path, one, overflow, threshold, &|| {}).map_err(|e| match e {
            familiar_models::Error::Core(familiar::Error::Input { ref reason, .. })
                if overflow == Overflow::Error
                    && reason.contains("more than the model's context") =>
            {
                familiar_models::Error::Core(familiar::Error::Config(format!(
                    "{e}; pass overflow=\"truncate\" or overflow=\"stride\""
                )))
            }
            e => e,
        })
    })?;
    table_to_py(py, &familiar::table::from_rows(&rows).map_err(to_py)?)
}

/// Builds (or finishes) a gradient store of every document of `index`; returns what was done.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (model, index, out, layers, rank, head_rank, seed, dtype, optimizer_correction, device, on_event))]
pub(crate) fn attribution_store<'py>(
    py: Python<'py>,
    model: PathBuf,
    index: &NativeIndex,
    out: PathBuf,
    layers: &str,
    rank: usize,
    head_rank: Option<usize>,
    seed: u64,
    dtype: &str,
    optimizer_correction: bool,
    device: String,
    on_event: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let layers = match layers {
        "all" => LinearGroup::All,
        "blocks" => LinearGroup::Blocks,
        "mlp" => LinearGroup::Mlp,
        "attention" => LinearGroup::Attention,
        "output" => LinearGroup::Output,
        other => {
            return Err(crate::ConfigError::new_err(format!(
            "layers={other:?}: expected \"all\", \"blocks\", \"mlp\", \"attention\" or \"output\""
        )))
        }
    };
    let dtype = match dtype {
        "f32" => StoreDtype::F32,
        "f16" => StoreDtype::F16,
        other => {
            return Err(crate::ConfigError::new_err(format!(
                "dtype={other:?}: expected \"f32\" or \"f16\""
            )))
        }
    };
    familiar_models::measure::prepare_cpu();
    let cancel = Arc::new(AtomicBool::new(false));
    let options = StoreOptions {
        model,
        out,
        layers,
        rank,
        head_rank,
        seed,
        dtype,
        optimizer_correction,
        device: StoreOptions::device_named(&device).map_err(model_err)?,
        cancel: Some(Arc::clone(&cancel)),
    };
    let index = Arc::clone(&index.inner);
    let documents = index.documents();
    let r = run_job(
        py,
        &cancel,
        OnStop::Cancel,
        on_event.as_ref(),
        move |report| {
            report(("start", "documents", documents));
            let r = build_store(&index, &options, &|p| match p {
                StoreProgress::FactorStart(n) => report(("start", "output-head factor", n)),
                StoreProgress::Factor(n) => report(("step", "output-head factor", n)),
                StoreProgress::Rows(n) => report(("step", "documents", n)),
                StoreProgress::EkfacStart(n) => report(("start", "EK-FAC eigenvalues", n)),
                StoreProgress::Ekfac(n) => report(("step", "EK-FAC eigenvalues", n)),
            });
            report(("finish", "documents", 0));
            r
        },
    )?
    .map_err(model_err)?;
    let d = PyDict::new(py);
    d.set_item("documents", r.documents)?;
    d.set_item("dim", r.dim)?;
    d.set_item("computed_shards", r.computed_shards)?;
    d.set_item("resumed_shards", r.resumed_shards)?;
    d.set_item("factor_tokens", r.factor.map(|f| f.0))?;
    d.set_item("factor_seconds", r.factor.map(|f| f.1))?;
    d.set_item("optimizer_correction", optimizer_correction)?;
    Ok(d)
}

/// What `attribution_score` returns: the influence and queries tables, influence_tokens when
/// asked, and a warning when trackstar had to correct by the store's own second moment.
type ScoreTables<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyAny>>,
    Option<String>,
);

/// (influence, queries, influence_tokens) tables of the queries (`{"id", "prompt",
/// "completion", "kind", "task", ...}`) against a gradient store built with `model`; the last is
/// `None` unless `token_documents` asks for token-level influence (with the store's `index`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (store, model, path, text, precondition, damping, leave_one_out, query_mix, top_k, index, token_documents, query_tokens, device))]
pub(crate) fn attribution_score<'py>(
    py: Python<'py>,
    store: PathBuf,
    model: PathBuf,
    path: PathBuf,
    text: Option<String>,
    precondition: &str,
    damping: f64,
    leave_one_out: bool,
    query_mix: f64,
    top_k: Option<usize>,
    index: Option<&NativeIndex>,
    token_documents: Option<usize>,
    query_tokens: bool,
    device: String,
) -> PyResult<ScoreTables<'py>> {
    let index = index.map(|i| Arc::clone(&i.inner));
    let precondition = match precondition {
        "identity" => Precondition::Identity,
        "cosine" => Precondition::Cosine,
        // `kfac`: its name before it was named for what it is.
        "fisher" | "kfac" => Precondition::Fisher {
            damping,
            leave_one_out,
        },
        "ekfac" => Precondition::Ekfac {
            damping,
            leave_one_out,
        },
        "trackstar" => Precondition::Trackstar {
            damping,
            leave_one_out,
            query_mix,
        },
        other => {
            return Err(crate::ConfigError::new_err(format!(
                "precondition={other:?}: expected \"fisher\" (or its old name \"kfac\"), \"ekfac\", \"trackstar\", \"identity\" or \"cosine\""
            )))
        }
    };
    if leave_one_out && !precondition.leave_one_out() {
        return Err(crate::ConfigError::new_err(format!(
            "leave_one_out=True applies to \"ekfac\", \"fisher\" and \"trackstar\" (their curvature is a mean over the store's rows), not to {precondition:?}",
            precondition = precondition.name()
        )));
    }
    if query_mix != 0.0 && !matches!(precondition, Precondition::Trackstar { .. }) {
        return Err(crate::ConfigError::new_err(format!(
            "query_mix applies to \"trackstar\" (its task-specific curvature), not to {:?}",
            precondition.name()
        )));
    }
    attribute::check_query_mix(query_mix).map_err(model_err)?;
    let device = familiar_models::model::device(&device).map_err(model_err)?;
    familiar_models::measure::prepare_cpu();
    let cancel = Arc::new(AtomicBool::new(false));
    let run = run_job(
        py,
        &cancel,
        OnStop::Abandon,
        None,
        move |_: &(dyn Fn(Step) + Sync)| {
            let queries = parsed(&path, text.as_deref(), attribute::parse_queries)?;
            let (gradients, lm) = attribute::open_store_and_model(&store, &model)?;
            let tokens = match (token_documents, index.as_deref()) {
                (Some(documents), Some(index)) => Some(attribute::TokenOptions {
                    index,
                    documents,
                    query_side: query_tokens,
                }),
                _ => None,
            };
            attribute::attribute(
                &gradients,
                &lm,
                &queries,
                precondition,
                top_k,
                tokens,
                &model.display().to_string(),
                &store.display().to_string(),
                &device,
            )
        },
    )?
    .map_err(model_err)?;
    let influence = familiar::table::from_rows(&run.influence).map_err(to_py)?;
    let queries = familiar::table::from_rows(&run.queries).map_err(to_py)?;
    let tokens = match token_documents {
        Some(_) => Some(table_to_py(
            py,
            &familiar::table::from_rows(&run.tokens).map_err(to_py)?,
        )?),
        None => None,
    };
    // TrackStar without the optimizer's moment is not the paper's: the caller warns.
    let fallback = run
        .correction
        .filter(|c| *c == attribute::Correction::Store)
        .map(|c| format!("trackstar: {c}"));
    Ok((
        table_to_py(py, &influence)?,
        table_to_py(py, &queries)?,
        tokens,
        fallback,
    ))
}

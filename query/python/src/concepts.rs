//! `familiar.concepts.count`: concept frequencies and co-occurrences of a lexicon on an index.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use familiar_query::concepts::count::{CountEvent, CountOptions, Counter, Method};
use familiar_query::concepts::lexicon::{self, Lexicon};
use familiar_query::concepts::tables;
use pyo3::prelude::*;

use crate::job::{run_job, OnStop};
use crate::{table_to_py, to_py, NativeIndex};

/// The three tables (concepts, concept_frequency, cooccurrence) of a lexicon (a file, or JSONL
/// `lexicon_text` named `lexicon`) and its pairs on `index`; with `out`, also written there as
/// `familiar concepts count` writes them.
#[pyfunction]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pyo3(signature = (index, lexicon, lexicon_text, pairs, pairs_text, methods, pair_cache_mib, threads, out, on_event))]
pub(crate) fn concepts_count<'py>(
    py: Python<'py>,
    index: &NativeIndex,
    lexicon: PathBuf,
    lexicon_text: Option<String>,
    pairs: Option<PathBuf>,
    pairs_text: Option<String>,
    methods: Vec<String>,
    pair_cache_mib: usize,
    threads: Option<usize>,
    out: Option<PathBuf>,
    on_event: Option<Py<PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let methods = if methods.is_empty() {
        Method::ALL.to_vec()
    } else {
        methods
            .iter()
            .map(|m| {
                Method::ALL
                    .iter()
                    .copied()
                    .find(|k| k.name() == m)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Method::ALL.iter().map(|k| k.name()).collect();
                        crate::ConfigError::new_err(format!(
                            "method {m:?}: expected one of {}",
                            names.join(", ")
                        ))
                    })
            })
            .collect::<PyResult<_>>()?
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let options = CountOptions {
        methods: methods.clone(),
        pair_cache_bytes: pair_cache_mib << 20,
        cancel: Some(Arc::clone(&cancel)),
    };
    let index = Arc::clone(&index.inner);
    let result = run_job(
        py,
        &cancel,
        OnStop::Cancel,
        on_event.as_ref(),
        move |report| {
            let lexicon = match &lexicon_text {
                Some(t) => Lexicon::parse_jsonl(&lexicon, t)?,
                None => Lexicon::read(&lexicon)?,
            };
            let pairs = match (&pairs, &pairs_text) {
                (Some(p), Some(t)) => lexicon::parse_pairs_jsonl(p, t, &lexicon)?,
                (Some(p), None) => lexicon::read_pairs(p, &lexicon)?,
                (None, _) => Vec::new(),
            };
            let stage = std::sync::Mutex::new("concepts");
            let work = || {
                let counter = Counter::for_lexicon(&index, &methods, &lexicon)?;
                counter.run_with_progress(&lexicon, &pairs, &options, &|e| {
                    let mut s = stage.lock().unwrap_or_else(|p| p.into_inner());
                    match e {
                        CountEvent::Start { stage, total } => {
                            *s = stage;
                            report(("start", stage, total));
                        }
                        CountEvent::Done => report(("step", *s, 1)),
                        CountEvent::Finish => report(("finish", *s, 0)),
                    }
                })
            };
            let counts = match threads {
                Some(n) => rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build()
                    .map_err(|e| familiar::Error::Config(format!("cannot start {n} threads: {e}")))?
                    .install(work)?,
                None => work()?,
            };
            if let Some(dir) = &out {
                tables::write_all(dir, &lexicon, &counts)?;
            }
            Ok::<_, familiar::Error>((
                tables::concepts_table(&lexicon)?,
                familiar::table::from_rows(&tables::frequency_rows(&lexicon, &counts))?,
                familiar::table::from_rows(&tables::cooccurrence_rows(&lexicon, &counts))?,
            ))
        },
    )?
    .map_err(to_py)?;
    Ok((
        table_to_py(py, &result.0)?,
        table_to_py(py, &result.1)?,
        table_to_py(py, &result.2)?,
    ))
}

//! `familiar.sql`: DataFusion SQL over tables on disk, an index's documents and tables the caller
//! holds (anything with `__arrow_c_stream__`: pyarrow, polars).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arrow_array::ffi_stream::ArrowArrayStreamReader;
use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_pyarrow::FromPyArrow;
use familiar_sql::{Sql, SqlOptions};
use pyo3::prelude::*;

use crate::job::{run_job, OnStop, Step};
use crate::pyarrow_table;

/// A SQL library error as the package's exception.
fn sql_err(e: familiar_sql::Error) -> PyErr {
    crate::SqlError::new_err(e.to_string())
}

/// Runs the statements of `query` in a session with the given tables; returns each statement's
/// (text, pyarrow table).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (query, tables, indexes, frames, allow_writes, memory_limit, time_limit))]
pub(crate) fn sql<'py>(
    py: Python<'py>,
    query: String,
    tables: Vec<PathBuf>,
    indexes: Vec<(String, PathBuf)>,
    frames: Vec<(String, Bound<'py, PyAny>)>,
    allow_writes: bool,
    memory_limit: Option<usize>,
    time_limit: Option<f64>,
) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    // The caller's tables are read here, holding the GIL (zero-copy: the Arrow C stream hands
    // over the buffers).
    let mut held: Vec<(String, arrow_schema::SchemaRef, Vec<RecordBatch>)> = Vec::new();
    for (name, frame) in frames {
        let reader = ArrowArrayStreamReader::from_pyarrow_bound(&frame)?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::InputError::new_err(format!("table `{name}`: {e}")))?;
        held.push((name, schema, batches));
    }
    let defaults = SqlOptions::default();
    let options = SqlOptions {
        allow_writes,
        memory_limit: match memory_limit {
            None => defaults.memory_limit,
            Some(0) => None,
            Some(n) => Some(n),
        },
        time_limit: match time_limit {
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => {
                Some(std::time::Duration::from_secs_f64(s))
            }
            Some(s) => {
                return Err(crate::ConfigError::new_err(format!(
                    "time_limit={s}: expected positive seconds (below 1e9)"
                )))
            }
            None => None,
        },
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    let results = run_job(
        py,
        &cancel,
        OnStop::Cancel,
        None,
        move |_: &(dyn Fn(Step) + Sync)| {
            let mut session = Sql::with_options(options)?;
            session.set_cancel(flag);
            if !tables.is_empty() {
                session.register_dirs(&tables)?;
            }
            for (name, dir) in &indexes {
                session.attach_documents(dir, name)?;
            }
            for (name, schema, batches) in held {
                session.register_batches(&name, "a table passed in Python", schema, batches)?;
            }
            session.run(&query)
        },
    )?
    .map_err(sql_err)?;
    results
        .into_iter()
        .map(|r| Ok((r.sql, pyarrow_table(py, r.batches, &r.schema)?)))
        .collect()
}

//! The native half of the `familiar` Python package (`familiar._familiar`): thin bindings over
//! `familiar` and `familiar-query`. The Python half (`python/familiar/`) gives them their Python
//! shape (keyword arguments, dicts, numpy arrays); every answer is computed here, with the GIL
//! released while the library works.
//!
//! Errors keep the library's messages and become the package's exception classes by kind
//! ([`to_py`]); nothing panics across the boundary (pyo3 turns a panic into `PanicException`).

mod concepts;
mod job;
mod models;
mod sql;

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_pyarrow::ToPyArrow;
use familiar::index::{Index, OpenOptions};
use familiar::with_view;
use familiar_query::{docs, infgram, ngram, trace};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use rayon::prelude::*;

create_exception!(
    familiar,
    FamiliarError,
    PyException,
    "Base class of familiar's errors."
);
create_exception!(
    familiar,
    InputError,
    FamiliarError,
    "A file handed to familiar is not what was expected (the message names the file and line)."
);
create_exception!(
    familiar,
    CorruptIndex,
    FamiliarError,
    "An index file is damaged, truncated or of another format or version."
);
create_exception!(
    familiar,
    QueryError,
    FamiliarError,
    "A query that cannot be answered: unknown token ids, an empty pattern, a bad option."
);
create_exception!(
    familiar,
    ConfigError,
    FamiliarError,
    "Options or inputs that do not fit together."
);
create_exception!(
    familiar,
    ConflictError,
    FamiliarError,
    "An output directory that belongs to another run."
);
create_exception!(
    familiar,
    TokenizerError,
    FamiliarError,
    "A tokenizer that cannot be loaded or used, or that is not the index's."
);
create_exception!(
    familiar,
    IndexIOError,
    FamiliarError,
    "A file or directory that cannot be read or written."
);
create_exception!(
    familiar,
    FamiliarBug,
    FamiliarError,
    "A bug in familiar (please report it with the message)."
);

create_exception!(
    familiar,
    ModelError,
    FamiliarError,
    "A model that cannot be loaded or run: its device, its memory, or a non-finite value."
);
create_exception!(
    familiar,
    SqlError,
    FamiliarError,
    "A SQL statement that failed, was refused by the session's policy or ran past its limits."
);

/// The package's exception for a library error, with the library's message.
fn to_py(e: familiar::Error) -> PyErr {
    use familiar::Error as E;
    let msg = e.to_string();
    match e {
        E::Input { .. } => InputError::new_err(msg),
        E::Magic { .. }
        | E::Version { .. }
        | E::Size { .. }
        | E::Checksum { .. }
        | E::Corrupt { .. } => CorruptIndex::new_err(msg),
        E::Tokenizer { .. } | E::TokenizerMismatch { .. } => TokenizerError::new_err(msg),
        E::Query(_) => QueryError::new_err(msg),
        E::Config(_) => ConfigError::new_err(msg),
        E::Conflict(_) => ConflictError::new_err(msg),
        E::Io { .. } => IndexIOError::new_err(msg),
        E::Bug(_) => FamiliarBug::new_err(msg),
        E::Interrupted(_) => pyo3::exceptions::PyKeyboardInterrupt::new_err(msg),
        _ => FamiliarError::new_err(msg),
    }
}

/// A pyarrow table of record batches (all of one schema).
fn pyarrow_table<'py>(
    py: Python<'py>,
    batches: Vec<RecordBatch>,
    schema: &arrow_schema::SchemaRef,
) -> PyResult<Bound<'py, PyAny>> {
    let pa = py.import("pyarrow")?;
    let list = PyList::empty(py);
    for b in &batches {
        list.append(b.to_pyarrow(py)?)?;
    }
    let schema = schema.as_ref().to_pyarrow(py)?;
    pa.getattr("Table")?
        .call_method1("from_batches", (list, schema))
}

/// A familiar table as a pyarrow table.
fn table_to_py<'py>(py: Python<'py>, t: &familiar::table::Table) -> PyResult<Bound<'py, PyAny>> {
    let batch = t.to_record_batch().map_err(to_py)?;
    let schema = batch.schema();
    pyarrow_table(py, vec![batch], &schema)
}

/// Shard `k` of the index.
fn shard_at(index: &Index, k: usize) -> familiar::Result<&familiar::index::Shard> {
    index.shards().get(k).ok_or_else(|| {
        familiar::Error::Query(format!(
            "no shard {k} (the index has {})",
            index.shards().len()
        ))
    })
}

/// A next-token distribution: (prefix count, occurrences at a document's end, [(token id,
/// count)] most frequent first).
type Distribution = (u64, u64, Vec<(u32, u64)>);

/// An open index (`familiar.Index` wraps it).
#[pyclass(module = "familiar._familiar", frozen)]
struct NativeIndex {
    inner: Arc<Index>,
    path: PathBuf,
}

#[pymethods]
impl NativeIndex {
    #[new]
    #[pyo3(signature = (path, preload = false))]
    fn new(py: Python<'_>, path: PathBuf, preload: bool) -> PyResult<Self> {
        let p = path.clone();
        let inner = py
            .detach(move || Index::open_with(&p, OpenOptions { preload }))
            .map_err(to_py)?;
        Ok(NativeIndex {
            inner: Arc::new(inner),
            path,
        })
    }

    /// The index directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Token positions (tokens and one separator per document).
    #[getter]
    fn num_positions(&self) -> u64 {
        self.inner.shards().iter().map(|s| s.manifest.tokens).sum()
    }

    /// Tokens, separators excluded.
    #[getter]
    fn num_tokens(&self) -> u64 {
        self.inner
            .shards()
            .iter()
            .map(|s| s.manifest.tokens - s.manifest.documents)
            .sum()
    }

    /// Documents.
    #[getter]
    fn num_documents(&self) -> u64 {
        self.inner.documents()
    }

    /// Shards.
    #[getter]
    fn shards(&self) -> usize {
        self.inner.shards().len()
    }

    /// The vocabulary size (which is also the separator id).
    #[getter]
    fn vocab_size(&self) -> u32 {
        self.inner.vocab_size()
    }

    /// The tokenizer's hash.
    #[getter]
    fn tokenizer_hash(&self) -> String {
        self.inner.manifest().tokenizer.hash.clone()
    }

    fn tokenize(&self, py: Python<'_>, text: String) -> PyResult<Vec<u32>> {
        let index = Arc::clone(&self.inner);
        py.detach(move || index.tokenizer()?.encode(&text))
            .map_err(to_py)
    }

    fn decode(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        let index = Arc::clone(&self.inner);
        py.detach(move || {
            index.check_ids(&ids)?;
            index.tokenizer()?.decode(&ids)
        })
        .map_err(to_py)
    }

    fn count(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<u64> {
        let index = Arc::clone(&self.inner);
        py.detach(move || ngram::count(&index, &ids)).map_err(to_py)
    }

    /// Counts of many queries, in parallel: little-endian u64 values, one per query.
    fn count_many<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<Vec<u32>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let index = Arc::clone(&self.inner);
        let counts = py
            .detach(move || -> familiar::Result<Vec<u8>> {
                let counts = queries
                    .par_iter()
                    .map(|q| ngram::count(&index, q))
                    .collect::<familiar::Result<Vec<u64>>>()?;
                Ok(counts.iter().flat_map(|c| c.to_le_bytes()).collect())
            })
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &counts))
    }

    /// [`NativeIndex::count_many`] of queries of `width` ids each, given as little-endian u32
    /// values row after row (a C-contiguous 2-D array's bytes).
    fn count_many_flat<'py>(
        &self,
        py: Python<'py>,
        data: Vec<u8>,
        width: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if width == 0 || !data.len().is_multiple_of(4 * width) {
            return Err(QueryError::new_err(format!(
                "{} bytes are not rows of {width} u32 token ids",
                data.len()
            )));
        }
        let index = Arc::clone(&self.inner);
        let counts = py
            .detach(move || -> familiar::Result<Vec<u8>> {
                let counts = data
                    .par_chunks(4 * width)
                    .map(|row| {
                        let ids: Vec<u32> = row
                            .chunks_exact(4)
                            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect();
                        ngram::count(&index, &ids)
                    })
                    .collect::<familiar::Result<Vec<u64>>>()?;
                Ok(counts.iter().flat_map(|c| c.to_le_bytes()).collect())
            })
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &counts))
    }

    /// (total, [(doc_id, shard, position, offset_in_doc)]).
    #[allow(clippy::type_complexity)]
    fn locate(
        &self,
        py: Python<'_>,
        ids: Vec<u32>,
        offset: u64,
        limit: u64,
    ) -> PyResult<(u64, Vec<(u64, u32, u64, u64)>)> {
        let index = Arc::clone(&self.inner);
        let page = py
            .detach(move || ngram::locate(&index, &ids, offset, limit))
            .map_err(to_py)?;
        Ok((
            page.total,
            page.hits
                .iter()
                .map(|h| (h.doc_id, h.shard, h.position, h.offset_in_doc))
                .collect(),
        ))
    }

    /// Per shard, the suffix-array range `[start, end)` of the n-gram.
    fn find(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<Vec<(u64, u64)>> {
        let index = Arc::clone(&self.inner);
        py.detach(move || -> familiar::Result<Vec<(u64, u64)>> {
            index.check_ids(&ids)?;
            if ids.is_empty() {
                return Err(familiar::Error::Query(
                    "an empty n-gram has no range".into(),
                ));
            }
            index
                .shards()
                .iter()
                .map(|shard| with_view!(shard, |v| v.range(&ngram::convert(&ids)?)))
                .collect()
        })
        .map_err(to_py)
    }

    /// The token positions of the n-gram's occurrences in shard `shard` (suffix-array order), as
    /// little-endian u64 values.
    fn positions<'py>(
        &self,
        py: Python<'py>,
        shard: usize,
        ids: Vec<u32>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let index = Arc::clone(&self.inner);
        let bytes = py
            .detach(move || -> familiar::Result<Vec<u8>> {
                index.check_ids(&ids)?;
                let s = shard_at(&index, shard)?;
                with_view!(s, |v| {
                    let (lo, hi) = v.range(&ngram::convert(&ids)?)?;
                    let mut out = Vec::with_capacity(8 * (hi - lo) as usize);
                    for j in lo..hi {
                        out.extend_from_slice(&(v.suffix(j)? as u64).to_le_bytes());
                    }
                    Ok(out)
                })
            })
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The first token position of every document of shard `shard`, and the shard's length, as
    /// little-endian u64 values.
    fn doc_starts<'py>(&self, py: Python<'py>, shard: usize) -> PyResult<Bound<'py, PyBytes>> {
        let s = shard_at(&self.inner, shard).map_err(to_py)?;
        let mut out = Vec::new();
        for k in 0..s.doc_offsets.len() {
            let off = s
                .doc_offsets
                .get(k)
                .ok_or_else(|| FamiliarBug::new_err("document offset out of range"))?;
            out.extend_from_slice(&off.to_le_bytes());
        }
        Ok(PyBytes::new(py, &out))
    }

    /// (document id, offset in the document) of suffix-array entry `rank` of shard `shard`.
    fn doc_at_rank(&self, py: Python<'_>, shard: usize, rank: u64) -> PyResult<(u64, u64)> {
        let index = Arc::clone(&self.inner);
        py.detach(move || -> familiar::Result<(u64, u64)> {
            let s = shard_at(&index, shard)?;
            with_view!(s, |v| {
                if rank >= v.len() {
                    return Err(familiar::Error::Query(format!(
                        "rank {rank} is past shard {shard}'s {} suffixes",
                        v.len()
                    )));
                }
                v.locate(v.suffix(rank)? as u64)
            })
        })
        .map_err(to_py)
    }

    /// (document id, offset in the document) of token position `position` of shard `shard`.
    fn doc_at_position(&self, py: Python<'_>, shard: usize, position: u64) -> PyResult<(u64, u64)> {
        let index = Arc::clone(&self.inner);
        py.detach(move || -> familiar::Result<(u64, u64)> {
            let s = shard_at(&index, shard)?;
            with_view!(s, |v| {
                if position >= v.len() {
                    return Err(familiar::Error::Query(format!(
                        "position {position} is past shard {shard}'s {} positions",
                        v.len()
                    )));
                }
                v.locate(position)
            })
        })
        .map_err(to_py)
    }

    /// (shard index, first position, end position) of a document.
    fn doc_span(&self, py: Python<'_>, doc_id: u64) -> PyResult<(usize, u64, u64)> {
        let index = Arc::clone(&self.inner);
        py.detach(move || -> familiar::Result<(usize, u64, u64)> {
            let (k, local) = index.locate_doc_index(doc_id)?;
            let (a, b) = with_view!(&index.shards()[k], |v| v.doc_span(local))?;
            Ok((k, a as u64, b as u64))
        })
        .map_err(to_py)
    }

    /// (prefix count, occurrences at a document's end, [(token id, count)] most frequent first).
    fn ntd(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<Distribution> {
        let index = Arc::clone(&self.inner);
        let n = py
            .detach(move || ngram::next_tokens(&index, &ids))
            .map_err(to_py)?;
        Ok((n.prefix_count, n.end_of_document, n.next))
    }

    /// (prefix count, count with the next token, probability or None).
    fn prob(
        &self,
        py: Python<'_>,
        prefix: Vec<u32>,
        next: u32,
    ) -> PyResult<(u64, u64, Option<f64>)> {
        let index = Arc::clone(&self.inner);
        let p = py
            .detach(move || ngram::probability(&index, &prefix, next))
            .map_err(to_py)?;
        Ok((p.prefix_count, p.count, p.probability))
    }

    /// The CNF answer as a dict (the library's field names).
    #[pyo3(signature = (clauses, max_occurrences = None, list_documents = 10, seed = 0))]
    fn cnf<'py>(
        &self,
        py: Python<'py>,
        clauses: Vec<Vec<Vec<u32>>>,
        max_occurrences: Option<u64>,
        list_documents: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let index = Arc::clone(&self.inner);
        let r = py
            .detach(move || {
                ngram::cnf(
                    &index,
                    &ngram::Cnf { clauses },
                    &ngram::CnfOptions {
                        max_occurrences,
                        list_documents,
                        seed,
                    },
                )
            })
            .map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("documents", r.documents)?;
        d.set_item("occurrences", r.occurrences)?;
        d.set_item("clause_occurrences", r.clause_occurrences)?;
        d.set_item("clause_totals", r.clause_totals)?;
        d.set_item("approximate", r.approximate)?;
        d.set_item("doc_ids", r.doc_ids)?;
        match r.estimate {
            Some(e) => {
                let est = PyDict::new(py);
                est.set_item("documents", e.documents)?;
                est.set_item("documents_ci95", e.documents_ci95.to_vec())?;
                est.set_item("clause_occurrences", e.clause_occurrences)?;
                est.set_item("occurrences", e.occurrences)?;
                d.set_item("estimate", est)?;
            }
            None => d.set_item("estimate", py.None())?,
        }
        Ok(d)
    }

    /// (suffix length, suffix count, count with the next token, probability or None).
    fn infgram_prob(
        &self,
        py: Python<'_>,
        prompt: Vec<u32>,
        next: u32,
    ) -> PyResult<(usize, u64, u64, Option<f64>)> {
        let index = Arc::clone(&self.inner);
        let r = py
            .detach(move || infgram::infgram_prob(&index, &prompt, next))
            .map_err(to_py)?;
        Ok((
            r.suffix_len,
            r.probability.prefix_count,
            r.probability.count,
            r.probability.probability,
        ))
    }

    /// (suffix length, suffix count, occurrences at a document's end, [(token id, count)]).
    #[allow(clippy::type_complexity)]
    fn infgram_ntd(
        &self,
        py: Python<'_>,
        prompt: Vec<u32>,
    ) -> PyResult<(usize, u64, u64, Vec<(u32, u64)>)> {
        let index = Arc::clone(&self.inner);
        let r = py
            .detach(move || infgram::infgram_ntd(&index, &prompt))
            .map_err(to_py)?;
        Ok((
            r.suffix_len,
            r.next.prefix_count,
            r.next.end_of_document,
            r.next.next,
        ))
    }

    /// A document's row of the documents table, with its text.
    fn doc<'py>(&self, py: Python<'py>, doc_id: u64) -> PyResult<Bound<'py, PyDict>> {
        let index = Arc::clone(&self.inner);
        let (r, text) = py
            .detach(move || -> familiar::Result<_> {
                Ok((docs::record(&index, doc_id)?, docs::text(&index, doc_id)?))
            })
            .map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("doc_id", r.doc_id)?;
        d.set_item("shard", r.shard)?;
        d.set_item("external_id", r.external_id)?;
        d.set_item("source", r.source)?;
        d.set_item("input_file", r.input_file)?;
        d.set_item("token_count", r.token_count)?;
        d.set_item("byte_length", r.byte_length)?;
        let meta = PyDict::new(py);
        for (k, v) in r.metadata {
            meta.set_item(k, v)?;
        }
        d.set_item("metadata", meta)?;
        d.set_item("text", text)?;
        Ok(d)
    }

    /// The tokens of a document from `start` to `end` (clipped to the document).
    fn doc_tokens(&self, py: Python<'_>, doc_id: u64, start: u64, end: u64) -> PyResult<Vec<u32>> {
        let index = Arc::clone(&self.inner);
        py.detach(move || index.doc_tokens(doc_id, start, end))
            .map_err(to_py)
    }

    /// The documents table of every shard, as one pyarrow table.
    fn documents<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let index = Arc::clone(&self.inner);
        let batches = py.detach(move || docs::table(&index)).map_err(to_py)?;
        let schema = Arc::new(familiar::schema::table("documents").map_err(to_py)?);
        pyarrow_table(py, batches, &schema)
    }

    /// (spans, documents) pyarrow tables of `trace_spans` and `trace_documents`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (text, tokens, item_id, min_len, max_count, max_span_density, docs_per_span, whole_words, bm25, max_tokens, chunk, ranking, delimiters))]
    fn trace<'py>(
        &self,
        py: Python<'py>,
        text: Option<String>,
        tokens: Option<Vec<u32>>,
        item_id: String,
        min_len: usize,
        max_count: Option<u64>,
        max_span_density: Option<f64>,
        docs_per_span: usize,
        whole_words: bool,
        bm25: bool,
        max_tokens: usize,
        chunk: bool,
        ranking: String,
        delimiters: Vec<String>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let ranking = match ranking.as_str() {
            "unigram-logprob" => trace::SpanRanking::UnigramLogprob,
            "length" => trace::SpanRanking::Length,
            other => {
                return Err(QueryError::new_err(format!(
                    "ranking={other:?}: expected \"unigram-logprob\" or \"length\""
                )))
            }
        };
        let index = Arc::clone(&self.inner);
        let options = trace::TraceOptions {
            min_len,
            max_count,
            max_span_density,
            docs_per_span,
            whole_words,
            bm25,
            max_tokens,
            chunk,
            ranking,
            delimiters,
        };
        let (spans, documents) = py
            .detach(move || -> familiar::Result<_> {
                let t = match (text, tokens) {
                    (Some(text), None) => trace::trace_text(&index, &text, &options)?,
                    (None, Some(tokens)) => trace::trace_tokens(&index, &tokens, &options)?,
                    _ => {
                        return Err(familiar::Error::Query(
                            "give either a text or tokens to trace".into(),
                        ))
                    }
                };
                let (s, d) = t.rows(&item_id);
                Ok((
                    familiar::table::from_rows(&s)?,
                    familiar::table::from_rows(&d)?,
                ))
            })
            .map_err(to_py)?;
        Ok((table_to_py(py, &spans)?, table_to_py(py, &documents)?))
    }
}

/// A build event as the Python side receives it: (kind, input bytes read, input bytes in all,
/// shard, tokens).
type Event = (&'static str, u64, u64, u32, u64);

fn event_of(e: familiar_index_builder::build::BuildEvent<'_>) -> Event {
    use familiar_index_builder::build::BuildEvent as E;
    match e {
        E::Read {
            bytes,
            total_bytes,
            shard,
            tokens,
            ..
        } => ("read", bytes, total_bytes, shard, tokens),
        E::Sorting { shard, tokens, .. } => ("sorting", 0, 0, shard, tokens),
        E::Oversized { document, .. } => ("oversized", 0, 0, 0, document.tokens),
        E::Done => ("done", 0, 0, 0, 0),
    }
}

/// Builds (or resumes) an index on a worker thread ([`job::run_job`]): Ctrl-C or an exception
/// from `on_event` stops the build cleanly (the build's own interruption: published shards kept,
/// a rerun resumes) and is raised once it has stopped.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (tokenizer, out, inputs, shard_tokens, text_index, skip_invalid, allow_empty, threads, restart, fields, on_event))]
fn build_index<'py>(
    py: Python<'py>,
    tokenizer: PathBuf,
    out: PathBuf,
    inputs: Vec<String>,
    shard_tokens: Option<u64>,
    text_index: bool,
    skip_invalid: bool,
    allow_empty: bool,
    threads: Option<usize>,
    restart: bool,
    fields: (String, String, String, String),
    on_event: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    use familiar_index_builder::build::{build_with_progress, BuildOptions};
    use std::sync::atomic::AtomicBool;

    let cancel = Arc::new(AtomicBool::new(false));
    let options = BuildOptions {
        fields: familiar::corpus::Fields {
            text: fields.0,
            id: fields.1,
            source: fields.2,
            metadata: fields.3,
        },
        shard_tokens,
        skip_invalid,
        allow_empty,
        threads,
        text_index,
        restart,
        cancel: Some(Arc::clone(&cancel)),
        ..BuildOptions::new(tokenizer, out, inputs)
    };
    let r = job::run_job(
        py,
        &cancel,
        job::OnStop::Cancel,
        on_event.as_ref(),
        move |report| build_with_progress(&options, &|e| report(event_of(e))),
    )?
    .map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("documents", r.documents)?;
    d.set_item("positions", r.tokens)?;
    d.set_item("tokens_tokenized", r.tokens_tokenized)?;
    d.set_item("shards_built", r.shards_built)?;
    d.set_item("shards_reused", r.shards_reused)?;
    d.set_item("skipped_records", r.skipped_records)?;
    d.set_item("oversized_documents", r.oversized_documents)?;
    d.set_item("already_complete", r.already_complete)?;
    d.set_item("shard_tokens", r.shard_tokens)?;
    d.set_item("seconds", r.total_time.as_secs_f64())?;
    Ok(d)
}

/// The extension module.
#[pymodule]
fn _familiar(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Messages name options the way Python callers pass them (`min_len=`).
    familiar::option::set_spelling(familiar::option::Spelling::Keyword);
    m.add_class::<NativeIndex>()?;
    m.add_function(wrap_pyfunction!(build_index, m)?)?;
    m.add_class::<models::NativeModel>()?;
    m.add_function(wrap_pyfunction!(models::score, m)?)?;
    m.add_function(wrap_pyfunction!(models::keyword_prob, m)?)?;
    m.add_function(wrap_pyfunction!(models::density, m)?)?;
    m.add_function(wrap_pyfunction!(models::attribution_store, m)?)?;
    m.add_function(wrap_pyfunction!(models::attribution_score, m)?)?;
    m.add_function(wrap_pyfunction!(concepts::concepts_count, m)?)?;
    m.add_function(wrap_pyfunction!(sql::sql, m)?)?;
    let py = m.py();
    m.add("FamiliarError", py.get_type::<FamiliarError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("CorruptIndex", py.get_type::<CorruptIndex>())?;
    m.add("QueryError", py.get_type::<QueryError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    m.add("IndexIOError", py.get_type::<IndexIOError>())?;
    m.add("FamiliarBug", py.get_type::<FamiliarBug>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("SqlError", py.get_type::<SqlError>())?;
    Ok(())
}

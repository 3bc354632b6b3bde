//! `familiar attribute report`: how the documents that drive reasoning completions differ from those
//! that drive factual ones (the analyses of Ruis et al. 2024, "Procedural knowledge in pretraining
//! drives reasoning in large language models"), from the tables `familiar attribute score` wrote.
//!
//! For every query: influence per nat (scores divided by the completion's information content
//! `−log p(completion | prompt)`); with every document scored (`score --all`), the share of the
//! total positive influence held by the top 0.01 / 0.1 / 1 / 10 % of documents and a power law
//! `s_r ∝ r^−α` fitted by least squares on log–log over the ranked positive scores of the top 10 %
//! of documents (at least 10 ranks). Across queries (again with every document scored): Pearson
//! and Spearman (average ranks for ties) correlation of the influence vectors of each pair of
//! queries, averaged within each task and, as the baseline, over all pairs of factual queries. Over
//! the top `k` documents of each query: how often the answer (and the intermediate answers) occurs
//! in them — as the token sequence of `" " + answer`, found with the suffix array — against its
//! share of all documents; and the source-type enrichment (a source's share among top documents ÷
//! its share of the corpus).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use familiar::index::Index;
use familiar::stats::{average_ranks, fit_power_law, standardized, PowerLaw};
use familiar::{Error, Result};
use serde::Serialize;

use crate::svg::{BarChart, LineChart, Series};

/// Fractions of documents whose share of positive influence is reported.
pub const CONCENTRATION: [f64; 4] = [0.0001, 0.001, 0.01, 0.1];

/// A query of the run (a row of queries.parquet).
#[derive(Debug, Clone, Serialize)]
pub struct RunQuery {
    /// Its id.
    pub id: String,
    /// factual or reasoning.
    pub kind: String,
    /// Task.
    pub task: String,
    /// Answer, if given.
    pub answer: Option<String>,
    /// Intermediate answers.
    pub intermediate: Vec<String>,
    /// log p(completion | prompt).
    pub logprob: f64,
    /// Preconditioner of the run.
    pub precondition: String,
}

/// The tables of one `familiar attribute score` run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The queries.
    pub queries: Vec<RunQuery>,
    /// Per query (same order), `(doc_id, score)` by rank.
    pub scores: Vec<Vec<(u64, f64)>>,
    /// Token-level influence of the run's documents (`influence_tokens.parquet`, when the run
    /// has it): per (query index, document), `(position, score)` of its tokens (the start token,
    /// which has no position, left out).
    pub tokens: HashMap<(usize, u64), Vec<(u64, f64)>>,
}

/// Columns added to the tables after runs were written without them, and not needed here: a
/// run without them is still read.
const ADDED_LATER: [(&str, &str); 1] = [("queries", "metadata")];

fn read_table(path: &Path, table: &str) -> Result<Vec<RecordBatch>> {
    let err = |e: &dyn std::fmt::Display| Error::corrupt(path, e.to_string());
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| err(&e))?
        .build()
        .map_err(|e| err(&e))?;
    let expected = familiar::schema::table(table)?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    for b in &batches {
        for f in expected.fields() {
            let have = b.schema().field_with_name(f.name()).ok().cloned();
            if have.is_none() && ADDED_LATER.contains(&(table, f.name().as_str())) {
                continue;
            }
            if have.as_ref().map(|h| h.data_type()) != Some(f.data_type()) {
                return Err(err(&format!(
                    "expected the {table} table: column `{}` of type {} is {}",
                    f.name(),
                    f.data_type(),
                    match have {
                        Some(h) => format!("of type {}", h.data_type()),
                        None => "missing".into(),
                    }
                )));
            }
        }
    }
    Ok(batches)
}

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = b.column_by_name(name).map(|c| c.as_string::<i32>().clone());
    match c {
        Some(c) => (0..c.len())
            .map(|i| (!c.is_null(i)).then(|| c.value(i).to_string()))
            .collect(),
        None => vec![None; b.num_rows()],
    }
}

impl Run {
    /// Reads `influence.parquet` and `queries.parquet` from `dir`.
    pub fn read(dir: &Path) -> Result<Run> {
        let qpath = dir.join("queries.parquet");
        let mut queries = Vec::new();
        for b in read_table(&qpath, "queries")? {
            let ids = strings(&b, "query_id");
            let kinds = strings(&b, "kind");
            let tasks = strings(&b, "task");
            let answers = strings(&b, "answer");
            let pre = strings(&b, "precondition");
            let lp = b
                .column_by_name("logprob")
                .map(|c| c.as_primitive::<Float64Type>().clone());
            let inter = b
                .column_by_name("intermediate")
                .map(|c| c.as_list::<i32>().clone());
            for i in 0..b.num_rows() {
                let intermediate = match &inter {
                    Some(l) if !l.is_null(i) => {
                        let v = l.value(i);
                        let s = v.as_string::<i32>();
                        (0..s.len()).map(|j| s.value(j).to_string()).collect()
                    }
                    _ => Vec::new(),
                };
                queries.push(RunQuery {
                    id: ids[i].clone().unwrap_or_default(),
                    kind: kinds[i].clone().unwrap_or_default(),
                    task: tasks[i].clone().unwrap_or_default(),
                    answer: answers[i].clone(),
                    intermediate,
                    logprob: lp.as_ref().map_or(f64::NAN, |c| c.value(i)),
                    precondition: pre[i].clone().unwrap_or_default(),
                });
            }
        }
        let position: HashMap<String, usize> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| (q.id.clone(), i))
            .collect();
        let ipath = dir.join("influence.parquet");
        let mut ranked: Vec<Vec<(u64, u64, f64)>> = vec![Vec::new(); queries.len()];
        for b in read_table(&ipath, "influence")? {
            let ids = strings(&b, "query_id");
            let col_u64 = |n: &str| {
                b.column_by_name(n)
                    .map(|c| c.as_primitive::<UInt64Type>().clone())
            };
            let (docs, ranks) = (col_u64("doc_id"), col_u64("rank"));
            let scores = b
                .column_by_name("score")
                .map(|c| c.as_primitive::<Float64Type>().clone());
            let (Some(docs), Some(ranks), Some(scores)) = (docs, ranks, scores) else {
                return Err(Error::corrupt(&ipath, "columns missing"));
            };
            for (i, id) in ids.iter().enumerate() {
                let id = id.as_deref().unwrap_or_default();
                let q = *position.get(id).ok_or_else(|| {
                    Error::corrupt(
                        &ipath,
                        format!("query `{id}` is not in {}", qpath.display()),
                    )
                })?;
                ranked[q].push((ranks.value(i), docs.value(i), scores.value(i)));
            }
        }
        let scores = ranked
            .into_iter()
            .map(|mut r| {
                r.sort_by_key(|x| x.0);
                r.into_iter().map(|(_, d, s)| (d, s)).collect()
            })
            .collect();
        let mut tokens: HashMap<(usize, u64), Vec<(u64, f64)>> = HashMap::new();
        let tpath = dir.join("influence_tokens.parquet");
        if tpath.exists() {
            for b in read_table(&tpath, "influence_tokens")? {
                let ids = strings(&b, "query_id");
                let sides = strings(&b, "side");
                let (Some(docs), Some(positions), Some(scores)) = (
                    b.column_by_name("doc_id")
                        .map(|c| c.as_primitive::<UInt64Type>().clone()),
                    b.column_by_name("position")
                        .map(|c| c.as_primitive::<UInt64Type>().clone()),
                    b.column_by_name("score")
                        .map(|c| c.as_primitive::<Float64Type>().clone()),
                ) else {
                    return Err(Error::corrupt(&tpath, "columns missing"));
                };
                for (i, id) in ids.iter().enumerate() {
                    if sides[i].as_deref() != Some("document") || positions.is_null(i) {
                        continue;
                    }
                    let id = id.as_deref().unwrap_or_default();
                    let q = *position.get(id).ok_or_else(|| {
                        Error::corrupt(
                            &tpath,
                            format!("query `{id}` is not in {}", qpath.display()),
                        )
                    })?;
                    tokens
                        .entry((q, docs.value(i)))
                        .or_default()
                        .push((positions.value(i), scores.value(i)));
                }
            }
        }
        Ok(Run {
            queries,
            scores,
            tokens,
        })
    }
}

/// Share of the total positive influence held by the top `ceil(f · n)` documents (at least one),
/// for each fraction `f`; `ranked` holds every document's score, descending.
pub fn concentration(ranked: &[f64], fractions: &[f64]) -> Vec<f64> {
    let total: f64 = ranked.iter().filter(|&&s| s > 0.0).sum();
    fractions
        .iter()
        .map(|f| {
            let k = ((f * ranked.len() as f64).ceil() as usize).clamp(1, ranked.len().max(1));
            let top: f64 = ranked.iter().take(k).filter(|&&s| s > 0.0).sum();
            if total > 0.0 {
                top / total
            } else {
                f64::NAN
            }
        })
        .collect()
}

/// What the report found for one query.
#[derive(Debug, Clone, Serialize)]
pub struct QueryStats {
    /// Query id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Task.
    pub task: String,
    /// Information content of the completion, nats.
    pub nats: f64,
    /// Highest score.
    pub top_score: f64,
    /// Highest score per nat.
    pub top_score_per_nat: f64,
    /// Sum of positive scores per nat (every document scored only).
    pub positive_per_nat: Option<f64>,
    /// Share of positive influence in the top fractions [`CONCENTRATION`] (every document only).
    pub concentration: Option<Vec<f64>>,
    /// Power law of the ranked top 10 % (every document only).
    pub power_law: Option<PowerLaw>,
    /// Top documents containing the answer, of `top_k` (None without an answer).
    pub answer_in_top: Option<usize>,
    /// Share of all documents containing the answer.
    pub answer_base_rate: Option<f64>,
    /// Top documents containing an intermediate answer (None without any).
    pub intermediate_in_top: Option<usize>,
    /// Share of all documents containing an intermediate answer.
    pub intermediate_base_rate: Option<f64>,
    /// The first top documents, shown: their text around the answer (or an intermediate
    /// answer) with every occurrence marked.
    pub documents: Vec<TopDocument>,
}

/// A top document of a query, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TopDocument {
    /// Rank (1: the most influential).
    pub rank: usize,
    /// Global document id.
    pub doc_id: u64,
    /// Its score.
    pub score: f64,
    /// Its source (`(none)` without one).
    pub source: String,
    /// Characters of its text.
    pub chars: usize,
    /// An excerpt in pieces: the text around its most influential token (with token-level
    /// influence), else the first occurrence of the answer (else of an intermediate answer,
    /// else the beginning), each occurrence of an answer and each influential token its own
    /// piece, marked.
    pub excerpt: Vec<Piece>,
    /// Its most influential tokens (with token-level influence): the token as decoded and its
    /// share of the score, highest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub influential: Vec<(String, f64)>,
}

/// A piece of an excerpt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Piece {
    /// The text.
    pub text: String,
    /// `answer` or `intermediate` for an occurrence of one, else none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<&'static str>,
    /// Part of one of the document's most influential tokens.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub influential: bool,
}

/// Tokens highlighted per shown document.
pub const INFLUENTIAL_TOKENS: usize = 8;

/// Characters shown around the first occurrence.
const EXCERPT_BEFORE: usize = 160;
const EXCERPT_AFTER: usize = 240;

/// The byte offset `n` characters before `at` in `text` (or its start).
fn chars_before(text: &str, at: usize, n: usize) -> usize {
    text[..at]
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i)
}

/// The byte offset `n` characters after `at` in `text` (or its end).
fn chars_after(text: &str, at: usize, n: usize) -> usize {
    text[at..]
        .char_indices()
        .nth(n)
        .map_or(text.len(), |(i, _)| at + i)
}

/// `text`'s excerpt around the first occurrence of `answer` (else of one of `intermediate`),
/// with every occurrence of each in it marked (the answer first where they overlap).
pub fn excerpt(text: &str, answer: Option<&str>, intermediate: &[String]) -> Vec<Piece> {
    excerpt_with(text, answer, intermediate, &[])
}

/// [`excerpt`], centred on the first of `influential` (byte ranges of tokens, most influential
/// first) when there is one, with the parts of the window they cover marked influential too.
pub fn excerpt_with(
    text: &str,
    answer: Option<&str>,
    intermediate: &[String],
    influential: &[(usize, usize)],
) -> Vec<Piece> {
    let needles: Vec<(&str, &'static str)> = answer
        .into_iter()
        .filter(|a| !a.is_empty())
        .map(|a| (a, "answer"))
        .chain(
            intermediate
                .iter()
                .filter(|a| !a.is_empty())
                .map(|a| (a.as_str(), "intermediate")),
        )
        .collect();
    let first = influential
        .first()
        .map(|r| r.0)
        .or_else(|| needles.iter().find_map(|(n, _)| text.find(n)));
    let (start, end) = match first {
        Some(at) => (
            chars_before(text, at, EXCERPT_BEFORE),
            chars_after(text, at, EXCERPT_AFTER),
        ),
        None => (0, chars_after(text, 0, EXCERPT_BEFORE + EXCERPT_AFTER)),
    };
    let window = &text[start..end];
    // Occurrences in the window, leftmost first; an occurrence overlapping an earlier one (or
    // the answer's, tried first at each position) is not marked again.
    let mut marks: Vec<(usize, usize, &'static str)> = Vec::new();
    for (needle, mark) in &needles {
        for (at, _) in window.match_indices(needle) {
            let end = at + needle.len();
            if !marks.iter().any(|&(a, b, _)| at < b && a < end) {
                marks.push((at, end, mark));
            }
        }
    }
    marks.sort();
    // The influential tokens' ranges within the window.
    let hot: Vec<(usize, usize)> = influential
        .iter()
        .filter(|&&(a, b)| a < end && b > start && a < b)
        .map(|&(a, b)| (a.max(start) - start, b.min(end) - start))
        .collect();
    // Every boundary of either layer splits the window; each piece takes its marks.
    let mut cuts: Vec<usize> = vec![0, window.len()];
    for &(a, b, _) in &marks {
        cuts.extend([a, b]);
    }
    for &(a, b) in &hot {
        cuts.extend([a, b]);
    }
    cuts.retain(|&c| window.is_char_boundary(c));
    cuts.sort_unstable();
    cuts.dedup();
    let plain = |text: &str| Piece {
        text: text.into(),
        mark: None,
        influential: false,
    };
    let mut out = Vec::new();
    if start > 0 {
        out.push(plain("…"));
    }
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mark = marks
            .iter()
            .find(|&&(x, y, _)| x <= a && b <= y)
            .map(|m| m.2);
        let influential = hot.iter().any(|&(x, y)| x <= a && b <= y);
        let piece = Piece {
            text: window[a..b].to_string(),
            mark,
            influential,
        };
        // Neighbours with the same marks are one piece.
        match out.last_mut() {
            Some(last)
                if last.mark == piece.mark
                    && last.influential == piece.influential
                    && last.text != "…" =>
            {
                last.text.push_str(&piece.text);
            }
            _ => out.push(piece),
        }
    }
    if end < text.len() {
        out.push(plain("…"));
    }
    out
}

/// The byte range of token `k` of `tokens` in `text` (their decoding): the decodings of the
/// tokens before it and through it, when both are prefixes of `text` (a token inside a
/// character split across tokens has none).
fn token_range(
    tokenizer: &familiar::tokenizer::Tokenizer,
    tokens: &[u32],
    text: &str,
    k: usize,
) -> Result<Option<(usize, usize)>> {
    let before = tokenizer.decode(&tokens[..k])?;
    let through = tokenizer.decode(&tokens[..=k])?;
    Ok(
        (text.starts_with(&before) && text.starts_with(&through) && through.len() > before.len())
            .then_some((before.len(), through.len())),
    )
}

/// Mean correlations of one group of query pairs.
#[derive(Debug, Clone, Serialize)]
pub struct Correlation {
    /// What the pairs are (`task: …` within one task, or the factual baseline).
    pub group: String,
    /// Kind of the task's queries (`factual`, `reasoning`).
    pub kind: String,
    /// Pairs averaged.
    pub pairs: usize,
    /// Mean Pearson correlation.
    pub pearson: f64,
    /// Mean Spearman correlation.
    pub spearman: f64,
}

/// A source's enrichment among the top documents of one kind of query.
#[derive(Debug, Clone, Serialize)]
pub struct Enrichment {
    /// Kind of query.
    pub kind: String,
    /// Source name (`(none)` without one).
    pub source: String,
    /// Share among the top documents.
    pub top_share: f64,
    /// Share of the corpus.
    pub corpus_share: f64,
    /// `top_share / corpus_share`.
    pub enrichment: f64,
}

/// Everything the report found (`summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run directory.
    pub run: String,
    /// Preconditioner of the run.
    pub precondition: String,
    /// Documents in the index.
    pub documents: u64,
    /// Whether every document was scored (`score --all`): needed for correlations and
    /// concentration.
    pub complete: bool,
    /// Top documents examined per query (answers, sources).
    pub top_k: usize,
    /// Per query.
    pub queries: Vec<QueryStats>,
    /// Mean correlations within tasks and across factual queries.
    pub correlations: Vec<Correlation>,
    /// Source enrichment by kind.
    pub enrichment: Vec<Enrichment>,
    /// Agreement between this run and others given with it (preconditioners compared).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparison: Vec<Agreement>,
    /// Linear datamodeling scores of the preconditioners, from an `attribute eval` run's
    /// `lds.json` given with the report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lds: Vec<LdsRow>,
}

/// How two runs (two preconditioners, or the same with other settings) agree on the queries they
/// share.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    /// One run's label (its preconditioner; with its directory when that repeats).
    pub a: String,
    /// The other's.
    pub b: String,
    /// Queries both ran.
    pub queries: usize,
    /// Mean share of the top `k` documents both rank in their top `k`.
    pub top_overlap: f64,
    /// Share of the queries whose first document is the same.
    pub same_first: f64,
    /// Mean Spearman correlation of the two runs' scores over every document (only when both
    /// scored every document, `score --all`).
    pub spearman: Option<f64>,
}

/// A preconditioner's linear datamodeling score (a row of `lds.json`'s `lds`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LdsRow {
    /// The preconditioner.
    pub precondition: String,
    /// Its damping, when it has one.
    #[serde(default)]
    pub damping: Option<f64>,
    /// Mean Spearman correlation over queries.
    pub mean: f64,
    /// Over factual queries.
    pub factual: f64,
    /// Over reasoning queries.
    pub reasoning: f64,
}

/// Reads the per-preconditioner scores of an `attribute eval` run's `lds.json`.
pub fn read_lds(path: &Path) -> Result<Vec<LdsRow>> {
    #[derive(serde::Deserialize)]
    struct File {
        lds: Vec<LdsRow>,
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let f: File = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(
            path,
            format!("expected an `attribute eval` lds.json ({{\"lds\": [{{\"precondition\", \"mean\", \"factual\", \"reasoning\"}}]}}): {e}"),
        )
    })?;
    Ok(f.lds)
}

/// The pairwise agreement of `runs` (label, run), each pair once in order, over the top `k`.
pub fn compare(runs: &[(String, &Run)], k: usize) -> Vec<Agreement> {
    let mut out = Vec::new();
    for (i, (la, a)) in runs.iter().enumerate() {
        for (lb, b) in &runs[i + 1..] {
            let at: HashMap<&str, usize> = b
                .queries
                .iter()
                .enumerate()
                .map(|(j, q)| (q.id.as_str(), j))
                .collect();
            let (mut n, mut overlap, mut first) = (0usize, 0.0, 0usize);
            let mut rhos = Vec::new();
            for (qa, sa) in a.queries.iter().zip(&a.scores) {
                let Some(&j) = at.get(qa.id.as_str()) else {
                    continue;
                };
                let sb = &b.scores[j];
                n += 1;
                let top_a: HashSet<u64> = sa.iter().take(k).map(|x| x.0).collect();
                let shared = sb.iter().take(k).filter(|x| top_a.contains(&x.0)).count();
                overlap += shared as f64 / k.min(sa.len()).min(sb.len()).max(1) as f64;
                first += usize::from(sa.first().map(|x| x.0) == sb.first().map(|x| x.0));
                // Every document scored by both: a dense correlation.
                if sa.len() == sb.len() && !sa.is_empty() {
                    let by_doc: HashMap<u64, f64> = sb.iter().copied().collect();
                    let (x, y): (Vec<f64>, Vec<f64>) = sa
                        .iter()
                        .filter_map(|(d, s)| by_doc.get(d).map(|t| (*s, *t)))
                        .unzip();
                    if x.len() == sa.len() {
                        rhos.push(familiar::stats::spearman(&x, &y));
                    }
                }
            }
            let complete = n > 0 && rhos.len() == n;
            out.push(Agreement {
                a: la.clone(),
                b: lb.clone(),
                queries: n,
                top_overlap: overlap / n.max(1) as f64,
                same_first: first as f64 / n.max(1) as f64,
                spearman: complete.then(|| {
                    // An undefined correlation (constant scores) counts as none.
                    rhos.iter().map(|r| r.unwrap_or(0.0)).sum::<f64>() / n as f64
                }),
            });
        }
    }
    out
}

/// The documents of `index` containing the token sequence of `" " + text` (sorted ids).
fn documents_containing(index: &Index, text: &str) -> Result<HashSet<u64>> {
    let ids = index.tokenizer()?.encode(&format!(" {text}"))?;
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let page = familiar_query::ngram::locate(index, &ids, 0, u64::MAX)?;
    Ok(page.hits.into_iter().map(|h| h.doc_id).collect())
}

/// Every document's source (index by global doc id; `(none)` where it has none).
fn sources(index: &Index) -> Result<Vec<String>> {
    Ok(familiar_query::docs::sources(index)?
        .into_iter()
        .map(|s| s.unwrap_or_else(|| "(none)".into()))
        .collect())
}

/// Analyses `run` (read from `dir`) against `index` (the index the store was built from).
/// Analyses `run` (read from `dir`) against `index` (the index the store was built from); shows
/// the first `shown` of each query's top documents.
pub fn analyse(run: &Run, dir: &Path, index: &Index, top_k: usize, shown: usize) -> Result<Report> {
    let n = index.documents();
    for s in &run.scores {
        if let Some(&(d, _)) = s.iter().find(|(d, _)| *d >= n) {
            return Err(Error::Query(format!(
                "{} names document {d}, but the index {} has {n} documents: not the index the store was built from",
                dir.join("influence.parquet").display(),
                index.dir().display()
            )));
        }
    }
    let complete = !run.scores.is_empty() && run.scores.iter().all(|s| s.len() as u64 == n);
    let source = sources(index)?;
    // The documents containing each distinct answer and intermediate answer, found once.
    let mut containing: HashMap<&str, HashSet<u64>> = HashMap::new();
    for q in &run.queries {
        for a in q.answer.iter().chain(&q.intermediate) {
            if !containing.contains_key(a.as_str()) {
                containing.insert(a, documents_containing(index, a)?);
            }
        }
    }
    let mut stats = Vec::with_capacity(run.queries.len());
    for (qi, (q, s)) in run.queries.iter().zip(&run.scores).enumerate() {
        let nats = -q.logprob;
        let ranked: Vec<f64> = s.iter().map(|x| x.1).collect();
        let top_score = ranked.first().copied().unwrap_or(f64::NAN);
        let top: Vec<u64> = s.iter().take(top_k).map(|x| x.0).collect();
        let (answer_in_top, answer_base_rate) = match &q.answer {
            Some(a) => {
                let docs = &containing[a.as_str()];
                (
                    Some(top.iter().filter(|d| docs.contains(d)).count()),
                    Some(docs.len() as f64 / n.max(1) as f64),
                )
            }
            None => (None, None),
        };
        let (intermediate_in_top, intermediate_base_rate) = if q.intermediate.is_empty() {
            (None, None)
        } else {
            let docs: HashSet<u64> = q
                .intermediate
                .iter()
                .flat_map(|a| containing[a.as_str()].iter().copied())
                .collect();
            (
                Some(top.iter().filter(|d| docs.contains(d)).count()),
                Some(docs.len() as f64 / n.max(1) as f64),
            )
        };
        let tail = (ranked.len() / 10).max(10);
        let mut documents = Vec::new();
        for (i, &(doc_id, score)) in s.iter().take(shown).enumerate() {
            let text = familiar_query::docs::text(index, doc_id)?;
            // Its most influential tokens, when the run split its score by token.
            let (mut ranges, mut influential) = (Vec::new(), Vec::new());
            if let Some(t) = run.tokens.get(&(qi, doc_id)) {
                let ids = index.doc_tokens(doc_id, 0, u64::MAX)?;
                let tokenizer = index.tokenizer()?;
                let mut best: Vec<(u64, f64)> = t
                    .iter()
                    .copied()
                    .filter(|&(p, s)| (p as usize) < ids.len() && s > 0.0)
                    .collect();
                best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                for &(p, share) in best.iter().take(INFLUENTIAL_TOKENS) {
                    let p = p as usize;
                    influential.push((tokenizer.decode(&ids[p..=p])?, share));
                    if let Some(r) = token_range(tokenizer, &ids, &text, p)? {
                        ranges.push(r);
                    }
                }
            }
            documents.push(TopDocument {
                rank: i + 1,
                doc_id,
                score,
                source: source[doc_id as usize].clone(),
                chars: text.chars().count(),
                excerpt: excerpt_with(&text, q.answer.as_deref(), &q.intermediate, &ranges),
                influential,
            });
        }
        stats.push(QueryStats {
            id: q.id.clone(),
            kind: q.kind.clone(),
            task: q.task.clone(),
            nats,
            top_score,
            top_score_per_nat: top_score / nats,
            positive_per_nat: complete
                .then(|| ranked.iter().filter(|&&x| x > 0.0).sum::<f64>() / nats),
            concentration: complete.then(|| concentration(&ranked, &CONCENTRATION)),
            power_law: if complete {
                fit_power_law(&ranked, tail)
            } else {
                None
            },
            answer_in_top,
            answer_base_rate,
            intermediate_in_top,
            intermediate_base_rate,
            documents,
        });
    }
    let correlations = if complete {
        correlations(run, n as usize)
    } else {
        Vec::new()
    };
    // Source enrichment of the top documents, by kind.
    let mut corpus: BTreeMap<&str, f64> = BTreeMap::new();
    for s in &source {
        *corpus.entry(s.as_str()).or_default() += 1.0 / source.len().max(1) as f64;
    }
    let mut enrichment = Vec::new();
    let kinds: Vec<String> = run
        .queries
        .iter()
        .map(|q| q.kind.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for kind in &kinds {
        let mut counts: BTreeMap<&str, f64> = BTreeMap::new();
        let mut total = 0.0;
        for (q, s) in run.queries.iter().zip(&run.scores) {
            if &q.kind != kind {
                continue;
            }
            for (d, _) in s.iter().take(top_k) {
                *counts.entry(source[*d as usize].as_str()).or_default() += 1.0;
                total += 1.0;
            }
        }
        for (src, share) in &corpus {
            let top_share = counts.get(src).copied().unwrap_or(0.0) / f64::max(total, 1.0);
            enrichment.push(Enrichment {
                kind: kind.clone(),
                source: src.to_string(),
                top_share,
                corpus_share: *share,
                enrichment: top_share / share,
            });
        }
    }
    Ok(Report {
        run: dir.display().to_string(),
        precondition: run
            .queries
            .first()
            .map(|q| q.precondition.clone())
            .unwrap_or_default(),
        documents: n,
        complete,
        top_k,
        queries: stats,
        correlations,
        enrichment,
        comparison: Vec::new(),
        lds: Vec::new(),
    })
}

/// Mean Pearson and Spearman correlations of influence vectors within each task and over all
/// pairs of factual queries.
fn correlations(run: &Run, n: usize) -> Vec<Correlation> {
    use rayon::prelude::*;
    let dense: Vec<Vec<f64>> = run
        .scores
        .iter()
        .map(|s| {
            let mut v = vec![0.0; n];
            for &(d, x) in s {
                v[d as usize] = x;
            }
            v
        })
        .collect();
    // A constant influence vector has no correlation with anything (`stats` says None); it
    // counts as 0 in these means, as "no agreement", so that every pair of the group counts.
    let zeros = vec![0.0; n];
    let pear: Vec<Vec<f64>> = dense
        .par_iter()
        .map(|v| standardized(v).unwrap_or_else(|| zeros.clone()))
        .collect();
    let spear: Vec<Vec<f64>> = dense
        .par_iter()
        .map(|v| standardized(&average_ranks(v)).unwrap_or_else(|| zeros.clone()))
        .collect();
    let dot = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
    let mean_over = |pairs: &[(usize, usize)]| -> (f64, f64) {
        let (p, s) = pairs
            .par_iter()
            .map(|&(i, j)| (dot(&pear[i], &pear[j]), dot(&spear[i], &spear[j])))
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        let m = pairs.len().max(1) as f64;
        (p / m, s / m)
    };
    let q = &run.queries;
    let mut tasks: Vec<(&str, &str)> = q
        .iter()
        .map(|x| (x.kind.as_str(), x.task.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Reasoning tasks first, as in the paper's figures.
    tasks.sort_by_key(|t| (t.0 != "reasoning", t.1));
    let mut out = Vec::new();
    for (kind, task) in tasks {
        let members: Vec<usize> = (0..q.len()).filter(|&i| q[i].task == task).collect();
        let pairs: Vec<(usize, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(a, &i)| members[a + 1..].iter().map(move |&j| (i, j)))
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let (p, s) = mean_over(&pairs);
        out.push(Correlation {
            group: format!("within task: {task}"),
            kind: kind.to_string(),
            pairs: pairs.len(),
            pearson: p,
            spearman: s,
        });
    }
    let factual: Vec<usize> = (0..q.len()).filter(|&i| q[i].kind == "factual").collect();
    let pairs: Vec<(usize, usize)> = factual
        .iter()
        .enumerate()
        .flat_map(|(a, &i)| factual[a + 1..].iter().map(move |&j| (i, j)))
        .collect();
    if !pairs.is_empty() {
        let (p, s) = mean_over(&pairs);
        out.push(Correlation {
            group: "across factual queries".into(),
            kind: "factual".into(),
            pairs: pairs.len(),
            pearson: p,
            spearman: s,
        });
    }
    out
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v
        .filter(|x| x.is_finite())
        .fold((0.0, 0usize), |a, x| (a.0 + x, a.1 + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

mod render;
pub use render::{quote, write};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concentration_recovers_planted_values() {
        // Negative scores do not count in the total.
        let v = [4.0, 3.0, 2.0, 1.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0];
        assert_eq!(concentration(&v, &[0.1, 0.2, 1.0]), vec![0.4, 0.7, 1.0]);
    }

    /// Influential tokens centre the excerpt on the first of them and split the answer's mark
    /// where they overlap it; the pieces spell the window out in order.
    #[test]
    fn excerpts_centre_on_influential_tokens_and_mark_them_within_answers() {
        let text = format!(
            "{}The answer is Zelxir here.{}",
            "a".repeat(600),
            "b".repeat(600)
        );
        let at = text.find("Zelxir").unwrap();
        // "Zel" and "here": the most influential first.
        let here = text.find("here").unwrap();
        let pieces = excerpt_with(
            &text,
            Some("Zelxir"),
            &[],
            &[(here, here + 4), (at, at + 3)],
        );
        let spelled: String = pieces.iter().map(|p| p.text.as_str()).collect();
        assert!(
            spelled.starts_with('…') && spelled.ends_with('…'),
            "{spelled}"
        );
        assert!(text.contains(spelled.trim_matches('…')));
        let marked: Vec<(&str, Option<&str>, bool)> = pieces
            .iter()
            .filter(|p| p.mark.is_some() || p.influential)
            .map(|p| (p.text.as_str(), p.mark, p.influential))
            .collect();
        assert_eq!(
            marked,
            vec![
                ("Zel", Some("answer"), true),
                ("xir", Some("answer"), false),
                ("here", None, true)
            ]
        );
        assert_eq!(quote(&pieces).matches('⦃').count(), 2, "{}", quote(&pieces));
        // Centred on `here`, not on the answer: the window reaches further right.
        let by_answer = excerpt(&text, Some("Zelxir"), &[]);
        let right = |p: &[Piece]| p.iter().map(|p| p.text.matches('b').count()).sum::<usize>();
        assert!(right(&pieces) > right(&by_answer));
        // Without tokens, as before.
        assert_eq!(excerpt_with(&text, Some("Zelxir"), &[], &[]), by_answer);
    }
}

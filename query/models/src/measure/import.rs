//! Zero-shot results measured elsewhere, read into [`ZeroShotRow`](super::score::ZeroShotRow)s: CSV/TSV with a header row,
//! JSONL with the same keys, and lm-evaluation-harness per-sample logs (`--log_samples`,
//! `samples_TASK_DATE.jsonl`). Every error names the file and line.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use familiar::option::name;
use familiar::{Error, Result};
use serde_json::Value;

use super::score::ZeroShotRow as Row;

/// The format of a results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ResultFormat {
    /// Guess from the file names: `samples_*.jsonl` lm-eval, `.csv`/`.tsv` CSV, else JSONL.
    #[default]
    Auto,
    /// A header row; columns item_id, task, acc and optionally kind, model, logprob, n_tokens,
    /// prompt_tokens, truncated_tokens, greedy_match, answer, predicted, predicted_norm, acc_norm,
    /// choice_logprobs and concepts (lists separated by `|`).
    Csv,
    /// One object per line with the same keys (lists as arrays).
    Jsonl,
    /// lm-evaluation-harness `--log_samples` output (`samples_TASK_DATE.jsonl`).
    LmEval,
}

/// How to read results files.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Their format.
    pub format: ResultFormat,
    /// The model's name (required unless every row has a `model`).
    pub model: Option<String>,
    /// The task of every row (default: the `task` column; lm-eval: from the file name).
    pub task: Option<String>,
    /// lm-eval: the key of each sample's `doc` holding its concepts (a string or a list of
    /// strings; dots descend: `meta.entity`).
    pub concepts_key: Option<String>,
}

/// Results read by [`import_zero_shot`].
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// One row per result, in file order.
    pub rows: Vec<Row>,
    /// Columns (CSV) or keys (JSONL) that are not columns of the zero_shot table, not read.
    pub ignored: BTreeSet<String>,
}

/// The columns of the zero_shot table a results file may hold.
const KEYS: &[&str] = &[
    "item_id",
    "task",
    "kind",
    "model",
    "prompt_tokens",
    "truncated_tokens",
    "logprob",
    "n_tokens",
    "greedy_match",
    "choice_logprobs",
    "answer",
    "predicted",
    "predicted_norm",
    "acc",
    "acc_norm",
    "concepts",
];

/// Reads zero-shot results from `files`. Every row needs a task and a model (from the file or
/// `options`); an empty file and an item that appears twice (same model, task and id) are errors.
pub fn import_zero_shot(files: &[PathBuf], options: &ImportOptions) -> Result<Imported> {
    let mut out = Imported::default();
    for f in files {
        let before = out.rows.len();
        match format_of(f, options.format) {
            ResultFormat::Csv => read_csv(f, &mut out)?,
            ResultFormat::Jsonl | ResultFormat::Auto => read_jsonl(f, &mut out)?,
            ResultFormat::LmEval => read_lm_eval(f, options.concepts_key.as_deref(), &mut out)?,
        }
        for r in &mut out.rows[before..] {
            if let Some(t) = &options.task {
                r.task = t.clone();
            }
            if r.task.is_empty() {
                return Err(Error::input(
                    f,
                    0,
                    format!(
                        "item {} has no task (give a task column or {})",
                        r.item_id,
                        name("task")
                    ),
                ));
            }
            if r.model.is_empty() {
                match &options.model {
                    Some(m) => r.model = m.clone(),
                    None => {
                        return Err(Error::input(
                            f,
                            0,
                            format!(
                                "item {} has no model (give a model column or {})",
                                r.item_id,
                                name("model")
                            ),
                        ))
                    }
                }
            }
        }
        if out.rows.len() == before {
            return Err(Error::input(f, 0, "no results in the file"));
        }
    }
    let mut seen = HashSet::new();
    if let Some(d) = out
        .rows
        .iter()
        .find(|r| !seen.insert((r.model.clone(), r.task.clone(), r.item_id.clone())))
    {
        return Err(Error::Query(format!(
            "item {} of task {} (model {}) appears twice",
            d.item_id, d.task, d.model
        )));
    }
    Ok(out)
}

fn format_of(path: &Path, format: ResultFormat) -> ResultFormat {
    if format != ResultFormat::Auto {
        return format;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.starts_with("samples_") && name.ends_with(".jsonl") {
        ResultFormat::LmEval
    } else if name.ends_with(".csv") || name.ends_with(".tsv") {
        ResultFormat::Csv
    } else {
        ResultFormat::Jsonl
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "1.0" | "yes" => Some(true),
        "false" | "0" | "0.0" | "no" => Some(false),
        _ => None,
    }
}

/// Sets `key` of `row` from the text `v` (CSV); `Err` says what was expected.
fn set_text(row: &mut Row, key: &str, v: &str) -> std::result::Result<(), String> {
    let v = v.trim();
    if v.is_empty() {
        return match key {
            "item_id" | "acc" => Err("a value".into()),
            _ => Ok(()),
        };
    }
    let num = |v: &str| v.parse::<u64>().map_err(|_| "a whole number".to_string());
    let float = |v: &str| v.parse::<f64>().map_err(|_| "a number".to_string());
    let boolean = |v: &str| parse_bool(v).ok_or_else(|| "true or false (or 1/0)".to_string());
    match key {
        "item_id" => row.item_id = v.to_string(),
        "task" => row.task = v.to_string(),
        "kind" => row.kind = v.to_string(),
        "model" => row.model = v.to_string(),
        "prompt_tokens" => row.prompt_tokens = Some(num(v)?),
        "truncated_tokens" => row.truncated_tokens = Some(num(v)?),
        "logprob" => row.logprob = Some(float(v)?),
        "n_tokens" => row.n_tokens = Some(num(v)?),
        "greedy_match" => row.greedy_match = Some(boolean(v)?),
        "choice_logprobs" => {
            row.choice_logprobs = Some(
                v.split('|')
                    .map(|x| float(x.trim()))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| "numbers separated by |".to_string())?,
            )
        }
        "answer" => row.answer = Some(num(v)?),
        "predicted" => row.predicted = Some(num(v)?),
        "predicted_norm" => row.predicted_norm = Some(num(v)?),
        "acc" => row.acc = boolean(v)?,
        "acc_norm" => row.acc_norm = Some(boolean(v)?),
        "concepts" => {
            row.concepts = v
                .split('|')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect()
        }
        _ => {}
    }
    Ok(())
}

/// Fills what a row left out: the kind, and the multiple-choice prediction from the choices.
fn finish(row: &mut Row) {
    if let Some(c) = &row.choice_logprobs {
        if row.predicted.is_none() {
            row.predicted = argmax(c);
        }
        if row.logprob.is_none() {
            row.logprob = row.answer.and_then(|a| c.get(a as usize)).copied();
        }
    }
    if row.kind.is_empty() {
        row.kind = if row.choice_logprobs.is_some() || row.answer.is_some() {
            "multiple_choice"
        } else {
            "completion"
        }
        .into();
    }
}

fn argmax(v: &[f64]) -> Option<u64> {
    v.iter()
        .enumerate()
        .filter(|(_, x)| !x.is_nan())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u64)
}

fn read_csv(path: &Path, out: &mut Imported) -> Result<()> {
    let tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let text = familiar::input::read_utf8(path)?;
    let mut r = csv::ReaderBuilder::new()
        .delimiter(if tsv { b'\t' } else { b',' })
        .from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .map_err(|e| Error::input(path, 1, format!("reading the header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    for need in ["item_id", "acc"] {
        if !header.iter().any(|h| h == need) {
            return Err(Error::input(
                path,
                1,
                format!("no `{need}` column (columns: {})", header.join(", ")),
            ));
        }
    }
    out.ignored.extend(
        header
            .iter()
            .filter(|h| !KEYS.contains(&h.as_str()))
            .cloned(),
    );
    for (i, rec) in r.records().enumerate() {
        let line = i as u64 + 2;
        let rec = rec.map_err(|e| Error::input(path, line, e.to_string()))?;
        let mut row = Row::default();
        for (k, v) in header.iter().zip(rec.iter()) {
            set_text(&mut row, k, v).map_err(|want| {
                Error::input(
                    path,
                    line,
                    format!("column `{k}` is {v:?}, expected {want}"),
                )
            })?;
        }
        finish(&mut row);
        out.rows.push(row);
    }
    Ok(())
}

/// `value` as the text `set_text` reads (lists joined by `|`).
fn json_text(value: &Value) -> std::result::Result<String, String> {
    Ok(match value {
        Value::Null => String::new(),
        Value::String(s) => {
            if s.contains('|') {
                return Err("a string without |".into());
            }
            s.clone()
        }
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(json_text)
            .collect::<std::result::Result<Vec<_>, _>>()?
            .join("|"),
        Value::Object(_) => return Err("not an object".into()),
    })
}

fn read_jsonl(path: &Path, out: &mut Imported) -> Result<()> {
    let text = familiar::input::read_utf8(path)?;
    for (line, obj) in familiar::input::parse_jsonl_objects(path, &text)? {
        let mut row = Row::default();
        for need in ["item_id", "acc"] {
            if !obj.contains_key(need) {
                return Err(Error::input(path, line, format!("no `{need}`")));
            }
        }
        for (k, v) in &obj {
            if !KEYS.contains(&k.as_str()) {
                out.ignored.insert(k.clone());
                continue;
            }
            let list = matches!(k.as_str(), "choice_logprobs" | "concepts");
            if matches!(v, Value::Array(_)) && !list {
                return Err(Error::input(path, line, format!("`{k}` is a list")));
            }
            json_text(v)
                .and_then(|t| set_text(&mut row, k, &t))
                .map_err(|want| {
                    Error::input(path, line, format!("`{k}` is {v}, expected {want}"))
                })?;
        }
        finish(&mut row);
        out.rows.push(row);
    }
    Ok(())
}

/// The task of an lm-eval `samples_TASK_DATE.jsonl` file.
fn lm_eval_task(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stem = name.strip_prefix("samples_")?.strip_suffix(".jsonl")?;
    match stem.rsplit_once('_') {
        Some((task, date)) if date.starts_with(|c: char| c.is_ascii_digit()) => {
            Some(task.to_string())
        }
        _ => Some(stem.to_string()),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => parse_bool(s),
        Value::Number(n) => n.as_f64().map(|x| x >= 0.5),
        _ => None,
    }
}

/// `(log-likelihood, is-greedy)` pairs of a sample's `filtered_resps` (each response such a
/// pair, a one-element list holding it, or a bare number); `None` for generated text.
fn loglikelihoods(resps: &[Value]) -> Option<Vec<(f64, Option<bool>)>> {
    resps
        .iter()
        .map(|r| {
            let pair = match r {
                Value::Array(a) if a.len() == 1 && matches!(a[0], Value::Array(_)) => &a[0],
                other => other,
            };
            match pair {
                Value::Array(p) if !p.is_empty() => Some((number(&p[0])?, p.get(1).and_then(flag))),
                // A bare number is a rolling log-likelihood; a bare string a generated answer.
                Value::Number(n) => n.as_f64().map(|x| (x, None)),
                _ => None,
            }
        })
        .collect()
}

fn read_lm_eval(path: &Path, concepts_key: Option<&str>, out: &mut Imported) -> Result<()> {
    let task = lm_eval_task(path).unwrap_or_default();
    for (line, v) in familiar::input::read_jsonl(path)? {
        let bad = |reason: String| Error::input(path, line, reason);
        let Some(doc_id) = v.get("doc_id") else {
            return Err(bad("no `doc_id` (not an lm-eval per-sample log?)".into()));
        };
        let item_id = match doc_id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let Some(Value::Array(resps)) = v.get("filtered_resps").or_else(|| v.get("resps")) else {
            return Err(bad("no `filtered_resps` list".into()));
        };
        let mut row = Row {
            item_id,
            task: task.clone(),
            ..Row::default()
        };
        let metric = |name: &str| v.get(name).and_then(flag);
        match loglikelihoods(resps) {
            Some(ll) if ll.len() > 1 => {
                row.kind = "multiple_choice".into();
                let lps: Vec<f64> = ll.iter().map(|p| p.0).collect();
                row.answer = match v.get("target") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.trim().parse().ok(),
                    _ => None,
                };
                if let Some(a) = row.answer {
                    if a as usize >= lps.len() {
                        return Err(bad(format!(
                            "target {a} is not among the {} choices",
                            lps.len()
                        )));
                    }
                    row.greedy_match = ll[a as usize].1;
                }
                row.choice_logprobs = Some(lps);
                finish(&mut row);
                row.acc = match (metric("acc"), row.answer) {
                    (Some(x), _) => x,
                    (None, Some(a)) => row.predicted == Some(a),
                    (None, None) => return Err(bad("no `acc` and no integer `target`".into())),
                };
                row.acc_norm = metric("acc_norm");
            }
            Some(ll) if ll.len() == 1 => {
                row.kind = "completion".into();
                row.logprob = Some(ll[0].0);
                row.greedy_match = ll[0].1;
                row.acc = match metric("acc").or(row.greedy_match) {
                    Some(x) => x,
                    None => return Err(bad("no `acc` and no greedy flag".into())),
                };
            }
            _ => {
                row.kind = "generation".into();
                row.acc = match metric("exact_match").or_else(|| metric("acc")) {
                    Some(x) => x,
                    None => {
                        return Err(bad(
                            "a generated answer without `exact_match` or `acc`".into()
                        ))
                    }
                };
            }
        }
        if let Some(key) = concepts_key {
            let mut cur = v.get("doc");
            for part in key.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            row.concepts = match cur {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(format!("doc.{key} is not a list of strings")))?,
                _ => return Err(bad(format!("no doc.{key} (a string or a list of strings)"))),
            };
        }
        out.rows.push(row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lm_eval_tasks_come_from_the_file_name() {
        let t = |n: &str| lm_eval_task(Path::new(n));
        assert_eq!(
            t("samples_mmlu_2024-01-01T00-00-00.jsonl").as_deref(),
            Some("mmlu")
        );
        assert_eq!(t("samples_arc_easy.jsonl").as_deref(), Some("arc_easy"));
        assert_eq!(t("results.jsonl"), None);
    }

    #[test]
    fn multiple_choice_rows_get_their_prediction_and_kind() {
        let mut row = Row {
            choice_logprobs: Some(vec![-3.0, f64::NAN, -1.0]),
            answer: Some(0),
            ..Row::default()
        };
        finish(&mut row);
        assert_eq!(row.predicted, Some(2));
        assert_eq!(row.logprob, Some(-3.0));
        assert_eq!(row.kind, "multiple_choice");
        let mut plain = Row::default();
        finish(&mut plain);
        assert_eq!(plain.kind, "completion");
    }
}

//! `familiar import`: results made elsewhere into familiar's tables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use familiar::table::Format;
use serde_json::Value;

/// What to import.
#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Zero-shot results (CSV, JSONL, or lm-evaluation-harness per-sample logs) into a zero_shot
    /// table.
    ZeroShot(ZeroShotArgs),
    /// A concept list (CSV/TSV with concept, aliases separated by |, group; or JSONL) into a
    /// concepts table, checked as `familiar concepts count` checks it.
    Concepts(ConceptsArgs),
    /// Model metadata (config.json, the safetensors, trainer_state.json) of checkpoints into a
    /// models table.
    Model(ModelArgs),
}

/// Arguments of `familiar import concepts`.
#[derive(Debug, clap::Args)]
pub struct ConceptsArgs {
    /// The concept list.
    lexicon: PathBuf,
    /// The Parquet file to write (the concepts table of schemas/).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `familiar import model`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Hugging Face model directories.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// The Parquet file to write (the models table of schemas/).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// Guess from the file names: `samples_*.jsonl` lm-eval, `.csv`/`.tsv` CSV, else JSONL.
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

/// Arguments of `familiar import zero-shot`.
#[derive(Debug, clap::Args)]
pub struct ZeroShotArgs {
    /// Result files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Their format.
    #[arg(long, value_enum, default_value = "auto")]
    from: Source,
    /// The model's name (required unless every row has a `model`).
    #[arg(long)]
    model: Option<String>,
    /// The task of every row (default: the `task` column; lm-eval: from the file name).
    #[arg(long)]
    task: Option<String>,
    /// lm-eval: the key of each sample's `doc` holding its concepts (a string or a list of
    /// strings; dots descend: `meta.entity`).
    #[arg(long)]
    concepts_key: Option<String>,
    /// The Parquet file to write (the zero_shot table of schemas/).
    #[arg(long)]
    out: PathBuf,
}

use familiar_models::measure::score::ZeroShotRow as Row;

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

/// Runs `familiar import`.
pub fn run(c: ImportCommand) -> Result<i32> {
    match c {
        ImportCommand::ZeroShot(a) => zero_shot(a),
        ImportCommand::Concepts(a) => {
            let lexicon = familiar_query::concepts::lexicon::Lexicon::read(&a.lexicon)?;
            familiar_query::concepts::tables::concepts_table(&lexicon)?
                .write(Format::Parquet, Some(&a.out))?;
            println!(
                "imported {} concepts into {}",
                lexicon.concepts.len(),
                a.out.display()
            );
            Ok(0)
        }
        ImportCommand::Model(a) => models(a),
    }
}

fn models(a: ModelArgs) -> Result<i32> {
    let rows = a
        .models
        .iter()
        .map(|dir| familiar_models::catalog::describe(dir))
        .collect::<familiar_models::Result<Vec<_>>>()?;
    familiar::table::from_rows(&rows)?.write(Format::Parquet, Some(&a.out))?;
    println!(
        "imported {} models into {}",
        a.models.len(),
        a.out.display()
    );
    Ok(0)
}

fn format_of(path: &Path, from: Source) -> Source {
    if from != Source::Auto {
        return from;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.starts_with("samples_") && name.ends_with(".jsonl") {
        Source::LmEval
    } else if name.ends_with(".csv") || name.ends_with(".tsv") {
        Source::Csv
    } else {
        Source::Jsonl
    }
}

fn zero_shot(a: ZeroShotArgs) -> Result<i32> {
    let mut rows = Vec::new();
    let mut ignored = BTreeSet::new();
    for f in &a.files {
        let before = rows.len();
        match format_of(f, a.from) {
            Source::Csv => read_csv(f, &mut rows, &mut ignored)?,
            Source::Jsonl | Source::Auto => read_jsonl(f, &mut rows, &mut ignored)?,
            Source::LmEval => read_lm_eval(f, a.concepts_key.as_deref(), &mut rows)?,
        }
        for r in &mut rows[before..] {
            if let Some(t) = &a.task {
                r.task = t.clone();
            }
            if r.task.is_empty() {
                bail!(
                    "{}: item {} has no task (give a task column or --task)",
                    f.display(),
                    r.item_id
                );
            }
            if r.model.is_empty() {
                match &a.model {
                    Some(m) => r.model = m.clone(),
                    None => bail!(
                        "{}: item {} has no model (give a model column or --model)",
                        f.display(),
                        r.item_id
                    ),
                }
            }
        }
        if rows.len() == before {
            bail!("{}: no results in the file", f.display());
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = rows
        .iter()
        .find(|r| !seen.insert((r.model.clone(), r.task.clone(), r.item_id.clone())))
    {
        bail!(
            "item {} of task {} (model {}) appears twice",
            d.item_id,
            d.task,
            d.model
        );
    }
    if !ignored.is_empty() {
        eprintln!(
            "ignored columns not in the zero_shot table: {}",
            ignored.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    write(&rows, &a.out)?;
    let accuracy = rows.iter().filter(|r| r.acc).count() as f64 / rows.len() as f64;
    println!(
        "imported {} results ({} tasks, accuracy {accuracy:.4}) into {}",
        rows.len(),
        rows.iter().map(|r| &r.task).collect::<BTreeSet<_>>().len(),
        a.out.display()
    );
    Ok(0)
}

fn write(rows: &[Row], out: &Path) -> Result<()> {
    familiar::table::from_rows(rows)?.write(Format::Parquet, Some(out))?;
    Ok(())
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

fn read_csv(path: &Path, rows: &mut Vec<Row>, ignored: &mut BTreeSet<String>) -> Result<()> {
    let tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let mut r = csv::ReaderBuilder::new()
        .delimiter(if tsv { b'\t' } else { b',' })
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let header: Vec<String> = r
        .headers()
        .with_context(|| format!("{}: reading the header", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    for need in ["item_id", "acc"] {
        if !header.iter().any(|h| h == need) {
            bail!(
                "{}:1: no `{need}` column (columns: {})",
                path.display(),
                header.join(", ")
            );
        }
    }
    ignored.extend(
        header
            .iter()
            .filter(|h| !KEYS.contains(&h.as_str()))
            .cloned(),
    );
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("{}:{line}", path.display()))?;
        let mut row = Row::default();
        for (k, v) in header.iter().zip(rec.iter()) {
            set_text(&mut row, k, v).map_err(|want| {
                anyhow::anyhow!(
                    "{}:{line}: column `{k}` is {v:?}, expected {want}",
                    path.display()
                )
            })?;
        }
        finish(&mut row);
        rows.push(row);
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

fn read_jsonl(path: &Path, rows: &mut Vec<Row>, ignored: &mut BTreeSet<String>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{line_no}: not JSON", path.display()))?;
        let Value::Object(obj) = v else {
            bail!("{}:{line_no}: expected a JSON object", path.display());
        };
        let mut row = Row::default();
        for need in ["item_id", "acc"] {
            if !obj.contains_key(need) {
                bail!("{}:{line_no}: no `{need}`", path.display());
            }
        }
        for (k, v) in &obj {
            if !KEYS.contains(&k.as_str()) {
                ignored.insert(k.clone());
                continue;
            }
            let list = matches!(k.as_str(), "choice_logprobs" | "concepts");
            if matches!(v, Value::Array(_)) && !list {
                bail!("{}:{line_no}: `{k}` is a list", path.display());
            }
            json_text(v)
                .and_then(|t| set_text(&mut row, k, &t))
                .map_err(|want| {
                    anyhow::anyhow!(
                        "{}:{line_no}: `{k}` is {v}, expected {want}",
                        path.display()
                    )
                })?;
        }
        finish(&mut row);
        rows.push(row);
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

fn read_lm_eval(path: &Path, concepts_key: Option<&str>, rows: &mut Vec<Row>) -> Result<()> {
    let task = lm_eval_task(path).unwrap_or_default();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{line_no}", path.display());
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let Some(doc_id) = v.get("doc_id") else {
            bail!("{}: no `doc_id` (not an lm-eval per-sample log?)", at());
        };
        let item_id = match doc_id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let Some(Value::Array(resps)) = v.get("filtered_resps").or_else(|| v.get("resps")) else {
            bail!("{}: no `filtered_resps` list", at());
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
                        bail!(
                            "{}: target {a} is not among the {} choices",
                            at(),
                            lps.len()
                        );
                    }
                    row.greedy_match = ll[a as usize].1;
                }
                row.choice_logprobs = Some(lps);
                finish(&mut row);
                row.acc = match (metric("acc"), row.answer) {
                    (Some(x), _) => x,
                    (None, Some(a)) => row.predicted == Some(a),
                    (None, None) => bail!("{}: no `acc` and no integer `target`", at()),
                };
                row.acc_norm = metric("acc_norm");
            }
            Some(ll) if ll.len() == 1 => {
                row.kind = "completion".into();
                row.logprob = Some(ll[0].0);
                row.greedy_match = ll[0].1;
                row.acc = match metric("acc").or(row.greedy_match) {
                    Some(x) => x,
                    None => bail!("{}: no `acc` and no greedy flag", at()),
                };
            }
            _ => {
                row.kind = "generation".into();
                row.acc = match metric("exact_match").or_else(|| metric("acc")) {
                    Some(x) => x,
                    None => bail!(
                        "{}: a generated answer without `exact_match` or `acc`",
                        at()
                    ),
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
                    .with_context(|| format!("{}: doc.{key} is not a list of strings", at()))?,
                _ => bail!("{}: no doc.{key} (a string or a list of strings)", at()),
            };
        }
        rows.push(row);
    }
    Ok(())
}

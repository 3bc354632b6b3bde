//! `familiar score` and `familiar keyword-prob`.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use familiar_query::measure::items::{read_items, Ask, ItemFormat};
use familiar_query::measure::score::choose;
use familiar_query::output::{Column, Format, Table};

/// Arguments of `familiar score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Items: JSONL ({"id", "prompt", "completion"} or {"id", "prompt", "choices", "answer"}), or a
    /// benchmark file in the format given by --format.
    #[arg(long)]
    items: PathBuf,
    /// Format of --items.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: ItemFormat,
    /// Score only the first N items.
    #[arg(long)]
    limit: Option<usize>,
    /// The Parquet file to write (the zero_shot table of schemas/).
    #[arg(long)]
    out: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `familiar keyword-prob`.
#[derive(Debug, clap::Args)]
pub struct KeywordArgs {
    #[command(flatten)]
    model: super::ModelArgs,
    /// JSONL items: {"id", "context", "keyword"}; the keyword is scored after the context as given
    /// (a leading space is part of it).
    #[arg(long)]
    items: PathBuf,
    /// The Parquet file to write (the keyword_probe table of schemas/).
    #[arg(long)]
    out: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run_score(a: ScoreArgs) -> Result<i32> {
    familiar_query::measure::prepare_cpu();
    let lm = a.model.load()?;
    let items = read_items(&a.items, a.format, a.limit)?;
    let model_name = a.model.model.display().to_string();
    let progress = familiar_query::output::progress_bar(!a.quiet, items.len() as u64, "items")?;
    let n = items.len();
    let mut t = Rows::default();
    for item in &items {
        let ctx = || format!("{}: item {}", a.items.display(), item.id);
        match &item.ask {
            Ask::Completion(c) => {
                let s = lm.score(&item.prompt, c).with_context(ctx)?;
                t.push(
                    item,
                    &model_name,
                    "completion",
                    s.prompt_tokens,
                    s.truncated,
                );
                t.logprob.push(Some(s.logprob));
                t.n_tokens.push(Some(s.n_tokens as u64));
                t.greedy.push(Some(s.greedy));
                t.choice_logprobs.push(None);
                t.answer.push(None);
                t.predicted.push(None);
                t.predicted_norm.push(None);
                t.acc.push(Some(s.greedy));
                t.acc_norm.push(None);
            }
            Ask::Choice { choices, answer } => {
                let r = choose(&lm, &item.prompt, choices).with_context(ctx)?;
                let right = &r.scored[*answer];
                let truncated = r.scored.iter().map(|s| s.truncated).max().unwrap_or(0);
                t.push(
                    item,
                    &model_name,
                    "multiple_choice",
                    right.prompt_tokens,
                    truncated,
                );
                t.logprob.push(Some(right.logprob));
                t.n_tokens.push(Some(right.n_tokens as u64));
                t.greedy.push(Some(right.greedy));
                t.choice_logprobs
                    .push(Some(r.scored.iter().map(|s| s.logprob).collect()));
                t.answer.push(Some(*answer as u64));
                t.predicted.push(Some(r.predicted as u64));
                t.predicted_norm.push(Some(r.predicted_norm as u64));
                t.acc.push(Some(r.predicted == *answer));
                t.acc_norm.push(Some(r.predicted_norm == *answer));
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let acc = t.acc.iter().filter(|x| **x == Some(true)).count();
    let truncated = t.truncated.iter().filter(|x| x.unwrap_or(0) > 0).count();
    let mean_lp = t.logprob.iter().flatten().sum::<f64>() / n as f64;
    let table = Table::new()
        .column("item_id", Column::Str(t.id))
        .column("task", Column::Str(t.task))
        .column("kind", Column::Str(t.kind))
        .column("model", Column::Str(t.model))
        .column("prompt_tokens", Column::U64(t.prompt_tokens))
        .column("truncated_tokens", Column::U64(t.truncated))
        .column("logprob", Column::F64(t.logprob))
        .column("n_tokens", Column::U64(t.n_tokens))
        .column("greedy_match", Column::Bool(t.greedy))
        .column("choice_logprobs", Column::F64List(t.choice_logprobs))
        .column("answer", Column::U64(t.answer))
        .column("predicted", Column::U64(t.predicted))
        .column("predicted_norm", Column::U64(t.predicted_norm))
        .column("acc", Column::Bool(t.acc))
        .column("acc_norm", Column::Bool(t.acc_norm))
        .column("concepts", Column::StrList(t.concepts))
        .with_schema(familiar::schema::table("zero_shot")?);
    table.write(Format::Parquet, Some(&a.out))?;
    println!(
        "scored {n} items of {}: accuracy {:.4} ({acc}/{n}), mean log-probability {mean_lp:.4}; {truncated} truncated to fit the context",
        a.items.display(),
        acc as f64 / n as f64
    );
    println!("wrote {}", a.out.display());
    Ok(0)
}

#[derive(Default)]
struct Rows {
    id: Vec<Option<String>>,
    task: Vec<Option<String>>,
    kind: Vec<Option<String>>,
    model: Vec<Option<String>>,
    prompt_tokens: Vec<Option<u64>>,
    truncated: Vec<Option<u64>>,
    logprob: Vec<Option<f64>>,
    n_tokens: Vec<Option<u64>>,
    greedy: Vec<Option<bool>>,
    choice_logprobs: Vec<Option<Vec<f64>>>,
    answer: Vec<Option<u64>>,
    predicted: Vec<Option<u64>>,
    predicted_norm: Vec<Option<u64>>,
    acc: Vec<Option<bool>>,
    acc_norm: Vec<Option<bool>>,
    concepts: Vec<Vec<String>>,
}

impl Rows {
    fn push(
        &mut self,
        item: &familiar_query::measure::items::Item,
        model: &str,
        kind: &str,
        prompt_tokens: usize,
        truncated: usize,
    ) {
        self.id.push(Some(item.id.clone()));
        self.task.push(Some(item.task.clone()));
        self.kind.push(Some(kind.to_string()));
        self.model.push(Some(model.to_string()));
        self.prompt_tokens.push(Some(prompt_tokens as u64));
        self.truncated.push(Some(truncated as u64));
        self.concepts.push(item.concepts.clone());
    }
}

pub fn run_keyword(a: KeywordArgs) -> Result<i32> {
    familiar_query::measure::prepare_cpu();
    let lm = a.model.load()?;
    let file = std::fs::File::open(&a.items)
        .with_context(|| format!("cannot open {}", a.items.display()))?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read", a.items.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct K {
            id: Option<serde_json::Value>,
            context: String,
            keyword: String,
        }
        let k: K = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: expected {{\"id\", \"context\", \"keyword\"}}",
                a.items.display(),
                i + 1
            )
        })?;
        let id = match k.id {
            Some(serde_json::Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => format!("{}", i + 1),
        };
        if k.keyword.is_empty() {
            bail!("{}:{}: empty keyword", a.items.display(), i + 1);
        }
        items.push((i + 1, id, k.context, k.keyword));
    }
    if items.is_empty() {
        bail!("{}: no items", a.items.display());
    }
    let model_name = a.model.model.display().to_string();
    let progress = familiar_query::output::progress_bar(!a.quiet, items.len() as u64, "items")?;
    let (mut ids, mut keywords, mut context_tokens, mut truncated) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut lps, mut probs, mut ns, mut toks, mut greedy) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (line, id, context, keyword) in &items {
        let s = lm
            .score(context, keyword)
            .with_context(|| format!("{}:{line}: item {id}", a.items.display()))?;
        ids.push(Some(id.clone()));
        keywords.push(Some(keyword.clone()));
        context_tokens.push(Some(s.prompt_tokens as u64));
        truncated.push(Some(s.truncated as u64));
        lps.push(Some(s.logprob));
        probs.push(Some(s.logprob.exp()));
        ns.push(Some(s.n_tokens as u64));
        toks.push(Some(s.token_logprobs.clone()));
        greedy.push(Some(s.greedy));
        progress.inc(1);
    }
    progress.finish_and_clear();
    let n = items.len();
    let table = Table::new()
        .column("item_id", Column::Str(ids))
        .column("model", Column::Str(vec![Some(model_name); n]))
        .column("keyword", Column::Str(keywords))
        .column("context_tokens", Column::U64(context_tokens))
        .column("truncated_tokens", Column::U64(truncated))
        .column("logprob", Column::F64(lps))
        .column("prob", Column::F64(probs))
        .column("n_tokens", Column::U64(ns))
        .column("token_logprobs", Column::F64List(toks))
        .column("greedy_match", Column::Bool(greedy))
        .with_schema(familiar::schema::table("keyword_probe")?);
    table.write(Format::Parquet, Some(&a.out))?;
    println!("scored {n} keywords; wrote {}", a.out.display());
    Ok(0)
}

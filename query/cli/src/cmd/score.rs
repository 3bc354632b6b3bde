//! `familiar score` and `familiar keyword-prob`.

use std::path::PathBuf;

use anyhow::Result;
use familiar::items::{read_items, ItemFormat};
use familiar::table::Format;
use familiar_models::measure::score::zero_shot;

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
    familiar_models::measure::prepare_cpu();
    let lm = a.model.load()?;
    let items = read_items(&a.items, a.format, a.limit)?;
    let model_name = a.model.model.display().to_string();
    let progress = crate::progress::progress_bar(!a.quiet, items.len() as u64, "items")?;
    let n = items.len();
    let source = a.items.display().to_string();
    let (rows, summary) = zero_shot(&lm, &items, &model_name, &source, &|| progress.inc(1))?;
    progress.finish_and_clear();
    let (acc, truncated, mean_lp) = (summary.correct, summary.truncated, summary.mean_logprob);
    familiar::table::from_rows(&rows)?.write(Format::Parquet, Some(&a.out))?;
    println!(
        "scored {n} items of {}: accuracy {:.4} ({acc}/{n}), mean log-probability {mean_lp:.4}; {truncated} truncated to fit the context",
        a.items.display(),
        acc as f64 / n as f64
    );
    println!("wrote {}", a.out.display());
    Ok(0)
}

pub fn run_keyword(a: KeywordArgs) -> Result<i32> {
    use familiar_models::measure::score::{keyword_probe, read_keyword_items};
    familiar_models::measure::prepare_cpu();
    let lm = a.model.load()?;
    let items = read_keyword_items(&a.items)?;
    let model_name = a.model.model.display().to_string();
    let progress = crate::progress::progress_bar(!a.quiet, items.len() as u64, "items")?;
    let rows = keyword_probe(&lm, &model_name, &a.items, &items, &|| progress.inc(1))?;
    progress.finish_and_clear();
    familiar::table::from_rows(&rows)?.write(Format::Parquet, Some(&a.out))?;
    println!("scored {} keywords; wrote {}", rows.len(), a.out.display());
    Ok(0)
}

//! `familiar contamination`: how much of each evaluation item occurs verbatim in the corpus.

use std::path::PathBuf;

use anyhow::{Context, Result};
use familiar::items::{read_items, ItemFormat};
use familiar::table::Format;
use familiar_query::contamination::{contamination, ContaminationEvent, ContaminationOptions};

use super::TokenList;

/// Arguments of `familiar contamination`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The index directory.
    index: PathBuf,
    /// Items, as `familiar score` reads them: JSONL ({"id", "prompt", "completion"} or
    /// {"id", "prompt", "choices", "answer"}), or a benchmark file in the format given by --format.
    #[arg(long)]
    items: PathBuf,
    /// Format of --items.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: ItemFormat,
    /// Only the first N items.
    #[arg(long)]
    limit: Option<usize>,
    /// The n-gram sizes whose presence is measured, comma-separated.
    #[arg(long, default_value = "8,13")]
    ngrams: TokenList,
    /// Documents listed per field (the first that hold it whole).
    #[arg(long, default_value_t = 5)]
    documents: usize,
    /// The Parquet file to write (the contamination table of schemas/).
    #[arg(long)]
    out: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<i32> {
    let index = super::open_index(&a.index, None)?;
    let items = read_items(&a.items, a.format, a.limit)?;
    let options = ContaminationOptions {
        ngram_sizes: a.ngrams.0.iter().map(|&n| n as usize).collect(),
        documents: a.documents,
    };
    let bar = crate::progress::progress_bar(!a.quiet, 0, "distinct fields")?;
    let rows = contamination(&index, &items, &options, &|e| match e {
        ContaminationEvent::Distinct(n) => bar.set_length(n),
        ContaminationEvent::Measured => bar.inc(1),
    })
    .with_context(|| format!("measuring the items of {}", a.items.display()))?;
    bar.finish_and_clear();
    familiar::table::from_rows(&rows)?.write(Format::Parquet, Some(&a.out))?;
    let whole = rows.iter().filter(|r| r.documents > 0).count();
    let items_touched = {
        let mut ids: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| r.documents > 0)
            .map(|r| (r.task.as_str(), r.item_id.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    println!(
        "{} items ({} fields) of {}: {whole} fields of {items_touched} items occur whole in the index; wrote {}",
        items.len(),
        rows.len(),
        a.items.display(),
        a.out.display()
    );
    Ok(0)
}

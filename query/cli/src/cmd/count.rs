//! `familiar count`.

use std::path::PathBuf;

use anyhow::Result;
use familiar::table::Format;
use familiar_query::ngram;

use super::QueryArgs;

/// Arguments of `familiar count`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    query: QueryArgs,
    /// Print a JSON object (query, tokens, count) instead of the bare count.
    #[arg(long)]
    json: bool,
    /// Answer every line of FILE: `{"text": …}` or `{"tokens": [...]}`, one JSON object out per line,
    /// in order.
    #[arg(long, conflicts_with_all = ["text", "tokens"])]
    batch: Option<PathBuf>,
    /// With --batch: output format (jsonl, the default; table; parquet, with --output; the
    /// ngram_counts table of schemas/).
    #[arg(long, value_enum, requires = "batch")]
    format: Option<familiar::table::Format>,
    /// With --batch: write to this file instead of stdout.
    #[arg(long, short, requires = "batch")]
    output: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<i32> {
    let index = a.query.open()?;
    if let Some(path) = &a.batch {
        let rows = ngram::count_batch(&index, path, ngram::read_batch(path)?)?;
        let table = familiar::table::from_rows(&rows)?;
        super::write_table(
            &table,
            a.format.unwrap_or(Format::Jsonl),
            a.output.as_deref(),
        )?;
        return Ok(0);
    }
    let ids = a.query.ids(&index, false)?;
    let count = ngram::count(&index, &ids)?;
    if a.json {
        let mut obj = serde_json::json!({"tokens": ids, "count": count});
        if let Some(t) = &a.query.text {
            obj["text"] = t.clone().into();
        }
        println!("{obj}");
    } else {
        println!("{count}");
    }
    Ok(0)
}

//! `familiar count`.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use familiar::table::{Column, Format, Table};
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
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let (mut texts, mut all_ids, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line =
                line.with_context(|| format!("{}:{}: cannot read line", path.display(), i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
            let (ids, text) = match (v.get("tokens"), v.get("text")) {
                (Some(t), _) => {
                    let ids: Vec<u32> = serde_json::from_value(t.clone()).with_context(|| {
                        format!(
                            "{}:{}: `tokens` must be an array of token ids",
                            path.display(),
                            i + 1
                        )
                    })?;
                    (ids, None)
                }
                (None, Some(serde_json::Value::String(s))) => {
                    (index.tokenizer()?.encode(s)?, Some(s.clone()))
                }
                _ => bail!(
                    "{}:{}: expected {{\"text\": \"…\"}} or {{\"tokens\": [...]}}",
                    path.display(),
                    i + 1
                ),
            };
            let count = ngram::count(&index, &ids)
                .with_context(|| format!("{}:{}", path.display(), i + 1))?;
            texts.push(text);
            all_ids.push(ids);
            counts.push(Some(count));
        }
        let table = Table::new()
            .column("text", Column::Str(texts))
            .column("tokens", Column::Ids(all_ids))
            .column("count", Column::U64(counts))
            .with_schema(familiar::schema::table("ngram_counts")?);
        table.write(a.format.unwrap_or(Format::Jsonl), a.output.as_deref())?;
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

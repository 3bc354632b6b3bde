//! `familiar docs`.

use anyhow::Result;
use familiar_query::docs;

/// Arguments of `familiar docs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The index directory.
    index: std::path::PathBuf,
    /// Global document ids.
    #[arg(required = true)]
    doc_ids: Vec<u64>,
    /// Print only tokens `from..to` of each document (a window), by token offset (TO
    /// exclusive; clamped to the document's end).
    #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
    window: Option<Vec<u64>>,
    /// Print JSON lines (record + text).
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<i32> {
    if let Some(w) = &a.window {
        if w[0] > w[1] {
            anyhow::bail!(
                "--window {} {}: FROM must not be after TO (token offsets within the document, TO exclusive)",
                w[0],
                w[1]
            );
        }
    }
    let index = familiar::index::Index::open(&a.index)?;
    for &id in &a.doc_ids {
        let rec = docs::record(&index, id)?;
        let (from, to) = match &a.window {
            Some(w) => (w[0], w[1]),
            None => (0, u64::MAX),
        };
        let ids = index.doc_tokens(id, from, to)?;
        let text = index.tokenizer()?.decode(&ids)?;
        if a.json {
            let mut v = serde_json::to_value(&rec)?;
            v["text"] = text.into();
            println!("{v}");
        } else {
            println!(
                "== document {} ({}, source {}, {} tokens, from {}) {}",
                rec.doc_id,
                rec.external_id,
                rec.source.as_deref().unwrap_or("-"),
                rec.token_count,
                rec.input_file,
                rec.metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            println!("{text}");
        }
    }
    Ok(0)
}

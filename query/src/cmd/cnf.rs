//! `familiar cnf`.

use std::path::PathBuf;

use anyhow::Result;
use familiar_query::ngram::{self, Cnf, CnfOptions};

/// Arguments of `familiar cnf`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The index directory.
    index: PathBuf,
    /// A clause: alternatives separated by `|` (e.g. --clause " cat| cats" --clause " dog").
    /// Documents must match every clause. Alternatives are text, tokenized with the index's tokenizer.
    #[arg(long = "clause", required = true)]
    clauses: Vec<String>,
    /// Treat each alternative as comma-separated token ids instead of text.
    #[arg(long)]
    ids: bool,
    /// Enumerate at most this many occurrences of the rarest clause per shard; above it, sample
    /// that many and flag the result as approximate. Default: never sample.
    #[arg(long)]
    max_occurrences: Option<u64>,
    /// Matching document ids to list.
    #[arg(long, default_value_t = 10)]
    list: usize,
    /// Tokenizer override (must have the index's hash).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<i32> {
    let index = super::open_index(&a.index, a.tokenizer.as_deref())?;
    let mut clauses = Vec::new();
    for c in &a.clauses {
        let mut alts = Vec::new();
        for alt in c.split('|') {
            if a.ids {
                alts.push(
                    alt.parse::<super::TokenList>()
                        .map_err(anyhow::Error::msg)?
                        .0,
                );
            } else {
                alts.push(index.tokenizer()?.encode(alt)?);
            }
        }
        clauses.push(alts);
    }
    let r = ngram::cnf(
        &index,
        &Cnf { clauses },
        &CnfOptions {
            max_occurrences: a.max_occurrences,
            list_documents: a.list,
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "documents:   {}{}",
            r.documents,
            if r.approximate {
                "  (approximate: occurrences were sampled)"
            } else {
                ""
            }
        );
        println!("occurrences: {} in matching documents", r.occurrences);
        for (i, c) in a.clauses.iter().enumerate() {
            println!(
                "  clause {} {c:?}: {} in matching documents, {} in the index",
                i + 1,
                r.clause_occurrences[i],
                r.clause_totals[i]
            );
        }
        println!("first documents: {:?}", r.doc_ids);
    }
    Ok(0)
}

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
    /// Enumerate about this many occurrences of the rarest clause per shard (at least 1); above
    /// it, sample them (each kept with the same probability) and report the documents found (an
    /// exact lower bound) with an unbiased estimate of the total and its 95% interval. Default:
    /// never sample.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_occurrences: Option<u64>,
    /// Seed of the sampling (with --max-occurrences).
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
            seed: a.seed,
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        match &r.estimate {
            Some(e) => {
                println!(
                    "documents:   ≈ {:.0} (estimate from a sample of occurrences; 95% interval {:.0}–{:.0})",
                    e.documents, e.documents_ci95[0], e.documents_ci95[1]
                );
                println!(
                    "             {} found in the sample (an exact lower bound)",
                    r.documents
                );
                println!(
                    "occurrences: ≈ {:.0} in matching documents ({} in the documents found)",
                    e.occurrences, r.occurrences
                );
            }
            None => {
                println!("documents:   {}", r.documents);
                println!("occurrences: {} in matching documents", r.occurrences);
            }
        }
        for (i, c) in a.clauses.iter().enumerate() {
            match &r.estimate {
                Some(e) => println!(
                    "  clause {} {c:?}: ≈ {:.0} in matching documents ({} in those found), {} in the index",
                    i + 1,
                    e.clause_occurrences[i],
                    r.clause_occurrences[i],
                    r.clause_totals[i]
                ),
                None => println!(
                    "  clause {} {c:?}: {} in matching documents, {} in the index",
                    i + 1,
                    r.clause_occurrences[i],
                    r.clause_totals[i]
                ),
            }
        }
        println!("first documents: {:?}", r.doc_ids);
    }
    Ok(0)
}

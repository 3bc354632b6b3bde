//! `familiar ngrams top`: the most frequent n-grams of an index.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use anyhow::{Context, Result};
use familiar_query::top::{top_ngrams, TopOptions, MAX_N};

use super::OutputArgs;

/// Statistics of the index's n-grams.
#[derive(Debug, clap::Subcommand)]
pub enum NgramsCommand {
    /// The exact K most frequent n-grams of each length, from the suffix arrays (ties by token
    /// ids), optionally counting only the documents of one source.
    Top(TopArgs),
}

/// Arguments of `familiar ngrams top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The index directory.
    index: PathBuf,
    /// The n-gram length N, or lengths A..=B (each ranked on its own).
    #[arg(long, value_parser = parse_lengths)]
    n: RangeInclusive<usize>,
    /// How many n-grams of each length.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Count only occurrences in documents of this source (the documents table's `source`).
    #[arg(long)]
    source: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

/// `N` or `A..=B`, lengths from 1 to [`MAX_N`].
fn parse_lengths(s: &str) -> std::result::Result<RangeInclusive<usize>, String> {
    let num = |x: &str| -> std::result::Result<usize, String> {
        match x.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_N).contains(&n) => Ok(n),
            _ => Err(format!(
                "{x:?} is not an n-gram length (expected 1 to {MAX_N}; N or A..=B)"
            )),
        }
    };
    let (a, b) = match s.split_once("..=") {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if a > b {
        return Err(format!("{s:?}: the first length is larger than the last"));
    }
    Ok(a..=b)
}

/// Runs `familiar ngrams`.
pub fn run(c: NgramsCommand) -> Result<i32> {
    match c {
        NgramsCommand::Top(a) => top(a),
    }
}

fn top(a: TopArgs) -> Result<i32> {
    let index = super::open_index(&a.index, None)?;
    let options = TopOptions {
        lengths: a.n.clone(),
        k: a.k,
        source: a.source.clone(),
    };
    let rows = top_ngrams(&index, &options)
        .with_context(|| format!("ranking the n-grams of {}", a.index.display()))?;
    if let Some(s) = &a.source {
        if rows.is_empty() {
            eprintln!("no document of source {s:?} holds an n-gram of these lengths");
        }
    }
    let table = familiar::table::from_rows(&rows)?;
    super::write_table(&table, a.out.format, a.out.output.as_deref())?;
    Ok(0)
}

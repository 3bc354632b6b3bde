//! `familiar ntd`.

use anyhow::Result;
use familiar::index::Index;
use familiar::table::{Column, Table};
use familiar_query::ngram;

use super::{token_strings, OutputArgs, QueryArgs};

/// Arguments of `familiar ntd`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The prefix (text or --tokens); none gives the unigram distribution.
    #[command(flatten)]
    pub query: QueryArgs,
    /// Show the K most frequent next tokens (0 for all).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    #[command(flatten)]
    pub out: OutputArgs,
}

pub fn run(a: Args) -> Result<i32> {
    let index = a.query.open()?;
    let ids = a.query.ids(&index, true)?;
    let d = ngram::next_tokens(&index, &ids)?;
    eprintln!(
        "prefix occurs {} times; {} distinct next tokens; {} at the end of a document",
        d.prefix_count,
        d.next.len(),
        d.end_of_document
    );
    let table = distribution_table(&index, &d, a.top)?;
    super::write_table(&table, a.out.format, a.out.output.as_deref())?;
    Ok(0)
}

/// The `top` most frequent next tokens of `d` (all with 0) as a table: id, token text, count and
/// probability (of the prefix's occurrences).
pub fn distribution_table(index: &Index, d: &ngram::NextTokens, top: usize) -> Result<Table> {
    let shown: &[(u32, u64)] = if top == 0 {
        &d.next
    } else {
        &d.next[..top.min(d.next.len())]
    };
    let ids_shown: Vec<u32> = shown.iter().map(|p| p.0).collect();
    let strings = token_strings(index, &ids_shown)?;
    let denom = d.prefix_count.max(1) as f64;
    Ok(Table::new()
        .column(
            "token_id",
            Column::U64(shown.iter().map(|p| Some(u64::from(p.0))).collect()),
        )
        .column(
            "token",
            Column::Str(strings.into_iter().map(Some).collect()),
        )
        .column(
            "count",
            Column::U64(shown.iter().map(|p| Some(p.1)).collect()),
        )
        .column(
            "probability",
            Column::F64(shown.iter().map(|p| Some(p.1 as f64 / denom)).collect()),
        ))
}

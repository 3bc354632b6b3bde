//! `familiar locate`.

use anyhow::Result;
use familiar::table::{Column, Table};
use familiar_query::ngram;

use super::{OutputArgs, QueryArgs};

/// Arguments of `familiar locate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    query: QueryArgs,
    /// Occurrences to return.
    #[arg(long, default_value_t = 10)]
    limit: u64,
    /// Occurrences to skip (for paging).
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Tokens of context to show on each side of a hit (0 for none).
    #[arg(long, default_value_t = 8)]
    context: u64,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> Result<i32> {
    let index = a.query.open()?;
    let ids = a.query.ids(&index, false)?;
    let page = ngram::locate(&index, &ids, a.offset, a.limit)?;
    eprintln!(
        "{} occurrences; showing {} from offset {} (shards in order, suffix-array order within a shard)",
        page.total,
        page.hits.len(),
        a.offset
    );
    let mut snippets = Vec::new();
    if a.context > 0 {
        for h in &page.hits {
            let (l, m, r) = familiar_query::docs::window(
                &index,
                h.doc_id,
                h.offset_in_doc,
                ids.len() as u64,
                a.context,
                a.context,
            )?;
            snippets.push(Some(format!("{l}[{m}]{r}")));
        }
    }
    let mut table = Table::new()
        .column(
            "doc_id",
            Column::U64(page.hits.iter().map(|h| Some(h.doc_id)).collect()),
        )
        .column(
            "shard",
            Column::U64(page.hits.iter().map(|h| Some(u64::from(h.shard))).collect()),
        )
        .column(
            "position",
            Column::U64(page.hits.iter().map(|h| Some(h.position)).collect()),
        )
        .column(
            "offset_in_doc",
            Column::U64(page.hits.iter().map(|h| Some(h.offset_in_doc)).collect()),
        );
    if a.context > 0 {
        table = table.column("context", Column::Str(snippets));
    }
    super::write_table(&table, a.out.format, a.out.output.as_deref())?;
    Ok(0)
}

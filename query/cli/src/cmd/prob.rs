//! `familiar prob`.

use anyhow::{bail, Result};
use familiar_query::ngram;

use super::{QueryArgs, TokenList};

/// Arguments of `familiar prob`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The prefix (text or --tokens).
    #[command(flatten)]
    query: QueryArgs,
    /// The next token as text (must be exactly one token, e.g. " cat").
    #[arg(long)]
    next: Option<String>,
    /// The next token as an id.
    #[arg(long, conflicts_with = "next")]
    next_id: Option<TokenList>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<i32> {
    let index = a.query.open()?;
    let prefix = a.query.ids(&index, true)?;
    let next = match (&a.next, &a.next_id) {
        (_, Some(t)) if t.0.len() == 1 => t.0[0],
        (Some(s), None) => super::one_token(&index, s)?,
        _ => bail!("give the next token with --next TEXT or --next-id ID"),
    };
    let p = ngram::probability(&index, &prefix, next)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"prefix": prefix, "next": next, "prefix_count": p.prefix_count, "count": p.count, "probability": p.probability})
        );
    } else {
        match p.probability {
            Some(x) => println!("{x} ({} / {})", p.count, p.prefix_count),
            None => println!("undefined: the prefix never occurs"),
        }
    }
    Ok(0)
}

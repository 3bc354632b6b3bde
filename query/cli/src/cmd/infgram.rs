//! `familiar infgram prob | ntd`: the ∞-gram language model (Liu et al. 2024).

use anyhow::{bail, Result};
use familiar::index::Index;
use familiar::table::Column;
use familiar_query::infgram;

use super::{QueryArgs, TokenList};

/// The ∞-gram: predictions from the longest suffix of the prompt that occurs in the index.
#[derive(Debug, clap::Subcommand)]
pub enum InfgramCommand {
    /// P∞(next | prompt) = count(suffix next) / count(suffix), the suffix being the longest
    /// suffix of the prompt that occurs.
    Prob(ProbArgs),
    /// The exact distribution of the token after the longest suffix of the prompt that occurs.
    Ntd(super::ntd::Args),
}

/// Arguments of `familiar infgram prob`.
#[derive(Debug, clap::Args)]
pub struct ProbArgs {
    /// The prompt (text or --tokens).
    #[command(flatten)]
    query: QueryArgs,
    /// The next token: an id when the prompt is given with --tokens, else text that must be
    /// exactly one token (e.g. " cat").
    #[arg(long)]
    next: Option<String>,
    /// The next token as an id (with a prompt given as text, too).
    #[arg(long, conflicts_with = "next")]
    next_id: Option<TokenList>,
    /// Print JSON (infini-gram's fields: prob, suffix_len, prompt_cnt, cont_cnt).
    #[arg(long)]
    json: bool,
}

/// Runs `familiar infgram`.
pub fn run(c: InfgramCommand) -> Result<i32> {
    match c {
        InfgramCommand::Prob(a) => prob(a),
        InfgramCommand::Ntd(a) => ntd(a),
    }
}

fn next_token(index: &Index, a: &ProbArgs) -> Result<u32> {
    match (&a.next, &a.next_id) {
        (_, Some(t)) if t.0.len() == 1 => Ok(t.0[0]),
        (_, Some(t)) => bail!("--next-id takes one token id, not {}", t.0.len()),
        (Some(s), None) if a.query.tokens.is_some() => s.trim().parse::<u32>().map_err(|_| {
            anyhow::anyhow!("--next {s:?}: with a prompt of --tokens, the next token is an id")
        }),
        (Some(s), None) => super::one_token(index, s),
        (None, None) => bail!("give the next token with --next or --next-id"),
    }
}

fn prob(a: ProbArgs) -> Result<i32> {
    let index = a.query.open()?;
    let prompt = a.query.ids(&index, true)?;
    let next = next_token(&index, &a)?;
    let r = infgram::infgram_prob(&index, &prompt, next)?;
    let p = &r.probability;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "prompt": prompt,
                "next": next,
                "suffix_len": r.suffix_len,
                "prompt_cnt": p.prefix_count,
                "cont_cnt": p.count,
                "prob": p.probability,
            })
        );
    } else {
        match p.probability {
            Some(x) => println!(
                "{x} ({} / {}, from the last {} of {} prompt tokens)",
                p.count,
                p.prefix_count,
                r.suffix_len,
                prompt.len()
            ),
            None => println!("undefined: the index holds no tokens"),
        }
    }
    Ok(0)
}

fn ntd(a: super::ntd::Args) -> Result<i32> {
    let index = a.query.open()?;
    let prompt = a.query.ids(&index, true)?;
    let r = infgram::infgram_ntd(&index, &prompt)?;
    eprintln!(
        "longest suffix that occurs: the last {} of {} prompt tokens, {} times; {} distinct next \
         tokens; {} at the end of a document",
        r.suffix_len,
        prompt.len(),
        r.next.prefix_count,
        r.next.next.len(),
        r.next.end_of_document
    );
    let table = super::ntd::distribution_table(&index, &r.next, a.top)?;
    let rows = table.rows();
    let table = table.column(
        "suffix_len",
        Column::U64(vec![Some(r.suffix_len as u64); rows]),
    );
    super::write_table(&table, a.out.format, a.out.output.as_deref())?;
    Ok(0)
}

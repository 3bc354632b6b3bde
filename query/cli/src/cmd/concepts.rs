//! `familiar concepts count` and `familiar concepts lookup`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use familiar_query::concepts::count::{CountOptions, Counter, Method};
use familiar_query::concepts::lexicon::{read_pairs, Lexicon};
use familiar_query::concepts::lookup::{lookup, Mode};
use familiar_query::concepts::tables;

use super::{open_index, OutputArgs};

/// Concept frequencies from a lexicon.
#[derive(Debug, clap::Subcommand)]
pub enum ConceptsCommand {
    /// Count every concept of a lexicon (and co-occurrence of concept pairs); writes
    /// concepts.parquet, concept_frequency.parquet, cooccurrence.parquet and lexicon.fst into DIR.
    Count(CountArgs),
    /// Find the forms of a word or phrase that occur in the index: exact, by prefix, or fuzzy.
    Lookup(LookupArgs),
}

/// Arguments of `familiar concepts count`.
#[derive(Debug, clap::Args)]
pub struct CountArgs {
    /// The index directory.
    index: PathBuf,
    /// The lexicon: .csv/.tsv (columns concept, aliases separated by |, group) or .jsonl
    /// ({"concept", "aliases": [...], "group"}).
    lexicon: PathBuf,
    /// Directory to write the tables into (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// Concept pairs for co-occurrence: .csv/.tsv with columns concept_a, concept_b, or .jsonl
    /// with those keys; each side is a concept name or any alias of the lexicon.
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Methods to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    method: Vec<Method>,
    /// Worker threads (default: all cores; at most 4096).
    #[arg(long, value_parser = super::parse_threads)]
    threads: Option<usize>,
    /// Memory in MiB for keeping paired concepts' document sets between the passes.
    #[arg(long, default_value_t = 2048)]
    pair_cache_mib: usize,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `familiar concepts lookup`.
#[derive(Debug, clap::Args)]
pub struct LookupArgs {
    /// The index directory.
    index: PathBuf,
    /// A word or phrase; the match mode applies to its last word.
    form: String,
    /// Words starting with the last word.
    #[arg(long, conflicts_with = "fuzzy")]
    prefix: bool,
    /// Words within this Levenshtein distance of the last word.
    #[arg(long, value_name = "N")]
    fuzzy: Option<u32>,
    /// Also search this lexicon's forms (and name the concept of each match).
    #[arg(long)]
    lexicon: Option<PathBuf>,
    /// At most this many matches from each source, most frequent first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(c: ConceptsCommand) -> Result<i32> {
    match c {
        ConceptsCommand::Count(a) => run_count(a),
        ConceptsCommand::Lookup(a) => run_lookup(a),
    }
}

fn run_count(a: CountArgs) -> Result<i32> {
    let started = Instant::now();
    let index = open_index(&a.index, None)?;
    let lexicon = Lexicon::read(&a.lexicon)?;
    let pairs = match &a.pairs {
        Some(p) => read_pairs(p, &lexicon)?,
        None => Vec::new(),
    };
    let methods = if a.method.is_empty() {
        Method::ALL.to_vec()
    } else {
        a.method.clone()
    };
    let options = CountOptions {
        methods: methods.clone(),
        pair_cache_bytes: a.pair_cache_mib << 20,
        cancel: None,
    };
    let on_progress = crate::progress::count_bars(!a.quiet);
    let work = || -> Result<_> {
        let counter = Counter::for_lexicon(&index, &methods, &lexicon)?;
        Ok(counter.run_with_progress(&lexicon, &pairs, &options, &on_progress)?)
    };
    let counts = match a.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .context("cannot start the worker threads")?
            .install(work)?,
        None => work()?,
    };
    let written = tables::write_all(&a.out, &lexicon, &counts)
        .with_context(|| format!("writing the tables into {}", a.out.display()))?;
    let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
    println!(
        "counted {} concepts ({} surface forms) and {} pairs in {} ({} documents, {} tokens) by {} in {:.2}s",
        lexicon.concepts.len(),
        lexicon.concepts.iter().map(|c| c.forms.len()).sum::<usize>(),
        pairs.len(),
        a.index.display(),
        counts.corpus_documents,
        counts.corpus_tokens,
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(0)
}

fn run_lookup(a: LookupArgs) -> Result<i32> {
    let index = open_index(&a.index, None)?;
    let lexicon = match &a.lexicon {
        Some(p) => Some(Lexicon::read(p)?),
        None => None,
    };
    let mode = match (a.prefix, a.fuzzy) {
        (true, _) => Mode::Prefix,
        (false, Some(n)) => Mode::Fuzzy(n),
        (false, None) => Mode::Exact,
    };
    let found = lookup(&index, &a.form, mode, lexicon.as_ref(), a.limit)?;
    let table = familiar::table::from_rows(&found)?;
    super::write_table(&table, a.output.format, a.output.output.as_deref())?;
    if found.is_empty() {
        // Exit code 1 with a reason, like grep's "nothing matched" (the table above is empty).
        let how = match mode {
            Mode::Exact => "exactly".to_string(),
            Mode::Prefix => "as a prefix".to_string(),
            Mode::Fuzzy(n) => format!("within edit distance {n}"),
        };
        eprintln!(
            "no word of the index{} matches `{}` {how} (try --prefix or --fuzzy N)",
            if lexicon.is_some() {
                " or the lexicon"
            } else {
                ""
            },
            a.form
        );
        return Ok(1);
    }
    Ok(0)
}

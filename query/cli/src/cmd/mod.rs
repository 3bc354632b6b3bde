//! The subcommands, one module each, each with a `run`.

mod attribute;
mod cnf;
mod concepts;
mod contamination;
mod count;
mod demo;
mod density;
mod docs;
mod duplicates;
mod fixtures;
mod import;
mod index;
mod infgram;
mod locate;
mod ngrams;
mod ntd;
mod prime;
mod prob;
#[cfg(test)]
mod readme_spellings;
mod report;
mod score;
mod serve;
mod sql;
mod trace;
mod train;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use familiar::index::Index;

/// familiar: exact n-gram statistics of training corpora.
#[derive(Debug, Parser)]
#[command(name = "familiar", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, describe and verify indexes.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Exact number of occurrences of a token sequence.
    Count(count::Args),
    /// Occurrences of a token sequence: documents and positions, paged.
    Locate(locate::Args),
    /// Documents by id: table row and text.
    Docs(docs::Args),
    /// Exact next-token distribution after a sequence.
    Ntd(ntd::Args),
    /// P(next token | prefix) from exact counts.
    Prob(prob::Args),
    /// Documents matching (a OR b) AND (c) … of n-grams, with exact counts.
    Cnf(cnf::Args),
    /// The ∞-gram (Liu et al. 2024): P(next | the longest suffix of the prompt that occurs), or
    /// the exact next-token distribution after it.
    #[command(subcommand)]
    Infgram(infgram::InfgramCommand),
    /// Statistics of the index's n-grams: the most frequent of each length.
    #[command(subcommand)]
    Ngrams(ngrams::NgramsCommand),
    /// The maximal spans of a text that occur verbatim in the index (OLMoTrace), with the
    /// documents that contain them.
    Trace(trace::Args),
    /// Serve indexes over HTTP: infini-gram's and OLMoTrace's APIs, the native /v1/ API and a
    /// web page to explore them, until SIGTERM or Ctrl-C.
    Serve(serve::Args),
    /// Contamination of evaluation items: per item and field, the longest span that occurs, the
    /// n-grams that occur, and the documents that hold it whole, to Parquet.
    Contamination(contamination::Args),
    /// Exact duplicates (Lee et al. 2022's ExactSubstr): every substring of at least --min-len
    /// tokens that occurs twice or more; per document the duplicated fraction, per cluster the
    /// text and its documents; optionally a copy of the corpus without them.
    Duplicates(duplicates::Args),
    /// Concept frequencies from a lexicon: counts by several methods, co-occurrence, lookups.
    #[command(subcommand)]
    Concepts(concepts::ConceptsCommand),
    /// Zero-shot scores of a model on evaluation items (log-probabilities, accuracy) to Parquet.
    Score(score::ScoreArgs),
    /// log P(keyword | context) of a model for each item, to Parquet.
    KeywordProb(score::KeywordArgs),
    /// Activation density (top-k% energy, Hoyer sparsity, effective rank, active MLP units) of a
    /// model's hidden states on probe texts, per layer, to Parquet.
    Density(density::Args),
    /// Train a small GPT-2-style model on an index's tokens (Hugging Face checkpoints, resumable).
    Train(train::Args),
    /// Priming (Sun et al. 2025): copies of a model learn each sample; the keyword's probability
    /// before and after, on its own prefix and on its theme's prefixes, to Parquet.
    Prime(prime::Args),
    /// Gradient-similarity attribution: gradient stores and influence scores.
    #[command(subcommand)]
    Attribute(attribute::AttributeCommand),
    /// Results made elsewhere into familiar's tables (zero-shot scores, lm-evaluation-harness logs).
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Reports of the published analyses (Markdown, HTML, SVG).
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// SQL (DataFusion) over tables: every Parquet table of a directory, an index's documents.
    Sql(sql::Args),
    /// Regenerate the fixture corpus, tokenizer and golden index.
    Fixtures(fixtures::Args),
    /// Build the index of the fixture corpus and run example queries on it.
    Demo(demo::Args),
}

/// Runs a command; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Index(c) => index::run(c),
        Command::Count(a) => count::run(a),
        Command::Locate(a) => locate::run(a),
        Command::Docs(a) => docs::run(a),
        Command::Ntd(a) => ntd::run(a),
        Command::Prob(a) => prob::run(a),
        Command::Cnf(a) => cnf::run(a),
        Command::Infgram(c) => infgram::run(c),
        Command::Ngrams(c) => ngrams::run(c),
        Command::Trace(a) => trace::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Contamination(a) => contamination::run(a),
        Command::Duplicates(a) => duplicates::run(a),
        Command::Concepts(c) => concepts::run(c),
        Command::Score(a) => score::run_score(a),
        Command::KeywordProb(a) => score::run_keyword(a),
        Command::Density(a) => density::run(a),
        Command::Train(a) => train::run(a),
        Command::Prime(a) => prime::run(a),
        Command::Attribute(c) => attribute::run(c),
        Command::Import(c) => import::run(c),
        Command::Report(c) => report::run(c),
        Command::Sql(a) => sql::run(a),
        Command::Fixtures(a) => fixtures::run(a),
        Command::Demo(a) => demo::run(a),
    }
}

/// The id of `text`, which must be exactly one token (the `--next` of `prob` and `infgram prob`).
pub fn one_token(index: &Index, text: &str) -> Result<u32> {
    let ids = index.tokenizer()?.encode(text)?;
    match ids.as_slice() {
        [id] => Ok(*id),
        _ => bail!(
            "--next {text:?} is {} tokens ({ids:?}); give exactly one token",
            ids.len()
        ),
    }
}

/// A comma-separated list of token ids.
#[derive(Debug, Clone)]
pub struct TokenList(pub Vec<u32>);

impl std::str::FromStr for TokenList {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(TokenList(Vec::new()));
        }
        s.split(',')
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{p:?} is not a token id (expected e.g. 464,3290)"))
            })
            .collect::<std::result::Result<_, _>>()
            .map(TokenList)
    }
}

/// The query every n-gram command takes: text or token ids.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The index directory.
    pub index: PathBuf,
    /// Text, tokenized with the index's tokenizer (leading spaces matter: " cat" and "cat" differ).
    pub text: Option<String>,
    /// Token ids instead of text, comma-separated (e.g. 464,3290).
    #[arg(long, conflicts_with = "text")]
    pub tokens: Option<TokenList>,
    /// Tokenize with this tokenizer.json instead of the index's copy (must have the same hash).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

impl QueryArgs {
    /// Opens the index (and the given tokenizer).
    pub fn open(&self) -> Result<Index> {
        open_index(&self.index, self.tokenizer.as_deref())
    }

    /// The query's token ids; `allow_empty` lets an absent query mean the empty sequence.
    pub fn ids(&self, index: &Index, allow_empty: bool) -> Result<Vec<u32>> {
        match (&self.text, &self.tokens) {
            (_, Some(t)) => Ok(t.0.clone()),
            (Some(text), None) => Ok(index.tokenizer()?.encode(text)?),
            (None, None) if allow_empty => Ok(Vec::new()),
            (None, None) => bail!("give the query as text or with --tokens"),
        }
    }
}

/// Opens an index, with an optional tokenizer override.
pub fn open_index(dir: &Path, tokenizer: Option<&Path>) -> Result<Index> {
    let index = Index::open(dir).with_context(|| format!("cannot open index {}", dir.display()))?;
    if let Some(t) = tokenizer {
        index.set_tokenizer(familiar::tokenizer::Tokenizer::from_file(t)?)?;
    }
    Ok(index)
}

/// The model of the model commands and where it runs.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Compute device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// Loads the model and its tokenizer onto the device.
    pub fn load(&self) -> Result<familiar_models::measure::score::LanguageModel> {
        familiar_models::measure::score::LanguageModel::load_on(
            &self.model,
            &familiar_models::model::device(&self.device)?,
        )
        .with_context(|| format!("loading the model in {}", self.model.display()))
    }
}

/// How results are printed, for commands with tabular output.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: familiar::table::Format,
    /// Write to this file instead of stdout (required for parquet).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Writes a result table in `format` to `output` (stdout when `None`); Parquet needs a file.
pub fn write_table(
    table: &familiar::table::Table,
    format: familiar::table::Format,
    output: Option<&std::path::Path>,
) -> Result<()> {
    if format == familiar::table::Format::Parquet && output.is_none() {
        anyhow::bail!("--format parquet needs --output FILE");
    }
    table.write(format, output)?;
    Ok(())
}

/// Renders token ids as their vocabulary strings, for display.
pub fn token_strings(index: &Index, ids: &[u32]) -> Result<Vec<String>> {
    let t = index.tokenizer()?;
    Ok(ids
        .iter()
        .map(|&id| t.id_to_token(id).unwrap_or_else(|| format!("<{id}>")))
        .collect())
}

/// The most worker threads a `--threads` option accepts (more would only exhaust the
/// process's thread limit).
pub const MAX_THREADS: usize = 4096;

/// `--threads N`: 1 to [`MAX_THREADS`].
pub fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of threads"))?;
    if n == 0 || n > MAX_THREADS as u64 {
        return Err(format!(
            "the number of threads must be 1 to {MAX_THREADS}, not {n}"
        ));
    }
    Ok(n as usize)
}

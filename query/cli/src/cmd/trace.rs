//! `familiar trace`: the spans of a text that occur verbatim in the corpus, and their documents.

use std::path::PathBuf;

use anyhow::{Context, Result};
use familiar::table::Format;
use familiar_query::trace::{read_items, trace_text, trace_tokens, SpanRanking, TraceOptions};

use super::{OutputArgs, TokenList};

/// Arguments of `familiar trace`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The index directory.
    index: PathBuf,
    /// The text to trace.
    #[arg(long, conflicts_with_all = ["items", "tokens"])]
    text: Option<String>,
    /// The text to trace as token ids, comma-separated.
    #[arg(long, conflicts_with = "items")]
    tokens: Option<TokenList>,
    /// Texts to trace: JSONL, {"id"?, "text"} per line.
    #[arg(long)]
    items: Option<PathBuf>,
    /// Shortest span, in tokens.
    #[arg(long, default_value_t = 8)]
    min_len: usize,
    /// Keep spans occurring at most this many times.
    #[arg(long, default_value_t = 10)]
    max_count: u64,
    /// Keep the ⌈density × tokens⌉ spans that rank first by --ranking.
    #[arg(long, default_value_t = 0.05)]
    max_span_density: f64,
    /// Which spans --max-span-density keeps first: the rarest (lowest unigram log-probability
    /// sum) or the longest.
    #[arg(long, value_enum, default_value_t = SpanRanking::UnigramLogprob)]
    ranking: SpanRanking,
    /// Spans never cross a token whose text contains this string (repeat for several, e.g.
    /// --delimiter . --delimiter $'\n').
    #[arg(long = "delimiter")]
    delimiters: Vec<String>,
    /// Every maximal span of at least --min-len tokens, any count (no --max-count or
    /// --max-span-density).
    #[arg(long)]
    all_spans: bool,
    /// Documents listed per span.
    #[arg(long, default_value_t = 10)]
    docs_per_span: usize,
    /// Trim spans to whole words.
    #[arg(long)]
    whole_words: bool,
    /// List each span's documents as found, without ranking them by BM25 against the whole
    /// text (which needs the text index).
    #[arg(long)]
    no_bm25: bool,
    /// The longest text traced at once, in tokens (a longer one is refused unless --chunk).
    #[arg(long, default_value_t = 10_000)]
    max_tokens: usize,
    /// Trace longer texts in pieces of --max-tokens tokens (spans end at the pieces' boundaries).
    #[arg(long)]
    chunk: bool,
    /// Write the documents of the spans (the trace_documents table) to this Parquet file.
    #[arg(long)]
    documents: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> Result<i32> {
    let index = super::open_index(&a.index, None)?;
    let options = TraceOptions {
        min_len: a.min_len,
        max_count: (!a.all_spans).then_some(a.max_count),
        max_span_density: (!a.all_spans).then_some(a.max_span_density),
        docs_per_span: a.docs_per_span,
        whole_words: a.whole_words,
        bm25: !a.no_bm25,
        max_tokens: a.max_tokens,
        chunk: a.chunk,
        ranking: a.ranking,
        delimiters: a.delimiters.clone(),
    };
    let mut spans = Vec::new();
    let mut documents = Vec::new();
    let mut add = |id: &str, trace: familiar_query::trace::Trace| {
        let (s, d) = trace.rows(id);
        spans.extend(s);
        documents.extend(d);
    };
    match (&a.text, &a.tokens, &a.items) {
        (Some(text), _, _) => add("text", trace_text(&index, text, &options)?),
        (None, Some(ids), _) => add("text", trace_tokens(&index, &ids.0, &options)?),
        (None, None, Some(path)) => {
            for item in read_items(path)? {
                let trace = trace_text(&index, &item.text, &options)
                    .with_context(|| format!("{}: item {}", path.display(), item.id))?;
                add(&item.id, trace);
            }
        }
        (None, None, None) => anyhow::bail!("give the text with --text, --tokens or --items"),
    }
    if let Some(path) = &a.documents {
        familiar::table::from_rows(&documents)?.write(Format::Parquet, Some(path))?;
    }
    let table = familiar::table::from_rows(&spans)?;
    super::write_table(&table, a.out.format, a.out.output.as_deref())?;
    Ok(0)
}

//! Tracing text to the corpus (as OLMoTrace does, Liu et al. 2025): the maximal spans of a
//! tokenized text that occur verbatim in the index, filtered and ranked, with the documents that
//! contain them.
//!
//! A span `[s, e)` of the text's tokens occurs if its count in the index is positive; it is
//! maximal if neither `[s − 1, e)` nor `[s, e + 1)` occurs. With `L(i)` the length of the longest
//! span starting at `i` that occurs, the maximal spans are the `[i, i + L(i))` with `L(i) > 0` and
//! `L(i − 1) ≤ L(i)` (else the span starting one token earlier contains it). A suffix of a span
//! that occurs occurs too, so `L(i) ≥ L(i − 1) − 1`: each start resumes where the last one ended,
//! and the whole scan costs about twice the text's length in counts. Counts are exact; nothing is
//! sampled.
//!
//! The OLMoTrace filters ([`TraceOptions`]): spans of at least `min_len` tokens, occurring at
//! most `max_count` times, of which the `⌈max_span_density · tokens⌉` with the lowest unigram
//! log-probability (the sum of `ln P(t)` over the span's tokens, `P(t)` = the token's share of the
//! index's tokens: the rarer spans) are kept. With `whole_words`, spans are trimmed to whole
//! words first (they start after and end before a word boundary: a non-alphanumeric character at
//! either side of the token boundary). A text longer than `max_tokens` is refused, or traced in
//! pieces of that many tokens with `chunk` (spans then end at the pieces' boundaries).

use familiar::index::Index;
use familiar::{Error, Result};

use crate::ngram;

/// Which spans to keep, and how many documents to show for each.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOptions {
    /// Shortest span kept, in tokens (at least 1).
    pub min_len: usize,
    /// Keep spans occurring at most this many times (`None`: any count).
    pub max_count: Option<u64>,
    /// Keep the `⌈max_span_density · tokens⌉` spans of lowest unigram log-probability (`None`:
    /// every span).
    pub max_span_density: Option<f64>,
    /// Documents listed per span.
    pub docs_per_span: usize,
    /// Trim spans to whole words.
    pub whole_words: bool,
    /// Rank each span's documents by BM25 against the whole text (needs the text index).
    pub bm25: bool,
    /// The longest text traced at once, in tokens; a longer one is refused unless `chunk`.
    pub max_tokens: usize,
    /// Trace a text longer than `max_tokens` in consecutive pieces of that many tokens (spans
    /// then end at the pieces' boundaries).
    pub chunk: bool,
    /// Which spans `max_span_density` keeps first.
    pub ranking: SpanRanking,
    /// Spans never cross a token whose text contains one of these strings (OLMoTrace's
    /// `delimiters`, such as `"\n"` or `"."`): such a token ends a span.
    pub delimiters: Vec<String>,
}

/// Which spans [`TraceOptions::max_span_density`] keeps first (OLMoTrace's `spanRankingMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SpanRanking {
    /// Lowest unigram log-probability sum first (rarest; OLMoTrace's `unigram_logprob_sum`).
    #[default]
    UnigramLogprob,
    /// Longest first (OLMoTrace's `length`), ties by lower unigram log-probability.
    Length,
}

impl Default for TraceOptions {
    /// OLMoTrace-like: spans of at least 8 tokens, occurring at most 10 times, 5 % of the text's
    /// tokens in spans, 10 documents each ranked by BM25.
    fn default() -> Self {
        TraceOptions {
            min_len: 8,
            max_count: Some(10),
            max_span_density: Some(0.05),
            docs_per_span: 10,
            whole_words: false,
            bm25: true,
            max_tokens: 10_000,
            chunk: false,
            ranking: SpanRanking::UnigramLogprob,
            delimiters: Vec::new(),
        }
    }
}

impl TraceOptions {
    /// Every maximal span of at least `min_len` tokens, whatever its count.
    pub fn all_spans(min_len: usize) -> TraceOptions {
        TraceOptions {
            min_len,
            max_count: None,
            max_span_density: None,
            ..TraceOptions::default()
        }
    }
}

/// A span of the text that occurs in the index.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Span {
    /// First token (position in the tokenized text).
    pub start: usize,
    /// One past the last token.
    pub end: usize,
    /// Its character range in the text (`None` when the text was given as tokens).
    pub char_start: Option<usize>,
    /// One past its last character.
    pub char_end: Option<usize>,
    /// Its text (the tokens decoded).
    pub text: String,
    /// Its occurrences in the index.
    pub count: u64,
    /// Σ ln P(t) over its tokens, P(t) the token's share of the index's tokens.
    pub unigram_logprob: f64,
}

/// A document that contains a span.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpanDocument {
    /// The span (its index in [`Trace::spans`]).
    pub span: usize,
    /// The document's global id.
    pub doc_id: u64,
    /// Token offset of the span's first occurrence listed in the document.
    pub position: u64,
    /// BM25 of the document against the whole text (with [`TraceOptions::bm25`]).
    pub bm25: Option<f32>,
}

/// What [`trace_tokens`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The text's tokens.
    pub tokens: Vec<u32>,
    /// The spans kept, by start.
    pub spans: Vec<Span>,
    /// Up to `docs_per_span` documents per span (distinct per span; the first found, shards in
    /// order then suffix-array order), by BM25 (highest first, ties by id) with
    /// [`TraceOptions::bm25`].
    pub documents: Vec<SpanDocument>,
}

/// For each start `i`, the length of the longest span of `tokens` starting at `i` that occurs in
/// the index (`L(i)`, 0 when even the token at `i` never occurs).
pub fn longest_matches(index: &Index, tokens: &[u32]) -> Result<Vec<usize>> {
    index.check_ids(tokens)?;
    let m = tokens.len();
    let occurs =
        |s: usize, e: usize| -> Result<bool> { Ok(ngram::count(index, &tokens[s..e])? > 0) };
    let mut out = Vec::with_capacity(m);
    let mut prev = 0usize;
    for i in 0..m {
        // [i, i + prev − 1) occurs: it is a suffix of the span found at i − 1.
        let mut l = prev.saturating_sub(1);
        while i + l < m && occurs(i, i + l + 1)? {
            l += 1;
        }
        out.push(l);
        prev = l;
    }
    Ok(out)
}

/// The maximal spans `[start, end)` of `tokens` that occur in the index, by start (every length).
pub fn maximal_spans(index: &Index, tokens: &[u32]) -> Result<Vec<(usize, usize)>> {
    Ok(spans_of(&longest_matches(index, tokens)?))
}

/// The maximal spans given each start's longest match `l`.
fn spans_of(l: &[usize]) -> Vec<(usize, usize)> {
    (0..l.len())
        .filter(|&i| l[i] > 0 && (i == 0 || l[i - 1] <= l[i]))
        .map(|i| (i, i + l[i]))
        .collect()
}

/// Traces the text `text`: [`trace_tokens`] of its tokens, with the spans' character ranges.
pub fn trace_text(index: &Index, text: &str, options: &TraceOptions) -> Result<Trace> {
    let tokenizer = index.tokenizer()?;
    let with_offsets = tokenizer.encode_with_offsets(text)?;
    let tokens: Vec<u32> = with_offsets.iter().map(|(t, _)| *t).collect();
    let mut trace = trace_inner(index, &tokens, text, options)?;
    for s in &mut trace.spans {
        s.char_start = Some(with_offsets[s.start].1 .0);
        s.char_end = Some(with_offsets[s.end - 1].1 .1);
    }
    Ok(trace)
}

/// Traces the token sequence `tokens` (see the module's documentation; BM25 against the
/// tokens decoded).
pub fn trace_tokens(index: &Index, tokens: &[u32], options: &TraceOptions) -> Result<Trace> {
    index.check_ids(tokens)?;
    let text = index.tokenizer()?.decode(tokens)?;
    trace_inner(index, tokens, &text, options)
}

fn trace_inner(index: &Index, tokens: &[u32], text: &str, options: &TraceOptions) -> Result<Trace> {
    if options.min_len == 0 {
        return Err(Error::Query(format!(
            "{} 0: the shortest span must be at least 1 token",
            familiar::option::name("min_len")
        )));
    }
    if let Some(d) = options.max_span_density {
        if !(d > 0.0 && d.is_finite()) {
            return Err(Error::Query(format!(
                "the span density must be a positive number, not {d}"
            )));
        }
    }
    if options.max_tokens == 0 {
        return Err(Error::Query(format!(
            "{} must be at least 1",
            familiar::option::name("max_tokens")
        )));
    }
    if tokens.len() > options.max_tokens && !options.chunk {
        return Err(Error::Query(format!(
            "the text has {} tokens, more than {} ({}): raise it, or trace the text in pieces \
             of that many tokens ({})",
            tokens.len(),
            familiar::option::name("max_tokens"),
            options.max_tokens,
            familiar::option::name("chunk")
        )));
    }
    let tokenizer = index.tokenizer()?;
    let mut spans = Vec::new();
    for (a, b) in pieces(tokenizer, tokens, options)? {
        spans.extend(
            maximal_spans(index, &tokens[a..b])?
                .into_iter()
                .map(|(s, e)| (s + a, e + a)),
        );
    }
    if options.whole_words {
        spans = whole_words(tokenizer, tokens, &spans)?;
    }
    spans.retain(|(s, e)| e - s >= options.min_len);
    // Unigram shares over the index's tokens (separators excluded).
    let m = index.manifest();
    let total = m.tokens.saturating_sub(m.documents).max(1) as f64;
    let mut unigram = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        let count = ngram::count(index, &tokens[s..e])?;
        if options.max_count.is_some_and(|c| count > c) {
            continue;
        }
        let mut logprob = 0.0;
        for &t in &tokens[s..e] {
            let c = match unigram.get(&t) {
                Some(&c) => c,
                None => {
                    let c = ngram::count(index, &[t])?;
                    unigram.insert(t, c);
                    c
                }
            };
            logprob += (c as f64 / total).ln();
        }
        out.push(Span {
            start: s,
            end: e,
            char_start: None,
            char_end: None,
            text: tokenizer.decode(&tokens[s..e])?,
            count,
            unigram_logprob: logprob,
        });
    }
    if let Some(d) = options.max_span_density {
        let keep = (d * tokens.len() as f64).ceil() as usize;
        // Rarest (or longest) first; ties by position, so the choice is deterministic.
        out.sort_by(|a, b| {
            let by_length = match options.ranking {
                SpanRanking::Length => (b.end - b.start).cmp(&(a.end - a.start)),
                SpanRanking::UnigramLogprob => std::cmp::Ordering::Equal,
            };
            by_length
                .then(a.unigram_logprob.total_cmp(&b.unigram_logprob))
                .then(a.start.cmp(&b.start))
        });
        out.truncate(keep);
        out.sort_by_key(|s| (s.start, s.end));
    }
    let mut documents = Vec::new();
    if options.docs_per_span > 0 {
        for (i, s) in out.iter().enumerate() {
            let mut seen = std::collections::HashSet::new();
            let mut offset = 0u64;
            // Pages of occurrences until enough distinct documents (or none left).
            while seen.len() < options.docs_per_span {
                let page = ngram::locate(
                    index,
                    &tokens[s.start..s.end],
                    offset,
                    (options.docs_per_span as u64).saturating_mul(4),
                )?;
                if page.hits.is_empty() {
                    break;
                }
                offset += page.hits.len() as u64;
                for h in page.hits {
                    if seen.len() < options.docs_per_span && seen.insert(h.doc_id) {
                        documents.push(SpanDocument {
                            span: i,
                            doc_id: h.doc_id,
                            position: h.offset_in_doc,
                            bm25: None,
                        });
                    }
                }
            }
        }
    }
    if options.bm25 && !documents.is_empty() {
        rank_by_bm25(index, text, &mut documents)?;
    }
    Ok(Trace {
        tokens: tokens.to_vec(),
        spans: out,
        documents,
    })
}

/// The pieces `[a, b)` of `tokens` that spans stay within: consecutive pieces of `max_tokens`
/// tokens, each cut after every token whose text contains a delimiter.
fn pieces(
    tokenizer: &familiar::tokenizer::Tokenizer,
    tokens: &[u32],
    options: &TraceOptions,
) -> Result<Vec<(usize, usize)>> {
    if options.delimiters.iter().any(String::is_empty) {
        return Err(Error::Query("a delimiter cannot be empty".into()));
    }
    let mut out = Vec::new();
    let mut delimits = std::collections::HashMap::new();
    for (k, chunk) in tokens.chunks(options.max_tokens).enumerate() {
        let base = k * options.max_tokens;
        let mut start = base;
        for (i, &t) in chunk.iter().enumerate() {
            if options.delimiters.is_empty() {
                break;
            }
            let cut = match delimits.get(&t) {
                Some(&c) => c,
                None => {
                    let text = tokenizer.decode(&[t])?;
                    let c = options.delimiters.iter().any(|d| text.contains(d.as_str()));
                    delimits.insert(t, c);
                    c
                }
            };
            if cut {
                out.push((start, base + i + 1));
                start = base + i + 1;
            }
        }
        if start < base + chunk.len() {
            out.push((start, base + chunk.len()));
        }
    }
    Ok(out)
}

/// Scores every listed document by BM25 against `text` (index-wide statistics) and orders each
/// span's documents by it, highest first (ties by document id).
fn rank_by_bm25(index: &Index, text: &str, documents: &mut [SpanDocument]) -> Result<()> {
    let shards = index
        .shards()
        .iter()
        .map(|s| familiar_text::TextIndex::open(&s.dir, &s.manifest))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| {
            Error::Config(format!(
                "ranking documents by BM25 needs the text index: {e} (or trace with {})",
                familiar::option::off("bm25")
            ))
        })?;
    let terms = familiar_text::bm25::query_terms(text);
    let stats = familiar_text::bm25::Bm25Stats::of(&shards, &terms)?;
    for (k, shard) in index.shards().iter().enumerate() {
        let (first, n) = (shard.manifest.first_doc, shard.manifest.documents);
        let mine: Vec<usize> = (0..documents.len())
            .filter(|&i| (first..first + n).contains(&documents[i].doc_id))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let ids: Vec<u64> = mine.iter().map(|&i| documents[i].doc_id).collect();
        let scores = shards[k].bm25(&terms, &stats, &ids)?;
        for (&i, score) in mine.iter().zip(scores) {
            documents[i].bm25 = Some(score);
        }
    }
    documents.sort_by(|a, b| {
        a.span
            .cmp(&b.span)
            .then(b.bm25.unwrap_or(0.0).total_cmp(&a.bm25.unwrap_or(0.0)))
            .then(a.doc_id.cmp(&b.doc_id))
    });
    Ok(())
}

/// Each span trimmed to whole words (dropping those with no whole word), then without the
/// trimmed spans that another one contains.
fn whole_words(
    tokenizer: &familiar::tokenizer::Tokenizer,
    tokens: &[u32],
    spans: &[(usize, usize)],
) -> Result<Vec<(usize, usize)>> {
    let texts: Vec<String> = tokens
        .iter()
        .map(|&t| tokenizer.decode(&[t]))
        .collect::<Result<_>>()?;
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    // A word boundary before token k: the text's start or end, or a non-word character on
    // either side.
    let boundary = |k: usize| {
        k == 0
            || k == tokens.len()
            || !word(texts[k - 1].chars().last())
            || !word(texts[k].chars().next())
    };
    let mut trimmed: Vec<(usize, usize)> = Vec::new();
    for &(s, e) in spans {
        let Some(s2) = (s..e).find(|&k| boundary(k)) else {
            continue;
        };
        let Some(e2) = (s2 + 1..=e).rev().find(|&k| boundary(k)) else {
            continue;
        };
        trimmed.push((s2, e2));
    }
    trimmed.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<(usize, usize)> = Vec::new();
    for t in trimmed {
        if !out.iter().any(|o| o.0 <= t.0 && t.1 <= o.1) {
            out.push(t);
        }
    }
    Ok(out)
}

/// A row of the `trace_spans` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/trace_spans.json
pub struct TraceSpanRow {
    pub item_id: String,
    pub span: u64,
    pub start: u64,
    pub end: u64,
    pub char_start: Option<u64>,
    pub char_end: Option<u64>,
    pub text: String,
    pub count: u64,
    pub unigram_logprob: f64,
}

impl familiar::table::TableRow for TraceSpanRow {
    const TABLE: &'static str = "trace_spans";
}

/// A row of the `trace_documents` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/trace_documents.json
pub struct TraceDocumentRow {
    pub item_id: String,
    pub span: u64,
    pub doc_id: u64,
    pub position: u64,
    pub bm25: Option<f64>,
}

impl familiar::table::TableRow for TraceDocumentRow {
    const TABLE: &'static str = "trace_documents";
}

impl Trace {
    /// The trace of item `item_id` as rows of the `trace_spans` and `trace_documents` tables.
    pub fn rows(&self, item_id: &str) -> (Vec<TraceSpanRow>, Vec<TraceDocumentRow>) {
        let spans = self
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| TraceSpanRow {
                item_id: item_id.to_string(),
                span: i as u64,
                start: s.start as u64,
                end: s.end as u64,
                char_start: s.char_start.map(|c| c as u64),
                char_end: s.char_end.map(|c| c as u64),
                text: s.text.clone(),
                count: s.count,
                unigram_logprob: s.unigram_logprob,
            })
            .collect();
        let documents = self
            .documents
            .iter()
            .map(|d| TraceDocumentRow {
                item_id: item_id.to_string(),
                span: d.span as u64,
                doc_id: d.doc_id,
                position: d.position,
                bm25: d.bm25.map(f64::from),
            })
            .collect();
        (spans, documents)
    }
}

/// A text to trace, from an items file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceItem {
    /// Its id (the file's `id`, else its line number).
    pub id: String,
    /// The text.
    pub text: String,
}

/// Reads an items file to trace: JSONL, `{"id"?, "text"}` per line (see [`familiar::input`]); an
/// empty file is an error.
pub fn read_items(path: &std::path::Path) -> Result<Vec<TraceItem>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        id: Option<serde_json::Value>,
        text: String,
    }
    let raw: Vec<(u64, Raw)> = familiar::input::read_jsonl_records(path, "{\"id\", \"text\"}")?;
    if raw.is_empty() {
        return Err(Error::input(path, 0, "no items"));
    }
    Ok(raw
        .into_iter()
        .map(|(line, r)| TraceItem {
            id: familiar::input::id_or_line(r.id, line),
            text: r.text,
        })
        .collect())
}

//! OLMoTrace's API (allenai/infinigram-api), camelCase: `GET /indexes`,
//! `GET /{index}/documents/{i}` and `POST /{index}/attribution`, whose spans are those of
//! [`familiar_query::trace`] — maximal spans of the response that occur in the corpus, at most
//! `maximumFrequency` times, the `⌈maximumSpanDensity · tokens⌉` first by `spanRankingMethod`,
//! never crossing a `delimiters` token — each with up to `maximumDocumentsPerSpan` documents
//! (ranked by BM25 against the response when the index has a text index).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use familiar::index::Index;
use familiar_query::docs;
use familiar_query::trace::{self, SpanRanking, TraceOptions};
use serde_json::{json, Value};

use crate::show::{self, Args};
use crate::{ApiError, App};

/// The answer, labeled for the metrics and the log.
fn tagged(kind: &'static str, r: Result<Value, ApiError>) -> Response {
    crate::v1::respond(kind, r.map(crate::v1::Answer::Json))
}

/// `GET /indexes`: the served index names.
pub async fn indexes(State(app): State<Arc<App>>) -> Response {
    tagged("indexes", Ok(json!(app.indexes.keys().collect::<Vec<_>>())))
}

/// A document id from a path segment.
pub(crate) fn doc_id(index: &Index, id: &str) -> Result<u64, ApiError> {
    let n = index.documents();
    match id.parse::<u64>() {
        Ok(d) if d < n => Ok(d),
        _ => Err(ApiError::not_found(format!(
            "no document {id:?}: document ids are 0 to {} in this index",
            n.saturating_sub(1)
        ))),
    }
}

/// `GET /{index}/documents/{i}?maximum_document_display_length=N`.
pub async fn document(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let r = async {
        let Query(q) = query?;
        let served = app.index(&name)?;
        let index = Arc::clone(&served.index);
        let max_len = match q.get("maximum_document_display_length") {
            None => 10_000,
            Some(s) => s.parse::<u64>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "maximum_document_display_length must be a positive integer, not {s:?}"
                ))
            })?,
        };
        app.run(move || {
            let doc = doc_id(&index, &id)?;
            let r = docs::record(&index, doc)?;
            let tokens = index.doc_tokens(doc, 0, max_len)?;
            Ok(json!({
                "index": name,
                "documentIndex": doc,
                "documentLength": r.token_count,
                "displayLength": tokens.len(),
                "metadata": show::metadata(&r),
                "tokenIds": tokens,
                "text": index.tokenizer()?.decode(&tokens)?,
                "blocked": false,
            }))
        })
        .await
    }
    .await;
    tagged("document", r)
}

/// `POST /{index}/attribution`.
pub async fn attribution(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let r = async {
        let Json(body) = body?;
        let served = app.index(&name)?;
        let index = Arc::clone(&served.index);
        let max_tokens = app.limits.max_query_tokens;
        app.run(move || attribute(&index, &name, &body, max_tokens))
            .await
    }
    .await;
    tagged("attribution", r)
}

fn attribute(
    index: &Index,
    name: &str,
    body: &Value,
    max_tokens: usize,
) -> Result<Value, ApiError> {
    let args = Args::new(body)?;
    let response = args.required_str("response")?;
    let ranking = match args
        .str("spanRankingMethod")?
        .unwrap_or("unigram_logprob_sum")
    {
        "unigram_logprob_sum" => SpanRanking::UnigramLogprob,
        "length" => SpanRanking::Length,
        other => {
            return Err(ApiError::bad_request(format!(
                "spanRankingMethod must be \"length\" or \"unigram_logprob_sum\", not {other:?}"
            )))
        }
    };
    let text_index = show::has_text_index(index);
    let options = TraceOptions {
        min_len: args.int("minimumSpanLength", 1, 1, max_tokens as u64)? as usize,
        max_count: Some(args.int("maximumFrequency", 10, 1, u64::MAX)?),
        max_span_density: Some(args.float("maximumSpanDensity", 0.05, f64::MIN_POSITIVE, 1.0)?),
        docs_per_span: args.int("maximumDocumentsPerSpan", 10, 0, 100)? as usize,
        whole_words: !args.bool("allowSpansWithPartialWords", false)?,
        bm25: text_index,
        max_tokens,
        chunk: false,
        ranking,
        delimiters: args.strings("delimiters")?.unwrap_or_default(),
    };
    let context = args.int("maximumContextLength", 250, 0, 10_000)?;
    let context_long = args.int("maximumContextLengthLong", 100, 0, 10_000)?;
    let context_snippet = args.int("maximumContextLengthSnippet", 40, 0, 10_000)?;
    show::encode(index, response, max_tokens)?;
    let t = trace::trace_text(index, response, &options)?;
    let tokenizer = index.tokenizer()?;
    let mut spans = Vec::new();
    for (i, s) in t.spans.iter().enumerate() {
        let len = (s.end - s.start) as u64;
        let mut documents = Vec::new();
        for d in t.documents.iter().filter(|d| d.span == i) {
            let r = docs::record(index, d.doc_id)?;
            let mut doc = json!({
                "documentIndex": d.doc_id,
                "documentLength": r.token_count,
                "needleOffset": d.position,
                "metadata": show::metadata(&r),
                "relevanceScore": d.bm25,
                "blocked": false,
            });
            for (suffix, ctx) in [
                ("", context),
                ("Long", context_long),
                ("Snippet", context_snippet),
            ] {
                let w = show::window(
                    index,
                    d.doc_id,
                    r.token_count,
                    d.position,
                    len,
                    len.saturating_add(ctx.saturating_mul(2)),
                )?;
                doc[format!("displayLength{suffix}")] = json!(w.tokens.len());
                doc[format!("displayOffset{suffix}")] = json!(w.start);
                doc[format!("text{suffix}")] = json!(tokenizer.decode(&w.tokens)?);
                if suffix.is_empty() {
                    doc["tokenIds"] = json!(w.tokens);
                }
            }
            documents.push(doc);
        }
        spans.push(json!({
            "left": s.start,
            "right": s.end,
            "length": s.end - s.start,
            "count": s.count,
            "unigramLogprobSum": s.unigram_logprob,
            "text": s.text,
            "charLeft": s.char_start,
            "charRight": s.char_end,
            "tokenIds": t.tokens[s.start..s.end],
            "documents": documents,
        }));
    }
    Ok(json!({
        "index": name,
        "spans": spans,
        "inputTokens": show::token_strings(index, &t.tokens)?,
    }))
}

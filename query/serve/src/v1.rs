//! The native API under `/v1/`: everything the library answers on an index, with the library's
//! own field names, described in `openapi.json` (served at `/v1/openapi.json`). Bulk answers
//! (`count_batch`, `locate`, `ntd`, `contamination`) come as Arrow IPC streams when the request
//! says `Accept: application/vnd.apache.arrow.stream`.
//!
//! A query is `text` (tokenized with the index's tokenizer) or `token_ids`; answers echo the
//! `token_ids`.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use familiar::index::Index;
use familiar_query::contamination::{self, ContaminationOptions};
use familiar_query::trace::{self, SpanRanking, TraceOptions};
use familiar_query::{docs, infgram, ngram};
use serde_json::{json, Value};

use crate::show::{self, Args};
use crate::{ApiError, App, QueryKind};

/// The media type of Arrow IPC streams.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The OpenAPI description of the API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The `/v1/` routes.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/indexes", get(indexes))
        .route("/v1/{index}/docs/{id}", get(document))
        .route("/v1/{index}/{op}", post(operation))
}

/// Whether the client asked for Arrow IPC.
pub(crate) fn wants_arrow(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with(ARROW_STREAM)))
}

/// An answer: JSON, or a record batch as an Arrow IPC stream.
pub(crate) enum Answer {
    Json(Value),
    /// JSON already written (from typed fields).
    JsonBytes(Vec<u8>),
    Arrow(RecordBatch),
}

pub(crate) fn respond(kind: &'static str, r: Result<Answer, ApiError>) -> Response {
    let mut response = match r {
        Ok(Answer::Json(v)) => Json(v).into_response(),
        Ok(Answer::JsonBytes(bytes)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Ok(Answer::Arrow(batch)) => match arrow_bytes(&batch) {
            Ok(bytes) => (
                [(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM))],
                bytes,
            )
                .into_response(),
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(QueryKind(kind));
    response
}

fn arrow_bytes(batch: &RecordBatch) -> Result<Vec<u8>, ApiError> {
    let err = |e: arrow_schema::ArrowError| ApiError::internal(format!("writing Arrow IPC: {e}"));
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(err)?;
    w.write(batch).map_err(err)?;
    w.finish().map_err(err)?;
    w.into_inner().map_err(err)
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, ApiError> {
    RecordBatch::try_from_iter(columns)
        .map_err(|e| ApiError::internal(format!("building a record batch: {e}")))
}

async fn openapi() -> Response {
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response();
    r.extensions_mut().insert(QueryKind("openapi"));
    r
}

/// `GET /v1/indexes`: each served index and its sizes.
async fn indexes(State(app): State<Arc<App>>) -> Response {
    let list: Vec<Value> = app
        .indexes
        .values()
        .map(|s| {
            let i = &s.index;
            let positions: u64 = i.shards().iter().map(|s| s.manifest.tokens).sum();
            json!({
                "name": s.name,
                "documents": i.documents(),
                "tokens": positions - i.documents(),
                "positions": positions,
                "shards": i.shards().len(),
                "vocab_size": i.vocab_size(),
                "tokenizer_hash": i.manifest().tokenizer.hash,
                "text_index": show::has_text_index(i),
            })
        })
        .collect();
    respond("indexes", Ok(Answer::Json(json!(list))))
}

/// `GET /v1/{index}/docs/{id}?text=false`: a document's row of the documents table (and its
/// text unless `text=false`).
async fn document(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let r = async {
        let Query(q) = query?;
        let with_text = match q.get("text").map(String::as_str) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "text must be true or false, not {other:?}"
                )))
            }
        };
        let index = Arc::clone(&app.index(&name)?.index);
        app.run(move || {
            let doc = crate::olmotrace::doc_id(&index, &id)?;
            let r = docs::record(&index, doc)?;
            let mut v = json!({
                "doc_id": r.doc_id,
                "shard": r.shard,
                "external_id": r.external_id,
                "source": r.source,
                "input_file": r.input_file,
                "token_count": r.token_count,
                "byte_length": r.byte_length,
                "metadata": show::metadata(&r)["metadata"],
            });
            if with_text {
                v["text"] = json!(docs::text(&index, doc)?);
            }
            Ok(Answer::Json(v))
        })
        .await
    }
    .await;
    respond("doc", r)
}

/// The operations of `POST /v1/{index}/{op}`.
pub const OPERATIONS: [&str; 12] = [
    "tokenize",
    "decode",
    "count",
    "count_batch",
    "locate",
    "ntd",
    "prob",
    "infgram",
    "cnf",
    "trace",
    "contamination",
    "window",
];

async fn operation(
    State(app): State<Arc<App>>,
    Path((name, op)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let mut kind = "v1";
    let r = async {
        kind = OPERATIONS
            .iter()
            .find(|o| **o == op)
            .copied()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no operation {op:?} (one of: {})",
                    OPERATIONS.join(", ")
                ))
            })?;
        let Json(body) = body?;
        let served = app.index(&name)?;
        let (index, cache) = (Arc::clone(&served.index), Arc::clone(&served.ntd));
        let arrow = wants_arrow(&headers);
        let max_tokens = app.limits.max_query_tokens;
        let op = kind;
        // Binary searches of the suffix arrays and the tokenizer: microseconds, no blocking
        // thread (see `App::run_inline`).
        if matches!(op, "tokenize" | "decode" | "count" | "prob") {
            app.run_inline(|| run(&index, &cache, op, &body, arrow, max_tokens, None))?
                .ok_or_else(ApiError::no_answer)
        } else if op == "ntd" {
            app.run_within(move |reads| run(&index, &cache, op, &body, arrow, max_tokens, reads))
                .await
        } else {
            app.run(move || {
                run(&index, &cache, op, &body, arrow, max_tokens, None)?
                    .ok_or_else(ApiError::no_answer)
            })
            .await
        }
    }
    .await;
    respond(kind, r)
}

/// The query of a request: `text` or `token_ids` (one of them).
fn query(index: &Index, args: &Args, max_tokens: usize) -> Result<Vec<u32>, ApiError> {
    match (args.str("text")?, args.ids("token_ids")?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give one of `text` and `token_ids`, not both".into(),
        )),
        (Some(t), None) => show::encode(index, t, max_tokens),
        (None, Some(ids)) => {
            show::check_ids(index, &ids, max_tokens)?;
            Ok(ids)
        }
        (None, None) => Err(ApiError::bad_request(
            "field `text` or `token_ids` is required".into(),
        )),
    }
}

/// A query given as a JSON string (text) or a list of ids (`what` names it in errors).
fn query_value(
    index: &Index,
    v: &Value,
    what: &str,
    max_tokens: usize,
) -> Result<Vec<u32>, ApiError> {
    match v {
        Value::String(t) => show::encode(index, t, max_tokens),
        Value::Array(_) => {
            let ids = show::ids_of(v, what)?;
            show::check_ids(index, &ids, max_tokens)?;
            Ok(ids)
        }
        other => Err(ApiError::bad_request(format!(
            "{what} must be a text or a list of token ids, not {}",
            show::kind_of(other)
        ))),
    }
}

/// A next-token distribution as /v1/ answers it, written straight from its fields (as a
/// `serde_json::Value`, each listed token cost about a microsecond to build and write).
#[derive(serde::Serialize)]
struct NextList {
    prefix_count: u64,
    end_of_document: u64,
    support: usize,
    next: Vec<NextItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix: Option<String>,
    token_ids: Vec<u32>,
}

#[derive(serde::Serialize)]
struct NextItem {
    token_id: u32,
    token: Option<String>,
    count: u64,
    prob: f64,
}

fn next_list(
    index: &Index,
    n: &ngram::NextTokens,
    limit: usize,
    token_ids: &[u32],
) -> Result<NextList, ApiError> {
    let t = index.tokenizer()?;
    let next = n
        .next
        .iter()
        .take(limit)
        .map(|&(id, count)| NextItem {
            token_id: id,
            token: t.id_to_token(id),
            count,
            prob: count as f64 / n.prefix_count as f64,
        })
        .collect();
    Ok(NextList {
        prefix_count: n.prefix_count,
        end_of_document: n.end_of_document,
        support: n.next.len(),
        next,
        suffix_len: None,
        suffix: None,
        token_ids: token_ids.to_vec(),
    })
}

impl NextList {
    fn answer(&self) -> Result<Answer, ApiError> {
        serde_json::to_vec(self)
            .map(Answer::JsonBytes)
            .map_err(|e| ApiError::internal(format!("writing JSON: {e}")))
    }
}

/// The answer to operation `op`, or `None` when it needs more than `reads` reads of the suffix
/// arrays (only `ntd` has a budget; `None` for no budget).
fn run(
    index: &Index,
    cache: &ngram::NextTokensCache,
    op: &str,
    body: &Value,
    arrow: bool,
    max_tokens: usize,
    reads: Option<u64>,
) -> Result<Option<Answer>, ApiError> {
    let args = Args::new(body)?;
    let v = match op {
        "tokenize" => {
            let text = args.required_str("text")?;
            let ids = show::encode(index, text, max_tokens)?;
            json!({"token_ids": ids, "tokens": show::token_strings(index, &ids)?})
        }
        "decode" => {
            let ids = args
                .ids("token_ids")?
                .ok_or_else(|| ApiError::bad_request("field `token_ids` is required".into()))?;
            show::check_ids(index, &ids, max_tokens)?;
            json!({"text": index.tokenizer()?.decode(&ids)?})
        }
        "count" => {
            let ids = query(index, &args, max_tokens)?;
            let count = ngram::count(index, &ids)?;
            json!({"count": count, "token_ids": ids, "tokens": show::token_strings(index, &ids)?})
        }
        "count_batch" => {
            let Some(Value::Array(queries)) = args.get("queries") else {
                return Err(ApiError::bad_request(
                    "field `queries` (a list of texts or token-id lists) is required".into(),
                ));
            };
            let mut counts = Vec::with_capacity(queries.len());
            for (i, q) in queries.iter().enumerate() {
                let ids = query_value(index, q, &format!("queries[{i}]"), max_tokens)?;
                counts.push(
                    ngram::count(index, &ids)
                        .map_err(|e| ApiError::bad_request(format!("queries[{i}]: {e}")))?,
                );
            }
            if arrow {
                let n = counts.len() as u64;
                return Ok(Some(Answer::Arrow(batch(vec![
                    (
                        "query",
                        Arc::new(UInt64Array::from_iter_values(0..n)) as ArrayRef,
                    ),
                    ("count", Arc::new(UInt64Array::from(counts)) as ArrayRef),
                ])?)));
            }
            json!({"counts": counts})
        }
        "locate" => {
            let ids = query(index, &args, max_tokens)?;
            let offset = args.int("offset", 0, 0, u64::MAX)?;
            let limit = args.int("limit", 100, 1, 100_000)?;
            let page = ngram::locate(index, &ids, offset, limit)?;
            if arrow {
                let col = |f: &dyn Fn(&ngram::Hit) -> u64| -> ArrayRef {
                    Arc::new(UInt64Array::from_iter_values(page.hits.iter().map(f)))
                };
                return Ok(Some(Answer::Arrow(batch(vec![
                    ("doc_id", col(&|h| h.doc_id)),
                    (
                        "shard",
                        Arc::new(UInt32Array::from_iter_values(
                            page.hits.iter().map(|h| h.shard),
                        )) as ArrayRef,
                    ),
                    ("position", col(&|h| h.position)),
                    ("offset_in_doc", col(&|h| h.offset_in_doc)),
                ])?)));
            }
            json!({"total": page.total, "offset": offset, "hits": page.hits})
        }
        "ntd" => {
            let ids = query(index, &args, max_tokens)?;
            let limit = args.int("limit", 100, 1, u64::from(u32::MAX))? as usize;
            let n = match reads {
                None => cache.next_tokens(index, &ids)?,
                Some(r) => match cache.next_tokens_within(index, &ids, r)? {
                    Some(n) => n,
                    None => return Ok(None),
                },
            };
            if arrow {
                let shown = &n.next[..n.next.len().min(limit)];
                return Ok(Some(Answer::Arrow(batch(vec![
                    (
                        "token_id",
                        Arc::new(UInt32Array::from_iter_values(shown.iter().map(|p| p.0)))
                            as ArrayRef,
                    ),
                    (
                        "count",
                        Arc::new(UInt64Array::from_iter_values(shown.iter().map(|p| p.1)))
                            as ArrayRef,
                    ),
                ])?)));
            }
            return next_list(index, &n, limit, &ids)?.answer().map(Some);
        }
        "prob" => {
            let ids = query(index, &args, max_tokens)?;
            let next = match (args.get("next"), args.str("next_text")?) {
                (Some(v), None) => {
                    let n = v
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "field `next` must be a token id, not {v}"
                            ))
                        })?;
                    index.check_ids(&[n])?;
                    n
                }
                (None, Some(t)) => {
                    let ids = show::encode(index, t, max_tokens)?;
                    match ids[..] {
                        [one] => one,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "next_text {t:?} is {} tokens, not one",
                                ids.len()
                            )))
                        }
                    }
                }
                _ => {
                    return Err(ApiError::bad_request(
                        "give one of `next` (a token id) and `next_text` (one token's text)".into(),
                    ))
                }
            };
            let p = ngram::probability(index, &ids, next)?;
            json!({
                "prefix_count": p.prefix_count,
                "count": p.count,
                "probability": p.probability,
                "token_ids": ids,
                "next": next,
            })
        }
        "infgram" => {
            let ids = query(index, &args, max_tokens)?;
            let limit = args.int("limit", 100, 1, u64::from(u32::MAX))? as usize;
            let suffix_len = infgram::longest_suffix(index, &ids)?;
            let suffix = &ids[ids.len() - suffix_len..];
            let mut list = next_list(index, &*cache.next_tokens(index, suffix)?, limit, &ids)?;
            list.suffix_len = Some(suffix_len);
            list.suffix = Some(index.tokenizer()?.decode(suffix)?);
            return list.answer().map(Some);
        }
        "cnf" => {
            let bad = || {
                ApiError::bad_request(
                    "field `clauses` must be a list of clauses, each a list of texts or \
                     token-id lists"
                        .into(),
                )
            };
            let Some(Value::Array(clauses)) = args.get("clauses") else {
                return Err(bad());
            };
            let mut cnf = Vec::new();
            for (i, c) in clauses.iter().enumerate() {
                let Value::Array(terms) = c else {
                    return Err(bad());
                };
                let mut clause = Vec::new();
                for (j, t) in terms.iter().enumerate() {
                    clause.push(query_value(
                        index,
                        t,
                        &format!("clauses[{i}][{j}]"),
                        max_tokens,
                    )?);
                }
                cnf.push(clause);
            }
            let max_occurrences = match args.get("max_occurrences") {
                None => None,
                Some(_) => Some(args.int("max_occurrences", 1, 1, u64::MAX)?),
            };
            let r = ngram::cnf(
                index,
                &ngram::Cnf {
                    clauses: cnf.clone(),
                },
                &ngram::CnfOptions {
                    max_occurrences,
                    list_documents: args.int("list_documents", 10, 0, 10_000)? as usize,
                    seed: args.int("seed", 0, 0, u64::MAX)?,
                },
            )?;
            let mut v = json!(r);
            v["token_ids"] = json!(cnf);
            v
        }
        "window" => {
            let doc = args.required_int("doc_id", u64::MAX)?;
            if doc >= index.documents() {
                return Err(ApiError::not_found(format!(
                    "no document {doc}: document ids are 0 to {} in this index",
                    index.documents().saturating_sub(1)
                )));
            }
            let (left, mid, right) = docs::window(
                index,
                doc,
                args.required_int("offset", u64::MAX)?,
                args.int("len", 1, 0, 100_000)?,
                args.int("before", 50, 0, 100_000)?,
                args.int("after", 50, 0, 100_000)?,
            )?;
            json!({"doc_id": doc, "left": left, "match": mid, "right": right})
        }
        "trace" => {
            let ids = query(index, &args, max_tokens)?;
            let text_index = show::has_text_index(index);
            let ranking = match args.str("ranking")?.unwrap_or("unigram-logprob") {
                "unigram-logprob" => SpanRanking::UnigramLogprob,
                "length" => SpanRanking::Length,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "ranking must be \"unigram-logprob\" or \"length\", not {other:?}"
                    )))
                }
            };
            let nullable_int = |key: &str, default: u64| -> Result<Option<u64>, ApiError> {
                match args.obj_has_null(key) {
                    true => Ok(None),
                    false => Ok(Some(args.int(key, default, 1, u64::MAX)?)),
                }
            };
            let max_span_density = match args.obj_has_null("max_span_density") {
                true => None,
                false => Some(args.float("max_span_density", 0.05, f64::MIN_POSITIVE, 1.0)?),
            };
            let options = TraceOptions {
                min_len: args.int("min_len", 8, 1, max_tokens as u64)? as usize,
                max_count: nullable_int("max_count", 10)?,
                max_span_density,
                docs_per_span: args.int("docs_per_span", 10, 0, 1000)? as usize,
                whole_words: args.bool("whole_words", false)?,
                bm25: args.bool("bm25", text_index)?,
                max_tokens,
                chunk: false,
                ranking,
                delimiters: args.strings("delimiters")?.unwrap_or_default(),
            };
            let t = match args.str("text")? {
                Some(text) => trace::trace_text(index, text, &options)?,
                None => trace::trace_tokens(index, &ids, &options)?,
            };
            json!({"token_ids": t.tokens, "spans": t.spans, "documents": t.documents})
        }
        "contamination" => {
            let Some(Value::Array(items)) = args.get("items") else {
                return Err(ApiError::bad_request(
                    "field `items` (a list of {id, prompt, completion | choices + answer, task}) \
                     is required"
                        .into(),
                ));
            };
            let mut jsonl = String::new();
            for item in items {
                jsonl.push_str(&item.to_string());
                jsonl.push('\n');
            }
            let parsed = familiar::items::parse_items_jsonl(FsPath::new("items"), &jsonl, "item")
                .map_err(|e| match e {
                familiar::Error::Input { line, reason, .. } if line > 0 => {
                    ApiError::bad_request(format!("items[{}]: {reason}", line - 1))
                }
                e => ApiError::from(e),
            })?;
            let options = ContaminationOptions {
                ngram_sizes: match args.get("ngram_sizes") {
                    None => ContaminationOptions::default().ngram_sizes,
                    Some(v) => show::ids_of(v, "ngram_sizes")?
                        .into_iter()
                        .map(|n| n as usize)
                        .collect(),
                },
                documents: args.int("documents", 5, 0, 1000)? as usize,
            };
            let rows = contamination::contamination(index, &parsed, &options, &|_| {})?;
            if arrow {
                return Ok(Some(Answer::Arrow(
                    familiar::table::from_rows(&rows)?.to_record_batch()?,
                )));
            }
            json!({"rows": rows})
        }
        other => return Err(ApiError::not_found(format!("no operation {other:?}"))),
    };
    Ok(Some(Answer::Json(v)))
}

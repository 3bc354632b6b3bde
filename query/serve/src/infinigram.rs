//! infini-gram's API: `POST /` with `{index, query_type, query | query_ids, …}`, answered with
//! infini-gram's field names (its api_server and docs/api.rst), so its clients and scripts work
//! against familiar unchanged.
//!
//! Where infini-gram approximates, familiar is exact and says `approx: false`:
//! - `ntd` / `infgram_ntd` count every occurrence (infini-gram samples `max_support` of them);
//!   `max_support` (at most 1000, default 1000) is how many of the most frequent next tokens are
//!   listed, and `support` says how many distinct ones there are.
//! - CNF queries (`a OR b AND c`, OR binding tighter, as in infini-gram) match documents: a
//!   document matches when it contains, for every clause, one of its n-grams — anywhere in it,
//!   where infini-gram asks for the clauses within `max_diff_tokens` of each other. `count` of a
//!   CNF of several clauses is the number of matching documents; of one clause, the occurrences
//!   of its n-grams. `max_clause_freq` and `max_diff_tokens` are accepted (in infini-gram's
//!   ranges) and change nothing: nothing is sampled.
//! - `find_cnf`'s `ptrs_by_shard` are token positions (infini-gram's are byte offsets), as are
//!   `get_doc_by_ptr`'s `ptr`s; `search_docs` lists the first `maxnum` matching documents in
//!   document order (infini-gram picks them at random).
//!
//! Query texts are tokenized as given (no special tokens, no added space). Errors answer with
//! HTTP 400 and `{"error": …}` (infini-gram answers some with 200).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use familiar::index::Index;
use familiar::with_view;
use familiar_query::{docs, infgram, ngram};
use serde_json::{json, Value};

use crate::show::{self, Args};
use crate::{ApiError, App, QueryKind};

/// The query types, as infini-gram spells them.
pub const QUERY_TYPES: [&str; 10] = [
    "count",
    "prob",
    "ntd",
    "infgram_prob",
    "infgram_ntd",
    "search_docs",
    "find",
    "find_cnf",
    "get_doc_by_rank",
    "get_doc_by_ptr",
];

/// infini-gram's limits on CNF queries.
const MAX_CLAUSES: usize = 4;
const MAX_TERMS_PER_CLAUSE: usize = 4;

/// `POST /`.
pub async fn handle(
    State(app): State<Arc<App>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let start = Instant::now();
    let mut kind = "infinigram";
    let result = async {
        let Json(body) = body?;
        let args = Args::new(&body)?;
        let query_type = args.required_str("query_type")?;
        kind = QUERY_TYPES
            .iter()
            .find(|t| **t == query_type)
            .copied()
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown query_type {query_type:?} (one of: {})",
                    QUERY_TYPES.join(", ")
                ))
            })?;
        let name = match (args.str("index")?, args.str("corpus")?) {
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => return Err(ApiError::bad_request("field `index` is required".into())),
        };
        let served = app
            .index(name)
            .map_err(|e| ApiError::bad_request(e.message))?;
        let index = Arc::clone(&served.index);
        let cache = Arc::clone(&served.ntd);
        let max_tokens = app.limits.max_query_tokens;
        let query_type = kind;
        if is_quick(query_type, &body) {
            app.run_inline(|| answer(&index, &cache, query_type, &body, max_tokens, None))?
                .ok_or_else(ApiError::no_answer)
        } else if query_type == "ntd" {
            app.run_within(move |reads| {
                answer(&index, &cache, query_type, &body, max_tokens, reads)
            })
            .await
        } else {
            app.run(move || {
                answer(&index, &cache, query_type, &body, max_tokens, None)?
                    .ok_or_else(ApiError::no_answer)
            })
            .await
        }
    }
    .await;
    let latency = start.elapsed().as_secs_f64() * 1000.0;
    let mut response = match result {
        Ok(Reply::Value(mut v)) => {
            if let Value::Object(o) = &mut v {
                o.insert("latency".into(), json!(latency));
            }
            Json(v).into_response()
        }
        Ok(Reply::Next(mut n)) => {
            n.latency = latency;
            Json(n).into_response()
        }
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(QueryKind(kind));
    response
}

/// Whether a request takes microseconds whatever the corpus (binary searches of the suffix
/// arrays: `count` of one n-gram, `prob`, `find`), so it runs without a blocking thread. (`ntd`
/// runs here within a budget of reads, see `App::run_within`.)
fn is_quick(query_type: &str, body: &Value) -> bool {
    let cnf_text = body["query"]
        .as_str()
        .is_some_and(|q| q.contains(" AND ") || q.contains(" OR "));
    let cnf_ids = body["query_ids"]
        .as_array()
        .and_then(|a| a.first())
        .is_some_and(Value::is_array);
    match query_type {
        "prob" | "find" => true,
        "count" => !cnf_text && !cnf_ids,
        _ => false,
    }
}

/// A query: one n-gram or a CNF of n-grams.
enum Query {
    Ngram(Vec<u32>),
    Cnf(Vec<Vec<Vec<u32>>>),
}

impl Query {
    fn token_ids(&self) -> Value {
        match self {
            Query::Ngram(ids) => json!(ids),
            Query::Cnf(c) => json!(c),
        }
    }

    fn tokens(&self, index: &Index) -> Result<Value, ApiError> {
        Ok(match self {
            Query::Ngram(ids) => json!(show::token_strings(index, ids)?),
            Query::Cnf(c) => {
                let mut out = Vec::new();
                for clause in c {
                    let mut terms = Vec::new();
                    for t in clause {
                        terms.push(show::token_strings(index, t)?);
                    }
                    out.push(terms);
                }
                json!(out)
            }
        })
    }
}

/// The query of a request: `query` (text; with `cnf`, ` AND ` / ` OR ` split it) or
/// `query_ids` (ids; with `cnf`, also a list of clauses, each a list of id lists).
fn read_query(index: &Index, args: &Args, cnf: bool, max_tokens: usize) -> Result<Query, ApiError> {
    let q = match (args.get("query"), args.get("query_ids")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give one of `query` and `query_ids`, not both".into(),
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "field `query` (a text) or `query_ids` (token ids) is required".into(),
            ))
        }
        (Some(Value::String(text)), None) => {
            if cnf && (text.contains(" AND ") || text.contains(" OR ")) {
                let clauses = text
                    .split(" AND ")
                    .map(|c| {
                        c.split(" OR ")
                            .map(|t| show::encode(index, t, max_tokens))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Query::Cnf(clauses)
            } else {
                Query::Ngram(show::encode(index, text, max_tokens)?)
            }
        }
        (Some(v), None) => {
            return Err(ApiError::bad_request(format!(
                "field `query` must be a string, not {}",
                show::kind_of(v)
            )))
        }
        (None, Some(v)) => {
            let nested = matches!(v, Value::Array(a) if a.first().is_some_and(Value::is_array));
            if cnf && nested {
                let bad = || {
                    ApiError::bad_request(
                        "`query_ids` of a CNF query must be a list of clauses, each a list of \
                         token-id lists"
                            .into(),
                    )
                };
                let Value::Array(clauses) = v else {
                    return Err(bad());
                };
                let mut out = Vec::new();
                for c in clauses {
                    let Value::Array(terms) = c else {
                        return Err(bad());
                    };
                    let mut clause = Vec::new();
                    for t in terms {
                        let ids = show::ids_of(t, "query_ids")?;
                        show::check_ids(index, &ids, max_tokens)?;
                        clause.push(ids);
                    }
                    out.push(clause);
                }
                Query::Cnf(out)
            } else {
                let ids = show::ids_of(v, "query_ids")?;
                show::check_ids(index, &ids, max_tokens)?;
                Query::Ngram(ids)
            }
        }
    };
    if let Query::Cnf(clauses) = &q {
        if clauses.is_empty() || clauses.len() > MAX_CLAUSES {
            return Err(ApiError::bad_request(format!(
                "a CNF query has 1 to {MAX_CLAUSES} clauses, not {}",
                clauses.len()
            )));
        }
        for (i, c) in clauses.iter().enumerate() {
            if c.is_empty() || c.len() > MAX_TERMS_PER_CLAUSE {
                return Err(ApiError::bad_request(format!(
                    "clause {} has {} n-grams (1 to {MAX_TERMS_PER_CLAUSE} allowed)",
                    i + 1,
                    c.len()
                )));
            }
            if let Some(j) = c.iter().position(Vec::is_empty) {
                return Err(ApiError::bad_request(format!(
                    "n-gram {} of clause {} is empty",
                    j + 1,
                    i + 1
                )));
            }
        }
    }
    Ok(q)
}

/// The answer to a request, or `None` when it needs more than `reads` reads of the suffix arrays
/// (only `ntd` has a budget; `None` for no budget).
fn answer(
    index: &Index,
    cache: &ngram::NextTokensCache,
    query_type: &str,
    body: &Value,
    max_tokens: usize,
    reads: Option<u64>,
) -> Result<Option<Reply>, ApiError> {
    let args = Args::new(body)?;
    let cnf = matches!(query_type, "count" | "search_docs" | "find_cnf");
    // infini-gram's ranges for its approximation knobs, which change nothing here.
    args.int("max_clause_freq", 50_000, 1, 500_000)?;
    args.int("max_diff_tokens", 100, 1, 1000)?;
    let needs_query = !matches!(query_type, "get_doc_by_rank" | "get_doc_by_ptr");
    let query = if needs_query || args.has("query") || args.has("query_ids") {
        Some(read_query(index, &args, cnf, max_tokens)?)
    } else {
        None
    };
    let mut out = match (query_type, &query) {
        ("count", Some(q)) => count(index, q)?,
        ("prob", Some(Query::Ngram(ids))) => {
            let (cont, prompt) = split_last(ids)?;
            let p = ngram::probability(index, prompt, cont)?;
            json!({
                "prompt_cnt": p.prefix_count,
                "cont_cnt": p.count,
                "prob": p.probability.unwrap_or(-1.0),
            })
        }
        ("ntd", Some(Query::Ngram(ids))) => {
            let max_support = args.int("max_support", 1000, 1, 1000)? as usize;
            let n = match reads {
                None => cache.next_tokens(index, ids)?,
                Some(r) => match cache.next_tokens_within(index, ids, r)? {
                    Some(n) => n,
                    None => return Ok(None),
                },
            };
            return Ok(Some(Reply::Next(NextReply::new(
                index,
                &n,
                max_support,
                ids,
            )?)));
        }
        ("infgram_prob", Some(Query::Ngram(ids))) => {
            let (cont, prompt) = split_last(ids)?;
            let r = infgram::infgram_prob(index, prompt, cont)?;
            let suffix = &prompt[prompt.len() - r.suffix_len..];
            json!({
                "prompt_cnt": r.probability.prefix_count,
                "cont_cnt": r.probability.count,
                "prob": r.probability.probability.unwrap_or(-1.0),
                "suffix_len": r.suffix_len,
                "longest_suffix": index.tokenizer()?.decode(suffix)?,
            })
        }
        ("infgram_ntd", Some(Query::Ngram(ids))) => {
            let max_support = args.int("max_support", 1000, 1, 1000)? as usize;
            let suffix_len = infgram::longest_suffix(index, ids)?;
            let suffix = &ids[ids.len() - suffix_len..];
            let n = cache.next_tokens(index, suffix)?;
            let mut reply = NextReply::new(index, &n, max_support, ids)?;
            reply.suffix_len = Some(suffix_len);
            reply.longest_suffix = Some(index.tokenizer()?.decode(suffix)?);
            return Ok(Some(Reply::Next(reply)));
        }
        ("find", Some(Query::Ngram(ids))) => {
            if ids.is_empty() {
                return Err(ApiError::bad_request("the query is empty".into()));
            }
            let mut segments = Vec::new();
            let mut cnt = 0;
            for shard in index.shards() {
                let (lo, hi) = with_view!(shard, |v| v.range(&ngram::convert(ids)?))?;
                cnt += hi - lo;
                segments.push([lo, hi]);
            }
            json!({"cnt": cnt, "segment_by_shard": segments})
        }
        ("search_docs", Some(_)) => {
            let maxnum = args.int("maxnum", 1, 1, 10)? as usize;
            let max_disp_len = args.int("max_disp_len", 1000, 1, 10_000)?;
            let Some(q) = query.as_ref() else {
                return Err(ApiError::internal("a query went missing".into()));
            };
            search_docs(index, q, maxnum, max_disp_len)?
        }
        ("find_cnf", Some(_)) => {
            let maxnum = args.int("maxnum", 10, 1, 1000)? as usize;
            let Some(q) = query.as_ref() else {
                return Err(ApiError::internal("a query went missing".into()));
            };
            find_cnf(index, q, maxnum)?
        }
        ("get_doc_by_rank" | "get_doc_by_ptr", _) => {
            let max_disp_len = args.int("max_disp_len", 1000, 1, 10_000)?;
            let s = args.required_int("s", u64::MAX)?;
            let shard = index.shards().get(s as usize).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no shard s={s} (the index has {})",
                    index.shards().len()
                ))
            })?;
            let position = if query_type == "get_doc_by_rank" {
                let rank = args.required_int("rank", u64::MAX)?;
                with_view!(shard, |v| {
                    if rank >= v.len() {
                        return Err(ApiError::bad_request(format!(
                            "rank {rank} is past shard {s}'s {} suffixes",
                            v.len()
                        )));
                    }
                    Ok::<u64, ApiError>(v.suffix(rank)? as u64)
                })?
            } else {
                let ptr = args.required_int("ptr", u64::MAX)?;
                if ptr >= shard.manifest.tokens {
                    return Err(ApiError::bad_request(format!(
                        "ptr {ptr} is past shard {s}'s {} token positions",
                        shard.manifest.tokens
                    )));
                }
                ptr
            };
            let (doc_id, offset) = with_view!(shard, |v| v.locate(position))?;
            let needles = match &query {
                Some(q) => needles(q),
                None => Vec::new(),
            };
            document(index, doc_id, offset, 1, max_disp_len, &needles)?
        }
        (_, Some(Query::Cnf(_))) => {
            return Err(ApiError::bad_request(format!(
                "query_type {query_type} takes one n-gram, not a CNF query"
            )))
        }
        (_, _) => return Err(ApiError::bad_request("field `query` is required".into())),
    };
    // A document's answer has the document's `token_ids`.
    let document_answer = matches!(query_type, "get_doc_by_rank" | "get_doc_by_ptr");
    if let (Some(q), Value::Object(o), false) = (&query, &mut out, document_answer) {
        o.insert("token_ids".into(), q.token_ids());
        o.insert("tokens".into(), q.tokens(index)?);
    }
    Ok(Some(Reply::Value(out)))
}

/// (last id, the ids before it) of a non-empty query.
fn split_last(ids: &[u32]) -> Result<(u32, &[u32]), ApiError> {
    ids.split_last().map(|(c, p)| (*c, p)).ok_or_else(|| {
        ApiError::bad_request("the query is empty: it needs at least one token".into())
    })
}

fn count(index: &Index, q: &Query) -> Result<Value, ApiError> {
    let count = match q {
        Query::Ngram(ids) => {
            if ids.is_empty() {
                // The empty n-gram occurs at every position, as infini-gram counts it.
                index.manifest().tokens
            } else {
                ngram::count(index, ids)?
            }
        }
        Query::Cnf(c) if c.len() == 1 => {
            let mut n = 0u64;
            for t in &c[0] {
                n += ngram::count(index, t)?;
            }
            n
        }
        Query::Cnf(c) => {
            ngram::cnf(
                index,
                &ngram::Cnf { clauses: c.clone() },
                &ngram::CnfOptions {
                    max_occurrences: None,
                    list_documents: 0,
                    seed: 0,
                },
            )?
            .documents
        }
    };
    Ok(json!({"count": count, "approx": false}))
}

/// An answer: a JSON value, or a next-token distribution written straight from its fields.
/// (Built as a `serde_json::Value`, ten next tokens took 17.7 µs to build and write, most of an
/// `ntd` request; typed, 1.4 µs.)
pub(crate) enum Reply {
    Value(Value),
    Next(NextReply),
}

/// The answer to `ntd` and `infgram_ntd`.
#[derive(serde::Serialize)]
pub(crate) struct NextReply {
    prompt_cnt: u64,
    result_by_token_id: NextShown,
    support: usize,
    approx: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    longest_suffix: Option<String>,
    token_ids: Value,
    tokens: Value,
    latency: f64,
}

/// The `max_support` most frequent next tokens, as infini-gram's `result_by_token_id`: an object
/// from token id to `{cont_cnt, prob, token}`, most frequent first.
struct NextShown {
    prefix_count: u64,
    shown: Vec<(u32, u64, String)>,
}

impl serde::Serialize for NextShown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            cont_cnt: u64,
            prob: f64,
            token: &'a str,
        }
        s.collect_map(self.shown.iter().map(|(id, count, token)| {
            (
                id,
                Entry {
                    cont_cnt: *count,
                    prob: *count as f64 / self.prefix_count as f64,
                    token,
                },
            )
        }))
    }
}

impl NextReply {
    /// The answer for query `ids` whose (suffix's) distribution is `n`.
    fn new(
        index: &Index,
        n: &ngram::NextTokens,
        max_support: usize,
        ids: &[u32],
    ) -> Result<NextReply, ApiError> {
        let t = index.tokenizer()?;
        let shown = n
            .next
            .iter()
            .take(max_support)
            .map(|&(id, count)| (id, count, t.id_to_token(id).unwrap_or_default()))
            .collect();
        Ok(NextReply {
            prompt_cnt: n.prefix_count,
            result_by_token_id: NextShown {
                prefix_count: n.prefix_count,
                shown,
            },
            support: n.next.len(),
            approx: false,
            suffix_len: None,
            longest_suffix: None,
            token_ids: json!(ids),
            tokens: json!(show::token_strings(index, ids)?),
            latency: 0.0,
        })
    }
}

/// Each n-gram of the query with its clause's number as label.
fn needles(q: &Query) -> Vec<(Vec<u32>, String)> {
    match q {
        Query::Ngram(ids) => vec![(ids.clone(), "0".to_string())],
        Query::Cnf(c) => c
            .iter()
            .enumerate()
            .flat_map(|(i, clause)| clause.iter().map(move |t| (t.clone(), i.to_string())))
            .collect(),
    }
}

/// One document as infini-gram shows it: a window of `max_disp_len` tokens around `needle`, its
/// text in pieces with the needles labeled.
fn document(
    index: &Index,
    doc_id: u64,
    needle: u64,
    needle_len: u64,
    max_disp_len: u64,
    needles: &[(Vec<u32>, String)],
) -> Result<Value, ApiError> {
    let r = docs::record(index, doc_id)?;
    let w = show::window(
        index,
        doc_id,
        r.token_count,
        needle,
        needle_len,
        max_disp_len,
    )?;
    let spans: Vec<Value> = show::labeled_pieces(index, &w.tokens, needles)?
        .into_iter()
        .map(|(text, label)| json!([text, label]))
        .collect();
    Ok(json!({
        "doc_ix": doc_id,
        "doc_len": r.token_count,
        "disp_len": w.tokens.len(),
        "disp_offset": w.start,
        "needle_offset": needle,
        "metadata": show::metadata(&r),
        "token_ids": w.tokens,
        "blocked": false,
        "spans": spans,
    }))
}

/// The first occurrence of any of the needles in a document: (offset, length).
fn first_hit(tokens: &[u32], needles: &[(Vec<u32>, String)]) -> (u64, u64) {
    let mut best: Option<(usize, usize)> = None;
    for (n, _) in needles {
        if n.is_empty() || n.len() > tokens.len() {
            continue;
        }
        if let Some(i) = tokens.windows(n.len()).position(|w| w == &n[..]) {
            if best.is_none_or(|(b, _)| i < b) {
                best = Some((i, n.len()));
            }
        }
    }
    best.map_or((0, 0), |(i, l)| (i as u64, l as u64))
}

fn matching(index: &Index, q: &Query, list: usize) -> Result<ngram::CnfResult, ApiError> {
    let clauses = match q {
        Query::Ngram(ids) if ids.is_empty() => {
            return Err(ApiError::bad_request("the query is empty".into()))
        }
        _ => q_clauses(q),
    };
    Ok(ngram::cnf(
        index,
        &ngram::Cnf { clauses },
        &ngram::CnfOptions {
            max_occurrences: None,
            list_documents: list,
            seed: 0,
        },
    )?)
}

fn q_clauses(q: &Query) -> Vec<Vec<Vec<u32>>> {
    match q {
        Query::Ngram(ids) => vec![vec![ids.clone()]],
        Query::Cnf(c) => c.clone(),
    }
}

fn search_docs(
    index: &Index,
    q: &Query,
    maxnum: usize,
    max_disp_len: u64,
) -> Result<Value, ApiError> {
    let r = matching(index, q, maxnum)?;
    let needles = needles(q);
    let mut documents = Vec::new();
    for &doc in &r.doc_ids {
        // The whole document (the end is clamped to it); `document` reads its record.
        let tokens = index.doc_tokens(doc, 0, u64::MAX)?;
        let (at, n) = first_hit(&tokens, &needles);
        documents.push(document(index, doc, at, n, max_disp_len, &needles)?);
    }
    let message = format!(
        "{} document{} match{}; showing the first {} in document order",
        r.documents,
        if r.documents == 1 { "" } else { "s" },
        if r.documents == 1 { "es" } else { "" },
        documents.len()
    );
    Ok(json!({
        "cnt": r.documents,
        "approx": false,
        "idxs": r.doc_ids,
        "message": message,
        "documents": documents,
    }))
}

fn find_cnf(index: &Index, q: &Query, maxnum: usize) -> Result<Value, ApiError> {
    let r = matching(index, q, maxnum)?;
    let first_clause = q_clauses(q).swap_remove(0);
    let mut ptrs: Vec<Vec<u64>> = vec![Vec::new(); index.shards().len()];
    for &doc in &r.doc_ids {
        let (k, local) = index.locate_doc_index(doc)?;
        let (start, _) = with_view!(&index.shards()[k], |v| v.doc_span(local))?;
        // The whole document (the end is clamped to it).
        let tokens = index.doc_tokens(doc, 0, u64::MAX)?;
        for term in &first_clause {
            if term.len() > tokens.len() {
                continue;
            }
            for (i, w) in tokens.windows(term.len()).enumerate() {
                if w == &term[..] {
                    ptrs[k].push(start as u64 + i as u64);
                }
            }
        }
        ptrs[k].sort_unstable();
    }
    Ok(json!({
        "cnt": r.documents,
        "approx": false,
        "idxs": r.doc_ids,
        "ptrs_by_shard": ptrs,
    }))
}

//! What the endpoints share: reading a JSON request's fields with errors that name them, token
//! strings, documents' metadata and display windows with their hits marked.

use familiar::index::Index;
use familiar_query::docs::DocRecord;
use serde_json::{Map, Value};

use crate::ApiError;

/// A JSON request body's fields, read with errors naming the field and what it should be.
pub(crate) struct Args<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    pub(crate) fn new(body: &'a Value) -> Result<Args<'a>, ApiError> {
        match body {
            Value::Object(obj) => Ok(Args { obj }),
            other => Err(ApiError::bad_request(format!(
                "the request body must be a JSON object, not {}",
                kind_of(other)
            ))),
        }
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.obj.get(key).is_some_and(|v| !v.is_null())
    }

    /// Whether `key` is present with the value `null` (an explicit "no limit").
    pub(crate) fn obj_has_null(&self, key: &str) -> bool {
        self.obj.get(key).is_some_and(Value::is_null)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(ApiError::bad_request(format!(
                "field `{key}` must be a string, not {}",
                kind_of(v)
            ))),
        }
    }

    pub(crate) fn required_str(&self, key: &str) -> Result<&'a str, ApiError> {
        self.str(key)?
            .ok_or_else(|| ApiError::bad_request(format!("field `{key}` is required")))
    }

    /// An integer in `[min, max]`, `default` when absent.
    pub(crate) fn int(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "field `{key}` must be an integer from {min} to {max}, not {v}"
                ))),
            },
        }
    }

    /// A required integer in `[0, max]`.
    pub(crate) fn required_int(&self, key: &str, max: u64) -> Result<u64, ApiError> {
        if !self.has(key) {
            return Err(ApiError::bad_request(format!("field `{key}` is required")));
        }
        self.int(key, 0, 0, max)
    }

    pub(crate) fn float(
        &self,
        key: &str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x >= min && x <= max => Ok(x),
                _ => Err(ApiError::bad_request(format!(
                    "field `{key}` must be a number from {min} to {max}, not {v}"
                ))),
            },
        }
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(ApiError::bad_request(format!(
                "field `{key}` must be true or false, not {v}"
            ))),
        }
    }

    /// A list of token ids.
    pub(crate) fn ids(&self, key: &str) -> Result<Option<Vec<u32>>, ApiError> {
        self.get(key).map(|v| ids_of(v, key)).transpose()
    }

    /// A list of strings.
    pub(crate) fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::bad_request(format!("field `{key}` must be a list of strings"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(ApiError::bad_request(format!(
                "field `{key}` must be a list of strings, not {}",
                kind_of(v)
            ))),
        }
    }
}

/// Whether every shard of the index has a text index (BM25 ranking needs it).
pub(crate) fn has_text_index(index: &Index) -> bool {
    index
        .shards()
        .iter()
        .all(|s| s.manifest.text_index.is_some())
}

/// A JSON value's kind, for messages.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A list of token ids (`what` names it in errors).
pub(crate) fn ids_of(v: &Value, what: &str) -> Result<Vec<u32>, ApiError> {
    let bad = || ApiError::bad_request(format!("`{what}` must be a list of token ids (integers)"));
    let Value::Array(a) = v else {
        return Err(bad());
    };
    a.iter()
        .map(|x| {
            x.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Tokenizes `text`, refusing more than `max_tokens` tokens.
pub(crate) fn encode(index: &Index, text: &str, max_tokens: usize) -> Result<Vec<u32>, ApiError> {
    // A token is at least one byte: a text of more bytes than a few times the limit cannot fit,
    // and is refused before the tokenizer spends time on it.
    if text.len() > max_tokens.saturating_mul(64) {
        return Err(too_long(text.len(), "bytes", max_tokens));
    }
    let ids = index.tokenizer()?.encode(text)?;
    check_len(&ids, max_tokens)?;
    Ok(ids)
}

/// Refuses a query of more than `max_tokens` tokens; checks the ids against the vocabulary.
pub(crate) fn check_ids(index: &Index, ids: &[u32], max_tokens: usize) -> Result<(), ApiError> {
    check_len(ids, max_tokens)?;
    index.check_ids(ids)?;
    Ok(())
}

fn check_len(ids: &[u32], max_tokens: usize) -> Result<(), ApiError> {
    if ids.len() > max_tokens {
        return Err(too_long(ids.len(), "tokens", max_tokens));
    }
    Ok(())
}

fn too_long(n: usize, unit: &str, max: usize) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "query-too-long",
        format!("the query is {n} {unit}, over the server's limit of {max} tokens"),
    )
}

/// The tokenizer's string of each id (the separator, which no text has, as `<|doc|>`).
pub(crate) fn token_strings(index: &Index, ids: &[u32]) -> Result<Vec<String>, ApiError> {
    let t = index.tokenizer()?;
    Ok(ids
        .iter()
        .map(|&id| t.id_to_token(id).unwrap_or_else(|| "<|doc|>".to_string()))
        .collect())
}

/// A document's metadata as one JSON object: its id, source, input file and metadata fields.
pub(crate) fn metadata(r: &DocRecord) -> Value {
    let fields: Map<String, Value> = r
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "id": r.external_id,
        "source": r.source,
        "input_file": r.input_file,
        "metadata": fields,
    })
}

/// A window of a document's tokens.
pub(crate) struct Window {
    /// Its first token's offset in the document.
    pub(crate) start: u64,
    /// Its tokens.
    pub(crate) tokens: Vec<u32>,
}

/// The window of at most `len` tokens of document `doc_id` (of `doc_len` tokens) that shows
/// `needle_len` tokens at `needle`, with as much context before as after where the document
/// allows.
pub(crate) fn window(
    index: &Index,
    doc_id: u64,
    doc_len: u64,
    needle: u64,
    needle_len: u64,
    len: u64,
) -> Result<Window, ApiError> {
    let context = len.saturating_sub(needle_len) / 2;
    let mut start = needle.saturating_sub(context);
    let end = start.saturating_add(len).min(doc_len);
    // Near the document's end, use the room left there for context before.
    start = start.min(end.saturating_sub(len));
    let tokens = index.doc_tokens(doc_id, start, end)?;
    Ok(Window { start, tokens })
}

/// The text of `tokens` in pieces, each marked with the label of the needle it belongs to
/// (`None`: no needle): infini-gram's `spans`. A token covered by several needles takes the
/// first one's label.
pub(crate) fn labeled_pieces(
    index: &Index,
    tokens: &[u32],
    needles: &[(Vec<u32>, String)],
) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let mut label: Vec<Option<usize>> = vec![None; tokens.len()];
    for (k, (needle, _)) in needles.iter().enumerate() {
        if needle.is_empty() || needle.len() > tokens.len() {
            continue;
        }
        for i in 0..=tokens.len() - needle.len() {
            if tokens[i..i + needle.len()] == needle[..] {
                for l in &mut label[i..i + needle.len()] {
                    l.get_or_insert(k);
                }
            }
        }
    }
    let t = index.tokenizer()?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let mut j = i + 1;
        while j < tokens.len() && label[j] == label[i] {
            j += 1;
        }
        out.push((
            t.decode(&tokens[i..j])?,
            label[i].map(|k| needles[k].1.clone()),
        ));
        i = j;
    }
    Ok(out)
}

//! `POST /v1/sql`: read-only SQL (familiar-sql's policy: no writes, no files other than the
//! registered tables, no settings) over the served indexes' documents tables
//! (`{index}_documents`) and the Parquet tables under `--tables`, each statement's answer cut at
//! the row limit and run within the server's time limit.

use std::path::Path;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use familiar_sql::{Sql, SqlOptions};
use serde_json::{json, Value};

use crate::show::Args;
use crate::v1::{respond, wants_arrow, Answer};
use crate::{ApiError, App};

/// The SQL name of index `name`'s documents table.
pub(crate) fn documents_table(name: &str) -> String {
    let base: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let base = if base.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{base}")
    } else {
        base
    };
    format!("{base}_documents")
}

/// The session: read-only, the server's time limit, the row limit.
pub(crate) fn session(
    indexes: &[(String, &Path)],
    tables: Option<&Path>,
    limits: &crate::Limits,
) -> familiar::Result<Sql> {
    let sql_err = |e: familiar_sql::Error| familiar::Error::Config(format!("SQL tables: {e}"));
    let mut sql = Sql::with_options(SqlOptions {
        allow_writes: false,
        time_limit: Some(limits.time_limit),
        ..SqlOptions::default()
    })
    .map_err(sql_err)?;
    sql.set_row_limit(Some(limits.sql_rows));
    for (name, dir) in indexes {
        sql.attach_documents(dir, &documents_table(name))
            .map_err(sql_err)?;
    }
    if let Some(dir) = tables {
        sql.register_dir(dir).map_err(sql_err)?;
    }
    Ok(sql)
}

pub(crate) fn sql_error(e: familiar_sql::Error) -> ApiError {
    use familiar_sql::Error as E;
    let message = e.to_string();
    match e {
        E::Refused { .. } => ApiError::new(StatusCode::FORBIDDEN, "refused", message),
        E::Sql { .. } => ApiError::bad_request(message),
        E::Limit(_) | E::Cancelled => ApiError::timeout(message),
        _ => ApiError::internal(message),
    }
}

/// `POST /v1/sql` `{query}`: each statement's columns and rows (JSON), or the last statement's
/// rows as an Arrow IPC stream.
pub(crate) async fn handle(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let arrow = wants_arrow(&headers);
    let r = async {
        let Json(body) = body?;
        let sql = Arc::clone(&app.sql);
        app.run(move || {
            let args = Args::new(&body)?;
            let query = args.required_str("query")?;
            let mut results = sql.run(query).map_err(sql_error)?;
            if arrow {
                let Some(last) = results.pop() else {
                    return Err(ApiError::bad_request("no statement to run".into()));
                };
                let batch = arrow_select::concat::concat_batches(&last.schema, &last.batches)
                    .map_err(|e| ApiError::internal(format!("joining the result: {e}")))?;
                return Ok(Answer::Arrow(batch));
            }
            let mut statements = Vec::new();
            for r in results {
                let columns: Vec<Value> = r
                    .schema
                    .fields()
                    .iter()
                    .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                    .collect();
                let mut writer = arrow_json::ArrayWriter::new(Vec::new());
                for b in &r.batches {
                    writer
                        .write(b)
                        .map_err(|e| ApiError::internal(format!("writing JSON rows: {e}")))?;
                }
                writer
                    .finish()
                    .map_err(|e| ApiError::internal(format!("writing JSON rows: {e}")))?;
                let bytes = writer.into_inner();
                let rows: Value = if bytes.is_empty() {
                    json!([])
                } else {
                    serde_json::from_slice(&bytes)
                        .map_err(|e| ApiError::internal(format!("reading JSON rows: {e}")))?
                };
                statements.push(json!({
                    "sql": r.sql,
                    "columns": columns,
                    "rows": rows,
                    "truncated": r.truncated,
                }));
            }
            Ok(Answer::Json(json!({ "statements": statements })))
        })
        .await
    }
    .await;
    respond("sql", r)
}

//! `familiar serve`: indexes over HTTP (infini-gram- and OLMoTrace-compatible endpoints, the
//! native /v1/ API, a web page), until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Arguments of `familiar serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An index to serve, as NAME=DIR (repeat for several). Requests name it by NAME.
    #[arg(long = "index", value_name = "NAME=DIR", required = true)]
    indexes: Vec<String>,
    /// A directory of Parquet tables to query with SQL (`POST /v1/sql`, read-only), beside each
    /// index's documents table (`NAME_documents`).
    #[arg(long)]
    tables: Option<PathBuf>,
    /// Also serve the SQL session over Arrow Flight SQL (gRPC) on this address, for ADBC and JDBC
    /// clients (`grpc://ADDR`; port 0: any free port, printed).
    #[arg(long, value_name = "ADDR")]
    flight_sql: Option<String>,
    /// Most rows of a SQL statement's answer (the answer says when rows were left out).
    #[arg(long, default_value_t = 10_000)]
    sql_rows: usize,
    /// Keep the next-token distributions of prefixes occurring at least this many times once
    /// computed (the costly ones: the empty prefix, " the", ",").
    #[arg(long, default_value_t = 10_000)]
    ntd_cache_min_count: u64,
    /// At most this many MB of them per index (in memory).
    #[arg(long, default_value_t = 256)]
    ntd_cache_mb: usize,
    /// Compute the distributions of this many of the most frequent prefixes at start, in the
    /// background (0: only on first use).
    #[arg(long, default_value_t = 1000)]
    ntd_warm: usize,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Queries running at once (default: the number of CPUs).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Requests waiting for a free thread beyond those; more are answered 503 at once.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Longest a request may take, in seconds (then 503 `timeout`).
    #[arg(long, default_value_t = 30.0)]
    time_limit: f64,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_request_bytes: usize,
    /// Largest response body, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_response_bytes: usize,
    /// Longest query, in tokens.
    #[arg(long, default_value_t = 10_000)]
    max_query_tokens: usize,
    /// Allow browsers on this origin to call the API (CORS; repeat for several, `*` for any).
    /// Default: none.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// No request log on stderr.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<i32> {
    let mut indexes = Vec::new();
    for spec in &a.indexes {
        let Some((name, dir)) = spec.split_once('=') else {
            bail!("--index {spec:?}: expected NAME=DIR");
        };
        indexes.push((name.to_string(), PathBuf::from(dir)));
    }
    let max = familiar_serve::MAX_TIME_LIMIT.as_secs_f64();
    if !(a.time_limit > 0.0 && a.time_limit <= max) {
        bail!(
            "--time-limit must be a positive number of seconds, at most {max} (a year), not {}",
            a.time_limit
        );
    }
    let defaults = familiar_serve::Limits::default();
    let limits = familiar_serve::Limits {
        concurrency: a.concurrency.unwrap_or(defaults.concurrency),
        queue: a.queue,
        time_limit: Duration::from_secs_f64(a.time_limit),
        max_request_bytes: a.max_request_bytes,
        max_response_bytes: a.max_response_bytes,
        max_query_tokens: a.max_query_tokens,
        sql_rows: a.sql_rows,
        ntd_cache_min_count: a.ntd_cache_min_count,
        ntd_cache_bytes: a.ntd_cache_mb.saturating_mul(1 << 20),
        ntd_warm: a.ntd_warm,
        cors_origins: a.cors_origins,
        log_requests: !a.quiet,
    };
    let app = familiar_serve::App::open_with_tables(&indexes, a.tables.as_deref(), limits)?;
    let names: Vec<String> = app.indexes().keys().cloned().collect();
    familiar_serve::run_until_signal(app, &a.addr, a.flight_sql.as_deref(), |addr, flight| {
        if let Some(f) = flight {
            eprintln!("familiar serve: Flight SQL on grpc://{f}");
        }
        eprintln!(
            "familiar serve: listening on http://{addr} (indexes: {})",
            names.join(", ")
        );
    })
    .with_context(|| format!("serving on {}", a.addr))?;
    eprintln!("familiar serve: stopped");
    Ok(0)
}

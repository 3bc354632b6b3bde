//! # familiar-serve
//!
//! `familiar serve`: familiar's indexes over HTTP, for the researchers who share one big machine's
//! indexes instead of building their own.
//!
//! - `POST /`: infini-gram's API (`{index, query_type, query | query_ids, …}`), exact where
//!   infini-gram approximates ([`infinigram`]).
//! - `GET /indexes`, `GET /{index}/documents/{i}`, `POST /{index}/attribution`: OLMoTrace's
//!   ([`olmotrace`]).
//! - `/v1/…`: the native JSON API (and Arrow IPC for bulk results), described by the OpenAPI file
//!   served at `/v1/openapi.json` ([`v1`]).
//! - `GET /`: a web page to explore the indexes (files embedded in the binary, no CDN).
//! - `GET /healthz`, `GET /metrics` (Prometheus), one JSON log line per request on stderr.
//!
//! Index names come from the command line; a request can only name one of them, never a path.
//! Library calls run on blocking threads: at most [`Limits::concurrency`] at once, at most
//! [`Limits::queue`] more waiting; anything beyond is refused at once with 503
//! (`server-overloaded`), and a request that does not finish within [`Limits::time_limit`] is
//! answered with 503 (`timeout`). Errors are RFC 9457 problem documents that also carry
//! infini-gram's `error` field.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let app = familiar_serve::App::open(
//!     &[("pile".to_string(), "indexes/pile".into())],
//!     familiar_serve::Limits::default(),
//! )?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! familiar_serve::serve(listener, app, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod error;
#[cfg(feature = "flight-sql")]
pub mod flight;
pub mod infinigram;
mod metrics;
pub mod olmotrace;
mod show;
#[cfg(feature = "sql")]
mod sql;
pub mod v1;
mod web;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use familiar::index::{Index, OpenOptions};
use tokio::sync::Semaphore;

pub use error::ApiError;
use metrics::Metrics;

/// The reads of the suffix arrays a data-dependent query may make on the runtime's thread
/// before it is handed to a blocking thread ([`App::run_within`]): at most about a tenth of a
/// millisecond from the page cache. (128 and 512 were measured in the serve bench: the same
/// tails under load; 512 served more next-token requests per second, 7,970 against 6,848.)
pub const INLINE_READS: u64 = 512;

/// The most queries [`Limits::concurrency`] may allow at once.
pub const MAX_CONCURRENCY: usize = 65_536;
/// The longest [`Limits::queue`].
pub const MAX_QUEUE: usize = 1 << 24;
/// The longest [`Limits::time_limit`]: a year.
pub const MAX_TIME_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The service's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Library calls running at once (blocking threads).
    pub concurrency: usize,
    /// Requests waiting for a free thread beyond those; more are refused with 503.
    pub queue: usize,
    /// Longest a request may take (waiting included); past it the answer is 503 `timeout`.
    pub time_limit: Duration,
    /// Largest request body, in bytes (413 beyond).
    pub max_request_bytes: usize,
    /// Largest response body, in bytes (413 beyond: ask for fewer results).
    pub max_response_bytes: usize,
    /// Longest query text, in tokens.
    pub max_query_tokens: usize,
    /// Next-token distributions of prefixes occurring at least this many times are kept once
    /// computed (`ntd`, `infgram_ntd`).
    pub ntd_cache_min_count: u64,
    /// At most this many bytes of them per index.
    pub ntd_cache_bytes: usize,
    /// Prefixes whose distributions are computed at start (in the background), most frequent
    /// first.
    pub ntd_warm: usize,
    /// Most rows of a SQL statement's answer (`POST /v1/sql`); the rest are left out and the
    /// answer says so.
    pub sql_rows: usize,
    /// Origins allowed to call the API from a browser (CORS); empty: none (same-origin only).
    pub cors_origins: Vec<String>,
    /// Write one JSON line per request to stderr.
    pub log_requests: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue: 64,
            time_limit: Duration::from_secs(30),
            max_request_bytes: 1 << 20,
            max_response_bytes: 64 << 20,
            max_query_tokens: 10_000,
            sql_rows: 10_000,
            ntd_cache_min_count: 10_000,
            ntd_cache_bytes: 256 << 20,
            ntd_warm: 1000,
            cors_origins: Vec::new(),
            log_requests: true,
        }
    }
}

/// One served index.
#[derive(Debug)]
pub struct Served {
    /// Its name (from the command line).
    pub name: String,
    /// The open index.
    pub index: Arc<Index>,
    /// Its directory (never shown to clients).
    pub dir: PathBuf,
    /// Next-token distributions of its frequent prefixes.
    pub ntd: Arc<familiar_query::ngram::NextTokensCache>,
}

/// The service: its indexes, limits and counters.
#[derive(Debug)]
pub struct App {
    indexes: BTreeMap<String, Served>,
    limits: Limits,
    /// Admission: running plus waiting requests.
    admit: Arc<Semaphore>,
    /// Running library calls.
    run: Arc<Semaphore>,
    metrics: Metrics,
    started: Instant,
    /// Set to stop the background warming of the next-token caches.
    warming: Arc<std::sync::atomic::AtomicBool>,
    /// The SQL session over the documents tables and `--tables`.
    #[cfg(feature = "sql")]
    sql: Arc<familiar_sql::Sql>,
}

/// Whether `name` may name an index: letters, digits, `_`, `-` and `.`, not starting with `.`,
/// at most 64 characters (so it can never read as a path).
pub fn valid_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl App {
    /// Opens the indexes (`(name, directory)` pairs) and checks their names and tokenizers.
    pub fn open(indexes: &[(String, PathBuf)], limits: Limits) -> familiar::Result<Arc<App>> {
        App::open_with_tables(indexes, None, limits)
    }

    /// [`App::open`], with SQL over the Parquet tables under `tables` too (the `sql` feature).
    pub fn open_with_tables(
        indexes: &[(String, PathBuf)],
        tables: Option<&std::path::Path>,
        limits: Limits,
    ) -> familiar::Result<Arc<App>> {
        #[cfg(not(feature = "sql"))]
        if tables.is_some() {
            return Err(familiar::Error::Config(
                "this build of familiar-serve has no SQL (the `sql` feature)".into(),
            ));
        }
        if indexes.is_empty() {
            return Err(familiar::Error::Config(
                "give at least one index to serve (NAME=DIR)".into(),
            ));
        }
        if limits.concurrency == 0 || limits.concurrency > MAX_CONCURRENCY {
            return Err(familiar::Error::Config(format!(
                "the concurrency must be from 1 to {MAX_CONCURRENCY}, not {}",
                limits.concurrency
            )));
        }
        if limits.queue > MAX_QUEUE {
            return Err(familiar::Error::Config(format!(
                "the queue must be at most {MAX_QUEUE} requests, not {}",
                limits.queue
            )));
        }
        if limits.time_limit.is_zero() || limits.time_limit > MAX_TIME_LIMIT {
            return Err(familiar::Error::Config(format!(
                "the time limit must be more than 0 and at most {} s",
                MAX_TIME_LIMIT.as_secs()
            )));
        }
        let mut map = BTreeMap::new();
        for (name, dir) in indexes {
            if !valid_index_name(name) {
                return Err(familiar::Error::Config(format!(
                    "index name {name:?}: use letters, digits, '_', '-' and '.' (not first), \
                     at most 64 characters"
                )));
            }
            if map.contains_key(name) {
                return Err(familiar::Error::Config(format!(
                    "index name {name:?} is given twice"
                )));
            }
            let index = Index::open_with(dir, OpenOptions { preload: false })?;
            // The tokenizer is needed for every text query: load it now, so a missing one is
            // an error at start and not in every request.
            index.tokenizer()?;
            map.insert(
                name.clone(),
                Served {
                    name: name.clone(),
                    index: Arc::new(index),
                    dir: dir.clone(),
                    ntd: Arc::new(familiar_query::ngram::NextTokensCache::new(
                        limits.ntd_cache_min_count,
                        limits.ntd_cache_bytes,
                    )),
                },
            );
        }
        if limits.sql_rows == 0 {
            return Err(familiar::Error::Config(
                "the SQL row limit must be at least 1".into(),
            ));
        }
        #[cfg(feature = "sql")]
        let sql = {
            let dirs: Vec<(String, &std::path::Path)> = map
                .values()
                .map(|s: &Served| (s.name.clone(), s.dir.as_path()))
                .collect();
            Arc::new(sql::session(&dirs, tables, &limits)?)
        };
        let warming = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if limits.ntd_warm > 0 {
            for served in map.values() {
                let (index, cache) = (Arc::clone(&served.index), Arc::clone(&served.ntd));
                let (n, stop, name) = (limits.ntd_warm, Arc::clone(&warming), served.name.clone());
                let quiet = !limits.log_requests;
                std::thread::Builder::new()
                    .name(format!("familiar-warm-{name}"))
                    .spawn(move || {
                        let start = Instant::now();
                        match cache.warm(&index, n, &stop) {
                            Ok(k) if !quiet => eprintln!(
                                "familiar serve: {name}: next-token distributions of {k} frequent \
                                 prefixes ready ({:.1} MB, {:.1} s)",
                                cache.bytes() as f64 / 1e6,
                                start.elapsed().as_secs_f64()
                            ),
                            Ok(_) => {}
                            Err(e) => eprintln!(
                                "familiar serve: {name}: warming the next-token cache failed: {e}"
                            ),
                        }
                    })
                    .map_err(|e| familiar::Error::Bug(format!("starting a thread: {e}")))?;
            }
        }
        let total = limits.concurrency.saturating_add(limits.queue);
        Ok(Arc::new(App {
            warming,
            #[cfg(feature = "sql")]
            sql,
            indexes: map,
            admit: Arc::new(Semaphore::new(total)),
            run: Arc::new(Semaphore::new(limits.concurrency)),
            limits,
            metrics: Metrics::default(),
            started: Instant::now(),
        }))
    }

    /// The served indexes by name.
    pub fn indexes(&self) -> &BTreeMap<String, Served> {
        &self.indexes
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The index named `name`, or a 404 naming the served ones.
    pub(crate) fn index(&self, name: &str) -> Result<&Served, ApiError> {
        self.indexes.get(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "unknown index {name:?} (served: {})",
                self.indexes.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Runs `f`, a library call that takes microseconds (a count, a probability: a few binary
    /// searches of the suffix arrays), right here on the runtime's thread: no hand-off to a
    /// blocking thread and no wait behind costly queries. It still counts toward admission (503
    /// when the server is full), and a panic becomes a 500.
    pub(crate) fn run_inline<T>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _admit = Arc::clone(&self.admit)
            .try_acquire_owned()
            .map_err(|_| self.overloaded())?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
            Err(ApiError::internal(
                "the query failed unexpectedly (a bug in familiar, please report it)".into(),
            ))
        })
    }

    /// Runs `f` with a budget of [`INLINE_READS`] reads on the runtime's thread (as
    /// [`App::run_inline`]); when it answers `None` — the query needs more — runs `f` without a
    /// budget on a blocking thread (as [`App::run`]). For queries whose cost depends on the data,
    /// not on the request (a next-token distribution: cheap for most prefixes, tens of
    /// milliseconds for the most frequent uncached ones): the cheap ones skip the hand-off, and
    /// a costly one wastes at most the budget before it is handed off.
    pub(crate) async fn run_within<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Fn(Option<u64>) -> Result<Option<T>, ApiError> + Send + 'static,
    {
        if let Some(answer) = self.run_inline(|| f(Some(INLINE_READS)))? {
            return Ok(answer);
        }
        self.run(move || f(None)?.ok_or_else(ApiError::no_answer))
            .await
    }

    fn overloaded(&self) -> ApiError {
        ApiError::overloaded(format!(
            "the server is busy ({} queries running, {} waiting): try again shortly",
            self.limits.concurrency, self.limits.queue
        ))
    }

    /// Runs `f` (a library call) on a blocking thread under the admission, concurrency and time
    /// limits. The permits travel with the work: a call past its time limit keeps its slot until
    /// it really ends, so overload is counted honestly.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let admit = Arc::clone(&self.admit)
            .try_acquire_owned()
            .map_err(|_| self.overloaded())?;
        let limit = self.limits.time_limit;
        let deadline = tokio::time::Instant::now() + limit;
        let timeout = || {
            ApiError::timeout(format!(
                "the query ran past the server's time limit of {} ms",
                limit.as_millis()
            ))
        };
        let running = tokio::time::timeout_at(deadline, Arc::clone(&self.run).acquire_owned())
            .await
            .map_err(|_| timeout())?
            .map_err(|_| ApiError::internal("the server is shutting down".into()))?;
        let handle = tokio::task::spawn_blocking(move || {
            let _permits = (admit, running);
            f()
        });
        match tokio::time::timeout_at(deadline, handle).await {
            Err(_) => Err(timeout()),
            Ok(Err(e)) => Err(ApiError::internal(format!(
                "the query failed unexpectedly (a bug in familiar, please report it): {e}"
            ))),
            Ok(Ok(r)) => r,
        }
    }
}

/// A label for the metrics and the log: which query a request ran. Handlers add it to their
/// response's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryKind(pub &'static str);

/// The service's routes.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.limits.max_request_bytes;
    Router::new()
        .route("/", get(web::page).post(infinigram::handle))
        .route("/static/{file}", get(web::asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/indexes", get(olmotrace::indexes))
        .route("/{index}/documents/{id}", get(olmotrace::document))
        .route("/{index}/attribution", post(olmotrace::attribution))
        .merge(v1::routes())
        .merge(sql_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            around_request,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

#[cfg(feature = "sql")]
fn sql_routes() -> Router<Arc<App>> {
    Router::new().route("/v1/sql", post(sql::handle))
}

#[cfg(not(feature = "sql"))]
fn sql_routes() -> Router<Arc<App>> {
    Router::new()
}

/// Serves `app` on `listener` until `shutdown` resolves; requests under way then finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Answers are written in more than one piece (head, body): without TCP_NODELAY, Nagle's
    // algorithm holds the second until the client's delayed ACK (up to 40 ms) on kept-alive
    // connections.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The runtime a server runs on: a worker per core for the connections and the microsecond
/// queries, and as many blocking threads as queries may run at once (more would only be idle
/// threads, each with its own stack and allocator arena).
pub fn runtime(limits: &Limits) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("familiar-serve")
        .max_blocking_threads(limits.concurrency.max(1))
        .build()
}

/// Serves `app` on `addr` (port 0: any free port) in a runtime of its own until SIGTERM or
/// Ctrl-C, and Arrow Flight SQL on `flight_sql` when given (the `flight-sql` feature);
/// `on_ready` gets the bound addresses once the servers accept connections.
pub fn run_until_signal(
    app: Arc<App>,
    addr: &str,
    flight_sql: Option<&str>,
    on_ready: impl FnOnce(std::net::SocketAddr, Option<std::net::SocketAddr>),
) -> std::io::Result<()> {
    let runtime = runtime(&app.limits)?;
    let bind = |addr: &str| {
        runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
    };
    let listener = bind(addr)?;
    #[cfg(not(feature = "flight-sql"))]
    if let Some(f) = flight_sql {
        return Err(std::io::Error::other(format!(
            "cannot serve Flight SQL on {f}: this build of familiar-serve has no Flight SQL (the \
             `flight-sql` feature)"
        )));
    }
    let flight_listener = flight_sql.map(bind).transpose()?;
    on_ready(
        listener.local_addr()?,
        flight_listener
            .as_ref()
            .map(tokio::net::TcpListener::local_addr)
            .transpose()?,
    );
    // One signal stops both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    runtime.spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let http = serve(listener, Arc::clone(&app), stopped());
    let served = runtime.block_on(async {
        match flight_listener {
            #[cfg(feature = "flight-sql")]
            Some(l) => {
                tokio::try_join!(http, flight::serve(l, Arc::clone(&app), stopped())).map(|_| ())
            }
            _ => http.await,
        }
    });
    app.warming
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Calls past their time limit may still be running on blocking threads: wait a little, not
    // for them. `app` is dropped here, outside the runtime: the SQL session owns a runtime of its
    // own, which must not be dropped from within an asynchronous context.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(app);
    served
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "indexes": app.indexes.keys().collect::<Vec<_>>(),
        "uptime_seconds": app.started.elapsed().as_secs_f64(),
    });
    axum::Json(body).into_response()
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let running = app.limits.concurrency - app.run.available_permits();
    let admitted = app.limits.concurrency + app.limits.queue - app.admit.available_permits();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics
            .render(running, admitted.saturating_sub(running)),
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Metrics, the request log, CORS and the response size limit, around every request.
async fn around_request(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed_origin = origin.filter(|o| {
        o.to_str()
            .is_ok_and(|o| app.limits.cors_origins.iter().any(|a| a == o || a == "*"))
    });
    let mut response = if method == Method::OPTIONS && allowed_origin.is_some() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let response_limit = app.limits.max_response_bytes as u64;
    if let Some(len) = axum::body::HttpBody::size_hint(response.body()).exact() {
        if len > response_limit {
            response = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "response-too-large",
                format!(
                    "the answer is {len} bytes, over the server's limit of {response_limit}: \
                     ask for fewer results or a shorter display length"
                ),
            )
            .into_response();
        }
    }
    if let Some(o) = allowed_origin {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, accept"),
        );
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    let kind = response
        .extensions()
        .get::<QueryKind>()
        .map_or("other", |k| k.0);
    let error = response.extensions().get::<error::ErrorKind>().map(|e| e.0);
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    app.metrics.record(kind, status, error, elapsed);
    if app.limits.log_requests {
        let line = serde_json::json!({
            "ts": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            "method": method.as_str(),
            "path": path,
            "query_type": kind,
            "status": status,
            "error": error,
            "micros": elapsed.as_micros() as u64,
        });
        eprintln!("{line}");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_cannot_be_paths() {
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "../x",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_index_name(bad), "{bad:?}");
        }
        for good in ["pile", "v4_dolma-1.7", "a.b", "A_1"] {
            assert!(valid_index_name(good), "{good:?}");
        }
    }
}

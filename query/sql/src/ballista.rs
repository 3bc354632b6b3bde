//! DataFusion Ballista with familiar's functions (feature `ballista`).
//!
//! A Ballista scheduler decodes every submitted plan with its own session's functions, and each
//! executor decodes its tasks with its function registry; stock `ballista-scheduler` and
//! `ballista-executor` processes know DataFusion's functions only, so a plan using `spearman`,
//! `log_bin` or `json_str` is refused there. The processes started here ([`scheduler`],
//! [`executor`]; the `familiar-ballista` binary) and the clients made here ([`standalone`],
//! [`remote`]) all carry familiar's functions, so the same SQL runs on the cluster as on one
//! machine — over tables every executor can read at the same path (shared storage).

use std::net::SocketAddr;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::{Error, Result};

fn ballista_error(what: &str) -> impl Fn(ballista_core::error::BallistaError) -> Error + '_ {
    move |e| Error::Other(format!("{what}: {e}"))
}

/// Ballista's session state for `config` with familiar's functions added: what the scheduler
/// plans with.
pub fn session_state(config: SessionConfig) -> datafusion::common::Result<SessionState> {
    let mut state = ballista_core::utils::default_session_builder(config)?;
    crate::udf::register_with(&mut state)?;
    Ok(state)
}

fn client_state() -> SessionState {
    let ctx = SessionContext::new();
    crate::udf::register(&ctx);
    ctx.state()
}

/// A scheduler and an executor in this process, both with familiar's functions; the client
/// session to submit to them.
pub async fn standalone() -> Result<SessionContext> {
    let ctx = SessionContext::standalone_with_state(client_state())
        .await
        .map_err(|e| Error::Other(format!("starting a standalone Ballista cluster: {e}")))?;
    // Ballista's client state replaces the function lists with its own: add familiar's again.
    crate::udf::register(&ctx);
    Ok(ctx)
}

/// A client session of the scheduler at `url` (`df://host:port`), which must have been started
/// with [`scheduler`] (or the `familiar-ballista scheduler` command) for familiar's functions.
pub async fn remote(url: &str) -> Result<SessionContext> {
    let ctx = SessionContext::remote_with_state(url, client_state())
        .await
        .map_err(|e| Error::Other(format!("connecting to the Ballista scheduler {url}: {e}")))?;
    crate::udf::register(&ctx);
    Ok(ctx)
}

/// Runs a scheduler listening on `bind` whose sessions know familiar's functions, until it
/// fails.
pub async fn scheduler(bind: SocketAddr) -> Result<()> {
    let mut config =
        SchedulerConfig::default().with_override_session_builder(Arc::new(session_state));
    config.bind_host = bind.ip().to_string();
    config.bind_port = bind.port();
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_error("the scheduler's cluster state"))?;
    start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(ballista_error("the scheduler"))
}

/// Where an executor listens and which scheduler it serves.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Address to bind.
    pub bind_host: String,
    /// Host the scheduler and other executors reach this one at (default: `bind_host`).
    pub external_host: Option<String>,
    /// Arrow Flight port (results and shuffles).
    pub port: u16,
    /// gRPC port.
    pub grpc_port: u16,
    /// The scheduler's host.
    pub scheduler_host: String,
    /// The scheduler's port.
    pub scheduler_port: u16,
    /// Tasks run at once (default: the machine's cores).
    pub vcores: Option<usize>,
    /// Directory for shuffle files (default: a temporary one).
    pub work_dir: Option<String>,
}

/// Runs an executor whose function registry holds familiar's functions, until it fails.
pub async fn executor(o: ExecutorOptions) -> Result<()> {
    let registry = BallistaFunctionRegistry::from(&client_state());
    let defaults = ExecutorProcessConfig::default();
    let config = ExecutorProcessConfig {
        bind_host: o.bind_host,
        external_host: o.external_host,
        port: o.port,
        grpc_port: o.grpc_port,
        scheduler_host: o.scheduler_host,
        scheduler_port: o.scheduler_port,
        vcores: o.vcores.unwrap_or(defaults.vcores),
        work_dir: o.work_dir,
        override_function_registry: Some(Arc::new(registry)),
        ..defaults
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(ballista_error("the executor"))
}

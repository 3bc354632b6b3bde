//! `familiar-ballista`: a DataFusion Ballista scheduler or executor that knows familiar's SQL
//! functions (`spearman`, `log_bin`, `log_bin_center`, `json_str`). Start one scheduler and an
//! executor on every machine that sees the tables at the same path, then run
//! `familiar sql --ballista df://SCHEDULER:50050 --tables DIR …`.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use familiar_sql::ballista::{executor, scheduler, ExecutorOptions};

/// A Ballista scheduler or executor with familiar's SQL functions.
#[derive(Debug, Parser)]
#[command(name = "familiar-ballista", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scheduler.
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:50050")]
        bind: SocketAddr,
    },
    /// Run an executor serving a scheduler.
    Executor {
        /// The scheduler's host.
        #[arg(long, default_value = "localhost")]
        scheduler_host: String,
        /// The scheduler's port.
        #[arg(long, default_value_t = 50050)]
        scheduler_port: u16,
        /// Address to bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind_host: String,
        /// Host the scheduler and other executors reach this one at.
        #[arg(long)]
        external_host: Option<String>,
        /// Arrow Flight port (results and shuffles).
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// gRPC port.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks at once (default: the machine's cores).
        #[arg(long)]
        vcores: Option<usize>,
        /// Directory for shuffle files (default: a temporary one).
        #[arg(long)]
        work_dir: Option<String>,
    },
}

#[tokio::main]
async fn main() {
    let result = match Cli::parse().command {
        Command::Scheduler { bind } => scheduler(bind).await,
        Command::Executor {
            scheduler_host,
            scheduler_port,
            bind_host,
            external_host,
            port,
            grpc_port,
            vcores,
            work_dir,
        } => {
            executor(ExecutorOptions {
                bind_host,
                external_host,
                port,
                grpc_port,
                scheduler_host,
                scheduler_port,
                vcores,
                work_dir,
            })
            .await
        }
    };
    if let Err(e) = result {
        eprintln!("familiar-ballista: {e}");
        std::process::exit(1);
    }
}

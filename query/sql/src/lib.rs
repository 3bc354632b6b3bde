//! SQL over familiar's tables: a DataFusion session with every Parquet table of a directory
//! registered by name, the documents table of an index attached directly, and the functions
//! frequency studies need ([`udf`]: Spearman rank correlation, log-count bins).
//!
//! ```no_run
//! # fn main() -> Result<(), familiar_sql::Error> {
//! let mut sql = familiar_sql::Sql::new()?;
//! sql.register_dir(std::path::Path::new("tables"))?;
//! for result in sql.run("SELECT task, spearman(log_count, accuracy) FROM t GROUP BY task")? {
//!     print!("{}", familiar_sql::output::render_table(&result.batches)?);
//! }
//! # Ok(()) }
//! ```

#[cfg(feature = "ballista")]
pub mod ballista;
pub mod output;
pub mod tables;
pub mod udf;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParser;

pub use tables::TableInfo;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DataFusion refused or failed a statement; `tables` are those registered.
    #[error("{message}\nregistered tables: {tables}")]
    Sql {
        /// DataFusion's message.
        message: String,
        /// The registered tables, comma-separated (or "none").
        tables: String,
    },
    /// A table file or directory is unusable.
    #[error("{path}: {message}")]
    Table {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Anything else (formatting results, the runtime).
    #[error("{0}")]
    Other(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One statement's result.
#[derive(Debug, Clone)]
pub struct StatementResult {
    /// The statement as written.
    pub sql: String,
    /// Its schema (also when there are no rows).
    pub schema: SchemaRef,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
}

impl StatementResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A SQL session over familiar's tables.
pub struct Sql {
    ctx: SessionContext,
    runtime: tokio::runtime::Runtime,
    tables: Vec<TableInfo>,
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql").field("tables", &self.tables).finish()
    }
}

impl Sql {
    fn runtime() -> Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Other(format!("starting the query runtime: {e}")))
    }

    /// A session with familiar's functions and no tables.
    pub fn new() -> Result<Sql> {
        let ctx = SessionContext::new();
        udf::register(&ctx);
        Ok(Sql {
            ctx,
            runtime: Sql::runtime()?,
            tables: Vec::new(),
        })
    }

    /// A session whose queries run on a DataFusion Ballista cluster: `standalone` starts a
    /// scheduler and an executor in this process; `df://host:port` connects to a scheduler
    /// started by `familiar-ballista scheduler` (see [`ballista`]). Tables must be readable at the
    /// same paths by every executor.
    #[cfg(feature = "ballista")]
    pub fn ballista(url: &str) -> Result<Sql> {
        let runtime = Sql::runtime()?;
        let ctx = if url == "standalone" {
            runtime.block_on(ballista::standalone())?
        } else {
            runtime.block_on(ballista::remote(url))?
        };
        Ok(Sql {
            ctx,
            runtime,
            tables: Vec::new(),
        })
    }

    /// The DataFusion context (for registering more).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The tables registered so far.
    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// Registers every Parquet table under `dir` (see [`tables::discover`]) and returns them.
    pub fn register_dir(&mut self, dir: &Path) -> Result<Vec<TableInfo>> {
        let found = tables::discover(dir)?;
        for t in &found {
            self.register(t.clone())?;
        }
        Ok(found)
    }

    /// Attaches the documents table of the index in `index_dir` (every shard's
    /// `documents.parquet`) as table `name`.
    pub fn attach_documents(&mut self, index_dir: &Path, name: &str) -> Result<TableInfo> {
        let t = tables::index_documents(index_dir, name)?;
        self.register(t.clone())?;
        Ok(t)
    }

    fn register(&mut self, t: TableInfo) -> Result<()> {
        if let Some(other) = self.tables.iter().find(|o| o.name == t.name) {
            return Err(Error::Table {
                path: t.files[0].clone(),
                message: format!(
                    "a table named `{}` is already registered (from {})",
                    t.name,
                    other.files[0].display()
                ),
            });
        }
        let table = tables::listing_table(&t)?;
        self.ctx
            .register_table(t.name.as_str(), Arc::new(table))
            .map_err(|e| self.sql_error(e))?;
        self.tables.push(t);
        Ok(())
    }

    /// The registered tables' names, sorted and comma-separated ("none" when there are none):
    /// what errors list.
    pub fn table_names(&self) -> String {
        let mut names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    fn sql_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Sql {
            message: e.to_string(),
            tables: self.table_names(),
        }
    }

    /// Runs every statement of `text` in order; the first failure stops it.
    pub fn run(&self, text: &str) -> Result<Vec<StatementResult>> {
        let statements = DFParser::parse_sql(text).map_err(|e| self.sql_error(e))?;
        let mut out = Vec::with_capacity(statements.len());
        for statement in statements {
            let sql = statement.to_string();
            let (schema, batches) = self
                .runtime
                .block_on(async {
                    let state = self.ctx.state();
                    let plan = state.statement_to_plan(statement).await?;
                    let df = self.ctx.execute_logical_plan(plan).await?;
                    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                    let batches = df.collect().await?;
                    Ok::<_, datafusion::error::DataFusionError>((schema, batches))
                })
                .map_err(|e| self.sql_error(e))?;
            out.push(StatementResult {
                sql,
                schema,
                batches,
            });
        }
        Ok(out)
    }
}

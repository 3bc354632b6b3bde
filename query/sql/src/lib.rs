//! SQL over familiar's tables: a DataFusion session with every Parquet table of a directory
//! registered by name, the documents table of an index attached directly, and the functions
//! frequency studies need ([`udf`]: Spearman rank correlation, log-count bins).
//!
//! Sessions are read-only by default ([`SqlOptions`]): queries, `EXPLAIN`, session views
//! (`CREATE VIEW`, `DROP VIEW`) and prepared statements run; statements that read files other
//! than the registered tables, write files or change settings (`CREATE EXTERNAL TABLE`,
//! `CREATE TABLE`, `INSERT`, `COPY`, `DROP TABLE`, `SET`, …) are refused unless
//! [`SqlOptions::allow_writes`] is set. A memory limit (half the machine's memory unless set) and an
//! optional time limit bound every statement.
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
mod memory;
pub mod output;
pub mod tables;
pub mod udf;

use familiar::option::name;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement};
use datafusion::prelude::{SessionConfig, SessionContext};
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
    /// A statement the session's policy refuses (see [`SqlOptions::allow_writes`]).
    #[error("{reason}: refused; {policy}")]
    Refused {
        /// What the statement would do.
        reason: String,
        /// What the session permits and how to change it.
        policy: String,
    },
    /// A statement ran past a limit of the session and was stopped.
    #[error("{0}")]
    Limit(String),
    /// The session's cancel flag was set while a statement ran ([`Sql::set_cancel`]); the
    /// statement was stopped and its partial results dropped.
    #[error("the statement was cancelled")]
    Cancelled,
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
    /// Whether rows past the session's row limit were left out ([`Sql::set_row_limit`]).
    pub truncated: bool,
}

impl StatementResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What a session permits and how much it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// Permit statements that read files other than the registered tables, write files or
    /// change the session's settings: `CREATE EXTERNAL TABLE` (local paths only), `CREATE TABLE`
    /// (in memory), `INSERT` (writes into a table's files), `COPY … TO` (writes a file),
    /// `DROP TABLE`, `SET`/`RESET` (except `datafusion.runtime.*`, which would lift the memory
    /// limit). Off by default: a read-only session runs queries, `EXPLAIN`, session views
    /// (`CREATE VIEW`, `DROP VIEW`, which touch no file) and prepared statements.
    pub allow_writes: bool,
    /// The most memory, in bytes, that a statement's operators (sorts, joins, aggregations)
    /// may hold; past it a statement spills where it can and otherwise fails with
    /// [`Error::Limit`]. `None`: no limit.
    pub memory_limit: Option<usize>,
    /// The longest a statement may run before it is cancelled with [`Error::Limit`]. `None`: no
    /// limit.
    pub time_limit: Option<Duration>,
}

impl Default for SqlOptions {
    /// Read-only, [`default_memory_limit`], no time limit.
    fn default() -> SqlOptions {
        SqlOptions {
            allow_writes: false,
            memory_limit: Some(default_memory_limit()),
            time_limit: None,
        }
    }
}

/// The default memory limit: half of the machine's memory (`MemTotal`), or 4 GiB where that
/// cannot be read.
pub fn default_memory_limit() -> usize {
    match familiar::memory::meminfo("MemTotal") {
        Some(bytes) if bytes > 0 => usize::try_from(bytes / 2).unwrap_or(usize::MAX),
        _ => 4 << 30,
    }
}

/// A SQL session over familiar's tables.
pub struct Sql {
    ctx: SessionContext,
    runtime: tokio::runtime::Runtime,
    tables: Vec<TableInfo>,
    options: SqlOptions,
    cancel: Option<Arc<AtomicBool>>,
    row_limit: Option<usize>,
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

    /// A read-only session with familiar's functions, no tables and the default limits
    /// ([`SqlOptions::default`]).
    pub fn new() -> Result<Sql> {
        Sql::with_options(SqlOptions::default())
    }

    /// A session with familiar's functions, no tables, and `options`.
    pub fn with_options(options: SqlOptions) -> Result<Sql> {
        let mut rt = RuntimeEnvBuilder::new();
        if let Some(limit) = options.memory_limit {
            rt = rt.with_memory_pool(memory::limited_pool(limit));
        }
        let rt = rt
            .build_arc()
            .map_err(|e| Error::Other(format!("making the SQL runtime: {e}")))?;
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), rt);
        udf::register(&ctx);
        Ok(Sql {
            ctx,
            runtime: Sql::runtime()?,
            tables: Vec::new(),
            options,
            cancel: None,
            row_limit: None,
        })
    }

    /// A flag that, once set (from another thread: a front end's Ctrl-C), stops the running
    /// statement within about 50 ms with [`Error::Cancelled`] (its execution is dropped) and
    /// every later one before it starts.
    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    /// Keep at most `limit` rows of each statement's result (`None`: all): the statement's
    /// execution stops once they are read, and [`StatementResult::truncated`] says whether more
    /// would have followed. A service's answer stays bounded whatever the statement.
    pub fn set_row_limit(&mut self, limit: Option<usize>) {
        self.row_limit = limit;
    }

    /// The session's options.
    pub fn options(&self) -> &SqlOptions {
        &self.options
    }

    /// A session whose queries run on a DataFusion Ballista cluster: `standalone` starts a
    /// scheduler and an executor in this process; `df://host:port` connects to a scheduler
    /// started by `familiar-ballista scheduler` (see [`ballista`]). Tables must be readable at the
    /// same paths by every executor.
    #[cfg(feature = "ballista")]
    pub fn ballista(url: &str) -> Result<Sql> {
        Sql::ballista_with(url, SqlOptions::default())
    }

    /// [`Sql::ballista`] with `options`: the statement policy and the time limit hold for this
    /// client; memory is limited on the executors (`familiar-ballista executor`), so
    /// `options.memory_limit` is not used here.
    #[cfg(feature = "ballista")]
    pub fn ballista_with(url: &str, options: SqlOptions) -> Result<Sql> {
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
            options: SqlOptions {
                memory_limit: None,
                ..options
            },
            cancel: None,
            row_limit: None,
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
        self.register_dirs(std::slice::from_ref(&dir))
    }

    /// Registers every Parquet table under each of `dirs`, named apart across them (see
    /// [`tables::discover_many`]: a name found under two directories gets each directory's
    /// name as a prefix), and returns them.
    pub fn register_dirs<P: AsRef<Path>>(&mut self, dirs: &[P]) -> Result<Vec<TableInfo>> {
        let found = tables::discover_many(dirs)?;
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

    /// Registers record batches held in memory (a front end's data frame) as table `name`;
    /// `origin` says where they came from in messages (e.g. "a pyarrow table"). The name must be
    /// an SQL name (letters, digits and `_`, not starting with a digit) that no other table has.
    pub fn register_batches(
        &mut self,
        name: &str,
        origin: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        let place = PathBuf::from(format!("({origin} `{name}`)"));
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::Table {
                path: place,
                message: format!(
                    "`{name}` is not a table name: use letters, digits and `_`, not starting with a digit"
                ),
            });
        }
        if let Some(other) = self.tables.iter().find(|o| o.name == name) {
            return Err(Error::Table {
                path: place,
                message: format!(
                    "a table named `{name}` is already registered (from {})",
                    other.files[0].display()
                ),
            });
        }
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let bare = tables::without_table_metadata(&schema);
        let batches = batches
            .into_iter()
            .map(|b| RecordBatch::try_new(bare.clone(), b.columns().to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Table {
                path: place.clone(),
                message: e.to_string(),
            })?;
        let table =
            datafusion::datasource::MemTable::try_new(bare, vec![batches]).map_err(|e| {
                Error::Table {
                    path: place.clone(),
                    message: e.to_string(),
                }
            })?;
        self.ctx
            .register_table(name, Arc::new(table))
            .map_err(|e| self.sql_error(e))?;
        self.tables.push(TableInfo {
            name: name.to_string(),
            files: vec![place],
            rows,
            schema,
            familiar_table: None,
        });
        Ok(())
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

    /// Runs every statement of `text` in order; the first failure stops it. Each statement is
    /// checked against the session's policy before it runs, and runs within its limits.
    pub fn run(&self, text: &str) -> Result<Vec<StatementResult>> {
        let statements = DFParser::parse_sql(text).map_err(|e| self.sql_error(e))?;
        let mut out = Vec::with_capacity(statements.len());
        for statement in statements {
            if self
                .cancel
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                return Err(Error::Cancelled);
            }
            let sql = statement.to_string();
            let work = async {
                let state = self.ctx.state();
                let plan = state
                    .statement_to_plan(statement)
                    .await
                    .map_err(|e| self.df_error(e))?;
                self.check(&plan)?;
                let run = async {
                    let df = self.ctx.execute_logical_plan(plan).await?;
                    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                    let Some(limit) = self.row_limit else {
                        return Ok::<_, DataFusionError>((schema, df.collect().await?, false));
                    };
                    // Read only as many rows as kept (and one batch more, to tell whether
                    // there were more); dropping the stream stops the execution.
                    let mut stream = df.execute_stream().await?;
                    let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
                    while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                        let batch = batch?;
                        if rows + batch.num_rows() > limit {
                            batches.push(batch.slice(0, limit - rows));
                            truncated = true;
                            break;
                        }
                        rows += batch.num_rows();
                        batches.push(batch);
                    }
                    Ok((schema, batches, truncated))
                };
                let limited = async {
                    match self.options.time_limit {
                        None => run.await.map_err(|e| self.df_error(e)),
                        Some(limit) => match tokio::time::timeout(limit, run).await {
                            Ok(r) => r.map_err(|e| self.df_error(e)),
                            Err(_) => Err(Error::Limit(format!(
                                "the statement ran past the time limit of {} s and was \
                                 cancelled (raise it with {})",
                                limit.as_secs_f64(),
                                name("time_limit")
                            ))),
                        },
                    }
                };
                match &self.cancel {
                    None => limited.await,
                    Some(flag) => {
                        let watch = async {
                            while !flag.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        };
                        // Dropping the losing future drops the statement's streams, which
                        // stops its tasks.
                        tokio::select! {
                            r = limited => r,
                            () = watch => Err(Error::Cancelled),
                        }
                    }
                }
            };
            let (schema, batches, truncated) = self.runtime.block_on(work)?;
            out.push(StatementResult {
                sql,
                schema,
                batches,
                truncated,
            });
        }
        Ok(out)
    }

    /// DataFusion's error, with the memory limit named when that is what was hit.
    fn df_error(&self, e: DataFusionError) -> Error {
        if let DataFusionError::ResourcesExhausted(m) = e.find_root() {
            let limit = match self.options.memory_limit {
                Some(l) => format!(
                    "the memory limit of {}",
                    familiar::memory::format_bytes(l as u64)
                ),
                None => "the memory available".into(),
            };
            return Error::Limit(format!(
                "the statement needs more than {limit} (raise it with {}): {m}",
                name("memory_limit")
            ));
        }
        self.sql_error(e)
    }

    /// Refuses a plan that the session's policy does not permit (anywhere in it, subqueries and
    /// `EXPLAIN ANALYZE` included).
    pub fn check(&self, plan: &LogicalPlan) -> Result<()> {
        let allow = self.options.allow_writes;
        let mut refusal = None;
        let _ = plan.apply_with_subqueries(|node| {
            refusal = refusal_of(node, allow);
            Ok(if refusal.is_some() {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        });
        match refusal {
            None => Ok(()),
            Some(reason) => Err(Error::Refused {
                reason,
                policy: if allow {
                    "files are read and written at local paths only, and the session's limits \
                     cannot be changed from SQL"
                        .into()
                } else {
                    format!(
                        "this session is read-only: queries, EXPLAIN, CREATE VIEW and DROP VIEW \
                         run; statements that read other files, write files or change settings \
                         need {}",
                        name("allow_writes")
                    )
                },
            }),
        }
    }
}

/// Whether `location` is a local path (no URL scheme other than `file://`).
fn is_local(location: &str) -> bool {
    match location.split_once("://") {
        None => true,
        Some((scheme, _)) => scheme.eq_ignore_ascii_case("file"),
    }
}

/// Why one plan node is refused, or `None`.
fn refusal_of(node: &LogicalPlan, allow_writes: bool) -> Option<String> {
    let refuse = |what: &str| (!allow_writes).then(|| what.to_string());
    match node {
        LogicalPlan::Ddl(DdlStatement::CreateView(_) | DdlStatement::DropView(_)) => None,
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(c)) => {
            if let Some(remote) = c.locations.iter().find(|l| !is_local(l)) {
                return Some(format!(
                    "CREATE EXTERNAL TABLE at `{remote}`: only local paths can be read"
                ));
            }
            refuse(&format!(
                "CREATE EXTERNAL TABLE reads files ({}) that are not registered tables",
                c.locations.join(", ")
            ))
        }
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(_)) => {
            refuse("CREATE TABLE makes a table in memory")
        }
        LogicalPlan::Ddl(DdlStatement::DropTable(_)) => refuse("DROP TABLE removes a table"),
        LogicalPlan::Ddl(d) => refuse(&format!("{} changes the catalog", d.name())),
        LogicalPlan::Dml(d) => refuse(&format!(
            "{} into `{}` writes the table's files",
            d.op, d.table_name
        )),
        LogicalPlan::Copy(c) => {
            if !is_local(&c.output_url) {
                return Some(format!(
                    "COPY to `{}`: only local paths can be written",
                    c.output_url
                ));
            }
            refuse(&format!("COPY writes the file `{}`", c.output_url))
        }
        LogicalPlan::Statement(Statement::SetVariable(v)) => setting(&v.variable, allow_writes),
        LogicalPlan::Statement(Statement::ResetVariable(v)) => setting(&v.variable, allow_writes),
        LogicalPlan::Statement(
            Statement::Prepare(_) | Statement::Execute(_) | Statement::Deallocate(_),
        ) => None,
        LogicalPlan::Statement(s) => refuse(&format!("{} changes the session", s.name())),
        _ => None,
    }
}

fn setting(variable: &str, allow_writes: bool) -> Option<String> {
    let v = variable.to_ascii_lowercase();
    if v.starts_with("datafusion.runtime.") {
        return Some(format!(
            "SET {variable} would change the session's resource limits (set them with {})",
            name("memory_limit")
        ));
    }
    (!allow_writes).then(|| format!("SET {variable} changes the session's settings"))
}

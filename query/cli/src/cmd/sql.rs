//! `familiar sql`: DataFusion SQL over a directory of tables.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use familiar_sql::output::{write_parquet, write_text, Format};
use familiar_sql::{Sql, SqlOptions, StatementResult};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

/// Arguments of `familiar sql`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A directory of tables: every Parquet file under it is a table named after the file
    /// (`part-*.parquet` files: after their directory; an index directory: `documents`). Repeat
    /// for several directories.
    #[arg(long)]
    tables: Vec<PathBuf>,
    /// Attach the documents table of this index as `documents` (or NAME=DIR to name it).
    #[arg(long, value_name = "[NAME=]DIR")]
    index: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
    /// Write the results to this file instead of standard output (Parquet: the last
    /// statement's result).
    #[arg(long)]
    output: Option<PathBuf>,
    /// A file of SQL statements (separated by `;`), run in order.
    #[arg(long, conflicts_with = "query")]
    file: Option<PathBuf>,
    /// Run on a DataFusion Ballista cluster: `df://HOST:PORT`, a scheduler started with
    /// `familiar-ballista scheduler` (its executors must see the tables at the same paths), or
    /// `standalone` (a scheduler and executor in this process). Needs a build of familiar-cli with
    /// `--features ballista`.
    #[arg(long, value_name = "URL")]
    ballista: Option<String>,
    /// Permit statements that read files other than the registered tables, write files or
    /// change settings: CREATE EXTERNAL TABLE (local paths only), CREATE TABLE (in memory),
    /// INSERT (writes into the table's files), COPY ... TO (writes a file), DROP TABLE, SET.
    /// Without it the session is read-only: queries, EXPLAIN, CREATE VIEW, DROP VIEW.
    #[arg(long)]
    allow_writes: bool,
    /// The most memory a statement's sorts, joins and aggregations may hold (e.g. 512MiB, 8GiB,
    /// or 0 for no limit); past it they spill to disk where they can, else the statement fails
    /// naming this limit. Default: half of the machine's memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory_limit: Option<usize>,
    /// Cancel a statement that runs longer than this many seconds (default: no limit).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    time_limit: Option<std::time::Duration>,
    /// The SQL to run (several statements separated by `;`). Without it and --file: the
    /// statements on standard input, or an interactive prompt on a terminal.
    query: Option<String>,
}

/// A size in bytes: a number with an optional unit (B, KB/KiB, MB/MiB, GB/GiB, TB/TiB; the
/// decimal and binary spellings both mean powers of 1024). `0` means no limit.
fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("`{s}` is not a size (a number with an optional unit, e.g. 512MiB)")
    })?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024f64.powi(2),
        "g" | "gb" | "gib" => 1024f64.powi(3),
        "t" | "tb" | "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= usize::MAX as f64 {
        return Err(format!("`{s}` is too large"));
    }
    Ok(bytes as usize)
}

fn parse_seconds(s: &str) -> std::result::Result<std::time::Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(format!(
            "the time limit must be positive seconds (below 1e9), not `{s}`"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

fn options(a: &Args) -> SqlOptions {
    let defaults = SqlOptions::default();
    SqlOptions {
        allow_writes: a.allow_writes,
        memory_limit: match a.memory_limit {
            None => defaults.memory_limit,
            Some(0) => None,
            Some(n) => Some(n),
        },
        time_limit: a.time_limit,
    }
}

#[cfg(feature = "ballista")]
fn new_session(a: &Args) -> Result<Sql> {
    Ok(match a.ballista.as_deref() {
        Some(url) => Sql::ballista_with(url, options(a))?,
        None => Sql::with_options(options(a))?,
    })
}

#[cfg(not(feature = "ballista"))]
fn new_session(a: &Args) -> Result<Sql> {
    if a.ballista.is_some() {
        anyhow::bail!(
            "--ballista needs a build with Ballista: cargo build --release -p familiar-cli --features ballista"
        );
    }
    Ok(Sql::with_options(options(a))?)
}

fn session(a: &Args) -> Result<Sql> {
    let mut sql = new_session(a)?;
    if !a.tables.is_empty() {
        sql.register_dirs(&a.tables).with_context(|| {
            let dirs: Vec<String> = a.tables.iter().map(|d| d.display().to_string()).collect();
            format!("registering the tables of {}", dirs.join(", "))
        })?;
    }
    for spec in &a.index {
        let (name, dir) = match spec.split_once('=') {
            Some((n, d)) if !n.is_empty() && !n.contains('/') => (n, d),
            _ => ("documents", spec.as_str()),
        };
        sql.attach_documents(std::path::Path::new(dir), name)?;
    }
    Ok(sql)
}

fn format_of(f: OutFormat) -> Format {
    match f {
        OutFormat::Table => Format::Table,
        OutFormat::Csv => Format::Csv,
        OutFormat::Json => Format::Json,
        OutFormat::Parquet => Format::Parquet,
    }
}

/// Prints the results of statements that return columns (not those of DDL such as CREATE VIEW).
fn print_results(out: &mut dyn Write, format: Format, results: &[StatementResult]) -> Result<()> {
    let shown: Vec<&StatementResult> = results
        .iter()
        .filter(|r| !r.schema.fields().is_empty())
        .collect();
    for (i, r) in shown.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        write_text(out, format, &r.schema, &r.batches)?;
    }
    Ok(())
}

/// Runs `familiar sql`.
pub fn run(a: Args) -> Result<i32> {
    let sql = session(&a)?;
    let format = format_of(a.format);
    let text = match (&a.query, &a.file) {
        (Some(q), _) => Some(q.clone()),
        (None, Some(f)) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, None) if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading SQL from standard input")?;
            Some(s)
        }
        (None, None) => None,
    };
    let Some(text) = text else {
        if a.output.is_some() || matches!(a.format, OutFormat::Parquet) {
            bail!("--output and --format parquet need a query or --file");
        }
        return repl(&sql, format);
    };
    if text.trim().is_empty() {
        bail!(
            "no SQL statements in {}",
            match &a.file {
                Some(f) => f.display().to_string(),
                None => "the input".into(),
            }
        );
    }
    let results = sql.run(&text)?;
    match (&a.output, format) {
        (Some(path), Format::Parquet) => {
            let Some(last) = results.iter().rev().find(|r| !r.schema.fields().is_empty()) else {
                bail!(
                    "no statement returned columns to write to {}",
                    path.display()
                );
            };
            write_parquet(path, &last.schema, &last.batches)?;
            eprintln!("wrote {} rows to {}", last.rows(), path.display());
        }
        (None, Format::Parquet) => bail!("--format parquet needs --output FILE"),
        (Some(path), _) => familiar::manifest::write_atomic_with(path, |w| {
            print_results(w, format, &results).map_err(std::io::Error::other)
        })?,
        (None, _) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            print_results(&mut out, format, &results)?;
        }
    }
    Ok(0)
}

fn history_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("familiar").join("sql_history"))
}

const HELP: &str = "statements end with `;` and may span lines
.tables           the registered tables, their rows and files
.schema NAME      a table's columns
.help             this text
.quit             leave (also Ctrl-D)";

fn describe_tables(sql: &Sql) -> String {
    if sql.tables().is_empty() {
        return "no tables registered (use --tables DIR or --index DIR)\n".into();
    }
    let mut s = String::new();
    for t in sql.tables() {
        s += &format!(
            "{}  {} rows, {} columns  ({}{})\n",
            t.name,
            t.rows,
            t.schema.fields().len(),
            t.files[0].display(),
            if t.files.len() > 1 {
                format!(" and {} more files", t.files.len() - 1)
            } else {
                String::new()
            }
        );
    }
    s
}

fn describe_schema(sql: &Sql, name: &str) -> String {
    match sql.tables().iter().find(|t| t.name == name) {
        None => format!("no table `{name}`; .tables lists them\n"),
        Some(t) => t
            .schema
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "{}  {}{}\n",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "" } else { " not null" }
                )
            })
            .collect(),
    }
}

/// The interactive prompt: line editing and history (rustyline).
fn repl(sql: &Sql, format: Format) -> Result<i32> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let history = history_file();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprint!("{}", describe_tables(sql));
    eprintln!("type .help for help");
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "sql> " } else { "...> " };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading the prompt"),
        };
        let trimmed = line.trim();
        if pending.is_empty() && trimmed.starts_with('.') {
            let _ = editor.add_history_entry(trimmed);
            let mut words = trimmed.split_whitespace();
            match (words.next(), words.next()) {
                (Some(".quit" | ".exit"), _) => break,
                (Some(".help"), _) => eprintln!("{HELP}"),
                (Some(".tables"), _) => print!("{}", describe_tables(sql)),
                (Some(".schema"), Some(name)) => print!("{}", describe_schema(sql, name)),
                _ => eprintln!("unknown command {trimmed:?}; .help lists them"),
            }
            continue;
        }
        if trimmed.is_empty() && pending.is_empty() {
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(pending.trim_end());
        match sql.run(&pending) {
            Ok(results) => {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                if let Err(e) = print_results(&mut out, format, &results) {
                    eprintln!("error: {e:#}");
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
        pending.clear();
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = editor.save_history(h) {
            eprintln!(
                "warning: could not save the history to {}: {e}",
                h.display()
            );
        }
    }
    Ok(0)
}

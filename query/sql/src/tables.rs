//! Finding tables on disk and making DataFusion tables of them.
//!
//! Under a tables directory (searched recursively, in name order):
//! - each `NAME.parquet` is table `NAME`;
//! - the `part-*.parquet` files of one directory are together the table named after the directory
//!   (how DataFusion and Spark write partitioned output);
//! - an index directory (a `manifest.json` beside `shard-*` directories) is the table of its
//!   documents, named `documents` — every shard's `documents.parquet`.
//!
//! Names are lowercased, with every character other than letters, digits and `_` made `_`; when
//! two tables would have the same name, each is prefixed with its parent directories' names
//! until they differ (`run1_influence`, `run2_influence`). A table named like one of familiar's
//! tables (`schemas/`) must have that table's columns and types: a file that does not is an
//! error naming the file and the column, not a table with surprising columns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Error, Result};

/// A table found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Its SQL name.
    pub name: String,
    /// Its Parquet files (one or more, same schema).
    pub files: Vec<PathBuf>,
    /// Rows, from the files' footers.
    pub rows: u64,
    /// Its schema (the first file's, which every other file matches).
    pub schema: SchemaRef,
    /// The familiar table it is (`schemas/`), if its name is one.
    pub familiar_table: Option<String>,
}

/// One candidate before naming: the directories above it (relative to the root, outermost first),
/// its own base name, and its files.
struct Found {
    dirs: Vec<String>,
    base: String,
    files: Vec<PathBuf>,
}

/// The tables under `dir`.
pub fn discover(dir: &Path) -> Result<Vec<TableInfo>> {
    discover_many(&[dir])
}

/// The tables under each of `dirs`, named apart across them: with several directories, each
/// directory's own name (its last path component, or its whole path where two share one) is the
/// outermost prefix a colliding name takes (`--tables run1 --tables run2`, each with an
/// `influence.parquet`: `run1_influence`, `run2_influence`). The same directory twice is an
/// error.
pub fn discover_many<P: AsRef<Path>>(dirs: &[P]) -> Result<Vec<TableInfo>> {
    let mut found = Vec::new();
    let mut roots: Vec<(PathBuf, String)> = Vec::new();
    for dir in dirs {
        let dir = dir.as_ref();
        let meta = std::fs::metadata(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        if !meta.is_dir() {
            return Err(Error::Table {
                path: dir.to_path_buf(),
                message: "not a directory (expected a directory of Parquet tables)".into(),
            });
        }
        let canonical = dir.canonicalize().map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        if roots.iter().any(|(c, _)| *c == canonical) {
            return Err(Error::Table {
                path: dir.to_path_buf(),
                message: "this tables directory is given twice".into(),
            });
        }
        roots.push((canonical.clone(), file_name(&canonical)));
    }
    let labels: Vec<String> = roots
        .iter()
        .map(|(c, name)| {
            if name.is_empty() || roots.iter().filter(|(_, n)| n == name).count() > 1 {
                c.to_string_lossy().into_owned()
            } else {
                name.clone()
            }
        })
        .collect();
    for (dir, label) in dirs.iter().zip(&labels) {
        let mut above = if dirs.len() > 1 {
            vec![label.clone()]
        } else {
            Vec::new()
        };
        walk(dir.as_ref(), &mut above, &mut found)?;
    }
    let names = unique_names(&found);
    found
        .into_iter()
        .zip(names)
        .map(|(f, name)| describe(name, &f.base, f.files))
        .collect()
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_index(dir: &Path) -> Result<bool> {
    Ok(dir.join("manifest.json").is_file()
        && read_dir_sorted(dir)?
            .iter()
            .any(|p| p.is_dir() && file_name(p).starts_with("shard-")))
}

fn walk(dir: &Path, above: &mut Vec<String>, out: &mut Vec<Found>) -> Result<()> {
    if is_index(dir)? {
        out.push(Found {
            dirs: above.clone(),
            base: "documents".into(),
            files: index_files(dir)?,
        });
        return Ok(());
    }
    let mut parts = Vec::new();
    for p in read_dir_sorted(dir)? {
        let name = file_name(&p);
        if p.is_dir() {
            above.push(name);
            walk(&p, above, out)?;
            above.pop();
        } else if let Some(stem) = name.strip_suffix(".parquet") {
            if stem.starts_with("part-") || stem.starts_with("part_") {
                parts.push(p);
            } else {
                out.push(Found {
                    dirs: above.clone(),
                    base: stem.to_string(),
                    files: vec![p],
                });
            }
        }
    }
    if !parts.is_empty() {
        let mut dirs = above.clone();
        let base = dirs.pop().unwrap_or_else(|| {
            dir.canonicalize()
                .ok()
                .as_deref()
                .map(file_name)
                .unwrap_or_else(|| "parts".into())
        });
        out.push(Found {
            dirs,
            base,
            files: parts,
        });
    }
    Ok(())
}

/// `name` as a SQL identifier that needs no quotes.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Each candidate's base name, prefixed with as many of its directories as it takes to make the
/// names unique.
fn unique_names(found: &[Found]) -> Vec<String> {
    let mut depth = vec![0usize; found.len()];
    loop {
        let names: Vec<String> = found
            .iter()
            .zip(&depth)
            .map(|(f, &d)| {
                let from = f.dirs.len().saturating_sub(d);
                let mut parts: Vec<&str> = f.dirs[from..].iter().map(String::as_str).collect();
                parts.push(&f.base);
                sanitize(&parts.join("_"))
            })
            .collect();
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            groups.entry(n).or_default().push(i);
        }
        let mut changed = false;
        for members in groups.values().filter(|m| m.len() > 1) {
            for &i in members {
                if depth[i] < found[i].dirs.len() {
                    depth[i] += 1;
                    changed = true;
                }
            }
        }
        if !changed {
            return names;
        }
    }
}

/// The `documents.parquet` of every shard of the index in `dir`.
fn index_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_dir() && file_name(p).starts_with("shard-"))
        .map(|p| p.join("documents.parquet"))
        .collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(Error::Table {
            path: missing.clone(),
            message: "missing: every shard of an index has its documents table".into(),
        });
    }
    if files.is_empty() {
        return Err(Error::Table {
            path: dir.to_path_buf(),
            message: "an index without shards".into(),
        });
    }
    Ok(files)
}

/// The documents table of the index in `dir`, named `name`.
pub fn index_documents(dir: &Path, name: &str) -> Result<TableInfo> {
    if !is_index(dir)? {
        return Err(Error::Table {
            path: dir.to_path_buf(),
            message: "not an index (expected manifest.json and shard-* directories)".into(),
        });
    }
    describe(sanitize(name), "documents", index_files(dir)?)
}

/// Reads the files' footers: the schema (checked against familiar's table when the files' base
/// name is one, and equal across files) and the row count.
fn describe(name: String, base: &str, files: Vec<PathBuf>) -> Result<TableInfo> {
    let familiar_table = familiar::schema::SCHEMA_FILES
        .iter()
        .map(|(n, _)| *n)
        .find(|n| sanitize(base) == *n)
        .map(str::to_string);
    let mut schema: Option<SchemaRef> = None;
    let mut rows = 0u64;
    for f in &files {
        let err = |message: String| Error::Table {
            path: f.clone(),
            message,
        };
        let file = std::fs::File::open(f).map_err(|e| Error::Io {
            path: f.clone(),
            source: e,
        })?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| err(format!("not a readable Parquet file: {e}")))?;
        rows += reader.metadata().file_metadata().num_rows().max(0) as u64;
        let s = reader.schema().clone();
        if let Some(t) = &familiar_table {
            check_columns(&s, t).map_err(err)?;
        }
        match &schema {
            None => schema = Some(s),
            Some(first) if first.fields() != s.fields() => {
                return Err(err(format!(
                    "its columns differ from those of {} (the same table)",
                    files[0].display()
                )))
            }
            Some(_) => {}
        }
    }
    let schema = schema.ok_or_else(|| Error::Other(format!("table {name} has no files")))?;
    Ok(TableInfo {
        name,
        files,
        rows,
        schema,
        familiar_table,
    })
}

/// Every column of familiar's table `table` must be in `schema`, with its type.
fn check_columns(schema: &SchemaRef, table: &str) -> std::result::Result<(), String> {
    let want = familiar::schema::table(table).map_err(|e| e.to_string())?;
    for f in want.fields() {
        match schema.field_with_name(f.name()) {
            Err(_) => {
                return Err(format!(
                    "named like familiar's {table} table, but has no column `{}` ({}); see \
                     schemas/{table}.json",
                    f.name(),
                    f.data_type()
                ))
            }
            Ok(have) if have.data_type() != f.data_type() => {
                return Err(format!(
                    "column `{}` is {}, familiar's {table} table has {} (schemas/{table}.json)",
                    f.name(),
                    have.data_type(),
                    f.data_type()
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// `schema` without its table-level metadata (the columns keep theirs). familiar's tables each
/// carry a `doc`, and DataFusion 55's join planning refuses to join two inputs whose schema
/// metadata differ ("Schema metadata mismatch" from `join_selection`), so tables are registered
/// without it.
pub fn without_table_metadata(schema: &SchemaRef) -> SchemaRef {
    if schema.metadata().is_empty() {
        return schema.clone();
    }
    Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema.fields().clone(),
    ))
}

/// A DataFusion table over `t`'s files, with `t`'s schema (less its table-level metadata: see
/// [`without_table_metadata`]).
pub fn listing_table(t: &TableInfo) -> Result<ListingTable> {
    let urls = t
        .files
        .iter()
        .map(|f| {
            let abs = std::path::absolute(f).map_err(|e| Error::Io {
                path: f.clone(),
                source: e,
            })?;
            ListingTableUrl::parse(abs.to_string_lossy()).map_err(|e| Error::Table {
                path: f.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(without_table_metadata(&t.schema));
    ListingTable::try_new(config).map_err(|e| Error::Table {
        path: t.files[0].clone(),
        message: e.to_string(),
    })
}

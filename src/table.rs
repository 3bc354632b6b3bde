//! Result tables: named, typed columns written as a readable text table, JSON lines, or Parquet
//! (atomically, with the schema of `schemas/` where the table has one).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::{Error, Result};
use arrow_array::builder::{Float64Builder, ListBuilder, StringBuilder, UInt32Builder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// An aligned text table.
    Table,
    /// One JSON object per row.
    Jsonl,
    /// A Parquet file (written to a file, not to stdout).
    Parquet,
}

/// A column of values.
#[derive(Debug, Clone)]
pub enum Column {
    /// Unsigned integers.
    U64(Vec<Option<u64>>),
    /// Floats.
    F64(Vec<Option<f64>>),
    /// Strings.
    Str(Vec<Option<String>>),
    /// Booleans.
    Bool(Vec<Option<bool>>),
    /// Lists of token ids.
    Ids(Vec<Vec<u32>>),
    /// Lists of token ids, or null.
    OptIds(Vec<Option<Vec<u32>>>),
    /// Lists of strings.
    StrList(Vec<Vec<String>>),
    /// Lists of floats, or null.
    F64List(Vec<Option<Vec<f64>>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::U64(v) => v.len(),
            Column::F64(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Ids(v) => v.len(),
            Column::OptIds(v) => v.len(),
            Column::StrList(v) => v.len(),
            Column::F64List(v) => v.len(),
        }
    }

    fn json(&self, i: usize) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Column::U64(v) => v[i].map_or(Value::Null, Value::from),
            Column::F64(v) => v[i].map_or(Value::Null, Value::from),
            Column::Str(v) => v[i].clone().map_or(Value::Null, Value::from),
            Column::Bool(v) => v[i].map_or(Value::Null, Value::from),
            Column::Ids(v) => Value::from(v[i].clone()),
            Column::OptIds(v) => v[i].clone().map_or(Value::Null, Value::from),
            Column::StrList(v) => Value::from(v[i].clone()),
            Column::F64List(v) => v[i].clone().map_or(Value::Null, Value::from),
        }
    }

    fn text(&self, i: usize) -> String {
        match self {
            Column::U64(v) => v[i].map_or(String::new(), |x| x.to_string()),
            Column::F64(v) => v[i].map_or(String::new(), |x| format!("{x:.6}")),
            Column::Str(v) => v[i].clone().unwrap_or_default(),
            Column::Bool(v) => v[i].map_or(String::new(), |x| x.to_string()),
            Column::Ids(v) => v[i]
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(","),
            Column::OptIds(v) => v[i].as_ref().map_or(String::new(), |ids| {
                ids.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            Column::StrList(v) => v[i].join(" | "),
            Column::F64List(v) => v[i].as_ref().map_or(String::new(), |x| {
                x.iter()
                    .map(|f| format!("{f:.4}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        }
    }

    fn arrow(&self) -> (DataType, ArrayRef) {
        match self {
            Column::U64(v) => (DataType::UInt64, Arc::new(UInt64Array::from(v.clone()))),
            Column::F64(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Column::Str(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
            Column::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
            Column::Ids(v) => {
                let mut b = ListBuilder::new(UInt32Builder::new());
                for ids in v {
                    b.values().append_slice(ids);
                    b.append(true);
                }
                let a = b.finish();
                (a.data_type().clone(), Arc::new(a))
            }
            Column::OptIds(v) => {
                let mut b = ListBuilder::new(UInt32Builder::new());
                for ids in v {
                    match ids {
                        Some(ids) => {
                            b.values().append_slice(ids);
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                let a = b.finish();
                (a.data_type().clone(), Arc::new(a))
            }
            Column::F64List(v) => {
                let mut b = ListBuilder::new(Float64Builder::new());
                for list in v {
                    match list {
                        Some(list) => {
                            b.values().append_slice(list);
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                let a = b.finish();
                (a.data_type().clone(), Arc::new(a))
            }
            Column::StrList(v) => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for list in v {
                    for s in list {
                        b.values().append_value(s);
                    }
                    b.append(true);
                }
                let a = b.finish();
                (a.data_type().clone(), Arc::new(a))
            }
        }
    }
}

/// A result table: named columns of equal length.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<(String, Column)>,
    schema: Option<arrow_schema::SchemaRef>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table::default()
    }

    /// Adds a column.
    pub fn column(mut self, name: &str, col: Column) -> Table {
        self.columns.push((name.to_string(), col));
        self
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    /// Row `i` as a JSON object.
    pub fn row_json(&self, i: usize) -> serde_json::Value {
        serde_json::Value::Object(
            self.columns
                .iter()
                .map(|(n, c)| (n.clone(), c.json(i)))
                .collect(),
        )
    }

    /// Declares the table's schema (from `schemas/`): Parquet output then has exactly these
    /// column types and docs, and a mismatch is reported as a bug.
    pub fn with_schema(mut self, schema: arrow_schema::SchemaRef) -> Table {
        self.schema = Some(schema);
        self
    }

    /// Writes the table in `format`: to `output` when given, else to stdout.
    pub fn write(&self, format: Format, output: Option<&Path>) -> Result<()> {
        if let Some((name, _)) = self.columns.iter().find(|(_, c)| c.len() != self.rows()) {
            return Err(Error::Bug(format!("column {name} has a different length")));
        }
        match (format, output) {
            (Format::Parquet, None) => Err(Error::Config(
                "Parquet output needs a file to write to, not stdout".into(),
            )),
            (Format::Parquet, Some(path)) => self.write_parquet(path),
            (_, Some(path)) => crate::manifest::write_atomic_with(path, |w| {
                let mut w = w;
                self.write_text(format, &mut w)
            }),
            (_, None) => {
                let stdout = std::io::stdout();
                let mut w = stdout.lock();
                self.write_text(format, &mut w)
                    .map_err(|e| Error::io("<stdout>", e))
            }
        }
    }

    fn write_text(&self, format: Format, w: &mut impl Write) -> std::io::Result<()> {
        match format {
            Format::Jsonl => {
                for i in 0..self.rows() {
                    writeln!(w, "{}", self.row_json(i))?;
                }
            }
            _ => {
                let cells: Vec<Vec<String>> = self
                    .columns
                    .iter()
                    .map(|(_, c)| {
                        (0..self.rows())
                            .map(|i| c.text(i).replace('\n', "⏎"))
                            .collect()
                    })
                    .collect();
                let widths: Vec<usize> = self
                    .columns
                    .iter()
                    .zip(&cells)
                    .map(|((n, _), c)| {
                        c.iter()
                            .map(|s| s.chars().count())
                            .chain([n.chars().count()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let numeric: Vec<bool> = self
                    .columns
                    .iter()
                    .map(|(_, c)| matches!(c, Column::U64(_) | Column::F64(_)))
                    .collect();
                let line = |w: &mut dyn Write, vals: &[String]| -> std::io::Result<()> {
                    let parts: Vec<String> = vals
                        .iter()
                        .enumerate()
                        .map(|(j, s)| {
                            if numeric[j] {
                                format!("{s:>width$}", width = widths[j])
                            } else {
                                format!("{s:<width$}", width = widths[j])
                            }
                        })
                        .collect();
                    writeln!(w, "{}", parts.join("  ").trim_end())
                };
                let names: Vec<String> = self.columns.iter().map(|(n, _)| n.clone()).collect();
                line(w, &names)?;
                line(
                    w,
                    &widths.iter().map(|&n| "-".repeat(n)).collect::<Vec<_>>(),
                )?;
                for i in 0..self.rows() {
                    let row: Vec<String> = cells.iter().map(|c| c[i].clone()).collect();
                    line(w, &row)?;
                }
            }
        }
        Ok(())
    }

    /// The table as an Arrow record batch.
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        if let Some(schema) = &self.schema {
            let arrays: Vec<ArrayRef> = self.columns.iter().map(|(_, c)| c.arrow().1).collect();
            return RecordBatch::try_new(Arc::clone(schema), arrays)
                .map_err(|e| Error::Bug(format!("result table does not match its schema: {e}")));
        }
        let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = self
            .columns
            .iter()
            .map(|(n, c)| {
                let (t, a) = c.arrow();
                (
                    Field::new(
                        n,
                        t,
                        a.null_count() > 0 || matches!(c, Column::Str(_) | Column::F64(_)),
                    ),
                    a,
                )
            })
            .unzip();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| Error::Bug(format!("result table: {e}")))
    }

    /// Writes a Parquet file atomically: into a uniquely named temporary file beside it, then
    /// renamed, so a reader never sees half a file and concurrent writers never mix.
    fn write_parquet(&self, path: &Path) -> Result<()> {
        let batch = self.to_record_batch()?;
        write_parquet(path, &batch.schema(), std::slice::from_ref(&batch))
    }
}

/// Writes `batches` to the Parquet file `path` (zstd): into a uniquely named temporary file
/// beside it ([`crate::manifest::temp_path`]), synced, renamed into place, and removed if
/// anything fails.
pub fn write_parquet(
    path: &Path,
    schema: &arrow_schema::SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let tmp = crate::manifest::temp_path(path);
    let parquet = |e: parquet::errors::ParquetError| Error::io(path, std::io::Error::other(e));
    let written = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(parquet)?;
        for b in batches {
            w.write(b).map_err(parquet)?;
        }
        let file = w.into_inner().map_err(parquet)?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

//! Result tables: named, typed columns written as a readable text table, JSON lines, or Parquet
//! (atomically, with the schema of `schemas/` where the table has one).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::{Error, Result};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::types::{Float64Type, UInt32Type, UInt64Type};
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
    /// Lists of unsigned integers (document ids, sizes), or null.
    U64List(Vec<Option<Vec<u64>>>),
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
            Column::U64List(v) => v.len(),
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
            Column::U64List(v) => v[i].clone().map_or(Value::Null, Value::from),
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
            Column::U64List(v) => v[i].as_ref().map_or(String::new(), |x| {
                x.iter()
                    .map(|n| n.to_string())
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
            Column::Ids(v) => primitive_lists::<UInt32Type>(v.iter().map(|l| Some(l.as_slice()))),
            Column::OptIds(v) => primitive_lists::<UInt32Type>(v.iter().map(Option::as_deref)),
            Column::F64List(v) => primitive_lists::<Float64Type>(v.iter().map(Option::as_deref)),
            Column::U64List(v) => primitive_lists::<UInt64Type>(v.iter().map(Option::as_deref)),
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

/// A row of one of familiar's tables (`schemas/NAME.json`): a struct whose serde fields are the
/// table's columns, by name. [`from_rows`] turns rows into a [`Table`] with the table's schema —
/// the one place where rows become columns.
pub trait TableRow: serde::Serialize {
    /// The table's name in `schemas/`.
    const TABLE: &'static str;
}

/// `rows` as a [`Table`] with the schema of `R::TABLE`: each column is built from the rows'
/// field of its name, by the schema's type. A field the schema does not have, a column no field
/// fills, or a value of another type is a bug in familiar (the row type and the schema file
/// disagree), reported as [`Error::Bug`] naming the table and column.
pub fn from_rows<R: TableRow>(rows: &[R]) -> Result<Table> {
    use serde_json::Value;
    let schema = crate::schema::table(R::TABLE)?;
    let bug = |column: &str, what: &str| {
        Error::Bug(format!("table {}, column {column}: {what}", R::TABLE))
    };
    let mut objects = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Object(o) = serde_json::to_value(row).map_err(|e| bug("*", &e.to_string()))?
        else {
            return Err(bug("*", "a row is not a struct"));
        };
        if let Some(k) = o.keys().find(|k| schema.field_with_name(k).is_err()) {
            return Err(bug(
                k,
                "the row has this field; the schema has no such column",
            ));
        }
        objects.push(o);
    }
    let mut table = Table::new();
    for field in schema.fields() {
        let name = field.name().as_str();
        let values: Vec<&Value> = objects
            .iter()
            .map(|o| o.get(name).unwrap_or(&Value::Null))
            .collect();
        if !objects.is_empty() && objects.iter().all(|o| !o.contains_key(name)) {
            return Err(bug(name, "no field of the row fills this column"));
        }
        let wrong = |v: &Value| bug(name, &format!("unexpected value {v}"));
        // Each value (null: None) read by `get`, which fails on a value of another type.
        fn each<'v, T>(
            values: impl IntoIterator<Item = &'v Value>,
            get: impl Fn(&Value) -> Option<T>,
            wrong: &dyn Fn(&Value) -> Error,
        ) -> Result<Vec<Option<T>>> {
            values
                .into_iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    v => get(v).map(Some).ok_or_else(|| wrong(v)),
                })
                .collect()
        }
        let string = |v: &Value| v.as_str().map(str::to_string);
        // A list read item by item with `get`; `None` (so: a wrong value) if any item fails.
        fn list<T>(v: &Value, get: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
            v.as_array()?.iter().map(get).collect()
        }
        let column = match field.data_type() {
            DataType::UInt64 => Column::U64(each(values.iter().copied(), Value::as_u64, &wrong)?),
            DataType::Float64 => Column::F64(each(values.iter().copied(), Value::as_f64, &wrong)?),
            DataType::Utf8 => Column::Str(each(values.iter().copied(), string, &wrong)?),
            DataType::Boolean => {
                Column::Bool(each(values.iter().copied(), Value::as_bool, &wrong)?)
            }
            DataType::List(item) => match item.data_type() {
                DataType::UInt32 => {
                    let id = |x: &Value| x.as_u64().and_then(|x| u32::try_from(x).ok());
                    Column::OptIds(each(values.iter().copied(), |v| list(v, id), &wrong)?)
                }
                DataType::Float64 => Column::F64List(each(
                    values.iter().copied(),
                    |v| list(v, Value::as_f64),
                    &wrong,
                )?),
                DataType::UInt64 => Column::U64List(each(
                    values.iter().copied(),
                    |v| list(v, Value::as_u64),
                    &wrong,
                )?),
                DataType::Utf8 => Column::StrList(
                    each(values.iter().copied(), |v| list(v, string), &wrong)?
                        .into_iter()
                        .map(Option::unwrap_or_default)
                        .collect(),
                ),
                other => return Err(bug(name, &format!("lists of {other} are not supported"))),
            },
            other => return Err(bug(name, &format!("type {other} is not supported"))),
        };
        table = table.column(name, column);
    }
    Ok(table.with_schema(schema))
}

/// A list column of primitive values (`None`: a null list).
fn primitive_lists<'a, T: arrow_array::types::ArrowPrimitiveType>(
    lists: impl Iterator<Item = Option<&'a [T::Native]>>,
) -> (DataType, ArrayRef) {
    let mut b = ListBuilder::new(arrow_array::builder::PrimitiveBuilder::<T>::new());
    for list in lists {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Count {
        text: Option<String>,
        tokens: Vec<u32>,
        count: u64,
    }

    impl TableRow for Count {
        const TABLE: &'static str = "ngram_counts";
    }

    #[test]
    fn rows_become_the_columns_a_hand_built_table_has() {
        let rows = [
            Count {
                text: Some(" the cat".into()),
                tokens: vec![262, 3797],
                count: 7,
            },
            Count {
                text: None,
                tokens: vec![],
                count: 0,
            },
        ];
        let got = from_rows(&rows).unwrap().to_record_batch().unwrap();
        let want = Table::new()
            .column("text", Column::Str(vec![Some(" the cat".into()), None]))
            .column("tokens", Column::Ids(vec![vec![262, 3797], vec![]]))
            .column("count", Column::U64(vec![Some(7), Some(0)]))
            .with_schema(crate::schema::table("ngram_counts").unwrap())
            .to_record_batch()
            .unwrap();
        assert_eq!(got, want);
        assert_eq!(from_rows::<Count>(&[]).unwrap().rows(), 0);
    }

    #[test]
    fn rows_that_disagree_with_the_schema_are_bugs() {
        #[derive(serde::Serialize)]
        struct Extra {
            text: Option<String>,
            tokens: Vec<u32>,
            count: u64,
            surplus: u64,
        }
        impl TableRow for Extra {
            const TABLE: &'static str = "ngram_counts";
        }
        #[derive(serde::Serialize)]
        struct Missing {
            text: Option<String>,
            count: u64,
        }
        impl TableRow for Missing {
            const TABLE: &'static str = "ngram_counts";
        }
        #[derive(serde::Serialize)]
        struct Mistyped {
            text: u64,
            tokens: Vec<u32>,
            count: u64,
        }
        impl TableRow for Mistyped {
            const TABLE: &'static str = "ngram_counts";
        }
        let extra = Extra {
            text: None,
            tokens: vec![1],
            count: 1,
            surplus: 2,
        };
        let e = from_rows(&[extra]).unwrap_err().to_string();
        assert!(e.contains("ngram_counts, column surplus"), "{e}");
        let e = from_rows(&[Missing {
            text: None,
            count: 1,
        }])
        .unwrap_err()
        .to_string();
        assert!(e.contains("column tokens: no field"), "{e}");
        let e = from_rows(&[Mistyped {
            text: 3,
            tokens: vec![],
            count: 1,
        }])
        .unwrap_err()
        .to_string();
        assert!(e.contains("column text: unexpected value 3"), "{e}");
    }
}

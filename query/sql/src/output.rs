//! Results as aligned text, CSV, JSON or Parquet.

use std::io::Write;
use std::path::Path;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::{Error, Result};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns with a header rule.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects, one per row.
    Json,
    /// A Parquet file (needs a file to write to).
    Parquet,
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

/// `batches` as aligned text (DataFusion's own table layout).
pub fn render_table(batches: &[RecordBatch]) -> Result<String> {
    let shown = datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(other)?;
    Ok(format!("{shown}\n"))
}

/// Writes `batches` (of `schema`) to `out` in `format` (not Parquet).
pub fn write_text(
    out: &mut dyn Write,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "(no rows; columns: {})", names.join(", ")).map_err(other)?;
            } else {
                out.write_all(render_table(batches)?.as_bytes())
                    .map_err(other)?;
            }
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))
                    .map_err(other)?;
            }
            for b in batches {
                w.write(b).map_err(other)?;
            }
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut *out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs).map_err(other)?;
            w.finish().map_err(other)?;
            writeln!(out).map_err(other)?;
        }
        Format::Parquet => {
            return Err(Error::Other(format!(
                "Parquet output is written to a file, not a stream: name one with {}",
                familiar::option::name("output")
            )))
        }
    }
    Ok(())
}

/// Writes `batches` to the Parquet file `path` atomically ([`familiar::table::write_parquet`]).
pub fn write_parquet(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    familiar::table::write_parquet(path, schema, batches).map_err(|e| match e {
        familiar::Error::Io { path, error } => Error::Io {
            path,
            source: error,
        },
        other => Error::Other(other.to_string()),
    })
}

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
            return Err(Error::Other(
                "Parquet output needs --output FILE".to_string(),
            ))
        }
    }
    Ok(())
}

/// Writes `batches` to the Parquet file `path` (zstd; a temporary file, synced, renamed into
/// place, and removed if anything fails).
pub fn write_parquet(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let tmp = familiar::manifest::temp_path(path);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| Error::Io { path: p, source: e }
    };
    let parquet =
        |e: parquet::errors::ParquetError| Error::Other(format!("{}: {e}", path.display()));
    let written = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(parquet)?;
        for b in batches {
            w.write(b).map_err(parquet)?;
        }
        let file = w.into_inner().map_err(parquet)?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

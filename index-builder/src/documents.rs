//! Streaming writer of a shard's `documents.parquet` (schema: `schemas/documents.json`).

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{MapBuilder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use familiar::{Error, Result};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

const ROWS_PER_BATCH: usize = 8192;

/// One row of the documents table.
#[derive(Debug, Clone)]
pub struct DocumentRow<'a> {
    /// Global id.
    pub doc_id: u64,
    /// External id.
    pub external_id: &'a str,
    /// Source name.
    pub source: Option<&'a str>,
    /// Input file path.
    pub input_file: &'a str,
    /// Line or row in the input file.
    pub input_record: u64,
    /// Tokens, separator excluded.
    pub token_count: u64,
    /// UTF-8 bytes of the text.
    pub byte_length: u64,
    /// Flattened metadata.
    pub metadata: &'a [(String, String)],
}

/// Writes rows in batches of a fixed size, so the file depends only on the rows.
pub struct DocumentsWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: arrow_schema::SchemaRef,
    shard: u32,
    doc_id: UInt64Builder,
    shard_col: UInt32Builder,
    external_id: StringBuilder,
    source: StringBuilder,
    input_file: StringBuilder,
    input_record: UInt64Builder,
    token_count: UInt64Builder,
    byte_length: UInt64Builder,
    metadata: MapBuilder<StringBuilder, StringBuilder>,
    rows: usize,
}

impl<W: Write + Send> std::fmt::Debug for DocumentsWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentsWriter")
            .field("shard", &self.shard)
            .field("rows", &self.rows)
            .finish()
    }
}

fn pq(e: parquet::errors::ParquetError) -> Error {
    Error::Io {
        path: "documents.parquet".into(),
        error: std::io::Error::other(e.to_string()),
    }
}

impl<W: Write + Send> DocumentsWriter<W> {
    /// A writer for shard `shard` into `out`.
    pub fn new(out: W, shard: u32) -> Result<Self> {
        let schema = familiar::schema::table("documents")?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        let writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props)).map_err(pq)?;
        let (keys, values) = match schema
            .field_with_name("metadata")
            .map(|f| f.data_type().clone())
        {
            Ok(arrow_schema::DataType::Map(entries, _)) => match entries.data_type() {
                arrow_schema::DataType::Struct(fields) if fields.len() == 2 => {
                    (Arc::clone(&fields[0]), Arc::clone(&fields[1]))
                }
                _ => {
                    return Err(Error::Bug(
                        "metadata map entries are not a 2-field struct".into(),
                    ))
                }
            },
            _ => return Err(Error::Bug("documents.metadata is not a map".into())),
        };
        let metadata = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
            .with_keys_field(keys)
            .with_values_field(values);
        Ok(DocumentsWriter {
            writer,
            schema,
            shard,
            doc_id: UInt64Builder::new(),
            shard_col: UInt32Builder::new(),
            external_id: StringBuilder::new(),
            source: StringBuilder::new(),
            input_file: StringBuilder::new(),
            input_record: UInt64Builder::new(),
            token_count: UInt64Builder::new(),
            byte_length: UInt64Builder::new(),
            metadata,
            rows: 0,
        })
    }

    /// Appends a row.
    pub fn push(&mut self, row: &DocumentRow<'_>) -> Result<()> {
        self.doc_id.append_value(row.doc_id);
        self.shard_col.append_value(self.shard);
        self.external_id.append_value(row.external_id);
        self.source.append_option(row.source);
        self.input_file.append_value(row.input_file);
        self.input_record.append_value(row.input_record);
        self.token_count.append_value(row.token_count);
        self.byte_length.append_value(row.byte_length);
        for (k, v) in row.metadata {
            self.metadata.keys().append_value(k);
            self.metadata.values().append_value(v);
        }
        self.metadata
            .append(true)
            .map_err(|e| Error::Bug(format!("metadata map: {e}")))?;
        self.rows += 1;
        if self.rows == ROWS_PER_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.doc_id.finish()),
            Arc::new(self.shard_col.finish()),
            Arc::new(self.external_id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.input_file.finish()),
            Arc::new(self.input_record.finish()),
            Arc::new(self.token_count.finish()),
            Arc::new(self.byte_length.finish()),
            Arc::new(self.metadata.finish()),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| {
            Error::Bug(format!(
                "documents batch does not match schemas/documents.json: {e}"
            ))
        })?;
        self.writer.write(&batch).map_err(pq)?;
        self.rows = 0;
        Ok(())
    }

    /// Writes the remaining rows and the footer, returning the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        self.flush()?;
        self.writer.into_inner().map_err(pq)
    }
}

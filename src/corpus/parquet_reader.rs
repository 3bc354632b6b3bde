//! Parquet reader: one document per row.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{flatten_metadata, Document, Fields, RecordSource};
use crate::error::{Error, IoContext, Result};

pub(super) struct ParquetSource {
    reader: ParquetRecordBatchReader,
    path: PathBuf,
    file_name: String,
    index: usize,
    fields: Fields,
    batch: Option<RecordBatch>,
    row_in_batch: usize,
    row: u64,
    failed: bool,
    /// xxh3 of the whole file.
    xxh3: u64,
}

impl ParquetSource {
    pub(super) fn open(
        path: &Path,
        index: usize,
        fields: &Fields,
        skip: u64,
        counter: Arc<AtomicU64>,
    ) -> Result<ParquetSource> {
        let (mut file, bytes) = crate::manifest::open_regular(path)?;
        // Parquet is read by column chunk, at offsets from the footer, not front to back: hash
        // the file in one sequential pass first (which also brings it into the page cache the
        // column reads then hit). The fingerprint covers the whole file, so a resumed build
        // compares it whole (see `RecordSource::consumed_xxh3`).
        let xxh3 = {
            use std::io::Seek;
            let (digest, read) = crate::checksum::hash_reader(&mut file, path, |n| {
                counter.fetch_add(n, Ordering::Relaxed);
            })?;
            if read != bytes {
                return Err(Error::input(
                    path,
                    0,
                    format!("changed while being read ({bytes} bytes, then {read})"),
                ));
            }
            file.seek(std::io::SeekFrom::Start(0)).at(path)?;
            digest
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Error::input(path, 0, format!("not a readable Parquet file: {e}")))?;
        let schema = builder.schema().clone();
        match schema.field_with_name(&fields.text) {
            Ok(f) if is_string(f.data_type()) => {}
            Ok(f) => {
                return Err(Error::input(
                    path,
                    0,
                    format!(
                        "column `{}` has type {}, expected a string column",
                        fields.text,
                        f.data_type()
                    ),
                ))
            }
            Err(_) => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(Error::input(
                    path,
                    0,
                    format!(
                        "no `{}` column (columns: {}); name the text column with {}",
                        fields.text,
                        names.join(", "),
                        crate::option::name("text_field")
                    ),
                ));
            }
        }
        let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
        if skip > total {
            return Err(super::changed_since(
                path,
                format!("it has {total} rows, but the build resumes after row {skip}"),
            ));
        }
        let reader = builder
            .with_batch_size(1024)
            .with_offset(skip as usize)
            .build()
            .map_err(|e| Error::input(path, 0, format!("cannot read Parquet: {e}")))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(ParquetSource {
            reader,
            path: path.to_path_buf(),
            file_name,
            index,
            fields: fields.clone(),
            batch: None,
            row_in_batch: 0,
            row: skip,
            failed: false,
            xxh3,
        })
    }

    fn row(&self, batch: &RecordBatch, i: usize) -> Result<Document> {
        let line = self.row;
        let f = &self.fields;
        let text = string_at(batch.column_by_name(&f.text), i)
            .ok_or_else(|| Error::input(&self.path, line, format!("`{}` is null", f.text)))?;
        let external_id = match batch.column_by_name(&f.id) {
            Some(col) if col.is_valid(i) => scalar_to_string(col, i).ok_or_else(|| {
                Error::input(
                    &self.path,
                    line,
                    format!("column `{}` is not a string or integer", f.id),
                )
            })?,
            _ => format!("{}:{line}", self.file_name),
        };
        let source = string_at(batch.column_by_name(&f.source), i);
        let mut metadata = Vec::new();
        if let Some(m) = string_at(batch.column_by_name(&f.metadata), i) {
            let v: serde_json::Value = serde_json::from_str(&m).map_err(|e| {
                Error::input(
                    &self.path,
                    line,
                    format!("column `{}` is not valid JSON: {e}", f.metadata),
                )
            })?;
            flatten_metadata("", &v, &mut metadata);
        }
        Ok(Document {
            text,
            external_id,
            source,
            metadata,
            file: self.index,
            record: line,
        })
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn string_at(col: Option<&ArrayRef>, i: usize) -> Option<String> {
    let col = col?;
    if !col.is_valid(i) {
        return None;
    }
    match col.data_type() {
        DataType::Utf8 => Some(col.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Some(col.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Some(col.as_string_view().value(i).to_string()),
        _ => None,
    }
}

fn scalar_to_string(col: &ArrayRef, i: usize) -> Option<String> {
    use arrow_array::types::*;
    string_at(Some(col), i).or_else(|| match col.data_type() {
        DataType::Int64 => Some(col.as_primitive::<Int64Type>().value(i).to_string()),
        DataType::Int32 => Some(col.as_primitive::<Int32Type>().value(i).to_string()),
        DataType::UInt64 => Some(col.as_primitive::<UInt64Type>().value(i).to_string()),
        DataType::UInt32 => Some(col.as_primitive::<UInt32Type>().value(i).to_string()),
        _ => None,
    })
}

impl RecordSource for ParquetSource {
    fn next_record(&mut self) -> Option<Result<Document>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(batch) = &self.batch {
                if self.row_in_batch < batch.num_rows() {
                    let i = self.row_in_batch;
                    self.row_in_batch += 1;
                    self.row += 1;
                    return Some(self.row(batch, i));
                }
            }
            match self.reader.next()? {
                Ok(b) => {
                    self.batch = Some(b);
                    self.row_in_batch = 0;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(Error::Io {
                        path: self.path.clone(),
                        error: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("after row {}: corrupt Parquet data: {e}", self.row),
                        ),
                    }));
                }
            }
        }
    }

    fn consumed(&self) -> u64 {
        self.row
    }

    fn consumed_xxh3(&self) -> u64 {
        self.xxh3
    }

    fn file_xxh3(&mut self) -> Result<u64> {
        Ok(self.xxh3)
    }
}

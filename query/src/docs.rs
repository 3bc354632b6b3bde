//! Documents by id: their row of the documents table and their text (decoded from the tokens).

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::Array;
use familiar::index::Index;

use familiar::{Error, Result};

/// A document: its documents-table row and its text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DocRecord {
    /// Global id.
    pub doc_id: u64,
    /// Shard.
    pub shard: u32,
    /// The corpus's id.
    pub external_id: String,
    /// Source name.
    pub source: Option<String>,
    /// Input file.
    pub input_file: String,
    /// Tokens, separator excluded.
    pub token_count: u64,
    /// Bytes of the original text.
    pub byte_length: u64,
    /// Flattened metadata.
    pub metadata: Vec<(String, String)>,
}

/// The documents-table row of `doc_id`.
pub fn record(index: &Index, doc_id: u64) -> Result<DocRecord> {
    let (shard, local) = index.locate_doc(doc_id)?;
    let path = shard.dir.join(familiar::manifest::DOCUMENTS_FILE);
    let err = |e: &dyn std::fmt::Display| Error::corrupt(&path, e.to_string());
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| err(&e))?
        .with_offset(local as usize)
        .with_limit(1)
        .build()
        .map_err(|e| err(&e))?;
    let batch = reader
        .into_iter()
        .next()
        .ok_or_else(|| err(&"row missing"))?
        .map_err(|e| err(&e))?;
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| err(&format!("no column {name}")))
    };
    let u64_at = |name: &str| -> Result<u64> {
        let c = col(name)?;
        let a = c
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| err(&format!("{name} is not uint64")))?;
        Ok(a.value(0))
    };
    let str_at = |name: &str| -> Result<Option<String>> {
        let c = col(name)?;
        let a = c
            .as_string_opt::<i32>()
            .ok_or_else(|| err(&format!("{name} is not a string")))?;
        Ok(a.is_valid(0).then(|| a.value(0).to_string()))
    };
    let got = u64_at("doc_id")?;
    if got != doc_id {
        return Err(err(&format!(
            "row {local} holds document {got}, not {doc_id}"
        )));
    }
    let meta_col = col("metadata")?;
    let map = meta_col
        .as_map_opt()
        .ok_or_else(|| err(&"metadata is not a map"))?;
    let entries = map.value(0);
    let keys = entries
        .column(0)
        .as_string_opt::<i32>()
        .ok_or_else(|| err(&"metadata keys"))?;
    let values = entries
        .column(1)
        .as_string_opt::<i32>()
        .ok_or_else(|| err(&"metadata values"))?;
    let metadata = (0..entries.len())
        .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
        .collect();
    Ok(DocRecord {
        doc_id,
        shard: shard.manifest.shard,
        external_id: str_at("external_id")?.unwrap_or_default(),
        source: str_at("source")?,
        input_file: str_at("input_file")?.unwrap_or_default(),
        token_count: u64_at("token_count")?,
        byte_length: u64_at("byte_length")?,
        metadata,
    })
}

/// Text of document `doc_id`, decoded from its tokens with the index's tokenizer.
pub fn text(index: &Index, doc_id: u64) -> Result<String> {
    let ids = index.doc_tokens(doc_id, 0, u64::MAX)?;
    index.tokenizer()?.decode(&ids)
}

/// Text around an occurrence: `before` tokens before `offset_in_doc`, the `len` tokens of the
/// match, and `after` tokens after it, never past the document's ends. Returns (left, match, right).
pub fn window(
    index: &Index,
    doc_id: u64,
    offset_in_doc: u64,
    len: u64,
    before: u64,
    after: u64,
) -> Result<(String, String, String)> {
    let t = index.tokenizer()?;
    let left = index.doc_tokens(doc_id, offset_in_doc.saturating_sub(before), offset_in_doc)?;
    // Saturating: the ends are clamped to the document anyway, and `before`/`after` come from
    // users (`--context 18446744073709551615`).
    let end = offset_in_doc.saturating_add(len);
    let mid = index.doc_tokens(doc_id, offset_in_doc, end)?;
    let right = index.doc_tokens(doc_id, end, end.saturating_add(after))?;
    Ok((t.decode(&left)?, t.decode(&mid)?, t.decode(&right)?))
}

/// Every document's source (the documents tables' `source` column), indexed by global document
/// id. A table whose row count differs from its shard's documents is corrupt.
pub fn sources(index: &Index) -> Result<Vec<Option<String>>> {
    let mut out = Vec::with_capacity(index.documents() as usize);
    read_columns(index, Some(&["source"]), &mut |batch, err| {
        let c = batch
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| err("source is not a string column"))?;
        out.extend((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())));
        Ok(c.len())
    })?;
    Ok(out)
}

/// Where every document was read from (the documents tables' `input_file` and `input_record`:
/// the input's path as the build was given it, and the 1-based line or row), by global id.
pub fn locations(index: &Index) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::with_capacity(index.documents() as usize);
    read_columns(
        index,
        Some(&["input_file", "input_record"]),
        &mut |batch, err| {
            let files = batch
                .column(0)
                .as_string_opt::<i32>()
                .ok_or_else(|| err("input_file is not a string column"))?;
            let records = batch
                .column(1)
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| err("input_record is not a uint64 column"))?;
            out.extend((0..files.len()).map(|i| (files.value(i).to_string(), records.value(i))));
            Ok(files.len())
        },
    )?;
    Ok(out)
}

/// The index's documents table (every column, every shard's rows in global document order), as
/// the shards' `documents.parquet` hold it.
pub fn table(index: &Index) -> Result<Vec<arrow_array::RecordBatch>> {
    let mut out = Vec::new();
    read_columns(index, None, &mut |batch, _| {
        out.push(batch.clone());
        Ok(batch.num_rows())
    })?;
    Ok(out)
}

/// What [`read_columns`] calls per batch.
type BatchFn<'a> =
    dyn FnMut(&arrow_array::RecordBatch, &dyn Fn(&str) -> Error) -> Result<usize> + 'a;

/// Reads the columns `names` (in that order; `None`: all, in the file's order) of every shard's
/// documents table, batch by batch; `f` takes a batch and an error maker naming the file, and
/// returns the batch's rows. A shard whose table has another number of rows than its documents
/// is corrupt.
fn read_columns(index: &Index, names: Option<&[&str]>, f: &mut BatchFn<'_>) -> Result<()> {
    for shard in index.shards() {
        let path = shard.dir.join(familiar::manifest::DOCUMENTS_FILE);
        let err = |e: &dyn std::fmt::Display| Error::corrupt(&path, e.to_string());
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| err(&e))?;
        let mut rows = 0u64;
        let Some(names) = names else {
            for batch in builder.build().map_err(|e| err(&e))? {
                let batch = batch.map_err(|e| err(&e))?;
                rows += f(&batch, &|m| err(&m))? as u64;
            }
            check_rows(rows, shard, &err)?;
            continue;
        };
        let columns = names
            .iter()
            .map(|n| builder.schema().index_of(n).map_err(|e| err(&e)))
            .collect::<Result<Vec<usize>>>()?;
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), columns.clone());
        for batch in builder.with_projection(mask).build().map_err(|e| err(&e))? {
            let batch = batch.map_err(|e| err(&e))?;
            // The projection keeps the file's column order: put the batch in the asked order.
            let mut order: Vec<usize> = (0..names.len()).collect();
            order.sort_by_key(|&i| columns[i]);
            let mut asked = vec![0usize; names.len()];
            for (pos, &i) in order.iter().enumerate() {
                asked[i] = pos;
            }
            let batch = batch.project(&asked).map_err(|e| err(&e))?;
            rows += f(&batch, &|m| err(&m))? as u64;
        }
        check_rows(rows, shard, &err)?;
    }
    Ok(())
}

/// A shard's documents table must have a row per document.
fn check_rows(
    rows: u64,
    shard: &familiar::index::Shard,
    err: &dyn Fn(&dyn std::fmt::Display) -> Error,
) -> Result<()> {
    if rows != shard.manifest.documents {
        return Err(err(&format!(
            "{rows} rows for the shard's {} documents",
            shard.manifest.documents
        )));
    }
    Ok(())
}

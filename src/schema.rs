//! Arrow schemas of familiar's tables, read from the JSON files under `schemas/`.
//!
//! The files are the one source of truth: they are compiled in, and every writer (and later the SQL
//! layer) takes its schema from here. Each column's `doc` becomes the field's `doc` metadata.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The schema files compiled into the library, by table name.
pub const SCHEMA_FILES: &[(&str, &str)] = &[
    ("documents", include_str!("../schemas/documents.json")),
    ("ngram_counts", include_str!("../schemas/ngram_counts.json")),
    ("top_ngrams", include_str!("../schemas/top_ngrams.json")),
    ("trace_spans", include_str!("../schemas/trace_spans.json")),
    (
        "contamination",
        include_str!("../schemas/contamination.json"),
    ),
    (
        "trace_documents",
        include_str!("../schemas/trace_documents.json"),
    ),
    ("duplicates", include_str!("../schemas/duplicates.json")),
    (
        "duplicate_clusters",
        include_str!("../schemas/duplicate_clusters.json"),
    ),
    ("concepts", include_str!("../schemas/concepts.json")),
    (
        "concept_lookup",
        include_str!("../schemas/concept_lookup.json"),
    ),
    (
        "concept_frequency",
        include_str!("../schemas/concept_frequency.json"),
    ),
    ("cooccurrence", include_str!("../schemas/cooccurrence.json")),
    ("zero_shot", include_str!("../schemas/zero_shot.json")),
    (
        "keyword_probe",
        include_str!("../schemas/keyword_probe.json"),
    ),
    (
        "activation_stats",
        include_str!("../schemas/activation_stats.json"),
    ),
    ("influence", include_str!("../schemas/influence.json")),
    (
        "influence_tokens",
        include_str!("../schemas/influence_tokens.json"),
    ),
    ("queries", include_str!("../schemas/queries.json")),
    ("models", include_str!("../schemas/models.json")),
    ("priming", include_str!("../schemas/priming.json")),
    (
        "priming_probe",
        include_str!("../schemas/priming_probe.json"),
    ),
];

#[derive(Deserialize)]
struct TableSpec {
    table: String,
    doc: String,
    columns: Vec<ColumnSpec>,
}

#[derive(Deserialize)]
struct ColumnSpec {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    nullable: bool,
    doc: String,
}

/// Parses the type names used in `schemas/*.json`.
pub fn parse_type(ty: &str) -> Result<DataType> {
    Ok(match ty {
        "uint8" => DataType::UInt8,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "bool" => DataType::Boolean,
        "utf8" => DataType::Utf8,
        "map<utf8,utf8>" => map_type(),
        "list<uint32>" => DataType::List(Arc::new(Field::new("item", DataType::UInt32, true))),
        "list<utf8>" => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        "list<float64>" => DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
        "list<uint64>" => DataType::List(Arc::new(Field::new("item", DataType::UInt64, true))),
        other => {
            return Err(Error::Bug(format!(
                "unknown column type {other:?} in schemas/"
            )))
        }
    })
}

/// The Arrow type of a string-to-string map column (`metadata`).
pub fn map_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The schema of table `name`, from `schemas/{name}.json`.
pub fn table(name: &str) -> Result<Arc<Schema>> {
    let (_, text) = SCHEMA_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| Error::Bug(format!("no schema file for table {name:?}")))?;
    let spec: TableSpec = serde_json::from_str(text)
        .map_err(|e| Error::Bug(format!("schemas/{name}.json is invalid: {e}")))?;
    if spec.table != name {
        return Err(Error::Bug(format!(
            "schemas/{name}.json names table {:?}",
            spec.table
        )));
    }
    let fields = spec
        .columns
        .into_iter()
        .map(|c| {
            Ok(Field::new(c.name, parse_type(&c.ty)?, c.nullable)
                .with_metadata(HashMap::from([("doc".to_string(), c.doc)])))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields).with_metadata(HashMap::from(
        [("doc".to_string(), spec.doc)],
    ))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_schema_file_parses() {
        for (name, _) in super::SCHEMA_FILES {
            let s = super::table(name).unwrap();
            assert!(!s.fields().is_empty());
            assert!(
                s.fields().iter().all(|f| !f.metadata()["doc"].is_empty()),
                "{name}: column without doc"
            );
        }
    }
}

//! The concept tables (schemas/concepts.json, concept_frequency.json, cooccurrence.json) and the
//! lexicon's fst, written into one directory.

use std::path::{Path, PathBuf};

use familiar::error::IoContext;
use familiar::Result;

use super::count::Counts;
use super::lexicon::Lexicon;
use familiar::table::{from_rows, Format, Table};

/// File names inside the output directory.
pub const CONCEPTS_FILE: &str = "concepts.parquet";
/// See [`CONCEPTS_FILE`].
pub const FREQUENCY_FILE: &str = "concept_frequency.parquet";
/// See [`CONCEPTS_FILE`].
pub const COOCCURRENCE_FILE: &str = "cooccurrence.parquet";
/// The lexicon as an fst map: normalized form → concept id.
pub const LEXICON_FST_FILE: &str = "lexicon.fst";

/// A row of the `concepts` table: one concept of a lexicon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/concepts.json
pub struct ConceptTableRow {
    pub concept_id: u64,
    pub concept: String,
    pub group: Option<String>,
    pub aliases: Vec<String>,
    pub normalized_forms: Vec<String>,
    pub lexicon: String,
    pub line: u64,
}

impl familiar::table::TableRow for ConceptTableRow {
    const TABLE: &'static str = "concepts";
}

/// A row of the `concept_frequency` table: one count of a concept, form or variant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/concept_frequency.json
pub struct FrequencyTableRow {
    pub concept_id: u64,
    pub concept: String,
    pub method: String,
    pub level: String,
    pub form: Option<String>,
    pub variant: Option<String>,
    pub variant_text: Option<String>,
    pub tokens: Option<Vec<u32>>,
    pub occurrences: Option<u64>,
    pub documents: u64,
    pub corpus_documents: u64,
    pub corpus_tokens: u64,
}

impl familiar::table::TableRow for FrequencyTableRow {
    const TABLE: &'static str = "concept_frequency";
}

/// A row of the `cooccurrence` table: documents holding both concepts of a pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/cooccurrence.json
pub struct CooccurrenceTableRow {
    pub pair_line: u64,
    pub concept_a_id: u64,
    pub concept_a: String,
    pub concept_b_id: u64,
    pub concept_b: String,
    pub method: String,
    pub documents_a: u64,
    pub documents_b: u64,
    pub documents_both: u64,
    pub corpus_documents: u64,
}

impl familiar::table::TableRow for CooccurrenceTableRow {
    const TABLE: &'static str = "cooccurrence";
}

/// The rows of the `concepts` table.
pub fn concept_rows(lexicon: &Lexicon) -> Vec<ConceptTableRow> {
    let lex = lexicon.path.display().to_string();
    lexicon
        .concepts
        .iter()
        .map(|c| ConceptTableRow {
            concept_id: c.id,
            concept: c.name.clone(),
            group: c.group.clone(),
            aliases: c.forms[1..].to_vec(),
            normalized_forms: c.normalized.clone(),
            lexicon: lex.clone(),
            line: c.line,
        })
        .collect()
}

/// The rows of the `concept_frequency` table.
pub fn frequency_rows(lexicon: &Lexicon, counts: &Counts) -> Vec<FrequencyTableRow> {
    let name = |id: u64| lexicon.concepts[id as usize].name.clone();
    counts
        .frequencies
        .iter()
        .map(|r| FrequencyTableRow {
            concept_id: r.concept_id,
            concept: name(r.concept_id),
            method: r.method.name().to_string(),
            level: r.level.to_string(),
            form: r.form.clone(),
            variant: r.variant.clone(),
            variant_text: r.variant_text.clone(),
            tokens: r.tokens.clone(),
            occurrences: r.occurrences,
            documents: r.documents,
            corpus_documents: counts.corpus_documents,
            corpus_tokens: counts.corpus_tokens,
        })
        .collect()
}

/// The rows of the `cooccurrence` table.
pub fn cooccurrence_rows(lexicon: &Lexicon, counts: &Counts) -> Vec<CooccurrenceTableRow> {
    let name = |id: u64| lexicon.concepts[id as usize].name.clone();
    counts
        .cooccurrences
        .iter()
        .map(|r| CooccurrenceTableRow {
            pair_line: r.line,
            concept_a_id: r.concept_a,
            concept_a: name(r.concept_a),
            concept_b_id: r.concept_b,
            concept_b: name(r.concept_b),
            method: r.method.name().to_string(),
            documents_a: r.documents_a,
            documents_b: r.documents_b,
            documents_both: r.documents_both,
            corpus_documents: counts.corpus_documents,
        })
        .collect()
}

/// The `concepts` table.
pub fn concepts_table(lexicon: &Lexicon) -> Result<Table> {
    from_rows(&concept_rows(lexicon))
}

/// Writes the three tables and `lexicon.fst` into `dir` (created if needed); each file is
/// written atomically. Returns the paths written.
pub fn write_all(dir: &Path, lexicon: &Lexicon, counts: &Counts) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).at(dir)?;
    let mut written = Vec::new();
    for (file, table) in [
        (CONCEPTS_FILE, concepts_table(lexicon)?),
        (FREQUENCY_FILE, from_rows(&frequency_rows(lexicon, counts))?),
        (
            COOCCURRENCE_FILE,
            from_rows(&cooccurrence_rows(lexicon, counts))?,
        ),
    ] {
        let path = dir.join(file);
        table.write(Format::Parquet, Some(&path))?;
        written.push(path);
    }
    let path = dir.join(LEXICON_FST_FILE);
    lexicon.write_fst(&path)?;
    written.push(path);
    Ok(written)
}

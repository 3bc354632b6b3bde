//! The concept tables (schemas/concepts.json, concept_frequency.json, cooccurrence.json) and the
//! lexicon's fst, written into one directory.

use std::path::{Path, PathBuf};

use familiar::error::IoContext;
use familiar::Result;

use super::count::Counts;
use super::lexicon::Lexicon;
use familiar::table::{Column, Format, Table};

/// File names inside the output directory.
pub const CONCEPTS_FILE: &str = "concepts.parquet";
/// See [`CONCEPTS_FILE`].
pub const FREQUENCY_FILE: &str = "concept_frequency.parquet";
/// See [`CONCEPTS_FILE`].
pub const COOCCURRENCE_FILE: &str = "cooccurrence.parquet";
/// The lexicon as an fst map: normalized form → concept id.
pub const LEXICON_FST_FILE: &str = "lexicon.fst";

/// The `concepts` table.
pub fn concepts_table(lexicon: &Lexicon) -> Result<Table> {
    let c = &lexicon.concepts;
    let lex = lexicon.path.display().to_string();
    Ok(Table::new()
        .column(
            "concept_id",
            Column::U64(c.iter().map(|c| Some(c.id)).collect()),
        )
        .column(
            "concept",
            Column::Str(c.iter().map(|c| Some(c.name.clone())).collect()),
        )
        .column(
            "group",
            Column::Str(c.iter().map(|c| c.group.clone()).collect()),
        )
        .column(
            "aliases",
            Column::StrList(c.iter().map(|c| c.forms[1..].to_vec()).collect()),
        )
        .column(
            "normalized_forms",
            Column::StrList(c.iter().map(|c| c.normalized.clone()).collect()),
        )
        .column(
            "lexicon",
            Column::Str(c.iter().map(|_| Some(lex.clone())).collect()),
        )
        .column(
            "line",
            Column::U64(c.iter().map(|c| Some(c.line)).collect()),
        )
        .with_schema(familiar::schema::table("concepts")?))
}

/// The `concept_frequency` table.
pub fn frequency_table(lexicon: &Lexicon, counts: &Counts) -> Result<Table> {
    let r = &counts.frequencies;
    let name = |id: u64| Some(lexicon.concepts[id as usize].name.clone());
    Ok(Table::new()
        .column(
            "concept_id",
            Column::U64(r.iter().map(|r| Some(r.concept_id)).collect()),
        )
        .column(
            "concept",
            Column::Str(r.iter().map(|r| name(r.concept_id)).collect()),
        )
        .column(
            "method",
            Column::Str(
                r.iter()
                    .map(|r| Some(r.method.name().to_string()))
                    .collect(),
            ),
        )
        .column(
            "level",
            Column::Str(r.iter().map(|r| Some(r.level.to_string())).collect()),
        )
        .column(
            "form",
            Column::Str(r.iter().map(|r| r.form.clone()).collect()),
        )
        .column(
            "variant",
            Column::Str(r.iter().map(|r| r.variant.clone()).collect()),
        )
        .column(
            "variant_text",
            Column::Str(r.iter().map(|r| r.variant_text.clone()).collect()),
        )
        .column(
            "tokens",
            Column::OptIds(r.iter().map(|r| r.tokens.clone()).collect()),
        )
        .column(
            "occurrences",
            Column::U64(r.iter().map(|r| r.occurrences).collect()),
        )
        .column(
            "documents",
            Column::U64(r.iter().map(|r| Some(r.documents)).collect()),
        )
        .column(
            "corpus_documents",
            Column::U64(vec![Some(counts.corpus_documents); r.len()]),
        )
        .column(
            "corpus_tokens",
            Column::U64(vec![Some(counts.corpus_tokens); r.len()]),
        )
        .with_schema(familiar::schema::table("concept_frequency")?))
}

/// The `cooccurrence` table.
pub fn cooccurrence_table(lexicon: &Lexicon, counts: &Counts) -> Result<Table> {
    let r = &counts.cooccurrences;
    let name = |id: u64| Some(lexicon.concepts[id as usize].name.clone());
    Ok(Table::new()
        .column(
            "pair_line",
            Column::U64(r.iter().map(|r| Some(r.line)).collect()),
        )
        .column(
            "concept_a_id",
            Column::U64(r.iter().map(|r| Some(r.concept_a)).collect()),
        )
        .column(
            "concept_a",
            Column::Str(r.iter().map(|r| name(r.concept_a)).collect()),
        )
        .column(
            "concept_b_id",
            Column::U64(r.iter().map(|r| Some(r.concept_b)).collect()),
        )
        .column(
            "concept_b",
            Column::Str(r.iter().map(|r| name(r.concept_b)).collect()),
        )
        .column(
            "method",
            Column::Str(
                r.iter()
                    .map(|r| Some(r.method.name().to_string()))
                    .collect(),
            ),
        )
        .column(
            "documents_a",
            Column::U64(r.iter().map(|r| Some(r.documents_a)).collect()),
        )
        .column(
            "documents_b",
            Column::U64(r.iter().map(|r| Some(r.documents_b)).collect()),
        )
        .column(
            "documents_both",
            Column::U64(r.iter().map(|r| Some(r.documents_both)).collect()),
        )
        .column(
            "corpus_documents",
            Column::U64(vec![Some(counts.corpus_documents); r.len()]),
        )
        .with_schema(familiar::schema::table("cooccurrence")?))
}

/// Writes the three tables and `lexicon.fst` into `dir` (created if needed); each file is
/// written atomically. Returns the paths written.
pub fn write_all(dir: &Path, lexicon: &Lexicon, counts: &Counts) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).at(dir)?;
    let mut written = Vec::new();
    for (file, table) in [
        (CONCEPTS_FILE, concepts_table(lexicon)?),
        (FREQUENCY_FILE, frequency_table(lexicon, counts)?),
        (COOCCURRENCE_FILE, cooccurrence_table(lexicon, counts)?),
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

//! `familiar import`: results made elsewhere into familiar's tables.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use familiar::table::Format;
use familiar_models::measure::import::{import_zero_shot, ImportOptions, Imported, ResultFormat};

/// What to import.
#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Zero-shot results (CSV, JSONL, or lm-evaluation-harness per-sample logs) into a zero_shot
    /// table.
    ZeroShot(ZeroShotArgs),
    /// A concept list (CSV/TSV with concept, aliases separated by |, group; or JSONL) into a
    /// concepts table, checked as `familiar concepts count` checks it.
    Concepts(ConceptsArgs),
    /// Model metadata (config.json, the safetensors, trainer_state.json) of checkpoints into a
    /// models table.
    Model(ModelArgs),
}

/// Arguments of `familiar import concepts`.
#[derive(Debug, clap::Args)]
pub struct ConceptsArgs {
    /// The concept list.
    lexicon: PathBuf,
    /// The Parquet file to write (the concepts table of schemas/).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `familiar import model`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Hugging Face model directories.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// The Parquet file to write (the models table of schemas/).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `familiar import zero-shot`.
#[derive(Debug, clap::Args)]
pub struct ZeroShotArgs {
    /// Result files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Their format.
    #[arg(long, value_enum, default_value = "auto")]
    from: ResultFormat,
    /// The model's name (required unless every row has a `model`).
    #[arg(long)]
    model: Option<String>,
    /// The task of every row (default: the `task` column; lm-eval: from the file name).
    #[arg(long)]
    task: Option<String>,
    /// lm-eval: the key of each sample's `doc` holding its concepts (a string or a list of
    /// strings; dots descend: `meta.entity`).
    #[arg(long)]
    concepts_key: Option<String>,
    /// The Parquet file to write (the zero_shot table of schemas/).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `familiar import`.
pub fn run(c: ImportCommand) -> Result<i32> {
    match c {
        ImportCommand::ZeroShot(a) => zero_shot(a),
        ImportCommand::Concepts(a) => {
            let lexicon = familiar_query::concepts::lexicon::Lexicon::read(&a.lexicon)?;
            familiar_query::concepts::tables::concepts_table(&lexicon)?
                .write(Format::Parquet, Some(&a.out))?;
            println!(
                "imported {} concepts into {}",
                lexicon.concepts.len(),
                a.out.display()
            );
            Ok(0)
        }
        ImportCommand::Model(a) => models(a),
    }
}

fn models(a: ModelArgs) -> Result<i32> {
    let rows = a
        .models
        .iter()
        .map(|dir| familiar_models::catalog::describe(dir))
        .collect::<familiar_models::Result<Vec<_>>>()?;
    familiar::table::from_rows(&rows)?.write(Format::Parquet, Some(&a.out))?;
    println!(
        "imported {} models into {}",
        a.models.len(),
        a.out.display()
    );
    Ok(0)
}

fn zero_shot(a: ZeroShotArgs) -> Result<i32> {
    let options = ImportOptions {
        format: a.from,
        model: a.model,
        task: a.task,
        concepts_key: a.concepts_key,
    };
    let Imported { rows, ignored } = import_zero_shot(&a.files, &options)?;
    if !ignored.is_empty() {
        eprintln!(
            "ignored columns not in the zero_shot table: {}",
            ignored.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    familiar::table::from_rows(&rows)?.write(Format::Parquet, Some(&a.out))?;
    let accuracy = rows.iter().filter(|r| r.acc).count() as f64 / rows.len() as f64;
    println!(
        "imported {} results ({} tasks, accuracy {accuracy:.4}) into {}",
        rows.len(),
        rows.iter().map(|r| &r.task).collect::<BTreeSet<_>>().len(),
        a.out.display()
    );
    Ok(0)
}

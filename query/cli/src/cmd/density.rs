//! `familiar density`.

use std::path::PathBuf;

use anyhow::Result;
use familiar::table::Format;
use familiar_models::measure::density::{measure_probes, read_probes, Overflow};

/// Arguments of `familiar density`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// JSONL probes: {"id", "text", "labels": {…}} (labels optional, free-form).
    #[arg(long)]
    probes: PathBuf,
    /// The Parquet file to write (the activation_stats table of schemas/).
    #[arg(long)]
    out: PathBuf,
    /// A probe longer than the model's context: refuse it, keep its first tokens, or run it in
    /// consecutive windows.
    #[arg(long, value_enum, default_value = "error")]
    overflow: Overflow,
    /// An MLP unit is active when its activation exceeds this.
    #[arg(long, default_value_t = 0.0)]
    threshold: f32,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<i32> {
    familiar_models::measure::prepare_cpu();
    let lm = a.model.load()?;
    let probes = read_probes(&a.probes)?;
    let model_name = a.model.model.display().to_string();
    let progress = crate::progress::progress_bar(!a.quiet, probes.len() as u64, "probes")?;
    let rows = measure_probes(
        &lm,
        &model_name,
        &a.probes,
        &probes,
        a.overflow,
        a.threshold,
        &|| progress.inc(1),
    )
    .map_err(|e| match e {
        familiar_models::Error::Core(familiar::Error::Input { ref reason, .. })
            if a.overflow == Overflow::Error
                && reason.contains("more than the model's context") =>
        {
            anyhow::anyhow!("{e}; choose --overflow truncate or --overflow stride")
        }
        e => e.into(),
    })?;
    progress.finish_and_clear();
    familiar::table::from_rows(&rows)?.write(Format::Parquet, Some(&a.out))?;
    println!(
        "measured {} probes at {} layers; wrote {} rows to {}",
        probes.len(),
        lm.model.config.layers + 1,
        rows.len(),
        a.out.display()
    );
    Ok(0)
}

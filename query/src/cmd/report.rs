//! `familiar report`: the published analyses as ready-made reports.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Which report.
#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Accuracy against concept frequency (Udandarao et al. 2024): per concept, the mean score of
    /// the items naming it against the concept's count; log-linear fit, 12 equal-width bins of
    /// ln(count), raw and binned correlations; Markdown, HTML and SVG.
    Frequency(FrequencyArgs),
}

/// Arguments of `familiar report frequency`.
#[derive(Debug, clap::Args)]
pub struct FrequencyArgs {
    /// A tables directory holding zero_shot (`familiar score` or `familiar import zero-shot`) and
    /// concept_frequency (`familiar concepts count`).
    #[arg(long)]
    tables: PathBuf,
    /// The report directory.
    #[arg(long)]
    out: PathBuf,
    /// Counting method of concept_frequency.
    #[arg(long, default_value = "sa_exact")]
    method: String,
    /// The count: occurrences or documents.
    #[arg(long, default_value = "occurrences")]
    count: String,
    /// The score: acc, acc_norm, logprob or logprob_per_token.
    #[arg(long, default_value = "acc")]
    metric: String,
    /// Equal-width bins of ln(count).
    #[arg(long, default_value_t = 12)]
    bins: i64,
}

/// Runs `familiar report`.
pub fn run(c: ReportCommand) -> Result<i32> {
    match c {
        ReportCommand::Frequency(a) => {
            let options = familiar_query::frequency::Options {
                tables: a.tables.clone(),
                method: a.method,
                count: a.count,
                metric: a.metric,
                bins: a.bins,
            };
            let report = familiar_query::frequency::analyse(&options)
                .with_context(|| format!("reading {}", a.tables.display()))?;
            let written = familiar_query::frequency::write(&report, &a.out)?;
            for m in &report.models {
                println!(
                    "{}: {} concepts, slope {} per decade, Pearson r {} (binned {})",
                    m.model,
                    m.concepts,
                    m.slope_per_decade.map_or("–".into(), |v| format!("{v:.4}")),
                    m.pearson.map_or("–".into(), |v| format!("{v:.3}")),
                    m.binned_pearson.map_or("–".into(), |v| format!("{v:.3}")),
                );
            }
            for p in written {
                println!("  {}", p.display());
            }
            Ok(0)
        }
    }
}

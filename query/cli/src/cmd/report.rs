//! `familiar report`: the published analyses as ready-made reports.

use std::path::PathBuf;

use anyhow::{Context, Result};
use familiar_reports::frequency::{analyse, write, Options, Subject};

/// Which report.
#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Accuracy against concept frequency (Udandarao et al. 2024): per concept, the mean score of
    /// the items naming it against the concept's count; log-linear fit, 12 equal-width bins of
    /// ln(count), raw and binned correlations; Markdown, HTML and SVG.
    Frequency(FrequencyArgs),
    /// Activation density against concept frequency, per model and layer, in the same style: the
    /// probes of activation_stats (`familiar density`) whose labels name a concept.
    Density(DensityArgs),
    /// Priming against the keyword's probability before learning (Sun et al. 2025), from the
    /// priming table of `familiar prime`: correlations, the line, the samples either side of the
    /// threshold, per theme; Markdown, HTML and SVG.
    Priming(PrimingArgs),
}

/// What both reports take.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// A tables directory holding concept_frequency (`familiar concepts count`) and the
    /// measurements (zero_shot, or activation_stats).
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
    /// Equal-width bins of ln(count).
    #[arg(long, default_value_t = 12)]
    bins: i64,
}

/// Arguments of `familiar report frequency`.
#[derive(Debug, clap::Args)]
pub struct FrequencyArgs {
    #[command(flatten)]
    common: Common,
    /// The score: acc, acc_norm, logprob or logprob_per_token.
    #[arg(long, default_value = "acc")]
    metric: String,
    /// With a contamination table among the tables: the n-gram size whose fraction in a prompt or
    /// answer decides whether its item is contaminated.
    #[arg(long, default_value_t = 8)]
    contamination_n: u64,
    /// ... and the fraction of those n-grams occurring in the corpus that makes it so (PaLM: 0.7).
    #[arg(long, default_value_t = 0.7)]
    contamination_threshold: f64,
}

/// Arguments of `familiar report density`.
#[derive(Debug, clap::Args)]
pub struct DensityArgs {
    #[command(flatten)]
    common: Common,
    /// The density metric (a column of activation_stats, e.g. top10_energy_last, hoyer_mean).
    #[arg(long, default_value = "top10_energy_last")]
    metric: String,
    /// The key of the probes' JSON labels that names the concept.
    #[arg(long, default_value = "concept")]
    label_key: String,
}

/// Arguments of `familiar report priming`.
#[derive(Debug, clap::Args)]
pub struct PrimingArgs {
    /// A tables directory holding the priming table (`familiar prime --out`).
    #[arg(long)]
    tables: PathBuf,
    /// The report directory.
    #[arg(long)]
    out: PathBuf,
    /// The threshold on P_before (Sun et al.: about 1e-3).
    #[arg(long, default_value_t = 1e-3)]
    threshold: f64,
}

fn priming(a: PrimingArgs) -> Result<i32> {
    let report = familiar_reports::priming::analyse(&a.tables, a.threshold)
        .with_context(|| format!("reading {}", a.tables.display()))?;
    let written = familiar_reports::priming::write(&report, &a.out)?;
    let v = |x: Option<f64>, d: usize| x.map_or("–".into(), |v| format!("{v:.d$}"));
    for m in &report.models {
        println!(
            "{}: {} samples, Pearson r(log P_before, log S_prime) {}; mean log10 S_prime {} below {:e}, {} at or above",
            m.model,
            m.samples,
            v(m.pearson_prime, 3),
            v(m.groups[0].mean_log10_s_prime, 3),
            report.threshold,
            v(m.groups[1].mean_log10_s_prime, 3),
        );
    }
    for p in written {
        println!("  {}", p.display());
    }
    Ok(0)
}

fn report(c: Common, subject: Subject, metric: String, contamination: (u64, f64)) -> Result<i32> {
    let options = Options {
        subject,
        tables: c.tables.clone(),
        method: c.method,
        count: c.count,
        metric,
        bins: c.bins,
        contamination_n: contamination.0,
        contamination_threshold: contamination.1,
    };
    let report = analyse(&options).with_context(|| format!("reading {}", c.tables.display()))?;
    let written = write(&report, &c.out)?;
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
    if let Some(c) = &report.contamination {
        for m in &c.models {
            let v = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.4}"));
            println!(
                "{}: {} contaminated items (mean {}), {} clean (mean {})",
                m.model,
                m.contaminated_items,
                v(m.contaminated_mean),
                m.clean_items,
                v(m.clean_mean)
            );
        }
    }
    for p in written {
        println!("  {}", p.display());
    }
    Ok(0)
}

/// Runs `familiar report`.
pub fn run(c: ReportCommand) -> Result<i32> {
    match c {
        ReportCommand::Priming(a) => priming(a),
        ReportCommand::Frequency(a) => report(
            a.common,
            Subject::Accuracy,
            a.metric,
            (a.contamination_n, a.contamination_threshold),
        ),
        ReportCommand::Density(a) => report(
            a.common,
            Subject::Density {
                label_key: a.label_key,
            },
            a.metric,
            (8, 0.7),
        ),
    }
}

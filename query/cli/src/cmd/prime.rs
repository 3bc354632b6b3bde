//! `familiar prime`: the priming experiment (Sun et al. 2025).

use std::path::PathBuf;

use anyhow::{Context, Result};
use familiar_models::priming::{self, Event, Experiment, PrimeOptions};

/// Arguments of `familiar prime`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Samples, one JSON object per line: {"id", "text", "keyword", "theme"}.
    #[arg(long)]
    samples: PathBuf,
    /// Themes, one JSON object per line: {"theme", "prefixes": [...]}.
    #[arg(long)]
    themes: PathBuf,
    /// The run directory (resumable): plan.json, samples/, then priming.parquet and
    /// priming_probe.parquet.
    #[arg(long)]
    out: PathBuf,
    /// An index (built with the model's tokenizer) whose windows fill the rest of each batch, as
    /// the data the model was trained on; without one every step is on the sample alone.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Optimizer steps per sample.
    #[arg(long, default_value_t = PrimeOptions::default().steps)]
    steps: u64,
    /// Entries per batch: the sample and batch − 1 replay windows.
    #[arg(long, default_value_t = PrimeOptions::default().batch)]
    batch: usize,
    /// Learning rate (AdamW, constant).
    #[arg(long, default_value_t = PrimeOptions::default().lr)]
    lr: f64,
    /// AdamW weight decay (matrices only).
    #[arg(long, default_value_t = PrimeOptions::default().weight_decay)]
    weight_decay: f64,
    /// Clip gradients to this global L2 norm.
    #[arg(long, default_value_t = PrimeOptions::default().clip)]
    clip: f64,
    /// Tokens per replay window (at most the model's context).
    #[arg(long, default_value_t = PrimeOptions::default().replay_window)]
    replay_window: usize,
    /// Seed of the replay windows.
    #[arg(long, default_value_t = PrimeOptions::default().seed)]
    seed: u64,
    /// Learn at most this many samples now; run again to continue.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Keep every learned model in OUT/models/sample-NNNNN (Hugging Face format).
    #[arg(long)]
    keep_models: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<i32> {
    familiar_models::measure::prepare_cpu();
    let samples = priming::read_samples(&a.samples)?;
    let themes = priming::read_themes(&a.themes)?;
    let replay = match &a.replay {
        Some(dir) => Some(super::open_index(dir, None)?),
        None => None,
    };
    let experiment = Experiment {
        model: &a.model.model,
        samples: &samples,
        themes: &themes,
        replay: replay.as_ref(),
        options: PrimeOptions {
            steps: a.steps,
            batch: a.batch,
            lr: a.lr,
            weight_decay: a.weight_decay,
            clip: a.clip,
            seed: a.seed,
            replay_window: a.replay_window,
        },
        out: a.out.clone(),
        stop_after: a.stop_after,
        keep_models: a.keep_models,
        device: familiar_models::model::device(&a.model.device)?,
    };
    let bar = crate::progress::progress_bar(!a.quiet, samples.len() as u64, "samples")?;
    let progress = |e: Event| match e {
        Event::Before { probes } => bar.set_message(format!("scoring {probes} probes before")),
        Event::Learning { i, .. } => bar.set_message(format!("learning {}", samples[i].id)),
        Event::Done { .. } => bar.inc(1),
    };
    let outcome = priming::run(&experiment, &progress)
        .with_context(|| format!("priming experiment in {}", a.out.display()))?;
    bar.finish_and_clear();
    println!(
        "learned {} sample(s) now; {} of {} done",
        outcome.learned,
        outcome.results.len(),
        outcome.total
    );
    match outcome.tables {
        Some(paths) => {
            let below = outcome
                .results
                .iter()
                .filter(|r| r.p_before() < 1e-3)
                .count();
            println!(
                "{below} of {} keywords had P_before < 1e-3; tables:",
                outcome.total
            );
            for p in paths {
                println!("  {}", p.display());
            }
        }
        None => println!("run the same command again to continue"),
    }
    Ok(0)
}

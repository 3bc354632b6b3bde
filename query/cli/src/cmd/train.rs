//! `familiar train`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use familiar_models::train::{train_until, TrainOptions};

/// Arguments of `familiar train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The index whose tokens to train on.
    #[arg(long)]
    index: PathBuf,
    /// The model directory to write (Hugging Face format); an unfinished run there resumes.
    #[arg(long)]
    out: PathBuf,
    /// Layers.
    #[arg(long, default_value_t = TrainOptions::default().layers)]
    layers: usize,
    /// Hidden size.
    #[arg(long, default_value_t = TrainOptions::default().hidden)]
    hidden: usize,
    /// Attention heads.
    #[arg(long, default_value_t = TrainOptions::default().heads)]
    heads: usize,
    /// Context length.
    #[arg(long, default_value_t = TrainOptions::default().context)]
    context: usize,
    /// Windows per step.
    #[arg(long, default_value_t = TrainOptions::default().batch)]
    batch: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = TrainOptions::default().steps)]
    steps: u64,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = TrainOptions::default().lr)]
    lr: f64,
    /// Linear warmup steps (then cosine decay to a tenth of --lr).
    #[arg(long, default_value_t = TrainOptions::default().warmup)]
    warmup: u64,
    /// AdamW weight decay (matrices only).
    #[arg(long, default_value_t = TrainOptions::default().weight_decay)]
    weight_decay: f64,
    /// Clip gradients to this global L2 norm.
    #[arg(long, default_value_t = TrainOptions::default().clip)]
    clip: f64,
    /// Seed of the initialization and the batches.
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    seed: u64,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = TrainOptions::default().checkpoint_every)]
    checkpoint_every: u64,
    /// Stop (after a checkpoint) once this many steps are done; run again to continue.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Compute device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<i32> {
    familiar_models::measure::prepare_cpu();
    let index = super::open_index(&a.index, None)?;
    let options = TrainOptions {
        layers: a.layers,
        hidden: a.hidden,
        heads: a.heads,
        context: a.context,
        batch: a.batch,
        steps: a.steps,
        lr: a.lr,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        clip: a.clip,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
    };
    let bar = crate::progress::training_bar(!a.quiet)?;
    let r = train_until(
        &index,
        &a.out,
        &options,
        a.stop_after,
        &|p| crate::progress::show_step(&bar, p),
        &familiar_models::model::device(&a.device)?,
    )
    .with_context(|| format!("training into {}", a.out.display()))?;
    bar.finish_and_clear();
    if r.resumed_at > 0 {
        println!("resumed at step {}", r.resumed_at);
    }
    println!(
        "trained {} parameters for {} steps ({} tokens now, {:.0} tokens/s): loss {:.4} → {:.4}",
        r.parameters,
        r.steps,
        r.tokens,
        r.tokens as f64 / r.seconds.max(1e-9),
        r.first_loss,
        r.last_loss
    );
    println!("model: {}", a.out.display());
    Ok(0)
}

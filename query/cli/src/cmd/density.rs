//! `familiar density`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use familiar::table::{Column, Format, Table};
use familiar_models::measure::density::{measure, Overflow};

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
    let probes: Vec<_> = familiar_models::measure::density::read_probes(&a.probes)?
        .into_iter()
        .map(|p| {
            let at = format!("{}:{}", a.probes.display(), p.line);
            (at, p.id, p.text, p.labels)
        })
        .collect();
    let window = lm.model.config.max_positions;
    let model_name = a.model.model.display().to_string();
    let progress = crate::progress::progress_bar(!a.quiet, probes.len() as u64, "probes")?;
    let mut c = Cols::default();
    for (at, id, text, labels) in &probes {
        let ids = lm.tokenizer.encode(text)?;
        if ids.is_empty() {
            bail!("{at}: probe {id} has no tokens");
        }
        let (windows, truncated): (Vec<Vec<u32>>, usize) = if ids.len() <= window {
            (vec![ids.clone()], 0)
        } else {
            match a.overflow {
                Overflow::Error => bail!(
                    "{at}: probe {id} has {} tokens, more than the model's context of {window}; \
                     choose --overflow truncate or --overflow stride",
                    ids.len()
                ),
                Overflow::Truncate => (vec![ids[..window].to_vec()], ids.len() - window),
                Overflow::Stride => (ids.chunks(window).map(<[u32]>::to_vec).collect(), 0),
            }
        };
        let tokens: usize = windows.iter().map(Vec::len).sum();
        let stats = measure(&lm.model, &windows, a.threshold)
            .with_context(|| format!("{at}: probe {id}"))?;
        for s in stats {
            c.id.push(Some(id.clone()));
            c.model.push(Some(model_name.clone()));
            c.layer.push(Some(s.layer as u64));
            c.tokens.push(Some(tokens as u64));
            c.windows.push(Some(windows.len() as u64));
            c.truncated.push(Some(truncated as u64));
            for k in 0..3 {
                c.top_last[k].push(Some(s.top_energy_last[k]));
                c.top_mean[k].push(Some(s.top_energy_mean[k]));
            }
            c.hoyer_last.push(Some(s.hoyer_last));
            c.hoyer_mean.push(Some(s.hoyer_mean));
            c.erank.push(Some(s.effective_rank_ratio));
            c.mlp_last.push(s.mlp_active_last);
            c.mlp_mean.push(s.mlp_active_mean);
            c.labels.push(labels.as_ref().map(|l| l.to_string()));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let [t1l, t5l, t10l] = c.top_last;
    let [t1m, t5m, t10m] = c.top_mean;
    let rows = c.id.len();
    Table::new()
        .column("probe_id", Column::Str(c.id))
        .column("model", Column::Str(c.model))
        .column("layer", Column::U64(c.layer))
        .column("tokens", Column::U64(c.tokens))
        .column("windows", Column::U64(c.windows))
        .column("truncated_tokens", Column::U64(c.truncated))
        .column("top1_energy_last", Column::F64(t1l))
        .column("top1_energy_mean", Column::F64(t1m))
        .column("top5_energy_last", Column::F64(t5l))
        .column("top5_energy_mean", Column::F64(t5m))
        .column("top10_energy_last", Column::F64(t10l))
        .column("top10_energy_mean", Column::F64(t10m))
        .column("hoyer_last", Column::F64(c.hoyer_last))
        .column("hoyer_mean", Column::F64(c.hoyer_mean))
        .column("effective_rank_ratio", Column::F64(c.erank))
        .column("mlp_active_last", Column::F64(c.mlp_last))
        .column("mlp_active_mean", Column::F64(c.mlp_mean))
        .column("labels", Column::Str(c.labels))
        .with_schema(familiar::schema::table("activation_stats")?)
        .write(Format::Parquet, Some(&a.out))?;
    println!(
        "measured {} probes at {} layers; wrote {rows} rows to {}",
        probes.len(),
        lm.model.config.layers + 1,
        a.out.display()
    );
    Ok(0)
}

#[derive(Default)]
struct Cols {
    id: Vec<Option<String>>,
    model: Vec<Option<String>>,
    layer: Vec<Option<u64>>,
    tokens: Vec<Option<u64>>,
    windows: Vec<Option<u64>>,
    truncated: Vec<Option<u64>>,
    top_last: [Vec<Option<f64>>; 3],
    top_mean: [Vec<Option<f64>>; 3],
    hoyer_last: Vec<Option<f64>>,
    hoyer_mean: Vec<Option<f64>>,
    erank: Vec<Option<f64>>,
    mlp_last: Vec<Option<f64>>,
    mlp_mean: Vec<Option<f64>>,
    labels: Vec<Option<String>>,
}

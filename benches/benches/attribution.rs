//! Attribution bench: CPU milliseconds per document to compute projected per-document gradients
//! (the gradient store's work) on the model — GPT-2 with 2 layers, hidden 128, vocabulary
//! 512, 128-token documents — by candle autograd (the reference path) and by familiar's own
//! backward pass (`familiar::grads::fast`), whose rows must agree.
//!
//! `cargo bench -p familiar-benches --bench attribution`; `cargo test --benches` runs a smoke
//! version on a smaller model.

use std::time::Instant;

use familiar::grads::fast::FastGradients;
use familiar::grads::{projected_gradients, Example, Projection, ProjectionSpec};
use familiar::model::{LinearGroup, Transformer};
use familiar::rng::SplitMix64;
use familiar_benches::*;
use familiar_query::train::TrainOptions;

fn main() {
    familiar_query::measure::prepare_cpu();
    let mode = Mode::from_args();
    if let Err(e) = run(mode) {
        eprintln!("attribution bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(mode: Mode) -> BenchResult<()> {
    let started = Instant::now();
    println!("familiar attribution bench — {} mode", mode.name());
    println!("machine: {}", machine());
    let vocab = 512usize;
    let o = TrainOptions {
        layers: 2,
        hidden: mode.pick(32, 128),
        heads: 4,
        context: 128,
        ..TrainOptions::default()
    };
    let doc_tokens = mode.pick(32, 128);
    let docs = mode.pick(8, 256);
    let base = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("attribution-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rng = SplitMix64::new(3);
    let config = familiar_query::train::gpt2_config(&o, vocab, (vocab - 1) as u32);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&config)?)?;
    let weights = familiar_query::train::init_weights(&o, vocab, &mut rng)?;
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    let model = Transformer::load(&dir)?;
    let examples: Vec<Example> = (0..docs)
        .map(|_| Example {
            ids: (0..doc_tokens)
                .map(|_| rng.below(vocab as u64) as u32)
                .collect(),
            first_target: 0,
        })
        .collect();
    let mut t = Table::new(
        format!(
            "GPT-2, 2 layers, hidden {}, vocabulary {vocab}; {docs} documents of {doc_tokens} tokens",
            o.hidden
        ),
        &["path", "rank", "batch", "wall", "CPU", "CPU ms/document"],
    );
    for rank in [8usize, 16] {
        let spec = ProjectionSpec::new(&model, LinearGroup::All, rank, rank, 1)?;
        let projection = Projection::new(spec, &model)?;
        // FAMILIAR_BENCH_SKIP_AUTOGRAD=1 times only familiar's own pass (for profiling).
        let autograd_batches: &[usize] =
            if std::env::var_os("FAMILIAR_BENCH_SKIP_AUTOGRAD").is_some() {
                &[]
            } else {
                &[8, 32]
            };
        for &batch in autograd_batches {
            let (r, wall, cpu) = measure(|| -> BenchResult<usize> {
                let mut n = 0;
                for chunk in examples.chunks(batch) {
                    n += projected_gradients(&model, &projection, chunk)?
                        .losses
                        .len();
                }
                Ok(n)
            });
            r?;
            t.row(vec![
                "candle autograd".into(),
                rank.to_string(),
                batch.to_string(),
                fmt_secs(wall.as_secs_f64()),
                fmt_secs(cpu),
                format!("{:.2}", cpu * 1e3 / docs as f64),
            ]);
        }
        let fast = FastGradients::new(&model, &projection)?;
        for batch in [1usize, 8, 32] {
            let (r, wall, cpu) = measure(|| -> BenchResult<Vec<f32>> {
                let mut rows = Vec::new();
                for chunk in examples.chunks(batch) {
                    rows.extend(fast.compute(chunk)?.rows);
                }
                Ok(rows)
            });
            let rows = r?;
            let reference = projected_gradients(&model, &projection, &examples[..batch.min(8)])?;
            let n = reference.rows.len();
            let err = relative_error(&rows[..n], &reference.rows);
            if err > 1e-4 {
                return Err(
                    format!("fast rows differ from autograd's: relative error {err}").into(),
                );
            }
            t.row(vec![
                "familiar backward".into(),
                rank.to_string(),
                batch.to_string(),
                fmt_secs(wall.as_secs_f64()),
                fmt_secs(cpu),
                format!("{:.2}", cpu * 1e3 / docs as f64),
            ]);
        }
    }
    t.print();
    remove_dir(&dir)?;
    println!("peak memory: {}", fmt_bytes(peak_rss()));
    println!("total: {}", fmt_secs(started.elapsed().as_secs_f64()));
    Ok(())
}

fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

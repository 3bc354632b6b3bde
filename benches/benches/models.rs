//! Models bench: forward and training throughput of familiar's candle GPT-2 in tokens per
//! CPU-second, against PyTorch + transformers on a model of the same shape run in the same bench
//! (`benches/torch_baseline.py`, when `python3` with torch and transformers is available), plus peak
//! memory. The logits' agreement with transformers is the tests' job (tests/models.rs).
//!
//! `cargo bench -p familiar-benches --bench models` measures a 0.54 M-parameter GPT-2 (vocabulary
//! 2,049, hidden 96, 3 layers, 4 heads, context 64, batch 16); `cargo test --benches` runs a smoke
//! version on a tiny model without the PyTorch baseline.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use familiar_benches::*;
use familiar_index_builder::fixtures::SplitMix64;
use familiar_models::model::transformer::LoadOptions;
use familiar_models::model::{Capture, Transformer};
use familiar_models::train::{loss, TrainOptions};

fn main() {
    // As the model commands do.
    familiar_models::measure::prepare_cpu();
    let mode = Mode::from_args();
    if let Err(e) = run(mode) {
        eprintln!("models bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(mode: Mode) -> BenchResult<()> {
    let started = Instant::now();
    println!("familiar models bench — {} mode", mode.name());
    println!("machine: {}", machine());
    let vocab = 2049usize;
    let o = TrainOptions {
        layers: mode.pick(1, 3),
        hidden: mode.pick(16, 96),
        heads: mode.pick(2, 4),
        context: mode.pick(16, 64),
        batch: mode.pick(4, 16),
        ..TrainOptions::default()
    };
    let steps = mode.pick(3, 20);
    // A model directory of that shape, randomly initialized by the trainer's own code path.
    let base = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("models-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rng = SplitMix64::new(1);
    let config = familiar_models::train::gpt2_config(&o, vocab, (vocab - 1) as u32);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&config)?)?;
    let weights = familiar_models::train::init_weights(&o, vocab, &mut rng)?;
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    let model = Transformer::load(&dir)?;
    let trainable = Transformer::load_with(
        &dir,
        &LoadOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            trainable: true,
        },
    )?;
    let params: usize = trainable
        .vars
        .iter()
        .map(|(_, v)| v.as_tensor().elem_count())
        .sum();
    let windows: Vec<Vec<u32>> = (0..o.batch)
        .map(|_| {
            (0..=o.context)
                .map(|_| rng.below(vocab as u64) as u32)
                .collect()
        })
        .collect();
    let inputs: Vec<Vec<u32>> = windows.iter().map(|w| w[..o.context].to_vec()).collect();
    let tokens = (o.batch * o.context * steps) as f64;
    model.forward(&inputs, Capture::default())?;
    let (r, fwd_wall, fwd_cpu) = measure(|| -> BenchResult<()> {
        for _ in 0..steps {
            std::hint::black_box(model.forward(&inputs, Capture::default())?);
        }
        Ok(())
    });
    r?;
    let (r, train_wall, train_cpu) = measure(|| -> BenchResult<()> {
        for _ in 0..steps {
            let l = loss(&trainable, &windows)?;
            let grads = l.backward()?;
            // The optimizer's share is small; a plain SGD update keeps this loop self-contained.
            for (_, v) in &trainable.vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    let next: Tensor = (v.as_tensor() - (g * 1e-4)?)?;
                    v.set(&next)?;
                }
            }
        }
        Ok(())
    });
    r?;
    let ours_fwd = tokens / fwd_cpu;
    let ours_train = tokens / train_cpu;
    let torch = if mode.is_full() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/torch_baseline.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .args(
                [
                    vocab, o.hidden, o.layers, o.heads, o.context, o.batch, steps,
                ]
                .iter()
                .map(|x| x.to_string()),
            )
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let line = String::from_utf8_lossy(&o.stdout);
                serde_json::from_str::<serde_json::Value>(line.trim().lines().last().unwrap_or(""))
                    .ok()
            }
            _ => None,
        }
    } else {
        None
    };
    let mut t = Table::new(
        format!(
            "GPT-2, {params} parameters (vocabulary {vocab}, hidden {}, {} layers, {} heads), batch {} × {} tokens, {steps} steps",
            o.hidden, o.layers, o.heads, o.batch, o.context
        ),
        &["", "wall", "CPU", "tokens/CPU-s", "PyTorch tokens/CPU-s", "ratio"],
    );
    let cell = |key: &str| {
        torch
            .as_ref()
            .and_then(|v| v[key].as_f64())
            .map_or(("(not run)".to_string(), f64::NAN), |x| (fmt_si(x), x))
    };
    let (tf, tfx) = cell("forward_tokens_per_cpu_s");
    let (tt, ttx) = cell("train_tokens_per_cpu_s");
    t.row(vec![
        "forward".into(),
        fmt_secs(fwd_wall.as_secs_f64()),
        fmt_secs(fwd_cpu),
        fmt_si(ours_fwd),
        tf,
        fmt_ratio(ours_fwd / tfx),
    ]);
    t.row(vec![
        "training step (forward + backward + update)".into(),
        fmt_secs(train_wall.as_secs_f64()),
        fmt_secs(train_cpu),
        fmt_si(ours_train),
        tt,
        fmt_ratio(ours_train / ttx),
    ]);
    t.print();
    if let Some(v) = &torch {
        println!("PyTorch baseline: {v}");
    } else if mode.is_full() {
        println!("PyTorch baseline: SKIPPED (python3 with torch and transformers not found)");
    }
    println!("peak memory of this process: {}", fmt_bytes(peak_rss()));
    remove_dir(&dir)?;
    println!(
        "\nmodels bench ({} mode) finished in {:.1} s",
        mode.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

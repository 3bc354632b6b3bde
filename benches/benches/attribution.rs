//! Attribution bench: CPU milliseconds per document to compute projected per-document gradients
//! (the gradient store's work) on the model — GPT-2 with 2 layers, hidden 128, vocabulary
//! 512, 128-token documents — by candle autograd (the reference path) and by familiar's own
//! backward pass (`familiar_models::grads::fast`), whose rows must agree.
//!
//! Then scoring: one query against a store of 1 M rows (the same model's 512-value rows, random
//! values, f16 and f32), exact top 100 by `familiar_models::attribute::score_all`, against a naive
//! single-threaded scan of the same rows in the same run (which must find the same top document).
//! `FAMILIAR_BENCH_ROWS` changes the row count.
//!
//! `cargo bench -p familiar-benches --bench attribution`; `cargo test --benches` runs a smoke
//! version on a smaller model and store.

use std::time::Instant;

use familiar::rng::SplitMix64;
use familiar_benches::*;
use familiar_models::attribute::{score_all, RowNorm};
use familiar_models::grads::fast::FastGradients;
use familiar_models::grads::store::{
    shard_file, GradientStore, RowWriter, StoreDtype, StoreManifest, StoreSettings, StoreShard,
    MANIFEST,
};
use familiar_models::grads::{
    projected_gradients, Example, HeadFactor, Projection, ProjectionSpec,
};
use familiar_models::model::{LinearGroup, Transformer};
use familiar_models::train::TrainOptions;

fn main() {
    familiar_models::measure::prepare_cpu();
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
    let config = familiar_models::train::gpt2_config(&o, vocab, (vocab - 1) as u32);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&config)?)?;
    let weights = familiar_models::train::init_weights(&o, vocab, &mut rng)?;
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
    // The output head's factor over every document: forward passes only (a store fits it once,
    // on at most 1 M tokens, before its rows).
    let (factor, wall, cpu) = measure(|| HeadFactor::of_examples(&model, &examples, 16));
    let factor = factor?;
    t.row(vec![
        "head factor (forward)".into(),
        "-".into(),
        "1".into(),
        fmt_secs(wall.as_secs_f64()),
        fmt_secs(cpu),
        format!("{:.2}", cpu * 1e3 / docs as f64),
    ]);
    for rank in [8usize, 16] {
        let spec = ProjectionSpec::new(&model, LinearGroup::All, rank, rank, 1)?;
        let projection = Projection::new(spec, &model, Some(&factor))?;
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
    scoring(mode, &model, &dir)?;
    remove_dir(&dir)?;
    println!("peak memory: {}", fmt_bytes(peak_rss()));
    println!("total: {}", fmt_secs(started.elapsed().as_secs_f64()));
    Ok(())
}

/// Writes a store of `rows` random rows for `model` (rank 8, the blocks' linears) into `dir`.
fn synthetic_store(
    model: &Transformer,
    dir: &std::path::Path,
    rows: u64,
    dtype: StoreDtype,
) -> BenchResult<GradientStore> {
    let spec = ProjectionSpec::new(model, LinearGroup::Blocks, 8, 8, 1)?;
    let dim = spec.dim();
    std::fs::create_dir_all(dir)?;
    let per_file = rows.div_ceil(2);
    let mut manifest = StoreManifest::new(StoreSettings {
        model_hash: "synthetic".into(),
        tokenizer_hash: "synthetic".into(),
        projection: spec,
        dtype,
        context: 128,
        start_token: None,
        documents: rows,
        tokens: rows * 128,
    });
    let mut rng = SplitMix64::new(11);
    let mut first = 0;
    for i in 0..2 {
        let n = per_file.min(rows - first);
        let file = shard_file(i);
        let path = dir.join(&file);
        let mut w = RowWriter::create(&path, dtype, dim, n, first)?;
        let mut row = vec![0f32; dim];
        for _ in 0..n {
            for x in row.iter_mut() {
                // Uniform in [-1, 1): cheap, and enough for timing.
                *x = (rng.unit() * 2.0 - 1.0) as f32;
            }
            w.push(&row)?;
        }
        w.finish()?;
        manifest.shards.push(StoreShard {
            file,
            first_doc: first,
            documents: n,
            checksum: String::new(),
            bytes: std::fs::metadata(&path)?.len(),
            moments: None,
            kron: None,
        });
        first += n;
    }
    familiar::manifest::write_atomic(
        &dir.join(MANIFEST),
        &familiar::manifest::to_bytes(&manifest)?,
    )?;
    Ok(GradientStore::open(dir, false)?)
}

fn scoring(mode: Mode, model: &Transformer, dir: &std::path::Path) -> BenchResult<()> {
    let rows = env_count("FAMILIAR_BENCH_ROWS", mode.pick(20_000, 1_000_000));
    let mut t = Table::new(
        format!("scoring one query against {rows} stored rows (exact top 100)"),
        &["store", "method", "wall", "CPU", "rows/s", "vs naive"],
    );
    for dtype in [StoreDtype::F16, StoreDtype::F32] {
        let sdir = dir.join(format!("store-{dtype:?}"));
        let store = synthetic_store(model, &sdir, rows, dtype)?;
        let dim = store.dim();
        let mut rng = SplitMix64::new(5);
        let query: Vec<f32> = (0..dim).map(|_| (rng.unit() - 0.5) as f32).collect();
        // Warm the page cache for both methods alike.
        score_all(
            &store,
            std::slice::from_ref(&query),
            &RowNorm::None,
            Some(1),
        );
        let (naive, nwall, ncpu) = measure(|| {
            let mut row = vec![0f32; dim];
            let mut best = (f64::NEG_INFINITY, 0u64);
            for f in &store.files {
                for i in 0..f.rows {
                    f.row(i, &mut row);
                    let s: f64 = row
                        .iter()
                        .zip(&query)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum();
                    if s > best.0 {
                        best = (s, f.first_doc + i);
                    }
                }
            }
            best
        });
        let name = format!("{dtype:?}").to_lowercase();
        t.row(vec![
            name.clone(),
            "naive scan (1 thread)".into(),
            fmt_secs(nwall.as_secs_f64()),
            fmt_secs(ncpu),
            format!("{:.3e}", rows as f64 / nwall.as_secs_f64()),
            "1.00".into(),
        ]);
        for (method, norm) in [
            ("score_all identity", RowNorm::None),
            ("score_all cosine", RowNorm::Euclidean),
        ] {
            let (top, wall, cpu) =
                measure(|| score_all(&store, std::slice::from_ref(&query), &norm, Some(100)));
            if matches!(norm, RowNorm::None) && top[0].doc != naive.1 {
                return Err(format!(
                    "score_all's top document {} is not the naive scan's {}",
                    top[0].doc, naive.1
                )
                .into());
            }
            t.row(vec![
                name.clone(),
                method.into(),
                fmt_secs(wall.as_secs_f64()),
                fmt_secs(cpu),
                format!("{:.3e}", rows as f64 / wall.as_secs_f64()),
                format!("{:.2}", nwall.as_secs_f64() / wall.as_secs_f64()),
            ]);
        }
        drop(store);
        remove_dir(&sdir)?;
    }
    t.print();
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

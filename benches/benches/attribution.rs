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
//! Then the dense algebra of `fisher` and `trackstar` on one layer's block of 4,096 values (the
//! output head at the default rank 32 × head rank 128): the Cholesky factor of a damped second
//! moment, and the whitened norms of 1,024 rows, by `familiar_models::grads::linalg` against the
//! textbook unblocked factorization and one triangular solve per row, in the same run (whose
//! results must agree).
//!
//! `cargo bench -p familiar-benches --bench attribution`; `cargo test --benches` runs a smoke
//! version on a smaller model and store.

use std::time::Instant;

use familiar::rng::SplitMix64;
use familiar_benches::*;
use familiar_models::attribute::{score_all, score_all_on, RowNorm};
use familiar_models::grads::fast::FastGradients;
use familiar_models::grads::linalg::Cholesky;
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
    dense_algebra(mode)?;
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
            None,
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
        // A method's row, and the check that it found the naive scan's best document.
        let timed = |method: String, wall: std::time::Duration, cpu: f64| {
            vec![
                name.clone(),
                method,
                fmt_secs(wall.as_secs_f64()),
                fmt_secs(cpu),
                format!("{:.3e}", rows as f64 / wall.as_secs_f64()),
                format!("{:.2}", nwall.as_secs_f64() / wall.as_secs_f64()),
            ]
        };
        let same_top = |what: &str, doc: u64| -> BenchResult<()> {
            if doc != naive.1 {
                return Err(format!(
                    "{what}'s top document {doc} is not the naive scan's {}",
                    naive.1
                )
                .into());
            }
            Ok(())
        };
        let one = std::slice::from_ref(&query);
        for (method, norm) in [
            ("score_all identity", RowNorm::None),
            ("score_all cosine", RowNorm::Euclidean),
        ] {
            let (top, wall, cpu) = measure(|| score_all(&store, one, &norm, None, Some(100)));
            if matches!(norm, RowNorm::None) {
                same_top("score_all", top[0].doc)?;
            }
            t.row(timed(method.into(), wall, cpu));
        }
        // `attribute score --device`'s path: the rows' products as matrix products on the GPU
        // of a build with CUDA (`--features cuda`), else on candle's CPU device.
        let (device, on) = match candle_core::utils::cuda_is_available() {
            true => (candle_core::Device::new_cuda(0)?, "cuda"),
            false => (candle_core::Device::Cpu, "candle cpu"),
        };
        let (top, wall, cpu) =
            measure(|| score_all_on(&store, one, &RowNorm::None, &device, Some(100)));
        same_top("score_all_on", top?[0].doc)?;
        t.row(timed(format!("score_all_on identity ({on})"), wall, cpu));
        drop(store);
        remove_dir(&sdir)?;
    }
    t.print();
    Ok(())
}

/// The textbook Cholesky factor of `m + λI` (row by row, one dot product per entry): the
/// baseline.
fn unblocked_cholesky(m: &[f64], n: usize, lambda: f64) -> Vec<f64> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|p| l[i * n + p] * l[j * n + p]).sum();
            let s = m[i * n + j] + if i == j { lambda } else { 0.0 } - dot;
            l[i * n + j] = if i == j { s.sqrt() } else { s / l[j * n + j] };
        }
    }
    l
}

fn dense_algebra(mode: Mode) -> BenchResult<()> {
    let n = mode.pick(300usize, 4096);
    let rows = mode.pick(64usize, 1024);
    let mut t = Table::new(
        format!("fisher and trackstar's dense algebra on a block of {n} values ({rows} rows' whitened norms)"),
        &["step", "method", "wall", "CPU", "vs baseline"],
    );
    // A second moment of rank n/16 (a sum of outer products, as a store's rows give one), damped.
    let mut rng = SplitMix64::new(9);
    let k = (n / 16).max(8);
    let g: Vec<f64> = (0..n * k).map(|_| rng.unit() - 0.5).collect();
    let mut m = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v: f64 = (0..k).map(|p| g[i * k + p] * g[j * k + p]).sum();
            m[i * n + j] = v;
            m[j * n + i] = v;
        }
    }
    let lambda = 0.1 * (0..n).map(|i| m[i * n + i]).sum::<f64>() / n as f64;
    let (base, bwall, bcpu) = measure(|| unblocked_cholesky(&m, n, lambda));
    let (fast, wall, cpu) = measure(|| Cholesky::damped(&m, n, lambda));
    let fast = fast.ok_or("the damped moment is positive definite")?;
    // Both factors solve the same system.
    let q: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    let mut y = vec![0.0f64; n];
    for i in 0..n {
        let dot: f64 = (0..i).map(|p| base[i * n + p] * y[p]).sum();
        y[i] = (q[i] - dot) / base[i * n + i];
    }
    let err = fast
        .forward(&q)
        .iter()
        .zip(&y)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(0.0f64, f64::max);
    if err > 1e-8 {
        return Err(format!("the blocked factor differs from the textbook one: {err}").into());
    }
    baseline_and_method(
        &mut t,
        "factor",
        ("unblocked (1 thread)", bwall, bcpu),
        ("Cholesky::damped", wall, cpu),
    );
    let batch: Vec<f64> = (0..rows * n).map(|_| rng.unit() - 0.5).collect();
    let (one, owall, ocpu) = measure(|| {
        batch
            .chunks(n)
            .map(|r| fast.forward(r).iter().map(|v| v * v).sum::<f64>())
            .collect::<Vec<f64>>()
    });
    let (many, mwall, mcpu) = measure(|| {
        fast.forward_rows(&batch)
            .chunks(n)
            .map(|y| y.iter().map(|v| v * v).sum::<f64>())
            .collect::<Vec<f64>>()
    });
    let worst = one
        .iter()
        .zip(&many)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-300))
        .fold(0.0f64, f64::max);
    if worst > 1e-9 {
        return Err(format!("batched whitened norms differ from per-row ones: {worst}").into());
    }
    baseline_and_method(
        &mut t,
        "whitened norms",
        ("one solve per row (1 thread)", owall, ocpu),
        ("Cholesky::forward_rows (1 thread)", mwall, mcpu),
    );
    t.print();
    Ok(())
}

/// Two rows of `t` for `step`: the baseline, and the method with its speed-up over the baseline's
/// wall time. Each side is `(name, wall, CPU seconds)`.
fn baseline_and_method(
    t: &mut Table,
    step: &str,
    baseline: (&str, std::time::Duration, f64),
    method: (&str, std::time::Duration, f64),
) {
    let speedup = baseline.1.as_secs_f64() / method.1.as_secs_f64();
    for ((name, wall, cpu), ratio) in [(baseline, 1.0), (method, speedup)] {
        t.row(vec![
            step.into(),
            name.into(),
            fmt_secs(wall.as_secs_f64()),
            fmt_secs(cpu),
            format!("{ratio:.2}"),
        ]);
    }
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

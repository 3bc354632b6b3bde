//! The gradient store and attribution scores end to end on the fixture corpus and model: stored
//! rows against candle autograd's projected gradients, scores against brute-force dot products,
//! resumption, refused mismatches, damaged files and bad queries.

#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};

use arrow_array::{Array, BooleanArray, Float64Array, StringArray, UInt64Array};
use familiar::index::Index;
use familiar_models::grads::build::document_examples;
use familiar_models::grads::store::GradientStore;
use familiar_models::grads::{projected_gradients, Example};
use familiar_models::measure::score::LanguageModel;
use util::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn model() -> PathBuf {
    fixtures().join("models/fixture-gpt2")
}

/// An index (`t/idx`, no text index) of the fixture corpus files `parts`, with `extra` options.
fn index_of(t: &TestDir, parts: &[&str], extra: &[&str]) -> PathBuf {
    let out = t.join("idx");
    let tokenizer = fixtures().join("tokenizer.json");
    let mut args: Vec<std::ffi::OsString> = vec![
        "index".into(),
        "build".into(),
        "--tokenizer".into(),
        tokenizer.into(),
        "--out".into(),
        out.clone().into(),
        "--no-text-index".into(),
        "-q".into(),
    ];
    args.extend(extra.iter().map(|&a| a.into()));
    args.extend(
        parts
            .iter()
            .map(|p| fixtures().join("corpus").join(p).into()),
    );
    familiar(args).success();
    out
}

/// An index of one fixture part in two shards.
fn index(t: &TestDir) -> PathBuf {
    index_of(t, &["part-0001.jsonl.gz"], &["--shard-tokens", "120000"])
}

/// `familiar attribute store` of `model` with projections of `rank` and `extra` options.
fn store_of(model: &Path, index: &Path, out: &Path, rank: &str, extra: &[&str]) -> Out {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "attribute".as_ref(),
        "store".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--index".as_ref(),
        index.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--rank".as_ref(),
        rank.as_ref(),
        "-q".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    familiar(args)
}

/// A store of the fixture model.
fn store(index: &Path, out: &Path, rank: &str) -> Out {
    store_of(&model(), index, out, rank, &[])
}

/// `familiar attribute score` with `extra` arguments.
fn attribute_score(store: &Path, model: &Path, queries: &Path, out: &Path, extra: &[&str]) -> Out {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "attribute".as_ref(),
        "score".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--queries".as_ref(),
        queries.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    familiar(args)
}

/// The projected gradient of −log p(completion | prompt) by candle's autograd.
fn query_gradient(
    lm: &LanguageModel,
    projection: &familiar_models::grads::Projection,
    prompt: &str,
    completion: &str,
) -> Vec<f32> {
    let (ctx, cont) = lm.split(prompt, completion).unwrap();
    let mut ids = ctx.clone();
    ids.extend(&cont);
    projected_gradients(
        &lm.model,
        projection,
        &[Example {
            ids,
            first_target: ctx.len(),
        }],
    )
    .unwrap()
    .rows
}

/// TrackStar by its definition: per layer the second moment M of every row of `g`, the
/// correction s = 1/√diag(M) (with `correct`; else none), R = diag(s) M diag(s) — with `mix`
/// (queries, α) the task-specific (1 − α) R + α E, E the mean of (s ⊙ q)(s ⊙ q)ᵀ over the
/// queries — the symmetric R^{-1/2} of R + λI (λ = 0.1 of R's mean eigenvalue) by
/// eigendecomposition; returns the map applied to both sides before the cosine.
fn trackstar_whitening(
    g: &GradientStore,
    correct: bool,
    mix: Option<(&[Vec<f32>], f64)>,
) -> impl Fn(&[f32]) -> Vec<f64> {
    use familiar_models::grads::linalg::symmetric_eigen;
    let mut row = vec![0.0f32; g.dim()];
    let spec = &g.manifest.settings.projection;
    // Each layer's (offset, block): blocks differ when the head has its own rank.
    let layers: Vec<(usize, usize)> = spec.offsets().into_iter().zip(spec.blocks()).collect();
    let mut m: Vec<Vec<f64>> = layers.iter().map(|&(_, b)| vec![0.0f64; b * b]).collect();
    for f in &g.files {
        for i in 0..f.rows {
            f.row(i, &mut row);
            for (m, &(at, block)) in m.iter_mut().zip(&layers) {
                let b = &row[at..at + block];
                for x in 0..block {
                    for y in 0..block {
                        m[x * block + y] += b[x] as f64 * b[y] as f64 / g.rows() as f64;
                    }
                }
            }
        }
    }
    let per_layer: Vec<(Vec<f64>, Vec<f64>)> = m
        .iter()
        .zip(&layers)
        .map(|(m, &(at, block))| {
            let s: Vec<f64> = (0..block)
                .map(|a| {
                    let v = m[a * block + a];
                    if !correct {
                        1.0
                    } else if v > 0.0 {
                        1.0 / v.sqrt()
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut r = m.clone();
            for x in 0..block {
                for y in 0..block {
                    r[x * block + y] *= s[x] * s[y];
                }
            }
            if let Some((qs, alpha)) = mix {
                mix_queries(&mut r, &s, qs, at, alpha);
            }
            let lambda = 0.1 * (0..block).map(|i| r[i * block + i]).sum::<f64>() / block as f64;
            let e = symmetric_eigen(&r, block);
            let mut half = vec![0.0f64; block * block];
            for x in 0..block {
                for y in 0..block {
                    half[x * block + y] = (0..block)
                        .map(|k| {
                            e.vectors[x * block + k] * e.vectors[y * block + k]
                                / (e.values[k] + lambda).sqrt()
                        })
                        .sum();
                }
            }
            (s, half)
        })
        .collect();
    move |v: &[f32]| -> Vec<f64> {
        let mut out = Vec::with_capacity(v.len());
        for ((s, half), &(at, block)) in per_layer.iter().zip(&layers) {
            let c: Vec<f64> = (0..block).map(|a| v[at + a] as f64 * s[a]).collect();
            out.extend(
                (0..block).map(|x| (0..block).map(|y| half[x * block + y] * c[y]).sum::<f64>()),
            );
        }
        out
    }
}

/// `r` (a layer's corrected second moment, its block at `at`) as TrackStar's task-specific
/// Hessian: `(1 − α) r + α E`, `E` the mean of `(s ⊙ q)(s ⊙ q)ᵀ` over the queries `qs`.
fn mix_queries(r: &mut [f64], s: &[f64], qs: &[Vec<f32>], at: usize, alpha: f64) {
    let b = s.len();
    r.iter_mut().for_each(|x| *x *= 1.0 - alpha);
    for q in qs {
        let c: Vec<f64> = (0..b).map(|a| q[at + a] as f64 * s[a]).collect();
        for x in 0..b {
            for y in 0..b {
                r[x * b + y] += alpha * c[x] * c[y] / qs.len() as f64;
            }
        }
    }
}

/// The scores of `docs` of `g` for query gradient `q` under each layer's second moment refitted
/// without the document's row, by their definition: per layer `M` (the mean outer product of
/// every row), `M − g gᵀ / N` without the row, damped by the full moment's `λ` (0.1 of its mean
/// eigenvalue), and solved densely by Gaussian elimination. fisher: `Σ_l q_lᵀ A_l⁻¹ g_l`;
/// trackstar: both sides corrected by `s = 1/√diag(M)` and the cosine under `Σ_l A_l⁻¹` of the
/// corrected moment without the row; with `mix` (queries, α), trackstar's task-specific Hessian
/// (1 − α) M + α E without the row's (1 − α) ĉ ĉᵀ / N, damped by the full mix's λ.
fn leave_one_out_scores(
    g: &GradientStore,
    q: &[f32],
    trackstar: bool,
    docs: &[u64],
    mix: Option<(&[Vec<f32>], f64)>,
) -> Vec<f64> {
    let spec = &g.manifest.settings.projection;
    let layers: Vec<(usize, usize)> = spec.offsets().into_iter().zip(spec.blocks()).collect();
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for f in &g.files {
        for i in 0..f.rows {
            let mut row = vec![0.0f32; g.dim()];
            f.row(i, &mut row);
            rows.push(row);
        }
    }
    let n = rows.len() as f64;
    let alpha = mix.map_or(0.0, |m| m.1);
    // Per layer: the correction and the (corrected) moment, and its λ.
    let fitted: Vec<(Vec<f64>, Vec<f64>, f64)> = layers
        .iter()
        .map(|&(at, b)| {
            let mut m = vec![0.0f64; b * b];
            for r in &rows {
                for x in 0..b {
                    for y in 0..b {
                        m[x * b + y] += r[at + x] as f64 * r[at + y] as f64 / n;
                    }
                }
            }
            let s: Vec<f64> = (0..b)
                .map(|a| match m[a * b + a] {
                    v if trackstar && v > 0.0 => 1.0 / v.sqrt(),
                    _ if trackstar => 0.0,
                    _ => 1.0,
                })
                .collect();
            for x in 0..b {
                for y in 0..b {
                    m[x * b + y] *= s[x] * s[y];
                }
            }
            if let Some((qs, alpha)) = mix {
                mix_queries(&mut m, &s, qs, at, alpha);
            }
            let lambda = 0.1 * (0..b).map(|i| m[i * b + i]).sum::<f64>() / b as f64;
            (s, m, lambda)
        })
        .collect();
    docs.iter()
        .map(|&d| {
            let row = &rows[d as usize];
            let (mut num, mut qq, mut cc) = (0.0, 0.0, 0.0);
            for (&(at, b), (s, m, lambda)) in layers.iter().zip(&fitted) {
                let c: Vec<f64> = (0..b).map(|a| row[at + a] as f64 * s[a]).collect();
                let qh: Vec<f64> = (0..b).map(|a| q[at + a] as f64 * s[a]).collect();
                // [A | q̂ ĉ], A = M − ĉ ĉᵀ / N + λI, reduced in place.
                let w = b + 2;
                let mut a = vec![0.0f64; b * w];
                for x in 0..b {
                    for y in 0..b {
                        a[x * w + y] = m[x * b + y] - (1.0 - alpha) * c[x] * c[y] / n;
                    }
                    a[x * w + x] += lambda;
                    a[x * w + b] = qh[x];
                    a[x * w + b + 1] = c[x];
                }
                for k in 0..b {
                    let p = (k..b)
                        .max_by(|&i, &j| a[i * w + k].abs().total_cmp(&a[j * w + k].abs()))
                        .unwrap();
                    for y in 0..w {
                        a.swap(k * w + y, p * w + y);
                    }
                    for i in (k + 1)..b {
                        let f = a[i * w + k] / a[k * w + k];
                        for y in k..w {
                            a[i * w + y] -= f * a[k * w + y];
                        }
                    }
                }
                let mut x = vec![[0.0f64; 2]; b];
                for k in (0..b).rev() {
                    for r in 0..2 {
                        let rest: f64 = ((k + 1)..b).map(|j| a[k * w + j] * x[j][r]).sum();
                        x[k][r] = (a[k * w + b + r] - rest) / a[k * w + k];
                    }
                }
                num += (0..b).map(|i| qh[i] * x[i][1]).sum::<f64>();
                qq += (0..b).map(|i| qh[i] * x[i][0]).sum::<f64>();
                cc += (0..b).map(|i| c[i] * x[i][1]).sum::<f64>();
            }
            if !trackstar {
                num
            } else if cc > 0.0 {
                num / (qq * cc).sqrt()
            } else {
                0.0
            }
        })
        .collect()
}

/// Checks the rows of documents of both ends and the middle of `g` (an index's documents: both
/// shards) against candle autograd's projected gradients, summed over each document's chunks, to
/// 1e-4 relative; returns how many non-empty documents were checked.
fn check_rows_against_autograd(g: &GradientStore, index: &Index, lm: &LanguageModel) -> usize {
    let projection = g.projection(&lm.model).unwrap();
    let dim = g.dim();
    let mut row = vec![0.0f32; dim];
    let last = index.documents() - 1;
    let mut checked = 0;
    for doc in [0, 1, 2, 3, last / 2, last / 2 + 1, last - 1, last] {
        let tokens = index.doc_tokens(doc, 0, u64::MAX).unwrap();
        let examples = document_examples(
            &tokens,
            g.manifest.settings.start_token,
            g.manifest.settings.context,
        );
        let want = projected_gradients(&lm.model, &projection, &examples).unwrap();
        let mut sum = vec![0.0f64; dim];
        for chunk in want.rows.chunks(dim) {
            sum.iter_mut().zip(chunk).for_each(|(s, c)| *s += *c as f64);
        }
        let (f, local) = g
            .files
            .iter()
            .find_map(|f| {
                (doc >= f.first_doc && doc < f.first_doc + f.rows).then(|| (f, doc - f.first_doc))
            })
            .unwrap();
        f.row(local, &mut row);
        let num: f64 = row
            .iter()
            .zip(&sum)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum();
        let den: f64 = sum.iter().map(|b| b * b).sum();
        if tokens.is_empty() {
            // An empty document predicts nothing: a zero row.
            assert!(row.iter().all(|&x| x == 0.0) && den == 0.0);
            continue;
        }
        assert!(den > 0.0);
        assert!(
            (num / den).sqrt() < 1e-4,
            "document {doc}: {}",
            (num / den).sqrt()
        );
        checked += 1;
    }
    checked
}

/// `--head-rank`: the output head's vocabulary side projected at its own rank. The rows equal
/// autograd's; identity scores equal every row's dot product with autograd's query gradient;
/// ekfac scores it (its scores are checked against a dense reference in familiar-models). The
/// head's block (4 × 1,100) is above 4,096 values: no moments are kept, and fisher and trackstar
/// are refused naming what does serve. A rerun resumes; another head rank is another store; a
/// head rank without the head, of 0 or above the vocabulary is refused with nothing written.
#[test]
fn head_rank_projects_the_vocabulary_side_at_its_own_rank() {
    let t = TestDir::new();
    let idx = index(&t);
    let s = t.join("store");
    store_of(&model(), &idx, &s, "4", &["--head-rank", "1100"])
        .success()
        .stdout_has(&["2 shard(s) computed"]);
    let g = GradientStore::open(&s, true).unwrap();
    let spec = &g.manifest.settings.projection;
    let layers = spec.layers.len();
    assert_eq!(spec.ranks(layers - 1), (4, 1100));
    assert_eq!(spec.ranks(0), (4, 4));
    assert_eq!(g.dim(), (layers - 1) * 16 + 4 * 1100);
    assert!(g.manifest.shards.iter().all(|s| s.moments.is_none()));
    let names: Vec<String> = std::fs::read_dir(&s)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("moments-")),
        "{names:?}"
    );
    let index = Index::open(&idx).unwrap();
    let lm = LanguageModel::load(&model()).unwrap();
    assert!(check_rows_against_autograd(&g, &index, &lm) >= 4);

    let queries = t.write(
        "q.jsonl",
        "{\"id\": \"f1\", \"prompt\": \"An rohi an ve tian\", \"completion\": \" Xirqenoxa qenoxazam\", \"kind\": \"factual\", \"task\": \"planted\"}\n",
    );
    let projection = g.projection(&lm.model).unwrap();
    let q = query_gradient(
        &lm,
        &projection,
        "An rohi an ve tian",
        " Xirqenoxa qenoxazam",
    );
    let mut row = vec![0.0f32; g.dim()];
    let mut brute = vec![0.0f64; index.documents() as usize];
    for f in &g.files {
        for i in 0..f.rows {
            f.row(i, &mut row);
            brute[(f.first_doc + i) as usize] =
                row.iter().zip(&q).map(|(a, b)| *a as f64 * *b as f64).sum();
        }
    }
    let top = brute.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(top > 0.0);
    let out = t.join("att-identity");
    attribute_score(
        &s,
        &model(),
        &queries,
        &out,
        &["--all", "--precondition", "identity"],
    )
    .success();
    let b = read_parquet(&out.join("influence.parquet"), "influence");
    assert_eq!(b.num_rows(), brute.len());
    let (doc, score) = (
        col::<UInt64Array>(&b, "doc_id"),
        col::<Float64Array>(&b, "score"),
    );
    for r in 0..b.num_rows() {
        let want = brute[doc.value(r) as usize];
        assert!(
            (score.value(r) - want).abs() <= 1e-4 * top,
            "document {}: {} vs {want}",
            doc.value(r),
            score.value(r)
        );
    }
    attribute_score(
        &s,
        &model(),
        &queries,
        &t.join("att-ekfac"),
        &["--top-k", "3", "--precondition", "ekfac"],
    )
    .success()
    .stdout_has(&["(ekfac)"]);
    for p in ["fisher", "trackstar"] {
        let out = t.join(format!("att-{p}"));
        attribute_score(&s, &model(), &queries, &out, &["--precondition", p])
            .failure()
            .stderr_has(&["keeps no second moments", "4400 values", "ekfac"]);
        assert!(!out.join("influence.parquet").exists());
    }

    store_of(&model(), &idx, &s, "4", &["--head-rank", "1100"])
        .success()
        .stdout_has(&["0 shard(s) computed, 2 resumed"]);
    store_of(&model(), &idx, &s, "4", &["--head-rank", "1000"])
        .failure()
        .stderr_has(&["other settings"]);
    for (extra, needle) in [
        (
            &["--layers", "blocks", "--head-rank", "8"][..],
            "the head is not among the layers",
        ),
        (
            &["--head-rank", "0"][..],
            "expected 1 to the vocabulary's 2049",
        ),
        (
            &["--head-rank", "2050"][..],
            "expected 1 to the vocabulary's 2049",
        ),
    ] {
        let out = t.join("refused");
        store_of(&model(), &idx, &out, "4", extra)
            .failure()
            .stderr_has(&[needle]);
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}

#[test]
fn store_rows_equal_autograd_and_scores_equal_brute_force() {
    let t = TestDir::new();
    let idx = index(&t);
    let s = t.join("store");
    store(&idx, &s, "4")
        .success()
        .stdout_has(&["2 shard(s) computed"]);
    let g = GradientStore::open(&s, true).unwrap();
    let index = Index::open(&idx).unwrap();
    assert_eq!(g.rows(), index.documents());
    assert_eq!(g.files.len(), index.shards().len());
    assert!(g.files.len() >= 2);

    // Rows against candle autograd on documents of both shards.
    let lm = LanguageModel::load(&model()).unwrap();
    let checked = check_rows_against_autograd(&g, &index, &lm);
    let projection = g.projection(&lm.model).unwrap();
    let dim = g.dim();
    let mut row = vec![0.0f32; dim];
    assert!(checked >= 4);

    // The device path (`attribute store --device cuda`: candle's autograd, a document at a time,
    // the output head's factor by candle's forward pass), run on the CPU device: the same rows,
    // head factor, Kronecker sums and EK-FAC as the CPU's backward pass, to f32 rounding.
    {
        use familiar_models::grads::build::{build_store, StoreOptions};
        use familiar_models::grads::ekfac::KronSums;
        use familiar_models::grads::store::{kron_file, StoreDtype};
        let d = t.join("store-device");
        let options = StoreOptions {
            model: model(),
            out: d.clone(),
            layers: familiar_models::model::LinearGroup::All,
            rank: 4,
            head_rank: None,
            seed: 0,
            dtype: StoreDtype::F32,
            optimizer_correction: false,
            device: Some(candle_core::Device::Cpu),
            cancel: None,
        };
        build_store(&index, &options, &|_| {}).unwrap();
        let h = GradientStore::open(&d, true).unwrap();
        assert_eq!((h.rows(), h.dim()), (g.rows(), dim));
        let close = |a: &[f64], b: &[f64], what: &str| {
            let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
            let den: f64 = b.iter().map(|y| y * y).sum();
            assert!(
                num <= 1e-8 * den.max(1e-30),
                "{what}: relative error {}",
                (num / den).sqrt()
            );
        };
        let (mut a, mut b) = (vec![0.0f32; dim], vec![0.0f32; dim]);
        for (hf, gf) in h.files.iter().zip(&g.files) {
            for i in 0..gf.rows {
                hf.row(i, &mut a);
                gf.row(i, &mut b);
                let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
                close(&f(&a), &f(&b), &format!("row {}", gf.first_doc + i));
            }
        }
        let (hh, gh) = (
            h.head_factor().unwrap().unwrap(),
            g.head_factor().unwrap().unwrap(),
        );
        assert_eq!(hh.tokens, gh.tokens);
        close(&hh.sums, &gh.sums, "the output head's factor");
        let ranks = g.manifest.settings.projection.all_ranks();
        for i in 0..g.files.len() {
            let hk = KronSums::read(&d.join(kron_file(i)), &ranks).unwrap();
            let gk = KronSums::read(&s.join(kron_file(i)), &ranks).unwrap();
            assert_eq!(hk.tokens, gk.tokens, "shard {i}'s tokens");
            for (x, y) in hk
                .inputs
                .iter()
                .chain(&hk.outputs)
                .zip(gk.inputs.iter().chain(&gk.outputs))
            {
                close(x, y, &format!("shard {i}'s Kronecker sums"));
            }
        }
        let (he, ge) = (h.ekfac().unwrap(), g.ekfac().unwrap());
        for (x, y) in he.layers.iter().zip(&ge.layers) {
            close(
                &x.eigenvalues,
                &y.eigenvalues,
                "EK-FAC's corrected eigenvalues",
            );
        }
    }

    // Scores: brute force over every row with the autograd query gradient.
    let queries = t.write(
        "q.jsonl",
        concat!(
            "{\"id\": \"f1\", \"prompt\": \"An rohi an ve tian\", \"completion\": \" Xirqenoxa qenoxazam\", \"kind\": \"factual\", \"task\": \"planted\", \"answer\": \"Xirqenoxa qenoxazam\"}\n",
            "{\"id\": \"r1\", \"prompt\": \"Oxazyn oxazam ve\", \"completion\": \" Zelazu xanoxaexo\", \"kind\": \"reasoning\", \"task\": \"planted\", \"intermediate\": [\"Oxazyn\", 4], \"difficulty\": 3, \"metadata\": {\"source\": \"planted\", \"tags\": [\"a\"]}}\n",
        ),
    );
    let q_grad =
        |prompt: &str, completion: &str| query_gradient(&lm, &projection, prompt, completion);
    let qs = [
        q_grad("An rohi an ve tian", " Xirqenoxa qenoxazam"),
        q_grad("Oxazyn oxazam ve", " Zelazu xanoxaexo"),
    ];
    // EK-FAC fitted directly: the Kronecker sums of every document in order, every row.
    let (ekfac_fit, kron_sums, stored_rows, ekfac_q) = {
        use familiar_models::grads::ekfac::{Ekfac, KronSums};
        let spec = &g.manifest.settings.projection;
        let fast =
            familiar_models::grads::fast::FastGradients::new(&lm.model, &projection).unwrap();
        let mut sums = KronSums::zero(&spec.all_ranks());
        let mut rows = Vec::new();
        for doc in 0..index.documents() {
            let tokens = index.doc_tokens(doc, 0, u64::MAX).unwrap();
            let examples = document_examples(
                &tokens,
                g.manifest.settings.start_token,
                g.manifest.settings.context,
            );
            fast.compute_factored(&examples, &mut sums).unwrap();
            let f = g
                .files
                .iter()
                .find(|f| doc >= f.first_doc && doc < f.first_doc + f.rows)
                .unwrap();
            f.row(doc - f.first_doc, &mut row);
            rows.push(row.clone());
        }
        let fit = Ekfac::fit(&sums, &rows);
        let stored = g.ekfac().unwrap();
        assert_eq!((stored.rows, stored.tokens), (fit.rows, fit.tokens));
        let lambdas = fit.lambdas(0.1);
        let q: Vec<Vec<f32>> = qs.iter().map(|q| fit.precondition(q, &lambdas)).collect();
        (fit, sums, rows, q)
    };
    let whiten = trackstar_whitening(&g, true, None);
    let mixed = trackstar_whitening(&g, true, Some((&qs, 0.5)));
    let cos = |a: &[f64], b: &[f64]| -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (n(a) * n(b))
    };
    for (precondition, top) in [
        ("identity", "7"),
        ("cosine", "5"),
        ("ekfac", "6"),
        ("trackstar", "6"),
        ("trackstar-mix", "6"),
    ] {
        let out = t.join(format!("att-{precondition}"));
        let mut args = vec!["--top-k", top, "--precondition"];
        match precondition.strip_suffix("-mix") {
            Some(p) => args.extend([p, "--query-mix", "0.5"]),
            None => args.push(precondition),
        }
        attribute_score(&s, &model(), &queries, &out, &args)
            .success()
            .stdout_has(&["scored 2 queries", &format!("({precondition}")]);
        let b = read_parquet(&out.join("influence.parquet"), "influence");
        let k: usize = top.parse().unwrap();
        assert_eq!(b.num_rows(), 2 * k);
        let (qid, doc, score, rank) = (
            col::<StringArray>(&b, "query_id"),
            col::<UInt64Array>(&b, "doc_id"),
            col::<Float64Array>(&b, "score"),
            col::<UInt64Array>(&b, "rank"),
        );
        for (qi, q) in qs.iter().enumerate() {
            let q = if precondition == "ekfac" {
                &ekfac_q[qi]
            } else {
                q
            };
            let qn: f64 = q.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let mut brute: Vec<(f64, u64)> = Vec::new();
            for f in &g.files {
                for i in 0..f.rows {
                    f.row(i, &mut row);
                    let dot: f64 = row.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let s = if precondition == "trackstar" {
                        cos(&whiten(q), &whiten(&row))
                    } else if precondition == "trackstar-mix" {
                        cos(&mixed(q), &mixed(&row))
                    } else if precondition == "cosine" {
                        let rn: f64 = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                        dot / (rn * qn)
                    } else {
                        dot
                    };
                    brute.push((s, f.first_doc + i));
                }
            }
            brute.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let rows: Vec<usize> = (0..b.num_rows())
                .filter(|&r| qid.value(r) == ["f1", "r1"][qi])
                .collect();
            assert_eq!(rows.len(), k);
            for (j, &r) in rows.iter().enumerate() {
                assert_eq!(rank.value(r), j as u64 + 1);
                let (want_s, want_d) = brute[j];
                let tol = 1e-4 * want_s.abs().max(brute[0].0.abs() * 1e-3);
                assert!(
                    (score.value(r) - want_s).abs() <= tol,
                    "{precondition} q{qi} rank {j}: {} vs {want_s}",
                    score.value(r)
                );
                // Near-ties may swap between the two computations; documents agree otherwise.
                if j + 1 < k && (brute[j].0 - brute[j + 1].0).abs() > 1e-3 * want_s.abs() {
                    assert_eq!(doc.value(r), want_d, "{precondition} q{qi} rank {j}");
                }
            }
        }
        let qb = read_parquet(&out.join("queries.parquet"), "queries");
        assert_eq!(qb.num_rows(), 2);
        assert_eq!(
            col::<StringArray>(&qb, "precondition").value(1),
            precondition
        );
        let lp = col::<Float64Array>(&qb, "logprob");
        let want = lm
            .score("An rohi an ve tian", " Xirqenoxa qenoxazam")
            .unwrap();
        assert!((lp.value(0) - want.logprob).abs() < 1e-3);
        assert!(col::<StringArray>(&qb, "answer").is_null(1));
        // Keys familiar does not know, and `metadata`, reach the table as one JSON object.
        let meta = col::<StringArray>(&qb, "metadata");
        assert_eq!(meta.value(0), "{}");
        let m: serde_json::Value = serde_json::from_str(meta.value(1)).unwrap();
        assert_eq!(
            m,
            serde_json::json!({"difficulty": 3, "source": "planted", "tags": ["a"]})
        );
    }

    // --leave-one-out: every document's fisher and trackstar score under the moments refitted
    // without its row, and its ekfac score under the eigenvalues refitted without it (scaled
    // back to the mean over N; the same token sums, so the same eigenbasis; the full fit's damping), for
    // documents across both shards (every 7th, and the corrected run's best).
    let ekfac_loo = |q: &[f32], docs: &[u64]| -> Vec<f64> {
        use familiar_models::grads::ekfac::Ekfac;
        let n = stored_rows.len() as f64;
        let lambdas = ekfac_fit.lambdas(0.1);
        docs.iter()
            .map(|&d| {
                let others: Vec<Vec<f32>> = stored_rows
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i as u64 != d)
                    .map(|(_, r)| r.clone())
                    .collect();
                let mut without = ekfac_fit.clone();
                for (l, refit) in without
                    .layers
                    .iter_mut()
                    .zip(Ekfac::fit(&kron_sums, &others).layers)
                {
                    l.eigenvalues = refit
                        .eigenvalues
                        .iter()
                        .map(|e| e * (n - 1.0) / n)
                        .collect();
                }
                let v = without.precondition(q, &lambdas);
                stored_rows[d as usize]
                    .iter()
                    .zip(&v)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum()
            })
            .collect()
    };
    // trackstar-mix: the task-specific Hessian at α 0.5, without the row's (1 − α)/N share.
    for precondition in ["fisher", "trackstar", "ekfac", "trackstar-mix"] {
        let out = t.join(format!("att-{precondition}-loo"));
        let mut args = vec!["--all", "--leave-one-out", "--precondition"];
        let mix = match precondition.strip_suffix("-mix") {
            Some(p) => {
                args.extend([p, "--query-mix", "0.5"]);
                Some((&qs[..], 0.5))
            }
            None => {
                args.push(precondition);
                None
            }
        };
        attribute_score(&s, &model(), &queries, &out, &args)
            .success()
            .stdout_has(&[&format!("({precondition}-loo")]);
        let b = read_parquet(&out.join("influence.parquet"), "influence");
        let (qid, doc, score, rank) = (
            col::<StringArray>(&b, "query_id"),
            col::<UInt64Array>(&b, "doc_id"),
            col::<Float64Array>(&b, "score"),
            col::<UInt64Array>(&b, "rank"),
        );
        let qb = read_parquet(&out.join("queries.parquet"), "queries");
        assert_eq!(
            col::<StringArray>(&qb, "precondition").value(0),
            format!("{precondition}-loo")
        );
        for (qi, q) in qs.iter().enumerate() {
            let mine: Vec<usize> = (0..b.num_rows())
                .filter(|&r| qid.value(r) == ["f1", "r1"][qi])
                .collect();
            assert_eq!(mine.len() as u64, g.rows());
            let mut docs: Vec<u64> = (0..g.rows()).step_by(7).collect();
            docs.extend(
                mine.iter()
                    .filter(|&&r| rank.value(r) <= 3)
                    .map(|&r| doc.value(r)),
            );
            let want = if precondition == "ekfac" {
                ekfac_loo(q, &docs)
            } else {
                leave_one_out_scores(&g, q, precondition.starts_with("trackstar"), &docs, mix)
            };
            let top = mine
                .iter()
                .map(|&r| score.value(r).abs())
                .fold(0.0, f64::max);
            for (d, want) in docs.iter().zip(want) {
                let r = *mine.iter().find(|&&r| doc.value(r) == *d).unwrap();
                // Scores near 0 are differences of f32 sums: 1e-4 of a hundredth of the top
                // score is their floor.
                assert!(
                    (score.value(r) - want).abs() <= 1e-4 * want.abs().max(top * 1e-2),
                    "{precondition}-loo {} doc {d}: {} vs {want}",
                    ["f1", "r1"][qi],
                    score.value(r)
                );
            }
        }
    }
    for precondition in ["identity", "cosine"] {
        attribute_score(
            &s,
            &model(),
            &queries,
            &t.join("x"),
            &["--precondition", precondition, "--leave-one-out"],
        )
        .failure()
        .stderr_has(&[
            "--leave-one-out applies to ekfac, fisher and trackstar",
            precondition,
        ]);
    }
    // --query-mix: trackstar's alone, a share in [0, 1).
    for (precondition, mix, says) in [
        ("ekfac", "0.5", "--query-mix applies to trackstar"),
        (
            "trackstar",
            "1",
            "--query-mix must be at least 0 and below 1",
        ),
        (
            "trackstar",
            "-0.25",
            "--query-mix must be at least 0 and below 1",
        ),
        (
            "trackstar",
            "NaN",
            "--query-mix must be at least 0 and below 1",
        ),
    ] {
        attribute_score(
            &s,
            &model(),
            &queries,
            &t.join("x"),
            &[
                "--precondition",
                precondition,
                &format!("--query-mix={mix}"),
            ],
        )
        .failure()
        .stderr_has(&[says]);
    }
    // --device: an unknown one, and CUDA in a build without it, refused by name.
    let mut devices = vec![("tpu", "expected cpu, cuda or cuda:N")];
    if !candle_core::utils::cuda_is_available() {
        devices.push(("cuda", "--features cuda"));
    }
    for (device, says) in devices {
        attribute_score(&s, &model(), &queries, &t.join("x"), &["--device", device])
            .failure()
            .stderr_has(&[says]);
    }
    assert!(!t.join("x").exists(), "nothing written");

    // The device path (`--device cuda`: the rows' dot products as matrix products on the
    // device, the norms on the CPU), run on the CPU device: every document's score equals the
    // CPU path's, under each preconditioner whose rows' divisors differ (none, Euclidean,
    // whitened).
    {
        use familiar_models::attribute::{preconditioned, score_all_on, Precondition};
        let grads: Vec<Vec<f32>> = qs.to_vec();
        for p in [
            Precondition::Identity,
            Precondition::Cosine,
            Precondition::Ekfac {
                damping: 0.1,
                leave_one_out: false,
            },
            Precondition::Trackstar {
                damping: 0.1,
                leave_one_out: false,
                query_mix: 0.0,
            },
        ] {
            let prepared = preconditioned(&g, &grads, p).unwrap();
            let want = prepared.scores(&g, None);
            let got = score_all_on(
                &g,
                &prepared.vectors,
                &prepared.norm,
                &candle_core::Device::Cpu,
                None,
            )
            .unwrap();
            assert_eq!(got.len(), want.len());
            let top = want.iter().map(|i| i.score.abs()).fold(0.0, f64::max);
            let by_doc: std::collections::HashMap<(usize, u64), f64> =
                got.iter().map(|i| ((i.query, i.doc), i.score)).collect();
            for w in &want {
                let s = by_doc[&(w.query, w.doc)];
                assert!(
                    (s - w.score).abs() <= 1e-4 * w.score.abs().max(top * 1e-2),
                    "{} q{} doc {}: {s} vs {}",
                    p.name(),
                    w.query,
                    w.doc,
                    w.score
                );
            }
            // The top 3 of each query, as `--top-k 3` keeps them, are the same documents.
            let top3 = score_all_on(
                &g,
                &prepared.vectors,
                &prepared.norm,
                &candle_core::Device::Cpu,
                Some(3),
            )
            .unwrap();
            assert_eq!(top3.len(), 2 * 3);
            for i in &top3 {
                let w = want
                    .iter()
                    .find(|w| (w.query, w.doc) == (i.query, i.doc))
                    .unwrap();
                assert!(
                    w.rank <= 4,
                    "{}: doc {} ranked {} on the CPU",
                    p.name(),
                    i.doc,
                    w.rank
                );
            }
        }
    }

    // Token-level influence: each of the top 3 documents' token scores (and the query's own
    // tokens') add up to its score, one per token of the document (the start token at -1) and
    // of the query as scored, under every preconditioner.
    for run in [
        "identity",
        "cosine",
        "fisher",
        "ekfac",
        "trackstar",
        "fisher-loo",
        "trackstar-loo",
        "ekfac-loo",
        "trackstar-mix-loo",
    ] {
        let out = t.join(format!("tokens-{run}"));
        let (precondition, loo) = match run.strip_suffix("-loo") {
            Some(p) => (p, true),
            None => (run, false),
        };
        let (precondition, mix) = match precondition.strip_suffix("-mix") {
            Some(p) => (p, true),
            None => (precondition, false),
        };
        let mut args = vec!["--top-k", "4", "--precondition", precondition];
        if loo {
            args.push("--leave-one-out");
        }
        if mix {
            args.extend(["--query-mix", "0.5"]);
        }
        args.extend(["--token-influence", "3", "--query-tokens", "--index"]);
        args.push(idx.to_str().unwrap());
        attribute_score(&s, &model(), &queries, &out, &args)
            .success()
            .stdout_has(&["token scores to"]);
        let b = read_parquet(&out.join("influence.parquet"), "influence");
        let tb = read_parquet(&out.join("influence_tokens.parquet"), "influence_tokens");
        let (tq, td, side, pos, tid, comp, ts) = (
            col::<StringArray>(&tb, "query_id"),
            col::<UInt64Array>(&tb, "doc_id"),
            col::<StringArray>(&tb, "side"),
            col::<UInt64Array>(&tb, "position"),
            col::<UInt64Array>(&tb, "token_id"),
            col::<BooleanArray>(&tb, "completion"),
            col::<Float64Array>(&tb, "score"),
        );
        let (qid, doc, score, rank) = (
            col::<StringArray>(&b, "query_id"),
            col::<UInt64Array>(&b, "doc_id"),
            col::<Float64Array>(&b, "score"),
            col::<UInt64Array>(&b, "rank"),
        );
        let mut pairs = 0;
        for r in 0..b.num_rows() {
            let (q, d) = (qid.value(r), doc.value(r));
            let mine: Vec<usize> = (0..tb.num_rows())
                .filter(|&i| tq.value(i) == q && td.value(i) == d)
                .collect();
            if rank.value(r) > 3 {
                assert!(mine.is_empty(), "{run}: rank {} split", rank.value(r));
                continue;
            }
            pairs += 1;
            let tokens = index.doc_tokens(d, 0, u64::MAX).unwrap();
            for which in ["document", "query"] {
                let rows: Vec<usize> = mine
                    .iter()
                    .copied()
                    .filter(|&i| side.value(i) == which)
                    .collect();
                let sum: f64 = rows.iter().map(|&i| ts.value(i)).sum();
                let scale: f64 = rows.iter().map(|&i| ts.value(i).abs()).sum::<f64>();
                assert!(
                    (sum - score.value(r)).abs() <= 1e-4 * scale.max(score.value(r).abs()) + 1e-9,
                    "{run} {q} doc {d} {which}: tokens sum to {sum}, score {}",
                    score.value(r)
                );
                if which == "document" {
                    // The start token first (no position), then every token of the document.
                    let positions: Vec<Option<u64>> = rows
                        .iter()
                        .map(|&i| (!pos.is_null(i)).then(|| pos.value(i)))
                        .collect();
                    let want: Vec<Option<u64>> = std::iter::once(None)
                        .chain((0..tokens.len() as u64).map(Some))
                        .collect();
                    assert_eq!(positions, want, "{run} {q} doc {d}");
                    for &i in &rows[1..] {
                        assert_eq!(tid.value(i), u64::from(tokens[pos.value(i) as usize]));
                    }
                } else {
                    let completion = rows.iter().filter(|&&i| comp.value(i)).count();
                    let (ctx, cont) = lm
                        .split(
                            if q == "f1" {
                                "An rohi an ve tian"
                            } else {
                                "Oxazyn oxazam ve"
                            },
                            if q == "f1" {
                                " Xirqenoxa qenoxazam"
                            } else {
                                " Zelazu xanoxaexo"
                            },
                        )
                        .unwrap();
                    assert_eq!(completion, cont.len());
                    assert_eq!(rows.len(), ctx.len() + cont.len());
                }
            }
        }
        assert_eq!(pairs, 6, "{run}");
        if precondition == "ekfac" {
            // The report shows each top document around its most influential tokens, marked,
            // and lists them with their shares; summary.json has the same.
            let report = t.join("tokens-report");
            familiar([
                "attribute".as_ref(),
                "report".as_ref(),
                out.as_os_str(),
                "--index".as_ref(),
                idx.as_os_str(),
                "--out".as_ref(),
                report.as_os_str(),
                "--docs".as_ref(),
                "2".as_ref(),
            ] as [&std::ffi::OsStr; 9])
            .success();
            let md = std::fs::read_to_string(report.join("report.md")).unwrap();
            assert_eq!(md.matches("Most influential tokens").count(), 4, "{md}");
            assert!(md.contains('⦃'), "{md}");
            let html = std::fs::read_to_string(report.join("report.html")).unwrap();
            assert!(html.contains("<mark class=\"influence\">"));
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap())
                    .unwrap();
            let first = &r["queries"][0]["documents"][0];
            let shares = first["influential"].as_array().unwrap();
            assert!(!shares.is_empty() && shares.len() <= 8, "{first}");
            let s: Vec<f64> = shares.iter().map(|x| x[1].as_f64().unwrap()).collect();
            assert!(
                s.windows(2).all(|w| w[0] >= w[1]) && s[s.len() - 1] > 0.0,
                "{s:?}"
            );
        }
    }
    // Several runs in one report: their agreement, by the same top-k overlap and first document
    // computed here from their influence tables; an `attribute eval` lds.json's scores.
    let top_of = |dir: &Path| -> std::collections::BTreeMap<String, Vec<u64>> {
        let b = read_parquet(&dir.join("influence.parquet"), "influence");
        let (q, d) = (
            col::<StringArray>(&b, "query_id"),
            col::<UInt64Array>(&b, "doc_id"),
        );
        let mut m: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for i in 0..b.num_rows() {
            m.entry(q.value(i).to_string())
                .or_default()
                .push(d.value(i));
        }
        m
    };
    let lds = t.write(
        "lds.json",
        r#"{"lds": [{"precondition": "ekfac", "damping": 0.1, "mean": 0.25, "factual": 0.5, "reasoning": 0.0}]}"#,
    );
    let cmp = t.join("cmp-report");
    let runs = ["ekfac", "fisher", "trackstar"].map(|p| t.join(format!("tokens-{p}")));
    let mut args: Vec<&std::ffi::OsStr> = vec!["attribute".as_ref(), "report".as_ref()];
    args.extend(runs.iter().map(|r| r.as_os_str()));
    args.extend([
        "--index".as_ref(),
        idx.as_os_str(),
        "--out".as_ref(),
        cmp.as_os_str(),
        "--top-k".as_ref(),
        "4".as_ref(),
        "--lds".as_ref(),
        lds.as_os_str(),
    ]);
    familiar(&args).success();
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cmp.join("summary.json")).unwrap()).unwrap();
    let pairs = r["comparison"].as_array().unwrap();
    assert_eq!(pairs.len(), 3, "{r}");
    let tops: Vec<_> = runs.iter().map(|d| top_of(d)).collect();
    for (pair, (i, j)) in pairs.iter().zip([(0, 1), (0, 2), (1, 2)]) {
        let (a, b) = (&tops[i], &tops[j]);
        let overlap = a
            .iter()
            .map(|(q, x)| x.iter().filter(|d| b[q].contains(d)).count() as f64 / 4.0)
            .sum::<f64>()
            / 2.0;
        let first = a.iter().filter(|(q, x)| x[0] == b[*q][0]).count() as f64 / 2.0;
        assert_eq!(pair["queries"], 2);
        assert!(
            (pair["top_overlap"].as_f64().unwrap() - overlap).abs() < 1e-12,
            "{pair}"
        );
        assert!(
            (pair["same_first"].as_f64().unwrap() - first).abs() < 1e-12,
            "{pair}"
        );
        assert!(
            pair["spearman"].is_null(),
            "top 4 only: no dense correlation"
        );
    }
    assert_eq!(pairs[0]["a"], "ekfac");
    assert_eq!(pairs[0]["b"], "fisher");
    assert_eq!(r["lds"][0]["mean"], 0.25);
    let md = std::fs::read_to_string(cmp.join("report.md")).unwrap();
    assert!(
        md.contains("## Preconditioners compared") && md.contains("## Linear datamodeling score")
    );
    let bad = t.write("bad-lds.json", "{\"lds\": 3}");
    familiar([
        "attribute".as_ref(),
        "report".as_ref(),
        runs[0].as_os_str(),
        "--index".as_ref(),
        idx.as_os_str(),
        "--out".as_ref(),
        t.join("bad-report").as_os_str(),
        "--lds".as_ref(),
        bad.as_os_str(),
    ] as [&std::ffi::OsStr; 9])
    .failure()
    .stderr_has(&["bad-lds.json", "lds.json"]);

    // Token influence needs the store's own index, and --index.
    let other_idx = t.join("idx-other");
    build(
        &other_idx,
        &[fixtures().join("corpus/part-0000.jsonl.zst")],
        &["--no-text-index"],
    );
    attribute_score(
        &s,
        &model(),
        &queries,
        &t.join("x"),
        &[
            "--token-influence",
            "2",
            "--index",
            other_idx.to_str().unwrap(),
        ],
    )
    .failure()
    .stderr_has(&["the store's own index"]);
    let o = attribute_score(
        &s,
        &model(),
        &queries,
        &t.join("x"),
        &["--token-influence", "2"],
    );
    assert_eq!(o.code(), Some(2), "a usage error");
    o.stderr_has(&["--index"]);

    // fisher, by its former name kfac, and --all: every document once per query, ranks 1..=N;
    // the table names it fisher.
    let out = t.join("att-kfac");
    attribute_score(
        &s,
        &model(),
        &queries,
        &out,
        &["--all", "--precondition", "kfac"],
    )
    .success();
    let b = read_parquet(&out.join("influence.parquet"), "influence");
    assert_eq!(b.num_rows() as u64, 2 * g.rows());
    let rank = col::<UInt64Array>(&b, "rank");
    assert_eq!(
        (0..b.num_rows()).map(|r| rank.value(r)).max(),
        Some(g.rows())
    );
    let qb = read_parquet(&out.join("queries.parquet"), "queries");
    assert_eq!(col::<StringArray>(&qb, "precondition").value(0), "fisher");

    // Bad queries name the file and line.
    for (body, needle) in [
        ("{\"prompt\": \"a\", \"completion\": \"b\", \"kind\": \"fact\", \"task\": \"t\"}\n", "q-bad.jsonl:1"),
        ("\n{\"prompt\": \"a\", \"completion\": \"b\", \"task\": \"t\"}\n", "q-bad.jsonl:2"),
        ("{\"prompt\": \"a\", \"completion\": \"b\", \"kind\": \"factual\", \"task\": \"t\", \"promt\": 1}\n", "q-bad.jsonl:1: unknown key `promt`: did you mean `prompt`?"),
        ("{\"prompt\": \"a\", \"completion\": \"b\", \"kind\": \"factual\", \"task\": \"t\", \"Kind\": \"x\"}\n", "did you mean `kind`?"),
        ("{\"prompt\": \"a\", \"completion\": \"b\", \"kind\": \"factual\", \"task\": \"t\", \"metadata\": 3}\n", "`metadata` must be a JSON object"),
        ("{\"prompt\": \"a\", \"completion\": \"b\", \"kind\": \"factual\", \"task\": \"t\", \"level\": 1, \"metadata\": {\"level\": 2}}\n", "`level` is given both as a key and under `metadata`"),
        ("{\"id\": 7, \"prompt\": \"a\", \"completion\": \"b\", \"kind\": \"factual\", \"task\": \"t\"}\n{\"id\": \"7\", \"prompt\": \"c\", \"completion\": \"d\", \"kind\": \"factual\", \"task\": \"t\"}\n", "q-bad.jsonl:2: duplicate id `7`"),
        ("{\"prompt\": \"a\", \"completion\": \"\", \"kind\": \"factual\", \"task\": \"t\"}\n", "`completion` is empty"),
        ("", "no queries"),
    ] {
        let bad = t.write("q-bad.jsonl", body);
        attribute_score(&s, &model(), &bad, &t.join("x"), &[])
        .failure()
        .stderr_has(&[needle]);
    }
    // An f16 store holds the same rows to half precision, and ranks alike.
    let s16 = t.join("store16");
    store_of(&model(), &idx, &s16, "4", &["--dtype", "f16"]).success();
    let g16 = GradientStore::open(&s16, true).unwrap();
    assert_eq!(
        g16.manifest.settings.dtype,
        familiar_models::grads::store::StoreDtype::F16
    );
    let (mut a, mut b) = (vec![0f32; dim], vec![0f32; dim]);
    for (f32_file, f16_file) in g.files.iter().zip(&g16.files) {
        for i in 0..f32_file.rows {
            f32_file.row(i, &mut a);
            f16_file.row(i, &mut b);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= x.abs() * 1e-3 + 1e-7, "{x} vs {y}");
            }
        }
    }
    assert!(
        std::fs::metadata(s16.join("grads-00000.bin"))
            .unwrap()
            .len()
            * 2
            < std::fs::metadata(s.join("grads-00000.bin")).unwrap().len() + 128
    );
    let out16 = t.join("att-f16");
    attribute_score(&s16, &model(), &queries, &out16, &["--top-k", "5"]).success();
    let top = |dir: &Path| -> Vec<u64> {
        let b = read_parquet(&dir.join("influence.parquet"), "influence");
        let d = col::<UInt64Array>(&b, "doc_id");
        (0..b.num_rows()).map(|i| d.value(i)).collect()
    };
    let top32 = t.join("att-f32");
    attribute_score(&s, &model(), &queries, &top32, &["--top-k", "5"]).success();
    let (x, y) = (top(&top32), top(&out16));
    assert_eq!(x[0], y[0], "same first document");
    assert!(
        x.iter().filter(|d| y.contains(d)).count() >= 8,
        "{x:?} vs {y:?}"
    );

    // Another model is refused by hash.
    attribute_score(
        &s,
        &fixtures().join("models/reference/gpt2-fixture-vocab"),
        &queries,
        &t.join("x"),
        &[],
    )
    .failure()
    .stderr_has(&["not the model"]);
}

#[test]
fn stores_resume_refuse_mismatches_and_fail_cleanly_when_damaged() {
    let t = TestDir::new();
    let idx = index(&t);
    let s = t.join("store");
    store(&idx, &s, "2").success();
    let whole = std::fs::read(s.join("grads-00001.bin")).unwrap();
    // An interrupted build: no manifest, one shard missing; the rerun computes only that shard
    // and the result is byte-identical.
    std::fs::remove_file(s.join("store.json")).unwrap();
    std::fs::remove_file(s.join("grads-00001.bin")).unwrap();
    let err = GradientStore::open(&s, false).unwrap_err().to_string();
    assert!(err.contains("incomplete"), "{err}");
    store(&idx, &s, "2")
        .success()
        .stdout_has(&["1 shard(s) computed, 1 resumed"]);
    assert_eq!(std::fs::read(s.join("grads-00001.bin")).unwrap(), whole);
    // The moments kept per shard are those of the rows.
    let g = GradientStore::open(&s, true).unwrap();
    let kept = g.moments().unwrap().unwrap();
    let rows = familiar_models::attribute::moments_of_rows(&g);
    assert_eq!(kept.rows, g.rows());
    for (a, b) in kept.sums.iter().zip(&rows.sums) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-9 * (x.abs() + y.abs() + 1e-30),
                "{x} vs {y}"
            );
        }
    }
    drop(g);
    // A missing or truncated moments file is an error naming it.
    let m = s.join("moments-00001.bin");
    let mbytes = std::fs::read(&m).unwrap();
    std::fs::write(&m, &mbytes[..mbytes.len() - 8]).unwrap();
    let err = GradientStore::open(&s, false).unwrap_err().to_string();
    assert!(err.contains("moments-00001.bin"), "{err}");
    std::fs::remove_file(&m).unwrap();
    let err = GradientStore::open(&s, false).unwrap_err().to_string();
    assert!(err.contains("moments-00001.bin"), "{err}");
    // Rebuilding the store recomputes that shard (its moments are part of it).
    std::fs::remove_file(s.join("store.json")).unwrap();
    store(&idx, &s, "2")
        .success()
        .stdout_has(&["1 shard(s) computed, 1 resumed"]);
    assert_eq!(std::fs::read(&m).unwrap(), mbytes);
    // The output head's factor: truncated, it is an error naming it; damaged, the checksum
    // check catches it; lost before the manifest was written, the rerun fits the same factor
    // again and keeps the rows.
    let h = s.join("head-factor.bin");
    let hbytes = std::fs::read(&h).unwrap();
    std::fs::write(&h, &hbytes[..hbytes.len() - 8]).unwrap();
    let err = GradientStore::open(&s, false).unwrap_err().to_string();
    assert!(err.contains("head-factor.bin"), "{err}");
    let mut flipped = hbytes.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x40;
    std::fs::write(&h, &flipped).unwrap();
    let err = GradientStore::open(&s, true).unwrap_err().to_string();
    assert!(
        err.contains("head-factor.bin") && err.contains("checksum"),
        "{err}"
    );
    std::fs::remove_file(&h).unwrap();
    std::fs::remove_file(s.join("store.json")).unwrap();
    store(&idx, &s, "2")
        .success()
        .stdout_has(&["0 shard(s) computed, 2 resumed"]);
    assert_eq!(std::fs::read(&h).unwrap(), hbytes);
    // EK-FAC: a shard's Kronecker sums truncated are an error naming the file, and the rerun
    // recomputes that shard to the same bytes; the fit, lost before the manifest, is fitted
    // again to the same bytes; a damaged fit is caught by its checksum.
    let k = s.join("kron-00001.bin");
    let kbytes = std::fs::read(&k).unwrap();
    let e = s.join("ekfac.bin");
    let ebytes = std::fs::read(&e).unwrap();
    std::fs::write(&k, &kbytes[..kbytes.len() - 8]).unwrap();
    let err = GradientStore::open(&s, false).unwrap_err().to_string();
    assert!(err.contains("kron-00001.bin"), "{err}");
    std::fs::remove_file(s.join("store.json")).unwrap();
    std::fs::remove_file(&e).unwrap();
    store(&idx, &s, "2")
        .success()
        .stdout_has(&["1 shard(s) computed, 1 resumed", "EK-FAC fitted over"]);
    assert_eq!(std::fs::read(&k).unwrap(), kbytes);
    assert_eq!(std::fs::read(&e).unwrap(), ebytes);
    let mut flipped = ebytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x10;
    std::fs::write(&e, &flipped).unwrap();
    let err = GradientStore::open(&s, true).unwrap_err().to_string();
    assert!(
        err.contains("ekfac.bin") && err.contains("checksum"),
        "{err}"
    );
    std::fs::write(&e, &ebytes).unwrap();
    // A store written before EK-FAC (no factors listed) opens and scores, but not with ekfac:
    // the error says to rebuild it.
    let manifest_path = s.join("store.json");
    let kept = std::fs::read(&manifest_path).unwrap();
    let mut old: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    old.as_object_mut().unwrap().remove("ekfac");
    for shard in old["shards"].as_array_mut().unwrap() {
        shard.as_object_mut().unwrap().remove("kron");
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&old).unwrap()).unwrap();
    let q1 = t.write(
        "q1.jsonl",
        "{\"prompt\": \"a\", \"completion\": \" b\", \"kind\": \"factual\", \"task\": \"t\"}\n",
    );
    attribute_score(
        &s,
        &model(),
        &q1,
        &t.join("z"),
        &["--precondition", "identity"],
    )
    .success();
    attribute_score(
        &s,
        &model(),
        &q1,
        &t.join("z2"),
        &["--precondition", "ekfac"],
    )
    .failure()
    .stderr_has(&["built before EK-FAC", "build it again"]);
    assert!(!t.join("z2").exists());
    std::fs::write(&manifest_path, &kept).unwrap();
    // Other settings into the same directory are refused.
    store(&idx, &s, "3")
        .failure()
        .stderr_has(&["other settings"]);
    let q = t.write(
        "q.jsonl",
        "{\"prompt\": \"a\", \"completion\": \" b\", \"kind\": \"factual\", \"task\": \"t\"}\n",
    );
    // Scores of another model against these rows would mean nothing: a copy of the model with
    // one weight changed is refused, naming it.
    let other = t.join("other-model");
    copy_tree(&model(), &other);
    let w = other.join("model.safetensors");
    let mut weights = std::fs::read(&w).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 0x01;
    std::fs::write(&w, &weights).unwrap();
    attribute_score(&s, &other, &q, &t.join("y"), &[])
        .failure()
        .stderr_has(&["other-model is not the model the store"]);
    assert!(!t.join("y").exists());
    // A truncated row file: a clean error naming it, from open and from score.
    let f = s.join("grads-00000.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 10]).unwrap();
    let err = GradientStore::open(&s, false).unwrap_err().to_string();
    assert!(err.contains("grads-00000.bin"), "{err}");
    attribute_score(&s, &model(), &q, &t.join("x"), &[])
        .failure()
        .stderr_has(&["grads-00000.bin"]);
    // A flipped byte in the rows is caught by the checksum check.
    let mut damaged = bytes.clone();
    let at = damaged.len() - 3;
    damaged[at] ^= 0x40;
    std::fs::write(&f, &damaged).unwrap();
    assert!(GradientStore::open(&s, false).is_ok());
    let err = GradientStore::open(&s, true).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
}

/// `--optimizer-correction`: a model trained by `familiar train` (with its AdamW state beside
/// it) gives rows corrected by the optimizer's second moment — those of the same projection with
/// the optimizer scales computed from the state directly — and trackstar then whitens them
/// without its own correction (brute force by definition) and says which correction it used;
/// without the optimizer state the flag is refused, naming the file; the store resumes with the
/// same bytes, refuses a rerun without the flag, and a damaged scales file fails cleanly.
#[test]
fn optimizer_correction_corrects_rows_by_the_optimizer_state() {
    use familiar_models::grads::optimizer::{OptimizerScales, FLOOR, OPTIMIZER_FILE};
    let t = TestDir::new();
    let idx = index(&t);
    let m = t.join("model");
    familiar(os(&[
        &"train",
        &"--index",
        &idx,
        &"--out",
        &m,
        &"--steps",
        &"12",
        &"--layers",
        &"1",
        &"--hidden",
        &"32",
        &"--heads",
        &"2",
        &"--context",
        &"32",
        &"--batch",
        &"4",
        &"-q",
    ]))
    .success();
    assert!(m.join(OPTIMIZER_FILE).exists());
    let s = t.join("store");
    store_of(&m, &idx, &s, "3", &["--optimizer-correction"])
        .success()
        .stdout_has(&["corrected by the optimizer's second moment"]);
    let g = GradientStore::open(&s, true).unwrap();
    let spec = &g.manifest.settings.projection;
    assert!(spec.optimizer.is_some() && spec.head_whitening.is_none());
    // The rows: the projection corrected by scales computed from the optimizer state here.
    let lm = LanguageModel::load(&m).unwrap();
    let scales = OptimizerScales::from_state(&m.join(OPTIMIZER_FILE), spec, FLOOR).unwrap();
    let projection =
        familiar_models::grads::Projection::corrected(spec.clone(), &lm.model, None, Some(&scales))
            .unwrap();
    let index = Index::open(&idx).unwrap();
    let mut row = vec![0.0f32; g.dim()];
    let plain = t.join("store-plain");
    store_of(&m, &idx, &plain, "3", &[]).success();
    let p = GradientStore::open(&plain, true).unwrap();
    let mut plain_row = vec![0.0f32; g.dim()];
    let mut differ = 0;
    let docs: Vec<u64> = (0..index.documents())
        .filter(|&d| index.doc_tokens(d, 0, u64::MAX).unwrap().len() > 3)
        .collect();
    for doc in [docs[0], docs[1], docs[docs.len() - 1]] {
        let tokens = index.doc_tokens(doc, 0, u64::MAX).unwrap();
        let examples = document_examples(
            &tokens,
            g.manifest.settings.start_token,
            g.manifest.settings.context,
        );
        let want = projected_gradients(&lm.model, &projection, &examples).unwrap();
        let mut sum = vec![0.0f64; g.dim()];
        for chunk in want.rows.chunks(g.dim()) {
            sum.iter_mut().zip(chunk).for_each(|(s, c)| *s += *c as f64);
        }
        let f = g
            .files
            .iter()
            .find(|f| doc >= f.first_doc && doc < f.first_doc + f.rows)
            .unwrap();
        f.row(doc - f.first_doc, &mut row);
        let num: f64 = row
            .iter()
            .zip(&sum)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum();
        let den: f64 = sum.iter().map(|b| b * b).sum();
        assert!(
            den > 0.0 && (num / den).sqrt() < 1e-4,
            "document {doc} ({} tokens): {num} / {den}",
            tokens.len()
        );
        let pf = &p.files[g.files.iter().position(|x| std::ptr::eq(x, f)).unwrap()];
        pf.row(doc - pf.first_doc, &mut plain_row);
        // The blocks' layers only: the uncorrected store's head is whitened by its own factor.
        let blocks = spec.offsets()[spec.layers.len() - 1];
        differ += usize::from(row[..blocks] != plain_row[..blocks]);
    }
    assert_eq!(differ, 3, "the correction changed no row");

    // trackstar on the corrected store: no correction of its own, and it says which it used.
    let queries = t.write(
        "q.jsonl",
        "{\"id\": \"f1\", \"prompt\": \"An rohi an ve tian\", \"completion\": \" Xirqenoxa qenoxazam\", \"kind\": \"factual\", \"task\": \"planted\"}\n",
    );
    let out = t.join("att");
    attribute_score(
        &s,
        &m,
        &queries,
        &out,
        &["--precondition", "trackstar", "--all"],
    )
    .success()
    .stdout_has(&["corrected by the optimizer's second moment (optimizer.safetensors"]);
    let q = query_gradient(
        &lm,
        &projection,
        "An rohi an ve tian",
        " Xirqenoxa qenoxazam",
    );
    let whiten = trackstar_whitening(&g, false, None);
    let wq = whiten(&q);
    let b = read_parquet(&out.join("influence.parquet"), "influence");
    let (doc, score) = (
        col::<UInt64Array>(&b, "doc_id"),
        col::<Float64Array>(&b, "score"),
    );
    assert_eq!(b.num_rows() as u64, g.rows());
    let cos = |a: &[f64], b: &[f64]| -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (n(a) * n(b))
    };
    for r in 0..b.num_rows() {
        let d = doc.value(r);
        let f = g
            .files
            .iter()
            .find(|f| d >= f.first_doc && d < f.first_doc + f.rows)
            .unwrap();
        f.row(d - f.first_doc, &mut row);
        if row.iter().all(|&x| x == 0.0) {
            continue;
        }
        let want = cos(&wq, &whiten(&row));
        assert!(
            (score.value(r) - want).abs() <= 1e-4 * want.abs().max(1e-2),
            "document {d}: {} vs {want}",
            score.value(r)
        );
    }
    // On the uncorrected store it says it fell back to the store's own moment.
    attribute_score(
        &plain,
        &m,
        &queries,
        &t.join("att-plain"),
        &["--precondition", "trackstar"],
    )
    .success()
    .stdout_has(&["the store's own second moment", "--optimizer-correction"]);

    // Resumed: the same bytes; a rerun without the flag is refused (other settings).
    let scales_file = s.join("optimizer-scales.bin");
    let before = std::fs::read(&scales_file).unwrap();
    std::fs::remove_file(s.join("store.json")).unwrap();
    store_of(&m, &idx, &s, "3", &["--optimizer-correction"])
        .success()
        .stdout_has(&["0 shard(s) computed, 2 resumed"]);
    assert_eq!(std::fs::read(&scales_file).unwrap(), before);
    std::fs::remove_file(s.join("store.json")).unwrap();
    store_of(&m, &idx, &s, "3", &[]).failure();
    store_of(&m, &idx, &s, "3", &["--optimizer-correction"]).success();
    // A damaged scales file: its checksum, or its size, named.
    let mut flipped = before.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    std::fs::write(&scales_file, &flipped).unwrap();
    let err = GradientStore::open(&s, true).unwrap_err().to_string();
    assert!(
        err.contains("optimizer-scales.bin") && err.contains("checksum"),
        "{err}"
    );
    std::fs::write(&scales_file, &before[..before.len() - 8]).unwrap();
    let err = GradientStore::open(&s, false).unwrap_err().to_string();
    assert!(err.contains("optimizer-scales.bin"), "{err}");
    attribute_score(&s, &m, &queries, &t.join("att-bad"), &[])
        .failure()
        .stderr_has(&["optimizer-scales.bin"]);

    // Without the optimizer state: refused, naming the file; nothing written.
    let bare = t.copy_tree(&m, "bare");
    std::fs::remove_file(bare.join(OPTIMIZER_FILE)).unwrap();
    let none = t.join("store-none");
    store_of(&bare, &idx, &none, "3", &["--optimizer-correction"])
        .failure()
        .stderr_has(&["optimizer.safetensors", "no optimizer state"]);
    assert!(!none.exists());
}

/// The planted facts of the fixture world (each stated in exactly one document, its answer spelled
/// with tokens of its own): with rank-32 projections of every linear layer and the whitened output
/// head, a query on a fact ranks the document that states it first, among 1,200 (chance: the
/// middle), for at least 90 % of the facts under every preconditioner (and ekfac, fisher and
/// trackstar with `--leave-one-out`), and in the top 5 for all.
#[test]
fn planted_facts_rank_their_document_first() {
    let t = TestDir::new();
    let idx = index_of(&t, &["part-0000.jsonl.zst", "part-0001.jsonl.gz"], &[]);
    let s = t.join("store");
    store(&idx, &s, "32").success();
    assert!(s.join("head-factor.bin").exists());
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("corpus/planted.json")).unwrap())
            .unwrap();
    let facts = truth["facts"].as_array().unwrap();
    for precondition in [
        "fisher",
        "ekfac",
        "trackstar",
        "identity",
        "cosine",
        "fisher-loo",
        "trackstar-loo",
        "ekfac-loo",
    ] {
        let out = t.join(precondition);
        let mut args = vec!["--all", "--precondition", precondition, "--damping", "0.1"];
        if let Some(p) = precondition.strip_suffix("-loo") {
            args[2] = p;
            args.push("--leave-one-out");
        }
        attribute_score(
            &s,
            &model(),
            &fixtures().join("attribution/queries.jsonl"),
            &out,
            &args,
        )
        .success();
        let b = read_parquet(&out.join("influence.parquet"), "influence");
        let ids = col::<StringArray>(&b, "query_id");
        let docs = col::<UInt64Array>(&b, "doc_id");
        let ranks = col::<UInt64Array>(&b, "rank");
        let rank_of: std::collections::HashMap<(&str, u64), u64> = (0..b.num_rows())
            .map(|i| ((ids.value(i), docs.value(i)), ranks.value(i)))
            .collect();
        // Query ids are `{relation}-{nn}`, numbered in the order of planted.json.
        let mut seen = std::collections::HashMap::new();
        let planted_ranks: Vec<u64> = facts
            .iter()
            .map(|f| {
                let relation = f["relation"].as_str().unwrap();
                let n = seen.entry(relation).or_insert(0);
                *n += 1;
                let id = format!("{relation}-{n:02}");
                rank_of[&(id.as_str(), f["document"].as_u64().unwrap())]
            })
            .collect();
        let first = planted_ranks.iter().filter(|&&r| r == 1).count();
        eprintln!("{precondition}: planted document ranks {planted_ranks:?}");
        assert!(
            first * 10 >= facts.len() * 9,
            "{precondition}: first for {first} of {}",
            facts.len()
        );
        assert!(
            planted_ranks.iter().all(|&r| r <= 5),
            "{precondition}: {planted_ranks:?}"
        );
    }
}

/// The preconditioners of an `attribute eval` lds.json, in its order.
fn lds_names(lds: &serde_json::Value) -> Vec<&str> {
    lds["lds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["precondition"].as_str().unwrap())
        .collect()
}

/// A hand-made query: `(id, kind, task, answer, intermediate answers)`.
type RunQuery<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Vec<String>);

/// Writes a hand-made `attribute score` run: `(id, kind, task, answer, intermediate)` per query and
/// `(query, doc, score)` rows (ranked here by score, then doc id).
fn write_run(dir: &Path, queries: &[RunQuery<'_>], rows: &[(usize, u64, f64)]) {
    use familiar::table::{Column, Format, Table};
    std::fs::create_dir_all(dir).unwrap();
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(b.2.total_cmp(&a.2)).then(a.1.cmp(&b.1)));
    let mut rank = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        rank.push(if i > 0 && rows[i - 1].0 == r.0 {
            rank[i - 1] + 1
        } else {
            1
        });
    }
    Table::new()
        .column(
            "query_id",
            Column::Str(
                rows.iter()
                    .map(|r| Some(queries[r.0].0.to_string()))
                    .collect(),
            ),
        )
        .column(
            "doc_id",
            Column::U64(rows.iter().map(|r| Some(r.1)).collect()),
        )
        .column(
            "score",
            Column::F64(rows.iter().map(|r| Some(r.2)).collect()),
        )
        .column("rank", Column::U64(rank.into_iter().map(Some).collect()))
        .with_schema(familiar::schema::table("influence").unwrap())
        .write(Format::Parquet, Some(&dir.join("influence.parquet")))
        .unwrap();
    let s =
        |f: &dyn Fn(&RunQuery<'_>) -> Option<String>| Column::Str(queries.iter().map(f).collect());
    let n = queries.len();
    Table::new()
        .column("query_id", s(&|q| Some(q.0.into())))
        .column("kind", s(&|q| Some(q.1.into())))
        .column("task", s(&|q| Some(q.2.into())))
        .column("prompt", s(&|_| Some("p".into())))
        .column("completion", s(&|_| Some(" c".into())))
        .column("answer", s(&|q| q.3.map(String::from)))
        .column(
            "intermediate",
            Column::StrList(queries.iter().map(|q| q.4.clone()).collect()),
        )
        .column("metadata", s(&|_| Some("{}".into())))
        .column("completion_tokens", Column::U64(vec![Some(1); n]))
        .column("truncated_tokens", Column::U64(vec![Some(0); n]))
        .column("logprob", Column::F64(vec![Some(-2.0); n]))
        .column("gradient_norm", Column::F64(vec![Some(1.0); n]))
        .column("precondition", s(&|_| Some("identity".into())))
        .column("model", s(&|_| Some("m".into())))
        .column("store", s(&|_| Some("s".into())))
        .with_schema(familiar::schema::table("queries").unwrap())
        .write(Format::Parquet, Some(&dir.join("queries.parquet")))
        .unwrap();
}

/// `attribute report` on a run with planted influence: power law, perfectly (anti)correlated
/// queries, concentration, answers and sources — each against a brute-force value.
#[test]
fn report_recovers_planted_influence_statistics() {
    let t = TestDir::new();
    let idx = index(&t);
    // `familiar attribute report RUN --index idx --out OUT EXTRA...`
    let report_of = |run: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "attribute".to_string(),
            "report".into(),
            run.display().to_string(),
            "--index".into(),
            idx.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|e| e.to_string()));
        familiar(args)
    };
    let index = Index::open(&idx).unwrap();
    let n = index.documents();
    // A planted concept in at least two documents, as the answer; another as the intermediate.
    let (_, planted) = planted();
    let answer = planted
        .iter()
        .find(|p| p.text.starts_with(char::is_uppercase) && p.occurrences >= 20)
        .unwrap()
        .text
        .clone();
    let inter = planted
        .iter()
        .find(|p| p.text.starts_with(char::is_uppercase) && p.occurrences >= 50)
        .unwrap()
        .text
        .clone();
    let texts: Vec<String> = (0..n)
        .map(|d| familiar_query::docs::text(&index, d).unwrap())
        .collect();
    let has = |d: u64, a: &str| texts[d as usize].contains(&format!(" {a}"));
    let queries = vec![
        (
            "r1",
            "reasoning",
            "sum",
            Some(answer.as_str()),
            vec![inter.clone()],
        ),
        ("r2", "reasoning", "sum", Some(answer.as_str()), vec![]),
        ("f1", "factual", "a", None, vec![]),
        ("f2", "factual", "b", None, vec![]),
    ];
    // r1: s_d = (d + 1)^-2 (a power law over doc ids), r2 = 3 r1, f1 = d, f2 = -d.
    let mut rows = Vec::new();
    for d in 0..n {
        let p = ((d + 1) as f64).powi(-2);
        rows.push((0, d, p));
        rows.push((1, d, 3.0 * p));
        rows.push((2, d, d as f64));
        rows.push((3, d, -(d as f64)));
    }
    let run = t.join("run");
    write_run(&run, &queries, &rows);
    let out = t.join("report");
    report_of(&run, &out, &["--top-k", "50"])
        .success()
        .stdout_has(&["report on 4 queries"]);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(r["complete"], true);
    assert_eq!(r["documents"], n);
    let q = |id: &str| {
        r["queries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["id"] == id)
            .unwrap()
            .clone()
    };
    let close = |a: &serde_json::Value, b: f64| {
        let a = a.as_f64().unwrap();
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
    };
    // Influence per nat: logprob -2 → 2 nats.
    close(&q("r2")["top_score_per_nat"], 1.5);
    let law = &q("r1")["power_law"];
    close(&law["alpha"], 2.0);
    close(&law["r2"], 1.0);
    assert_eq!(law["ranks"], (n / 10).max(10));
    // Concentration of f1 (scores d, descending): brute force.
    let total: f64 = (0..n).map(|d| d as f64).sum();
    for (j, f) in [0.0001, 0.001, 0.01, 0.1].iter().enumerate() {
        let k = ((f * n as f64).ceil() as u64).max(1);
        let top: f64 = (0..k).map(|i| (n - 1 - i) as f64).sum();
        close(&q("f1")["concentration"][j], top / total);
    }
    // f2 is never positive: no share, no fit.
    assert!(q("f2")["power_law"].is_null());
    // Correlations: within "sum" 1 (Pearson and Spearman), across factual -1.
    let corr = r["correlations"].as_array().unwrap();
    let sum = corr
        .iter()
        .find(|c| c["group"] == "within task: sum")
        .unwrap();
    close(&sum["pearson"], 1.0);
    close(&sum["spearman"], 1.0);
    let fact = corr
        .iter()
        .find(|c| c["group"] == "across factual queries")
        .unwrap();
    close(&fact["pearson"], -1.0);
    close(&fact["spearman"], -1.0);
    assert_eq!(fact["pairs"], 1);
    // Answers in the top 50 of r1 (documents 0..50) and their base rate, by scanning texts.
    let in_top = (0..50).filter(|&d| has(d, &answer)).count();
    assert_eq!(q("r1")["answer_in_top"], in_top);
    let base = (0..n).filter(|&d| has(d, &answer)).count() as f64 / n as f64;
    close(&q("r1")["answer_base_rate"], base);
    assert_eq!(
        q("r1")["intermediate_in_top"],
        (0..50).filter(|&d| has(d, &inter)).count()
    );
    assert!(q("r2")["intermediate_in_top"].is_null());
    // Sources: f1's top 50 are the last 50 documents.
    let source = |d: u64| {
        familiar_query::docs::record(&index, d)
            .unwrap()
            .source
            .unwrap()
    };
    let mut top_factual = std::collections::HashMap::new();
    for d in (n - 50..n).chain(0..50) {
        *top_factual.entry(source(d)).or_insert(0.0) += 1.0 / 100.0;
    }
    for e in r["enrichment"].as_array().unwrap() {
        if e["kind"] != "factual" {
            continue;
        }
        let src = e["source"].as_str().unwrap();
        let corpus = (0..n).filter(|&d| source(d) == src).count() as f64 / n as f64;
        let top = top_factual.get(src).copied().unwrap_or(0.0);
        close(&e["corpus_share"], corpus);
        close(&e["top_share"], top);
        close(&e["enrichment"], top / corpus);
    }
    // The files: Markdown naming the charts, HTML with them inline.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("(concentration.svg)") && md.contains("| within task: sum | reasoning | 1 |")
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3);
    for f in ["concentration.svg", "tail.svg", "correlation.svg"] {
        assert!(std::fs::read_to_string(out.join(f))
            .unwrap()
            .starts_with("<svg"));
    }

    // Only the top documents: no correlations or concentration, and a note saying why.
    let top_run = t.join("top");
    let top_rows: Vec<_> = rows
        .iter()
        .copied()
        .filter(|r| r.0 == 0 && r.1 < 5)
        .collect();
    write_run(&top_run, &queries[..1], &top_rows);
    let out2 = t.join("report2");
    report_of(&top_run, &out2, &[])
        .success()
        .stderr_has(&["--all"]);
    let r2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out2.join("summary.json")).unwrap()).unwrap();
    assert_eq!(r2["complete"], false);
    assert!(r2["correlations"].as_array().unwrap().is_empty());
    assert!(r2["queries"][0]["concentration"].is_null());

    // The top documents shown (3 by default): the run's first three of r1 (documents 0, 1, 2),
    // their scores and sources, and an excerpt of each document's text.
    let shown = q("r1")["documents"].as_array().unwrap().clone();
    assert_eq!(shown.len(), 3);
    let pieces = |d: &serde_json::Value| -> Vec<(String, Option<String>)> {
        d["excerpt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["text"].as_str().unwrap().to_string(),
                    p["mark"].as_str().map(String::from),
                )
            })
            .collect()
    };
    for (i, d) in shown.iter().enumerate() {
        let doc = i as u64;
        assert_eq!(d["doc_id"], doc);
        assert_eq!(d["rank"], i + 1);
        close(&d["score"], ((doc + 1) as f64).powi(-2));
        assert_eq!(d["source"], source(doc).as_str());
        let text: String = pieces(d)
            .iter()
            .filter(|p| p.0 != "…")
            .map(|p| p.0.as_str())
            .collect();
        assert!(texts[doc as usize].contains(&text), "{text:?}");
    }
    // A run whose first document holds the answer (and the intermediate answer): its excerpt
    // marks each occurrence, in report.md and in report.html.
    let d_a = (0..n)
        .find(|&d| has(d, &answer) && has(d, &inter))
        .or_else(|| (0..n).find(|&d| has(d, &answer)))
        .unwrap();
    let run_a = t.join("run-answer");
    write_run(
        &run_a,
        &queries[..1],
        &[(0, d_a, 1.0), (0, (d_a + 1) % n, 0.5)],
    );
    let out_a = t.join("report-answer");
    report_of(&run_a, &out_a, &["--docs", "1"]).success();
    let ra: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_a.join("summary.json")).unwrap()).unwrap();
    let shown = ra["queries"][0]["documents"].as_array().unwrap();
    assert_eq!(shown.len(), 1);
    let p = pieces(&shown[0]);
    let window: String = p
        .iter()
        .filter(|x| x.0 != "…")
        .map(|x| x.0.as_str())
        .collect();
    assert!(texts[d_a as usize].contains(&window));
    // Every occurrence of the answer in the excerpt is a marked piece, and only those.
    let marked: Vec<&str> = p
        .iter()
        .filter(|x| x.1.as_deref() == Some("answer"))
        .map(|x| x.0.as_str())
        .collect();
    assert!(!marked.is_empty());
    assert!(marked.iter().all(|m| *m == answer));
    assert_eq!(marked.len(), window.matches(answer.as_str()).count());
    let md = std::fs::read_to_string(out_a.join("report.md")).unwrap();
    assert!(md.contains("## Top documents"), "{md}");
    assert!(md.contains(&format!("⟦{answer}⟧")), "{md}");
    let html = std::fs::read_to_string(out_a.join("report.html")).unwrap();
    assert!(
        html.contains(&format!("<mark class=\"answer\">{answer}</mark>")),
        "{html}"
    );

    // A run written before queries had a `metadata` column is still read, and reads the same.
    let qpath = top_run.join("queries.parquet");
    let file = std::fs::File::open(&qpath).unwrap();
    let batches: Vec<arrow_array::RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
    let keep: Vec<usize> = (0..batches[0].num_columns())
        .filter(|&i| batches[0].schema().field(i).name() != "metadata")
        .collect();
    let old: Vec<_> = batches.iter().map(|b| b.project(&keep).unwrap()).collect();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&qpath).unwrap(),
        old[0].schema(),
        None,
    )
    .unwrap();
    for b in &old {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    let out3 = t.join("report3");
    report_of(&top_run, &out3, &[]).success();
    assert_eq!(
        std::fs::read(out3.join("summary.json")).unwrap(),
        std::fs::read(out2.join("summary.json")).unwrap()
    );

    // Bad inputs: a document the index lacks; a table of the wrong kind; no run at all.
    let bad = t.join("bad");
    write_run(&bad, &queries[..1], &[(0, n + 5, 1.0)]);
    let report = |run: &Path| report_of(run, &t.join("r-bad"), &[]);
    report(&bad)
        .failure()
        .stderr_has(&["names document", "not the index the store was built from"]);
    std::fs::copy(bad.join("queries.parquet"), bad.join("influence.parquet")).unwrap();
    report(&bad).failure().stderr_has(&[
        "influence.parquet",
        "expected the influence table",
        "doc_id",
    ]);
    report(&t.join("nothing-here"))
        .failure()
        .stderr_has(&["queries.parquet"]);
    assert!(!t.join("r-bad").join("report.md").exists());
}

/// `attribute eval`: resumable, refuses other settings, and its LDS equals the Spearman
/// correlation, recomputed here, of each query's summed `attribute score --all` scores over each
/// subset with the log-probabilities measured by models retrained on those subsets (one of them
/// retrained again here).
#[test]
fn eval_lds_is_recomputable_from_scores_and_retrained_models() {
    use familiar_models::attribute::eval::subset_members;
    let t = TestDir::new();
    let idx = index(&t);
    let model = t.join("model");
    let train_args = [
        "--steps",
        "4",
        "--layers",
        "1",
        "--hidden",
        "16",
        "--heads",
        "2",
        "--context",
        "16",
        "--batch",
        "4",
        "--warmup",
        "1",
    ];
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "train".as_ref(),
        "--index".as_ref(),
        idx.as_os_str(),
        "--out".as_ref(),
        model.as_os_str(),
        "-q".as_ref(),
    ];
    args.extend(train_args.iter().map(std::ffi::OsStr::new));
    familiar(args).success();
    let s = t.join("store");
    store_of(&model, &idx, &s, "2", &[]).success();
    // The optimizer state kept for resuming training is not part of the model's identity.
    let hash = familiar_models::grads::store::model_hash(&model).unwrap();
    std::fs::remove_file(model.join("optimizer.safetensors")).unwrap();
    assert_eq!(
        familiar_models::grads::store::model_hash(&model).unwrap(),
        hash
    );
    let queries = t.write(
        "q.jsonl",
        concat!(
            "{\"id\": \"f1\", \"prompt\": \"An rohi an ve\", \"completion\": \" tian\", \"kind\": \"factual\", \"task\": \"a\"}\n",
            "{\"id\": \"f2\", \"prompt\": \"Es ve lido\", \"completion\": \" ost ve\", \"kind\": \"factual\", \"task\": \"a\"}\n",
            "{\"id\": \"r1\", \"prompt\": \"Oxazyn oxazam ve\", \"completion\": \" ve\", \"kind\": \"reasoning\", \"task\": \"b\"}\n",
        ),
    );
    let out = t.join("eval");
    let eval_into = |out: &Path, extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "attribute".as_ref(),
            "eval".as_ref(),
            "--store".as_ref(),
            s.as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
            "--index".as_ref(),
            idx.as_os_str(),
            "--queries".as_ref(),
            queries.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--subsets".as_ref(),
            "4".as_ref(),
            "--seed".as_ref(),
            "3".as_ref(),
            "-q".as_ref(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        familiar(args)
    };
    let eval = |extra: &[&str]| eval_into(&out, extra);
    eval(&["--stop-after", "2"])
        .success()
        .stdout_has(&["2 of 4 subsets measured", "at least 3"]);
    let first = std::fs::read(out.join("subsets/subset-0001.json")).unwrap();
    eval(&["--fraction", "0.4"])
        .failure()
        .stderr_has(&["other settings"]);
    eval(&[])
        .success()
        .stdout_has(&["4 of 4 subsets measured", "LDS fisher"]);
    assert_eq!(
        std::fs::read(out.join("subsets/subset-0001.json")).unwrap(),
        first
    );
    assert!(!out.join("models").exists(), "measured models are removed");

    let index = Index::open(&idx).unwrap();
    let n = index.documents();
    let lds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("lds.json")).unwrap()).unwrap();
    let subsets: Vec<serde_json::Value> = (0..4)
        .map(|m| {
            serde_json::from_slice(
                &std::fs::read(out.join(format!("subsets/subset-{m:04}.json"))).unwrap(),
            )
            .unwrap()
        })
        .collect();
    // One subset model retrained here measures the same log-probabilities.
    let state: familiar_models::train::TrainerState =
        serde_json::from_slice(&std::fs::read(model.join("trainer_state.json")).unwrap()).unwrap();
    let keep = subset_members(n, 0.5, 3, 2);
    assert_eq!(keep.iter().filter(|&&k| k).count() as u64, n.div_ceil(2));
    let again = t.join("again");
    familiar_models::train::train_on(
        &index,
        Some(&keep),
        &again,
        &state.options,
        None,
        &|_| {},
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let lm = LanguageModel::load(&again).unwrap();
    for (i, (p, c)) in [("An rohi an ve", " tian"), ("Es ve lido", " ost ve")]
        .iter()
        .enumerate()
    {
        let want = subsets[2]["logprobs"][i].as_f64().unwrap();
        let got = lm.score(p, c).unwrap().logprob;
        assert!((want - got).abs() < 1e-5, "{want} vs {got}");
    }
    // LDS from the scores of every document.
    let names = lds_names(&lds);
    assert_eq!(
        names,
        [
            "identity",
            "cosine",
            "fisher",
            "trackstar",
            "fisher-loo",
            "trackstar-loo",
            "ekfac",
            "ekfac-loo"
        ]
    );
    for (j, precondition) in ["identity", "cosine", "fisher", "trackstar-loo", "ekfac-loo"]
        .iter()
        .map(|p| (names.iter().position(|n| n == p).unwrap(), p))
    {
        let att = t.join(format!("all-{precondition}"));
        let mut args = vec!["--all", "--precondition", precondition];
        if let Some(p) = precondition.strip_suffix("-loo") {
            args = vec!["--all", "--precondition", p, "--leave-one-out"];
        }
        attribute_score(&s, &model, &queries, &att, &args).success();
        let b = read_parquet(&att.join("influence.parquet"), "influence");
        let ids = col::<StringArray>(&b, "query_id");
        let docs = col::<UInt64Array>(&b, "doc_id");
        let scores = col::<Float64Array>(&b, "score");
        for (qi, q) in ["f1", "f2", "r1"].iter().enumerate() {
            let mut predicted = vec![0.0; 4];
            for i in 0..b.num_rows() {
                if ids.value(i) != *q {
                    continue;
                }
                for (m, p) in predicted.iter_mut().enumerate() {
                    if subset_members(n, 0.5, 3, m)[docs.value(i) as usize] {
                        *p += scores.value(i);
                    }
                }
            }
            let actual: Vec<f64> = subsets
                .iter()
                .map(|r| r["logprobs"][qi].as_f64().unwrap())
                .collect();
            let want = familiar::stats::spearman(&predicted, &actual).unwrap_or(0.0);
            let got = lds["lds"][j]["per_query"][qi].as_f64().unwrap();
            assert!(
                (want - got).abs() < 1e-9,
                "{precondition} {q}: {want} vs {got}"
            );
        }
    }
    // A directory holding something else is refused.
    let foreign = t.mkdir("foreign");
    t.write("foreign/notes.txt", "mine");
    eval_into(&foreign, &[])
        .failure()
        .stderr_has(&["not empty"]);

    // A store whose head is projected wide (2 × 2049 values) keeps no second moments: the
    // preconditioners that need them are left out, with a note, and the others are measured.
    let wide = t.join("store-wide");
    store_of(&model, &idx, &wide, "2", &["--head-rank", "2049"]).success();
    let wide_out = t.join("eval-wide");
    let args: Vec<&std::ffi::OsStr> = vec![
        "attribute".as_ref(),
        "eval".as_ref(),
        "--store".as_ref(),
        wide.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--index".as_ref(),
        idx.as_os_str(),
        "--queries".as_ref(),
        queries.as_os_str(),
        "--out".as_ref(),
        wide_out.as_os_str(),
        "--subsets".as_ref(),
        "3".as_ref(),
    ];
    let o = familiar(args);
    o.success()
        .stdout_has(&["3 of 3 subsets measured", "LDS identity", "LDS ekfac"])
        .stderr_has(&[
            "keeps no second moments",
            "fisher and trackstar are left out",
        ]);
    assert!(!o.stdout.contains("LDS fisher") && !o.stdout.contains("LDS trackstar"));
    let lds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(wide_out.join("lds.json")).unwrap()).unwrap();
    let names = lds_names(&lds);
    assert_eq!(names, ["identity", "cosine", "ekfac", "ekfac-loo"]);
}

//! Projected per-example gradients against the explicit full gradient of candle's autograd,
//! multiplied by the projections; batches against single examples.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use familiar_models::grads::fast::FastGradients;
use familiar_models::grads::{
    projected_gradients, Example, HeadFactor, Projection, ProjectionSpec,
};
use familiar_models::model::transformer::{log_softmax_last, LoadOptions, HEAD};
use familiar_models::model::{Capture, LinearGroup, Transformer};

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/reference")
}

fn load(name: &str, dtype: DType, trainable: bool) -> Transformer {
    let options = LoadOptions {
        device: Device::Cpu,
        dtype,
        trainable,
    };
    Transformer::load_with(&reference().join(name), &options).unwrap()
}

fn examples() -> Vec<Example> {
    vec![
        Example {
            ids: vec![5, 17, 3, 44, 9, 60, 2, 71, 8, 1],
            first_target: 0,
        },
        Example {
            ids: vec![8, 1, 1, 30, 7],
            first_target: 3,
        },
        Example {
            ids: vec![12, 90, 4, 4, 33, 2, 61],
            first_target: 1,
        },
    ]
}

/// The summed negative log-likelihood of `e`'s target tokens under `logits` (`[1, tokens, vocab]`).
fn summed_nll(logits: &Tensor, e: &Example) -> Tensor {
    let lp = log_softmax_last(logits).unwrap();
    let terms: Vec<Tensor> = (e.first_target.max(1)..e.ids.len())
        .map(|j| {
            lp.narrow(1, j - 1, 1)
                .unwrap()
                .narrow(2, e.ids[j] as usize, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
        })
        .collect();
    Tensor::cat(&terms, 0)
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap()
}

/// Each of `spec`'s layers' full weight gradient `G` (`[in, out]`) of `e`'s summed loss from
/// autograd, and the loss. The output head's `G` is the gradient of a separate copy of its weight
/// that computes the logits from the final hidden state (for tied models, the gradient of the
/// weight's use as the head only).
fn full_gradients(model: &Transformer, spec: &ProjectionSpec, e: &Example) -> (Vec<Tensor>, f64) {
    let out = model
        .forward(std::slice::from_ref(&e.ids), Capture::default())
        .unwrap();
    let head = Var::from_tensor(&match &model.lm_head {
        Some(w) => w.clone(),
        None => model.embed.t().unwrap().contiguous().unwrap(),
    })
    .unwrap();
    let (_, t, h) = out.last_hidden.dims3().unwrap();
    let logits = out
        .last_hidden
        .reshape((t, h))
        .unwrap()
        .matmul(head.as_tensor())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let loss = summed_nll(&logits, e);
    let grads = loss.backward().unwrap();
    let layers = model.linear_layers();
    let g = spec
        .layers
        .iter()
        .map(|l| {
            if l.name == HEAD {
                grads.get(head.as_tensor()).unwrap().clone()
            } else {
                let layer = layers.iter().find(|x| x.name == l.name).unwrap();
                grads.get(&layer.weight).unwrap().clone() // [in, out]
            }
        })
        .collect();
    (g, loss.to_scalar::<f64>().unwrap())
}

/// `P_out Gᵀ P_inᵀ` of each layer's gradient `G` (`[in, out]`) with `matrices` (`P_inᵀ`,
/// `P_outᵀ` per layer), concatenated.
fn project(spec: &ProjectionSpec, matrices: &[(Vec<f32>, Vec<f32>)], g: &[Tensor]) -> Vec<f64> {
    let mut row = Vec::new();
    for ((l, (p_in, p_out)), g) in spec.layers.iter().zip(matrices).zip(g) {
        let p_in = Tensor::from_vec(p_in.clone(), (l.input, spec.rank_in), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let p_out = Tensor::from_vec(p_out.clone(), (l.output, spec.rank_out), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        // (P_inᵀᵀ G P_outᵀ)ᵀ = P_out Gᵀ P_inᵀ, [rank_out, rank_in].
        let m = p_in
            .t()
            .unwrap()
            .matmul(&g.to_dtype(DType::F64).unwrap())
            .unwrap()
            .matmul(&p_out)
            .unwrap()
            .t()
            .unwrap();
        row.extend(m.flatten_all().unwrap().to_vec1::<f64>().unwrap());
    }
    row
}

/// The explicit projected full gradient of one example: `P_out Gᵀ P_inᵀ` for each layer's weight
/// gradient `G` from autograd, with `projection`'s matrices as applied.
fn explicit(model: &Transformer, projection: &Projection, e: &Example) -> (Vec<f64>, f64) {
    let (g, loss) = full_gradients(model, &projection.spec, e);
    (
        project(&projection.spec, projection.host_matrices(), &g),
        loss,
    )
}

fn relative_error(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    assert!(den > 0.0);
    num / den
}

#[test]
fn projected_gradients_equal_projected_full_gradients() {
    for name in [
        "gpt2",
        "pythia",
        "neox-sequential",
        "llama-gqa",
        "llama-tied",
    ] {
        let oracle = load(name, DType::F64, true);
        // A head factor that weighs every vocabulary entry differently.
        let vocab = oracle.config.vocab_size;
        let factor = HeadFactor {
            sums: (0..vocab).map(|v| ((v * 37) % 11) as f64 + 0.5).collect(),
            tokens: 3,
        };
        for (group, ranks) in [
            (LinearGroup::All, (4, 3)),
            (LinearGroup::Blocks, (3, 4)),
            (LinearGroup::Mlp, (2, 5)),
            (LinearGroup::Attention, (3, 3)),
            (LinearGroup::Output, (5, 2)),
        ] {
            let spec = ProjectionSpec::new(&oracle, group, ranks.0, ranks.1, 7).unwrap();
            let head = spec.has_head().then_some(&factor);
            let exact = Projection::new(spec.clone(), &oracle, head).unwrap();
            for dtype in [DType::F64, DType::F32] {
                let model = load(name, dtype, false);
                let projection = Projection::new(spec.clone(), &model, head).unwrap();
                let batch = projected_gradients(&model, &projection, &examples()).unwrap();
                let fast = FastGradients::new(&model, &projection)
                    .unwrap()
                    .compute(&examples())
                    .unwrap();
                let dim = spec.dim();
                assert_eq!(batch.rows.len(), 3 * dim);
                for (k, e) in examples().iter().enumerate() {
                    let (want, loss) = explicit(&oracle, &exact, e);
                    let got = &batch.rows[k * dim..(k + 1) * dim];
                    let err = relative_error(got, &want);
                    let tol = if dtype == DType::F64 { 1e-6 } else { 1e-5 };
                    assert!(err <= tol, "{name} {group:?} {dtype:?} example {k}: {err}");
                    assert!((batch.losses[k] - loss).abs() <= 1e-4 * loss.abs());
                    // The autograd-free path gives the same rows and losses.
                    let err = relative_error(&fast.rows[k * dim..(k + 1) * dim], &want);
                    assert!(
                        err <= 1e-5,
                        "{name} {group:?} {dtype:?} fast, example {k}: {err}"
                    );
                    assert!((fast.losses[k] - loss).abs() <= 1e-5 * loss.abs());
                    // One example alone gives its row of the batch.
                    let single =
                        projected_gradients(&model, &projection, std::slice::from_ref(e)).unwrap();
                    let err = relative_error(
                        &single.rows,
                        &got.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                    );
                    assert!(err <= 1e-5, "{name} batch vs single: {err}");
                }
            }
        }
    }
}

#[test]
fn projections_are_reproducible_and_checked_against_the_model() {
    let m = load("gpt2", DType::F32, false);
    let a = ProjectionSpec::new(&m, LinearGroup::All, 4, 4, 1).unwrap();
    let b = ProjectionSpec::new(&m, LinearGroup::All, 4, 4, 1).unwrap();
    assert_eq!(a.matrices(), b.matrices());
    let c = ProjectionSpec::new(&m, LinearGroup::All, 4, 4, 2).unwrap();
    assert_ne!(a.matrices(), c.matrices());
    // Two blocks of four linear layers, then the output head.
    assert_eq!(a.layers.len(), 2 * 4 + 1);
    assert!(a.has_head() && a.layers[8].name == HEAD);
    assert_eq!((a.layers[8].input, a.layers[8].output), (32, 97));
    let blocks = ProjectionSpec::new(&m, LinearGroup::Blocks, 4, 4, 1).unwrap();
    assert_eq!(blocks.layers, a.layers[..8]);
    assert!(!blocks.has_head() && blocks.head_whitening.is_none());
    let factor = HeadFactor {
        sums: (0..97).map(|v| v as f64).collect(),
        tokens: 10,
    };
    // A projection made for another model is refused; ranks beyond a layer's size are refused;
    // the head needs its factor, of the model's vocabulary, and only the head takes one.
    let llama = load("llama-gqa", DType::F32, false);
    assert!(Projection::new(a.clone(), &llama, Some(&factor)).is_err());
    let err = ProjectionSpec::new(&m, LinearGroup::All, 100_000, 4, 1).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    let err = Projection::new(a.clone(), &m, None).unwrap_err();
    assert!(err.to_string().contains("factor"), "{err}");
    let short = HeadFactor {
        sums: vec![1.0; 96],
        tokens: 1,
    };
    assert!(Projection::new(a.clone(), &m, Some(&short)).is_err());
    assert!(Projection::new(blocks.clone(), &m, Some(&factor)).is_err());
    assert!(Projection::new(blocks, &m, None).is_ok());
    // No targets: zero rows, no error.
    let p = Projection::new(a, &m, Some(&factor)).unwrap();
    let g = projected_gradients(
        &m,
        &p,
        &[Example {
            ids: vec![3],
            first_target: 0,
        }],
    )
    .unwrap();
    assert!(g.rows.iter().all(|&x| x == 0.0));
}

#[test]
fn head_whitening_weighs_rare_tokens_up_and_keeps_the_expected_norm() {
    // D = sums / tokens: token 0 never predicted, then rarer to more frequent.
    let f = HeadFactor {
        sums: vec![0.0, 1.0, 4.0, 16.0, 64.0],
        tokens: 4,
    };
    let damping = 1e-3;
    let w = f.weights(damping);
    assert!(w.windows(2).all(|p| p[0] > p[1]), "{w:?}");
    let d: Vec<f64> = f.sums.iter().map(|s| s / 4.0).collect();
    let kept: f64 = w.iter().zip(&d).map(|(w, d)| (*w as f64).powi(2) * d).sum();
    let total: f64 = d.iter().sum();
    assert!((kept - total).abs() <= 1e-5 * total, "{kept} vs {total}");
    // Hand-computed: w_v ∝ (D_v + damping · mean D)^{-1/2}.
    let floor = damping * total / 5.0;
    let raw: Vec<f64> = d.iter().map(|d| 1.0 / (d + floor).sqrt()).collect();
    for v in 1..5 {
        let want = raw[v] / raw[4];
        let got = w[v] as f64 / w[4] as f64;
        assert!((got - want).abs() <= 1e-5 * want, "{v}: {got} vs {want}");
    }
    // Nothing fitted: no whitening.
    assert_eq!(HeadFactor::zero(3).weights(damping), vec![1.0; 3]);
}

#[test]
fn head_factor_sums_squared_output_gradients() {
    let m = load("gpt2", DType::F64, false);
    let ex = examples();
    let f = HeadFactor::of_examples(&m, &ex, 2).unwrap();
    assert_eq!(f.tokens, ex.iter().map(|e| e.targets() as u64).sum::<u64>());
    // Brute force from the logits: Σ_t Σ_v (p_t[v] − [y_t = v])².
    let mut want = vec![0.0f64; m.config.vocab_size];
    for e in &ex {
        let out = m
            .forward(std::slice::from_ref(&e.ids), Capture::default())
            .unwrap();
        let p = log_softmax_last(&out.logits)
            .unwrap()
            .exp()
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for j in e.first_target.max(1)..e.ids.len() {
            for (v, w) in want.iter_mut().enumerate() {
                let y = if v == e.ids[j] as usize { 1.0 } else { 0.0 };
                *w += (p[j - 1][v] - y).powi(2);
            }
        }
    }
    for (v, (a, b)) in f.sums.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b.max(1e-3), "{v}: {a} vs {b}");
    }
    // The autograd-free forward pass the store fits it with sums the same, for every family.
    for name in ["gpt2", "pythia", "llama-gqa"] {
        let m = load(name, DType::F32, false);
        let want = HeadFactor::of_examples(&m, &ex, 3).unwrap();
        let spec = ProjectionSpec::new(&m, LinearGroup::Blocks, 2, 2, 1).unwrap();
        let fast = FastGradients::new(&m, &Projection::new(spec, &m, None).unwrap()).unwrap();
        let (got, losses) = fast.head_factor(&ex).unwrap();
        assert_eq!(got.tokens, want.tokens, "{name}");
        let top = want.sums.iter().fold(0.0f64, |a, b| a.max(*b));
        for (v, (a, b)) in got.sums.iter().zip(&want.sums).enumerate() {
            assert!((a - b).abs() <= 1e-5 * top, "{name} {v}: {a} vs {b}");
        }
        assert_eq!(losses, fast.compute(&ex).unwrap().losses, "{name}");
    }
    // Summing in parts is the same as at once.
    let mut parts = HeadFactor::of_examples(&m, &ex[..1], 1).unwrap();
    parts.merge(&HeadFactor::of_examples(&m, &ex[1..], 5).unwrap());
    assert_eq!(parts.tokens, f.tokens);
    assert!(parts
        .sums
        .iter()
        .zip(&f.sums)
        .all(|(a, b)| (a - b).abs() <= 1e-12));
}

/// Per layer of `projection`, the projected inputs `a_t = P_in x_t` (`tokens × rank_in`) and
/// output gradients `s_t = P_out δ_t` (`tokens × rank_out`) of every token of `e`, from candle's
/// autograd (`δ_t` the gradient of the summed loss at the layer's output), rounded to f32 as the
/// store's arithmetic sees them.
fn per_token(
    model: &Transformer,
    projection: &Projection,
    e: &Example,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let spec = &projection.spec;
    let out = model
        .forward(
            std::slice::from_ref(&e.ids),
            Capture {
                linear: Some(projection.group()),
                ..Capture::default()
            },
        )
        .unwrap();
    let grads = summed_nll(&out.logits, e).backward().unwrap();
    let t = e.ids.len();
    let times = |m: &Tensor, p: &[f32], r: usize| -> Vec<f32> {
        let m = m.squeeze(0).unwrap().to_vec2::<f64>().unwrap();
        let mut out = vec![0.0f32; t * r];
        for (k, row) in m.iter().enumerate() {
            for c in 0..r {
                let v: f64 = row
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x * p[i * r + c] as f64)
                    .sum();
                out[k * r + c] = v as f32;
            }
        }
        out
    };
    out.linear
        .iter()
        .zip(projection.host_matrices())
        .enumerate()
        .map(|(l, (c, (p_in, p_out)))| {
            let delta = match grads.get(c.probe.as_tensor()) {
                Some(d) => d.clone(),
                None => c.probe.as_tensor().zeros_like().unwrap(),
            };
            let (ri, ro) = spec.ranks(l);
            (times(&c.input, p_in, ri), times(&delta, p_out, ro))
        })
        .collect()
}

/// Solves `m x = b` (`n × n`, row-major) by Gaussian elimination with partial pivoting.
fn solve_dense(mut m: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i * n + col].abs().total_cmp(&m[j * n + col].abs()))
            .unwrap();
        for k in 0..n {
            m.swap(col * n + k, pivot * n + k);
        }
        b.swap(col, pivot);
        for r in col + 1..n {
            let f = m[r * n + col] / m[col * n + col];
            for k in col..n {
                m[r * n + k] -= f * m[col * n + k];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| m[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / m[r * n + r];
    }
    x
}

/// EK-FAC against a dense reference built by its definition: per layer the explicit Kronecker
/// factors `A = (1/T) Σ a aᵀ`, `S = (1/T) Σ s sᵀ` of autograd's per-token projected vectors,
/// their eigenbases, the explicit `(rank_in·rank_out)²` basis `Q_A ⊗ Q_S`, the corrected
/// eigenvalues `Λ = (1/N) Σ_d (Kᵀ vec G_d)²`, the full matrix `K diag(Λ + λ) Kᵀ`, and a dense
/// solve for the query — the scores agree to 1e-6. The autograd-free path sums the same factors.
/// One case projects the output head's vocabulary side to its own rank (layers of unequal
/// blocks).
#[test]
fn ekfac_equals_a_dense_kronecker_reference() {
    use familiar_models::grads::ekfac::{Ekfac, KronSums};
    use familiar_models::grads::linalg::symmetric_eigen;
    let mut rng = familiar::rng::SplitMix64::new(31);
    for (name, group, (ri, ro), head_rank) in [
        ("gpt2", LinearGroup::All, (3, 4), None),
        ("llama-gqa", LinearGroup::Blocks, (4, 3), None),
        ("pythia", LinearGroup::Mlp, (2, 2), None),
        ("llama-tied", LinearGroup::All, (2, 3), Some(7)),
    ] {
        let model = load(name, DType::F64, false);
        let vocab = model.config.vocab_size;
        let mut spec = ProjectionSpec::new(&model, group, ri, ro, 5).unwrap();
        if let Some(r) = head_rank {
            spec = spec.with_head_rank(r).unwrap();
            assert_eq!(spec.ranks(spec.layers.len() - 1), (ri, r));
        }
        let ranks = spec.all_ranks();
        let at = spec.offsets();
        let factor = HeadFactor {
            sums: (0..vocab).map(|v| ((v * 13) % 7) as f64 + 0.25).collect(),
            tokens: 2,
        };
        let head = spec.has_head().then_some(&factor);
        let projection = Projection::new(spec.clone(), &model, head).unwrap();
        // Documents as the store sees them (every token after the first predicted), of random
        // lengths; a query whose prompt is not predicted.
        let docs: Vec<Example> = (0..9)
            .map(|_| {
                let len = 3 + (rng.unit() * 9.0) as usize;
                Example {
                    ids: (0..len)
                        .map(|_| (rng.unit() * vocab as f64) as u32)
                        .collect(),
                    first_target: 1,
                }
            })
            .collect();
        let query = examples()[1].clone();
        let layers = spec.layers.len();
        // G = Σ_t s_t a_tᵀ per layer, from per-token vectors.
        let gradient = |tok: &[(Vec<f32>, Vec<f32>)]| -> Vec<f32> {
            let mut row = Vec::with_capacity(spec.dim());
            for (l, (a, s)) in tok.iter().enumerate() {
                let (ri, ro) = ranks[l];
                let t = a.len() / ri;
                for o in 0..ro {
                    for i in 0..ri {
                        let v: f64 = (0..t)
                            .map(|k| s[k * ro + o] as f64 * a[k * ri + i] as f64)
                            .sum();
                        row.push(v as f32);
                    }
                }
            }
            row
        };
        let tokens: Vec<Vec<(Vec<f32>, Vec<f32>)>> = docs
            .iter()
            .map(|d| per_token(&model, &projection, d))
            .collect();
        let rows: Vec<Vec<f32>> = tokens.iter().map(|t| gradient(t)).collect();
        let q = gradient(&per_token(&model, &projection, &query));

        // The library, fed the same per-token vectors.
        let mut sums = KronSums::zero(&ranks);
        for (d, tok) in docs.iter().zip(&tokens) {
            sums.count(d.ids.len());
            for (l, (a, s)) in tok.iter().enumerate() {
                sums.add(l, a, s, d.ids.len());
            }
        }
        let fit = Ekfac::fit(&sums, &rows);
        let damping = 0.1;
        let p = fit.precondition(&q, &fit.lambdas(damping));
        let got: Vec<f64> = rows
            .iter()
            .map(|g| p.iter().zip(g).map(|(x, y)| *x as f64 * *y as f64).sum())
            .collect();

        // The dense reference.
        let n_tokens: usize = docs.iter().map(|d| d.ids.len()).sum();
        let mut want = vec![0.0f64; docs.len()];
        for l in 0..layers {
            let (ri, ro) = ranks[l];
            let block = at[l]..at[l + 1];
            // Side 0: the inputs (`a`), 1: the output gradients (`s`).
            let cov = |side: usize, r: usize| {
                let mut m = vec![0.0f64; r * r];
                for tok in &tokens {
                    let v = if side == 0 { &tok[l].0 } else { &tok[l].1 };
                    for row in v.chunks_exact(r) {
                        for i in 0..r {
                            for j in 0..r {
                                m[i * r + j] += row[i] as f64 * row[j] as f64 / n_tokens as f64;
                            }
                        }
                    }
                }
                m
            };
            let qa = symmetric_eigen(&cov(0, ri), ri).vectors;
            let qs = symmetric_eigen(&cov(1, ro), ro).vectors;
            let n = ri * ro;
            // K[(o, i), (k, j)] = Q_S[o, k] Q_A[i, j]: vec G = K vec R.
            let mut kron = vec![0.0f64; n * n];
            for o in 0..ro {
                for i in 0..ri {
                    for k in 0..ro {
                        for j in 0..ri {
                            kron[(o * ri + i) * n + k * ri + j] = qs[o * ro + k] * qa[i * ri + j];
                        }
                    }
                }
            }
            let mut lambda = vec![0.0f64; n];
            for g in &rows {
                let g = &g[block.clone()];
                for (c, lc) in lambda.iter_mut().enumerate() {
                    let r: f64 = (0..n).map(|r| kron[r * n + c] * g[r] as f64).sum();
                    *lc += r * r / docs.len() as f64;
                }
            }
            let damp = damping * lambda.iter().sum::<f64>() / n as f64;
            let mut dense = vec![0.0f64; n * n];
            for r in 0..n {
                for c in 0..n {
                    dense[r * n + c] = (0..n)
                        .map(|k| kron[r * n + k] * (lambda[k] + damp) * kron[c * n + k])
                        .sum();
                }
            }
            let ql: Vec<f64> = q[block.clone()].iter().map(|&x| x as f64).collect();
            let x = solve_dense(dense, ql, n);
            for (w, g) in want.iter_mut().zip(&rows) {
                *w += x
                    .iter()
                    .zip(&g[block.clone()])
                    .map(|(x, g)| x * *g as f64)
                    .sum::<f64>();
            }
        }
        let scale = want.iter().map(|w| w.abs()).fold(0.0, f64::max);
        assert!(scale > 0.0, "{name}: every reference score is zero");
        for (d, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * scale,
                "{name} {group:?} document {d}: {g} vs dense {w}"
            );
        }

        // The autograd-free path sums the same factors (in f32 arithmetic).
        let model32 = load(name, DType::F32, false);
        let projection32 = Projection::new(spec.clone(), &model32, head).unwrap();
        let fast = FastGradients::new(&model32, &projection32).unwrap();
        let mut fast_sums = KronSums::zero(&ranks);
        for (d, row) in docs.iter().zip(&rows) {
            let g = fast
                .compute_factored(std::slice::from_ref(d), &mut fast_sums)
                .unwrap();
            assert_eq!(g.rows.len(), spec.dim());
            let want: Vec<f64> = row.iter().map(|&x| f64::from(x)).collect();
            let err = relative_error(&g.rows, &want);
            assert!(err <= 1e-4, "{name} fast row vs autograd's tokens: {err}");
        }
        assert_eq!(fast_sums.tokens, n_tokens as u64);
        for (l, (a, b)) in fast_sums.inputs.iter().zip(&sums.inputs).enumerate() {
            let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            let err = relative_error(&b32, a);
            assert!(err <= 1e-5, "{name} layer {l} input factor: {err}");
        }
        for (l, (a, b)) in fast_sums.outputs.iter().zip(&sums.outputs).enumerate() {
            let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            let err = relative_error(&b32, a);
            assert!(err <= 1e-5, "{name} layer {l} output factor: {err}");
        }
    }
}

/// The factor files read back what was written; a truncated file, a wrong shape or a non-finite
/// value is refused naming the file; the fit over a row file equals the fit over the rows.
#[test]
fn ekfac_files_round_trip_and_refuse_damage() {
    use familiar_models::grads::ekfac::{Ekfac, KronSums};
    use familiar_models::grads::store::{RowFile, RowWriter, StoreDtype};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = familiar::rng::SplitMix64::new(8);
    // Layers of unequal ranks, as with a wide output head.
    let ranks = [(2, 3), (2, 3), (2, 5)];
    let mut sums = KronSums::zero(&ranks);
    for (l, &(ri, ro)) in ranks.iter().enumerate() {
        let a = rng.normals(7 * ri, 1.0);
        let s = rng.normals(7 * ro, 1.0);
        sums.add(l, &a, &s, 7);
    }
    sums.count(7);
    let path = dir.path().join("kron-00000.bin");
    sums.write(&path).unwrap();
    assert_eq!(KronSums::read(&path, &ranks).unwrap(), sums);
    assert!(KronSums::read(&path, &[(2, 3); 3]).is_err());
    let dim: usize = ranks.iter().map(|(ri, ro)| ri * ro).sum();
    let rows: Vec<Vec<f32>> = (0..20).map(|_| rng.normals(dim, 1.0)).collect();
    let fit = Ekfac::fit(&sums, &rows);
    assert_eq!(fit.rows, 20);
    let epath = dir.path().join("ekfac.bin");
    fit.write(&epath).unwrap();
    assert_eq!(Ekfac::read(&epath, &ranks, 20).unwrap(), fit);
    let err = Ekfac::read(&epath, &ranks, 21).unwrap_err();
    assert!(err.to_string().contains("ekfac.bin"), "{err}");
    // Truncated.
    let bytes = std::fs::read(&epath).unwrap();
    std::fs::write(&epath, &bytes[..bytes.len() - 8]).unwrap();
    let err = Ekfac::read(&epath, &ranks, 20).unwrap_err();
    assert!(err.to_string().contains("ekfac.bin"), "{err}");
    // A NaN among the values (the header's checksum covers the header only).
    let mut bad = bytes.clone();
    let at = bad.len() - 8;
    bad[at..].copy_from_slice(&f64::NAN.to_le_bytes());
    std::fs::write(&epath, &bad).unwrap();
    let err = Ekfac::read(&epath, &ranks, 20).unwrap_err();
    assert!(err.to_string().contains("finite"), "{err}");
    // The fit over a store's row file.
    let rpath = dir.path().join("grads-00000.bin");
    let mut w = RowWriter::create(&rpath, StoreDtype::F32, dim, 20, 0).unwrap();
    rows.iter().for_each(|r| w.push(r).unwrap());
    w.finish().unwrap();
    let file = RowFile::open(&rpath, dim, StoreDtype::F32, 0, 20).unwrap();
    let seen = std::sync::atomic::AtomicU64::new(0);
    let from_file = Ekfac::fit_files(&sums, &[file], dim, &|n| {
        seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(from_file, fit);
    assert_eq!(seen.into_inner(), 20);
    // The preconditioner is symmetric: ⟨P(x), y⟩ = ⟨x, P(y)⟩, and positive.
    let lambdas = fit.lambdas(0.1);
    let (x, y) = (&rows[0], &rows[1]);
    let dot =
        |a: &[f32], b: &[f32]| -> f64 { a.iter().zip(b).map(|(a, b)| *a as f64 * *b as f64).sum() };
    let (pxy, xpy) = (
        dot(&fit.precondition(x, &lambdas), y),
        dot(x, &fit.precondition(y, &lambdas)),
    );
    assert!(
        (pxy - xpy).abs() <= 1e-5 * pxy.abs().max(1e-3),
        "{pxy} vs {xpy}"
    );
    assert!(dot(&fit.precondition(x, &lambdas), x) > 0.0);
}

/// Token-level contributions: each token's `Σ_l s_tᵀ V_l a_t` equals the same sum over
/// autograd's per-token vectors, and an example's contributions add up to its row's dot product
/// with the vector.
#[test]
fn token_contributions_split_the_dot_product_by_token() {
    let mut rng = familiar::rng::SplitMix64::new(12);
    for (name, group) in [
        ("gpt2", LinearGroup::All),
        ("llama-gqa", LinearGroup::Blocks),
    ] {
        let model64 = load(name, DType::F64, false);
        let model = load(name, DType::F32, false);
        let vocab = model.config.vocab_size;
        let mut spec = ProjectionSpec::new(&model, group, 3, 4, 2).unwrap();
        if spec.has_head() {
            // The head's vocabulary side at its own rank: blocks of unequal sizes.
            spec = spec.with_head_rank(6).unwrap();
        }
        let factor = HeadFactor {
            sums: (0..vocab).map(|v| (v % 5) as f64 + 0.5).collect(),
            tokens: 1,
        };
        let head = spec.has_head().then_some(&factor);
        let projection = Projection::new(spec.clone(), &model, head).unwrap();
        let projection64 = Projection::new(spec.clone(), &model64, head).unwrap();
        let fast = FastGradients::new(&model, &projection).unwrap();
        let vectors: Vec<Vec<f32>> = (0..2).map(|_| rng.normals(spec.dim(), 1.0)).collect();
        let ex = examples();
        let (g, contributions) = fast.token_contributions(&ex, &vectors).unwrap();
        assert_eq!(g, fast.compute(&ex).unwrap());
        let dim = spec.dim();
        let offsets = spec.offsets();
        for (vi, v) in vectors.iter().enumerate() {
            let c = &contributions[vi];
            assert_eq!(c.len(), ex.iter().map(|e| e.ids.len()).sum::<usize>());
            let mut at = 0;
            for (k, e) in ex.iter().enumerate() {
                let t = e.ids.len();
                let mine = &c[at..at + t];
                let dot: f64 = g.rows[k * dim..(k + 1) * dim]
                    .iter()
                    .zip(v)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let sum: f64 = mine.iter().sum();
                let scale: f64 = mine.iter().map(|x| x.abs()).sum::<f64>().max(1e-12);
                assert!(
                    (sum - dot).abs() <= 1e-5 * scale,
                    "{name} {k}: {sum} vs {dot}"
                );
                // Against autograd's per-token vectors.
                let tok = per_token(&model64, &projection64, e);
                for (j, got) in mine.iter().enumerate() {
                    let mut want = 0.0f64;
                    for (l, (a, s)) in tok.iter().enumerate() {
                        let (ri, ro) = spec.ranks(l);
                        for o in 0..ro {
                            for i in 0..ri {
                                want += s[j * ro + o] as f64
                                    * v[offsets[l] + o * ri + i] as f64
                                    * a[j * ri + i] as f64;
                            }
                        }
                    }
                    assert!(
                        (got - want).abs() <= 1e-4 * scale,
                        "{name} example {k} token {j}: {got} vs {want}"
                    );
                }
                at += t;
            }
        }
    }
}

/// TrackStar's optimizer correction: the rows of a corrected projection equal the explicit full
/// gradients divided entry by entry by the square root of Adafactor's factored second moment
/// `V̂[i,o] = r_i c_o / m` (computed here from each variable's `exp_avg_sq` by its definition),
/// projected with the uncorrected matrices — for tied and untied output heads, and the head's
/// moment read from the variable it is stored under.
#[test]
fn optimizer_correction_divides_the_full_gradient_by_the_factored_moment() {
    use familiar_models::grads::optimizer::{
        OptimizerCorrection, OptimizerScales, FLOOR, OPTIMIZER_FILE, SCALES_VERSION,
    };
    let dir = tempfile::tempdir().unwrap();
    // (model, the variable the head's moment is kept under, stored as [vocab, hidden]).
    for (name, head_var, head_transposed) in [
        ("gpt2", "transformer.wte.weight", true),
        ("pythia", "embed_out.weight", false),
        ("llama-gqa", "lm_head.weight", false),
        ("llama-tied", "model.embed_tokens.weight", true),
    ] {
        let oracle = load(name, DType::F64, true);
        // A second moment of every variable, in its own layout, as `familiar train` saves them:
        // positive, varying by entry and far from rank one.
        let mut rng = familiar::rng::SplitMix64::new(5);
        let mut moments = std::collections::HashMap::new();
        for (n, v) in &oracle.vars {
            let t = v.as_tensor();
            let values: Vec<f64> = rng
                .normals(t.elem_count(), 1.0)
                .iter()
                .map(|x| (*x as f64).powi(2) + 0.01)
                .collect();
            let m = Tensor::from_vec(values, t.dims(), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            moments.insert(format!("{n}.exp_avg_sq"), m);
        }
        let path = dir.path().join(format!("{name}-{OPTIMIZER_FILE}"));
        candle_core::safetensors::save(&moments, &path).unwrap();
        let mut spec = ProjectionSpec::new(&oracle, LinearGroup::All, 3, 4, 11).unwrap();
        spec.head_whitening = None;
        spec.optimizer = Some(OptimizerCorrection {
            file: OPTIMIZER_FILE.to_string(),
            checksum: String::new(),
            floor: FLOOR,
            version: SCALES_VERSION,
        });
        let scales = OptimizerScales::from_state(&path, &spec, FLOOR).unwrap();
        // Each layer's V̂ by definition, from the moment of its weight ([in, out]).
        let factored: Vec<Tensor> = spec
            .layers
            .iter()
            .map(|l| {
                let (key, transposed) = if l.name == HEAD {
                    (format!("{head_var}.exp_avg_sq"), head_transposed)
                } else {
                    (format!("{}.weight.exp_avg_sq", l.name), false)
                };
                let v = moments[&key].to_dtype(DType::F64).unwrap();
                let v = if transposed { v.t().unwrap() } else { v };
                let v: Vec<Vec<f64>> = v.to_vec2().unwrap();
                assert_eq!(
                    (v.len(), v[0].len()),
                    (l.input, l.output),
                    "{name} {}",
                    l.name
                );
                let m = v.iter().flatten().sum::<f64>() / (l.input * l.output) as f64;
                let r: Vec<f64> = v
                    .iter()
                    .map(|row| row.iter().sum::<f64>() / l.output as f64)
                    .collect();
                let c: Vec<f64> = (0..l.output)
                    .map(|o| v.iter().map(|row| row[o]).sum::<f64>() / l.input as f64)
                    .collect();
                let hat: Vec<f64> = (0..l.input)
                    .flat_map(|i| {
                        let (r, c) = (&r, &c);
                        (0..l.output).map(move |o| r[i].max(FLOOR * m) * c[o].max(FLOOR * m) / m)
                    })
                    .collect();
                Tensor::from_vec(hat, (l.input, l.output), &Device::Cpu).unwrap()
            })
            .collect();
        let plain = spec.matrices();
        for dtype in [DType::F64, DType::F32] {
            let model = load(name, dtype, false);
            let projection =
                Projection::corrected(spec.clone(), &model, None, Some(&scales)).unwrap();
            let batch = projected_gradients(&model, &projection, &examples()).unwrap();
            let fast = FastGradients::new(&model, &projection)
                .unwrap()
                .compute(&examples())
                .unwrap();
            let dim = spec.dim();
            for (k, e) in examples().iter().enumerate() {
                let (g, _) = full_gradients(&oracle, &spec, e);
                let corrected: Vec<Tensor> = g
                    .iter()
                    .zip(&factored)
                    .map(|(g, hat)| g.div(&hat.sqrt().unwrap()).unwrap())
                    .collect();
                let want = project(&spec, &plain, &corrected);
                let tol = if dtype == DType::F64 { 1e-6 } else { 1e-5 };
                let err = relative_error(&batch.rows[k * dim..(k + 1) * dim], &want);
                assert!(err <= tol, "{name} {dtype:?} example {k}: {err}");
                let err = relative_error(&fast.rows[k * dim..(k + 1) * dim], &want);
                assert!(err <= 1e-5, "{name} {dtype:?} fast, example {k}: {err}");
                // The correction changes the rows: the uncorrected ones are far from them.
                let uncorrected = project(&spec, &plain, &g);
                let err = relative_error(
                    &uncorrected.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                    &want,
                );
                assert!(err > 0.1, "{name}: the correction changed nothing ({err})");
            }
        }
        // A projection with the correction needs its scales, and one without refuses them.
        let model = load(name, DType::F32, false);
        assert!(Projection::corrected(spec.clone(), &model, None, None).is_err());
        let mut without = spec.clone();
        without.optimizer = None;
        assert!(Projection::corrected(without, &model, None, Some(&scales)).is_err());
    }
}

/// Adafactor's factored moment is exact for a rank-one moment, floored where a mean vanishes,
/// and the scales' file round-trips and refuses damage; an optimizer state without a layer's
/// moment, with a misshapen or a negative one, is an error naming the file and the tensor.
#[test]
fn optimizer_scales_are_exact_for_rank_one_moments_and_checked() {
    use familiar_models::grads::optimizer::{factored_scales, OptimizerScales, FLOOR};
    let (input, output) = (5, 7);
    let a: Vec<f64> = (0..input).map(|i| 0.5 + i as f64).collect();
    let b: Vec<f64> = (0..output).map(|o| 2.0 / (1.0 + o as f64)).collect();
    let v: Vec<f64> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| x * y))
        .collect();
    let (s_in, s_out) = factored_scales(&v, input, output, FLOOR);
    for i in 0..input {
        for o in 0..output {
            let want = 1.0 / v[i * output + o].sqrt();
            let got = s_in[i] * s_out[o];
            assert!(
                (got - want).abs() <= 1e-12 * want,
                "{i} {o}: {got} vs {want}"
            );
        }
    }
    // A row the optimizer never moved is floored, not infinite; an all-zero moment scales by 1.
    let mut zero_row = v.clone();
    zero_row[..output].iter_mut().for_each(|x| *x = 0.0);
    let (s_in, _) = factored_scales(&zero_row, input, output, FLOOR);
    assert!(s_in.iter().all(|s| s.is_finite() && *s > 0.0));
    let (s_in, s_out) = factored_scales(&vec![0.0; input * output], input, output, FLOOR);
    assert!(s_in.iter().chain(&s_out).all(|s| *s == 1.0));

    let dir = tempfile::tempdir().unwrap();
    let model = load("gpt2", DType::F32, true);
    let spec = ProjectionSpec::new(&model, LinearGroup::Attention, 2, 2, 1).unwrap();
    let save = |f: &dyn Fn(&str, &Tensor) -> Option<Tensor>| {
        let mut map = std::collections::HashMap::new();
        for (n, var) in &model.vars {
            let t = var.as_tensor().ones_like().unwrap();
            if let Some(t) = f(n, &t) {
                map.insert(format!("{n}.exp_avg_sq"), t);
            }
        }
        let path = dir.path().join("optimizer.safetensors");
        candle_core::safetensors::save(&map, &path).unwrap();
        path
    };
    let first = &spec.layers[0].name;
    let path = save(&|_, t| Some((t * 4.0).unwrap()));
    let scales = OptimizerScales::from_state(&path, &spec, FLOOR).unwrap();
    // A constant moment v = 4 scales every gradient entry by 1/√v = 1/2.
    for (a, b) in &scales.layers {
        for x in a {
            for y in b {
                assert!((x * y - 0.5).abs() < 1e-12, "{x} × {y}");
            }
        }
    }
    let spath = dir.path().join("optimizer-scales.bin");
    scales.write(&spath).unwrap();
    assert_eq!(OptimizerScales::read(&spath, &spec).unwrap(), scales);
    let bytes = std::fs::read(&spath).unwrap();
    std::fs::write(&spath, &bytes[..bytes.len() - 8]).unwrap();
    let err = OptimizerScales::read(&spath, &spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("optimizer-scales.bin"), "{err}");
    let mut bad = bytes.clone();
    let at = bad.len() - 8;
    bad[at..].copy_from_slice(&(-1.0f64).to_le_bytes());
    std::fs::write(&spath, &bad).unwrap();
    let err = OptimizerScales::read(&spath, &spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("positive scale"), "{err}");
    let other = ProjectionSpec::new(&model, LinearGroup::Mlp, 2, 2, 1).unwrap();
    std::fs::write(&spath, &bytes).unwrap();
    assert!(OptimizerScales::read(&spath, &other).is_err());

    let missing = save(&|n, t| (!n.starts_with(first.as_str())).then(|| t.clone()));
    let err = OptimizerScales::from_state(&missing, &spec, FLOOR)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("optimizer.safetensors")
            && err.contains(&format!("{first}.weight.exp_avg_sq")),
        "{err}"
    );
    let misshapen = save(&|n, t| {
        Some(if n.starts_with(first.as_str()) && n.ends_with("weight") {
            t.narrow(0, 0, 1).unwrap()
        } else {
            t.clone()
        })
    });
    let err = OptimizerScales::from_state(&misshapen, &spec, FLOOR)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inputs and"), "{err}");
    let negative = save(&|n, t| {
        Some(if n.starts_with(first.as_str()) {
            t.neg().unwrap()
        } else {
            t.clone()
        })
    });
    let err = OptimizerScales::from_state(&negative, &spec, FLOOR)
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-negative"), "{err}");
}

/// An f16 row file refuses a value beyond f16's range (it would be stored as infinity), naming
/// the row, and keeps the values within it.
#[test]
fn f16_rows_refuse_values_beyond_its_range() {
    use familiar_models::grads::store::{RowFile, RowWriter, StoreDtype};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grads-00000.bin");
    let mut w = RowWriter::create(&path, StoreDtype::F16, 3, 2, 0).unwrap();
    w.push(&[1.0, -65504.0, 0.5]).unwrap();
    let err = w.push(&[1.0, 7.0e4, 0.0]).unwrap_err().to_string();
    assert!(err.contains("row 1") && err.contains("f32"), "{err}");
    w.push(&[2.0, 3.0, -4.0]).unwrap();
    w.finish().unwrap();
    let f = RowFile::open(&path, 3, StoreDtype::F16, 0, 2).unwrap();
    let mut row = vec![0.0f32; 3];
    f.row(0, &mut row);
    assert_eq!(row, [1.0, -65504.0, 0.5]);
}

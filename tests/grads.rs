//! Projected per-example gradients against the explicit full gradient of candle's autograd,
//! multiplied by the projections; batches against single examples.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use familiar::grads::fast::FastGradients;
use familiar::grads::{projected_gradients, Example, Projection, ProjectionSpec};
use familiar::model::transformer::{log_softmax_last, LoadOptions};
use familiar::model::{Capture, LinearGroup, Transformer};

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/reference")
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

/// The explicit projected full gradient of one example: `P_out Gᵀ P_inᵀ` for each layer's weight
/// gradient `G` (`[in, out]`) from autograd.
fn explicit(model: &Transformer, spec: &ProjectionSpec, e: &Example) -> (Vec<f64>, f64) {
    let out = model
        .forward(std::slice::from_ref(&e.ids), Capture::default())
        .unwrap();
    let lp = log_softmax_last(&out.logits).unwrap();
    let mut terms = Vec::new();
    for j in e.first_target.max(1)..e.ids.len() {
        terms.push(
            lp.narrow(1, j - 1, 1)
                .unwrap()
                .narrow(2, e.ids[j] as usize, 1)
                .unwrap()
                .flatten_all()
                .unwrap(),
        );
    }
    let loss = Tensor::cat(&terms, 0)
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap();
    let grads = loss.backward().unwrap();
    let layers = model.linear_layers();
    let mut row = Vec::new();
    for (l, (p_in, p_out)) in spec.layers.iter().zip(spec.matrices()) {
        let layer = layers.iter().find(|x| x.name == l.name).unwrap();
        let g = grads.get(&layer.weight).unwrap(); // [in, out]
        let p_in = Tensor::from_vec(p_in, (l.input, spec.rank_in), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let p_out = Tensor::from_vec(p_out, (l.output, spec.rank_out), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        // (P_inᵀᵀ G P_outᵀ)ᵀ = P_out Gᵀ P_inᵀ, [rank_out, rank_in].
        let m = p_in
            .t()
            .unwrap()
            .matmul(g)
            .unwrap()
            .matmul(&p_out)
            .unwrap()
            .t()
            .unwrap();
        row.extend(m.flatten_all().unwrap().to_vec1::<f64>().unwrap());
    }
    (row, loss.to_scalar::<f64>().unwrap())
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
        for (group, ranks) in [
            (LinearGroup::All, (4, 3)),
            (LinearGroup::Mlp, (2, 5)),
            (LinearGroup::Attention, (3, 3)),
        ] {
            let spec = ProjectionSpec::new(&oracle, group, ranks.0, ranks.1, 7).unwrap();
            for dtype in [DType::F64, DType::F32] {
                let model = load(name, dtype, false);
                let projection = Projection::new(spec.clone(), &model).unwrap();
                let batch = projected_gradients(&model, &projection, &examples()).unwrap();
                let fast = FastGradients::new(&model, &projection)
                    .unwrap()
                    .compute(&examples())
                    .unwrap();
                let dim = spec.dim();
                assert_eq!(batch.rows.len(), 3 * dim);
                for (k, e) in examples().iter().enumerate() {
                    let (want, loss) = explicit(&oracle, &spec, e);
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
    assert_eq!(a.layers.len(), 2 * 4);
    // A projection made for another model is refused; ranks beyond a layer's size are refused.
    let llama = load("llama-gqa", DType::F32, false);
    assert!(Projection::new(a.clone(), &llama).is_err());
    let err = ProjectionSpec::new(&m, LinearGroup::All, 100_000, 4, 1).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    // No targets: zero rows, no error.
    let p = Projection::new(a, &m).unwrap();
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

//! TrackStar's optimizer correction (Chang et al. 2024, "Scalable Influence and Fact Tracing for
//! Large Language Model Pretraining"): every gradient divided elementwise by the square root of
//! the optimizer's second moment `v` (Adam's `exp_avg_sq`) before it is projected, so that the
//! directions the optimizer moves slowly in do not dominate the inner products.
//!
//! A projection never forms a layer's full gradient `G = Σ_t x_tᵀ δ_t` (`[in, out]`), so `v` is
//! factored as Adafactor does (Shazeer & Stern 2018), as bergson does for TrackStar:
//! `V̂[i,o] = r_i c_o / m`, with `r_i` the mean of `v` over the outputs of input `i`, `c_o` its
//! mean over the inputs of output `o` and `m` its overall mean (Adafactor's rank-one
//! approximation, exact for a rank-one `v`). Then `G[i,o] / √V̂[i,o] = s_in[i] · G[i,o] · s_out[o]`
//! with `s_in = r^{-1/2}` and `s_out = √m · c^{-1/2}`: scaling each layer's inputs `x_t` by
//! `s_in` and output gradients `δ_t` by `s_out` corrects the gradient exactly under the factored
//! `v`, and folds into the projections (`P_in diag(s_in)`, `P_out diag(s_out)`). Means are floored
//! at [`FLOOR`] of `m` (a coordinate the optimizer never moved would otherwise be scaled by
//! infinity).
//!
//! `familiar train` saves its AdamW moments in `optimizer.safetensors` beside the model, each
//! variable's `{name}.exp_avg_sq` in the layout of the model's variable (`[in, out]` for linear
//! layers, `[vocab, hidden]` for the embeddings a tied output head shares). The output head's
//! moment is `lm_head.weight`'s or `embed_out.weight`'s (`[hidden, vocab]`), else that of the
//! input embeddings it is tied to (`[vocab, hidden]`, transposed).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ProjectionSpec;
use crate::error::{Error, Result};
use crate::model::transformer::HEAD;
use familiar::format::{FileKind, Header};

/// The file `familiar train` keeps the optimizer's moments in, beside the model.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The file name of a store's optimizer scales.
pub const SCALES_FILE: &str = "optimizer-scales.bin";

/// Means of the second moment below this fraction of the overall mean count as this fraction.
pub const FLOOR: f64 = 1e-8;

/// What a store's gradients were corrected with (recorded in its projection spec: rows corrected
/// otherwise are not comparable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerCorrection {
    /// The optimizer state's file name in the model directory.
    pub file: String,
    /// Its checksum.
    pub checksum: String,
    /// [`FLOOR`] as applied.
    pub floor: f64,
    /// How the scales follow from the moments ([`SCALES_VERSION`]; stores written before it was
    /// recorded read as version 1, the same computation). A store resumed or read by a familiar
    /// that computes them otherwise is refused as another store instead of mixing rows.
    #[serde(default = "first_version")]
    pub version: u32,
}

/// The version of [`factored_scales`]' computation that new stores record.
pub const SCALES_VERSION: u32 = 1;

fn first_version() -> u32 {
    1
}

/// Per projected layer, the scales of its inputs (`in` values) and of its output gradients (`out`
/// values).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerScales {
    /// `(s_in, s_out)` per layer of the spec, in its order.
    pub layers: Vec<(Vec<f64>, Vec<f64>)>,
}

/// Adafactor's factored scales of one layer's second moment `v` (`[input, output]`, row-major):
/// `s_in[i] = (r_i ∨ floor·m)^{-1/2}`, `s_out[o] = √m (c_o ∨ floor·m)^{-1/2}` (see the module
/// documentation). All ones for an all-zero `v`.
pub fn factored_scales(v: &[f64], input: usize, output: usize, floor: f64) -> (Vec<f64>, Vec<f64>) {
    let mut rows = vec![0.0f64; input];
    let mut cols = vec![0.0f64; output];
    for (i, r) in v.chunks_exact(output).enumerate() {
        for (o, &x) in r.iter().enumerate() {
            rows[i] += x;
            cols[o] += x;
        }
    }
    rows.iter_mut().for_each(|r| *r /= output as f64);
    cols.iter_mut().for_each(|c| *c /= input as f64);
    let m = rows.iter().sum::<f64>() / input as f64;
    if m <= 0.0 {
        return (vec![1.0; input], vec![1.0; output]);
    }
    let low = floor * m;
    (
        rows.iter().map(|r| 1.0 / r.max(low).sqrt()).collect(),
        cols.iter().map(|c| m.sqrt() / c.max(low).sqrt()).collect(),
    )
}

/// The tensors whose second moment may correct layer `name`, in the order they are tried, each
/// with whether it is stored `[out, in]` (the embeddings a tied head shares: `[vocab, hidden]`)
/// rather than as the layer's `[in, out]` variable.
fn moment_names(name: &str) -> Vec<(String, bool)> {
    if name == HEAD {
        [
            ("lm_head.weight", false),
            ("embed_out.weight", false),
            ("transformer.wte.weight", true),
            ("model.embed_tokens.weight", true),
            ("gpt_neox.embed_in.weight", true),
        ]
        .iter()
        .map(|(n, t)| (format!("{n}.exp_avg_sq"), *t))
        .collect()
    } else {
        vec![(format!("{name}.weight.exp_avg_sq"), false)]
    }
}

impl OptimizerScales {
    /// The scales of `spec`'s layers from the optimizer state at `path`; an error names the file
    /// and the tensor that is missing, misshapen or not finite and non-negative.
    pub fn from_state(path: &Path, spec: &ProjectionSpec, floor: f64) -> Result<OptimizerScales> {
        // SAFETY: as for the model's weights (`Weights::open`): a read-only input the caller must
        // not truncate while it loads; only the moments needed are copied out (not `exp_avg`).
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
            .map_err(|e| Error::corrupt(path, format!("optimizer state: {e}")))?;
        let present: std::collections::HashSet<String> =
            st.tensors().into_iter().map(|(n, _)| n).collect();
        let mut layers = Vec::with_capacity(spec.layers.len());
        for l in &spec.layers {
            let names = moment_names(&l.name);
            let Some((key, transpose)) = names
                .iter()
                .find(|(n, _)| present.contains(n))
                .map(|(n, t)| (n.as_str(), *t))
            else {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "no second moment of layer {} (expected the tensor `{}`)",
                        l.name,
                        names
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join("` or `")
                    ),
                ));
            };
            let t = st
                .load(key, &candle_core::Device::Cpu)
                .map_err(|e| Error::corrupt(path, format!("`{key}`: {e}")))?;
            let dims = t.dims().to_vec();
            let want = if transpose {
                [l.output, l.input]
            } else {
                [l.input, l.output]
            };
            if dims != want {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "`{key}` is {dims:?}, expected {want:?}: layer {} has {} inputs and {} \
                         outputs",
                        l.name, l.input, l.output
                    ),
                ));
            }
            let t = if transpose {
                t.t().and_then(|t| t.contiguous())
            } else {
                Ok(t)
            };
            let v = t
                .and_then(|t| t.to_dtype(candle_core::DType::F64))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .map_err(|e| Error::corrupt(path, format!("`{key}`: {e}")))?;
            if let Some(i) = v.iter().position(|x| !x.is_finite() || *x < 0.0) {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "`{key}` holds {} at entry {i}: a second moment is finite and non-negative",
                        v[i]
                    ),
                ));
            }
            layers.push(factored_scales(&v, l.input, l.output, floor));
        }
        Ok(OptimizerScales { layers })
    }

    /// Values of the scales file of `spec`: every layer's inputs and outputs.
    pub fn file_values(spec: &ProjectionSpec) -> usize {
        spec.layers.iter().map(|l| l.input + l.output).sum()
    }

    /// Writes the scales (`OPTS` header: width 64, count = Σ (in + out), `aux0` = layers) to a
    /// temporary file renamed into place.
    pub fn write(&self, path: &Path) -> Result<()> {
        let count: usize = self.layers.iter().map(|(a, b)| a.len() + b.len()).sum();
        let mut bytes = Header::new(
            FileKind::OptimizerScales,
            64,
            count as u64,
            self.layers.len() as u64,
            0,
        )
        .to_bytes()
        .to_vec();
        for (a, b) in &self.layers {
            for v in a.iter().chain(b) {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(familiar::manifest::write_atomic(path, &bytes)?)
    }

    /// Reads the scales of `spec`'s layers.
    pub fn read(path: &Path, spec: &ProjectionSpec) -> Result<OptimizerScales> {
        let count = OptimizerScales::file_values(spec);
        let (_, values) = super::ekfac::read_values(
            path,
            FileKind::OptimizerScales,
            count as u64,
            (spec.layers.len() as u64, "layers"),
        )?;
        if let Some(i) = values.iter().position(|v| !v.is_finite() || *v <= 0.0) {
            return Err(Error::corrupt(
                path,
                format!(
                    "value {i} is {}: expected a finite positive scale",
                    values[i]
                ),
            ));
        }
        let mut rest = values.as_slice();
        let layers = spec
            .layers
            .iter()
            .map(|l| {
                let (a, r) = rest.split_at(l.input);
                let (b, r) = r.split_at(l.output);
                rest = r;
                (a.to_vec(), b.to_vec())
            })
            .collect();
        Ok(OptimizerScales { layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store written before the version was recorded reads as version 1 (the same
    /// computation), and a new one records the current version.
    #[test]
    fn corrections_without_a_version_read_as_the_first() {
        let old: OptimizerCorrection = serde_json::from_str(
            r#"{"file": "optimizer.safetensors", "checksum": "x", "floor": 1e-8}"#,
        )
        .unwrap();
        assert_eq!(old.version, 1);
        let new = OptimizerCorrection {
            version: SCALES_VERSION,
            ..old.clone()
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains("\"version\":"), "{json}");
        assert_eq!(
            serde_json::from_str::<OptimizerCorrection>(&json).unwrap(),
            new
        );
        let later = OptimizerCorrection {
            version: SCALES_VERSION + 1,
            ..old
        };
        assert_ne!(later, new, "another computation is another store");
    }
}

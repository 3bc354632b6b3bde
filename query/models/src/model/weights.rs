//! Checkpoint tensors: `model.safetensors`, or the shards listed by `model.safetensors.index.json`
//! (every listed file inside the model directory), memory-mapped; each tensor checked against the
//! shape the configuration implies and converted to f32 (from f16, bf16 or f64) as it is loaded,
//! in one pass that also refuses NaN and infinite values, naming the tensor and its file.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::finite::{self, Float};
use crate::error::{Error, Result};
use familiar::error::IoContext;

/// The tensors of one checkpoint.
pub struct Weights {
    dir: PathBuf,
    files: Vec<PathBuf>,
    /// One mapping per file of `files`.
    tensors: Vec<MmapedSafetensors>,
    /// Tensor name → its file (the last file that holds it, as candle's multi-file loader).
    routing: HashMap<String, usize>,
    names: BTreeSet<String>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("dir", &self.dir)
            .field("files", &self.files)
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl Weights {
    /// Opens the safetensors of a model directory.
    pub fn open(dir: &Path) -> Result<Weights> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).at(&index)?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::corrupt(&index, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::corrupt(&index, "no `weight_map` object"))?;
            let mut shards = BTreeSet::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    Error::corrupt(&index, format!("`weight_map.{name}` is not a file name"))
                })?;
                inside(file).map_err(|why| {
                    Error::corrupt(
                        &index,
                        format!(
                            "`weight_map.{name}` names `{file}`, {why}: refused, shards must lie \
                             in the model directory"
                        ),
                    )
                })?;
                shards.insert(file.to_string());
            }
            shards.into_iter().map(|f| dir.join(f)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .at(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::io(
                    dir,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no model.safetensors, model.safetensors.index.json or *.safetensors here",
                    ),
                ));
            }
            found
        };
        for f in &files {
            if !f.exists() {
                return Err(Error::io(
                    f,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "listed in model.safetensors.index.json but missing",
                    ),
                ));
            }
        }
        let mut tensors = Vec::with_capacity(files.len());
        let mut routing = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            // SAFETY: checkpoints are read-only inputs; the caller must not truncate them while
            // the model is loading (the tensors are copied out as they load).
            let st = unsafe { MmapedSafetensors::new(f) }
                .map_err(|e| Error::corrupt(f, format!("not a valid safetensors file: {e}")))?;
            for (name, _) in st.tensors() {
                routing.insert(name, i);
            }
            tensors.push(st);
        }
        let names = routing.keys().cloned().collect();
        Ok(Weights {
            dir: dir.to_path_buf(),
            files,
            tensors,
            routing,
            names,
        })
    }

    /// Whether the checkpoint holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Values stored in every tensor together.
    pub fn parameters(&self) -> u64 {
        self.tensors
            .iter()
            .flat_map(|st| st.tensors())
            .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
            .sum()
    }

    /// Names of every tensor.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Tensor `name`, which must have `shape`, as `dtype` (f32 or f64) on `device`. Converted in
    /// one pass over the stored values, which must all be finite (the error names the tensor, its
    /// file and the first bad element).
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let Some(&i) = self.routing.get(name) else {
            return Err(Error::corrupt(
                &self.dir,
                format!("tensor `{name}` is missing from the checkpoint"),
            ));
        };
        let file = &self.files[i];
        let view = self.tensors[i]
            .get(name)
            .map_err(|e| Error::corrupt(file, format!("tensor `{name}`: {e}")))?;
        if view.shape() != shape {
            return Err(Error::corrupt(
                file,
                format!(
                    "tensor `{name}` has shape {:?}, but config.json implies {shape:?}",
                    view.shape()
                ),
            ));
        }
        let stored = match DType::try_from(view.dtype()) {
            Ok(d @ (DType::F32 | DType::F16 | DType::BF16 | DType::F64)) => d,
            _ => {
                return Err(Error::corrupt(
                    file,
                    format!(
                        "tensor `{name}` is {:?}; expected f32, f16, bf16 or f64",
                        view.dtype()
                    ),
                ))
            }
        };
        let data = view.data();
        if data.len() != shape.iter().product::<usize>() * stored.size_in_bytes() {
            return Err(Error::corrupt(
                file,
                format!(
                    "tensor `{name}` holds {} bytes, not {shape:?} values of {stored:?}",
                    data.len()
                ),
            ));
        }
        let non_finite = |bad: finite::NonFinite| {
            Error::corrupt(
                file,
                format!(
                    "tensor `{name}` holds {bad}{}",
                    if stored.size_in_bytes() > dtype.size_in_bytes() {
                        format!(" as {dtype:?}")
                    } else {
                        String::new()
                    }
                ),
            )
        };
        let bug = super::transformer::candle_error("loading a tensor");
        match dtype {
            DType::F32 => {
                let (v, all_finite) = decode(data, stored, |x| x as f32);
                match (!all_finite).then(|| finite::scan(&v)).flatten() {
                    Some(bad) => Err(non_finite(bad)),
                    None => Tensor::from_vec(v, shape, device).map_err(bug),
                }
            }
            DType::F64 => {
                let (v, all_finite) = decode(data, stored, |x| x);
                match (!all_finite).then(|| finite::scan(&v)).flatten() {
                    Some(bad) => Err(non_finite(bad)),
                    None => Tensor::from_vec(v, shape, device).map_err(bug),
                }
            }
            other => Err(Error::bug(format!(
                "tensors load as f32 or f64, not {other:?}"
            ))),
        }
    }
}

/// Why a file name from `model.safetensors.index.json` would leave the model directory: an
/// absolute path, or a `..` component (symbolic links inside the directory are followed, as the
/// Hugging Face cache links its snapshots' files to blobs outside them).
fn inside(file: &str) -> std::result::Result<(), &'static str> {
    if file.is_empty() {
        return Err("an empty path");
    }
    for c in Path::new(file).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("a path with a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    Ok(())
}

/// Little-endian `stored` values (f32, f16, bf16 or f64) widened to f64 and mapped by `to` (the
/// identity, or the cast to f32 — exactly candle's conversions); whether every result is finite,
/// found in the same pass. Blocks of values convert in parallel.
fn decode<T: Float + Default + Send>(
    bytes: &[u8],
    stored: DType,
    to: impl Fn(f64) -> T + Sync,
) -> (Vec<T>, bool) {
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 16;
    let width = stored.size_in_bytes();
    let mut out = vec![T::default(); bytes.len() / width];
    let block = |(out, bytes): (&mut [T], &[u8])| -> bool {
        let mut finite = true;
        let mut put = |o: &mut T, x: f64| {
            let x = to(x);
            finite &= x.finite();
            *o = x;
        };
        match stored {
            DType::F32 => out
                .iter_mut()
                .zip(bytes.chunks_exact(4))
                .for_each(|(o, c)| put(o, f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))),
            DType::F16 => out
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(o, c)| {
                    put(
                        o,
                        f64::from(half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
                    )
                }),
            DType::BF16 => out
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(o, c)| {
                    put(
                        o,
                        f64::from(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
                    )
                }),
            _ => out
                .iter_mut()
                .zip(bytes.chunks_exact(8))
                .for_each(|(o, c)| {
                    put(
                        o,
                        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                    )
                }),
        }
        finite
    };
    let finite = if out.len() <= BLOCK {
        block((&mut out, bytes))
    } else {
        out.par_chunks_mut(BLOCK)
            .zip(bytes.par_chunks(BLOCK * width))
            .map(block)
            .reduce(|| true, |a, b| a && b)
    };
    (out, finite)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn save(path: &Path, tensors: &[(&str, Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    fn values() -> Vec<f64> {
        vec![0.0, -1.5, 3.25e-3, 65504.0, -2.0e-7, 1.0 / 3.0]
    }

    #[test]
    fn conversions_equal_candles_and_refuse_non_finite_values() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = Device::Cpu;
        let base = Tensor::from_vec(values(), (2, 3), &cpu).unwrap();
        let mut tensors = Vec::new();
        for (name, dtype) in [
            ("a.f32", DType::F32),
            ("a.f16", DType::F16),
            ("a.bf16", DType::BF16),
            ("a.f64", DType::F64),
        ] {
            tensors.push((name, base.to_dtype(dtype).unwrap()));
        }
        let bad: Vec<half::f16> = [1.0, f32::NAN, 2.0, f32::INFINITY, f32::NAN, 0.0]
            .iter()
            .map(|&x| half::f16::from_f32(x))
            .collect();
        tensors.push(("bad.f16", Tensor::from_vec(bad, (2, 3), &cpu).unwrap()));
        // Finite in f64, infinite in f32.
        tensors.push((
            "big.f64",
            Tensor::from_vec(vec![1.0, 2.0, 1e300], 3, &cpu).unwrap(),
        ));
        // Large enough to convert in parallel blocks.
        let mut large: Vec<f32> = (0..200_000).map(|i| i as f32 * 0.5).collect();
        large[150_001] = f32::NAN;
        large[199_999] = f32::INFINITY;
        tensors.push(("large.f32", Tensor::from_vec(large, 200_000, &cpu).unwrap()));
        let ramp: Vec<half::bf16> = (0..200_000)
            .map(|i| half::bf16::from_f32(i as f32))
            .collect();
        tensors.push(("ramp.bf16", Tensor::from_vec(ramp, 200_000, &cpu).unwrap()));
        save(&dir.path().join("model.safetensors"), &tensors);
        let w = Weights::open(dir.path()).unwrap();
        for (name, t) in &tensors[..4] {
            for dtype in [DType::F32, DType::F64] {
                let got = w.get(name, &[2, 3], dtype, &cpu).unwrap();
                assert_eq!(got.dtype(), dtype);
                let want = t.to_dtype(dtype).unwrap();
                let (g, e): (Vec<f64>, Vec<f64>) = (
                    got.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                    want.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                );
                assert_eq!(
                    g.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    e.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{name} as {dtype:?}"
                );
            }
        }
        let e = w.get("bad.f16", &[2, 3], DType::F32, &cpu).unwrap_err();
        assert!(matches!(e, Error::Core(familiar::Error::Corrupt { .. })));
        let m = e.to_string();
        assert!(
            m.contains("model.safetensors: corrupt: tensor `bad.f16` holds 3 non-finite values (first at element 1: NaN)"),
            "{m}"
        );
        let m = w
            .get("big.f64", &[3], DType::F32, &cpu)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains(
                "tensor `big.f64` holds 1 non-finite value (first at element 2: inf) as F32"
            ),
            "{m}"
        );
        assert!(w.get("big.f64", &[3], DType::F64, &cpu).is_ok());
        let m = w
            .get("large.f32", &[200_000], DType::F32, &cpu)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains(
                "tensor `large.f32` holds 2 non-finite values (first at element 150001: NaN)"
            ),
            "{m}"
        );
        let ramp: Vec<f32> = w
            .get("ramp.bf16", &[200_000], DType::F32, &cpu)
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = (0..200_000)
            .map(|i| half::bf16::from_f32(i as f32).to_f32())
            .collect();
        assert!(ramp == want);
        let m = w
            .get("a.f32", &[3, 2], DType::F32, &cpu)
            .unwrap_err()
            .to_string();
        assert!(m.contains("tensor `a.f32` has shape [2, 3]"), "{m}");
    }

    #[test]
    fn shards_are_named_in_errors_and_must_lie_in_the_model_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = Device::Cpu;
        let ok = Tensor::from_vec(vec![1.0f32, 2.0], 2, &cpu).unwrap();
        let nan = Tensor::from_vec(vec![f32::NAN, 2.0], 2, &cpu).unwrap();
        save(
            &dir.path().join("model-1.safetensors"),
            &[("x", ok.clone())],
        );
        save(&dir.path().join("model-2.safetensors"), &[("y", nan)]);
        let index = dir.path().join("model.safetensors.index.json");
        let write_index = |map: serde_json::Value| {
            std::fs::write(
                &index,
                serde_json::to_vec(&serde_json::json!({ "weight_map": map })).unwrap(),
            )
            .unwrap();
        };
        write_index(serde_json::json!({"x": "model-1.safetensors", "y": "model-2.safetensors"}));
        let w = Weights::open(dir.path()).unwrap();
        assert_eq!(w.parameters(), 4);
        assert!(w.get("x", &[2], DType::F32, &cpu).is_ok());
        let m = w.get("y", &[2], DType::F32, &cpu).unwrap_err().to_string();
        assert!(
            m.contains("model-2.safetensors: corrupt: tensor `y` holds 1 non-finite value"),
            "{m}"
        );
        let m = w.get("z", &[2], DType::F32, &cpu).unwrap_err().to_string();
        assert!(m.contains("tensor `z` is missing"), "{m}");
        for (file, why) in [
            ("../model-1.safetensors", "a path with a `..` component"),
            ("a/../../b.safetensors", "a path with a `..` component"),
            ("/etc/hostname", "an absolute path"),
            ("", "an empty path"),
        ] {
            write_index(serde_json::json!({"x": "model-1.safetensors", "y": file}));
            let e = Weights::open(dir.path()).unwrap_err();
            let m = e.to_string();
            assert!(
                matches!(e, Error::Core(familiar::Error::Corrupt { .. })),
                "{m}"
            );
            assert!(
                m.contains("model.safetensors.index.json: corrupt: `weight_map.y` names")
                    && m.contains(&format!("`{file}`, {why}")),
                "{m}"
            );
        }
        // Inside the directory, through a subdirectory or `./`.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::copy(
            dir.path().join("model-1.safetensors"),
            dir.path().join("sub/m.safetensors"),
        )
        .unwrap();
        write_index(serde_json::json!({"x": "./sub/m.safetensors"}));
        assert!(Weights::open(dir.path()).is_ok());
    }
}

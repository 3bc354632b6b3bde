//! Checkpoint tensors: `model.safetensors`, or the shards listed by `model.safetensors.index.json`,
//! memory-mapped; each tensor checked against the shape the configuration implies and converted to
//! f32 (from f16, bf16 or f64) as it is loaded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, IoContext, Result};

/// The tensors of one checkpoint.
pub struct Weights {
    dir: PathBuf,
    files: Vec<PathBuf>,
    tensors: MmapedSafetensors,
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
        // SAFETY: checkpoints are read-only inputs; the caller must not truncate them while the
        // model is loading (the tensors are copied out as they load).
        let tensors = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| Error::corrupt(dir, format!("not a valid safetensors checkpoint: {e}")))?;
        let names = tensors.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(Weights {
            dir: dir.to_path_buf(),
            files,
            tensors,
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
            .tensors()
            .iter()
            .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
            .sum()
    }

    /// Names of every tensor.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Tensor `name`, which must have `shape`, as `dtype` (f32 or f64) on `device`.
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if !self.has(name) {
            return Err(Error::corrupt(
                &self.dir,
                format!("tensor `{name}` is missing from the checkpoint"),
            ));
        }
        let t = self
            .tensors
            .load(name, &Device::Cpu)
            .map_err(|e| Error::corrupt(&self.dir, format!("tensor `{name}`: {e}")))?;
        if t.dims() != shape {
            return Err(Error::corrupt(
                &self.dir,
                format!(
                    "tensor `{name}` has shape {:?}, but config.json implies {shape:?}",
                    t.dims()
                ),
            ));
        }
        if !matches!(
            t.dtype(),
            DType::F32 | DType::F16 | DType::BF16 | DType::F64
        ) {
            return Err(Error::corrupt(
                &self.dir,
                format!(
                    "tensor `{name}` is {:?}; expected f32, f16, bf16 or f64",
                    t.dtype()
                ),
            ));
        }
        t.to_dtype(dtype)
            .and_then(|t| t.to_device(device))
            .map_err(|e| Error::corrupt(&self.dir, format!("tensor `{name}`: {e}")))
    }
}

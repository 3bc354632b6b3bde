//! The gradient store: one projected gradient per training document, memory-mapped.
//!
//! ```text
//! STORE/store.json          manifest (written last: its presence means the store is complete)
//! STORE/plan.json           the settings, written first (a resumed build must match them)
//! STORE/grads-NNNNN.bin     rows of index shard NNNNN: `GRAD` header + documents × dim values
//! STORE/moments-NNNNN.bin   Σ g_l g_lᵀ over those rows, per layer block: `MOMS` header + f64
//! STORE/kron-NNNNN.bin      token sums of the projected inputs' and output gradients' outer
//!                           products, per layer (EK-FAC's Kronecker factors): `KRON` + f64
//! STORE/ekfac.bin           EK-FAC fitted over the whole store: `EKFC` + f64
//! STORE/head-factor.bin     the output head's factor, when the head is projected: `HFAC` + f64
//! STORE/optimizer-scales.bin the optimizer correction's scales of each layer's inputs and output
//!                           gradients, when the store corrects by them: `OPTS` + f64
//! ```
//!
//! A row file has the index format's 64-byte header (kind `GRAD`, element width 16 for f16 or 32
//! for f32, count = documents × dim, `aux0` = dim, `aux1` = the shard's first global document id),
//! then the rows in document order: row `i` belongs to global document `aux1 + i`. The manifest
//! records what makes rows comparable — the model's hash, the tokenizer, the projection (seed,
//! ranks, layers) — so that a query with another model or projection is refused.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::ekfac::{Ekfac, KronSums};
use super::optimizer::OptimizerScales;
use super::{HeadFactor, ProjectionSpec};
use crate::error::{Error, Result};
use familiar::error::IoContext;
use familiar::format::{FileKind, Header, HEADER_LEN};

/// Manifest format tag.
pub const FORMAT: &str = "familiar-gradient-store";
/// Manifest file name.
pub const MANIFEST: &str = "store.json";
/// Plan file name.
pub const PLAN: &str = familiar::rundir::PLAN_FILE;

/// How row values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// IEEE half precision (half the size; about 3 significant digits).
    F16,
    /// Single precision.
    #[default]
    F32,
}

impl StoreDtype {
    /// Bits per value.
    pub fn bits(self) -> u32 {
        match self {
            StoreDtype::F16 => 16,
            StoreDtype::F32 => 32,
        }
    }
}

/// The settings of a store: everything two compatible rows share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreSettings {
    /// `xxh3` of the model's config.json and safetensors files.
    pub model_hash: String,
    /// The index's tokenizer hash (the model's tokenizer.json must be the same file).
    pub tokenizer_hash: String,
    /// The projection.
    pub projection: ProjectionSpec,
    /// Storage type.
    pub dtype: StoreDtype,
    /// Tokens per chunk (the model's context): longer documents are split into chunks whose
    /// gradients are summed.
    pub context: usize,
    /// Token placed before each document so that its first token is predicted too (the model's
    /// BOS or EOS), if any.
    pub start_token: Option<u32>,
    /// Documents of the index.
    pub documents: u64,
    /// Tokens of the index.
    pub tokens: u64,
}

/// A shard's moments file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MomentsEntry {
    /// File name inside the store.
    pub file: String,
    /// `xxh3:` checksum of the file.
    pub checksum: String,
}

/// One row file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreShard {
    /// File name inside the store.
    pub file: String,
    /// Global id of its first document.
    pub first_doc: u64,
    /// Documents (rows).
    pub documents: u64,
    /// `xxh3:` checksum of the file.
    pub checksum: String,
    /// File size.
    pub bytes: u64,
    /// Its rows' moments (stores written before moments were kept have none: they are then
    /// computed from the rows when needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moments: Option<MomentsEntry>,
    /// Its documents' Kronecker-factor sums (stores written before EK-FAC have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kron: Option<MomentsEntry>,
}

/// `store.json` (and, without shards, `plan.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreManifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version.
    pub format_version: u32,
    /// The settings.
    pub settings: StoreSettings,
    /// Row files, in document order.
    pub shards: Vec<StoreShard>,
    /// The output head's factor (when the projection has the head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_factor: Option<MomentsEntry>,
    /// The fitted EK-FAC (stores written before EK-FAC have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ekfac: Option<MomentsEntry>,
    /// The optimizer correction's scales (when the projection has the correction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_scales: Option<MomentsEntry>,
}

impl StoreManifest {
    /// A manifest of `settings` with no shards yet.
    pub fn new(settings: StoreSettings) -> StoreManifest {
        StoreManifest {
            format: FORMAT.to_string(),
            format_version: familiar::format::FORMAT_VERSION,
            settings,
            shards: Vec::new(),
            head_factor: None,
            ekfac: None,
            optimizer_scales: None,
        }
    }
}

/// The file name of the output head's factor.
pub const HEAD_FACTOR: &str = "head-factor.bin";

impl HeadFactor {
    /// Writes the sums (`HFAC` header: width 64, count = vocabulary, `aux0` = 0, `aux1` =
    /// tokens) to a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut bytes = Header::new(
            FileKind::HeadFactor,
            64,
            self.sums.len() as u64,
            0,
            self.tokens,
        )
        .to_bytes()
        .to_vec();
        for v in &self.sums {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Ok(familiar::manifest::write_atomic(path, &bytes)?)
    }

    /// Reads a factor over a vocabulary of `vocab` entries.
    pub fn read(path: &Path, vocab: usize) -> Result<HeadFactor> {
        let bytes = std::fs::read(path).at(path)?;
        let h = Header::parse(&bytes, FileKind::HeadFactor, path)?;
        if h.width != 64 || h.count != vocab as u64 {
            return Err(Error::corrupt(
                path,
                format!(
                    "header says width {}, {} entries; the model has width 64, {vocab} entries",
                    h.width, h.count
                ),
            ));
        }
        let want = HEADER_LEN as u64 + 8 * vocab as u64;
        if bytes.len() as u64 != want {
            return Err(familiar::Error::Size {
                path: path.to_path_buf(),
                expected: want,
                actual: bytes.len() as u64,
            }
            .into());
        }
        let sums: Vec<f64> = bytes[HEADER_LEN..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if let Some(i) = sums.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(Error::corrupt(
                path,
                format!("entry {i} is {}: expected a finite sum of squares", sums[i]),
            ));
        }
        Ok(HeadFactor {
            sums,
            tokens: h.aux1,
        })
    }
}

/// The file name of the fitted EK-FAC.
pub const EKFAC: &str = "ekfac.bin";

/// The file name of shard `i`'s Kronecker-factor sums.
pub fn kron_file(i: usize) -> String {
    format!("kron-{i:05}.bin")
}

/// The file name of shard `i`'s moments.
pub fn moments_file(i: usize) -> String {
    format!("moments-{i:05}.bin")
}

/// The largest layer block whose second moment a store keeps: `block²` f64 values (128 MiB at
/// 4,096, the block of rank 64 × 64) per layer and shard. A store with a larger block (a wide
/// output-head rank) keeps none, and the preconditioners that invert a dense `block × block`
/// matrix (fisher, trackstar) refuse it; ekfac's factors are kept at any rank.
pub const MAX_DENSE_BLOCK: usize = 4096;

/// Whether a store of `spec` keeps its rows' second moments (every block at most
/// [`MAX_DENSE_BLOCK`]).
pub fn keeps_moments(spec: &ProjectionSpec) -> bool {
    spec.blocks().iter().all(|&b| b <= MAX_DENSE_BLOCK)
}

super::fast::vectorized! {
    /// Adds to the lines `first..` of a layer's `block × block` sums (`out`, whole lines) the
    /// upper triangle of `g gᵀ` of every row's block at `off`, the rows in their order.
    fn add_band = add_band_inner(out: &mut [f64], rows: &[Vec<f32>], off: usize, block: usize, first: usize) -> ()
}

#[inline(always)]
fn add_band_inner(out: &mut [f64], rows: &[Vec<f32>], off: usize, block: usize, first: usize) {
    // Four rows per pass over the band, so that its lines are loaded and stored once for the
    // four: each sum still adds the rows' products one at a time in the rows' order. (A row
    // whose value at a line is 0 adds ±0, its values being finite, which leaves the sum as it
    // is: a sum starts at +0 and never becomes −0.)
    let mut quads = rows.chunks_exact(4);
    for quad in quads.by_ref() {
        let [g0, g1, g2, g3] = [0, 1, 2, 3].map(|i| &quad[i][off..off + block]);
        for (k, line) in out.chunks_exact_mut(block).enumerate() {
            let a = first + k;
            let [c0, c1, c2, c3] = [g0[a], g1[a], g2[a], g3[a]].map(f64::from);
            for ((((o, &b0), &b1), &b2), &b3) in line[a..]
                .iter_mut()
                .zip(&g0[a..])
                .zip(&g1[a..])
                .zip(&g2[a..])
                .zip(&g3[a..])
            {
                let mut x = *o;
                x += c0 * f64::from(b0);
                x += c1 * f64::from(b1);
                x += c2 * f64::from(b2);
                x += c3 * f64::from(b3);
                *o = x;
            }
        }
    }
    for r in quads.remainder() {
        let g = &r[off..off + block];
        for (k, line) in out.chunks_exact_mut(block).enumerate() {
            let a = first + k;
            let ga = f64::from(g[a]);
            for (o, &gb) in line[a..].iter_mut().zip(&g[a..]) {
                *o += ga * f64::from(gb);
            }
        }
    }
}

/// Per-layer sums of outer products of rows, `Σ g_l g_lᵀ` over `rows` rows (upper triangles;
/// layer `l`'s block of a row is `blocks[l]` consecutive values, the layers one after another):
/// what the damped inverse second moment (`fisher`) needs, kept per shard so that scoring never
/// reads every row for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// Values per layer block.
    pub blocks: Vec<usize>,
    /// Rows summed.
    pub rows: u64,
    /// Per layer, `block × block`, upper triangle (`a ≤ b`) filled.
    pub sums: Vec<Vec<f64>>,
}

impl Moments {
    /// No rows yet.
    pub fn zero(blocks: &[usize]) -> Moments {
        Moments {
            blocks: blocks.to_vec(),
            rows: 0,
            sums: blocks.iter().map(|&b| vec![0.0; b * b]).collect(),
        }
    }

    /// Adds `rows` (each the layers' blocks laid end to end). Each layer's sums are split into
    /// bands of `a`, and every band sums all the rows in their order on one thread: the result
    /// does not depend on the threads (a resumed store is byte-identical), and no thread holds a
    /// copy of the sums.
    pub fn add_rows(&mut self, rows: &[Vec<f32>]) {
        use rayon::prelude::*;
        const BAND: usize = 8;
        let at = super::offsets(&self.blocks);
        let blocks = &self.blocks;
        self.sums.par_iter_mut().enumerate().for_each(|(l, sums)| {
            let (off, block) = (at[l], blocks[l]);
            sums.par_chunks_mut(BAND * block)
                .enumerate()
                .for_each(|(band, out)| add_band(out, rows, off, block, band * BAND));
        });
        self.rows += rows.len() as u64;
    }

    /// Adds another set of sums.
    pub fn merge(&mut self, other: &Moments) {
        for (x, y) in self.sums.iter_mut().zip(&other.sums) {
            x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        }
        self.rows += other.rows;
    }

    /// `(1/N) Σ g_l g_lᵀ` per layer, both triangles filled.
    pub fn second_moments(&self) -> Vec<Vec<f64>> {
        let n = self.rows.max(1) as f64;
        self.sums
            .iter()
            .zip(&self.blocks)
            .map(|(m, &block)| {
                let mut out = vec![0.0; block * block];
                for a in 0..block {
                    for b in a..block {
                        out[a * block + b] = m[a * block + b] / n;
                        out[b * block + a] = m[a * block + b] / n;
                    }
                }
                out
            })
            .collect()
    }

    /// Values in a moments file of layers of `blocks` values.
    pub(crate) fn values(blocks: &[usize]) -> usize {
        blocks.iter().map(|b| b * b).sum()
    }

    /// Writes the sums (`MOMS` header: width 64, count = Σ_layers block², `aux0` = the first
    /// layer's block, `aux1` = rows) to a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> Result<()> {
        let count = Moments::values(&self.blocks) as u64;
        let first = self.blocks.first().copied().unwrap_or(0) as u64;
        let mut bytes = Header::new(FileKind::Moments, 64, count, first, self.rows)
            .to_bytes()
            .to_vec();
        for m in &self.sums {
            for v in m {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(familiar::manifest::write_atomic(path, &bytes)?)
    }

    /// Reads a moments file of layers of `blocks` values, holding `rows` rows.
    pub fn read(path: &Path, blocks: &[usize], rows: u64) -> Result<Moments> {
        let bytes = std::fs::read(path).at(path)?;
        let h = Header::parse(&bytes, FileKind::Moments, path)?;
        let want = Moments::values(blocks) as u64;
        let block = blocks.first().copied().unwrap_or(0);
        if h.width != 64 || h.aux0 != block as u64 || h.count != want || h.aux1 != rows {
            return Err(Error::corrupt(
                path,
                format!(
                    "header says width {}, block {}, {} values over {} rows; the store has width 64, block {block}, {want} values over {rows} rows",
                    h.width, h.aux0, h.count, h.aux1
                ),
            ));
        }
        let values: Vec<f64> = bytes[HEADER_LEN..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let at = super::offsets(&blocks.iter().map(|b| b * b).collect::<Vec<_>>());
        Ok(Moments {
            blocks: blocks.to_vec(),
            rows,
            sums: at.windows(2).map(|w| values[w[0]..w[1]].to_vec()).collect(),
        })
    }
}

/// The file name of shard `i`'s rows.
pub fn shard_file(i: usize) -> String {
    format!("grads-{i:05}.bin")
}

/// `xxh3` over a model directory's config.json and safetensors files (in name order), leaving out
/// `optimizer.safetensors` (the optimizer state `familiar train` keeps to resume).
pub fn model_hash(dir: &Path) -> Result<String> {
    let mut files = vec![dir.join("config.json")];
    let mut weights: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        // The optimizer state `familiar train` keeps for resuming is not part of the model.
        .filter(|p| {
            p.file_name()
                .is_none_or(|n| n != super::optimizer::OPTIMIZER_FILE)
        })
        .collect();
    weights.sort();
    if weights.is_empty() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the model directory has no .safetensors file",
            ),
        ));
    }
    files.extend(weights);
    let mut all = String::new();
    for f in &files {
        let (sum, _) = familiar::checksum::of_file(f)?;
        all.push_str(&sum);
    }
    Ok(familiar::checksum::of_bytes(all.as_bytes()))
}

/// Encodes a row of f32 values as stored.
pub fn encode_row(row: &[f32], dtype: StoreDtype, out: &mut Vec<u8>) {
    match dtype {
        StoreDtype::F32 => row
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        StoreDtype::F16 => row
            .iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
    }
}

/// Writes a row file under a temporary name; [`RowWriter::finish`] syncs it and renames it into
/// place, so a reader never sees a partial file under the final name.
#[derive(Debug)]
pub struct RowWriter {
    /// `None` once finished.
    file: Option<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
    dtype: StoreDtype,
    dim: usize,
    rows: u64,
    written: u64,
    bytes: Vec<u8>,
}

impl RowWriter {
    /// Starts the row file `path` of `rows` rows of `dim` values, the first of which belongs to
    /// global document `first_doc`.
    pub fn create(
        path: &Path,
        dtype: StoreDtype,
        dim: usize,
        rows: u64,
        first_doc: u64,
    ) -> Result<RowWriter> {
        use std::io::Write;
        let tmp = familiar::manifest::temp_path(path);
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).at(&tmp)?);
        let header = Header::new(
            FileKind::Gradients,
            dtype.bits(),
            rows * dim as u64,
            dim as u64,
            first_doc,
        );
        file.write_all(&header.to_bytes()).at(&tmp)?;
        Ok(RowWriter {
            file: Some(file),
            tmp,
            path: path.to_path_buf(),
            dtype,
            dim,
            rows,
            written: 0,
            bytes: Vec::new(),
        })
    }

    /// Appends the next row.
    pub fn push(&mut self, row: &[f32]) -> Result<()> {
        use std::io::Write;
        if row.len() != self.dim || self.written == self.rows {
            return Err(Error::bug(format!(
                "row {} of length {} for a file of {} rows of {}",
                self.written,
                row.len(),
                self.rows,
                self.dim
            )));
        }
        if self.dtype == StoreDtype::F16 {
            // f16 holds ±65504 at most: a larger value (gradients divided by a small second
            // moment can be) would be stored as infinity.
            if let Some(v) = row.iter().find(|v| v.abs() > f32::from(half::f16::MAX)) {
                return Err(Error::config(format!(
                    "row {} holds {v}, beyond f16's range (±65504): build the store with \
                     {} f32",
                    self.written,
                    familiar::option::name("dtype")
                )));
            }
        }
        self.bytes.clear();
        encode_row(row, self.dtype, &mut self.bytes);
        let Some(file) = self.file.as_mut() else {
            return Err(Error::bug("a row pushed to a finished row file"));
        };
        file.write_all(&self.bytes).at(&self.tmp)?;
        self.written += 1;
        Ok(())
    }

    /// Syncs the file and moves it into place; every row must have been pushed.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.rows {
            return Err(Error::bug(format!(
                "{} of {} rows written",
                self.written, self.rows
            )));
        }
        let Some(file) = self.file.take() else {
            return Err(Error::bug("a row file finished twice"));
        };
        let f = file
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        f.sync_all().at(&self.tmp)?;
        drop(f);
        Ok(std::fs::rename(&self.tmp, &self.path).at(&self.path)?)
    }
}

impl Drop for RowWriter {
    /// A row file left unfinished (an error or an interruption) leaves no temporary file.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// An open row file.
#[derive(Debug)]
pub struct RowFile {
    map: Mmap,
    /// First global document.
    pub first_doc: u64,
    /// Rows.
    pub rows: u64,
    dim: usize,
    dtype: StoreDtype,
}

impl RowFile {
    /// Opens and checks a row file against what the manifest says it holds.
    pub fn open(
        path: &Path,
        dim: usize,
        dtype: StoreDtype,
        first_doc: u64,
        rows: u64,
    ) -> Result<RowFile> {
        let file = std::fs::File::open(path).at(path)?;
        // SAFETY: the file is opened read-only and never modified while mapped (stores are
        // written to a temporary name and renamed into place); its length is checked below
        // before any element is read, so a truncated file is an error, not a SIGBUS.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let h = Header::parse(&map, FileKind::Gradients, path)?;
        let expect = |what: &str, got: u64, want: u64| -> Result<()> {
            if got != want {
                Err(Error::corrupt(
                    path,
                    format!("header says {what} {got}, the store manifest {want}"),
                ))
            } else {
                Ok(())
            }
        };
        expect("element width", u64::from(h.width), u64::from(dtype.bits()))?;
        expect("row length", h.aux0, dim as u64)?;
        expect("first document", h.aux1, first_doc)?;
        expect("value count", h.count, rows * dim as u64)?;
        Ok(RowFile {
            map,
            first_doc,
            rows,
            dim,
            dtype,
        })
    }

    /// Row `i` (local) as f32 into `out` (`dim` values).
    pub fn row(&self, i: u64, out: &mut [f32]) {
        let width = self.dtype.bits() as usize / 8;
        let start = HEADER_LEN + i as usize * self.dim * width;
        let bytes = &self.map[start..start + self.dim * width];
        match self.dtype {
            StoreDtype::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            StoreDtype::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        }
    }
}

/// Checks a store file listed in the manifest: `values` f64 values after the header (its size),
/// and with `verify` its checksum.
fn check_file(dir: &Path, entry: &MomentsEntry, values: usize, verify: bool) -> Result<()> {
    let p = dir.join(&entry.file);
    if verify {
        let (sum, _) = familiar::checksum::of_file(&p)?;
        if sum != entry.checksum {
            return Err(Error::corrupt(&p, "checksum mismatch"));
        }
    }
    let want = HEADER_LEN as u64 + 8 * values as u64;
    let got = std::fs::metadata(&p).at(&p)?.len();
    if got != want {
        return Err(familiar::Error::Size {
            path: p,
            expected: want,
            actual: got,
        }
        .into());
    }
    Ok(())
}

/// Checks a file the projection calls for (`wanted`) against the manifest's `entry`: listed
/// exactly when wanted (else an error on the manifest at `manifest`: `unwanted` when it is listed
/// anyway, `missing` when it is not), and then as [`check_file`] with `values` values.
fn check_listed(
    dir: &Path,
    manifest: &Path,
    (entry, wanted): (Option<&MomentsEntry>, bool),
    values: usize,
    verify: bool,
    (unwanted, missing): (&str, &str),
) -> Result<()> {
    match (entry, wanted) {
        (Some(e), true) => check_file(dir, e, values, verify),
        (None, false) => Ok(()),
        (Some(_), false) => Err(Error::corrupt(manifest, unwanted)),
        (None, true) => Err(Error::corrupt(manifest, missing)),
    }
}

/// An open, complete gradient store.
#[derive(Debug)]
pub struct GradientStore {
    dir: PathBuf,
    /// Its manifest.
    pub manifest: StoreManifest,
    /// Row files in document order.
    pub files: Vec<RowFile>,
}

impl GradientStore {
    /// Opens a store; every row file is checked against the manifest (sizes, headers), and with
    /// `verify` also against its checksum.
    pub fn open(dir: &Path, verify: bool) -> Result<GradientStore> {
        let path = dir.join(MANIFEST);
        if !path.exists() {
            let why = if dir.join(PLAN).exists() {
                "the store is incomplete (plan.json but no store.json): run `familiar attribute store` again to finish it"
            } else {
                "not a gradient store (no store.json)"
            };
            return Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, why),
            ));
        }
        let manifest: StoreManifest = familiar::manifest::read(&path, FORMAT)?;
        let dim = manifest.settings.projection.dim();
        let mut files = Vec::with_capacity(manifest.shards.len());
        let mut next = 0u64;
        for s in &manifest.shards {
            if s.first_doc != next {
                return Err(Error::corrupt(
                    &path,
                    format!(
                        "{} starts at document {} instead of {next}",
                        s.file, s.first_doc
                    ),
                ));
            }
            next += s.documents;
            let p = dir.join(&s.file);
            if verify {
                let (sum, _) = familiar::checksum::of_file(&p)?;
                if sum != s.checksum {
                    return Err(Error::corrupt(&p, "checksum mismatch"));
                }
            }
            files.push(RowFile::open(
                &p,
                dim,
                manifest.settings.dtype,
                s.first_doc,
                s.documents,
            )?);
            let spec = &manifest.settings.projection;
            if let Some(m) = &s.moments {
                check_file(dir, m, Moments::values(&spec.blocks()), verify)?;
            }
            if let Some(k) = &s.kron {
                check_file(dir, k, KronSums::values(&spec.all_ranks()), verify)?;
            }
        }
        if let Some(e) = &manifest.ekfac {
            let ranks = manifest.settings.projection.all_ranks();
            check_file(dir, e, Ekfac::values(&ranks), verify)?;
        }
        let spec = &manifest.settings.projection;
        check_listed(
            dir,
            &path,
            (manifest.head_factor.as_ref(), spec.head_whitening.is_some()),
            spec.layers.last().map_or(0, |l| l.output),
            verify,
            (
                "lists an output-head factor for a projection without the head",
                "the projection whitens the output head but no head factor is listed",
            ),
        )?;
        check_listed(
            dir,
            &path,
            (manifest.optimizer_scales.as_ref(), spec.optimizer.is_some()),
            OptimizerScales::file_values(spec),
            verify,
            (
                "lists optimizer scales for a projection without the optimizer correction",
                "the projection corrects gradients by the optimizer's second moment but no \
                 scales are listed",
            ),
        )?;
        if next != manifest.settings.documents {
            return Err(Error::corrupt(
                &path,
                format!(
                    "the row files hold {next} documents, the index {}",
                    manifest.settings.documents
                ),
            ));
        }
        Ok(GradientStore {
            dir: dir.to_path_buf(),
            manifest,
            files,
        })
    }

    /// The moments of every row, from the shards' moments files; `None` if a shard has none
    /// (a store written before they were kept). A store whose blocks are too large to keep them
    /// ([`keeps_moments`]) is an error that says which preconditioners it serves.
    pub fn moments(&self) -> Result<Option<Moments>> {
        let spec = &self.manifest.settings.projection;
        let blocks = spec.blocks();
        if !keeps_moments(spec) {
            let (l, big) = blocks
                .iter()
                .enumerate()
                .max_by_key(|(_, b)| **b)
                .expect("a projection has layers");
            let (ri, ro) = spec.ranks(l);
            return Err(Error::query(format!(
                "the gradient store {} keeps no second moments: layer {} has a block of {big} \
                 values ({ro} × {ri}), and fisher and trackstar invert a dense block × block \
                 matrix per layer (at most {MAX_DENSE_BLOCK} values); score it with ekfac, \
                 identity or cosine, or build a store with smaller ranks",
                self.dir.display(),
                spec.layers[l].name
            )));
        }
        let mut total = Moments::zero(&blocks);
        for s in &self.manifest.shards {
            let Some(m) = &s.moments else {
                return Ok(None);
            };
            total.merge(&Moments::read(
                &self.dir.join(&m.file),
                &blocks,
                s.documents,
            )?);
        }
        Ok(Some(total))
    }

    /// The fitted EK-FAC; an error naming what to do for a store built before EK-FAC was
    /// fitted.
    pub fn ekfac(&self) -> Result<Ekfac> {
        let Some(e) = &self.manifest.ekfac else {
            return Err(Error::query(format!(
                "the gradient store {} was built before EK-FAC's factors were kept: build it again \
                 (`familiar attribute store`) to score with ekfac",
                self.dir.display()
            )));
        };
        let spec = &self.manifest.settings.projection;
        Ekfac::read(&self.dir.join(&e.file), &spec.all_ranks(), self.rows())
    }

    /// The output head's factor, when the projection has the head.
    pub fn head_factor(&self) -> Result<Option<HeadFactor>> {
        match (
            &self.manifest.head_factor,
            self.manifest.settings.projection.layers.last(),
        ) {
            (Some(h), Some(l)) => Ok(Some(HeadFactor::read(&self.dir.join(&h.file), l.output)?)),
            _ => Ok(None),
        }
    }

    /// The optimizer correction's scales, when the store was built with it.
    pub fn optimizer_scales(&self) -> Result<Option<OptimizerScales>> {
        match &self.manifest.optimizer_scales {
            Some(o) => Ok(Some(OptimizerScales::read(
                &self.dir.join(&o.file),
                &self.manifest.settings.projection,
            )?)),
            None => Ok(None),
        }
    }

    /// The store's projection on `model` (its head whitened with the store's factor, its
    /// gradients corrected with the store's optimizer scales).
    pub fn projection(&self, model: &crate::model::Transformer) -> Result<super::Projection> {
        let head = self.head_factor()?;
        let scales = self.optimizer_scales()?;
        super::Projection::corrected(
            self.manifest.settings.projection.clone(),
            model,
            head.as_ref(),
            scales.as_ref(),
        )
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.manifest.settings.projection.dim()
    }

    /// Rows (documents).
    pub fn rows(&self) -> u64 {
        self.manifest.settings.documents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The banded parallel sums equal `Σ g gᵀ` by definition, bit for bit when added in the
    /// rows' order (13 rows: passes of four rows and one left over), for layers of unequal
    /// blocks, whether the rows come at once or in pieces, and survive a write and read.
    #[test]
    fn moments_are_the_sums_of_outer_products_per_layer() {
        let blocks = [6, 6, 21];
        let dim: usize = blocks.iter().sum();
        let mut rng = familiar::rng::SplitMix64::new(3);
        let rows: Vec<Vec<f32>> = (0..13)
            .map(|k| {
                let mut r = rng.normals(dim, 1.0);
                if k == 4 {
                    r[2] = 0.0;
                }
                r
            })
            .collect();
        let mut once = Moments::zero(&blocks);
        once.add_rows(&rows);
        let at = super::super::offsets(&blocks);
        for (l, &b) in blocks.iter().enumerate() {
            for x in 0..b {
                for y in 0..b {
                    // Added one row at a time in the rows' order, from +0: the same bits.
                    let want = rows.iter().fold(0.0f64, |s, r| {
                        s + f64::from(r[at[l] + x]) * f64::from(r[at[l] + y])
                    });
                    let got = once.sums[l][x * b + y];
                    if y >= x {
                        assert_eq!(got.to_bits(), want.to_bits(), "{l} {x} {y}");
                    } else {
                        assert_eq!(got, 0.0, "only the upper triangle is summed");
                    }
                }
            }
        }
        assert_eq!(once.rows, 13);
        let mut pieces = Moments::zero(&blocks);
        pieces.add_rows(&rows[..5]);
        pieces.add_rows(&rows[5..]);
        assert_eq!(
            pieces, once,
            "rows are summed in order, whatever the pieces"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moments-00000.bin");
        once.write(&path).unwrap();
        assert_eq!(Moments::read(&path, &blocks, 13).unwrap(), once);
        assert!(Moments::read(&path, &[6, 6, 20], 13).is_err());
        assert!(Moments::read(&path, &blocks, 12).is_err());
    }
}

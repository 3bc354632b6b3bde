//! EK-FAC in the projected space of a gradient store (George et al. 2018, "Fast Approximate
//! Natural Gradient Descent in a Kronecker-factored Eigenbasis"; Grosse et al. 2023, "Studying
//! Large Language Model Generalization with Influence Functions").
//!
//! A layer's projected gradient of document `d` is `G_d = Σ_t s_t a_tᵀ` (`r_out × r_in`), with
//! `a_t = P_in x_t` its projected input and `s_t = P_out δ_t` its projected output gradient at
//! token `t` ([`super`]). K-FAC approximates the layer's Fisher by `A ⊗ S`, the Kronecker product
//! of the inputs' and output gradients' second moments over tokens:
//!
//! ```text
//! A = (1/T) Σ_t a_t a_tᵀ = Q_A diag(α) Q_Aᵀ        S = (1/T) Σ_t s_t s_tᵀ = Q_S diag(σ) Q_Sᵀ
//! ```
//!
//! EK-FAC keeps the Kronecker eigenbasis `Q_A ⊗ Q_S` but replaces the eigenvalues `σ_i α_j` by the
//! gradients' actual second moments in that basis, per example:
//!
//! ```text
//! Λ = (1/N) Σ_d (Q_Sᵀ G_d Q_A)²        (elementwise; r_out × r_in)
//! ```
//!
//! and a query gradient `G_q` is preconditioned as
//! `P_q = Q_S [(Q_Sᵀ G_q Q_A) ⊘ (Λ + λ)] Q_Aᵀ`, so that its score against a document is
//! `Σ_layers ⟨P_q, G_d⟩`. The damping `λ` of each layer is a fraction of the mean of its `Λ`
//! (Kronfluence's heuristic damping, `0.1 · mean(Λ)` when its `damping_factor` is unset).
//!
//! As in Kronfluence, `A` and `S` average over every token of every example (T tokens), `Λ` over
//! examples (N documents). The output gradients are those of the documents' own tokens (the
//! empirical Fisher); Kronfluence samples the labels from the model by default.
//!
//! The store keeps the token sums `Σ a aᵀ` and `Σ s sᵀ` of each shard ([`KronSums`],
//! `kron-NNNNN.bin`), and the fitted bases and corrected eigenvalues ([`Ekfac`], `ekfac.bin`):
//! fitted once per store, after its rows.

use std::path::Path;

use rayon::prelude::*;

use super::linalg::symmetric_eigen;
use super::store::RowFile;
use crate::error::{Error, Result};
use familiar::error::IoContext;
use familiar::format::{FileKind, Header, HEADER_LEN};

/// Per layer, the token sums of the outer products of projected inputs and of projected output
/// gradients.
#[derive(Debug, Clone, PartialEq)]
pub struct KronSums {
    /// Per layer, the ranks of its input and output projections.
    pub ranks: Vec<(usize, usize)>,
    /// Tokens summed.
    pub tokens: u64,
    /// Per layer, `Σ_t a_t a_tᵀ` (`rank_in × rank_in`, row-major, both triangles).
    pub inputs: Vec<Vec<f64>>,
    /// Per layer, `Σ_t s_t s_tᵀ` (`rank_out × rank_out`).
    pub outputs: Vec<Vec<f64>>,
}

impl KronSums {
    /// Nothing summed, for layers of `ranks` (input side, output side).
    pub fn zero(ranks: &[(usize, usize)]) -> KronSums {
        KronSums {
            ranks: ranks.to_vec(),
            tokens: 0,
            inputs: ranks.iter().map(|&(ri, _)| vec![0.0; ri * ri]).collect(),
            outputs: ranks.iter().map(|&(_, ro)| vec![0.0; ro * ro]).collect(),
        }
    }

    /// Adds the outer products of `n` tokens' projected inputs `a` (`n × rank_in`) and output
    /// gradients `s` (`n × rank_out`) of `layer`; the tokens themselves are counted by
    /// [`KronSums::count`] (once for all layers).
    pub fn add(&mut self, layer: usize, a: &[f32], s: &[f32], n: usize) {
        let (ri, ro) = self.ranks[layer];
        outer_sums(&mut self.inputs[layer], a, n, ri);
        outer_sums(&mut self.outputs[layer], s, n, ro);
    }

    /// Counts `n` more tokens.
    pub fn count(&mut self, n: usize) {
        self.tokens += n as u64;
    }

    /// Adds another set of sums.
    pub fn merge(&mut self, other: &KronSums) {
        let add = |x: &mut Vec<Vec<f64>>, y: &Vec<Vec<f64>>| {
            for (x, y) in x.iter_mut().zip(y) {
                x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
            }
        };
        add(&mut self.inputs, &other.inputs);
        add(&mut self.outputs, &other.outputs);
        self.tokens += other.tokens;
    }

    /// Values in a file of the sums of layers of `ranks`.
    pub(crate) fn values(ranks: &[(usize, usize)]) -> usize {
        ranks.iter().map(|&(ri, ro)| ri * ri + ro * ro).sum()
    }

    /// Writes the sums (`KRON` header: width 64, count = Σ_layers (rank_in² + rank_out²), `aux0`
    /// = layers, `aux1` = tokens; then per layer the input sums, then per layer the output sums)
    /// to a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> Result<()> {
        let layers = self.inputs.len();
        let count = KronSums::values(&self.ranks) as u64;
        let mut bytes = Header::new(FileKind::KronFactors, 64, count, layers as u64, self.tokens)
            .to_bytes()
            .to_vec();
        for m in self.inputs.iter().chain(&self.outputs) {
            m.iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
        Ok(familiar::manifest::write_atomic(path, &bytes)?)
    }

    /// Reads the sums of layers of `ranks`.
    pub fn read(path: &Path, ranks: &[(usize, usize)]) -> Result<KronSums> {
        let want = KronSums::values(ranks) as u64;
        let layers = ranks.len() as u64;
        let (h, values) = read_values(path, FileKind::KronFactors, want, (layers, "layers"))?;
        let mut rest = values.as_slice();
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head.to_vec()
        };
        let inputs = ranks.iter().map(|&(ri, _)| take(ri * ri)).collect();
        let outputs = ranks.iter().map(|&(_, ro)| take(ro * ro)).collect();
        Ok(KronSums {
            ranks: ranks.to_vec(),
            tokens: h.aux1,
            inputs,
            outputs,
        })
    }
}

super::fast::vectorized! {
    /// `Q_Sᵀ G Q_A` of a block `g` (`ro × ri`) with the bases `Q_A` (`basis_in`, `ri × ri`) and
    /// `Q_S` (`basis_out`, `ro × ro`).
    fn rotate_block = rotate_block_inner(g: &[f32], basis_in: &[f64], basis_out: &[f64], ri: usize, ro: usize) -> Vec<f64>
}

#[inline(always)]
fn rotate_block_inner(
    g: &[f32],
    basis_in: &[f64],
    basis_out: &[f64],
    ri: usize,
    ro: usize,
) -> Vec<f64> {
    // T = G Q_A (ro × ri), then Q_Sᵀ T.
    let mut t = vec![0.0f64; ro * ri];
    for o in 0..ro {
        let grow = &g[o * ri..(o + 1) * ri];
        let trow = &mut t[o * ri..(o + 1) * ri];
        for (k, &gk) in grow.iter().enumerate() {
            if gk == 0.0 {
                continue;
            }
            let gk = f64::from(gk);
            let q = &basis_in[k * ri..(k + 1) * ri];
            trow.iter_mut().zip(q).for_each(|(t, q)| *t += gk * q);
        }
    }
    let mut out = vec![0.0f64; ro * ri];
    for k in 0..ro {
        let trow = &t[k * ri..(k + 1) * ri];
        for o in 0..ro {
            let q = basis_out[k * ro + o];
            if q == 0.0 {
                continue;
            }
            out[o * ri..(o + 1) * ri]
                .iter_mut()
                .zip(trow)
                .for_each(|(x, t)| *x += q * t);
        }
    }
    out
}

/// `m += Σ_t v_t v_tᵀ` over `n` rows of `v` (`n × r`): `vᵀ v` by a matrix product in f32 (one
/// call sums one batch's tokens), added to the f64 sums.
fn outer_sums(m: &mut [f64], v: &[f32], n: usize, r: usize) {
    if n == 0 || r == 0 {
        return;
    }
    let mut product = vec![0.0f32; r * r];
    super::fast::mm(r, r, n, &mut product, r, false, (v, 1, r), (v, r, 1));
    // vᵀ v is symmetric up to the order of its sums; mirror the upper triangle so that the
    // factor is exactly symmetric.
    for i in 0..r {
        for j in i..r {
            let x = f64::from(product[i * r + j]);
            m[i * r + j] += x;
            if j != i {
                m[j * r + i] += x;
            }
        }
    }
}

/// The header and f64 values of a factor file of `kind` that must hold `want` values and `aux0`
/// (what its `aux0` counts, named).
pub(crate) fn read_values(
    path: &Path,
    kind: FileKind,
    want: u64,
    (aux0, what): (u64, &str),
) -> Result<(Header, Vec<f64>)> {
    let bytes = std::fs::read(path).at(path)?;
    let h = Header::parse(&bytes, kind, path)?;
    if h.width != 64 || h.count != want || h.aux0 != aux0 {
        return Err(Error::corrupt(
            path,
            format!(
                "header says width {}, {} values over {} {what}; the store has width 64, \
                 {want} values over {aux0} {what}",
                h.width, h.count, h.aux0
            ),
        ));
    }
    Ok((h, finite_values(path, &bytes[HEADER_LEN..])?))
}

/// The little-endian f64 values of `bytes`, refusing a non-finite one by its index.
fn finite_values(path: &Path, bytes: &[u8]) -> Result<Vec<f64>> {
    let values: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::corrupt(
            path,
            format!("value {i} is {}: expected a finite number", values[i]),
        ));
    }
    Ok(values)
}

/// One layer's fitted EK-FAC.
#[derive(Debug, Clone, PartialEq)]
pub struct EkfacLayer {
    /// Eigenvectors of the inputs' second moment `A`, as columns (`rank_in × rank_in`).
    pub basis_in: Vec<f64>,
    /// Eigenvectors of the output gradients' second moment `S`, as columns
    /// (`rank_out × rank_out`).
    pub basis_out: Vec<f64>,
    /// Corrected eigenvalues `Λ` (`rank_out × rank_in`, row-major like a gradient block).
    pub eigenvalues: Vec<f64>,
}

/// A store's fitted EK-FAC: per layer the Kronecker eigenbases and corrected eigenvalues.
#[derive(Debug, Clone, PartialEq)]
pub struct Ekfac {
    /// Per layer, the ranks of its input and output projections.
    pub ranks: Vec<(usize, usize)>,
    /// Examples (documents) the eigenvalues average over.
    pub rows: u64,
    /// Tokens the factors average over.
    pub tokens: u64,
    /// Per layer.
    pub layers: Vec<EkfacLayer>,
}

impl Ekfac {
    /// The eigenbases of `sums`' factors with no eigenvalues yet.
    fn bases(sums: &KronSums) -> Ekfac {
        let layers = sums
            .inputs
            .par_iter()
            .zip(&sums.outputs)
            .zip(&sums.ranks)
            .map(|((a, s), &(ri, ro))| EkfacLayer {
                basis_in: symmetric_eigen(a, ri).vectors,
                basis_out: symmetric_eigen(s, ro).vectors,
                eigenvalues: vec![0.0; ri * ro],
            })
            .collect();
        Ekfac {
            ranks: sums.ranks.clone(),
            rows: 0,
            tokens: sums.tokens,
            layers,
        }
    }

    /// Fits EK-FAC: the eigenbases of `sums`' factors (the scale of `A` and `S` does not change
    /// their eigenvectors, so sums serve as well as means), then `Λ` over `rows` (each row a
    /// document's gradient: each layer's `rank_out × rank_in` block, the store's layout).
    pub fn fit(sums: &KronSums, rows: &[Vec<f32>]) -> Ekfac {
        let mut e = Ekfac::bases(sums);
        let total = e.squares_of_rows(rows.iter().map(Vec::as_slice));
        e.finish(total, rows.len() as u64);
        e
    }

    /// Fits EK-FAC over the rows of a store's row files, read in parallel blocks whose sums are
    /// merged in order (the result does not depend on the threads).
    /// `progress` is told how many more rows were read.
    pub fn fit_files(
        sums: &KronSums,
        files: &[RowFile],
        dim: usize,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Ekfac {
        const ROWS: u64 = 512;
        let mut e = Ekfac::bases(sums);
        let blocks: Vec<(usize, u64, u64)> = files
            .iter()
            .enumerate()
            .flat_map(|(fi, f)| {
                (0..f.rows)
                    .step_by(ROWS as usize)
                    .map(move |s| (fi, s, (s + ROWS).min(f.rows)))
            })
            .collect();
        let parts: Vec<Vec<Vec<f64>>> = blocks
            .par_iter()
            .map(|&(fi, s, end)| {
                let rows: Vec<Vec<f32>> = (s..end)
                    .map(|i| {
                        let mut row = vec![0.0f32; dim];
                        files[fi].row(i, &mut row);
                        row
                    })
                    .collect();
                let squares = e.squares_of_rows(rows.iter().map(Vec::as_slice));
                progress(end - s);
                squares
            })
            .collect();
        let mut total = e.zeros();
        for p in &parts {
            for (t, p) in total.iter_mut().zip(p) {
                t.iter_mut().zip(p).for_each(|(t, p)| *t += p);
            }
        }
        let n = files.iter().map(|f| f.rows).sum();
        e.finish(total, n);
        e
    }

    fn finish(&mut self, total: Vec<Vec<f64>>, rows: u64) {
        let n = rows.max(1) as f64;
        for (l, t) in self.layers.iter_mut().zip(total) {
            l.eigenvalues = t.into_iter().map(|x| x / n).collect();
        }
        self.rows = rows;
    }

    /// Per layer, zeros of its block's size.
    fn zeros(&self) -> Vec<Vec<f64>> {
        self.ranks
            .iter()
            .map(|&(ri, ro)| vec![0.0; ri * ro])
            .collect()
    }

    /// Where each layer's block starts in a row, and the row's length last.
    pub fn offsets(&self) -> Vec<usize> {
        super::offsets(
            &self
                .ranks
                .iter()
                .map(|&(ri, ro)| ri * ro)
                .collect::<Vec<_>>(),
        )
    }

    /// Per layer, `Σ (Q_Sᵀ G Q_A)²` over `rows`.
    fn squares_of_rows<'a>(&self, rows: impl Iterator<Item = &'a [f32]>) -> Vec<Vec<f64>> {
        let at = self.offsets();
        let mut total = self.zeros();
        for row in rows {
            for (l, t) in total.iter_mut().enumerate() {
                let r = self.rotate(l, &row[at[l]..at[l + 1]]);
                t.iter_mut().zip(&r).for_each(|(t, r)| *t += r * r);
            }
        }
        total
    }

    /// `Q_Sᵀ G Q_A` of layer `l`'s block `g` (`rank_out × rank_in`).
    pub fn rotate(&self, l: usize, g: &[f32]) -> Vec<f64> {
        let (ri, ro) = self.ranks[l];
        let layer = &self.layers[l];
        rotate_block(g, &layer.basis_in, &layer.basis_out, ri, ro)
    }

    /// Each layer's damping: `damping · mean(Λ)` (`damping` itself where `Λ` is zero).
    pub fn lambdas(&self, damping: f64) -> Vec<f64> {
        self.layers
            .iter()
            .map(|l| {
                let mean = l.eigenvalues.iter().sum::<f64>() / l.eigenvalues.len().max(1) as f64;
                if mean > 0.0 {
                    damping * mean
                } else {
                    damping
                }
            })
            .collect()
    }

    /// The preconditioned gradient `Q_S [(Q_Sᵀ G Q_A) ⊘ (Λ + λ)] Q_Aᵀ` of every layer of `g`,
    /// with the layers' dampings `lambdas` ([`Ekfac::lambdas`]).
    pub fn precondition(&self, g: &[f32], lambdas: &[f64]) -> Vec<f32> {
        let at = self.offsets();
        let mut out = Vec::with_capacity(g.len());
        for (l, (layer, lambda)) in self.layers.iter().zip(lambdas).enumerate() {
            let mut r = self.rotate(l, &g[at[l]..at[l + 1]]);
            r.iter_mut()
                .zip(&layer.eigenvalues)
                .for_each(|(r, e)| *r /= e + lambda);
            out.extend(self.unrotate(l, &r).into_iter().map(|x| x as f32));
        }
        out
    }

    /// `Q_S R Q_Aᵀ` of layer `l`'s rotated block `r` (`rank_out × rank_in`): back from the
    /// eigenbasis ([`Ekfac::rotate`]'s inverse).
    pub fn unrotate(&self, l: usize, r: &[f64]) -> Vec<f64> {
        let (ri, ro) = self.ranks[l];
        let layer = &self.layers[l];
        let block = ri * ro;
        // T = R Q_Aᵀ (ro × ri), then Q_S T.
        let mut t = vec![0.0f64; block];
        for o in 0..ro {
            let rrow = &r[o * ri..(o + 1) * ri];
            let trow = &mut t[o * ri..(o + 1) * ri];
            for (i, tv) in trow.iter_mut().enumerate() {
                let q = &layer.basis_in[i * ri..(i + 1) * ri];
                *tv = rrow.iter().zip(q).map(|(r, q)| r * q).sum();
            }
        }
        let mut p = vec![0.0f64; block];
        for o in 0..ro {
            let prow = &mut p[o * ri..(o + 1) * ri];
            for k in 0..ro {
                let q = layer.basis_out[o * ro + k];
                prow.iter_mut()
                    .zip(&t[k * ri..(k + 1) * ri])
                    .for_each(|(p, t)| *p += q * t);
            }
        }
        p
    }

    /// Values in a fit file of layers of `ranks`.
    pub(crate) fn values(ranks: &[(usize, usize)]) -> usize {
        ranks
            .iter()
            .map(|&(ri, ro)| ri * ri + ro * ro + ri * ro)
            .sum()
    }

    /// Writes the fit (`EKFC` header: width 64, count = Σ_layers (rank_in² + rank_out² +
    /// rank_out·rank_in), `aux0` = rows, `aux1` = tokens; then per layer the input basis, the
    /// output basis and the eigenvalues) to a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> Result<()> {
        let count = Ekfac::values(&self.ranks) as u64;
        let mut bytes = Header::new(FileKind::Ekfac, 64, count, self.rows, self.tokens)
            .to_bytes()
            .to_vec();
        for l in &self.layers {
            for v in l.basis_in.iter().chain(&l.basis_out).chain(&l.eigenvalues) {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(familiar::manifest::write_atomic(path, &bytes)?)
    }

    /// Reads the fit of layers of `ranks` over `rows` documents.
    pub fn read(path: &Path, ranks: &[(usize, usize)], rows: u64) -> Result<Ekfac> {
        let want = Ekfac::values(ranks) as u64;
        let (h, values) = read_values(path, FileKind::Ekfac, want, (rows, "rows"))?;
        let mut fitted = Vec::with_capacity(ranks.len());
        let mut rest = values.as_slice();
        for (l, &(ri, ro)) in ranks.iter().enumerate() {
            let (ni, no, nl) = (ri * ri, ro * ro, ri * ro);
            let (v, tail) = rest.split_at(ni + no + nl);
            rest = tail;
            let eigenvalues = v[ni + no..].to_vec();
            if let Some(i) = eigenvalues.iter().position(|e| *e < 0.0) {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "eigenvalue {i} of layer {l} is {}: expected a mean of squares",
                        eigenvalues[i]
                    ),
                ));
            }
            fitted.push(EkfacLayer {
                basis_in: v[..ni].to_vec(),
                basis_out: v[ni..ni + no].to_vec(),
                eigenvalues,
            });
        }
        Ok(Ekfac {
            ranks: ranks.to_vec(),
            rows,
            tokens: h.aux1,
            layers: fitted,
        })
    }
}

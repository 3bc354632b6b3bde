//! Dense symmetric linear algebra for preconditioners (f64 throughout): a Cholesky factorization
//! of `M + λI`, computed once and used for many right-hand sides, and the eigendecomposition of a
//! symmetric matrix by Householder tridiagonalization and implicit QL iterations.

use rayon::prelude::*;

use super::fast::gemm_view;

/// Columns per panel of [`Cholesky::damped`].
const PANEL: usize = 64;

/// Solves `L[k0.., k0..] y = b` in place (`y` holds `b`, `y.len()` unknowns) by forward
/// substitution, `l` row-major with rows of `n` values; only its lower triangle from row and
/// column `k0` is read. The one triangular solve of [`Cholesky::forward`] and of the panels of
/// [`Cholesky::damped`] and [`Cholesky::forward_rows`].
fn solve_lower(y: &mut [f64], l: &[f64], n: usize, k0: usize) {
    for j in 0..y.len() {
        let lj = &l[(k0 + j) * n + k0..];
        let dot: f64 = y[..j].iter().zip(lj).map(|(a, b)| a * b).sum();
        y[j] = (y[j] - dot) / lj[j];
    }
}

/// The lower-triangular factor `L` of `M + λI = L Lᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cholesky {
    n: usize,
    l: Vec<f64>,
}

impl Cholesky {
    /// The order of the factored matrix.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Factors `M + λI` for symmetric `M` (`n × n`, row-major; only the lower triangle is read);
    /// `None` if it is not positive definite.
    ///
    /// Blocked by panels of [`PANEL`] columns: each panel's diagonal block is factored directly,
    /// the rows below it by triangular solves, and the lower triangle after it is updated by one
    /// matrix product per block of rows (in parallel), so nearly all the work is in `gemm`.
    pub fn damped(m: &[f64], n: usize, lambda: f64) -> Option<Cholesky> {
        assert_eq!(m.len(), n * n, "Cholesky::damped: an n × n matrix");
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            a[i * n..=i * n + i].copy_from_slice(&m[i * n..=i * n + i]);
            a[i * n + i] += lambda;
        }
        let mut k0 = 0;
        while k0 < n {
            let k1 = (k0 + PANEL).min(n);
            // The diagonal block, already updated by every earlier panel.
            for i in k0..k1 {
                for j in k0..=i {
                    let dot: f64 = (k0..j).map(|p| a[i * n + p] * a[j * n + p]).sum();
                    let s = a[i * n + j] - dot;
                    if i == j {
                        if s <= 0.0 || !s.is_finite() {
                            return None;
                        }
                        a[i * n + i] = s.sqrt();
                    } else {
                        a[i * n + j] = s / a[j * n + j];
                    }
                }
            }
            if k1 == n {
                break;
            }
            let (top, below) = a.split_at_mut(k1 * n);
            // The rows below: L[i, k0..k1] solves L[i, k0..k1] · L[k0..k1, k0..k1]ᵀ = A[i, k0..k1].
            below
                .par_chunks_mut(n)
                .for_each(|row| solve_lower(&mut row[k0..k1], top, n, k0));
            // The trailing lower triangle: A[i, k1..=i] −= L[i, k0..k1] · L[j, k0..k1]ᵀ, a block
            // of rows at a time through its own diagonal block (the entries above the diagonal
            // it also changes are never read, and cleared at the end).
            let w = k1 - k0;
            let panel: Vec<f64> = below
                .chunks(n)
                .flat_map(|row| row[k0..k1].iter().copied())
                .collect();
            below
                .par_chunks_mut(PANEL * n)
                .enumerate()
                .for_each(|(b, rows)| {
                    let (r0, h) = (b * PANEL, rows.len() / n);
                    gemm_view(
                        h,
                        r0 + h,
                        w,
                        &mut rows[k1..],
                        n,
                        true,
                        (&panel[r0 * w..], w, 1),
                        (&panel, 1, w),
                        -1.0,
                    );
                });
            k0 = k1;
        }
        for i in 0..n {
            a[i * n + i + 1..(i + 1) * n].fill(0.0);
        }
        Some(Cholesky { n, l: a })
    }

    /// Solves `(M + λI) x = q`.
    pub fn solve(&self, q: &[f64]) -> Vec<f64> {
        self.backward(&self.forward(q))
    }

    /// Solves `L y = q`: `|y|² = qᵀ (M + λI)⁻¹ q`, and `⟨L⁻¹ a, L⁻¹ b⟩ = aᵀ (M + λI)⁻¹ b`.
    pub fn forward(&self, q: &[f64]) -> Vec<f64> {
        let mut y = q.to_vec();
        solve_lower(&mut y, &self.l, self.n, 0);
        y
    }

    /// [`Cholesky::forward`] of each row of `q` (`rows × n`, row-major): `Y` with `Y Lᵀ = Q`.
    /// Blocked like [`Cholesky::damped`]: each panel of columns is first updated by one matrix
    /// product per earlier panel, then solved within itself.
    pub fn forward_rows(&self, q: &[f64]) -> Vec<f64> {
        let n = self.n;
        assert_eq!(
            q.len() % n.max(1),
            0,
            "Cholesky::forward_rows: rows of n values"
        );
        let rows = q.len().checked_div(n).unwrap_or(0);
        let panels: Vec<(usize, usize)> = (0..n)
            .step_by(PANEL)
            .map(|k0| (k0, (k0 + PANEL).min(n)))
            .collect();
        // Y by panels of columns, each `rows × width`.
        let mut done: Vec<Vec<f64>> = Vec::with_capacity(panels.len());
        for &(k0, k1) in &panels {
            let w = k1 - k0;
            let mut cur: Vec<f64> = (0..rows)
                .flat_map(|r| q[r * n + k0..r * n + k1].iter().copied())
                .collect();
            for (y, &(j0, j1)) in done.iter().zip(&panels) {
                gemm_view(
                    rows,
                    w,
                    j1 - j0,
                    &mut cur,
                    w,
                    true,
                    (y, j1 - j0, 1),
                    (&self.l[k0 * n + j0..], 1, n),
                    -1.0,
                );
            }
            for y in cur.chunks_mut(w) {
                solve_lower(y, &self.l, n, k0);
            }
            done.push(cur);
        }
        let mut out = vec![0.0f64; rows * n];
        for (y, &(k0, k1)) in done.iter().zip(&panels) {
            let w = k1 - k0;
            for r in 0..rows {
                out[r * n + k0..r * n + k1].copy_from_slice(&y[r * w..(r + 1) * w]);
            }
        }
        out
    }

    /// Solves `Lᵀ x = y` (by rows of `L`: once `x_i` is known, it is taken out of every equation
    /// above it).
    pub fn backward(&self, y: &[f64]) -> Vec<f64> {
        let (n, l) = (self.n, &self.l);
        let mut x = y.to_vec();
        for i in (0..n).rev() {
            x[i] /= l[i * n + i];
            let (xi, row) = (x[i], &l[i * n..i * n + i]);
            for (xk, lik) in x[..i].iter_mut().zip(row) {
                *xk -= lik * xi;
            }
        }
        x
    }
}

/// The eigendecomposition `A = V diag(values) Vᵀ` of a symmetric matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetricEigen {
    /// Eigenvalues, ascending.
    pub values: Vec<f64>,
    /// Eigenvectors as the columns of an `n × n` row-major matrix (column `j` belongs to
    /// `values[j]`), orthonormal.
    pub vectors: Vec<f64>,
}

/// The eigendecomposition of the symmetric `n × n` matrix `a` (row-major; only symmetric input is
/// meaningful): Householder reduction to tridiagonal form, then implicit QL iterations with
/// Wilkinson shifts (Golub & Van Loan, *Matrix Computations*, §8.3), about `9n³` flops in all —
/// a 1,000 × 1,000 factor (an output head's whole vocabulary side) in seconds.
pub fn symmetric_eigen(a: &[f64], n: usize) -> SymmetricEigen {
    let (mut d, mut e, mut qt) = tridiagonalize(a, n);
    tridiagonal_eigen(&mut d, &mut e, &mut qt, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[i].total_cmp(&d[j]));
    let values = order.iter().map(|&i| d[i]).collect();
    let mut vectors = vec![0.0f64; n * n];
    for (col, &from) in order.iter().enumerate() {
        for (k, q) in qt[from * n..(from + 1) * n].iter().enumerate() {
            vectors[k * n + col] = *q;
        }
    }
    SymmetricEigen { values, vectors }
}

/// `A = Q T Qᵀ` with `T` tridiagonal: returns `T`'s diagonal, its off-diagonal (`e[i]` couples
/// `i` and `i + 1`; `n − 1` values, padded with a zero) and `Qᵀ` (row-major: row `j` is `Q`'s
/// column `j`). Each step `k` reflects the entries of column `k` below `k + 1` away by
/// `H = I − β v vᵀ`, updating the trailing block as `B − v wᵀ − w vᵀ` with `p = β B v` and
/// `w = p − (β pᵀv / 2) v`.
fn tridiagonalize(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut reflectors: Vec<(usize, Vec<f64>, f64)> = Vec::new();
    for k in 0..n.saturating_sub(2) {
        let x = &a[k * n + k + 1..(k + 1) * n];
        let alpha = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        if alpha == 0.0 {
            continue;
        }
        let r = if x[0] > 0.0 { -alpha } else { alpha };
        let mut v = x.to_vec();
        v[0] -= r;
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv == 0.0 {
            continue;
        }
        let beta = 2.0 / vv;
        let m = n - k - 1;
        let at = |i: usize, j: usize| (k + 1 + i) * n + k + 1 + j;
        let p: Vec<f64> = (0..m)
            .map(|i| {
                let row = &a[at(i, 0)..at(i, 0) + m];
                beta * row.iter().zip(&v).map(|(x, y)| x * y).sum::<f64>()
            })
            .collect();
        let half = beta * p.iter().zip(&v).map(|(x, y)| x * y).sum::<f64>() / 2.0;
        let w: Vec<f64> = p.iter().zip(&v).map(|(p, v)| p - half * v).collect();
        for i in 0..m {
            let (vi, wi) = (v[i], w[i]);
            let row = &mut a[at(i, 0)..at(i, 0) + m];
            for ((x, vj), wj) in row.iter_mut().zip(&v).zip(&w) {
                *x -= vi * wj + wi * vj;
            }
        }
        a[k * n + k + 1] = r;
        a[(k + 1) * n + k] = r;
        for j in k + 2..n {
            a[k * n + j] = 0.0;
            a[j * n + k] = 0.0;
        }
        reflectors.push((k, v, beta));
    }
    let d: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    let e: Vec<f64> = (0..n)
        .map(|i| if i + 1 < n { a[i * n + i + 1] } else { 0.0 })
        .collect();
    // Q = H_0 H_1 ⋯, accumulated backwards (Q ← H_k Q touches rows k + 1.. only), then
    // transposed.
    let mut q = vec![0.0f64; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    for (k, v, beta) in reflectors.iter().rev() {
        let lo = k + 1;
        // u = vᵀ Q[lo.., lo..], then Q[lo.., lo..] −= β v uᵀ.
        let mut u = vec![0.0f64; n - lo];
        for (i, vi) in v.iter().enumerate() {
            let row = &q[(lo + i) * n + lo..(lo + i + 1) * n];
            u.iter_mut().zip(row).for_each(|(u, x)| *u += vi * x);
        }
        for (i, vi) in v.iter().enumerate() {
            let row = &mut q[(lo + i) * n + lo..(lo + i + 1) * n];
            row.iter_mut()
                .zip(&u)
                .for_each(|(x, u)| *x -= beta * vi * u);
        }
    }
    let mut qt = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            qt[j * n + i] = q[i * n + j];
        }
    }
    (d, e, qt)
}

/// Diagonalizes the symmetric tridiagonal `(d, e)` in place by implicit QR sweeps with
/// Wilkinson shifts, each a chase of the bulge by Givens rotations `R` (`T ← R T Rᵀ`), applied to
/// the rows of `qt` (`Qᵀ ← R Qᵀ`), so that `A = Qᵀᵀ diag(d) Qᵀ` throughout. An off-diagonal
/// value below `ε (|d_i| + |d_{i+1}|)` splits the matrix.
fn tridiagonal_eigen(d: &mut [f64], e: &mut [f64], qt: &mut [f64], n: usize) {
    let negligible =
        |e: f64, a: f64, b: f64| e.abs() <= f64::EPSILON * (a.abs() + b.abs()) || e.abs() < 1e-300;
    let mut m = n.saturating_sub(1);
    let mut iterations = 0;
    while m > 0 {
        // The unreduced block l..=m at the bottom.
        let mut l = m;
        while l > 0 && !negligible(e[l - 1], d[l - 1], d[l]) {
            l -= 1;
        }
        if l == m {
            e[m - 1] = 0.0;
            m -= 1;
            iterations = 0;
            continue;
        }
        if l > 0 {
            e[l - 1] = 0.0;
        }
        iterations += 1;
        if iterations > 60 {
            // Never seen; the off-diagonal left is below the matrix's rounding anyway.
            e[m - 1] = 0.0;
            m -= 1;
            iterations = 0;
            continue;
        }
        // Wilkinson's shift: the eigenvalue of the trailing 2 × 2 block nearer d[m].
        let half = (d[m - 1] - d[m]) / 2.0;
        let em = e[m - 1];
        let sign = if half >= 0.0 { 1.0 } else { -1.0 };
        let mu = d[m] - em * em / (half + sign * half.hypot(em));
        let (mut x, mut z) = (d[l] - mu, e[l]);
        for k in l..m {
            let r = x.hypot(z);
            let (c, s) = if r == 0.0 { (1.0, 0.0) } else { (x / r, z / r) };
            if k > l {
                e[k - 1] = r;
            }
            let (a, b, cc) = (d[k], e[k], d[k + 1]);
            d[k] = c * c * a + 2.0 * c * s * b + s * s * cc;
            d[k + 1] = s * s * a - 2.0 * c * s * b + c * c * cc;
            e[k] = c * s * (cc - a) + (c * c - s * s) * b;
            if k + 1 < m {
                // The bulge at (k, k + 2), chased by the next rotation.
                z = s * e[k + 1];
                e[k + 1] *= c;
                x = e[k];
            }
            let (top, bottom) = qt.split_at_mut((k + 1) * n);
            let (rk, rk1) = (&mut top[k * n..], &mut bottom[..n]);
            for (p, q) in rk.iter_mut().zip(rk1.iter_mut()) {
                let (u, v) = (*p, *q);
                *p = c * u + s * v;
                *q = -s * u + c * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `A = V diag(λ) Vᵀ` and `VᵀV = I` to rounding, on random symmetric matrices of sizes 0 to
    /// 12, the zero and identity matrices (repeated eigenvalues) and a matrix of known spectrum.
    #[test]
    fn eigendecomposition_reconstructs_the_matrix_with_orthonormal_vectors() {
        let check = |a: &[f64], n: usize| -> SymmetricEigen {
            let e = symmetric_eigen(a, n);
            assert_eq!((e.values.len(), e.vectors.len()), (n, n * n));
            assert!(e.values.windows(2).all(|w| w[0] <= w[1]), "{:?}", e.values);
            let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(1.0);
            for i in 0..n {
                for j in 0..n {
                    let r: f64 = (0..n)
                        .map(|k| e.vectors[i * n + k] * e.values[k] * e.vectors[j * n + k])
                        .sum();
                    assert!((r - a[i * n + j]).abs() <= 1e-11 * norm, "n {n} ({i},{j})");
                    let o: f64 = (0..n)
                        .map(|k| e.vectors[k * n + i] * e.vectors[k * n + j])
                        .sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((o - want).abs() <= 1e-12, "n {n} VᵀV ({i},{j}) = {o}");
                }
            }
            e
        };
        let mut rng = familiar::rng::SplitMix64::new(19);
        for n in (0..=12).chain([40, 97]) {
            let r = rng.normals(n * n, 1.0);
            let a: Vec<f64> = (0..n * n)
                .map(|k| f64::from(r[k] + r[(k % n) * n + k / n]))
                .collect();
            check(&a, n);
        }
        // A factor's shape: a sum of a few outer products (most eigenvalues zero), with one
        // coordinate far larger than the others (a frequent token of a vocabulary).
        for (n, terms) in [(30, 3), (64, 10)] {
            let mut a = vec![0.0f64; n * n];
            for _ in 0..terms {
                let mut v: Vec<f64> = rng.normals(n, 1.0).iter().map(|&x| f64::from(x)).collect();
                v[1] *= 1e3;
                for i in 0..n {
                    for j in 0..n {
                        a[i * n + j] += v[i] * v[j];
                    }
                }
            }
            let e = check(&a, n);
            let zero = e
                .values
                .iter()
                .filter(|v| v.abs() < 1e-9 * e.values[n - 1])
                .count();
            assert_eq!(zero, n - terms, "{:?}", e.values);
        }
        assert_eq!(check(&[0.0; 9], 3).values, vec![0.0; 3]);
        let mut eye = vec![0.0; 16];
        (0..4).for_each(|i| eye[i * 4 + i] = 1.0);
        assert_eq!(check(&eye, 4).values, vec![1.0; 4]);
        // [[2,1,0],[1,2,1],[0,1,2]]: 2 − √2, 2, 2 + √2, with (1, −√2, 1)/2 for the smallest.
        let e = check(&[2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0], 3);
        let s = 2f64.sqrt();
        for (got, want) in e.values.iter().zip([2.0 - s, 2.0, 2.0 + s]) {
            assert!((got - want).abs() < 1e-12, "{:?}", e.values);
        }
        let sign = e.vectors[0].signum();
        for (k, want) in [0.5, -s / 2.0, 0.5].iter().enumerate() {
            assert!(
                (sign * e.vectors[k * 3] - want).abs() < 1e-12,
                "{:?}",
                e.vectors
            );
        }
    }

    #[test]
    fn solves_damped_systems_and_refuses_indefinite_ones() {
        // M = [[2, 1], [1, 2]], λ = 1: (M + I) x = [1, 2] → x = [1/8, 5/8].
        let c = Cholesky::damped(&[2.0, 1.0, 1.0, 2.0], 2, 1.0).unwrap();
        let x = c.solve(&[1.0, 2.0]);
        assert!(
            (x[0] - 0.125).abs() < 1e-12 && (x[1] - 0.625).abs() < 1e-12,
            "{x:?}"
        );
        assert!(Cholesky::damped(&[0.0], 1, 0.0).is_none());
        assert!(Cholesky::damped(&[1.0, 2.0, 2.0, 1.0], 2, 0.0).is_none());
        // A random SPD matrix of size 7: M x recovers q.
        let mut rng = familiar::rng::SplitMix64::new(4);
        let a = rng.normals(49, 1.0);
        let mut m = vec![0.0; 49];
        for i in 0..7 {
            for j in 0..7 {
                m[i * 7 + j] = (0..7)
                    .map(|k| a[i * 7 + k] as f64 * a[j * 7 + k] as f64)
                    .sum();
            }
        }
        let q: Vec<f64> = (0..7).map(|i| i as f64 - 3.0).collect();
        let x = Cholesky::damped(&m, 7, 0.5).unwrap().solve(&q);
        for i in 0..7 {
            let mx: f64 = (0..7)
                .map(|j| (m[i * 7 + j] + if i == j { 0.5 } else { 0.0 }) * x[j])
                .sum();
            assert!((mx - q[i]).abs() < 1e-9, "{mx} vs {}", q[i]);
        }
    }

    /// The blocked factorization across several panels (and a partial last one): `L Lᵀ`
    /// reconstructs `M + λI`, `L` is lower triangular, solves leave residuals at rounding, and a
    /// matrix that stops being positive definite in a later panel is refused.
    #[test]
    fn blocked_factorization_reconstructs_the_matrix() {
        for n in [1, 63, 64, 65, 200] {
            let mut rng = familiar::rng::SplitMix64::new(n as u64);
            let k = n + 3;
            let a = rng.normals(n * k, 1.0);
            let mut m = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    m[i * n + j] = (0..k)
                        .map(|p| a[i * k + p] as f64 * a[j * k + p] as f64)
                        .sum();
                }
            }
            let c = Cholesky::damped(&m, n, 0.25).unwrap();
            for i in 0..n {
                for j in 0..n {
                    let llt: f64 = (0..n).map(|p| c.l[i * n + p] * c.l[j * n + p]).sum();
                    let want = m[i * n + j] + if i == j { 0.25 } else { 0.0 };
                    assert!(
                        (llt - want).abs() < 1e-9 * (1.0 + want.abs()),
                        "n {n} ({i}, {j})"
                    );
                    if j > i {
                        assert_eq!(c.l[i * n + j], 0.0);
                    }
                }
            }
            let q: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
            let x = c.solve(&q);
            for i in 0..n {
                let mx: f64 = (0..n)
                    .map(|j| (m[i * n + j] + if i == j { 0.25 } else { 0.0 }) * x[j])
                    .sum();
                assert!((mx - q[i]).abs() < 1e-8, "n {n}: {mx} vs {}", q[i]);
            }
            // Many rows at once equal one at a time.
            let rows: Vec<f64> = (0..3 * n).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
            let many = c.forward_rows(&rows);
            for r in 0..3 {
                let one = c.forward(&rows[r * n..(r + 1) * n]);
                for (a, b) in many[r * n..(r + 1) * n].iter().zip(&one) {
                    assert!(
                        (a - b).abs() < 1e-9 * (1.0 + b.abs()),
                        "n {n} row {r}: {a} vs {b}"
                    );
                }
            }
            // A negative pivot at row 150 (a later panel): refused.
            if n == 200 {
                let mut bad = m.clone();
                bad[150 * n + 150] = -1e6;
                assert!(Cholesky::damped(&bad, n, 0.25).is_none());
            }
        }
    }
}

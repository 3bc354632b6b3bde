//! Dense symmetric linear algebra for preconditioners (f64 throughout): a Cholesky factorization
//! of `M + λI`, computed once and used for many right-hand sides, and the eigendecomposition of a
//! symmetric matrix by cyclic Jacobi rotations (exact to rounding for the small factors of
//! projected layers: rank × rank).

/// The lower-triangular factor `L` of `M + λI = L Lᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cholesky {
    n: usize,
    l: Vec<f64>,
}

impl Cholesky {
    /// Factors `M + λI` for symmetric `M` (`n × n`, row-major; only the lower triangle is read);
    /// `None` if it is not positive definite.
    pub fn damped(m: &[f64], n: usize, lambda: f64) -> Option<Cholesky> {
        let mut l = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
                let dot: f64 = ri.iter().zip(rj).map(|(a, b)| a * b).sum();
                let s = m[i * n + j] + if i == j { lambda } else { 0.0 } - dot;
                if i == j {
                    if s <= 0.0 || !s.is_finite() {
                        return None;
                    }
                    l[i * n + i] = s.sqrt();
                } else {
                    l[i * n + j] = s / l[j * n + j];
                }
            }
        }
        Some(Cholesky { n, l })
    }

    /// Solves `(M + λI) x = q`.
    pub fn solve(&self, q: &[f64]) -> Vec<f64> {
        self.backward(&self.forward(q))
    }

    /// Solves `L y = q`: `|y|² = qᵀ (M + λI)⁻¹ q`, and `⟨L⁻¹ a, L⁻¹ b⟩ = aᵀ (M + λI)⁻¹ b`.
    pub fn forward(&self, q: &[f64]) -> Vec<f64> {
        let (n, l) = (self.n, &self.l);
        let mut y = vec![0.0f64; n];
        for i in 0..n {
            let dot: f64 = l[i * n..i * n + i].iter().zip(&y).map(|(a, b)| a * b).sum();
            y[i] = (q[i] - dot) / l[i * n + i];
        }
        y
    }

    /// Solves `Lᵀ x = y`.
    pub fn backward(&self, y: &[f64]) -> Vec<f64> {
        let (n, l) = (self.n, &self.l);
        let mut x = vec![0.0f64; n];
        for i in (0..n).rev() {
            let mut s = y[i];
            for k in i + 1..n {
                s -= l[k * n + i] * x[k];
            }
            x[i] = s / l[i * n + i];
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
/// meaningful) by cyclic Jacobi rotations, until the off-diagonal mass is below 1e-14 of the
/// matrix's (at most 100 sweeps; a handful suffice).
pub fn symmetric_eigen(a: &[f64], n: usize) -> SymmetricEigen {
    let mut a = a.to_vec();
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                // The rotation J (c, s) that zeroes a[p][q]: A ← Jᵀ A J, V ← V J.
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta == 0.0 {
                    1.0
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[i * n + i].total_cmp(&a[j * n + j]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0.0f64; n * n];
    for (col, &from) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + col] = v[k * n + from];
        }
    }
    SymmetricEigen { values, vectors }
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
        for n in 0..=12 {
            let r = rng.normals(n * n, 1.0);
            let a: Vec<f64> = (0..n * n)
                .map(|k| f64::from(r[k] + r[(k % n) * n + k / n]))
                .collect();
            check(&a, n);
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
}

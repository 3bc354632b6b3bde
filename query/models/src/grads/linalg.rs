//! Dense symmetric solves for preconditioners: a Cholesky factorization of `M + λI`, computed once
//! and used for many right-hand sides (f64 throughout).

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
        let (n, l) = (self.n, &self.l);
        let mut y = vec![0.0f64; n];
        for i in 0..n {
            let dot: f64 = l[i * n..i * n + i].iter().zip(&y).map(|(a, b)| a * b).sum();
            y[i] = (q[i] - dot) / l[i * n + i];
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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

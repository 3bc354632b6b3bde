//! The statistics familiar's reports share, with one semantics for degenerate input: a statistic
//! that is undefined for its input — fewer points than it needs, sides of different lengths, a
//! non-finite value, a constant side — is `None`, never a number. Callers that fold undefined
//! values into an aggregate say how (e.g. the attribution report counts an undefined correlation
//! as 0 in its means).

/// Average ranks (1-based) of `v`: tied values share the mean of the ranks they span. Values
/// are ordered by [`f64::total_cmp`].
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) hold ranks i+1 ..= j+1.
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// `v` centred and scaled to unit Euclidean norm, so that the dot product of two such vectors is
/// their Pearson correlation; `None` for a constant vector, fewer than two values, or a
/// non-finite value.
pub fn standardized(v: &[f64]) -> Option<Vec<f64>> {
    if v.len() < 2 || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let c: Vec<f64> = v.iter().map(|x| x - m).collect();
    let norm = c.iter().map(|x| x * x).sum::<f64>().sqrt();
    (norm > 0.0).then(|| c.into_iter().map(|x| x / norm).collect())
}

/// Pearson's correlation, in [-1, 1]; `None` when undefined (fewer than two pairs, sides of
/// different lengths, a non-finite value, a constant side).
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 2 || y.len() != n || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's rank correlation: Pearson's on [`average_ranks`] (ties share their mean rank);
/// `None` when undefined, as for [`pearson`].
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// A least-squares line `y = intercept + slope · x`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LinearFit {
    /// Value at x = 0.
    pub intercept: f64,
    /// Change of y per unit of x.
    pub slope: f64,
    /// Coefficient of determination; 1 when y is constant (the line fits it exactly).
    pub r2: f64,
    /// Points fitted.
    pub n: usize,
}

/// Ordinary least squares of `y` on `x`; `None` when undefined (fewer than two points, sides of
/// different lengths, a non-finite value, a constant x).
pub fn fit_linear(x: &[f64], y: &[f64]) -> Option<LinearFit> {
    let n = x.len();
    if n < 2 || y.len() != n || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (mx, my) = (
        x.iter().sum::<f64>() / n as f64,
        y.iter().sum::<f64>() / n as f64,
    );
    let sxx: f64 = x.iter().map(|v| (v - mx) * (v - mx)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let syy: f64 = y.iter().map(|v| (v - my) * (v - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 {
        (sxy * sxy) / (sxx * syy)
    } else {
        1.0
    };
    Some(LinearFit {
        intercept: my - slope * mx,
        slope,
        r2,
        n,
    })
}

/// A power law `s_r = c · r^−α` fitted on log–log.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq)]
pub struct PowerLaw {
    /// Exponent α.
    pub alpha: f64,
    /// `ln c`.
    pub log_c: f64,
    /// R² of the log–log fit.
    pub r2: f64,
    /// Ranks fitted.
    pub ranks: usize,
}

/// Least squares of `ln s_r` on `ln r` for `r = 1..=n` over the leading positive values of
/// `ranked` (sorted descending); `None` with fewer than 3 positive values.
pub fn fit_power_law(ranked: &[f64], n: usize) -> Option<PowerLaw> {
    let (x, y): (Vec<f64>, Vec<f64>) = ranked
        .iter()
        .take(n)
        .take_while(|&&s| s > 0.0)
        .enumerate()
        .map(|(i, s)| (((i + 1) as f64).ln(), s.ln()))
        .unzip();
    if x.len() < 3 {
        return None;
    }
    let fit = fit_linear(&x, &y)?;
    Some(PowerLaw {
        alpha: -fit.slope,
        log_c: fit.intercept,
        r2: fit.r2,
        ranks: fit.n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0, 20.0]),
            vec![2.0, 4.0, 4.0, 1.0, 4.0]
        );
        assert!(average_ranks(&[]).is_empty());
    }

    #[test]
    fn correlations_against_hand_computed_values_and_degenerate_input() {
        // x = 1..4, y = 2, 4, 5, 9: sxy = 11, sxx = 5, syy = 26.
        let r = pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 5.0, 9.0]).unwrap();
        assert!((r - 11.0 / (5.0f64 * 26.0).sqrt()).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 1000.0]), Some(1.0));
        assert_eq!(spearman(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]), Some(-1.0));
        // x ranks 1 2 3 4, y ranks 1 3 2 4: Σd² = 2, ρ = 1 − 6·2/(4·15) = 0.8.
        let rs = spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 30.0, 20.0, 40.0]).unwrap();
        assert!((rs - 0.8).abs() < 1e-12, "{rs}");
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&a, &[2.0, 4.0, 6.0, 8.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&a, &[4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        // Monotone but not linear: Spearman 1, Pearson below 1.
        assert!(pearson(&a, &[1.0, 10.0, 100.0, 1000.0]).unwrap() < 0.99);
        // x = [1,2,3], y = [1,3,2]: r = 0.5.
        assert!((pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap() - 0.5).abs() < 1e-12);
        // Ties: x = [1,2,2,3] (ranks 1,2.5,2.5,4), y = [1,2,3,4]: r_s = 4.5 / sqrt(4.5 · 5).
        let want = 4.5 / (4.5f64 * 5.0).sqrt();
        assert!((spearman(&[1.0, 2.0, 2.0, 3.0], &a).unwrap() - want).abs() < 1e-12);
        let a = standardized(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = standardized(&[2.0, 4.0, 5.0, 9.0]).unwrap();
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot - r).abs() < 1e-12);
        for (x, y) in [
            (&[1.0, 1.0, 1.0][..], &[1.0, 2.0, 3.0][..]),
            (&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]),
            (&[1.0], &[2.0]),
            (&[], &[]),
            (&[1.0, 2.0, 3.0], &[1.0, 2.0]),
            (&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]),
            (&[1.0, f64::INFINITY, 3.0], &[1.0, 2.0, 3.0]),
        ] {
            assert_eq!(pearson(x, y), None, "{x:?} {y:?}");
            assert_eq!(spearman(x, y), None, "{x:?} {y:?}");
            assert_eq!(fit_linear(x, y).filter(|_| x.len() != y.len()), None);
        }
        assert_eq!(standardized(&[2.0, 2.0]), None);
    }

    #[test]
    fn fits_recover_planted_lines_and_power_laws() {
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 0.5 - 2.0 * v).collect();
        let f = fit_linear(&x, &y).unwrap();
        assert!((f.intercept - 0.5).abs() < 1e-12 && (f.slope + 2.0).abs() < 1e-12);
        assert!((f.r2 - 1.0).abs() < 1e-12 && f.n == 10);
        // A constant y is fitted exactly by a flat line.
        let flat = fit_linear(&x, &[3.0; 10]).unwrap();
        assert_eq!((flat.slope, flat.r2), (0.0, 1.0));
        assert_eq!(fit_linear(&[2.0; 3], &[1.0, 2.0, 3.0]), None);
        // s_r = 5 r^-1.5, then non-positive values, which end the fit.
        let mut s: Vec<f64> = (1..=20).map(|r| 5.0 * f64::from(r).powf(-1.5)).collect();
        s.extend([0.0, -1.0]);
        let p = fit_power_law(&s, 100).unwrap();
        assert!((p.alpha - 1.5).abs() < 1e-9 && (p.log_c - 5f64.ln()).abs() < 1e-9);
        assert_eq!(p.ranks, 20);
        assert_eq!(fit_power_law(&[1.0, 0.5], 10), None);
    }
}

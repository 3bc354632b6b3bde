//! Activation density of hidden states (Jin et al. 2026, "Farther the Shift, Sparser the
//! Representation") and MLP activity (Li et al. 2023, "The Lazy Neuron Phenomenon").
//!
//! For a hidden state h ∈ ℝ^d (one token, one layer):
//! - top-k% energy: the share of Σ h_i² held by the ⌈k·d/100⌉ largest |h_i| (k = 1, 5, 10);
//! - Hoyer sparsity: (√d − ‖h‖₁/‖h‖₂) / (√d − 1), 0 for a flat vector, 1 for a one-hot one.
//!
//! For the matrix H ∈ ℝ^{T×d} of a probe's hidden states at one layer:
//! - effective-rank ratio: exp(−Σ p_i ln p_i) / min(T, d), with p_i = σ_i / Σσ over H's singular
//!   values (Roy & Vetterli 2007's effective rank, normalized).
//!
//! MLP activity: the fraction of MLP units whose activation (after the non-linearity; for gated MLPs
//! act(gate)·up) exceeds a threshold, over all tokens, and at the last token.
//!
//! Each metric is reported at the probe's last token and averaged over its tokens.

/// Per-token metrics of one hidden state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenMetrics {
    /// Top-1%, 5%, 10% energy.
    pub top_energy: [f64; 3],
    /// Hoyer sparsity.
    pub hoyer: f64,
}

/// The percentages of the top-k energies.
pub const TOP_K: [f64; 3] = [1.0, 5.0, 10.0];

/// Metrics of one hidden state.
pub fn token_metrics(h: &[f32]) -> TokenMetrics {
    let d = h.len();
    let mut sq: Vec<f64> = h.iter().map(|&x| f64::from(x) * f64::from(x)).collect();
    let total: f64 = sq.iter().sum();
    sq.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut top_energy = [0.0; 3];
    for (slot, k) in top_energy.iter_mut().zip(TOP_K) {
        let m = ((k * d as f64 / 100.0).ceil() as usize).clamp(1, d.max(1));
        *slot = if total > 0.0 {
            sq[..m].iter().sum::<f64>() / total
        } else {
            0.0
        };
    }
    let l1: f64 = h.iter().map(|&x| f64::from(x).abs()).sum();
    let l2 = total.sqrt();
    let sd = (d as f64).sqrt();
    let hoyer = if l2 > 0.0 && d > 1 {
        (sd - l1 / l2) / (sd - 1.0)
    } else {
        0.0
    };
    TokenMetrics { top_energy, hoyer }
}

/// Effective-rank ratio of a `rows × cols` matrix (row-major).
pub fn effective_rank_ratio(m: &[f32], rows: usize, cols: usize) -> f64 {
    let n = rows.min(cols);
    if n == 0 {
        return 0.0;
    }
    // Gram matrix on the smaller side; its eigenvalues are the squared singular values.
    // Element (i, k) of M (rows ≤ cols) or of Mᵀ, whichever has n rows; its Gram matrix is n × n.
    let (inner, at): (usize, &dyn Fn(usize, usize) -> f64) = if rows <= cols {
        (cols, &|i, k| f64::from(m[i * cols + k]))
    } else {
        (rows, &|i, k| f64::from(m[k * cols + i]))
    };
    let mut g = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let s: f64 = (0..inner).map(|k| at(i, k) * at(j, k)).sum();
            g[i * n + j] = s;
            g[j * n + i] = s;
        }
    }
    let eig = symmetric_eigenvalues(&g, n);
    // Eigenvalues of the Gram matrix below its largest by 1e-12 are rounding noise (their square
    // roots would add spurious singular values of relative size 1e-6).
    let floor = eig.iter().copied().fold(0.0f64, f64::max) * 1e-12;
    let sigma: Vec<f64> = eig
        .into_iter()
        .map(|l| if l > floor { l.sqrt() } else { 0.0 })
        .collect();
    let total: f64 = sigma.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = sigma
        .iter()
        .map(|s| s / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp() / n as f64
}

/// Eigenvalues of a symmetric `n × n` matrix (row-major), ascending
/// ([`crate::grads::linalg::symmetric_eigen`]).
pub fn symmetric_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
    crate::grads::linalg::symmetric_eigen(a, n).values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_metrics_of_known_vectors() {
        let one_hot: Vec<f32> = (0..100).map(|i| if i == 7 { 3.0 } else { 0.0 }).collect();
        let m = token_metrics(&one_hot);
        assert_eq!(m.top_energy, [1.0, 1.0, 1.0]);
        assert!((m.hoyer - 1.0).abs() < 1e-12);
        let flat = vec![2.0f32; 100];
        let m = token_metrics(&flat);
        assert!((m.top_energy[0] - 0.01).abs() < 1e-12);
        assert!((m.top_energy[1] - 0.05).abs() < 1e-12);
        assert!((m.top_energy[2] - 0.10).abs() < 1e-12);
        assert!(m.hoyer.abs() < 1e-12);
        // 1..=10: the top 10% of 10 values is the largest one.
        let v: Vec<f32> = (1..=10).map(|i| i as f32).collect();
        let m = token_metrics(&v);
        assert!((m.top_energy[2] - 100.0 / 385.0).abs() < 1e-12);
        let (l1, l2, sd) = (55.0f64, 385.0f64.sqrt(), 10.0f64.sqrt());
        assert!((m.hoyer - (sd - l1 / l2) / (sd - 1.0)).abs() < 1e-12);
    }

    #[test]
    fn effective_rank_of_known_matrices() {
        // Rank one: ratio 1 / min(rows, cols).
        let r1: Vec<f32> = (0..4)
            .flat_map(|i| (0..6).map(move |j| ((i + 1) * (j + 1)) as f32))
            .collect();
        assert!((effective_rank_ratio(&r1, 4, 6) - 0.25).abs() < 1e-9);
        // Orthogonal rows of equal norm: full effective rank.
        let eye: Vec<f32> = (0..3)
            .flat_map(|i| (0..5).map(move |j| if i == j { 2.0 } else { 0.0 }))
            .collect();
        assert!((effective_rank_ratio(&eye, 3, 5) - 1.0).abs() < 1e-9);
        // Singular values 3 and 1 (a diagonal matrix, tall): p = (0.75, 0.25).
        let d = [3.0f32, 0.0, 0.0, 1.0, 0.0, 0.0];
        let h: f64 = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((effective_rank_ratio(&d, 3, 2) - h.exp() / 2.0).abs() < 1e-9);
    }

    #[test]
    fn jacobi_finds_the_eigenvalues_of_a_symmetric_matrix() {
        // [[2,1,0],[1,2,1],[0,1,2]]: 2 − √2, 2, 2 + √2.
        let a = vec![2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0];
        let e = symmetric_eigenvalues(&a, 3);
        let s = 2f64.sqrt();
        for (got, want) in e.iter().zip([2.0 - s, 2.0, 2.0 + s]) {
            assert!((got - want).abs() < 1e-12, "{e:?}");
        }
    }
}

/// What to do with a probe longer than the model's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Overflow {
    /// Refuse it, naming the probe.
    Error,
    /// Keep its first tokens (the number dropped is reported).
    Truncate,
    /// Run it in consecutive windows of the context's length; token metrics cover every window,
    /// the effective rank all the tokens, "last" the last window's last token.
    Stride,
}

/// The metrics of one probe at one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStats {
    /// Layer: 0 is the embeddings, `l` the residual stream after block `l`.
    pub layer: usize,
    /// Top-k% energy at the last token.
    pub top_energy_last: [f64; 3],
    /// Top-k% energy averaged over tokens.
    pub top_energy_mean: [f64; 3],
    /// Hoyer sparsity at the last token.
    pub hoyer_last: f64,
    /// Hoyer sparsity averaged over tokens.
    pub hoyer_mean: f64,
    /// Effective-rank ratio of the tokens' hidden states.
    pub effective_rank_ratio: f64,
    /// Fraction of active MLP units at the last token (layers ≥ 1).
    pub mlp_active_last: Option<f64>,
    /// Fraction of active MLP units over all tokens (layers ≥ 1).
    pub mlp_active_mean: Option<f64>,
}

/// Runs `windows` of token ids through the model and measures every layer; a non-finite hidden
/// state or MLP activation is an error ([`crate::Error::NonFinite`]) naming the layer and token.
pub fn measure(
    model: &crate::model::Transformer,
    windows: &[Vec<u32>],
    threshold: f32,
) -> crate::Result<Vec<LayerStats>> {
    let layers = model.config.layers;
    let hidden = model.config.hidden;
    // Per layer: all tokens' hidden states (row-major), and MLP counts.
    let mut states: Vec<Vec<f32>> = vec![Vec::new(); layers + 1];
    let mut mlp: Vec<(u64, u64)> = vec![(0, 0); layers + 1];
    let mut mlp_last: Vec<f64> = vec![0.0; layers + 1];
    for (wi, w) in windows.iter().enumerate() {
        let out = model.forward(
            std::slice::from_ref(w),
            crate::model::Capture {
                hidden_states: true,
                mlp_activations: true,
                linear: None,
            },
        )?;
        let bug = crate::model::transformer::candle_error("activations");
        // Non-finite states would give NaN metrics (and an eigenvalue iteration on NaN).
        let check = |what: &str, l: usize, rows: &[Vec<f32>]| -> crate::Result<()> {
            for (t, r) in rows.iter().enumerate() {
                let window = if windows.len() > 1 {
                    format!("window {wi}, ")
                } else {
                    String::new()
                };
                crate::model::finite::check_values(
                    format!("{window}layer {l}, token {t}: the {what}"),
                    r,
                )?;
            }
            Ok(())
        };
        for (l, h) in out.hidden_states.iter().enumerate() {
            let rows: Vec<Vec<f32>> = h.squeeze(0).and_then(|t| t.to_vec2()).map_err(&bug)?;
            check("hidden state", l, &rows)?;
            for r in rows {
                states[l].extend_from_slice(&r);
            }
        }
        for (l, a) in out.mlp_activations.iter().enumerate() {
            let rows: Vec<Vec<f32>> = a.squeeze(0).and_then(|t| t.to_vec2()).map_err(&bug)?;
            check("MLP activation", l + 1, &rows)?;
            for r in &rows {
                mlp[l + 1].0 += r.iter().filter(|&&x| x > threshold).count() as u64;
                mlp[l + 1].1 += r.len() as u64;
            }
            if let Some(last) = rows.last() {
                mlp_last[l + 1] =
                    last.iter().filter(|&&x| x > threshold).count() as f64 / last.len() as f64;
            }
        }
    }
    let mut out = Vec::with_capacity(layers + 1);
    for (l, m) in states.iter().enumerate() {
        let tokens = m.len() / hidden;
        let per: Vec<TokenMetrics> = m.chunks(hidden).map(token_metrics).collect();
        let last = per.last().copied().unwrap_or(TokenMetrics {
            top_energy: [0.0; 3],
            hoyer: 0.0,
        });
        let mean = |f: &dyn Fn(&TokenMetrics) -> f64| {
            per.iter().map(f).sum::<f64>() / tokens.max(1) as f64
        };
        out.push(LayerStats {
            layer: l,
            top_energy_last: last.top_energy,
            top_energy_mean: [
                mean(&|t| t.top_energy[0]),
                mean(&|t| t.top_energy[1]),
                mean(&|t| t.top_energy[2]),
            ],
            hoyer_last: last.hoyer,
            hoyer_mean: mean(&|t| t.hoyer),
            effective_rank_ratio: effective_rank_ratio(m, tokens, hidden),
            mlp_active_last: (l > 0).then(|| mlp_last[l]),
            mlp_active_mean: (l > 0).then(|| mlp[l].0 as f64 / mlp[l].1.max(1) as f64),
        });
    }
    Ok(out)
}

/// One probe of a probes file: its id (the line number when the file gives none), its text and
/// any labels, kept as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Line of the probes file.
    pub line: u64,
    /// `id` (a string as is, another JSON value as JSON), or the line number.
    pub id: String,
    /// The text whose activations are measured.
    pub text: String,
    /// `labels`, any JSON value.
    pub labels: Option<serde_json::Value>,
}

/// Reads a probes file (JSONL, `{"id"?, "text", "labels"?}` per line; see [`familiar::input`]);
/// an empty file is an error.
pub fn read_probes(path: &std::path::Path) -> familiar::Result<Vec<Probe>> {
    parse_probes(path, &familiar::input::read_utf8(path)?)
}

/// The probes of JSONL `text` read from `path` (see [`read_probes`]).
pub fn parse_probes(path: &std::path::Path, text: &str) -> familiar::Result<Vec<Probe>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        id: Option<serde_json::Value>,
        text: String,
        labels: Option<serde_json::Value>,
    }
    let raw: Vec<(u64, Raw)> =
        familiar::input::parse_jsonl_records(path, text, "{\"id\", \"text\", \"labels\"}")?;
    if raw.is_empty() {
        return Err(familiar::Error::input(path, 0, "no probes"));
    }
    Ok(raw
        .into_iter()
        .map(|(line, r)| Probe {
            line,
            id: familiar::input::id_or_line(r.id, line),
            text: r.text,
            labels: r.labels,
        })
        .collect())
}

/// A row of the `activation_stats` table: one probe at one layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/activation_stats.json
pub struct ActivationRow {
    pub probe_id: String,
    pub model: String,
    pub layer: u64,
    pub tokens: u64,
    pub windows: u64,
    pub truncated_tokens: u64,
    pub top1_energy_last: f64,
    pub top1_energy_mean: f64,
    pub top5_energy_last: f64,
    pub top5_energy_mean: f64,
    pub top10_energy_last: f64,
    pub top10_energy_mean: f64,
    pub hoyer_last: f64,
    pub hoyer_mean: f64,
    pub effective_rank_ratio: f64,
    pub mlp_active_last: Option<f64>,
    pub mlp_active_mean: Option<f64>,
    pub labels: Option<String>,
}

impl familiar::table::TableRow for ActivationRow {
    const TABLE: &'static str = "activation_stats";
}

/// Measures every probe (read from `path` by [`read_probes`]) at every layer of `lm`, named
/// `model` in the rows; a probe longer than the context is handled as `overflow` says (refused:
/// an [`familiar::Error::Input`] saying "more than the model's context"). `on_probe` hears of
/// each probe done.
pub fn measure_probes(
    lm: &crate::measure::score::LanguageModel,
    model: &str,
    path: &std::path::Path,
    probes: &[Probe],
    overflow: Overflow,
    threshold: f32,
    on_probe: &dyn Fn(),
) -> crate::Result<Vec<ActivationRow>> {
    let window = lm.model.config.max_positions;
    let mut rows = Vec::new();
    for p in probes {
        let bad = |reason: String| crate::Error::input(path, p.line, reason);
        let ids = lm.tokenizer.encode(&p.text)?;
        if ids.is_empty() {
            return Err(bad(format!("probe {} has no tokens", p.id)));
        }
        let (windows, truncated): (Vec<Vec<u32>>, usize) = if ids.len() <= window {
            (vec![ids.clone()], 0)
        } else {
            match overflow {
                Overflow::Error => {
                    return Err(bad(format!(
                        "probe {} has {} tokens, more than the model's context of {window}",
                        p.id,
                        ids.len()
                    )))
                }
                Overflow::Truncate => (vec![ids[..window].to_vec()], ids.len() - window),
                Overflow::Stride => (ids.chunks(window).map(<[u32]>::to_vec).collect(), 0),
            }
        };
        let tokens: usize = windows.iter().map(Vec::len).sum();
        let stats = measure(&lm.model, &windows, threshold)
            .map_err(|e| bad(format!("probe {}: {e}", p.id)))?;
        for s in stats {
            rows.push(ActivationRow {
                probe_id: p.id.clone(),
                model: model.to_string(),
                layer: s.layer as u64,
                tokens: tokens as u64,
                windows: windows.len() as u64,
                truncated_tokens: truncated as u64,
                top1_energy_last: s.top_energy_last[0],
                top1_energy_mean: s.top_energy_mean[0],
                top5_energy_last: s.top_energy_last[1],
                top5_energy_mean: s.top_energy_mean[1],
                top10_energy_last: s.top_energy_last[2],
                top10_energy_mean: s.top_energy_mean[2],
                hoyer_last: s.hoyer_last,
                hoyer_mean: s.hoyer_mean,
                effective_rank_ratio: s.effective_rank_ratio,
                mlp_active_last: s.mlp_active_last,
                mlp_active_mean: s.mlp_active_mean,
                labels: p.labels.as_ref().map(|l| l.to_string()),
            });
        }
        on_probe();
    }
    Ok(rows)
}

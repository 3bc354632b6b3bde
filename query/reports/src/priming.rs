//! `familiar report priming`: priming after learning against the keyword's probability before it
//! (Sun et al. 2025), from the `priming` table of `familiar prime`.
//!
//! Per model (per run and model when the directory holds several runs' tables, `a_priming`, …):
//! Pearson's r of log10 S_prime against log10 P_before (and the least-squares line,
//! slope per decade of P_before), Spearman's ρ, the same for S_mem; the samples below and at or
//! above the threshold (1e-3 in the paper) with the mean of log10 S_prime and S_mem in each (the
//! mean of logs: ratios spread over decades); Spearman's ρ per theme. Markdown, HTML with an SVG
//! scatter on log–log axes (the threshold as a dashed line) and `summary.json`.

use std::path::{Path, PathBuf};

use familiar::error::{Error, Result};
use familiar::stats::{fit_linear, pearson, spearman};
use familiar_sql::Sql;
use serde::Serialize;

use crate::frequency::{num, sql_error};
use crate::svg::{LineChart, Series};

/// One sample's point.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// The sample.
    pub sample_id: String,
    /// Its theme.
    pub theme: String,
    /// Its keyword.
    pub keyword: String,
    /// P_before(keyword | own prefix).
    pub p_before: f64,
    /// Priming.
    pub s_prime: f64,
    /// Memorization.
    pub s_mem: f64,
}

/// The samples on one side of the threshold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    /// "p_before < T" or "p_before >= T".
    pub label: String,
    /// Samples in it.
    pub samples: usize,
    /// Mean of log10 S_prime.
    pub mean_log10_s_prime: Option<f64>,
    /// Mean of log10 S_mem.
    pub mean_log10_s_mem: Option<f64>,
}

/// One theme's correlation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThemeRow {
    /// The theme.
    pub theme: String,
    /// Samples.
    pub samples: usize,
    /// Spearman's ρ of S_prime against P_before.
    pub spearman_prime: Option<f64>,
}

/// The analysis of one model's samples.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The model.
    pub model: String,
    /// Samples.
    pub samples: usize,
    /// Pearson's r of log10 S_prime against log10 P_before.
    pub pearson_prime: Option<f64>,
    /// Spearman's ρ of S_prime against P_before.
    pub spearman_prime: Option<f64>,
    /// Slope of log10 S_prime per decade of P_before.
    pub slope_prime: Option<f64>,
    /// Intercept of that line (log10 S_prime at P_before = 1).
    pub intercept_prime: Option<f64>,
    /// Its R².
    pub r2_prime: Option<f64>,
    /// Pearson's r of log10 S_mem against log10 P_before.
    pub pearson_mem: Option<f64>,
    /// Spearman's ρ of S_mem against P_before.
    pub spearman_mem: Option<f64>,
    /// Below the threshold, then at or above it.
    pub groups: [Group; 2],
    /// Per theme.
    pub themes: Vec<ThemeRow>,
    /// The samples.
    pub points: Vec<Point>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The threshold on P_before.
    pub threshold: f64,
    /// Per model.
    pub models: Vec<ModelReport>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, s) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| s / n as f64)
}

/// Analyses one model's samples.
pub fn analyse_model(model: String, mut points: Vec<Point>, threshold: f64) -> ModelReport {
    points.sort_by(|a, b| {
        a.p_before
            .total_cmp(&b.p_before)
            .then(a.sample_id.cmp(&b.sample_id))
    });
    let lp: Vec<f64> = points.iter().map(|p| p.p_before.log10()).collect();
    let ls: Vec<f64> = points.iter().map(|p| p.s_prime.log10()).collect();
    let lm: Vec<f64> = points.iter().map(|p| p.s_mem.log10()).collect();
    let fitted = fit_linear(&lp, &ls);
    let group = |below: bool| {
        let members: Vec<&Point> = points
            .iter()
            .filter(|p| (p.p_before < threshold) == below)
            .collect();
        Group {
            label: format!("p_before {} {threshold:e}", if below { "<" } else { ">=" }),
            samples: members.len(),
            mean_log10_s_prime: mean(members.iter().map(|p| p.s_prime.log10())),
            mean_log10_s_mem: mean(members.iter().map(|p| p.s_mem.log10())),
        }
    };
    let mut themes: Vec<String> = points.iter().map(|p| p.theme.clone()).collect();
    themes.sort();
    themes.dedup();
    let themes = themes
        .into_iter()
        .map(|t| {
            let (x, y): (Vec<f64>, Vec<f64>) = points
                .iter()
                .filter(|p| p.theme == t)
                .map(|p| (p.p_before, p.s_prime))
                .unzip();
            ThemeRow {
                theme: t,
                samples: x.len(),
                spearman_prime: spearman(&x, &y),
            }
        })
        .collect();
    let p: Vec<f64> = points.iter().map(|p| p.p_before).collect();
    ModelReport {
        model,
        samples: points.len(),
        pearson_prime: pearson(&lp, &ls),
        spearman_prime: spearman(&p, &points.iter().map(|p| p.s_prime).collect::<Vec<_>>()),
        slope_prime: fitted.map(|f| f.slope),
        intercept_prime: fitted.map(|f| f.intercept),
        r2_prime: fitted.map(|f| f.r2),
        pearson_mem: pearson(&lp, &lm),
        spearman_mem: spearman(&p, &points.iter().map(|p| p.s_mem).collect::<Vec<_>>()),
        groups: [group(true), group(false)],
        themes,
        points,
    }
}

/// Reads the `priming` table of `tables` and analyses every model's samples.
pub fn analyse(tables: &Path, threshold: f64) -> Result<Report> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(Error::Config(format!(
            "{} must be a probability between 0 and 1, not {threshold}",
            familiar::option::name("threshold")
        )));
    }
    let mut sql = Sql::new().map_err(sql_error)?;
    let found = sql.register_dir(tables).map_err(sql_error)?;
    // One run's table is `priming`; several runs under one directory are `a_priming`, … .
    let runs: Vec<&str> = found
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| *n == "priming" || n.ends_with("_priming"))
        .collect();
    if runs.is_empty() {
        return Err(Error::Config(format!(
            "{}: no priming table (`familiar prime` writes it; found: {})",
            tables.display(),
            sql.table_names()
        )));
    }
    let query = runs
        .iter()
        .map(|t| {
            let label = if runs.len() == 1 {
                "model".to_string()
            } else {
                format!("'{t}: ' || model")
            };
            format!(
                "SELECT {label} AS model, sample_id, theme, keyword, p_before, s_prime, s_mem \
                 FROM {t}"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
        + " ORDER BY model, sample_id";
    let results = sql.run(&query).map_err(sql_error)?;
    let mut by_model: Vec<(String, Vec<Point>)> = Vec::new();
    for b in &results[0].batches {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Float64Type;
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>().clone();
        let (models, ids, themes, keywords) = (s(0), s(1), s(2), s(3));
        let (pb, sp, sm) = (f(4), f(5), f(6));
        for i in 0..b.num_rows() {
            let m = models.value(i);
            if by_model.last().is_none_or(|(name, _)| name != m) {
                by_model.push((m.to_string(), Vec::new()));
            }
            let point = Point {
                sample_id: ids.value(i).to_string(),
                theme: themes.value(i).to_string(),
                keyword: keywords.value(i).to_string(),
                p_before: pb.value(i),
                s_prime: sp.value(i),
                s_mem: sm.value(i),
            };
            if !(point.p_before > 0.0 && point.s_prime > 0.0 && point.s_mem > 0.0) {
                return Err(Error::Query(format!(
                    "priming: sample `{}` has a probability or ratio that is not positive",
                    point.sample_id
                )));
            }
            if let Some((_, points)) = by_model.last_mut() {
                points.push(point);
            }
        }
    }
    if by_model.is_empty() {
        return Err(Error::Query(format!(
            "{}: the priming table has no rows",
            tables.display()
        )));
    }
    Ok(Report {
        threshold,
        models: by_model
            .into_iter()
            .map(|(m, p)| analyse_model(m, p, threshold))
            .collect(),
    })
}

/// A ratio for the table: three decimals, or three significant digits in e-notation when it
/// spans more than four decades either way.
fn ratio(v: f64) -> String {
    if (1e-4..1e4).contains(&v.abs()) {
        format!("{v:.3}")
    } else {
        format!("{v:.3e}")
    }
}

fn chart(r: &Report, m: &ModelReport) -> LineChart {
    let pts = |f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
        m.points.iter().map(|p| (p.p_before, f(p))).collect()
    };
    let mut series = vec![
        Series {
            name: "S_prime".into(),
            points: pts(&|p| p.s_prime),
            dashed: false,
            markers: true,
        },
        Series {
            name: "S_mem".into(),
            points: pts(&|p| p.s_mem),
            dashed: false,
            markers: true,
        },
    ];
    let xs = m.points.iter().map(|p| p.p_before);
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if let (Some(a), Some(b)) = (m.intercept_prime, m.slope_prime) {
        series.push(Series {
            name: "fit (S_prime)".into(),
            points: [lo, hi]
                .iter()
                .map(|&x| (x, 10f64.powf(a + b * x.log10())))
                .collect(),
            dashed: true,
            markers: false,
        });
    }
    let ys = m.points.iter().flat_map(|p| [p.s_prime, p.s_mem]);
    let (ylo, yhi) = ys.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    series.push(Series {
        name: format!("P_before = {:e}", r.threshold),
        points: vec![(r.threshold, ylo), (r.threshold, yhi)],
        dashed: true,
        markers: false,
    });
    LineChart {
        title: format!("{}: priming against P_before(keyword)", m.model),
        x_label: "P_before(keyword | own prefix), log scale".into(),
        y_label: "P_after / P_before, log scale".into(),
        log_x: true,
        log_y: true,
        series,
    }
}

fn markdown(r: &Report, charts: &[(String, String, String)]) -> String {
    let mut s = format!(
        "# Priming against the keyword's probability before learning\n\n\
         Each sample was learned by a copy of the model (Sun et al. 2025). P_before is the \
         keyword's probability after the sample's own prefix before learning; S_mem = \
         P_after / P_before on that prefix; S_prime = the mean over the theme's prefixes of \
         P_after / P_before. Correlations of logs; the line: log10 S_prime = a + b · log10 \
         P_before. Threshold: {:e}.\n\n\
         | model | samples | Pearson r (S_prime) | Spearman ρ (S_prime) | slope / decade | R² | \
         Pearson r (S_mem) | Spearman ρ (S_mem) |\n|---|---|---|---|---|---|---|---|\n",
        r.threshold
    );
    for m in &r.models {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m.model,
            m.samples,
            num(m.pearson_prime),
            num(m.spearman_prime),
            num(m.slope_prime),
            num(m.r2_prime),
            num(m.pearson_mem),
            num(m.spearman_mem)
        );
    }
    for (m, (file, title, _)) in r.models.iter().zip(charts) {
        s += &format!(
            "\n## {}\n\n| samples | n | mean log10 S_prime | mean log10 S_mem |\n|---|---|---|---|\n",
            m.model
        );
        for g in &m.groups {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                g.label,
                g.samples,
                num(g.mean_log10_s_prime),
                num(g.mean_log10_s_mem)
            );
        }
        s += "\n| theme | samples | Spearman ρ (S_prime) |\n|---|---|---|\n";
        for t in &m.themes {
            s += &format!(
                "| {} | {} | {} |\n",
                t.theme,
                t.samples,
                num(t.spearman_prime)
            );
        }
        s += "\n| sample | theme | keyword | P_before | S_prime | S_mem |\n|---|---|---|---|---|---|\n";
        for p in &m.points {
            s += &format!(
                "| {} | {} | {} | {:.3e} | {} | {} |\n",
                p.sample_id,
                p.theme,
                p.keyword,
                p.p_before,
                ratio(p.s_prime),
                ratio(p.s_mem)
            );
        }
        s += &format!("\n![{title}]({file})\n");
    }
    s
}

/// Writes `report.md`, `report.html`, `summary.json` and one scatter (SVG) per model into `out`,
/// each atomically; returns the paths.
pub fn write(r: &Report, out: &Path) -> Result<Vec<PathBuf>> {
    let charts = crate::svg::files("priming", r.models.iter().map(|m| chart(r, m)));
    let md = markdown(r, &charts);
    crate::html::write_report(
        out,
        "Priming against the keyword's probability before learning",
        &md,
        r,
        &charts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_power_law_and_the_threshold_split_are_recovered() {
        // S_prime = 10^(-1 - 0.5 · log10 P_before) exactly, P_before 1e-6 … 1e-1.
        let points: Vec<Point> = (0..=10)
            .map(|k| {
                let lp = -6.0 + 0.5 * k as f64;
                Point {
                    sample_id: format!("s{k:02}"),
                    theme: if k % 2 == 0 { "a" } else { "b" }.into(),
                    keyword: format!("k{k}"),
                    p_before: 10f64.powf(lp),
                    s_prime: 10f64.powf(-1.0 - 0.5 * lp),
                    s_mem: 10f64.powf(-lp),
                }
            })
            .collect();
        let m = analyse_model("m".into(), points, 1e-3);
        assert_eq!(m.samples, 11);
        assert!((m.slope_prime.unwrap() + 0.5).abs() < 1e-12);
        assert!((m.intercept_prime.unwrap() + 1.0).abs() < 1e-12);
        assert!((m.r2_prime.unwrap() - 1.0).abs() < 1e-12);
        assert!((m.pearson_prime.unwrap() + 1.0).abs() < 1e-12);
        assert!((m.spearman_prime.unwrap() + 1.0).abs() < 1e-12);
        assert!((m.pearson_mem.unwrap() + 1.0).abs() < 1e-12);
        // Below 1e-3: log10 P_before -6 … -3.5 (6 samples), mean log10 S_prime
        // = -1 - 0.5 · mean(-6 … -3.5) = -1 + 2.375.
        assert_eq!(m.groups[0].samples, 6);
        assert!((m.groups[0].mean_log10_s_prime.unwrap() - 1.375).abs() < 1e-12);
        assert_eq!(m.groups[1].samples, 5);
        assert!(m.groups[1].mean_log10_s_prime.unwrap().abs() < 1e-12);
        assert_eq!(m.themes.len(), 2);
        assert!(m
            .themes
            .iter()
            .all(|t| (t.spearman_prime.unwrap() + 1.0).abs() < 1e-12));
    }
}

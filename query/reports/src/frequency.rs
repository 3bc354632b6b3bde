//! `familiar report frequency`: a model's accuracy against how often its training corpus mentions
//! each concept (Udandarao et al. 2024, "No 'Zero-Shot' Without Exponential Data"); and
//! `familiar report density`: activation density on probes about each concept against the same
//! counts, per model and layer (density as familiarity: Jin et al. 2026, Li et al. 2023).
//!
//! From a tables directory holding `zero_shot` (items, their concepts and scores) and
//! `concept_frequency` (counts per concept), per model: each concept's mean score over the items
//! that name it, against the concept's count (one counting method, concept level). Reported: the
//! log-linear fit `score = a + b · log10(count)` (b per decade) with R² and Pearson's r over
//! concepts; the binned means over `bins` equal-width bins of ln(count) between the smallest and
//! largest positive count (12 as in the paper) and Pearson's r of the bins' means against their
//! centers; Spearman's ρ; and the concepts never seen (count 0) apart. Markdown, HTML with an SVG
//! scatter (log x axis, fit, binned means) and `summary.json`.
//!
//! When the tables also hold `contamination` (`familiar contamination` of the same items), the
//! accuracy report sets the mean score of contaminated items against that of clean ones, per
//! model: an item is contaminated when, in its prompt or its answer, at least `threshold` of the
//! n-grams occur in the corpus (PaLM's criterion — Chowdhery et al. 2022, 70 % of 8-grams —
//! applied per field; n = 8 and 0.7 unless chosen).

use std::path::{Path, PathBuf};

use familiar::error::{Error, Result};
use familiar::stats::{fit_linear, pearson, spearman};
use familiar_sql::udf::bin_of;
use familiar_sql::Sql;
use serde::Serialize;

use crate::svg::{LineChart, Series};

/// What is set against concept frequency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// zero_shot scores of the items naming each concept (`concepts`).
    Accuracy,
    /// activation_stats of the probes whose JSON `labels` name the concept under this key, per
    /// layer.
    Density {
        /// The labels' key holding the concept.
        label_key: String,
    },
}

/// Density metrics of activation_stats.
pub const DENSITY_METRICS: &[&str] = &[
    "top1_energy_last",
    "top1_energy_mean",
    "top5_energy_last",
    "top5_energy_mean",
    "top10_energy_last",
    "top10_energy_mean",
    "hoyer_last",
    "hoyer_mean",
    "effective_rank_ratio",
    "mlp_active_last",
    "mlp_active_mean",
];

/// What to report.
#[derive(Debug, Clone)]
pub struct Options {
    /// What the counts are set against.
    pub subject: Subject,
    /// The directory holding `zero_shot` and `concept_frequency`.
    pub tables: PathBuf,
    /// Counting method of `concept_frequency` (`sa_exact`, `text_all_words`, `text_phrase`).
    pub method: String,
    /// `occurrences` or `documents`.
    pub count: String,
    /// The score: `acc`, `acc_norm`, `logprob` or `logprob_per_token` (accuracy); one of
    /// [`DENSITY_METRICS`] (density).
    pub metric: String,
    /// Equal-width bins of ln(count).
    pub bins: i64,
    /// The n-gram size of the contamination criterion.
    pub contamination_n: u64,
    /// The fraction of a field's n-grams that makes its item contaminated.
    pub contamination_threshold: f64,
}

/// One concept's point.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// The concept.
    pub concept: String,
    /// Its count.
    pub count: u64,
    /// Mean score over its items.
    pub score: f64,
    /// Its items.
    pub items: u64,
}

/// One bin of ln(count).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bin {
    /// Index, 0 … bins − 1.
    pub bin: i64,
    /// Geometric center of the bin.
    pub center: f64,
    /// Concepts in it.
    pub concepts: u64,
    /// Mean of their scores.
    pub mean: f64,
}

/// The analysis of one model (accuracy) or one model's layer (density).
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The model (density: "MODEL, layer L").
    pub model: String,
    /// Concepts with a positive count.
    pub concepts: usize,
    /// Items over them.
    pub items: u64,
    /// Slope per decade of count.
    pub slope_per_decade: Option<f64>,
    /// Intercept (score at count 1).
    pub intercept: Option<f64>,
    /// R² of the fit.
    pub r2: Option<f64>,
    /// Pearson's r of score against log10(count), over concepts.
    pub pearson: Option<f64>,
    /// Spearman's ρ of score against count.
    pub spearman: Option<f64>,
    /// Pearson's r of the bins' means against log10 of their centers (non-empty bins).
    pub binned_pearson: Option<f64>,
    /// The bins (non-empty ones).
    pub bins: Vec<Bin>,
    /// Concepts counted 0 times, and their mean score.
    pub unseen: (usize, Option<f64>),
    /// The points.
    pub points: Vec<Point>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "accuracy" or "density".
    pub subject: String,
    /// Counting method.
    pub method: String,
    /// Count column.
    pub count: String,
    /// Score column.
    pub metric: String,
    /// Bins.
    pub bins: i64,
    /// Per model.
    pub models: Vec<ModelReport>,
    /// Contaminated against clean items, when the tables hold `contamination` (accuracy only).
    pub contamination: Option<ContaminationReport>,
}

/// Contaminated against clean items.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContaminationReport {
    /// The n-gram size of the criterion.
    pub n: u64,
    /// The fraction of a field's n-grams that makes its item contaminated.
    pub threshold: f64,
    /// Per model.
    pub models: Vec<ContaminationSplit>,
}

/// One model's scores on contaminated and clean items.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContaminationSplit {
    /// The model.
    pub model: String,
    /// Contaminated items scored.
    pub contaminated_items: u64,
    /// Their mean score.
    pub contaminated_mean: Option<f64>,
    /// Clean items scored.
    pub clean_items: u64,
    /// Their mean score.
    pub clean_mean: Option<f64>,
}

pub(crate) fn sql_error(e: familiar_sql::Error) -> Error {
    Error::Query(e.to_string())
}

/// Analyses `points` (all of one model).
pub fn analyse_model(model: String, mut points: Vec<Point>, bins: i64) -> Result<ModelReport> {
    points.sort_by(|a, b| a.count.cmp(&b.count).then(a.concept.cmp(&b.concept)));
    let unseen: Vec<&Point> = points.iter().filter(|p| p.count == 0).collect();
    let unseen_mean = (!unseen.is_empty())
        .then(|| unseen.iter().map(|p| p.score).sum::<f64>() / unseen.len() as f64);
    let seen: Vec<&Point> = points.iter().filter(|p| p.count > 0).collect();
    let x: Vec<f64> = seen.iter().map(|p| (p.count as f64).log10()).collect();
    let y: Vec<f64> = seen.iter().map(|p| p.score).collect();
    let fitted = fit_linear(&x, &y);
    let mut binned = Vec::new();
    if let (Some(lo), Some(hi)) = (seen.first(), seen.last()) {
        let (lo, hi) = (lo.count as f64, hi.count as f64);
        let w = (hi.ln() - lo.ln()) / bins as f64;
        let mut sums = vec![(0u64, 0.0f64); bins as usize];
        for p in &seen {
            let b = bin_of(p.count as f64, lo, hi, bins)
                .map_err(|e| Error::Query(e.to_string()))?
                .ok_or_else(|| Error::Bug(format!("count {} outside its own range", p.count)))?;
            sums[b as usize].0 += 1;
            sums[b as usize].1 += p.score;
        }
        for (b, (n, s)) in sums.into_iter().enumerate() {
            if n > 0 {
                binned.push(Bin {
                    bin: b as i64,
                    center: (lo.ln() + (b as f64 + 0.5) * w).exp(),
                    concepts: n,
                    mean: s / n as f64,
                });
            }
        }
    }
    let bx: Vec<f64> = binned.iter().map(|b| b.center.log10()).collect();
    let by: Vec<f64> = binned.iter().map(|b| b.mean).collect();
    Ok(ModelReport {
        model,
        concepts: seen.len(),
        items: seen.iter().map(|p| p.items).sum(),
        slope_per_decade: fitted.map(|f| f.slope),
        intercept: fitted.map(|f| f.intercept),
        r2: fitted.map(|f| f.r2),
        pearson: pearson(&x, &y),
        spearman: spearman(&seen.iter().map(|p| p.count as f64).collect::<Vec<_>>(), &y),
        binned_pearson: pearson(&bx, &by),
        bins: binned,
        unseen: (unseen.len(), unseen_mean),
        points,
    })
}

/// Reads the tables and analyses every model.
pub fn analyse(o: &Options) -> Result<Report> {
    let (metrics, table): (&[&str], &str) = match o.subject {
        Subject::Accuracy => (
            &["acc", "acc_norm", "logprob", "logprob_per_token"],
            "zero_shot",
        ),
        Subject::Density { .. } => (DENSITY_METRICS, "activation_stats"),
    };
    if !metrics.contains(&o.metric.as_str()) {
        return Err(Error::Config(format!(
            "unknown metric `{}`: expected one of {}",
            o.metric,
            metrics.join(", ")
        )));
    }
    if !matches!(o.count.as_str(), "occurrences" | "documents") {
        return Err(Error::Config(format!(
            "unknown count `{}`: expected occurrences or documents",
            o.count
        )));
    }
    if o.bins < 1 {
        return Err(Error::Config(format!(
            "{} must be at least 1",
            familiar::option::name("bins")
        )));
    }
    let mut sql = Sql::new().map_err(sql_error)?;
    let tables = sql.register_dir(&o.tables).map_err(sql_error)?;
    for need in [table, "concept_frequency"] {
        if !tables.iter().any(|t| t.name == need) {
            return Err(Error::Config(format!(
                "{}: no {need} table (found: {})",
                o.tables.display(),
                sql.table_names()
            )));
        }
    }
    let method = o.method.replace('\'', "''");
    let count = &o.count;
    // Columns: group name parts (model[, layer]), concept, count, mean score, items.
    let query = match &o.subject {
        Subject::Accuracy => {
            let score = score_of(&o.metric);
            format!(
                "SELECT z.model, CAST(NULL AS BIGINT) AS layer, c.concept, c.{count} AS count, \
                 avg({score}) AS score, count(*) AS items \
                 FROM (SELECT model, unnest(concepts) AS concept, acc, acc_norm, logprob, \
                 n_tokens FROM zero_shot) z \
                 JOIN concept_frequency c ON c.concept = z.concept \
                 WHERE c.method = '{method}' AND c.level = 'concept' AND {score} IS NOT NULL \
                 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4, 3"
            )
        }
        Subject::Density { label_key } => {
            let key = label_key.replace('\'', "''");
            let m = &o.metric;
            format!(
                "SELECT a.model, CAST(a.layer AS BIGINT) AS layer, c.concept, c.{count} AS count, \
                 avg(a.{m}) AS score, count(*) AS items \
                 FROM activation_stats a \
                 JOIN concept_frequency c ON c.concept = json_str(a.labels, '{key}') \
                 WHERE c.method = '{method}' AND c.level = 'concept' AND a.{m} IS NOT NULL \
                 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4, 3"
            )
        }
    };
    let results = sql.run(&query).map_err(sql_error)?;
    let contamination = match o.subject {
        Subject::Accuracy if tables.iter().any(|t| t.name == "contamination") => {
            Some(contamination_split(&mut sql, o)?)
        }
        _ => None,
    };
    let mut by_model: Vec<(String, Vec<Point>)> = Vec::new();
    for b in &results[0].batches {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
        use arrow_array::Array;
        let col = |i: usize| b.column(i).clone();
        let (models, layers, concepts) = (col(0), col(1), col(2));
        let models = models.as_string::<i32>();
        let layers = layers.as_primitive::<Int64Type>();
        let concepts = concepts.as_string::<i32>();
        let (counts, scores, items) = (col(3), col(4), col(5));
        let counts = counts.as_primitive::<UInt64Type>();
        let scores = scores.as_primitive::<Float64Type>();
        let items = items.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let m = if layers.is_null(i) {
                models.value(i).to_string()
            } else {
                format!("{}, layer {}", models.value(i), layers.value(i))
            };
            if by_model.last().is_none_or(|(name, _)| *name != m) {
                by_model.push((m, Vec::new()));
            }
            if let Some((_, points)) = by_model.last_mut() {
                points.push(Point {
                    concept: concepts.value(i).to_string(),
                    count: counts.value(i),
                    score: scores.value(i),
                    items: items.value(i).max(0) as u64,
                });
            }
        }
    }
    if by_model.is_empty() {
        return Err(Error::Query(format!(
            "no row of {table} names a concept of concept_frequency (method {})",
            o.method
        )));
    }
    Ok(Report {
        subject: match o.subject {
            Subject::Accuracy => "accuracy",
            Subject::Density { .. } => "density",
        }
        .into(),
        contamination,
        method: o.method.clone(),
        count: o.count.clone(),
        metric: o.metric.clone(),
        bins: o.bins,
        models: by_model
            .into_iter()
            .map(|(m, p)| analyse_model(m, p, o.bins))
            .collect::<Result<_>>()?,
    })
}

/// The SQL expression of a zero_shot score (the table as `z`).
fn score_of(metric: &str) -> String {
    match metric {
        "logprob" => "z.logprob".to_string(),
        "logprob_per_token" => "(z.logprob / z.n_tokens)".to_string(),
        m => format!("CAST(z.{m} AS DOUBLE)"),
    }
}

/// Mean scores of contaminated and clean items per model (see the module's documentation).
fn contamination_split(sql: &mut Sql, o: &Options) -> Result<ContaminationReport> {
    let (n, t) = (o.contamination_n, o.contamination_threshold);
    if !(0.0..=1.0).contains(&t) {
        return Err(Error::Config(format!(
            "{} {t}: expected a fraction from 0 to 1",
            familiar::option::name("contamination_threshold")
        )));
    }
    let position = format!("array_position(ngram_sizes, arrow_cast({n}, 'UInt64'))");
    let missing = sql
        .run(&format!(
            "SELECT count(*) - count({position}) FROM contamination"
        ))
        .map_err(sql_error)?;
    let missing: u64 = missing[0]
        .batches
        .iter()
        .filter_map(|b| {
            use arrow_array::cast::AsArray;
            b.column(0)
                .as_primitive_opt::<arrow_array::types::Int64Type>()
                .map(|c| c.values().iter().map(|&v| v.max(0) as u64).sum::<u64>())
        })
        .sum();
    if missing > 0 {
        return Err(Error::Config(format!(
            "{}: {missing} rows of the contamination table did not measure {n}-grams; choose one \
             of the sizes it measured with {} (or measure {n}-grams with `familiar \
             contamination`)",
            o.tables.display(),
            familiar::option::name("contamination_n")
        )));
    }
    let score = score_of(&o.metric);
    let query = format!(
        "WITH item AS (SELECT item_id, task, \
         max(array_element(ngram_fractions, CAST({position} AS BIGINT))) AS fraction \
         FROM contamination WHERE field = 'prompt' OR answer GROUP BY 1, 2) \
         SELECT z.model, i.fraction >= {t:?} AS contaminated, count(*) AS items, \
         avg({score}) AS score \
         FROM zero_shot z JOIN item i ON z.item_id = i.item_id AND z.task = i.task \
         WHERE {score} IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let results = sql.run(&query).map_err(sql_error)?;
    let mut models: Vec<ContaminationSplit> = Vec::new();
    for b in &results[0].batches {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float64Type, Int64Type};
        let bad = |c: &str| Error::Bug(format!("contamination split: column {c}"));
        let names = b
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| bad("model"))?;
        let dirty = b
            .column(1)
            .as_boolean_opt()
            .ok_or_else(|| bad("contaminated"))?;
        let items = b
            .column(2)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad("items"))?;
        let scores = b
            .column(3)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| bad("score"))?;
        for i in 0..b.num_rows() {
            let model = names.value(i);
            if models.last().is_none_or(|m| m.model != model) {
                models.push(ContaminationSplit {
                    model: model.to_string(),
                    contaminated_items: 0,
                    contaminated_mean: None,
                    clean_items: 0,
                    clean_mean: None,
                });
            }
            let m = models.last_mut().ok_or_else(|| bad("model"))?;
            let (k, mean) = (items.value(i).max(0) as u64, Some(scores.value(i)));
            if dirty.value(i) {
                (m.contaminated_items, m.contaminated_mean) = (k, mean);
            } else {
                (m.clean_items, m.clean_mean) = (k, mean);
            }
        }
    }
    Ok(ContaminationReport {
        n,
        threshold: t,
        models,
    })
}

/// A number for a report's table: four decimals, or a dash.
pub(crate) fn num(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.4}"))
}

fn chart(r: &Report, m: &ModelReport) -> LineChart {
    let mut series = vec![Series {
        name: "concepts".into(),
        points: m
            .points
            .iter()
            .filter(|p| p.count > 0)
            .map(|p| (p.count as f64, p.score))
            .collect(),
        dashed: false,
        markers: true,
    }];
    series.push(Series {
        name: format!("{} bins (mean)", r.bins),
        points: m.bins.iter().map(|b| (b.center, b.mean)).collect(),
        dashed: false,
        markers: false,
    });
    if let (Some(a), Some(b)) = (m.intercept, m.slope_per_decade) {
        let (lo, hi) = (
            m.points
                .iter()
                .filter(|p| p.count > 0)
                .map(|p| p.count)
                .min(),
            m.points.iter().map(|p| p.count).max(),
        );
        if let (Some(lo), Some(hi)) = (lo, hi) {
            series.push(Series {
                name: "log-linear fit".into(),
                points: [lo as f64, hi as f64]
                    .iter()
                    .map(|&c| (c, a + b * c.log10()))
                    .collect(),
                dashed: true,
                markers: false,
            });
        }
    }
    LineChart {
        title: format!("{}: {} against concept frequency", m.model, r.metric),
        x_label: format!("{} ({}), log scale", r.count, r.method),
        y_label: r.metric.clone(),
        log_x: true,
        log_y: false,
        series,
    }
}

fn markdown(r: &Report, charts: &[(String, String, String)]) -> String {
    let (heading, over, group) = if r.subject == "density" {
        (
            "Activation density against concept frequency",
            "the probes labelled with it",
            "model, layer",
        )
    } else {
        (
            "Accuracy against concept frequency",
            "the items naming it",
            "model",
        )
    };
    let mut s = format!(
        "# {heading}\n\n\
         Score `{}` per concept (mean over {over}) against the concept's `{}` \
         (`{}`, concept level). Fit: score = a + b · log10(count); bins: {} equal-width bins of \
         ln(count) between the smallest and largest positive count.\n\n\
         | {group} | concepts | items | slope / decade | intercept | R² | Pearson r | Spearman ρ | binned Pearson r | unseen concepts | their mean |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        r.metric, r.count, r.method, r.bins
    );
    for m in &r.models {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m.model,
            m.concepts,
            m.items,
            num(m.slope_per_decade),
            num(m.intercept),
            num(m.r2),
            num(m.pearson),
            num(m.spearman),
            num(m.binned_pearson),
            m.unseen.0,
            num(m.unseen.1)
        );
    }
    for (m, (file, title, _)) in r.models.iter().zip(charts) {
        s += &format!(
            "\n## {}\n\n| bin | center | concepts | mean |\n|---|---|---|---|\n",
            m.model
        );
        for b in &m.bins {
            s += &format!(
                "| {} | {:.1} | {} | {:.4} |\n",
                b.bin, b.center, b.concepts, b.mean
            );
        }
        s += &format!("\n![{title}]({file})\n");
    }
    if let Some(c) = &r.contamination {
        s += &format!(
            "\n## Contaminated and clean items\n\n\
             An item is contaminated when at least {:.0} % of the {}-grams of its prompt or of its \
             answer occur in the corpus (the contamination table; PaLM's criterion, per field). \
             Mean `{}` of the items scored:\n\n\
             | model | contaminated items | their mean | clean items | their mean | difference |\n\
             |---|---|---|---|---|---|\n",
            100.0 * c.threshold,
            c.n,
            r.metric
        );
        for m in &c.models {
            let diff = m.contaminated_mean.zip(m.clean_mean).map(|(a, b)| a - b);
            s += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                m.model,
                m.contaminated_items,
                num(m.contaminated_mean),
                m.clean_items,
                num(m.clean_mean),
                num(diff)
            );
        }
        if c.models.is_empty() {
            s += "\nNo item of zero_shot is in the contamination table (same item_id and task).\n";
        }
    }
    s
}

/// Writes `report.md`, `report.html`, `summary.json` and one scatter (SVG) per model into `out`,
/// each atomically; returns the paths.
pub fn write(r: &Report, out: &Path) -> Result<Vec<PathBuf>> {
    let charts = crate::svg::files("scatter", r.models.iter().map(|m| chart(r, m)));
    let md = markdown(r, &charts);
    let title = if r.subject == "density" {
        "Activation density against concept frequency"
    } else {
        "Accuracy against concept frequency"
    };
    crate::html::write_report(out, title, &md, r, &charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_log_linear_law_is_recovered() {
        // score = 0.1 + 0.2 · log10(count) exactly, counts 1 … 10^4.
        let points: Vec<Point> = (0..=40)
            .map(|k| {
                let count = 10f64.powf(k as f64 / 10.0).round() as u64;
                Point {
                    concept: format!("c{k}"),
                    count,
                    score: 0.1 + 0.2 * (count as f64).log10(),
                    items: 2,
                }
            })
            .chain(std::iter::once(Point {
                concept: "never".into(),
                count: 0,
                score: 0.05,
                items: 1,
            }))
            .collect();
        let m = analyse_model("m".into(), points, 12).unwrap();
        assert_eq!(m.concepts, 41);
        assert_eq!(m.unseen, (1, Some(0.05)));
        assert!((m.slope_per_decade.unwrap() - 0.2).abs() < 1e-9);
        assert!((m.intercept.unwrap() - 0.1).abs() < 1e-9);
        assert!((m.r2.unwrap() - 1.0).abs() < 1e-9);
        assert!((m.pearson.unwrap() - 1.0).abs() < 1e-9);
        assert!((m.spearman.unwrap() - 1.0).abs() < 1e-9);
        // 12 bins over [1, 10^4]: every bin non-empty, means increasing, the first bin's center
        // 10^(4/24).
        assert_eq!(m.bins.len(), 12);
        assert!(m.bins.windows(2).all(|w| w[0].mean < w[1].mean));
        assert!((m.bins[0].center - 10f64.powf(4.0 / 24.0)).abs() < 1e-9);
        assert_eq!(m.bins.iter().map(|b| b.concepts).sum::<u64>(), 41);
        assert!(m.binned_pearson.unwrap() > 0.99);
    }
}

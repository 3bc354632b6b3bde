//! The priming experiment's two tables, `priming` (one row per sample) and `priming_probe` (one
//! row per probe of a sample).

use super::*;

/// A row of the `priming` table: one sample learned.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/priming.json
pub struct PrimingRow {
    pub sample_id: String,
    pub theme: String,
    pub keyword: String,
    pub model: String,
    pub steps: u64,
    pub p_before: f64,
    pub p_after: f64,
    pub s_mem: f64,
    pub s_prime: f64,
    pub theme_contexts: u64,
    pub loss_before: f64,
    pub loss_after: f64,
}

impl familiar::table::TableRow for PrimingRow {
    const TABLE: &'static str = "priming";
}

/// A row of the `priming_probe` table: one probe of one sample, before and after learning it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/priming_probe.json
pub struct PrimingProbeRow {
    pub sample_id: String,
    pub theme: String,
    pub keyword: String,
    pub kind: String,
    pub context: String,
    pub completion: String,
    pub n_tokens: u64,
    pub logprob_before: f64,
    pub logprob_after: f64,
}

impl familiar::table::TableRow for PrimingProbeRow {
    const TABLE: &'static str = "priming_probe";
}

/// The rows of the two tables of an experiment whose samples all have `results`.
pub fn rows(e: &Experiment, results: &[SampleResult]) -> (Vec<PrimingRow>, Vec<PrimingProbeRow>) {
    let model = e.model.display().to_string();
    let samples = e
        .samples
        .iter()
        .zip(results)
        .map(|(x, r)| PrimingRow {
            sample_id: x.id.clone(),
            theme: x.theme.clone(),
            keyword: x.keyword.clone(),
            model: model.clone(),
            steps: e.options.steps,
            p_before: r.p_before(),
            p_after: r.p_after(),
            s_mem: r.s_mem(),
            s_prime: r.s_prime(),
            theme_contexts: r.probes.len() as u64 - 1,
            loss_before: r.loss_before,
            loss_after: r.loss_after,
        })
        .collect();
    let probes = e
        .samples
        .iter()
        .zip(results)
        .flat_map(|(s, r)| {
            r.probes.iter().map(move |p| PrimingProbeRow {
                sample_id: s.id.clone(),
                theme: s.theme.clone(),
                keyword: s.keyword.clone(),
                kind: p.kind.clone(),
                context: p.context.clone(),
                completion: p.completion.clone(),
                n_tokens: p.n_tokens,
                logprob_before: p.before,
                logprob_after: p.after,
            })
        })
        .collect();
    (samples, probes)
}

/// Writes `priming.parquet` and `priming_probe.parquet`.
pub(super) fn write_tables(e: &Experiment, results: &[SampleResult]) -> Result<[PathBuf; 2]> {
    let (samples, probes) = rows(e, results);
    let paths = [e.out.join(SAMPLES_TABLE), e.out.join(PROBES_TABLE)];
    familiar::table::from_rows(&samples)?.write(Format::Parquet, Some(&paths[0]))?;
    familiar::table::from_rows(&probes)?.write(Format::Parquet, Some(&paths[1]))?;
    Ok(paths)
}

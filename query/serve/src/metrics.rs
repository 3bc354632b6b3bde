//! Prometheus metrics: requests by query type and status, latency histograms per query type,
//! errors by type, and the requests running and waiting now (text exposition format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    errors: BTreeMap<&'static str, u64>,
}

/// The counters (one lock: a request updates them once, in microseconds).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub(crate) fn record(
        &self,
        kind: &'static str,
        status: u16,
        error: Option<&'static str>,
        elapsed: Duration,
    ) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.requests.entry((kind, status)).or_default() += 1;
        let h = m.latency.entry(kind).or_default();
        let s = elapsed.as_secs_f64();
        for (b, le) in h.buckets.iter_mut().zip(BUCKETS) {
            if s <= le {
                *b += 1;
            }
        }
        h.count += 1;
        h.sum += s;
        if let Some(e) = error {
            *m.errors.entry(e).or_default() += 1;
        }
    }

    pub(crate) fn render(&self, running: usize, waiting: usize) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP familiar_requests_total Requests answered, by query type and HTTP status."
        );
        let _ = writeln!(out, "# TYPE familiar_requests_total counter");
        for ((kind, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "familiar_requests_total{{query_type=\"{kind}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP familiar_request_duration_seconds Time to answer a request, by query type."
        );
        let _ = writeln!(out, "# TYPE familiar_request_duration_seconds histogram");
        for (kind, h) in &m.latency {
            for (le, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "familiar_request_duration_seconds_bucket{{query_type=\"{kind}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "familiar_request_duration_seconds_bucket{{query_type=\"{kind}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "familiar_request_duration_seconds_sum{{query_type=\"{kind}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "familiar_request_duration_seconds_count{{query_type=\"{kind}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP familiar_errors_total Error answers, by problem type."
        );
        let _ = writeln!(out, "# TYPE familiar_errors_total counter");
        for (kind, n) in &m.errors {
            let _ = writeln!(out, "familiar_errors_total{{type=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP familiar_queries_running Library calls running now."
        );
        let _ = writeln!(out, "# TYPE familiar_queries_running gauge");
        let _ = writeln!(out, "familiar_queries_running {running}");
        let _ = writeln!(
            out,
            "# HELP familiar_queries_waiting Requests waiting for a thread now."
        );
        let _ = writeln!(out, "# TYPE familiar_queries_waiting gauge");
        let _ = writeln!(out, "familiar_queries_waiting {waiting}");
        out
    }
}

//! Rendering an attribution report: Markdown (tables by prompt kind and task), SVG charts and
//! the HTML page that holds them, and `summary.json`.

use super::*;

/// Groups of queries the tables summarize: each kind, then each task.
pub(super) fn groups(r: &Report) -> Vec<(String, String, Vec<&QueryStats>)> {
    let mut out = Vec::new();
    let mut kinds: Vec<&str> = r.queries.iter().map(|q| q.kind.as_str()).collect();
    kinds.sort_unstable_by_key(|k| (*k != "reasoning", *k));
    kinds.dedup();
    for kind in kinds {
        let members: Vec<&QueryStats> = r.queries.iter().filter(|q| q.kind == kind).collect();
        let mut tasks: Vec<&str> = members.iter().map(|q| q.task.as_str()).collect();
        tasks.sort_unstable();
        tasks.dedup();
        out.push((kind.to_string(), "(all)".to_string(), members.clone()));
        for t in tasks {
            out.push((
                kind.to_string(),
                t.to_string(),
                members.iter().copied().filter(|q| q.task == t).collect(),
            ));
        }
    }
    out
}

/// A Markdown table.
pub(super) fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}

/// The charts of the report: `(file name, title, svg)`.
pub(super) fn charts(r: &Report, run: &Run) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = r.queries.iter().map(|q| q.kind.as_str()).collect();
        k.sort_unstable_by_key(|k| (*k != "reasoning", *k));
        k.dedup();
        k
    };
    if r.complete {
        // Cumulative share of positive influence against the fraction of documents, mean by kind.
        let n = r.documents as usize;
        let fractions: Vec<f64> = (0..=40)
            .map(|i| 10f64.powf(-4.0 + 4.0 * i as f64 / 40.0))
            .filter(|f| f * n as f64 >= 1.0)
            .collect();
        let mut series = Vec::new();
        let mut tail = Vec::new();
        for kind in &kinds {
            let members: Vec<usize> = (0..r.queries.len())
                .filter(|&i| r.queries[i].kind == *kind)
                .collect();
            let curves: Vec<Vec<f64>> = members
                .iter()
                .map(|&i| {
                    let ranked: Vec<f64> = run.scores[i].iter().map(|x| x.1).collect();
                    concentration(&ranked, &fractions)
                })
                .collect();
            series.push(Series {
                name: kind.to_string(),
                points: fractions
                    .iter()
                    .enumerate()
                    .map(|(j, f)| (*f, mean(curves.iter().map(|c| c[j]))))
                    .collect(),
                dashed: false,
                markers: false,
            });
            // Ranked scores normalized by the top score, averaged over the kind's queries.
            let ranks = (n / 10).max(10).min(n);
            let pts: Vec<(f64, f64)> = (0..ranks)
                .map(|j| {
                    let v = mean(members.iter().map(|&i| {
                        let s = &run.scores[i];
                        let top = s.first().map_or(f64::NAN, |x| x.1);
                        s.get(j).map_or(f64::NAN, |x| x.1 / top)
                    }));
                    ((j + 1) as f64, v)
                })
                .collect();
            tail.push(Series {
                name: format!("{kind}: mean influence relative to the top document"),
                points: pts.clone(),
                dashed: false,
                markers: false,
            });
            let ranked: Vec<f64> = pts.iter().map(|p| p.1).collect();
            if let Some(fit) = fit_power_law(&ranked, ranks) {
                tail.push(Series {
                    name: format!("{kind}: power-law fit, exponent α = {:.2}", fit.alpha),
                    points: [1.0, fit.ranks as f64]
                        .iter()
                        .map(|&x| (x, (fit.log_c - fit.alpha * x.ln()).exp()))
                        .collect(),
                    dashed: true,
                    markers: false,
                });
            }
        }
        out.push((
            "concentration.svg".into(),
            "Concentration of positive influence".into(),
            LineChart {
                title: "Share of positive influence in the top documents".into(),
                x_label: "fraction of the documents, most influential first".into(),
                y_label: "share of total positive influence".into(),
                log_x: true,
                log_y: false,
                series,
            }
            .to_svg(),
        ));
        out.push((
            "tail.svg".into(),
            "Ranked influence (top 10 %)".into(),
            LineChart {
                title: "Ranked influence, top 10 % of documents".into(),
                x_label: "rank of the document (1 = the most influential)".into(),
                y_label: "influence relative to the top document".into(),
                log_x: true,
                log_y: true,
                series: tail,
            }
            .to_svg(),
        ));
    }
    if !r.correlations.is_empty() {
        out.push((
            "correlation.svg".into(),
            "Correlation of influence between queries".into(),
            BarChart {
                title: "Mean correlation of influence vectors".into(),
                y_label: "mean correlation between the queries' influence".into(),
                categories: r
                    .correlations
                    .iter()
                    .map(|c| {
                        c.group
                            .trim_start_matches("within task: ")
                            .replace("across factual queries", "factual (all pairs)")
                    })
                    .collect(),
                series: vec![
                    (
                        "Pearson".into(),
                        r.correlations.iter().map(|c| c.pearson).collect(),
                    ),
                    (
                        "Spearman".into(),
                        r.correlations.iter().map(|c| c.spearman).collect(),
                    ),
                ],
            }
            .to_svg(),
        ));
    }
    out
}

/// The report as Markdown (charts referenced as files).
pub(super) fn markdown(r: &Report, charts: &[(String, String, String)]) -> String {
    let mut s = format!(
        "# Attribution report\n\nRun `{}` ({} preconditioner), {} queries against {} documents{}.\n\n",
        r.run,
        r.precondition,
        r.queries.len(),
        r.documents,
        if r.complete {
            " (every document scored)".to_string()
        } else {
            format!(
                "; only the top documents of each query were scored, so correlations, \
                 concentration and the power-law fit need every document scored ({})",
                familiar::option::name("all")
            )
        }
    );
    s.push_str("## Influence per nat\n\nScores divided by the completion's information content (−log p(completion | prompt), nats).\n\n");
    let rows: Vec<Vec<String>> = groups(r)
        .iter()
        .map(|(kind, task, qs)| {
            vec![
                kind.clone(),
                task.clone(),
                qs.len().to_string(),
                fmt(mean(qs.iter().map(|q| q.nats))),
                fmt(mean(qs.iter().map(|q| q.top_score_per_nat))),
                fmt(mean(qs.iter().filter_map(|q| q.positive_per_nat))),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "kind",
            "task",
            "queries",
            "mean nats",
            "top score / nat",
            "total positive / nat",
        ],
        &rows,
    ));
    if r.complete {
        s.push_str("\n## Concentration\n\nShare of the total positive influence in the top fraction of documents (mean over queries), and a power law `s_r ∝ r^−α` fitted on the ranked top 10 %.\n\n");
        let rows: Vec<Vec<String>> = groups(r)
            .iter()
            .map(|(kind, task, qs)| {
                let mut row = vec![kind.clone(), task.clone()];
                for j in 0..CONCENTRATION.len() {
                    row.push(fmt(mean(
                        qs.iter()
                            .filter_map(|q| q.concentration.as_ref().map(|c| c[j])),
                    )));
                }
                row.push(fmt(mean(
                    qs.iter().filter_map(|q| q.power_law.map(|p| p.alpha)),
                )));
                row.push(fmt(mean(
                    qs.iter().filter_map(|q| q.power_law.map(|p| p.r2)),
                )));
                row
            })
            .collect();
        s.push_str(&table(
            &[
                "kind",
                "task",
                "top 0.01 %",
                "top 0.1 %",
                "top 1 %",
                "top 10 %",
                "α",
                "R²",
            ],
            &rows,
        ));
        s.push_str("\n## Correlation of influence between queries\n\nMean over pairs of queries of the correlation of their influence vectors (every document).\n\n");
        let rows: Vec<Vec<String>> = r
            .correlations
            .iter()
            .map(|c| {
                vec![
                    c.group.clone(),
                    c.kind.clone(),
                    c.pairs.to_string(),
                    fmt(c.pearson),
                    fmt(c.spearman),
                ]
            })
            .collect();
        s.push_str(&table(
            &["pairs of", "kind", "pairs", "Pearson", "Spearman"],
            &rows,
        ));
    }
    s.push_str(&format!(
        "\n## Answers in the top {} documents\n\nMean number of the top {} documents containing the answer (its token sequence after a space), against the share of all documents that contain it.\n\n",
        r.top_k, r.top_k
    ));
    let rows: Vec<Vec<String>> = groups(r)
        .iter()
        .map(|(kind, task, qs)| {
            vec![
                kind.clone(),
                task.clone(),
                fmt(mean(
                    qs.iter().filter_map(|q| q.answer_in_top.map(|x| x as f64)),
                )),
                fmt(mean(qs.iter().filter_map(|q| {
                    q.answer_in_top.map(|x| f64::from(u8::from(x > 0)))
                }))),
                fmt(mean(qs.iter().filter_map(|q| q.answer_base_rate))),
                fmt(mean(
                    qs.iter()
                        .filter_map(|q| q.intermediate_in_top.map(|x| x as f64)),
                )),
                fmt(mean(qs.iter().filter_map(|q| q.intermediate_base_rate))),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "kind",
            "task",
            "answer in top",
            "queries with answer in top",
            "answer base rate",
            "intermediate in top",
            "intermediate base rate",
        ],
        &rows,
    ));
    s.push_str(&format!(
        "\n## Sources of the top {} documents\n\nEnrichment = a source's share among the top documents ÷ its share of the corpus.\n\n",
        r.top_k
    ));
    let rows: Vec<Vec<String>> = r
        .enrichment
        .iter()
        .map(|e| {
            vec![
                e.kind.clone(),
                e.source.clone(),
                fmt(e.top_share),
                fmt(e.corpus_share),
                fmt(e.enrichment),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "kind",
            "source",
            "share in top",
            "share in corpus",
            "enrichment",
        ],
        &rows,
    ));
    if !r.comparison.is_empty() {
        s.push_str(&format!(
            "\n## Preconditioners compared\n\nAgreement between the runs given together: the mean share of each query's top {} documents that both rank in their top {}, the share of queries whose first document is the same, and the mean Spearman correlation of their scores over every document (when both scored every document).\n\n",
            r.top_k, r.top_k
        ));
        let rows: Vec<Vec<String>> = r
            .comparison
            .iter()
            .map(|c| {
                vec![
                    format!("`{}`", c.a),
                    format!("`{}`", c.b),
                    c.queries.to_string(),
                    fmt(c.top_overlap),
                    fmt(c.same_first),
                    c.spearman.map_or("—".into(), fmt),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "run",
                "run",
                "queries",
                "top overlap",
                "same first",
                "Spearman",
            ],
            &rows,
        ));
    }
    if !r.lds.is_empty() {
        s.push_str("\n## Linear datamodeling score\n\nSpearman correlation, over retrained random subsets, of each preconditioner's predicted and the measured log-probability of each query (`familiar attribute eval`), averaged over queries.\n\n");
        let rows: Vec<Vec<String>> = r
            .lds
            .iter()
            .map(|l| {
                vec![
                    format!("`{}`", l.precondition),
                    l.damping.map_or("—".into(), fmt),
                    fmt(l.mean),
                    fmt(l.factual),
                    fmt(l.reasoning),
                ]
            })
            .collect();
        s.push_str(&table(
            &["preconditioner", "damping", "LDS", "factual", "reasoning"],
            &rows,
        ));
    }
    if r.queries.iter().any(|q| !q.documents.is_empty()) {
        s.push_str(
            "\n## Top documents\n\nThe most influential documents of each query, with the text \
             around their most influential tokens (⦃marked⦄; when the run split its scores by \
             token, `attribute score --token-influence`), else around the answer (⟦marked⟧; \
             intermediate answers ⟪marked⟫), else their beginning.\n\n",
        );
        for q in &r.queries {
            if q.documents.is_empty() {
                continue;
            }
            s.push_str(&format!("### `{}` ({}, {})\n\n", q.id, q.kind, q.task));
            for d in &q.documents {
                s.push_str(&format!(
                    "{}. document {} · source `{}` · score {} · {} characters\n\n> {}\n\n",
                    d.rank,
                    d.doc_id,
                    d.source.replace('`', "'"),
                    fmt(d.score),
                    d.chars,
                    quote(&d.excerpt)
                ));
                if !d.influential.is_empty() {
                    let shown: Vec<String> = d
                        .influential
                        .iter()
                        .map(|(t, share)| {
                            format!(
                                "`{}` {}",
                                t.replace('`', "'").replace('\n', "⏎"),
                                fmt(*share)
                            )
                        })
                        .collect();
                    s.push_str(&format!(
                        "Most influential tokens (share of the score): {}\n\n",
                        shown.join(", ")
                    ));
                }
            }
        }
    }
    if !charts.is_empty() {
        s.push_str("\n## Charts\n\n");
        for (file, title, _) in charts {
            s.push_str(&format!("![{title}]({file})\n\n"));
        }
    }
    s
}

/// An excerpt as one Markdown quote line: line breaks as spaces, the answer's occurrences in
/// ⟦ ⟧, intermediate answers' in ⟪ ⟫ and influential tokens in ⦃ ⦄ (inside the others; those
/// brackets in the text itself become plain ones); `html::page` shows the marks as
/// `<mark class="answer">`, `<mark class="intermediate">` and `<mark class="influence">`.
pub fn quote(pieces: &[super::Piece]) -> String {
    let mut out = String::new();
    for p in pieces {
        let text: String = p
            .text
            .chars()
            .map(|c| match c {
                '\n' | '\r' | '\t' => ' ',
                '⟦' | '⟪' => '[',
                '⟧' | '⟫' => ']',
                '⦃' => '{',
                '⦄' => '}',
                c => c,
            })
            .collect();
        let text = if p.influential {
            format!("⦃{text}⦄")
        } else {
            text
        };
        match p.mark {
            Some("answer") => out.push_str(&format!("⟦{text}⟧")),
            Some(_) => out.push_str(&format!("⟪{text}⟫")),
            None => out.push_str(&text),
        }
    }
    out
}

/// Writes `report.md`, `report.html`, `summary.json` and the charts (SVG) of `report` on `run`
/// into `out`; returns the paths written. Each file is written atomically.
pub fn write(report: &Report, run: &Run, out: &Path) -> Result<Vec<PathBuf>> {
    let charts = charts(report, run);
    let md = markdown(report, &charts);
    crate::html::write_report(out, "Attribution report", &md, report, &charts)
}

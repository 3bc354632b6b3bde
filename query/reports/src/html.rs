//! HTML pages of the reports, and writing a report's files.

use std::path::{Path, PathBuf};

use familiar::error::{Error, Result};

/// A report page: minimal Markdown-to-HTML for the reports' own Markdown (headings, paragraphs,
/// tables, images), with the charts — `(file, title, svg)` — inlined where the Markdown shows them.
pub fn page(title: &str, md: &str, charts: &[(String, String, String)]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let inline = |s: &str| {
        let mut out = String::new();
        for (i, part) in esc(s).split('`').enumerate() {
            if i % 2 == 1 {
                out.push_str(&format!("<code>{part}</code>"));
            } else {
                out.push_str(part);
            }
        }
        out
    };
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n\
         <style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,td:nth-child(2),th{{text-align:left}}\
         blockquote{{margin:0.3em 0 1em 1em;padding-left:0.8em;border-left:3px solid #ccc}}\
         mark.intermediate{{background:#cde}}mark.influence{{background:#fc8;border-bottom:2px solid #c60}}</style></head><body>\n",
        esc(title)
    );
    let mut lines = md.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("### ") {
            out.push_str(&format!("<h3>{}</h3>\n", inline(h)));
        } else if let Some(q) = line.strip_prefix("> ") {
            // A quoted corpus text: escaped as is (no code spans), with its marks.
            let marked = esc(q)
                .replace('⟦', "<mark class=\"answer\">")
                .replace('⟪', "<mark class=\"intermediate\">")
                .replace('⦃', "<mark class=\"influence\">")
                .replace(['⟧', '⟫', '⦄'], "</mark>");
            out.push_str(&format!("<blockquote>{marked}</blockquote>\n"));
        } else if let Some(h) = line.strip_prefix("## ") {
            out.push_str(&format!("<h2>{}</h2>\n", inline(h)));
        } else if let Some(h) = line.strip_prefix("# ") {
            out.push_str(&format!("<h1>{}</h1>\n", inline(h)));
        } else if line.starts_with("| ") {
            out.push_str("<table>\n");
            let cells = |l: &str| -> Vec<String> {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| inline(c.trim()))
                    .collect()
            };
            out.push_str(&format!(
                "<tr><th>{}</th></tr>\n",
                cells(line).join("</th><th>")
            ));
            lines.next(); // the |---| line
            while let Some(l) = lines.peek().filter(|l| l.starts_with("| ")) {
                out.push_str(&format!(
                    "<tr><td>{}</td></tr>\n",
                    cells(l).join("</td><td>")
                ));
                lines.next();
            }
            out.push_str("</table>\n");
        } else if let Some(img) = line.strip_prefix("![") {
            let file = img.split("](").nth(1).unwrap_or("").trim_end_matches(')');
            if let Some((_, title, svg)) = charts.iter().find(|c| c.0 == file) {
                out.push_str(&format!(
                    "<figure>{svg}<figcaption>{}</figcaption></figure>\n",
                    esc(title)
                ));
            }
        } else if !line.trim().is_empty() {
            out.push_str(&format!("<p>{}</p>\n", inline(line)));
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// Writes a report into `out`: `report.md`, `report.html` (titled `title`, the charts inline),
/// `summary.json` and each chart's SVG file, each atomically; returns the paths written.
pub fn write_report(
    out: &Path,
    title: &str,
    md: &str,
    summary: &impl serde::Serialize,
    charts: &[(String, String, String)],
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("report.md".into(), md.as_bytes().to_vec()),
        ("report.html".into(), page(title, md, charts).into_bytes()),
        (
            "summary.json".into(),
            familiar::manifest::to_bytes(summary)?,
        ),
    ];
    files.extend(
        charts
            .iter()
            .map(|(file, _, svg)| (file.clone(), svg.clone().into_bytes())),
    );
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = out.join(name);
        familiar::manifest::write_atomic(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

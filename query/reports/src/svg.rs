//! Small, dependency-free SVG charts for reports: line charts on linear or logarithmic axes and
//! grouped bar charts. Output is deterministic text (the same data gives the same bytes).

use std::fmt::Write;

/// The plot area: fixed, whatever the text around it; the chart grows to hold its title, axis
/// labels, legend and category names (measured with [`text_width`]).
const PLOT_W: f64 = 420.0;
const PLOT_H: f64 = 305.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 40.0;
/// Below the plot: tick labels, then the x axis label.
const BOTTOM: f64 = 55.0;
/// The narrowest margin right of the plot.
const RIGHT_MIN: f64 = 30.0;
/// Legend text wraps at this width.
const LEGEND_TEXT_MAX: f64 = 260.0;
/// From the legend's left edge to its text.
const LEGEND_TEXT_X: f64 = 35.0;
const LINE: f64 = 14.0;
/// The narrowest group of a bar chart.
const GROUP_MIN: f64 = 76.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A named series of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points `(x, y)`; points that cannot be drawn on a log axis (≤ 0) or are not finite are left
    /// out.
    pub points: Vec<(f64, f64)>,
    /// Dashed line (e.g. a fitted model) instead of a solid one.
    pub dashed: bool,
    /// A dot per point and no line (a scatter plot).
    pub markers: bool,
}

/// Charts as report files: `(PREFIX-i.svg, title, SVG text)`, numbered in order.
pub fn files(
    prefix: &str,
    charts: impl Iterator<Item = LineChart>,
) -> Vec<(String, String, String)> {
    charts
        .enumerate()
        .map(|(i, c)| (format!("{prefix}-{i}.svg"), c.title.clone(), c.to_svg()))
        .collect()
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The series.
    pub series: Vec<Series>,
}

/// The width `s` takes at `size` px in a sans-serif font, estimated on the wide side: per
/// character, a fraction of the em at least as wide as DejaVu Sans's (Debian's default
/// sans-serif, wider than Arial's and Helvetica's) — so text laid out by it fits in any of them.
/// The browser test in query/cli/tests/charts.rs measures the result in Chromium.
pub fn text_width(s: &str, size: f64) -> f64 {
    let em = |c: char| match c {
        ' ' | 'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.34,
        'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '{' | '}' | '-' | 'I' | '/' | '"' => 0.5,
        'm' | 'w' | 'M' | 'W' | '%' | '@' | '—' => 1.0,
        'A'..='Z' | '&' | '=' | '+' | '<' | '>' | '~' | '#' => 0.8,
        c if c.is_ascii() => 0.66,
        // CJK, Hangul, and everything from U+1100 up that fonts draw a full em wide.
        c if u32::from(c) >= 0x1100 => 1.05,
        _ => 0.8,
    };
    s.chars().map(em).sum::<f64>() * size
}

/// `s` in lines of at most `max` px at `size` px, broken at spaces, and a word longer than a
/// line broken between characters.
fn wrap(s: &str, max: f64, size: f64) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in s.split(' ') {
        let mut piece = String::new();
        for c in word.chars() {
            if !piece.is_empty() && text_width(&format!("{piece}{c}"), size) > max {
                words.push(std::mem::take(&mut piece));
            }
            piece.push(c);
        }
        words.push(piece);
    }
    let mut lines: Vec<String> = Vec::new();
    for word in words {
        match lines.last_mut() {
            Some(last) if text_width(&format!("{last} {word}"), size) <= max => {
                last.push(' ');
                last.push_str(&word);
            }
            _ => lines.push(word),
        }
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

/// Where a chart's parts go: its size, grown for its text.
struct Layout {
    /// The plot's width.
    plot_w: f64,
    width: f64,
    height: f64,
    /// Extra height below the plot for wrapped category names.
    below: f64,
    /// Legend entries, wrapped.
    legend: Vec<Vec<String>>,
}

impl Layout {
    fn new(
        plot_w: f64,
        title: &str,
        x_label: &str,
        y_label: &str,
        legend: &[String],
        below: f64,
    ) -> Layout {
        let legend: Vec<Vec<String>> = legend
            .iter()
            .map(|n| wrap(n, LEGEND_TEXT_MAX, 12.0))
            .collect();
        let legend_w = legend
            .iter()
            .flatten()
            .map(|l| LEGEND_TEXT_X + text_width(l, 12.0) + 10.0)
            .fold(0.0, f64::max);
        let legend_h = legend
            .iter()
            .map(|e| 18.0 + LINE * (e.len() as f64 - 1.0))
            .sum::<f64>();
        let width = (LEFT + plot_w + RIGHT_MIN.max(legend_w + 10.0))
            .max(text_width(title, 14.0) + 20.0)
            .max(LEFT + text_width(x_label, 12.0) + 20.0)
            .ceil();
        let height = (TOP
            + PLOT_H
                .max(legend_h + 10.0)
                .max(text_width(y_label, 12.0) + 10.0)
            + BOTTOM
            + below)
            .ceil();
        Layout {
            plot_w,
            width,
            height,
            below,
            legend,
        }
    }

    /// The plot's right edge.
    fn right(&self) -> f64 {
        LEFT + self.plot_w
    }

    /// The plot's bottom edge.
    fn bottom(&self) -> f64 {
        self.height - BOTTOM - self.below
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A number for a tick label: short, without trailing zeros.
fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.0e}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// About `n` round tick values covering `[lo, hi]`.
fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let m = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|m| span / (m * mag) <= n as f64)
        .unwrap_or(10.0);
    let step = m * mag;
    // k·m·10^e computed so that decimal ticks come out exact (0.6, not 0.6000000000000001).
    let at = |k: i64| {
        if mag < 1.0 {
            k as f64 * m / (1.0 / mag).round()
        } else {
            k as f64 * m * mag
        }
    };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(at).collect()
}

/// An axis: data range mapped to a pixel range, linear or logarithmic.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool, from: f64, to: f64) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            let v = if log { v.log10() } else { v };
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if log {
            lo = lo.floor();
            hi = hi.ceil().max(lo + 1.0);
        } else {
            if lo > 0.0 && lo < 0.5 * hi {
                lo = 0.0;
            }
            if hi <= lo {
                hi = lo + 1.0;
            }
            let pad = 0.05 * (hi - lo);
            if lo != 0.0 {
                lo -= pad;
            }
            hi += pad;
        }
        Axis {
            lo,
            hi,
            log,
            from,
            to,
        }
    }

    fn map(&self, v: f64) -> f64 {
        let v = if self.log { v.log10() } else { v };
        self.from + (v - self.lo) / (self.hi - self.lo) * (self.to - self.from)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let step = ((self.hi - self.lo) / 6.0).ceil().max(1.0) as i64;
            (self.lo as i64..=self.hi as i64)
                .step_by(step as usize)
                .map(|e| 10f64.powi(e as i32))
                .collect()
        } else {
            linear_ticks(self.lo, self.hi, 6)
        }
    }
}

fn drawable(p: &(f64, f64), log_x: bool, log_y: bool) -> bool {
    p.0.is_finite() && p.1.is_finite() && (!log_x || p.0 > 0.0) && (!log_y || p.1 > 0.0)
}

fn frame(out: &mut String, l: &Layout, title: &str, x_label: &str, y_label: &str) {
    let (w, h) = (l.width, l.height);
    // The title and the x label centred on the plot when they fit there, else on the chart.
    let centre = |text: &str, size: f64| {
        let half = text_width(text, size) / 2.0 + 5.0;
        (LEFT + l.plot_w / 2.0).clamp(half, (w - half).max(half))
    };
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{:.1}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n\
         <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        centre(title, 14.0),
        escape(title),
        centre(x_label, 12.0),
        h - 12.0,
        escape(x_label),
        (TOP + l.bottom()) / 2.0,
        escape(y_label),
    );
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>",
        l.plot_w,
        l.bottom() - TOP
    );
}

/// Horizontal grid lines and labels at the y axis's ticks.
fn y_grid(out: &mut String, l: &Layout, y: &Axis) {
    for t in y.ticks() {
        let py = y.map(t);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            l.right(),
            LEFT - 6.0,
            py + 4.0,
            label(t)
        );
    }
}

fn legend(out: &mut String, l: &Layout, entries: &[(&str, bool)]) {
    let mut y = TOP + 10.0;
    let x = l.right() + 10.0;
    for ((color, dashed), lines) in entries.iter().zip(&l.legend) {
        let dash = if *dashed {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{}\" y=\"{}\">",
            x + 20.0,
            x + LEGEND_TEXT_X - 10.0,
            y + 4.0,
        );
        for (i, line) in lines.iter().enumerate() {
            let dy = if i == 0 { 0.0 } else { LINE };
            let _ = write!(
                out,
                "<tspan x=\"{}\" dy=\"{dy}\">{}</tspan>",
                x + LEGEND_TEXT_X - 10.0,
                escape(line)
            );
        }
        out.push_str("</text>\n");
        y += 18.0 + LINE * (lines.len() as f64 - 1.0);
    }
}

impl LineChart {
    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let pts = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|p| drawable(p, self.log_x, self.log_y))
        };
        let names: Vec<String> = self.series.iter().map(|s| s.name.clone()).collect();
        let l = Layout::new(
            PLOT_W,
            &self.title,
            &self.x_label,
            &self.y_label,
            &names,
            0.0,
        );
        let x = Axis::new(pts().map(|p| p.0), self.log_x, LEFT, l.right());
        let y = Axis::new(pts().map(|p| p.1), self.log_y, l.bottom(), TOP);
        let mut out = String::new();
        frame(&mut out, &l, &self.title, &self.x_label, &self.y_label);
        for t in x.ticks() {
            let px = x.map(t);
            let _ = writeln!(
                out,
                "<line x1=\"{px:.1}\" y1=\"{}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\
                 <text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                TOP,
                l.bottom(),
                l.bottom() + 16.0,
                label(t)
            );
        }
        y_grid(&mut out, &l, &y);
        let mut entries = Vec::new();
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = s
                .points
                .iter()
                .filter(|p| drawable(p, self.log_x, self.log_y))
                .map(|p| format!("{:.1},{:.1}", x.map(p.0), y.map(p.1)))
                .collect();
            let dash = if s.dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            };
            if s.markers {
                for p in &path {
                    let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"2.5\" fill=\"{color}\" fill-opacity=\"0.6\"/>"
                    );
                }
            } else if path.len() == 1 {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{color}\"/>",
                    path[0].split(',').next().unwrap_or("0"),
                    path[0].split(',').nth(1).unwrap_or("0")
                );
            } else if !path.is_empty() {
                let _ = writeln!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                    path.join(" ")
                );
            }
            entries.push((color, s.dashed));
        }
        legend(&mut out, &l, &entries);
        out.push_str("</svg>\n");
        out
    }
}

/// A grouped bar chart: one group per category, one bar per series.
#[derive(Debug, Clone, Default)]
pub struct BarChart {
    /// Title above the plot.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Category names (x axis).
    pub categories: Vec<String>,
    /// `(name, one value per category)`; missing values are `NaN` (no bar).
    pub series: Vec<(String, Vec<f64>)>,
}

impl BarChart {
    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let values = self
            .series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .filter(|v| v.is_finite())
            .chain([0.0]);
        let groups = self.categories.len().max(1) as f64;
        // Room for a category name of about ten characters a line: the plot grows with many.
        let group_w = (PLOT_W / groups).max(GROUP_MIN);
        // Category names wrap to their group's width; the chart grows below for the lines.
        let cats: Vec<Vec<String>> = self
            .categories
            .iter()
            .map(|c| wrap(c, group_w - 4.0, 12.0))
            .collect();
        let cat_lines = cats.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let names: Vec<String> = self.series.iter().map(|s| s.0.clone()).collect();
        let l = Layout::new(
            group_w * groups,
            &self.title,
            "",
            &self.y_label,
            &names,
            LINE * (cat_lines as f64 - 1.0),
        );
        let y = Axis::new(values, false, l.bottom(), TOP);
        let mut out = String::new();
        frame(&mut out, &l, &self.title, "", &self.y_label);
        y_grid(&mut out, &l, &y);
        let zero = y.map(0.0);
        let bar_w = 0.8 * group_w / self.series.len().max(1) as f64;
        for (g, lines) in cats.iter().enumerate() {
            let gx = LEFT + g as f64 * group_w;
            for (i, (_, vals)) in self.series.iter().enumerate() {
                let Some(&v) = vals.get(g) else { continue };
                if !v.is_finite() {
                    continue;
                }
                let py = y.map(v);
                let _ = writeln!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                    gx + 0.1 * group_w + i as f64 * bar_w,
                    py.min(zero),
                    (py - zero).abs(),
                    COLORS[i % COLORS.len()]
                );
            }
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">",
                gx + group_w / 2.0,
                l.bottom() + 16.0,
            );
            for (i, line) in lines.iter().enumerate() {
                let _ = write!(
                    out,
                    "<tspan x=\"{:.1}\" dy=\"{}\">{}</tspan>",
                    gx + group_w / 2.0,
                    if i == 0 { 0.0 } else { LINE },
                    escape(line)
                );
            }
            out.push_str("</text>\n");
        }
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{zero:.1}\" x2=\"{}\" y2=\"{zero:.1}\" stroke=\"#444\"/>",
            l.right()
        );
        let entries: Vec<(&str, bool)> = (0..self.series.len())
            .map(|i| (COLORS[i % COLORS.len()], false))
            .collect();
        legend(&mut out, &l, &entries);
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            linear_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        );
        assert_eq!(linear_ticks(-3.0, 7.0, 6), vec![-2.0, 0.0, 2.0, 4.0, 6.0]);
        let a = Axis::new([0.003, 250.0].into_iter(), true, 0.0, 100.0);
        assert_eq!((a.lo, a.hi), (-3.0, 3.0));
        assert_eq!(a.ticks().len(), 7);
        assert!((a.map(1.0) - 50.0).abs() < 1e-9);
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(1e-5), "1e-5");
    }

    #[test]
    fn charts_leave_out_undrawable_points_and_escape_text() {
        let svg = LineChart {
            title: "a < b".into(),
            log_x: true,
            log_y: true,
            series: vec![Series {
                name: "s".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0), (10.0, -1.0), (100.0, 4.0)],
                dashed: false,
                markers: false,
            }],
            ..LineChart::default()
        }
        .to_svg();
        assert!(svg.contains("a &lt; b"));
        let line = svg.lines().find(|l| l.contains("<polyline")).unwrap();
        assert_eq!(line.matches(',').count(), 2, "{line}");
        let bars = BarChart {
            title: "t".into(),
            y_label: "y".into(),
            categories: vec!["x".into(), "y".into()],
            series: vec![
                ("a".into(), vec![0.5, f64::NAN]),
                ("b".into(), vec![-0.25, 1.0]),
            ],
        }
        .to_svg();
        assert_eq!(
            bars.matches("<rect x=").count(),
            1 + 3,
            "frame + three bars"
        );
    }
}

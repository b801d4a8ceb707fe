//! Charts drawn as inline SVG: line, stacked area, horizontal bars and a heat map, for the
//! vendor's dashboard and a deployment's local one. Plain functions of their data (no I/O), so
//! the pages need no script and no other origin.
//! Every chart has a `<title>` and an ARIA label; the pages show its figures as a table too.

use std::fmt::Write as _;

/// Series colours: distinguishable, and dark enough for 3:1 contrast on white.
const PALETTE: [&str; 8] =
    ["#1f5fa8", "#b3461d", "#2d7d3a", "#7b3fa0", "#8a6d00", "#00707a", "#a3285f", "#4d4d4d"];

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

pub use super::escape;

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A round upper bound for an axis.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

fn open(out: &mut String, title: &str, height: f64) {
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = escape(title)
    );
}

/// Axes with a y scale up to `max` and x labels spread over the plot (at most 8 shown).
fn axes(out: &mut String, max: f64, labels: &[String]) {
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    for i in 0..=4 {
        let y = TOP + plot_h * (1.0 - i as f64 / 4.0);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d0d0d0"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            number(max * i as f64 / 4.0)
        );
    }
    let n = labels.len();
    let every = n.div_ceil(8).max(1);
    for (i, label) in labels.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let x = LEFT + if n > 1 { plot_w * i as f64 / (n - 1) as f64 } else { plot_w / 2.0 };
        let _ = write!(
            out,
            r##"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#333">{}</text>"##,
            HEIGHT - 8.0,
            escape(label)
        );
    }
}

fn legend(out: &mut String, names: &[&str], y: f64) {
    let mut x = LEFT;
    for (i, name) in names.iter().enumerate() {
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{y:.1}" font-size="11" fill="#222">{}</text>"##,
            y - 9.0,
            colour(i),
            x + 14.0,
            escape(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
}

fn x_of(i: usize, n: usize) -> f64 {
    let plot_w = WIDTH - LEFT - RIGHT;
    LEFT + if n > 1 { plot_w * i as f64 / (n - 1) as f64 } else { plot_w / 2.0 }
}

fn y_of(v: f64, max: f64) -> f64 {
    let plot_h = HEIGHT - TOP - BOTTOM;
    TOP + plot_h * (1.0 - (v / max).clamp(0.0, 1.0))
}

/// One line per series over the x labels.
pub fn line(title: &str, labels: &[String], series: &[(String, Vec<f64>)]) -> String {
    let max = nice_max(series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0, f64::max));
    let mut out = String::new();
    open(&mut out, title, HEIGHT + 20.0);
    axes(&mut out, max, labels);
    for (i, (_, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(j, v)| format!("{:.1},{:.1}", x_of(j, values.len()), y_of(*v, max)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            colour(i),
            points.join(" ")
        );
        // A line of one point draws nothing: a dot shows it.
        if let [v] = values.as_slice() {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"#,
                x_of(0, 1),
                y_of(*v, max),
                colour(i)
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut out, &names, HEIGHT + 14.0);
    out.push_str("</svg>");
    out
}

/// Series stacked on one another as filled areas (adoption of versions over time).
pub fn stacked_area(title: &str, labels: &[String], series: &[(String, Vec<f64>)]) -> String {
    let n = labels.len();
    let totals: Vec<f64> =
        (0..n).map(|j| series.iter().map(|(_, v)| v.get(j).copied().unwrap_or(0.0)).sum()).collect();
    let max = nice_max(totals.iter().copied().fold(0.0, f64::max));
    let mut out = String::new();
    open(&mut out, title, HEIGHT + 20.0);
    axes(&mut out, max, labels);
    let mut base = vec![0.0; n];
    for (i, (_, values)) in series.iter().enumerate() {
        let top: Vec<f64> = (0..n).map(|j| base[j] + values.get(j).copied().unwrap_or(0.0)).collect();
        let mut points: Vec<String> =
            (0..n).map(|j| format!("{:.1},{:.1}", x_of(j, n), y_of(top[j], max))).collect();
        points.extend((0..n).rev().map(|j| format!("{:.1},{:.1}", x_of(j, n), y_of(base[j], max))));
        let _ = write!(
            out,
            r#"<polygon fill="{}" fill-opacity="0.85" points="{}"/>"#,
            colour(i),
            points.join(" ")
        );
        base = top;
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut out, &names, HEIGHT + 14.0);
    out.push_str("</svg>");
    out
}

/// Horizontal bars, one per item, labelled with their values.
pub fn bars(title: &str, items: &[(String, f64)]) -> String {
    let row = 22.0;
    let height = TOP + row * items.len().max(1) as f64 + 8.0;
    let max = nice_max(items.iter().map(|(_, v)| *v).fold(0.0, f64::max));
    let label_w = 200.0;
    let plot_w = WIDTH - label_w - 70.0;
    let mut out = String::new();
    open(&mut out, title, height);
    for (i, (label, value)) in items.iter().enumerate() {
        let y = TOP + row * i as f64;
        let w = plot_w * (value / max).clamp(0.0, 1.0);
        let shown: String = label.chars().take(30).collect();
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end" fill="#222">{}</text><rect x="{label_w}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#222">{}</text>"##,
            label_w - 6.0,
            y + 14.0,
            escape(&shown),
            row - 6.0,
            colour(0),
            label_w + w + 6.0,
            y + 14.0,
            number(*value)
        );
    }
    out.push_str("</svg>");
    out
}

/// A heat map: one row per label, one cell per column, darker for more.
pub fn heat_map(title: &str, columns: &[String], rows: &[(String, Vec<f64>)]) -> String {
    let cell_h = 26.0;
    let label_w = 120.0;
    let cell_w = ((WIDTH - label_w - RIGHT) / columns.len().max(1) as f64).floor();
    let height = TOP + cell_h * rows.len() as f64 + 24.0;
    let max = rows.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0, f64::max).max(1.0);
    let mut out = String::new();
    open(&mut out, title, height);
    for (r, (label, values)) in rows.iter().enumerate() {
        let y = TOP + cell_h * r as f64;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#222">{}</text>"##,
            label_w - 6.0,
            y + 17.0,
            escape(label)
        );
        for (c, v) in values.iter().enumerate() {
            let x = label_w + cell_w * c as f64;
            // From a pale to a dark blue; the value is written in the cell, so colour is
            // never the only carrier of the figure.
            let t = (v / max).clamp(0.0, 1.0);
            let lightness = 95.0 - 65.0 * t;
            let ink = if lightness < 55.0 { "#fff" } else { "#111" };
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="hsl(212, 60%, {lightness:.0}%)"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="{ink}">{}</text>"#,
                cell_w - 2.0,
                cell_h - 2.0,
                x + cell_w / 2.0,
                y + 17.0,
                number(*v)
            );
        }
    }
    for (c, label) in columns.iter().enumerate() {
        if c % 2 == 0 {
            let x = label_w + cell_w * c as f64 + cell_w / 2.0;
            let _ = write!(
                out,
                r##"<text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#333">{}</text>"##,
                height - 6.0,
                escape(label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_no_other_origin_is_named() {
        let evil = "<script>alert(1)</script>\"&";
        let svgs = [
            line(evil, &[evil.into()], &[(evil.into(), vec![1.0])]),
            stacked_area(evil, &[evil.into()], &[(evil.into(), vec![1.0])]),
            bars(evil, &[(evil.into(), 3.0)]),
            heat_map(evil, &[evil.into()], &[(evil.into(), vec![2.0])]),
        ];
        for svg in svgs {
            assert!(!svg.contains("<script"), "{svg}");
            assert!(svg.contains("&lt;script&gt;"), "{svg}");
            // The SVG namespace is a name, never fetched; nothing else names a URL.
            assert_eq!(svg.matches("http").count(), 1, "{svg}");
        }
    }

    #[test]
    fn axes_round_up() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(2.2), 2.5);
    }
}

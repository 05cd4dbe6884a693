//! The report's chart: grouped bars, one group per workload (and thread count), one bar per
//! allocator; the top panel is time relative to the baseline, the bottom one peak RSS relative to it.
//! A dashed line marks 1.0 (the baseline). Bars taller than the axis are cut at the top and labelled
//! with their value; a failed run has no bar and an "x". Every bar has a tooltip with its figure.

use super::{Report, Row};

const COLOURS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
];
const BAR: f64 = 11.0;
const GAP: f64 = 14.0;
const LEFT: f64 = 56.0;
const PANEL: f64 = 190.0;
const LABELS: f64 = 70.0;

/// Escapes text for SVG content and attributes.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The axis top for ratios up to `max`: a multiple of 0.5 from 1.5 to 4 (taller bars are cut).
pub fn axis_max(max: f64) -> f64 {
    let m = if max.is_finite() { max } else { 1.0 };
    ((m * 2.0).ceil() / 2.0).clamp(1.5, 4.0)
}

/// The chart as an SVG document.
pub fn report(r: &Report) -> String {
    let labels = r.allocator_labels();
    let n = labels.len().max(1) as f64;
    let groups = r.groups.len().max(1) as f64;
    let group_w = n * BAR + GAP;
    let width = LEFT + groups * group_w + 20.0;
    let legend_h = 24.0;
    let top1 = legend_h + 44.0;
    let top2 = top1 + PANEL + LABELS + 44.0;
    let height = top2 + PANEL + LABELS + 10.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    // Legend.
    let mut x = LEFT;
    for (i, l) in labels.iter().enumerate() {
        s.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"8\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"18\">{}</text>\n",
            COLOURS[i % COLOURS.len()],
            x + 16.0,
            esc(l)
        ));
        x += 16.0 + 7.0 * l.len() as f64 + 18.0;
    }
    let base = &r.meta.baseline;
    panel(
        &mut s,
        r,
        &labels,
        top1,
        &format!("time relative to {base} (lower is better)"),
        |row| row.rel_secs,
    );
    panel(
        &mut s,
        r,
        &labels,
        top2,
        &format!("peak RSS relative to {base} (lower is better)"),
        |row| row.rel_peak,
    );
    s.push_str("</svg>\n");
    s
}

fn panel(
    s: &mut String,
    r: &Report,
    labels: &[String],
    top: f64,
    title: &str,
    value: fn(&Row) -> Option<f64>,
) {
    let n = labels.len().max(1) as f64;
    let group_w = n * BAR + GAP;
    let right = LEFT + r.groups.len() as f64 * group_w;
    let max = r
        .groups
        .iter()
        .flat_map(|g| g.rows.iter().filter_map(value))
        .fold(1.0f64, f64::max);
    let ymax = axis_max(max);
    let y = |v: f64| top + PANEL - v.min(ymax) / ymax * PANEL;
    s.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\">{}</text>\n",
        top - 24.0,
        esc(title)
    ));
    // Grid and axis labels every 0.5.
    let mut t = 0.0;
    while t <= ymax + 1e-9 {
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{1:.1}\" y=\"{2:.1}\" text-anchor=\"end\">{t:.1}x</text>\n",
            y(t),
            LEFT - 6.0,
            y(t) + 4.0
        ));
        t += 0.5;
    }
    for (gi, g) in r.groups.iter().enumerate() {
        let gx = LEFT + gi as f64 * group_w + GAP / 2.0;
        for (ai, label) in labels.iter().enumerate() {
            let bx = gx + ai as f64 * BAR;
            let Some(row) = g.rows.iter().find(|row| &row.allocator == label) else {
                continue;
            };
            match value(row) {
                Some(v) => {
                    let top_y = y(v);
                    s.push_str(&format!(
                        "<rect x=\"{bx:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} / {}: {v:.2}x</title></rect>\n",
                        BAR - 1.0,
                        top + PANEL - top_y,
                        COLOURS[ai % COLOURS.len()],
                        esc(&g.title()),
                        esc(label)
                    ));
                    if v > ymax {
                        s.push_str(&format!(
                            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{v:.1}</text>\n",
                            bx + BAR / 2.0,
                            // Neighbouring cut bars alternate heights so their labels do not overlap.
                            top - 2.0 - 9.0 * (ai % 2) as f64
                        ));
                    }
                }
                None => s.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#c00\"><title>{} / {}: {}</title>x</text>\n",
                    bx + BAR / 2.0,
                    top + PANEL - 3.0,
                    esc(&g.title()),
                    esc(label),
                    esc(row.failure.as_deref().unwrap_or("no figure"))
                )),
            }
        }
        let lx = gx + n * BAR / 2.0;
        let ly = top + PANEL + 12.0;
        let name = if r.groups.iter().any(|o| o.threads != g.threads) {
            format!("{} ({}t)", g.workload, g.threads)
        } else {
            g.workload.clone()
        };
        s.push_str(&format!(
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-40 {lx:.1} {ly:.1})\">{}</text>\n",
            esc(&name)
        ));
    }
    s.push_str(&format!(
        "<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\n<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{top:.1}\" y2=\"{1:.1}\" stroke=\"#333\"/>\n<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#333\"/>\n",
        y(1.0),
        top + PANEL
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::example;

    #[test]
    fn axis() {
        assert_eq!(axis_max(0.3), 1.5);
        assert_eq!(axis_max(1.7), 2.0);
        assert_eq!(axis_max(2.01), 2.5);
        assert_eq!(axis_max(50.0), 4.0);
        assert_eq!(axis_max(f64::NAN), 1.5);
    }

    #[test]
    fn chart_has_a_bar_per_figure_legend_tooltips_and_failure_marks() {
        let svg = report(&example());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Two panels x (2 larson bars + 1 large bar) = 6 bars; the failed slab run is an x twice.
        assert_eq!(
            svg.matches("<rect x=").count(),
            2 + 6,
            "2 legend swatches + 6 bars"
        );
        assert_eq!(svg.matches("child killed by signal 6 (SIGABRT)").count(), 2);
        assert!(svg.contains("<title>larson, 2 threads / slab: 0.50x</title>"));
        assert!(svg.contains("time relative to system (lower is better)"));
        assert!(svg.contains("peak RSS relative to system (lower is better)"));
        assert!(svg.contains(">slab</text>") && svg.contains(">system</text>"));
        assert!(
            svg.contains(">larson (2t)</text>"),
            "thread counts differ, so labels name them"
        );
        assert_eq!(esc("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    #[test]
    fn tall_bars_are_cut_and_labelled() {
        let mut r = example();
        r.groups[0].rows[1].rel_secs = Some(9.0);
        let svg = report(&r);
        assert!(svg.contains(">9.0</text>"));
        assert!(svg.contains("<title>larson, 2 threads / slab: 9.00x</title>"));
    }
}

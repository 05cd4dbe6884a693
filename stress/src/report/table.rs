//! The tables people read: plain text for the terminal and markdown for the report file, one table per
//! workload and thread count, one row per allocator.

use super::{fmt_kib, fmt_rate, fmt_ratio, fmt_secs, Group, Report, Row};
use crate::stats::geomean;

/// A summary matrix: one row per group, one column per allocator, each cell a ratio to the
/// baseline, and a last row with the geometric mean over the groups where every allocator has a
/// figure (so the means compare like with like).
pub fn summary_matrix(report: &Report, value: Figure) -> Vec<Vec<String>> {
    let labels = report.allocator_labels();
    let mut m = vec![std::iter::once("workload".to_string())
        .chain(labels.iter().cloned())
        .collect::<Vec<_>>()];
    let mut complete: Vec<Vec<f64>> = vec![Vec::new(); labels.len()];
    for g in &report.groups {
        let vals: Vec<Option<&Row>> = labels
            .iter()
            .map(|l| g.rows.iter().find(|r| &r.allocator == l))
            .collect();
        let mut line = vec![g.title()];
        for r in &vals {
            line.push(match r {
                Some(r) if r.failure.is_some() => "FAILED".to_string(),
                Some(r) => fmt_ratio(value(r)),
                None => "-".to_string(),
            });
        }
        m.push(line);
        let figures: Vec<Option<f64>> = vals.iter().map(|r| r.and_then(value)).collect();
        if figures.iter().all(Option::is_some) {
            for (c, f) in complete.iter_mut().zip(figures) {
                c.push(f.unwrap_or(1.0));
            }
        }
    }
    let n = complete.first().map_or(0, Vec::len);
    let mut last = vec![format!("geometric mean ({n} of {})", report.groups.len())];
    last.extend(complete.iter().map(|c| fmt_ratio(geomean(c))));
    m.push(last);
    m
}

fn render_text(m: &[Vec<String>]) -> String {
    let cols = m.first().map_or(0, Vec::len);
    let width: Vec<usize> = (0..cols)
        .map(|c| m.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in m {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&width).enumerate() {
            if i == 0 {
                line.push_str(&format!("{c:<w$}"));
            } else {
                line.push_str(&format!("  {c:>w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_markdown(m: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, r) in m.iter().enumerate() {
        out.push_str(&format!(
            "| {} |\n",
            r.iter()
                .map(|c| md_escape(c))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        if i == 0 {
            out.push_str("|---|");
            out.push_str(&"---:|".repeat(r.len() - 1));
            out.push('\n');
        }
    }
    out
}

/// Reads one figure of a row.
type Figure = fn(&Row) -> Option<f64>;

const SUMMARIES: [(&str, Figure); 3] = [
    ("time", |r| r.rel_secs),
    ("CPU time", |r| r.rel_cpu),
    ("peak RSS", |r| r.rel_peak),
];

fn cells(r: &Row) -> [String; 9] {
    [
        r.allocator.clone(),
        fmt_secs(r.secs),
        fmt_ratio(r.rel_secs),
        fmt_rate(r.ops_per_sec),
        fmt_ratio(r.rel_ops_per_sec),
        fmt_kib(r.peak_kb),
        fmt_ratio(r.rel_peak),
        fmt_kib(r.end_kb),
        fmt_ratio(r.rel_end),
    ]
}

fn header(base: &str) -> [String; 9] {
    [
        "allocator".into(),
        "time s".into(),
        format!("vs {base}"),
        "ops/s".into(),
        format!("vs {base}"),
        "peak RSS".into(),
        format!("vs {base}"),
        "end RSS".into(),
        format!("vs {base}"),
    ]
}

/// The text table of one group, columns aligned, failures on their own lines below.
pub fn text_group(g: &Group, base: &str) -> String {
    let mut rows = vec![header(base)];
    rows.extend(g.rows.iter().map(cells));
    let mut width = [0usize; 9];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!("== {}: {}\n", g.title(), g.summary);
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(width).enumerate() {
            if i == 0 {
                line.push_str(&format!("{c:<w$}"));
            } else {
                line.push_str(&format!("  {c:>w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for r in g.rows.iter().filter(|r| r.failure.is_some()) {
        out.push_str(&format!(
            "   FAILED {}: {}\n",
            r.allocator,
            r.failure.as_deref().unwrap_or("")
        ));
    }
    out
}

/// All groups as text, then the summaries.
pub fn text(report: &Report) -> String {
    let mut parts: Vec<String> = report
        .groups
        .iter()
        .map(|g| text_group(g, &report.meta.baseline))
        .collect();
    for (what, f) in SUMMARIES {
        parts.push(format!(
            "== summary: {what} relative to {} (lower is better)\n{}",
            report.meta.baseline,
            render_text(&summary_matrix(report, f))
        ));
    }
    parts.join("\n")
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The markdown report: how it was measured, then a table per group.
pub fn markdown(report: &Report, chart_file: Option<&str>) -> String {
    let m = &report.meta;
    let mut out = String::from("# twinheap-stress comparison\n\n");
    out.push_str(&format!(
        "- Date: {}\n- Machine: {} ({} CPUs), Linux {}\n- Command: `{}`\n- Repetitions: {} (tables show the median), scale {}, first seed {}\n- Baseline: {} (every `vs` column is value / baseline, measured in the same run; time and RSS: lower is better, ops/s: higher is better)\n\n",
        m.date, m.machine, m.cpus, m.kernel, m.command, m.reps, m.scale, m.seed, m.baseline
    ));
    out.push_str("| allocator | origin |\n|---|---|\n");
    for (l, o) in &m.allocators {
        out.push_str(&format!("| {} | {} |\n", md_escape(l), md_escape(o)));
    }
    if let Some(c) = chart_file {
        out.push_str(&format!(
            "\n![relative time and peak RSS per workload]({c})\n"
        ));
    }
    for (what, f) in SUMMARIES {
        out.push_str(&format!(
            "\n## Summary: {what} relative to {} (lower is better)\n\n{}",
            m.baseline,
            render_markdown(&summary_matrix(report, f))
        ));
    }
    for g in &report.groups {
        out.push_str(&format!(
            "\n## {}\n\n{} (follows {}).\n\n",
            g.title(),
            md_escape(&g.summary),
            md_escape(&g.follows)
        ));
        let h = header(&m.baseline);
        out.push_str(&format!("| {} |\n", h.join(" | ")));
        out.push_str("|---|");
        out.push_str(&"---:|".repeat(8));
        out.push('\n');
        for r in &g.rows {
            let c = cells(r);
            let mut line = format!(
                "| {} |",
                c.iter()
                    .map(|s| md_escape(s))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            if let Some(f) = &r.failure {
                line = format!(
                    "| {} | FAILED: {} |{}\n",
                    md_escape(&r.allocator),
                    md_escape(f),
                    " - |".repeat(7)
                );
                out.push_str(&line);
                continue;
            }
            line.push('\n');
            out.push_str(&line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::example;

    #[test]
    fn text_tables_align_and_show_ratios_and_failures() {
        let t = text(&example());
        assert!(t.contains("== larson, 2 threads: server churn"));
        let lines: Vec<&str> = t.lines().collect();
        let header = lines[1];
        assert!(header.starts_with("allocator") && header.contains("vs system"));
        let slab = lines.iter().find(|l| l.starts_with("slab")).unwrap();
        assert!(
            slab.contains("1.000") && slab.contains("0.50x") && slab.contains("2.00x"),
            "{slab}"
        );
        assert!(slab.contains("1.0 MiB") && slab.contains("0.33x"), "{slab}");
        // Columns line up: "vs system" of the header ends where the last ratio ends.
        let sys = lines.iter().find(|l| l.starts_with("system")).unwrap();
        assert_eq!(sys.len(), header.len());
        assert!(t.contains("FAILED slab: child killed by signal 6 (SIGABRT)"));
        assert!(t.contains("== summary: time relative to system (lower is better)"));
    }

    #[test]
    fn summary_matrix_marks_failures_and_averages_complete_rows() {
        let r = example();
        let m = summary_matrix(&r, |row| row.rel_secs);
        assert_eq!(m[0], ["workload", "system", "slab"]);
        assert_eq!(m[1], ["larson, 2 threads", "1.00x", "0.50x"]);
        assert_eq!(m[2], ["large, 1 thread", "1.00x", "FAILED"]);
        // Only larson has a figure for every allocator, so the mean is over it alone.
        assert_eq!(m[3], ["geometric mean (1 of 2)", "1.00x", "0.50x"]);
        let md = render_markdown(&m);
        assert!(md.starts_with(
            "| workload | system | slab |\n|---|---:|---:|\n| larson, 2 threads | 1.00x | 0.50x |"
        ));
    }

    #[test]
    fn markdown_has_meta_tables_and_chart() {
        let md = markdown(&example(), Some("compare.svg"));
        assert!(md.contains("- Date: 2026-11-22 10:00 UTC"));
        assert!(md.contains("| slab | built in (twinheap) |"));
        assert!(md.contains("![relative time and peak RSS per workload](compare.svg)"));
        assert!(md.contains("## larson, 2 threads"));
        assert!(md.contains("| allocator | time s | vs system |"));
        assert!(md.contains(
            "| slab | 1.000 | 0.50x | 1.0 k | 2.00x | 1.0 MiB | 0.33x | 512 KiB | 0.50x |"
        ));
        assert!(md.contains("| slab | FAILED: child killed by signal 6 (SIGABRT) |"));
        assert!(md.contains("## Summary: peak RSS relative to system (lower is better)"));
    }
}

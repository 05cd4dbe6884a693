//! The report as CSV: one line per workload, thread count and allocator, with medians and ratios.
//! Fields are quoted (RFC 4180) when they hold a comma, quote or line break.

use super::Report;

/// One CSV field.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or(String::new(), |v| format!("{v}"))
}

/// The header line's fields.
pub const HEADER: &str = "workload,threads,allocator,reps,median_secs,median_cpu_secs,ops,ops_per_sec,median_peak_rss_kb,median_end_rss_kb,rel_secs,rel_cpu_secs,rel_ops_per_sec,rel_peak_rss,rel_end_rss,failure";

/// The whole CSV text.
pub fn report(r: &Report) -> String {
    let mut out = format!("{HEADER}\n");
    for g in &r.groups {
        for row in &g.rows {
            let fields = [
                field(&g.workload),
                g.threads.to_string(),
                field(&row.allocator),
                row.samples.len().to_string(),
                num(row.secs),
                num(row.cpu_secs),
                row.ops.to_string(),
                num(row.ops_per_sec),
                num(row.peak_kb),
                num(row.end_kb),
                num(row.rel_secs),
                num(row.rel_cpu),
                num(row.rel_ops_per_sec),
                num(row.rel_peak),
                num(row.rel_end),
                field(row.failure.as_deref().unwrap_or("")),
            ];
            out.push_str(&fields.join(","));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::example;

    #[test]
    fn quoting() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn rows_and_columns() {
        let c = report(&example());
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines.len(), 5);
        let n = HEADER.split(',').count();
        for l in &lines[1..] {
            assert_eq!(l.split(',').count(), n, "{l}");
        }
        assert_eq!(
            lines[2],
            "larson,2,slab,3,1,2,1000,1000,1024,512,0.5,0.5,2,0.3333333333333333,0.5,"
        );
        assert!(
            lines[4].starts_with("large,1,slab,0,,,0,,,,,,,,,child killed by signal 6 (SIGABRT)")
        );
    }
}

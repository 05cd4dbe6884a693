//! A minimal JSON writer (values, escaping) and the report's JSON form.
//!
//! Non-finite numbers have no JSON spelling and become `null`, as do figures that are missing (a
//! failed run). Object keys keep insertion order so the file diffs cleanly between runs.

use super::Report;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Int(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn opt(x: Option<f64>) -> Json {
        x.map_or(Json::Null, Json::Num)
    }

    fn str(s: &str) -> Json {
        Json::Str(s.to_string())
    }

    fn obj(pairs: Vec<(&str, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// The value as indented JSON text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.push_str(&" ".repeat(n));
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Num(x) if x.is_finite() => {
                // Rust prints whole floats without a fraction ("3"), which is valid JSON.
                out.push_str(&format!("{x}"))
            }
            Json::Num(_) => out.push_str("null"),
            Json::Str(s) => escape_into(out, s),
            Json::Arr(v) if v.is_empty() => out.push_str("[]"),
            Json::Arr(v) => {
                out.push_str("[\n");
                for (i, x) in v.iter().enumerate() {
                    pad(out, indent + 2);
                    x.write(out, indent + 2);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(v) if v.is_empty() => out.push_str("{}"),
            Json::Obj(v) => {
                out.push_str("{\n");
                for (i, (k, x)) in v.iter().enumerate() {
                    pad(out, indent + 2);
                    escape_into(out, k);
                    out.push_str(": ");
                    x.write(out, indent + 2);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

/// Writes `s` as a JSON string literal.
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The report as JSON: metadata, then one result per (workload, threads, allocator) with its
/// medians, ratios to the baseline and raw samples.
pub fn report(r: &Report) -> String {
    let m = &r.meta;
    let meta = Json::obj(vec![
        ("tool", Json::str("twinheap-stress")),
        ("date", Json::str(&m.date)),
        ("machine", Json::str(&m.machine)),
        ("kernel", Json::str(&m.kernel)),
        ("cpus", Json::Int(m.cpus as u64)),
        ("command", Json::str(&m.command)),
        ("baseline", Json::str(&m.baseline)),
        ("repetitions", Json::Int(m.reps as u64)),
        ("scale", Json::Num(m.scale)),
        ("seed", Json::Int(m.seed)),
        (
            "allocators",
            Json::Arr(
                m.allocators
                    .iter()
                    .map(|(l, o)| {
                        Json::obj(vec![("label", Json::str(l)), ("origin", Json::str(o))])
                    })
                    .collect(),
            ),
        ),
    ]);
    let mut results = Vec::new();
    for g in &r.groups {
        for row in &g.rows {
            let samples = row
                .samples
                .iter()
                .map(|s| {
                    Json::obj(vec![
                        ("secs", Json::Num(s.secs)),
                        ("ops", Json::Int(s.ops)),
                        ("peak_rss_kb", Json::Int(s.peak_rss_kb)),
                        ("end_rss_kb", Json::Int(s.end_rss_kb)),
                        ("hwm_kb", Json::Int(s.hwm_kb)),
                        ("cpu_secs", Json::Num(s.cpu_secs)),
                    ])
                })
                .collect();
            results.push(Json::obj(vec![
                ("workload", Json::str(&g.workload)),
                ("threads", Json::Int(g.threads as u64)),
                ("allocator", Json::str(&row.allocator)),
                ("ok", Json::Bool(row.failure.is_none())),
                ("median_secs", Json::opt(row.secs)),
                ("median_cpu_secs", Json::opt(row.cpu_secs)),
                ("ops", Json::Int(row.ops)),
                ("ops_per_sec", Json::opt(row.ops_per_sec)),
                ("median_peak_rss_kb", Json::opt(row.peak_kb)),
                ("median_end_rss_kb", Json::opt(row.end_kb)),
                (
                    "relative_to_baseline",
                    Json::obj(vec![
                        ("secs", Json::opt(row.rel_secs)),
                        ("cpu_secs", Json::opt(row.rel_cpu)),
                        ("ops_per_sec", Json::opt(row.rel_ops_per_sec)),
                        ("peak_rss", Json::opt(row.rel_peak)),
                        ("end_rss", Json::opt(row.rel_end)),
                    ]),
                ),
                (
                    "failure",
                    row.failure.as_deref().map_or(Json::Null, Json::str),
                ),
                ("samples", Json::Arr(samples)),
            ]));
        }
    }
    Json::obj(vec![("meta", meta), ("results", Json::Arr(results))]).render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::example;

    #[test]
    fn escaping_and_scalars() {
        let mut s = String::new();
        escape_into(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        assert_eq!(Json::Num(f64::NAN).render(), "null\n");
        assert_eq!(Json::Num(1.5).render(), "1.5\n");
        assert_eq!(Json::Int(7).render(), "7\n");
        assert_eq!(Json::Arr(vec![]).render(), "[]\n");
        assert_eq!(
            Json::obj(vec![
                ("a", Json::Bool(true)),
                ("b", Json::Arr(vec![Json::Null]))
            ])
            .render(),
            "{\n  \"a\": true,\n  \"b\": [\n    null\n  ]\n}\n"
        );
    }

    #[test]
    fn report_json_carries_medians_ratios_failures_and_samples() {
        let j = report(&example());
        assert!(j.starts_with("{\n  \"meta\": {\n    \"tool\": \"twinheap-stress\""));
        assert!(j.contains("\"baseline\": \"system\""));
        assert!(
            j.contains("\"allocator\": \"slab\",\n      \"ok\": true,\n      \"median_secs\": 1,")
        );
        assert!(
            j.contains("\"ops_per_sec\": 2,\n"),
            "relative throughput of slab on larson"
        );
        assert!(j.contains("\"failure\": \"child killed by signal 6 (SIGABRT)\""));
        assert!(j.contains("\"median_secs\": null"));
        assert_eq!(j.matches("\"workload\":").count(), 4);
        assert_eq!(j.matches("\"hwm_kb\":").count(), 7);
        // Balanced brackets: a cheap structural check.
        assert_eq!(j.matches('{').count(), j.matches('}').count());
        assert_eq!(j.matches('[').count(), j.matches(']').count());
    }
}

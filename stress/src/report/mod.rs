//! The results of a comparison and their summaries: medians of the repetitions, and every figure
//! relative to the baseline allocator measured in the same run.
//!
//! Invariant: a [`Report`] is built once from raw samples ([`Report::build`]) and never edited; the
//! writers (text and markdown tables, JSON, CSV, SVG) only read it, so they always agree.

use crate::launch::Sample;
use crate::stats::{median, ratio};

pub mod csv;
pub mod json;
pub mod svg;
pub mod table;

/// Where and how the figures were measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    pub date: String,
    pub machine: String,
    pub kernel: String,
    pub cpus: usize,
    pub command: String,
    pub baseline: String,
    pub reps: usize,
    pub scale: f64,
    pub seed: u64,
    /// (label, origin) of every allocator, in run order.
    pub allocators: Vec<(String, String)>,
}

/// The measurements of one allocator on one workload at one thread count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub allocator: String,
    pub samples: Vec<Sample>,
    /// Why the run failed, if it did (then the figures are from the repetitions before it, if any).
    pub failure: Option<String>,
    pub secs: Option<f64>,
    pub cpu_secs: Option<f64>,
    pub ops: u64,
    pub ops_per_sec: Option<f64>,
    pub peak_kb: Option<f64>,
    pub end_kb: Option<f64>,
    pub rel_secs: Option<f64>,
    pub rel_cpu: Option<f64>,
    pub rel_ops_per_sec: Option<f64>,
    pub rel_peak: Option<f64>,
    pub rel_end: Option<f64>,
}

/// One workload at one thread count, with a row per allocator.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub workload: String,
    pub summary: String,
    pub follows: String,
    pub threads: usize,
    pub rows: Vec<Row>,
}

impl Group {
    /// A heading such as "larson, 2 threads".
    pub fn title(&self) -> String {
        format!(
            "{}, {} thread{}",
            self.workload,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }
}

/// A whole comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub meta: Meta,
    pub groups: Vec<Group>,
}

impl Report {
    /// Computes medians and ratios from the raw rows (allocator, samples, failure) of each group.
    pub fn build(meta: Meta, mut groups: Vec<Group>) -> Report {
        for g in &mut groups {
            for r in &mut g.rows {
                let col =
                    |f: fn(&Sample) -> f64| median(&r.samples.iter().map(f).collect::<Vec<_>>());
                r.secs = col(|s| s.secs);
                r.cpu_secs = col(|s| s.cpu_secs);
                r.peak_kb = col(|s| s.peak_rss_kb as f64);
                r.end_kb = col(|s| s.end_rss_kb as f64);
                // Op counts differ slightly between seeds (how full a slot array ends up), so
                // throughput is a per-sample figure and its median is taken like the others.
                r.ops = col(|s| s.ops as f64).map_or(0, |o| o.round() as u64);
                r.ops_per_sec = col(|s| {
                    if s.secs > 0.0 {
                        s.ops as f64 / s.secs
                    } else {
                        f64::NAN
                    }
                })
                .filter(|x| x.is_finite());
            }
            let base = g
                .rows
                .iter()
                .find(|r| r.allocator == meta.baseline)
                .cloned();
            for r in &mut g.rows {
                let b = base.as_ref();
                r.rel_secs = ratio(r.secs, b.and_then(|b| b.secs));
                r.rel_cpu = ratio(r.cpu_secs, b.and_then(|b| b.cpu_secs));
                r.rel_ops_per_sec = ratio(r.ops_per_sec, b.and_then(|b| b.ops_per_sec));
                r.rel_peak = ratio(r.peak_kb, b.and_then(|b| b.peak_kb));
                r.rel_end = ratio(r.end_kb, b.and_then(|b| b.end_kb));
            }
        }
        Report { meta, groups }
    }

    /// Whether any run failed.
    pub fn any_failure(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.rows.iter().any(|r| r.failure.is_some()))
    }

    /// The allocator labels in run order.
    pub fn allocator_labels(&self) -> Vec<String> {
        self.meta
            .allocators
            .iter()
            .map(|(l, _)| l.clone())
            .collect()
    }
}

/// "12.3 MiB" for a KiB count.
pub fn fmt_kib(kb: Option<f64>) -> String {
    match kb {
        Some(k) if k >= 1024.0 * 1024.0 => format!("{:.2} GiB", k / 1024.0 / 1024.0),
        Some(k) if k >= 1024.0 => format!("{:.1} MiB", k / 1024.0),
        Some(k) => format!("{k:.0} KiB"),
        None => "-".to_string(),
    }
}

/// "9.71 M" for an operations-per-second rate.
pub fn fmt_rate(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 1e9 => format!("{:.2} G", r / 1e9),
        Some(r) if r >= 1e6 => format!("{:.2} M", r / 1e6),
        Some(r) if r >= 1e3 => format!("{:.1} k", r / 1e3),
        Some(r) => format!("{r:.0}"),
        None => "-".to_string(),
    }
}

/// "1.23x" for a ratio.
pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{r:.2}x"),
        None => "-".to_string(),
    }
}

/// "0.412" seconds.
pub fn fmt_secs(s: Option<f64>) -> String {
    match s {
        Some(s) => format!("{s:.3}"),
        None => "-".to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(secs: f64, peak: u64, end: u64) -> Sample {
        Sample {
            secs,
            ops: 1000,
            peak_rss_kb: peak,
            end_rss_kb: end,
            hwm_kb: peak,
            cpu_secs: secs * 2.0,
        }
    }

    /// A two-workload, two-allocator report with known figures.
    pub(crate) fn example() -> Report {
        let meta = Meta {
            date: "2026-11-22 10:00 UTC".into(),
            machine: "Test CPU".into(),
            kernel: "6.1".into(),
            cpus: 2,
            command: "twinheap-stress compare".into(),
            baseline: "system".into(),
            reps: 3,
            scale: 1.0,
            seed: 1,
            allocators: vec![
                ("system".into(), "built in".into()),
                ("slab".into(), "built in (twinheap)".into()),
            ],
        };
        let row = |a: &str, s: Vec<Sample>, failure: Option<&str>| Row {
            allocator: a.into(),
            samples: s,
            failure: failure.map(str::to_string),
            ..Row::default()
        };
        Report::build(
            meta,
            vec![
                Group {
                    workload: "larson".into(),
                    summary: "server churn".into(),
                    follows: "Larson".into(),
                    threads: 2,
                    rows: vec![
                        row(
                            "system",
                            vec![
                                sample(1.0, 2048, 1024),
                                sample(3.0, 4096, 1024),
                                sample(2.0, 3072, 1024),
                            ],
                            None,
                        ),
                        row(
                            "slab",
                            vec![
                                sample(1.0, 1024, 512),
                                sample(1.0, 1024, 512),
                                sample(9.0, 1024, 512),
                            ],
                            None,
                        ),
                    ],
                },
                Group {
                    workload: "large".into(),
                    summary: "big, \"mmap\" blocks".into(),
                    follows: "glibc".into(),
                    threads: 1,
                    rows: vec![
                        row("system", vec![sample(0.5, 10_000, 100)], None),
                        row("slab", vec![], Some("child killed by signal 6 (SIGABRT)")),
                    ],
                },
            ],
        )
    }

    #[test]
    fn medians_and_ratios_against_the_baseline() {
        let r = example();
        let g = &r.groups[0];
        assert_eq!(g.title(), "larson, 2 threads");
        let (sys, slab) = (&g.rows[0], &g.rows[1]);
        assert_eq!(sys.secs, Some(2.0));
        assert_eq!(sys.cpu_secs, Some(4.0));
        assert_eq!(sys.peak_kb, Some(3072.0));
        assert_eq!(sys.rel_secs, Some(1.0));
        assert_eq!(slab.secs, Some(1.0), "median ignores the 9 s outlier");
        assert_eq!(slab.rel_secs, Some(0.5));
        assert_eq!(slab.rel_cpu, Some(0.5));
        assert_eq!(slab.ops_per_sec, Some(1000.0));
        assert_eq!(slab.rel_ops_per_sec, Some(2.0));
        assert_eq!(slab.rel_peak, Some(1024.0 / 3072.0));
        assert_eq!(slab.rel_end, Some(0.5));
        let failed = &r.groups[1].rows[1];
        assert_eq!(failed.secs, None);
        assert_eq!(failed.rel_secs, None);
        assert!(r.any_failure());
        assert_eq!(r.groups[1].title(), "large, 1 thread");
    }

    #[test]
    fn throughput_is_the_median_of_per_sample_rates() {
        let s = |secs: f64, ops: u64| Sample {
            ops,
            ..sample(secs, 1, 1)
        };
        let r = Report::build(
            Meta {
                baseline: "a".into(),
                ..Meta::default()
            },
            vec![Group {
                workload: "w".into(),
                summary: String::new(),
                follows: String::new(),
                threads: 1,
                rows: vec![Row {
                    allocator: "a".into(),
                    samples: vec![s(1.0, 100), s(2.0, 400), s(4.0, 400)],
                    ..Row::default()
                }],
            }],
        );
        let row = &r.groups[0].rows[0];
        assert_eq!(row.ops_per_sec, Some(100.0), "rates 100, 200, 100");
        assert_eq!(row.ops, 400);
        assert_eq!(row.rel_ops_per_sec, Some(1.0));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_kib(Some(512.0)), "512 KiB");
        assert_eq!(fmt_kib(Some(12.5 * 1024.0)), "12.5 MiB");
        assert_eq!(fmt_kib(Some(3.0 * 1024.0 * 1024.0)), "3.00 GiB");
        assert_eq!(fmt_kib(None), "-");
        assert_eq!(fmt_rate(Some(9_710_000.0)), "9.71 M");
        assert_eq!(fmt_rate(Some(1500.0)), "1.5 k");
        assert_eq!(fmt_ratio(Some(1.234)), "1.23x");
        assert_eq!(fmt_secs(Some(0.41234)), "0.412");
    }
}

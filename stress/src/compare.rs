//! `twinheap-stress compare`: every chosen workload on every chosen allocator, each run in a fresh
//! child, repeated; then the tables on stdout and the report files.
//!
//! Runs are interleaved (repetition, then workload, then allocator) rather than grouped by allocator,
//! so a slow spell of the machine (other load, thermal limits) spreads over all allocators instead of
//! landing on one of them. A failed run is reported in its row and the tool exits non-zero after
//! writing the reports; that allocator's later repetitions of the same workload are skipped.

use std::path::{Path, PathBuf};

use crate::allocators::{self, Allocator};
use crate::cli::Options;
use crate::launch::{run_child, Sample};
use crate::progress::Progress;
use crate::report::{self, Group, Meta, Report, Row};
use crate::run_one::Job;
use crate::workloads::{self, Params};

/// Resolves the allocator set, with the baseline in it and first.
pub fn allocator_set(o: &Options) -> Result<Vec<Allocator>, String> {
    let mut set = match &o.allocators {
        Some(list) => allocators::resolve_list(list)?,
        None => allocators::default_set(),
    };
    match set.iter().position(|a| a.label == o.baseline) {
        Some(i) => {
            let b = set.remove(i);
            set.insert(0, b);
        }
        None => {
            let b = allocators::resolve(&o.baseline).map_err(|e| format!("baseline: {e}"))?;
            eprintln!(
                "twinheap-stress: adding the baseline '{}' to the allocators",
                b.label
            );
            set.insert(0, b);
        }
    }
    Ok(set)
}

/// The path of the running binary, which children re-execute.
pub fn self_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))
}

/// Runs the comparison; returns the process exit code.
pub fn run(o: &Options, command: &str) -> i32 {
    let set = match allocator_set(o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("twinheap-stress: {e}");
            return 2;
        }
    };
    let exe = match self_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("twinheap-stress: {e}");
            return 2;
        }
    };
    let mut groups: Vec<Group> = Vec::new();
    for w in &o.workloads {
        let wl = workloads::find(w).expect("workload names are checked when parsed");
        for &threads in &o.threads {
            groups.push(Group {
                workload: wl.name.to_string(),
                summary: wl.summary.to_string(),
                follows: wl.follows.to_string(),
                threads,
                rows: set
                    .iter()
                    .map(|a| Row {
                        allocator: a.label.clone(),
                        ..Row::default()
                    })
                    .collect(),
            });
        }
    }
    eprintln!(
        "twinheap-stress: {} workload runs x {} allocators ({}) x {} repetitions",
        groups.len(),
        set.len(),
        set.iter()
            .map(|a| a.label.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        o.reps
    );
    let mut progress = Progress::new(o.reps * groups.len() * set.len());
    for rep in 0..o.reps {
        for g in groups.iter_mut() {
            let title = g.title();
            for (a, row) in set.iter().zip(g.rows.iter_mut()) {
                let what = format!(
                    "{} ({}t) on {}, rep {}",
                    g.workload,
                    g.threads,
                    a.label,
                    rep + 1
                );
                if row.failure.is_some() {
                    progress.finished(&what, "skipped (failed before)");
                    continue;
                }
                let job = Job {
                    workload: g.workload.clone(),
                    params: Params {
                        threads: g.threads,
                        scale: o.scale,
                        seed: o.seed.wrapping_add(rep as u64),
                        sizes: o.sizes,
                    },
                    inject: o.inject,
                };
                progress.starting(&what);
                let outcome = match run_child(&exe, a, &job, o.timeout) {
                    Ok(run) => match run.result {
                        Ok(s) => Ok(s),
                        Err(f) => Err(with_stderr(
                            &format!("{f} (seed {})", job.params.seed),
                            &run.stderr,
                        )),
                    },
                    Err(e) => Err(format!("cannot start the child: {e}")),
                };
                match outcome {
                    Ok(s) => {
                        progress.finished(&what, &describe(&s));
                        row.samples.push(s);
                    }
                    Err(f) => {
                        progress.finished(&what, &format!("FAILED: {f}"));
                        eprintln!("twinheap-stress: {title} on {} failed: {f}", a.label);
                        row.failure = Some(f);
                    }
                }
            }
        }
    }
    progress.end();
    let meta = Meta {
        date: crate::machine::utc_now(),
        machine: crate::machine::cpu(),
        kernel: crate::machine::kernel(),
        cpus: crate::machine::cpus(),
        command: command.to_string(),
        baseline: o.baseline.clone(),
        reps: o.reps,
        scale: o.scale,
        seed: o.seed,
        allocators: set.iter().map(|a| (a.label.clone(), a.origin())).collect(),
    };
    let report = Report::build(meta, groups);
    println!("{}", report::table::text(&report));
    if let Err(e) = write_reports(&report, o) {
        eprintln!("twinheap-stress: {e}");
        return 1;
    }
    let failed: Vec<&str> = report
        .groups
        .iter()
        .flat_map(|g| g.rows.iter())
        .filter(|r| r.failure.is_some())
        .map(|r| r.allocator.as_str())
        .collect();
    if !report.any_failure() {
        return 0;
    }
    let ours = failed
        .iter()
        .any(|a| matches!(*a, "slab" | "arena") || *a == o.baseline);
    eprintln!(
        "twinheap-stress: runs FAILED on {} (see the tables above)",
        failed.join(", ")
    );
    if ours || o.strict {
        1
    } else {
        eprintln!("twinheap-stress: only peers failed; that is their finding, not an error of this run (--strict makes it one)");
        0
    }
}

fn describe(s: &Sample) -> String {
    format!(
        "{:.3} s, peak RSS {}",
        s.secs,
        report::fmt_kib(Some(s.peak_rss_kb as f64))
    )
}

/// A failure with the last lines of the child's stderr (where an allocator's abort message is).
pub fn with_stderr(failure: &str, stderr: &str) -> String {
    let tail: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(crate::fault::FAULT_PREFIX))
        .collect();
    let tail = &tail[tail.len().saturating_sub(3)..];
    if tail.is_empty() {
        failure.to_string()
    } else {
        format!("{failure}; child's stderr: {}", tail.join(" / "))
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes report.md, report.json, report.csv and compare.svg to the report directory, and the
/// extra copies asked for with --json, --csv and --chart.
pub fn write_reports(r: &Report, o: &Options) -> Result<(), String> {
    let json = report::json::report(r);
    let csv = report::csv::report(r);
    let svg = report::svg::report(r);
    let dir = &o.out_dir;
    let md = report::table::markdown(r, Some("compare.svg"));
    let files = [
        (dir.join("report.md"), md),
        (dir.join("report.json"), json.clone()),
        (dir.join("report.csv"), csv.clone()),
        (dir.join("compare.svg"), svg.clone()),
    ];
    for (p, t) in &files {
        write(p, t)?;
    }
    for (p, t) in [(&o.json, &json), (&o.csv, &csv), (&o.chart, &svg)] {
        if let Some(p) = p {
            write(p, t)?;
        }
    }
    eprintln!(
        "twinheap-stress: reports in {}/ (report.md, report.json, report.csv, compare.svg)",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_goes_first_and_is_added_when_missing() {
        let o = Options {
            allocators: Some("slab,system".into()),
            ..Options::default()
        };
        let s = allocator_set(&o).unwrap();
        assert_eq!(s[0].label, "system");
        assert_eq!(s.len(), 2);
        let o = Options {
            allocators: Some("slab".into()),
            ..Options::default()
        };
        let s = allocator_set(&o).unwrap();
        assert_eq!(
            s.iter().map(|a| a.label.as_str()).collect::<Vec<_>>(),
            ["system", "slab"]
        );
        let o = Options {
            allocators: Some("slab".into()),
            baseline: "nope".into(),
            ..Options::default()
        };
        assert!(allocator_set(&o).unwrap_err().contains("baseline"));
    }

    #[test]
    fn stderr_tail_is_attached() {
        assert_eq!(with_stderr("f", ""), "f");
        assert_eq!(
            with_stderr("f", "a\nb\n\nc\nd\n"),
            "f; child's stderr: b / c / d"
        );
        assert_eq!(
            with_stderr(
                "f",
                "TWINHEAP-STRESS-FAULT x\ntwinheap(slab): double free at 0x10\n"
            ),
            "f; child's stderr: twinheap(slab): double free at 0x10"
        );
    }
}

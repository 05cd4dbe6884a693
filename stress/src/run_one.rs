//! The child side of a measurement: `twinheap-stress run-one ...` (hidden) runs one workload once in
//! a fresh process on the allocator its environment chose, and prints one result line.
//!
//! A fresh process per run is what makes allocators comparable: each starts from an empty heap, the
//! allocator is fixed before the first allocation (`TWINHEAP` / `LD_PRELOAD`), and the parent can read
//! the child's peak RSS from `wait4`. The line is
//! `TWINHEAP-STRESS-RESULT ops=<n> secs=<s> rss_end_kb=<k> hwm_kb=<k> allocator=<name>`; a detected
//! fault prints a `TWINHEAP-STRESS-FAULT` line instead (see [`crate::fault`]).

use std::time::Instant;

use crate::pattern::{self, Inject};
use crate::workloads::{self, Params};

/// The prefix of the result line.
pub const RESULT_PREFIX: &str = "TWINHEAP-STRESS-RESULT ";

/// What `run-one` was asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub workload: String,
    pub params: Params,
    pub inject: Option<(Inject, u64)>,
}

impl Job {
    /// The command-line arguments that make a child run this job (after the binary's name).
    pub fn to_args(&self) -> Vec<String> {
        let p = &self.params;
        let mut v = vec![
            "run-one".to_string(),
            "--workload".to_string(),
            self.workload.clone(),
            "--threads".to_string(),
            p.threads.to_string(),
            "--scale".to_string(),
            p.scale.to_string(),
            "--seed".to_string(),
            p.seed.to_string(),
        ];
        if let Some((lo, hi)) = p.sizes {
            v.push("--sizes".to_string());
            v.push(format!("{lo}-{hi}"));
        }
        if let Some((what, at)) = self.inject {
            v.push("--inject".to_string());
            v.push(format!("{}@{at}", what.name()));
        }
        v
    }
}

/// Runs the job in this process and prints the result line; returns the exit code (0).
pub fn run(job: &Job) -> i32 {
    let Some(w) = workloads::find(&job.workload) else {
        eprintln!("twinheap-stress: unknown workload '{}'", job.workload);
        return 2;
    };
    check_preload();
    if let Some((what, at)) = job.inject {
        pattern::inject(what, at);
    }
    let start = Instant::now();
    let ops = (w.run)(&job.params);
    let secs = start.elapsed().as_secs_f64();
    let rss_end = crate::rss::current_kb();
    let hwm = crate::rss::high_water_kb();
    println!(
        "{RESULT_PREFIX}ops={ops} secs={secs:.6} rss_end_kb={rss_end} hwm_kb={hwm} allocator={}",
        selected_allocator()
    );
    0
}

/// The allocator `TWINHEAP` selected in this process, as the facade sees it.
fn selected_allocator() -> &'static str {
    match twinheap::env::process_config().allocator {
        twinheap::tunables::Choice::Slab => "slab",
        twinheap::tunables::Choice::Arena => "arena",
        twinheap::tunables::Choice::System => "system",
    }
}

/// A library that cannot be preloaded is skipped by the dynamic loader with only a warning, and the
/// run would silently measure libc's malloc under the peer's name. So every `LD_PRELOAD` entry must
/// be mapped into this process, or the run is a fault.
fn check_preload() {
    let Ok(list) = std::env::var("LD_PRELOAD") else {
        return;
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for entry in list.split([' ', ':']).filter(|e| !e.is_empty()) {
        let name = std::path::Path::new(entry)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(entry);
        if !maps
            .lines()
            .any(|l| l.ends_with(name) || l.ends_with(entry))
        {
            crate::fault::fail(&format!(
                "LD_PRELOAD={entry} is not loaded in the child (not a loadable shared object?)"
            ));
        }
    }
}

/// The fields of a result line, if `line` is one.
pub fn parse_result(line: &str) -> Option<ResultLine> {
    let rest = line.trim_end().strip_prefix(RESULT_PREFIX)?;
    let mut r = ResultLine::default();
    let mut seen = 0;
    for kv in rest.split_ascii_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "ops" => r.ops = v.parse().ok()?,
            "secs" => r.secs = v.parse().ok()?,
            "rss_end_kb" => r.rss_end_kb = v.parse().ok()?,
            "hwm_kb" => r.hwm_kb = v.parse().ok()?,
            "allocator" => r.allocator = v.to_string(),
            _ => continue,
        }
        seen += 1;
    }
    (seen == 5 && r.secs.is_finite() && r.secs >= 0.0).then_some(r)
}

/// A parsed result line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultLine {
    pub ops: u64,
    pub secs: f64,
    pub rss_end_kb: u64,
    pub hwm_kb: u64,
    pub allocator: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse_and_reject_garbage() {
        let l = "TWINHEAP-STRESS-RESULT ops=10 secs=0.5 rss_end_kb=300 hwm_kb=900 allocator=slab\n";
        assert_eq!(
            parse_result(l),
            Some(ResultLine {
                ops: 10,
                secs: 0.5,
                rss_end_kb: 300,
                hwm_kb: 900,
                allocator: "slab".into()
            })
        );
        assert_eq!(parse_result("ops=10 secs=0.5"), None);
        assert_eq!(
            parse_result("TWINHEAP-STRESS-RESULT ops=10 secs=0.5 rss_end_kb=300 hwm_kb=900"),
            None,
            "a missing field"
        );
        assert_eq!(
            parse_result(
                "TWINHEAP-STRESS-RESULT ops=x secs=0.5 rss_end_kb=300 hwm_kb=900 allocator=a"
            ),
            None
        );
        assert_eq!(
            parse_result(
                "TWINHEAP-STRESS-RESULT ops=1 secs=NaN rss_end_kb=300 hwm_kb=900 allocator=a"
            ),
            None
        );
    }

    #[test]
    fn job_args_carry_everything() {
        let job = Job {
            workload: "larson".into(),
            params: Params {
                threads: 3,
                scale: 0.25,
                seed: 9,
                sizes: Some((8, 64)),
            },
            inject: Some((Inject::Corrupt, 5)),
        };
        assert_eq!(
            job.to_args().join(" "),
            "run-one --workload larson --threads 3 --scale 0.25 --seed 9 --sizes 8-64 --inject corrupt@5"
        );
    }
}

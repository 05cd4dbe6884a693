//! `twinheap-stress soak DURATION`: reliability runs. Every workload on every allocator, round after
//! round with a new seed each round, until the time is up. The first corrupted pattern, child crash
//! or hang stops the soak with a non-zero exit and one line naming workload, allocator, threads and
//! seed (enough to replay it with `run-one`), plus the child's own last words.

use std::time::{Duration, Instant};

use crate::allocators;
use crate::cli::Options;
use crate::compare::{self_exe, with_stderr};
use crate::launch::run_child;
use crate::run_one::Job;
use crate::workloads::Params;

/// Runs the soak; returns the process exit code.
pub fn run(o: &Options, duration: Duration) -> i32 {
    // No baseline here: a soak compares nothing, it only runs the allocators it was given.
    let set = match &o.allocators {
        Some(list) => allocators::resolve_list(list),
        None => Ok(allocators::default_set()),
    };
    let (set, exe) = match (set, self_exe()) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("twinheap-stress: {e}");
            return 2;
        }
    };
    eprintln!(
        "twinheap-stress soak: {} s over {} workloads x {} allocators ({}), threads {:?}",
        duration.as_secs(),
        o.workloads.len(),
        set.len(),
        set.iter()
            .map(|a| a.label.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        o.threads
    );
    let start = Instant::now();
    let mut runs = 0u64;
    let mut round = 0u64;
    'soak: loop {
        let seed = o.seed.wrapping_add(round);
        for w in &o.workloads {
            for &threads in &o.threads {
                for a in &set {
                    if runs > 0 && start.elapsed() >= duration {
                        break 'soak;
                    }
                    let job = Job {
                        workload: w.clone(),
                        params: Params {
                            threads,
                            scale: o.scale,
                            seed,
                            sizes: o.sizes,
                        },
                        inject: o.inject,
                    };
                    let replay = format!(
                        "TWINHEAP={} {}{} {}",
                        a.child_env().0,
                        a.child_env()
                            .1
                            .map(|p| format!("LD_PRELOAD={} ", p.display()))
                            .unwrap_or_default(),
                        exe.display(),
                        job.to_args().join(" ")
                    );
                    let failure = match run_child(&exe, a, &job, o.timeout) {
                        Ok(r) => r
                            .result
                            .err()
                            .map(|f| with_stderr(&f.to_string(), &r.stderr)),
                        Err(e) => Some(format!("cannot start the child: {e}")),
                    };
                    runs += 1;
                    if let Some(f) = failure {
                        eprintln!(
                            "twinheap-stress soak: FAILED workload={w} allocator={} threads={threads} seed={seed}: {f}\n  replay: {replay}",
                            a.label
                        );
                        println!(
                            "soak FAILED after {runs} runs: workload={w} allocator={} threads={threads} seed={seed}",
                            a.label
                        );
                        return 1;
                    }
                }
            }
        }
        round += 1;
        eprintln!(
            "twinheap-stress soak: round {round} clean ({runs} runs, {:.0} s)",
            start.elapsed().as_secs_f64()
        );
    }
    println!(
        "soak passed: {runs} runs ({round} complete rounds) in {:.0} s, no fault",
        start.elapsed().as_secs_f64()
    );
    0
}

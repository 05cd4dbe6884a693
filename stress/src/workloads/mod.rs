//! The workloads: each one is a classic allocation pattern, written here from its published
//! description, run on `threads` threads for a number of iterations scaled by `scale`.
//!
//! Invariants every workload keeps:
//! - It is deterministic for a given seed and thread count: the same requests in the same order per
//!   thread on every allocator, and the same operation count (the `ops` it returns), so runs on
//!   different allocators compare like with like.
//! - Every block carries a pattern ([`crate::pattern::Block`]) that is checked before it is freed or
//!   resized; a mismatch ends the run as a fault.
//! - Everything it allocates is freed before it returns, so the RSS measured after it is what the
//!   allocator keeps, not what the workload holds.

use std::thread;

mod aligned;
mod cache;
mod fragmentation;
mod large;
mod larson;
mod mixed;
mod realloc_growth;
mod thread_churn;
mod xmalloc;

/// The parameters of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub threads: usize,
    /// Multiplies each workload's iteration counts (1.0 is the default suite's size).
    pub scale: f64,
    pub seed: u64,
    /// Overrides the request-size range of the workloads that draw sizes from a range.
    pub sizes: Option<(usize, usize)>,
}

impl Params {
    /// `base` iterations scaled, at least 1.
    pub fn iters(&self, base: u64) -> u64 {
        ((base as f64 * self.scale).round() as u64).max(1)
    }

    /// The size range to draw from: the override if given, else the workload's own.
    pub fn size_range(&self, lo: usize, hi: usize) -> (usize, usize) {
        self.sizes.unwrap_or((lo, hi))
    }
}

/// One workload of the suite.
pub struct Workload {
    pub name: &'static str,
    /// What it models, in a line.
    pub summary: &'static str,
    /// The classic benchmark it follows.
    pub follows: &'static str,
    /// Runs it; returns the number of allocator operations done (allocations, frees, reallocs).
    pub run: fn(&Params) -> u64,
}

/// Every workload, in the order reports list them.
pub const ALL: &[Workload] = &[
    Workload {
        name: "larson",
        summary: "server churn: each thread replaces random blocks in an array it inherited from another thread, so most frees are of blocks another thread allocated",
        follows: "Larson & Krishnan's server benchmark (larson)",
        run: larson::run,
    },
    Workload {
        name: "xmalloc",
        summary: "producer/consumer: one thread allocates batches, another checks and frees them",
        follows: "xmalloc-test (Lever & Boreham), as in mimalloc-bench",
        run: xmalloc::run,
    },
    Workload {
        name: "cache-scratch",
        summary: "passive false sharing: each thread frees a block the main thread allocated next to the others', then allocates, writes and frees small blocks",
        follows: "Hoard's cache-scratch",
        run: cache::run_scratch,
    },
    Workload {
        name: "cache-thrash",
        summary: "active false sharing: threads allocate, write and free small blocks at once; an allocator that packs different threads' blocks into one cache line slows them all",
        follows: "Hoard's cache-thrash",
        run: cache::run_thrash,
    },
    Workload {
        name: "mixed-small",
        summary: "random allocate/free of 8 B - 512 B blocks around a live set of about 10,000 blocks per thread",
        follows: "random mixed-size churn in the style of mimalloc-bench's alloc-test and glibc's bench-malloc-thread",
        run: mixed::run_small,
    },
    Workload {
        name: "mixed-medium",
        summary: "random allocate/free of 512 B - 32 KiB blocks around a live set of about 1,500 blocks per thread",
        follows: "random mixed-size churn (alloc-test style), medium sizes",
        run: mixed::run_medium,
    },
    Workload {
        name: "mixed-large",
        summary: "random allocate/free of 32 KiB - 512 KiB blocks around a live set of about 100 blocks per thread (crosses the usual mmap threshold)",
        follows: "random mixed-size churn (alloc-test style), large sizes",
        run: mixed::run_large,
    },
    Workload {
        name: "realloc",
        summary: "buffers grown by small appends with realloc (string and vector building), then shrunk and freed; contents are checked after every move",
        follows: "realloc growth as in glibc's bench-malloc and mimalloc-bench's string workloads",
        run: realloc_growth::run,
    },
    Workload {
        name: "fragmentation",
        summary: "allocate many small blocks, free three in four, then allocate other sizes while the survivors pin memory; peak RSS is the figure",
        follows: "the fragmentation phases of Wilson et al.'s studies and mimalloc-bench's cfrac/espresso-like pinning",
        run: fragmentation::run,
    },
    Workload {
        name: "thread-churn",
        summary: "many short-lived threads each allocate, free half and hand the other half to the main thread, which frees them after the thread is gone",
        follows: "thread-churn as in mimalloc-bench (glibc-thread, threadtest)",
        run: thread_churn::run,
    },
    Workload {
        name: "large",
        summary: "blocks of 256 KiB - 8 MiB, every page touched (the mmap path and its reuse)",
        follows: "the large-object phase of glibc's bench-malloc and mimalloc-bench's malloc-large",
        run: large::run,
    },
    Workload {
        name: "aligned",
        summary: "aligned allocations (16 B - 64 KiB alignment) of 8 B - 8 KiB, alignment checked on every block",
        follows: "posix_memalign / aligned_alloc stress as in jemalloc's and glibc's tests",
        run: aligned::run,
    },
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    ALL.iter().find(|w| w.name == name)
}

/// Runs `body(thread_index)` on `n` threads and sums what they return.
pub fn on_threads<F>(n: usize, body: F) -> u64
where
    F: Fn(usize) -> u64 + Sync,
{
    let body = &body;
    thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|t| s.spawn(move || body(t))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| crate::fault::fail("a workload thread panicked"))
            })
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run small enough for a unit test.
    pub(crate) fn tiny(threads: usize) -> Params {
        Params {
            threads,
            scale: 0.01,
            seed: 42,
            sizes: None,
        }
    }

    #[test]
    fn every_workload_runs_tiny_is_deterministic_in_ops_and_names_are_unique() {
        for w in ALL {
            let a = (w.run)(&tiny(2));
            let b = (w.run)(&tiny(2));
            assert!(a > 0, "{} did nothing", w.name);
            assert_eq!(a, b, "{} ops differ between identical runs", w.name);
            let one = (w.run)(&tiny(1));
            assert!(one > 0, "{} on one thread", w.name);
            assert!(find(w.name).is_some());
            assert_eq!(ALL.iter().filter(|x| x.name == w.name).count(), 1);
        }
    }

    #[test]
    fn sizes_override_is_used() {
        let p = Params {
            sizes: Some((100, 200)),
            ..tiny(1)
        };
        assert_eq!(p.size_range(8, 16), (100, 200));
        assert_eq!(tiny(1).size_range(8, 16), (8, 16));
        assert_eq!(p.iters(1000), 10);
        assert_eq!(p.iters(1), 1);
    }
}

//! cache-scratch and cache-thrash: false sharing caused by the allocator.
//!
//! Both follow the Hoard benchmarks. Each thread repeatedly allocates a small block, writes all of it
//! many times, and frees it. If the allocator hands blocks from one cache line to different threads,
//! their writes fight over that line and the run slows down by an order of magnitude.
//! - thrash ("active" false sharing): threads allocate concurrently from the start;
//! - scratch ("passive"): the main thread first allocates one block per thread, all from the same
//!   place, and each thread starts by freeing the one it was given; an allocator that then reuses that
//!   freed block in the thread that freed it has spread one cache line over all threads.

use super::{on_threads, Params};
use crate::pattern::Block;
use crate::rng::Rng;

const OBJECT: usize = 8;
const ITERATIONS: u64 = 80_000;
const WRITES: usize = 100;

pub fn run_thrash(p: &Params) -> u64 {
    churn(p, None)
}

pub fn run_scratch(p: &Params) -> u64 {
    let mut rng = Rng::new(p.seed, u64::MAX);
    let size = p.size_range(OBJECT, OBJECT).0;
    let given: Vec<std::sync::Mutex<Option<Block>>> = (0..p.threads)
        .map(|_| std::sync::Mutex::new(Some(Block::new(size, 1, rng.next_u64()))))
        .collect();
    churn(p, Some(&given)) + p.threads as u64
}

fn churn(p: &Params, given: Option<&[std::sync::Mutex<Option<Block>>]>) -> u64 {
    let size = p.size_range(OBJECT, OBJECT).0;
    let iters = p.iters(ITERATIONS);
    on_threads(p.threads, |t| {
        let mut ops = 0;
        if let Some(given) = given {
            if let Some(b) = given[t].lock().unwrap().take() {
                b.free();
                ops += 1;
            }
        }
        let mut rng = Rng::new(p.seed, t as u64);
        for _ in 0..iters {
            let b = Block::new(size, 1, rng.next_u64());
            b.rewrite(WRITES);
            b.free();
            ops += 2;
        }
        ops
    })
}

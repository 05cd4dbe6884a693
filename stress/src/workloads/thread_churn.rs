//! thread-churn: many short-lived threads.
//!
//! Servers that spawn a thread per task make allocators set up and tear down per-thread state all the
//! time. Each round starts `threads` threads; each allocates a batch, frees half of it and returns the
//! other half, which the main thread frees after the thread has exited: the blocks outlive the thread
//! cache they came from.

use std::thread;

use super::Params;
use crate::pattern::Block;
use crate::rng::Rng;

const ROUNDS: u64 = 1_500;
const PER_THREAD: usize = 200;

pub fn run(p: &Params) -> u64 {
    let (lo, hi) = p.size_range(16, 1024);
    let rounds = p.iters(ROUNDS);
    let mut ops = 0;
    for round in 0..rounds {
        let handles: Vec<_> = (0..p.threads)
            .map(|t| {
                let seed = p.seed;
                thread::spawn(move || {
                    let mut rng = Rng::new(seed, round * 1024 + t as u64);
                    let mut keep = Vec::with_capacity(PER_THREAD / 2);
                    for i in 0..PER_THREAD {
                        let b = Block::new(rng.range(lo, hi), 8, rng.next_u64());
                        if i % 2 == 0 {
                            keep.push(b);
                        } else {
                            b.free();
                        }
                    }
                    keep
                })
            })
            .collect();
        for h in handles {
            let kept = h
                .join()
                .unwrap_or_else(|_| crate::fault::fail("a churn thread panicked"));
            for b in kept {
                b.free();
            }
            ops += 2 * PER_THREAD as u64;
        }
    }
    ops
}

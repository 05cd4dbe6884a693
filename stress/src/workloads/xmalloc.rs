//! xmalloc: producer/consumer.
//!
//! Following xmalloc-test, allocation and freeing happen on different threads: each producer
//! allocates batches of blocks and hands them over a bounded channel to its consumer, which checks and
//! frees them. Every free is remote, and the producer never sees its memory come back locally, so an
//! allocator whose per-thread caches do not return remote frees grows without bound here.

use std::sync::mpsc::sync_channel;
use std::thread;

use super::Params;
use crate::pattern::Block;
use crate::rng::Rng;

const BATCH: usize = 256;
const BATCHES: u64 = 1600;

pub fn run(p: &Params) -> u64 {
    let (lo, hi) = p.size_range(8, 512);
    let pairs = (p.threads / 2).max(1);
    let batches = p.iters(BATCHES);
    thread::scope(|s| {
        let mut consumers = Vec::new();
        for pair in 0..pairs {
            let (tx, rx) = sync_channel::<Vec<Block>>(4);
            s.spawn(move || {
                let mut rng = Rng::new(p.seed, pair as u64);
                for _ in 0..batches {
                    let batch = (0..BATCH)
                        .map(|_| Block::new(rng.range(lo, hi), 8, rng.next_u64()))
                        .collect();
                    if tx.send(batch).is_err() {
                        crate::fault::fail("xmalloc: consumer went away");
                    }
                }
            });
            consumers.push(s.spawn(move || {
                let mut ops = 0u64;
                for batch in rx {
                    for b in batch {
                        b.free();
                        ops += 2;
                    }
                }
                ops
            }));
        }
        consumers.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

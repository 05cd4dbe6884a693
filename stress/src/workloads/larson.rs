//! larson: server churn with cross-thread frees.
//!
//! Larson and Krishnan's benchmark models a server whose worker threads come and go: each new worker
//! inherits the block array its predecessor left and keeps replacing random blocks in it. Here `T`
//! threads each own an array at the start; after every phase the arrays rotate one thread along
//! (behind a barrier, so no two threads touch one array), and so from the second phase on nearly
//! every free is of a block another thread allocated, which is what stresses an allocator's remote
//! free path and its per-thread caches.

use std::sync::{Barrier, Mutex};

use super::{on_threads, Params};
use crate::pattern::Block;
use crate::rng::Rng;

const SLOTS: usize = 1000;
const PHASES: u64 = 8;
const REPLACEMENTS_PER_PHASE: u64 = 25_000;

pub fn run(p: &Params) -> u64 {
    let (lo, hi) = p.size_range(16, 512);
    let per_phase = p.iters(REPLACEMENTS_PER_PHASE);
    let arrays: Vec<Mutex<Vec<Block>>> = (0..p.threads).map(|_| Mutex::new(Vec::new())).collect();
    let barrier = Barrier::new(p.threads);
    on_threads(p.threads, |t| {
        let mut rng = Rng::new(p.seed, t as u64);
        let mut ops = 0;
        {
            let mut own = arrays[t].lock().unwrap();
            own.extend((0..SLOTS).map(|_| Block::new(rng.range(lo, hi), 8, rng.next_u64())));
            ops += SLOTS as u64;
        }
        for phase in 0..PHASES {
            barrier.wait();
            let mut arr = arrays[(t + phase as usize) % p.threads].lock().unwrap();
            for _ in 0..per_phase {
                let i = rng.below(SLOTS);
                let fresh = Block::new(rng.range(lo, hi), 8, rng.next_u64());
                std::mem::replace(&mut arr[i], fresh).free();
                ops += 2;
            }
        }
        barrier.wait();
        // Each thread empties the array it holds last, again mostly blocks of other threads.
        let mut arr = arrays[(t + PHASES as usize) % p.threads].lock().unwrap();
        for b in arr.drain(..) {
            b.free();
            ops += 1;
        }
        ops
    })
}

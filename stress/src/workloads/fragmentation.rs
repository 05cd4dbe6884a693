//! fragmentation: survivors pin memory while the size mix changes.
//!
//! Each round a thread allocates many small blocks, frees three in four of them (the survivors are
//! spread over all the memory those blocks came from and stay live until the end), then allocates
//! medium blocks of other sizes, which replace the previous round's medium blocks. An allocator that
//! can reuse the holes between survivors for later requests keeps its peak RSS close to the live data;
//! one that cannot keeps growing. The figure that matters is peak RSS, not time.

use super::{on_threads, Params};
use crate::pattern::Block;
use crate::rng::Rng;

const SMALL_PER_ROUND: usize = 40_000;
const ROUNDS: u64 = 8;

pub fn run(p: &Params) -> u64 {
    let (lo, hi) = p.size_range(16, 128);
    let rounds = p.iters(ROUNDS);
    // The per-round count scales only below 1.0, so tiny test runs stay tiny.
    let per_round = ((SMALL_PER_ROUND as f64 * p.scale.min(1.0)) as usize).max(16);
    on_threads(p.threads, |t| {
        let mut rng = Rng::new(p.seed, t as u64);
        let mut survivors = Vec::new();
        let mut medium: Vec<Block> = Vec::new();
        let mut ops = 0;
        for _ in 0..rounds {
            let small: Vec<Block> = (0..per_round)
                .map(|_| Block::new(rng.range(lo, hi), 8, rng.next_u64()))
                .collect();
            ops += per_round as u64;
            for (i, b) in small.into_iter().enumerate() {
                if i % 4 == 0 {
                    survivors.push(b);
                } else {
                    b.free();
                    ops += 1;
                }
            }
            for b in medium.drain(..) {
                b.free();
                ops += 1;
            }
            // About as many bytes as were just freed, in sizes the small blocks never had.
            medium.extend(
                (0..per_round / 8)
                    .map(|_| Block::new(rng.range(hi * 2, hi * 8), 8, rng.next_u64())),
            );
            ops += (per_round / 8) as u64;
        }
        for b in survivors.into_iter().chain(medium) {
            b.free();
            ops += 1;
        }
        ops
    })
}

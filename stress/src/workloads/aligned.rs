//! aligned: over-aligned allocations.
//!
//! Rust's `Layout` with a large alignment, C's `posix_memalign` and `aligned_alloc` take a different
//! path in every allocator (a larger block trimmed to the alignment, or a dedicated size class). Each
//! thread churns a live set of blocks whose alignment is a power of two from 16 B to 64 KiB (large
//! alignments rarer, as in real programs) and checks every returned address.

use super::{on_threads, Params};
use crate::pattern::Block;
use crate::rng::Rng;

const SLOTS: usize = 2_000;
const STEPS: u64 = 200_000;

pub fn run(p: &Params) -> u64 {
    let (lo, hi) = p.size_range(8, 8 << 10);
    let steps = p.iters(STEPS);
    on_threads(p.threads, |t| {
        let mut rng = Rng::new(p.seed, t as u64);
        let mut slots: Vec<Option<Block>> = (0..SLOTS).map(|_| None).collect();
        let mut ops = 0;
        for _ in 0..steps {
            let slot = &mut slots[rng.below(SLOTS)];
            match slot.take() {
                Some(b) => b.free(),
                None => {
                    // 16 B .. 4 KiB usually; 8 KiB .. 64 KiB one time in 16.
                    let shift = if rng.one_in(16) {
                        rng.range(13, 16)
                    } else {
                        rng.range(4, 12)
                    };
                    let size = rng.log_uniform(lo, hi);
                    *slot = Some(Block::new(size, 1 << shift, rng.next_u64()));
                }
            }
            ops += 1;
        }
        for b in slots.into_iter().flatten() {
            b.free();
            ops += 1;
        }
        ops
    })
}

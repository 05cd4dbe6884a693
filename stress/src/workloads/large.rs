//! large: big blocks, the mmap path.
//!
//! Blocks of 256 KiB to 8 MiB are above every allocator's mmap threshold by default (glibc's starts
//! at 128 KiB and adapts upward), so this measures mapping, unmapping, page faults and whether freed
//! large blocks are cached for reuse. The pattern touches every page, so RSS counts them all.

use super::{on_threads, Params};
use crate::pattern::Block;
use crate::rng::Rng;

const SLOTS: usize = 4;
const STEPS: u64 = 400;

pub fn run(p: &Params) -> u64 {
    let (lo, hi) = p.size_range(256 << 10, 8 << 20);
    let steps = p.iters(STEPS);
    on_threads(p.threads, |t| {
        let mut rng = Rng::new(p.seed, t as u64);
        let mut slots: Vec<Option<Block>> = (0..SLOTS).map(|_| None).collect();
        let mut ops = 0;
        for _ in 0..steps {
            let slot = &mut slots[rng.below(SLOTS)];
            if let Some(b) = slot.take() {
                b.free();
                ops += 1;
            }
            *slot = Some(Block::new(rng.log_uniform(lo, hi), 16, rng.next_u64()));
            ops += 1;
        }
        for b in slots.into_iter().flatten() {
            b.free();
            ops += 1;
        }
        ops
    })
}

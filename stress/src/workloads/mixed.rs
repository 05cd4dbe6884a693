//! mixed-small, mixed-medium, mixed-large: random churn around a live set.
//!
//! Each thread keeps an array of slots; at every step it picks a random slot and frees the block in
//! it, or fills it with a new block when it is empty. The array hovers around half full, so the live
//! set stays about constant while sizes keep changing: the common case of a long-running program.
//! Sizes are log-uniform in the range (each power-of-two band equally likely), like real request
//! sizes, and the three variants differ only in range and slot count.

use super::{on_threads, Params};
use crate::pattern::Block;
use crate::rng::Rng;

struct Shape {
    lo: usize,
    hi: usize,
    slots: usize,
    steps: u64,
}

const SMALL: Shape = Shape {
    lo: 8,
    hi: 512,
    slots: 20_000,
    steps: 400_000,
};
const MEDIUM: Shape = Shape {
    lo: 512,
    hi: 32 << 10,
    slots: 3_000,
    steps: 150_000,
};
const LARGE: Shape = Shape {
    lo: 32 << 10,
    hi: 512 << 10,
    slots: 200,
    steps: 6_000,
};

pub fn run_small(p: &Params) -> u64 {
    churn(p, &SMALL)
}

pub fn run_medium(p: &Params) -> u64 {
    churn(p, &MEDIUM)
}

pub fn run_large(p: &Params) -> u64 {
    churn(p, &LARGE)
}

fn churn(p: &Params, shape: &Shape) -> u64 {
    let (lo, hi) = p.size_range(shape.lo, shape.hi);
    let steps = p.iters(shape.steps);
    on_threads(p.threads, |t| {
        let mut rng = Rng::new(p.seed, t as u64);
        let mut slots: Vec<Option<Block>> = (0..shape.slots).map(|_| None).collect();
        let mut ops = 0;
        for _ in 0..steps {
            let slot = &mut slots[rng.below(shape.slots)];
            match slot.take() {
                Some(b) => b.free(),
                None => *slot = Some(Block::new(rng.log_uniform(lo, hi), 8, rng.next_u64())),
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

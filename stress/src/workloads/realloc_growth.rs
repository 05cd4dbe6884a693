//! realloc: buffers built by small appends, then shrunk.
//!
//! Programs that build strings and vectors call realloc with a slowly growing size. Each thread keeps
//! a few buffers growing at once (so a buffer's neighbour is often live and in-place growth is not a
//! given), each towards its own target size; a buffer that reaches it shrinks by halves and is freed,
//! and a new one starts. Every realloc checks that the contents moved with the block.

use super::{on_threads, Params};
use crate::pattern::Block;
use crate::rng::Rng;

const BUFFERS: usize = 8;
const STEPS: u64 = 100_000;

struct Buffer {
    block: Block,
    target: usize,
    shrinking: bool,
}

fn fresh(rng: &mut Rng, lo: usize, hi: usize) -> Buffer {
    Buffer {
        block: Block::new(16, 8, rng.next_u64()),
        target: rng.log_uniform(lo, hi),
        shrinking: false,
    }
}

pub fn run(p: &Params) -> u64 {
    let (lo, hi) = p.size_range(1 << 10, 256 << 10);
    let steps = p.iters(STEPS);
    on_threads(p.threads, |t| {
        let mut rng = Rng::new(p.seed, t as u64);
        let mut bufs: Vec<Buffer> = (0..BUFFERS).map(|_| fresh(&mut rng, lo, hi)).collect();
        let mut ops = BUFFERS as u64;
        for _ in 0..steps {
            let i = rng.below(BUFFERS);
            let buf = &mut bufs[i];
            let size = buf.block.size();
            if !buf.shrinking {
                // Appends of a few bytes to a few hundred, as text and records arrive.
                buf.block.resize(size + rng.range(1, 256));
                buf.shrinking = buf.block.size() >= buf.target;
            } else if size > 64 {
                buf.block.resize(size / 2);
            } else {
                let done = std::mem::replace(buf, fresh(&mut rng, lo, hi));
                done.block.free();
                ops += 1;
            }
            ops += 1;
        }
        for b in bufs {
            b.block.free();
            ops += 1;
        }
        ops
    })
}

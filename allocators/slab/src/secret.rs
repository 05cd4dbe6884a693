//! The per-process secret and the random numbers behind slot choice.
//!
//! The secret stamps every meta area: a free whose metadata pointer leads anywhere else fails the
//! check. It comes from the page backend's [`OsEntropy`]: the kernel's getrandom (non-blocking), or, if that is unavailable, from the
//! 16 random bytes the kernel puts in every process's auxiliary vector (AT_RANDOM), mixed so that the
//! value differs from what libc derives from the same bytes for its stack and pointer guards.
//!
//! Slot choice only needs fast, unpredictable-enough numbers: each heap owns a small PRNG
//! ([`SlotRng`], wyrand) seeded from the entropy source, both exposed through `rand_core`'s traits.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rand_core::{RngCore, SeedableRng};

pub use twinheap_page::entropy::{mix, OsEntropy};

static SECRET: AtomicU64 = AtomicU64::new(0);

/// The process's secret; never 0. Initialised at the first call.
#[inline]
pub fn secret() -> u64 {
    match SECRET.load(Relaxed) {
        0 => init_secret(),
        s => s,
    }
}

/// The secret on paths that only run once it exists: after a meta record was validated against it
/// or taken from an area stamped with it (both call [`secret`], and the record reached this thread
/// through a lock or the record check). One load, no initialisation branch.
#[inline(always)]
pub(crate) fn known() -> u64 {
    let s = SECRET.load(Relaxed);
    debug_assert!(s != 0, "the secret is read before it exists");
    s
}

#[cold]
fn init_secret() -> u64 {
    let mut value = 0;
    while value == 0 {
        value = OsEntropy.next_u64();
    }
    // Racing first callers agree on whichever value lands first.
    match SECRET.compare_exchange(0, value, Relaxed, Relaxed) {
        Ok(_) => value,
        Err(existing) => existing,
    }
}

/// wyrand: one multiply per 64 random bits; state advances by a constant, so no seed is weak.
#[derive(Clone, Debug)]
pub struct SlotRng(u64);

impl SlotRng {
    /// A generator seeded from the kernel's entropy.
    pub fn from_entropy() -> Self {
        SlotRng::seed_from_u64(OsEntropy.next_u64())
    }
}

impl RngCore for SlotRng {
    #[inline]
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64();
            chunk.copy_from_slice(&v.to_ne_bytes()[..chunk.len()]);
        }
    }
}

impl SeedableRng for SlotRng {
    type Seed = [u8; 8];
    fn from_seed(seed: [u8; 8]) -> Self {
        SlotRng(u64::from_ne_bytes(seed))
    }
}

/// A random number for placing a large block; a cheap counter-based mix, not a syscall, since
/// placement needs unpredictability across runs (the secret) rather than fresh entropy each time.
pub fn cheap_u32() -> u32 {
    (mix(secret() ^ twinheap_page::entropy::counter()) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_stable_and_nonzero() {
        let s = secret();
        assert_ne!(s, 0);
        assert_eq!(secret(), s);
    }

    #[test]
    fn entropy_differs_between_draws() {
        let a = OsEntropy.next_u64();
        let b = OsEntropy.next_u64();
        assert_ne!(a, b);
        assert_ne!(cheap_u32(), cheap_u32());
    }

    #[test]
    fn slot_choice_covers_every_slot() {
        let mut rng = SlotRng::seed_from_u64(7);
        let mut seen = 0u32;
        // Slot choice takes 5-bit chunks of one 64-bit draw (see `heap::State::take_slots`).
        for _ in 0..200 {
            let mut r = rng.next_u64();
            for _ in 0..12 {
                seen |= 1 << (r & 31);
                r >>= 5;
            }
        }
        assert_eq!(seen, u32::MAX);
    }
}

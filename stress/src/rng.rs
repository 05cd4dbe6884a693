//! A small seeded random number generator (SplitMix64) for the workloads.
//!
//! Every workload draws its sizes, slots and block tags from one of these, seeded from the run's seed
//! and the thread's index, so a run with the same seed and thread count makes the same sequence of
//! requests on every allocator. It is not cryptographic and needs no state beyond one word.

/// SplitMix64: one 64-bit word of state, full period, good enough mixing for choosing sizes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `stream` (a thread index, a phase) of the run seeded by `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Discard one output so that nearby seeds do not start with related values.
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`). The modulo bias is irrelevant for workload shapes.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        (self.next_u64() % n as u64) as usize
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as usize
    }

    /// A value in `lo..=hi` whose logarithm is roughly uniform: every power-of-two band between the
    /// bounds is equally likely, which is how real programs' request sizes spread (many small ones, a
    /// long tail of large ones).
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo >= 1 && lo <= hi);
        let lo_bits = usize::BITS - lo.leading_zeros() - 1;
        let hi_bits = usize::BITS - hi.leading_zeros() - 1;
        let band = self.range(lo_bits as usize, hi_bits as usize) as u32;
        let band_lo = (1usize << band).max(lo);
        let band_hi = ((1usize << band) * 2 - 1).min(hi);
        self.range(band_lo, band_hi)
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7, 0);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7, 0);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ranges_stay_in_bounds_and_cover_them() {
        let mut r = Rng::new(1, 2);
        let mut seen_lo = false;
        let mut seen_hi = false;
        for _ in 0..10_000 {
            let v = r.range(3, 9);
            assert!((3..=9).contains(&v));
            seen_lo |= v == 3;
            seen_hi |= v == 9;
            let l = r.log_uniform(24, 5000);
            assert!((24..=5000).contains(&l), "{l}");
        }
        assert!(seen_lo && seen_hi);
    }

    #[test]
    fn log_uniform_favours_small_sizes_per_byte_but_reaches_every_band() {
        let mut r = Rng::new(3, 0);
        let mut bands = [0u32; 20];
        for _ in 0..20_000 {
            let v = r.log_uniform(16, 1 << 19);
            bands[(usize::BITS - v.leading_zeros() - 1) as usize] += 1;
        }
        // 16 ..= 2^19 spans bands 4..=19; each should get about 1/16 of the draws.
        for (b, &n) in bands.iter().enumerate().take(20).skip(4) {
            assert!(n > 800 && n < 1700, "band {b}: {n}");
        }
    }
}

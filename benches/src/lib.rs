//! Shared code for the criterion benches (see benches/benches/): a seeded random-number generator, the
//! size distributions the allocator benches draw from, a lock-free single-producer single-consumer
//! ring for handing blocks between threads, and readers for the process's resident memory.
//!
//! Nothing here allocates through anything but the system allocator (the bench binaries set no global
//! allocator), so helpers cost the same whichever allocator a bench measures.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A small, fast, seeded generator (SplitMix64). Deterministic: the same seed gives every allocator
/// the same sequence of requests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`), by multiply-shift.
    #[inline]
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// A request size from a program-like distribution: 90% small (16-512 B, log-uniform, so that 16-64 B
/// requests are as common as 128-512 B ones), 9.5% medium (513 B - 8 KiB), 0.5% large (8-64 KiB).
#[inline]
pub fn realistic_size(rng: &mut Rng) -> usize {
    let r = rng.below(1000);
    if r < 900 {
        // Log-uniform over 16..=512: pick an octave (16, 32, 64, 128, 256), then a size inside it.
        let lo = 16usize << rng.below(5);
        rng.range(lo, 2 * lo)
    } else if r < 995 {
        rng.range(513, 8 << 10)
    } else {
        rng.range((8 << 10) + 1, 64 << 10)
    }
}

/// Pads and aligns a value to a cache line so that producer and consumer indices do not share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct CachePadded<T>(pub T);

/// A bounded lock-free ring for one producer thread and one consumer thread, carrying (address, size)
/// pairs. Push fails when full and pop when empty; neither blocks or allocates.
#[derive(Debug)]
pub struct SpscRing {
    slots: Box<[(AtomicUsize, AtomicUsize)]>,
    /// Next slot to pop; written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next slot to push; written by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// Set by the producer after its last push.
    closed: AtomicBool,
}

impl SpscRing {
    /// A ring of `capacity` entries, a power of two.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity.is_power_of_two());
        SpscRing {
            slots: (0..capacity)
                .map(|_| (AtomicUsize::new(0), AtomicUsize::new(0)))
                .collect(),
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
        }
    }

    /// Appends an entry; false when the ring is full. Producer only.
    #[inline]
    pub fn push(&self, addr: usize, size: usize) -> bool {
        let tail = self.tail.0.load(Ordering::Relaxed);
        if tail.wrapping_sub(self.head.0.load(Ordering::Acquire)) == self.slots.len() {
            return false;
        }
        let slot = &self.slots[tail & (self.slots.len() - 1)];
        slot.0.store(addr, Ordering::Relaxed);
        slot.1.store(size, Ordering::Relaxed);
        self.tail.0.store(tail.wrapping_add(1), Ordering::Release);
        true
    }

    /// Takes the oldest entry, if any. Consumer only.
    #[inline]
    pub fn pop(&self) -> Option<(usize, usize)> {
        let head = self.head.0.load(Ordering::Relaxed);
        if head == self.tail.0.load(Ordering::Acquire) {
            return None;
        }
        let slot = &self.slots[head & (self.slots.len() - 1)];
        let entry = (
            slot.0.load(Ordering::Relaxed),
            slot.1.load(Ordering::Relaxed),
        );
        self.head.0.store(head.wrapping_add(1), Ordering::Release);
        Some(entry)
    }

    /// Marks the producer finished. Producer only.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// True once the producer has finished and every entry was popped.
    pub fn is_drained(&self) -> bool {
        // Read `closed` first: after it, the producer pushes nothing more.
        self.closed.load(Ordering::Acquire)
            && self.head.0.load(Ordering::Relaxed) == self.tail.0.load(Ordering::Acquire)
    }
}

/// A field of /proc/self/status in bytes (such as "VmRSS" or "VmHWM"), or 0 if it cannot be read.
pub fn proc_status_bytes(field: &str) -> usize {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            let kb: usize = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some(kb << 10)
        })
        .unwrap_or(0)
}

/// The process's resident set size in bytes (VmRSS).
pub fn rss_bytes() -> usize {
    proc_status_bytes("VmRSS")
}

/// True when the binary runs as a benchmark (`cargo bench` passes `--bench`); false under
/// `cargo test --benches`, where benches should only check that they work, quickly.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_fifo_and_bounded() {
        let r = SpscRing::new(4);
        for i in 0..4 {
            assert!(r.push(i, i * 10));
        }
        assert!(!r.push(9, 9));
        assert_eq!(r.pop(), Some((0, 0)));
        assert!(r.push(4, 40));
        for i in 1..5 {
            assert_eq!(r.pop(), Some((i, i * 10)));
        }
        assert_eq!(r.pop(), None);
        assert!(!r.is_drained());
        r.close();
        assert!(r.is_drained());
    }

    #[test]
    fn sizes_stay_in_range() {
        let mut rng = Rng::new(1);
        let mut small = 0;
        for _ in 0..100_000 {
            let n = realistic_size(&mut rng);
            assert!((16..=64 << 10).contains(&n));
            small += usize::from(n <= 512);
        }
        assert!((88_000..92_000).contains(&small), "{small}");
    }

    #[test]
    fn rss_is_read() {
        assert!(rss_bytes() > 0);
    }
}

//! Blocks that carry a checkable pattern, so every benchmark run is also a correctness check.
//!
//! A [`Block`] owns one allocation made through the global allocator (`twinheap::Select`, so whichever
//! allocator the run chose). At creation it writes a pattern derived from a random 64-bit tag and the
//! byte's offset; before it is freed or resized the pattern is checked, and a mismatch ends the run
//! with a fault naming the block, offset and bytes. Invariant: every sampled byte of a live block holds
//! `pattern_byte(tag, offset)` whenever the workload is not in the middle of writing it.
//!
//! Writing every byte of every block would turn the benchmarks into memset benchmarks, so the pattern
//! covers the first and last 64 bytes (where allocator metadata and neighbours' overruns land) and one
//! byte every 256 in between (which also touches every page of a large block, so RSS is honest).
//!
//! Fault injection for tests: [`inject`] arms a one-shot fault that fires at the n-th check of the
//! process (a flipped byte, or a double free); the check path reads one shared flag only when armed,
//! so an unarmed run pays nothing for it.

use std::alloc::{alloc, dealloc, realloc, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

use crate::fault;

/// The pattern's value at `offset` of a block tagged `tag`.
#[inline]
pub fn pattern_byte(tag: u64, offset: usize) -> u8 {
    let x = tag ^ (offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x ^ (x >> 29) ^ (x >> 47)) as u8
}

/// Calls `f` with every offset the pattern covers in a block of `size` bytes, in increasing order.
#[inline]
pub fn for_each_sample(size: usize, mut f: impl FnMut(usize)) {
    const EDGE: usize = 64;
    const STRIDE: usize = 256;
    let head = size.min(EDGE);
    for i in 0..head {
        f(i);
    }
    if size <= EDGE {
        return;
    }
    let tail = (size - EDGE).max(EDGE);
    let mut i = EDGE;
    while i < tail {
        f(i);
        i += STRIDE;
    }
    for i in tail..size {
        f(i);
    }
}

/// A pattern byte that did not hold its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub addr: usize,
    pub size: usize,
    pub align: usize,
    pub offset: usize,
    pub expected: u8,
    pub found: u8,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupted pattern in block 0x{:x} (size {}, align {}) at offset {}: expected 0x{:02x}, found 0x{:02x}",
            self.addr, self.size, self.align, self.offset, self.expected, self.found
        )
    }
}

/// Writes the pattern of `tag` at every sampled offset of `size` bytes at `ptr`.
///
/// # Safety
/// `ptr` must be valid for writes of `size` bytes.
pub unsafe fn fill_raw(ptr: *mut u8, size: usize, tag: u64) {
    for_each_sample(size, |i| {
        // SAFETY: `i < size` and the caller promises `size` writable bytes.
        unsafe { ptr.add(i).write_volatile(pattern_byte(tag, i)) }
    });
}

/// Checks the pattern of `tag` at the sampled offsets of a block of `size` bytes that are below
/// `limit` (a shrunk block keeps only its prefix).
///
/// # Safety
/// `ptr` must be valid for reads of `min(size, limit)` bytes.
pub unsafe fn check_raw(
    ptr: *const u8,
    size: usize,
    limit: usize,
    tag: u64,
) -> Result<(), (usize, u8, u8)> {
    let mut bad = None;
    for_each_sample(size, |i| {
        if bad.is_some() || i >= limit {
            return;
        }
        // SAFETY: `i < min(size, limit)`, readable by the caller's promise.
        let found = unsafe { ptr.add(i).read_volatile() };
        let expected = pattern_byte(tag, i);
        if found != expected {
            bad = Some((i, expected, found));
        }
    });
    match bad {
        Some(b) => Err(b),
        None => Ok(()),
    }
}

/// One allocation with a pattern in it. Dropping a `Block` without [`Block::free`] leaks it (on
/// purpose: a workload that forgets a block shows up in its RSS, it does not free unchecked memory).
#[derive(Debug)]
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
    align: usize,
    tag: u64,
}

// SAFETY: a Block is the only handle to its allocation; sending it to another thread moves that
// ownership, which is exactly the cross-thread free the workloads want to exercise.
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size` bytes (at least 1) aligned to `align` and writes the pattern of `tag`.
    /// A null result or a misaligned block is a fault.
    pub fn new(size: usize, align: usize, tag: u64) -> Block {
        let size = size.max(1);
        let layout = match Layout::from_size_align(size, align) {
            Ok(l) => l,
            Err(_) => fault::fail(&format!("bad layout: size {size}, align {align}")),
        };
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(p) else {
            fault::fail(&format!(
                "allocation of {size} bytes (align {align}) returned null"
            ))
        };
        if !(p as usize).is_multiple_of(align) {
            fault::fail(&format!(
                "block 0x{:x} of {size} bytes is not aligned to {align}",
                p as usize
            ));
        }
        // SAFETY: the allocation holds `size` bytes.
        unsafe { fill_raw(p, size, tag) };
        Block {
            ptr,
            size,
            align,
            tag,
        }
    }

    /// The block's address.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The block's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Checks the pattern without the fault-injection hook.
    pub fn check(&self) -> Result<(), Corruption> {
        self.check_prefix(self.size)
    }

    fn check_prefix(&self, limit: usize) -> Result<(), Corruption> {
        // SAFETY: the block owns `size` readable bytes.
        unsafe { check_raw(self.ptr.as_ptr(), self.size, limit, self.tag) }.map_err(
            |(offset, expected, found)| Corruption {
                addr: self.addr(),
                size: self.size,
                align: self.align,
                offset,
                expected,
                found,
            },
        )
    }

    /// Checks the pattern (running an armed injection first) and ends the run on a mismatch.
    pub fn verify(&self) {
        if INJECT_KIND.load(Relaxed) != NONE {
            self.injection_point();
        }
        if let Err(c) = self.check() {
            fault::fail(&c.to_string());
        }
    }

    /// Overwrites the whole block `rounds` times with its own pattern, byte by byte: the "use the
    /// memory" loop of the cache workloads, where false sharing between threads' blocks shows up.
    pub fn rewrite(&self, rounds: usize) {
        for _ in 0..rounds {
            for i in 0..self.size {
                // SAFETY: `i < size`, the block's own bytes.
                unsafe {
                    self.ptr
                        .as_ptr()
                        .add(i)
                        .write_volatile(pattern_byte(self.tag, i))
                };
            }
        }
    }

    /// Changes the size with `realloc`: checks the pattern first, checks afterwards that the kept
    /// prefix survived the move, then extends the pattern over the new size.
    pub fn resize(&mut self, new_size: usize) {
        let new_size = new_size.max(1);
        self.verify();
        let layout = self.layout();
        // SAFETY: `ptr` was allocated with `layout` by the global allocator and `new_size` is non-zero.
        let p = unsafe { realloc(self.ptr.as_ptr(), layout, new_size) };
        let Some(ptr) = NonNull::new(p) else {
            fault::fail(&format!(
                "realloc from {} to {new_size} bytes returned null",
                self.size
            ))
        };
        if !(p as usize).is_multiple_of(self.align) {
            fault::fail(&format!(
                "realloc returned 0x{:x}, not aligned to {}",
                p as usize, self.align
            ));
        }
        let old = self.size;
        self.ptr = ptr;
        // The old samples below the new size must have moved with the contents.
        let kept = new_size.min(old);
        self.size = old;
        if let Err(c) = self.check_prefix(kept) {
            fault::fail(&format!(
                "realloc from {old} to {new_size} lost contents: {c}"
            ));
        }
        self.size = new_size;
        // SAFETY: the block now holds `new_size` bytes.
        unsafe { fill_raw(p, new_size, self.tag) };
    }

    /// Checks the pattern and frees the block.
    pub fn free(self) {
        self.verify();
        // SAFETY: allocated with this layout by the global allocator, freed once (self is consumed).
        unsafe { dealloc(self.ptr.as_ptr(), self.layout()) };
    }

    fn layout(&self) -> Layout {
        // SAFETY: the same size and alignment were accepted by `Layout::from_size_align` in `new`
        // (and `resize` only changes the size to another non-zero value under the same alignment,
        // which realloc's contract requires to be valid).
        unsafe { Layout::from_size_align_unchecked(self.size, self.align) }
    }

    #[cold]
    fn injection_point(&self) {
        let n = INJECT_COUNTDOWN.fetch_sub(1, Relaxed);
        if n != 1 {
            return;
        }
        match INJECT_KIND.swap(NONE, Relaxed) {
            CORRUPT => {
                // Flip one sampled byte near the end, as an overrun from a neighbour would.
                let at = self.size - 1;
                // SAFETY: `at < size`, the block's own byte.
                unsafe {
                    let b = self.ptr.as_ptr().add(at);
                    b.write_volatile(!b.read_volatile());
                }
            }
            DOUBLE_FREE => {
                let layout = self.layout();
                // SAFETY: deliberately not safe: a copy of the block is freed twice to see whether the
                // allocator notices. This only runs under `--inject double-free`.
                unsafe {
                    let copy = Layout::from_size_align_unchecked(layout.size(), layout.align());
                    // black_box: the compiler may otherwise drop an allocation nobody uses.
                    let p = std::hint::black_box(alloc(copy));
                    dealloc(std::hint::black_box(p), copy);
                    dealloc(std::hint::black_box(p), copy);
                }
                fault::fail("injected double free was not detected by the allocator");
            }
            HANG => loop {
                // A deadlocked allocator looks like this from outside: alive, silent, no progress.
                std::thread::sleep(std::time::Duration::from_secs(1));
            },
            _ => {}
        }
    }
}

const NONE: u8 = 0;
const CORRUPT: u8 = 1;
const DOUBLE_FREE: u8 = 2;
const HANG: u8 = 3;

static INJECT_KIND: AtomicU8 = AtomicU8::new(NONE);
static INJECT_COUNTDOWN: AtomicU64 = AtomicU64::new(0);

/// A fault a test can inject into a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// Flip a byte of the block being checked: the pattern check must catch it.
    Corrupt,
    /// Free a fresh block twice: a hardened allocator must abort.
    DoubleFree,
    /// Stop making progress, as a deadlock would: the parent's timeout must catch it.
    Hang,
}

impl Inject {
    pub fn parse(s: &str) -> Option<Inject> {
        match s {
            "corrupt" => Some(Inject::Corrupt),
            "double-free" => Some(Inject::DoubleFree),
            "hang" => Some(Inject::Hang),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Inject::Corrupt => "corrupt",
            Inject::DoubleFree => "double-free",
            Inject::Hang => "hang",
        }
    }
}

/// Arms `what` to fire at the `at`-th pattern check of the process (1-based).
pub fn inject(what: Inject, at: u64) {
    INJECT_COUNTDOWN.store(at.max(1), Relaxed);
    INJECT_KIND.store(
        match what {
            Inject::Corrupt => CORRUPT,
            Inject::DoubleFree => DOUBLE_FREE,
            Inject::Hang => HANG,
        },
        Relaxed,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(size: usize) -> Vec<usize> {
        let mut v = Vec::new();
        for_each_sample(size, |i| v.push(i));
        v
    }

    #[test]
    fn samples_cover_edges_once_and_stay_in_bounds() {
        assert_eq!(samples(0), Vec::<usize>::new());
        assert_eq!(samples(5), vec![0, 1, 2, 3, 4]);
        assert_eq!(samples(64).len(), 64);
        assert_eq!(samples(100), (0..100).collect::<Vec<_>>());
        let s = samples(10_000);
        assert!(s.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!(*s.last().unwrap(), 9_999);
        assert!(s.contains(&320) && s.contains(&(64 + 256 * 30)));
        assert!(s.contains(&(10_000 - 64)));
        // Every 4 KiB page of a large block is touched.
        let big = samples(1 << 20);
        for page in 0..256 {
            assert!(big.iter().any(|&i| i / 4096 == page), "page {page}");
        }
    }

    #[test]
    fn a_fresh_block_checks_clean_and_a_flipped_byte_is_caught() {
        for &(size, align) in &[(1, 1), (24, 8), (200, 16), (5000, 64), (70_000, 4096)] {
            let b = Block::new(size, align, 0xABCD ^ size as u64);
            assert_eq!(b.addr() % align, 0);
            assert_eq!(b.check(), Ok(()));
            for &off in &[0, size / 2, size - 1] {
                // Only sampled offsets are checked; pick the nearest sampled one.
                let mut target = 0;
                for_each_sample(size, |i| {
                    if i <= off {
                        target = i
                    }
                });
                // SAFETY: target < size, the block's own memory.
                unsafe { *(b.addr() as *mut u8).add(target) ^= 0x40 };
                let err = b.check().unwrap_err();
                assert_eq!(err.offset, target);
                assert_eq!(err.found ^ 0x40, err.expected);
                assert!(err.to_string().contains(&format!("at offset {target}")));
                // SAFETY: as above; restores the byte.
                unsafe { *(b.addr() as *mut u8).add(target) ^= 0x40 };
            }
            assert_eq!(b.check(), Ok(()));
            b.free();
        }
    }

    #[test]
    fn a_block_with_another_tag_fails_the_check() {
        let b = Block::new(300, 8, 1);
        let size = b.size();
        // SAFETY: rewrites the block's own bytes with another tag's pattern.
        unsafe { fill_raw(b.addr() as *mut u8, size, 2) };
        assert!(b.check().is_err());
        // SAFETY: restores the block's pattern so it can be freed normally.
        unsafe { fill_raw(b.addr() as *mut u8, size, 1) };
        b.free();
    }

    #[test]
    fn resize_keeps_the_prefix_and_extends_the_pattern() {
        let mut b = Block::new(10, 8, 99);
        for &n in &[11, 100, 5000, 70_000, 300, 7, 1] {
            b.resize(n);
            assert_eq!(b.size(), n);
            assert_eq!(b.check(), Ok(()));
        }
        b.free();
    }

    #[test]
    fn injection_names_round_trip() {
        for k in [Inject::Corrupt, Inject::DoubleFree, Inject::Hang] {
            assert_eq!(Inject::parse(k.name()), Some(k));
        }
        assert_eq!(Inject::parse("x"), None);
    }
}

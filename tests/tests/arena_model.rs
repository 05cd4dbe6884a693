//! Randomized model test of the arena allocator: long seeded sequences of malloc, calloc, realloc,
//! aligned_alloc, free and free_sized over tcache, fast-bin, small-bin, large-bin and mmap sizes,
//! checked op by op against a model of the live blocks.
//!
//! After each operation: the pointer is non-null and aligned (16 or the requested alignment),
//! `usable_size` is at least the request and exactly what glibc reports for a heap chunk
//! (`request2size(n) - 8`, or more when a bin chunk was too small to split), the block overlaps no
//! other live block, calloc memory reads zero and realloc kept the common prefix. Every few thousand
//! operations every live block's pattern is verified. At the end everything is freed and `trim`
//! must bring the heaps' in-use bytes down to (almost) nothing.
//!
//! The allocator's state is process-wide, so the tests of this file take `SERIAL`; this binary's
//! global allocator is the system one, so nothing else here allocates from the arena allocator.

use std::collections::BTreeMap;
use std::sync::Mutex;

use twinheap_arena as arena;
use twinheap_tests::{errno, first_nonzero, set_errno, Rng64};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn byte(seed: u64, offset: usize) -> u8 {
    (mix(seed ^ (offset as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> (8 * (offset & 7)))
        as u8
}

/// Sample offsets carrying a block's pattern: everything below 8 KiB, then 64 bytes per 4 KiB.
fn pattern_ranges(n: usize) -> Vec<(usize, usize)> {
    if n <= 8192 {
        return vec![(0, n)];
    }
    let mut r = vec![(0, 4096), (n - 4096, n)];
    let mut at = 4096;
    while at + 64 <= n - 4096 {
        r.push((at, at + 64));
        at += 4096;
    }
    r
}

unsafe fn fill(p: *mut u8, n: usize, seed: u64) {
    for (a, b) in pattern_ranges(n) {
        for i in a..b {
            // SAFETY: inside the live block.
            unsafe { p.add(i).write(byte(seed, i)) };
        }
    }
}

unsafe fn verify(p: *const u8, n: usize, seed: u64, what: &str) {
    // SAFETY: per the caller.
    unsafe { verify_prefix(p, n, n, seed, what) }
}

/// Checks the pattern a block of `n` bytes was filled with, in its first `keep` bytes.
unsafe fn verify_prefix(p: *const u8, n: usize, keep: usize, seed: u64, what: &str) {
    for (a, b) in pattern_ranges(n) {
        for i in a..b.min(keep) {
            // SAFETY: inside the live block.
            let got = unsafe { p.add(i).read() };
            assert_eq!(
                got,
                byte(seed, i),
                "{what}: block {p:?} ({n} bytes) byte {i}"
            );
        }
    }
}

struct Block {
    n: usize,
    seed: u64,
    usable: usize,
}

struct Model {
    live: BTreeMap<usize, Block>,
    rng: Rng64,
    seeds: u64,
}

/// glibc's chunk size for a request.
fn request2size(n: usize) -> usize {
    ((n + 8 + 15) & !15).max(32)
}

impl Model {
    fn size(&mut self) -> usize {
        match self.rng.below(100) {
            0..=39 => self.rng.range(0, 120),
            40..=64 => self.rng.range(120, 1040),
            65..=84 => self.rng.range(1040, 16 << 10),
            85..=94 => self.rng.range(16 << 10, 128 << 10),
            _ => self.rng.range(128 << 10, 1 << 20),
        }
    }

    /// Checks a new block and enters it into the model.
    fn add(&mut self, p: *mut u8, n: usize, align: usize, what: &str) {
        assert!(!p.is_null(), "{what}({n}) returned null, errno {}", errno());
        assert_eq!(p as usize % align, 0, "{what}({n}) misaligned {p:?}");
        // SAFETY: live block.
        let usable = unsafe { arena::usable_size(p) };
        assert!(usable >= n, "{what}({n}): usable {usable}");
        // SAFETY: as above.
        if !unsafe { arena::is_mapped(p) } && align <= 16 && what == "malloc" {
            let nb = request2size(n);
            assert!(
                usable >= nb - 8 && usable < nb - 8 + 32,
                "{what}({n}): usable {usable}, chunk {nb}"
            );
        }
        let start = p as usize;
        if let Some((&q, b)) = self.live.range(..start + usable.max(1)).next_back() {
            assert!(
                q + b.usable <= start,
                "{what}({n}) at {start:#x} overlaps block at {q:#x} of {}",
                b.usable
            );
        }
        if let Some((&q, _)) = self.live.range(start..start + usable.max(1)).next() {
            panic!("{what}({n}) at {start:#x} of {usable} bytes overlaps block at {q:#x}");
        }
        self.seeds += 1;
        let seed = mix(self.seeds);
        // SAFETY: live block of `usable` bytes.
        unsafe { fill(p, n, seed) };
        self.live.insert(start, Block { n, seed, usable });
    }

    fn pick(&mut self) -> Option<usize> {
        if self.live.is_empty() {
            return None;
        }
        let k = self.rng.below(self.live.len() as u64) as usize;
        self.live.keys().nth(k).copied()
    }

    fn step(&mut self) {
        let op = self.rng.below(100);
        let full = self.live.len() > 600;
        match op {
            0..=44 if !full => {
                let n = self.size();
                self.add(arena::malloc(n), n, 16, "malloc");
            }
            45..=51 if !full => {
                let n = self.size();
                let p = arena::calloc(1, n);
                assert!(!p.is_null());
                // SAFETY: live block of `n` bytes.
                let nonzero = unsafe { first_nonzero(p, n) };
                assert_eq!(nonzero, None, "calloc({n}) not zeroed");
                self.add(p, n, 16, "calloc");
            }
            52..=56 if !full => {
                let align = 1usize << self.rng.range(4, 17);
                let n = self.size().min(300 << 10);
                self.add(arena::aligned_alloc(align, n), n, align, "aligned_alloc");
            }
            57..=71 => {
                let Some(k) = self.pick() else { return };
                let b = self.live.remove(&k).unwrap();
                let p = k as *mut u8;
                // SAFETY: live block.
                unsafe { verify(p, b.n, b.seed, "before realloc") };
                let n = self.size();
                // SAFETY: live block, replaced by the result.
                let q = unsafe { arena::realloc(p, n.max(1)) };
                assert!(!q.is_null());
                let keep = b.n.min(n.max(1));
                // SAFETY: the first `keep` bytes are the old pattern.
                unsafe { verify_prefix(q, b.n, keep, b.seed, "after realloc") };
                self.add(q, n.max(1), 16, "realloc");
            }
            _ => {
                let Some(k) = self.pick() else { return };
                let b = self.live.remove(&k).unwrap();
                let p = k as *mut u8;
                // SAFETY: live block, freed once.
                unsafe {
                    verify(p, b.n, b.seed, "before free");
                    if self.rng.below(2) == 0 {
                        arena::free_sized(p, b.n);
                    } else {
                        arena::free(p);
                    }
                }
            }
        }
    }

    fn verify_all(&self) {
        for (&k, b) in &self.live {
            // SAFETY: live block.
            unsafe { verify(k as *const u8, b.n, b.seed, "sweep") };
        }
    }

    fn free_all(&mut self) {
        for (k, b) in std::mem::take(&mut self.live) {
            // SAFETY: live block.
            unsafe {
                verify(k as *const u8, b.n, b.seed, "final");
                arena::free(k as *mut u8);
            }
        }
    }
}

fn run(seed: u64, steps: usize) {
    let mut m = Model {
        live: BTreeMap::new(),
        rng: Rng64::new(seed),
        seeds: seed,
    };
    for i in 0..steps {
        m.step();
        if i % 4000 == 0 {
            m.verify_all();
        }
    }
    m.free_all();
}

#[test]
fn model_runs_clean() {
    let _s = serial();
    for seed in 1..=4 {
        run(seed, 40_000);
    }
    arena::trim(0);
    let s = arena::stats();
    // Only the blocks still in this thread's tcache (at most 7 × 64 of ≤ 1 KiB) stay in use.
    assert!(s.in_use_bytes < 600 << 10, "{s:?}");
    assert_eq!(s.mmapped_chunks, 0, "{s:?}");
}

#[test]
fn edge_cases_match_glibc() {
    let _s = serial();
    // malloc(0) is a unique block of 24 usable bytes.
    let a = arena::malloc(0);
    let b = arena::malloc(0);
    assert!(!a.is_null() && !b.is_null() && a != b);
    // SAFETY: live blocks.
    unsafe {
        assert_eq!(arena::usable_size(a), 24);
        assert_eq!(arena::usable_size(std::ptr::null_mut()), 0);
        arena::free(a);
        arena::free(b);
    }
    // Sizes above PTRDIFF_MAX fail with ENOMEM.
    set_errno(0);
    assert!(arena::malloc(usize::MAX / 2 + 1).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    set_errno(0);
    assert!(arena::calloc(1 << 40, 1 << 40).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    // free(NULL) is a no-op and free keeps errno.
    set_errno(1234);
    let p = arena::malloc(300_000);
    // SAFETY: null, then a live block.
    unsafe {
        arena::free(std::ptr::null_mut());
        set_errno(1234);
        arena::free(p);
    }
    assert_eq!(errno(), 1234);
    // realloc(p, 0) frees and returns null; realloc(NULL, n) allocates.
    // SAFETY: null, then a live block.
    unsafe {
        let p = arena::realloc(std::ptr::null_mut(), 100);
        assert!(!p.is_null());
        assert!(arena::realloc(p, 0).is_null());
    }
    // A bad alignment is EINVAL.
    set_errno(0);
    assert!(arena::aligned_alloc(48, 10).is_null());
    assert_eq!(errno(), libc::EINVAL);
    // A failed realloc leaves the block intact.
    let p = arena::malloc(64);
    // SAFETY: live block.
    unsafe {
        p.write(9);
        assert!(arena::realloc(p, usize::MAX / 2 + 1).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        assert_eq!(p.read(), 9);
        arena::free(p);
    }
}

#[test]
fn mmapped_blocks_and_remap() {
    let _s = serial();
    let before = arena::stats().mmapped_chunks;
    // Large enough to stay above even a dynamically raised threshold (32 MiB at most).
    let p = arena::malloc(40 << 20);
    // SAFETY: live block, resized with mremap.
    unsafe {
        assert!(arena::is_mapped(p));
        assert_eq!(arena::stats().mmapped_chunks, before + 1);
        assert_eq!(arena::usable_size(p) % 4096, 4096 - 48);
        p.write_bytes(3, 4096);
        let q = arena::realloc(p, 80 << 20);
        assert!(arena::is_mapped(q));
        assert_eq!(q.read(), 3);
        assert_eq!(q.add(4095).read(), 3);
        arena::free(q);
    }
    assert_eq!(arena::stats().mmapped_chunks, before);
}

/// mallinfo2 sums every arena, so a thread of an earlier test that exits meanwhile (its tcache going
/// back to its arena) would move the totals under this test's feet: the checks run in a fresh
/// process that runs only this test.
#[test]
fn introspection_is_consistent() {
    let out = twinheap_tests::run_test_child("child_introspection", CHILD_ENV, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("CHILD introspection ok"));
}

const CHILD_ENV: &str = "TWINHEAP_ARENA_MODEL_CHILD";

/// Not a test by itself: the body of `introspection_is_consistent`, run in a fresh process.
#[test]
fn child_introspection() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let m0 = arena::mallinfo2();
    let blocks: Vec<*mut u8> = (0..100).map(|_| arena::malloc(5000)).collect();
    let m1 = arena::mallinfo2();
    assert!(m1.uordblks >= m0.uordblks + 100 * 5000, "{m0:?} {m1:?}");
    assert_eq!(m1.arena, m1.uordblks + m1.fordblks);
    assert_eq!(m1.usmblks, 0);
    for p in blocks {
        // SAFETY: live blocks.
        unsafe { arena::free(p) };
    }
    let m2 = arena::mallinfo2();
    assert!(m2.uordblks <= m1.uordblks - 100 * 5000, "{m1:?} {m2:?}");

    let mut text = Vec::new();
    arena::malloc_stats(&mut |b| text.extend_from_slice(b));
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with("Arena 0:\nsystem bytes     = "), "{text}");
    assert!(text.contains("Total (incl. mmap):\n"), "{text}");
    assert!(text.contains("max mmap regions = "), "{text}");
    for line in text.lines().filter(|l| l.contains(" = ")) {
        let (_, v) = line.split_once(" = ").unwrap();
        assert!(v.len() >= 10 && v.trim().parse::<u64>().is_ok(), "{line:?}");
    }

    let mut xml = Vec::new();
    assert_eq!(arena::malloc_info(0, &mut |b| xml.extend_from_slice(b)), 0);
    let xml = String::from_utf8(xml).unwrap();
    assert!(
        xml.starts_with("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n"),
        "{xml}"
    );
    assert!(xml.trim_end().ends_with("</malloc>"), "{xml}");
    assert_eq!(
        xml.matches("<heap ").count(),
        xml.matches("</heap>").count()
    );
    assert!(xml.contains("<total type=\"mmap\""));
    set_errno(0);
    assert_eq!(arena::malloc_info(1, &mut |_| {}), -1);
    assert_eq!(errno(), libc::EINVAL);
    println!("\nCHILD introspection ok");
}

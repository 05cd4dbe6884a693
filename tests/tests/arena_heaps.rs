//! Arena heaps beyond the ordinary 64 MiB reservation: big heaps serving requests larger than a heap
//! when direct mapping is off (`mmap_max = 0`), and huge-page heaps (`hugetlb`).
//!
//! Each case runs in a forked child, so that process-wide settings (mallopt, the hugetlb parameter)
//! and statistics stay contained. This binary's global allocator is the system one; only the code
//! under test uses the arena allocator. A child returns 0 on success and a distinct code per failed
//! check, so the parent's assertion names the check.

use twinheap_arena as arena;
use twinheap_tests::{run_in_child, ChildOutcome};

const MIB: usize = 1 << 20;

/// Returns `code` from the child when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $code:expr) => {
        if !$cond {
            return $code;
        }
    };
}

/// Writes a byte derived from `seed` into every page of `[p, p + n)` and the last byte.
unsafe fn stamp(p: *mut u8, n: usize, seed: u8) {
    let mut i = 0;
    while i < n {
        // SAFETY: per the caller, `[p, p + n)` is writable.
        unsafe { p.add(i).write(seed ^ (i >> 12) as u8) };
        i += 4096;
    }
    // SAFETY: as above.
    unsafe { p.add(n - 1).write(seed) };
}

/// Checks what [`stamp`] wrote over the first `n` bytes (pages only; the last byte separately).
unsafe fn stamped(p: *const u8, n: usize, seed: u8) -> bool {
    let mut i = 0;
    while i < n {
        // SAFETY: per the caller, `[p, p + n)` is readable.
        if unsafe { p.add(i).read() } != seed ^ (i >> 12) as u8 {
            return false;
        }
        i += 4096;
    }
    true
}

/// With `mmap_max = 0` a 200 MiB request is served from a big heap of the arena (no mapped chunk),
/// is writable end to end, resizes in place and moves with its contents, and free + malloc_trim
/// give every byte back; memalign and calloc work on big heaps too.
#[test]
fn mmap_max_zero_serves_requests_larger_than_a_heap() {
    let outcome = run_in_child(|| {
        ensure!(arena::mallopt(arena::M_MMAP_MAX, 0) == 1, 2);
        // Something small first, so the main arena has its ordinary heap.
        let small = arena::malloc(100);
        ensure!(!small.is_null(), 3);
        let before = arena::stats();
        let n = 200 * MIB;
        let m = arena::malloc(n);
        ensure!(!m.is_null(), 4);
        ensure!((m as usize) & 15 == 0, 5);
        // SAFETY: `m` is a live block of `n` bytes, resized and freed below.
        unsafe {
            stamp(m, n, 0x5a);
            ensure!(stamped(m, n, 0x5a) && m.add(n - 1).read() == 0x5a, 6);
            ensure!(arena::usable_size(m) >= n, 7);
            let info = arena::mallinfo2();
            ensure!(info.hblks == 0 && info.hblkhd == 0, 8);
            ensure!(info.arena >= n && info.uordblks >= n, 9);
            let during = arena::stats();
            ensure!(during.committed >= before.committed + n, 10);
            ensure!(during.heaps == before.heaps + 1, 11);

            // Growing within the reservation keeps the address; shrinking too.
            let g = arena::realloc(m, 250 * MIB);
            ensure!(g == m, 12);
            ensure!(stamped(g, n, 0x5a) && g.add(n - 1).read() == 0x5a, 13);
            stamp(g, 250 * MIB, 0x33);
            let s = arena::realloc(g, 70 * MIB);
            ensure!(s == m, 14);
            ensure!(stamped(s, 70 * MIB, 0x33), 15);
            ensure!(arena::stats().committed < during.committed, 16);
            // Growing past the reservation (256 MiB for 250 MiB) moves the block, contents kept.
            let big = arena::realloc(s, 300 * MIB);
            ensure!(!big.is_null(), 17);
            ensure!(stamped(big, 70 * MIB, 0x33), 18);
            stamp(big, 300 * MIB, 0x44);
            // Down to an ordinary size: stays a big heap's chunk, contents kept.
            let tiny = arena::realloc(big, 1000);
            ensure!(!tiny.is_null() && tiny.read() == 0x44, 19);

            // memalign: aligned user memory inside a big heap.
            let a = arena::aligned_alloc(MIB, 100 * MIB);
            ensure!(!a.is_null() && (a as usize) & (MIB - 1) == 0, 20);
            stamp(a, 100 * MIB, 0x21);
            // calloc: fresh pages, all zero.
            let c = arena::calloc(1, 90 * MIB);
            ensure!(!c.is_null(), 21);
            let mut i = 0;
            while i < 90 * MIB {
                if c.add(i).read() != 0 {
                    return 22;
                }
                i += 4093;
            }
            ensure!(arena::mallinfo2().hblks == 0, 23);

            arena::free(tiny);
            arena::free(a);
            arena::free(c);
            arena::trim(0);
            let after = arena::stats();
            ensure!(after.heaps == before.heaps, 24);
            ensure!(after.committed <= before.committed + MIB, 25);
            ensure!(arena::mallinfo2().arena <= before.heap_bytes + MIB, 26);
            ensure!(arena::mallinfo2().hblks == 0, 27);
            arena::free(small);
        }
        // The same request with direct mapping allowed gets a mapping of its own.
        ensure!(arena::mallopt(arena::M_MMAP_MAX, 65536) == 1, 28);
        let m = arena::malloc(n);
        ensure!(!m.is_null() && arena::mallinfo2().hblks == 1, 29);
        // SAFETY: a live block.
        unsafe { arena::free(m) };
        0
    });
    assert_eq!(outcome, ChildOutcome::Exited(0));
}

/// A big heap's chunk is freed from another thread (a secondary arena's heap, found by masking),
/// and many big heaps come and go without leaking address space or memory.
#[test]
fn big_heaps_from_several_threads() {
    let outcome = run_in_child(|| {
        ensure!(arena::mallopt(arena::M_MMAP_MAX, 0) == 1, 2);
        let before = arena::stats();
        let handles: Vec<_> = (0..3u8)
            .map(|k| {
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for j in 0..4u8 {
                        let n = 65 * MIB + usize::from(j) * 3 * MIB;
                        let m = arena::malloc(n);
                        assert!(!m.is_null());
                        // SAFETY: a live block of `n` bytes.
                        unsafe { stamp(m, n, k * 16 + j) };
                        out.push((m as usize, n, k * 16 + j));
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            let Ok(blocks) = h.join() else {
                return 3;
            };
            for (m, n, seed) in blocks {
                // SAFETY: live blocks made by the finished thread, freed once here.
                unsafe {
                    ensure!(stamped(m as *const u8, n, seed), 4);
                    arena::free(m as *mut u8);
                }
            }
        }
        let after = arena::stats();
        ensure!(after.heaps <= before.heaps + 3, 5);
        ensure!(arena::mallinfo2().hblks == 0, 6);
        ensure!(after.mapped < before.mapped + 3 * 64 * MIB, 7);
        0
    });
    assert_eq!(outcome, ChildOutcome::Exited(0));
}

/// The /proc/self/smaps entry (header and fields) of the mapping holding `addr`.
fn smaps_entry(addr: usize) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut out: Option<String> = None;
    for line in text.lines() {
        let is_header = line
            .split_whitespace()
            .next()
            .and_then(|range| range.split_once('-'))
            .is_some_and(|(a, b)| {
                usize::from_str_radix(a, 16).is_ok() && usize::from_str_radix(b, 16).is_ok()
            });
        if is_header {
            if out.is_some() {
                break;
            }
            let (a, b) = line.split_whitespace().next()?.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            if (a..b).contains(&addr) {
                out = Some(format!("{line}\n"));
            }
        } else if let Some(o) = out.as_mut() {
            o.push_str(line);
            o.push('\n');
        }
    }
    out
}

/// The value of `key:` in an smaps entry, first word only.
fn smaps_field(entry: &str, key: &str) -> Option<String> {
    entry.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|r| r.trim().to_string())
    })
}

/// A number from /proc/meminfo.
fn meminfo(key: &str) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
}

/// Fills the main arena's heap with 40 blocks of 100 KiB (below the mmap threshold), so that it
/// grows past its first commit; returns them.
fn grow_heap() -> Vec<*mut u8> {
    (0..40)
        .map(|i| {
            let p = arena::malloc(100 << 10);
            assert!(!p.is_null());
            // SAFETY: a live block of 100 KiB.
            unsafe { p.write_bytes(i as u8, 100 << 10) };
            p
        })
        .collect()
}

/// Runs `body` in a child whose arena allocator has `hugetlb` set before its first allocation.
fn with_hugetlb(hugetlb: usize, body: impl FnOnce() -> i32) -> ChildOutcome {
    run_in_child(move || {
        arena::init(&arena::Config {
            hugetlb,
            ..arena::Config::default()
        });
        body()
    })
}

/// hugetlb = 1: the heap's memory is advised MADV_HUGEPAGE (the `hg` flag in VmFlags of its
/// mapping, and THPeligible: 1 where the kernel reports it), as mapped chunks already were; with
/// hugetlb = 0 the same heap has no such advice (this machine's THP policy is `madvise`, so the
/// advice is what makes the heap eligible).
#[test]
fn hugetlb_one_advises_heaps_transparent_huge_pages() {
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.is_empty() {
        eprintln!("no transparent huge pages in this kernel: nothing to check");
        return;
    }
    let madvise_policy = thp.contains("[madvise]");
    for (mode, expect_hg) in [(1usize, true), (0, false)] {
        let outcome = with_hugetlb(mode, move || {
            let blocks = grow_heap();
            let Some(entry) = smaps_entry(blocks[20] as usize) else {
                return 2;
            };
            let flags = smaps_field(&entry, "VmFlags").unwrap_or_default();
            let hg = flags.split_whitespace().any(|f| f == "hg");
            if hg != expect_hg {
                eprintln!("hugetlb={mode}: VmFlags `{flags}`");
                return 3;
            }
            if expect_hg && madvise_policy {
                if let Some(e) = smaps_field(&entry, "THPeligible") {
                    ensure!(e == "1", 4);
                }
            }
            for p in blocks {
                // SAFETY: live blocks.
                unsafe { arena::free(p) };
            }
            0
        });
        assert_eq!(outcome, ChildOutcome::Exited(0), "hugetlb={mode}");
    }
}

/// hugetlb = 2: heaps come from hugetlbfs pages when the system has enough free huge pages, and
/// otherwise (this machine has none configured) fall back silently to base pages: allocation,
/// growth, trimming and freeing work as usual and no heap claims huge pages.
#[test]
fn hugetlb_two_uses_hugetlbfs_heaps_or_falls_back() {
    let huge_size = meminfo("Hugepagesize").map(|k| k * 1024);
    let free_pages = meminfo("HugePages_Free").unwrap_or(0);
    let outcome = with_hugetlb(2, move || {
        let small = arena::malloc(100);
        ensure!(!small.is_null(), 2);
        let s = arena::stats();
        let entry = smaps_entry(small as usize).unwrap_or_default();
        let kps = smaps_field(&entry, "KernelPageSize").unwrap_or_default();
        match huge_size {
            Some(size) if free_pages >= 4 && size <= 16 << 20 => {
                ensure!(s.hugetlb_heaps == 1, 3);
                ensure!(kps == format!("{} kB", size / 1024), 4);
            }
            _ => {
                ensure!(s.hugetlb_heaps == 0, 5);
                ensure!(s.heaps == 1, 6);
                ensure!(kps == "4 kB" || kps.is_empty(), 7);
            }
        }
        // Growth beyond a hugetlbfs heap's four pages, frees, trim: the usual heap life.
        let blocks = grow_heap();
        for (i, &p) in blocks.iter().enumerate() {
            // SAFETY: live blocks of 100 KiB filled by `grow_heap`.
            unsafe {
                ensure!(
                    p.read() == i as u8 && p.add((100 << 10) - 1).read() == i as u8,
                    8
                );
                arena::free(p);
            }
        }
        arena::trim(0);
        // SAFETY: a live block.
        unsafe { arena::free(small) };
        ensure!(arena::stats().in_use_bytes < 64 << 10, 9);
        0
    });
    assert_eq!(outcome, ChildOutcome::Exited(0));
}

//! The slab allocator's fast paths keep every guarantee: the owner's pending frees (a thread's frees of
//! its own blocks, marked in their groups later and in bulk) stay invisible to statistics and reuse,
//! are still reported at once on a double free, and are given back at trim and thread exit;
//! segments and meta areas emptied by trim go back to the OS and are reused.
//!
//! Statistics are process-wide, so every test here takes `SERIAL`, and nothing else in this binary
//! allocates from slab (its global allocator is the system one). Death cases run in forked children
//! (see the `twinheap_tests` docs: a child body does not allocate through std).

use std::sync::Mutex;

use twinheap_slab as slab;
use twinheap_tests::{
    check_pattern, fill_pattern, parse_fault_line, run_in_child_capturing_stderr, ChildOutcome,
    SharedSlots,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;

#[test]
fn pending_frees_are_not_counted_and_not_reused_early() {
    let _serial = serial();
    let base = slab::stats();
    // 40 blocks of one class: frees of some of them stay pending in this thread's heap.
    let blocks: Vec<*mut u8> = (0..40).map(|_| slab::malloc(100)).collect();
    for (k, &p) in blocks.iter().enumerate() {
        assert!(!p.is_null());
        // SAFETY: live 100-byte blocks.
        unsafe { fill_pattern(p, 100, k as u64) };
    }
    for &p in blocks.iter().step_by(2) {
        // SAFETY: each freed once.
        unsafe { slab::free(p) };
    }
    let s = slab::stats();
    assert_eq!(s.requested - base.requested, 20 * 100);
    assert_eq!(blocks_in_use(&s) - blocks_in_use(&base), 20);
    // The same counts seen from another thread, which cannot flush this heap's pending frees.
    let remote = std::thread::spawn(slab::stats).join().unwrap();
    assert_eq!(remote.requested - base.requested, 20 * 100);
    // New blocks never land on a live one, and live ones keep their contents.
    let fresh: Vec<*mut u8> = (0..40).map(|_| slab::malloc(100)).collect();
    for &q in &fresh {
        assert!(!blocks.iter().skip(1).step_by(2).any(|&p| p == q));
    }
    for (k, &p) in blocks.iter().enumerate().skip(1).step_by(2) {
        // SAFETY: still live.
        assert_eq!(unsafe { check_pattern(p, 100, k as u64) }, None);
    }
    for &p in blocks.iter().skip(1).step_by(2).chain(&fresh) {
        // SAFETY: each freed once.
        unsafe { slab::free(p) };
    }
    let end = slab::stats();
    assert_eq!(end.requested, base.requested);
}

fn blocks_in_use(s: &slab::SlabStats) -> usize {
    s.classes.iter().map(|c| c.blocks).sum()
}

#[test]
fn a_thread_that_exits_gives_its_pending_frees_back() {
    let _serial = serial();
    let base = slab::stats();
    std::thread::spawn(|| {
        let blocks: Vec<usize> = (0..500)
            .map(|i| slab::malloc(16 + i % 200) as usize)
            .collect();
        for p in blocks {
            // SAFETY: each freed once.
            unsafe { slab::free(p as *mut u8) };
        }
    })
    .join()
    .unwrap();
    let s = slab::stats();
    assert_eq!(s.requested, base.requested);
    for c in 0..48 {
        assert_eq!(s.classes[c].blocks, base.classes[c].blocks, "class {c}");
    }
}

#[test]
fn double_free_of_a_pending_block_is_reported_at_once() {
    let _serial = serial();
    for (label, second_after) in [("right after", 0), ("after other frees", 3)] {
        let slots = SharedSlots::new(1);
        let (outcome, stderr) = run_in_child_capturing_stderr(|| {
            let mut keep = [std::ptr::null_mut::<u8>(); 8];
            for k in keep.iter_mut() {
                *k = slab::malloc(40);
                if k.is_null() {
                    return 98;
                }
            }
            let p = keep[0];
            slots.set(0, p as i64);
            // SAFETY: a valid free, others, then the double free under test.
            unsafe {
                slab::free(p);
                for &q in &keep[1..=second_after] {
                    slab::free(q);
                }
                slab::free(p);
            }
            99
        });
        assert_eq!(
            outcome,
            ChildOutcome::Signaled(libc::SIGABRT),
            "{label}: {stderr:?}"
        );
        assert_eq!(
            parse_fault_line(&stderr, "slab"),
            Some(("double free".to_string(), slots.get(0) as usize)),
            "{label}"
        );
    }
}

#[test]
fn trim_gives_segments_and_meta_areas_back_and_reuses_them() {
    let _serial = serial();
    const COUNT: usize = 100_000;
    const SIZES: [usize; 5] = [16, 48, 100, 256, 1000];
    let mut blocks: Vec<*mut u8> = vec![std::ptr::null_mut(); COUNT];
    slab::trim();
    let start = slab::stats();
    let rss_start = rss();
    // Fills every block with its own byte; returns the page backend's mapped bytes at the peak.
    let fill_round = |blocks: &mut [*mut u8]| {
        for (k, slot) in blocks.iter_mut().enumerate() {
            let n = SIZES[k % SIZES.len()];
            let p = slab::malloc(n);
            assert!(!p.is_null());
            // SAFETY: a live block of `n` bytes.
            unsafe { p.write_bytes(k as u8 | 1, n) };
            *slot = p;
        }
        twinheap_page::stats().mapped
    };
    let free_round = |blocks: &[*mut u8]| {
        for (k, &p) in blocks.iter().enumerate() {
            let n = SIZES[k % SIZES.len()];
            // SAFETY: live blocks of `n` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, n) };
            assert!(bytes.iter().all(|&b| b == k as u8 | 1), "block {k}");
            // SAFETY: each freed once, with its size.
            unsafe { slab::free_sized(p, n) };
        }
    };
    let peak1 = fill_round(&mut blocks);
    let full = slab::stats();
    let rss_full = rss();
    // About 3,100 groups: their records alone take over 600 KB of meta areas.
    assert!(
        full.metadata > start.metadata + MIB / 2,
        "{COUNT} blocks need meta records: {} -> {}",
        start.metadata,
        full.metadata
    );
    assert!(full.mapped >= start.mapped + 20 * MIB, "{}", full.mapped);
    free_round(&blocks);
    assert!(slab::trim());
    let end = slab::stats();
    let rss_end = rss();
    assert_eq!(end.requested, start.requested);
    assert_eq!(
        end.recycled, 0,
        "trim gives back every released group's pages"
    );
    assert!(
        end.metadata <= start.metadata + MIB,
        "metadata after trim: {} bytes, started at {}",
        end.metadata,
        start.metadata
    );
    assert!(
        end.mapped <= start.mapped + MIB,
        "user memory after trim: {} bytes, started at {}",
        end.mapped,
        start.mapped
    );
    // The pages really went back: resident memory falls back near where it started.
    assert!(
        rss_full > rss_start + 16 * MIB && rss_end < rss_start + 4 * MIB,
        "resident bytes: {rss_start} at the start, {rss_full} with the blocks, {rss_end} after trim"
    );
    // A second round finds what the first released (meta areas and regions, segments) and ends up
    // no bigger than the first: nothing is left behind that a new round cannot use.
    let peak2 = fill_round(&mut blocks);
    let again = slab::stats();
    assert!(
        peak2 <= peak1 + MIB,
        "page backend mapped {peak1} bytes at the first peak, {peak2} at the second"
    );
    assert!(
        again.metadata <= full.metadata + MIB / 4,
        "metadata: {} in the first round, {} in the second",
        full.metadata,
        again.metadata
    );
    free_round(&blocks);
    assert!(slab::trim());
    let last = slab::stats();
    assert!(last.mapped <= start.mapped + MIB && last.metadata <= start.metadata + MIB);
}

/// Resident bytes of this process (/proc/self/statm).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident pages");
    pages * twinheap_page::page_size()
}

#[test]
fn groups_mapped_outside_the_heap_lock_are_all_accounted_for() {
    let _serial = serial();
    // A fresh thread has an empty heap: each new class needs a mapped group, which its batch refill
    // maps with the heap lock dropped and installs on the next round. Every mapping slab asks the
    // page backend for must then be a group (or metadata) that slab's statistics know about.
    std::thread::spawn(|| {
        let sizes = [3000, 5000, 9000, 20_000, 40_000, 100_000];
        // Meta regions are mapped whole (docs/slab.md), while the statistics count them area by
        // area: when this test runs first, its records would open the process's first region. One
        // warm-up round opens it, so the rounds below compare like with like.
        let warm: Vec<*mut u8> = sizes.iter().map(|&n| slab::malloc(n)).collect();
        for p in warm {
            // SAFETY: live blocks, each freed once.
            unsafe { slab::free(p) };
        }
        slab::trim();
        let page0 = twinheap_page::stats();
        let s0 = slab::stats();
        let blocks: Vec<(usize, usize)> = sizes
            .iter()
            .flat_map(|&n| (0..6).map(move |_| n))
            .enumerate()
            .map(|(k, n)| {
                let p = slab::malloc(n);
                assert!(!p.is_null());
                // SAFETY: a live block of `n` bytes.
                unsafe { fill_pattern(p, n, k as u64) };
                (p as usize, n)
            })
            .collect();
        let s1 = slab::stats();
        let page1 = twinheap_page::stats();
        assert_eq!(
            s1.requested - s0.requested,
            sizes.iter().map(|n| 6 * n).sum::<usize>()
        );
        assert!(s1.mapped > s0.mapped, "groups were mapped");
        // Memory the backend committed = user memory slab counts + its metadata (guard pages are not
        // committed); a spare mapping left behind would show up as a difference.
        let made = page1.mappings - page0.mappings;
        let grown = (s1.mapped - s0.mapped) + (s1.metadata - s0.metadata);
        assert_eq!(
            page1.committed - page0.committed,
            grown,
            "page backend committed more than slab accounts for ({made} new mappings)"
        );
        for (k, &(p, n)) in blocks.iter().enumerate() {
            // SAFETY: live blocks, each freed once.
            unsafe {
                assert_eq!(check_pattern(p as *const u8, n, k as u64), None);
                slab::free(p as *mut u8);
            }
        }
        slab::trim();
        let page2 = twinheap_page::stats();
        let s2 = slab::stats();
        assert_eq!(s2.mapped, s0.mapped, "user memory after trim");
        assert!(
            page2.committed <= page0.committed + (s2.metadata - s0.metadata.min(s2.metadata)),
            "committed memory after trim: {} -> {}",
            page0.committed,
            page2.committed
        );
    })
    .join()
    .unwrap();
}

/// Frees one block of `n` bytes among 16 live ones, writes one non-zero byte `at` bytes past its
/// start (inside the block or in its slot's slack after it), then allocates and frees blocks of the
/// same size until the slot is handed out again. Slot 0 of `s` gets the written address. Returns
/// what the child exits with if no fault stopped it.
fn write_after_free_at(s: &SharedSlots, n: usize, at: usize) -> i32 {
    let mut keep = [std::ptr::null_mut::<u8>(); 16];
    for k in keep.iter_mut() {
        *k = slab::malloc(n);
        if k.is_null() {
            return 98;
        }
    }
    let p = keep[8];
    // SAFETY: `p` is a live block of `n` bytes; `at` stays inside its slot (the callers pick it
    // below the slot's usable size). After the free the write is the bug under test; the slot
    // stays mapped, its group holding 15 live blocks.
    let target = unsafe {
        slab::free(p);
        let t = p.add(at);
        t.write(0x24);
        t
    };
    s.set(0, target as i64);
    for _ in 0..200_000 {
        let q = slab::malloc(n);
        if q.is_null() {
            return 98;
        }
        if q == p {
            return 99;
        }
        // SAFETY: a live block, freed once.
        unsafe { slab::free(q) };
    }
    100
}

#[test]
fn write_after_free_is_found_at_either_end_of_every_scan_path() {
    let _serial = serial();
    // The reuse scan covers the whole slot and has three paths: up to 64 bytes (overlapping word
    // loads), longer runs with AVX2 (unaligned loads at both ends, aligned ones between) or plain
    // words. A write at the block's first and last byte, and in the slack after a block smaller
    // than its slot, must be found on each. Sizes: 20 (a 32-byte slot, block at its start: the
    // write at 31 is the slot's last byte), 60 (64 scanned; 63 is the last), 100 (112 scanned; 111
    // is the last), 900 (1008 scanned) and 8100 (8176 scanned). Blocks of the last two sit at a
    // varying offset in their slot (up to 96 and 64 bytes in), so their slack writes stay within
    // 12 bytes past the block, inside the slot.
    for (n, ats) in [
        (20usize, [0usize, 19, 31]),
        (60, [0, 59, 63]),
        (100, [0, 99, 111]),
        (900, [0, 899, 905]),
        (8100, [0, 8099, 8107]),
    ] {
        for at in ats {
            let slots = SharedSlots::new(1);
            let (outcome, stderr) =
                run_in_child_capturing_stderr(|| write_after_free_at(&slots, n, at));
            assert_eq!(
                outcome,
                ChildOutcome::Signaled(libc::SIGABRT),
                "size {n}, byte {at}: {:?}",
                String::from_utf8_lossy(&stderr)
            );
            assert_eq!(
                parse_fault_line(&stderr, "slab"),
                Some(("write after free".to_string(), slots.get(0) as usize)),
                "size {n}, byte {at}"
            );
        }
    }
}

#[test]
fn reused_slots_of_every_size_come_back_zeroed_and_framed() {
    let _serial = serial();
    // Every class, several rounds of fill / free / reuse: blocks must come back all zero (the
    // reuse scan passed and calloc skipped its clearing), keep their requested size, and not
    // overlap a live block.
    let sizes: Vec<usize> = (0..=200)
        .chain((201..=2100).step_by(37))
        .chain([4000, 8000, 8192, 20_000, 65_000, 131_055, 131_056])
        .collect();
    for round in 0..4u64 {
        let blocks: Vec<(*mut u8, usize)> = sizes
            .iter()
            .map(|&n| {
                let p = slab::calloc(1, n);
                assert!(!p.is_null());
                // SAFETY: a live block of `n` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(p, n) };
                assert!(bytes.iter().all(|&b| b == 0), "size {n}, round {round}");
                // SAFETY: as above.
                assert_eq!(unsafe { slab::usable_size(p) }, n);
                // SAFETY: as above.
                unsafe { fill_pattern(p, n, round * 1000 + n as u64) };
                (p, n)
            })
            .collect();
        for &(p, n) in &blocks {
            // SAFETY: live blocks, each freed once with its size.
            unsafe {
                assert_eq!(check_pattern(p, n, round * 1000 + n as u64), None);
                slab::free_sized(p, n);
            }
        }
    }
}

/// Forges the in-band group header of a fresh large block (large blocks keep one: the first word of
/// their mapping, which names their meta record) to hold `target(meta)`, where `meta` is the real
/// record, then frees the block. Slot 0 of `s` gets the block's address.
fn free_with_forged_meta_pointer(s: &SharedSlots, target: impl Fn(usize) -> usize) -> i32 {
    let p = slab::malloc(200_000);
    if p.is_null() {
        return 98;
    }
    s.set(0, p as i64);
    // An unaligned large block starts 16 + 16k bytes into its mapping, k below a page's units.
    let group = ((p as usize - 16) & !(twinheap_page::page_size() - 1)) as *mut usize;
    // SAFETY: the mapping's first word is slab's, read-write. Then the forged free under test.
    unsafe {
        let meta = group.read();
        if meta % 4096 < 16 {
            return 98; // not a record address: the layout is not what this test assumes
        }
        group.write(target(meta));
        slab::free(p);
    }
    99
}

#[test]
fn meta_pointers_off_a_record_boundary_are_invalid_frees() {
    let _serial = serial();
    // The record check tests the boundary without a division (meta.rs `record_index`): every
    // address near a real record, the area's check word, the area header's spare word and the tail
    // of the area after its last record must all be refused as "not a record". The next record
    // is on a boundary (or past the last one), and its `mem` does not point back: refused too.
    // Records are 216 bytes, 18 to an area after its 16-byte header.
    type Case = (&'static str, fn(usize) -> usize);
    let cases: [Case; 11] = [
        ("record + 1", |m| m + 1),
        ("record + 8", |m| m + 8),
        ("record + 16", |m| m + 16),
        ("record + 88", |m| m + 88),
        ("record + 208", |m| m + 208),
        ("record - 8", |m| m - 8),
        ("next record", |m| m + 216),
        ("check word", |m| m & !4095),
        ("area header", |m| (m & !4095) + 8),
        ("after the last record", |m| (m & !4095) + 16 + 18 * 216),
        ("area end", |m| (m & !4095) + 4080),
    ];
    for (what, target) in cases {
        let slots = SharedSlots::new(1);
        let (outcome, stderr) =
            run_in_child_capturing_stderr(|| free_with_forged_meta_pointer(&slots, target));
        assert_eq!(
            outcome,
            ChildOutcome::Signaled(libc::SIGABRT),
            "{what}: {:?}",
            String::from_utf8_lossy(&stderr)
        );
        assert_eq!(
            parse_fault_line(&stderr, "slab"),
            Some(("invalid free".to_string(), slots.get(0) as usize)),
            "{what}"
        );
    }
}

#[test]
fn batches_from_two_groups_hand_out_each_slot_once_and_are_not_counted() {
    let _serial = serial();
    // Classes of large slots have small groups, so a refill often takes slots from two groups, the
    // second group's as the next batch (heap.rs `Batch`). Those slots are in use for the masks but
    // not handed out: statistics must not count them, no slot may be handed out twice, contents
    // must survive, and thread exit must give them back.
    let base = slab::stats();
    std::thread::spawn(move || {
        for n in [700usize, 1000, 1500, 2500, 5000] {
            let start = slab::stats();
            let first = slab::malloc(n);
            assert!(!first.is_null());
            let after = slab::stats();
            let class = (0..48)
                .find(|&c| after.classes[c].blocks != start.classes[c].blocks)
                .expect("the block's class");
            // SAFETY: live, freed once.
            unsafe { slab::free(first) };
            let start = start.classes[class].blocks;
            let mut live: Vec<(*mut u8, u64)> = Vec::new();
            for round in 0..3u64 {
                for k in 0..40 {
                    let p = slab::malloc(n);
                    assert!(!p.is_null());
                    assert!(
                        !live.iter().any(|&(q, _)| q == p),
                        "size {n}: a live block handed out again"
                    );
                    let seed = round * 100 + k;
                    // SAFETY: a live block of `n` bytes.
                    unsafe { fill_pattern(p, n, seed) };
                    live.push((p, seed));
                    let s = slab::stats();
                    assert_eq!(
                        s.classes[class].blocks - start,
                        live.len(),
                        "size {n}: blocks in use with {} live",
                        live.len()
                    );
                }
                // Free every other block, oldest first, so the next round reuses some slots.
                let mut kept = Vec::new();
                for (i, (p, seed)) in live.drain(..).enumerate() {
                    // SAFETY: live blocks of `n` bytes.
                    assert_eq!(unsafe { check_pattern(p, n, seed) }, None, "size {n}");
                    if i % 2 == 0 {
                        // SAFETY: live, freed once.
                        unsafe { slab::free(p) };
                    } else {
                        kept.push((p, seed));
                    }
                }
                live = kept;
            }
            for (p, _) in live {
                // SAFETY: live, freed once.
                unsafe { slab::free(p) };
            }
        }
    })
    .join()
    .unwrap();
    let end = slab::stats();
    assert_eq!(end.requested, base.requested);
    for c in 0..48 {
        assert_eq!(end.classes[c].blocks, base.classes[c].blocks, "class {c}");
    }
}

#[test]
fn a_thread_that_exits_gives_its_next_batches_back() {
    let _serial = serial();
    // A thread that exits between two refills may hold a next batch (slots of a second group set
    // aside by its last refill). Exits after every count of 1 to 80 blocks of small-group classes
    // cover both cases; after each, every slot must be free again.
    let base = slab::stats();
    for count in 1..=80usize {
        std::thread::spawn(move || {
            let blocks: Vec<usize> = (0..count)
                .map(|i| slab::malloc([700, 1000, 1500][i % 3]) as usize)
                .collect();
            for (i, &p) in blocks.iter().enumerate() {
                assert_ne!(p, 0);
                if i % 4 != 0 {
                    // SAFETY: each freed once.
                    unsafe { slab::free(p as *mut u8) };
                }
            }
            for &p in blocks.iter().step_by(4) {
                // SAFETY: the rest, each freed once.
                unsafe { slab::free(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        let s = slab::stats();
        assert_eq!(s.requested, base.requested, "after {count} blocks");
        for c in 0..48 {
            assert_eq!(
                s.classes[c].blocks, base.classes[c].blocks,
                "class {c} after {count} blocks"
            );
        }
    }
}

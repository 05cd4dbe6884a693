//! The slab allocator's fast paths keep every guarantee: the owner's pending frees (a thread's frees of
//! its own blocks, marked in their groups later and in bulk) stay invisible to statistics and reuse,
//! are still reported at once on a double free, and are given back at trim and thread exit; meta
//! areas emptied by trim go back to the OS and are reused.
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
fn trim_gives_emptied_meta_areas_back_and_reuses_them() {
    let _serial = serial();
    const COUNT: usize = 500_000;
    slab::trim();
    let start = slab::stats();
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(COUNT);
    for k in 0..COUNT {
        let p = slab::malloc(48);
        assert!(!p.is_null());
        // SAFETY: a live 48-byte block.
        unsafe { p.write_bytes(k as u8 | 1, 48) };
        blocks.push(p);
    }
    let full = slab::stats();
    assert!(
        full.metadata > start.metadata + MIB / 2,
        "{COUNT} blocks need meta records: {} -> {}",
        start.metadata,
        full.metadata
    );
    for &p in &blocks {
        // SAFETY: each freed once.
        unsafe { slab::free(p) };
    }
    assert!(slab::trim());
    let end = slab::stats();
    assert_eq!(end.requested, start.requested);
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
    // Released areas are used again: a second round maps no new meta regions.
    let page_before = twinheap_page::stats().mapped;
    for (k, slot) in blocks.iter_mut().enumerate() {
        let p = slab::malloc(48);
        assert!(!p.is_null());
        // SAFETY: a live 48-byte block.
        unsafe { p.write_bytes(k as u8 | 1, 48) };
        *slot = p;
    }
    let again = slab::stats();
    let page_after = twinheap_page::stats().mapped;
    assert!(again.metadata > start.metadata + MIB / 2);
    let user_growth = again.mapped.saturating_sub(end.mapped);
    assert!(
        page_after <= page_before + user_growth + MIB / 4,
        "meta regions were mapped again: {page_before} -> {page_after} (user memory +{user_growth})"
    );
    for (k, &p) in blocks.iter().enumerate() {
        // SAFETY: live blocks.
        assert!(unsafe { std::slice::from_raw_parts(p, 48) }
            .iter()
            .all(|&b| b == k as u8 | 1));
        // SAFETY: each freed once.
        unsafe { slab::free(p) };
    }
    slab::trim();
}

#[test]
fn groups_mapped_outside_the_heap_lock_are_all_accounted_for() {
    let _serial = serial();
    // A fresh thread has an empty heap: each new class needs a mapped group, which its batch refill
    // maps with the heap lock dropped and installs on the next round. Every mapping slab asks the
    // page backend for must then be a group (or metadata) that slab's statistics know about.
    std::thread::spawn(|| {
        slab::trim();
        let page0 = twinheap_page::stats();
        let s0 = slab::stats();
        let sizes = [3000, 5000, 9000, 20_000, 40_000, 100_000];
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

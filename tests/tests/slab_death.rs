//! Death tests of the slab allocator's hardening: every fault slab detects must abort (SIGABRT) after
//! writing exactly one line, `twinheap(slab): <fault> at 0x<address>`, naming the right fault and,
//! where the test knows it, the right address (the pointer that was passed in, or the first byte that
//! was written after a free).
//!
//! Each case runs in a forked child (`twinheap_tests::run_in_child_capturing_stderr`). The child does
//! its own setup with slab (slab's locks are fork-safe, and this binary's parent never touches slab),
//! reports the address it expects in the report through `SharedSlots`, then makes the faulty call. A
//! child body never allocates through std and never panics (see the `twinheap_tests` docs); if the
//! faulty call returns, the child exits with [`UNDETECTED`] and the test fails.

use twinheap_page::page_size;
use twinheap_slab as slab;
use twinheap_tests::{
    is_mapped, parse_fault_line, poke, run_in_child, run_in_child_capturing_stderr,
    run_in_child_capturing_stderr_writes, touch, ChildOutcome, SharedSlots, DEFAULT_CHILD_TIMEOUT,
};

const ABORTED: ChildOutcome = ChildOutcome::Signaled(libc::SIGABRT);
const SEGV: ChildOutcome = ChildOutcome::Signaled(libc::SIGSEGV);
/// Exit code of a child whose faulty call returned: the fault went undetected.
const UNDETECTED: i32 = 99;
/// Exit code of a child whose setup failed (e.g. malloc returned null).
const SETUP_FAILED: i32 = 98;
/// Exit codes of a child that found no mapping where a guard page should be, or found it still
/// mapped after the block was freed.
const NOT_MAPPED: i32 = 97;
const STILL_MAPPED: i32 = 96;

/// Runs `body` in a child; asserts that it died of SIGABRT after writing exactly the line
/// `twinheap(slab): <fault> at <address>\n`, where the address is what the child stored in slot 0.
#[track_caller]
fn expect_fault(fault: &str, body: impl FnOnce(&SharedSlots) -> i32) {
    let slots = SharedSlots::new(4);
    let (outcome, stderr) = run_in_child_capturing_stderr(|| body(&slots));
    let text = String::from_utf8_lossy(&stderr);
    assert_eq!(
        outcome, ABORTED,
        "expected SIGABRT with '{fault}'; stderr: {text:?}"
    );
    let addr = slots.get(0) as usize;
    assert_ne!(addr, 0, "the child did not report the expected address");
    let want = format!("twinheap(slab): {fault} at {addr:#x}\n");
    assert_eq!(text, want, "stderr of the faulting child");
    assert_eq!(
        parse_fault_line(&stderr, "slab"),
        Some((fault.to_string(), addr))
    );
}

fn malloc(n: usize) -> *mut u8 {
    slab::malloc(n)
}

/// Reports `p` as the address the fault line must name.
fn expect_at(s: &SharedSlots, p: *const u8) {
    s.set(0, p as usize as i64);
}

/// A byte that differs from `old` and is not zero.
fn other_nonzero(old: u8) -> u8 {
    if old == 0x41 {
        0x43
    } else {
        0x41
    }
}

// ---- double free --------------------------------------------------------------------------------

#[test]
fn double_free_at_once() {
    expect_fault("double free", |s| {
        let p = malloc(40);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: the first free is valid; the second is the fault under test, which aborts.
        unsafe {
            slab::free(p);
            slab::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn double_free_after_other_frees_of_the_same_size() {
    expect_fault("double free", |s| {
        let (a, b, c) = (malloc(40), malloc(40), malloc(40));
        if a.is_null() || b.is_null() || c.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, a);
        // SAFETY: three valid frees, then the fault under test.
        unsafe {
            slab::free(a);
            slab::free(b);
            slab::free(c);
            slab::free(a);
        }
        UNDETECTED
    });
}

#[test]
fn double_free_across_every_class_size() {
    // One size per class (its capacity): the freed flag must be found whatever the slot geometry.
    for units in [1usize, 2, 8, 9, 31, 127, 511, 2047, 8191] {
        let n = units * 16 - 4;
        expect_fault("double free", |s| {
            let p = malloc(n);
            if p.is_null() {
                return SETUP_FAILED;
            }
            expect_at(s, p);
            // SAFETY: a valid free, then the fault under test.
            unsafe {
                slab::free_sized(p, n);
                slab::free_sized(p, n);
            }
            UNDETECTED
        });
    }
}

#[test]
fn realloc_of_a_freed_pointer_is_a_double_free() {
    expect_fault("double free", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: a valid free, then the fault under test.
        unsafe {
            slab::free(p);
            slab::realloc(p, 200);
        }
        UNDETECTED
    });
}

#[test]
fn usable_size_of_a_freed_pointer_is_a_double_free() {
    expect_fault("double free", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: a valid free, then the fault under test.
        unsafe {
            slab::free(p);
            slab::usable_size(p);
        }
        UNDETECTED
    });
}

/// A large block's mapping is unmapped by the first free, so the second free must recognise the
/// pointer without relying on reading the (now unmapped) header in front of it.
#[test]
fn large_block_double_free() {
    expect_fault("double free", |s| {
        let n = 1 << 20;
        let p = malloc(n);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: a valid free, then the fault under test.
        unsafe {
            slab::free(p);
            slab::free(p);
        }
        UNDETECTED
    });
}

// ---- invalid free -------------------------------------------------------------------------------

#[test]
fn interior_pointer_is_an_invalid_free() {
    expect_fault("invalid free", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        // SAFETY: 16 bytes into a 100-byte block.
        let q = unsafe { p.add(16) };
        expect_at(s, q);
        // SAFETY: the fault under test.
        unsafe { slab::free(q) };
        UNDETECTED
    });
}

#[test]
fn interior_pointer_of_a_large_block_is_an_invalid_free() {
    expect_fault("invalid free", |s| {
        let p = malloc(1 << 20);
        if p.is_null() {
            return SETUP_FAILED;
        }
        // SAFETY: 64 KiB into a 1 MiB block.
        let q = unsafe { p.add(64 << 10) };
        expect_at(s, q);
        // SAFETY: the fault under test.
        unsafe { slab::free(q) };
        UNDETECTED
    });
}

#[test]
fn stack_address_is_an_invalid_free() {
    #[repr(C, align(64))]
    struct Frame([u64; 64]);
    expect_fault("invalid free", |s| {
        let mut frame = Frame([0; 64]);
        // SAFETY: 256 bytes into a 512-byte, 64-aligned stack buffer (so 16-aligned).
        let q = unsafe { (frame.0.as_mut_ptr() as *mut u8).add(256) };
        expect_at(s, q);
        // SAFETY: the fault under test; slab reads the zeroed bytes before `q`.
        unsafe { slab::free(q) };
        std::hint::black_box(&frame);
        UNDETECTED
    });
}

#[test]
fn glibc_pointer_is_an_invalid_free() {
    // Allocated in the parent: a forked child must not call glibc's malloc (another harness thread
    // may have held its lock at fork time).
    // SAFETY: plain libc allocation, freed below.
    let g = unsafe { libc::malloc(64) } as *mut u8;
    assert!(!g.is_null());
    assert_eq!(g as usize % 16, 0, "glibc returns 16-aligned blocks");
    expect_fault("invalid free", |s| {
        expect_at(s, g);
        // SAFETY: the fault under test; the bytes before a glibc block (its chunk header) are
        // readable.
        unsafe { slab::free(g) };
        UNDETECTED
    });
    // SAFETY: `g` came from libc::malloc and the parent's copy was never touched by slab.
    unsafe { libc::free(g.cast()) };
}

#[test]
fn misaligned_pointer_is_an_invalid_free() {
    expect_fault("invalid free", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        // SAFETY: one byte into the block.
        let q = unsafe { p.add(1) };
        expect_at(s, q);
        // SAFETY: the fault under test.
        unsafe { slab::free(q) };
        UNDETECTED
    });
}

#[test]
fn forged_header_is_an_invalid_free() {
    // The header's first byte (at p - 4) holds flags; only FLAG_BIG (0x01) and FLAG_FREED (0x80) exist.
    // 0x12 has other bits set, so validation rejects the header as not one slab wrote — "invalid free"
    // — at its very first structural check, before the header could lead to any metadata (which is
    // where "corrupted metadata" would come from; see `corrupted_meta_area_is_reported` for that).
    expect_fault("invalid free", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: the 4 header bytes in front of a live block are inside its group; then the fault.
        unsafe {
            p.sub(4).copy_from([0x12u8, 0x34, 0x56, 0x78].as_ptr(), 4);
            slab::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn forged_group_header_is_an_invalid_free() {
    // Keep the block header intact but point the group header (the meta pointer it leads to) at a
    // stack buffer: the pointer does not lead into slab's meta regions.
    expect_fault("invalid free", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        let fake = [0u64; 16];
        // SAFETY: the header layout is documented in header.rs: bytes 2-3 at p - 4 are the distance in
        // units from the group's storage, which starts 16 bytes after the group header. Then the fault.
        unsafe {
            let off = usize::from(u16::from_le_bytes([*p.sub(2), *p.sub(1)]));
            if *p.sub(4) & 1 != 0 {
                return SETUP_FAILED; // a big offset: not expected for a first 100-byte block
            }
            let group = p.sub(off * 16 + 16) as *mut usize;
            group.write(fake.as_ptr().add(2) as usize);
            slab::free(p);
        }
        std::hint::black_box(&fake);
        UNDETECTED
    });
}

#[test]
fn corrupted_meta_area_is_reported() {
    // The group header points at the group's meta record; the 4 KiB meta area holding it starts with a
    // check word equal to the process secret. Overwriting that word (as a stray write into metadata
    // would) must be reported as corrupted metadata on the next free of any block of that group.
    expect_fault("corrupted metadata", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: as in `forged_group_header_is_an_invalid_free`; the meta area is slab's read-write
        // memory. Then the fault.
        unsafe {
            let off = usize::from(u16::from_le_bytes([*p.sub(2), *p.sub(1)]));
            if *p.sub(4) & 1 != 0 {
                return SETUP_FAILED;
            }
            let meta = (p.sub(off * 16 + 16) as *const usize).read();
            let area = (meta & !4095) as *mut u64;
            area.write(area.read() ^ 0x5a5a_5a5a_0000_0001);
            slab::free(p);
        }
        UNDETECTED
    });
}

// ---- heap overflow ------------------------------------------------------------------------------

#[test]
fn one_byte_overflow() {
    expect_fault("heap overflow", |s| {
        let p = malloc(20);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: the byte after a 20-byte block is slack inside its 28-byte slot. Then the fault.
        unsafe {
            let q = p.add(20);
            q.write(other_nonzero(q.read()));
            slab::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn nul_off_by_one_overflow() {
    expect_fault("heap overflow", |s| {
        let p = malloc(20);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: as in `one_byte_overflow`; the canary is never 0, so a NUL differs from it.
        unsafe {
            p.add(20).write(0);
            slab::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn eight_byte_overflow() {
    expect_fault("heap overflow", |s| {
        let p = malloc(20);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: bytes 20..28 are the slot's slack (the slot serves 28 bytes). Then the fault.
        unsafe {
            p.add(20).write_bytes(0x41, 8);
            slab::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn exact_fit_overflow_into_the_next_header() {
    expect_fault("heap overflow", |s| {
        // 60 bytes fill a 64-byte slot exactly: the next 4 bytes are the next slot's header.
        let p = malloc(60);
        if p.is_null() {
            return SETUP_FAILED;
        }
        expect_at(s, p);
        // SAFETY: p + 60 is the next slot's header, inside the group. Then the fault.
        unsafe {
            p.add(60).write(0x41);
            slab::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn overflow_is_also_caught_by_realloc_and_usable_size() {
    for via_realloc in [false, true] {
        expect_fault("heap overflow", |s| {
            let p = malloc(100);
            if p.is_null() {
                return SETUP_FAILED;
            }
            expect_at(s, p);
            // SAFETY: one byte past a 100-byte block, inside its 108-byte slot. Then the fault.
            unsafe {
                let q = p.add(100);
                q.write(other_nonzero(q.read()));
                if via_realloc {
                    slab::realloc(p, 50);
                } else {
                    slab::usable_size(p);
                }
            }
            UNDETECTED
        });
    }
}

#[test]
fn one_byte_overflow_in_every_class() {
    // Per class: the exact fit (overflow lands in the next header), one byte of slack (the canary is
    // the slot's last byte) and the class's smallest size (lots of slack, random offset in the slot).
    const SIZES: [usize; 48] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 31, 36, 42, 50, 63, 72, 84, 102, 127,
        146, 170, 204, 255, 292, 340, 409, 511, 584, 682, 818, 1023, 1169, 1364, 1637, 2047, 2340,
        2730, 3276, 4095, 4680, 5460, 6552, 8191,
    ];
    let mut prev_cap = 0usize;
    let mut cases = Vec::new();
    for units in SIZES {
        let cap = units * 16 - 4;
        let smallest = if prev_cap == 0 { 0 } else { prev_cap + 1 };
        cases.extend([cap, cap - 1, smallest]);
        prev_cap = cap;
    }
    // Large blocks: random slack, and an exact fit of a page-multiple mapping.
    let page = page_size();
    cases.extend([slab::MAX_SMALL + 1, 1 << 20, (1 << 20) - 20, 4 * page - 20]);
    for n in cases {
        let slots = SharedSlots::new(1);
        let (outcome, stderr) = run_in_child_capturing_stderr(|| {
            let p = malloc(n);
            if p.is_null() {
                return SETUP_FAILED;
            }
            slots.set(0, p as i64);
            // SAFETY: the byte after the block is slack or the next header, inside slab's memory.
            unsafe {
                let q = p.add(n);
                q.write(other_nonzero(q.read()));
                slab::free_sized(p, n);
            }
            UNDETECTED
        });
        let want = format!("twinheap(slab): heap overflow at {:#x}\n", slots.get(0));
        assert_eq!(
            (outcome, String::from_utf8_lossy(&stderr).into_owned()),
            (ABORTED, want),
            "size {n}"
        );
    }
}

#[test]
fn large_block_overflow_into_the_end_bytes() {
    // A linear overflow of 4 bytes past a large block: with slack it hits the canary, with an exact
    // fit (n = page multiple - 20) the trailing 4-byte header area whose first byte must hold only
    // flags. Both are inside the mapping.
    let page = page_size();
    for n in [(1 << 20) + 1000, (1 << 20) - 20, 2 * page - 20, 200_000] {
        expect_fault("heap overflow", |s| {
            let p = malloc(n);
            if p.is_null() {
                return SETUP_FAILED;
            }
            expect_at(s, p);
            // SAFETY: p + n + 4 <= the mapping's end (the block is followed by at least 4 bytes of
            // slab's layout). Then the fault.
            unsafe {
                let q = p.add(n);
                let first = other_nonzero(q.read());
                q.write(first);
                q.add(1).write_bytes(0x41, 3);
                slab::free(p);
            }
            UNDETECTED
        });
    }
}

/// Where the guard page after (or before) a large block of `n` bytes at `p` must be: the mapping ends
/// at the first page boundary at or after the block's 4 trailing header bytes, and starts at the
/// page holding the 16-byte group header before `p`.
fn guard_address(p: usize, n: usize, after: bool) -> usize {
    let page = page_size();
    if after {
        (p + n + 4).next_multiple_of(page)
    } else {
        ((p - 16) & !(page - 1)) - 1
    }
}

#[test]
fn guard_pages_surround_a_large_block() {
    for n in [1 << 20, (1 << 20) - 20, 300_000] {
        for after in [true, false] {
            let side = if after { "after" } else { "before" };
            // First child: the guard page is part of the block's own mapping: mapped (PROT_NONE)
            // while the block lives, and gone once it is freed and trimmed. (A neighbouring mapping's guard page,
            // or an unmapped hole, would also fault, but would not come and go with the block.)
            let outcome = run_in_child(|| {
                let p = malloc(n);
                if p.is_null() {
                    return SETUP_FAILED;
                }
                let target = guard_address(p as usize, n, after);
                if !is_mapped(target) {
                    return NOT_MAPPED;
                }
                // SAFETY: a live block, freed once.
                unsafe { slab::free(p) };
                // A freed block stays mapped (closed to writes) in the large-block cache, or its
                // header page and the guard before it as a tombstone (so that a second free is
                // reported as a double free), until trim unmaps them.
                slab::trim();
                if is_mapped(target) {
                    return STILL_MAPPED;
                }
                0
            });
            assert_eq!(
                outcome,
                ChildOutcome::Exited(0),
                "n {n}: the page {side} the block is not its guard page ({NOT_MAPPED}: not mapped \
                 while the block lives; {STILL_MAPPED}: still mapped after the free)"
            );
            // Second child: touching it faults, while the mapping's own edges are usable.
            let slots = SharedSlots::new(2);
            let outcome = run_in_child(|| {
                let p = malloc(n);
                if p.is_null() {
                    return SETUP_FAILED;
                }
                let target = guard_address(p as usize, n, after);
                slots.set(0, target as i64);
                let inside = if after { target - 1 } else { target + 1 };
                // SAFETY: the first and last bytes of the mapping are readable and writable.
                unsafe { poke(inside, touch(inside)) };
                slots.set(1, 1);
                // SAFETY: the guard page: this must fault.
                unsafe { poke(target, 1) };
                UNDETECTED
            });
            assert_eq!(slots.get(1), 1, "n {n}: the mapping itself was not usable");
            assert_eq!(
                outcome,
                SEGV,
                "n {n}: writing at {:#x} ({side} the block) did not fault",
                slots.get(0)
            );
        }
    }
}

#[test]
fn write_far_past_a_large_block_hits_its_guard() {
    // The brief's form: p + the mapping's length lands in the guard page after it.
    let page = page_size();
    let n = 1 << 20;
    let outcome = run_in_child(|| {
        let p = malloc(n);
        if p.is_null() {
            return SETUP_FAILED;
        }
        let len = (n + 20).next_multiple_of(page);
        // SAFETY: this must fault.
        unsafe { poke(p as usize + len, 7) };
        UNDETECTED
    });
    assert_eq!(outcome, SEGV);
}

// ---- size mismatch ------------------------------------------------------------------------------

#[test]
fn free_sized_with_the_wrong_size() {
    for (n, told) in [
        (100, 101),
        (100, 99),
        (0, 1),
        (5000, 4999),
        (200_000, 200_016),
    ] {
        expect_fault("size mismatch", |s| {
            let p = malloc(n);
            if p.is_null() {
                return SETUP_FAILED;
            }
            expect_at(s, p);
            // SAFETY: the fault under test.
            unsafe { slab::free_sized(p, told) };
            UNDETECTED
        });
    }
}

// ---- write after free ---------------------------------------------------------------------------

/// Frees one 20-byte block among many, writes one byte into it, then allocates 20-byte blocks until
/// its slot comes back (reuse is delayed and random, so it takes a while). Returns what the child
/// should exit with if no fault stopped it. Slot 0 gets the written address, slot 1 counts mallocs.
fn write_after_free_scenario(s: &SharedSlots) -> i32 {
    let mut keep = [std::ptr::null_mut::<u8>(); 64];
    for k in keep.iter_mut() {
        *k = malloc(20);
        if k.is_null() {
            return SETUP_FAILED;
        }
    }
    let p = keep[32];
    // SAFETY: `p` is a live 20-byte block; after the free its slot is slab's, and the write is the
    // bug under test (the memory stays mapped: the group still holds 63 live blocks).
    let target = unsafe {
        slab::free(p);
        let t = p.add(8);
        t.write(0x5a);
        t
    };
    expect_at(s, target);
    for i in 1..=100_000 {
        let q = malloc(20);
        if q.is_null() {
            return SETUP_FAILED;
        }
        s.set(1, i);
        if q == p {
            return UNDETECTED;
        }
    }
    UNDETECTED + 1
}

#[test]
fn write_after_free_is_caught_when_the_slot_is_reused() {
    expect_fault("write after free", write_after_free_scenario);
}

// ---- the report itself --------------------------------------------------------------------------

#[test]
fn fault_report_is_one_write_of_one_line() {
    let slots = SharedSlots::new(1);
    let (outcome, writes) = run_in_child_capturing_stderr_writes(DEFAULT_CHILD_TIMEOUT, || {
        let p = malloc(24);
        if p.is_null() {
            return SETUP_FAILED;
        }
        slots.set(0, p as i64);
        // SAFETY: a valid free, then a double free.
        unsafe {
            slab::free(p);
            slab::free(p);
        }
        UNDETECTED
    });
    assert_eq!(outcome, ABORTED);
    assert_eq!(
        writes.len(),
        1,
        "the report must be a single write(2): {writes:?}"
    );
    let line = &writes[0];
    assert!(line.ends_with(b"\n"));
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    assert_eq!(
        parse_fault_line(line, "slab"),
        Some(("double free".to_string(), slots.get(0) as usize))
    );
}

#[test]
fn valid_use_in_a_child_exits_cleanly() {
    // The control for every case above: the same kind of child, without the fault, exits 0 and says
    // nothing (so an abort above is caused by the fault, not by the harness).
    let (outcome, stderr) = run_in_child_capturing_stderr(|| {
        for n in [0, 1, 20, 60, 100, 5000, 131_052, 131_053, 1 << 20] {
            let p = malloc(n);
            if p.is_null() {
                return SETUP_FAILED;
            }
            // SAFETY: `p` holds `n` bytes; then it is freed once, with its size.
            unsafe {
                p.write_bytes(0x41, n);
                if slab::usable_size(p) != n {
                    return 3;
                }
                slab::free_sized(p, n);
            }
        }
        0
    });
    assert_eq!(outcome, ChildOutcome::Exited(0));
    assert_eq!(String::from_utf8_lossy(&stderr), "");
}

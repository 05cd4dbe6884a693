//! slab's large blocks (above 131,052 bytes, or alignments above 64 KiB): the cache of freed blocks
//! and growable mappings.
//!
//! What must hold (docs/slab.md, "Large blocks"): a freed block waiting in the cache cannot be read
//! with its old contents and faults on any write (with `slab.protect_freed_large` off: any write is
//! reported when the block is reused); a second free of it is reported as a double free;
//! a block handed out again reads zero where calloc or `slab.zero_on_free` require it; guard pages
//! surround every live block, reused or not; realloc keeps contents whether the block grows in place
//! or moves; the cache honours its byte and count caps; trim empties it.
//!
//! The cache is process-wide, so every case runs in a forked child and starts with an empty cache,
//! setting slab's options before its first allocation. Only the multithreaded case uses slab in this
//! process; it holds [`GATE`] exclusively and trims before it lets children be forked again. A child
//! body never allocates through std and never panics; it reports through its exit code (0 = as
//! expected, other codes name the failed step) or dies of the signal under test.

use std::sync::{RwLock, RwLockReadGuard};

use twinheap_page::page_size;
use twinheap_slab as slab;
use twinheap_tests::{
    parse_fault_line, poke, run_in_child, run_in_child_capturing_stderr, touch, ChildOutcome,
    SharedSlots,
};

const ABORTED: ChildOutcome = ChildOutcome::Signaled(libc::SIGABRT);
const SEGV: ChildOutcome = ChildOutcome::Signaled(libc::SIGSEGV);
const OK: ChildOutcome = ChildOutcome::Exited(0);
/// Exit code of a child whose faulty access returned: the fault went undetected.
const UNDETECTED: i32 = 99;
/// Exit code of a child whose setup failed (e.g. malloc returned null).
const SETUP_FAILED: i32 = 98;
const MIB: usize = 1 << 20;

/// Children are forked under a shared hold; the case that uses slab in this process holds it alone.
static GATE: RwLock<()> = RwLock::new(());

fn gate() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|e| e.into_inner())
}

/// slab's options with `zero_on_free` and the cache cap given, everything else at the default.
fn config(zero_on_free: bool, large_cache: usize) -> slab::Config {
    slab::Config {
        zero_on_free,
        check_write_after_free: zero_on_free,
        large_cache,
        ..slab::Config::DEFAULT
    }
}

/// In a child: allocates `n` bytes, fills them and frees them into the cache, which must then hold
/// exactly that block. The freed pointer, or the exit code of the step that failed.
fn freed_into_the_cache(n: usize, seed: u8) -> Result<*mut u8, i32> {
    let p = slab::malloc(n);
    if p.is_null() {
        return Err(SETUP_FAILED);
    }
    fill(p, n, seed);
    // SAFETY: a valid free; the block goes to the cache.
    unsafe { slab::free(p) };
    if slab::stats().large_cached != 1 {
        return Err(2);
    }
    Ok(p)
}

/// Asserts that a child aborted with exactly one fault line naming `fault` at `addr`.
#[track_caller]
fn assert_fault(outcome: ChildOutcome, stderr: &[u8], fault: &str, addr: i64, what: &str) {
    let text = String::from_utf8_lossy(stderr);
    assert_eq!(outcome, ABORTED, "{what}: stderr {text:?}");
    assert_eq!(
        parse_fault_line(stderr, "slab"),
        Some((fault.to_string(), addr as usize)),
        "{what}"
    );
}

/// The default options but `slab.protect_freed_large` off.
fn open_config() -> slab::Config {
    slab::Config {
        protect_freed_large: false,
        ..slab::Config::DEFAULT
    }
}

fn fill(p: *mut u8, n: usize, seed: u8) {
    for i in (0..n).step_by(97) {
        // SAFETY: callers pass a live block of `n` bytes.
        unsafe { *p.add(i) = seed.wrapping_add((i / 97) as u8) | 1 };
    }
}

fn holds(p: *const u8, n: usize, seed: u8) -> bool {
    // SAFETY: as in `fill`.
    (0..n)
        .step_by(97)
        .all(|i| unsafe { *p.add(i) } == seed.wrapping_add((i / 97) as u8) | 1)
}

fn all_zero(p: *const u8, n: usize) -> bool {
    // SAFETY: callers pass a live block of `n` bytes.
    (0..n).all(|i| unsafe { *p.add(i) } == 0)
}

/// The page holding `addr`.
fn page_of(addr: usize) -> usize {
    addr & !(page_size() - 1)
}

/// Runs `body` in a child with slab configured first and asserts that it exits 0.
#[track_caller]
fn expect_ok(what: &str, cfg: slab::Config, body: impl FnOnce() -> i32) {
    let outcome = run_in_child(|| {
        slab::init(&cfg);
        body()
    });
    assert_eq!(outcome, OK, "{what} (exit code names the failed step)");
}

// ---- a cached block: double free, reads, writes -------------------------------------------------

/// A block freed into the cache keeps a readable header page marked freed: a second free (and a
/// usable-size call) is reported as a double free, with either setting of zero_on_free.
#[test]
fn double_free_of_a_cached_block_is_reported() {
    let _gate = gate();
    for zero in [true, false] {
        for (n, align) in [(MIB, 16), (200_000, 16), (300_000, 1 << 20)] {
            for second in ["free", "usable_size", "realloc"] {
                let slots = SharedSlots::new(2);
                let (outcome, stderr) = run_in_child_capturing_stderr(|| {
                    slab::init(&config(zero, 32 * MIB));
                    let p = if align == 16 {
                        slab::malloc(n)
                    } else {
                        slab::aligned_alloc(align, n)
                    };
                    if p.is_null() {
                        return SETUP_FAILED;
                    }
                    fill(p, n, 5);
                    slots.set(0, p as i64);
                    // SAFETY: a valid free, then the fault under test.
                    unsafe {
                        slab::free(p);
                        if slab::stats().large_cached != 1 {
                            return 2;
                        }
                        match second {
                            "free" => slab::free(p),
                            "usable_size" => {
                                slab::usable_size(p);
                            }
                            _ => {
                                slab::realloc(p, n * 2);
                            }
                        }
                    }
                    UNDETECTED
                });
                let what = format!("{second} after free, n {n}, align {align}, zero {zero}");
                assert_fault(outcome, &stderr, "double free", slots.get(0), &what);
            }
        }
    }
}

/// With the cache off (or a block above its cap) a freed block is unmapped but for a tombstone, and
/// a double free is still reported.
#[test]
fn double_free_of_an_uncached_block_is_reported() {
    let _gate = gate();
    for (cap, n) in [(0, MIB), (MIB, 2 * MIB)] {
        let slots = SharedSlots::new(1);
        let (outcome, stderr) = run_in_child_capturing_stderr(|| {
            slab::init(&config(true, cap));
            let p = slab::malloc(n);
            if p.is_null() {
                return SETUP_FAILED;
            }
            slots.set(0, p as i64);
            // SAFETY: a valid free, then the fault under test.
            unsafe {
                slab::free(p);
                if slab::stats().large_cached != 0 {
                    return 2;
                }
                slab::free(p);
            }
            UNDETECTED
        });
        assert_fault(
            outcome,
            &stderr,
            "double free",
            slots.get(0),
            &format!("cap {cap}, n {n}"),
        );
    }
}

/// Any write to a cached block faults: at the start (the header page, read-only), in the middle and
/// at the end, with or without zero_on_free.
#[test]
fn write_after_free_to_a_cached_block_faults() {
    let _gate = gate();
    for (zero, n) in [(true, MIB + 1000), (false, MIB + 1000), (true, 9 * MIB)] {
        for at in [0, 8, 4096, n / 2, n - 1] {
            let slots = SharedSlots::new(1);
            let outcome = run_in_child(|| {
                slab::init(&config(zero, 32 * MIB));
                let p = match freed_into_the_cache(n, 3) {
                    Ok(p) => p,
                    Err(code) => return code,
                };
                slots.set(0, 1);
                // SAFETY: the fault under test.
                unsafe { poke(p as usize + at, 0x41) };
                UNDETECTED
            });
            assert_eq!(slots.get(0), 1, "zero {zero}, at {at}: setup");
            assert_eq!(
                outcome, SEGV,
                "zero {zero}, offset {at}: the write did not fault"
            );
        }
    }
}

/// With `slab.protect_freed_large` off, a cached block that was zeroed with stores stays writable:
/// a write to it does not fault, but the reuse of the block reports it, at the byte written, before
/// handing anything out.
#[test]
fn unprotected_cached_block_reports_a_write_after_free_at_reuse() {
    let _gate = gate();
    let n = MIB + 1000;
    for at in [0, 8, 4096, n / 2, n - 1] {
        let slots = SharedSlots::new(1);
        let (outcome, stderr) = run_in_child_capturing_stderr(|| {
            slab::init(&open_config());
            let p = match freed_into_the_cache(n, 3) {
                Ok(p) => p,
                Err(code) => return code,
            };
            slots.set(0, p as i64 + at as i64);
            // SAFETY: the fault under test; the page is mapped read-write.
            unsafe { poke(p as usize + at, 0x41) };
            // The same size takes the cached block back.
            let q = slab::malloc(n);
            if !q.is_null() {
                return UNDETECTED;
            }
            3
        });
        let what = format!("offset {at}");
        assert_fault(outcome, &stderr, "write after free", slots.get(0), &what);
    }
}

/// An unprotected cached block reads zero, is handed out again for the same size (from the same
/// mapping) reading zero, and is still a double free when a write after free cleared the freed
/// flag in its header, since the record says so too.
#[test]
fn unprotected_cached_block_reads_zero_and_is_reused() {
    let _gate = gate();
    let n = 3 * MIB;
    expect_ok("reuse", open_config(), || {
        let p = match freed_into_the_cache(n, 7) {
            Ok(p) => p,
            Err(code) => return code,
        };
        // The freed block is mapped read-write; reading it is what is tested.
        if !all_zero(p, n) {
            return 3;
        }
        let q = slab::malloc(n);
        if q.is_null() {
            return 4;
        }
        if page_of(q as usize) != page_of(p as usize) || slab::stats().large_cached != 0 {
            return 5;
        }
        if !all_zero(q, n) {
            return 6;
        }
        fill(q, n, 8);
        // SAFETY: a valid free of the reused block.
        unsafe { slab::free(q) };
        0
    });
    let slots = SharedSlots::new(1);
    let (outcome, stderr) = run_in_child_capturing_stderr(|| {
        slab::init(&open_config());
        let p = slab::malloc(n);
        if p.is_null() {
            return SETUP_FAILED;
        }
        slots.set(0, p as i64);
        fill(p, n, 7);
        // SAFETY: a valid free, a write after free that clears the header's freed flag, then the
        // double free under test.
        unsafe {
            slab::free(p);
            poke(p as usize - 4, 0);
            slab::free(p);
        }
        UNDETECTED
    });
    assert_fault(
        outcome,
        &stderr,
        "double free",
        slots.get(0),
        "header flag cleared",
    );
}

/// A cached block never shows its old contents: with zero_on_free it reads all zero; without, the
/// header page reads zero after the header and the rest faults.
#[test]
fn a_cached_block_does_not_read_back_its_old_contents() {
    let _gate = gate();
    let n = 3 * MIB;
    expect_ok("zero_on_free: all zero", config(true, 32 * MIB), || {
        let p = match freed_into_the_cache(n, 9) {
            Ok(p) => p,
            Err(code) => return code,
        };
        // SAFETY: the cached block is mapped read-only; reading it is what is tested.
        if !(0..n).all(|i| unsafe { touch(p as usize + i) } == 0) {
            return 3;
        }
        0
    });
    for at in [4096, MIB, n - 1] {
        let slots = SharedSlots::new(1);
        let outcome = run_in_child(|| {
            slab::init(&config(false, 32 * MIB));
            let p = slab::malloc(n);
            if p.is_null() {
                return SETUP_FAILED;
            }
            fill(p, n, 9);
            // SAFETY: a valid free.
            unsafe { slab::free(p) };
            let header_page_end = page_of(p as usize) + page_size();
            // SAFETY: the header page stays readable.
            if !(p as usize..header_page_end).all(|a| unsafe { touch(a) } == 0) {
                return 3;
            }
            slots.set(0, 1);
            // SAFETY: the fault under test: the rest of the block is PROT_NONE.
            unsafe { touch(header_page_end + at - 4096) };
            UNDETECTED
        });
        assert_eq!(slots.get(0), 1, "header page of a cached block not zero");
        assert_eq!(
            outcome, SEGV,
            "offset {at}: a read of the freed block did not fault"
        );
    }
}

/// With zero-on-free, a cached block the program used only sparsely has its pages dropped instead
/// of zeroed with stores (which would fault in every untouched page): they are no longer resident,
/// reads past the header page fault, and the block reads zero when reused.
#[test]
fn a_sparsely_used_cached_block_has_its_pages_dropped() {
    let _gate = gate();
    let n = 12 * MIB;
    let page = page_size();
    expect_ok("dropped pages", config(true, 32 * MIB), || {
        let p = slab::malloc(n);
        if p.is_null() {
            return SETUP_FAILED;
        }
        // SAFETY: `n` bytes, one in 16 pages written (old data the drop must remove); freed once.
        unsafe {
            for i in (0..n).step_by(16 * page) {
                p.add(i).write_bytes(0x77, 100);
            }
            slab::free(p);
        }
        if slab::stats().large_cached != 1 {
            return 2;
        }
        let header_page_end = page_of(p as usize) + page;
        // SAFETY: the header page stays readable.
        if !(p as usize..header_page_end).all(|a| unsafe { touch(a) } == 0) {
            return 3;
        }
        let mut resident = [0u8; 64];
        // SAFETY: mincore writes one byte per page of a range that is mapped (PROT_NONE).
        let rc = unsafe {
            libc::mincore(
                (header_page_end + MIB) as *mut libc::c_void,
                64 * page,
                resident.as_mut_ptr(),
            )
        };
        if rc != 0 || resident.iter().any(|&r| r & 1 != 0) {
            return 4;
        }
        let q = slab::calloc(1, n - 5000);
        if page_of(q as usize) != page_of(p as usize) || !all_zero(q, n - 5000) {
            return 5;
        }
        0
    });
    let slots = SharedSlots::new(1);
    let outcome = run_in_child(|| {
        slab::init(&config(true, 32 * MIB));
        let p = slab::malloc(n);
        if p.is_null() {
            return SETUP_FAILED;
        }
        // SAFETY: one byte written; freed once.
        unsafe {
            p.add(n / 2).write(1);
            slab::free(p);
        }
        slots.set(0, 1);
        // SAFETY: the fault under test.
        unsafe { touch(page_of(p as usize) + page) };
        UNDETECTED
    });
    assert_eq!(slots.get(0), 1);
    assert_eq!(
        outcome, SEGV,
        "a read past the header page of a dropped block did not fault"
    );
}

// ---- reuse ----------------------------------------------------------------------------------------

/// calloc of a reused block reads all zero, and a block reused with zero_on_free holds none of the
/// old bytes; both the same length and a shorter one, with or without zero_on_free.
#[test]
fn reused_blocks_read_zero_where_required() {
    let _gate = gate();
    for zero in [true, false] {
        for (first, second) in [(MIB, MIB), (2 * MIB, MIB + 333), (400_000, 300_000)] {
            expect_ok(
                &format!("zero {zero}: {first} then {second}"),
                config(zero, 32 * MIB),
                || {
                    let p = slab::malloc(first);
                    if p.is_null() {
                        return SETUP_FAILED;
                    }
                    // SAFETY: `first` bytes.
                    unsafe { p.write_bytes(0xa5, first) };
                    // SAFETY: freed once.
                    unsafe { slab::free(p) };
                    let q = slab::calloc(1, second);
                    if q.is_null() {
                        return SETUP_FAILED;
                    }
                    // Reused: same mapping (the first page holds both headers).
                    if page_of(q as usize) != page_of(p as usize) {
                        return 2;
                    }
                    if slab::stats().large_cached != 0 {
                        return 3;
                    }
                    if !all_zero(q, second) {
                        return 4;
                    }
                    // SAFETY: live block.
                    if unsafe { slab::usable_size(q) } != second {
                        return 5;
                    }
                    // SAFETY: `second` bytes; freed once.
                    unsafe {
                        q.write_bytes(0x5a, second);
                        slab::free_sized(q, second);
                    }
                    if zero {
                        let r = slab::malloc(second);
                        if page_of(r as usize) != page_of(p as usize) || !all_zero(r, second) {
                            return 6;
                        }
                    }
                    0
                },
            );
        }
    }
}

/// A reused block keeps both guard pages: the page right after its last page and the one before
/// its first fault, also when a longer cached block serves a shorter request.
#[test]
fn reused_blocks_keep_their_guard_pages() {
    let _gate = gate();
    let page = page_size();
    for after in [true, false] {
        for (first, second) in [(2 * MIB, MIB), (MIB, MIB), (300_000, 500_000)] {
            let slots = SharedSlots::new(2);
            let outcome = run_in_child(|| {
                slab::init(&config(true, 32 * MIB));
                let p = slab::malloc(first);
                // SAFETY: freed once.
                unsafe { slab::free(p) };
                let q = slab::malloc(second);
                if p.is_null() || q.is_null() || page_of(q as usize) != page_of(p as usize) {
                    return SETUP_FAILED;
                }
                let (inside, guard) = if after {
                    let end = (q as usize + second + 4).next_multiple_of(page);
                    (end - 1, end)
                } else {
                    (page_of(q as usize), page_of(q as usize) - 1)
                };
                // SAFETY: the first and last bytes of the block's pages are usable.
                unsafe { poke(inside, touch(inside)) };
                slots.set(0, 1);
                // SAFETY: the guard page: this must fault.
                unsafe { poke(guard, 1) };
                UNDETECTED
            });
            assert_eq!(
                slots.get(0),
                1,
                "{first} then {second}: the block itself was not usable"
            );
            assert_eq!(
                outcome, SEGV,
                "{first} then {second}, after {after}: no guard"
            );
        }
    }
}

/// A program that allocates and frees a big buffer in a loop reuses one mapping: after the first
/// round the page backend maps nothing new.
#[test]
fn a_loop_of_big_buffers_maps_nothing_after_the_first() {
    let _gate = gate();
    expect_ok("steady state", config(true, 32 * MIB), || {
        let p = slab::malloc(4 * MIB);
        // SAFETY: 4 MiB; freed once.
        unsafe {
            p.write_bytes(1, 4 * MIB);
            slab::free(p);
        }
        let mappings = twinheap_page::stats().mappings;
        for round in 0..50 {
            let n = 4 * MIB - round * 1000;
            let q = slab::malloc(n);
            if page_of(q as usize) != page_of(p as usize) {
                return 2;
            }
            // SAFETY: `n` bytes; freed once.
            unsafe {
                if *q.add(n - 1) != 0 {
                    return 3;
                }
                q.write_bytes(1, n);
                slab::free(q);
            }
        }
        if twinheap_page::stats().mappings != mappings {
            return 4;
        }
        0
    });
}

/// Aligned large blocks go through the cache too and stay aligned; a plain request may reuse an
/// aligned block's mapping, and an aligned request only a suitably aligned one.
#[test]
fn aligned_blocks_through_the_cache() {
    let _gate = gate();
    expect_ok("aligned reuse", config(true, 32 * MIB), || {
        for align in [128 << 10, MIB, 4 * MIB] {
            let p = slab::aligned_alloc(align, 300_000);
            if p.is_null() || !(p as usize).is_multiple_of(align) {
                return SETUP_FAILED;
            }
            fill(p, 300_000, 1);
            // SAFETY: freed once.
            unsafe { slab::free(p) };
            let q = slab::aligned_alloc(align, 250_000);
            if q.is_null() || !(q as usize).is_multiple_of(align) || !all_zero(q, 250_000) {
                return 2;
            }
            // SAFETY: live; freed once.
            unsafe {
                if slab::usable_size(q) != 250_000 {
                    return 3;
                }
                slab::free(q);
            }
            let r = slab::malloc(200_000);
            if r.is_null() || !(r as usize).is_multiple_of(16) || !all_zero(r, 200_000) {
                return 4;
            }
            // SAFETY: live; freed once.
            unsafe {
                fill(r, 200_000, 2);
                if !holds(r, 200_000, 2) || slab::usable_size(r) != 200_000 {
                    return 5;
                }
                slab::free(r);
            }
        }
        slab::trim();
        0
    });
}

// ---- realloc --------------------------------------------------------------------------------------

/// realloc keeps contents across growth in place, moves, shrinks, and the small/large boundary;
/// a vector grown in small steps moves only O(log n) times.
#[test]
fn realloc_keeps_contents_and_rarely_moves() {
    let _gate = gate();
    expect_ok("realloc", config(true, 32 * MIB), || {
        let mut n = 100;
        let mut p = slab::malloc(n);
        fill(p, n, 7);
        let mut moves = 0;
        let mut large_steps = 0;
        while n < 16 * MIB {
            let next = n + n / 16 + 4096;
            // SAFETY: `p` is live.
            let q = unsafe { slab::realloc(p, next) };
            if q.is_null() {
                return SETUP_FAILED;
            }
            if !holds(q, n, 7) {
                return 2;
            }
            if n > slab::MAX_SMALL {
                large_steps += 1;
                moves += usize::from(q != p);
            }
            fill(q, next, 7);
            p = q;
            n = next;
        }
        // Doubling capacity at each move: about log2(16 MiB / 128 KiB) = 7 moves in ~90 steps.
        if moves > 10 || large_steps < 50 {
            return 3;
        }
        // Shrink within large, then to small, then back up; contents kept each time.
        for next in [3 * MIB, 200_000, 1000, 600_000] {
            // SAFETY: `p` is live.
            let q = unsafe { slab::realloc(p, next) };
            if q.is_null() || !holds(q, n.min(next), 7) {
                return 4;
            }
            // SAFETY: live.
            if unsafe { slab::usable_size(q) } != next {
                return 5;
            }
            fill(q, next, 7);
            p = q;
            n = next;
        }
        // SAFETY: freed once.
        unsafe { slab::free(p) };
        0
    });
}

/// After realloc grows a block in place the guard still follows its last page, and bytes past the
/// end of a shrunk block fault.
#[test]
fn realloc_keeps_the_guard_after_the_block() {
    let _gate = gate();
    let page = page_size();
    for (from, to) in [(200_000, 300_000), (MIB, 3 * MIB), (3 * MIB, MIB)] {
        let slots = SharedSlots::new(1);
        let outcome = run_in_child(|| {
            slab::init(&config(true, 32 * MIB));
            let p = slab::malloc(from);
            // SAFETY: live.
            let q = unsafe { slab::realloc(p, to) };
            if q.is_null() {
                return SETUP_FAILED;
            }
            let end = (q as usize + to + 4).next_multiple_of(page);
            // SAFETY: the last byte of the block's pages.
            unsafe { poke(end - 1, 1) };
            slots.set(0, 1);
            // SAFETY: must fault.
            unsafe { poke(end, 1) };
            UNDETECTED
        });
        assert_eq!(slots.get(0), 1, "{from} -> {to}: block not usable");
        assert_eq!(outcome, SEGV, "{from} -> {to}: no guard after the block");
    }
}

// ---- bounds and trim ------------------------------------------------------------------------------

/// The byte cap and the count cap hold; a block above the byte cap is not cached; trim empties the
/// cache and gives its memory back.
#[test]
fn the_cache_honours_its_caps_and_trim_empties_it() {
    let _gate = gate();
    expect_ok("byte cap", config(true, 2 * MIB), || {
        let mut blocks = [core::ptr::null_mut::<u8>(); 10];
        for b in blocks.iter_mut() {
            *b = slab::malloc(300_000);
            if b.is_null() {
                return SETUP_FAILED;
            }
        }
        for b in blocks {
            // SAFETY: freed once.
            unsafe { slab::free(b) };
            let s = slab::stats();
            if s.large_cached_bytes > 2 * MIB {
                return 2;
            }
        }
        let s = slab::stats();
        // 300,000 bytes take 74 pages (296 KiB): 6 fit in 2 MiB.
        if s.large_cached != 2 * MIB / (300_032usize.next_multiple_of(page_size())) {
            return 3;
        }
        let big = slab::malloc(3 * MIB);
        // SAFETY: freed once.
        unsafe { slab::free(big) };
        if slab::stats().large_cached_bytes > 2 * MIB {
            return 4;
        }
        let mapped = twinheap_page::stats().mapped;
        if !slab::trim() {
            return 5;
        }
        let s = slab::stats();
        if s.large_cached != 0 || s.large_cached_bytes != 0 {
            return 6;
        }
        if twinheap_page::stats().mapped >= mapped {
            return 7;
        }
        0
    });
    expect_ok("count cap", config(true, 1 << 30), || {
        let mut blocks = [core::ptr::null_mut::<u8>(); 40];
        for b in blocks.iter_mut() {
            *b = slab::malloc(140_000);
            if b.is_null() {
                return SETUP_FAILED;
            }
        }
        for b in blocks {
            // SAFETY: freed once.
            unsafe { slab::free(b) };
        }
        let s = slab::stats();
        if s.large_cached != 32 {
            return 2;
        }
        slab::trim();
        if slab::stats().large_cached != 0 {
            return 3;
        }
        0
    });
    expect_ok("cache off", config(true, 0), || {
        let p = slab::malloc(MIB);
        // SAFETY: freed once.
        unsafe { slab::free(p) };
        let s = slab::stats();
        if s.large_cached != 0 || s.large_cached_bytes != 0 {
            return 2;
        }
        0
    });
}

/// Threads allocating, filling, checking and freeing large blocks of mixed sizes share the cache
/// without handing one block to two owners.
#[test]
fn threads_share_the_cache_safely() {
    let _alone = GATE.write().unwrap_or_else(|e| e.into_inner());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..300usize {
                    let n = 140_000 + ((i * 7919 + t * 104_729) % (3 * MIB));
                    let p = if i % 5 == 0 {
                        slab::calloc(1, n)
                    } else {
                        slab::malloc(n)
                    };
                    assert!(!p.is_null());
                    if i % 5 == 0 {
                        assert!(all_zero(p, n), "calloc of {n} bytes not zero");
                    }
                    let seed = (t * 31 + i) as u8;
                    fill(p, n, seed);
                    std::thread::yield_now();
                    assert!(
                        holds(p, n, seed),
                        "block of {n} bytes changed under its owner"
                    );
                    // SAFETY: freed once.
                    unsafe { slab::free_sized(p, n) };
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Children forked later must find the cache empty.
    slab::trim();
    assert_eq!(slab::stats().large_cached, 0);
}

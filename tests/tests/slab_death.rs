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
use twinheap_tests::SLAB_UNITS as UNITS;
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

// ---- slab's layout, as documented (class.rs, segment.rs) ----------------------------------------

const MIB: usize = 1 << 20;
fn stride(class: usize) -> usize {
    UNITS[class] * 16
}

/// The smallest class serving `n` bytes (`n <= MAX_SMALL`).
fn class_of(n: usize) -> usize {
    (0..48).find(|&c| stride(c) >= n).expect("a small size")
}

/// Slots per group: 32, fewer where 32 slots would not fit a 1 MiB segment.
fn count(class: usize) -> usize {
    (MIB / stride(class)).min(32)
}

/// Bytes a group spans: its slots side by side, nothing else.
fn span(class: usize) -> usize {
    count(class) * stride(class)
}

/// Where a block of `class` at `p` lies: its segment (1 MiB, aligned to 1 MiB), the index of its
/// group in the segment and the index of its slot in the group. Pure arithmetic, no memory access.
fn locate(p: usize, class: usize) -> (usize, usize, usize) {
    let base = p & !(MIB - 1);
    let off = p - base;
    let gi = off / span(class);
    (base, gi, (off - gi * span(class)) / stride(class))
}

/// The start of slot `idx` of group `gi` of the segment at `base`, for `class`.
fn slot_start(base: usize, gi: usize, idx: usize, class: usize) -> usize {
    base + gi * span(class) + idx * stride(class)
}

/// The meta record of a large block at `p` (from malloc, so 16-aligned only): the mapping starts
/// at the page holding `p - 16`, and its first word, the in-band group header large blocks still
/// have, is the address of the block's record. Returns 0 if that word does not look like one.
///
/// # Safety
/// `p` is a live large block from `slab::malloc`.
unsafe fn large_block_record(p: *mut u8) -> usize {
    let base = (p as usize - 16) & !(page_size() - 1);
    // SAFETY: per the contract the mapping starts at `base` and is readable.
    let meta = unsafe { (base as *const usize).read() };
    // A record lies past its area's 16-byte header, 8-aligned.
    if meta % 8 != 0 || meta % 4096 < 16 {
        return 0;
    }
    meta
}

/// The process secret, read from the check word at the start of the 4 KiB meta area holding the
/// record of the large block `p` (see `large_block_record`); 0 if there is no such record.
///
/// # Safety
/// As for [`large_block_record`].
unsafe fn secret_via_large_block(p: *mut u8) -> u64 {
    // SAFETY: per the contract.
    let meta = unsafe { large_block_record(p) };
    if meta == 0 {
        return 0;
    }
    // SAFETY: meta areas are slab's mapped, readable memory.
    unsafe { ((meta & !4095) as *const u64).read() }
}

/// Finds slab's out-of-band record of the segment at `base`: a page of an anonymous read-write
/// mapping (a region of records, or a mapping of the record's own) that starts with the secret (the
/// record's check word) followed by the segment's address. Scans /proc/self/maps with raw reads into stack buffers, so it allocates
/// nothing and may run in a forked child. Returns the record's address, or 0 if none matched.
fn find_segment_record(secret: u64, base: usize) -> usize {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return 0;
    }
    let mut chunk = [0u8; 4096];
    let mut line = [0u8; 512];
    let mut len = 0;
    let mut found = 0;
    'read: loop {
        // SAFETY: `chunk` is a valid destination of its length.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            break;
        }
        for &b in &chunk[..n as usize] {
            if b != b'\n' {
                if len < line.len() {
                    line[len] = b;
                    len += 1;
                }
                continue;
            }
            if let Some((start, end)) = anonymous_rw_range(&line[..len]) {
                // Records start on page boundaries; larger mappings are user memory.
                for page in (start..end.min(start + (64 << 20))).step_by(page_size()) {
                    // SAFETY: a page of a mapping listed as readable and anonymous.
                    let (w0, w1) = unsafe {
                        let w = page as *const u64;
                        (w.read(), w.add(1).read())
                    };
                    if w0 == secret && w1 == base as u64 {
                        found = page;
                        break 'read;
                    }
                }
            }
            len = 0;
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    found
}

/// The address range of a /proc/self/maps line describing an anonymous `rw-p` mapping with no
/// name (inode 0, no path), or `None`.
fn anonymous_rw_range(line: &[u8]) -> Option<(usize, usize)> {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let range = fields.next()?;
    let perms = fields.next()?;
    let (_offset, _dev, inode) = (fields.next()?, fields.next()?, fields.next()?);
    if perms != b"rw-p" || inode != b"0" || fields.next().is_some() {
        return None;
    }
    let hex = |digits: &[u8]| {
        digits.iter().try_fold(0usize, |acc, &b| {
            Some(acc * 16 + (b as char).to_digit(16)? as usize)
        })
    };
    let mut ends = range.split(|&b| b == b'-');
    Some((hex(ends.next()?)?, hex(ends.next()?)?))
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
    // Sizes filling a slot exactly and one byte short of it, across the class range: the slot's
    // record must say "freed" whatever the slot geometry.
    for n in [1usize, 2, 8, 9, 31, 127, 511, 2047, 8191]
        .into_iter()
        .flat_map(|units| [units * 16, units * 16 - 1])
    {
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
fn interior_pointer_of_an_exact_fit_block_is_an_invalid_free() {
    // A 48-byte block fills its 48-byte slot; every 16-aligned address after its start, inside the
    // slot, names no block.
    for delta in [16, 32] {
        expect_fault("invalid free", |s| {
            let p = malloc(48);
            if p.is_null() {
                return SETUP_FAILED;
            }
            // SAFETY: inside the block's slot.
            let q = unsafe { p.add(delta) };
            expect_at(s, q);
            // SAFETY: the fault under test.
            unsafe { slab::free(q) };
            UNDETECTED
        });
    }
}

#[test]
fn pointer_into_a_never_used_slot_of_a_live_group_is_an_invalid_free() {
    // One block lives in a group of a fresh process; the group's other slots never held a block
    // (some may sit in the owner's batch). A pointer to the start of any of them, or into its
    // middle, must be refused: the slot's record says it was never used.
    for n in [100usize, 5000, 100_000] {
        for (pick, inside) in [(1usize, 0usize), (2, 16)] {
            expect_fault("invalid free", |s| {
                let p = malloc(n);
                if p.is_null() {
                    return SETUP_FAILED;
                }
                let class = class_of(n);
                let (base, gi, idx) = locate(p as usize, class);
                let other = (idx + pick) % count(class);
                let q = (slot_start(base, gi, other, class) + inside) as *mut u8;
                expect_at(s, q);
                // SAFETY: the fault under test; q lies in the live group's memory.
                unsafe { slab::free(q) };
                UNDETECTED
            });
        }
    }
}

#[test]
fn pointer_into_a_never_used_group_of_a_live_segment_is_an_invalid_free() {
    // The first block of a class in a fresh process lives in the first group of the class's first
    // segment; the segment's last group, and the tail after the last group where the segment's
    // length is not a multiple of the group span, were never handed out.
    for n in [100usize, 5000] {
        let class = class_of(n);
        let groups = MIB / span(class);
        let mut targets = vec![(groups - 1) * span(class) + stride(class)];
        if groups * span(class) < MIB {
            targets.push(groups * span(class));
        }
        for at in targets {
            expect_fault("invalid free", |s| {
                let p = malloc(n);
                if p.is_null() {
                    return SETUP_FAILED;
                }
                let (base, gi, _) = locate(p as usize, class);
                if gi != 0 {
                    return SETUP_FAILED;
                }
                let q = (base + at) as *mut u8;
                expect_at(s, q);
                // SAFETY: the fault under test; q lies in the live segment.
                unsafe { slab::free(q) };
                UNDETECTED
            });
        }
    }
}

/// Fills groups of `n`-byte blocks until one group (the first block's) is full and another block
/// lives in another group of the same segment; frees every block of the first group, has trim
/// release that group (its entry in the segment record becomes a link), then frees one of its
/// stale pointers again. The segment stays mapped (a live block holds it). Returns the child's exit
/// code if that free returns.
fn free_into_released_group(s: &SharedSlots, n: usize) -> i32 {
    let class = class_of(n);
    let per = count(class);
    let mut blocks = [std::ptr::null_mut::<u8>(); 256];
    let take = (4 * per).min(blocks.len());
    for b in blocks[..take].iter_mut() {
        *b = malloc(n);
        if b.is_null() {
            return SETUP_FAILED;
        }
    }
    let (base, gi, _) = locate(blocks[0] as usize, class);
    let in_group = |p: *mut u8| {
        let (b, g, _) = locate(p as usize, class);
        b == base && g == gi
    };
    let members = blocks[..take].iter().filter(|&&p| in_group(p)).count();
    let neighbour = blocks[..take]
        .iter()
        .any(|&p| !in_group(p) && locate(p as usize, class).0 == base);
    if members != per || !neighbour {
        return SETUP_FAILED;
    }
    for &p in &blocks[..take] {
        if in_group(p) {
            // SAFETY: live blocks, each freed once.
            unsafe { slab::free(p) };
        }
    }
    let groups = slab::stats().classes[class].groups;
    // Whichever way the stale free is reported, it must go through the released entry: the group
    // is gone from its heap (its record recycled) while its segment stays mapped.
    if !slab::trim()
        || slab::stats().classes[class].groups != groups - 1
        || !twinheap_tests::is_mapped(blocks[0] as usize)
    {
        return SETUP_FAILED;
    }
    expect_at(s, blocks[0]);
    // SAFETY: the fault under test: blocks[0] was freed and its group released.
    unsafe { slab::free(blocks[0]) };
    UNDETECTED
}

#[test]
fn free_into_a_released_group_is_a_double_free() {
    for n in [100usize, 5000] {
        expect_fault("double free", |s| free_into_released_group(s, n));
    }
}

/// A fresh child's first small block (`n` bytes) and a large block: the segment record of the
/// small block's segment, the record of the large block and the secret. Slot 0 of `s` gets `p`.
struct Records {
    p: *mut u8,
    large: *mut u8,
    secret: u64,
    /// The segment record, and its entry for `p`'s group (the first group, so its first nonzero
    /// entry).
    seg: *mut u64,
    entry: *mut usize,
}

/// Sets up [`Records`]; `None` if anything could not be found.
fn records(s: &SharedSlots, n: usize) -> Option<Records> {
    let p = malloc(n);
    let large = malloc(200_000);
    if p.is_null() || large.is_null() {
        return None;
    }
    expect_at(s, p);
    // SAFETY: a live large block from malloc.
    let secret = unsafe { secret_via_large_block(large) };
    let (base, gi, _) = locate(p as usize, class_of(n));
    if secret == 0 || gi != 0 {
        return None;
    }
    let seg = find_segment_record(secret, base) as *mut u64;
    if seg.is_null() {
        return None;
    }
    // The group entries follow the record's fields (a few cache lines at most); the only group in
    // use is the first, whose entry is a meta pointer in the meta area of the large block's record
    // (the pool carves records in order, and both were made by this fresh process).
    // SAFETY: a live large block.
    let area = unsafe { large_block_record(large) } & !4095;
    let entry = (2..64)
        .map(|k| seg.wrapping_add(k) as *mut usize)
        // SAFETY: the record's mapping spans at least one page (64 words).
        .find(|&e| unsafe { e.read() } & !4095 == area)?;
    Some(Records {
        p,
        large,
        secret,
        seg,
        entry,
    })
}

#[test]
fn corrupted_segment_record_check_word_is_reported() {
    // The segment record is not reachable from the API: it is found by its contents (the secret,
    // read from a meta area, then the segment's address) among the process's anonymous mappings.
    expect_fault("corrupted metadata", |s| {
        let Some(r) = records(s, 100) else {
            return SETUP_FAILED;
        };
        // SAFETY: slab's record, read-write memory; then the fault under test.
        unsafe {
            r.seg.write(r.secret ^ 0x0100);
            slab::free(r.p);
        }
        std::hint::black_box(r.large);
        UNDETECTED
    });
}

#[test]
fn forged_segment_entries_are_reported_as_corrupted_metadata() {
    // The entry of a live group names its meta record. Pointed at a fake record on the stack, at a
    // real record of another block (the large one's), or off a record boundary, the free must
    // refuse it: the segment record itself was overwritten, so it is corrupted metadata.
    type Forge = fn(usize, usize, usize) -> usize;
    let cases: [(&str, Forge); 4] = [
        ("a fake record on the stack", |_, _, fake| fake),
        ("the large block's record", |_, large, _| large),
        ("8 bytes into the real record", |real, _, _| real + 8),
        ("the meta area's check word", |real, _, _| real & !4095),
    ];
    for (what, forge) in cases {
        let slots = SharedSlots::new(1);
        let (outcome, stderr) = run_in_child_capturing_stderr(|| {
            let Some(r) = records(&slots, 100) else {
                return SETUP_FAILED;
            };
            let fake = [0u64; 64];
            // SAFETY: slab's record, read-write memory; then the fault under test.
            unsafe {
                let real = r.entry.read();
                let large = large_block_record(r.large);
                r.entry
                    .write(forge(real, large, fake.as_ptr().add(8) as usize));
                slab::free(r.p);
            }
            std::hint::black_box(&fake);
            UNDETECTED
        });
        let text = String::from_utf8_lossy(&stderr);
        assert_eq!(outcome, ABORTED, "{what}: {text:?}");
        assert_eq!(
            text,
            format!(
                "twinheap(slab): corrupted metadata at {:#x}\n",
                slots.get(0)
            ),
            "{what}"
        );
    }
}

#[test]
fn corrupted_meta_area_is_reported() {
    // Each 4 KiB meta area starts with a check word equal to the process secret. The area holding
    // a small group's record is found through a large block whose record the pool carved next to
    // it (large blocks keep an in-band header naming their record). Overwriting the check word, as
    // a stray write into metadata would, must be reported on the next free of either block.
    for free_large in [false, true] {
        expect_fault("corrupted metadata", |s| {
            let Some(r) = records(s, 100) else {
                return SETUP_FAILED;
            };
            // SAFETY: both records are in one area (`records` checked the small group's entry);
            // the area is slab's read-write memory. Then the fault under test.
            unsafe {
                let area = (large_block_record(r.large) & !4095) as *mut u64;
                area.write(area.read() ^ 0x5a5a_5a5a_0000_0001);
                if free_large {
                    expect_at(s, r.large);
                    slab::free(r.large);
                } else {
                    slab::free(r.p);
                }
            }
            UNDETECTED
        });
    }
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
        // SAFETY: the byte after a 20-byte block is the canary in its 32-byte slot. Then the fault.
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
        // SAFETY: bytes 20..28 are the slot's slack (the slot has 32 bytes). The first differs from
        // the canary whatever its value. Then the fault.
        unsafe {
            let q = p.add(20);
            let first = other_nonzero(q.read());
            q.write_bytes(0x41, 8);
            q.write(first);
            slab::free(p);
        }
        UNDETECTED
    });
}

/// Allocates `n`-byte blocks (filling their slots exactly) until one is not in its group's last
/// slot and the slot after it holds no live block of ours (in a fresh child: never used); writes
/// `len` non-zero bytes past it, into that free neighbour, and frees it on the owning thread.
fn exact_fit_overflow(s: &SharedSlots, n: usize, len: usize) -> i32 {
    let class = class_of(n);
    let mut live = [0usize; 40];
    for k in 0..live.len() {
        let p = malloc(n);
        if p.is_null() {
            return SETUP_FAILED;
        }
        live[k] = p as usize;
        let (_, _, idx) = locate(p as usize, class);
        let next = p as usize + n;
        if idx + 1 < count(class) && !live[..k].contains(&next) {
            expect_at(s, p);
            // SAFETY: [p + n, p + n + len) lies in the next slot of the same group. Then the fault.
            unsafe {
                p.add(n).write_bytes(0x41, len);
                slab::free(p);
            }
            return UNDETECTED;
        }
    }
    SETUP_FAILED
}

#[test]
fn exact_fit_overflow_into_a_free_neighbour() {
    // A 48-byte block fills its slot: no canary. Its owner's free checks the next slot's first
    // bytes, which must read zero while no block lives there. (An overflow into a live neighbour is
    // not detected at free; the neighbour's own checks are all that can see it.)
    for len in [1, 8] {
        expect_fault("heap overflow", |s| exact_fit_overflow(s, 48, len));
    }
}

#[test]
fn exact_fit_overflow_in_every_class() {
    for units in UNITS {
        let n = units * 16;
        let slots = SharedSlots::new(1);
        let (outcome, stderr) = run_in_child_capturing_stderr(|| exact_fit_overflow(&slots, n, 1));
        let want = format!("twinheap(slab): heap overflow at {:#x}\n", slots.get(0));
        assert_eq!(
            (outcome, String::from_utf8_lossy(&stderr).into_owned()),
            (ABORTED, want),
            "size {n}"
        );
    }
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
            // SAFETY: one byte past a 100-byte block, inside its 112-byte slot. Then the fault.
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
fn canary_overflow_in_every_class() {
    // Per class, blocks with slack carry a canary right after them: one byte short of the slot
    // (the canary is the slot's last byte), one unit short, and the class's smallest size (lots of
    // slack, a random offset in the slot). Overflows of one and of eight bytes must be caught.
    let mut cases = Vec::new();
    let mut prev = 0usize;
    for units in UNITS {
        let stride = units * 16;
        let smallest = if prev == 0 { 0 } else { prev + 1 };
        for n in [stride - 1, stride - 16, smallest] {
            if n < stride && !cases.contains(&(n, 1)) {
                cases.extend([(n, 1), (n, 8)]);
            }
        }
        prev = stride;
    }
    // Large blocks: random slack, and an exact fit of a page-multiple mapping.
    let page = page_size();
    for n in [slab::MAX_SMALL + 1, 1 << 20, (1 << 20) - 20, 4 * page - 20] {
        cases.push((n, 1));
    }
    for (n, len) in cases {
        let slots = SharedSlots::new(1);
        let (outcome, stderr) = run_in_child_capturing_stderr(|| {
            let p = malloc(n);
            if p.is_null() {
                return SETUP_FAILED;
            }
            slots.set(0, p as i64);
            // SAFETY: the bytes after the block: its canary and slack, and for an eight-byte
            // overflow of a block one byte short of its slot, the start of the next slot, all in
            // slab's memory. The first byte differs from the canary whatever its value.
            unsafe {
                let q = p.add(n);
                let first = other_nonzero(q.read());
                q.add(1).write_bytes(0x41, len - 1);
                q.write(first);
                slab::free_sized(p, n);
            }
            UNDETECTED
        });
        let want = format!("twinheap(slab): heap overflow at {:#x}\n", slots.get(0));
        assert_eq!(
            (outcome, String::from_utf8_lossy(&stderr).into_owned()),
            (ABORTED, want),
            "size {n}, {len} bytes"
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
        for n in [
            0,
            1,
            20,
            48,
            60,
            100,
            5000,
            131_055,
            131_056,
            131_057,
            1 << 20,
        ] {
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

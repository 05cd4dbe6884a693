//! Integration tests of the page backend's memory: aligned and guarded mappings, remap (in place, moved,
//! grown, shrunk), release, guard pages, reservations, RLIMIT_AS and huge pages.
//!
//! What the backend claims is checked against what the kernel says: /proc/self/maps for permissions,
//! /proc/self/smaps for VmFlags, mincore(2) for residency and for whether an address is mapped at all.
//! Faults are observed in forked children (helpers in `twinheap_tests`). Scenarios whose outcome
//! depends on the layout of the address space (does a remap grow in place or move?) run entirely in a
//! child, where no other thread maps or unmaps behind the test's back, and report through
//! `SharedSlots`; child bodies never allocate or panic (see the `twinheap_tests` docs).
//!
//! The process-wide counters are tested alone in `page_stats.rs`; nothing here asserts on them.

use twinheap_page::error::{errno, set_errno};
use twinheap_page::huge::{self, ThpMode};
use twinheap_page::{
    map, page_size, release, reserve, sys, Contents, Error, Huge, MapOptions, Mapping, Op, Release,
    Reservation,
};
use twinheap_tests::{
    check_pattern, fill_pattern, first_nonzero, is_mapped, poke, run_in_child, touch,
    touch_in_child, write_in_child, ChildOutcome, SharedSlots,
};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

const SEGV: ChildOutcome = ChildOutcome::Signaled(libc::SIGSEGV);
const CLEAN: ChildOutcome = ChildOutcome::Exited(0);

const GUARDS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn page() -> usize {
    page_size()
}

fn round_up(n: usize, granule: usize) -> usize {
    n.div_ceil(granule) * granule
}

/// The options a mapping built with these requests must report: alignment below a page means a page.
fn expected_options(align: usize, before: bool, after: bool, huge: Huge) -> MapOptions {
    MapOptions::new()
        .align(align.max(page()))
        .guards(before, after)
        .huge(huge)
}

/// Encodes a backend error as one integer for a child to report: `op * 1000 + errno`.
fn err_code(e: Error) -> i64 {
    let op = match e.op {
        Op::Map => 1,
        Op::Unmap => 2,
        Op::Remap => 3,
        Op::Protect => 4,
        Op::Advise => 5,
        Op::Reserve => 6,
        Op::Commit => 7,
        Op::Decommit => 8,
    };
    op * 1000 + i64::from(e.errno)
}

/// Asserts that `r` failed with exactly `op` and `errno`.
#[track_caller]
fn assert_err<T: std::fmt::Debug>(r: Result<T, Error>, op: Op, errno: i32, what: &str) {
    match r {
        Err(e) => assert_eq!(e, Error::new(op, errno), "{what}: wrong error"),
        Ok(v) => panic!("{what}: succeeded with {v:?}, expected {op:?} errno {errno}"),
    }
}

/// Parses `start-end` (hex) at the beginning of a /proc/self/maps or smaps line.
fn parse_range(line: &[u8]) -> Option<(usize, usize)> {
    let hex = |digits: &[u8]| -> Option<usize> {
        if digits.is_empty() {
            return None;
        }
        digits.iter().try_fold(0usize, |acc, &d| {
            let v = (d as char).to_digit(16)? as usize;
            acc.checked_mul(16)?.checked_add(v)
        })
    };
    let range = line.split(|&b| b == b' ').next()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    Some((hex(&range[..dash])?, hex(&range[dash + 1..])?))
}

/// Permissions of the VMA holding `addr` in /proc/self/maps ("rw-p", "---p"), `None` if unmapped.
fn perms_at(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines().find_map(|line| {
        let (s, e) = parse_range(line.as_bytes())?;
        let perms = line.split_whitespace().nth(1)?;
        (s..e).contains(&addr).then(|| perms.to_string())
    })
}

/// Whether the VMA holding `addr` lists `flag` (e.g. `hg`, MADV_HUGEPAGE) in its smaps VmFlags:
/// 1 yes, 0 no, negative if the VMA or the file could not be read. Allocates nothing (the file is
/// read into a backend mapping), so it also works in a forked child.
fn vm_flag(addr: usize, flag: &[u8]) -> i64 {
    let Ok(buf) = map(32 * MIB, &MapOptions::new()) else {
        return -2;
    };
    // SAFETY: a fresh mapping of `buf.len()` bytes, used only here and unmapped below.
    let bytes = unsafe { std::slice::from_raw_parts_mut(buf.ptr().as_ptr(), buf.len()) };
    let mut answer = -1;
    if let Some(n) = sys::read_file(c"/proc/self/smaps", bytes) {
        let mut inside = false;
        for line in bytes[..n].split(|&b| b == b'\n') {
            if let Some((s, e)) = parse_range(line) {
                inside = (s..e).contains(&addr);
            } else if let (true, Some(flags)) = (inside, line.strip_prefix(b"VmFlags:")) {
                answer = i64::from(flags.split(|&b| b == b' ').any(|w| w == flag));
                break;
            }
        }
    } else {
        answer = -3;
    }
    // SAFETY: `bytes` is not used any more.
    let _ = unsafe { buf.unmap() };
    answer
}

/// Counts the mapped pages in `[start, start + len)`, skipping `[skip_start, skip_end)`. Child-safe.
fn mapped_pages(start: usize, len: usize, skip: (usize, usize)) -> i64 {
    (start..start + len)
        .step_by(page())
        .filter(|a| !(skip.0..skip.1).contains(a) && is_mapped(*a))
        .count() as i64
}

/// Number of resident pages in `[ptr, ptr + len)`, by mincore.
fn resident_pages(ptr: *mut u8, len: usize) -> usize {
    let mut vec = vec![0u8; len.div_ceil(page())];
    // SAFETY: the range is mapped by the caller; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(ptr.cast(), len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// Checks the shape of a fresh mapping against what was asked for, and the kernel's view of it.
#[track_caller]
fn check_shape(m: &Mapping, req: usize, align: usize, before: bool, after: bool, what: &str) {
    let page = page();
    let ptr = m.ptr().as_ptr() as usize;
    assert_eq!(ptr % align.max(page), 0, "{what}: {ptr:#x} misaligned");
    assert_eq!(m.len(), round_up(req, page), "{what}: len");
    assert_eq!(m.granule(), page, "{what}: granule");
    assert!(!m.is_hugetlb(), "{what}: hugetlb");
    let (gb, ga) = (usize::from(before) * page, usize::from(after) * page);
    assert_eq!(m.extent(), (ptr - gb, gb + m.len() + ga), "{what}: extent");
    assert_eq!(perms_at(ptr).as_deref(), Some("rw-p"), "{what}: first page");
    assert_eq!(
        perms_at(ptr + m.len() - 1).as_deref(),
        Some("rw-p"),
        "{what}: last page"
    );
    if before {
        assert_eq!(
            perms_at(ptr - 1).as_deref(),
            Some("---p"),
            "{what}: guard before"
        );
    }
    if after {
        assert_eq!(
            perms_at(ptr + m.len()).as_deref(),
            Some("---p"),
            "{what}: guard after"
        );
    }
}

/// Asserts the whole mapping reads zero, then that it is writable: the first and last byte and one
/// byte per page (per 64 pages for big mappings) are written and read back.
///
/// # Safety
/// `m` must be live and its contents unneeded.
#[track_caller]
unsafe fn assert_zero_and_writable(m: &Mapping, what: &str) {
    let (p, len) = (m.ptr().as_ptr(), m.len());
    // SAFETY: the mapping is live (caller).
    unsafe {
        assert_eq!(first_nonzero(p, len), None, "{what}: fresh memory not zero");
        let stride = if len / page() <= 256 {
            page()
        } else {
            64 * page()
        };
        let offsets = (0..len).step_by(stride).chain([len - 1]);
        for (i, off) in offsets.clone().enumerate() {
            p.add(off).write_volatile(i as u8 | 1);
        }
        for (i, off) in offsets.enumerate() {
            assert_eq!(
                p.add(off).read_volatile(),
                i as u8 | 1,
                "{what}: offset {off}"
            );
        }
    }
}

/// In children: the bytes just outside `m` fault where guards were asked for, the first and last
/// usable bytes do not.
#[track_caller]
fn assert_guards_fault(m: &Mapping, before: bool, after: bool, what: &str) {
    let (ptr, len, page) = (m.ptr().as_ptr() as usize, m.len(), page());
    assert_eq!(touch_in_child(ptr), CLEAN, "{what}: first usable byte");
    let last = write_in_child(ptr + len - 1, 0x5a);
    assert_eq!(last, CLEAN, "{what}: last usable byte");
    if before {
        assert_eq!(touch_in_child(ptr - 1), SEGV, "{what}: byte before");
        assert_eq!(touch_in_child(ptr - page), SEGV, "{what}: guard start");
    }
    if after {
        assert_eq!(touch_in_child(ptr + len), SEGV, "{what}: byte at end");
        let last = touch_in_child(ptr + len + page - 1);
        assert_eq!(last, SEGV, "{what}: guard end");
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. Alignment and bad input
// ---------------------------------------------------------------------------------------------------

/// Every power-of-two alignment from 1 byte to 1 GiB, each guard combination, two lengths: aligned
/// pointer, page-rounded length, options recorded, guards PROT_NONE, memory zero and writable.
#[test]
fn map_aligns_to_every_power_of_two_with_any_guards() {
    let page = page();
    for shift in 0..=30 {
        let align = 1usize << shift;
        for (before, after) in GUARDS {
            for req in [1, 3 * page + 1] {
                let what = format!("align {align:#x}, guards {before}/{after}, len {req}");
                let opts = MapOptions::new().align(align).guards(before, after);
                let m = map(req, &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
                check_shape(&m, req, align, before, after, &what);
                assert_eq!(
                    m.options(),
                    expected_options(align, before, after, Huge::None),
                    "{what}"
                );
                // SAFETY: fresh mapping, unmapped right after.
                unsafe {
                    assert_zero_and_writable(&m, &what);
                    m.unmap().unwrap_or_else(|e| panic!("{what}: unmap: {e}"));
                }
            }
        }
    }
}

/// Guarded and aligned mappings in the fault tests proper: touching a guard kills with SIGSEGV.
#[test]
fn guard_pages_fault_and_usable_bytes_do_not() {
    for align in [1, 64 * KIB, 2 * MIB] {
        for (before, after) in GUARDS {
            let what = format!("align {align:#x}, guards {before}/{after}");
            let m = map(
                5 * page(),
                &MapOptions::new().align(align).guards(before, after),
            )
            .unwrap();
            assert_guards_fault(&m, before, after, &what);
            // SAFETY: live mapping, not used afterwards.
            unsafe { m.unmap() }.unwrap();
        }
    }
}

/// In a child, so nothing else can map into the freed range: unmap returns the whole extent,
/// guard pages included, and nothing of it stays mapped.
#[test]
fn unmap_returns_the_whole_extent() {
    let slots = SharedSlots::new(16);
    let cases = [
        (1, false, false),
        (1, true, true),
        (64 * KIB, true, false),
        (2 * MIB, false, true),
    ];
    let outcome = run_in_child(|| {
        for (i, &(align, before, after)) in cases.iter().enumerate() {
            let opts = MapOptions::new().align(align).guards(before, after);
            let Ok(m) = map(3 * page(), &opts) else {
                return 10 + i as i32;
            };
            let (start, len) = m.extent();
            slots.set(2 * i, mapped_pages(start, len, (0, 0)));
            // SAFETY: live mapping, not used afterwards.
            if unsafe { m.unmap() }.is_err() {
                return 20 + i as i32;
            }
            slots.set(2 * i + 1, mapped_pages(start, len, (0, 0)));
        }
        0
    });
    assert_eq!(outcome, CLEAN);
    for (i, (align, before, after)) in cases.into_iter().enumerate() {
        let pages = 3 + i64::from(before) + i64::from(after);
        let what = format!("align {align:#x}, guards {before}/{after}");
        assert_eq!(slots.get(2 * i), pages, "{what}: pages mapped before unmap");
        assert_eq!(
            slots.get(2 * i + 1),
            0,
            "{what}: pages still mapped after unmap"
        );
    }
}

/// Aligned, unguarded mappings first try the space right below the previous one, with one mmap that
/// cannot replace anything (see `map.rs`). In a child, where nothing else maps meanwhile: the next
/// 1 MiB-aligned mapping lands right below the last when that space is free; with a page of ours in
/// the way, it goes elsewhere, aligned, without touching that page and without changing errno.
#[test]
fn aligned_mappings_go_below_the_last_one_and_replace_nothing() {
    let slots = SharedSlots::new(8);
    let outcome = run_in_child(|| {
        let page = page();
        let opts = MapOptions::new().align(MIB);
        let Ok(a) = map(MIB, &opts) else { return 10 };
        let below = a.ptr().as_ptr() as usize - MIB;
        let free_below = !(0..MIB).step_by(page).any(|o| is_mapped(below + o));
        let Ok(b) = map(MIB, &opts) else { return 11 };
        let b0 = b.ptr().as_ptr() as usize;
        slots.set(0, i64::from(free_below));
        slots.set(1, i64::from(b0 == below));
        // A page inside the range the next mapping would try first.
        let blocker = b0 - MIB + 5 * page;
        // SAFETY: NOREPLACE maps only where nothing is mapped.
        let got = unsafe {
            libc::mmap(
                blocker as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | sys::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if got as usize != blocker {
            // Something else is there already: nothing of ours to check.
            return 0;
        }
        slots.set(2, 1);
        // SAFETY: the page was just mapped read-write.
        unsafe { std::ptr::write_bytes(blocker as *mut u8, 0xab, page) };
        set_errno(4321);
        let Ok(c) = map(MIB, &opts) else { return 12 };
        let c0 = c.ptr().as_ptr() as usize;
        slots.set(3, i64::from(errno()));
        slots.set(4, i64::from(c0 < blocker + page && blocker < c0 + MIB));
        slots.set(5, i64::from(c0.is_multiple_of(MIB)));
        // SAFETY: the blocker page is ours and mapped.
        let intact = (0..page).all(|i| unsafe { *(blocker as *const u8).add(i) } == 0xab);
        slots.set(6, i64::from(intact));
        // SAFETY: `c` is a fresh mapping of MIB bytes.
        slots.set(
            7,
            i64::from(unsafe { first_nonzero(c.ptr().as_ptr(), MIB) }.is_none()),
        );
        0
    });
    assert_eq!(outcome, CLEAN);
    if slots.get(0) == 1 {
        assert_eq!(
            slots.get(1),
            1,
            "free space right below the last mapping was not used"
        );
    }
    if slots.get(2) == 1 {
        assert_eq!(slots.get(3), 4321, "errno changed by a successful map");
        assert_eq!(
            slots.get(4),
            0,
            "the new mapping overlaps memory that was in the way"
        );
        assert_eq!(slots.get(5), 1, "the new mapping is not aligned");
        assert_eq!(slots.get(6), 1, "memory in the way was overwritten");
        assert_eq!(slots.get(7), 1, "the new mapping does not read zero");
    }
}

#[test]
fn map_rejects_bad_input() {
    let page = page();
    assert_err(map(0, &MapOptions::new()), Op::Map, libc::EINVAL, "len 0");
    assert_err(
        map(0, &MapOptions::new().align(2 * MIB).guards(true, true)),
        Op::Map,
        libc::EINVAL,
        "len 0, aligned and guarded",
    );
    for align in [0, 3, 3 << 12, (1 << 21) + (1 << 12), usize::MAX] {
        let r = map(page, &MapOptions::new().align(align));
        assert_err(r, Op::Map, libc::EINVAL, &format!("align {align:#x}"));
    }
    for (before, after) in GUARDS {
        let what = format!("usize::MAX, guards {before}/{after}");
        let opts = MapOptions::new().guards(before, after);
        assert_err(map(usize::MAX, &opts), Op::Map, libc::ENOMEM, &what);
        let aligned = opts.align(2 * MIB);
        assert_err(map(usize::MAX, &aligned), Op::Map, libc::ENOMEM, &what);
        // Rounds to a whole number of pages, but the guards push the extent past the address space.
        let near = usize::MAX - 2 * page;
        assert_err(
            map(near, &opts),
            Op::Map,
            libc::ENOMEM,
            &format!("{what}, near max"),
        );
    }
    // An alignment as large as the address space cannot be honoured.
    assert_err(
        map(page, &MapOptions::new().align(1 << 63)),
        Op::Map,
        libc::ENOMEM,
        "align 2^63",
    );
    let huge = MapOptions::new().huge(Huge::Transparent);
    assert_err(
        map(usize::MAX, &huge),
        Op::Map,
        libc::ENOMEM,
        "usize::MAX, THP",
    );
    let tlb = MapOptions::new().huge(Huge::HugeTlb(0));
    assert_err(
        map(usize::MAX, &tlb),
        Op::Map,
        libc::ENOMEM,
        "usize::MAX, hugetlb",
    );
}

// ---------------------------------------------------------------------------------------------------
// 2. Remap
// ---------------------------------------------------------------------------------------------------

/// A kind of mapping that remap must preserve.
#[derive(Clone, Copy)]
struct Kind {
    name: &'static str,
    align: usize,
    before: bool,
    after: bool,
    huge: Huge,
}

impl Kind {
    const fn new(name: &'static str, align: usize, before: bool, after: bool, huge: Huge) -> Self {
        Kind {
            name,
            align,
            before,
            after,
            huge,
        }
    }

    fn opts(&self) -> MapOptions {
        MapOptions::new()
            .align(self.align)
            .guards(self.before, self.after)
            .huge(self.huge)
    }

    /// What `Mapping::options` must report for this kind.
    fn expected(&self) -> MapOptions {
        expected_options(self.align, self.before, self.after, self.huge)
    }

    fn thp(&self) -> bool {
        self.huge == Huge::Transparent
    }
}

const KINDS: [Kind; 8] = [
    Kind::new("plain", 1, false, false, Huge::None),
    Kind::new("aligned 2 MiB", 2 * MIB, false, false, Huge::None),
    Kind::new("guard before", 1, true, false, Huge::None),
    Kind::new("guard after", 1, false, true, Huge::None),
    Kind::new("guards both", 1, true, true, Huge::None),
    Kind::new(
        "aligned 64 KiB, guards both",
        64 * KIB,
        true,
        true,
        Huge::None,
    ),
    Kind::new("transparent", 1, false, false, Huge::Transparent),
    Kind::new(
        "transparent, aligned 2 MiB",
        2 * MIB,
        false,
        false,
        Huge::Transparent,
    ),
];

/// Grow, shrink and grow again, by small and large steps, for every kind. After each step: the common
/// prefix holds the pattern, grown bytes read zero, alignment, options and guards are kept.
#[test]
fn remap_keeps_contents_alignment_and_guards() {
    let page = page();
    let steps = [
        3 * page,
        64 * MIB,
        MIB + 1,
        5 * page,
        8 * MIB,
        2 * page,
        page,
        16 * MIB + 7,
    ];
    for (seed, kind) in KINDS.iter().enumerate() {
        let seed = seed as u64 + 1;
        let name = kind.name;
        let mut m = map(page, &kind.opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // SAFETY: fresh mapping of one page.
        unsafe { fill_pattern(m.ptr().as_ptr(), m.len(), seed) };
        for new_len in steps {
            let what = format!("{name}: {} -> {new_len}", m.len());
            let old_len = m.len();
            // SAFETY: `m` is live; only the result is used afterwards.
            m = unsafe { m.remap(new_len) }.unwrap_or_else(|e| panic!("{what}: {e}"));
            check_shape(&m, new_len, kind.align, kind.before, kind.after, &what);
            assert_eq!(m.options(), kind.expected(), "{what}");
            let p = m.ptr().as_ptr();
            let kept = old_len.min(m.len());
            // SAFETY: `m` is live and `m.len()` long.
            unsafe {
                assert_eq!(check_pattern(p, kept, seed), None, "{what}: contents lost");
                if m.len() > old_len {
                    let fresh = first_nonzero(p.add(old_len), m.len() - old_len);
                    assert_eq!(fresh, None, "{what}: grown bytes not zero");
                    // The pattern depends on the offset from `p`: refill all of it.
                    fill_pattern(p, m.len(), seed);
                }
            }
            assert_guards_fault(&m, kind.before, kind.after, &what);
        }
        // SAFETY: live mapping, not used afterwards.
        unsafe { m.unmap() }.unwrap_or_else(|e| panic!("{name}: unmap: {e}"));
    }
}

/// Slots filled by [`remap_scenario`] in a child.
mod slot {
    pub const OLD_PTR: usize = 0;
    pub const NEW_PTR: usize = 1;
    pub const BLOCKER: usize = 2;
    pub const REMAP_ERR: usize = 3;
    pub const LEN: usize = 4;
    pub const PATTERN: usize = 5;
    pub const ZERO: usize = 6;
    pub const OPTIONS: usize = 7;
    pub const ALIGNED: usize = 8;
    pub const MARKER: usize = 9;
    pub const OLD_LEFT: usize = 10;
    pub const EDGE: usize = 11;
    pub const BEFORE: usize = 12;
    pub const AFTER: usize = 13;
    pub const SHRUNK_LEFT: usize = 14;
    pub const SHRUNK_AFTER: usize = 15;
    pub const STEP: usize = 16;
    pub const THP: usize = 17;
    pub const COUNT: usize = 18;
}

const MARKER: u8 = 0xAB;

/// A remap scenario run in a single-threaded child, so the address space layout is under control:
/// - `blocked`: map 4 pages, occupy the page right after the extent (with our own marked page, or it
///   is already someone's), grow to `grow_to`: in-place growth is impossible, so the mapping moves;
/// - not blocked: map 16 pages, shrink to 4 (the tail is freed and nothing else maps in the child),
///   grow to `grow_to` (at most 16 pages): the freed space is there, so it grows in place.
///
/// Reports through `s` (see [`slot`]); returns 0 when it ran to the end.
fn remap_scenario(kind: Kind, blocked: bool, grow_to: usize, s: &SharedSlots) -> i32 {
    let page = page();
    let seed = 77;
    s.set(slot::STEP, 1);
    let Ok(mut m) = map(if blocked { 4 * page } else { 16 * page }, &kind.opts()) else {
        return 1;
    };
    // SAFETY: fresh mapping.
    unsafe { fill_pattern(m.ptr().as_ptr(), m.len(), seed) };
    if !blocked {
        s.set(slot::STEP, 2);
        let (old_start, old_ext) = m.extent();
        // SAFETY: `m` is live.
        m = match unsafe { m.remap(4 * page) } {
            Ok(m) => m,
            Err(e) => {
                s.set(slot::REMAP_ERR, err_code(e));
                return 2;
            }
        };
        let (start, ext) = m.extent();
        s.set(
            slot::SHRUNK_LEFT,
            mapped_pages(old_start, old_ext, (start, start + ext)),
        );
        let end = m.ptr().as_ptr() as usize + m.len();
        // The byte after the new end: the new guard (or unmapped space) must fault.
        s.set(slot::SHRUNK_AFTER, touch_in_child(end).to_code());
    }
    let (old_start, old_ext) = m.extent();
    let old_ptr = m.ptr().as_ptr() as usize;
    let old_len = m.len();
    s.set(slot::OLD_PTR, old_ptr as i64);
    let mut ours = 0;
    if blocked {
        s.set(slot::STEP, 3);
        let at = old_start + old_ext;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | sys::MAP_FIXED_NOREPLACE;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: NOREPLACE never replaces a mapping; on success the page is ours.
        let got = unsafe { libc::mmap(at as *mut libc::c_void, page, prot, flags, -1, 0) };
        if got as usize == at {
            // SAFETY: our fresh page.
            unsafe { poke(at, MARKER) };
            ours = at;
            s.set(slot::BLOCKER, 0);
        } else {
            // Taken already (EEXIST): still blocked, by a mapping that nothing here will remove.
            s.set(slot::BLOCKER, i64::from(errno()));
        }
    }
    s.set(slot::STEP, 4);
    // SAFETY: `m` is live.
    let g = match unsafe { m.remap(grow_to) } {
        Ok(g) => g,
        Err(e) => {
            s.set(slot::REMAP_ERR, err_code(e));
            return 4;
        }
    };
    s.set(slot::STEP, 5);
    let (p, len) = (g.ptr().as_ptr(), g.len());
    s.set(slot::NEW_PTR, p as i64);
    s.set(slot::LEN, len as i64);
    // SAFETY: `g` is live and `len` long; `old_len < len`.
    unsafe {
        s.set(
            slot::PATTERN,
            check_pattern(p, old_len, seed).map_or(0, |o| o as i64 + 1),
        );
        let zero = first_nonzero(p.add(old_len), len - old_len);
        s.set(slot::ZERO, zero.map_or(0, |o| o as i64 + 1));
    }
    s.set(slot::OPTIONS, i64::from(g.options() == kind.expected()));
    s.set(
        slot::ALIGNED,
        i64::from((p as usize).is_multiple_of(kind.align.max(page))),
    );
    if ours != 0 {
        // SAFETY: our blocker page, still mapped unless remap clobbered it.
        let intact = is_mapped(ours) && unsafe { touch(ours) } == MARKER;
        s.set(slot::MARKER, i64::from(intact));
    }
    let (start, ext) = g.extent();
    // Pages of the old extent that are neither the new extent nor our blocker must be gone (a moved
    // mapping leaves nothing behind, guard pages included).
    let left = (old_start..old_start + old_ext)
        .step_by(page)
        .filter(|a| !(start..start + ext).contains(a) && *a != ours && is_mapped(*a))
        .count();
    s.set(slot::OLD_LEFT, left as i64);
    // MADV_HUGEPAGE must cover the grown part too (checked by the parent for THP kinds).
    let last = p as usize + len - 1;
    s.set(
        slot::THP,
        vm_flag(p as usize, b"hg") * 10 + vm_flag(last, b"hg"),
    );
    let (gp, end) = (p as usize, p as usize + len);
    // The first and last usable bytes; the bytes around them are guards or unmapped space.
    let edge = match (touch_in_child(gp), write_in_child(end - 1, 1)) {
        (CLEAN, CLEAN) => 0,
        (CLEAN, bad) | (bad, _) => bad.to_code(),
    };
    s.set(slot::EDGE, edge);
    s.set(slot::BEFORE, touch_in_child(gp - 1).to_code());
    s.set(slot::AFTER, touch_in_child(end).to_code());
    // SAFETY: live, unused afterwards.
    if unsafe { g.unmap() }.is_err() {
        return 6;
    }
    s.set(slot::STEP, 7);
    0
}

/// Checks what [`remap_scenario`] reported.
#[track_caller]
fn check_scenario(
    s: &SharedSlots,
    outcome: ChildOutcome,
    kind: Kind,
    grow_to: usize,
    blocked: bool,
    what: &str,
) {
    let (before, after, thp) = (kind.before, kind.after, kind.thp());
    let page = page();
    assert_eq!(
        outcome,
        CLEAN,
        "{what}: child stopped at step {} (remap error {})",
        s.get(slot::STEP),
        s.get(slot::REMAP_ERR)
    );
    let (old, new) = (s.get(slot::OLD_PTR), s.get(slot::NEW_PTR));
    if blocked {
        assert_ne!(
            old, new,
            "{what}: growth was blocked but the mapping did not move"
        );
        if s.get(slot::BLOCKER) == 0 {
            assert_eq!(
                s.get(slot::MARKER),
                1,
                "{what}: the neighbouring page was clobbered"
            );
        } else {
            assert_eq!(
                s.get(slot::BLOCKER),
                i64::from(libc::EEXIST),
                "{what}: blocker"
            );
        }
    } else {
        assert_eq!(
            old, new,
            "{what}: free space after the mapping, yet it moved"
        );
        assert_eq!(
            s.get(slot::SHRUNK_LEFT),
            0,
            "{what}: shrink left pages mapped past the extent"
        );
        if after {
            assert_eq!(
                s.get(slot::SHRUNK_AFTER),
                SEGV.to_code(),
                "{what}: guard after shrink"
            );
        }
    }
    assert_eq!(
        s.get(slot::LEN) as usize,
        round_up(grow_to, page),
        "{what}: len"
    );
    assert_eq!(
        s.get(slot::PATTERN),
        0,
        "{what}: first byte off the pattern (+1)"
    );
    assert_eq!(
        s.get(slot::ZERO),
        0,
        "{what}: first non-zero grown byte (+1)"
    );
    assert_eq!(s.get(slot::OPTIONS), 1, "{what}: options changed");
    assert_eq!(s.get(slot::ALIGNED), 1, "{what}: alignment lost");
    // Both ends of the grown mapping: "hg" in VmFlags as 1, absent as 0 (tens: first byte).
    if thp && thp_available() {
        assert_eq!(
            s.get(slot::THP),
            11,
            "{what}: MADV_HUGEPAGE lost (first, last byte)"
        );
    } else if !thp {
        assert_eq!(s.get(slot::THP), 0, "{what}: advised without asking");
    }
    assert_eq!(
        s.get(slot::OLD_LEFT),
        0,
        "{what}: pages of the old extent left mapped"
    );
    assert_eq!(
        s.get(slot::EDGE),
        0,
        "{what}: usable edge bytes ({:?})",
        ChildOutcome::from_code(s.get(slot::EDGE))
    );
    if before {
        assert_eq!(s.get(slot::BEFORE), SEGV.to_code(), "{what}: guard before");
    }
    if after {
        assert_eq!(s.get(slot::AFTER), SEGV.to_code(), "{what}: guard after");
    }
}

/// Forces the move path: the page after the extent is taken, so growth must relocate the mapping,
/// keeping contents, options and guards, leaving the neighbour alone and nothing of the old region.
#[test]
fn remap_moves_when_the_space_after_is_taken() {
    for kind in KINDS {
        for grow_to in [16 * page(), 64 * MIB + 1] {
            let what = format!("{}, blocked, grow to {grow_to}", kind.name);
            let s = SharedSlots::new(slot::COUNT);
            let outcome = run_in_child(|| remap_scenario(kind, true, grow_to, &s));
            check_scenario(&s, outcome, kind, grow_to, true, &what);
        }
    }
}

/// Forces the in-place path: shrinking frees the tail, and in a single-threaded child nothing takes
/// it, so growing back into it keeps the address.
#[test]
fn remap_grows_in_place_into_free_space() {
    for kind in KINDS {
        for grow_to in [5 * page(), 12 * page() + 1, 16 * page()] {
            let what = format!("{}, shrink then grow to {grow_to}", kind.name);
            let s = SharedSlots::new(slot::COUNT);
            let outcome = run_in_child(|| remap_scenario(kind, false, grow_to, &s));
            check_scenario(&s, outcome, kind, grow_to, false, &what);
        }
    }
}

/// A failed remap leaves the old mapping valid and unchanged.
#[test]
fn remap_rejects_zero_and_overflow() {
    for kind in KINDS {
        let name = kind.name;
        let m = map(3 * page(), &kind.opts()).unwrap();
        // SAFETY: `m` is live; each failed remap leaves it live.
        unsafe {
            fill_pattern(m.ptr().as_ptr(), m.len(), 5);
            assert_err(
                m.remap(0),
                Op::Remap,
                libc::EINVAL,
                &format!("{name}: remap(0)"),
            );
            assert_err(
                m.remap(usize::MAX),
                Op::Remap,
                libc::ENOMEM,
                &format!("{name}: remap(MAX)"),
            );
            let same = m.remap(m.len() - 1).unwrap();
            assert_eq!(
                same, m,
                "{name}: remap to the same rounded length is a no-op"
            );
            assert_eq!(check_pattern(m.ptr().as_ptr(), m.len(), 5), None, "{name}");
            m.unmap().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 3. Release
// ---------------------------------------------------------------------------------------------------

#[test]
fn release_dontneed_zeroes_and_free_keeps_memory_usable() {
    let page = page();
    let m = map(16 * page, &MapOptions::new()).unwrap();
    let (p, len) = (m.ptr().as_ptr(), m.len());
    // SAFETY: `m` is live and `len` long; released ranges are inside it.
    unsafe {
        fill_pattern(p, len, 9);
        assert_eq!(release(p, len, Release::DontNeed), Ok(Contents::Zero));
        assert_eq!(first_nonzero(p, len), None, "DontNeed left data");

        // A part in the middle: only those pages are dropped.
        fill_pattern(p, len, 9);
        assert_eq!(
            release(p.add(4 * page), 3 * page, Release::DontNeed),
            Ok(Contents::Zero)
        );
        assert_eq!(
            check_pattern(p, 4 * page, 9),
            None,
            "before the released part"
        );
        assert_eq!(
            first_nonzero(p.add(4 * page), 3 * page),
            None,
            "released part"
        );
        let tail = 7 * page;
        let off = (tail..len).find(|&i| p.add(i).read() != twinheap_tests::pattern_byte(9, i));
        assert_eq!(off, None, "after the released part");

        // MADV_FREE: contents unknown, memory still usable.
        fill_pattern(p, len, 9);
        assert_eq!(release(p, len, Release::Free), Ok(Contents::Unknown));
        fill_pattern(p, len, 10);
        assert_eq!(check_pattern(p, len, 10), None, "memory after Free");

        // Bad input: nothing happens.
        assert_err(
            release(p.add(1), page, Release::DontNeed),
            Op::Advise,
            libc::EINVAL,
            "ptr+1",
        );
        assert_err(
            release(p, page + 1, Release::DontNeed),
            Op::Advise,
            libc::EINVAL,
            "len+1",
        );
        assert_err(
            release(p.add(page / 2), page, Release::Free),
            Op::Advise,
            libc::EINVAL,
            "Free ptr",
        );
        assert_err(
            release(p, page - 1, Release::Free),
            Op::Advise,
            libc::EINVAL,
            "Free len",
        );
        assert_eq!(
            check_pattern(p, len, 10),
            None,
            "rejected release touched memory"
        );
        assert_eq!(
            release(p, 0, Release::DontNeed),
            Ok(Contents::Zero),
            "empty range"
        );
        m.unmap().unwrap();
    }
}

/// mincore shows the resident set: all 64 MiB resident after touching, none after DontNeed.
#[test]
fn release_dontneed_drops_resident_pages() {
    let page = page();
    let len = 64 * MIB;
    let m = map(len, &MapOptions::new()).unwrap();
    let p = m.ptr().as_ptr();
    // SAFETY: `m` is live and `len` long.
    unsafe {
        for off in (0..len).step_by(page) {
            p.add(off).write_volatile(1);
        }
        assert_eq!(
            resident_pages(p, len),
            len / page,
            "touched pages not resident"
        );
        assert_eq!(release(p, len, Release::DontNeed), Ok(Contents::Zero));
        assert_eq!(
            resident_pages(p, len),
            0,
            "pages still resident after DontNeed"
        );
        // Still mapped and usable; only touched pages come back.
        p.add(len - 1).write_volatile(7);
        assert_eq!(p.add(len - 1).read_volatile(), 7);
        assert_eq!(resident_pages(p, len), 1);
        m.unmap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------------
// 4. Guard pages across remap (the fresh-mapping case is `guard_pages_fault_and_usable_bytes_do_not`)
// ---------------------------------------------------------------------------------------------------

/// After growing and after shrinking, the guard sits at the new end (and still before the start).
#[test]
fn guard_pages_follow_remap() {
    let page = page();
    for (before, after) in [(true, false), (false, true), (true, true)] {
        let opts = MapOptions::new().guards(before, after);
        let mut m = map(4 * page, &opts).unwrap();
        for new_len in [32 * page, 2 * page, 9 * page, MIB, page] {
            let what = format!("guards {before}/{after}, {} -> {new_len}", m.len());
            // SAFETY: `m` is live; only the result is used afterwards.
            m = unsafe { m.remap(new_len) }.unwrap();
            assert_eq!(m.len(), new_len, "{what}");
            assert_guards_fault(&m, before, after, &what);
        }
        // SAFETY: live, unused afterwards.
        unsafe { m.unmap() }.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------------
// 5. Reservations
// ---------------------------------------------------------------------------------------------------

#[test]
fn reservation_commit_decommit_and_raw_parts() {
    let page = page();
    let len = 64 * MIB;
    let mut r = reserve(len, 64 * MIB).unwrap();
    let base = r.base().as_ptr() as usize;
    let p = r.base().as_ptr();
    assert_eq!(base % (64 * MIB), 0, "{base:#x} misaligned");
    assert_eq!((r.len(), r.committed()), (len, 0));
    assert_eq!(perms_at(base).as_deref(), Some("---p"));
    assert_eq!(touch_in_child(base), SEGV, "uncommitted base");
    assert_eq!(touch_in_child(base + len - 1), SEGV, "uncommitted end");

    r.commit(3 * page + 1).unwrap();
    assert_eq!(r.committed(), 4 * page, "commit rounds up to pages");
    // SAFETY: the first 4 pages are committed.
    unsafe {
        assert_eq!(first_nonzero(p, 4 * page), None);
        fill_pattern(p, 4 * page, 3);
    }
    let end = base + 4 * page;
    assert_eq!(write_in_child(end - 1, 9), CLEAN, "last committed byte");
    assert_eq!(touch_in_child(end), SEGV, "first uncommitted byte");

    // Committing less than what is committed changes nothing.
    r.commit(2 * page).unwrap();
    r.commit(0).unwrap();
    assert_eq!(r.committed(), 4 * page);
    // Beyond the reservation: ENOMEM, nothing changes.
    assert_err(
        r.commit(len + 1),
        Op::Commit,
        libc::ENOMEM,
        "commit past len",
    );
    assert_err(r.commit(usize::MAX), Op::Commit, libc::ENOMEM, "commit MAX");
    assert_eq!(r.committed(), 4 * page);
    // SAFETY: still committed.
    assert_eq!(unsafe { check_pattern(p, 4 * page, 3) }, None);

    // Decommit to 1 page + 1 byte = 2 pages: the prefix keeps its data, the rest faults.
    // SAFETY: nothing uses the decommitted pages.
    unsafe { r.decommit(page + 1) }.unwrap();
    assert_eq!(r.committed(), 2 * page, "decommit rounds up");
    // SAFETY: the first 2 pages are still committed.
    let kept = unsafe { check_pattern(p, 2 * page, 3) };
    assert_eq!(kept, None, "kept prefix");
    let cut = base + 2 * page;
    assert_eq!(touch_in_child(cut), SEGV, "decommitted page");
    assert_eq!(perms_at(cut).as_deref(), Some("---p"));

    // Re-committed pages read zero although they held data.
    r.commit(4 * page).unwrap();
    assert_eq!(r.committed(), 4 * page);
    // SAFETY: committed again.
    unsafe {
        assert_eq!(check_pattern(p, 2 * page, 3), None);
        assert_eq!(
            first_nonzero(p.add(2 * page), 2 * page),
            None,
            "recommitted not zero"
        );
    }

    // The whole reservation.
    r.commit(len).unwrap();
    assert_eq!(r.committed(), len);
    // SAFETY: everything is committed.
    unsafe {
        assert_eq!(first_nonzero(p.add(4 * page), len - 4 * page), None);
        poke(base + len - 1, 4);
        assert_eq!(touch(base + len - 1), 4);
    }
    // SAFETY: nothing uses anything past the decommit points.
    unsafe {
        r.decommit(len).unwrap();
        assert_eq!(r.committed(), len, "decommit above committed is a no-op");
        r.decommit(0).unwrap();
    }
    assert_eq!(r.committed(), 0);
    assert_eq!(touch_in_child(base), SEGV, "after decommit(0)");

    r.commit(page).unwrap();
    let parts = r.into_raw_parts();
    assert_eq!(parts, (std::ptr::NonNull::new(p).unwrap(), len, page));
    // SAFETY: parts of a live reservation, used once.
    let r = unsafe { Reservation::from_raw_parts(parts.0, parts.1, parts.2) };
    assert_eq!((r.base().as_ptr(), r.len(), r.committed()), (p, len, page));
    // SAFETY: nothing uses it afterwards.
    unsafe { r.unreserve() }.unwrap();
}

#[test]
fn reserve_alignment_and_bad_input() {
    let page = page();
    for shift in [0, 4, 12, 16, 21, 26, 30] {
        let align = 1usize << shift;
        let r = reserve(1, align).unwrap();
        let base = r.base().as_ptr() as usize;
        assert_eq!(base % align.max(page), 0, "align {align:#x}");
        assert_eq!((r.len(), r.committed()), (page, 0));
        // SAFETY: unused.
        unsafe { r.unreserve() }.unwrap();
    }
    assert_err(reserve(0, page), Op::Reserve, libc::EINVAL, "len 0");
    assert_err(reserve(page, 0), Op::Reserve, libc::EINVAL, "align 0");
    assert_err(
        reserve(page, 3 << 12),
        Op::Reserve,
        libc::EINVAL,
        "align 3 << 12",
    );
    assert_err(
        reserve(usize::MAX, page),
        Op::Reserve,
        libc::ENOMEM,
        "len MAX",
    );
    assert_err(
        reserve(page, 1 << 63),
        Op::Reserve,
        libc::ENOMEM,
        "align 2^63",
    );
}

/// Paths that give memory back keep the caller's errno (free must not change errno).
#[test]
fn give_back_paths_keep_errno() {
    let page = page();
    let m = map(4 * page, &MapOptions::new().guards(true, true)).unwrap();
    let mut r = reserve(MIB, page).unwrap();
    r.commit(MIB).unwrap();
    // SAFETY: each range is ours and unused afterwards.
    unsafe {
        set_errno(4242);
        release(m.ptr().as_ptr(), page, Release::DontNeed).unwrap();
        assert_eq!(errno(), 4242, "release(DontNeed)");
        release(m.ptr().as_ptr(), page, Release::Free).unwrap();
        assert_eq!(errno(), 4242, "release(Free)");
        m.unmap().unwrap();
        assert_eq!(errno(), 4242, "unmap");
        r.decommit(page).unwrap();
        assert_eq!(errno(), 4242, "decommit");
        r.unreserve().unwrap();
        assert_eq!(errno(), 4242, "unreserve");
    }
    set_errno(0);
}

// ---------------------------------------------------------------------------------------------------
// 6. RLIMIT_AS
// ---------------------------------------------------------------------------------------------------

/// Under an address-space limit 256 MiB above current use, every big request fails with ENOMEM (no
/// crash, no partial state) and small ones still work. Runs in a child: the limit is per process.
#[test]
fn rlimit_as_makes_big_requests_fail_cleanly() {
    const STEPS: usize = 13;
    let s = SharedSlots::new(STEPS + 1);
    let page = page();
    let outcome = run_in_child(|| {
        // Read VmSize here, in the child: what counts is its own address space at this moment.
        let mut buf = [0u8; 8192];
        let Some(n) = sys::read_file(c"/proc/self/status", &mut buf) else {
            return 2;
        };
        let Some(kib) = sys::find_number_after(&buf[..n], b"VmSize:") else {
            return 3;
        };
        let limit = kib * 1024 + 256 * MIB as u64;
        s.set(STEPS, limit as i64);
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: plain syscall on our own process.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) } != 0 {
            return 4;
        }
        let code = |r: Result<(), Error>| r.map_or_else(err_code, |()| 0);
        // Only reached if a request that must fail succeeds: give it back.
        let drop_map = |m: Mapping| {
            // SAFETY: a mapping just returned by the backend, never used.
            let _ = unsafe { m.unmap() };
        };
        let drop_res = |r: Reservation| {
            // SAFETY: as above.
            let _ = unsafe { r.unreserve() };
        };
        s.set(0, code(map(4 * GIB, &MapOptions::new()).map(drop_map)));
        s.set(
            1,
            code(map(4 * GIB, &MapOptions::new().guards(true, true)).map(drop_map)),
        );
        // 0 on success (then aligned, else 1), else the error's code.
        s.set(
            2,
            match map(page, &MapOptions::new().align(GIB)) {
                Ok(m) => {
                    let aligned = (m.ptr().as_ptr() as usize).is_multiple_of(GIB);
                    drop_map(m);
                    i64::from(!aligned)
                }
                Err(e) => err_code(e),
            },
        );
        s.set(
            3,
            code(map(4 * GIB, &MapOptions::new().huge(Huge::Transparent)).map(drop_map)),
        );
        s.set(4, code(reserve(4 * GIB, page).map(drop_res)));
        s.set(5, code(reserve(page, GIB).map(drop_res)));
        // Small requests still work.
        let Ok(small) = map(64 * KIB, &MapOptions::new()) else {
            return 10;
        };
        let Ok(guarded) = map(64 * KIB, &MapOptions::new().guards(true, true)) else {
            return 11;
        };
        // SAFETY: both are live and 64 KiB long.
        unsafe {
            fill_pattern(small.ptr().as_ptr(), small.len(), 1);
            fill_pattern(guarded.ptr().as_ptr(), guarded.len(), 2);
            // Growth past the limit fails and leaves them intact.
            s.set(6, code(small.remap(4 * GIB).map(drop_map)));
            s.set(7, code(guarded.remap(4 * GIB).map(drop_map)));
            s.set(
                8,
                check_pattern(small.ptr().as_ptr(), small.len(), 1).map_or(0, |o| o as i64 + 1),
            );
            s.set(
                9,
                check_pattern(guarded.ptr().as_ptr(), guarded.len(), 2).map_or(0, |o| o as i64 + 1),
            );
            s.set(10, code(small.unmap()));
            s.set(11, code(guarded.unmap()));
        }
        let Ok(mut r) = reserve(16 * MIB, page) else {
            return 12;
        };
        // Commit does not add address space: fine under the limit.
        s.set(12, code(r.commit(16 * MIB)));
        drop_res(r);
        0
    });
    assert_eq!(
        outcome,
        CLEAN,
        "child crashed or stopped early (limit {:#x})",
        s.get(STEPS)
    );
    let enomem = |op| err_code(Error::new(op, libc::ENOMEM));
    let expected = [
        ("map 4 GiB", enomem(Op::Map)),
        ("map 4 GiB guarded", enomem(Op::Map)),
        ("map 1 GiB-aligned", enomem(Op::Map)),
        ("map 4 GiB THP", enomem(Op::Map)),
        ("reserve 4 GiB", enomem(Op::Reserve)),
        ("reserve 1 GiB-aligned", enomem(Op::Reserve)),
        ("remap plain to 4 GiB", enomem(Op::Remap)),
        ("remap guarded to 4 GiB", enomem(Op::Remap)),
        ("plain contents after failed remap", 0),
        ("guarded contents after failed remap", 0),
        ("unmap plain", 0),
        ("unmap guarded", 0),
        ("commit 16 MiB", 0),
    ];
    for (i, (what, want)) in expected.into_iter().enumerate() {
        // A page at a 1 GiB boundary needs no slop when the space right below the last aligned
        // mapping is free (see `map.rs`), so that request may also succeed.
        if i == 2 && s.get(i) == 0 {
            continue;
        }
        assert_eq!(s.get(i), want, "{what} (codes are op * 1000 + errno)");
    }
}

// ---------------------------------------------------------------------------------------------------
// 7. Huge pages
// ---------------------------------------------------------------------------------------------------

fn thp_available() -> bool {
    matches!(huge::thp_mode(), Some(ThpMode::Madvise | ThpMode::Always))
        && huge::thp_size().is_some()
}

/// A THP mapping carries MADV_HUGEPAGE (`hg` in VmFlags) over all of it, also after growing.
#[test]
fn transparent_mapping_is_advised() {
    let len = 8 * MIB;
    let opts = MapOptions::new().align(2 * MIB).huge(Huge::Transparent);
    let m = map(len, &opts).unwrap();
    let ptr = m.ptr().as_ptr() as usize;
    assert_eq!(ptr % (2 * MIB), 0);
    assert_eq!(m.len(), len);
    assert_eq!(m.options(), opts);
    assert!(!m.is_hugetlb());
    let has_hg = |addr: usize| {
        let hg = vm_flag(addr, b"hg");
        assert!(hg >= 0, "no VMA at {addr:#x} in smaps ({hg})");
        hg == 1
    };
    if thp_available() {
        assert!(has_hg(ptr), "no hg flag at the start");
        assert!(has_hg(ptr + len - 1), "no hg flag at the end");
    }
    // SAFETY: fresh mapping; then it is grown and only the result is used.
    unsafe {
        assert_zero_and_writable(&m, "THP");
        let g = m.remap(2 * len).unwrap();
        let (gp, glen) = (g.ptr().as_ptr() as usize, g.len());
        assert_eq!(gp % (2 * MIB), 0);
        assert_eq!(g.options(), opts);
        if thp_available() {
            assert!(has_hg(gp) && has_hg(gp + glen - 1), "hg flag lost by remap");
        }
        poke(gp + glen - 1, 1);
        g.unmap().unwrap();
    }
    // The page-aligned kind too (it grows with mremap).
    let plain = MapOptions::new().huge(Huge::Transparent);
    let m = map(4 * MIB, &plain).unwrap();
    if thp_available() {
        assert!(has_hg(m.ptr().as_ptr() as usize));
    }
    // SAFETY: as above.
    unsafe {
        let g = m.remap(16 * MIB).unwrap();
        if thp_available() {
            let gp = g.ptr().as_ptr() as usize;
            assert!(
                has_hg(gp) && has_hg(gp + g.len() - 1),
                "hg flag lost by mremap"
            );
        }
        assert_eq!(g.options(), plain.align(page()));
        g.unmap().unwrap();
    }
}

/// With no hugetlbfs pages reserved, HugeTlb falls back to base pages; with some, it uses them.
#[test]
fn hugetlb_falls_back_without_reserved_pages() {
    let page = page();
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let available =
        read("/proc/sys/vm/nr_hugepages") + read("/proc/sys/vm/nr_overcommit_hugepages");
    let default = huge::hugetlb_default_size();
    let req = 3 * MIB;
    for size in [0, 2 * MIB, 3 * MIB, page] {
        let what = format!("HugeTlb({size:#x})");
        let m = map(req, &MapOptions::new().huge(Huge::HugeTlb(size))).unwrap();
        let granule = if size == 0 { default } else { Some(size) };
        let real = available > 0
            && granule.is_some_and(|g| g.is_power_of_two() && g > page && Some(g) == default);
        if real {
            let g = granule.unwrap();
            assert!(m.is_hugetlb(), "{what}");
            assert_eq!(m.granule(), g, "{what}");
            assert_eq!(m.len(), round_up(req, g), "{what}");
            assert_eq!(m.ptr().as_ptr() as usize % g, 0, "{what}");
        } else {
            assert!(
                !m.is_hugetlb(),
                "{what}: no huge pages reserved, yet hugetlb"
            );
            assert_eq!(m.granule(), page, "{what}");
            assert_eq!(m.len(), req, "{what}");
            let base = expected_options(1, false, false, Huge::None);
            assert_eq!(m.options(), base, "{what}: fallback is a base mapping");
        }
        // SAFETY: fresh mapping, unmapped after.
        unsafe {
            assert_zero_and_writable(&m, &what);
            m.unmap().unwrap();
        }
    }
    // Guarded mappings never use hugetlbfs pages.
    let m = map(
        req,
        &MapOptions::new().guards(true, true).huge(Huge::HugeTlb(0)),
    )
    .unwrap();
    assert!(!m.is_hugetlb());
    assert_guards_fault(&m, true, true, "guarded HugeTlb");
    // SAFETY: unused afterwards.
    unsafe { m.unmap() }.unwrap();
}

/// A growable mapping that outgrows its room moves; what it gives back afterwards must be only its
/// own guard and room. The hole its pages left is free address space at once, and another thread's
/// new mapping can land there: unmapping the old extent whole took that mapping away (found by the
/// stress soak). Here one thread keeps moving growable mappings while others map, fill, check and
/// unmap ordinary mappings; a lost mapping faults or fails its pattern check. The race is a matter of
/// timing: with the bug put back, about half of the runs fault.
#[test]
fn moving_a_growable_mapping_leaves_other_threads_mappings_alone() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let p = page();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let stop = &stop;
            s.spawn(move || {
                let mut k = 0u64;
                while !stop.load(Relaxed) {
                    let m = map(2 * p, &MapOptions::new()).unwrap();
                    let ptr = m.ptr().as_ptr();
                    // SAFETY: our own fresh mapping of 2 pages.
                    unsafe {
                        fill_pattern(ptr, 2 * p, t << 32 | k);
                        std::thread::yield_now();
                        assert_eq!(check_pattern(ptr, 2 * p, t << 32 | k), None);
                        m.unmap().unwrap();
                    }
                    k += 1;
                }
            });
        }
        for round in 0..20_000u64 {
            let mut m = twinheap_page::map_growable(p, p, p).unwrap();
            // SAFETY: the mapping is ours; each resize beyond its room moves it, keeping contents.
            unsafe {
                fill_pattern(m.ptr().as_ptr(), p, round);
                for pages in [2, 5, 11] {
                    m = m.resize(pages * p).unwrap();
                }
                assert_eq!(check_pattern(m.ptr().as_ptr(), p, round), None);
                m.unmap().unwrap();
            }
        }
        stop.store(true, Relaxed);
    });
}

//! Randomized model test of the slab allocator: long seeded sequences of malloc, calloc, realloc,
//! aligned_alloc, free and free_sized over every size class and the large path, checked op by op
//! against a model of the live blocks.
//!
//! After each operation: the pointer is non-null and aligned (16 or the requested alignment),
//! `usable_size` is exactly the requested size, the block overlaps no other live block, calloc memory
//! reads zero and realloc kept the common prefix. Every few thousand operations every live block's
//! pattern is verified and `stats()` must agree with the model exactly: requested bytes, large blocks,
//! blocks per class and bytes in slots. At the end everything is freed, `trim()` must give the memory
//! back and the statistics must read empty.
//!
//! Statistics are process-wide, so the tests of this file take `SERIAL` and nothing else in this
//! binary allocates from slab (its global allocator is the system one).

use std::collections::BTreeMap;
use std::sync::Mutex;
use twinheap_tests::SLAB_UNITS as UNITS;

use rand_core::RngCore;

use twinheap_page::page_size;
use twinheap_slab as slab;
use twinheap_tests::{
    errno, first_nonzero, run_in_child_capturing_stderr, set_errno, ChildOutcome, Rng64,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;
const MAX_SMALL: usize = slab::MAX_SMALL;

/// Largest request a class serves: its whole stride (slots carry no in-band header).
fn capacity(class: usize) -> usize {
    stride(class)
}

fn stride(class: usize) -> usize {
    UNITS[class] * 16
}

/// The smallest class serving `n` bytes.
fn class_of(n: usize) -> usize {
    assert!(n <= MAX_SMALL);
    (0..48).find(|&c| capacity(c) >= n).unwrap()
}

// ---- patterns -----------------------------------------------------------------------------------

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pattern word for the 8 bytes at `offset & !7` of a block with `seed`.
fn word(seed: u64, offset: usize) -> u64 {
    mix(seed ^ (offset as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn byte(seed: u64, offset: usize) -> u8 {
    (word(seed, offset) >> (8 * (offset & 7))) as u8
}

/// The ranges of a block of `n` bytes that carry its pattern: all of it when small, otherwise its
/// first and last 4 KiB and 16 bytes in every 4 KiB page in between (which also touches every page).
fn regions(n: usize) -> Vec<(usize, usize)> {
    if n <= 16 << 10 {
        return vec![(0, n)];
    }
    let mut r = vec![(0, 4096)];
    let mut at = 4096 + 2040;
    while at + 16 <= n - 4096 {
        r.push((at, at + 16));
        at += 4096;
    }
    r.push((n - 4096, n));
    r
}

/// Writes the pattern over `[from, to)` of the block at `p` (word stores inside, bytes at the edges).
unsafe fn fill_range(p: *mut u8, from: usize, to: usize, seed: u64) {
    let mut o = from;
    // SAFETY: the caller owns [p + from, p + to); p is 16-aligned so offset alignment is address
    // alignment.
    unsafe {
        while o < to && !o.is_multiple_of(8) {
            p.add(o).write(byte(seed, o));
            o += 1;
        }
        while o + 8 <= to {
            (p.add(o) as *mut u64).write(word(seed, o));
            o += 8;
        }
        while o < to {
            p.add(o).write(byte(seed, o));
            o += 1;
        }
    }
}

/// The first offset in `[from, to)` of the block at `p` that does not hold the pattern.
unsafe fn check_range(p: *const u8, from: usize, to: usize, seed: u64) -> Option<usize> {
    let mut o = from;
    // SAFETY: as in `fill_range`, for reads.
    unsafe {
        while o < to && !o.is_multiple_of(8) {
            if p.add(o).read() != byte(seed, o) {
                return Some(o);
            }
            o += 1;
        }
        while o + 8 <= to {
            if (p.add(o) as *const u64).read() != word(seed, o) {
                return (o..o + 8).find(|&i| p.add(i).read() != byte(seed, i));
            }
            o += 8;
        }
        while o < to {
            if p.add(o).read() != byte(seed, o) {
                return Some(o);
            }
            o += 1;
        }
    }
    None
}

unsafe fn fill(p: *mut u8, n: usize, seed: u64) {
    for (a, b) in regions(n) {
        // SAFETY: the regions lie inside the block.
        unsafe { fill_range(p, a, b, seed) };
    }
}

/// Checks the pattern of a block of `n` bytes over its first `keep` bytes.
unsafe fn check(p: *const u8, n: usize, keep: usize, seed: u64) -> Option<usize> {
    regions(n).into_iter().find_map(|(a, b)| {
        let b = b.min(keep);
        // SAFETY: the regions lie inside the block.
        (a < b).then(|| unsafe { check_range(p, a, b, seed) })?
    })
}

// ---- the model ----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Block {
    p: usize,
    n: usize,
    /// Alignment the block must keep (16 unless it came from aligned_alloc and never moved).
    align: usize,
    seed: u64,
    /// Size class, or `None` for a large block.
    class: Option<usize>,
    /// Large blocks: bytes from the mapping's start to the block, which slab keeps across realloc.
    lead: usize,
}

impl Block {
    /// Bytes the block occupies in `stats().in_slots`: its slot stride, or its mapping's length.
    fn in_slots(&self, page: usize) -> usize {
        match self.class {
            Some(c) => stride(c),
            None => (self.n + self.lead + 4).next_multiple_of(page),
        }
    }
}

#[derive(Default)]
struct Model {
    live: Vec<Block>,
    /// Start address -> end address (at least start + 1) of every live block.
    spans: BTreeMap<usize, usize>,
    large: usize,
    ops: u64,
    seed: u64,
    /// The first mismatch of each kind between `stats()` and the model.
    stats_errors: Vec<(&'static str, String)>,
}

impl Model {
    fn insert(&mut self, b: Block, what: &str) {
        let end = b.p + b.n.max(1);
        if let Some((&s, &e)) = self.spans.range(..=b.p).next_back() {
            assert!(
                e <= b.p,
                "op {}: {what}: block {:#x}+{} overlaps live block [{s:#x}, {e:#x})",
                self.ops,
                b.p,
                b.n
            );
        }
        if let Some((&s, &e)) = self.spans.range(b.p..).next() {
            assert!(
                s >= end,
                "op {}: {what}: block {:#x}+{} overlaps live block [{s:#x}, {e:#x})",
                self.ops,
                b.p,
                b.n
            );
        }
        self.spans.insert(b.p, end);
        self.large += usize::from(b.class.is_none());
        self.live.push(b);
    }

    fn remove(&mut self, i: usize) -> Block {
        let b = self.live.swap_remove(i);
        self.spans.remove(&b.p);
        self.large -= usize::from(b.class.is_none());
        b
    }
}

/// Checks a block just returned by slab: non-null, aligned, exact usable size, pattern written.
#[track_caller]
fn accept(model: &mut Model, b: Block, what: &str) {
    assert_ne!(b.p, 0, "op {}: {what} returned null", model.ops);
    assert_eq!(
        b.p % b.align.max(16),
        0,
        "op {}: {what}: {:#x} not aligned to {}",
        model.ops,
        b.p,
        b.align
    );
    // SAFETY: a live block.
    let usable = unsafe { slab::usable_size(b.p as *mut u8) };
    assert_eq!(usable, b.n, "op {}: {what}: usable size", model.ops);
    model.insert(b, what);
}

/// Sizes: most small, all classes covered, class edges, and some large blocks.
fn pick_size(rng: &mut Rng64, large_ok: bool) -> usize {
    match rng.below(1000) {
        0..=449 => rng.range(0, 128),
        450..=699 => rng.range(129, 2048),
        700..=839 => rng.range(2049, 32 << 10),
        840..=919 => rng.range((32 << 10) + 1, MAX_SMALL),
        920..=989 => {
            // A class edge: capacity - 1, capacity or capacity + 1.
            let c = rng.range(0, 47);
            (capacity(c) + rng.range(0, 2)).saturating_sub(1)
        }
        _ if large_ok => {
            if rng.chance(3, 4) {
                rng.range(MAX_SMALL + 1, 512 << 10)
            } else {
                rng.range(512 << 10, 4 * MIB)
            }
        }
        _ => rng.range(0, 64),
    }
}

fn is_large(n: usize, align: usize) -> bool {
    if align <= 16 {
        n > MAX_SMALL
    } else {
        // Aligned blocks are padded as for at least one byte, so an empty one stays in its slot.
        align > slab::MAX_CLASS_ALIGN || n.max(1) + align - 16 > MAX_SMALL
    }
}

/// Class or `None` (large), and lead, of a block slab made for (n, align) at `p`.
fn placement(n: usize, align: usize, p: usize, page: usize) -> (Option<usize>, usize) {
    if is_large(n, align) {
        // Unaligned large blocks sit 16 + 16k bytes into their mapping, k < page / 16.
        let lead = if align > 16 {
            align
        } else {
            (p - 16) % page + 16
        };
        (None, lead)
    } else if align > 16 {
        (Some(class_of(n.max(1) + align - 16)), 0)
    } else {
        (Some(class_of(n)), 0)
    }
}

fn verify_all(model: &Model) {
    for b in &model.live {
        // SAFETY: live blocks of the model.
        unsafe {
            assert_eq!(
                slab::usable_size(b.p as *mut u8),
                b.n,
                "op {}: usable size of {:#x}",
                model.ops,
                b.p
            );
            if let Some(o) = check(b.p as *const u8, b.n, b.n, b.seed) {
                panic!(
                    "op {}: block {:#x} ({} bytes, {:?}) lost its pattern at offset {o}",
                    model.ops, b.p, b.n, b.class
                );
            }
        }
    }
}

/// Compares `stats()` with the model. Mismatches are collected in `model.stats_errors` (the first of
/// each kind) rather than panicking at once, so that one wrong statistic does not stop the run from
/// checking everything else; the test fails on them at the end.
fn verify_stats(model: &mut Model, page: usize) {
    let s = slab::stats();
    let mut found = Vec::new();
    let requested: usize = model.live.iter().map(|b| b.n).sum();
    let small_requested: usize = model
        .live
        .iter()
        .filter(|b| b.class.is_some())
        .map(|b| b.n)
        .sum();
    if s.requested != requested {
        found.push((
            "requested",
            format!(
                "stats().requested = {}, model {requested} (of which {small_requested} in small \
                 blocks, {} in {} large blocks)",
                s.requested,
                requested - small_requested,
                model.large
            ),
        ));
    }
    if s.large_blocks != model.large {
        found.push((
            "large_blocks",
            format!(
                "stats().large_blocks = {}, model {}",
                s.large_blocks, model.large
            ),
        ));
    }
    let mut per_class = [0usize; 48];
    for b in &model.live {
        if let Some(c) = b.class {
            per_class[c] += 1;
        }
    }
    for (c, (got, &want)) in s.classes.iter().zip(&per_class).enumerate() {
        if got.blocks != want || got.slots < got.blocks {
            found.push((
                "classes",
                format!("stats().classes[{c}] = {got:?}, model {want} blocks"),
            ));
        }
    }
    let in_slots: usize = model.live.iter().map(|b| b.in_slots(page)).sum();
    if s.in_slots != in_slots {
        found.push((
            "in_slots",
            format!("stats().in_slots = {}, model {in_slots}", s.in_slots),
        ));
    }
    if s.mapped < in_slots {
        found.push((
            "mapped",
            format!("stats().mapped = {} < in_slots {in_slots}", s.mapped),
        ));
    }
    for (kind, msg) in found {
        if !model.stats_errors.iter().any(|(k, _)| *k == kind) {
            let msg = format!("seed {:#x}, op {}: {msg}", model.seed, model.ops);
            model.stats_errors.push((kind, msg));
        }
    }
}

/// One seeded run of `ops` operations, then everything freed. Returns the statistics mismatches.
fn run(seed: u64, ops: u64) -> Vec<String> {
    let page = page_size();
    let mut rng = Rng64::new(seed);
    let mut m = Model {
        seed,
        ..Model::default()
    };
    let target_live = 1500;
    while m.ops < ops {
        m.ops += 1;
        let live = m.live.len();
        let large_ok = m.large < 12;
        // Allocate more while below the target population, free more above it.
        let alloc = live == 0 || rng.below(2 * target_live as u64) >= live as u64;
        let kind = rng.below(100);
        if alloc {
            let seed = rng.next_u64();
            let (p, n, align, what) = match kind {
                0..=59 => {
                    let n = pick_size(&mut rng, large_ok);
                    (slab::malloc(n), n, 16, "malloc")
                }
                60..=74 => {
                    let n = pick_size(&mut rng, large_ok);
                    let count = rng.range(1, 8);
                    let size = n / count;
                    (slab::calloc(count, size), count * size, 16, "calloc")
                }
                75..=89 => {
                    let shift = if rng.chance(4, 5) {
                        rng.range(5, 12)
                    } else {
                        rng.range(13, 20)
                    };
                    let align = 1usize << shift;
                    let n = if rng.chance(1, 2) {
                        rng.range(0, 256)
                    } else {
                        pick_size(&mut rng, large_ok && align < MIB)
                    };
                    (slab::aligned_alloc(align, n), n, align, "aligned_alloc")
                }
                _ => {
                    let n = pick_size(&mut rng, large_ok);
                    // SAFETY: realloc of null is malloc.
                    (
                        unsafe { slab::realloc(std::ptr::null_mut(), n) },
                        n,
                        16,
                        "realloc(null)",
                    )
                }
            };
            let (class, lead) = placement(n, align, p as usize, page);
            let b = Block {
                p: p as usize,
                n,
                align,
                seed,
                class,
                lead,
            };
            accept(&mut m, b, what);
            if what == "calloc" {
                // SAFETY: a live block of `n` bytes.
                let nz = unsafe { first_nonzero(p, n) };
                assert_eq!(nz, None, "op {}: calloc({n}) memory not zero", m.ops);
            }
            // SAFETY: a live block of `n` bytes.
            unsafe { fill(p, n, seed) };
        } else {
            let i = rng.below(live as u64) as usize;
            let b = m.live[i];
            // SAFETY: (for both reads) a live block.
            if let Some(o) = unsafe { check(b.p as *const u8, b.n, b.n, b.seed) } {
                panic!(
                    "op {}: block {:#x} ({} bytes) lost its pattern at {o}",
                    m.ops, b.p, b.n
                );
            }
            match kind {
                0..=34 => {
                    m.remove(i);
                    // SAFETY: freed once; the model forgets it.
                    unsafe { slab::free(b.p as *mut u8) };
                }
                35..=59 => {
                    m.remove(i);
                    // SAFETY: as above, with its exact size.
                    unsafe { slab::free_sized(b.p as *mut u8, b.n) };
                }
                _ => {
                    let n = match rng.below(6) {
                        0 => b.n + rng.range(0, 64),                       // grow a little
                        1 => b.n - rng.range(0, b.n.min(64)),              // shrink a little
                        2 => b.n / rng.range(2, 8),                        // shrink a lot
                        3 if b.class.is_none() => rng.range(0, MAX_SMALL), // large -> small
                        _ => pick_size(&mut rng, large_ok || b.class.is_none()),
                    };
                    m.remove(i);
                    // SAFETY: `b` is live; after success only the result is.
                    let q = unsafe { slab::realloc(b.p as *mut u8, n) } as usize;
                    assert_ne!(q, 0, "op {}: realloc({}, {n}) failed", m.ops, b.n);
                    let keep = b.n.min(n);
                    // SAFETY: the new block holds at least `keep` bytes.
                    if let Some(o) = unsafe { check(q as *const u8, b.n, keep, b.seed) } {
                        panic!(
                            "op {}: realloc {} -> {n} ({:#x} -> {q:#x}) lost byte {o}",
                            m.ops, b.n, b.p
                        );
                    }
                    let (class, lead, align) = if q == b.p {
                        // In place: same slot (the size must fit it) or the same (resized) mapping.
                        if let Some(c) = b.class {
                            assert!(
                                n <= capacity(c),
                                "op {}: realloc kept {:#x} in class {c} for {n} bytes",
                                m.ops,
                                q
                            );
                        }
                        (b.class, b.lead, b.align)
                    } else if b.class.is_none() && n > MAX_SMALL {
                        (None, b.lead, 16)
                    } else {
                        let (c, l) = placement(n, 16, q, page);
                        (c, l, 16)
                    };
                    let seed = rng.next_u64();
                    let nb = Block {
                        p: q,
                        n,
                        align,
                        seed,
                        class,
                        lead,
                    };
                    accept(&mut m, nb, "realloc");
                    // SAFETY: a live block of `n` bytes.
                    unsafe { fill(q as *mut u8, n, seed) };
                }
            }
        }
        if m.ops.is_multiple_of(2000) {
            verify_stats(&mut m, page);
        }
        if m.ops.is_multiple_of(10_000) {
            verify_all(&m);
        }
    }
    verify_all(&m);
    verify_stats(&mut m, page);
    while let Some(b) = m.live.pop() {
        m.spans.remove(&b.p);
        m.large -= usize::from(b.class.is_none());
        // SAFETY: freed once.
        unsafe { slab::free_sized(b.p as *mut u8, b.n) };
    }
    verify_stats(&mut m, page);
    m.stats_errors.into_iter().map(|(_, msg)| msg).collect()
}

#[test]
fn random_operations_match_the_model_and_trim_gives_memory_back() {
    let _serial = serial();
    slab::trim();
    let before = slab::stats();
    let mut stats_errors = Vec::new();
    for seed in [1, 0xdead_beef, 42] {
        stats_errors.extend(run(seed, 150_000));
        slab::trim();
        let after = slab::stats();
        assert_eq!(after.requested, 0, "seed {seed}");
        assert_eq!(after.large_blocks, 0, "seed {seed}");
        assert!(
            after.classes.iter().all(|c| c.blocks == 0),
            "seed {seed}: blocks left in classes"
        );
        // trim returns every empty group, the ones hysteresis keeps included, and nothing is live.
        let groups: Vec<(usize, usize)> = after
            .classes
            .iter()
            .enumerate()
            .filter(|(_, c)| c.groups != 0)
            .map(|(i, c)| (i, c.groups))
            .collect();
        assert!(
            groups.is_empty(),
            "seed {seed}: (class, groups) left after trim: {groups:?}"
        );
        assert_eq!(after.mapped, 0, "seed {seed}: mapped after trim");
        assert!(
            after.mapped <= before.mapped + MIB,
            "seed {seed}: mapped {} after trim, {} before the run",
            after.mapped,
            before.mapped
        );
    }
    assert!(
        stats_errors.is_empty(),
        "stats() disagreed with the model:\n{}",
        stats_errors.join("\n")
    );
}

#[test]
fn every_size_up_to_max_small_round_trips() {
    let _serial = serial();
    // Every size of the small range, a few at a time, plus the first large sizes.
    let mut blocks = Vec::new();
    for n in (0..=MAX_SMALL).step_by(7).chain([MAX_SMALL, MAX_SMALL + 1]) {
        let p = slab::malloc(n);
        assert!(!p.is_null() && (p as usize).is_multiple_of(16), "size {n}");
        // SAFETY: a live block of `n` bytes.
        unsafe {
            assert_eq!(slab::usable_size(p), n);
            fill(p, n, n as u64);
        }
        blocks.push((p, n));
        if blocks.len() == 64 {
            for (p, n) in blocks.drain(..) {
                // SAFETY: live, freed once.
                unsafe {
                    assert_eq!(check(p, n, n, n as u64), None, "size {n}");
                    slab::free_sized(p, n);
                }
            }
        }
    }
    for (p, n) in blocks {
        // SAFETY: live, freed once.
        unsafe { slab::free_sized(p, n) };
    }
}

#[test]
fn every_class_stays_in_its_class() {
    let _serial = serial();
    slab::trim();
    let base = slab::stats();
    for c in 0..48 {
        for n in [capacity(c), if c == 0 { 0 } else { capacity(c - 1) + 1 }] {
            let p = slab::malloc(n);
            assert!(!p.is_null());
            let s = slab::stats();
            assert_eq!(
                s.classes[c].blocks,
                base.classes[c].blocks + 1,
                "{n} bytes must use class {c}"
            );
            assert_eq!(s.requested, base.requested + n);
            // SAFETY: live, freed once.
            unsafe { slab::free(p) };
        }
    }
}

#[test]
fn failures_return_null_with_errno() {
    let _serial = serial();
    set_errno(0);
    assert!(slab::calloc(usize::MAX / 2, 3).is_null());
    assert_eq!(errno(), libc::ENOMEM, "calloc overflow");
    set_errno(0);
    assert!(slab::malloc(usize::MAX - 4096).is_null());
    assert_eq!(errno(), libc::ENOMEM, "huge malloc");
    set_errno(0);
    assert!(slab::aligned_alloc(48, 10).is_null());
    assert_eq!(errno(), libc::EINVAL, "alignment not a power of two");
    set_errno(0);
    assert!(slab::aligned_alloc(0, 10).is_null());
    assert_eq!(errno(), libc::EINVAL, "alignment 0");
    set_errno(0);
    assert!(slab::aligned_alloc(4096, usize::MAX - 100).is_null());
    assert_eq!(errno(), libc::ENOMEM, "aligned size overflow");
    let p = slab::malloc(100);
    set_errno(0);
    // SAFETY: `p` is live; a failed realloc leaves it untouched.
    unsafe {
        assert!(slab::realloc(p, usize::MAX - 4096).is_null());
        assert_eq!(errno(), libc::ENOMEM, "huge realloc");
        assert_eq!(slab::usable_size(p), 100);
        set_errno(libc::EDOM);
        slab::free(p);
        slab::free(std::ptr::null_mut());
        slab::free_sized(std::ptr::null_mut(), 5);
        assert_eq!(slab::usable_size(std::ptr::null_mut()), 0);
    }
    assert_eq!(errno(), libc::EDOM, "free keeps errno");
    // malloc(0) gives distinct pointers.
    let (a, b) = (slab::malloc(0), slab::malloc(0));
    assert!(!a.is_null() && !b.is_null() && a != b);
    // SAFETY: live, freed once.
    unsafe {
        slab::free(a);
        slab::free(b);
    }
}

#[test]
fn stats_count_each_kind_of_block_exactly() {
    let _serial = serial();
    let page = page_size();
    let cases: &[(usize, usize, &str)] = &[
        (100, 16, "small"),
        (100, 256, "small, aligned"),
        (5000, 4096, "small, page-aligned"),
        (MAX_SMALL + 1, 16, "large"),
        (200_000, 16, "large"),
        (MIB - 20, 16, "large, exact fit"),
        (300_000, 4096, "large, aligned"),
        (100, 1 << 20, "large, aligned beyond the classes"),
    ];
    let mut failures = Vec::new();
    for &(n, align, what) in cases {
        let base = slab::stats();
        let p = if align == 16 {
            slab::malloc(n)
        } else {
            slab::aligned_alloc(align, n)
        };
        assert!(!p.is_null());
        let s = slab::stats();
        let (class, lead) = placement(n, align, p as usize, page);
        let b = Block {
            p: p as usize,
            n,
            align,
            seed: 0,
            class,
            lead,
        };
        let got = (
            s.requested - base.requested,
            s.large_blocks - base.large_blocks,
            s.in_slots - base.in_slots,
        );
        let want = (n, usize::from(class.is_none()), b.in_slots(page));
        if got != want {
            failures.push(format!(
                "{what} ({n} bytes, align {align}, at {p:?}): (requested, large_blocks, in_slots) \
                 grew by {got:?}, expected {want:?}"
            ));
        }
        // SAFETY: live, freed once.
        unsafe { slab::free(p) };
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn aligned_empty_blocks_stay_inside_their_slot() {
    // aligned_alloc(A, 0) takes a block of A - 16 bytes, and every such size is a class stride
    // exactly (2^k - 16 = 2^(k-4) - 1 units), so the block fills its slot. Aligning its start up
    // may move it by A - 16 bytes: to the slot's end, which is the next slot's start. The empty
    // block must stay in its own slot: its usable size is 0, and freeing it frees nothing else.
    // Runs in a child, since the failure aborts.
    let (outcome, stderr) = run_in_child_capturing_stderr(|| {
        let mut align = 32;
        while align <= slab::MAX_CLASS_ALIGN {
            for _ in 0..64 {
                let p = slab::aligned_alloc(align, 0);
                if p.is_null() || !(p as usize).is_multiple_of(align) {
                    return 2;
                }
                // A live neighbour right after the slot, which the empty block must not name.
                let q = slab::malloc(align - 16);
                // SAFETY: live blocks, each freed once.
                unsafe {
                    if slab::usable_size(p) != 0 {
                        return 3;
                    }
                    slab::free(p);
                    if !q.is_null() && slab::usable_size(q) != align - 16 {
                        return 4;
                    }
                    slab::free(q);
                }
            }
            align *= 2;
        }
        0
    });
    assert_eq!(
        (outcome, String::from_utf8_lossy(&stderr).into_owned()),
        (ChildOutcome::Exited(0), String::new())
    );
}

//! The public entry points: malloc, free, calloc, realloc, aligned_alloc, usable_size, trim.
//!
//! Each opens a session (see `thread.rs`). A call made while the same thread is already inside slab
//! (a signal handler that interrupted it) must not wait for a lock, since the interrupted call may
//! hold it: such an allocation only *tries* the locks it needs and fails with ENOMEM when one is taken
//! (large allocations always fail); such a free is parked until the interrupted call leaves.
//! Everything else validates what it is given, then works on the thread's heap (classed blocks) or in
//! `large.rs`, and reports failure as null plus errno, as the C functions do.

use core::ptr;
use core::sync::atomic::Ordering::Relaxed;

use twinheap_page::error::set_errno;

use crate::class::{self, MAX_SMALL, UNIT};
use crate::fault::{self, Fault};
use crate::heap::{self, Heap};
use crate::meta::LARGE;
use crate::thread::{self, Entry};
use crate::validate::{self, Block};
use crate::{config, large, secret, slot};

/// Largest alignment served from size classes; larger ones get their own mapping.
pub const MAX_CLASS_ALIGN: usize = 64 << 10;

/// Requests above this fail at once (as glibc: no object may exceed PTRDIFF_MAX).
const MAX_REQUEST: usize = isize::MAX as usize - (1 << 20);

#[cold]
fn fail(errno: i32) -> *mut u8 {
    set_errno(errno);
    ptr::null_mut()
}

/// What an allocating call works with: the heap, and how the call may use it.
struct Ctx {
    heap: &'static Heap,
    access: Access,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The thread owns the heap alone and was not re-entered: it may use the heap's batches.
    Owner,
    /// A heap shared with other threads (the table was crowded): locks only.
    Shared,
    /// Re-entered from a signal handler: try locks, never wait; park frees in this table entry.
    Reentrant(usize),
}

/// Runs `f` in a session (or a re-entered one), or fails with ENOMEM when no heap can be had.
///
/// `f` is called from one place only, so that it inlines (two calls would leave it out of line and
/// pass the context through memory).
#[inline(always)]
fn with_session(f: impl FnOnce(&Ctx) -> *mut u8) -> *mut u8 {
    let session;
    let ctx = match thread::enter_fast() {
        // A session from the fast path always owns its heap.
        Some(s) => {
            let ctx = Ctx {
                heap: s.heap,
                access: Access::Owner,
            };
            session = Some(s);
            ctx
        }
        None => return with_session_slow(f),
    };
    let p = f(&ctx);
    drop(session);
    p
}

/// [`with_session`] when the fast path found no session: any thread's first call, a crowded
/// table, a re-entered call.
#[inline(never)]
fn with_session_slow(f: impl FnOnce(&Ctx) -> *mut u8) -> *mut u8 {
    let session;
    let ctx = match thread::enter_slow(thread::me()) {
        Entry::Session(s) => {
            let ctx = Ctx {
                heap: s.heap,
                access: if s.owns_heap() {
                    Access::Owner
                } else {
                    Access::Shared
                },
            };
            session = Some(s);
            ctx
        }
        Entry::Reentrant(slot, Some(heap)) => {
            session = None;
            Ctx {
                heap,
                access: Access::Reentrant(slot),
            }
        }
        Entry::Reentrant(_, None) | Entry::NoHeap => return fail(libc::ENOMEM),
    };
    let p = f(&ctx);
    drop(session);
    p
}

/// Allocates `n` bytes aligned to 16. `malloc(0)` returns a unique pointer.
#[inline]
pub fn malloc(n: usize) -> *mut u8 {
    with_session(|ctx| malloc_in(ctx, n))
}

#[inline(always)]
fn malloc_in(ctx: &Ctx, n: usize) -> *mut u8 {
    if n > MAX_SMALL {
        return alloc_large(ctx, n, UNIT, false);
    }
    let heap = ctx.heap;
    let class = class::of(n);
    if ctx.access == Access::Owner {
        // The owning thread, not re-entered, is the only one changing its batches.
        let batch = &heap.batches[class];
        let mut bits = batch.bits.load(Relaxed);
        if bits == 0 {
            let Some((meta, refill, fresh)) = refill(heap, class) else {
                return fail(libc::ENOMEM);
            };
            batch.meta.store(meta, Relaxed);
            batch.fresh.store(fresh, Relaxed);
            bits = refill;
        }
        let idx = bits.trailing_zeros() as usize;
        batch.bits.store(bits & (bits - 1), Relaxed);
        let meta = batch.meta.load(Relaxed);
        let fresh = batch.fresh.load(Relaxed).rotate_left(idx as u32 * 7);
        // SAFETY: the slot left `avail` under the lock for this class and is ours alone.
        return unsafe { slot::enframe(slot::Slot { meta, idx, fresh }, class, n) };
    }
    let slot = match ctx.access {
        // SAFETY: the guard is for `heap`, whose state it borrows.
        Access::Owner | Access::Shared => unsafe { heap.lock().take(heap, class, false) },
        // SAFETY: as above.
        Access::Reentrant(_) => heap
            .try_lock()
            .and_then(|mut g| unsafe { g.take(heap, class, true) }),
    };
    match slot {
        // SAFETY: the slot was just taken for a block of class `of(n)`, which holds `n` bytes.
        Some(slot) => unsafe { slot::enframe(slot, class, n) },
        None => fail(libc::ENOMEM),
    }
}

/// Refills the owner's batch of `class`: from the next batch a previous refill set aside, without
/// the lock; otherwise one lock acquisition marks the pending frees and takes the slots (from up
/// to two groups, see `State::take_batch`). The flush comes first, so the slots it frees count for
/// this refill's rotation and activation. A new group's mapping (and record) is made with the lock
/// dropped, then the refill runs again.
#[inline(never)]
fn refill(heap: &'static Heap, class: usize) -> Option<(*mut crate::meta::Meta, u32, u32)> {
    // The last locked refill may have set the next batch aside already (see `heap::Batch`); the
    // pending frees then wait for the next locked refill, or for a full buffer.
    if let Some(next) = heap.batches[class].take_next() {
        return Some(next);
    }
    let mut spare = None;
    // Each round makes at most one group, so two rounds are the usual worst case. The bound only
    // guards against a heap that keeps changing underneath.
    for _ in 0..8 {
        let mut guard = heap.lock();
        // The state holds a spare only while this refill offers one (nearly never): moving the
        // empty option in and out on every refill would cost more than the test.
        let offered = spare.is_some();
        if offered {
            guard.spare = spare.take();
        }
        // SAFETY: the guard is for `heap`, owned by this thread, which is not re-entered.
        let released = unsafe { guard.flush(heap) };
        // SAFETY: as above.
        let taken = unsafe { guard.take_batch(heap, class) };
        let wanted = guard.wanted.take();
        let unused = if offered { guard.spare.take() } else { None };
        drop(guard);
        released.release();
        if let Some(unused) = unused {
            unused.discard();
        }
        match (taken, wanted) {
            (Some(taken), _) => return Some(taken),
            (None, Some(class)) => spare = Some(heap::Spare::prepare(class)?),
            (None, None) => return None,
        }
    }
    None
}

/// A large block; `zero` asks for all-zero contents (a reused block may hold old data).
#[cold]
fn alloc_large(ctx: &Ctx, n: usize, align: usize, zero: bool) -> *mut u8 {
    if n > MAX_REQUEST || matches!(ctx.access, Access::Reentrant(_)) {
        return fail(libc::ENOMEM);
    }
    let p = large::alloc(n, align, secret::cheap_u32(), zero);
    if p.is_null() {
        return fail(libc::ENOMEM);
    }
    p
}

/// Frees a block from [`malloc`] and friends; null is ignored. Aborts on an invalid or double free,
/// on a detected overflow, and on corrupted metadata. Keeps errno.
///
/// # Safety
/// `p` must not be used after the call. (Passing a pointer slab did not make is detected, not UB, in
/// nearly all cases: see docs/slab.md.)
#[inline]
pub unsafe fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    // SAFETY: per the contract.
    unsafe {
        match validate::classed(p) {
            Some(b) => release_classed(&b),
            None => free_large(p, None),
        }
    }
}

/// Frees a block whose size the caller states (C23 free_sized, C++ sized delete, Rust dealloc); a size
/// other than the requested one aborts with "size mismatch".
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn free_sized(p: *mut u8, n: usize) {
    if p.is_null() {
        return;
    }
    // SAFETY: per the contract; validation only reads.
    let Some(b) = (unsafe { validate::classed(p) }) else {
        // SAFETY: as above.
        return unsafe { free_large(p, Some(n)) };
    };
    fault::check(b.n == n, Fault::SizeMismatch, p as usize);
    // SAFETY: per the contract.
    unsafe { release_classed(&b) }
}

/// [`free`] or [`free_sized`] (with the stated size) of a pointer outside every segment, which must
/// be a large block. Out of line, so that the classed block of the fast path stays in registers.
///
/// # Safety
/// As for [`free`]; `p` is 16-byte aligned and not null.
#[cold]
#[inline(never)]
unsafe fn free_large(p: *mut u8, n: Option<usize>) {
    // SAFETY: per the contract; validation only reads.
    let b = unsafe { validate::large(p) };
    if let Some(n) = n {
        fault::check(b.n == n, Fault::SizeMismatch, p as usize);
    }
    // SAFETY: per the contract.
    unsafe { release(&b) }
}

/// [`release`] for a block of a size class (from [`validate::classed`]).
///
/// # Safety
/// `b` was just validated by [`validate::classed`] and the caller gives it up.
#[inline(always)]
unsafe fn release_classed(b: &Block) {
    // SAFETY: per the contract.
    unsafe {
        if let Some(session) = thread::enter_fast() {
            crate::free::small_in_session(b, &session);
            return;
        }
        match thread::enter() {
            Entry::Session(session) => crate::free::small_in_session(b, &session),
            Entry::Reentrant(_, _) | Entry::NoHeap => crate::free::small(b),
        }
    }
}

/// Frees a validated block. A classed block is cleared and marked without a lock when possible (see
/// `free.rs` and `pending.rs`); a large block needs locks and a syscall, so a re-entered call parks it.
#[inline(always)]
unsafe fn release(b: &Block) {
    // SAFETY: `b` was just validated and the caller gives it up.
    unsafe {
        if (*b.meta).class != LARGE {
            return release_classed(b);
        }
        match thread::enter() {
            Entry::Session(_) | Entry::NoHeap => large::free(b),
            Entry::Reentrant(slot, _) => thread::park_block(slot, b.p),
        }
    }
}

/// Allocates `count * size` zeroed bytes; null with ENOMEM if the product overflows.
pub fn calloc(count: usize, size: usize) -> *mut u8 {
    let Some(total) = count.checked_mul(size) else {
        return fail(libc::ENOMEM);
    };
    if total > MAX_SMALL {
        // Fresh mappings and cached blocks zeroed at free need no clearing; `large` knows which.
        return with_session(|ctx| alloc_large(ctx, total, UNIT, true));
    }
    let p = malloc(total);
    // With the write-after-free check every slot was verified all zero when it was handed out.
    if !p.is_null() && !config::check_write_after_free() {
        // SAFETY: `p` holds `total` bytes.
        unsafe { ptr::write_bytes(p, 0, total) };
    }
    p
}

/// Resizes a block, keeping its contents up to the smaller size. Stays in place when the new size
/// still fits the slot (and is not much smaller); large blocks are remapped. On failure returns null
/// with ENOMEM and the old block is untouched. `realloc(null, n)` is `malloc(n)`.
///
/// # Safety
/// As for [`free`]: after success only the returned pointer is valid.
pub unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(n);
    }
    // SAFETY: per the contract. No session is held across the whole call: the new block comes from
    // `malloc` and the old one goes through `release`, each of which handles re-entry itself.
    unsafe {
        let b = validate::block(p);
        let class = (*b.meta).class;
        if class == LARGE {
            if n > MAX_SMALL {
                return with_session(|ctx| {
                    if n > MAX_REQUEST || matches!(ctx.access, Access::Reentrant(_)) {
                        return fail(libc::ENOMEM);
                    }
                    let q = large::realloc(&b, n);
                    if q.is_null() {
                        fail(libc::ENOMEM)
                    } else {
                        q
                    }
                });
            }
        } else if n <= b.end as usize - p as usize && class::of(n) + 1 >= usize::from(class) {
            resize_in_place(&b, n);
            return p;
        }
        let q = malloc(n);
        if q.is_null() {
            return q;
        }
        ptr::copy_nonoverlapping(p, q, n.min(b.n));
        release(&b);
        q
    }
}

/// Changes a block's recorded size without moving it. Bytes given up and the old canary are cleared
/// so that the slot's slack stays zero.
unsafe fn resize_in_place(b: &Block, n: usize) {
    // SAFETY: `b` is a validated live block of a class and `n` fits between `p` and `end`.
    unsafe {
        let old_end = b.p.add(b.n + 1);
        slot::reframe(&*b.meta, b.idx, b.start, b.end, b.p, n, old_end);
    }
}

/// Allocates `n` bytes aligned to `align`, a power of two (otherwise null with EINVAL). Alignments up
/// to [`MAX_CLASS_ALIGN`] come from size classes, larger ones from their own mapping.
pub fn aligned_alloc(align: usize, n: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return fail(libc::EINVAL);
    }
    with_session(|ctx| aligned_in(ctx, align, n))
}

fn aligned_in(ctx: &Ctx, align: usize, n: usize) -> *mut u8 {
    if align <= UNIT {
        return malloc_in(ctx, n);
    }
    // An empty block still needs its start inside the slot: pad as for one byte, or rounding up
    // to the alignment could land on the slot's end, the next slot's start.
    let Some(padded) = n.max(1).checked_add(align - UNIT) else {
        return fail(libc::ENOMEM);
    };
    if align > MAX_CLASS_ALIGN || padded > MAX_SMALL {
        return alloc_large(ctx, n, align, false);
    }
    let p0 = malloc_in(ctx, padded);
    if p0.is_null() {
        return p0;
    }
    // SAFETY: `p0` is a block we just made; the aligned block stays inside its slot.
    unsafe {
        let b = validate::block(p0);
        let p = ((p0 as usize + align - 1) & !(align - 1)) as *mut u8;
        slot::reframe(&*b.meta, b.idx, b.start, b.end, p, n, p0.add(padded + 1));
        p
    }
}

/// The requested size of a live block (exactly what was asked for), after full validation; 0 for null.
/// Takes no lock, so it is safe even from a signal handler that interrupted slab.
///
/// # Safety
/// `p` is null or a live block.
pub unsafe fn usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: per the contract.
    unsafe { validate::block(p).n }
}

/// Returns every empty group to the OS (the groups hysteresis keeps are released too), empties the
/// cache of freed large blocks and unmaps their tombstones. Returns true if anything was released.
/// Does nothing when called from a signal handler that interrupted slab.
pub fn trim() -> bool {
    let Entry::Session(session) = thread::enter() else {
        return false;
    };
    if session.owns_heap() {
        // SAFETY: the owning thread, not re-entered.
        unsafe { session.heap.return_batches() };
    }
    let mut released = large::trim();
    thread::for_each_heap(|heap| loop {
        // SAFETY: lock held for the call.
        let group = unsafe { heap.lock().take_empty() };
        match group {
            // SAFETY: detached under the lock with every slot free.
            Some(m) => unsafe {
                crate::free::release_group(m);
                released = true;
            },
            None => break,
        }
    });
    released |= crate::segment::trim();
    released |= crate::meta::release_unused() > 0;
    released
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn fill(p: *mut u8, n: usize, seed: u8) {
        for i in 0..n {
            // SAFETY: the caller passes a live block of `n` bytes.
            unsafe { *p.add(i) = seed.wrapping_add(i as u8) | 1 };
        }
    }

    fn holds(p: *const u8, n: usize, seed: u8) -> bool {
        // SAFETY: as in `fill`.
        (0..n).all(|i| unsafe { *p.add(i) } == seed.wrapping_add(i as u8) | 1)
    }

    #[test]
    fn every_size_round_trips() {
        let sizes: Vec<usize> = (0..300)
            .chain([1000, 4000, 5000, 20_000, 100_000, 131_052, 131_053, 1 << 20])
            .collect();
        let mut blocks = Vec::new();
        for (k, &n) in sizes.iter().enumerate() {
            let p = malloc(n);
            assert!(!p.is_null());
            assert_eq!(p as usize % UNIT, 0);
            // SAFETY: live block.
            assert_eq!(unsafe { usable_size(p) }, n);
            fill(p, n, k as u8);
            blocks.push((p, n, k as u8));
        }
        for &(p, n, k) in &blocks {
            assert!(holds(p, n, k), "size {n}");
            // SAFETY: live block, freed once.
            unsafe { free_sized(p, n) };
        }
    }

    #[test]
    fn calloc_zeroes_reused_slots() {
        for _ in 0..100 {
            let p = malloc(64);
            fill(p, 64, 3);
            // SAFETY: live block.
            unsafe { free(p) };
            let q = calloc(8, 8);
            // SAFETY: 64 bytes.
            assert!((0..64).all(|i| unsafe { *q.add(i) } == 0));
            // SAFETY: live block.
            unsafe { free(q) };
        }
        assert!(calloc(usize::MAX, 2).is_null());
    }

    #[test]
    fn realloc_keeps_contents_across_classes_and_large() {
        let mut p = malloc(10);
        fill(p, 10, 9);
        let mut n = 10;
        for next in [30, 200, 5000, 70_000, 200_000, 3 << 20, 150_000, 100, 5] {
            // SAFETY: `p` is live.
            let q = unsafe { realloc(p, next) };
            assert!(!q.is_null());
            let keep = n.min(next);
            assert!(holds(q, keep, 9), "{n} -> {next}");
            // SAFETY: live block.
            assert_eq!(unsafe { usable_size(q) }, next);
            fill(q, next, 9);
            p = q;
            n = next;
        }
        // SAFETY: live block.
        unsafe { free(p) };
    }

    #[test]
    fn aligned_blocks_are_aligned_and_free_cleanly() {
        for shift in 4..=22 {
            let align = 1usize << shift;
            for n in [1, 100, 5000] {
                let p = aligned_alloc(align, n);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "align {align}");
                // SAFETY: live block.
                assert_eq!(unsafe { usable_size(p) }, n);
                fill(p, n, 1);
                // SAFETY: live block.
                unsafe { free(p) };
            }
        }
        assert!(aligned_alloc(24, 10).is_null());
    }

    #[test]
    fn threads_free_each_others_blocks() {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..20_000usize {
                        let n = (i * 7 + t) % 700;
                        let p = malloc(n);
                        fill(p, n, t as u8);
                        mine.push((p as usize, n));
                    }
                    mine
                })
            })
            .collect();
        let all: Vec<Vec<(usize, usize)>> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        // No two live blocks share a byte (an empty block counts as one byte: its address).
        let mut spans: Vec<(usize, usize)> = all.iter().flatten().copied().collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[0].0 + w[0].1.max(1) <= w[1].0, "overlap: {w:x?}");
        }
        // Free every thread's blocks from other threads.
        let frees: Vec<_> = all
            .into_iter()
            .enumerate()
            .map(|(t, blocks)| {
                std::thread::spawn(move || {
                    for (p, n) in blocks {
                        assert!(holds(p as *const u8, n, t as u8));
                        // SAFETY: each block is freed exactly once, by this thread.
                        unsafe { free(p as *mut u8) };
                    }
                })
            })
            .collect();
        for h in frees {
            h.join().unwrap();
        }
    }
}

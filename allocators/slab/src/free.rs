//! Freeing: validate, clear, mark the slot freed, and release the group when it empties.
//!
//! Validation and clearing always happen in the free call itself. A free by the thread that owns the
//! block's heap then only records the slot in the heap's pending frees (`pending.rs`), marked later
//! in bulk. Any other free marks it at once: lock-free in the common case (a CAS on the group's
//! `freed` mask), as in mallocng: only a free into a group with no freed slots yet, or the free that
//! completes a group, takes the owner heap's lock, because those change lists. A released group's
//! memory goes back to its segment (`segment.rs`) after the lock is dropped.

use core::ptr;

use crate::fault::{report, Fault};
use crate::masks::Lockless;
use crate::meta::{self, Meta};
use crate::pending::Push;
use crate::slot;
use crate::thread::{self, Entry};
use crate::validate::Block;

/// Frees a validated small block.
///
/// # Safety
/// `b` was returned by [`crate::validate::block`] for a block of a class (not large) and is not used
/// again.
#[inline]
pub(crate) unsafe fn small(b: &Block) {
    // SAFETY: per the contract.
    unsafe {
        slot::clear(b.meta, b.idx, b.p, b.n, b.end);
        release_slot(b.meta, b.idx);
    }
}

/// Frees a validated small block from inside a session. The owning thread of the block's heap only
/// records the slot in its pending frees (see `pending.rs`); other threads mark it as before.
///
/// # Safety
/// As for [`small`]; `session` is the calling thread's (not re-entered) session.
#[inline(always)]
pub(crate) unsafe fn small_in_session(b: &Block, session: &thread::Session) {
    // SAFETY: per the contract.
    unsafe {
        let heap = session.heap;
        if session.owns_heap() && ptr::eq((*b.meta).heap, heap) {
            // Only the owner may look at a neighbouring slot: nobody else frames its slots.
            slot::check_exact_fit(&*b.meta, b.idx, b.p, b.n, b.end);
            slot::clear(b.meta, b.idx, b.p, b.n, b.end);
            let bit = 1u32 << b.idx;
            if heap.pending.push(b.meta, bit, b.p as usize) == Push::Full {
                heap.flush_pending();
                let again = heap.pending.push(b.meta, bit, b.p as usize);
                debug_assert!(again == Push::Done);
            }
            return;
        }
        slot::clear(b.meta, b.idx, b.p, b.n, b.end);
        mark(b.meta, b.idx, true);
    }
}

/// Marks a cleared slot freed from a public free: lock-free in the common case, which is safe even
/// in a signal handler; when the owner's lock is needed, only inside a session (a re-entered call
/// parks the marking).
///
/// # Safety
/// Slot `idx` of `m` is in use, validated and cleared, and given up by the caller.
pub(crate) unsafe fn release_slot(m: *mut Meta, idx: usize) {
    // SAFETY: per the contract.
    unsafe { mark(m, idx, false) }
}

/// Sets slot `idx` of `m` freed: lock-free when the protocol allows, otherwise under the owner's
/// lock, which a caller already `in_session` may wait for; any other caller opens a session first
/// (or, re-entered, parks the marking).
unsafe fn mark(m: *mut Meta, idx: usize, in_session: bool) {
    // SAFETY: `m` is a live record with slot `idx` in use, which keeps the group alive.
    let meta = unsafe { &*m };
    match meta.masks.free_lockless(1u32 << idx, meta.all_slots()) {
        Lockless::Done => {}
        Lockless::AlreadyFree => report(Fault::DoubleFree, meta.mem as usize),
        // SAFETY: per the callers' contracts; the caller's session makes waiting for the lock safe.
        Lockless::NeedLock if in_session => unsafe { free_locked(m, idx) },
        Lockless::NeedLock => match thread::enter() {
            // SAFETY: per the callers' contracts; the session makes waiting for the lock safe.
            Entry::Session(_session) => unsafe { free_locked(m, idx) },
            Entry::Reentrant(slot, _) => thread::park_slot(slot, m, idx),
            // SAFETY: no heap for this thread, but no slab call of its is under way either.
            Entry::NoHeap => unsafe { free_locked(m, idx) },
        },
    }
}

/// The locked half of a free: list changes under the owner heap's lock, then any release.
unsafe fn free_locked(m: *mut Meta, idx: usize) {
    // SAFETY: `m` is a live record (its slot `idx` is still in use).
    let meta = unsafe { &*m };
    // SAFETY: a group's owner heap outlives it (heaps are never destroyed).
    let heap = unsafe { &*meta.heap };
    let mut guard = heap.lock();
    // SAFETY: lock held; slot `idx` is in use (checked again inside).
    let release = unsafe { guard.free_locked(m, 1u32 << idx) };
    drop(guard);
    if let Some(g) = release {
        // SAFETY: the group was detached under the lock and all its slots are free.
        unsafe { release_group(g) };
    }
}

/// Gives an emptied, detached group back: its memory to its segment, its record to the pool.
///
/// # Safety
/// `m` was detached from its heap's lists under the lock and has no slot in use.
pub(crate) unsafe fn release_group(m: *mut Meta) {
    // SAFETY: per the contract nothing else refers to the group or the record. The record is
    // recycled only after the segment no longer names it.
    unsafe {
        let meta = &*m;
        let class = usize::from(meta.class);
        let dirty = crate::group::dirty(class, usize::from(meta.active_idx) + 1);
        crate::segment::put(meta.mem, class, dirty);
        meta::free(m);
    }
}

//! Freeing: validate, clear, mark the slot freed, and release the group when it empties.
//!
//! Marking is lock-free in the common case (a CAS on the group's `freed` mask, from any thread), as in
//! mallocng: only a free into a group with no freed slots yet, or the free that completes a group,
//! takes the owner heap's lock, because those change lists. Syscalls (munmap) happen after the lock is
//! dropped.

use core::ptr;

use crate::fault::{report, Fault};
use crate::masks::Lockless;
use crate::meta::{self, Meta};
use crate::slot;
use crate::validate::{self, Block, Purpose};

/// Frees a validated small block.
///
/// # Safety
/// `b` was returned by [`validate::block`] for a block of a class (not large) and is not used again.
#[inline]
pub(crate) unsafe fn small(b: &Block) {
    // SAFETY: per the contract.
    unsafe {
        slot::clear(b.p, b.n, b.end, b.header.code);
        mark_freed(b.meta, b.idx);
    }
}

/// Sets slot `idx` of group `m` freed, taking the owner's lock only when lists must change.
unsafe fn mark_freed(m: *mut Meta, idx: usize) {
    // SAFETY: `m` is a live record with slot `idx` in use, which keeps the group alive.
    let meta = unsafe { &*m };
    let bit = 1u32 << idx;
    match meta.masks.free_lockless(bit, meta.all_slots()) {
        Lockless::Done => return,
        Lockless::AlreadyFree => report(Fault::DoubleFree, meta.mem as usize),
        Lockless::NeedLock => {}
    }
    // SAFETY: a group's owner heap outlives it (heaps are never destroyed).
    let heap = unsafe { &*meta.heap };
    let mut guard = heap.lock();
    // SAFETY: lock held; slot `idx` is in use (checked again inside).
    let release = unsafe { guard.free_locked(m, idx) };
    drop(guard);
    if let Some(g) = release {
        // SAFETY: the group was detached under the lock and all its slots are free.
        unsafe { release_group(g) };
    }
}

/// Gives an emptied, detached group's memory back: unmaps its mapping, or frees the slot of the
/// larger class it was nested in. Then recycles its record.
///
/// # Safety
/// `m` was detached from its heap's lists under the lock and has no slot in use.
pub(crate) unsafe fn release_group(m: *mut Meta) {
    // SAFETY: per the contract nothing else refers to the group or the record.
    unsafe {
        let meta = &*m;
        let (mem, mapping) = (meta.mem, meta.mapping);
        let span = crate::group::span(usize::from(meta.class), usize::from(meta.last_idx) + 1);
        meta::free(m);
        match mapping {
            Some(mapping) => {
                // A failed munmap leaves the group mapped and unused: a leak, not corruption.
                let _ = mapping.unmap();
            }
            None => {
                let parent = validate::block(mem, Purpose::Nested);
                // The whole group goes back to zero, headers included, so the parent slot is clean.
                ptr::write_bytes(mem, 0, span);
                slot::clear(parent.p, 0, parent.end, 0);
                mark_freed(parent.meta, parent.idx);
            }
        }
    }
}

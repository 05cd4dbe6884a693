//! Handing a slot out and taking it back: the in-band work done outside any lock.
//!
//! Once a slot's bit has left `avail`, the slot belongs to the thread that took it, so framing it
//! (checks, header, size) needs no lock; likewise a free clears the block before it marks the slot
//! freed, and never touches it afterwards.
//!
//! With `zero_on_free` a free zeroes the block's bytes and its size encoding, so a free slot is all
//! zero except block headers marked freed. With `check_write_after_free` framing verifies that: any
//! other byte that is not zero was written after the free.

use core::ptr;

use crate::class::{self, UNIT};
use crate::config;
use crate::fault::{report, Fault};
use crate::header::{self, CODE_NESTED, CODE_START, CODE_U32, GROUP_HEADER, HEADER_AFTER};
use crate::meta::Meta;
use crate::zero::{any_nonzero, first_nonzero, zero};

/// A slot taken from a group, not yet framed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub meta: *mut Meta,
    pub idx: usize,
    /// Random bits for the first offset of a never-used slot.
    pub fresh: u32,
}

/// A slot's geometry.
struct Geometry {
    storage: *mut u8,
    start: *mut u8,
    end: *mut u8,
}

/// The geometry of slot `idx` of the group at `meta` with slots of `stride` bytes.
#[inline(always)]
unsafe fn geometry(meta: *const Meta, idx: usize, stride: usize) -> Geometry {
    // SAFETY: the slot's meta is a live record; its group memory spans every slot.
    unsafe {
        let storage = (*meta).mem.add(GROUP_HEADER);
        let start = storage.add(idx * stride);
        Geometry {
            storage,
            start,
            end: start.add(stride - HEADER_AFTER),
        }
    }
}

/// Where the slot's previous block sat, in units from the slot start, given the header word in
/// front of the slot (`raw`, not 0: a used slot always leaves a record there). Only a slot-start
/// record (code 7) names an offset; any other header is the previous block's own, at offset 0.
#[inline(always)]
fn previous_offset(raw: u32) -> usize {
    let code = (u32::from_le(raw) >> 13) as u8 & 7;
    if code == CODE_START {
        // A slot-start record's offset is within its slot (at most 8191 units): never "big".
        (u32::from_le(raw) >> 16) as usize
    } else {
        0
    }
}

/// Checks that the slot's usable bytes `[start, end)` are all zero (any old block header inside them
/// was cleared first), or reports a write after free at the first byte that is not.
#[inline(always)]
unsafe fn check_zero(start: *const u8, end: *const u8) {
    // SAFETY: the caller owns [start, end).
    unsafe {
        if any_nonzero(start, end) {
            report_dirty(start, end);
        }
    }
}

#[cold]
#[inline(never)]
unsafe fn report_dirty(start: *const u8, end: *const u8) -> ! {
    // SAFETY: the caller owns [start, end).
    let bad = unsafe { first_nonzero(start, end) };
    report(
        Fault::WriteAfterFree,
        bad.map_or(start as usize, |p| p as usize),
    )
}

/// Frames a block of `n` bytes in `slot`, of class `class`, and returns it.
///
/// # Safety
/// The slot was just taken (its bit left `avail`) from a group of class `class`, and `n` is at most
/// the class's capacity.
#[inline(always)]
pub(crate) unsafe fn enframe(slot: Slot, class: usize, n: usize) -> *mut u8 {
    // SAFETY: per the contract the slot is ours; all writes stay inside [start - 4, end).
    unsafe {
        let stride = class::stride(class);
        let g = geometry(slot.meta, slot.idx, stride);
        let raw = (g.start.sub(4) as *const u32).read_unaligned();
        // A never-used slot (no header in front of it) was never freed, so nothing can have been
        // written after a free; it is zero already (fresh mapping, or a parent slot checked or
        // cleared for its nested group). Skipping it also spares a fresh page a read fault before
        // its write fault.
        let prev = if raw == 0 {
            usize::MAX
        } else {
            let mut o = previous_offset(raw);
            // The previous block's header inside the slot is not user data: clear it first, so
            // that the check below covers every other byte in one pass. A record naming a point
            // outside the slot was not written by slab: clear nothing there, and let the scan
            // report what it finds.
            if o > 0 {
                if o * UNIT < stride - HEADER_AFTER {
                    (g.start.add(o * UNIT - 4) as *mut u32).write_unaligned(0);
                } else {
                    o = 0;
                }
            }
            if config::check_write_after_free() {
                check_zero(g.start, g.end);
            }
            o
        };
        let off = header::cycle_offset(g.start as usize, g.end as usize, n, prev, slot.fresh);
        let p = g.start.add(off * UNIT);
        // A classed group spans less than 1 MiB: offsets from its storage fit 16 bits.
        if off > 0 {
            header::write_classed(g.start, slot.idx, CODE_START, off);
        }
        let code = header::encode_size(p, g.end, n);
        header::write_classed(p, slot.idx, code, (p as usize - g.storage as usize) / UNIT);
        p
    }
}

/// Frames a slot that will hold a nested group of `span` bytes; the group memory comes back zeroed.
///
/// # Safety
/// As for [`enframe`]; `span` is at most the slot's capacity.
pub(crate) unsafe fn enframe_nested(slot: Slot, span: usize) -> *mut u8 {
    // SAFETY: as for `enframe`.
    unsafe {
        let stride = class::stride(usize::from((*slot.meta).class));
        let g = geometry(slot.meta, slot.idx, stride);
        let raw = (g.start.sub(4) as *const u32).read_unaligned();
        let o = if raw == 0 { 0 } else { previous_offset(raw) };
        if o > 0 && o * UNIT < stride - HEADER_AFTER {
            (g.start.add(o * UNIT - 4) as *mut u32).write_unaligned(0);
        }
        if config::check_write_after_free() {
            check_zero(g.start, g.end);
        } else {
            ptr::write_bytes(g.start, 0, g.end as usize - g.start as usize);
        }
        header::write(
            g.start,
            slot.idx,
            CODE_NESTED,
            (g.start as usize - g.storage as usize) / UNIT,
        );
        debug_assert!(span <= g.end as usize - g.start as usize);
        g.start
    }
}

/// Clears a validated block before its slot is marked freed: zeroes its bytes and size encoding (with
/// `zero_on_free`) and flags its header as freed.
///
/// # Safety
/// `p`, `n`, `end`, `code` describe a block that was just validated and is being freed.
#[inline]
pub(crate) unsafe fn clear(p: *mut u8, n: usize, end: *mut u8, code: u8) {
    // SAFETY: every write is inside [p - 4, end), the block's own bytes and slack.
    unsafe {
        if config::zero_on_free() {
            let reserved = end as usize - p as usize - n;
            zero(p, n + usize::from(reserved > 0));
            if code == CODE_U32 {
                ptr::write_bytes(end.sub(4), 0, 4);
            }
        }
        *p.sub(4) |= header::FLAG_FREED;
    }
}

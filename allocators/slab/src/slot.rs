//! Handing a slot out and taking it back: the work done outside any lock.
//!
//! Once a slot's bit has left `avail`, the slot belongs to the thread that took it, so framing it
//! needs no lock; likewise a free clears the block before it marks the slot freed, and never touches
//! it afterwards.
//!
//! A slot holds only user bytes: what slab knows about its block lives in the group's meta record,
//! one word per slot (`Meta::slots`, see [`info`]): the requested size, the block's offset in the
//! slot (in 16-byte units), [`LIVE`] while the block is allocated and [`USED`] once the slot has held
//! a block. When a block is smaller than its slot, the byte after it is a canary derived from the
//! secret and the address (never 0, so the classic NUL off-by-one is caught); the rest of the slack
//! is zero.
//!
//! With `zero_on_free` a free zeroes the block's bytes and its canary, so a free slot is all zero.
//! With `check_write_after_free` framing a used slot verifies that: any byte that is not zero was
//! written after the free.

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::class::{self, UNIT};
use crate::config;
use crate::fault::{report, Fault};
use crate::meta::Meta;
use crate::zero::{any_nonzero, first_nonzero, zero};

/// Slot word: the block is allocated.
pub(crate) const LIVE: u32 = 1 << 31;
/// Slot word: the slot has held a block (it may have been written; framing scans it).
pub(crate) const USED: u32 = 1 << 30;
const OFF_SHIFT: u32 = 17;
const OFF_MASK: u32 = (1 << 13) - 1;
const SIZE_MASK: u32 = (1 << OFF_SHIFT) - 1;

/// The slot word of a live block of `n` bytes `off` units into its slot.
#[inline(always)]
pub(crate) fn info(n: usize, off: usize) -> u32 {
    debug_assert!(n <= SIZE_MASK as usize && off <= OFF_MASK as usize);
    LIVE | USED | (off as u32) << OFF_SHIFT | n as u32
}

/// The requested size a slot word records.
#[inline(always)]
pub(crate) fn size_of(word: u32) -> usize {
    (word & SIZE_MASK) as usize
}

/// The block offset, in units, a slot word records.
#[inline(always)]
pub(crate) fn offset_of(word: u32) -> usize {
    ((word >> OFF_SHIFT) & OFF_MASK) as usize
}

/// A slot taken from a group, not yet framed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub meta: *mut Meta,
    pub idx: usize,
    /// Random bits for the first offset of a never-used slot.
    pub fresh: u32,
}

/// The canary byte after a block at `p` of `n` bytes: secret-derived, never 0. Only called for
/// blocks of groups or mappings with a meta record, which exist only once the secret does.
#[inline]
pub(crate) fn canary(p: usize, n: usize) -> u8 {
    let h = crate::secret::known() ^ (p as u64).rotate_left(17) ^ n as u64;
    ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8) | 1
}

/// Chooses where a block of `n` bytes goes in its slot `[start, end)`: `prev + 1` units into the
/// slack (cycling back to 0 past its end), so that a dangling pointer to the previous block no longer
/// names the new one; a never-used slot (`prev == usize::MAX`) starts at a random point. The block
/// starts inside the slot even when it is empty (`n == 0`).
#[inline]
pub(crate) fn cycle_offset(room: usize, n: usize, prev: usize, fresh: u32) -> usize {
    let slack = (room - n.max(1)) / UNIT;
    if slack == 0 {
        return 0;
    }
    if prev == usize::MAX {
        // `fresh` scaled into 0..=slack: a multiply, not a division.
        return ((u64::from(fresh) * (slack as u64 + 1)) >> 32) as usize;
    }
    let next = prev + 1;
    if next > slack {
        0
    } else {
        next
    }
}

/// Checks that the slot `[start, end)` is all zero, or reports a write after free at the first byte
/// that is not.
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
/// the class's stride.
#[inline(always)]
pub(crate) unsafe fn enframe(slot: Slot, class: usize, n: usize) -> *mut u8 {
    // SAFETY: per the contract the slot is ours; all writes stay inside [start, start + stride).
    unsafe {
        let stride = class::stride(class);
        let meta = &*slot.meta;
        let start = meta.mem.add(slot.idx * stride);
        let word = meta.slots[slot.idx & 31].load(Relaxed);
        // A never-used slot was never freed, so nothing can have been written after a free; it is
        // zero already (fresh segment memory). Skipping it also spares a fresh page a read fault
        // before its write fault.
        let prev = if word & USED == 0 {
            usize::MAX
        } else {
            if config::check_write_after_free() {
                check_zero(start, start.add(stride));
            }
            offset_of(word)
        };
        let off = cycle_offset(stride, n, prev, slot.fresh);
        let p = start.add(off * UNIT);
        if off * UNIT + n < stride {
            *p.add(n) = canary(p as usize, n);
        }
        meta.slots[slot.idx & 31].store(info(n, off), Relaxed);
        p
    }
}

/// Re-records a live block of slot `idx` of `meta` as `n` bytes at `p` (aligned allocation moves a
/// block inside its slot; realloc in place changes its size). Clears what the old size left after
/// the new end (old bytes, the old canary) so that the slack stays zero, and writes the new canary.
///
/// # Safety
/// The block is live and owned by the caller; `[start, end)` is its slot, `p` lies in it on a unit
/// boundary and `p + n <= end`; `old_end` is where the old block's bytes and canary ended.
pub(crate) unsafe fn reframe(
    meta: &Meta,
    idx: usize,
    start: *mut u8,
    end: *mut u8,
    p: *mut u8,
    n: usize,
    old_end: *mut u8,
) {
    // SAFETY: per the contract every write lies in the slot.
    unsafe {
        let tail = p.add(n);
        let old_end = old_end.min(end);
        if old_end > tail {
            core::ptr::write_bytes(tail, 0, old_end as usize - tail as usize);
        }
        if tail < end {
            *tail = canary(p as usize, n);
        }
        meta.slots[idx].store(info(n, (p as usize - start as usize) / UNIT), Relaxed);
    }
}

/// Clears a validated block before its slot is marked freed: zeroes its bytes and canary (with
/// `zero_on_free`) and records it freed, keeping its offset for the next block's cycle.
///
/// # Safety
/// `p`, `n`, `end` describe a block of slot `idx` of `meta` that was just validated and is being
/// freed.
#[inline(always)]
pub(crate) unsafe fn clear(meta: *mut Meta, idx: usize, p: *mut u8, n: usize, end: *mut u8) {
    // SAFETY: every write is inside [p, end), the block's own bytes and slack.
    unsafe {
        if config::zero_on_free() {
            zero(p, n + usize::from(p.add(n) < end));
        }
        // A group has at most 32 slots; the mask only spares a bounds check.
        let word = &(*meta).slots[idx & 31];
        // Release: a neighbour's exact-fit check that sees the slot not live sees it zeroed.
        word.store(word.load(Relaxed) & !LIVE, Release);
    }
}

/// The overflow check for a block that fills its slot exactly (no canary): the bytes after it are
/// the next slot's, which read zero when that slot is not live, or when its block starts further in.
/// Only the heap's owning thread may call this, since only it hands out slots of the group: a slot
/// it sees not live cannot be framed (and written) while it looks.
///
/// # Safety
/// `b` is a validated live block of slot `idx` in a group of `meta`, owned by the caller's heap;
/// `end` is its slot's end.
#[inline]
pub(crate) unsafe fn check_exact_fit(meta: &Meta, idx: usize, p: *mut u8, n: usize, end: *mut u8) {
    // SAFETY: per the contract; the next slot lies in the same group.
    unsafe {
        if p.add(n) != end || idx >= usize::from(meta.last_idx) || !config::zero_on_free() {
            return;
        }
        let next = meta.slots[(idx + 1) & 31].load(Acquire);
        if next & LIVE == 0 || offset_of(next) > 0 {
            let len = class::stride(usize::from(meta.class)).min(8);
            if any_nonzero(end, end.add(len)) {
                report(Fault::HeapOverflow, p as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_words_round_trip() {
        for (n, off) in [(0, 0), (16, 1), (131_056, 0), (1, 8190), (100, 4000)] {
            let w = info(n, off);
            assert_eq!((size_of(w), offset_of(w)), (n, off));
            assert_eq!(w & (LIVE | USED), LIVE | USED);
        }
    }

    #[test]
    fn canary_is_never_zero() {
        crate::secret::secret();
        for p in (0..100_000usize).step_by(16) {
            assert_ne!(canary(p, p / 3), 0);
        }
    }

    #[test]
    fn offsets_cycle_through_the_slack() {
        let mut prev = usize::MAX;
        let mut seen = [false; 3];
        for _ in 0..6 {
            prev = cycle_offset(100, 60, prev, 0);
            seen[prev] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert_eq!(cycle_offset(60, 60, 5, 9), 0);
        // An empty block still starts inside its slot.
        for fresh in [0, u32::MAX] {
            assert_eq!(cycle_offset(16, 0, usize::MAX, fresh), 0);
            assert!(cycle_offset(64, 0, usize::MAX, fresh) <= 3);
        }
    }
}

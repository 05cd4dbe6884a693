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
use crate::header::{self, Header, CODE_NESTED, CODE_START, CODE_U32, GROUP_HEADER, HEADER_AFTER};
use crate::meta::Meta;

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

unsafe fn geometry(slot: &Slot) -> Geometry {
    // SAFETY: the slot's meta is a live record; its group memory spans every slot.
    unsafe {
        let meta = &*slot.meta;
        let stride = class::stride(usize::from(meta.class));
        let storage = meta.mem.add(GROUP_HEADER);
        let start = storage.add(slot.idx * stride);
        Geometry {
            storage,
            start,
            end: start.add(stride - HEADER_AFTER),
        }
    }
}

/// Where the slot's previous block sat, in units from the slot start; `None` for a never-used slot.
unsafe fn previous_offset(start: *const u8) -> Option<usize> {
    // SAFETY: the 4 bytes before a slot start are its header area (in the group or the previous slot).
    let raw = unsafe { (start.sub(4) as *const u32).read_unaligned() };
    if raw == 0 {
        return None;
    }
    // SAFETY: as above.
    let h: Header = unsafe { header::read(start) };
    Some(if h.code == CODE_START { h.off } else { 0 })
}

/// Checks that `[from, to)` is all zero, except the 4 header bytes at `skip - 4` when `skip` is set.
#[inline]
unsafe fn check_zero(from: *const u8, to: *const u8, skip: Option<*const u8>) {
    let (a, b) = match skip {
        Some(p) => (p.wrapping_sub(4), p),
        None => (to, to),
    };
    let (first, second) = ((from, a.min(to)), (b.max(from), to));
    // SAFETY: the caller owns [from, to); both ranges are inside it.
    unsafe {
        if any_nonzero(first.0, first.1) || any_nonzero(second.0, second.1) {
            let bad = first_nonzero(first.0, first.1).or_else(|| first_nonzero(second.0, second.1));
            report(
                Fault::WriteAfterFree,
                bad.map_or(from as usize, |p| p as usize),
            );
        }
    }
}

/// True if any byte of `[from, to)` is not zero: one pass of OR-ed unaligned words with no early exit,
/// which the compiler vectorises; the rare failure is located by [`first_nonzero`].
#[inline]
unsafe fn any_nonzero(from: *const u8, to: *const u8) -> bool {
    let len = (to as usize).saturating_sub(from as usize);
    let mut acc = 0u64;
    let mut i = 0;
    // SAFETY: every read is inside [from, to).
    unsafe {
        while i + 8 <= len {
            acc |= (from.add(i) as *const u64).read_unaligned();
            i += 8;
        }
        while i < len {
            acc |= u64::from(*from.add(i));
            i += 1;
        }
    }
    acc != 0
}

unsafe fn first_nonzero(from: *const u8, to: *const u8) -> Option<*const u8> {
    if from >= to {
        return None;
    }
    let len = to as usize - from as usize;
    let mut i = 0;
    // SAFETY: every read is inside [from, to); word reads are 8-aligned.
    unsafe {
        while i < len && (from as usize + i) % 8 != 0 {
            if *from.add(i) != 0 {
                return Some(from.add(i));
            }
            i += 1;
        }
        // Whole 64-byte chunks, OR-reduced without an early exit so the loop vectorises; a dirty
        // chunk is located exactly by the loops below.
        while i + 64 <= len {
            let w = from.add(i) as *const u64;
            let mut acc = 0;
            for k in 0..8 {
                acc |= w.add(k).read();
            }
            if acc != 0 {
                break;
            }
            i += 64;
        }
        while i + 8 <= len && (from.add(i) as *const u64).read() == 0 {
            i += 8;
        }
        while i < len {
            if *from.add(i) != 0 {
                return Some(from.add(i));
            }
            i += 1;
        }
    }
    None
}

/// Frames a block of `n` bytes in `slot` and returns it.
///
/// # Safety
/// The slot was just taken (its bit left `avail`) and `n` is at most its class's capacity.
#[inline]
pub(crate) unsafe fn enframe(slot: Slot, n: usize) -> *mut u8 {
    // SAFETY: per the contract the slot is ours; all writes stay inside [start - 4, end).
    unsafe {
        let g = geometry(&slot);
        let prev = previous_offset(g.start);
        let old = prev.filter(|&o| o > 0).map(|o| g.start.add(o * UNIT));
        // A never-used slot was never freed, so nothing can have been written after a free; it is
        // zero already (fresh mapping, or a parent slot checked or cleared for its nested group).
        // Skipping it also spares a fresh page a read fault before its write fault.
        if prev.is_some() && config::check_write_after_free() {
            check_zero(g.start, g.end, old.map(|p| p as *const u8));
        }
        if let Some(old) = old {
            ptr::write_bytes(old.sub(4), 0, 4);
        }
        let off = header::cycle_offset(
            g.start as usize,
            g.end as usize,
            n,
            prev.unwrap_or(usize::MAX),
            slot.fresh,
        );
        let p = g.start.add(off * UNIT);
        if off > 0 {
            header::write(g.start, slot.idx, CODE_START, off);
        }
        header::write(p, slot.idx, 0, (p as usize - g.storage as usize) / UNIT);
        header::set_size(p, g.end, n);
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
        let g = geometry(&slot);
        let old = previous_offset(g.start)
            .filter(|&o| o > 0)
            .map(|o| g.start.add(o * UNIT));
        if config::check_write_after_free() {
            check_zero(g.start, g.end, old.map(|p| p as *const u8));
        } else {
            ptr::write_bytes(g.start, 0, g.end as usize - g.start as usize);
        }
        if let Some(old) = old {
            ptr::write_bytes(old.sub(4), 0, 4);
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
            ptr::write_bytes(p, 0, n + usize::from(reserved > 0));
            if code == CODE_U32 {
                ptr::write_bytes(end.sub(4), 0, 4);
            }
        }
        *p.sub(4) |= header::FLAG_FREED;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nonzero_finds_the_exact_byte() {
        let mut buf = [0u64; 40];
        let base = buf.as_mut_ptr() as *mut u8;
        let len = 320;
        for start in [0, 3, 8] {
            for at in [start, start + 1, 63, 64, 130, 255, 319] {
                // SAFETY: all offsets are inside the 320-byte buffer.
                unsafe {
                    core::ptr::write_bytes(base, 0, len);
                    assert_eq!(first_nonzero(base.add(start), base.add(len)), None);
                    *base.add(at) = 7;
                    assert_eq!(
                        first_nonzero(base.add(start), base.add(len)),
                        Some(base.add(at) as *const u8)
                    );
                }
            }
        }
    }
}

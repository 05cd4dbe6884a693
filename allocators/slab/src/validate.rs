//! Validation of a pointer handed back to slab: every check runs before anything is written.
//!
//! free, realloc and usable-size all start here. A pointer inside a segment (`segment.rs`) is a
//! block of a size class; from the address alone, and without reading the bytes around it, the
//! checks establish in order: it is 16-byte aligned; its segment's record carries the secret; the
//! group holding it is live and its entry names a meta record in a meta area stamped with the
//! secret, which names this group and class back; the slot's word (in the record) says a block is
//! live there and starts exactly at this address; the masks agree the slot is in use; the canary
//! after the block is intact. Any other pointer must be a large block: its in-band header must
//! lead to a record that names exactly the mapping slab made for it.

use core::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::class::{self, CLASSES, UNIT};
use crate::fault::{check, report, Fault};
use crate::header::{self, CODE_START, FLAG_BIG, FLAG_FREED, GROUP_HEADER};
use crate::meta::{self, Meta, LARGE};
use crate::segment;
use crate::slot::{self, LIVE, USED};

/// A validated block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub meta: *mut Meta,
    pub idx: usize,
    /// Start of the block's slot, and the end of the bytes it may use.
    pub start: *mut u8,
    pub end: *mut u8,
    /// The block and its requested size.
    pub p: *mut u8,
    pub n: usize,
}

/// Validates `p` or aborts with the fault found.
///
/// # Safety
/// For a pointer outside every segment, the bytes just before `p` must be readable (true of any
/// large block slab handed out, and of most other pointers; a wild pointer at the very start of a
/// mapping may fault instead of being reported).
#[inline(always)]
pub(crate) unsafe fn block(p: *mut u8) -> Block {
    // SAFETY: per the contract.
    unsafe {
        match classed(p) {
            Some(b) => b,
            None => large(p),
        }
    }
}

/// [`block`] for a block of a size class; `None` when `p` lies outside every segment, and must then
/// be checked by [`large`]. Callers on a fast path keep the two apart, so that the classed block
/// stays in registers instead of meeting the large one's result in memory.
///
/// # Safety
/// None beyond those of [`block`] for the pointers it returns `None` for.
#[inline(always)]
pub(crate) unsafe fn classed(p: *mut u8) -> Option<Block> {
    let a = p as usize;
    check(a.is_multiple_of(UNIT) && a != 0, Fault::InvalidFree, a);
    let seg = segment::find(a);
    if seg.is_null() {
        return None;
    }
    // SAFETY: the map names only live records.
    let seg = unsafe { &*seg };
    // Segments exist only once the secret does (`segment::create` makes it first).
    if seg.check != crate::secret::known() || (a ^ seg.base) >> class::SEG_SHIFT != 0 {
        report(Fault::CorruptedMetadata, a);
    }
    let class = usize::from(seg.class);
    check(class < CLASSES, Fault::CorruptedMetadata, a);
    let off = a - seg.base;
    let gi = class::group_index(class, off);
    check(gi < seg.groups as usize, Fault::InvalidFree, a);
    let entry = seg.entry(gi).load(Acquire);
    if entry & 7 != 0 || entry == 0 {
        // Released (odd: a link) or never handed out: nothing slab gave out is there now.
        report(
            if entry & 1 != 0 {
                Fault::DoubleFree
            } else {
                Fault::InvalidFree
            },
            a,
        );
    }
    match meta::check_record(entry) {
        meta::Record::Valid => {}
        meta::Record::NotMeta | meta::Record::BadCheck => report(Fault::CorruptedMetadata, a),
    }
    let m = entry as *mut Meta;
    // SAFETY: `m` is a record inside a meta area of a listed, hence mapped, region.
    let meta = unsafe { &*m };
    let span = class::span(class);
    let group = seg.base + gi * span;
    check(
        meta.mem as usize == group && usize::from(meta.class) == class,
        Fault::CorruptedMetadata,
        a,
    );
    let stride = class::stride(class);
    let idx = class::slot_index(class, off - gi * span);
    check(idx <= usize::from(meta.last_idx), Fault::InvalidFree, a);
    let start = group + idx * stride;
    let word = meta.slots[idx & 31].load(Relaxed);
    if word & LIVE == 0 {
        report(
            if word & USED != 0 {
                Fault::DoubleFree
            } else {
                Fault::InvalidFree
            },
            a,
        );
    }
    check(
        a == start + slot::offset_of(word) * UNIT,
        Fault::InvalidFree,
        a,
    );
    check(
        meta.masks.free_or_avail() & (1 << idx) == 0,
        Fault::InvalidFree,
        a,
    );
    let n = slot::size_of(word);
    let end = start + stride;
    check(a + n <= end, Fault::CorruptedMetadata, a);
    // SAFETY: p + n lies in the block's slot, which is live group memory.
    if a + n < end && unsafe { *p.add(n) } != slot::canary(a, n) {
        report(Fault::HeapOverflow, a);
    }
    Some(Block {
        meta: m,
        idx,
        start: start as *mut u8,
        end: end as *mut u8,
        p,
        n,
    })
}

/// [`block`] for a pointer outside every segment: it must be a large block.
///
/// # Safety
/// As for [`block`]; `p` is 16-byte aligned and not null ([`classed`] checked).
#[cold]
#[inline(never)]
pub(crate) unsafe fn large(p: *mut u8) -> Block {
    let a = p as usize;
    // SAFETY: per the contract.
    let h = unsafe { header::read(p) };
    check(
        h.flags & !(FLAG_BIG | FLAG_FREED) == 0 && h.off != usize::MAX && h.code != CODE_START,
        Fault::InvalidFree,
        a,
    );
    // A header marked freed means this pointer was freed already. Report it before looking at the
    // metadata, which a large block's tombstone no longer has.
    if h.flags & FLAG_FREED != 0 {
        report(Fault::DoubleFree, a);
    }
    let Some(base) = h
        .off
        .checked_mul(UNIT)
        .and_then(|d| a.checked_sub(d + GROUP_HEADER))
    else {
        report(Fault::InvalidFree, a)
    };
    // SAFETY: for blocks slab made, `base` is the mapping's group header. A forged offset may point
    // at unmapped memory, which faults rather than being reported.
    let meta_addr = unsafe { (base as *const usize).read() };
    match meta::check_record(meta_addr) {
        meta::Record::Valid => {}
        meta::Record::NotMeta => report(Fault::InvalidFree, a),
        meta::Record::BadCheck => report(Fault::CorruptedMetadata, a),
    }
    let m = meta_addr as *mut Meta;
    // SAFETY: `m` is a record inside a meta area of a listed, hence mapped, region.
    let meta = unsafe { &*m };
    check(meta.mem as usize == base, Fault::InvalidFree, a);
    // A record of a group: a block header forged outside the segments, or a stale group record.
    check(meta.class == LARGE, Fault::InvalidFree, a);
    let Some(mapping) = meta.mapping else {
        report(Fault::CorruptedMetadata, a)
    };
    check(
        h.idx == 0 && mapping.ptr().as_ptr() as usize == base,
        Fault::CorruptedMetadata,
        a,
    );
    let start = base + GROUP_HEADER;
    let end = base + mapping.len() - header::HEADER_AFTER;
    check(a >= start && a <= end, Fault::InvalidFree, a);
    // A cached block's record says its one slot is free, whatever a write after free did to the
    // header.
    check(meta.masks.free_or_avail() & 1 == 0, Fault::DoubleFree, a);
    // SAFETY: the header was validated against the meta record; [p - 4, end] is inside the mapping.
    let Some(n) = (unsafe { header::nominal_size(p, end as *const u8, h.code) }) else {
        report(Fault::HeapOverflow, a)
    };
    Block {
        meta: m,
        idx: 0,
        start: start as *mut u8,
        end: end as *mut u8,
        p,
        n,
    }
}

//! Validation of a pointer handed back to slab: every check runs before anything is written.
//!
//! free, realloc and usable-size all start here. From the pointer alone the checks establish, in order:
//! it is 16-byte aligned; its in-band header is well formed; the group header it leads to names a meta
//! record that lies in a meta area stamped with the secret; that record points back at the same group;
//! the slot index is within the group and the pointer lies inside that slot; the slot is in use (not
//! free, not waiting for reuse, not never-handed-out); and the slack after the block and the next
//! slot's header are intact. Large blocks must be the exact block slab placed in a mapping it made.

use crate::class::{self, CLASSES, UNIT};
use crate::fault::{check, report, Fault};
use crate::header::{self, CODE_NESTED, CODE_START, FLAG_BIG, FLAG_FREED, GROUP_HEADER};
use crate::meta::{self, Meta, LARGE};

/// A validated block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub meta: *mut Meta,
    pub idx: usize,
    /// Start of the group's slot storage.
    pub storage: *mut u8,
    /// Start of the block's slot, and the end of its usable bytes (the next slot's header).
    pub start: *mut u8,
    pub end: *mut u8,
    /// The block and its requested size.
    pub p: *mut u8,
    pub n: usize,
    /// The header's size code.
    pub code: u8,
}

/// What the caller is about to do with the block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A user pointer (free, realloc, usable size).
    User,
    /// slab's own release of the slot that holds a nested group.
    Nested,
}

/// Validates `p` or aborts with the fault found.
///
/// # Safety
/// The bytes just before `p` must be readable (true of any pointer slab handed out, and of most other
/// pointers; a wild pointer at the very start of a mapping may fault instead of being reported).
#[inline(always)]
pub(crate) unsafe fn block(p: *mut u8, purpose: Purpose) -> Block {
    let a = p as usize;
    check(a % UNIT == 0 && a != 0, Fault::InvalidFree, a);
    // SAFETY: per the contract.
    let word = unsafe { u32::from_le((p.sub(4) as *const u32).read_unaligned()) };
    let idx8 = (word >> 8) as u8 & 31;
    let code = (word >> 13) as u8 & 7;
    // A live block slab made in a group has no flags: check that case inline, everything else
    // (freed, big offset, garbage) out of line.
    let off = if word as u8 == 0 {
        let code_ok = match purpose {
            Purpose::User => code < CODE_NESTED,
            Purpose::Nested => code == CODE_NESTED,
        };
        check(code_ok, Fault::InvalidFree, a);
        (word >> 16) as usize
    } else {
        // SAFETY: per the contract.
        unsafe { flagged(p, purpose) }
    };
    let Some(base) = off
        .checked_mul(UNIT)
        .and_then(|d| a.checked_sub(d + GROUP_HEADER))
    else {
        report(Fault::InvalidFree, a)
    };
    // SAFETY: `base` is at most ~64 GiB below `p`; for blocks slab made it is the group header. A
    // forged offset may point at unmapped memory, which faults rather than being reported.
    let meta_addr = unsafe { (base as *const usize).read() };
    match meta::check_record(meta_addr) {
        meta::Record::Valid => {}
        meta::Record::NotMeta => report(Fault::InvalidFree, a),
        meta::Record::BadCheck => report(Fault::CorruptedMetadata, a),
    }
    let m = meta_addr as *mut Meta;
    // SAFETY: `m` is a record inside a live meta area (regions are never unmapped).
    let meta = unsafe { &*m };
    check(meta.mem as usize == base, Fault::InvalidFree, a);
    let class = meta.class;
    if usize::from(class) >= CLASSES && class != LARGE {
        report(Fault::CorruptedMetadata, a);
    }
    check(idx8 <= meta.last_idx, Fault::InvalidFree, a);
    let storage = (base + GROUP_HEADER) as *mut u8;
    let idx = usize::from(idx8);
    let (start, end) = if class == LARGE {
        let Some(mapping) = meta.mapping else {
            report(Fault::CorruptedMetadata, a)
        };
        check(
            idx == 0 && mapping.ptr().as_ptr() as usize == base,
            Fault::CorruptedMetadata,
            a,
        );
        (
            storage,
            (base + mapping.len() - header::HEADER_AFTER) as *mut u8,
        )
    } else {
        let stride = class::stride(usize::from(class));
        let start = storage as usize + idx * stride;
        (
            start as *mut u8,
            (start + stride - header::HEADER_AFTER) as *mut u8,
        )
    };
    check(
        a >= start as usize && a <= end as usize,
        Fault::InvalidFree,
        a,
    );

    let bit = 1u32 << idx;
    check(meta.masks.free_or_avail() & bit == 0, Fault::InvalidFree, a);
    let n = match purpose {
        // A nested group's size is known from its own record; its slot carries no slack encoding.
        Purpose::Nested => 0,
        // SAFETY: the header was validated against the meta record; [p - 4, end] is inside the slot
        // (or the large mapping) and readable.
        Purpose::User => match unsafe { header::nominal_size(p, end, code) } {
            Some(n) => n,
            None => report(Fault::HeapOverflow, a),
        },
    };
    Block {
        meta: m,
        idx,
        storage,
        start,
        end,
        p,
        n,
        code,
    }
}

/// The header checks of [`block`] for a header with flags set: a freed block (double free), a
/// block placed more than 1 MiB into its group (big offset), or not a header at all. Returns the
/// block's offset from its group's storage, in units.
///
/// # Safety
/// As for [`block`].
#[cold]
#[inline(never)]
unsafe fn flagged(p: *mut u8, purpose: Purpose) -> usize {
    let a = p as usize;
    // SAFETY: per the contract.
    let h = unsafe { header::read(p) };
    let code_ok = match purpose {
        Purpose::User => h.code != CODE_START && h.code != CODE_NESTED,
        Purpose::Nested => h.code == CODE_NESTED,
    };
    check(
        h.flags & !(FLAG_BIG | FLAG_FREED) == 0 && h.off != usize::MAX && code_ok,
        Fault::InvalidFree,
        a,
    );
    // A header marked freed means this pointer was freed already. Report it before looking at the
    // metadata, which a large block's tombstone no longer has.
    if h.flags & FLAG_FREED != 0 {
        report(Fault::DoubleFree, a);
    }
    h.off
}

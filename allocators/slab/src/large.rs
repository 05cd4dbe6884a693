//! Large blocks: requests above the largest class, and alignments the classes cannot serve.
//!
//! Each gets its own mapping with a PROT_NONE guard page on both sides, laid out like a one-slot group
//! (`[group header][block...][4 bytes]`) with a meta record of class [`LARGE`], so the same validation
//! applies: the header must lead to a record that names exactly this mapping. The block sits at a
//! random 16-byte offset within the mapping's final partial page. realloc between large sizes is an
//! mremap through the page backend, which moves pages rather than copying and keeps the guards.
//! Large blocks are unmapped on free, so freed memory is never reused in place and needs no zeroing.
//! Only the first pages, up to the block's header, stay behind for a while as a *tombstone* with the
//! header marked freed: a second free of the pointer then reads "freed" and is reported as a double
//! free instead of faulting on unmapped memory. The last 64 tombstones are kept (each at most 64 KiB
//! of address space, one touched page); `trim` unmaps them all.
//!
//! All large blocks are on one list (under its own lock, taken only around mmap-sized work) so that
//! statistics can find them.

use core::ptr;

use twinheap_page::{map, page_size, MapOptions, Mapping, Mutex};

use crate::class::UNIT;
use crate::header::{self, GROUP_HEADER, HEADER_AFTER};
use crate::meta::{self, Meta, LARGE};
use crate::validate::Block;

struct List(*mut Meta);
// SAFETY: the list names process-global records; the Mutex serialises access.
unsafe impl Send for List {}

static LIST: Mutex<List> = Mutex::new(List(ptr::null_mut()));

/// Allocates a large block of `n` bytes aligned to `align` (a power of two); null when out of memory.
pub(crate) fn alloc(n: usize, align: usize, fresh: u32) -> *mut u8 {
    let page = page_size();
    // An alignment above 16 places the block `align` bytes into an `align`-aligned mapping; otherwise
    // the block gets a random offset within the slack of the last page.
    let lead = if align > UNIT { align } else { GROUP_HEADER };
    let Some(need) = n.checked_add(lead + HEADER_AFTER) else {
        return ptr::null_mut();
    };
    let opts = MapOptions::new().guards(true, true).align(align.max(page));
    let Ok(mapping) = map(need, &opts) else {
        return ptr::null_mut();
    };
    let Some(m) = meta::alloc(false) else {
        // SAFETY: the mapping was just made and is unused.
        let _ = unsafe { mapping.unmap() };
        return ptr::null_mut();
    };
    let base = mapping.ptr().as_ptr();
    let storage = base as usize + GROUP_HEADER;
    let end = base as usize + mapping.len() - HEADER_AFTER;
    let p = if align > UNIT {
        base as usize + align
    } else {
        let slack_units = ((end - storage - n) / UNIT).min(page / UNIT - 1);
        storage + (fresh as usize % (slack_units + 1)) * UNIT
    };
    // SAFETY: `m` is a fresh record; every write is inside the mapping.
    unsafe {
        let meta = &mut *m;
        meta.mem = base;
        meta.class = LARGE;
        meta.mapping = Some(mapping);
        (base as *mut *mut Meta).write(m);
        if p != storage {
            // A slot-start record says where the block sits, as in classed slots.
            header::write(
                storage as *mut u8,
                0,
                header::CODE_START,
                (p - storage) / UNIT,
            );
        }
        header::write(p as *mut u8, 0, 0, (p - storage) / UNIT);
        header::set_size(p as *mut u8, end as *mut u8, n);
        link(m);
    }
    p as *mut u8
}

/// Frees a validated large block: the mapping goes back to the OS at once.
///
/// # Safety
/// `b` was validated as a large block and is not used again.
pub(crate) unsafe fn free(b: &Block) {
    // SAFETY: per the contract the record and mapping are ours.
    unsafe {
        let m = b.meta;
        unlink(m);
        let mapping = (*m).mapping;
        meta::free(m);
        *b.p.sub(4) |= header::FLAG_FREED;
        if let Some(mapping) = mapping {
            bury(mapping, b.p as usize - mapping.ptr().as_ptr() as usize);
        }
    }
}

const TOMBSTONES: usize = 64;
const TOMBSTONE_MAX: usize = 64 << 10;

struct Tombstones {
    ring: [Option<Mapping>; TOMBSTONES],
    next: usize,
}

static TOMBS: Mutex<Tombstones> = Mutex::new(Tombstones {
    ring: [None; TOMBSTONES],
    next: 0,
});

/// Shrinks a freed block's mapping to the pages holding its header and keeps that as a tombstone,
/// unmapping the oldest one; blocks whose header lies deeper than 64 KiB are simply unmapped.
unsafe fn bury(mapping: Mapping, header_end: usize) {
    let keep = header_end.next_multiple_of(page_size());
    let evicted = if keep > TOMBSTONE_MAX || keep >= mapping.len() {
        Some(mapping)
    } else {
        // SAFETY: the block is freed; only its header page is kept, through the backend's shrink.
        match unsafe { mapping.remap(keep) } {
            Ok(tomb) => {
                let mut tombs = TOMBS.lock();
                let at = tombs.next;
                tombs.next = (at + 1) % TOMBSTONES;
                tombs.ring[at].replace(tomb)
            }
            Err(_) => Some(mapping),
        }
    };
    if let Some(old) = evicted {
        // SAFETY: nothing refers to an evicted tombstone or a freed block's mapping.
        let _ = unsafe { old.unmap() };
    }
}

/// Unmaps every tombstone; true if there were any.
pub(crate) fn flush_tombstones() -> bool {
    let mut any = false;
    loop {
        let tomb = {
            let mut tombs = TOMBS.lock();
            tombs.ring.iter_mut().find_map(Option::take)
        };
        let Some(tomb) = tomb else { return any };
        any = true;
        // SAFETY: a tombstone holds only a freed block's header.
        let _ = unsafe { tomb.unmap() };
    }
}

/// Bytes held by tombstones, for statistics.
pub(crate) fn tombstone_bytes() -> usize {
    TOMBS.lock().ring.iter().flatten().map(Mapping::len).sum()
}

/// Resizes a validated large block to `n` bytes (still large), keeping its contents and offset.
/// Returns null (leaving the block intact) when the OS refuses.
///
/// # Safety
/// `b` was validated as a large block; on success only the returned pointer is valid.
pub(crate) unsafe fn realloc(b: &Block, n: usize) -> *mut u8 {
    // SAFETY: per the contract; the list lock keeps statistics off the record while it changes.
    unsafe {
        let m = b.meta;
        let Some(mapping) = (*m).mapping else {
            return ptr::null_mut();
        };
        let lead = b.p as usize - mapping.ptr().as_ptr() as usize;
        let Some(need) = n.checked_add(lead + HEADER_AFTER) else {
            return ptr::null_mut();
        };
        let _list = LIST.lock();
        let Ok(moved) = mapping.remap(need) else {
            return ptr::null_mut();
        };
        let base = moved.ptr().as_ptr();
        (*m).mem = base;
        (*m).mapping = Some(moved);
        let p = base.add(lead);
        let end = base.add(moved.len() - HEADER_AFTER);
        // Shrinking leaves old data where the next-header byte now is; it must read clean.
        *end = 0;
        if p.add(n) < end {
            *p.add(n) = 0;
        }
        header::set_size(p, end, n);
        p
    }
}

unsafe fn link(m: *mut Meta) {
    let mut list = LIST.lock();
    // SAFETY: list members are live large records; the lock is held.
    unsafe {
        (*m).all_next = list.0;
        if !list.0.is_null() {
            (*list.0).all_prev = m;
        }
    }
    list.0 = m;
}

unsafe fn unlink(m: *mut Meta) {
    let mut list = LIST.lock();
    // SAFETY: `m` is on the list; the lock is held.
    unsafe {
        let (prev, next) = ((*m).all_prev, (*m).all_next);
        if prev.is_null() {
            list.0 = next;
        } else {
            (*prev).all_next = next;
        }
        if !next.is_null() {
            (*next).all_prev = prev;
        }
    }
}

/// Calls `f` on every large block's record, under the list lock.
pub(crate) fn for_each(mut f: impl FnMut(&Meta)) {
    let list = LIST.lock();
    let mut m = list.0;
    while !m.is_null() {
        // SAFETY: list members are live while the lock is held.
        unsafe {
            f(&*m);
            m = (*m).all_next;
        }
    }
}

/// The list and tombstone locks, for fork handlers.
pub(crate) fn fork_locks() -> [&'static twinheap_page::Lock; 2] {
    [LIST.raw(), TOMBS.raw()]
}

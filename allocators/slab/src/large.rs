//! Large blocks: requests above the largest class, and alignments the classes cannot serve.
//!
//! Each gets its own growable mapping from the page backend (`map_growable`): a PROT_NONE guard page
//! before it, and PROT_NONE address space reserved after it (twice the block's pages), whose first
//! page is the guard after the block. It is laid out like a one-slot group (`[group header][block...]
//! [4 bytes]`) with a meta record of class [`LARGE`], so the same validation applies: the header must
//! lead to a record that names exactly this mapping, whose usable length is the block's pages. The
//! block sits at a random 16-byte offset within the mapping's final partial page (aligned blocks at
//! `align` bytes in).
//!
//! realloc between large sizes resizes the mapping: growth within the reserved room is one
//! mprotect in place; beyond it the pages move (mremap, no copy) into a reservation twice the new
//! size, so a buffer grown step by step moves O(log n) times; shrinking discards the tail.
//!
//! Freed blocks go to the cache (`cache.rs`) when it has room: header and record marked freed,
//! contents zeroed (with `slab.zero_on_free`) or closed PROT_NONE, header page read-only, and reused
//! by a later request of a similar size with one mprotect. With `slab.protect_freed_large` off, a
//! block zeroed with stores stays read-write and its reuse scans it for writes after free instead.
//! Blocks the cache does not take (larger than its cap, evicted, or the cache off) are unmapped,
//! except the pages up to the block's header, which stay behind for a while as a *tombstone* with
//! the header marked freed: a second free of the pointer then reads "freed" and is reported as a
//! double free instead of faulting on unmapped memory. The last 64 tombstones are kept (each at
//! most 64 KiB of address space, one touched page); `trim` empties the cache and unmaps the
//! tombstones.
//!
//! All live large blocks are on one list (under its own lock) so that statistics can find them.

use core::ptr;

use twinheap_page::{map_growable, page_size, Access, Mapping, Mutex};

use crate::cache::{self, Entry};
use crate::class::UNIT;
use crate::config;
use crate::fault::{report, Fault};
use crate::header::{self, GROUP_HEADER, HEADER_AFTER};
use crate::meta::{self, Meta, LARGE};
use crate::validate::Block;
use crate::zero::{any_nonzero, first_nonzero};

struct List(*mut Meta);
// SAFETY: the list names process-global records; the Mutex serialises access.
unsafe impl Send for List {}

static LIST: Mutex<List> = Mutex::new(List(ptr::null_mut()));

/// Allocates a large block of `n` bytes aligned to `align` (a power of two); null when out of memory.
/// With `zero` the block reads all zero (calloc); otherwise a reused block may hold old data unless
/// `slab.zero_on_free` cleared it at free.
pub(crate) fn alloc(n: usize, align: usize, fresh: u32, zero: bool) -> *mut u8 {
    let page = page_size();
    // An alignment above 16 places the block `align` bytes into an `align`-aligned mapping; otherwise
    // the block gets a random offset within the slack of the last page.
    let lead = if align > UNIT { align } else { GROUP_HEADER };
    let Some(len) = n
        .checked_add(lead + HEADER_AFTER)
        .and_then(cache::mapping_len)
    else {
        return ptr::null_mut();
    };
    let align = align.max(page);
    if let Some(e) = cache::take(len, align) {
        // SAFETY: the entry left the cache, so it is ours alone.
        let p = unsafe { reuse(e, n, lead, len, fresh, zero) };
        if !p.is_null() {
            return p;
        }
    }
    // Room to grow in place by as much again; without it if address space is short.
    let room = len.checked_mul(2).unwrap_or(len);
    let Ok(mapping) = map_growable(len, room, align).or_else(|_| map_growable(len, len, align))
    else {
        return ptr::null_mut();
    };
    let Some(m) = meta::alloc(false) else {
        // SAFETY: the mapping was just made and is unused.
        let _ = unsafe { mapping.unmap() };
        return ptr::null_mut();
    };
    // SAFETY: `m` is a fresh record and `mapping` a fresh mapping of `len >= n + lead + 4` bytes.
    unsafe { place(m, mapping, n, lead, fresh, None) }
}

/// Lays a block of `n` bytes out in `mapping` (`lead` is `align` for aligned blocks, else the group
/// header's size), fills in the record and links it. `prev` is where the mapping's previous block
/// sat, so that a reused mapping puts the new block elsewhere when it can.
///
/// # Safety
/// `m` and `mapping` are ours alone; the mapping is read-write and holds `n + lead + 4` bytes.
unsafe fn place(
    m: *mut Meta,
    mapping: Mapping,
    n: usize,
    lead: usize,
    fresh: u32,
    prev: Option<usize>,
) -> *mut u8 {
    let page = page_size();
    let base = mapping.ptr().as_ptr();
    let storage = base as usize + GROUP_HEADER;
    let end = base as usize + mapping.len() - HEADER_AFTER;
    let p = if lead > GROUP_HEADER {
        base as usize + lead
    } else {
        let slack_units = ((end - storage - n) / UNIT).min(page / UNIT - 1);
        let mut k = fresh as usize % (slack_units + 1);
        if prev == Some(GROUP_HEADER + k * UNIT) {
            k = (k + 1) % (slack_units + 1);
        }
        storage + k * UNIT
    };
    // SAFETY: per the contract; every write is inside the mapping.
    unsafe {
        let meta = &mut *m;
        meta.mem = base;
        meta.class = LARGE;
        // In use (a reused record was marked free when its block was cached).
        meta.masks.init(0, 0);
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
        if prev.is_some() {
            // A reused mapping may hold old bytes where the size encoding is read back.
            (end as *mut u32).write_unaligned(0);
        }
        header::set_size(p as *mut u8, end as *mut u8, n);
        link(m);
    }
    p as *mut u8
}

/// Hands a cached block out again for `n` bytes in `len` bytes of mapping; null (the entry disposed
/// of) if its mapping cannot be opened.
///
/// # Safety
/// `e` was taken from the cache and is ours alone.
unsafe fn reuse(e: Entry, n: usize, lead: usize, len: usize, fresh: u32, zero: bool) -> *mut u8 {
    // SAFETY: per the contract; the entry's mapping is live, closed by `protect` unless open.
    unsafe {
        let old = e.mapping.ptr().as_ptr();
        if e.open && config::check_write_after_free() {
            // Everything after the freed block's header was zeroed at free and has stayed writable.
            let (from, to) = (old.add(e.lead), old.add(e.mapping.len()));
            if any_nonzero(from, to) {
                let bad = first_nonzero(from, to).map_or(from as usize, |b| b as usize);
                report(Fault::WriteAfterFree, bad);
            }
        }
        let same_len = len.next_multiple_of(page_size()) == e.mapping.len();
        let reopened = if e.open && same_len {
            Ok(e.mapping)
        } else {
            e.mapping.reopen(len, e.cleared)
        };
        let Ok(mapping) = reopened else {
            dispose(e, false);
            return ptr::null_mut();
        };
        let base = mapping.ptr().as_ptr();
        // The freed block's header and slot-start record: the new block may sit elsewhere. (A
        // header past the new length went with the discarded pages.)
        if e.lead <= mapping.len() {
            ptr::write_bytes(base.add(e.lead - 8), 0, 8);
        }
        ptr::write_bytes(base.add(GROUP_HEADER - 4), 0, 4);
        let p = place(e.meta, mapping, n, lead, fresh, Some(e.lead));
        if zero && !e.zeroed {
            // Old contents survive only in the entry's former length.
            let dirty_end = base as usize + e.mapping.len().min(len);
            if (p as usize) < dirty_end {
                ptr::write_bytes(p, 0, (dirty_end - p as usize).min(n));
            }
        }
        p
    }
}
/// Frees a validated large block: into the cache when it takes it, else back to the OS.
///
/// # Safety
/// `b` was validated as a large block and is not used again.
pub(crate) unsafe fn free(b: &Block) {
    // SAFETY: per the contract the record and mapping are ours.
    unsafe {
        let m = b.meta;
        unlink(m);
        *b.p.sub(4) |= header::FLAG_FREED;
        let Some(mapping) = (*m).mapping else {
            meta::free(m);
            return;
        };
        let base = mapping.ptr().as_ptr();
        let lead = b.p as usize - base as usize;
        let cap = config::large_cache();
        if mapping.is_growable() && mapping.len() <= cap {
            if let Some(e) = close(m, mapping, lead) {
                for e in cache::put(e, cap).iter() {
                    dispose(e, false);
                }
                return;
            }
        }
        meta::free(m);
        bury(mapping, lead);
    }
}

/// Makes a freed block's mapping ready for the cache: old contents unreadable, every byte
/// unwritable, the header page readable (it says "freed"). None when the kernel refuses.
///
/// # Safety
/// The block at `lead` bytes into `mapping` was just freed; its header is marked.
unsafe fn close(m: *mut Meta, mapping: Mapping, lead: usize) -> Option<Entry> {
    let base = mapping.ptr().as_ptr();
    let zeroed = config::zero_on_free();
    let header_pages = lead.next_multiple_of(page_size());
    // With zero-on-free a block whose pages are mostly resident is cleared with stores and stays
    // readable (no page faults when it is reused); a sparsely used one has the pages past its
    // header page dropped instead (stores would fault in every page the program never touched;
    // dropped pages read zero and cost a fault only when used again). Either way it reads zero.
    // Without zero-on-free only the bytes after the header in its page are cleared (that page
    // stays readable) and the rest is closed with its contents.
    let stored = zeroed
        && mapping
            .resident(header_pages, mapping.len())
            .is_some_and(|r| 2 * r * page_size() >= mapping.len() - header_pages);
    let readable = if stored { mapping.len() } else { header_pages };
    // Without `protect_freed_large` a block cleared with stores stays writable: reuse scans it.
    let open = stored && !config::protect_freed_large();
    // SAFETY: [lead, readable) lies in the freed block's mapping, which is ours; the record is ours
    // too (the block left the live list).
    let protected = unsafe {
        // The record says "free" as well, so that a second free is found even when a write after
        // free cleared the header's freed flag (the header page may be writable).
        (*m).masks.init(1, 1);
        ptr::write_bytes(base.add(lead), 0, readable - lead);
        let len = mapping.len();
        if open {
            Ok(())
        } else if stored {
            mapping.protect(0, len, Access::Read)
        } else if zeroed {
            mapping
                .clear(readable)
                .and_then(|()| mapping.protect(0, readable, Access::Read))
        } else {
            mapping
                .protect(readable, len, Access::None)
                .and_then(|()| mapping.protect(0, readable, Access::Read))
        }
    };
    protected.ok().map(|()| Entry {
        meta: m,
        mapping,
        lead,
        zeroed,
        open,
        cleared: if zeroed && !stored {
            readable
        } else {
            mapping.len()
        },
    })
}

/// Gives a block that leaves the cache back: its record to the pool, its mapping to the OS (as a
/// tombstone unless `whole`).
///
/// # Safety
/// `e` left the cache and is ours alone.
unsafe fn dispose(e: Entry, whole: bool) {
    // SAFETY: per the contract.
    unsafe {
        meta::free(e.meta);
        if whole {
            let _ = e.mapping.unmap();
        } else {
            bury(e.mapping, e.lead);
        }
    }
}

/// Empties the cache and unmaps every tombstone; true if anything was released.
pub(crate) fn trim() -> bool {
    let mut any = false;
    for e in cache::drain().iter() {
        any = true;
        // SAFETY: drained entries are ours alone; trim unmaps tombstones anyway, so none is kept.
        unsafe { dispose(e, true) };
    }
    flush_tombstones() || any
}

/// Bytes held by cached blocks (usable lengths), and their number.
pub(crate) fn cached() -> (usize, usize) {
    cache::held()
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
        // SAFETY: the block is freed; only the pages up to its header are kept.
        match unsafe { mapping.truncate(keep) } {
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
fn flush_tombstones() -> bool {
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
        // A record reused from the cache still holds its old links.
        (*m).all_prev = ptr::null_mut();
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

/// The list, cache and tombstone locks, for fork handlers.
pub(crate) fn fork_locks() -> [&'static twinheap_page::Lock; 3] {
    [LIST.raw(), cache::lock(), TOMBS.raw()]
}

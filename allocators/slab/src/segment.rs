//! Segments: where groups live, and how a pointer finds its group without reading user memory.
//!
//! Every group lives in a *segment*: a 1 MiB mapping aligned to 1 MiB that holds groups of one size
//! class side by side, each exactly `class::span(class)` bytes (its slots, nothing else). A record
//! per segment ([`Seg`]), in a guarded region of records away from user memory (`records.rs`),
//! holds a check word equal to the process secret, the segment's address and class, and one entry
//! per group: the group's meta record while a heap owns it, a link in the segment's stack of released groups after that. A
//! two-level map from address bits to records answers "which segment holds this address?" with two
//! loads and without touching the address itself; the group and slot indexes then follow by
//! multiplying with precomputed inverses (`class.rs`). So nothing about a block is stored next to
//! it, a 48-byte block takes a 48-byte slot, and no in-band byte can steer a free.
//!
//! Invariants:
//! - the map names a record only while its segment is mapped (the entry is cleared, under the class
//!   lock, before the segment is unmapped);
//! - an entry holds a meta pointer from the moment its group is complete until the group is
//!   released; it is 0 while the group is being set up or was never used, and odd (a link) while
//!   the group is released;
//! - a segment's counters and lists change only under its class's lock; entries are atomics that
//!   the free path reads without it;
//! - a released group's memory is never touched by slab until a heap takes the group again; with
//!   `zero_on_free` it is all zero (every slot was cleared when freed);
//! - a segment whose groups are all released is unmapped, unless it is its class's current one
//!   (the one new groups come from), which stays until trim as hysteresis.
//!
//! Released groups spanning whole pages are kept resident, process-wide, up to [`RESIDENT_CAP`]
//! bytes (a heap of another thread often needs a group moments later); beyond that their pages go
//! back to the OS (MADV_DONTNEED) before they join the stack. Trim gives back the pages of every
//! released group and unmaps every empty segment.
//!
//! Locks: a class lock may be taken while a heap lock is held (a group created under it), never the
//! other way round, and never together with the meta pool's lock.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{
    AtomicUsize,
    Ordering::{Relaxed, Release},
};

use twinheap_page::{map, page_size, MapOptions, Mapping, Mutex};

use crate::class::{self, CLASSES, SEG_SHIFT};
use crate::meta::Meta;
use crate::records;
use crate::segmap::Map;

/// Bytes of a segment.
pub(crate) const SEG: usize = 1 << SEG_SHIFT;
/// Map entries per leaf: a leaf covers 4 GiB of address space.
const LEAF: usize = 1 << 12;
/// Leaves cover the 47-bit user address space of x86_64 and AArch64 Linux.
const TOP: usize = (1 << (47 - SEG_SHIFT)) / LEAF;

/// Bytes of released groups' pages kept resident for reuse, process-wide; see the module docs.
pub(crate) const RESIDENT_CAP: usize = 2 << 20;

/// Released-entry bits: the entry is a link; the group's pages are counted as resident; its memory
/// is as the group left it (not given back to the OS), so the next group scans each slot before
/// its first block (catching writes after the release) — a group whose pages were dropped reads
/// zero, and scanning it would only map the zero page and copy it at the first write (a TLB
/// shootdown on every core running the process).
const RELEASED: usize = 1;
const RESIDENT: usize = 2;
const KEPT: usize = 4;
const LINK_SHIFT: u32 = 3;

/// Segment number to record (`segmap.rs`).
static MAP: Map<Seg, TOP, LEAF> = Map::new();

/// Bytes of segments mapped, and of released groups kept resident (records count in `records.rs`).
static MAPPED: AtomicUsize = AtomicUsize::new(0);
static RESIDENT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// One segment's out-of-band record; its group entries follow it in the same mapping.
#[repr(C)]
pub(crate) struct Seg {
    /// The process secret; a record without it was overwritten.
    pub(crate) check: u64,
    /// The segment's first byte (aligned to [`SEG`]).
    pub(crate) base: usize,
    pub(crate) class: u8,
    /// Groups that fit.
    pub(crate) groups: u32,
    // Under the class lock:
    /// Groups from here on were never handed out.
    next: u32,
    /// Groups held by heaps (taken and not put back).
    live: u32,
    /// Top of the released groups' stack: index + 1, 0 when empty.
    free_top: u32,
    on_partial: bool,
    partial_prev: *mut Seg,
    partial_next: *mut Seg,
    all_next: *mut Seg,
    all_prev: *mut Seg,
    mem: Mapping,
    /// This record's memory, to give back with the segment.
    record: records::Record,
}

/// Offset of the first group entry from the record.
const ENTRIES_AT: usize = size_of::<Seg>().next_multiple_of(64);

impl Seg {
    /// The entry of group `gi` (`gi < groups`).
    #[inline(always)]
    pub(crate) fn entry(&self, gi: usize) -> &AtomicUsize {
        debug_assert!(gi < self.groups as usize);
        // SAFETY: the record's mapping holds `groups` entries after ENTRIES_AT (see `create`).
        unsafe {
            &*((self as *const Seg as *const u8).add(ENTRIES_AT + gi * 8) as *const AtomicUsize)
        }
    }

    /// First byte of group `gi`.
    #[inline(always)]
    pub(crate) fn group(&self, gi: usize) -> *mut u8 {
        (self.base + gi * class::span(usize::from(self.class))) as *mut u8
    }
}

/// A class's segments.
struct Class {
    /// Where never-used groups come from.
    current: *mut Seg,
    /// Segments with released groups (a doubly linked list).
    partial: *mut Seg,
    /// Every segment of the class.
    all: *mut Seg,
}

// SAFETY: the pointers name process-global records; the Mutex serialises access.
unsafe impl Send for Class {}

static CLASS: [Mutex<Class>; CLASSES] = [const {
    Mutex::new(Class {
        current: ptr::null_mut(),
        partial: ptr::null_mut(),
        all: ptr::null_mut(),
    })
}; CLASSES];

/// The record of the segment holding address `a`, or null when `a` is in no segment.
#[inline(always)]
pub(crate) fn find(a: usize) -> *mut Seg {
    MAP.get(a >> SEG_SHIFT)
}

/// Memory for a new group of `class`: its first byte, and whether it holds what a released group
/// left (then its slots may have been written since: with `zero_on_free` they read zero, but only a
/// scan proves it; memory given back to the OS, or never used, reads zero).
/// `try_only`: wait for no lock (a call re-entered from a signal handler).
pub(crate) fn take(class: usize, try_only: bool) -> Option<(*mut u8, bool)> {
    let lock = &CLASS[class];
    let mut c = if try_only {
        lock.try_lock()?
    } else {
        lock.lock()
    };
    // Released groups first: the current segment's never-used tail stays untouched.
    if !c.partial.is_null() {
        let seg = c.partial;
        // SAFETY: listed records are live; the class lock is held.
        unsafe {
            let s = &mut *seg;
            let gi = s.free_top as usize - 1;
            let e = s.entry(gi).load(Relaxed);
            s.free_top = (e >> LINK_SHIFT) as u32;
            if s.free_top == 0 {
                unlink_partial(&mut c, seg);
            }
            s.live += 1;
            s.entry(gi).store(0, Relaxed);
            if e & RESIDENT != 0 {
                RESIDENT_BYTES.fetch_sub(class::span(class), Relaxed);
            }
            return Some((s.group(gi), e & KEPT != 0));
        }
    }
    let mut seg = c.current;
    // SAFETY: as above.
    if seg.is_null() || unsafe { (*seg).next >= (*seg).groups } {
        seg = create(class, try_only)?;
        // SAFETY: a fresh record, ours under the class lock.
        unsafe {
            (*seg).all_next = c.all;
            if !c.all.is_null() {
                (*c.all).all_prev = seg;
            }
        }
        c.all = seg;
        c.current = seg;
    }
    // SAFETY: as above.
    unsafe {
        let s = &mut *seg;
        let gi = s.next as usize;
        s.next += 1;
        s.live += 1;
        Some((s.group(gi), false))
    }
}

/// Makes group `mem` findable: from now on a free of a pointer into it reaches `meta`.
///
/// # Safety
/// `mem` came from [`take`] and `meta` is its complete record.
pub(crate) unsafe fn publish(mem: *mut u8, meta: *mut Meta) {
    // SAFETY: `take` handed out a group of a live segment.
    unsafe {
        let s = &*find(mem as usize);
        let gi = class::group_index(usize::from(s.class), mem as usize - s.base);
        s.entry(gi).store(meta as usize, Release);
    }
}

/// Takes group `mem` of `class` back: no slot of it is in use and nothing refers to it any more.
/// `dirty` bounds the bytes its slots may have written (its activated slots).
///
/// # Safety
/// `mem` came from [`take`] for `class`, and the caller gives it up.
pub(crate) unsafe fn put(mem: *mut u8, class: usize, dirty: usize) {
    let span = class::span(class);
    let page = page_size();
    // Whole pages inside the group that it may have written.
    let from = (mem as usize).next_multiple_of(page);
    let to = (mem as usize + dirty.min(span)) & !(page - 1);
    // The resident count changes only under a class lock, like the flags that carry it, so that
    // a fork (which takes every class lock) never leaves the child a count no group accounts for.
    let mut c = CLASS[class].lock();
    let mut resident = false;
    let mut kept = true;
    if to > from {
        let held = RESIDENT_BYTES.fetch_add(span, Relaxed);
        if held + span <= RESIDENT_CAP {
            resident = true;
        } else {
            RESIDENT_BYTES.fetch_sub(span, Relaxed);
            kept = false;
            drop(c);
            // Before the group joins the stack (once there, another heap may take it), and
            // without the lock (a syscall).
            // SAFETY: the group is ours alone and its contents are not needed; the pages read
            // zero afterwards, as a released group's must (with zero_on_free).
            let _ = unsafe {
                twinheap_page::release(from as *mut u8, to - from, twinheap_page::Release::DontNeed)
            };
            c = CLASS[class].lock();
        }
    }
    let seg = find(mem as usize);
    // SAFETY: the group's segment is live while the group is held; the class lock is held.
    let unmap = unsafe {
        let s = &mut *seg;
        let gi = class::group_index(class, mem as usize - s.base);
        let flags = RELEASED | if resident { RESIDENT } else { 0 } | if kept { KEPT } else { 0 };
        s.entry(gi)
            .store((s.free_top as usize) << LINK_SHIFT | flags, Release);
        s.free_top = gi as u32 + 1;
        if !s.on_partial {
            link_partial(&mut c, seg);
        }
        s.live -= 1;
        s.live == 0 && seg != c.current
    };
    if unmap {
        // SAFETY: every group of the segment is released; the lock is held.
        unsafe { detach(&mut c, seg) };
        drop(c);
        // SAFETY: detached: no list and no map entry names it, no heap holds a group of it.
        unsafe { destroy(seg) };
    }
}

/// Gives back the pages of every released group and unmaps every segment with no group in use.
/// Returns true if anything was released.
pub(crate) fn trim() -> bool {
    let mut any = false;
    let page = page_size();
    for (class, lock) in CLASS.iter().enumerate() {
        let span = class::span(class);
        let mut c = lock.lock();
        let mut seg = c.all;
        let mut empty: *mut Seg = ptr::null_mut();
        while !seg.is_null() {
            // SAFETY: listed records are live; the class lock is held, so no group changes hands.
            unsafe {
                let next = (*seg).all_next;
                if (*seg).live == 0 {
                    detach(&mut c, seg);
                    (*seg).all_next = empty;
                    empty = seg;
                } else if (*seg).free_top != 0 {
                    any |= release_runs(&*seg, span, page);
                }
                seg = next;
            }
        }
        drop(c);
        while !empty.is_null() {
            // SAFETY: detached under the lock; nothing refers to it any more.
            unsafe {
                let next = (*empty).all_next;
                destroy(empty);
                empty = next;
            }
            any = true;
        }
    }
    // Regions of records whose segments are all gone.
    any |= records::trim();
    any
}

/// Gives back the pages lying wholly inside runs of released groups of `s` (below its never-used
/// tail, which was never touched). Class lock held.
unsafe fn release_runs(s: &Seg, span: usize, page: usize) -> bool {
    let mut any = false;
    let used = s.next as usize;
    let mut gi = 0;
    while gi < used {
        if s.entry(gi).load(Relaxed) & RELEASED == 0 {
            gi += 1;
            continue;
        }
        let first = gi;
        while gi < used && s.entry(gi).load(Relaxed) & RELEASED != 0 {
            gi += 1;
        }
        let from = (s.base + first * span).next_multiple_of(page);
        let to = (s.base + gi * span) & !(page - 1);
        // SAFETY: released groups are the class's alone (lock held) and unused.
        let dropped = to > from
            && unsafe {
                twinheap_page::release(from as *mut u8, to - from, twinheap_page::Release::DontNeed)
            }
            .is_ok();
        any |= dropped;
        for k in first..gi {
            let mut e = s.entry(k).load(Relaxed);
            if e & RESIDENT != 0 {
                e &= !RESIDENT;
                RESIDENT_BYTES.fetch_sub(span, Relaxed);
            }
            let (start, end) = (s.base + k * span, s.base + (k + 1) * span);
            if dropped && start >= from && end <= to {
                e &= !KEPT;
            }
            s.entry(k).store(e, Relaxed);
        }
    }
    any
}

/// Maps a segment of `class` and its record, and enters it in the map. `try_only`: wait for no lock.
fn create(class: usize, try_only: bool) -> Option<*mut Seg> {
    // Frees compare check words with the secret without an initialisation branch.
    let secret = crate::secret::secret();
    let mem = map(SEG, &MapOptions::new().align(SEG)).ok()?;
    let groups = SEG / class::span(class);
    let len = record_len(class);
    let Some(record) = records::take(class, len, try_only) else {
        // SAFETY: just mapped, never used.
        let _ = unsafe { mem.unmap() };
        return None;
    };
    let base = mem.ptr().as_ptr() as usize;
    let seg = record.ptr as *mut Seg;
    // SAFETY: the record is zeroed memory of `len` bytes, enough for the record and its entries.
    unsafe {
        seg.write(Seg {
            check: secret,
            base,
            class: class as u8,
            groups: groups as u32,
            next: 0,
            live: 0,
            free_top: 0,
            on_partial: false,
            partial_prev: ptr::null_mut(),
            partial_next: ptr::null_mut(),
            all_next: ptr::null_mut(),
            all_prev: ptr::null_mut(),
            mem,
            record,
        });
    }
    if MAP.set(base >> SEG_SHIFT, seg, try_only).is_none() {
        // SAFETY: as above; the record was never published.
        unsafe {
            let _ = mem.unmap();
            records::give(record, class, len);
        }
        return None;
    }
    MAPPED.fetch_add(SEG, Relaxed);
    Some(seg)
}

/// Bytes of the record of a segment of `class`, its group entries included.
fn record_len(class: usize) -> usize {
    ENTRIES_AT + SEG / class::span(class) * 8
}

/// Takes a segment off every list and out of the map. Class lock held.
unsafe fn detach(c: &mut Class, seg: *mut Seg) {
    // SAFETY: `seg` is a live record of this class.
    unsafe {
        let s = &mut *seg;
        if s.on_partial {
            unlink_partial(c, seg);
        }
        if s.all_prev.is_null() {
            c.all = s.all_next;
        } else {
            (*s.all_prev).all_next = s.all_next;
        }
        if !s.all_next.is_null() {
            (*s.all_next).all_prev = s.all_prev;
        }
        s.all_prev = ptr::null_mut();
        s.all_next = ptr::null_mut();
        if c.current == seg {
            c.current = ptr::null_mut();
        }
        // The segment's leaf exists (it was published), so clearing cannot fail.
        let _ = MAP.set(s.base >> SEG_SHIFT, ptr::null_mut(), false);
        // Its released groups' pages go with the segment.
        for gi in 0..s.next as usize {
            if s.entry(gi).load(Relaxed) & RESIDENT != 0 {
                RESIDENT_BYTES.fetch_sub(class::span(usize::from(s.class)), Relaxed);
            }
        }
    }
}

/// Unmaps a detached segment and its record.
unsafe fn destroy(seg: *mut Seg) {
    // SAFETY: per the contract nothing refers to the segment or the record.
    unsafe {
        let (mem, record, class) = ((*seg).mem, (*seg).record, usize::from((*seg).class));
        MAPPED.fetch_sub(SEG, Relaxed);
        let _ = mem.unmap();
        records::give(record, class, record_len(class));
    }
}

unsafe fn link_partial(c: &mut Class, seg: *mut Seg) {
    // SAFETY: live records of this class, lock held.
    unsafe {
        (*seg).on_partial = true;
        (*seg).partial_prev = ptr::null_mut();
        (*seg).partial_next = c.partial;
        if !c.partial.is_null() {
            (*c.partial).partial_prev = seg;
        }
        c.partial = seg;
    }
}

unsafe fn unlink_partial(c: &mut Class, seg: *mut Seg) {
    // SAFETY: live records of this class, lock held.
    unsafe {
        let s = &mut *seg;
        if s.partial_prev.is_null() {
            c.partial = s.partial_next;
        } else {
            (*s.partial_prev).partial_next = s.partial_next;
        }
        if !s.partial_next.is_null() {
            (*s.partial_next).partial_prev = s.partial_prev;
        }
        s.on_partial = false;
        s.partial_prev = ptr::null_mut();
        s.partial_next = ptr::null_mut();
    }
}

/// Bytes of segments mapped (user memory), of released groups kept resident (part of it), and of
/// segment records and map leaves (metadata).
pub(crate) fn bytes() -> (usize, usize, usize) {
    (
        MAPPED.load(Relaxed),
        RESIDENT_BYTES.load(Relaxed),
        records::mapped_bytes() + crate::segmap::LEAF_BYTES.load(Relaxed),
    )
}

/// Every lock of this module, for fork handlers, in the order they nest: the class locks, then the
/// leaf lock and the record pool's lock (both taken under a class lock when a segment is made).
pub(crate) fn fork_locks() -> impl Iterator<Item = &'static twinheap_page::Lock> {
    CLASS
        .iter()
        .map(Mutex::raw)
        .chain(core::iter::once(MAP.lock()))
        .chain(core::iter::once(records::fork_lock()))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_from_any_address_inside_them() {
        let class = 3;
        let (mem, _) = take(class, false).expect("a group");
        let seg = find(mem as usize);
        assert!(!seg.is_null());
        // SAFETY: the segment is live while we hold its group.
        let s = unsafe { &*seg };
        assert_eq!(s.check, crate::secret::secret());
        assert_eq!(usize::from(s.class), class);
        let span = class::span(class);
        for a in [mem as usize, mem as usize + span - 1] {
            assert_eq!(find(a), seg);
            assert_eq!(
                s.group(class::group_index(class, a - s.base)),
                mem,
                "address {a:#x}"
            );
        }
        let gi = class::group_index(class, mem as usize - s.base);
        assert_eq!(s.entry(gi).load(Relaxed), 0, "taken, not published");
        let local = 0u64;
        assert!(find(&local as *const u64 as usize).is_null());
        assert!(find(usize::MAX - 15).is_null());
        // SAFETY: never published, never written.
        unsafe { put(mem, class, 0) };
        assert_eq!(s.entry(gi).load(Relaxed) & RELEASED, RELEASED);
    }

    #[test]
    fn released_groups_are_taken_again_before_new_ones() {
        let class = 20;
        let (a, _) = take(class, false).unwrap();
        let (b, _) = take(class, false).unwrap();
        // SAFETY: never published.
        unsafe { put(a, class, 0) };
        let (c, recycled) = take(class, false).unwrap();
        assert_eq!(c, a);
        assert!(recycled);
        // SAFETY: never published.
        unsafe {
            put(b, class, 0);
            put(c, class, 0);
        }
    }
}

//! The cache of freed large blocks: mappings kept after free so that the next large request of a
//! similar size reuses them without mapping, faulting or unmapping anything.
//!
//! An entry is a freed block's whole mapping (a growable one from the page backend) together with
//! its meta record, which stays allocated so that reuse needs no trip to the meta pool. Before a
//! block enters the cache (`large.rs` does this, outside the lock) its header is marked freed and its
//! memory is closed to writes: with `slab.zero_on_free` the block is zeroed and the whole mapping
//! made read-only, otherwise the bytes after the header in its header page are zeroed, that page
//! made read-only and the rest made inaccessible. With `slab.protect_freed_large` off, a block
//! zeroed with stores instead stays read-write (an *open* entry), and its reuse checks that it
//! still reads zero (a write after free is reported then). So in the cache:
//! - nothing of the old contents can be read (zeros, or PROT_NONE); every write faults, or, in an
//!   open entry, is reported when the block is reused;
//! - the header page stays readable and says "freed", and the record's mask says so too, so a
//!   second free is reported as a double free;
//! - the guard page before the block and the PROT_NONE room after it stay as they were.
//!
//! Bounds: at most [`MAX_ENTRIES`] blocks and `slab.large_cache` bytes (usable bytes of the
//! mappings). A block larger than the byte cap is never cached; inserting one evicts the oldest
//! entries until both bounds hold. `trim` empties the cache.
//!
//! Lookup is best fit: the entry whose mapping length is closest to the request among those whose
//! reserved capacity holds it (and whose alignment suits it), the newest on a tie. Reopening a
//! longer entry discards the pages it does not need, so a reused block is laid out exactly like a
//! fresh one of its size.
//!
//! One lock guards the list; it is held only to search, insert or remove, never across a syscall.

use twinheap_page::{page_size, Lock, Mapping, Mutex};

use crate::meta::Meta;

/// The most freed large blocks kept at once.
pub(crate) const MAX_ENTRIES: usize = 32;

/// One cached block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// Its record, still naming the mapping (`mem`, `mapping`, class `LARGE`), off the live list.
    pub meta: *mut Meta,
    /// The mapping, as closed by `Mapping::protect`.
    pub mapping: Mapping,
    /// Bytes from the mapping's start to the freed block; its header sits just before.
    pub lead: usize,
    /// True when every byte past the headers reads zero; false when the pages past the header
    /// page hold the old contents (PROT_NONE).
    pub zeroed: bool,
    /// True when the mapping was left read-write (`slab.protect_freed_large` off, block zeroed with
    /// stores): reuse must check that it still reads zero past the freed block's header.
    pub open: bool,
    /// Offset from which the mapping's pages were dropped (`Mapping::clear`): fresh PROT_NONE
    /// pages that need no discard when the block is reused shorter. The mapping length if none.
    pub cleared: usize,
}

struct Slot {
    entry: Entry,
    /// Insertion order, for evicting the oldest.
    stamp: u64,
}

struct Cache {
    slots: [Option<Slot>; MAX_ENTRIES],
    /// Sum of the entries' usable lengths.
    bytes: usize,
    clock: u64,
}

// SAFETY: the cache names process-global records and mappings; the Mutex serialises access.
unsafe impl Send for Cache {}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    slots: [const { None }; MAX_ENTRIES],
    bytes: 0,
    clock: 0,
});

/// Entries removed from the cache, to be disposed of by the caller once the lock is dropped.
pub(crate) struct Removed {
    entries: [Option<Entry>; MAX_ENTRIES],
}

impl Removed {
    const fn new() -> Self {
        Removed {
            entries: [None; MAX_ENTRIES],
        }
    }

    fn push(&mut self, e: Entry) {
        // There is room: at most MAX_ENTRIES entries exist, and each leaves the cache once.
        if let Some(free) = self.entries.iter_mut().find(|s| s.is_none()) {
            *free = Some(e);
        }
    }

    /// The removed entries.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.entries.iter().flatten().copied()
    }
}

/// Takes the best cached block for a mapping of `len` usable bytes (a page multiple) whose start is
/// aligned to `align`, if any fits.
pub(crate) fn take(len: usize, align: usize) -> Option<Entry> {
    let mut cache = CACHE.lock();
    let mut best: Option<(usize, (usize, u64))> = None;
    for (i, slot) in cache.slots.iter().enumerate() {
        let Some(slot) = slot else { continue };
        let m = &slot.entry.mapping;
        if m.capacity() < len || !(m.ptr().as_ptr() as usize).is_multiple_of(align) {
            continue;
        }
        // Closest length first, then the newest (its pages are likelier to be in cache).
        let key = (m.len().abs_diff(len), u64::MAX - slot.stamp);
        match best {
            Some((_, k)) if k <= key => {}
            _ => best = Some((i, key)),
        }
    }
    let (i, _) = best?;
    let slot = cache.slots[i].take()?;
    cache.bytes -= slot.entry.mapping.len();
    Some(slot.entry)
}

/// Caches `e` within `cap` bytes, evicting the oldest entries as needed. Returns what the caller
/// must dispose of: the evicted entries, or `e` itself when it is larger than the cap.
pub(crate) fn put(e: Entry, cap: usize) -> Removed {
    let mut removed = Removed::new();
    let len = e.mapping.len();
    if len > cap {
        removed.push(e);
        return removed;
    }
    let mut cache = CACHE.lock();
    while cache.bytes + len > cap || cache.slots.iter().all(Option::is_some) {
        let Some(oldest) = cache
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (s.stamp, i)))
            .min()
            .map(|(_, i)| i)
        else {
            break;
        };
        if let Some(slot) = cache.slots[oldest].take() {
            cache.bytes -= slot.entry.mapping.len();
            removed.push(slot.entry);
        }
    }
    cache.clock += 1;
    let stamp = cache.clock;
    if let Some(free) = cache.slots.iter_mut().find(|s| s.is_none()) {
        *free = Some(Slot { entry: e, stamp });
        cache.bytes += len;
    } else {
        removed.push(e);
    }
    removed
}

/// Empties the cache; the caller disposes of the entries.
pub(crate) fn drain() -> Removed {
    let mut removed = Removed::new();
    let mut cache = CACHE.lock();
    for slot in cache.slots.iter_mut() {
        if let Some(slot) = slot.take() {
            removed.push(slot.entry);
        }
    }
    cache.bytes = 0;
    removed
}

/// Usable bytes of the cached blocks, and how many there are.
pub(crate) fn held() -> (usize, usize) {
    let cache = CACHE.lock();
    let count = cache.slots.iter().flatten().count();
    (cache.bytes, count)
}

/// The cache lock, for the fork handlers.
pub(crate) fn lock() -> &'static Lock {
    CACHE.raw()
}

/// The mapping length a block of `need` bytes gets: whole pages.
pub(crate) fn mapping_len(need: usize) -> Option<usize> {
    need.checked_next_multiple_of(page_size())
}

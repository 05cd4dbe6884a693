//! Recycled group mappings: the memory of released groups, kept process-wide for the next new group.
//!
//! Heaps keep a few empty groups per class (`heap.rs`); a group released beyond that used to be
//! unmapped at once. With several threads passing blocks to each other, frees arrive in bursts that
//! empty many groups of one heap while other heaps (or the same one, moments later) map new ones: each
//! cycle was an munmap (a TLB shootdown on every core running the process, and the address-space
//! lock taken for writing), an mmap, and a page fault per page touched again. Here a released
//! group's mapping waits instead, up to [`CAP_BYTES`] in all, and any heap's next group of a fitting
//! size takes it, whatever its class.
//!
//! Invariants:
//! - a cached mapping belongs to no group and no record refers to it; only this cache owns it;
//! - `dirty` bounds the bytes of the mapping a group ever used (the group header and its activated
//!   slots, page-rounded); beyond it the pages were never written by slab and are still zero, so
//!   zeroing `dirty` bytes when a mapping leaves the cache gives a group exactly what a fresh mapping
//!   gives: all zero (the previous group's headers, canaries and, with `zero_on_free` off, its data,
//!   are gone);
//! - the lock is taken after a heap lock (a group created under it), never before one, and never
//!   together with the metadata pool's; a call re-entered from a signal handler only tries it.
//!
//! `trim` unmaps everything cached; statistics count it as mapped user memory.

use core::ptr;

use twinheap_page::{page_size, Mapping, Mutex};

/// Bytes of mappings the cache holds at most. Measured on the `threads` benchmark (8 threads, a
/// quarter of the blocks freed by another thread): see docs/slab.md, "Threads".
pub(crate) const CAP_BYTES: usize = 2 << 20;
/// Mappings the cache holds at most (groups of small classes span a few pages, so the byte cap
/// binds first for all but the smallest).
const ENTRIES: usize = 128;

struct Entry {
    mapping: Mapping,
    dirty: usize,
}

struct Cache {
    entries: [Option<Entry>; ENTRIES],
    len: usize,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    entries: [const { None }; ENTRIES],
    len: 0,
    bytes: 0,
});

/// Keeps the mapping of a released group, whose first `dirty` bytes it may have written; gives it
/// back when the cache is full (the caller unmaps it).
pub(crate) fn put(mapping: Mapping, dirty: usize) -> Option<Mapping> {
    let mut cache = CACHE.lock();
    if cache.len == ENTRIES || cache.bytes + mapping.len() > CAP_BYTES {
        return Some(mapping);
    }
    let len = cache.len;
    cache.bytes += mapping.len();
    cache.entries[len] = Some(Entry {
        mapping,
        dirty: dirty.min(mapping.len()),
    });
    cache.len = len + 1;
    None
}

/// A cached mapping of at least `len` bytes (and less than twice that, so a small group does not
/// pin a large mapping), zeroed; the most recently cached fitting one, whose pages are likeliest to
/// be in cache. `try_only`: do not wait for the lock (a call re-entered from a signal handler).
pub(crate) fn take(len: usize, try_only: bool) -> Option<Mapping> {
    let need = len.next_multiple_of(page_size());
    let entry = {
        let mut cache = if try_only {
            CACHE.try_lock()?
        } else {
            CACHE.lock()
        };
        let n = cache.len;
        let i = (0..n).rev().find(|&i| {
            cache.entries[i]
                .as_ref()
                .is_some_and(|e| e.mapping.len() >= need && e.mapping.len() < 2 * need)
        })?;
        let entry = cache.entries[i].take();
        cache.entries.swap(i, n - 1);
        cache.len = n - 1;
        let entry = entry?;
        cache.bytes -= entry.mapping.len();
        entry
    };
    // Zeroed outside the lock. SAFETY: the cache owned the mapping alone; it is `mapping.len()`
    // bytes of read-write memory, of which `dirty` bytes are zeroed.
    unsafe { ptr::write_bytes(entry.mapping.ptr().as_ptr(), 0, entry.dirty) };
    Some(entry.mapping)
}

/// Unmaps every cached mapping (for `trim`); true if there was any.
pub(crate) fn drain() -> bool {
    let mut any = false;
    loop {
        let entry = {
            let mut cache = CACHE.lock();
            let n = cache.len;
            if n == 0 {
                break;
            }
            cache.len = n - 1;
            let entry = cache.entries[n - 1].take();
            if let Some(e) = &entry {
                cache.bytes -= e.mapping.len();
            }
            entry
        };
        if let Some(e) = entry {
            // SAFETY: the cache owned the mapping alone. A failed munmap leaks it.
            let _ = unsafe { e.mapping.unmap() };
            any = true;
        }
    }
    any
}

/// Bytes of mappings cached now, for statistics.
pub(crate) fn bytes() -> usize {
    CACHE.lock().bytes
}

/// The cache's lock, for fork handlers.
pub(crate) fn fork_lock() -> &'static twinheap_page::Lock {
    CACHE.raw()
}

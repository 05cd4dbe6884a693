//! Statistics, computed on demand by walking every group under its heap's lock.
//!
//! Nothing is counted on the allocation paths: a walk costs time proportional to the number of groups
//! and is meant for occasional calls (malloc_stats, TWINHEAP_STATS, tests).

use core::sync::atomic::Ordering::Relaxed;

use crate::class::{self, CLASSES, UNIT};
use crate::header::{self, CODE_START, CODE_U32, GROUP_HEADER, HEADER_AFTER};
use crate::meta::{self, Meta};
use crate::slot::{self, LIVE};
use crate::{large, segment, thread};

/// One class's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Blocks in use.
    pub blocks: usize,
    /// Slots in existence (in use or not).
    pub slots: usize,
    /// Groups of this class.
    pub groups: usize,
}

/// A snapshot of slab's memory use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabStats {
    /// Bytes requested by the blocks in use (what usable-size reports), large blocks included.
    pub requested: usize,
    /// Bytes of the slots those blocks occupy (slot strides; for large blocks, their mappings).
    pub in_slots: usize,
    /// Bytes mapped for user memory: segments (1 MiB each, whose never-used tails are address space
    /// only), large blocks, cached freed large blocks and the tombstones of freed large blocks
    /// (usable bytes: guard pages and reserved room excluded).
    pub mapped: usize,
    /// Bytes mapped for metadata: meta regions, segment records, the segment map's leaves and heap
    /// records.
    pub metadata: usize,
    /// Of `mapped`: pages of released groups kept resident for the next new group of their class
    /// (any heap); `trim` gives them back.
    pub recycled: usize,
    /// Large blocks in use.
    pub large_blocks: usize,
    /// Freed large blocks kept for reuse (`slab.large_cache`), and their bytes (also in `mapped`).
    pub large_cached: usize,
    pub large_cached_bytes: usize,
    /// Per-class counts.
    pub classes: [ClassStats; CLASSES],
}

impl Default for SlabStats {
    fn default() -> Self {
        SlabStats {
            requested: 0,
            in_slots: 0,
            mapped: 0,
            metadata: 0,
            recycled: 0,
            large_blocks: 0,
            large_cached: 0,
            large_cached_bytes: 0,
            classes: [ClassStats::default(); CLASSES],
        }
    }
}

/// Walks every heap and the large-block list.
///
/// Returns all zeros when called from a signal handler that interrupted slab (no lock may be taken).
pub fn stats() -> SlabStats {
    let thread::Entry::Session(_session) = thread::enter() else {
        return SlabStats::default();
    };
    let (segments, resident, records) = segment::bytes();
    let mut s = SlabStats {
        mapped: segments,
        recycled: resident,
        metadata: meta::mapped_bytes() + thread::heap_bytes() + records,
        ..SlabStats::default()
    };
    thread::for_each_heap(|heap| {
        let guard = heap.lock();
        for m in guard.groups() {
            // SAFETY: groups on the heap's list stay live while its lock is held.
            let class = usize::from(unsafe { (*m).class });
            // Slots in the owner's batch are taken but not handed out yet.
            // Pending frees are freed blocks whose groups do not know it yet.
            let batched = heap.batches[class].slots_of(m) | heap.pending.slots_of(m);
            // SAFETY: as above.
            unsafe { count_group(&*m, batched, &mut s) };
        }
    });
    s.mapped += large::tombstone_bytes();
    (s.large_cached_bytes, s.large_cached) = large::cached();
    s.mapped += s.large_cached_bytes;
    large::for_each(|m| {
        if let Some(mapping) = m.mapping {
            s.large_blocks += 1;
            s.mapped += mapping.len();
            s.in_slots += mapping.len();
            // SAFETY: the record is live under the list lock, so its mapping is too.
            s.requested += unsafe {
                block_size(
                    m.mem.add(GROUP_HEADER),
                    m.mem.add(mapping.len() - HEADER_AFTER),
                )
            };
        }
    });
    s
}

unsafe fn count_group(m: &Meta, batched: u32, s: &mut SlabStats) {
    if m.dying {
        return;
    }
    let class = usize::from(m.class);
    let stride = class::stride(class);
    let slots = usize::from(m.last_idx) + 1;
    let c = &mut s.classes[class];
    c.groups += 1;
    c.slots += slots;
    let live = m.all_slots() & !m.masks.free_or_avail() & !batched;
    for idx in 0..slots {
        if live & (1 << idx) == 0 {
            continue;
        }
        // A slot being framed or freed right now may read either way; the snapshot allows it.
        let word = m.slots[idx].load(Relaxed);
        if word & LIVE != 0 {
            c.blocks += 1;
            s.requested += slot::size_of(word);
            s.in_slots += stride;
        }
    }
}

/// The requested size of a large block whose usable bytes are `[start, end)`, read without
/// validation.
unsafe fn block_size(start: *mut u8, end: *mut u8) -> usize {
    // SAFETY: the caller guarantees the block and its header area are readable.
    unsafe {
        let h = header::read(start);
        let p = if h.code == CODE_START {
            start.add(h.off * UNIT)
        } else {
            start
        };
        let h = header::read(p);
        let room = (end as usize).saturating_sub(p as usize);
        let reserved = match h.code {
            CODE_U32 => (end.sub(4) as *const u32).read_unaligned() as usize,
            code => usize::from(code),
        };
        room.saturating_sub(reserved)
    }
}

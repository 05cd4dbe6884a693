//! The owner's pending frees: slots its own thread freed, marked in the group masks later, in bulk.
//!
//! Marking a slot freed is an atomic read-modify-write on the group's `freed` mask (other threads may
//! be freeing into the same group), and sometimes the heap lock. When the thread that owns a heap
//! frees a block of its own heap, it instead validates and clears the block at once (every check and
//! the zeroing happen in the free call itself) and records the slot here. The records are marked
//! under the heap lock the owner takes anyway to refill its batches, or when this buffer is full:
//! one lock and one mask update per group per flush instead of one or two atomics per free.
//!
//! Invariants:
//! - only the owning thread, in a session that is not re-entered, adds records (without the lock) or
//!   flushes them (under the heap lock); other threads only read them, for statistics;
//! - a pending slot is in use as far as the masks are concerned, so it is neither handed out nor
//!   counted free, and its group cannot be released before the flush; its block header is already
//!   marked freed, so a second free of the pointer is reported at once;
//! - records of one group are merged while they come in a row; a slot that is already recorded is
//!   a double free.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering::Relaxed};

use crate::fault::{report, Fault};
use crate::meta::Meta;

/// Groups with pending frees a heap records before it flushes.
pub(crate) const PENDING: usize = 8;

/// One heap's pending frees: up to [`PENDING`] groups, each with the slots freed in it. The fields
/// are atomics only so that a statistics walk on another thread may read them; the owner changes
/// them with plain loads and stores.
pub(crate) struct Pending {
    len: AtomicUsize,
    metas: [AtomicPtr<Meta>; PENDING],
    bits: [AtomicU32; PENDING],
}

/// What [`Pending::push`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// The slot is recorded.
    Done,
    /// The buffer is full: flush it, then push again.
    Full,
}

impl Pending {
    pub(crate) const fn new() -> Pending {
        Pending {
            len: AtomicUsize::new(0),
            metas: [const { AtomicPtr::new(ptr::null_mut()) }; PENDING],
            bits: [const { AtomicU32::new(0) }; PENDING],
        }
    }

    /// Owner: records slot `bit` of group `m` as freed. `p` names the block in a fault report.
    #[inline]
    pub(crate) fn push(&self, m: *mut Meta, bit: u32, p: usize) -> Push {
        let len = self.len.load(Relaxed);
        // `get` with the wrapped index is the emptiness test and the bounds check in one compare.
        let last = len.wrapping_sub(1);
        if let (Some(meta), Some(bits)) = (self.metas.get(last), self.bits.get(last)) {
            if meta.load(Relaxed) == m {
                let was = bits.load(Relaxed);
                if was & bit != 0 {
                    report(Fault::DoubleFree, p);
                }
                bits.store(was | bit, Relaxed);
                return Push::Done;
            }
        }
        let (Some(meta), Some(bits)) = (self.metas.get(len), self.bits.get(len)) else {
            return Push::Full;
        };
        bits.store(bit, Relaxed);
        meta.store(m, Relaxed);
        self.len.store(len + 1, Relaxed);
        Push::Done
    }

    /// Owner, heap lock held: removes and returns every record, oldest first.
    pub(crate) fn take(&self) -> impl Iterator<Item = (*mut Meta, u32)> + '_ {
        // Only the owner writes `len`, so a load and a store do: a swap would be a locked
        // instruction.
        let len = self.len.load(Relaxed).min(PENDING);
        self.len.store(0, Relaxed);
        (0..len).map(|i| (self.metas[i].load(Relaxed), self.bits[i].load(Relaxed)))
    }

    /// True when nothing is pending (owner), or nothing was a moment ago (another thread).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Relaxed) == 0
    }

    /// The pending slots of group `m` (a snapshot when read by another thread).
    pub(crate) fn slots_of(&self, m: *mut Meta) -> u32 {
        let len = self.len.load(Relaxed).min(PENDING);
        (0..len)
            .filter(|&i| self.metas[i].load(Relaxed) == m)
            .fold(0, |acc, i| acc | self.bits[i].load(Relaxed))
    }
}

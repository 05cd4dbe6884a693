//! A heap: one thread's (or a few threads') groups and active lists, under one lock.
//!
//! Each thread allocates from its own heap (see `thread.rs`), so mallocs of different threads never
//! share a lock. Frees from other threads go lock-free into the owner group's `freed` mask and take
//! the owner heap's lock only for the two list changes mallocng also locks for: the first free into a
//! full group (which rejoins its class list) and the free that empties a group (which may release
//! it). The owning thread's own frees wait in its pending buffer (`pending.rs`) and are marked by the
//! same protocol, in bulk, under the lock it takes anyway to refill its batches; a refill that needs
//! a new mapped group maps it with the lock dropped ([`Spare`]).
//!
//! Invariants, under the lock:
//! - `active[c]` is a circular list of groups of class `c`; only its head hands out slots; a full group
//!   may linger until `find` drops it, and rejoins at the tail when a slot is freed;
//! - a slot is in exactly one state: available (`avail`), freed or not yet activated (`freed`), or in
//!   use (neither); malloc takes only from `avail`, and freed slots move to `avail` only when a group has
//!   none left (delayed reuse);
//! - `all` lists every group the heap owns, full ones included;
//! - list links are checked on every unlink (safe unlinking), which mallocng does not do.
//!
//! Re-entry (a signal handler allocating while its thread is inside slab) is caught before any heap
//! is locked, in `thread.rs`, so this lock is never taken twice by one thread.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering::Relaxed};

use rand_core::RngCore;
use twinheap_page::Lock;

use crate::class::{self, CLASSES};
use crate::fault::{check, report, Fault};
use crate::group;
use crate::masks::Lockless;
use crate::meta::{self, Meta};
use crate::pending::Pending;
use crate::secret::SlotRng;
use crate::segment;
use crate::slot::{Slot, USED};

/// Empty groups a heap keeps for reuse, per class: always 2, and more while the class's empty groups
/// span at most [`RETAIN_BYTES`]. Without this, frees arriving from other threads in bursts empty
/// groups that are re-created moments later: each a trip through the class's segment lock and the
/// global meta-pool lock. Measured on 8 threads passing a quarter of their blocks to each other
/// (with groups in their own mappings then): a per-heap limit of 8 groups re-created about 12,000
/// groups for 800,000 allocations; this policy cut the run from 0.28 s to 0.17 s. Groups released
/// beyond it go back to their segment (`segment.rs`), where any heap takes them again. `trim`
/// releases them all.
const RETAIN_EMPTY: u32 = 2;
const RETAIN_BYTES: usize = 256 << 10;

/// Slots the owning thread takes per lock acquisition (at most 12: see `take_slots`). Measured with
/// callgrind on alloc/free pairs of 16 bytes: 4 slots cost 574 instructions per pair, 8 cost 550 and
/// 16 cost 538; 8 keeps fewer slots set aside per class.
const BATCH: usize = 8;

/// Largest slot stride for which a short batch is topped up from a second search (see
/// [`State::take_batch`]): 2 KiB, so a full batch spans at most 16 KiB.
const SECOND_TAKE_MAX_STRIDE: usize = 2048;

/// Slots of one class taken from one group under the heap lock and handed out afterwards without it.
/// They count as in use (they left `avail`), so no free can touch them and their group cannot be
/// released. Only the heap's owning thread changes its batches (see `thread::Session::owns_heap`);
/// the fields are atomics, changed with plain loads and stores, only so that a statistics walk on
/// another thread may read them.
///
/// A refill whose group yields fewer than [`BATCH`] slots takes the rest from the group the class
/// would use next, under the same lock (see [`State::take_batch`]); when that is another group, its
/// slots wait in `next_*` and become the batch at the next refill, which then needs no lock. At
/// most [`BATCH`] slots of a class are set aside at a time, batch and `next_*` together.
pub(crate) struct Batch {
    pub(crate) meta: AtomicPtr<Meta>,
    pub(crate) bits: AtomicU32,
    /// Random bits for the first offsets of never-used slots.
    pub(crate) fresh: AtomicU32,
    /// The next batch, from a second group: taken under the same lock as this one.
    pub(crate) next_bits: AtomicU32,
    pub(crate) next_meta: AtomicPtr<Meta>,
    pub(crate) next_fresh: AtomicU32,
}

impl Batch {
    const fn new() -> Batch {
        Batch {
            meta: AtomicPtr::new(ptr::null_mut()),
            bits: AtomicU32::new(0),
            fresh: AtomicU32::new(0),
            next_bits: AtomicU32::new(0),
            next_meta: AtomicPtr::new(ptr::null_mut()),
            next_fresh: AtomicU32::new(0),
        }
    }

    /// The batched slots of group `m`, this batch's and the next one's (a snapshot when read by
    /// another thread).
    pub(crate) fn slots_of(&self, m: *mut Meta) -> u32 {
        let mut slots = 0;
        let bits = self.bits.load(Relaxed);
        if bits != 0 && self.meta.load(Relaxed) == m {
            slots |= bits;
        }
        let next = self.next_bits.load(Relaxed);
        if next != 0 && self.next_meta.load(Relaxed) == m {
            slots |= next;
        }
        slots
    }

    /// Owner: the next batch, if the last refill set one aside; it is this class's batch now.
    #[inline]
    pub(crate) fn take_next(&self) -> Option<(*mut Meta, u32, u32)> {
        let bits = self.next_bits.load(Relaxed);
        if bits == 0 {
            return None;
        }
        self.next_bits.store(0, Relaxed);
        Some((
            self.next_meta.load(Relaxed),
            bits,
            self.next_fresh.load(Relaxed),
        ))
    }
}

pub(crate) struct Heap {
    lock: Lock,
    /// Per class, the owner's batch; changed only by the owning thread, outside the lock.
    pub(crate) batches: [Batch; CLASSES],
    /// The owner's frees of its own blocks, not yet marked in their groups (see `pending.rs`).
    pub(crate) pending: Pending,
    state: UnsafeCell<State>,
    /// Next heap in the registry's list of all heaps; written once, before the heap is published.
    pub(crate) next_all: *mut Heap,
    /// Next heap in the registry's free list; guarded by the registry lock.
    pub(crate) next_free: UnsafeCell<*mut Heap>,
}

// SAFETY: all mutable state sits behind `lock` (State) or the registry lock (next_free);
// `next_all` is immutable once the heap is shared.
unsafe impl Sync for Heap {}

pub(crate) struct State {
    active: [*mut Meta; CLASSES],
    /// Per class: groups with every slot free, kept for reuse (fresh groups count until their first
    /// slot goes).
    empty: [u32; CLASSES],
    all: *mut Meta,
    rng: SlotRng,
    /// Set while the owner refills a batch: a new group is not made under the lock; `wanted`
    /// says of which class, and the owner makes it after unlocking (see [`Spare`]).
    defer: bool,
    pub(crate) wanted: Option<usize>,
    /// Memory and a record made outside the lock for the next group of its class.
    pub(crate) spare: Option<Spare>,
}

/// Memory for a group taken without holding the heap lock, so that the lock is never held across
/// the segment and metadata-pool locks nor an mmap (other threads' frees into this heap may need
/// it).
pub(crate) struct Spare {
    class: usize,
    mem: *mut u8,
    recycled: bool,
    meta: *mut Meta,
}

impl Spare {
    /// Takes a group of `class` from its segments, and its record; `None` when out of memory.
    pub(crate) fn prepare(class: usize) -> Option<Spare> {
        let meta = meta::alloc(false)?;
        match segment::take(class, false) {
            Some((mem, recycled)) => Some(Spare {
                class,
                mem,
                recycled,
                meta,
            }),
            None => {
                // SAFETY: the record was never published.
                unsafe { meta::free(meta) };
                None
            }
        }
    }

    /// Gives an unused spare back (call without the heap lock).
    pub(crate) fn discard(self) {
        // SAFETY: neither the record nor the memory was ever published or written.
        unsafe {
            meta::free(self.meta);
            segment::put(self.mem, self.class, 0);
        }
    }
}

impl Heap {
    pub(crate) fn new() -> Heap {
        Heap {
            lock: Lock::new(),
            batches: [const { Batch::new() }; CLASSES],
            pending: Pending::new(),
            state: UnsafeCell::new(State {
                active: [ptr::null_mut(); CLASSES],
                empty: [0; CLASSES],
                all: ptr::null_mut(),
                rng: SlotRng::from_entropy(),
                defer: false,
                wanted: None,
                spare: None,
            }),
            next_all: ptr::null_mut(),
            next_free: UnsafeCell::new(ptr::null_mut()),
        }
    }

    /// Locks the heap.
    #[inline]
    pub(crate) fn lock(&self) -> Guard<'_> {
        self.lock.lock();
        Guard { heap: self }
    }

    /// Locks the heap if it is free right now (re-entered calls must not wait).
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<Guard<'_>> {
        self.lock.try_lock().then(|| Guard { heap: self })
    }

    /// Puts every slot of the owner's batches back into `avail` and marks its pending frees (for
    /// `trim`, and at thread exit).
    ///
    /// # Safety
    /// Only the thread that owns this heap, not re-entered, may call this.
    pub(crate) unsafe fn return_batches(&self) {
        let mut guard = self.lock();
        for batch in &self.batches {
            let bits = batch.bits.load(Relaxed);
            if bits != 0 {
                // SAFETY: the batch's group is live (its slots are in use) and the lock is held.
                unsafe { (*batch.meta.load(Relaxed)).masks.untake(bits) };
                batch.bits.store(0, Relaxed);
            }
            if let Some((m, bits, _)) = batch.take_next() {
                // SAFETY: as above.
                unsafe { (*m).masks.untake(bits) };
            }
        }
        // SAFETY: the caller owns the heap; the lock is held.
        let released = unsafe { guard.flush(self) };
        drop(guard);
        released.release();
    }

    /// Marks the owner's pending frees now (the buffer is full).
    ///
    /// # Safety
    /// As for [`Heap::return_batches`].
    #[cold]
    pub(crate) unsafe fn flush_pending(&self) {
        let mut guard = self.lock();
        // SAFETY: per the contract; the lock is held.
        let released = unsafe { guard.flush(self) };
        drop(guard);
        released.release();
    }

    /// The raw lock, for fork handlers.
    pub(crate) fn raw_lock(&self) -> &Lock {
        &self.lock
    }
}

/// Proof of holding a heap's lock; gives access to its state.
pub(crate) struct Guard<'a> {
    heap: &'a Heap,
}

impl Deref for Guard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        // SAFETY: the guard exists only while this thread holds the heap's lock.
        unsafe { &*self.heap.state.get() }
    }
}

impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { &mut *self.heap.state.get() }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard was created by taking the lock on this thread.
        unsafe { self.heap.lock.unlock() }
    }
}

/// Groups a flush emptied and detached, to be given back once the heap lock is dropped. They are
/// chained through their records' `next` links, which a group off every list does not use: one
/// word to set up and return on every refill, instead of an array.
#[must_use]
pub(crate) struct Released {
    first: *mut Meta,
}

impl Released {
    /// Gives the groups back to their segments. Call without the heap lock.
    pub(crate) fn release(self) {
        let mut g = self.first;
        while !g.is_null() {
            // SAFETY: each group was detached under the lock with every slot free; nothing but this
            // chain refers to it, and its link is read before the record is recycled.
            unsafe {
                let next = (*g).next;
                (*g).next = ptr::null_mut();
                crate::free::release_group(g);
                g = next;
            }
        }
    }
}

impl State {
    /// Marks the owner's pending frees in their groups, by the same protocol as any free (lock-free
    /// update when it may, the locked list changes otherwise; the lock is held already). Returns
    /// the groups that must be released after unlocking.
    ///
    /// # Safety
    /// `heap` owns this state, its lock is held, and the caller is its owning thread, not re-entered.
    pub(crate) unsafe fn flush(&mut self, heap: &Heap) -> Released {
        let mut released = Released {
            first: ptr::null_mut(),
        };
        if heap.pending.is_empty() {
            return released;
        }
        for (m, bits) in heap.pending.take() {
            // SAFETY: a pending slot is in use, which keeps its group (of this heap) alive.
            let meta = unsafe { &*m };
            match meta.masks.free_lockless(bits, meta.all_slots()) {
                Lockless::Done => {}
                Lockless::AlreadyFree => report(Fault::DoubleFree, meta.mem as usize),
                Lockless::NeedLock => {
                    // SAFETY: lock held; the slots are in use and were cleared by their frees.
                    if let Some(g) = unsafe { self.free_locked(m, bits) } {
                        // SAFETY: `g` was just detached from every list (its links are null).
                        unsafe { (*g).next = released.first };
                        released.first = g;
                    }
                }
            }
        }
        released
    }

    /// Takes one random available slot of `class`, creating a group when none has one available.
    /// With `try_only` (a call re-entered from a signal handler) no lock is waited for: a busy metadata
    /// pool means failure.
    ///
    /// # Safety
    /// `heap` is the heap this state belongs to, and its lock is held.
    pub(crate) unsafe fn take(
        &mut self,
        heap: *const Heap,
        class: usize,
        try_only: bool,
    ) -> Option<Slot> {
        // SAFETY: per the contract.
        let (meta, bits, fresh) = unsafe { self.take_slots(heap, class, try_only, 1, true)? };
        Some(Slot {
            meta,
            idx: bits.trailing_zeros() as usize,
            fresh,
        })
    }

    /// Takes up to [`BATCH`] random available slots of `class` for an owner batch. When that needs
    /// a new group, returns `None` with `wanted` set instead of making it under the lock (unless
    /// `spare` holds one already): the caller makes it unlocked and calls again.
    ///
    /// When the group yields at most half of [`BATCH`] and the slots are at most
    /// [`SECOND_TAKE_MAX_STRIDE`] bytes, the rest comes from the group the class would use next,
    /// found exactly as the next refill would find it (rotation, then activation), but never a new
    /// group: the same group again (reactivated) joins this batch, another group's slots become
    /// the batch's `next_*`. Refills of small or partly activated groups (the larger classes, or a
    /// program with few blocks of a class) then take about twice the slots per lock.
    ///
    /// # Safety
    /// As for [`State::take`], and the caller is the heap's owning thread, not re-entered, whose
    /// next batch of `class` is empty.
    pub(crate) unsafe fn take_batch(
        &mut self,
        heap: &Heap,
        class: usize,
    ) -> Option<(*mut Meta, u32, u32)> {
        self.defer = true;
        // SAFETY: per the contract.
        let taken = unsafe { self.take_slots(heap, class, false, BATCH, true) };
        self.defer = false;
        let (m, bits, fresh) = taken?;
        // Only a short batch is worth a second search: when the group gave more than half, the
        // search costs about as much as the later refill it would save a share of. Nor for large
        // slots: there a refill costs little next to clearing and scanning the slot, and a fuller
        // batch spreads a thread's reuse over more memory than its caches hold (measured at
        // 8 KiB: 14 % fewer instructions, but about 12 % more time per alloc/free pair).
        // At most half a batch: clearing that many lowest bits leaves none (a software popcount
        // costs about 20 instructions on baseline x86-64, which has no POPCNT).
        let mut rest = bits;
        for _ in 0..BATCH / 2 {
            rest &= rest.wrapping_sub(1);
        }
        if rest == 0 && class::stride(class) <= SECOND_TAKE_MAX_STRIDE {
            let got = bits.count_ones() as usize;
            // SAFETY: per the contract; no group is created (`create` false).
            let more = unsafe { self.take_slots(heap, class, false, BATCH - got, false) };
            if let Some((m2, bits2, fresh2)) = more {
                if m2 == m {
                    return Some((m, bits | bits2, fresh));
                }
                let batch = &heap.batches[class];
                debug_assert!(batch.next_bits.load(Relaxed) == 0);
                batch.next_meta.store(m2, Relaxed);
                batch.next_fresh.store(fresh2, Relaxed);
                batch.next_bits.store(bits2, Relaxed);
            }
        }
        Some((m, bits, fresh))
    }

    /// Takes up to `want` random available slots of `class` from one group (creating one when none
    /// has a slot available, if `create`); returns the group, the slots taken as a mask, and random
    /// bits for the first offsets of never-used slots.
    unsafe fn take_slots(
        &mut self,
        heap: *const Heap,
        class: usize,
        try_only: bool,
        want: usize,
        create: bool,
    ) -> Option<(*mut Meta, u32, u32)> {
        // SAFETY: list members are live records of this heap, and `heap` owns this state (lock held).
        let m = match unsafe { self.find(class) } {
            Some(m) => m,
            // SAFETY: as above.
            None if create => unsafe { self.create_group(heap, class, try_only)? },
            None => return None,
        };
        // SAFETY: `m` is a live record of this heap with at least one available slot.
        let meta = unsafe { &*m };
        if meta.masks.free_or_avail() == meta.all_slots() {
            self.empty[class] = self.empty[class].saturating_sub(1);
        }
        let mut left = meta.masks.avail();
        let bits = if usize::from(meta.last_idx) < want {
            // The group has no more slots than are wanted: every available one is taken, and
            // drawing which would choose nothing.
            left
        } else {
            let mut bits = 0;
            // One 64-bit draw gives the random rotations (5 bits each) for up to 12 slots.
            let mut random = self.rng.next_u64();
            for _ in 0..want {
                if left == 0 {
                    break;
                }
                // A random available slot: rotate the mask by a random amount and take the
                // lowest bit.
                let r = (random & 31) as u32;
                random >>= 5;
                let idx = (left.rotate_right(r).trailing_zeros() + r) % 32;
                bits |= 1 << idx;
                left &= !(1 << idx);
            }
            bits
        };
        meta.masks.take(bits);
        Some((m, bits, self.rng.next_u32()))
    }

    /// The group of `class` to allocate from, after delayed-reuse rotation and activation.
    unsafe fn find(&mut self, class: usize) -> Option<*mut Meta> {
        loop {
            let m = self.active[class];
            if m.is_null() {
                return None;
            }
            // SAFETY: list members are live records of this heap, lock held.
            unsafe {
                if (*m).masks.avail() != 0 {
                    return Some(m);
                }
                // Rotate first: this group's freed slots wait while the next group's are used.
                let g = (*m).next;
                self.active[class] = g;
                if (*g).masks.avail() != 0 || self.activate(g) {
                    return Some(g);
                }
                // Nothing free in `g`: it leaves the list until one of its slots is freed.
                self.dequeue(class, g);
            }
        }
    }

    /// Moves a group's freed (activated) slots to `avail`, activating further slots when none are
    /// freed. Returns false when the group is full.
    unsafe fn activate(&mut self, g: *mut Meta) -> bool {
        // SAFETY: `g` is a live record of this heap, lock held.
        let g = unsafe { &mut *g };
        loop {
            if g.masks.activate(g.active_slots()) {
                return true;
            }
            if g.active_idx >= g.last_idx {
                return false;
            }
            // Activate the slots in the next 4 KiB of the group (at least one more).
            let stride = class::stride(usize::from(g.class));
            let storage = g.mem as usize;
            let edge = (storage + (usize::from(g.active_idx) + 2) * stride + 4095) & !4095;
            let last = ((edge - storage) / stride).saturating_sub(1);
            g.active_idx = last.clamp(usize::from(g.active_idx) + 1, usize::from(g.last_idx)) as u8;
        }
    }

    /// Creates a group of `class` and puts it on the (empty) active list.
    unsafe fn create_group(
        &mut self,
        heap: *const Heap,
        class: usize,
        try_only: bool,
    ) -> Option<*mut Meta> {
        let (m, mem, recycled) = if let Some(spare) = self.spare.take_if(|s| s.class == class) {
            (spare.meta, spare.mem, spare.recycled)
        } else if self.defer {
            self.wanted = Some(class);
            return None;
        } else {
            let m = meta::alloc(try_only)?;
            let Some((mem, recycled)) = segment::take(class, try_only) else {
                // SAFETY: the record was never published.
                unsafe { meta::free(m) };
                return None;
            };
            (m, mem, recycled)
        };
        let cnt = class::count(class);
        // SAFETY: `m` is a fresh zeroed record; `mem` is a group of `class` taken for it.
        unsafe {
            let meta = &mut *m;
            meta.mem = mem;
            meta.heap = heap;
            meta.class = class as u8;
            meta.last_idx = (cnt - 1) as u8;
            meta.active_idx = (group::initial_active(class) - 1) as u8;
            if recycled {
                // Another group used these slots: scan each before its first block.
                for word in &meta.slots[..cnt] {
                    word.store(USED, Relaxed);
                }
            }
            meta.masks.init(meta.all_slots(), meta.active_slots());
            segment::publish(mem, m);
            meta.all_next = self.all;
            if !self.all.is_null() {
                (*self.all).all_prev = m;
            }
            self.all = m;
            self.queue(class, m);
        }
        self.empty[class] += 1;
        Some(m)
    }

    /// The locked part of a free of the slots `bits`: called when the group had no freed slots (it
    /// may be off its list) or when this free empties it. Returns the group if it must now be
    /// released (after unlocking).
    ///
    /// # Safety
    /// `m` is a live group of this heap whose slots `bits` are in use; the lock is held.
    pub(crate) unsafe fn free_locked(&mut self, m: *mut Meta, bits: u32) -> Option<*mut Meta> {
        // SAFETY: per the contract.
        let meta = unsafe { &mut *m };
        let bit = bits;
        let mask = meta.masks.free_or_avail();
        check(mask & bit == 0, Fault::DoubleFree, meta.mem as usize);
        let class = usize::from(meta.class);
        let queued = !meta.prev.is_null();
        let emptied = mask | bit == meta.all_slots();
        if emptied && !self.keep_empty(class, meta) && self.may_release(m, queued) {
            // SAFETY: lock held; `m` is on this heap's lists as recorded.
            unsafe {
                if queued {
                    self.dequeue(class, m);
                }
                self.unlink_all(m);
            }
            meta.dying = true;
            return Some(m);
        }
        if !queued {
            // SAFETY: lock held.
            unsafe { self.queue(class, m) };
        }
        if emptied {
            self.empty[class] += 1;
        }
        meta.masks.mark_freed(bit);
        None
    }

    /// Whether a group of `class` that just became empty stays for reuse (see [`RETAIN_EMPTY`]).
    fn keep_empty(&self, class: usize, meta: &Meta) -> bool {
        let kept = self.empty[class];
        debug_assert!(usize::from(meta.last_idx) + 1 == class::count(class));
        let span = class::span(class);
        kept < RETAIN_EMPTY || (kept as usize + 1) * span <= RETAIN_BYTES
    }

    /// Hysteresis beyond the retained empties: the last group of a class stays (a free/malloc loop must
    /// not map and unmap a group each time); `trim` releases it.
    fn may_release(&self, m: *mut Meta, queued: bool) -> bool {
        // SAFETY: `m` is a live record of this heap (lock held).
        let class = usize::from(unsafe { (*m).class });
        let head = self.active[class];
        if queued {
            // SAFETY: as above.
            unsafe { (*m).next != m }
        } else {
            !head.is_null()
        }
    }

    /// Detaches one empty group for `trim`, if any.
    pub(crate) unsafe fn take_empty(&mut self) -> Option<*mut Meta> {
        let mut m = self.all;
        while !m.is_null() {
            // SAFETY: members of `all` are live records of this heap, lock held.
            unsafe {
                let meta = &mut *m;
                if meta.masks.free_or_avail() == meta.all_slots() {
                    let class = usize::from(meta.class);
                    self.empty[class] = self.empty[class].saturating_sub(1);
                    if !meta.prev.is_null() {
                        self.dequeue(class, m);
                    }
                    self.unlink_all(m);
                    meta.dying = true;
                    return Some(m);
                }
                m = meta.all_next;
            }
        }
        None
    }

    /// Every group of the heap, for statistics.
    pub(crate) fn groups(&self) -> impl Iterator<Item = *mut Meta> + '_ {
        let mut m = self.all;
        core::iter::from_fn(move || {
            let cur = m;
            if cur.is_null() {
                return None;
            }
            // SAFETY: members of `all` are live records of this heap (the caller holds the lock).
            m = unsafe { (*cur).all_next };
            Some(cur)
        })
    }

    unsafe fn queue(&mut self, class: usize, m: *mut Meta) {
        let head = self.active[class];
        // SAFETY: `m` and the list members are live records of this heap, lock held.
        unsafe {
            if head.is_null() {
                (*m).prev = m;
                (*m).next = m;
                self.active[class] = m;
            } else {
                let tail = (*head).prev;
                (*m).next = head;
                (*m).prev = tail;
                (*tail).next = m;
                (*head).prev = m;
            }
        }
    }

    unsafe fn dequeue(&mut self, class: usize, m: *mut Meta) {
        // SAFETY: `m` is on the list of `class`, lock held.
        unsafe {
            let (prev, next) = ((*m).prev, (*m).next);
            check(
                (*prev).next == m && (*next).prev == m,
                Fault::CorruptedMetadata,
                (*m).mem as usize,
            );
            if next == m {
                self.active[class] = ptr::null_mut();
            } else {
                (*prev).next = next;
                (*next).prev = prev;
                if self.active[class] == m {
                    self.active[class] = next;
                }
            }
            (*m).prev = ptr::null_mut();
            (*m).next = ptr::null_mut();
        }
    }

    unsafe fn unlink_all(&mut self, m: *mut Meta) {
        // SAFETY: `m` is on this heap's `all` list, lock held.
        unsafe {
            let (prev, next) = ((*m).all_prev, (*m).all_next);
            if prev.is_null() {
                check(self.all == m, Fault::CorruptedMetadata, (*m).mem as usize);
                self.all = next;
            } else {
                check(
                    (*prev).all_next == m,
                    Fault::CorruptedMetadata,
                    (*m).mem as usize,
                );
                (*prev).all_next = next;
            }
            if !next.is_null() {
                check(
                    (*next).all_prev == m,
                    Fault::CorruptedMetadata,
                    (*m).mem as usize,
                );
                (*next).all_prev = prev;
            }
            (*m).all_prev = ptr::null_mut();
            (*m).all_next = ptr::null_mut();
        }
    }
}

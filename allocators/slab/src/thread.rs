//! Which heap a thread allocates from, and giving it back when the thread exits.
//!
//! The crate is `no_std` on stable Rust, so it has no `#[thread_local]`. Instead a fixed table maps a
//! thread's `pthread_self()` value to its heap (open addressing, a few probes); a pthread key whose
//! destructor runs at thread exit removes the entry and returns the heap to the registry's free list,
//! where the next new thread adopts it with all its groups.
//!
//! Correctness never depends on this table: every heap is used under its own lock, so two threads on
//! one heap (table full, a reused thread id, a fork child) only share a lock. The entry is inserted
//! before `pthread_setspecific` is called, so if that call allocates (glibc does for keys beyond the
//! first 32) the nested malloc finds the heap and does not recurse.
//!
//! The table also records, per thread, whether the thread is inside slab right now ([`Session`]).
//! An allocator call that finds its own thread already inside (a signal handler that interrupted
//! malloc) must not take any lock: the interrupted call may hold it. Such a malloc fails with ENOMEM;
//! such a free is parked in the entry and completed when the interrupted call leaves slab.

use core::ptr;
use core::sync::atomic::{
    compiler_fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering::AcqRel,
    Ordering::Acquire, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst,
};

use twinheap_page::{map, MapOptions, Mutex};

use crate::heap::Heap;
use crate::meta::Meta;

const TABLE: usize = 1024;
const PROBES: usize = 16;
const EMPTY: usize = 0;
const GONE: usize = 1;

/// One thread's entry: everything the fast path of [`enter`] and [`Session`]'s drop touch sits in
/// one 32-byte row, so a malloc or free reads a single cache line of the table.
#[repr(C, align(32))]
struct Row {
    tid: AtomicUsize,
    heap: AtomicPtr<Heap>,
    /// The thread is inside slab right now.
    busy: AtomicBool,
    /// Work waits for the thread to leave slab: a free parked while it was inside, or the
    /// registration of the fork handlers (see `fork.rs`).
    deferred: AtomicBool,
}

impl Row {
    /// This row's index in [`ROWS`].
    fn index(&'static self) -> usize {
        (self as *const Row as usize - ROWS.as_ptr() as usize) / core::mem::size_of::<Row>()
    }
}

static ROWS: [Row; TABLE] = [const {
    Row {
        tid: AtomicUsize::new(EMPTY),
        heap: AtomicPtr::new(ptr::null_mut()),
        busy: AtomicBool::new(false),
        deferred: AtomicBool::new(false),
    }
}; TABLE];

/// The calling thread's identity (its pthread handle, never 0 or 1 for a live thread).
///
/// On x86_64 Linux the thread pointer (the `fs` segment base) is the thread's control block, whose
/// first word points at itself, in glibc and musl alike; that address is exactly what
/// `pthread_self()` returns. Reading it is one load instead of a call into libc on every malloc.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
pub(crate) fn me() -> usize {
    let tp: usize;
    // SAFETY: `fs:0` is the self-pointer of the running thread's control block, set up by libc
    // before any code of the thread runs; the load has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) tp,
            options(nostack, readonly, preserves_flags, pure)
        )
    };
    tp
}

/// The calling thread's identity (its pthread handle, never 0 or 1 for a live thread).
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[inline]
pub(crate) fn me() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

#[inline]
fn home(tid: usize) -> usize {
    ((tid as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize
}

/// Blocks a thread can park while it is inside slab (frees from signal handlers); more are leaked.
const PARKED: usize = 8;

/// Parked work: `p | 1` for a block to free from scratch (not yet touched), or a meta record's address
/// (8-aligned, so bit 0 is clear) whose slot `PARKED_IDX` has been cleared and only needs marking.
static PARKED_BLOCKS: [[AtomicUsize; PARKED]; TABLE] =
    [const { [const { AtomicUsize::new(0) }; PARKED] }; TABLE];
static PARKED_IDX: [[AtomicU8; PARKED]; TABLE] =
    [const { [const { AtomicU8::new(0) }; PARKED] }; TABLE];

/// The calling thread's use of slab, from entry to exit of one public call. Dropping it marks the
/// thread as outside slab again and completes any frees parked meanwhile.
pub(crate) struct Session {
    /// The thread's table entry; none when the table was crowded (then re-entry cannot be detected
    /// and the heap is shared).
    row: Option<&'static Row>,
    pub(crate) heap: &'static Heap,
}

/// What [`enter`] found.
pub(crate) enum Entry {
    /// The thread may use its heap and take locks.
    Session(Session),
    /// The thread is already inside slab (a signal handler interrupted it): it must not wait for any
    /// lock (the interrupted call may hold it), only try them. Carries the thread's table entry and
    /// heap (none while the heap is still being attached).
    Reentrant(usize, Option<&'static Heap>),
    /// No heap could be created (out of memory).
    NoHeap,
}

/// Starts a public call on the calling thread.
#[inline(always)]
pub(crate) fn enter() -> Entry {
    match enter_fast() {
        Some(session) => Entry::Session(session),
        None => enter_slow(me()),
    }
}

/// The fast path of [`enter`]: a thread's entry is nearly always at its home index, so the common
/// case is one hash, one compare and two loads of the same row. `None` sends the caller to
/// [`enter_slow`] (a collision, a new thread, re-entry). A session from here always has its own
/// row, so it owns its heap.
#[inline(always)]
pub(crate) fn enter_fast() -> Option<Session> {
    let me = me();
    let row = &ROWS[home(me)];
    if row.tid.load(Acquire) == me {
        let heap = row.heap.load(Acquire);
        if !heap.is_null() && !row.busy.load(Relaxed) {
            row.busy.store(true, Relaxed);
            // A signal handler runs on this thread: only the compiler may reorder, not the CPU.
            compiler_fence(SeqCst);
            // SAFETY: a heap published in the table is never freed.
            let heap = unsafe { &*heap };
            return Some(Session {
                row: Some(row),
                heap,
            });
        }
    }
    None
}

/// [`enter`] when the home row is not this thread's free row: probe further, detect re-entry, or
/// attach a heap to a new thread.
#[cold]
#[inline(never)]
pub(crate) fn enter_slow(me: usize) -> Entry {
    let h = home(me);
    for i in 0..PROBES {
        let j = (h + i) % TABLE;
        let row = &ROWS[j];
        let t = row.tid.load(Acquire);
        if t == me {
            let heap = row.heap.load(Acquire);
            if row.busy.load(Relaxed) || heap.is_null() {
                // SAFETY: a heap published in the table is never freed.
                return Entry::Reentrant(j, unsafe { heap.as_ref() });
            }
            row.busy.store(true, Relaxed);
            compiler_fence(SeqCst);
            // SAFETY: a heap published in the table is never freed.
            let heap = unsafe { &*heap };
            return Entry::Session(Session {
                row: Some(row),
                heap,
            });
        }
        if t == EMPTY {
            break;
        }
    }
    attach(me)
}

impl Session {
    /// True when this thread owns the heap alone (it has its own table entry), so it may use the
    /// heap's owner-only batches.
    #[inline]
    pub(crate) fn owns_heap(&self) -> bool {
        self.row.is_some()
    }
}

impl Drop for Session {
    #[inline]
    fn drop(&mut self) {
        let Some(row) = self.row else {
            crate::fork::register_if_wanted();
            return;
        };
        compiler_fence(SeqCst);
        row.busy.store(false, Relaxed);
        if row.deferred.load(Relaxed) {
            finish_deferred(row.index());
        }
    }
}

/// Parks block `p` (validated, untouched) for the thread in table entry `slot` to free when it leaves
/// slab. If the parking spots are full the block is leaked: never freed, never reused.
pub(crate) fn park_block(slot: usize, p: *mut u8) {
    park(slot, p as usize | 1, 0);
}

/// Parks the marking of slot `idx` of group `meta` (already cleared) for the thread in entry `slot`.
pub(crate) fn park_slot(slot: usize, meta: *mut Meta, idx: usize) {
    park(slot, meta as usize, idx as u8);
}

fn park(slot: usize, value: usize, idx: u8) {
    for (spot, spot_idx) in PARKED_BLOCKS[slot].iter().zip(&PARKED_IDX[slot]) {
        if spot.load(Relaxed) == 0 {
            spot_idx.store(idx, Relaxed);
            spot.store(value, Relaxed);
            ROWS[slot].deferred.store(true, Relaxed);
            return;
        }
    }
}

/// Runs what waited for the thread to leave slab: now a nested malloc (from pthread_atfork, or from a
/// parked free) is an ordinary call, not a re-entry.
#[cold]
fn finish_deferred(slot: usize) {
    ROWS[slot].deferred.store(false, Relaxed);
    crate::fork::register_if_wanted();
    for (spot, spot_idx) in PARKED_BLOCKS[slot].iter().zip(&PARKED_IDX[slot]) {
        let value = spot.swap(0, Relaxed);
        if value & 1 == 1 {
            // SAFETY: the block was handed to free by the program, which gave it up.
            unsafe { crate::api::free((value & !1) as *mut u8) };
        } else if value != 0 {
            let idx = usize::from(spot_idx.load(Relaxed));
            // SAFETY: a free validated and cleared this slot, then parked its marking.
            unsafe { crate::free::release_slot(value as *mut Meta, idx) };
        }
    }
}

#[cold]
fn attach(me: usize) -> Entry {
    let h = home(me);
    for i in 0..PROBES {
        let j = (h + i) % TABLE;
        let row = &ROWS[j];
        let t = row.tid.load(Relaxed);
        if (t == EMPTY || t == GONE) && row.tid.compare_exchange(t, me, Relaxed, Relaxed).is_ok() {
            // Until the heap is in place, a signal handler on this thread finds the entry with no
            // heap and treats itself as re-entrant.
            row.busy.store(true, Relaxed);
            row.tid.store(me, Release);
            let Some(heap) = adopt() else {
                row.busy.store(false, Relaxed);
                row.tid.store(GONE, Release);
                return Entry::NoHeap;
            };
            row.heap.store(heap as *const Heap as *mut Heap, Release);
            if crate::fork::wanted() {
                row.deferred.store(true, Relaxed);
            }
            watch_exit(j);
            return Entry::Session(Session {
                row: Some(row),
                heap,
            });
        }
    }
    // The table is crowded around this thread's home: share one fallback heap rather than adopting
    // a heap on every call.
    match shared_fallback() {
        Some(heap) => Entry::Session(Session { row: None, heap }),
        None => Entry::NoHeap,
    }
}

static FALLBACK: AtomicPtr<Heap> = AtomicPtr::new(ptr::null_mut());

fn shared_fallback() -> Option<&'static Heap> {
    let current = FALLBACK.load(Acquire);
    if !current.is_null() {
        // SAFETY: heaps are never freed.
        return Some(unsafe { &*current });
    }
    let heap = adopt()? as *const Heap as *mut Heap;
    match FALLBACK.compare_exchange(ptr::null_mut(), heap, AcqRel, Acquire) {
        // SAFETY: as above.
        Ok(_) => Some(unsafe { &*heap }),
        Err(winner) => {
            release(heap);
            // SAFETY: as above.
            Some(unsafe { &*winner })
        }
    }
}

/// Arranges for the table entry `j` to be cleared when the calling thread exits.
fn watch_exit(j: usize) {
    if let Some(key) = exit_key() {
        // SAFETY: `key` is a live key; the value is an integer tag, never dereferenced by libc.
        unsafe { libc::pthread_setspecific(key, (j + 1) as *const libc::c_void) };
    }
}

static KEY: AtomicU32 = AtomicU32::new(0);
/// 0 not created, 1 being created, 2 ready, 3 creation failed.
static KEY_STATE: AtomicU8 = AtomicU8::new(0);

fn exit_key() -> Option<libc::pthread_key_t> {
    loop {
        match KEY_STATE.load(Acquire) {
            2 => return Some(KEY.load(Relaxed)),
            3 => return None,
            0 if KEY_STATE.compare_exchange(0, 1, Acquire, Relaxed).is_ok() => {
                let mut key: libc::pthread_key_t = 0;
                // SAFETY: `key` is a valid out-pointer; the destructor has the signature libc expects.
                let ok = unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } == 0;
                KEY.store(key, Relaxed);
                KEY_STATE.store(if ok { 2 } else { 3 }, Release);
            }
            _ => core::hint::spin_loop(),
        }
    }
}

unsafe extern "C" fn on_thread_exit(tag: *mut libc::c_void) {
    let j = tag as usize - 1;
    if j >= TABLE {
        return;
    }
    let heap = ROWS[j].heap.swap(ptr::null_mut(), AcqRel);
    ROWS[j].tid.store(GONE, Release);
    if !heap.is_null() {
        // SAFETY: the exiting thread still owns the heap, and a destructor does not run inside slab.
        unsafe { (*heap).return_batches() };
        release(heap);
    }
}

struct Registry {
    /// Heaps whose thread exited, linked through `next_free`.
    free: *mut Heap,
    /// Unused space for new heaps.
    cursor: usize,
    end: usize,
    created: usize,
}

// SAFETY: the registry's pointers name process-global heaps; the Mutex serialises access.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    free: ptr::null_mut(),
    cursor: 0,
    end: 0,
    created: 0,
});

/// A heap for a new thread: one a finished thread left, or a new one.
fn adopt() -> Option<&'static Heap> {
    let mut reg = REGISTRY.lock();
    if !reg.free.is_null() {
        let heap = reg.free;
        // SAFETY: heaps on the free list are live; `next_free` is guarded by the registry lock.
        unsafe { reg.free = *(*heap).next_free.get() };
        // SAFETY: as above.
        return Some(unsafe { &*heap });
    }
    let size = core::mem::size_of::<Heap>().next_multiple_of(64);
    if reg.cursor + size > reg.end {
        let chunk = map(64 << 10, &MapOptions::new()).ok()?;
        reg.cursor = chunk.ptr().as_ptr() as usize;
        reg.end = reg.cursor + chunk.len();
        HEAP_BYTES.fetch_add(chunk.len(), Relaxed);
    }
    let heap = reg.cursor as *mut Heap;
    reg.cursor += size;
    let mut value = Heap::new();
    value.next_all = ALL.load(Relaxed);
    // SAFETY: `heap` is unused, aligned (chunks are page-aligned, sizes multiples of 64) memory.
    unsafe { heap.write(value) };
    ALL.store(heap, Release);
    reg.created += 1;
    let first = reg.created == 1;
    drop(reg);
    if first {
        crate::fork::want();
    }
    // SAFETY: just initialised; heaps are never freed.
    Some(unsafe { &*heap })
}

fn release(heap: *mut Heap) {
    let mut reg = REGISTRY.lock();
    // SAFETY: `heap` is live; `next_free` is guarded by the registry lock.
    unsafe { *(*heap).next_free.get() = reg.free };
    reg.free = heap;
}

static HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes mapped for heap records.
pub(crate) fn heap_bytes() -> usize {
    HEAP_BYTES.load(Relaxed)
}

/// Head of the list of every heap ever created. The list only grows at its head and `next_all` never
/// changes once a heap is published, so it can be walked without any lock (fork handlers must).
static ALL: AtomicPtr<Heap> = AtomicPtr::new(ptr::null_mut());

/// Calls `f` on every heap ever created; takes no lock.
pub(crate) fn for_each_heap(mut f: impl FnMut(&'static Heap)) {
    let mut h = ALL.load(Acquire);
    while !h.is_null() {
        // SAFETY: heaps are never freed and `next_all` is immutable once published.
        let heap = unsafe { &*h };
        f(heap);
        h = heap.next_all;
    }
}

/// The registry lock, for fork handlers.
pub(crate) fn registry_lock() -> &'static twinheap_page::Lock {
    REGISTRY.raw()
}

/// In a fork child: only the forking thread survives. Every other thread's heap goes back to the free
/// list so that new threads in the child reuse it. Called with every lock reset, single-threaded.
pub(crate) fn after_fork_child() {
    let survivor = me();
    for (j, row) in ROWS.iter().enumerate() {
        let t = row.tid.load(Relaxed);
        if t != EMPTY && t != GONE && t != survivor {
            row.tid.store(GONE, Relaxed);
            row.busy.store(false, Relaxed);
            row.deferred.store(false, Relaxed);
            for spot in &PARKED_BLOCKS[j] {
                spot.store(0, Relaxed);
            }
            let heap = row.heap.load(Relaxed);
            if !heap.is_null() {
                release(heap);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_the_pthread_handle_and_differs_between_threads() {
        // SAFETY: pthread_self has no preconditions.
        let main = unsafe { libc::pthread_self() } as usize;
        assert_eq!(me(), main);
        let other = std::thread::spawn(|| {
            // SAFETY: as above.
            (me(), unsafe { libc::pthread_self() } as usize)
        })
        .join()
        .unwrap();
        assert_eq!(other.0, other.1);
        assert_ne!(other.0, main);
    }
}

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

use core::ptr;
use core::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering::AcqRel, Ordering::Acquire,
    Ordering::Relaxed, Ordering::Release,
};

use twinheap_page::{map, MapOptions, Mutex};

use crate::heap::Heap;

const TABLE: usize = 1024;
const PROBES: usize = 16;
const EMPTY: usize = 0;
const GONE: usize = 1;

static TIDS: [AtomicUsize; TABLE] = [const { AtomicUsize::new(EMPTY) }; TABLE];
static HEAPS: [AtomicPtr<Heap>; TABLE] = [const { AtomicPtr::new(ptr::null_mut()) }; TABLE];

/// The calling thread's identity (its pthread handle, never 0 or 1 for a live thread).
#[inline]
pub(crate) fn me() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

#[inline]
fn home(tid: usize) -> usize {
    ((tid as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize
}

/// The heap of thread `me`, attaching one on first use. `None` only when no heap can be created.
#[inline]
pub(crate) fn heap_of(me: usize) -> Option<&'static Heap> {
    let h = home(me);
    for i in 0..PROBES {
        let j = (h + i) % TABLE;
        let t = TIDS[j].load(Acquire);
        if t == me {
            // SAFETY: a heap published in the table is never freed.
            return Some(unsafe { &*HEAPS[j].load(Acquire) });
        }
        if t == EMPTY {
            break;
        }
    }
    attach(me)
}

#[cold]
fn attach(me: usize) -> Option<&'static Heap> {
    let h = home(me);
    for i in 0..PROBES {
        let j = (h + i) % TABLE;
        let t = TIDS[j].load(Relaxed);
        if (t == EMPTY || t == GONE) && TIDS[j].compare_exchange(t, GONE, Relaxed, Relaxed).is_ok()
        {
            // The slot is reserved (GONE to everyone else) until the heap is in place.
            let heap = adopt()?;
            HEAPS[j].store(heap as *const Heap as *mut Heap, Release);
            TIDS[j].store(me, Release);
            watch_exit(j);
            return Some(heap);
        }
    }
    // The table is crowded around this thread's home: share one fallback heap rather than adopting
    // a heap on every call.
    shared_fallback()
}

static SPARE: AtomicPtr<Heap> = AtomicPtr::new(ptr::null_mut());

/// A heap kept for mallocs re-entered from a signal handler while the thread holds its own heap.
pub(crate) fn spare() -> Option<&'static Heap> {
    once_heap(&SPARE)
}

static FALLBACK: AtomicPtr<Heap> = AtomicPtr::new(ptr::null_mut());

fn shared_fallback() -> Option<&'static Heap> {
    once_heap(&FALLBACK)
}

/// The heap in `slot`, adopting one the first time.
fn once_heap(slot: &AtomicPtr<Heap>) -> Option<&'static Heap> {
    let current = slot.load(Acquire);
    if !current.is_null() {
        // SAFETY: heaps are never freed.
        return Some(unsafe { &*current });
    }
    let heap = adopt()? as *const Heap as *mut Heap;
    match slot.compare_exchange(ptr::null_mut(), heap, AcqRel, Acquire) {
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
    let heap = HEAPS[j].load(Acquire);
    TIDS[j].store(GONE, Release);
    if !heap.is_null() {
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
        crate::fork::register();
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
    for j in 0..TABLE {
        let t = TIDS[j].load(Relaxed);
        if t != EMPTY && t != GONE && t != survivor {
            TIDS[j].store(GONE, Relaxed);
            let heap = HEAPS[j].load(Relaxed);
            if !heap.is_null() {
                release(heap);
            }
        }
    }
}

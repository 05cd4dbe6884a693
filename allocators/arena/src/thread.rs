//! Per-thread state: the tcache, the thread's arena, and re-entrancy bookkeeping.
//!
//! The crate is `no_std` on stable Rust, so it has no `#[thread_local]`. A thread's record is found
//! in a direct-mapped table keyed by the thread pointer (on x86-64 the TCB address, read from `fs:0`
//! in one instruction; elsewhere `pthread_self()`), with `pthread_getspecific` on one key created at
//! first use as the fallback when the slot belongs to another thread. The key's destructor runs at
//! thread exit,
//! flushes the tcache back to the arenas that own the chunks, detaches the thread from its arena
//! (which goes on the free list when nobody else uses it) and returns the record to a pool. glibc
//! keeps the values of the first 32 keys in the thread descriptor itself, so the lookup is a call
//! and two loads with no allocation, and the key is created at the process's first allocation,
//! before most programs create keys of their own. (docs/arena.md compares this with the alternatives.)
//!
//! Re-entrancy: `busy` is set while the thread is inside the allocator. A call that finds it set (a
//! signal handler interrupted malloc) must not wait on any lock and must not touch the tcache, which
//! may be half-updated: it uses `try_lock` only; a malloc that cannot get its lock fails with ENOMEM,
//! and a free that cannot is parked in the record and finished when the interrupted call leaves.
//! While a thread attaches (its record not yet published), nested calls (`pthread_setspecific` or
//! `pthread_atfork` may allocate) are recognised through a small table of attaching threads and
//! served the same careful way without a record.

use core::ptr;
use core::sync::atomic::{
    compiler_fence, AtomicPtr, AtomicU8, AtomicUsize, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release, Ordering::SeqCst,
};

use twinheap_page::{map, MapOptions, Mutex};

use crate::arena::Arena;
use crate::chunk::*;
use crate::tcache::{self, Tcache};

/// Frees a thread can park while it is inside the allocator; more are leaked (never reused).
pub(crate) const PARKED: usize = 8;

#[repr(C)]
pub(crate) struct Thread {
    pub tc: Tcache,
    pub arena: *const Arena,
    pub busy: bool,
    /// Times the thread found its own arena locked since it last moved.
    pub contended: u32,
    pub nparked: usize,
    pub parked: [usize; PARKED],
    next_free: *mut Thread,
    next_all: *mut Thread,
    pub owner: usize,
    /// Index of this record's fast-lookup slot, or NO_SLOT.
    slot: usize,
}

const NO_SLOT: usize = usize::MAX;
const SLOTS: usize = 1024;
/// Fast lookup: the thread pointer of the slot's thread (0 free, 1 being claimed) and its record.
static SLOT_TP: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static SLOT_REC: [AtomicPtr<Thread>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];

/// The calling thread's identity: its thread pointer, never 0 or 1 for a live thread.
#[inline(always)]
fn tp() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let v: usize;
        // SAFETY: on x86-64 Linux (glibc and musl alike) fs:0 holds the thread control block's own
        // address; reading it has no side effects.
        unsafe {
            core::arch::asm!("mov {}, fs:0", out(reg) v, options(nostack, readonly, preserves_flags));
        }
        v
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: pthread_self has no preconditions.
        unsafe { libc::pthread_self() as usize }
    }
}

/// Thread pointers of live threads lie in their stacks' mappings, megabytes apart, so their page
/// numbers modulo the table size rarely collide; a collision only costs the fallback lookup.
#[inline(always)]
fn slot_of(tp: usize) -> usize {
    (tp >> 12) & (SLOTS - 1)
}

static KEY_PLUS1: AtomicUsize = AtomicUsize::new(0);
/// 0 not created, 1 being created, 2 ready, 3 creation failed.
static KEY_STATE: AtomicU8 = AtomicU8::new(0);

/// The calling thread's record: null while it attaches, or when no record could be made.
#[inline(always)]
pub(crate) fn current() -> *mut Thread {
    let tp = tp();
    let j = slot_of(tp);
    if SLOT_TP[j].load(Relaxed) == tp {
        return SLOT_REC[j].load(Relaxed);
    }
    current_slow(tp, j)
}

/// The calling thread's record if it has one; never attaches (free needs no arena of its own, and
/// a thread that already ran its exit destructor must not get a new record just to free).
#[inline(always)]
pub(crate) fn current_no_attach() -> *mut Thread {
    let tp = tp();
    let j = slot_of(tp);
    if SLOT_TP[j].load(Relaxed) == tp {
        return SLOT_REC[j].load(Relaxed);
    }
    current_slow_no_attach()
}

#[cold]
#[inline(never)]
fn current_slow_no_attach() -> *mut Thread {
    let k = KEY_PLUS1.load(Relaxed);
    if k == 0 {
        return ptr::null_mut();
    }
    // SAFETY: `k - 1` is a live key created by us.
    unsafe { libc::pthread_getspecific((k - 1) as libc::pthread_key_t) as *mut Thread }
}

/// True while the calling thread is attaching (its record not yet published): an allocator call now
/// is nested inside that attachment and must not wait on any lock.
#[cold]
pub(crate) fn is_attaching() -> bool {
    let me = me();
    ATTACHING_TIDS.iter().any(|t| t.load(Relaxed) == me)
}

#[cold]
#[inline(never)]
fn current_slow(tp: usize, j: usize) -> *mut Thread {
    let t = lookup_key();
    if !t.is_null() {
        // SAFETY: the record is this thread's.
        unsafe { claim_slot(t, tp, j) };
    }
    t
}

/// Gives record `t` the fast-lookup slot `j` if that slot is free.
unsafe fn claim_slot(t: *mut Thread, tp: usize, j: usize) {
    // SAFETY: `t` is the calling thread's record.
    unsafe {
        if (*t).slot != NO_SLOT {
            return;
        }
        if SLOT_TP[j].compare_exchange(0, 1, Relaxed, Relaxed).is_ok() {
            SLOT_REC[j].store(t, Relaxed);
            compiler_fence(SeqCst);
            SLOT_TP[j].store(tp, Release);
            (*t).slot = j;
        }
    }
}

fn release_slot(t: *mut Thread) {
    // SAFETY: `t` is a record whose thread is gone or exiting.
    unsafe {
        let j = (*t).slot;
        if j != NO_SLOT {
            (*t).slot = NO_SLOT;
            SLOT_REC[j].store(ptr::null_mut(), Relaxed);
            SLOT_TP[j].store(0, Release);
        }
    }
}

#[inline(always)]
fn lookup_key() -> *mut Thread {
    let k = KEY_PLUS1.load(Relaxed);
    if k != 0 {
        // SAFETY: `k - 1` is a live key created by us.
        let t = unsafe { libc::pthread_getspecific((k - 1) as libc::pthread_key_t) } as *mut Thread;
        if !t.is_null() {
            return t;
        }
    }
    attach()
}

fn key() -> Option<libc::pthread_key_t> {
    loop {
        match KEY_STATE.load(Acquire) {
            2 => return Some((KEY_PLUS1.load(Relaxed) - 1) as libc::pthread_key_t),
            3 => return None,
            0 if KEY_STATE.compare_exchange(0, 1, Acquire, Relaxed).is_ok() => {
                let mut k: libc::pthread_key_t = 0;
                // SAFETY: `k` is a valid out-pointer; the destructor has the signature libc expects.
                let ok = unsafe { libc::pthread_key_create(&mut k, Some(on_thread_exit)) } == 0;
                if ok {
                    KEY_PLUS1.store(k as usize + 1, Relaxed);
                }
                KEY_STATE.store(if ok { 2 } else { 3 }, Release);
            }
            _ => core::hint::spin_loop(),
        }
    }
}

const ATTACHING: usize = 32;
static ATTACHING_TIDS: [AtomicUsize; ATTACHING] = [const { AtomicUsize::new(0) }; ATTACHING];

fn me() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

#[cold]
#[inline(never)]
fn attach() -> *mut Thread {
    let _errno = twinheap_page::error::ErrnoGuard::save();
    // The tcache paths read the keys without checking them; every thread passes here first.
    crate::secret::init_keys();
    let Some(key) = key() else {
        return ptr::null_mut();
    };
    let me = me();
    if ATTACHING_TIDS.iter().any(|t| t.load(Relaxed) == me) {
        return ptr::null_mut();
    }
    let Some(slot) = ATTACHING_TIDS
        .iter()
        .find(|t| t.compare_exchange(0, me, Relaxed, Relaxed).is_ok())
    else {
        return ptr::null_mut();
    };
    let t = pool_take();
    if !t.is_null() {
        let arena = crate::registry::attach_thread();
        // SAFETY: the record is ours alone until published with setspecific.
        unsafe {
            (*t).arena = arena;
            (*t).owner = me;
            libc::pthread_setspecific(key, t as *const libc::c_void);
        }
        crate::fork::register();
    }
    slot.store(0, Relaxed);
    t
}

/// Marks the start of a call that may take locks and use the tcache. False if the thread is already
/// inside the allocator.
#[inline(always)]
pub(crate) fn enter(t: *mut Thread) -> bool {
    // SAFETY: `t` is the calling thread's record; only this thread (or its signal handlers) reads it.
    unsafe {
        if (*t).busy {
            return false;
        }
        (*t).busy = true;
    }
    compiler_fence(SeqCst);
    true
}

/// Ends a call started with [`enter`] and finishes frees parked meanwhile.
#[inline(always)]
pub(crate) fn leave(t: *mut Thread) {
    compiler_fence(SeqCst);
    // SAFETY: as in `enter`.
    unsafe {
        (*t).busy = false;
        if (*t).nparked != 0 {
            finish_parked(t);
        }
    }
}

/// Contended acquisitions of its own arena after which a thread moves to another.
const MOVE_AFTER: u32 = 4;

/// Takes the lock of `av`, the calling thread's own arena; a thread that keeps finding it taken is
/// marked for a move, done by [`maybe_move`] once the lock is released.
#[inline(always)]
pub(crate) fn lock_own(t: *mut Thread, av: &Arena) {
    if !av.lock.try_lock() {
        // SAFETY: `t` is the calling thread's record.
        unsafe { (*t).contended += 1 };
        av.lock.lock();
    }
}

/// Moves the thread to another arena if it has met contention often enough. Call with no lock held.
#[inline(always)]
pub(crate) fn maybe_move(t: *mut Thread) {
    // SAFETY: `t` is the calling thread's record.
    unsafe {
        if (*t).contended >= MOVE_AFTER {
            (*t).contended = 0;
            (*t).arena = crate::registry::migrate(&*(*t).arena);
        }
    }
}

/// Parks a validated heap chunk for later freeing; false when the parking spots are full.
pub(crate) fn park(t: *mut Thread, p: *mut u8) -> bool {
    // SAFETY: as in `enter`; a nested handler only appends.
    unsafe {
        let n = (*t).nparked;
        if n >= PARKED {
            return false;
        }
        (*t).parked[n] = p as usize;
        compiler_fence(SeqCst);
        (*t).nparked = n + 1;
        true
    }
}

#[cold]
fn finish_parked(t: *mut Thread) {
    loop {
        // SAFETY: as in `enter`.
        let p = unsafe {
            let n = (*t).nparked;
            if n == 0 {
                return;
            }
            let p = (*t).parked[n - 1];
            (*t).nparked = n - 1;
            p
        };
        // SAFETY: the program handed this block to free; it was validated and parked untouched.
        unsafe { crate::api::free(p as *mut u8) };
    }
}

/// Empties the tcache of `t` into the arenas that own the chunks.
///
/// # Safety
/// `t` is the caller's record (or, in a fork child, a dead thread's) and nothing else uses its cache.
pub(crate) unsafe fn flush(t: *mut Thread) {
    // SAFETY: per the contract; cached chunks are in-use chunks of live heaps.
    unsafe {
        let tc = &mut (*t).tc;
        for i in 0..TCACHE_MAX_BINS {
            while tc.counts[i] > 0 {
                let m = tcache::get(tc, i);
                let p = chunk_of(m);
                if let Some(av) = crate::registry::arena_of(p) {
                    crate::free::free_chunk(av, p, false);
                }
            }
        }
    }
}

unsafe extern "C" fn on_thread_exit(v: *mut libc::c_void) {
    let t = v as *mut Thread;
    if t.is_null() {
        return;
    }
    // SAFETY: the exiting thread owns its record; destructors do not run inside the allocator.
    unsafe {
        release_slot(t);
        (*t).busy = true;
        flush(t);
        let arena = (*t).arena;
        if !arena.is_null() {
            crate::registry::detach_thread(&*arena);
        }
        (*t).busy = false;
        pool_give(t);
    }
}

struct Pool {
    free: *mut Thread,
    cursor: usize,
    end: usize,
}

// SAFETY: the pool's pointers name process-global records; the Mutex serialises access.
unsafe impl Send for Pool {}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: ptr::null_mut(),
    cursor: 0,
    end: 0,
});

/// Every record ever made, linked through `next_all` (immutable once published).
static ALL: AtomicPtr<Thread> = AtomicPtr::new(ptr::null_mut());
pub(crate) static RECORD_BYTES: AtomicUsize = AtomicUsize::new(0);

fn pool_take() -> *mut Thread {
    let mut pool = POOL.lock();
    if !pool.free.is_null() {
        let t = pool.free;
        // SAFETY: records on the free list are unused; the pool lock guards `next_free`.
        unsafe {
            pool.free = (*t).next_free;
            (*t).next_free = ptr::null_mut();
        }
        return t;
    }
    let size = core::mem::size_of::<Thread>().next_multiple_of(64);
    if pool.cursor + size > pool.end {
        let Ok(m) = map(64 << 10, &MapOptions::new()) else {
            return ptr::null_mut();
        };
        pool.cursor = m.ptr().as_ptr() as usize;
        pool.end = pool.cursor + m.len();
        RECORD_BYTES.fetch_add(m.len(), Relaxed);
    }
    let t = pool.cursor as *mut Thread;
    pool.cursor += size;
    // SAFETY: fresh, aligned, unused memory from our own mapping.
    unsafe {
        t.write(Thread {
            tc: Tcache::new(),
            arena: ptr::null(),
            busy: false,
            contended: 0,
            nparked: 0,
            parked: [0; PARKED],
            next_free: ptr::null_mut(),
            next_all: ALL.load(Relaxed),
            owner: 0,
            slot: NO_SLOT,
        });
    }
    ALL.store(t, Release);
    t
}

fn pool_give(t: *mut Thread) {
    let mut pool = POOL.lock();
    // SAFETY: the record is no longer used by any thread; the pool lock guards `next_free`.
    unsafe {
        (*t).arena = ptr::null();
        (*t).owner = 0;
        (*t).nparked = 0;
        (*t).next_free = pool.free;
    }
    pool.free = t;
}

/// The pool lock, for fork handlers.
pub(crate) fn fork_lock() -> &'static twinheap_page::Lock {
    POOL.raw()
}

/// In a fork child: records of threads that do not exist there go back to the pool. Their cached
/// chunks are leaked, as in glibc: such a thread may have been halfway through a tcache update.
/// Returns the surviving thread's arena.
pub(crate) fn after_fork_child() -> *const Arena {
    let survivor = me();
    for slot in &ATTACHING_TIDS {
        slot.store(0, Relaxed);
    }
    let mut mine = ptr::null();
    let mut t = ALL.load(Acquire);
    while !t.is_null() {
        // SAFETY: single-threaded child; records are never unmapped.
        unsafe {
            let next = (*t).next_all;
            if (*t).owner == survivor {
                mine = (*t).arena;
            } else if (*t).owner != 0 {
                release_slot(t);
                (*t).busy = false;
                (*t).tc = Tcache::new();
                pool_give(t);
            }
            t = next;
        }
    }
    mine
}

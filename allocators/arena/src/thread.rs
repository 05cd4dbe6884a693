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
//! and a free that cannot is parked on the record's parked list (unbounded, linked through the
//! blocks themselves, see `parked.rs`) and finished when the interrupted call leaves.
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

#[repr(C)]
pub(crate) struct Thread {
    pub tc: Tcache,
    pub arena: *const Arena,
    pub busy: bool,
    /// Times the thread found its own arena locked since it last moved.
    pub contended: u32,
    /// Blocks whose free waits for the interrupted call to leave (see `parked.rs`).
    pub parked: AtomicPtr<Chunk>,
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

/// [`current_no_attach`]'s inline half: the record when the thread owns its table slot, else
/// null (the caller then asks [`current_no_attach`], out of line).
#[inline(always)]
pub(crate) fn current_if_slotted() -> *mut Thread {
    let tp = tp();
    let j = slot_of(tp);
    if SLOT_TP[j].load(Relaxed) == tp {
        return SLOT_REC[j].load(Relaxed);
    }
    ptr::null_mut()
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
        // A plain read: only this thread and its signal handlers push, and a handler's push is
        // complete before the interrupted code resumes (the compiler fence orders the read after
        // `busy` is cleared; a handler arriving after that frees directly instead of parking).
        if !(*t).parked.as_ptr().read().is_null() {
            finish_parked(t);
        }
    }
}

/// Contended acquisitions of its own arena after which a thread moves to another.
const MOVE_AFTER: u32 = 4;

/// Takes the lock of `av`, the calling thread's own arena; a thread that keeps finding it taken is
/// marked for a move, done by [`maybe_move`] once the lock is released.
#[inline(always)]
pub(crate) fn lock_own(t: *mut Thread, av: &Arena) -> crate::solo::Held {
    match crate::solo::try_lock(&av.lock) {
        Some(h) => h,
        None => lock_own_contended(t, av),
    }
}

/// [`lock_own`] when the lock was taken: out of line, so that the uncontended caller stays small.
#[cold]
#[inline(never)]
fn lock_own_contended(t: *mut Thread, av: &Arena) -> crate::solo::Held {
    // SAFETY: `t` is the calling thread's record.
    unsafe { (*t).contended += 1 };
    crate::solo::lock(&av.lock)
}

/// Moves the thread to another arena if it has met contention often enough. Call with no lock held.
#[inline(always)]
pub(crate) fn maybe_move(t: *mut Thread) {
    // SAFETY: `t` is the calling thread's record.
    unsafe {
        if (*t).contended >= MOVE_AFTER {
            move_arena(t);
        }
    }
}

/// [`maybe_move`]'s rare half, out of line: choosing an arena is long (it may read sysfs into a
/// stack buffer) and would otherwise give every caller a large frame.
#[cold]
#[inline(never)]
fn move_arena(t: *mut Thread) {
    // SAFETY: `t` is the calling thread's record; arenas live forever.
    unsafe {
        (*t).contended = 0;
        (*t).arena = crate::registry::migrate(&*(*t).arena);
    }
}

/// Frees parked so far (process-wide), and the most one interrupted call had to finish at once.
pub(crate) static PARKED_FREES: AtomicUsize = AtomicUsize::new(0);
pub(crate) static PARKED_BATCH_MAX: AtomicUsize = AtomicUsize::new(0);

/// The word a parked block carries in its second user word (where tcache and fast-bin chunks keep
/// their keys), so that parking it again is recognised as a double free.
fn park_key() -> usize {
    crate::secret::tcache_key().rotate_left(41) ^ 0x2545_f491_4f6c_dd1d
}

/// Parks heap block `m` (validated by free) on the record of `t`, whose call was interrupted while
/// holding the lock the free needs. The block is checked as far as that is possible without the
/// lock; free runs every check again when the parked free is finished. False (the block stays
/// untouched and is never reused) when the block carries a tcache or fast-bin key: it may be cached
/// or binned already (a double free free cannot confirm without the lock or the half-updated
/// tcache), and linking it would corrupt that list.
pub(crate) fn park(t: *mut Thread, m: *mut u8) -> bool {
    let p = chunk_of(m);
    // SAFETY: `m` passed free's heap checks (in an existing heap, aligned, sane size), so its header
    // and first two user words are ours to read; the next header is read only inside the heap.
    unsafe {
        let sz = size(p);
        let next = at(p, sz);
        if next as usize >= (*crate::heap::heap_of(p as usize)).end() || !prev_inuse(next) {
            crate::fault::report("double free or corruption (!prev)", m as usize);
        }
        let mark = (*p).bk as usize;
        if mark == park_key() {
            crate::fault::report("double free or corruption (parked)", m as usize);
        }
        if mark == crate::secret::tcache_key() || mark == crate::secret::fast_key() {
            return false;
        }
        (*p).bk = park_key() as P;
        let field = ptr::addr_of_mut!((*p).fd).cast::<usize>();
        crate::parked::push(&(*t).parked, p, |old| {
            field.write(crate::secret::protect(field, old as usize));
        });
    }
    PARKED_FREES.fetch_add(1, Relaxed);
    true
}

#[cold]
fn finish_parked(t: *mut Thread) {
    loop {
        // SAFETY: `t` is the calling thread's record; only it takes its parked list.
        let mut p = crate::parked::take_all(unsafe { &(*t).parked });
        if p.is_null() {
            return;
        }
        let mut n = 0;
        while !p.is_null() {
            // SAFETY: `p` was parked by `park` (or decoded from such a block's link and checked
            // below before use); its link is read before free hands the block on.
            unsafe {
                let field = ptr::addr_of!((*p).fd).cast::<usize>();
                let next = crate::secret::reveal(field, field.read()) as P;
                (*p).bk = ptr::null_mut();
                crate::api::free(mem(p));
                if !next.is_null()
                    && (!aligned(next as usize)
                        || !crate::heap::is_heap_address(mem(next) as usize))
                {
                    crate::fault::report("free(): corrupted parked list", mem(p) as usize);
                }
                p = next;
            }
            n += 1;
        }
        PARKED_BATCH_MAX.fetch_max(n, Relaxed);
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
        // Frees parked by a handler during the flush (the slot is gone: they take the lock).
        if !(*t).parked.load(Relaxed).is_null() {
            finish_parked(t);
        }
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
            parked: AtomicPtr::new(ptr::null_mut()),
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
        (*t).parked.store(ptr::null_mut(), Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// What a signal handler does while its thread holds an arena lock: park (here 40 blocks, far
    /// more than the 8 spots the record once had); leaving the allocator finishes every free, and
    /// the blocks are reused.
    #[test]
    fn parked_frees_are_unbounded_and_finished_on_leave() {
        let blocks: Vec<*mut u8> = (0..40).map(|_| crate::api::malloc(3000)).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        let t = current();
        assert!(!t.is_null());
        let before = PARKED_FREES.load(Relaxed);
        assert!(enter(t));
        for &m in &blocks {
            assert!(park(t, m));
        }
        // SAFETY: our own record.
        assert!(!unsafe { (*t).parked.load(Relaxed) }.is_null());
        leave(t);
        // SAFETY: as above.
        assert!(unsafe { (*t).parked.load(Relaxed) }.is_null());
        assert!(PARKED_FREES.load(Relaxed) >= before + 40);
        assert!(PARKED_BATCH_MAX.load(Relaxed) >= 40);
        // Freed for real: new blocks reuse the memory.
        let again: Vec<*mut u8> = (0..40).map(|_| crate::api::malloc(3000)).collect();
        assert!(again.iter().any(|p| blocks.contains(p)));
        for p in again {
            // SAFETY: live blocks.
            unsafe { crate::api::free(p) };
        }
    }
}

//! fork: every slab lock is taken before fork and released (parent) or reset (child) after.
//!
//! Order, the same everywhere locks nest: registry, then each heap, then the large list and the
//! tombstones, then the segment locks and the meta pool (a heap creating a group takes either
//! while holding its own; the two never nest). The child runs on one thread, the one that
//! forked: the heaps of the others go back to the free list.
//!
//! The handlers are registered once, when the thread that created the first heap leaves slab, not
//! inside that call: pthread_atfork may allocate (musl's always does, glibc's once its table is
//! full), and while slab is the process's malloc such a nested call would be a re-entry, which may
//! not wait for locks and would fail, leaving fork unprotected.

use core::sync::atomic::{
    AtomicBool,
    Ordering::{AcqRel, Relaxed},
};

use crate::{large, meta, segment, thread};

static WANTED: AtomicBool = AtomicBool::new(false);
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Asks for the handlers to be registered when the calling thread leaves slab.
pub(crate) fn want() {
    WANTED.store(true, Relaxed);
}

pub(crate) fn wanted() -> bool {
    WANTED.load(Relaxed)
}

/// Registers the handlers if a heap exists and they are not yet registered. Called only outside
/// every slab call of the calling thread.
#[inline]
pub(crate) fn register_if_wanted() {
    if WANTED.load(Relaxed) && !REGISTERED.swap(true, AcqRel) {
        // SAFETY: the handlers are plain extern "C" functions that live for the whole process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    }
}

/// True once the handlers are registered (for tests).
#[doc(hidden)]
pub fn registered() -> bool {
    REGISTERED.load(Relaxed)
}

unsafe extern "C" fn prepare() {
    thread::registry_lock().lock();
    thread::for_each_heap(|heap| heap.raw_lock().lock());
    for lock in large::fork_locks() {
        lock.lock();
    }
    for lock in segment::fork_locks() {
        lock.lock();
    }
    meta::fork_lock().lock();
}

unsafe extern "C" fn parent() {
    // SAFETY: `prepare` took every one of these locks on this thread.
    unsafe {
        meta::fork_lock().unlock();
        for lock in segment::fork_locks() {
            lock.unlock();
        }
        for lock in large::fork_locks() {
            lock.unlock();
        }
        thread::for_each_heap(|heap| heap.raw_lock().unlock());
        thread::registry_lock().unlock();
    }
}

unsafe extern "C" fn child() {
    // SAFETY: the child is single-threaded and `prepare` took every lock before the fork.
    unsafe {
        meta::fork_lock().reset_after_fork();
        for lock in segment::fork_locks() {
            lock.reset_after_fork();
        }
        for lock in large::fork_locks() {
            lock.reset_after_fork();
        }
        thread::for_each_heap(|heap| {
            heap.raw_lock().reset_after_fork();
        });
        thread::registry_lock().reset_after_fork();
    }
    thread::after_fork_child();
}

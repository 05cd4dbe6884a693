//! fork: every slab lock is taken before fork and released (parent) or reset (child) after.
//!
//! Order, the same everywhere locks nest: registry, then each heap, then the large list and the
//! tombstones, then the recycled group mappings and the meta pool (a heap creating a group takes
//! either while holding its own; the two never nest). The child runs on one thread, the one that
//! forked: the heaps of the others go back to the free list.
//!
//! The handlers are registered once, after the first heap exists and outside every lock, because
//! pthread_atfork itself may allocate.

use core::sync::atomic::{AtomicBool, Ordering::AcqRel};

use crate::{large, meta, recycle, thread};

static REGISTERED: AtomicBool = AtomicBool::new(false);

pub(crate) fn register() {
    if !REGISTERED.swap(true, AcqRel) {
        // SAFETY: the handlers are plain extern "C" functions that live for the whole process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    }
}

unsafe extern "C" fn prepare() {
    thread::registry_lock().lock();
    thread::for_each_heap(|heap| heap.raw_lock().lock());
    for lock in large::fork_locks() {
        lock.lock();
    }
    recycle::fork_lock().lock();
    meta::fork_lock().lock();
}

unsafe extern "C" fn parent() {
    // SAFETY: `prepare` took every one of these locks on this thread.
    unsafe {
        meta::fork_lock().unlock();
        recycle::fork_lock().unlock();
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
        recycle::fork_lock().reset_after_fork();
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

//! fork: every arena lock and the registry and record-pool locks are taken before fork, released in
//! the parent and reset in the child.
//!
//! Order, the same everywhere locks nest: registry, record pool, then each arena along the list from
//! the main arena. The child runs only the forking thread: the arenas of the others become free for
//! new threads, and their records go back to the pool. The handlers are registered once, by the first
//! thread that attaches, outside every lock (pthread_atfork itself may allocate).

use core::sync::atomic::{AtomicBool, Ordering::AcqRel};

use crate::{registry, thread};

static REGISTERED: AtomicBool = AtomicBool::new(false);

pub(crate) fn register() {
    if !REGISTERED.swap(true, AcqRel) {
        // SAFETY: the handlers are plain extern "C" functions that live for the whole process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    }
}

unsafe extern "C" fn prepare() {
    registry::fork_lock().lock();
    thread::fork_lock().lock();
    registry::for_each(|a| a.lock.lock());
}

unsafe extern "C" fn parent() {
    // SAFETY: `prepare` took every one of these locks on this thread.
    unsafe {
        registry::for_each(|a| a.lock.unlock());
        thread::fork_lock().unlock();
        registry::fork_lock().unlock();
    }
}

unsafe extern "C" fn child() {
    // SAFETY: the child has one thread; the locks' holders do not exist here.
    unsafe {
        registry::for_each(|a| a.lock.reset_after_fork());
        thread::fork_lock().reset_after_fork();
        registry::fork_lock().reset_after_fork();
    }
    let mine = thread::after_fork_child();
    registry::after_fork_child(mine);
}

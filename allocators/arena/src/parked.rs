//! Parked frees: blocks a signal handler freed while its thread was inside the allocator holding the
//! arena lock the block needs. The handler must not wait for that lock (the interrupted call holds
//! it), so it pushes the block onto its thread's parked list; the interrupted call finishes every
//! parked free when it leaves the allocator.
//!
//! The list costs no memory of its own: it is linked through the parked blocks' first user word
//! (the program gave the block up, and free's checks read only the header and the second user word).
//! It is unbounded and lock-free: a push is a CAS on the head, so a handler that interrupts another
//! handler's push (nested signals) cannot lose either block, and the owner empties the list with one
//! swap and walks what it took, while handlers keep pushing onto the now empty head.
//!
//! Invariants: a block's link is written before the Release CAS that makes it the head and is not
//! written again while it is parked; whoever takes the list (Acquire) may read every link in it;
//! only the owning thread takes the list. The signal handler case is a same-thread interleaving,
//! which the loom models below cover as a special case of concurrent threads.
//!
//! The functions are generic over the entry type with the link access as a closure, so that the
//! arena passes chunks (with safe-linking) and the loom models plain nodes.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::AtomicPtr;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicPtr;

use core::ptr;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Parks `p` on the list at `head`. `link(old)` must store `old` as p's successor; it may run
/// several times (once per attempt).
#[inline]
pub(crate) fn push<T>(head: &AtomicPtr<T>, p: *mut T, mut link: impl FnMut(*mut T)) {
    let mut old = head.load(Relaxed);
    loop {
        link(old);
        // Release publishes the link to whoever takes the list.
        match head.compare_exchange_weak(old, p, Release, Relaxed) {
            Ok(_) => return,
            Err(cur) => old = cur,
        }
    }
}

/// Takes every parked entry at once (owner only); the caller walks the returned list.
#[inline]
pub(crate) fn take_all<T>(head: &AtomicPtr<T>) -> *mut T {
    head.swap(ptr::null_mut(), Acquire)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::vec::Vec;

    struct Node {
        next: *mut Node,
    }

    #[test]
    fn unbounded_lifo_and_take_all() {
        let mut nodes: Vec<Node> = (0..100)
            .map(|_| Node {
                next: ptr::null_mut(),
            })
            .collect();
        let head = AtomicPtr::new(ptr::null_mut());
        let ptrs: Vec<*mut Node> = nodes.iter_mut().map(|n| n as *mut Node).collect();
        for &p in &ptrs {
            // SAFETY: test nodes, each parked once.
            push(&head, p, |old| unsafe { (*p).next = old });
        }
        let mut p = take_all(&head);
        assert!(head.load(Relaxed).is_null());
        let mut seen = Vec::new();
        while !p.is_null() {
            seen.push(p);
            // SAFETY: nodes of the list taken above.
            p = unsafe { (*p).next };
        }
        seen.reverse();
        assert_eq!(seen, ptrs);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    extern crate std;
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;
    use std::vec::Vec;

    struct Node {
        link: UnsafeCell<*mut Node>,
        id: usize,
    }

    struct List {
        head: AtomicPtr<Node>,
        nodes: Vec<Node>,
    }

    // SAFETY: nodes are reached through the list's protocol only; loom checks it.
    unsafe impl Send for List {}
    // SAFETY: as above.
    unsafe impl Sync for List {}

    impl List {
        fn new(n: usize) -> Arc<List> {
            Arc::new(List {
                head: AtomicPtr::new(ptr::null_mut()),
                nodes: (0..n)
                    .map(|id| Node {
                        link: UnsafeCell::new(ptr::null_mut()),
                        id,
                    })
                    .collect(),
            })
        }

        fn park(&self, i: usize) {
            let p = &self.nodes[i] as *const Node as *mut Node;
            // SAFETY: the parking side owns node `i` until the CAS publishes it.
            push(&self.head, p, |old| unsafe {
                (*p).link.with_mut(|l| *l = old)
            });
        }

        /// The owner's drain: every entry taken, in list order.
        fn drain(&self) -> Vec<usize> {
            let mut out = Vec::new();
            let mut p = take_all(&self.head);
            while !p.is_null() {
                // SAFETY: p is an entry of the list taken with Acquire, its link published.
                unsafe {
                    out.push((*p).id);
                    p = (*p).link.with(|l| *l);
                }
            }
            out
        }
    }

    /// Two parking sides (one parks two blocks, as a handler freeing several does) race the owner
    /// draining twice: every block comes out exactly once, and no link is read before it is
    /// published (loom reports an unordered access to a node's link cell).
    #[test]
    fn loom_parked_push_drain() {
        loom::model(|| {
            let list = List::new(3);
            let a = {
                let list = list.clone();
                thread::spawn(move || {
                    list.park(0);
                    list.park(1);
                })
            };
            let b = {
                let list = list.clone();
                thread::spawn(move || list.park(2))
            };
            let mut got = list.drain();
            got.extend(list.drain());
            a.join().unwrap();
            b.join().unwrap();
            got.extend(list.drain());
            got.sort_unstable();
            assert_eq!(got, [0, 1, 2]);
        });
    }
}

//! The fast-bin protocol: each fast bin is a LIFO list whose head is an atomic pointer, pushed by
//! any freeing thread with a CAS and no lock, and emptied only by the holder of the arena lock.
//!
//! Invariants:
//! - a chunk's link word is written before the Release CAS that makes it the head, and is not
//!   written again while the chunk is in the bin; whoever reads a head (Acquire) may read the links
//!   below it;
//! - only the lock holder removes entries ([`pop`], [`take_all`]), so pops never race each other:
//!   pushes only add above the head, and a popper whose CAS still finds `victim` at the head knows
//!   the link it read is victim's successor (no ABA);
//! - a push refuses a chunk that is the head when it would link it (glibc's "fasttop" test), which
//!   keeps a bin from ever linking a chunk to itself; other double frees are for the lock holder's
//!   walk from [`first`].
//!
//! The functions are generic over the entry type and take the link accesses as closures, so that
//! the arena passes its chunks (with their safe-linking encoding) and the loom models below pass
//! plain nodes. Under `cfg(loom)` the head is loom's atomic pointer; the arena is not compiled then.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::AtomicPtr;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicPtr;

use core::ptr;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// A push found its chunk already at the head of the bin: a double free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AlreadyTop;

/// Pushes `p` onto the bin at `head` without a lock. `link(old)` must store `old` as p's successor
/// (it may run several times, once per attempt, and may check `old`). Refuses `p` if it is the head.
#[inline(always)]
pub(crate) fn push<T>(
    head: &AtomicPtr<T>,
    p: *mut T,
    mut link: impl FnMut(*mut T),
) -> Result<(), AlreadyTop> {
    let mut old = head.load(Relaxed);
    loop {
        // Tested on every attempt: the head a failed CAS returns may be `p` itself.
        if old == p {
            return Err(AlreadyTop);
        }
        link(old);
        // Release publishes the link (and anything the caller wrote into `p`) to the lock holder.
        match head.compare_exchange_weak(old, p, Release, Relaxed) {
            Ok(_) => return Ok(()),
            Err(cur) => old = cur,
        }
    }
}

/// Pops the head of the bin (lock holder only); null if empty. `next(victim)` reads victim's
/// successor (and may check victim first).
#[inline(always)]
pub(crate) fn pop<T>(head: &AtomicPtr<T>, mut next: impl FnMut(*mut T) -> *mut T) -> *mut T {
    let mut victim = head.load(Acquire);
    while !victim.is_null() {
        let n = next(victim);
        // A failure means a push landed above victim: retry from the new head (Acquire, to read
        // its link).
        match head.compare_exchange_weak(victim, n, Acquire, Acquire) {
            Ok(_) => break,
            Err(cur) => victim = cur,
        }
    }
    victim
}

/// Empties the bin at once (lock holder only) and returns its old head, whose list the caller now
/// owns.
///
/// An empty bin is seen with a plain load and left alone: the swap is a locked read-modify-write
/// (several nanoseconds even uncontended), and consolidation drains all ten bins, most of them
/// usually empty (three are never used with the default `mxfast`). Finding null is the same as a
/// swap that returned null at that moment: a push that lands right after is simply left for the
/// next drain, as it would be after the swap.
#[inline(always)]
pub(crate) fn take_all<T>(head: &AtomicPtr<T>) -> *mut T {
    if head.load(Relaxed).is_null() {
        return ptr::null_mut();
    }
    head.swap(ptr::null_mut(), Acquire)
}

/// The head, for a walk by the lock holder (entries below it cannot leave meanwhile).
#[inline(always)]
pub(crate) fn first<T>(head: &AtomicPtr<T>) -> *mut T {
    head.load(Acquire)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Node {
        next: *mut Node,
    }

    fn push_node(head: &AtomicPtr<Node>, p: *mut Node) -> Result<(), AlreadyTop> {
        // SAFETY: `p` points to a live node of the test that is not in the bin.
        push(head, p, |old| unsafe { (*p).next = old })
    }

    fn pop_node(head: &AtomicPtr<Node>) -> *mut Node {
        // SAFETY: entries of the bin are live nodes of the test.
        pop(head, |v| unsafe { (*v).next })
    }

    #[test]
    fn lifo_fasttop_and_take_all() {
        let mut nodes: [Node; 3] = core::array::from_fn(|_| Node {
            next: ptr::null_mut(),
        });
        let [a, b, c] = nodes.each_mut().map(|n| n as *mut Node);
        let head = AtomicPtr::new(ptr::null_mut());
        assert!(pop_node(&head).is_null());
        assert_eq!(push_node(&head, a), Ok(()));
        assert_eq!(push_node(&head, a), Err(AlreadyTop));
        assert_eq!(push_node(&head, b), Ok(()));
        assert_eq!(push_node(&head, c), Ok(()));
        assert_eq!(pop_node(&head), c);
        assert_eq!(first(&head), b);
        let all = take_all(&head);
        assert_eq!(all, b);
        // SAFETY: b and a are test nodes.
        unsafe {
            assert_eq!((*b).next, a);
            assert!((*a).next.is_null());
        }
        assert!(first(&head).is_null());
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    extern crate std;
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use std::vec::Vec;

    /// A chunk as the protocol sees it: its link is plain memory (loom reports any access to it
    /// that is not ordered by the bin's atomics), and its number for the bookkeeping.
    struct Node {
        link: UnsafeCell<*mut Node>,
        id: usize,
    }

    /// An arena reduced to one fast bin, its lock, and the chunks.
    struct Bin {
        head: AtomicPtr<Node>,
        lock: Mutex<()>,
        nodes: Vec<Node>,
    }

    // SAFETY: the nodes are reached through the bin's protocol only; loom checks it.
    unsafe impl Send for Bin {}
    // SAFETY: as above.
    unsafe impl Sync for Bin {}

    impl Bin {
        fn new(n: usize) -> Arc<Bin> {
            Arc::new(Bin {
                head: AtomicPtr::new(ptr::null_mut()),
                lock: Mutex::new(()),
                nodes: (0..n)
                    .map(|id| Node {
                        link: UnsafeCell::new(ptr::null_mut()),
                        id,
                    })
                    .collect(),
            })
        }

        fn node(&self, i: usize) -> *mut Node {
            &self.nodes[i] as *const Node as *mut Node
        }

        /// free() of a fast chunk: the lock-free push.
        fn free(&self, i: usize) -> Result<(), AlreadyTop> {
            let p = self.node(i);
            // SAFETY: p is a node of this bin; the freeing thread owns it until the CAS.
            push(&self.head, p, |old| unsafe {
                (*p).link.with_mut(|l| *l = old)
            })
        }

        /// The lock holder reads a successor (as `malloc`'s fast pop and consolidate do).
        fn next(v: *mut Node) -> *mut Node {
            // SAFETY: v was read from the head with Acquire, so its link is visible.
            unsafe { (*v).link.with(|l| *l) }
        }

        /// malloc's fast path (lock held): the popped chunk's number.
        fn pop(&self) -> Option<usize> {
            let v = pop(&self.head, Self::next);
            // SAFETY: a popped entry is a node of this bin.
            (!v.is_null()).then(|| unsafe { (*v).id })
        }

        /// malloc_consolidate (lock held): every chunk in the bin, head first.
        fn consolidate(&self) -> Vec<usize> {
            let mut out = Vec::new();
            let mut p = take_all(&self.head);
            while !p.is_null() {
                // SAFETY: p is an entry of the list taken above.
                out.push(unsafe { (*p).id });
                assert!(
                    out.len() <= self.nodes.len(),
                    "cycle in the fast bin: {out:?}"
                );
                p = Self::next(p);
            }
            out
        }

        /// The double-free walk of free (lock taken): is chunk `i` in the bin?
        fn walk_finds(&self, i: usize) -> bool {
            let _g = self.lock.lock().unwrap();
            let target = self.node(i);
            let mut q = first(&self.head);
            let mut steps = 0;
            while !q.is_null() {
                if q == target {
                    return true;
                }
                steps += 1;
                assert!(steps <= self.nodes.len(), "cycle in the fast bin");
                q = Self::next(q);
            }
            false
        }
    }

    /// Two threads free chunks (one of them flushing a tcache of two at thread exit, which pushes
    /// each without the lock) while the lock holder pops one chunk and consolidates. Every chunk
    /// freed comes out exactly once: none lost, none twice, no link read before it was published.
    #[test]
    fn loom_fastbin_push_pop() {
        loom::model(|| {
            let bin = Bin::new(3);
            let b1 = bin.clone();
            let flusher = thread::spawn(move || {
                b1.free(0).unwrap();
                b1.free(1).unwrap();
            });
            let b2 = bin.clone();
            let freer = thread::spawn(move || b2.free(2).unwrap());
            let mut seen = Vec::new();
            {
                let _g = bin.lock.lock().unwrap();
                seen.extend(bin.pop());
                seen.extend(bin.consolidate());
            }
            flusher.join().unwrap();
            freer.join().unwrap();
            let _g = bin.lock.lock().unwrap();
            seen.extend(bin.consolidate());
            seen.sort_unstable();
            assert_eq!(seen, [0, 1, 2], "lost or duplicated chunks");
        });
    }

    /// Chunk 0 is in the bin under chunk 1. A thread frees chunk 0 again the way free does (the
    /// locked walk, then the push with its head test) while another pushes chunk 2 and the lock
    /// holder pops once, so chunk 0 may be the head or not when it is freed again. The double free
    /// is always caught, and the bin loses and duplicates nothing.
    #[test]
    fn loom_fastbin_double_free_walk() {
        loom::model(|| {
            let bin = Bin::new(3);
            bin.free(0).unwrap();
            bin.free(1).unwrap();
            let b1 = bin.clone();
            let again = thread::spawn(move || b1.walk_finds(0) || b1.free(0).is_err());
            let b2 = bin.clone();
            let freer = thread::spawn(move || b2.free(2).unwrap());
            let popped = {
                let _g = bin.lock.lock().unwrap();
                bin.pop()
            };
            assert!(again.join().unwrap(), "double free of chunk 0 missed");
            freer.join().unwrap();
            let _g = bin.lock.lock().unwrap();
            let mut seen = bin.consolidate();
            seen.extend(popped);
            assert_ne!(popped, Some(0), "chunk 0 popped from under chunk 1");
            seen.sort_unstable();
            assert_eq!(seen, [0, 1, 2], "lost or duplicated chunks");
        });
    }

    /// The head test alone (free's path when the walk is skipped because the lock is busy): chunk
    /// 0 is freed again while chunk 1 above it may be popped and chunk 2 pushed. The push is
    /// refused whenever chunk 0 is the head, so chunk 0 is never linked to itself, and it is
    /// refused only if the pop uncovered chunk 0.
    #[test]
    fn loom_fastbin_fasttop() {
        loom::model(|| {
            let bin = Bin::new(3);
            bin.free(0).unwrap();
            bin.free(1).unwrap();
            let b1 = bin.clone();
            let again = thread::spawn(move || b1.free(0));
            let b2 = bin.clone();
            let freer = thread::spawn(move || b2.free(2).unwrap());
            let popped = {
                let _g = bin.lock.lock().unwrap();
                bin.pop()
            };
            let refused = again.join().unwrap().is_err();
            freer.join().unwrap();
            if refused {
                assert_eq!(popped, Some(1), "refused although chunk 0 was not the head");
            }
            let _g = bin.lock.lock().unwrap();
            // SAFETY: all threads are joined; node 0 is a node of the bin.
            let link0 = unsafe { (*bin.node(0)).link.with(|l| *l) };
            assert_ne!(link0, bin.node(0), "chunk 0 linked to itself");
        });
    }
}

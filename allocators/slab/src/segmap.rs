//! The segment map: from an address to its segment's record, lock-free for readers.
//!
//! Two levels, indexed by the segment number (`address >> SEG_SHIFT`): a top level of leaf
//! pointers (a static array in the allocator), and leaves made on demand, each an array of record
//! pointers for `LEAF` consecutive segments. Protocol:
//!
//! - readers (every free) only load, with acquire ordering, and never lock;
//! - a writer publishes a record with one release store after the record is complete, so a reader
//!   that sees the pointer sees the whole record; it clears the entry before the record goes away;
//! - a leaf is made under the map's lock, checked again once the lock is held, so that two writers
//!   racing for the same leaf make one; it is published with a release store after it is zeroed,
//!   and never freed.
//!
//! Under `cfg(loom)` the module's models explore writers racing to create a leaf and readers
//! racing with publication.

use core::ptr;

#[cfg(not(loom))]
use core::sync::atomic::AtomicPtr;
use core::sync::atomic::Ordering::{Acquire, Release};
#[cfg(loom)]
use loom::sync::atomic::AtomicPtr;

use twinheap_page::Mutex;

/// A two-level map from `TOP * LEAF` keys to pointers to `T`.
pub(crate) struct Map<T, const TOP: usize, const LEAF: usize> {
    top: [AtomicPtr<[AtomicPtr<T>; LEAF]>; TOP],
    lock: Mutex<()>,
}

impl<T, const TOP: usize, const LEAF: usize> Map<T, TOP, LEAF> {
    /// An empty map (no leaves).
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Map {
            top: [const { AtomicPtr::new(ptr::null_mut()) }; TOP],
            lock: Mutex::new(()),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Map {
            top: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            lock: Mutex::new(()),
        }
    }

    /// The pointer stored for `key`, or null (no entry, or `key` beyond the map).
    #[inline(always)]
    pub(crate) fn get(&self, key: usize) -> *mut T {
        let Some(top) = self.top.get(key / LEAF) else {
            return ptr::null_mut();
        };
        let leaf = top.load(Acquire);
        if leaf.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a published leaf is complete and never freed.
        unsafe { (*leaf)[key % LEAF].load(Acquire) }
    }

    /// Publishes `value` for `key` (null clears it): release ordering, so a reader that sees the
    /// pointer sees everything written before. Makes the key's leaf first if needed; `None` when
    /// the key is beyond the map, or no leaf could be made (`try_only`: the lock was busy; or out
    /// of memory).
    pub(crate) fn set(&self, key: usize, value: *mut T, try_only: bool) -> Option<()> {
        let top = self.top.get(key / LEAF)?;
        let mut leaf = top.load(Acquire);
        if leaf.is_null() {
            let _guard = if try_only {
                self.lock.try_lock()?
            } else {
                self.lock.lock()
            };
            leaf = top.load(Acquire);
            if leaf.is_null() {
                leaf = new_leaf::<T, LEAF>()?;
                top.store(leaf, Release);
            }
        }
        // SAFETY: as in `get`.
        unsafe { (*leaf)[key % LEAF].store(value, Release) };
        Some(())
    }

    /// The lock that serialises leaf creation, for fork handlers.
    pub(crate) fn lock(&self) -> &twinheap_page::Lock {
        self.lock.raw()
    }
}

/// A zeroed leaf (null entries) from the page backend; leaves are never freed.
#[cfg(not(loom))]
fn new_leaf<T, const LEAF: usize>() -> Option<*mut [AtomicPtr<T>; LEAF]> {
    let len = core::mem::size_of::<[AtomicPtr<T>; LEAF]>();
    let m = twinheap_page::map(len, &twinheap_page::MapOptions::new()).ok()?;
    LEAF_BYTES.fetch_add(m.len(), core::sync::atomic::Ordering::Relaxed);
    // Fresh anonymous memory reads zero, and a zero AtomicPtr is null.
    Some(m.ptr().as_ptr() as *mut [AtomicPtr<T>; LEAF])
}

#[cfg(loom)]
fn new_leaf<T, const LEAF: usize>() -> Option<*mut [AtomicPtr<T>; LEAF]> {
    extern crate std;
    let leaf: std::boxed::Box<[AtomicPtr<T>; LEAF]> =
        std::boxed::Box::new(core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())));
    Some(std::boxed::Box::leak(leaf))
}

/// Bytes of leaves mapped, for statistics.
#[cfg(not(loom))]
pub(crate) static LEAF_BYTES: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(0);

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    struct Record {
        value: UnsafeCell<u64>,
    }

    /// Two writers race to publish records whose keys share a leaf: both entries end up in one
    /// leaf, and a reader racing with them sees each entry either absent or complete.
    #[test]
    fn loom_racing_writers_share_one_leaf_and_readers_see_complete_records() {
        loom::model(|| {
            let map: Arc<Map<Record, 2, 2>> = Arc::new(Map::new());
            let writers: std::vec::Vec<_> = (0..2u64)
                .map(|k| {
                    let map = map.clone();
                    thread::spawn(move || {
                        let r = std::boxed::Box::leak(std::boxed::Box::new(Record {
                            value: UnsafeCell::new(0),
                        }));
                        // SAFETY: the record is not published yet.
                        r.value.with_mut(|v| unsafe { *v = 10 + k });
                        map.set(k as usize, r, false).unwrap();
                    })
                })
                .collect();
            let reader = {
                let map = map.clone();
                thread::spawn(move || {
                    for k in 0..2 {
                        let r = map.get(k);
                        if !r.is_null() {
                            // SAFETY: published records are complete and never freed here.
                            let v = unsafe { (*r).value.with(|v| *v) };
                            assert_eq!(v, 10 + k as u64);
                        }
                    }
                })
            };
            for w in writers {
                w.join().unwrap();
            }
            reader.join().unwrap();
            for k in 0..2 {
                let r = map.get(k);
                assert!(!r.is_null(), "entry {k} lost");
                // SAFETY: as above.
                assert_eq!(unsafe { (*r).value.with(|v| *v) }, 10 + k as u64);
            }
            assert!(map.get(4).is_null());
        });
    }

    /// A cleared entry reads null afterwards, and a reader racing with the clear sees the record
    /// or nothing.
    #[test]
    fn loom_cleared_entries_read_null() {
        loom::model(|| {
            let map: Arc<Map<Record, 1, 2>> = Arc::new(Map::new());
            let r = std::boxed::Box::leak(std::boxed::Box::new(Record {
                value: UnsafeCell::new(7),
            }));
            map.set(1, r, false).unwrap();
            let reader = {
                let map = map.clone();
                thread::spawn(move || {
                    let seen = map.get(1);
                    assert!(seen.is_null() || core::ptr::eq(seen, r));
                })
            };
            map.set(1, ptr::null_mut(), false).unwrap();
            reader.join().unwrap();
            assert!(map.get(1).is_null());
        });
    }
}

//! The sleeping lock both allocators use: a futex mutex that spins briefly, then sleeps.
//!
//! Allocators run with more threads than cores, where a pure spin lock collapses: a waiter spins away
//! the time slice the holder needs to finish. This lock spins for a short, bounded while (the holder
//! usually leaves within a few hundred cycles) and then sleeps in the kernel.
//!
//! State word: 0 unlocked, 1 locked with no sleepers, 2 locked and someone may be asleep. Only an
//! unlock that sees 2 pays for a wake syscall. (The protocol is the classic one from Drepper's
//! "Futexes Are Tricky", mutex 2.)
//!
//! It is const-constructible (usable in statics with no init call), never allocates, never panics,
//! and is not reentrant: locking it twice on one thread deadlocks, so allocator code must never call
//! back into itself while holding it. Fork: take it in the prepare handler, then unlock it in the
//! parent and [`Lock::reset_after_fork`] it in the child (where the holder threads no longer exist).

#[cfg(not(loom))]
use core::sync::atomic::AtomicU32;
#[cfg(loom)]
use loom::sync::atomic::AtomicU32;

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::compiler_fence;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use crate::futex::Futex;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// Spins before sleeping. Enough to cover a short critical section on another core; loom gets a
/// single spin so that it explores the sleeping path without an explosion of states.
#[cfg(not(loom))]
const SPINS: u32 = 100;
#[cfg(loom)]
const SPINS: u32 = 1;

/// A raw sleeping lock. See the module docs.
#[derive(Debug)]
pub struct Lock {
    state: AtomicU32,
    futex: Futex,
}

impl Lock {
    /// A new, unlocked lock.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Lock {
            state: AtomicU32::new(UNLOCKED),
            futex: Futex::new(),
        }
    }

    /// A new, unlocked lock (loom's atomics cannot be built in a const context).
    #[cfg(loom)]
    pub fn new() -> Self {
        Lock {
            state: AtomicU32::new(UNLOCKED),
            futex: Futex::new(),
        }
    }

    /// Takes the lock, spinning briefly and then sleeping until it is free.
    #[inline]
    pub fn lock(&self) {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    /// Takes the lock if it is free right now.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
            .is_ok()
    }

    /// [`Lock::try_lock`] for a caller that knows no other thread exists (a single-threaded process):
    /// a plain load and store instead of an atomic read-modify-write, which costs several
    /// nanoseconds even uncontended. The state word is the same, so the thread's own signal handlers
    /// still see the lock taken, and every other method still works on it.
    ///
    /// # Safety
    /// No other thread may exist until the lock is released (with [`Lock::unlock_alone`]).
    #[inline]
    pub unsafe fn try_lock_alone(&self) -> bool {
        if self.state.load(Relaxed) != UNLOCKED {
            return false;
        }
        self.state.store(LOCKED, Relaxed);
        // Keeps the critical section's accesses after the store, for a signal handler's sake.
        compiler_fence(SeqCst);
        true
    }

    /// Releases a lock taken by a thread that knows no other thread exists (the counterpart of
    /// [`Lock::try_lock_alone`], also fine for a lock taken otherwise): a plain store, or a normal
    /// unlock if a sleeper was recorded.
    ///
    /// # Safety
    /// The calling thread holds the lock and no other thread exists.
    #[inline]
    pub unsafe fn unlock_alone(&self) {
        compiler_fence(SeqCst);
        if self.state.load(Relaxed) == CONTENDED {
            // SAFETY: per the contract.
            unsafe { self.unlock() };
        } else {
            self.state.store(UNLOCKED, Relaxed);
        }
    }

    /// Releases the lock and wakes one sleeper if there may be one.
    ///
    /// # Safety
    /// The calling thread must hold the lock.
    #[inline]
    pub unsafe fn unlock(&self) {
        if self.state.swap(UNLOCKED, Release) == CONTENDED {
            self.futex.wake_one(&self.state);
        }
    }

    /// True while some thread holds the lock (a snapshot, for assertions and statistics).
    pub fn is_locked(&self) -> bool {
        self.state.load(Relaxed) != UNLOCKED
    }

    /// Forces the lock open in the child after `fork`, where the thread that held it no longer exists.
    ///
    /// # Safety
    /// Only in a freshly forked child, before any other thread exists, for a lock taken in the
    /// prepare handler (or whose holder did not survive the fork).
    pub unsafe fn reset_after_fork(&self) {
        self.state.store(UNLOCKED, Relaxed);
    }

    #[cold]
    fn lock_contended(&self) {
        let mut state = self.spin();
        if state == UNLOCKED {
            match self
                .state
                .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
            {
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
        loop {
            // Announce a sleeper by storing CONTENDED; if the lock happened to be free we now own it
            // (in the CONTENDED state, which at worst costs one needless wake on unlock).
            if state != CONTENDED && self.state.swap(CONTENDED, Acquire) == UNLOCKED {
                return;
            }
            self.futex.wait(&self.state, CONTENDED);
            state = self.spin();
        }
    }

    /// Spins while the lock is held without sleepers; returns the last state seen.
    fn spin(&self) -> u32 {
        let mut spins = SPINS;
        loop {
            let state = self.state.load(Relaxed);
            if state != LOCKED || spins == 0 {
                return state;
            }
            spin_hint();
            spins -= 1;
        }
    }
}

impl Default for Lock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(loom))]
fn spin_hint() {
    core::hint::spin_loop();
}

#[cfg(loom)]
fn spin_hint() {
    loom::thread::yield_now();
}

/// Data guarded by a [`Lock`].
pub struct Mutex<T> {
    lock: Lock,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `data` to one thread at a time, so sharing the Mutex between
// threads only ever moves `T` between them.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above; owning the Mutex owns the T.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// A new, unlocked mutex holding `value`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Mutex {
            lock: Lock::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// A new, unlocked mutex holding `value`.
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Mutex {
            lock: Lock::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Locks and returns a guard that unlocks when dropped.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.lock.lock();
        MutexGuard { mutex: self }
    }

    /// Locks if the lock is free right now.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        // `then`, not `then_some`: the guard must not even be built when the lock was not taken, or its
        // drop would release a lock another thread holds.
        self.lock.try_lock().then(|| MutexGuard { mutex: self })
    }

    /// Direct access when the mutex is owned exclusively.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// The underlying lock, for fork handlers: lock it in prepare, unlock it in the parent, reset it
    /// in the child.
    pub fn raw(&self) -> &Lock {
        &self.lock
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

/// Proof that the current thread holds a [`Mutex`]; unlocks on drop.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while this thread holds the lock, and `&mut self` makes this
        // the only reference derived from it.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard was created by taking the lock on this thread.
        unsafe { self.mutex.lock.unlock() }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    extern crate std;
    use std::sync::Arc;
    use std::thread;
    use std::vec::Vec;

    #[test]
    fn lock_unlock_try() {
        let lock = Lock::new();
        assert!(!lock.is_locked());
        lock.lock();
        assert!(lock.is_locked());
        assert!(!lock.try_lock());
        // SAFETY: held by this thread.
        unsafe { lock.unlock() };
        assert!(lock.try_lock());
        // SAFETY: held by this thread.
        unsafe { lock.unlock() };
    }

    #[test]
    fn reset_after_fork_opens_a_held_lock() {
        let lock = Lock::new();
        lock.lock();
        // SAFETY: test stands in for a forked child: no other thread uses this lock.
        unsafe { lock.reset_after_fork() };
        assert!(lock.try_lock());
    }

    /// Many more threads than cores increment unsynchronised counters under the lock; any lost update
    /// or overlapping critical section shows up in the totals.
    #[test]
    fn oversubscribed_threads_keep_exclusion() {
        static M: Mutex<(u64, u64)> = Mutex::new((0, 0));
        const THREADS: usize = 16;
        const ROUNDS: u64 = 20_000;
        let inside = Arc::new(core::sync::atomic::AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let inside = Arc::clone(&inside);
                thread::spawn(move || {
                    for i in 0..ROUNDS {
                        let mut g = M.lock();
                        assert_eq!(
                            inside.fetch_add(1, Relaxed),
                            0,
                            "two threads inside the lock"
                        );
                        g.0 += 1;
                        g.1 = g.1.wrapping_add(i);
                        if i % 1024 == 0 {
                            thread::yield_now(); // get preempted while holding it
                        }
                        inside.fetch_sub(1, Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let g = M.lock();
        assert_eq!(g.0, THREADS as u64 * ROUNDS);
        assert_eq!(g.1, THREADS as u64 * (ROUNDS * (ROUNDS - 1) / 2));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    extern crate std;
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two threads increment a loom-tracked cell under the lock: loom reports any data race (broken
    /// exclusion) and any lost wake-up (a deadlock), over every interleaving.
    #[test]
    fn exclusion_and_no_lost_wakeup() {
        loom::model(|| {
            let shared = Arc::new((Lock::new(), loom::cell::UnsafeCell::new(0u32)));
            let workers: std::vec::Vec<_> = (0..2)
                .map(|_| {
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || {
                        shared.0.lock();
                        // SAFETY: the lock is held, so no other thread accesses the cell.
                        shared.1.with_mut(|v| unsafe { *v += 1 });
                        // SAFETY: locked just above on this thread.
                        unsafe { shared.0.unlock() };
                    })
                })
                .collect();
            shared.0.lock();
            // SAFETY: the lock is held.
            shared.1.with_mut(|v| unsafe { *v += 1 });
            // SAFETY: locked just above on this thread.
            unsafe { shared.0.unlock() };
            for w in workers {
                w.join().unwrap();
            }
            // SAFETY: all workers joined; no concurrent access remains.
            assert_eq!(shared.1.with(|v| unsafe { *v }), 3);
            assert!(!shared.0.is_locked());
        });
    }

    /// A lock taken with try_lock and released wakes a sleeper just the same.
    #[test]
    fn try_lock_then_contended_waiter() {
        loom::model(|| {
            let lock = Arc::new(Lock::new());
            assert!(lock.try_lock());
            let waiter = {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    lock.lock();
                    // SAFETY: locked just above on this thread.
                    unsafe { lock.unlock() };
                })
            };
            // SAFETY: taken by try_lock above on this thread.
            unsafe { lock.unlock() };
            waiter.join().unwrap();
            assert!(!lock.is_locked());
        });
    }
}

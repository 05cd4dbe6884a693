//! Futex wait and wake, and an exact model of them for loom.
//!
//! A futex is the kernel half of a sleeping lock: `wait` sleeps only if the word still holds the
//! expected value (checked atomically with going to sleep), `wake` rouses sleepers. Wait may return
//! spuriously; callers loop. Under `cfg(loom)` the kernel is replaced by a model mutex and condition
//! variable with the same atomicity, so loom explores every interleaving of check, sleep and wake and
//! reports a lost wake-up as a deadlock.

#[cfg(not(loom))]
mod imp {
    use core::sync::atomic::AtomicU32;

    /// Private futexes only: the lock word is never shared between processes.
    #[derive(Debug, Default)]
    pub(crate) struct Futex;

    impl Futex {
        pub(crate) const fn new() -> Self {
            Futex
        }

        /// Sleeps while `word == expected`. Returns on wake, signal, timeout-free spurious wake-up, or
        /// at once if the value differs (EAGAIN). All outcomes mean "look again", so errors are ignored.
        pub(crate) fn wait(&self, word: &AtomicU32, expected: u32) {
            let _errno = crate::error::ErrnoGuard::save();
            // SAFETY: the address is a live, aligned u32 owned by the lock for the whole call; a null
            // timeout means no timeout.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word.as_ptr(),
                    crate::sys::FUTEX_WAIT_PRIVATE,
                    expected,
                    core::ptr::null::<libc::timespec>(),
                );
            }
        }

        /// Wakes one sleeper on `word`, if any.
        pub(crate) fn wake_one(&self, word: &AtomicU32) {
            let _errno = crate::error::ErrnoGuard::save();
            // SAFETY: as in `wait`; waking never touches memory.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word.as_ptr(),
                    crate::sys::FUTEX_WAKE_PRIVATE,
                    1,
                );
            }
        }
    }
}

#[cfg(loom)]
mod imp {
    use core::sync::atomic::Ordering::SeqCst;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::{Condvar, Mutex};

    /// The kernel's futex bucket for one word: checking the value and going to sleep happen under the
    /// bucket lock, and wake takes the same lock, exactly as in the kernel.
    #[derive(Debug)]
    pub(crate) struct Futex {
        bucket: Mutex<()>,
        sleepers: Condvar,
    }

    impl Futex {
        pub(crate) fn new() -> Self {
            Futex {
                bucket: Mutex::new(()),
                sleepers: Condvar::new(),
            }
        }

        pub(crate) fn wait(&self, word: &AtomicU32, expected: u32) {
            let guard = self.bucket.lock().unwrap();
            if word.load(SeqCst) == expected {
                drop(self.sleepers.wait(guard).unwrap());
            }
        }

        pub(crate) fn wake_one(&self, _word: &AtomicU32) {
            let _guard = self.bucket.lock().unwrap();
            self.sleepers.notify_one();
        }
    }
}

pub(crate) use imp::Futex;

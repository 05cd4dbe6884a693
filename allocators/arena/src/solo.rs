//! Arena locking that knows when the process has a single thread.
//!
//! An uncontended lock round trip with atomic read-modify-writes (a CAS to take, a swap to release)
//! costs about 7.7 ns on the development machine against under 1 ns with plain stores; glibc skips
//! its arena locks altogether while the process is single-threaded (`SINGLE_THREAD_P`). Here the
//! lock is still taken — the same state word, so a signal handler that interrupts the allocator
//! still finds it held and parks instead of entering — but with plain loads and stores
//! ([`twinheap_page::Lock::try_lock_alone`]).
//!
//! "Single-threaded" is glibc's public `__libc_single_threaded` (glibc 2.32 and later): true only
//! while the process has one thread, and turned false by the creating thread before a second
//! thread exists. A thread inside the allocator creates no thread, so a lock taken while the
//! flag reads true stays private until it is released. It is read through a weak reference, so
//! that the allocator still links against C libraries without it (musl), where, as on other
//! architectures than x86-64, locks are always atomic.

use twinheap_page::Lock;

/// The address of glibc's `__libc_single_threaded`, or null when the C library has none (musl,
/// glibc before 2.32, a static link that did not pull it in). A weak reference, written in the
/// assembly itself: an ordinary `extern` static would make linking fail where the symbol is absent,
/// and Rust has no stable weak linkage.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn flag_address() -> *const u8 {
    let a: *const u8;
    // SAFETY: loads one GOT entry (filled by the linker or the dynamic loader, 0 for an absent weak
    // symbol); no other effect.
    unsafe {
        core::arch::asm!(
            ".weak __libc_single_threaded",
            "mov {a}, qword ptr [rip + __libc_single_threaded@GOTPCREL]",
            a = out(reg) a,
            options(nostack, preserves_flags, pure, readonly),
        );
    }
    a
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn flag_address() -> *const u8 {
    core::ptr::null()
}

/// Unit tests force the single-threaded path in a forked child (which glibc does not mark
/// single-threaded when the parent had threads, as the test harness has).
#[cfg(test)]
static FORCE_ALONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// True while the process is known to have one thread.
#[inline(always)]
pub(crate) fn alone() -> bool {
    #[cfg(test)]
    if FORCE_ALONE.load(core::sync::atomic::Ordering::Relaxed) {
        return true;
    }
    let a = flag_address();
    // SAFETY: a non-null address is glibc's flag, a byte written only by the thread that creates
    // threads (or forks); a volatile read sees its current value.
    !a.is_null() && unsafe { core::ptr::read_volatile(a) } != 0
}

/// How a lock was taken: with plain stores (`true`, the process had one thread) or atomically.
/// Released the same way: the process cannot gain a thread while the lock is held by a thread that
/// is inside the allocator, and if it lost its other threads meanwhile, the atomic release is still
/// right.
#[derive(Clone, Copy)]
pub(crate) struct Held(bool);

/// Takes `lock` if it is free right now, without atomics when the process is single-threaded.
#[inline(always)]
pub(crate) fn try_lock(lock: &Lock) -> Option<Held> {
    if alone() {
        // SAFETY: no other thread exists, and none can be created by this thread before the
        // matching `unlock` (it is inside the allocator).
        unsafe { lock.try_lock_alone() }.then_some(Held(true))
    } else {
        lock.try_lock().then_some(Held(false))
    }
}

/// Takes `lock`, waiting if another thread holds it.
#[inline(always)]
pub(crate) fn lock(lock: &Lock) -> Held {
    match try_lock(lock) {
        Some(h) => h,
        None => {
            lock.lock();
            Held(false)
        }
    }
}

/// Releases `lock`, taken as `held` says.
///
/// # Safety
/// The calling thread holds `lock`, taken by the call that returned `held`.
#[inline(always)]
pub(crate) unsafe fn unlock(lock: &Lock, held: Held) {
    if held.0 {
        // SAFETY: held by us per the contract, taken while no other thread existed, and none
        // can have appeared since.
        unsafe { lock.unlock_alone() }
    } else {
        // SAFETY: per the contract.
        unsafe { lock.unlock() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    const N: usize = 24;
    static BLOCKS: [AtomicUsize; N] = [const { AtomicUsize::new(0) }; N];
    static READY: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn free_all(_: libc::c_int) {
        if READY.swap(0, SeqCst) == 1 {
            for b in &BLOCKS {
                // SAFETY: blocks allocated for the handler, each freed once.
                unsafe { crate::api::free(b.swap(0, SeqCst) as *mut u8) };
            }
        }
    }

    /// The child's body: a profiling-timer handler frees 24 blocks at a time while this (only)
    /// thread allocates and frees arena-sized blocks with its locks taken by plain stores. Returns
    /// 0 once more than 8 frees were parked at once and every block came back.
    fn child() -> i32 {
        FORCE_ALONE.store(true, SeqCst);
        // The parent's figures came along with fork.
        crate::thread::PARKED_BATCH_MAX.store(0, SeqCst);
        let mut x = 99u64;
        let mut live = std::vec::Vec::new();
        // SAFETY: our own (child) process's handler and timer.
        unsafe {
            crate::api::free(crate::api::malloc(100));
            libc::signal(libc::SIGPROF, free_all as *const () as libc::sighandler_t);
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 300,
            };
            let t = libc::itimerval {
                it_interval: tv,
                it_value: tv,
            };
            libc::setitimer(libc::ITIMER_PROF, &t, core::ptr::null_mut());
        }
        let baseline = crate::info::mallinfo2().uordblks;
        let start = std::time::Instant::now();
        while crate::thread::PARKED_BATCH_MAX.load(SeqCst) <= 8 && start.elapsed().as_secs() < 40 {
            if READY.load(SeqCst) == 0 {
                for b in &BLOCKS {
                    if b.load(SeqCst) == 0 {
                        b.store(crate::api::malloc(3000) as usize, SeqCst);
                    }
                }
                READY.store(1, SeqCst);
            }
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if live.len() < 200 || x.is_multiple_of(2) {
                    live.push(crate::api::malloc(1100 + (x % 20_000) as usize));
                } else {
                    let p = live.swap_remove((x >> 8) as usize % live.len());
                    // SAFETY: a live block, freed once.
                    unsafe { crate::api::free(p) };
                }
            }
        }
        // SAFETY: stop the timer; free what is left once.
        unsafe {
            libc::setitimer(
                libc::ITIMER_PROF,
                &core::mem::zeroed(),
                core::ptr::null_mut(),
            );
            for p in live {
                crate::api::free(p);
            }
            for b in &BLOCKS {
                crate::api::free(b.swap(0, SeqCst) as *mut u8);
            }
        }
        if crate::thread::PARKED_BATCH_MAX.load(SeqCst) <= 8 {
            return 2;
        }
        if crate::info::mallinfo2().uordblks > baseline + 256 {
            return 3;
        }
        0
    }

    #[test]
    fn plain_locks_still_make_signal_handlers_park() {
        // SAFETY: the child runs `child` and leaves with _exit; the parent only waits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::_exit(child());
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
            assert_eq!(libc::WEXITSTATUS(status), 0);
        }
    }

    #[test]
    fn plain_lock_round_trip_uses_the_same_state() {
        let l = Lock::new();
        // SAFETY: the lock is this test's alone.
        unsafe {
            assert!(l.try_lock_alone());
            assert!(l.is_locked());
            assert!(!l.try_lock(), "an atomic try_lock sees it held");
            assert!(!l.try_lock_alone());
            l.unlock_alone();
            assert!(!l.is_locked());
            assert!(l.try_lock());
            l.unlock_alone();
            assert!(!l.is_locked());
        }
    }
}

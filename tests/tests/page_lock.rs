//! The backend's sleeping lock (`twinheap_page::{Lock, Mutex}`) under threads and across fork.
//!
//! - exclusion with four times more threads than cores, preempted inside the critical section, on a
//!   two-field state whose invariant (`b == 3 * a`) breaks for any overlapping critical sections;
//! - sleepers are woken: long critical sections push waiters into the futex, and a watchdog turns a
//!   lost wake-up into a failure instead of a hang;
//! - `static` mutexes built in const context, `try_lock`, `is_locked`;
//! - fork: a lock held at fork time (by the forking thread, as a prepare handler would, or by another
//!   thread that does not exist in the child) is held in the child until `reset_after_fork`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use twinheap_page::{Lock, Mutex};
use twinheap_tests::{run_in_child, ChildOutcome};

/// State whose invariant only holds between critical sections: `b == 3 * a`.
struct Pair {
    a: u64,
    b: u64,
}

fn threads() -> usize {
    4 * thread::available_parallelism().map_or(2, |n| n.get())
}

/// Joins all `handles`, failing (not hanging) if they are not all finished within `limit`: a lost
/// wake-up leaves threads asleep forever. A thread's panic is re-raised here.
fn join_all_within<T>(handles: Vec<JoinHandle<T>>, limit: Duration, what: &str) -> Vec<T> {
    let start = Instant::now();
    loop {
        let finished = handles.iter().filter(|h| h.is_finished()).count();
        if finished == handles.len() {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: only {finished} of {} threads finished in {limit:?} (lost wake-up or deadlock)",
            handles.len()
        );
        thread::sleep(Duration::from_millis(5));
    }
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| panic!("{what}: a thread panicked (see above)"))
        })
        .collect()
}

/// `threads()` threads each run `rounds` critical sections on `pair`, taken with `lock()` or, when
/// `use_try`, every third time with a `try_lock()` spin loop. A second thread inside, a broken
/// invariant or a lost update fails the test.
fn hammer(pair: &'static Mutex<Pair>, rounds: u64, use_try: bool, what: &str) {
    let n = threads();
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let (inside, overlaps, broken) = (
                Arc::clone(&inside),
                Arc::clone(&overlaps),
                Arc::clone(&broken),
            );
            thread::spawn(move || {
                for i in 0..rounds {
                    let mut g = if use_try && (i + t as u64).is_multiple_of(3) {
                        loop {
                            if let Some(g) = pair.try_lock() {
                                break g;
                            }
                            std::hint::spin_loop();
                        }
                    } else {
                        pair.lock()
                    };
                    // Count violations instead of panicking here, so every thread runs to the end
                    // and the totals below are checked too.
                    if inside.fetch_add(1, SeqCst) != 0 {
                        overlaps.fetch_add(1, SeqCst);
                    }
                    if g.b != 3 * g.a {
                        broken.fetch_add(1, SeqCst);
                    }
                    g.a += 1;
                    if i.is_multiple_of(512) {
                        // Get preempted halfway through the update.
                        thread::yield_now();
                    }
                    g.b += 3;
                    inside.fetch_sub(1, SeqCst);
                    drop(g);
                }
            })
        })
        .collect();
    join_all_within(handles, Duration::from_secs(120), what);
    let g = pair.lock();
    let (overlaps, broken) = (overlaps.load(SeqCst), broken.load(SeqCst));
    assert_eq!(
        (overlaps, broken),
        (0, 0),
        "{what}: (entries with another thread inside, entries seeing b != 3a) of {} sections",
        n as u64 * rounds
    );
    assert_eq!(g.a, n as u64 * rounds, "{what}: lost updates");
    assert_eq!(g.b, 3 * g.a, "{what}: invariant");
    assert!(pair.raw().is_locked());
    drop(g);
    assert!(!pair.raw().is_locked());
}

#[test]
fn oversubscribed_threads_keep_the_invariant() {
    static PAIR: Mutex<Pair> = Mutex::new(Pair { a: 0, b: 0 });
    hammer(&PAIR, 20_000, false, "lock() only");
}

/// Threads that spin on `try_lock()` next to threads in `lock()`: a failed `try_lock` must leave
/// the holder's lock alone.
#[test]
fn try_lock_spinners_keep_exclusion() {
    static PAIR: Mutex<Pair> = Mutex::new(Pair { a: 0, b: 0 });
    hammer(&PAIR, 20_000, true, "lock() and try_lock()");
}

/// The smallest case: one thread, a held mutex, a `try_lock` that must fail and change nothing.
#[test]
fn failed_try_lock_leaves_the_lock_held() {
    let m = Mutex::new(Pair { a: 1, b: 3 });
    let g = m.lock();
    assert!(m.try_lock().is_none(), "try_lock succeeded on a held lock");
    assert!(
        m.raw().is_locked(),
        "a failed Mutex::try_lock released the lock held by its owner"
    );
    assert!(
        m.try_lock().is_none(),
        "second try_lock succeeded on a held lock"
    );
    drop(g);
    assert!(!m.raw().is_locked());
    // The raw lock for comparison.
    let raw = Lock::new();
    raw.lock();
    assert!(!raw.try_lock());
    assert!(raw.is_locked(), "a failed Lock::try_lock released the lock");
    // SAFETY: held by this thread.
    unsafe { raw.unlock() };
}

/// Critical sections long enough that every waiter goes to sleep in the futex; all must wake.
#[test]
fn sleepers_are_all_woken() {
    static PAIR: Mutex<Pair> = Mutex::new(Pair { a: 0, b: 0 });
    const ROUNDS: u64 = 40;
    let n = threads();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let mut g = PAIR.lock();
                    g.a += 1;
                    thread::sleep(Duration::from_micros(200));
                    g.b += 3;
                }
            })
        })
        .collect();
    join_all_within(handles, Duration::from_secs(120), "sleepers");
    let g = PAIR.lock();
    assert_eq!((g.a, g.b), (n as u64 * ROUNDS, 3 * n as u64 * ROUNDS));
}

/// Statics need no init call; a raw `Lock` works the same as a `Mutex`.
#[test]
fn static_locks_are_const_constructed() {
    static COUNTER: Mutex<u64> = Mutex::new(0);
    static RAW: Lock = Lock::new();
    static mut UNDER_RAW: u64 = 0;
    const _: Mutex<[u8; 4]> = Mutex::new([0; 4]); // usable in any const context

    assert!(!COUNTER.raw().is_locked() && !RAW.is_locked());
    let handles: Vec<_> = (0..threads())
        .map(|_| {
            thread::spawn(|| {
                for _ in 0..1000 {
                    *COUNTER.lock() += 1;
                    RAW.lock();
                    // SAFETY: RAW is held, so this is the only access to UNDER_RAW.
                    unsafe {
                        let p = &raw mut UNDER_RAW;
                        p.write(p.read() + 1);
                        RAW.unlock();
                    }
                }
            })
        })
        .collect();
    join_all_within(handles, Duration::from_secs(120), "statics");
    assert_eq!(*COUNTER.lock(), 1000 * threads() as u64);
    assert!(RAW.try_lock());
    // SAFETY: RAW is held by this thread.
    unsafe {
        assert_eq!((&raw const UNDER_RAW).read(), 1000 * threads() as u64);
        RAW.unlock();
    }
    assert!(!RAW.is_locked());
}

/// Sets the flag when dropped, so that a helper thread waiting for it is let go even when the test
/// fails halfway.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

#[test]
fn try_lock_fails_while_another_thread_holds_it() {
    let m = Arc::new(Mutex::new(Pair { a: 1, b: 3 }));
    let held = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let holder = {
        let (m, held, release) = (Arc::clone(&m), Arc::clone(&held), Arc::clone(&release));
        thread::spawn(move || {
            let mut g = m.lock();
            g.a = 2;
            held.store(true, SeqCst);
            while !release.load(SeqCst) {
                thread::yield_now();
            }
            g.b = 6;
        })
    };
    let release = SetOnDrop(release);
    while !held.load(SeqCst) {
        thread::yield_now();
    }
    assert!(m.try_lock().is_none(), "try_lock succeeded on a held lock");
    assert!(
        m.raw().is_locked(),
        "a failed try_lock released the lock another thread holds"
    );
    drop(release);
    let g = m.lock(); // blocks until the holder is done
    assert_eq!((g.a, g.b), (2, 6));
    drop(g);
    holder.join().unwrap();
    let mut m = Arc::into_inner(m).unwrap();
    assert_eq!(m.get_mut().b, 6);
}

/// Child exit codes of the fork tests.
const HELD_IN_CHILD: i32 = 0;
const NOT_HELD: i32 = 1;
const RELOCK_FAILED: i32 = 2;
const INCONSISTENT: i32 = 3;

/// In the child: the lock must be held (its holder did not come along), reset opens it, and it then
/// works normally. Only atomics and the lock: nothing allocates. The held check uses the raw lock's
/// `try_lock`, the way a fork handler sees it (`Mutex::try_lock` has its own test).
fn child_resets(m: &'static Mutex<Pair>) -> i32 {
    if !m.raw().is_locked() || m.raw().try_lock() {
        return NOT_HELD;
    }
    // SAFETY: a freshly forked child with one thread; the holder does not exist here.
    unsafe { m.raw().reset_after_fork() };
    {
        let Some(mut g) = m.try_lock() else {
            return RELOCK_FAILED;
        };
        g.a += 1;
        g.b += 3;
    }
    let g = m.lock(); // the normal path too
    if g.b != 3 * g.a {
        return INCONSISTENT;
    }
    drop(g);
    if m.raw().is_locked() {
        return RELOCK_FAILED;
    }
    HELD_IN_CHILD
}

/// The pattern of a fork handler: prepare takes the lock (here while another thread keeps competing
/// for it), the parent unlocks after fork, the child resets.
#[test]
fn fork_with_lock_taken_by_the_forking_thread() {
    static PAIR: Mutex<Pair> = Mutex::new(Pair { a: 0, b: 0 });
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(SeqCst) {
                let mut g = PAIR.lock();
                g.a += 1;
                g.b += 3;
                rounds += 1;
            }
            rounds
        })
    };
    for _ in 0..20 {
        let guard = PAIR.lock(); // the prepare handler
        let outcome = run_in_child(|| child_resets(&PAIR));
        drop(guard); // the parent handler
        assert_eq!(outcome, ChildOutcome::Exited(HELD_IN_CHILD));
    }
    stop.store(true, SeqCst);
    let rounds = busy.join().unwrap();
    let g = PAIR.lock();
    assert_eq!(
        (g.a, g.b),
        (rounds, 3 * rounds),
        "the parent's state must be untouched"
    );
}

/// A lock held at fork time by a thread that does not exist in the child.
#[test]
fn fork_with_lock_held_by_another_thread() {
    static PAIR: Mutex<Pair> = Mutex::new(Pair { a: 0, b: 0 });
    let held = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let holder = {
        let (held, release) = (Arc::clone(&held), Arc::clone(&release));
        thread::spawn(move || {
            let mut g = PAIR.lock();
            (g.a, g.b) = (10, 30);
            held.store(true, SeqCst);
            while !release.load(SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            (g.a, g.b) = (20, 60);
        })
    };
    let release = SetOnDrop(release);
    while !held.load(SeqCst) {
        thread::yield_now();
    }
    let outcome = run_in_child(|| child_resets(&PAIR));
    drop(release);
    holder.join().unwrap();
    assert_eq!(outcome, ChildOutcome::Exited(HELD_IN_CHILD));
    // The child's updates stayed in the child.
    let g = PAIR.lock();
    assert_eq!((g.a, g.b), (20, 60));
}

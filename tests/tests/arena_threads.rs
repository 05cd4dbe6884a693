//! The arena allocator under threads: cross-thread frees with more threads than cores, arenas reused
//! after thread exit, tcache contents going back at thread exit, fork while other threads allocate,
//! and frees from a signal handler that interrupted the same thread inside the allocator (more than
//! the 8 the record once had room for, all reused afterwards).
//!
//! This binary's global allocator is the system one; only the code under test uses the arena
//! allocator directly. Tests that start threads or read process-wide statistics take `SERIAL`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};

use twinheap_arena as arena;
use twinheap_tests::{run_in_child, ChildOutcome, Rng64};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A block as an integer, so it can cross threads.
struct Block(usize, usize, u8);

fn alloc(rng: &mut Rng64, tag: u8) -> Block {
    let n = match rng.below(10) {
        0..=5 => rng.range(1, 200),
        6..=8 => rng.range(200, 5000),
        _ => rng.range(5000, 300_000),
    };
    let p = arena::malloc(n);
    assert!(!p.is_null());
    // SAFETY: a live block of `n` bytes.
    unsafe { p.write_bytes(tag, n) };
    Block(p as usize, n, tag)
}

fn check_and_free(b: Block) {
    let p = b.0 as *mut u8;
    // SAFETY: a live block of `b.1` bytes filled with `b.2`, freed once.
    unsafe {
        assert_eq!(p.read(), b.2);
        assert_eq!(p.add(b.1 - 1).read(), b.2);
        assert_eq!(p.add(b.1 / 2).read(), b.2);
        arena::free(p);
    }
}

#[test]
fn cross_thread_frees_with_more_threads_than_cores() {
    let _s = serial();
    let threads = 16;
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::channel::<Block>()).unzip();
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for (i, rx) in receivers.into_iter().enumerate() {
        let tx = senders[(i + 1) % threads].clone();
        let done = done.clone();
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng64::new(i as u64 + 1);
            let mut mine = Vec::new();
            for round in 0..3000 {
                let b = alloc(
                    &mut rng,
                    (i as u8).wrapping_mul(31).wrapping_add(round as u8) | 1,
                );
                if round % 4 == 0 {
                    tx.send(b).unwrap();
                } else {
                    mine.push(b);
                }
                if mine.len() > 50 {
                    check_and_free(mine.swap_remove(rng.below(50) as usize));
                }
                while let Ok(b) = rx.try_recv() {
                    check_and_free(b);
                }
            }
            for b in mine {
                check_and_free(b);
            }
            drop(tx);
            done.fetch_add(1, Ordering::SeqCst);
            // Drain until every sender is gone.
            for b in rx {
                check_and_free(b);
            }
        }));
    }
    drop(senders);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), threads);
}

#[test]
fn arenas_are_reused_after_thread_exit() {
    let _s = serial();
    // Warm up: one wave of threads creates what arenas it needs.
    let wave = || {
        let barrier = Arc::new(Barrier::new(4));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let p = arena::malloc(100);
                    barrier.wait();
                    // SAFETY: a live block.
                    unsafe { arena::free(p) };
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    };
    wave();
    let after_first = arena::stats().arenas;
    for _ in 0..20 {
        wave();
    }
    assert_eq!(
        arena::stats().arenas,
        after_first,
        "exited threads' arenas must be reused"
    );
}

#[test]
fn thread_exit_returns_the_tcache() {
    let _s = serial();
    let h = std::thread::spawn(|| {
        // Fill this thread's tcache bins, then exit.
        let blocks: Vec<usize> = (0..64 * 7)
            .map(|i| arena::malloc(16 * (i % 64) + 8) as usize)
            .collect();
        for p in blocks {
            // SAFETY: live blocks.
            unsafe { arena::free(p as *mut u8) };
        }
        arena::stats().in_use_bytes
    });
    let in_use_inside = h.join().unwrap();
    let after = arena::stats().in_use_bytes;
    assert!(
        after + 100_000 < in_use_inside,
        "the exited thread's cached blocks are free again: {in_use_inside} -> {after}"
    );
}

#[test]
fn fork_while_other_threads_allocate() {
    let _s = serial();
    let stop = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = Rng64::new(100 + i);
                while stop.load(Ordering::Relaxed) == 0 {
                    let b = alloc(&mut rng, 5);
                    check_and_free(b);
                }
            })
        })
        .collect();
    for _ in 0..20 {
        let outcome = run_in_child(|| {
            // The child must be able to allocate although other threads held arena locks at fork.
            for i in 0..1000 {
                let p = arena::malloc(16 + i % 3000);
                if p.is_null() {
                    return 2;
                }
                // SAFETY: a live block.
                unsafe { arena::free(p) };
            }
            0
        });
        assert_eq!(outcome, ChildOutcome::Exited(0));
    }
    stop.store(1, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}

static HANDLER_BLOCK: AtomicUsize = AtomicUsize::new(0);
static HANDLER_RAN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn free_in_handler(_: libc::c_int) {
    let p = HANDLER_BLOCK.swap(0, Ordering::SeqCst);
    if p != 0 {
        // SAFETY: the block was allocated for this handler and is freed once.
        unsafe { arena::free(p as *mut u8) };
        let q = arena::malloc(50);
        if !q.is_null() {
            // SAFETY: a live block.
            unsafe { arena::free(q) };
        }
        HANDLER_RAN.fetch_add(1, Ordering::SeqCst);
    }
}

/// A signal handler that frees and allocates while its thread is inside the allocator must neither
/// deadlock nor corrupt anything (run in a child so the handler and timer stay contained).
#[test]
fn signal_handler_reentry_does_not_deadlock() {
    let outcome = twinheap_tests::run_in_child_timeout(std::time::Duration::from_secs(60), || {
        // SAFETY: installing a handler and a profiling timer in our own (child) process.
        unsafe {
            libc::signal(
                libc::SIGPROF,
                free_in_handler as *const () as libc::sighandler_t,
            );
            let t = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 200,
                },
                it_value: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 200,
                },
            };
            libc::setitimer(libc::ITIMER_PROF, &t, std::ptr::null_mut());
        }
        let mut x = 1u64;
        let start = std::time::Instant::now();
        // Until the handler has run often enough to have hit the allocator mid-call (timer ticks
        // depend on the kernel's HZ and the machine's load), or 20 s.
        while HANDLER_RAN.load(Ordering::SeqCst) < 200 && start.elapsed().as_secs() < 20 {
            if HANDLER_BLOCK.load(Ordering::SeqCst) == 0 {
                HANDLER_BLOCK.store(arena::malloc(3000) as usize, Ordering::SeqCst);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = arena::malloc((x % 5000) as usize);
            if p.is_null() {
                return 3;
            }
            // SAFETY: a live block.
            unsafe { arena::free(p) };
        }
        // SAFETY: stop the timer.
        unsafe {
            let t: libc::itimerval = std::mem::zeroed();
            libc::setitimer(libc::ITIMER_PROF, &t, std::ptr::null_mut());
        }
        if HANDLER_RAN.load(Ordering::SeqCst) == 0 {
            return 4;
        }
        0
    });
    assert_eq!(outcome, ChildOutcome::Exited(0));
}

const HANDLER_MANY: usize = 24;
static MANY_BLOCKS: [AtomicUsize; HANDLER_MANY] = [const { AtomicUsize::new(0) }; HANDLER_MANY];
static MANY_READY: AtomicUsize = AtomicUsize::new(0);
static MANY_RAN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn free_many_in_handler(_: libc::c_int) {
    if MANY_READY.swap(0, Ordering::SeqCst) == 1 {
        for b in &MANY_BLOCKS {
            let p = b.swap(0, Ordering::SeqCst);
            // SAFETY: each block was allocated for this handler and is freed once.
            unsafe { arena::free(p as *mut u8) };
        }
        MANY_RAN.fetch_add(1, Ordering::SeqCst);
    }
}

/// `stats().parked_batch_max` with SIGPROF blocked: statistics take arena locks without marking the
/// thread as inside the allocator, so a handler freeing meanwhile would wait for them forever.
fn parked_batch_max_masked() -> usize {
    // SAFETY: changes only this thread's signal mask, restored before returning.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let n = arena::stats().parked_batch_max;
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        n
    }
}

/// Blocks or unblocks SIGPROF for the calling thread.
fn sigprof_mask(how: libc::c_int) {
    // SAFETY: changes only this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Sets the profiling timer to `usec` (0 stops it).
fn prof_timer(usec: libc::suseconds_t) {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: usec,
    };
    let t = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: a timer of our own (child) process.
    unsafe { libc::setitimer(libc::ITIMER_PROF, &t, std::ptr::null_mut()) };
}

/// The calling thread allocates and frees arena-sized blocks (above the tcache, so it holds the
/// arena lock much of the time) under a profiling timer whose handler frees 24 blocks at a time,
/// until several handler runs found the lock taken and parked more than 8 frees (or 40 s); then it
/// frees everything.
fn allocate_under_freeing_handler() {
    sigprof_mask(libc::SIG_UNBLOCK);
    prof_timer(300);
    let mut live: Vec<*mut u8> = Vec::new();
    let mut x = 7u64;
    let start = std::time::Instant::now();
    while (parked_batch_max_masked() <= 8 || MANY_RAN.load(Ordering::SeqCst) < 20)
        && start.elapsed().as_secs() < 40
    {
        if MANY_READY.load(Ordering::SeqCst) == 0 {
            for b in &MANY_BLOCKS {
                if b.load(Ordering::SeqCst) == 0 {
                    let p = arena::malloc(3000);
                    assert!(!p.is_null());
                    b.store(p as usize, Ordering::SeqCst);
                }
            }
            MANY_READY.store(1, Ordering::SeqCst);
        }
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if live.len() < 200 || x & 1 == 0 {
                let p = arena::malloc(1100 + (x % 20_000) as usize);
                assert!(!p.is_null());
                live.push(p);
            } else {
                let p = live.swap_remove((x >> 8) as usize % live.len());
                // SAFETY: a live block, freed once.
                unsafe { arena::free(p) };
            }
        }
    }
    prof_timer(0);
    sigprof_mask(libc::SIG_BLOCK);
    // SAFETY: live blocks (those still waiting for the handler included), each freed once.
    unsafe {
        for p in live {
            arena::free(p);
        }
        for b in &MANY_BLOCKS {
            arena::free(b.swap(0, Ordering::SeqCst) as *mut u8);
        }
    }
}

/// Checks, after [`allocate_under_freeing_handler`], that more than 8 frees were parked at once and
/// that in-use bytes are back at `baseline`: every parked block was really freed. 0 on success.
fn check_parked_frees_reused(baseline: usize) -> i32 {
    let s = arena::stats();
    if s.parked_batch_max <= 8 {
        eprintln!(
            "handler never parked more than 8 frees: {}",
            s.parked_batch_max
        );
        return 3;
    }
    let after = arena::mallinfo2().uordblks;
    // A leaked parked block would leave at least 3,008 bytes in use; allow for the header and
    // fenceposts of a second heap, should the arena have needed one.
    if after > baseline + 256 {
        eprintln!("in use {after} after, {baseline} before: parked frees leaked");
        return 4;
    }
    println!(
        "parked {} frees, at most {} at once, handler ran {} times",
        s.parked_frees,
        s.parked_batch_max,
        MANY_RAN.load(Ordering::SeqCst)
    );
    0
}

/// Installs the handler with SIGPROF blocked, and makes the arena's first heap (whose header counts
/// as in use) before the baseline is read, which it returns.
fn prepare_freeing_handler() -> usize {
    sigprof_mask(libc::SIG_BLOCK);
    // SAFETY: a handler of our own (child) process.
    unsafe {
        libc::signal(
            libc::SIGPROF,
            free_many_in_handler as *const () as libc::sighandler_t,
        );
        arena::free(arena::malloc(100));
    }
    arena::mallinfo2().uordblks
}

/// A handler that frees 24 blocks while its thread holds the arena lock parks them all (the parked
/// list is unbounded) and the interrupted call finishes them: once the thread has exited (its tcache
/// flushed), the arena's in-use bytes are back where they started (within heap bookkeeping), so
/// no parked block leaked. Here with two threads (the arena locks taken with atomics).
#[test]
fn signal_handler_parks_more_than_eight_frees_and_none_leak() {
    let outcome = twinheap_tests::run_in_child_timeout(std::time::Duration::from_secs(90), || {
        let baseline = prepare_freeing_handler();
        if std::thread::spawn(allocate_under_freeing_handler)
            .join()
            .is_err()
        {
            return 2;
        }
        check_parked_frees_reused(baseline)
    });
    assert_eq!(outcome, ChildOutcome::Exited(0));
}

/// The same in a single-threaded process (the forked child's only thread), where the arena locks
/// are taken with plain stores: the handler must still find them held and park. All block sizes are
/// above the tcache, so nothing stays cached without a thread exit.
#[test]
fn signal_handler_parks_frees_in_a_single_threaded_process() {
    let outcome = twinheap_tests::run_in_child_timeout(std::time::Duration::from_secs(90), || {
        let baseline = prepare_freeing_handler();
        allocate_under_freeing_handler();
        check_parked_frees_reused(baseline)
    });
    assert_eq!(outcome, ChildOutcome::Exited(0));
}

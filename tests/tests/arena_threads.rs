//! The arena allocator under threads: cross-thread frees with more threads than cores, arenas reused
//! after thread exit, tcache contents going back at thread exit, fork while other threads allocate,
//! and a free from a signal handler that interrupted the same thread inside the allocator.
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

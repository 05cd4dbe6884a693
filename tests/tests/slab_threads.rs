//! The slab allocator under threads: cross-thread frees through channels with more threads than
//! cores, thread churn (heaps must be reused, not leaked), fork while other threads allocate (the
//! child must never deadlock), and malloc re-entered from a signal handler.
//!
//! Statistics are process-wide, so every test here takes `SERIAL`: one runs at a time, and nothing
//! else in this binary allocates from slab (its global allocator is the system one). Children forked
//! here use only slab, libc and atomics (see the `twinheap_tests` docs).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use rand_core::RngCore;
use twinheap_slab as slab;
use twinheap_tests::{
    check_pattern, errno, fill_pattern, run_in_child_timeout, ChildOutcome, Rng64, SharedSlots,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// A block in flight between threads (raw pointers are not Send).
#[derive(Clone, Copy, Debug)]
struct Sent {
    p: usize,
    n: usize,
    seed: u64,
}

fn size(rng: &mut Rng64) -> usize {
    match rng.below(100) {
        0..=59 => rng.range(0, 256),
        60..=89 => rng.range(257, 4096),
        90..=98 => rng.range(4097, slab::MAX_SMALL),
        _ => rng.range(slab::MAX_SMALL + 1, MIB),
    }
}

/// Bytes of a block that carry its pattern (all of it up to 1 KiB, then the first and last 512).
fn pattern_spans(n: usize) -> [(usize, usize); 2] {
    if n <= KIB {
        [(0, n), (n, n)]
    } else {
        [(0, 512), (n - 512, n)]
    }
}

unsafe fn fill(b: Sent) {
    for (a, e) in pattern_spans(b.n) {
        // SAFETY: inside the block.
        unsafe { fill_pattern((b.p + a) as *mut u8, e - a, b.seed ^ a as u64) };
    }
}

unsafe fn intact(b: Sent) -> bool {
    pattern_spans(b.n).iter().all(|&(a, e)| {
        // SAFETY: inside the block.
        unsafe { check_pattern((b.p + a) as *const u8, e - a, b.seed ^ a as u64) }.is_none()
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[test]
fn cross_thread_frees_with_four_threads_per_core() {
    let _serial = serial();
    let threads = 4 * cores();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let before = slab::stats();
    // Thread t sends a quarter of its blocks to thread (t + 1) % threads, which checks and frees them.
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::channel::<Sent>()).unzip();
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let tx = senders[(t + 1) % threads].clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut rng = Rng64::new(t as u64 + 1);
                let mut mine: Vec<Sent> = Vec::new();
                let (mut made, mut freed_remote) = (0u64, 0u64);
                barrier.wait();
                let mut i = 0u64;
                while i < 200_000 && (!i.is_multiple_of(256) || Instant::now() < deadline) {
                    i += 1;
                    let n = size(&mut rng);
                    let p = slab::malloc(n);
                    assert!(!p.is_null(), "thread {t}: malloc({n})");
                    let b = Sent {
                        p: p as usize,
                        n,
                        seed: rng.next_u64(),
                    };
                    // SAFETY: a fresh block of `n` bytes.
                    unsafe { fill(b) };
                    made += 1;
                    if rng.chance(1, 4) {
                        tx.send(b).unwrap();
                    } else {
                        mine.push(b);
                    }
                    if mine.len() > 64 || (rng.chance(1, 2) && !mine.is_empty()) {
                        let k = rng.below(mine.len() as u64) as usize;
                        let b = mine.swap_remove(k);
                        // SAFETY: our live block, freed once.
                        unsafe {
                            assert!(intact(b), "thread {t}: own block {b:?} corrupted");
                            slab::free_sized(b.p as *mut u8, b.n);
                        }
                    }
                    while let Ok(b) = rx.try_recv() {
                        // SAFETY: a live block another thread gave us, freed once.
                        unsafe {
                            assert!(intact(b), "thread {t}: received block {b:?} corrupted");
                            assert_eq!(slab::usable_size(b.p as *mut u8), b.n);
                            slab::free(b.p as *mut u8);
                        }
                        freed_remote += 1;
                    }
                }
                for b in mine {
                    // SAFETY: our live block, freed once.
                    unsafe {
                        assert!(intact(b));
                        slab::free(b.p as *mut u8);
                    }
                }
                drop(tx);
                // Drain what the previous thread still sends until it hangs up.
                for b in rx {
                    // SAFETY: as above.
                    unsafe {
                        assert!(intact(b));
                        slab::free(b.p as *mut u8);
                    }
                    freed_remote += 1;
                }
                (made, freed_remote)
            })
        })
        .collect();
    drop(senders);
    let mut made = 0;
    let mut remote = 0;
    for h in handles {
        let (m, r) = h.join().expect("worker panicked");
        made += m;
        remote += r;
    }
    assert!(made > 10_000, "only {made} blocks made");
    assert!(
        remote * 5 > made && remote * 3 < made,
        "{remote} of {made} blocks should have been freed remotely"
    );
    let after = slab::stats();
    assert_eq!(
        after.requested, before.requested,
        "every block was freed: requested bytes must be back"
    );
    assert_eq!(after.large_blocks, before.large_blocks);
}

/// Runs `threads` short-lived threads in batches of `batch`, each allocating and freeing a little;
/// a third of each thread's blocks outlive it and are freed by the spawning thread afterwards.
fn churn(threads: usize, batch: usize, seed: u64) {
    for b in 0..threads / batch {
        let handles: Vec<_> = (0..batch)
            .map(|i| {
                let seed = seed ^ ((b * batch + i) as u64) << 8;
                std::thread::spawn(move || {
                    let mut rng = Rng64::new(seed);
                    let mut keep = Vec::new();
                    for _ in 0..24 {
                        let n = rng.range(0, 3000);
                        let p = slab::malloc(n);
                        assert!(!p.is_null());
                        let s = Sent {
                            p: p as usize,
                            n,
                            seed: rng.next_u64(),
                        };
                        // SAFETY: a fresh block.
                        unsafe { fill(s) };
                        if rng.chance(1, 3) {
                            keep.push(s);
                        } else {
                            // SAFETY: freed once.
                            unsafe { slab::free_sized(p, n) };
                        }
                    }
                    keep
                })
            })
            .collect();
        for h in handles {
            for s in h.join().expect("churn thread panicked") {
                // SAFETY: a live block of an exited thread, freed once.
                unsafe {
                    assert!(intact(s));
                    slab::free(s.p as *mut u8);
                }
            }
        }
    }
}

#[test]
fn thread_churn_reuses_heaps() {
    let _serial = serial();
    let start = slab::stats();
    // Warm up: the first batches create the heaps (and groups) that later threads adopt.
    churn(160, 16, 1);
    let warm = slab::stats();
    churn(1840, 16, 2);
    let end = slab::stats();
    // A heap record is several hundred bytes; 1840 threads with unreused heaps would need far more
    // than this bound, while reuse keeps the count near the 16 threads alive at a time. The warm-up
    // maps the groups' records and segment records (regions that double as they fill, see
    // `records.rs`), hence its looser bound.
    let growth = end.metadata - warm.metadata;
    assert!(
        growth < 128 * KIB,
        "metadata grew by {growth} bytes over 1840 threads after the warm-up (from {} to {})",
        warm.metadata,
        end.metadata
    );
    assert!(
        warm.metadata - start.metadata < 512 * KIB,
        "the warm-up's 160 threads took {} bytes of metadata (from {} to {})",
        warm.metadata - start.metadata,
        start.metadata,
        warm.metadata
    );
    assert!(
        end.mapped <= warm.mapped + 4 * MIB,
        "mapped keeps growing with thread churn: {} after warm-up, {} after 2000 threads",
        warm.mapped,
        end.mapped
    );
    assert_eq!(
        end.requested, start.requested,
        "every churned block was freed"
    );
}

/// One thread allocates, another frees everything it receives: every group of the producer's heap
/// fills up and is emptied by the other thread, so groups go back and forth between the producer's
/// retained empties, the recycled mappings and the OS. Contents must arrive intact, and memory must
/// be reused from round to round rather than accumulate.
#[test]
fn producer_consumer_frees_reuse_memory() {
    let _serial = serial();
    const ROUNDS: usize = 4;
    const BLOCKS: usize = 20_000;
    slab::trim();
    let start = slab::stats();
    let mut first_peak = 0;
    for round in 0..ROUNDS {
        let (tx, rx) = mpsc::sync_channel::<Sent>(1024);
        let peak = Arc::new(AtomicUsize::new(0));
        let consumer = std::thread::spawn(move || {
            let mut freed = 0;
            for s in rx {
                // SAFETY: a live block handed over once; freed once, with its size.
                unsafe {
                    assert!(
                        intact(s),
                        "block {:#x} ({} bytes) damaged in transit",
                        s.p,
                        s.n
                    );
                    slab::free_sized(s.p as *mut u8, s.n);
                }
                freed += 1;
            }
            freed
        });
        let producer = {
            let peak = Arc::clone(&peak);
            std::thread::spawn(move || {
                let mut rng = Rng64::new(0x9c0 + round as u64);
                for k in 0..BLOCKS {
                    let n = rng.range(16, 2048);
                    let p = slab::malloc(n);
                    assert!(!p.is_null());
                    let s = Sent {
                        p: p as usize,
                        n,
                        seed: rng.next_u64(),
                    };
                    // SAFETY: a fresh block of `n` bytes.
                    unsafe { fill(s) };
                    tx.send(s).expect("consumer gone");
                    if k % 4096 == 0 {
                        peak.fetch_max(slab::stats().mapped, Ordering::Relaxed);
                    }
                }
            })
        };
        producer.join().expect("producer panicked");
        assert_eq!(consumer.join().expect("consumer panicked"), BLOCKS);
        let s = slab::stats();
        assert!(
            s.recycled <= 2 * MIB,
            "round {round}: {} bytes recycled",
            s.recycled
        );
        let peak = peak.load(Ordering::Relaxed).max(s.mapped);
        if round == 0 {
            first_peak = peak;
        } else {
            assert!(
                peak <= first_peak + 4 * MIB,
                "round {round}: mapped peaked at {peak}, first round at {first_peak}"
            );
        }
    }
    let end = slab::stats();
    assert_eq!(end.requested, start.requested, "every block was freed");
    slab::trim();
    assert_eq!(slab::stats().recycled, 0);
}

#[test]
fn fork_under_load_never_deadlocks() {
    let _serial = serial();
    const BG: usize = 3;
    const SHARED: usize = 64;
    // Blocks the background threads publish for children to check and free: orphans of threads that
    // do not exist in the child. One word each: the address, with the size in the top 16 bits.
    static PUBLISHED: [AtomicUsize; SHARED] = [const { AtomicUsize::new(0) }; SHARED];
    fn unpack(v: usize) -> (*mut u8, usize) {
        ((v & ((1 << 48) - 1)) as *mut u8, v >> 48)
    }
    /// The background threads: stopped, joined and their published blocks freed on drop, also when
    /// an assertion fails, so that nothing goes on allocating under the tests that run next.
    struct Background {
        stop: Arc<AtomicBool>,
        workers: Vec<std::thread::JoinHandle<()>>,
    }
    impl Drop for Background {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            let panicked = self.workers.drain(..).any(|w| w.join().is_err());
            for slot in &PUBLISHED {
                let v = slot.swap(0, Ordering::AcqRel);
                if v != 0 {
                    let (p, n) = unpack(v);
                    // SAFETY: published blocks are live in the parent; freed once.
                    unsafe { slab::free_sized(p, n) };
                }
            }
            if panicked && !std::thread::panicking() {
                panic!("a background thread panicked");
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let background = Background {
        stop: Arc::clone(&stop),
        workers: (0..BG)
            .map(|t| {
                let stop = Arc::clone(&stop);
                let ops = Arc::clone(&ops);
                std::thread::spawn(move || {
                    let mut rng = Rng64::new(100 + t as u64);
                    let mut held = [(0usize, 0usize); 32];
                    while !stop.load(Ordering::Relaxed) {
                        let k = rng.below(held.len() as u64) as usize;
                        if held[k].0 != 0 {
                            // SAFETY: our live block, freed once.
                            unsafe { slab::free_sized(held[k].0 as *mut u8, held[k].1) };
                        }
                        let n = if rng.chance(1, 50) {
                            rng.range(slab::MAX_SMALL + 1, 400 * KIB)
                        } else {
                            rng.range(0, 20_000)
                        };
                        let p = slab::malloc(n);
                        assert!(!p.is_null());
                        held[k] = (p as usize, n);
                        // Publish a block (in the parent no one takes it: the next swap frees it).
                        let m = rng.range(0, 1999);
                        let q = slab::malloc(m);
                        assert!(!q.is_null());
                        // SAFETY: a fresh block of `m` bytes.
                        unsafe { fill_pattern(q, m, q as u64) };
                        let slot = &PUBLISHED[rng.below(SHARED as u64) as usize];
                        let old = slot.swap(q as usize | m << 48, Ordering::AcqRel);
                        if old != 0 {
                            let (old, m) = unpack(old);
                            // SAFETY: the published block we replaced is ours again; freed once.
                            unsafe { slab::free_sized(old, m) };
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    for (p, n) in held {
                        if p != 0 {
                            // SAFETY: our live blocks, freed once.
                            unsafe { slab::free_sized(p as *mut u8, n) };
                        }
                    }
                })
            })
            .collect(),
    };
    while ops.load(Ordering::Relaxed) < 1000 {
        std::thread::yield_now();
    }
    let report = SharedSlots::new(4);
    for round in 0..50 {
        let outcome = run_in_child_timeout(Duration::from_secs(10), || {
            // The child: free some orphaned published blocks after checking them, then a few
            // hundred mallocs and frees of every kind, including new groups and a large block.
            let mut freed = 0;
            for slot in PUBLISHED.iter().step_by(3) {
                let v = slot.swap(0, Ordering::AcqRel);
                if v == 0 {
                    continue;
                }
                let (p, n) = unpack(v);
                // SAFETY: a live block published by a thread that does not exist in the child.
                unsafe {
                    if slab::usable_size(p) != n || check_pattern(p, n, p as u64).is_some() {
                        return 2;
                    }
                    slab::free_sized(p, n);
                }
                freed += 1;
            }
            report.set(1, freed);
            let mut held = [(std::ptr::null_mut::<u8>(), 0usize); 128];
            let mut rng = Rng64::new(round);
            for i in 0..400 {
                let k = i % held.len();
                if !held[k].0.is_null() {
                    // SAFETY: the child's own live block, freed once.
                    unsafe {
                        if check_pattern(held[k].0, held[k].1.min(64), 7).is_some() {
                            return 3;
                        }
                        slab::free_sized(held[k].0, held[k].1);
                    }
                }
                let n = match i % 100 {
                    0 => 600 * KIB,
                    1..=10 => rng.range(20_000, slab::MAX_SMALL),
                    _ => rng.range(0, 2000),
                };
                let p = slab::malloc(n);
                if p.is_null() {
                    return 4;
                }
                // SAFETY: a fresh block of `n` bytes.
                unsafe { fill_pattern(p, n.min(64), 7) };
                held[k] = (p, n);
            }
            for (p, n) in held {
                // SAFETY: the child's own live blocks, freed once.
                unsafe { slab::free_sized(p, n) };
            }
            report.set(0, report.get(0) + 1);
            0
        });
        assert_eq!(
            outcome,
            ChildOutcome::Exited(0),
            "fork {round}: the child must finish (a timeout is a deadlock on a lock held at fork)"
        );
    }
    drop(background);
    assert_eq!(report.get(0), 50, "children completed");
}

/// State shared with the signal handler (only atomics: the handler must not take any lock).
static HANDLER_RUNS: AtomicU64 = AtomicU64::new(0);
static HANDLER_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Handler mallocs refused with ENOMEM because the interrupted call held a lock they needed: the
/// defined answer for a malloc re-entered from a signal handler (it must not wait for that lock).
static HANDLER_REFUSED: AtomicU64 = AtomicU64::new(0);
/// A block the main loop hands to the handler to free (0 when none).
static HANDOFF: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    let run = HANDLER_RUNS.fetch_add(1, Ordering::Relaxed);
    let n = [24usize, 100, 700, 3000, 40_000][(run % 5) as usize];
    let p = slab::malloc(n);
    if p.is_null() {
        let counter = if errno() == libc::ENOMEM {
            &HANDLER_REFUSED
        } else {
            &HANDLER_ERRORS
        };
        counter.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: a fresh block of `n` bytes, checked and freed once.
    unsafe {
        fill_pattern(p, n.min(256), run);
        if check_pattern(p, n.min(256), run).is_some() || slab::usable_size(p) != n {
            HANDLER_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        slab::free(p);
    }
    let q = HANDOFF.swap(0, Ordering::AcqRel);
    if q != 0 {
        // SAFETY: the main loop gave this live block up to the handler.
        unsafe { slab::free(q as *mut u8) };
    }
}

/// The child of the re-entrancy test: a tight malloc/free loop for `millis` while a timer interrupts
/// it with a signal whose handler allocates and frees. Returns 0, or a code for what went wrong.
fn reentrancy_child(signal: libc::c_int, millis: u64, slots: &SharedSlots) -> i32 {
    // SAFETY: installing a plain handler (no SA_NODEFER: the signal is blocked while it runs) and an
    // interval timer in the single-threaded child.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(signal, &sa, std::ptr::null_mut()) != 0 {
            return 10;
        }
    }
    // Warm up: the thread's heap exists before the first signal.
    let warm = slab::malloc(10);
    // SAFETY: live, freed once.
    unsafe { slab::free(warm) };
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 50,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 50,
        },
    };
    let which = if signal == libc::SIGPROF {
        libc::ITIMER_PROF
    } else {
        libc::ITIMER_REAL
    };
    // SAFETY: arming a timer of this process.
    if unsafe { libc::setitimer(which, &timer, std::ptr::null_mut()) } != 0 {
        return 11;
    }
    let start = Instant::now();
    let mut held = [std::ptr::null_mut::<u8>(); 64];
    let mut rng = Rng64::new(signal as u64);
    let mut i = 0usize;
    while start.elapsed() < Duration::from_millis(millis) {
        i += 1;
        if i.is_multiple_of(1024) {
            // Progress, for the report if the child hangs.
            slots.set(0, HANDLER_RUNS.load(Ordering::Relaxed) as i64);
            slots.set(2, i as i64);
        }
        let k = i % held.len();
        if !held[k].is_null() {
            // SAFETY: our live block, freed once.
            unsafe { slab::free(held[k]) };
        }
        // Sizes that keep creating and releasing groups (and sometimes a large block), so that the
        // signal also lands while group and metadata work is under way.
        let n = match rng.below(200) {
            0 => 200 * KIB,
            1..=20 => rng.range(4000, 60_000),
            _ => rng.range(0, 1000),
        };
        held[k] = slab::malloc(n);
        if held[k].is_null() {
            return 12;
        }
        if i.is_multiple_of(64) {
            // Every 64 rounds free everything, so that groups empty and are released.
            for p in held.iter_mut() {
                let q = std::mem::replace(p, std::ptr::null_mut());
                if !q.is_null() {
                    // SAFETY: live, freed once.
                    unsafe { slab::free(q) };
                }
            }
            let h = slab::malloc(48);
            let old = HANDOFF.swap(h as usize, Ordering::AcqRel);
            if old != 0 {
                // SAFETY: the handler did not take it: still ours.
                unsafe { slab::free(old as *mut u8) };
            }
        }
    }
    let off = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: disarming the timer.
    unsafe { libc::setitimer(which, &off, std::ptr::null_mut()) };
    for p in held {
        // SAFETY: live (or null), freed once.
        unsafe { slab::free(p) };
    }
    slots.set(0, HANDLER_RUNS.load(Ordering::Relaxed) as i64);
    slots.set(1, HANDLER_ERRORS.load(Ordering::Relaxed) as i64);
    slots.set(2, i as i64);
    slots.set(3, HANDLER_REFUSED.load(Ordering::Relaxed) as i64);
    0
}

#[test]
fn malloc_reentered_from_a_signal_handler_does_not_deadlock() {
    let _serial = serial();
    // SIGALRM from a 50 us real-time timer for 1 s; SIGPROF from the CPU-time profiling timer (tick
    // granularity, so fewer signals, landing anywhere the process spends CPU) for 0.5 s. The SIGPROF
    // floor is low because a kernel ticking at 100 Hz on a loaded machine delivers only a few dozen;
    // the SIGALRM half supplies the volume.
    for (signal, millis, min_runs) in [(libc::SIGALRM, 1000, 500), (libc::SIGPROF, 500, 10)] {
        let slots = SharedSlots::new(4);
        let outcome = run_in_child_timeout(Duration::from_secs(5), || {
            reentrancy_child(signal, millis, &slots)
        });
        assert_eq!(
            outcome,
            ChildOutcome::Exited(0),
            "signal {signal}: the child must finish (TimedOut = deadlock); by then the handler had \
             run {} times and the main loop {} rounds",
            slots.get(0),
            slots.get(2)
        );
        assert_eq!(slots.get(1), 0, "signal {signal}: handler saw bad blocks");
        // Refusals happen only when the signal lands while the loop holds a lock (a small part of
        // its time); most handler allocations must succeed.
        assert!(
            slots.get(3) * 2 < slots.get(0),
            "signal {signal}: {} of {} handler mallocs refused",
            slots.get(3),
            slots.get(0)
        );
        assert!(
            slots.get(0) > min_runs,
            "signal {signal}: the handler ran only {} times",
            slots.get(0)
        );
        eprintln!(
            "signal {signal}: handler ran {} times, {} refused with ENOMEM, main loop {} rounds",
            slots.get(0),
            slots.get(3),
            slots.get(2)
        );
    }
}

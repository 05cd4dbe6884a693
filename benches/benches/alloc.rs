//! GlobalAlloc micro-benchmarks: `twinheap::Slab` and `twinheap::Arena` against `std::alloc::System`
//! (glibc malloc) in the same run. Both are called directly through their `GlobalAlloc` methods; the binary sets no global
//! allocator, so the harness and the helpers allocate from the system allocator whichever one is
//! measured.
//!
//! Groups (criterion runs them in this order):
//! - `pair/<size>`: alloc, write one byte, dealloc;
//! - `mixed_live1000`: a live set of 1000 blocks of program-like random sizes; each iteration frees a
//!   random live block and allocates a new random one in its place;
//! - `realloc_growth`: 16 bytes grown by x1.5 steps to 1 MiB, a byte written after each step;
//! - `threads/<n>`: n threads alloc/free, a quarter of the blocks freed by the next thread;
//! - `slab_options/pair/<size>`: slab's hardening options, from the hardened default down to none.
//!   Options are process-wide and may only ever be relaxed, so this group runs last.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use twinheap::{Arena, Slab};
use twinheap_benches::{realistic_size, Rng, SpscRing};

/// Alignment of every request: what a typical Rust allocation asks for.
const ALIGN: usize = 8;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).expect("layout")
}

/// Runs `$body` once per allocator with `$name` bound to its name in the benchmark ids and `$a` to a
/// reference to it. A macro rather than a `dyn GlobalAlloc`, so that all are called statically, as
/// they would be as a program's global allocator.
macro_rules! for_each_alloc {
    (|$name:ident, $a:ident| $body:block) => {{
        {
            let ($name, $a) = ("Slab", &Slab);
            $body
        }
        {
            let ($name, $a) = ("Arena", &Arena);
            $body
        }
        {
            let ($name, $a) = ("System", &System);
            $body
        }
    }};
}

/// Allocates `size` bytes and writes its first byte; panics when the allocator fails.
///
/// # Safety
/// `size > 0`.
#[inline(always)]
unsafe fn alloc_touch<A: GlobalAlloc + ?Sized>(a: &A, size: usize) -> *mut u8 {
    // SAFETY: the caller guarantees a non-zero size.
    let p = unsafe { a.alloc(layout(size)) };
    assert!(!p.is_null(), "out of memory");
    // SAFETY: `p` is a live block of at least one byte.
    unsafe { p.write_volatile(1) };
    p
}

/// One alloc + write + dealloc.
#[inline(always)]
fn pair<A: GlobalAlloc + ?Sized>(a: &A, size: usize) {
    // SAFETY: sizes are non-zero; the block is freed once, with the layout it was made with.
    unsafe {
        let p = alloc_touch(a, size);
        a.dealloc(black_box(p), layout(size));
    }
}

fn bench_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair");
    for size in [16usize, 64, 256, 1024, 8192] {
        for_each_alloc!(|name, a| {
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                b.iter(|| pair(a, black_box(size)))
            });
        });
    }
    group.finish();
}

fn bench_mixed(c: &mut Criterion) {
    const LIVE: usize = 1000;
    let mut group = c.benchmark_group("mixed_live1000");
    for_each_alloc!(|name, a| {
        group.bench_function(name, |b| {
            let mut rng = Rng::new(0x5eed_1000);
            let mut live: Vec<(*mut u8, usize)> = (0..LIVE)
                .map(|_| {
                    let n = realistic_size(&mut rng);
                    // SAFETY: sizes are non-zero.
                    (unsafe { alloc_touch(a, n) }, n)
                })
                .collect();
            b.iter(|| {
                let i = rng.below(LIVE);
                let n = realistic_size(&mut rng);
                let (p, old) = live[i];
                // SAFETY: `p` is live with layout(old) and is replaced at once; the new size is non-zero.
                unsafe {
                    a.dealloc(p, layout(old));
                    live[i] = (alloc_touch(a, n), n);
                }
            });
            for (p, n) in live {
                // SAFETY: every remaining block is live with layout(n), freed once.
                unsafe { a.dealloc(p, layout(n)) };
            }
        });
    });
    group.finish();
}

fn bench_realloc(c: &mut Criterion) {
    const START: usize = 16;
    const END: usize = 1 << 20;
    let mut group = c.benchmark_group("realloc_growth");
    for_each_alloc!(|name, a| {
        group.bench_function(name, |b| {
            b.iter(|| {
                // SAFETY: each realloc gets the live block with its current layout and a non-zero size;
                // after it only the returned pointer is used; the last block is freed once.
                unsafe {
                    let mut n = START;
                    let mut p = alloc_touch(a, n);
                    while n < END {
                        let next = (n + n / 2).min(END);
                        p = a.realloc(p, layout(n), next);
                        assert!(!p.is_null(), "out of memory");
                        p.add(next - 1).write_volatile(1);
                        n = next;
                    }
                    a.dealloc(black_box(p), layout(n));
                }
            })
        });
    });
    group.finish();
}

/// Blocks each thread keeps live before freeing its oldest.
const WINDOW: usize = 64;

/// One thread of the cross-thread case: `ops` allocations of 16-1024 bytes; every fourth block goes to
/// the next thread through `out`, the others are freed locally after a short while; blocks arriving
/// through `inbox` are freed here.
fn thread_work<A: GlobalAlloc + ?Sized>(
    a: &A,
    seed: u64,
    ops: usize,
    inbox: &SpscRing,
    out: &SpscRing,
) {
    let free_incoming = || {
        while let Some((p, n)) = inbox.pop() {
            // SAFETY: blocks in the ring are live with layout(n) and handed over exactly once.
            unsafe { a.dealloc(p as *mut u8, layout(n)) };
        }
    };
    let mut rng = Rng::new(seed);
    let mut window = [(std::ptr::null_mut::<u8>(), 0usize); WINDOW];
    for k in 0..ops {
        let n = rng.range(16, 1024);
        // SAFETY: non-zero size.
        let p = unsafe { alloc_touch(a, n) };
        if k % 4 == 3 {
            while !out.push(p as usize, n) {
                free_incoming();
                std::thread::yield_now();
            }
        } else {
            let slot = &mut window[k % WINDOW];
            if !slot.0.is_null() {
                // SAFETY: the window holds live blocks with their sizes, each freed once.
                unsafe { a.dealloc(slot.0, layout(slot.1)) };
            }
            *slot = (p, n);
        }
        if k % 16 == 0 {
            free_incoming();
        }
    }
    for (p, n) in window {
        if !p.is_null() {
            // SAFETY: as above.
            unsafe { a.dealloc(p, layout(n)) };
        }
    }
    out.close();
    while !inbox.is_drained() {
        free_incoming();
        std::thread::yield_now();
    }
    free_incoming();
}

/// Wall time for `threads` threads to do `ops` allocations each, from the moment all have started.
fn cross_thread<A: GlobalAlloc + Sync + ?Sized>(a: &A, threads: usize, ops: usize) -> Duration {
    let rings: Vec<SpscRing> = (0..threads).map(|_| SpscRing::new(4096)).collect();
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (inbox, out, start) = (&rings[t], &rings[(t + 1) % threads], &start);
            s.spawn(move || {
                start.wait();
                thread_work(a, 0xa110c + t as u64, ops, inbox, out);
            });
        }
        start.wait();
        // Scoped threads are joined when the scope ends; the time includes the slowest thread.
        Instant::now()
    })
    .elapsed()
}

fn bench_threads(c: &mut Criterion) {
    const OPS: usize = 50_000;
    let mut group = c.benchmark_group("threads");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for threads in [2usize, 8] {
        group.throughput(Throughput::Elements((OPS * threads) as u64));
        for_each_alloc!(|name, a| {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &t| {
                b.iter_custom(|iters| (0..iters).map(|_| cross_thread(a, t, OPS)).sum())
            });
        });
    }
    group.finish();
}

/// The cost of slab's hardening: the pair benchmark under each option set, from strictest to none.
fn bench_slab_options(c: &mut Criterion) {
    // twinheap::Slab applies the process configuration at its first allocation; make sure that has
    // happened, so that it cannot later overwrite what is set here.
    pair(&Slab, 64);
    let process = twinheap_slab::config();
    if !(process.zero_on_free && process.check_write_after_free) {
        eprintln!("slab_options: the process config already relaxes slab ({process:?}); labels name the options asked for, the effective ones are never stricter");
    }
    let mut group = c.benchmark_group("slab_options");
    // Strictest first: options may only ever be relaxed (turning zeroing back on would make the
    // write-after-free check see stale data in slots freed while it was off).
    for (label, zero, check) in [
        ("zero+check", true, true),
        ("zero", true, false),
        ("none", false, false),
    ] {
        let now = twinheap_slab::config();
        twinheap_slab::init(&twinheap_slab::Config {
            zero_on_free: zero && now.zero_on_free,
            check_write_after_free: check && now.check_write_after_free,
            release: now.release,
            large_cache: now.large_cache,
            protect_freed_large: now.protect_freed_large,
        });
        for size in [64usize, 1024, 8192] {
            group.bench_with_input(
                BenchmarkId::new(format!("pair/{label}"), size),
                &size,
                |b, &size| b.iter(|| pair(&Slab, black_box(size))),
            );
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_pair,
    bench_mixed,
    bench_realloc,
    bench_threads,
    bench_slab_options
);
criterion_main!(benches);

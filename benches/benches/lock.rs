//! The sleeping lock against std's Mutex and a pure spin lock, uncontended and with 2 and 8 threads
//! on however many cores the machine has. The point of the 8-thread case on a small machine: a spin
//! lock's waiters burn the time slice its holder needs, and throughput collapses; a lock that sleeps
//! after a short spin must not.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The three locks behind one small interface.
trait BenchLock: Sync + Default {
    fn with(&self, f: impl FnOnce(&mut u64));
}

#[derive(Default)]
struct Twinheap(twinheap_page::Mutex<u64>);
impl BenchLock for Twinheap {
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.0.lock())
    }
}

#[derive(Default)]
struct Std(std::sync::Mutex<u64>);
impl BenchLock for Std {
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.0.lock().unwrap())
    }
}

#[derive(Default)]
struct Spin(spin::mutex::SpinMutex<u64>);
impl BenchLock for Spin {
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.0.lock())
    }
}

/// A short critical section, about what an allocator does under its lock.
fn critical(v: &mut u64) {
    for _ in 0..8 {
        *v = black_box(v.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn contended<L: BenchLock>(threads: usize, per_thread: u64) -> Duration {
    let lock = L::default();
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                for _ in 0..per_thread {
                    lock.with(critical);
                }
            });
        }
        start.wait();
        let t0 = Instant::now();
        // Scoped threads are joined when the scope ends; the time includes the slowest thread.
        t0
    })
    .elapsed()
}

fn bench_uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_uncontended");
    group.throughput(Throughput::Elements(1));
    group.bench_function("twinheap", |b| {
        let l = Twinheap::default();
        b.iter(|| l.with(critical))
    });
    group.bench_function("std", |b| {
        let l = Std::default();
        b.iter(|| l.with(critical))
    });
    group.bench_function("spin", |b| {
        let l = Spin::default();
        b.iter(|| l.with(critical))
    });
    group.finish();
}

fn bench_contended(c: &mut Criterion) {
    const OPS: u64 = 20_000;
    let mut group = c.benchmark_group("lock_contended");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for threads in [2usize, 8] {
        group.throughput(Throughput::Elements(OPS * threads as u64));
        group.bench_with_input(BenchmarkId::new("twinheap", threads), &threads, |b, &t| {
            b.iter_custom(|iters| (0..iters).map(|_| contended::<Twinheap>(t, OPS)).sum())
        });
        group.bench_with_input(BenchmarkId::new("std", threads), &threads, |b, &t| {
            b.iter_custom(|iters| (0..iters).map(|_| contended::<Std>(t, OPS)).sum())
        });
        group.bench_with_input(BenchmarkId::new("spin", threads), &threads, |b, &t| {
            b.iter_custom(|iters| (0..iters).map(|_| contended::<Spin>(t, OPS)).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_uncontended, bench_contended);
criterion_main!(benches);

//! What the backend adds over the raw system calls: map + touch + unmap of common sizes through
//! `twinheap_page::map` against bare `mmap`/`munmap` in the same run, and the aligned and guarded
//! variants (which cost extra syscalls by design).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use twinheap_page::{map, page_size, MapOptions};

fn touch(ptr: *mut u8, len: usize) {
    let page = page_size();
    let mut off = 0;
    while off < len {
        // SAFETY: `off < len` and the caller passes a live read-write mapping of `len` bytes.
        unsafe { ptr.add(off).write_volatile(1) };
        off += page;
    }
}

fn bench_map(c: &mut Criterion) {
    let mut group = c.benchmark_group("map_touch_unmap");
    for len in [64 << 10, 1 << 20] {
        group.bench_with_input(BenchmarkId::new("libc", len), &len, |b, &len| {
            b.iter(|| {
                // SAFETY: a fresh anonymous mapping, touched and unmapped within this iteration.
                unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    assert_ne!(p, libc::MAP_FAILED);
                    touch(p.cast(), len);
                    libc::munmap(black_box(p), len);
                }
            })
        });
        for (name, opts) in [
            ("twinheap", MapOptions::new()),
            ("twinheap_aligned_2m", MapOptions::new().align(2 << 20)),
            ("twinheap_guarded", MapOptions::new().guards(true, true)),
        ] {
            group.bench_with_input(BenchmarkId::new(name, len), &len, |b, &len| {
                b.iter(|| {
                    let m = map(len, &opts).expect("map");
                    touch(m.ptr().as_ptr(), m.len());
                    // SAFETY: `m` is live and unused after this.
                    unsafe { black_box(m).unmap().expect("unmap") };
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_map);
criterion_main!(benches);

//! Instruction-count probe for the fast paths: `pairs <arena|system> <size> <count>` runs `count`
//! malloc + write + sized-free pairs through the arena allocator or the C library's malloc. Meant for
//! `valgrind --tool=callgrind`, whose counts are stable where wall time on a shared machine is not.

use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("arena");
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let count: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    match which {
        "arena-mixed" | "system-mixed" => {
            // benches/alloc.rs's mixed_live1000: replace a random block of a live set of 1000 with a
            // block of a program-like random size.
            let arena = which == "arena-mixed";
            let mut x = 0x5eed_1000u64;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut size_of = |r: u64| -> usize {
                let _ = size;
                let k = r % 1000;
                let v = next();
                if k < 900 {
                    let lo = 16usize << (v % 5);
                    lo + (v >> 8) as usize % lo
                } else if k < 995 {
                    513 + (v >> 8) as usize % (8192 - 513)
                } else {
                    8193 + (v >> 8) as usize % (65536 - 8193)
                }
            };
            let alloc = |n: usize| -> *mut u8 {
                if arena {
                    twinheap_arena::malloc(n)
                } else {
                    // SAFETY: plain C malloc.
                    unsafe { libc::malloc(n).cast() }
                }
            };
            let mut seed = 1u64;
            let mut live: Vec<*mut u8> = (0..1000)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    alloc(size_of(seed >> 33))
                })
                .collect();
            for _ in 0..count {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let i = (seed >> 33) as usize % 1000;
                let n = size_of(seed >> 13);
                // SAFETY: each live block is freed once and replaced.
                unsafe {
                    if arena {
                        twinheap_arena::free(live[i]);
                    } else {
                        libc::free(live[i].cast());
                    }
                    live[i] = alloc(n);
                    live[i].write_volatile(1);
                }
            }
        }
        "arena-realloc" | "system-realloc" => {
            let arena = which == "arena-realloc";
            for _ in 0..count {
                let mut n = 16;
                let mut p = if arena {
                    twinheap_arena::malloc(n)
                } else {
                    // SAFETY: plain C malloc.
                    unsafe { libc::malloc(n).cast() }
                };
                while n < size {
                    let next = (n + n / 2).min(size);
                    // SAFETY: `p` is live with `n` bytes; only the result is used afterwards.
                    unsafe {
                        p = if arena {
                            twinheap_arena::realloc(p, next)
                        } else {
                            libc::realloc(p.cast(), next).cast()
                        };
                        p.add(next - 1).write_volatile(1);
                    }
                    n = next;
                }
                // SAFETY: the last block is freed once.
                unsafe {
                    if arena {
                        twinheap_arena::free(p)
                    } else {
                        libc::free(p.cast())
                    }
                }
            }
        }
        "arena" => {
            for _ in 0..count {
                let p = twinheap_arena::malloc(black_box(size));
                // SAFETY: a live block of `size` bytes, freed once with its size.
                unsafe {
                    p.write_volatile(1);
                    twinheap_arena::free_sized(black_box(p), size);
                }
            }
        }
        _ => {
            for _ in 0..count {
                // SAFETY: plain C malloc/free pairs.
                unsafe {
                    let p = libc::malloc(black_box(size)) as *mut u8;
                    p.write_volatile(1);
                    libc::free(black_box(p).cast());
                }
            }
        }
    }
}

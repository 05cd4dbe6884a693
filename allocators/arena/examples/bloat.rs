//! The classic glibc arena-bloat workload, for peak-RSS comparisons: `bloat <arena|system> <turns|
//! together> [threads] [mib]`. Each of `threads` threads (all alive for the whole run) allocates
//! about `mib` MiB of blocks of 32-4000 bytes, frees all but every 64th, and holds on to those.
//! `turns`: the threads work one after another (a token passed round), the pattern where glibc's
//! one-arena-per-thread policy keeps every arena's peak resident. `together`: all at once.
//! Prints the process's peak RSS (VmHWM) and current RSS in KiB.

use std::sync::{Arc, Condvar, Mutex};

fn alloc(arena: bool, n: usize) -> *mut u8 {
    if arena {
        twinheap_arena::malloc(n)
    } else {
        // SAFETY: plain C malloc.
        unsafe { libc::malloc(n).cast() }
    }
}

fn free(arena: bool, p: *mut u8) {
    // SAFETY: `p` came from the matching allocator and is freed once.
    unsafe {
        if arena {
            twinheap_arena::free(p)
        } else {
            libc::free(p.cast())
        }
    }
}

fn work(arena: bool, seed: u64, bytes: usize) -> Vec<usize> {
    let mut x = seed | 1;
    let mut live = Vec::new();
    let mut total = 0;
    while total < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 32 + (x % 3968) as usize;
        let p = alloc(arena, n);
        // SAFETY: a live block of `n` bytes.
        unsafe { p.write_bytes(1, n) };
        live.push(p as usize);
        total += n;
    }
    let mut kept = Vec::new();
    for (i, p) in live.into_iter().enumerate() {
        if i % 64 == 0 {
            kept.push(p);
        } else {
            free(arena, p as *mut u8);
        }
    }
    kept
}

fn status(key: &str) -> usize {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arena = args.get(1).map(String::as_str) == Some("arena");
    let together = args.get(2).map(String::as_str) == Some("together");
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let mib: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(8);
    let token = Arc::new((Mutex::new(0usize), Condvar::new()));
    let done = Arc::new((Mutex::new(0usize), Condvar::new()));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (token, done) = (token.clone(), done.clone());
            std::thread::spawn(move || {
                if !together {
                    let mut turn = token.0.lock().unwrap();
                    while *turn != t {
                        turn = token.1.wait(turn).unwrap();
                    }
                }
                let kept = work(arena, t as u64 + 1, mib << 20);
                if !together {
                    *token.0.lock().unwrap() += 1;
                    token.1.notify_all();
                }
                // Stay alive (keeping the arena attached) until everyone is done.
                let mut n = done.0.lock().unwrap();
                *n += 1;
                done.1.notify_all();
                while *n < threads {
                    n = done.1.wait(n).unwrap();
                }
                drop(n);
                kept
            })
        })
        .collect();
    let kept: Vec<Vec<usize>> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    println!(
        "{} {} threads={threads} mib={mib} peak_rss_kib={} rss_kib={} kept_blocks={}",
        if arena { "arena" } else { "system" },
        if together { "together" } else { "turns" },
        status("VmHWM:"),
        status("VmRSS:"),
        kept.iter().map(Vec::len).sum::<usize>()
    );
}

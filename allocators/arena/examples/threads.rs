//! Instruction-count probe for the cross-thread case of `benches/alloc.rs`: `threads <arena|system>
//! <threads> <ops>`; each thread allocates `ops` blocks of 16-1024 bytes, keeps a window of 64, and
//! hands every fourth block to the next thread through a single-producer ring, freeing what it
//! receives. Meant for callgrind, which serialises threads but counts every instruction.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Ring {
    slots: Vec<AtomicUsize>,
    head: AtomicUsize,
    tail: AtomicUsize,
    closed: AtomicBool,
}

impl Ring {
    fn new(n: usize) -> Self {
        Ring {
            slots: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }
    fn push(&self, v: usize) -> bool {
        let t = self.tail.load(Ordering::Relaxed);
        if t - self.head.load(Ordering::Acquire) == self.slots.len() {
            return false;
        }
        self.slots[t % self.slots.len()].store(v, Ordering::Relaxed);
        self.tail.store(t + 1, Ordering::Release);
        true
    }
    fn pop(&self) -> Option<usize> {
        let h = self.head.load(Ordering::Relaxed);
        if h == self.tail.load(Ordering::Acquire) {
            return None;
        }
        let v = self.slots[h % self.slots.len()].load(Ordering::Relaxed);
        self.head.store(h + 1, Ordering::Release);
        Some(v)
    }
}

fn alloc(arena: bool, n: usize) -> usize {
    let p = if arena {
        twinheap_arena::malloc(n)
    } else {
        // SAFETY: plain C malloc.
        unsafe { libc::malloc(n).cast() }
    };
    // SAFETY: a live block of at least one byte.
    unsafe { p.write_volatile(1) };
    p as usize
}

fn free(arena: bool, p: usize) {
    // SAFETY: a live block of the matching allocator, freed once.
    unsafe {
        if arena {
            twinheap_arena::free(p as *mut u8)
        } else {
            libc::free(p as *mut libc::c_void)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arena = args.get(1).map(String::as_str) == Some("arena");
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let ops: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let rings: Vec<Ring> = (0..threads).map(|_| Ring::new(4096)).collect();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (inbox, out) = (&rings[t], &rings[(t + 1) % threads]);
            s.spawn(move || {
                let drain = || {
                    while let Some(p) = inbox.pop() {
                        free(arena, p);
                    }
                };
                let mut x = 0xa110c + t as u64;
                let mut window = [0usize; 64];
                for k in 0..ops {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let p = alloc(arena, 16 + (x % 1008) as usize);
                    if k % 4 == 3 {
                        while !out.push(p) {
                            drain();
                            std::thread::yield_now();
                        }
                    } else {
                        let slot = &mut window[k % 64];
                        if *slot != 0 {
                            free(arena, *slot);
                        }
                        *slot = p;
                    }
                    if k % 16 == 0 {
                        drain();
                    }
                }
                for p in window {
                    if p != 0 {
                        free(arena, p);
                    }
                }
                out.closed.store(true, Ordering::Release);
                while !inbox.closed.load(Ordering::Acquire)
                    || inbox.head.load(Ordering::Relaxed) != inbox.tail.load(Ordering::Acquire)
                {
                    drain();
                    std::thread::yield_now();
                }
                drain();
            });
        }
    });
}

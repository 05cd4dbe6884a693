//! `twinheap::Slab` as the global allocator of a whole test binary (this one: the harness, its threads
//! and every test allocate from slab), running std-heavy multithreaded workloads to completion with
//! checksums: maps, strings, `format!`, channels between 8 threads, `Arc<Mutex<..>>`, closures, thread
//! spawn/join in a loop, a Vec grown to tens of MiB and shrunk, and page-aligned types.

#[global_allocator]
static A: twinheap::Slab = twinheap::Slab;

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc, Mutex};

use twinheap::slab_allocator as slab;

const MIB: usize = 1 << 20;

/// FNV-1a, for checksums.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

enum Msg {
    Bytes(u64, Vec<u8>, u64),
    Text(String, u64),
}

#[test]
fn std_workload_on_eight_threads() {
    const THREADS: usize = 8;
    const ROUNDS: u64 = 3000;
    let totals = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Msg>()).unzip();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let tx = txs[(t + 1) % THREADS].clone();
            let totals = Arc::clone(&totals);
            std::thread::spawn(move || {
                let mut map: HashMap<String, Vec<u8>> = HashMap::new();
                let mut tree: BTreeMap<u64, String> = BTreeMap::new();
                let mut fns: Vec<Box<dyn Fn(u64) -> u64 + Send>> = Vec::new();
                let mut received = 0u64;
                let check = |m: Msg| match m {
                    Msg::Bytes(seed, v, sum) => {
                        assert_eq!(v, payload(seed, v.len()), "thread {t}: bytes corrupted");
                        assert_eq!(fnv(&v), sum);
                    }
                    Msg::Text(s, sum) => {
                        assert_eq!(fnv(s.as_bytes()), sum, "thread {t}: string corrupted");
                        assert!(s.starts_with("msg-"));
                    }
                };
                for i in 0..ROUNDS {
                    let seed = (t as u64) << 32 | i;
                    let key = format!("t{t}-k{}", i % 97);
                    let len = (seed.wrapping_mul(0x9e37_79b9) % 3000) as usize;
                    map.insert(key.clone(), payload(seed, len));
                    if i % 3 == 0 {
                        map.remove(&format!("t{t}-k{}", (i * 7) % 97));
                    }
                    tree.insert(
                        i % 500,
                        format!("{seed:x}-{}", "x".repeat((i % 40) as usize)),
                    );
                    if i % 5 == 0 {
                        tree.retain(|k, _| k % 7 != i % 7);
                    }
                    if i % 50 == 0 {
                        let base = i;
                        fns.push(Box::new(move |x| x.wrapping_mul(base | 1)));
                        if fns.len() > 20 {
                            let _ = fns.remove(0);
                        }
                    }
                    let v = payload(seed, len / 2 + 1);
                    let sum = fnv(&v);
                    tx.send(Msg::Bytes(seed, v, sum)).unwrap();
                    let s = format!("msg-{t}-{i}-{}", "abc".repeat((i % 30) as usize));
                    let sum = fnv(s.as_bytes());
                    tx.send(Msg::Text(s, sum)).unwrap();
                    while let Ok(m) = rx.try_recv() {
                        check(m);
                        received += 1;
                    }
                }
                for (k, v) in &map {
                    let i: u64 = k.rsplit('k').next().unwrap().parse().unwrap();
                    assert!(i < 97 && v.len() < 3000);
                }
                let f: u64 = fns.iter().map(|f| f(3)).fold(0, u64::wrapping_add);
                drop(tx);
                for m in rx {
                    check(m);
                    received += 1;
                }
                let mut totals = totals.lock().unwrap();
                *totals.entry("received".to_string()).or_default() += received;
                *totals.entry(format!("fns-{t}")).or_default() = f;
                (map.len(), tree.len())
            })
        })
        .collect();
    drop(txs);
    for h in handles {
        let (m, t) = h.join().expect("worker panicked");
        assert!(m > 0 && t > 0);
    }
    let totals = totals.lock().unwrap();
    assert_eq!(totals["received"], 2 * ROUNDS * THREADS as u64);
    assert_eq!(totals.len(), 1 + THREADS);
}

#[test]
fn threads_spawned_and_joined_in_a_loop() {
    let mut sum = 0u64;
    for round in 0..100u64 {
        let handles: Vec<_> = (0..4u64)
            .map(|k| {
                std::thread::spawn(move || {
                    let words: Vec<String> = (0..50).map(|i| format!("{round}:{k}:{i}")).collect();
                    let joined = words.join(",");
                    let back: Vec<&str> = joined.split(',').collect();
                    assert_eq!(back.len(), 50);
                    fnv(joined.as_bytes())
                })
            })
            .collect();
        for h in handles {
            sum = sum.wrapping_add(h.join().unwrap());
        }
    }
    let mut again = 0u64;
    for round in 0..100u64 {
        for k in 0..4u64 {
            let words: Vec<String> = (0..50).map(|i| format!("{round}:{k}:{i}")).collect();
            again = again.wrapping_add(fnv(words.join(",").as_bytes()));
        }
    }
    assert_eq!(sum, again);
}

#[test]
fn large_vec_grows_to_tens_of_mib_and_shrinks() {
    let mut v: Vec<u64> = Vec::new();
    let words = 48 * MIB / 8;
    for i in 0..words as u64 {
        v.push(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    assert!(v.capacity() * 8 >= 48 * MIB);
    // SAFETY: the Vec's buffer is a live slab block of exactly `capacity * 8` bytes.
    let usable = unsafe { slab::usable_size(v.as_mut_ptr().cast()) };
    assert_eq!(usable, v.capacity() * 8, "the buffer must be slab's");
    let s = slab::stats();
    assert!(
        s.requested >= 48 * MIB && s.large_blocks >= 1,
        "slab must account for the live 48 MiB buffer: {s:?}"
    );
    v.truncate(words / 16);
    v.shrink_to_fit();
    assert_eq!(v.capacity(), words / 16);
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(
            x,
            (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            "index {i}"
        );
    }
    v.truncate(1000);
    v.shrink_to_fit();
    // SAFETY: as above.
    assert_eq!(unsafe { slab::usable_size(v.as_mut_ptr().cast()) }, 8000);
    assert!(v
        .iter()
        .enumerate()
        .all(|(i, &x)| x == (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let zeroed = vec![0u8; 20 * MIB];
    assert!(zeroed.iter().all(|&b| b == 0));
    let zeroed_small = vec![0u64; 1000];
    assert!(zeroed_small.iter().all(|&b| b == 0));
}

#[repr(C, align(4096))]
#[derive(Clone)]
struct Page {
    bytes: [u8; 4096],
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line {
    id: u64,
    pad: [u64; 3],
}

#[test]
fn aligned_types_stay_aligned_through_growth() {
    let mut pages: Vec<Page> = Vec::new();
    for i in 0..300usize {
        let mut p = Page { bytes: [0; 4096] };
        p.bytes.fill(i as u8);
        p.bytes[0] = (i >> 8) as u8;
        pages.push(p);
        assert_eq!(pages.as_ptr() as usize % 4096, 0, "after {i} pushes");
    }
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(p as *const Page as usize % 4096, 0);
        assert_eq!(p.bytes[0], (i >> 8) as u8);
        assert!(p.bytes[1..].iter().all(|&b| b == i as u8), "page {i}");
    }
    pages.truncate(3);
    pages.shrink_to_fit();
    assert_eq!(pages.as_ptr() as usize % 4096, 0);
    assert!(pages[2].bytes[1..].iter().all(|&b| b == 2));

    let mut lines: Vec<Box<Line>> = (0..2000u64)
        .map(|id| Box::new(Line { id, pad: [id; 3] }))
        .collect();
    lines.retain(|l| l.id % 3 != 0);
    let mut packed: Vec<Line> = lines.iter().map(|b| **b).collect();
    packed.extend((0..5000u64).map(|id| Line { id, pad: [id; 3] }));
    for l in &lines {
        assert_eq!(&**l as *const Line as usize % 64, 0);
        assert_eq!(l.pad, [l.id; 3]);
    }
    assert_eq!(packed.as_ptr() as usize % 64, 0);
    assert!(packed.iter().all(|l| l.pad == [l.id; 3]));
    let zeroed: Vec<Page> = vec![Page { bytes: [0; 4096] }; 20];
    assert!(zeroed.iter().all(|p| p.bytes.iter().all(|&b| b == 0)));
}

#[test]
fn slab_is_really_the_global_allocator() {
    let mut held: Vec<Box<[u8]>> = (0..100)
        .map(|i| vec![i as u8; 1000].into_boxed_slice())
        .collect();
    for b in &mut held {
        // SAFETY: each box is a live block of exactly 1000 bytes; slab validates it (and would abort
        // with "invalid free" if it were not one of its own).
        assert_eq!(unsafe { slab::usable_size(b.as_mut_ptr()) }, 1000);
    }
    let s = slab::stats();
    assert!(s.requested >= 100 * 1000, "{s:?}");
    assert!(s.classes.iter().map(|c| c.blocks).sum::<usize>() >= 100);
    let config = slab::config();
    assert!(
        config.zero_on_free && config.check_write_after_free,
        "defaults: {config:?}"
    );
    drop(held);
}

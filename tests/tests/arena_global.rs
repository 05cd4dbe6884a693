//! `twinheap::Arena` as the global allocator of a whole test binary (this one: the harness, its
//! threads and every test allocate from the arena allocator), running std-heavy multithreaded
//! workloads to completion with checksums: maps, strings, `format!`, channels between 8 threads,
//! `Arc<Mutex<..>>`, threads spawned and joined in a loop, a Vec grown to tens of MiB and shrunk, and
//! over-aligned types.

#[global_allocator]
static A: twinheap::Arena = twinheap::Arena;

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc, Mutex};

use twinheap::arena_allocator as arena;

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn the_harness_runs_on_the_arena_allocator() {
    let v = vec![1u8; 1000];
    // SAFETY: a live block of the global allocator.
    assert!(unsafe { arena::arena_index(v.as_ptr() as *mut u8) }.is_some());
    assert!(arena::mallinfo2().uordblks > 0);
}

#[test]
fn maps_and_strings_across_threads() {
    let (tx, rx) = mpsc::channel::<(String, Vec<u8>, u64)>();
    let shared = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut handles = Vec::new();
    for t in 0..8u64 {
        let tx = tx.clone();
        let shared = shared.clone();
        handles.push(std::thread::spawn(move || {
            let mut local: HashMap<String, Vec<u64>> = HashMap::new();
            for i in 0..3000u64 {
                let key = format!("t{t}-k{}", i % 97);
                local.entry(key.clone()).or_default().push(i * t);
                if i % 10 == 0 {
                    let body: Vec<u8> = (0..(i % 700) as usize)
                        .map(|j| (j as u64 ^ i) as u8)
                        .collect();
                    let sum = fnv(&body);
                    tx.send((key.clone(), body, sum)).unwrap();
                }
                if i % 100 == 0 {
                    *shared.lock().unwrap().entry(key).or_insert(0) += 1;
                }
            }
            local.values().map(Vec::len).sum::<usize>()
        }));
    }
    drop(tx);
    let mut received = 0;
    for (key, body, sum) in rx {
        assert!(key.starts_with('t'));
        assert_eq!(fnv(&body), sum, "a message body changed in flight");
        received += 1;
    }
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 8 * 3000);
    assert_eq!(received, 8 * 300);
    assert_eq!(shared.lock().unwrap().values().sum::<usize>(), 8 * 30);
}

#[test]
fn threads_come_and_go() {
    for round in 0..50 {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    let s: String = (0..200)
                        .map(|j| char::from(b'a' + ((i + j + round) % 26) as u8))
                        .collect();
                    let v: Vec<String> = s.split('e').map(str::to_owned).collect();
                    v.concat().len() + s.matches('e').count()
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), 200);
        }
    }
    let arenas = arena::stats().arenas;
    assert!(
        arenas <= 16,
        "threads that exited left their arenas for reuse: {arenas}"
    );
}

#[test]
fn big_vec_grows_and_shrinks() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..(6 << 20) {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), (6u64 << 20) * ((6 << 20) - 1) / 2);
    v.truncate(1000);
    v.shrink_to_fit();
    assert_eq!(v[999], 999);
    assert_eq!(v.capacity(), 1000);
}

#[test]
fn over_aligned_types() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    #[repr(align(64))]
    struct Line([u8; 64]);
    let pages: Vec<Box<Page>> = (0..20).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    let lines: Vec<Line> = (0..1000).map(|i| Line([i as u8; 64])).collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const Page as usize % 4096, 0);
        assert!(p.0.iter().all(|&b| b == i as u8));
    }
    assert_eq!(lines.as_ptr() as usize % 64, 0);
    assert_eq!(lines[999].0[63], (999 % 256) as u8);
}

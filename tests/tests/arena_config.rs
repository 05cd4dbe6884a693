//! Tunables reach the arena allocator through `twinheap::Arena`, and each has the effect glibc's has.
//! This binary's global allocator is `twinheap::Arena`, which hands the `arena.*` tunables (and
//! glibc's names for them) to the allocator at its first allocation. Each case re-runs this binary
//! (`current_exe --exact <child test>`) with a chosen environment, so that the child is a fresh
//! process reading that environment; the child prints `CHILD key=value` lines and the parent compares
//! them with a run under different settings, so every test shows the tunable changing something.

#[global_allocator]
static A: twinheap::Arena = twinheap::Arena;

use std::process::Output;

use twinheap::arena_allocator as arena;

const CHILD_ENV: &str = "TWINHEAP_ARENA_CONFIG_CHILD";

fn run_child(name: &str, env: &[(&str, &str)]) -> Output {
    let out = twinheap_tests::run_test_child(name, CHILD_ENV, env);
    assert!(
        out.status.success(),
        "child {name} failed: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value of `CHILD key=value` in a child's output.
fn child_value(out: &Output, key: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split_once("CHILD ").map(|(_, rest)| rest))
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {key} in child output: {text}"))
}

fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

// ---- children -----------------------------------------------------------------------------------

#[test]
fn child_block_placement() {
    if !is_child() {
        return;
    }
    let v = vec![7u8; 200 << 10];
    // SAFETY: a live block of the global allocator, which is the arena allocator.
    let mapped = unsafe { arena::is_mapped(v.as_ptr() as *mut u8) };
    println!("\nCHILD mapped={mapped}");
}

#[test]
fn child_thread_arenas() {
    if !is_child() {
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Blocks too large for the tcache: every pair takes the arena lock, so threads
                // sharing an arena meet contention and (unless arena_max forbids) move apart.
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let v = vec![i as u8; 2000];
                    std::hint::black_box(&v);
                    i = i.wrapping_add(1);
                }
            })
        })
        .collect();
    // Until contention has created a second arena, or 3 s (on a loaded machine threads may run one
    // at a time for a while; with arena_max=1 this always takes the full 3 s).
    let start = std::time::Instant::now();
    while arena::stats().arenas < 2 && start.elapsed().as_secs() < 3 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    println!("\nCHILD arenas={}", arena::stats().arenas);
}

#[test]
fn child_trim() {
    if !is_child() {
        return;
    }
    let before = arena::stats().heap_bytes;
    let blocks: Vec<Vec<u8>> = (0..2000).map(|i| vec![i as u8; 10_000]).collect();
    let peak = arena::stats().heap_bytes;
    drop(blocks);
    let after_free = arena::stats().heap_bytes;
    let committed_before = arena::stats().committed;
    let released = arena::trim(0);
    let after_trim = arena::stats().heap_bytes;
    let committed_after = arena::stats().committed;
    println!(
        "\nCHILD trim_lowered_committed={}",
        committed_after + (4 << 20) < committed_before
    );
    println!(
        "\nCHILD grew={}\nCHILD freed_back={}\nCHILD trim_released={released}\nCHILD after_trim_small={}",
        peak > before + (15 << 20),
        after_free < peak / 2,
        after_trim < peak / 4
    );
}

#[test]
fn child_tcache() {
    if !is_child() {
        return;
    }
    let p = arena::malloc(40);
    let before = arena::mallinfo2().smblks;
    // SAFETY: a live block.
    unsafe { arena::free(p) };
    let after = arena::mallinfo2().smblks;
    // A cached block counts as in use; a block on a fast bin counts in smblks.
    println!("\nCHILD fastbin_blocks_added={}", after - before);
}

#[test]
fn child_perturb() {
    if !is_child() {
        return;
    }
    let p = arena::malloc(3000);
    let guard = arena::malloc(100);
    // SAFETY: live blocks; the freed one is read only to observe the perturb fill, before any
    // other allocation could reuse it.
    unsafe {
        let fresh = p.add(100).read();
        arena::free(p);
        let freed = p.add(100).read();
        println!("\nCHILD fresh={fresh:#x}\nCHILD freed={freed:#x}");
        arena::free(guard);
    }
}

// ---- tests --------------------------------------------------------------------------------------

#[test]
fn mmap_threshold_moves_a_200k_block() {
    let out = run_child("child_block_placement", &[]);
    assert_eq!(child_value(&out, "mapped"), "true");
    let out = run_child(
        "child_block_placement",
        &[("TWINHEAP_TUNABLES", "arena.mmap_threshold=1048576")],
    );
    assert_eq!(child_value(&out, "mapped"), "false");
    let out = run_child(
        "child_block_placement",
        &[("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1048576")],
    );
    assert_eq!(child_value(&out, "mapped"), "false");
    let out = run_child("child_block_placement", &[("MALLOC_MMAP_MAX_", "0")]);
    assert_eq!(child_value(&out, "mapped"), "false");
}

#[test]
fn arena_max_one_keeps_threads_on_one_arena() {
    let out = run_child("child_thread_arenas", &[]);
    let arenas: usize = child_value(&out, "arenas").parse().unwrap();
    assert!(
        arenas > 1,
        "8 contending threads get arenas of their own by default"
    );
    let out = run_child(
        "child_thread_arenas",
        &[("TWINHEAP_TUNABLES", "arena.arena_max=1")],
    );
    assert_eq!(child_value(&out, "arenas"), "1");
    let out = run_child("child_thread_arenas", &[("MALLOC_ARENA_MAX", "2")]);
    assert!(child_value(&out, "arenas").parse::<usize>().unwrap() <= 2);
}

#[test]
fn trim_threshold_and_malloc_trim_lower_committed_bytes() {
    let out = run_child("child_trim", &[]);
    assert_eq!(child_value(&out, "grew"), "true");
    assert_eq!(
        child_value(&out, "freed_back"),
        "true",
        "free trims top by default"
    );
    assert_eq!(child_value(&out, "after_trim_small"), "true");
    assert_eq!(child_value(&out, "trim_lowered_committed"), "true");
    // Never trim on free: the memory stays until malloc_trim.
    let out = run_child(
        "child_trim",
        &[(
            "TWINHEAP_TUNABLES",
            "arena.trim_threshold=0xffffffffffffffff",
        )],
    );
    assert_eq!(child_value(&out, "grew"), "true");
    assert_eq!(child_value(&out, "freed_back"), "false");
    assert_eq!(child_value(&out, "trim_released"), "true");
    assert_eq!(child_value(&out, "after_trim_small"), "true");
    assert_eq!(child_value(&out, "trim_lowered_committed"), "true");
}

#[test]
fn tcache_count_zero_turns_the_tcache_off() {
    let out = run_child("child_tcache", &[]);
    assert_eq!(child_value(&out, "fastbin_blocks_added"), "0");
    let out = run_child(
        "child_tcache",
        &[("TWINHEAP_TUNABLES", "arena.tcache_count=0")],
    );
    assert_eq!(child_value(&out, "fastbin_blocks_added"), "1");
    let out = run_child(
        "child_tcache",
        &[("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")],
    );
    assert_eq!(child_value(&out, "fastbin_blocks_added"), "1");
}

#[test]
fn perturb_fills_blocks() {
    let out = run_child("child_perturb", &[]);
    assert_eq!(child_value(&out, "fresh"), "0x0");
    assert_ne!(child_value(&out, "freed"), "0xaa");
    let out = run_child("child_perturb", &[("MALLOC_PERTURB_", "170")]);
    assert_eq!(child_value(&out, "fresh"), "0x55");
    assert_eq!(child_value(&out, "freed"), "0xaa");
}

#[test]
fn init_and_config_round_trip() {
    if is_child() {
        return;
    }
    let t = twinheap::tunables::Tunables::defaults();
    let c = twinheap::arena_config(&t);
    assert_eq!(c, arena::Config::default());
    let mut t = twinheap::tunables::Tunables::defaults();
    t.set(twinheap::tunables::Id::ArenaMmapThreshold, 131072);
    let c = twinheap::arena_config(&t);
    assert_eq!(
        c.mmap_threshold,
        Some(131072),
        "set explicitly, even at the default value"
    );
}

//! Tunables reach slab through `twinheap::Slab`: this binary's global allocator is `twinheap::Slab`,
//! which hands the `slab.*` tunables to slab at its first allocation. Each case re-runs this binary
//! (`current_exe --exact <child test>`) with a chosen environment and a marker variable, so that the
//! child is a fresh process that reads that environment; the child prints what it saw.

#[global_allocator]
static A: twinheap::Slab = twinheap::Slab;

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use twinheap::slab_allocator as slab;

const CHILD_ENV: &str = "TWINHEAP_SLAB_CONFIG_CHILD";

/// Runs the child test `name` with `TWINHEAP_TUNABLES` set to `tunables` (or unset), starting from an
/// environment free of anything twinheap's parser reads.
fn run_child(name: &str, tunables: Option<&str>) -> Output {
    let env: Vec<(&str, &str)> = tunables
        .map(|t| ("TWINHEAP_TUNABLES", t))
        .into_iter()
        .collect();
    twinheap_tests::run_test_child(name, CHILD_ENV, &env)
}

/// The `CHILD ...` lines of a child's stdout.
fn child_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("CHILD ").map(|(_, rest)| rest.to_string()))
        .collect()
}

/// Not a test by itself: run by the tests below, prints the slab configuration in force.
#[test]
fn child_print_slab_config() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Make sure this process has allocated through the global allocator (it has: the harness did).
    let v = vec![1u8; 100];
    let c = slab::config();
    println!(
        "\nCHILD zero_on_free={} check_write_after_free={}",
        c.zero_on_free, c.check_write_after_free
    );
    println!(
        "\nCHILD large_cache={} protect_freed_large={}",
        c.large_cache, c.protect_freed_large
    );
    drop(v);
}

/// Not a test by itself: reports whether the fork handlers were registered by the time the first
/// slab call (the harness's) returned, in a fresh process.
#[test]
fn child_fork_handlers() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let v = vec![1u8; 100];
    println!("\nCHILD fork_handlers={}", slab::fork_handlers_registered());
    drop(v);
}

#[test]
fn fork_handlers_are_registered_once_the_first_call_returns() {
    let out = run_child("child_fork_handlers", None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(child_lines(&out), ["fork_handlers=true"]);
}

/// Not a test by itself: frees a block, writes into it, and allocates the same size until the slot
/// comes back. With the check on, slab aborts at that malloc; with it off, the child reports reuse.
#[test]
fn child_write_after_free() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mut keep = Vec::with_capacity(64);
    for _ in 0..64 {
        let p = slab::malloc(20);
        assert!(!p.is_null());
        keep.push(p);
    }
    let p = keep[32];
    // SAFETY: a live 20-byte block; the write after the free is the bug under test (the group stays
    // mapped, its other blocks being live).
    let target = unsafe {
        slab::free(p);
        let t = p.add(8);
        t.write(0x5a);
        t
    };
    println!("\nCHILD target={target:?}");
    let mut mallocs = 0;
    loop {
        let q = slab::malloc(20);
        assert!(!q.is_null());
        mallocs += 1;
        if q == p {
            // SAFETY: `q` is live and holds 20 bytes.
            let byte = unsafe { q.add(8).read() };
            println!("CHILD reused after {mallocs} mallocs, byte {byte:#x}");
            break;
        }
        assert!(mallocs < 1_000_000, "the slot never came back");
    }
}

#[test]
fn tunables_turn_zeroing_and_the_check_off() {
    let out = run_child("child_print_slab_config", Some("slab.zero_on_free=0"));
    assert!(out.status.success(), "child failed: {out:?}");
    // Without zeroing the check cannot work, so slab turns it off too.
    assert_eq!(
        child_lines(&out)[0],
        "zero_on_free=false check_write_after_free=false"
    );
    let out = run_child(
        "child_print_slab_config",
        Some("slab.check_write_after_free=0"),
    );
    assert!(out.status.success(), "child failed: {out:?}");
    assert_eq!(
        child_lines(&out)[0],
        "zero_on_free=true check_write_after_free=false"
    );
}

#[test]
fn tunables_set_the_large_block_cache_and_its_protection() {
    let out = run_child(
        "child_print_slab_config",
        Some("slab.large_cache=4M:slab.protect_freed_large=0"),
    );
    assert!(out.status.success(), "child failed: {out:?}");
    assert_eq!(
        child_lines(&out),
        [
            "zero_on_free=true check_write_after_free=true",
            "large_cache=4194304 protect_freed_large=false"
        ]
    );
}

#[test]
fn defaults_are_hardened() {
    let out = run_child("child_print_slab_config", None);
    assert!(out.status.success(), "child failed: {out:?}");
    assert_eq!(
        child_lines(&out),
        [
            "zero_on_free=true check_write_after_free=true",
            "large_cache=33554432 protect_freed_large=true"
        ]
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no warnings expected"
    );
}

#[test]
fn write_after_free_is_not_checked_when_turned_off() {
    let out = run_child(
        "child_write_after_free",
        Some("slab.check_write_after_free=0"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "with the check off the child must run to completion: {:?}\nstderr: {stderr}",
        out.status
    );
    let lines = child_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].starts_with("reused after ") && lines[1].ends_with("byte 0x5a"),
        "the slot came back with the stray byte still in it: {lines:?}"
    );
    assert!(!stderr.contains("twinheap(slab)"), "stderr: {stderr}");
}

#[test]
fn write_after_free_is_checked_by_default() {
    // The control for the test above: the same child with default tunables dies at the reuse.
    let out = run_child("child_write_after_free", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "expected an abort: {:?}\nstderr: {stderr}",
        out.status
    );
    let lines = child_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let target = lines[0].strip_prefix("target=").unwrap();
    let faults: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("twinheap("))
        .collect();
    assert_eq!(
        faults,
        [format!("twinheap(slab): write after free at {target}")],
        "stderr: {stderr}"
    );
}

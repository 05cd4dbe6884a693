//! `twinheap::Select` as a global allocator: the allocator `TWINHEAP` names is the one in use.
//!
//! Each case re-runs this binary (`current_exe --exact <child test>`) in a fresh process with `TWINHEAP`
//! set, because the choice is fixed at the first allocation. The child reports the choice it made, runs
//! a std workload to completion, and, when asked, frees a block twice: the abort message then proves
//! which allocator owned the block (twinheap's one-line report, or glibc's own).

#[global_allocator]
static A: twinheap::Select = twinheap::Select;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::sync::mpsc;

const CHILD_ENV: &str = "TWINHEAP_SELECT_CHILD";

/// Runs child test `name` in a fresh process with `TWINHEAP` set to `choice` (unset for `None`) and
/// nothing else twinheap reads.
fn run_child(name: &str, choice: Option<&str>) -> Output {
    let env: Vec<(&str, &str)> = choice.map(|c| ("TWINHEAP", c)).into_iter().collect();
    twinheap_tests::run_test_child(name, CHILD_ENV, &env)
}

fn child_line(out: &Output, key: &str) -> Option<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split_once(key).map(|(_, rest)| rest.trim().to_string()))
}

/// A workload touching the usual std containers from several threads, checking every result.
fn std_workload() -> u64 {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for round in 0..200u64 {
                    let batch: Vec<String> = (0..20)
                        .map(|i| format!("{t}-{round}-{i}-{}", "x".repeat((i * 37 % 300) as usize)))
                        .collect();
                    tx.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut by_len: BTreeMap<usize, u64> = BTreeMap::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for batch in rx {
        for s in batch {
            *by_len.entry(s.len()).or_default() += 1;
            *seen.entry(s).or_default() += 1;
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(seen.len(), 4 * 200 * 20, "every string is distinct");
    assert!(seen.values().all(|&n| n == 1));
    by_len.values().sum()
}

/// Not a test by itself: reports the choice and runs the workload.
#[test]
fn child_select_workload() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let n = std_workload();
    println!("\nCHILD selected={}", twinheap::selected().name());
    println!("CHILD strings={n}");
}

/// Not a test by itself: frees one block twice through the global allocator.
#[test]
fn child_select_double_free() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: a deliberate double free; the allocator in use must stop the process.
    unsafe {
        let p = A.alloc(layout);
        A.dealloc(p, layout);
        A.dealloc(p, layout);
    }
    println!("\nCHILD survived");
}

fn check_workload(choice: Option<&str>, expect: &str) {
    let out = run_child("child_select_workload", choice);
    assert!(
        out.status.success(),
        "{choice:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(child_line(&out, "CHILD selected=").as_deref(), Some(expect));
    assert_eq!(child_line(&out, "CHILD strings=").as_deref(), Some("16000"));
}

#[test]
fn default_is_slab() {
    check_workload(None, "slab");
}

#[test]
fn each_choice_runs_a_std_workload() {
    check_workload(Some("slab"), "slab");
    check_workload(Some("arena"), "arena");
    check_workload(Some("system"), "system");
}

/// The double-free report names the allocator that owned the block.
#[test]
fn the_chosen_allocator_owns_the_blocks() {
    for (choice, needle) in [
        ("slab", "twinheap(slab): double free at 0x"),
        ("arena", "twinheap(arena): "),
        // glibc's tcache check; any other C library still has to stop the process.
        ("system", "double free"),
    ] {
        let out = run_child("child_select_double_free", Some(choice));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{choice}: {stderr}"
        );
        assert!(stderr.contains(needle), "{choice}: {stderr}");
        assert!(
            !stderr.contains("twinheap(") || choice != "system",
            "{stderr}"
        );
        assert!(child_line(&out, "CHILD survived").is_none());
    }
}

//! End-to-end tests of the built binary: a tiny comparison with its table and report files, fault
//! injection caught by every workload, and soak runs that pass or fail loudly.

use std::path::PathBuf;
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_twinheap-stress");

const WORKLOADS: [&str; 12] = [
    "larson",
    "xmalloc",
    "cache-scratch",
    "cache-thrash",
    "mixed-small",
    "mixed-medium",
    "mixed-large",
    "realloc",
    "fragmentation",
    "thread-churn",
    "large",
    "aligned",
];

fn run(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .env_remove("LD_PRELOAD")
        .env_remove("TWINHEAP")
        .output()
        .expect("run twinheap-stress")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twinheap-stress-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tiny_compare_prints_tables_and_writes_every_report() {
    let dir = temp_dir("compare");
    let extra = dir.join("extra");
    let out = run(&[
        "compare",
        "--quick",
        "--scale",
        "0.02",
        "--reps",
        "2",
        "--threads",
        "2",
        "--allocators",
        "slab,system",
        "--workloads",
        "larson,mixed-small,aligned",
        "--out",
        dir.to_str().unwrap(),
        "--json",
        extra.join("r.json").to_str().unwrap(),
        "--csv",
        extra.join("r.csv").to_str().unwrap(),
        "--chart",
        extra.join("c.svg").to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    // One table per workload, baseline first, a row per allocator with its ratios.
    for w in ["larson", "mixed-small", "aligned"] {
        let head = format!("== {w}, 2 threads:");
        let at = stdout
            .find(&head)
            .unwrap_or_else(|| panic!("no table for {w}:\n{stdout}"));
        let table: Vec<&str> = stdout[at..].lines().skip(1).take(3).collect();
        assert!(
            table[0].starts_with("allocator") && table[0].contains("vs system"),
            "{table:?}"
        );
        assert!(
            table[1].starts_with("system") && table[1].contains("1.00x"),
            "{table:?}"
        );
        assert!(
            table[2].starts_with("slab") && table[2].contains("MiB"),
            "{table:?}"
        );
    }
    // Plain progress lines (stderr is not a terminal here): 3 workloads x 2 allocators x 2 reps.
    assert!(
        stderr.contains("[12/12] aligned (2t) on slab, rep 2:"),
        "{stderr}"
    );

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("## larson, 2 threads") && md.contains("| slab | "),
        "{md}"
    );
    assert!(md.contains("![relative time and peak RSS per workload](compare.svg)"));
    assert!(md.contains("Repetitions: 2"));
    for json in [dir.join("report.json"), extra.join("r.json")] {
        let j = std::fs::read_to_string(json).unwrap();
        assert_eq!(j.matches("\"workload\":").count(), 6, "{j}");
        assert_eq!(
            j.matches("\"secs\":").count(),
            6 * 2 + 6,
            "2 samples and 1 ratio per result"
        );
        assert!(j.contains("\"baseline\": \"system\""));
        assert!(!j.contains("\"failure\": \""), "no run failed");
    }
    for csv in [dir.join("report.csv"), extra.join("r.csv")] {
        let c = std::fs::read_to_string(csv).unwrap();
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 7);
        assert!(lines[0].starts_with("workload,threads,allocator,reps,median_secs"));
        assert!(lines[1].starts_with("larson,2,system,2,"), "{}", lines[1]);
        assert!(lines[2].starts_with("larson,2,slab,2,"), "{}", lines[2]);
    }
    for svg in [dir.join("compare.svg"), extra.join("c.svg")] {
        let s = std::fs::read_to_string(svg).unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        // 2 legend swatches + 2 panels x 3 workloads x 2 allocators.
        assert_eq!(s.matches("<rect x=").count(), 2 + 12);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_workload_catches_a_corrupted_block() {
    for w in WORKLOADS {
        let out = Command::new(EXE)
            .args([
                "run-one",
                "--workload",
                w,
                "--threads",
                "2",
                "--scale",
                "0.01",
                "--inject",
                "corrupt@3",
            ])
            .env("TWINHEAP", "slab")
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{w}: {stdout}");
        assert!(
            stdout.contains("TWINHEAP-STRESS-FAULT corrupted pattern in block 0x"),
            "{w}: {stdout}"
        );
        assert!(!stdout.contains("TWINHEAP-STRESS-RESULT"), "{w}");
    }
}

#[test]
fn a_clean_run_one_prints_a_result_line() {
    let out = Command::new(EXE)
        .args([
            "run-one",
            "--workload",
            "realloc",
            "--threads",
            "2",
            "--scale",
            "0.01",
            "--seed",
            "5",
        ])
        .env("TWINHEAP", "system")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("TWINHEAP-STRESS-RESULT "))
        .unwrap();
    assert!(line.contains(" ops=") && line.contains(" secs=") && line.contains(" rss_end_kb="));
    assert!(line.ends_with("allocator=system"), "{line}");
}

#[test]
fn soak_passes_when_clean() {
    let out = run(&[
        "soak",
        "2s",
        "--allocators",
        "slab,system",
        "--workloads",
        "larson,xmalloc",
        "--scale",
        "0.01",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("soak passed:") && stdout.contains("no fault"),
        "{stdout}"
    );
}

#[test]
fn soak_names_workload_allocator_seed_and_signal_of_a_crash() {
    let out = run(&[
        "--soak",
        "30s",
        "--allocators",
        "slab",
        "--workloads",
        "mixed-small",
        "--scale",
        "0.01",
        "--seed",
        "77",
        "--inject",
        "double-free@4",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("FAILED workload=mixed-small allocator=slab threads=")
            && stderr.contains("seed=77"),
        "{stderr}"
    );
    assert!(
        stderr.contains("child killed by signal 6 (SIGABRT)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("twinheap(slab): double free at 0x"),
        "{stderr}"
    );
    assert!(stderr.contains("replay: TWINHEAP=slab "), "{stderr}");
}

#[test]
fn soak_fails_on_a_corrupted_pattern() {
    let out = run(&[
        "soak",
        "30s",
        "--allocators",
        "system",
        "--workloads",
        "aligned",
        "--scale",
        "0.01",
        "--inject",
        "corrupt@7",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("FAILED workload=aligned allocator=system"),
        "{stderr}"
    );
    assert!(
        stderr.contains("seed=1: fault detected: corrupted pattern in block"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("soak FAILED after 1 runs"));
}

#[test]
fn a_library_that_cannot_be_preloaded_is_a_failed_row_not_a_silent_libc_run() {
    let dir = temp_dir("fake");
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, "not an ELF file").unwrap();
    let spec = format!("fake={}", fake.display());
    let out = run(&[
        "compare",
        "--quick",
        "--scale",
        "0.01",
        "--allocators",
        &spec,
        "--workloads",
        "larson",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    // Only a peer failed, so the run itself succeeds but says so.
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("FAILED fake: fault detected: LD_PRELOAD="),
        "{stdout}"
    );
    assert!(stdout.contains("is not loaded in the child"), "{stdout}");
    let strict = run(&[
        "compare",
        "--quick",
        "--scale",
        "0.01",
        "--allocators",
        &spec,
        "--workloads",
        "larson",
        "--out",
        dir.to_str().unwrap(),
        "--strict",
    ]);
    assert_eq!(strict.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_and_missing_allocators_are_clear_errors() {
    let out = run(&["compare", "--allocators", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown allocator 'nosuch'"));
    let out = run(&["compare", "--allocators", "/nonexistent/libx.so"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no such library file"));
    let out = run(&["compare", "--reps", "zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--reps: bad value 'zero'"));
    let out = run(&["help"]);
    assert!(out.status.success() && text(&out.stdout).contains("twinheap-stress compare"));
    let out = run(&["list"]);
    let list = text(&out.stdout);
    for w in WORKLOADS {
        assert!(
            list.contains(&format!("  {w} ")),
            "{w} missing from list:\n{list}"
        );
    }
}

#[test]
fn a_crash_of_our_allocator_in_compare_is_a_failed_row_and_a_failed_run() {
    let dir = temp_dir("crash");
    let out = run(&[
        "compare",
        "--quick",
        "--scale",
        "0.01",
        "--reps",
        "2",
        "--allocators",
        "slab,system",
        "--workloads",
        "xmalloc",
        "--out",
        dir.to_str().unwrap(),
        "--inject",
        "double-free@4",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED slab: child killed by signal 6 (SIGABRT) (seed 1); child's stderr: twinheap(slab): double free at 0x"),
        "{stdout}"
    );
    // glibc usually aborts on it too; if it does not, the tool reports the undetected double free.
    assert!(stdout.contains("FAILED system: "), "{stdout}");
    let j = std::fs::read_to_string(dir.join("report.json")).unwrap();
    assert_eq!(j.matches("\"ok\": false").count(), 2, "{j}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hung_run_is_killed_at_the_timeout_and_reported() {
    let start = std::time::Instant::now();
    let out = run(&[
        "soak",
        "60s",
        "--allocators",
        "system",
        "--workloads",
        "larson",
        "--scale",
        "0.01",
        "--timeout",
        "1",
        "--inject",
        "hang@2",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("FAILED workload=larson allocator=system"),
        "{stderr}"
    );
    assert!(
        stderr.contains("child did not finish within 1 s (killed)"),
        "{stderr}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
}

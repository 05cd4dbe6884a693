//! How a workload reports a fault it detected: a corrupted pattern, a misaligned or null block, an
//! injected fault the allocator did not catch.
//!
//! A workload runs in a child process (`run-one`) and a fault there means the heap can no longer be
//! trusted, so the child does not try to unwind its threads: it prints one `FAULT` line on stdout (for
//! the parent, which names workload, allocator and seed) and on stderr (for a person), and exits with
//! [`EXIT_FAULT`] at once.

use std::io::Write;

/// Exit code of a child that detected a fault.
pub const EXIT_FAULT: i32 = 3;

/// The prefix of the line a faulting child prints on stdout.
pub const FAULT_PREFIX: &str = "TWINHEAP-STRESS-FAULT ";

/// Reports `msg` and ends the process with [`EXIT_FAULT`].
pub fn fail(msg: &str) -> ! {
    let line = format!("{FAULT_PREFIX}{msg}\n");
    let _ = std::io::stdout().write_all(line.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(line.as_bytes());
    std::process::exit(EXIT_FAULT)
}

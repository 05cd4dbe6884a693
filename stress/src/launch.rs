//! The parent side of a measurement: start `run-one` in a child on one allocator, wait for it with a
//! deadline, and turn what happened into a [`Sample`] or a [`Failure`].
//!
//! The child's peak RSS is its `ru_maxrss` from `wait4`. Linux carries the high-water mark of the
//! address space a process had before `exec` into its rusage, so that figure is never below this
//! (small) parent's own RSS; the child's own `VmHWM`, which starts at `exec`, is kept too.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::allocators::Allocator;
use crate::fault::FAULT_PREFIX;
use crate::run_one::{parse_result, Job};

/// One successful measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub secs: f64,
    pub ops: u64,
    pub peak_rss_kb: u64,
    pub end_rss_kb: u64,
    pub hwm_kb: u64,
    /// CPU time (user + system) of the whole child, from rusage: less sensitive than wall time to
    /// other load on the machine, though it includes start-up and exit.
    pub cpu_secs: f64,
}

/// How a child run went wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The child detected a fault (corrupted pattern, bad block) and said so.
    Fault(String),
    /// The child was killed by a signal (an allocator's abort, a segfault).
    Signal(i32),
    /// The child exited with a non-zero code without naming a fault.
    Exit(i32),
    /// The child did not finish in time and was killed.
    Timeout(Duration),
    /// The child exited 0 but printed no result line.
    NoResult,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Fault(m) => write!(f, "fault detected: {m}"),
            Failure::Signal(s) => write!(f, "child killed by signal {s} ({})", signal_name(*s)),
            Failure::Exit(c) => write!(f, "child exited with code {c}"),
            Failure::Timeout(d) => {
                write!(f, "child did not finish within {} s (killed)", d.as_secs())
            }
            Failure::NoResult => write!(f, "child exited 0 without a result line"),
        }
    }
}

/// The conventional name of a signal number.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGINT => "SIGINT",
        libc::SIGSYS => "SIGSYS",
        _ => "unknown signal",
    }
}

/// What a child run produced.
#[derive(Debug)]
pub struct ChildRun {
    pub result: Result<Sample, Failure>,
    /// The child's stderr (an allocator's abort message lands here).
    pub stderr: String,
}

/// Runs `job` in a child of `exe` on `alloc`, killing it after `timeout`.
pub fn run_child(
    exe: &Path,
    alloc: &Allocator,
    job: &Job,
    timeout: Duration,
) -> std::io::Result<ChildRun> {
    let (twinheap, preload) = alloc.child_env();
    let mut cmd = Command::new(exe);
    cmd.args(job.to_args())
        .env("TWINHEAP", twinheap)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match preload {
        Some(p) => cmd.env("LD_PRELOAD", p),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value to be overwritten.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our unreaped child; status and usage point to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if !timed_out && Instant::now() >= deadline {
            // SAFETY: the child is not reaped yet, so `pid` still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            timed_out = true;
        }
        thread::sleep(Duration::from_millis(2));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();

    let fault = stdout
        .lines()
        .find_map(|l| l.strip_prefix(FAULT_PREFIX))
        .map(str::to_string);
    let result = if timed_out {
        Err(Failure::Timeout(timeout))
    } else if libc::WIFSIGNALED(status) {
        Err(Failure::Signal(libc::WTERMSIG(status)))
    } else if let Some(f) = fault {
        Err(Failure::Fault(f))
    } else if libc::WEXITSTATUS(status) != 0 {
        Err(Failure::Exit(libc::WEXITSTATUS(status)))
    } else {
        match stdout.lines().find_map(parse_result) {
            Some(r) => Ok(Sample {
                secs: r.secs,
                ops: r.ops,
                peak_rss_kb: usage.ru_maxrss.max(0) as u64,
                end_rss_kb: r.rss_end_kb,
                hwm_kb: r.hwm_kb,
                cpu_secs: timeval_secs(usage.ru_utime) + timeval_secs(usage.ru_stime),
            }),
            None => Err(Failure::NoResult),
        }
    };
    Ok(ChildRun { result, stderr })
}

fn timeval_secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_describe_themselves() {
        assert_eq!(
            Failure::Signal(libc::SIGABRT).to_string(),
            "child killed by signal 6 (SIGABRT)"
        );
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert!(Failure::Timeout(Duration::from_secs(5))
            .to_string()
            .contains("5 s"));
        assert!(Failure::Fault("x".into())
            .to_string()
            .contains("fault detected: x"));
    }
}

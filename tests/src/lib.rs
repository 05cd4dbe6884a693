//! Shared helpers for twinheap's integration tests: child-process runners for tests that must crash,
//! exhaust a limit or inherit a held lock; memory shared with such a child; a small seeded PRNG; and
//! byte-pattern helpers to prove that memory kept (or lost) its contents.
//!
//! # Why a child body must not allocate
//!
//! The test harness runs tests on several threads, and `fork` copies only the calling thread. Any lock
//! another thread held at that moment — malloc's arena locks, stdio and `std::io::stderr` locks, the
//! harness's output-capture buffers — stays locked forever in the child, because its owner does not
//! exist there. A child that calls `malloc` (a `Vec`, a `format!`, a panic message, `println!`)
//! may therefore deadlock, or find the heap half-updated. POSIX only promises async-signal-safe calls
//! between `fork` and `exec`.
//!
//! So a child body passed to [`run_in_child`] or [`run_in_child_capturing_stderr`] keeps to: the page
//! backend (which never allocates), volatile reads and writes, raw syscalls through `libc`
//! (`setrlimit`, `write`, `open`/`read` into a stack buffer), atomics, and its return value. It reports
//! what it saw through that return value (the exit code) or through a [`SharedSlots`] created before
//! the fork. It must not panic either: a panic allocates its message. Should one happen anyway, the
//! runner still ends the child with [`CHILD_UNWOUND`] rather than letting it return into the harness.
//!
//! The parent side is ordinary Rust and may allocate freely.

/// slab's 48 class strides in 16-byte units (musl mallocng's table), written out independently of
/// the allocator so that tests check it rather than reuse it. With no in-band header a class serves
/// requests up to its whole stride: a 48-byte request takes a 48-byte slot.
pub const SLAB_UNITS: [usize; 48] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 31, 36, 42, 50, 63, 72, 84, 102, 127, 146,
    170, 204, 255, 292, 340, 409, 511, 584, 682, 818, 1023, 1169, 1364, 1637, 2047, 2340, 2730,
    3276, 4095, 4680, 5460, 6552, 8191,
];

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rand_core::RngCore;

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildOutcome {
    /// The child called `_exit` (or returned from its body) with this code.
    Exited(i32),
    /// The child was killed by this signal (SIGSEGV for a guard page, SIGABRT for a heap fault).
    Signaled(i32),
    /// The child was still running at the deadline and was killed with SIGKILL (a deadlock).
    TimedOut,
}

impl ChildOutcome {
    /// The outcome as one integer, for reporting from a child through [`SharedSlots`]:
    /// `Exited(c)` is `c`, `Signaled(s)` is `1000 + s`, `TimedOut` is `-1`.
    pub fn to_code(self) -> i64 {
        match self {
            ChildOutcome::Exited(c) => i64::from(c),
            ChildOutcome::Signaled(s) => 1000 + i64::from(s),
            ChildOutcome::TimedOut => -1,
        }
    }

    /// The inverse of [`ChildOutcome::to_code`].
    pub fn from_code(code: i64) -> Self {
        match code {
            -1 => ChildOutcome::TimedOut,
            c if c >= 1000 => ChildOutcome::Signaled((c - 1000) as i32),
            c => ChildOutcome::Exited(c as i32),
        }
    }
}

/// Exit code of a child whose body unwound (panicked) instead of returning.
pub const CHILD_UNWOUND: i32 = 125;

/// How long a child may run before the runners kill it and report [`ChildOutcome::TimedOut`].
pub const DEFAULT_CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Forks, runs `f` in the child and ends the child with `_exit(f())`; the parent waits for it.
///
/// See the module docs for what `f` may do. Core dumps are disabled in the child, so death tests
/// that end in SIGSEGV or SIGABRT cost no disk and no time.
///
/// # Panics
/// In the parent, if `fork` or `waitpid` fails.
pub fn run_in_child(f: impl FnOnce() -> i32) -> ChildOutcome {
    run_in_child_timeout(DEFAULT_CHILD_TIMEOUT, f)
}

/// Makes sure slab's fork handlers are registered before a test forks. slab registers them when the
/// thread that made its first heap leaves that first call (earlier, pthread_atfork's own allocation
/// would re-enter slab); a fork from another test thread inside that window would copy whatever
/// slab lock was held at that instant into the child, which would wait for it forever. Tests start
/// together, so their first forks can fall in that window.
fn slab_ready_for_fork() {
    if twinheap_slab::fork_handlers_registered() {
        return;
    }
    // SAFETY: a fresh block, freed once.
    unsafe { twinheap_slab::free(twinheap_slab::malloc(1)) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !twinheap_slab::fork_handlers_registered() && Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// [`run_in_child`] with an explicit deadline after which the child is killed.
pub fn run_in_child_timeout(timeout: Duration, f: impl FnOnce() -> i32) -> ChildOutcome {
    slab_ready_for_fork();
    // SAFETY: fork has no preconditions; the child only runs `child_main`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork failed: {}", io::Error::last_os_error());
    }
    if pid == 0 {
        child_main(None, f);
    }
    wait_child(pid, timeout, &mut || {})
}

/// Like [`run_in_child`], but the child's fd 2 goes into a pipe; returns the outcome and every byte
/// the child wrote to stderr (e.g. a `twinheap(slab): double free at 0x…` line before SIGABRT).
///
/// The parent drains the pipe while waiting, so a child may write any amount. The read end is
/// non-blocking and reading stops once the child is gone and the pipe is empty: a child forked at the
/// same moment by another test thread may have inherited the write end, so end-of-file is not awaited.
///
/// # Panics
/// In the parent, if `pipe`, `fork` or `waitpid` fails.
pub fn run_in_child_capturing_stderr(f: impl FnOnce() -> i32) -> (ChildOutcome, Vec<u8>) {
    run_in_child_capturing_stderr_timeout(DEFAULT_CHILD_TIMEOUT, f)
}

/// [`run_in_child_capturing_stderr`] with an explicit deadline.
pub fn run_in_child_capturing_stderr_timeout(
    timeout: Duration,
    f: impl FnOnce() -> i32,
) -> (ChildOutcome, Vec<u8>) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes. O_CLOEXEC keeps the pipe out of
    // programs that other tests exec; it does not affect fork.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        panic!("pipe2 failed: {}", io::Error::last_os_error());
    }
    run_in_child_collecting(fds, timeout, f, drain)
}

/// The child side of the runners: optional stderr redirection, no core dumps, run `f`, `_exit`.
fn child_main(stderr_pipe: Option<(i32, i32)>, f: impl FnOnce() -> i32) -> ! {
    /// Ends the child if `f` unwinds, so that it never returns into the test harness.
    struct ExitOnUnwind;
    impl Drop for ExitOnUnwind {
        fn drop(&mut self) {
            // SAFETY: _exit is async-signal-safe and ends the process at once.
            unsafe { libc::_exit(CHILD_UNWOUND) }
        }
    }

    // SAFETY: only async-signal-safe calls on our own descriptors and a stack struct.
    unsafe {
        if let Some((read_end, write_end)) = stderr_pipe {
            libc::close(read_end);
            if libc::dup2(write_end, 2) < 0 {
                libc::_exit(CHILD_UNWOUND - 1);
            }
            libc::close(write_end);
        }
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
    }
    let guard = ExitOnUnwind;
    let code = f();
    std::mem::forget(guard);
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// Waits for `pid`, calling `tick` between polls, killing the child at the deadline.
fn wait_child(pid: libc::pid_t, timeout: Duration, tick: &mut dyn FnMut()) -> ChildOutcome {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_micros(100);
    let mut killed = false;
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child and `status` a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return if killed {
                ChildOutcome::TimedOut
            } else if libc::WIFEXITED(status) {
                ChildOutcome::Exited(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                ChildOutcome::Signaled(libc::WTERMSIG(status))
            } else {
                panic!("waitpid returned an unexpected status {status:#x}");
            };
        }
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                panic!("waitpid failed: {err}");
            }
        }
        tick();
        if !killed && Instant::now() >= deadline {
            // SAFETY: `pid` is our child, not yet reaped, so the pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(5));
    }
}

/// Reads everything available right now from the non-blocking `fd` into `out`.
fn drain(fd: i32, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is a valid destination of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            out.extend_from_slice(&buf[..n as usize]);
        } else if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return; // EOF, EAGAIN, or an error: nothing more to read now
        }
    }
}

/// A few 64-bit slots in a `MAP_SHARED` anonymous page: written by a forked child, read by the parent
/// after it exits. Lets a child report several values (errnos, addresses) without allocating.
pub struct SharedSlots {
    ptr: NonNull<AtomicI64>,
    len: usize,
    bytes: usize,
}

// SAFETY: the slots are atomics in memory owned by this value; sharing them between threads is what
// atomics are for.
unsafe impl Sync for SharedSlots {}
// SAFETY: as above; the mapping is not tied to the creating thread.
unsafe impl Send for SharedSlots {}

impl SharedSlots {
    /// Maps `len` slots, all zero. Call before forking.
    ///
    /// # Panics
    /// If `mmap` fails.
    pub fn new(len: usize) -> Self {
        let bytes = (len.max(1) * size_of::<AtomicI64>()).next_multiple_of(4096);
        // SAFETY: a fresh shared anonymous mapping replaces nothing.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap(MAP_SHARED) failed: {}",
            io::Error::last_os_error()
        );
        SharedSlots {
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
            bytes,
        }
    }

    fn slot(&self, i: usize) -> &AtomicI64 {
        assert!(i < self.len, "slot {i} out of {}", self.len);
        // SAFETY: `i` is in bounds of the mapping, which lives as long as `self` and is zero-initialised,
        // a valid AtomicI64.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// Stores `value` in slot `i` (safe in a forked child: one atomic store).
    pub fn set(&self, i: usize, value: i64) {
        self.slot(i).store(value, Ordering::SeqCst);
    }

    /// Reads slot `i`.
    pub fn get(&self, i: usize) -> i64 {
        self.slot(i).load(Ordering::SeqCst)
    }

    /// Number of slots.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

/// xorshift64*: a tiny, fast, seeded PRNG so that randomized tests replay exactly from their seed.
/// Implements [`RngCore`]; [`Rng64::below`] and [`Rng64::range`] cover what tests usually need.
#[derive(Clone, Debug)]
pub struct Rng64 {
    state: u64,
}

impl Rng64 {
    /// A generator for `seed` (any value; 0 is remapped, since xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        // One splitmix64 step spreads nearby seeds apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng64 {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant for tests.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        let span = (hi - lo) as u64;
        lo + if span == u64::MAX {
            self.next_u64()
        } else {
            self.below(span + 1)
        } as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

impl RngCore for Rng64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dst)
    }
}

/// The pattern byte at `offset` for `seed`: position-dependent (a moved or shifted page shows up) and
/// never zero (a page that was dropped and reads zero shows up).
#[inline]
pub fn pattern_byte(seed: u64, offset: usize) -> u8 {
    let word = ((offset / 8) as u64 ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = (word >> (8 * (offset % 8))) as u8;
    if b == 0 {
        0xA5
    } else {
        b
    }
}

/// Writes the pattern for `seed` over `[ptr, ptr + len)`. Offsets are relative to `ptr`.
///
/// # Safety
/// The range must be valid for writes.
pub unsafe fn fill_pattern(ptr: *mut u8, len: usize, seed: u64) {
    for i in 0..len {
        // SAFETY: `i < len`, inside the range the caller vouches for.
        unsafe { ptr.add(i).write(pattern_byte(seed, i)) };
    }
}

/// Checks `[ptr, ptr + len)` against the pattern for `seed`; returns the first mismatching offset.
///
/// # Safety
/// The range must be valid for reads.
pub unsafe fn check_pattern(ptr: *const u8, len: usize, seed: u64) -> Option<usize> {
    // SAFETY: `i < len`, inside the range the caller vouches for.
    (0..len).find(|&i| unsafe { ptr.add(i).read() } != pattern_byte(seed, i))
}

/// Returns the offset of the first non-zero byte in `[ptr, ptr + len)`, if any.
///
/// # Safety
/// The range must be valid for reads.
pub unsafe fn first_nonzero(ptr: *const u8, len: usize) -> Option<usize> {
    // SAFETY: the caller vouches for the whole range; `head` stops at the first 8-aligned address.
    let head = ptr.align_offset(8).min(len);
    // SAFETY: offsets below `head <= len`.
    if let Some(i) = (0..head).find(|&i| unsafe { ptr.add(i).read() } != 0) {
        return Some(i);
    }
    let words = (len - head) / 8;
    // SAFETY: `ptr + head` is 8-aligned and the `words` words lie inside the range.
    let w = unsafe { ptr.add(head).cast::<u64>() };
    // SAFETY: as above, `k < words`.
    if let Some(k) = (0..words).find(|&k| unsafe { w.add(k).read() } != 0) {
        // SAFETY: the word is non-zero, so one of its 8 bytes is.
        return (0..8)
            .map(|j| head + 8 * k + j)
            .find(|&i| unsafe { ptr.add(i).read() } != 0);
    }
    let tail = head + 8 * words;
    // SAFETY: offsets in `tail..len`.
    (tail..len).find(|&i| unsafe { ptr.add(i).read() } != 0)
}

/// Reads one byte with a volatile load, so that the access happens even if the value is unused
/// (the way to touch a guard page on purpose).
///
/// # Safety
/// As for `ptr::read_volatile`; on a PROT_NONE page it raises SIGSEGV, which is the point.
#[inline(never)]
pub unsafe fn touch(addr: usize) -> u8 {
    // SAFETY: per the contract.
    unsafe { ptr::read_volatile(addr as *const u8) }
}

/// Writes one byte with a volatile store.
///
/// # Safety
/// As for `ptr::write_volatile`.
#[inline(never)]
pub unsafe fn poke(addr: usize, value: u8) {
    // SAFETY: per the contract.
    unsafe { ptr::write_volatile(addr as *mut u8, value) }
}

/// Reads the byte at `addr` in a child: `Exited(0)` if it is readable, `Signaled(SIGSEGV)` if not
/// (a guard page, a PROT_NONE reservation, unmapped space).
pub fn touch_in_child(addr: usize) -> ChildOutcome {
    run_in_child(|| {
        // SAFETY: the read happens in a throwaway child; if it faults, only the child dies, which is
        // what the caller wants to observe.
        unsafe { touch(addr) };
        0
    })
}

/// Writes `value` at `addr` in a child and reads it back: `Exited(0)` if the byte is writable and
/// holds the value, `Exited(1)` if it reads back different, `Signaled(SIGSEGV)` if it faults. The
/// parent's memory is unaffected (the child's pages are copies).
pub fn write_in_child(addr: usize, value: u8) -> ChildOutcome {
    run_in_child(|| {
        // SAFETY: as in `touch_in_child`.
        unsafe {
            poke(addr, value);
            i32::from(touch(addr) != value)
        }
    })
}

/// Like [`run_in_child_capturing_stderr_timeout`], but the child's fd 2 is one end of an `AF_UNIX`
/// `SOCK_SEQPACKET` socket pair, which keeps message boundaries: the result holds one entry per
/// `write(2)` the child made on fd 2. Proves that a diagnostic line is emitted by a single write (and
/// so cannot interleave with another thread's output).
///
/// # Panics
/// In the parent, if `socketpair`, `fork` or `waitpid` fails.
pub fn run_in_child_capturing_stderr_writes(
    timeout: Duration,
    f: impl FnOnce() -> i32,
) -> (ChildOutcome, Vec<Vec<u8>>) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        panic!("socketpair failed: {}", io::Error::last_os_error());
    }
    run_in_child_collecting(fds, timeout, f, drain_messages)
}

/// The part both capturing runners share: forks `f` with its fd 2 on `fds[1]` (the caller made the
/// pair), gathers what arrives on `fds[0]` with `collect` while waiting and once more after the child
/// is gone (the read end is non-blocking, so a copy of the write end inherited by a child forked at the
/// same moment by another test thread never stalls it), and closes both ends.
fn run_in_child_collecting<T: Default>(
    fds: [i32; 2],
    timeout: Duration,
    f: impl FnOnce() -> i32,
    collect: fn(i32, &mut T),
) -> (ChildOutcome, T) {
    let [read_end, write_end] = fds;
    slab_ready_for_fork();
    // SAFETY: as in `run_in_child_timeout`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = io::Error::last_os_error();
        // SAFETY: both descriptors are ours and open.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
        panic!("fork failed: {err}");
    }
    if pid == 0 {
        child_main(Some((read_end, write_end)), f);
    }
    // SAFETY: the parent no longer needs the write end (the child has its own copy); the read end is
    // ours.
    unsafe {
        libc::close(write_end);
        let flags = libc::fcntl(read_end, libc::F_GETFL);
        libc::fcntl(read_end, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut collected = T::default();
    let outcome = wait_child(pid, timeout, &mut || collect(read_end, &mut collected));
    collect(read_end, &mut collected);
    // SAFETY: the read end is ours and still open.
    unsafe { libc::close(read_end) };
    (outcome, collected)
}

/// Whether the page holding `addr` is mapped at all (with any protection): mincore fails with ENOMEM
/// for unmapped pages. Uses no heap, so it is safe in a forked child.
pub fn is_mapped(addr: usize) -> bool {
    let page = twinheap_page::page_size();
    let mut vec = [0u8; 1];
    // SAFETY: mincore only reads page tables and writes one byte for one page into `vec`.
    unsafe {
        libc::mincore(
            (addr & !(page - 1)) as *mut libc::c_void,
            page,
            vec.as_mut_ptr(),
        ) == 0
    }
}

/// Reads every message available right now from the non-blocking `SOCK_SEQPACKET` socket `fd`.
fn drain_messages(fd: i32, out: &mut Vec<Vec<u8>>) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: `buf` is a valid destination of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            out.push(buf[..n as usize].to_vec());
        } else if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return; // EOF, EAGAIN, or an error: nothing more to read now
        }
    }
}

/// Parses a heap-fault report, `twinheap(<allocator>): <fault> at 0x<hex>\n`, which must be the whole
/// of `stderr` (exactly one line, newline-terminated). Returns the fault text and the address.
pub fn parse_fault_line(stderr: &[u8], allocator: &str) -> Option<(String, usize)> {
    let text = std::str::from_utf8(stderr).ok()?;
    let line = text.strip_suffix('\n')?;
    if line.contains('\n') {
        return None;
    }
    let rest = line.strip_prefix(&format!("twinheap({allocator}): "))?;
    let (fault, addr) = rest.rsplit_once(" at 0x")?;
    if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((fault.to_string(), usize::from_str_radix(addr, 16).ok()?))
}

/// The current thread's errno, and setting it (for checking what a failed allocation call reported).
pub use twinheap_page::error::{errno, set_errno};

/// Re-runs this test binary with only the test `name` (`--exact`), as a fresh process that reads its
/// own environment: every variable twinheap's parser reads is removed, `marker=1` is set (child tests
/// return at once without it), then `env` is applied. Returns the child's output, whatever its status.
pub fn run_test_child(name: &str, marker: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    for (var, _) in std::env::vars_os() {
        if twinheap::tunables::wanted(format!("{}=", var.to_string_lossy()).as_bytes()) {
            cmd.env_remove(var);
        }
    }
    cmd.env(marker, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_outcomes() {
        assert_eq!(run_in_child(|| 7), ChildOutcome::Exited(7));
        let killed = run_in_child(|| {
            // SAFETY: raising a signal in our own (child) process.
            unsafe { libc::raise(libc::SIGABRT) };
            0
        });
        assert_eq!(killed, ChildOutcome::Signaled(libc::SIGABRT));
        let hung = run_in_child_timeout(Duration::from_millis(50), || loop {
            std::hint::spin_loop();
        });
        assert_eq!(hung, ChildOutcome::TimedOut);
        let byte = Box::new(7u8);
        let addr = &*byte as *const u8 as usize;
        assert_eq!(touch_in_child(addr), ChildOutcome::Exited(0));
        assert_eq!(write_in_child(addr, 9), ChildOutcome::Exited(0));
        assert_eq!(*byte, 7, "the child wrote its own copy");
        assert_eq!(touch_in_child(8), ChildOutcome::Signaled(libc::SIGSEGV));
    }

    #[test]
    fn child_stderr_is_captured() {
        let (outcome, bytes) = run_in_child_capturing_stderr(|| {
            let big = [b'x'; 1000];
            for _ in 0..200 {
                // SAFETY: writing a stack buffer to fd 2 (the pipe).
                unsafe { libc::write(2, big.as_ptr().cast(), big.len()) };
            }
            // SAFETY: as above.
            unsafe { libc::write(2, b"end\n".as_ptr().cast(), 4) };
            3
        });
        assert_eq!(outcome, ChildOutcome::Exited(3));
        assert_eq!(bytes.len(), 200_004, "more than a pipe buffer must arrive");
        assert!(bytes.ends_with(b"xend\n"));
    }

    #[test]
    fn shared_slots_cross_fork() {
        let slots = SharedSlots::new(3);
        let outcome = run_in_child(|| {
            slots.set(0, -5);
            slots.set(2, i64::MAX);
            0
        });
        assert_eq!(outcome, ChildOutcome::Exited(0));
        assert_eq!(
            (slots.get(0), slots.get(1), slots.get(2)),
            (-5, 0, i64::MAX)
        );
    }

    #[test]
    fn rng_is_seeded_and_spread() {
        let (mut a, mut b) = (Rng64::new(1), Rng64::new(1));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng64::new(2).next_u64(), xs[0]);
        let mut r = Rng64::new(0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.range(5, 14);
            assert!((5..=14).contains(&v));
            seen[v - 5] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn patterns() {
        let mut buf = vec![0u8; 1000];
        // SAFETY: `buf` is valid for its length.
        unsafe {
            assert_eq!(first_nonzero(buf.as_ptr().add(1), 999), None);
            fill_pattern(buf.as_mut_ptr(), 1000, 42);
            assert_eq!(check_pattern(buf.as_ptr(), 1000, 42), None);
            assert!(check_pattern(buf.as_ptr(), 1000, 43).is_some());
            assert_eq!(first_nonzero(buf.as_ptr(), 1000), Some(0));
        }
        assert!(buf.iter().all(|&b| b != 0));
        buf[..500].fill(0);
        buf[..3].fill(0);
        // SAFETY: as above.
        unsafe {
            assert_eq!(first_nonzero(buf.as_ptr().add(1), 999), Some(499));
            assert_eq!(check_pattern(buf.as_ptr(), 1000, 42), Some(0));
        }
    }

    #[test]
    fn child_writes_are_captured_one_per_message() {
        let (outcome, msgs) = run_in_child_capturing_stderr_writes(DEFAULT_CHILD_TIMEOUT, || {
            // SAFETY: writing static buffers to fd 2 (the socket).
            unsafe {
                libc::write(2, b"one\n".as_ptr().cast(), 4);
                libc::write(2, b"two".as_ptr().cast(), 3);
                libc::write(2, b"\n".as_ptr().cast(), 1);
            }
            4
        });
        assert_eq!(outcome, ChildOutcome::Exited(4));
        assert_eq!(msgs, [&b"one\n"[..], b"two", b"\n"]);
    }

    #[test]
    fn fault_lines_parse_strictly() {
        let ok = b"twinheap(slab): double free at 0x7f00aa10\n";
        assert_eq!(
            parse_fault_line(ok, "slab"),
            Some(("double free".to_string(), 0x7f00_aa10))
        );
        assert_eq!(parse_fault_line(ok, "arena"), None);
        assert_eq!(parse_fault_line(&ok[..ok.len() - 1], "slab"), None);
        let twice = [&ok[..], &ok[..]].concat();
        assert_eq!(parse_fault_line(&twice, "slab"), None);
        assert_eq!(
            parse_fault_line(b"twinheap(slab): heap overflow at 0x\n", "slab"),
            None
        );
        set_errno(libc::EINVAL);
        assert_eq!(errno(), libc::EINVAL);
    }
}

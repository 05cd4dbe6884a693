//! The process's configuration, read from its environment once and kept for its lifetime.
//!
//! [`process_config`] may be called from inside the very first `malloc`, possibly before libc has
//! finished initialising, so everything here works without allocating, without std or stdio, without
//! `getenv`, and without locks that could allocate:
//!
//! - `STATE` goes UNINIT → BUSY → READY exactly once. The thread that moves it to BUSY is the only one
//!   that ever writes `CONFIG` and `ENVIRON_BUF`; every other thread waits for READY, after which
//!   `CONFIG` is never written again and may be shared as `&'static`.
//! - The environment is the libc `environ` array. If that is still null (very early in a static
//!   program), `/proc/self/environ` is read with raw syscalls into a static 64 KiB buffer — static, not
//!   on the stack, because we may be running on a small thread stack. Only the entries the parser wants
//!   are kept; if those do not fit, a warning says so.
//! - A setuid/setgid process (AT_SECURE) gets the defaults without the environment being read.
//! - errno is left as the caller had it.

use core::cell::UnsafeCell;
use core::ffi::{c_char, CStr};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU8, Ordering};

use twinheap_page::diag::warn;
use twinheap_page::error::{errno, ErrnoGuard};

use crate::tunables::{parse, wanted, Config, Warning};

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

/// Size of the buffer for `/proc/self/environ` when `environ` is not available yet.
const ENVIRON_BUF_LEN: usize = 64 * 1024;

/// A static written once under the protocol of `STATE` (see the module doc).
struct Once<T>(UnsafeCell<T>);

// SAFETY: the contents are written only by the single thread that moved STATE from UNINIT to BUSY, and
// read by other threads only after they observe READY with Acquire ordering, which the writer stores
// with Release after its last write. There is never a concurrent write.
unsafe impl<T> Sync for Once<T> {}

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static CONFIG: Once<Config> = Once(UnsafeCell::new(Config::defaults()));
static ENVIRON_BUF: Once<[u8; ENVIRON_BUF_LEN]> = Once(UnsafeCell::new([0; ENVIRON_BUF_LEN]));

extern "C" {
    /// libc's environment array: NUL-terminated `NAME=VALUE` strings, ended by a null pointer.
    static environ: *const *const c_char;
}

/// The configuration from this process's environment, read at the first call and cached.
///
/// Warnings about the environment are printed on stderr once, during that first call. Must not be
/// called re-entrantly from the reading itself (it is not: reading never allocates).
pub fn process_config() -> &'static Config {
    match STATE.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            let config = read_config();
            // SAFETY: winning the exchange makes this thread the only writer, and no reader looks at
            // CONFIG before READY is stored below.
            unsafe { *CONFIG.0.get() = config };
            STATE.store(READY, Ordering::Release);
        }
        Err(READY) => {}
        Err(_) => wait_ready(),
    }
    // SAFETY: STATE is READY (stored by this thread or observed with Acquire), so CONFIG is fully
    // written and will not be written again.
    unsafe { &*CONFIG.0.get() }
}

#[cold]
fn wait_ready() {
    while STATE.load(Ordering::Acquire) != READY {
        for _ in 0..64 {
            core::hint::spin_loop();
        }
        // SAFETY: sched_yield takes no arguments and has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

/// Reads the environment and parses it, printing warnings. Called once, by the BUSY thread.
fn read_config() -> Config {
    let _errno = ErrnoGuard::save();
    let mut emit = |w: Warning<'_>| w.emit();
    // SAFETY: getauxval has no preconditions; it returns 0 for an absent entry.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    if secure {
        return parse(core::iter::empty(), true, &mut emit);
    }
    // SAFETY: reading the value of libc's `environ` pointer; it is initialised (possibly to null) before
    // any user code runs.
    let env = unsafe { environ };
    if !env.is_null() {
        // SAFETY: a non-null `environ` points to a null-terminated array of C strings, which stays valid
        // while we parse: the configuration is read once, and a program changing its environment from
        // another thread during its first allocation is already racing with libc's own getenv.
        let entries = unsafe { Environ::new(env) };
        return parse(entries, false, &mut emit);
    }
    // SAFETY: only the thread holding STATE at BUSY gets here, so this is the only reference to the
    // buffer, and it ends with this call.
    let buf = unsafe { &mut *ENVIRON_BUF.0.get() };
    let kept = read_proc_environ(buf);
    parse(
        kept.split(|&b| b == 0).filter(|e| !e.is_empty()),
        false,
        &mut emit,
    )
}

/// Iterator over the `environ` array as byte slices, without the terminating NULs.
struct Environ<'a> {
    next: *const *const c_char,
    _entries: PhantomData<&'a [u8]>,
}

impl Environ<'_> {
    /// # Safety
    /// `env` must point to a null-terminated array of pointers to NUL-terminated strings that stay
    /// valid and unchanged while the iterator and the slices it returns are in use.
    unsafe fn new(env: *const *const c_char) -> Self {
        Environ {
            next: env,
            _entries: PhantomData,
        }
    }
}

impl<'a> Iterator for Environ<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // SAFETY: `next` points into the array (guaranteed by `new`), at most at its null terminator,
        // since we never step past a null entry.
        let entry = unsafe { *self.next };
        if entry.is_null() {
            return None;
        }
        // SAFETY: the entry is not the terminator, so the next slot is still inside the array.
        self.next = unsafe { self.next.add(1) };
        // SAFETY: a non-null entry is a valid NUL-terminated string that outlives 'a (see `new`).
        Some(unsafe { CStr::from_ptr(entry) }.to_bytes())
    }
}

/// Reads `/proc/self/environ`, keeping in `buf` only the entries [`wanted`] accepts, each followed by a
/// NUL, and returns that part of `buf`. Reports once if an entry we want had to be dropped.
fn read_proc_environ(buf: &mut [u8]) -> &[u8] {
    // SAFETY: the path is a valid NUL-terminated string; the flags need no further arguments.
    let fd = unsafe {
        libc::open(
            c"/proc/self/environ".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        // No procfs: nothing to read, the defaults apply.
        return &[];
    }
    let (kept, lost) = keep_wanted(buf, |chunk| loop {
        // SAFETY: `chunk` is a valid, writable byte slice for the duration of the call.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        // Errors end the stream like EOF: we keep what was read.
        break usize::try_from(n).unwrap_or(0);
    });
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    if lost {
        warn(format_args!(
            "/proc/self/environ: twinheap settings larger than {} bytes; some were ignored",
            buf.len()
        ));
    }
    buf.get(..kept).unwrap_or_default()
}

/// Streams NUL-separated entries from `read` (which fills a slice and returns the count, 0 at the end)
/// through `buf`, so the input may be far larger than the buffer. Returns the length of the kept
/// entries at the start of `buf`, and whether an entry we want was dropped because it did not fit.
fn keep_wanted(buf: &mut [u8], mut read: impl FnMut(&mut [u8]) -> usize) -> (usize, bool) {
    // Layout of `buf`: [0, kept) entries we keep, NUL-terminated; [kept, end) the start of the entry
    // being read. `skipping` means that entry did not fit and is being discarded up to its NUL.
    let mut kept = 0;
    let mut end = 0;
    let mut skipping = false;
    let mut lost = false;
    loop {
        if end == buf.len() {
            if kept == buf.len() {
                // Full of entries we keep: whatever follows cannot be read.
                lost = true;
                break;
            }
            if !skipping {
                // Without its `=` we cannot tell whose entry it is: assume it was one of ours.
                let partial = buf.get(kept..end).unwrap_or_default();
                lost |= !partial.contains(&b'=') || wanted(partial);
            }
            skipping = true;
            end = kept;
        }
        let Some(room) = buf.get_mut(end..) else {
            break;
        };
        let n = read(room).min(room.len());
        if n == 0 {
            break;
        }
        let new_end = end + n;
        let mut start = kept;
        for i in end..new_end {
            if buf.get(i) != Some(&0) {
                continue;
            }
            if skipping {
                skipping = false;
            } else if wanted(buf.get(start..i).unwrap_or_default()) {
                buf.copy_within(start..=i, kept);
                kept += i + 1 - start;
            }
            start = i + 1;
        }
        if skipping {
            // Bytes of an entry we are discarding: no need to keep them.
            end = kept;
        } else {
            buf.copy_within(start..new_end, kept);
            end = kept + (new_end - start);
        }
    }
    // The file normally ends with a NUL; keep a last entry without one, if there is room for its NUL.
    if !skipping && end > kept {
        let last = buf.get(kept..end).unwrap_or_default();
        if wanted(last) {
            match buf.get_mut(end) {
                Some(nul) => {
                    *nul = 0;
                    kept = end + 1;
                }
                None => lost = true,
            }
        }
    }
    (kept, lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_environ_keeps_wanted_entries() {
        // The test process's own environment: whatever it holds, only wanted entries may come back.
        let mut buf = std::vec![0u8; ENVIRON_BUF_LEN];
        let kept = read_proc_environ(&mut buf);
        for entry in kept.split(|&b| b == 0).filter(|e| !e.is_empty()) {
            assert!(
                wanted(entry),
                "{}",
                std::string::String::from_utf8_lossy(entry)
            );
        }
        assert!(kept.is_empty() || kept.ends_with(&[0]));
    }

    /// Runs `keep_wanted` over `input` with a buffer of `cap` bytes, reading `chunk` bytes at a time.
    fn stream(input: &[u8], cap: usize, chunk: usize) -> (std::vec::Vec<u8>, bool) {
        let mut buf = std::vec![0xaa; cap];
        let mut rest = input;
        let (kept, lost) = keep_wanted(&mut buf, |out| {
            let n = rest.len().min(out.len()).min(chunk);
            out[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            n
        });
        (buf[..kept].to_vec(), lost)
    }

    #[test]
    fn streaming_keeps_only_wanted_and_reports_what_did_not_fit() {
        let long_path = [&b"PATH="[..], &[b'x'; 100][..], b"\0"].concat();
        let long_ours = [&b"TWINHEAP_TUNABLES="[..], &[b'y'; 100][..], b"\0"].concat();
        #[rustfmt::skip]
        let cases: &[(std::vec::Vec<u8>, usize, &[u8], bool)] = &[
            (b"".to_vec(), 64, b"", false),
            (b"A=1\0TWINHEAP=arena\0B=2\0".to_vec(), 64, b"TWINHEAP=arena\0", false),
            // A final entry without its NUL still counts.
            (b"A=1\0TWINHEAP=arena".to_vec(), 64, b"TWINHEAP=arena\0", false),
            // A huge entry we do not want is skipped silently; what follows is still read.
            ([&long_path[..], b"MALLOC_ARENA_MAX=2\0"].concat(), 32, b"MALLOC_ARENA_MAX=2\0", false),
            // A huge entry we want is lost, and said so; what follows is still read.
            ([&long_ours[..], b"TWINHEAP=system\0"].concat(), 32, b"TWINHEAP=system\0", true),
            // Wanted entries that together exceed the buffer.
            (b"TWINHEAP=arena\0TWINHEAP_TUNABLES=a=1\0GLIBC_TUNABLES=x\0".to_vec(), 40,
             b"TWINHEAP=arena\0TWINHEAP_TUNABLES=a=1\0", true),
        ];
        for (input, cap, want, want_lost) in cases {
            for chunk in [1, 3, 7, 1000] {
                let (kept, lost) = stream(input, *cap, chunk);
                assert_eq!(
                    (&kept[..], lost),
                    (*want, *want_lost),
                    "input {:?} cap {cap} chunk {chunk}",
                    std::string::String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn environ_iterator_matches_std() {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: reading the pointer; no test in this binary changes the environment.
        let env = unsafe { environ };
        assert!(!env.is_null());
        // SAFETY: as above, the environment is not modified while we iterate.
        let ours: std::vec::Vec<&[u8]> = unsafe { Environ::new(env) }.collect();
        for (name, value) in std::env::vars_os() {
            let entry = [name.as_bytes(), b"=", value.as_bytes()].concat();
            assert!(
                ours.contains(&&entry[..]),
                "{}",
                std::string::String::from_utf8_lossy(&entry)
            );
        }
    }

    #[test]
    fn cached() {
        let a = process_config();
        let b = process_config();
        assert!(core::ptr::eq(a, b));
    }
}

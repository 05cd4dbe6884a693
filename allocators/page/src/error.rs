//! The backend's error value and errno handling.
//!
//! Every OS call that can fail returns [`Error`], which records which operation failed and the errno it
//! left; nothing in the backend panics. Paths that give memory back (unmap, release, decommit) restore the
//! caller's errno on success, because `free` must not change errno (glibc 2.33+, POSIX 2024).

use core::fmt;

/// Which backend operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Map,
    Unmap,
    Remap,
    Protect,
    Advise,
    Reserve,
    Commit,
    Decommit,
}

/// A failed OS call: the operation and the errno it left (ENOMEM, EINVAL, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    pub op: Op,
    pub errno: i32,
}

impl Error {
    /// Captures the current errno for `op`. Call right after the failing syscall.
    pub fn last(op: Op) -> Self {
        Error { op, errno: errno() }
    }

    /// An error the backend itself detected (bad length, overflow) reported as `errno`.
    pub const fn new(op: Op, errno: i32) -> Self {
        Error { op, errno }
    }

    /// Sets the thread's errno to this error's value, for C entry points that report failure via errno.
    pub fn set_errno(self) {
        set_errno(self.errno);
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} failed with errno {}", self.op, self.errno)
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub fn set_errno(value: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value }
}

/// Restores errno to its value at construction when dropped.
pub struct ErrnoGuard(i32);

impl ErrnoGuard {
    pub fn save() -> Self {
        ErrnoGuard(errno())
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        set_errno(self.0);
    }
}

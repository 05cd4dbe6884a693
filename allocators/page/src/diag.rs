//! One-line diagnostics on stderr, written with `write(2)` and no allocation.
//!
//! Everything the project prints from inside an allocator goes through here: tunable warnings and fatal
//! heap faults. A line is assembled in a fixed stack buffer (longer text is cut, never allocated) and
//! handed to the kernel in one `write` so that lines from different threads do not interleave.
//! `fatal` never returns and never unwinds: it writes its line and calls `abort()`.

use core::fmt::{self, Write};

use crate::error::ErrnoGuard;

/// Longest line we emit; text beyond it is dropped and the line ends with `...`.
pub const LINE_MAX: usize = 256;

/// A line under construction in a stack buffer. Implements [`fmt::Write`]; never fails, truncates.
pub struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    truncated: bool,
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
            truncated: false,
        }
    }

    /// The bytes written so far (without the trailing newline that [`Line::emit`] adds).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Appends raw bytes, e.g. a tunable name taken from the environment that may not be UTF-8.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        // Keep 4 bytes for "...\n".
        let room = LINE_MAX - 4 - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n < bytes.len() {
            self.truncated = true;
        }
    }

    /// Writes the line plus a newline to stderr in one `write(2)`; errno is left as it was.
    pub fn emit(mut self) {
        if self.truncated {
            self.buf[self.len..self.len + 3].copy_from_slice(b"...");
            self.len += 3;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        write_stderr(&self.buf[..self.len]);
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_bytes(s.as_bytes());
        Ok(())
    }
}

/// Writes all of `bytes` to fd 2, retrying on EINTR and short writes, giving up silently on other errors
/// (there is nowhere left to report them). Keeps the caller's errno.
pub fn write_stderr(bytes: &[u8]) {
    let _errno = ErrnoGuard::save();
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid, initialised byte slice for the duration of the call.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && crate::error::errno() == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

/// Prints `twinheap: <message>` on stderr. For warnings about configuration, never for faults.
pub fn warn(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = line.write_str("twinheap: ");
    let _ = line.write_fmt(args);
    line.emit();
}

/// Reports a detected heap fault and aborts the process at once.
///
/// The line is `twinheap(<allocator>): <fault> at 0x<address>`, e.g.
/// `twinheap(slab): double free at 0x7f12a4c01010`. Nothing is freed, flushed or unwound: the heap is
/// known to be corrupt, so the only safe move is to stop.
#[cold]
#[inline(never)]
pub fn fatal(allocator: &str, fault: &str, address: usize) -> ! {
    let mut line = Line::new();
    let _ = write!(line, "twinheap({allocator}): {fault} at {address:#x}");
    line.emit();
    abort()
}

/// Terminates with SIGABRT without running any user code that could touch the heap.
#[cold]
pub fn abort() -> ! {
    // SAFETY: abort() takes no arguments and does not return; glibc's abort no longer flushes stdio
    // (since 2.27) and musl's never did, so it cannot re-enter the allocator.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_truncates_and_marks() {
        let mut line = Line::new();
        for _ in 0..100 {
            let _ = line.write_str("abcdefgh");
        }
        assert_eq!(line.as_bytes().len(), LINE_MAX - 4);
        assert!(line.truncated);
    }

    #[test]
    fn line_formats_addresses() {
        let mut line = Line::new();
        let (allocator, fault) = ("slab", "double free");
        let _ = write!(
            line,
            "twinheap({allocator}): {fault} at {:#x}",
            0x7f00_1234usize
        );
        assert_eq!(
            line.as_bytes(),
            b"twinheap(slab): double free at 0x7f001234"
        );
    }
}

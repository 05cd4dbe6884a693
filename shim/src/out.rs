//! Text output without allocation: one-line warnings on stderr, and a chunked writer for the longer
//! reports (`malloc_stats`, `malloc_info`, `TWINHEAP_STATS`).
//!
//! Both format into fixed buffers on the stack. A warning is one `write(2)` so lines from different
//! threads do not interleave; a report is handed to a sink chunk by chunk, so the sink (fd 2, or a
//! `FILE *` through `fwrite`) may be anything that takes bytes. errno is left as the caller had it.

use core::fmt::{self, Write};

/// Saves errno and puts it back when dropped.
pub struct KeepErrno(i32);

impl KeepErrno {
    #[inline]
    pub fn save() -> Self {
        // SAFETY: __errno_location always returns this thread's errno.
        KeepErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for KeepErrno {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: as in `save`.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// Sets the calling thread's errno.
#[inline]
pub fn set_errno(value: i32) {
    // SAFETY: __errno_location always returns this thread's errno.
    unsafe { *libc::__errno_location() = value };
}

/// Writes all of `bytes` to fd 2 (retrying short writes and EINTR), keeping errno.
pub fn write_stderr(bytes: &[u8]) {
    let _keep = KeepErrno::save();
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid byte slice for the duration of the call.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        // SAFETY: __errno_location always returns this thread's errno.
        let err = unsafe { *libc::__errno_location() };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && err == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

/// A writer that fills a stack buffer and hands it to `sink` whenever it is full, and at [`Chunked::finish`].
pub struct Chunked<'a> {
    buf: [u8; 512],
    len: usize,
    sink: &'a mut dyn FnMut(&[u8]),
}

impl<'a> Chunked<'a> {
    pub fn new(sink: &'a mut dyn FnMut(&[u8])) -> Self {
        Chunked {
            buf: [0; 512],
            len: 0,
            sink,
        }
    }

    /// Hands over what is buffered.
    pub fn finish(&mut self) {
        if self.len > 0 {
            (self.sink)(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for Chunked<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == self.buf.len() {
                self.finish();
            }
            let n = rest.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// A single line, at most 256 bytes (longer text is cut), emitted with one `write(2)`.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints `twinheap: <message>` on stderr as one line.
pub fn warn(args: fmt::Arguments<'_>) {
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    let _ = line.write_str("twinheap: ");
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    write_stderr(&line.buf[..line.len + 1]);
}

/// [`warn`] for a fixed message.
pub fn warn_str(message: &str) {
    warn(format_args!("{message}"));
}

/// Prints the one-line heap-fault message in the project's format and aborts, without unwinding or
/// flushing anything: `twinheap(<allocator>): <fault> at 0x<address>`.
#[cold]
pub fn fatal(allocator: &str, fault: &str, address: usize) -> ! {
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    let _ = write!(line, "twinheap({allocator}): {fault} at {address:#x}");
    line.buf[line.len] = b'\n';
    write_stderr(&line.buf[..line.len + 1]);
    // SAFETY: abort has no preconditions and does not flush stdio (glibc >= 2.27, musl).
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn chunked_hands_over_everything_in_order() {
        let mut got: Vec<u8> = Vec::new();
        let mut chunks = 0;
        let mut sink = |b: &[u8]| {
            assert!(b.len() <= 512);
            chunks += 1;
            got.extend_from_slice(b);
        };
        let mut w = Chunked::new(&mut sink);
        for i in 0..300 {
            let _ = writeln!(w, "line {i}");
        }
        w.finish();
        let text = std::string::String::from_utf8(got).unwrap();
        assert_eq!(text.lines().count(), 300);
        assert!(text.starts_with("line 0\nline 1\n") && text.ends_with("line 299\n"));
        assert!(chunks > 1);
    }

    #[test]
    fn keep_errno_restores() {
        set_errno(17);
        {
            let _keep = KeepErrno::save();
            set_errno(3);
        }
        // SAFETY: reading this thread's errno.
        assert_eq!(unsafe { *libc::__errno_location() }, 17);
    }
}

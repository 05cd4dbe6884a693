//! Linux ABI constants the `libc` crate does not export on every target, and a raw small-file reader.
//!
//! The values are part of the stable kernel ABI (include/uapi), identical on every Linux architecture.
//! The file reader uses open/read/close directly — never stdio — because it may run inside the first
//! `malloc`, before libc is initialised, and must not allocate.

use core::ffi::CStr;

/// getauxval keys.
pub const AT_PAGESZ: libc::c_ulong = 6;
pub const AT_SECURE: libc::c_ulong = 23;
pub const AT_RANDOM: libc::c_ulong = 25;

/// mmap: fail with EEXIST instead of replacing an existing mapping (Linux 4.17+; older kernels treat it
/// as a plain hint, so callers must still check the address they got).
pub const MAP_FIXED_NOREPLACE: libc::c_int = 0x10_0000;

pub const FUTEX_WAIT_PRIVATE: libc::c_int = 128;
pub const FUTEX_WAKE_PRIVATE: libc::c_int = 1 | 128;

/// Reads up to `buf.len()` bytes of a small file (a /proc or /sys entry) into `buf`.
/// Returns the number of bytes read, or `None` if the file cannot be opened or read.
/// Keeps the caller's errno.
pub fn read_file(path: &CStr, buf: &mut [u8]) -> Option<usize> {
    let _errno = crate::error::ErrnoGuard::save();
    // SAFETY: `path` is NUL-terminated; flags request a read-only, close-on-exec descriptor.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut filled = 0;
    let ok = loop {
        if filled == buf.len() {
            break true;
        }
        // SAFETY: the destination is the unfilled tail of `buf`, valid for writes of that length.
        let n = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        if n > 0 {
            filled += n as usize;
        } else if n == 0 {
            break true;
        } else if crate::error::errno() != libc::EINTR {
            break false;
        }
    };
    // SAFETY: `fd` is a descriptor we opened above and have not closed.
    unsafe { libc::close(fd) };
    ok.then_some(filled)
}

/// Parses the first unsigned decimal number that follows `key` in `text` (e.g. `Hugepagesize:` in
/// /proc/meminfo). Returns `None` if the key is absent or no digits follow.
pub fn find_number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = if key.is_empty() {
        0
    } else {
        text.windows(key.len()).position(|w| w == key)? + key.len()
    };
    let rest = &text[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let mut value: u64 = 0;
    let mut digits = 0;
    for &b in &rest[start..] {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_after_key() {
        let text = b"MemTotal: 100 kB\nHugepagesize:    2048 kB\n";
        assert_eq!(find_number_after(text, b"Hugepagesize:"), Some(2048));
        assert_eq!(find_number_after(text, b"Missing:"), None);
        assert_eq!(find_number_after(b"Key: x", b"Key:"), None);
        assert_eq!(
            find_number_after(b"Key: 99999999999999999999999", b"Key:"),
            None
        );
        assert_eq!(find_number_after(b"2097152\n", b""), Some(2_097_152));
        assert_eq!(find_number_after(b"", b""), None);
    }

    #[test]
    fn reads_proc_files() {
        let mut buf = [0u8; 64];
        let n = read_file(c"/proc/self/stat", &mut buf).expect("/proc/self/stat readable");
        assert!(n > 0);
        assert_eq!(read_file(c"/nonexistent/file", &mut buf), None);
    }
}

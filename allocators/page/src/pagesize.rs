//! The OS page size, read at run time, and page rounding.
//!
//! Never assume 4 KiB: aarch64 kernels run with 16 KiB and 64 KiB pages, and allocators that baked
//! the size in at build time crash there. The value comes from the auxiliary vector (available before
//! libc is initialised) and is cached after the first read.

use core::sync::atomic::{AtomicUsize, Ordering};

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The size of a base page in bytes (a power of two).
#[inline]
pub fn page_size() -> usize {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => read_page_size(),
        size => size,
    }
}

#[cold]
fn read_page_size() -> usize {
    // SAFETY: getauxval has no preconditions; it returns 0 for an absent key.
    let mut size = unsafe { libc::getauxval(crate::sys::AT_PAGESZ) } as usize;
    if !size.is_power_of_two() {
        // SAFETY: sysconf has no preconditions.
        let value = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        size = if value > 0 && (value as usize).is_power_of_two() {
            value as usize
        } else {
            4096
        };
    }
    // Racing initialisers all store the same value.
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Rounds `n` up to a multiple of `granule` (a power of two); `None` on overflow.
#[inline]
pub const fn round_up(n: usize, granule: usize) -> Option<usize> {
    match n.checked_add(granule - 1) {
        Some(v) => Some(v & !(granule - 1)),
        None => None,
    }
}

/// Rounds `n` down to a multiple of `granule` (a power of two).
#[inline]
pub const fn round_down(n: usize, granule: usize) -> usize {
    n & !(granule - 1)
}

/// Rounds `n` up to whole pages; `None` on overflow.
#[inline]
pub fn round_to_pages(n: usize) -> Option<usize> {
    round_up(n, page_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_matches_sysconf() {
        // SAFETY: sysconf has no preconditions.
        let expected = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        assert_eq!(page_size(), expected);
        assert!(page_size().is_power_of_two());
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up(0, 4096), Some(0));
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(4096, 4096), Some(4096));
        assert_eq!(round_up(usize::MAX - 10, 4096), None);
        assert_eq!(round_down(8191, 4096), 4096);
    }
}

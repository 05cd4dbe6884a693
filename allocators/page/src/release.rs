//! Giving physical memory back while keeping the address range: MADV_DONTNEED or MADV_FREE.
//!
//! The answer to "does this range read zero now?" is returned by the call that changed it, never
//! guessed later: DONTNEED on private anonymous memory always yields zero pages; FREE leaves the old
//! contents until the kernel actually reclaims, so the caller must assume nothing.

use crate::error::{ErrnoGuard, Error, Op};
use crate::pagesize::page_size;

/// How to give pages back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Release {
    /// MADV_DONTNEED: resident memory drops at once; the range reads zero afterwards.
    #[default]
    DontNeed,
    /// MADV_FREE: the kernel reclaims lazily under memory pressure; cheaper, but RSS stays until then
    /// and the range may still hold old data. Falls back to DONTNEED on kernels without it.
    Free,
}

/// What a range is known to contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Every byte reads zero.
    Zero,
    /// Nothing is known: old data, zeros, or a mix.
    Unknown,
}

/// Releases the physical pages of `[ptr, ptr + len)`; the range stays mapped and writable.
/// Returns what the range is now known to contain. Keeps the caller's errno.
///
/// Errors: EINVAL if `ptr` or `len` is not a multiple of the page size.
///
/// # Safety
/// The range must be private anonymous read-write memory mapped by this backend, and the caller
/// must not need its contents.
pub unsafe fn release(ptr: *mut u8, len: usize, how: Release) -> Result<Contents, Error> {
    let _errno = ErrnoGuard::save();
    let page = page_size();
    if !(ptr as usize).is_multiple_of(page) || !len.is_multiple_of(page) {
        return Err(Error::new(Op::Advise, libc::EINVAL));
    }
    if len == 0 {
        return Ok(Contents::Zero);
    }
    if how == Release::Free {
        // SAFETY: the caller owns the range and gives up its contents.
        if unsafe { libc::madvise(ptr.cast(), len, libc::MADV_FREE) } == 0 {
            return Ok(Contents::Unknown);
        }
        // EINVAL: a kernel older than 4.5 or a hugetlbfs range; anything else is a real failure.
        if crate::error::errno() != libc::EINVAL {
            return Err(Error::last(Op::Advise));
        }
    }
    // SAFETY: as above.
    if unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) } != 0 {
        return Err(Error::last(Op::Advise));
    }
    Ok(Contents::Zero)
}

//! Thin wrappers over mmap/munmap shared by mappings and reservations (crate-private).

use core::ptr::{self, NonNull};

use crate::error::{ErrnoGuard, Error, Op};
use crate::pagesize::{page_size, round_up};

pub(crate) const RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;
pub(crate) const ANON: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// mmap of anonymous memory, reporting failure as `op`.
pub(crate) fn mmap(
    addr: *mut u8,
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    op: Op,
) -> Result<NonNull<u8>, Error> {
    // SAFETY: an anonymous mapping without MAP_FIXED cannot replace existing memory (NOREPLACE callers
    // check the address they get).
    let p = unsafe { libc::mmap(addr.cast(), len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(Error::last(op));
    }
    NonNull::new(p.cast()).ok_or(Error::new(op, libc::ENOMEM))
}

/// munmap that keeps errno and ignores failure; for cleanup of regions we own, where a failure leaves
/// nothing to repair.
///
/// # Safety
/// The caller owns `[addr, addr + len)` and nothing uses it any more.
pub(crate) unsafe fn munmap_quiet(addr: usize, len: usize) {
    let _errno = ErrnoGuard::save();
    // SAFETY: per the contract.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Maps `extent` bytes of PROT_NONE, MAP_NORESERVE address space (no memory, no commit charge) at a
/// start address such that `start + offset` is aligned to `align`, which must be a power of two and a
/// multiple of `granule`; `flags` are added to the mapping flags (e.g. MAP_HUGETLB). Returns `start`.
pub(crate) fn reserve_aligned(
    extent: usize,
    align: usize,
    offset: usize,
    granule: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    op: Op,
) -> Result<usize, Error> {
    let overflow = Error::new(op, libc::ENOMEM);
    let total = extent.checked_add(align - granule).ok_or(overflow)?;
    let base = mmap(ptr::null_mut(), total, prot, ANON | flags, op)?.as_ptr() as usize;
    let Some(start) = round_up(base + offset, align).map(|a| a - offset) else {
        // SAFETY: the mapping was just made and is unused.
        unsafe { munmap_quiet(base, total) };
        return Err(overflow);
    };
    let end = base + total;
    let keep_end = start + extent;
    // SAFETY: every piece lies inside [base, end), which we own; on failure we unmap only what we
    // still own, never a hole another thread may have mapped into meanwhile.
    unsafe {
        if start > base && libc::munmap(base as *mut libc::c_void, start - base) != 0 {
            let err = Error::last(op);
            munmap_quiet(base, total);
            return Err(err);
        }
        if end > keep_end && libc::munmap(keep_end as *mut libc::c_void, end - keep_end) != 0 {
            let err = Error::last(op);
            munmap_quiet(start, end - start);
            return Err(err);
        }
    }
    Ok(start)
}

/// Convenience for base pages: PROT_NONE reservation of `extent` bytes with `start + offset` aligned.
pub(crate) fn reserve_none(
    extent: usize,
    align: usize,
    offset: usize,
    op: Op,
) -> Result<usize, Error> {
    reserve_aligned(
        extent,
        align,
        offset,
        page_size(),
        libc::PROT_NONE,
        libc::MAP_NORESERVE,
        op,
    )
}

/// Moves the `len` bytes of pages at `src` onto `dst` with mremap(MREMAP_FIXED), which atomically
/// replaces what was at `dst`; false when the kernel refuses (e.g. the range spans mappings of
/// different protections), in which case nothing moved. After a move `[src, src + len)` is free
/// address space that another thread's mmap may take at once: callers must never unmap it.
///
/// # Safety
/// The caller owns both ranges; nothing uses `src` afterwards, nor the old contents of `dst`.
pub(crate) unsafe fn move_pages(src: *mut u8, len: usize, dst: *mut u8) -> bool {
    // SAFETY: per the contract.
    let moved = unsafe {
        libc::mremap(
            src.cast(),
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dst.cast::<libc::c_void>(),
        )
    };
    moved != libc::MAP_FAILED
}

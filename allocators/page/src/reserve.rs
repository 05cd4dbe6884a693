//! Reserved address space with a committed prefix: the shape of an arena heap or a metadata region.
//!
//! [`reserve`] takes address space as PROT_NONE with MAP_NORESERVE, which costs neither memory nor
//! commit charge. [`Reservation::commit`] opens the prefix up to a given length read-write;
//! [`Reservation::decommit`] closes it back down, discarding those pages so that they read zero when
//! committed again. Tracking only a prefix keeps the accounting exact and the interface hard to misuse:
//! there is no way to commit a page twice or decommit one that was never committed.
//!
//! Invariants: `base` is aligned as asked; `committed` is a multiple of the page size and at most
//! `len`; exactly `[base, base + committed)` is read-write and the rest is PROT_NONE.

use core::ptr::NonNull;

use crate::error::{ErrnoGuard, Error, Op};
use crate::pagesize::{page_size, round_up};
use crate::raw;
use crate::stats;

/// A reserved range of address space. Not `Clone`: one owner decides what is committed.
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    base: NonNull<u8>,
    len: usize,
    committed: usize,
}

// SAFETY: a Reservation is an address range plus a length; it is safe to hand to another thread.
unsafe impl Send for Reservation {}

/// Reserves `len` bytes (rounded up to pages) of address space aligned to `align` (a power of two;
/// values below a page mean a page). Nothing is committed.
///
/// Errors: EINVAL for `len == 0` or a bad alignment; ENOMEM when address space or RLIMIT_AS runs out.
pub fn reserve(len: usize, align: usize) -> Result<Reservation, Error> {
    let page = page_size();
    if len == 0 || !align.is_power_of_two() {
        return Err(Error::new(Op::Reserve, libc::EINVAL));
    }
    let overflow = Error::new(Op::Reserve, libc::ENOMEM);
    let len = round_up(len, page).ok_or(overflow)?;
    let align = align.max(page);
    let start = raw::reserve_none(len, align, 0, Op::Reserve)?;
    stats::add_mapping(len, 0);
    Ok(Reservation {
        base: NonNull::new(start as *mut u8).ok_or(overflow)?,
        len,
        committed: 0,
    })
}

impl Reservation {
    /// Start of the reservation.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Reserved length in bytes (whole pages).
    #[allow(clippy::len_without_is_empty)] // a reservation is never empty
    pub fn len(&self) -> usize {
        self.len
    }

    /// Length of the committed, read-write prefix.
    pub fn committed(&self) -> usize {
        self.committed
    }

    /// Makes `[base, base + upto)` read-write (rounded up to pages). Pages committed for the first time,
    /// or since a [`Reservation::decommit`], read zero. A no-op when `upto` is already committed.
    ///
    /// Errors: ENOMEM when `upto` exceeds the reservation or the kernel refuses the commit charge.
    pub fn commit(&mut self, upto: usize) -> Result<(), Error> {
        let upto = round_up(upto, page_size()).ok_or(Error::new(Op::Commit, libc::ENOMEM))?;
        if upto > self.len {
            return Err(Error::new(Op::Commit, libc::ENOMEM));
        }
        if upto <= self.committed {
            return Ok(());
        }
        let grow = upto - self.committed;
        // SAFETY: the range is PROT_NONE space inside our reservation; opening it exposes only fresh
        // or discarded pages.
        let rc = unsafe {
            libc::mprotect(
                self.base.as_ptr().add(self.committed).cast(),
                grow,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            return Err(Error::last(Op::Commit));
        }
        stats::grow(0, grow);
        self.committed = upto;
        Ok(())
    }

    /// Shrinks the committed prefix to `upto` (rounded up to pages): pages past it are discarded,
    /// their memory and commit charge returned, and they become PROT_NONE. Keeps the caller's errno.
    ///
    /// # Safety
    /// Nothing may use memory in `[base + upto, base + committed)` afterwards.
    pub unsafe fn decommit(&mut self, upto: usize) -> Result<(), Error> {
        let _errno = ErrnoGuard::save();
        let upto = round_up(upto, page_size()).ok_or(Error::new(Op::Decommit, libc::EINVAL))?;
        if upto >= self.committed {
            return Ok(());
        }
        let shrink = self.committed - upto;
        // SAFETY: the range is committed memory inside our reservation that the caller gave up.
        unsafe {
            let at = self.base.as_ptr().add(upto).cast::<libc::c_void>();
            // A fixed PROT_NONE mapping over our own range swaps the pages out atomically, dropping
            // both the memory and its commit charge; if the kernel refuses (map count limit), discard
            // the pages and close the range in two steps instead.
            let flags =
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED;
            if libc::mmap(at, shrink, libc::PROT_NONE, flags, -1, 0) == libc::MAP_FAILED
                && (libc::madvise(at, shrink, libc::MADV_DONTNEED) != 0
                    || libc::mprotect(at, shrink, libc::PROT_NONE) != 0)
            {
                return Err(Error::last(Op::Decommit));
            }
        }
        stats::shrink(0, shrink);
        self.committed = upto;
        Ok(())
    }

    /// Returns the whole reservation to the OS. Keeps the caller's errno.
    ///
    /// # Safety
    /// Nothing may use any of its memory afterwards.
    pub unsafe fn unreserve(self) -> Result<(), Error> {
        let _errno = ErrnoGuard::save();
        // SAFETY: the range is exactly what `reserve` kept.
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) } != 0 {
            return Err(Error::last(Op::Unmap));
        }
        stats::remove_mapping(self.len, self.committed);
        Ok(())
    }

    /// Splits the reservation into (base, len, committed), e.g. to keep it inside the memory it
    /// describes. Rebuild it with [`Reservation::from_raw_parts`].
    pub fn into_raw_parts(self) -> (NonNull<u8>, usize, usize) {
        (self.base, self.len, self.committed)
    }

    /// Rebuilds a reservation from [`Reservation::into_raw_parts`].
    ///
    /// # Safety
    /// The parts must come from `into_raw_parts` of a live reservation, used once.
    pub unsafe fn from_raw_parts(base: NonNull<u8>, len: usize, committed: usize) -> Self {
        Reservation {
            base,
            len,
            committed,
        }
    }
}

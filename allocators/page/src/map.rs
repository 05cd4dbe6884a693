//! Anonymous mappings: aligned, optionally guarded, optionally huge, resizable.
//!
//! A [`Mapping`] is a plain `Copy` record of one region the backend mapped: where the usable bytes
//! start, how many there are, and how the region was built (alignment, guard pages, page kind), so
//! that [`Mapping::unmap`] and [`Mapping::remap`] undo exactly what [`map`] did.
//!
//! Invariants kept for every live `Mapping`:
//! - `ptr` is aligned to the requested alignment (at least one page) and `len` is a whole number of
//!   the region's pages (base pages, or hugetlbfs pages);
//! - `[ptr, ptr + len)` is readable and writable and reads zero when fresh;
//! - a guard page, when asked for, is exactly one base page of PROT_NONE right before `ptr` or right
//!   after `ptr + len`; touching it raises SIGSEGV;
//! - the counters in [`crate::stats`] include the whole extent (guards too) as mapped and `len` as
//!   committed.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::error::{ErrnoGuard, Error, Op};
use crate::huge::{self, Huge};
use crate::pagesize::{page_size, round_up};
use crate::raw::{self, ANON, RW};
use crate::stats;

/// How to build a mapping. `MapOptions::new()` is page-aligned, unguarded, base pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapOptions {
    align: usize,
    guard_before: bool,
    guard_after: bool,
    huge: Huge,
}

impl MapOptions {
    pub const fn new() -> Self {
        MapOptions {
            align: 1,
            guard_before: false,
            guard_after: false,
            huge: Huge::None,
        }
    }

    /// Aligns the usable start to `align`, any power of two (values below a page mean a page).
    pub const fn align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }

    /// Puts a PROT_NONE guard page right before and/or right after the usable bytes.
    /// Guarded mappings always use base pages.
    pub const fn guards(mut self, before: bool, after: bool) -> Self {
        self.guard_before = before;
        self.guard_after = after;
        self
    }

    /// Asks for huge pages; see [`Huge`]. Refusal by the kernel falls back to base pages.
    pub const fn huge(mut self, huge: Huge) -> Self {
        self.huge = huge;
        self
    }
}

impl Default for MapOptions {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) const GUARD_BEFORE: u8 = 1;
pub(crate) const GUARD_AFTER: u8 = 2;
const TRANSPARENT: u8 = 4;
/// Built by [`crate::grow::map_growable`]: both guards, base pages, reserved room in `tail`.
pub(crate) const GROWABLE: u8 = 8;

/// One live region obtained from [`map`] (or [`crate::grow::map_growable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
    pub(crate) align_shift: u8,
    /// log2 of the page size backing the region: the base page, or the hugetlbfs page.
    pub(crate) granule_shift: u8,
    pub(crate) flags: u8,
    /// Growable mappings only: base pages of PROT_NONE address space reserved beyond the guard page
    /// after the usable bytes, into which the mapping grows in place (see `grow.rs`). Kept in 32 bits
    /// so that a `Mapping` stays 24 bytes (it lives in slab's 88-byte meta records).
    pub(crate) tail: u32,
}

// SAFETY: a Mapping is an address range plus build flags; owning it gives no access to thread-local
// state, and the memory it names is ordinary process memory usable from any thread.
unsafe impl Send for Mapping {}
// SAFETY: all methods that touch the memory are unsafe and put the burden on the caller.
unsafe impl Sync for Mapping {}

/// Maps at least `len` bytes of fresh, zeroed, read-write anonymous memory.
///
/// Errors: EINVAL for `len == 0` or an alignment that is not a power of two; ENOMEM when the size
/// overflows or the kernel refuses (address space, RLIMIT_AS, overcommit).
pub fn map(len: usize, opts: &MapOptions) -> Result<Mapping, Error> {
    if len == 0 || !opts.align.is_power_of_two() {
        return Err(Error::new(Op::Map, libc::EINVAL));
    }
    let guarded = opts.guard_before || opts.guard_after;
    if let (Huge::HugeTlb(size), false) = (opts.huge, guarded) {
        let size = if size == 0 {
            huge::hugetlb_default_size()
        } else {
            Some(size)
        };
        if let Some(size) = size.filter(|s| s.is_power_of_two() && *s > page_size()) {
            if let Ok(mapping) = map_hugetlb(len, size, opts.align) {
                return Ok(mapping);
            }
        }
    }
    let mut mapping = map_base(len, opts)?;
    if opts.huge == Huge::Transparent {
        mapping.flags |= TRANSPARENT;
        // SAFETY: the range was just mapped by us; the advice is only a hint.
        let _ = unsafe { huge::advise_hugepage(mapping.ptr.as_ptr(), mapping.len) };
    }
    Ok(mapping)
}

fn map_base(len: usize, opts: &MapOptions) -> Result<Mapping, Error> {
    let page = page_size();
    let len = round_up(len, page).ok_or(Error::new(Op::Map, libc::ENOMEM))?;
    let align = opts.align.max(page);
    let before = if opts.guard_before { page } else { 0 };
    let after = if opts.guard_after { page } else { 0 };
    let mut flags = 0;
    if opts.guard_before {
        flags |= GUARD_BEFORE;
    }
    if opts.guard_after {
        flags |= GUARD_AFTER;
    }
    let record = |ptr| Mapping {
        ptr,
        len,
        align_shift: align.trailing_zeros() as u8,
        granule_shift: page.trailing_zeros() as u8,
        flags,
        tail: 0,
    };

    if before == 0 && after == 0 && align == page {
        let ptr = raw::mmap(ptr::null_mut(), len, RW, ANON, Op::Map)?;
        stats::add_mapping(len, len);
        return Ok(record(ptr));
    }

    if before == 0 && after == 0 {
        if let Some(ptr) = map_below_last(len, align) {
            stats::add_mapping(len, len);
            return Ok(record(ptr));
        }
    }

    // Reserve the extent plus alignment slop as PROT_NONE (costs no commit charge), keep the aligned
    // part, then open the usable bytes. Guards are simply the parts left PROT_NONE.
    let overflow = Error::new(Op::Map, libc::ENOMEM);
    let extent = before
        .checked_add(len)
        .and_then(|v| v.checked_add(after))
        .ok_or(overflow)?;
    let start = raw::reserve_none(extent, align, before, Op::Map)?;
    let data = start + before;
    // SAFETY: [start, start + extent) is ours and unused; on failure all of it goes back.
    unsafe {
        if libc::mprotect(data as *mut libc::c_void, len, RW) != 0 {
            let err = Error::last(Op::Map);
            raw::munmap_quiet(start, extent);
            return Err(err);
        }
    }
    if before == 0 && after == 0 {
        LAST_ALIGNED.store(data, Relaxed);
    }
    stats::add_mapping(extent, len);
    Ok(record(NonNull::new(data as *mut u8).ok_or(overflow)?))
}

/// Start of the last aligned, unguarded mapping made (0 before the first).
static LAST_ALIGNED: AtomicUsize = AtomicUsize::new(0);

/// An aligned mapping in one syscall, where the reservation path takes three or four (a reservation
/// with alignment slop, one or two trims, the opening mprotect). Linux places new mappings top-down,
/// so the address space right below the last aligned mapping is usually free: asking for exactly the
/// aligned start there with MAP_FIXED_NOREPLACE, which never replaces anything, nearly always gets
/// it. None (nothing mapped) when the space is taken, or the kernel put the mapping elsewhere.
fn map_below_last(len: usize, align: usize) -> Option<NonNull<u8>> {
    let last = LAST_ALIGNED.load(Relaxed);
    let want = last.checked_sub(len)? & !(align - 1);
    // Not into the lowest megabyte (mmap_min_addr and below): the kernel would refuse anyway.
    if want < (1 << 20) {
        return None;
    }
    // A refusal (EEXIST) must not show through errno when the fallback then succeeds.
    let _errno = ErrnoGuard::save();
    let flags = ANON | crate::sys::MAP_FIXED_NOREPLACE;
    let got = raw::mmap(want as *mut u8, len, RW, flags, Op::Map).ok()?;
    if got.as_ptr() as usize != want {
        // A kernel older than 4.17 takes NOREPLACE as a hint and may map elsewhere.
        // SAFETY: the mapping was just made and is unused.
        unsafe { raw::munmap_quiet(got.as_ptr() as usize, len) };
        return None;
    }
    LAST_ALIGNED.store(want, Relaxed);
    Some(got)
}

fn map_hugetlb(len: usize, size: usize, align: usize) -> Result<Mapping, Error> {
    let len = round_up(len, size).ok_or(Error::new(Op::Map, libc::ENOMEM))?;
    let align = align.max(size);
    let flags = libc::MAP_HUGETLB | ((size.trailing_zeros() as i32) << libc::MAP_HUGE_SHIFT);
    let data = raw::reserve_aligned(len, align, 0, size, RW, flags, Op::Map)?;
    stats::add_mapping(len, len);
    Ok(Mapping {
        ptr: NonNull::new(data as *mut u8).ok_or(Error::new(Op::Map, libc::ENOMEM))?,
        len,
        align_shift: align.trailing_zeros() as u8,
        granule_shift: size.trailing_zeros() as u8,
        flags: 0,
        tail: 0,
    })
}

impl Mapping {
    /// Start of the usable bytes.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Usable length in bytes: the requested length rounded up to whole pages of this mapping.
    #[allow(clippy::len_without_is_empty)] // a mapping is never empty
    pub fn len(&self) -> usize {
        self.len
    }

    /// The page size backing this mapping (larger than [`page_size`] for hugetlbfs pages).
    pub fn granule(&self) -> usize {
        1 << self.granule_shift
    }

    /// True when the mapping is backed by hugetlbfs pages.
    pub fn is_hugetlb(&self) -> bool {
        self.granule() > page_size()
    }

    /// The options that rebuild a mapping of the same kind.
    pub fn options(&self) -> MapOptions {
        let huge = if self.is_hugetlb() {
            Huge::HugeTlb(self.granule())
        } else if self.flags & TRANSPARENT != 0 {
            Huge::Transparent
        } else {
            Huge::None
        };
        MapOptions::new()
            .align(1 << self.align_shift)
            .guards(
                self.flags & GUARD_BEFORE != 0,
                self.flags & GUARD_AFTER != 0,
            )
            .huge(huge)
    }

    pub(crate) fn guard_sizes(&self) -> (usize, usize) {
        let page = page_size();
        let before = if self.flags & GUARD_BEFORE != 0 {
            page
        } else {
            0
        };
        let after = if self.flags & GUARD_AFTER != 0 {
            page
        } else {
            0
        };
        (before, after)
    }

    /// The whole region including guard pages (and a growable mapping's reserved room), as (start
    /// address, length).
    pub fn extent(&self) -> (usize, usize) {
        let (before, after) = self.guard_sizes();
        (
            self.ptr.as_ptr() as usize - before,
            before + self.len + after + self.tail as usize * page_size(),
        )
    }

    /// Returns the whole region, guard pages included, to the OS. Keeps the caller's errno.
    ///
    /// # Safety
    /// `self` must be a live mapping from [`map`] or [`Mapping::remap`], not unmapped or remapped
    /// since, and nothing may use its memory afterwards.
    pub unsafe fn unmap(self) -> Result<(), Error> {
        let _errno = ErrnoGuard::save();
        let (start, extent) = self.extent();
        // SAFETY: per the contract, the extent is exactly one region we mapped.
        if unsafe { libc::munmap(start as *mut libc::c_void, extent) } != 0 {
            return Err(Error::last(Op::Unmap));
        }
        stats::remove_mapping(extent, self.len);
        Ok(())
    }

    /// Resizes the mapping to at least `new_len` bytes, keeping its contents (up to the smaller size),
    /// its alignment, its guard pages and its page kind. It may move; on error the old mapping is
    /// untouched and still valid. Growth uses mremap or in-place extension, so pages are moved, not
    /// copied (hugetlbfs mappings are copied). A growable mapping resizes as
    /// [`Mapping::resize`] describes.
    ///
    /// # Safety
    /// As for [`Mapping::unmap`]: `self` must be live; after success only the returned mapping is.
    pub unsafe fn remap(self, new_len: usize) -> Result<Mapping, Error> {
        if new_len == 0 {
            return Err(Error::new(Op::Remap, libc::EINVAL));
        }
        let new_len =
            round_up(new_len, self.granule()).ok_or(Error::new(Op::Remap, libc::ENOMEM))?;
        // SAFETY: (every arm) `self` is live per the contract, and each helper keeps it valid on error.
        unsafe {
            if new_len == self.len {
                Ok(self)
            } else if self.flags & GROWABLE != 0 {
                self.resize(new_len)
            } else if self.is_hugetlb() {
                self.remap_by_copy(new_len)
            } else if new_len < self.len {
                self.shrink_in_place(new_len)
            } else if self.flags & (GUARD_BEFORE | GUARD_AFTER) == 0
                && self.align_shift as usize == page_size().trailing_zeros() as usize
            {
                self.grow_plain(new_len)
            } else {
                match self.grow_in_place(new_len) {
                    Some(grown) => Ok(grown),
                    None => self.grow_by_moving(new_len),
                }
            }
        }
    }

    /// mremap for an unguarded, page-aligned mapping: the kernel extends in place or moves pages.
    unsafe fn grow_plain(self, new_len: usize) -> Result<Mapping, Error> {
        // SAFETY: the range is one mapping of ours (contract of `remap`).
        let moved = unsafe {
            libc::mremap(
                self.ptr.as_ptr().cast(),
                self.len,
                new_len,
                libc::MREMAP_MAYMOVE,
            )
        };
        if moved == libc::MAP_FAILED {
            return Err(Error::last(Op::Remap));
        }
        stats::grow(new_len - self.len, new_len - self.len);
        let ptr = NonNull::new(moved.cast()).ok_or(Error::new(Op::Remap, libc::ENOMEM))?;
        Ok(Mapping {
            ptr,
            len: new_len,
            ..self
        })
    }

    /// Gives back the tail past `new_len`. A mapping with a guard after it gets its new guard from the
    /// first page of the released tail.
    unsafe fn shrink_in_place(self, new_len: usize) -> Result<Mapping, Error> {
        let (_, after) = self.guard_sizes();
        let cut = self.ptr.as_ptr() as usize + new_len;
        let released = self.len - new_len;
        // SAFETY: [cut, old end + guard) belongs to this mapping. The new guard is protected before
        // anything is unmapped so that a failure leaves a consistent (old) mapping.
        unsafe {
            if after != 0 {
                if libc::mprotect(cut as *mut libc::c_void, after, libc::PROT_NONE) != 0 {
                    return Err(Error::last(Op::Remap));
                }
                // The page may hold old data; drop it so the guard costs no memory.
                libc::madvise(cut as *mut libc::c_void, after, libc::MADV_DONTNEED);
            }
            if libc::munmap((cut + after) as *mut libc::c_void, released) != 0 {
                let err = Error::last(Op::Remap);
                if after != 0 {
                    libc::mprotect(cut as *mut libc::c_void, after, RW);
                }
                return Err(err);
            }
        }
        stats::shrink(released, released);
        Ok(Mapping {
            len: new_len,
            ..self
        })
    }

    /// Extends an aligned or guarded mapping in place when the address space after it is free.
    unsafe fn grow_in_place(self, new_len: usize) -> Option<Mapping> {
        let (_, after) = self.guard_sizes();
        let end = self.ptr.as_ptr() as usize + self.len;
        let delta = new_len - self.len;
        let want = end + after;
        let flags = ANON | libc::MAP_NORESERVE | crate::sys::MAP_FIXED_NOREPLACE;
        let got = raw::mmap(want as *mut u8, delta, libc::PROT_NONE, flags, Op::Remap).ok()?;
        // SAFETY: `got` is a fresh mapping of ours; [end, end + delta) is our old guard (if any) plus
        // the fresh space, so opening it read-write touches nothing of anyone else's.
        unsafe {
            if got.as_ptr() as usize != want {
                // An old kernel treated NOREPLACE as a hint and put the space elsewhere.
                raw::munmap_quiet(got.as_ptr() as usize, delta);
                return None;
            }
            if libc::mprotect(end as *mut libc::c_void, delta, RW) != 0 {
                raw::munmap_quiet(want, delta);
                return None;
            }
            if self.flags & TRANSPARENT != 0 {
                let _ = huge::advise_hugepage(self.ptr.as_ptr(), new_len);
            }
        }
        stats::grow(delta, delta);
        Some(Mapping {
            len: new_len,
            ..self
        })
    }

    /// Builds a new region of the same kind and moves the pages there with mremap (no copy).
    unsafe fn grow_by_moving(self, new_len: usize) -> Result<Mapping, Error> {
        let target = map(new_len, &self.options()).map_err(|e| Error::new(Op::Remap, e.errno))?;
        // SAFETY: the first `len` bytes of `target` are ours to replace; the source is this
        // mapping's data, which the caller gives up.
        let moved = unsafe { raw::move_pages(self.ptr.as_ptr(), self.len, target.ptr.as_ptr()) };
        let (before, after) = self.guard_sizes();
        let start = self.ptr.as_ptr() as usize;
        // SAFETY: on success the old data range is gone and only our old guards remain; on failure
        // (e.g. the data spans several VMAs) we copy and unmap the whole old region.
        unsafe {
            if !moved {
                ptr::copy_nonoverlapping(self.ptr.as_ptr(), target.ptr.as_ptr(), self.len);
                self.unmap()?;
            } else {
                if before != 0 {
                    raw::munmap_quiet(start - before, before);
                }
                if after != 0 {
                    raw::munmap_quiet(start + self.len, after);
                }
                stats::remove_mapping(before + self.len + after, self.len);
            }
        }
        Ok(target)
    }

    unsafe fn remap_by_copy(self, new_len: usize) -> Result<Mapping, Error> {
        let target = map(new_len, &self.options()).map_err(|e| Error::new(Op::Remap, e.errno))?;
        // SAFETY: both regions are live and distinct; we copy the common prefix, then drop the old one.
        unsafe {
            ptr::copy_nonoverlapping(
                self.ptr.as_ptr(),
                target.ptr.as_ptr(),
                self.len.min(new_len),
            );
            self.unmap()?;
        }
        Ok(target)
    }
}

//! Growable guarded mappings: read-write bytes between guard pages, with address space reserved
//! after them so that growing is usually one mprotect.
//!
//! [`map_growable`] reserves `guard + capacity + guard` bytes of PROT_NONE, MAP_NORESERVE address
//! space (no memory, no commit charge) and opens a prefix of the capacity read-write. Everything
//! after the usable bytes stays PROT_NONE, so the guard page after the block is simply the first
//! page of the unused reservation, wherever the block ends. The result is an ordinary [`Mapping`]
//! (flag `GROWABLE`, the reserved pages in `tail`): [`Mapping::unmap`] returns all of it and
//! [`Mapping::remap`] resizes it as [`Mapping::resize`] says.
//!
//! Invariants of a live growable mapping (on top of those in `map.rs`):
//! - `[ptr - page, ptr)` and `[ptr + len, ptr + capacity + page)` are PROT_NONE and part of the
//!   mapping's extent; at least one page of PROT_NONE follows the usable bytes at any length;
//! - pages in `[ptr + len, ptr + capacity)` read zero when opened: they were never opened, or their
//!   memory was discarded when the mapping shrank;
//! - `[ptr, ptr + len)` is read-write except between [`Mapping::protect`] and
//!   [`Mapping::reopen`], when the owner has made it read-only or inaccessible on purpose.
//!
//! Moving: when a growth exceeds the capacity the usable pages move with `mremap(MREMAP_FIXED)`
//! into a new reservation with twice the new length as capacity, so a buffer grown by doubling or
//! by small steps moves O(log n) times. mremap cannot move a range that spans mappings of
//! different protections, so only the read-write pages move (the new reservation supplies new
//! guards); if the kernel still refuses (the range was split for another reason), the bytes are
//! copied instead.

use core::ptr::{self, NonNull};

use crate::error::{ErrnoGuard, Error, Op};
use crate::map::{Mapping, GROWABLE, GUARD_AFTER, GUARD_BEFORE};
use crate::pagesize::{page_size, round_up};
use crate::raw::{self, RW};
use crate::stats;

/// How the usable bytes of a growable mapping may be accessed, for [`Mapping::protect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Readable, not writable (a write faults).
    Read,
    /// Neither readable nor writable.
    None,
}

/// Maps `len` read-write bytes (rounded up to pages) aligned to `align` (a power of two; values
/// below a page mean a page), between guard pages, with address space reserved up to `capacity`
/// bytes (at least `len`) so that [`Mapping::resize`] can grow it in place. The bytes read zero.
///
/// Errors: EINVAL for `len == 0` or a bad alignment; ENOMEM when a size overflows, the capacity
/// exceeds 2^32 pages, or the kernel refuses.
pub fn map_growable(len: usize, capacity: usize, align: usize) -> Result<Mapping, Error> {
    if len == 0 || !align.is_power_of_two() {
        return Err(Error::new(Op::Map, libc::EINVAL));
    }
    reserve_and_open(len, capacity, align, Op::Map)
}

/// Reserves a growable region and opens its first `len` bytes; the building block of
/// [`map_growable`] and of moves.
fn reserve_and_open(len: usize, capacity: usize, align: usize, op: Op) -> Result<Mapping, Error> {
    let page = page_size();
    let overflow = Error::new(op, libc::ENOMEM);
    let len = round_up(len, page).ok_or(overflow)?;
    let capacity = round_up(capacity, page).ok_or(overflow)?.max(len);
    let tail = u32::try_from((capacity - len) / page).map_err(|_| overflow)?;
    let align = align.max(page);
    let extent = capacity.checked_add(2 * page).ok_or(overflow)?;
    let start = raw::reserve_none(extent, align, page, op)?;
    let data = start + page;
    // SAFETY: [start, start + extent) was just reserved by us and nothing else uses it; on failure
    // all of it goes back.
    unsafe {
        if libc::mprotect(data as *mut libc::c_void, len, RW) != 0 {
            let err = Error::last(op);
            raw::munmap_quiet(start, extent);
            return Err(err);
        }
    }
    stats::add_mapping(extent, len);
    Ok(Mapping {
        ptr: NonNull::new(data as *mut u8).ok_or(overflow)?,
        len,
        align_shift: align.trailing_zeros() as u8,
        granule_shift: page.trailing_zeros() as u8,
        flags: GUARD_BEFORE | GUARD_AFTER | GROWABLE,
        tail,
    })
}

/// Replaces `[at, at + len)` of our own address space with fresh PROT_NONE, MAP_NORESERVE space:
/// the pages' memory and commit charge go back at once and the range reads zero if opened again.
///
/// # Safety
/// The range belongs to one of the caller's mappings and nothing uses its contents any more.
unsafe fn discard(at: usize, len: usize, op: Op) -> Result<(), Error> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED;
    // SAFETY: per the contract; MAP_FIXED over our own range is an atomic swap. When the kernel
    // refuses (map count limit), discarding and closing the range in two steps has the same effect.
    unsafe {
        let p = at as *mut libc::c_void;
        if libc::mmap(p, len, libc::PROT_NONE, flags, -1, 0) == libc::MAP_FAILED
            && (libc::madvise(p, len, libc::MADV_DONTNEED) != 0
                || libc::mprotect(p, len, libc::PROT_NONE) != 0)
        {
            return Err(Error::last(op));
        }
    }
    Ok(())
}

impl Mapping {
    /// True for a mapping from [`map_growable`].
    pub fn is_growable(&self) -> bool {
        self.flags & GROWABLE != 0
    }

    /// Bytes the mapping can grow to in place: `len` plus the reserved room (just `len` for a
    /// mapping that is not growable).
    pub fn capacity(&self) -> usize {
        self.len + self.tail as usize * page_size()
    }

    /// Resizes a growable mapping to `new_len` bytes (rounded up to pages), keeping its contents up
    /// to the smaller size, its alignment and its guards:
    /// - shrinking discards the pages past `new_len` (memory returned, address space kept as room);
    /// - growing within the capacity opens the next pages with one mprotect, in place;
    /// - growing beyond it moves the pages (no copy) into a new reservation with twice `new_len` as
    ///   capacity, and unmaps the old one.
    ///
    /// Pages gained read zero. On error the old mapping is untouched and still valid. A mapping that
    /// is not growable is passed to [`Mapping::remap`].
    ///
    /// # Safety
    /// As for [`Mapping::unmap`]: `self` must be live and its usable bytes read-write (not between
    /// [`Mapping::protect`] and [`Mapping::reopen`]); after success only the returned mapping is.
    pub unsafe fn resize(self, new_len: usize) -> Result<Mapping, Error> {
        if !self.is_growable() {
            // SAFETY: per the contract.
            return unsafe { self.remap(new_len) };
        }
        let page = page_size();
        if new_len == 0 {
            return Err(Error::new(Op::Remap, libc::EINVAL));
        }
        let new_len = round_up(new_len, page).ok_or(Error::new(Op::Remap, libc::ENOMEM))?;
        let data = self.ptr.as_ptr() as usize;
        if new_len <= self.len {
            if new_len < self.len {
                // SAFETY: the pages past `new_len` are ours and the caller gives them up.
                unsafe { discard(data + new_len, self.len - new_len, Op::Remap)? };
                stats::shrink(0, self.len - new_len);
            }
            return Ok(self.with_len(new_len));
        }
        if new_len <= self.capacity() {
            let grow = new_len - self.len;
            // SAFETY: [data + len, data + new_len) is reserved room of this mapping, PROT_NONE and
            // zero; at least the guard page stays PROT_NONE after it.
            if unsafe { libc::mprotect((data + self.len) as *mut libc::c_void, grow, RW) } != 0 {
                return Err(Error::last(Op::Remap));
            }
            stats::grow(0, grow);
            return Ok(self.with_len(new_len));
        }
        // SAFETY: per the contract.
        unsafe { self.move_to_new_reservation(new_len) }
    }

    /// The same mapping with `new_len` usable bytes and the rest of the capacity as room.
    fn with_len(self, new_len: usize) -> Mapping {
        let capacity = self.capacity();
        Mapping {
            len: new_len,
            tail: ((capacity - new_len) / page_size()) as u32,
            ..self
        }
    }

    unsafe fn move_to_new_reservation(self, new_len: usize) -> Result<Mapping, Error> {
        let capacity = new_len.checked_mul(2).unwrap_or(new_len);
        let align = 1usize << self.align_shift;
        let target = reserve_and_open(new_len, capacity, align, Op::Remap)
            .or_else(|_| reserve_and_open(new_len, new_len, align, Op::Remap))?;
        let (old_start, old_extent) = self.extent();
        // SAFETY: the first `len` bytes of `target` are ours to replace; the source is this
        // mapping's read-write range, which the caller gives up.
        let moved = unsafe { raw::move_pages(self.ptr.as_ptr(), self.len, target.ptr.as_ptr()) };
        // SAFETY: on success the old usable range is gone and only our old guard before and our
        // room after it remain: those go back, and nothing else. The hole the move left is no longer
        // ours: another thread's mmap may already have been placed there, so one munmap over the
        // whole old extent would unmap that thread's memory. On failure (the range spans several
        // kernel mappings) we copy and the whole old extent, still ours, goes back.
        unsafe {
            if !moved {
                ptr::copy_nonoverlapping(self.ptr.as_ptr(), target.ptr.as_ptr(), self.len);
                raw::munmap_quiet(old_start, old_extent);
            } else {
                let data = self.ptr.as_ptr() as usize;
                let old_end = old_start + old_extent;
                raw::munmap_quiet(old_start, data - old_start);
                raw::munmap_quiet(data + self.len, old_end - (data + self.len));
            }
        }
        stats::remove_mapping(old_extent, self.len);
        Ok(target)
    }

    /// Closes the usable bytes `[from, to)` (both rounded up to pages, at most `len`) to writes,
    /// keeping their contents and memory: read-only or inaccessible as `access` says. One mprotect.
    /// Undone by [`Mapping::reopen`].
    ///
    /// # Safety
    /// `self` is a live growable mapping; nothing may write to the range until it is reopened, and
    /// nothing may read it when `access` is [`Access::None`].
    pub unsafe fn protect(&self, from: usize, to: usize, access: Access) -> Result<(), Error> {
        let page = page_size();
        let to = round_up(to, page).unwrap_or(self.len).min(self.len);
        let from = round_up(from, page).unwrap_or(self.len).min(to);
        if from == to {
            return Ok(());
        }
        let prot = match access {
            Access::Read => libc::PROT_READ,
            Access::None => libc::PROT_NONE,
        };
        let at = (self.ptr.as_ptr() as usize + from) as *mut libc::c_void;
        // SAFETY: the range lies inside the usable bytes of this mapping; the caller gives up
        // writing to it.
        if unsafe { libc::mprotect(at, to - from, prot) } != 0 {
            return Err(Error::last(Op::Protect));
        }
        Ok(())
    }

    /// How many of the usable pages in `[from, to)` (rounded out to pages, within `len`) are resident
    /// in memory right now, from mincore. A hint for choosing between clearing pages with stores and
    /// dropping them: it says nothing reliable about contents (a swapped-out page counts as not
    /// resident). None if the kernel refuses.
    pub fn resident(&self, from: usize, to: usize) -> Option<usize> {
        let page = page_size();
        let to = round_up(to, page).unwrap_or(self.len).min(self.len);
        let mut at = (from / page) * page;
        let data = self.ptr.as_ptr() as usize;
        let mut count = 0;
        let mut vec = [0u8; 512];
        while at < to {
            let pages = ((to - at) / page).min(vec.len());
            // SAFETY: the range is part of this live mapping; mincore writes one byte per page into
            // `vec`, which holds `pages` bytes.
            let rc = unsafe {
                libc::mincore(
                    (data + at) as *mut libc::c_void,
                    pages * page,
                    vec.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return None;
            }
            count += vec[..pages].iter().filter(|&&b| b & 1 != 0).count();
            at += pages * page;
        }
        Some(count)
    }

    /// Drops the memory of the usable pages from `from` (rounded up to pages) to `len`: they become
    /// fresh PROT_NONE pages that read zero once reopened. One mmap. The length is unchanged.
    ///
    /// # Safety
    /// `self` is a live growable mapping and nothing needs those pages' contents.
    pub unsafe fn clear(&self, from: usize) -> Result<(), Error> {
        let from = round_up(from, page_size())
            .unwrap_or(self.len)
            .min(self.len);
        if from == self.len {
            return Ok(());
        }
        // SAFETY: the range lies in this mapping's usable bytes, which the caller gives up.
        unsafe {
            discard(
                self.ptr.as_ptr() as usize + from,
                self.len - from,
                Op::Protect,
            )
        }
    }

    /// Opens a growable mapping read-write again at `new_len` bytes (rounded up to pages, at most
    /// [`Mapping::capacity`]), whatever [`Mapping::protect`] did: one mprotect, plus a discard of the
    /// pages past `new_len` when it shrinks, except those from `cleared` on, which the caller
    /// dropped with [`Mapping::clear`] since (pass `len` or more when none were). Kept pages keep
    /// their contents; pages gained read zero. On error the mapping is still live but its
    /// protection may have changed: the caller should unmap it.
    ///
    /// # Safety
    /// `self` is a live growable mapping; `[cleared, len)` was cleared and not opened since; after
    /// success only the returned mapping is valid.
    pub unsafe fn reopen(self, new_len: usize, cleared: usize) -> Result<Mapping, Error> {
        let page = page_size();
        let overflow = Error::new(Op::Protect, libc::ENOMEM);
        let new_len = round_up(new_len.max(1), page).ok_or(overflow)?;
        if !self.is_growable() || new_len > self.capacity() {
            return Err(overflow);
        }
        let data = self.ptr.as_ptr() as usize;
        let dirty_end = round_up(cleared, page).unwrap_or(self.len).min(self.len);
        // SAFETY: [data, data + new_len) is this mapping's usable bytes or its reserved room (the
        // guard after stays, since new_len <= capacity); the pages past new_len are ours to drop,
        // and those past `dirty_end` are fresh PROT_NONE pages already (the caller's word).
        unsafe {
            if libc::mprotect(data as *mut libc::c_void, new_len, RW) != 0 {
                return Err(Error::last(Op::Protect));
            }
            if new_len < dirty_end {
                discard(data + new_len, dirty_end - new_len, Op::Protect)?;
            }
        }
        if new_len < self.len {
            stats::shrink(0, self.len - new_len);
        } else {
            stats::grow(0, new_len - self.len);
        }
        Ok(self.with_len(new_len))
    }

    /// Keeps only `[extent start, ptr + keep)` (keep rounded up to pages, at most `len`) and unmaps
    /// everything after it, guard and room included: what is left has no guard after it. One munmap.
    /// Keeps the caller's errno. On error the mapping is unchanged.
    ///
    /// # Safety
    /// `self` is live and base-paged; nothing may use its memory past `keep` afterwards. After
    /// success only the returned mapping is valid.
    pub unsafe fn truncate(self, keep: usize) -> Result<Mapping, Error> {
        let _errno = ErrnoGuard::save();
        let page = page_size();
        let keep = round_up(keep.max(1), page)
            .unwrap_or(self.len)
            .min(self.len);
        let (start, extent) = self.extent();
        let cut = self.ptr.as_ptr() as usize + keep;
        let end = start + extent;
        if self.is_hugetlb() || cut >= end {
            return Err(Error::new(Op::Unmap, libc::EINVAL));
        }
        // SAFETY: [cut, end) is the end of this mapping's extent, which the caller gives up.
        if unsafe { libc::munmap(cut as *mut libc::c_void, end - cut) } != 0 {
            return Err(Error::last(Op::Unmap));
        }
        stats::shrink(end - cut, self.len - keep);
        Ok(Mapping {
            len: keep,
            tail: 0,
            flags: self.flags & !(GUARD_AFTER | GROWABLE),
            ..self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(addr: usize) -> Option<[u8; 4]> {
        // /proc/self/maps through the backend's allocation-free reader.
        let mut buf = [0u8; 1 << 16];
        let n = crate::sys::read_file(c"/proc/self/maps", &mut buf)?;
        for line in buf[..n].split(|&b| b == b'\n') {
            let Some(dash) = line.iter().position(|&b| b == b'-') else {
                continue;
            };
            let Some(space) = line.iter().position(|&b| b == b' ') else {
                continue;
            };
            let hex = |s: &[u8]| usize::from_str_radix(core::str::from_utf8(s).ok()?, 16).ok();
            let (Some(lo), Some(hi)) = (hex(&line[..dash]), hex(&line[dash + 1..space])) else {
                continue;
            };
            if (lo..hi).contains(&addr) {
                let mut p = [0u8; 4];
                p.copy_from_slice(&line[space + 1..space + 5]);
                return Some(p);
            }
        }
        None
    }

    fn fill(m: &Mapping, upto: usize, seed: u8) {
        for i in (0..upto).step_by(509) {
            // SAFETY: inside the usable bytes.
            unsafe { *m.ptr().as_ptr().add(i) = seed.wrapping_add(i as u8) };
        }
    }

    fn holds(m: &Mapping, upto: usize, seed: u8) -> bool {
        // SAFETY: inside the usable bytes.
        (0..upto)
            .step_by(509)
            .all(|i| unsafe { *m.ptr().as_ptr().add(i) } == seed.wrapping_add(i as u8))
    }

    #[test]
    fn grows_in_place_then_moves_keeping_contents_and_guards() {
        let page = page_size();
        let m = map_growable(3 * page, 8 * page, 1).unwrap();
        assert!(m.is_growable());
        assert_eq!((m.len(), m.capacity()), (3 * page, 8 * page));
        let (start, extent) = m.extent();
        assert_eq!(extent, 10 * page);
        let data = m.ptr().as_ptr() as usize;
        assert_eq!(start, data - page);
        assert_eq!(perms(data - 1).unwrap(), *b"---p");
        assert_eq!(perms(data + 3 * page).unwrap(), *b"---p");
        fill(&m, 3 * page, 7);
        // In place: same address, contents kept, new pages zero, guard right after.
        // SAFETY: live and read-write.
        let g = unsafe { m.resize(7 * page) }.unwrap();
        assert_eq!(g.ptr(), m.ptr());
        assert!(holds(&g, 3 * page, 7));
        // SAFETY: the new pages are usable.
        assert!((3 * page..7 * page).all(|i| unsafe { *g.ptr().as_ptr().add(i) } == 0));
        assert_eq!(perms(data + 7 * page - 1).unwrap(), *b"rw-p");
        assert_eq!(perms(data + 7 * page).unwrap(), *b"---p");
        assert_eq!(g.extent(), (start, extent));
        fill(&g, 7 * page, 9);
        // Beyond the capacity: moves, keeps contents, doubles the capacity.
        // SAFETY: live and read-write.
        let h = unsafe { g.resize(9 * page) }.unwrap();
        assert_ne!(h.ptr(), g.ptr());
        assert_eq!((h.len(), h.capacity()), (9 * page, 18 * page));
        assert!(holds(&h, 7 * page, 9));
        let hd = h.ptr().as_ptr() as usize;
        assert_eq!(perms(hd - 1).unwrap(), *b"---p");
        assert_eq!(perms(hd + 9 * page).unwrap(), *b"---p");
        // Shrinking discards the tail: it reads zero when grown back.
        // SAFETY: live and read-write.
        let s = unsafe { h.resize(2 * page) }.unwrap();
        assert_eq!((s.ptr(), s.capacity()), (h.ptr(), 18 * page));
        assert_eq!(perms(hd + 2 * page).unwrap(), *b"---p");
        // SAFETY: live and read-write.
        let s = unsafe { s.resize(4 * page) }.unwrap();
        assert!(holds(&s, 2 * page, 9));
        // SAFETY: usable.
        assert!((2 * page..4 * page).all(|i| unsafe { *s.ptr().as_ptr().add(i) } == 0));
        // SAFETY: nothing uses it any more.
        unsafe { s.unmap() }.unwrap();
    }

    #[test]
    fn small_steps_move_logarithmically_often() {
        let page = page_size();
        let mut m = map_growable(page, page, 1).unwrap();
        let mut moves = 0;
        for k in 2..=512 {
            let before = m.ptr();
            // SAFETY: live and read-write.
            m = unsafe { m.resize(k * page) }.unwrap();
            moves += usize::from(m.ptr() != before);
            // SAFETY: the last byte is usable.
            unsafe { *m.ptr().as_ptr().add(k * page - 1) = k as u8 };
        }
        assert!(moves <= 10, "{moves} moves for 512 one-page steps");
        // SAFETY: nothing uses it any more.
        unsafe { m.unmap() }.unwrap();
    }

    #[test]
    fn aligned_growable_keeps_its_alignment_when_it_moves() {
        let page = page_size();
        let align = 1 << 21;
        let m = map_growable(page, 2 * page, align).unwrap();
        assert_eq!(m.ptr().as_ptr() as usize % align, 0);
        // SAFETY: live and read-write.
        let m = unsafe { m.resize(64 * page) }.unwrap();
        assert_eq!(m.ptr().as_ptr() as usize % align, 0);
        // SAFETY: nothing uses it any more.
        unsafe { m.unmap() }.unwrap();
    }

    /// The first page of `m`, read while it is read-only.
    fn holds_readable(m: &Mapping) -> bool {
        holds(m, page_size(), 3)
    }

    #[test]
    fn protect_and_reopen() {
        let page = page_size();
        let m = map_growable(4 * page, 8 * page, 1).unwrap();
        let data = m.ptr().as_ptr() as usize;
        fill(&m, 4 * page, 3);
        // SAFETY: live; nothing writes until reopened.
        unsafe {
            m.protect(0, 1, Access::Read).unwrap();
            m.protect(1, 4 * page, Access::None).unwrap();
        }
        assert_eq!(perms(data).unwrap(), *b"r--p");
        assert_eq!(perms(data + page).unwrap(), *b"---p");
        assert!(holds_readable(&m));
        // SAFETY: live.
        unsafe { m.protect(0, 4 * page, Access::Read) }.unwrap();
        assert_eq!(perms(data + 3 * page).unwrap(), *b"r--p");
        // Reopen larger: kept pages keep their contents, new ones are zero, guard after.
        // SAFETY: live.
        let r = unsafe { m.reopen(6 * page, usize::MAX) }.unwrap();
        assert!(holds(&r, 4 * page, 3));
        // SAFETY: usable.
        assert!((4 * page..6 * page).all(|i| unsafe { *r.ptr().as_ptr().add(i) } == 0));
        assert_eq!(perms(data + 6 * page - 1).unwrap(), *b"rw-p");
        assert_eq!(perms(data + 6 * page).unwrap(), *b"---p");
        // Reopen smaller: the rest becomes guard/room and reads zero later.
        // SAFETY: live.
        let r = unsafe { r.reopen(2 * page, usize::MAX) }.unwrap();
        assert_eq!(perms(data + 2 * page).unwrap(), *b"---p");
        // SAFETY: live.
        let r = unsafe { r.reopen(5 * page, usize::MAX) }.unwrap();
        assert!(holds(&r, 2 * page, 3));
        // SAFETY: usable.
        assert!((2 * page..5 * page).all(|i| unsafe { *r.ptr().as_ptr().add(i) } == 0));
        // Beyond the capacity: refused, mapping unchanged.
        // SAFETY: live.
        assert!(unsafe { r.reopen(9 * page, usize::MAX) }.is_err());
        // Clear: dropped pages read zero once reopened, kept ones keep their contents.
        fill(&r, 5 * page, 4);
        assert_eq!(r.resident(0, 5 * page), Some(5));
        // SAFETY: live; the pages past the first are given up.
        unsafe { r.clear(page) }.unwrap();
        assert_eq!(perms(data + page).unwrap(), *b"---p");
        assert_eq!(perms(data).unwrap(), *b"rw-p");
        assert_eq!(r.resident(0, 5 * page), Some(1));
        // SAFETY: live.
        let r = unsafe { r.reopen(3 * page, page) }.unwrap();
        assert!(holds(&r, page, 4));
        // SAFETY: usable.
        assert!((page..3 * page).all(|i| unsafe { *r.ptr().as_ptr().add(i) } == 0));
        // The cleared pages past the new length are room (guard) without a discard, and zero.
        assert_eq!(perms(data + 3 * page).unwrap(), *b"---p");
        assert_eq!(r.capacity(), 8 * page);
        // SAFETY: live and read-write.
        let r = unsafe { r.resize(5 * page) }.unwrap();
        // SAFETY: usable.
        assert!((3 * page..5 * page).all(|i| unsafe { *r.ptr().as_ptr().add(i) } == 0));
        // Truncate: only the first page (and the guard before) stays.
        // SAFETY: nothing uses the rest.
        let t = unsafe { r.truncate(1) }.unwrap();
        assert_eq!(t.extent(), (data - page, 2 * page));
        assert_eq!(perms(data).unwrap(), *b"rw-p");
        // SAFETY: nothing uses it any more.
        unsafe { t.unmap() }.unwrap();
    }
}

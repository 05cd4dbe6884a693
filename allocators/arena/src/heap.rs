//! Heaps: the address-space reservations arenas carve chunks from.
//!
//! Every heap is a reservation of [`HEAP_MAX`] (64 MiB) bytes aligned to its own size, so the heap
//! of any chunk is found by masking the chunk's address, and the heap's header names its arena. Only
//! a prefix is committed (read-write); it grows as top needs room and shrinks when top is trimmed,
//! through `twinheap_page::Reservation`. No arena uses brk: the program break may belong to the C
//! library or to another allocator, and heaps give the main arena the same masking and trimming as
//! the others.
//!
//! Layout: `[HeapInfo][Arena, first heap of a secondary arena only][chunks ... top]`. When top cannot
//! grow any more, the arena moves to a new heap; the old heap ends with fenceposts (in-use dummies)
//! so that nothing merges across the end. A heap whose chunks have all merged back into top is
//! unmapped as a whole.
//!
//! A process-wide bitmap with one bit per 64 MiB of address space records which heaps exist; free and
//! realloc consult it before trusting any header, which turns pointers from elsewhere (the C library's
//! own heap, stack, static data) into a clean "invalid pointer" report instead of a wild read.
//!
//! **Big heaps** serve a single chunk too large for any heap when direct mapping is not allowed
//! (`mmap_max = 0`, where glibc's main arena would grow with brk): a reservation of a multiple of
//! 64 MiB, aligned to 64 MiB, holding `[HeapInfo][chunk][fencepost]`. The chunk's header lies in the
//! first 64 MiB, so masking still finds the header, and only that first slot is marked in the bitmap
//! (a pointer into a later slot is foreign). A big heap is never the arena's top, is on no heap
//! list, and its chunk never enters a bin: realloc resizes it in place (committing or decommitting the
//! tail) and free unmaps the whole heap. It is recognised by a reservation longer than 64 MiB.

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use twinheap_page::{page_size, release, reserve, Release as How, Reservation};

use crate::arena::Arena;
use crate::chunk::*;

pub(crate) const HEAP_MAX: usize = 64 << 20;
const ADDRESS_BITS: usize = 47;
const MAP_WORDS: usize = (1 << ADDRESS_BITS) / HEAP_MAX / 64;

static HEAP_MAP: [AtomicU64; MAP_WORDS] = [const { AtomicU64::new(0) }; MAP_WORDS];

#[repr(C, align(16))]
pub(crate) struct HeapInfo {
    pub arena: *mut Arena,
    pub prev: *mut HeapInfo,
    base: NonNull<u8>,
    len: usize,
    committed: usize,
    /// Bytes from the base the arena uses (top ends here); the rest of the committed prefix was
    /// released with MADV_DONTNEED and is reused without a system call.
    size: usize,
    /// Memory at and above this address has not been written since it was committed.
    pub fresh: usize,
    /// The in-use dummy that ends this heap once the arena has moved on (null while current).
    pub fence: P,
    /// The hugetlbfs page size backing the heap, or 0 for base pages.
    huge: usize,
    _spare: usize,
}

const _: () = assert!(size_of::<HeapInfo>().is_multiple_of(ALIGNMENT));

/// Big heaps and hugetlbfs heaps that exist (for `stats`).
pub(crate) static BIG_HEAPS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static HUGETLB_HEAPS: AtomicUsize = AtomicUsize::new(0);

/// Huge pages in a hugetlbfs heap (glibc's heaps with hugetlb=2 hold up to four huge pages).
const HUGETLB_HEAP_PAGES: usize = 4;

/// The heap that would hold address `a`.
#[inline(always)]
pub(crate) fn heap_of(a: usize) -> *mut HeapInfo {
    (a & !(HEAP_MAX - 1)) as *mut HeapInfo
}

/// True when `a` lies in a heap that exists.
#[inline(always)]
pub(crate) fn is_heap_address(a: usize) -> bool {
    let i = a / HEAP_MAX;
    if i >= MAP_WORDS * 64 {
        return false;
    }
    HEAP_MAP[i / 64].load(Relaxed) & (1 << (i % 64)) != 0
}

fn mark(base: usize, on: bool) {
    let i = base / HEAP_MAX;
    if i >= MAP_WORDS * 64 {
        return;
    }
    if on {
        HEAP_MAP[i / 64].fetch_or(1 << (i % 64), Relaxed);
    } else {
        HEAP_MAP[i / 64].fetch_and(!(1 << (i % 64)), Relaxed);
    }
}

impl HeapInfo {
    /// First address after the header (and, for an arena's first heap, after the arena).
    pub(crate) fn start(&self) -> usize {
        self as *const _ as usize + size_of::<HeapInfo>()
    }

    /// End of the part the arena uses.
    pub(crate) fn end(&self) -> usize {
        self.base.as_ptr() as usize + self.size
    }

    /// The unit the heap commits and releases in: the page size, or the huge page size of a
    /// hugetlbfs heap.
    #[inline]
    pub(crate) fn gran(&self) -> usize {
        if self.huge != 0 {
            self.huge
        } else {
            page_size()
        }
    }

    /// Bytes the arena uses (what glibc calls the heap's size; counted in `system_mem`).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn reservation(&self) -> Reservation {
        // SAFETY: the parts were taken from the live reservation this heap is, and are put back
        // (with `store`) before anyone else can look.
        unsafe { Reservation::from_raw_parts(self.base, self.len, self.committed) }
    }

    fn store(&mut self, r: Reservation) {
        let (base, len, committed) = r.into_raw_parts();
        self.base = base;
        self.len = len;
        self.committed = committed;
    }

    /// Extends the used part to `upto` bytes from the base (rounded up to a page), committing more
    /// only beyond what is already committed. False when the heap is full or the OS refuses.
    pub(crate) fn grow(&mut self, upto: usize) -> bool {
        let Some(upto) = upto.checked_next_multiple_of(self.gran()) else {
            return false;
        };
        if upto <= self.size {
            return true;
        }
        if upto > self.committed {
            let mut r = self.reservation();
            let ok = r.commit(upto).is_ok();
            self.store(r);
            if !ok {
                return false;
            }
            advise_huge(self.base.as_ptr(), self.committed);
        }
        self.size = upto;
        true
    }

    /// Shrinks the used part to `upto` bytes (rounded up to a page): the pages past it are released
    /// (MADV_DONTNEED: resident memory drops now, they read zero) but stay committed for regrowth,
    /// as glibc does for its heaps.
    ///
    /// # Safety
    /// Nothing in the released range is in use.
    pub(crate) unsafe fn shrink(&mut self, upto: usize) -> bool {
        let Some(upto) = upto.checked_next_multiple_of(self.gran()) else {
            return false;
        };
        if upto >= self.size {
            return false;
        }
        let at = self.base.as_ptr() as usize + upto;
        // SAFETY: per the contract; the range is committed memory of this heap.
        let ok = unsafe { release(at as *mut u8, self.size - upto, How::DontNeed) }.is_ok();
        if ok {
            self.size = upto;
            self.fresh = self.fresh.min(self.end());
        }
        ok
    }

    /// True for a big heap: one chunk larger than a normal heap could hold.
    #[inline(always)]
    pub(crate) fn is_big(&self) -> bool {
        self.len > HEAP_MAX
    }

    /// Resizes a big heap's single chunk `p` to at least `nb` bytes in place, committing or
    /// decommitting the tail and moving the fencepost. Returns the byte change of the heap's size
    /// (for `system_mem`), or None when the reservation is too short or the OS refuses.
    ///
    /// # Safety
    /// `self` is a big heap and `p` its chunk, in use; bytes of `p` past `nb` are not needed.
    pub(crate) unsafe fn resize_big(&mut self, p: P, nb: usize) -> Option<isize> {
        let base = self.base.as_ptr() as usize;
        let end = (p as usize - base)
            .checked_add(nb)?
            .checked_add(MINSIZE)?
            .checked_next_multiple_of(page_size())?;
        if end > self.len {
            return None;
        }
        let old = self.size;
        let mut r = self.reservation();
        let ok = if end > self.committed {
            r.commit(end).is_ok()
        } else {
            // SAFETY: per the contract nothing past `end - MINSIZE` is used.
            unsafe { r.decommit(end) }.is_ok()
        };
        self.store(r);
        if !ok {
            return None;
        }
        if end > old {
            advise_huge(self.base.as_ptr(), self.committed);
        }
        self.size = end;
        self.fresh = base + end;
        // SAFETY: the new end is committed; the chunk keeps its flags.
        unsafe {
            let abit = size_nomask(p) & FLAGS;
            set_head(p, (end - MINSIZE - (p as usize - base)) | abit);
            let fence = (base + end - MINSIZE) as P;
            set_head(fence, HDR | PREV_INUSE);
            set_head((base + end - HDR) as P, PREV_INUSE);
            self.fence = fence;
        }
        Some(end as isize - old as isize)
    }

    /// Decommits what is committed beyond the used part (malloc_trim): the commit charge drops too.
    /// True if anything was decommitted.
    ///
    /// # Safety
    /// Nothing past the used part is in use.
    pub(crate) unsafe fn decommit_unused(&mut self) -> bool {
        // A hugetlbfs heap keeps its huge pages (reserved for it when it was made); released ones
        // cost no memory until touched again.
        if self.committed <= self.size || self.huge != 0 {
            return false;
        }
        let mut r = self.reservation();
        // SAFETY: per the contract.
        let ok = unsafe { r.decommit(self.size) }.is_ok();
        self.store(r);
        ok
    }
}

fn advise_huge(base: *mut u8, len: usize) {
    if crate::config::PARAMS.hugetlb.load(Relaxed) == 1 {
        // SAFETY: the range is committed memory of ours; the advice is only a hint.
        let _ = unsafe { twinheap_page::huge::advise_hugepage(base, len) };
    }
}

/// With hugetlb = 2 (or a page size), a reservation of hugetlbfs pages for a heap needing `need`
/// bytes, and its page size; None (use base pages, as glibc falls back) when the size is unusable,
/// the heap would not fit, or the system has not enough huge pages.
fn hugetlb_reservation(need: usize) -> Option<(Reservation, usize)> {
    let size = match crate::config::PARAMS.hugetlb.load(Relaxed) {
        0 | 1 => return None,
        2 => twinheap_page::huge::hugetlb_default_size()?,
        n => n,
    };
    if !size.is_power_of_two() || size < page_size() || size > HEAP_MAX / HUGETLB_HEAP_PAGES {
        return None;
    }
    let len = size * HUGETLB_HEAP_PAGES;
    if need > len {
        return None;
    }
    let r = twinheap_page::huge::reserve_hugetlb(len, HEAP_MAX, size).ok()?;
    Some((r, size))
}

/// Reserves a new heap for `arena` with at least `need` bytes committed (header included): of
/// hugetlbfs pages when `hugetlb` asks for them and the system has them, else of base pages.
pub(crate) fn new_heap(arena: *mut Arena, need: usize) -> Option<*mut HeapInfo> {
    if need > HEAP_MAX {
        return None;
    }
    let (r, huge) = match hugetlb_reservation(need) {
        Some(x) => x,
        None => (reserve(HEAP_MAX, HEAP_MAX).ok()?, 0),
    };
    let gran = if huge != 0 { huge } else { page_size() };
    let Some(first) = need.max(1).checked_next_multiple_of(gran) else {
        // SAFETY: nothing uses the fresh reservation.
        let _ = unsafe { r.unreserve() };
        return None;
    };
    let r = commit_or_give_back(r, first)?;
    let base = r.base().as_ptr();
    if huge == 0 {
        advise_huge(base, r.committed());
    } else {
        HUGETLB_HEAPS.fetch_add(1, Relaxed);
    }
    let committed = r.committed();
    let fresh = base as usize + size_of::<HeapInfo>();
    // SAFETY: the first page of the fresh reservation is committed and ours.
    Some(unsafe { install(r, arena, committed, fresh, ptr::null_mut(), huge) })
}

/// Commits the first `upto` bytes of a fresh reservation, or gives it all back and fails.
fn commit_or_give_back(mut r: Reservation, upto: usize) -> Option<Reservation> {
    if r.commit(upto).is_err() {
        // SAFETY: nothing uses the fresh reservation.
        let _ = unsafe { r.unreserve() };
        return None;
    }
    Some(r)
}

/// Writes the heap record at the start of fresh reservation `r` (usable size `size`, never-written
/// mark `fresh`, fencepost `fence` for a big heap) and marks the heap in the bitmap.
///
/// # Safety
/// The record's bytes at the start of `r` are committed and nothing uses the reservation yet.
unsafe fn install(
    r: Reservation,
    arena: *mut Arena,
    size: usize,
    fresh: usize,
    fence: P,
    huge: usize,
) -> *mut HeapInfo {
    let h = r.base().as_ptr() as *mut HeapInfo;
    let (base, len, committed) = r.into_raw_parts();
    // SAFETY: per the contract.
    unsafe {
        h.write(HeapInfo {
            arena,
            prev: ptr::null_mut(),
            base,
            len,
            committed,
            size,
            fresh,
            fence,
            huge,
            _spare: 0,
        });
    }
    mark(h as usize, true);
    h
}

/// Reserves a big heap for `arena` holding one in-use chunk of at least `nb` bytes whose user
/// memory is aligned to `align` (a power of two of at most 32 MiB), with `abit` in its size word.
/// Returns the heap and the chunk, or None when the OS refuses.
pub(crate) fn new_big_heap(
    arena: *mut Arena,
    nb: usize,
    align: usize,
    abit: usize,
) -> Option<(*mut HeapInfo, P)> {
    if !align.is_power_of_two() || align > HEAP_MAX / 2 {
        return None;
    }
    let align = align.max(ALIGNMENT);
    let offset = (size_of::<HeapInfo>() + HDR).next_multiple_of(align) - HDR;
    let end = offset
        .checked_add(nb)?
        .checked_add(MINSIZE)?
        .checked_next_multiple_of(page_size())?;
    let len = end.checked_next_multiple_of(HEAP_MAX)?.max(2 * HEAP_MAX);
    let r = commit_or_give_back(reserve(len, HEAP_MAX).ok()?, end)?;
    let base = r.base().as_ptr();
    advise_huge(base, r.committed());
    let p = (base as usize + offset) as P;
    let fence = (base as usize + end - MINSIZE) as P;
    // SAFETY: `[base, base + end)` of the fresh reservation is committed and ours.
    unsafe {
        install(r, arena, end, base as usize + end, fence, 0);
        // The first chunk of a heap has PREV_INUSE; the fencepost marks it in use and stops any
        // merge past it, as at the end of a retired heap.
        set_head(p, (end - MINSIZE - offset) | PREV_INUSE | abit);
        set_head(fence, HDR | PREV_INUSE);
        set_head((base as usize + end - HDR) as P, PREV_INUSE);
    }
    BIG_HEAPS.fetch_add(1, Relaxed);
    Some((base as *mut HeapInfo, p))
}

/// Returns a heap to the OS.
///
/// # Safety
/// Nothing in the heap is in use or listed anywhere.
pub(crate) unsafe fn delete_heap(h: *mut HeapInfo) {
    // SAFETY: per the contract.
    unsafe {
        mark(h as usize, false);
        if (*h).is_big() {
            BIG_HEAPS.fetch_sub(1, Relaxed);
        }
        if (*h).huge != 0 {
            HUGETLB_HEAPS.fetch_sub(1, Relaxed);
        }
        let r = (*h).reservation();
        let _ = r.unreserve();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heaps_are_aligned_marked_and_growable() {
        let h = new_heap(ptr::null_mut(), 10_000).expect("heap");
        assert_eq!(h as usize % HEAP_MAX, 0);
        assert!(is_heap_address(h as usize + 5000));
        // SAFETY: the heap is ours alone.
        unsafe {
            assert!((*h).size() >= 10_000);
            assert!((*h).grow(1 << 20));
            assert_eq!((*h).size(), 1 << 20);
            assert!(!(*h).grow(HEAP_MAX + 1));
            assert!((*h).shrink(8192));
            assert_eq!((*h).size(), 8192);
            assert!((*h).grow(1 << 19), "regrowth within the committed prefix");
            assert!((*h).shrink(8192));
            assert!((*h).decommit_unused());
            assert!(!(*h).decommit_unused());
            assert_eq!(heap_of(h as usize + 8000), h);
            delete_heap(h);
        }
        assert!(!is_heap_address(h as usize));
    }
}

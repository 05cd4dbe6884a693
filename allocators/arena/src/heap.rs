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

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
}

const _: () = assert!(size_of::<HeapInfo>() % ALIGNMENT == 0);

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
        let Some(upto) = upto.checked_next_multiple_of(page_size()) else {
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
        let Some(upto) = upto.checked_next_multiple_of(page_size()) else {
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

    /// Decommits what is committed beyond the used part (malloc_trim): the commit charge drops too.
    /// True if anything was decommitted.
    ///
    /// # Safety
    /// Nothing past the used part is in use.
    pub(crate) unsafe fn decommit_unused(&mut self) -> bool {
        if self.committed <= self.size {
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

/// Reserves a new heap for `arena` with at least `need` bytes committed (header included).
pub(crate) fn new_heap(arena: *mut Arena, need: usize) -> Option<*mut HeapInfo> {
    if need > HEAP_MAX {
        return None;
    }
    let mut r = reserve(HEAP_MAX, HEAP_MAX).ok()?;
    if r.commit(need.max(page_size())).is_err() {
        // SAFETY: nothing uses the fresh reservation.
        let _ = unsafe { r.unreserve() };
        return None;
    }
    let base = r.base().as_ptr();
    advise_huge(base, r.committed());
    let h = base as *mut HeapInfo;
    let (b, len, committed) = r.into_raw_parts();
    // SAFETY: the first page of the fresh reservation is committed and ours.
    unsafe {
        h.write(HeapInfo {
            arena,
            prev: ptr::null_mut(),
            base: b,
            len,
            committed,
            size: committed,
            fresh: base as usize + size_of::<HeapInfo>(),
            fence: ptr::null_mut(),
        });
    }
    mark(base as usize, true);
    Some(h)
}

/// Returns a heap to the OS.
///
/// # Safety
/// Nothing in the heap is in use or listed anywhere.
pub(crate) unsafe fn delete_heap(h: *mut HeapInfo) {
    // SAFETY: per the contract.
    unsafe {
        mark(h as usize, false);
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

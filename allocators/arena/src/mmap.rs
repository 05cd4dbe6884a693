//! Chunks with their own mapping: requests at or above the mmap threshold.
//!
//! Layout of such a mapping: `[Record: the backend's Mapping + a check word][chunk]`. The chunk's
//! `prev_size` is its offset from the mapping start (larger after memalign) and its size word carries
//! IS_MMAPPED; usable size is the chunk size minus 16 since no next chunk lends its first word.
//! The record lets free hand the exact `Mapping` back to the page backend, and its check word (the
//! mapping base mixed with the tcache key) rejects forged IS_MMAPPED chunks before any unmap.
//!
//! Freeing a mapped chunk larger than the current threshold raises the mmap threshold to its size
//! (and the trim threshold to twice that), up to 32 MiB, unless a threshold was set explicitly: the
//! dynamic threshold of glibc.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use twinheap_page::{map, page_size, Huge, MapOptions, Mapping};

use crate::chunk::*;
use crate::config::{DEFAULT_MMAP_THRESHOLD_MAX, PARAMS};
use crate::fault::report;

#[repr(C)]
struct Record {
    mapping: Mapping,
    check: usize,
}

/// Bytes before the first chunk of a mapping.
pub(crate) const LEAD: usize = (size_of::<Record>() + ALIGN_MASK) & !ALIGN_MASK;

pub(crate) static N_MMAPS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static MAX_N_MMAPS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static MMAPPED_MEM: AtomicUsize = AtomicUsize::new(0);
pub(crate) static MAX_MMAPPED_MEM: AtomicUsize = AtomicUsize::new(0);

fn check_word(base: usize) -> usize {
    base ^ crate::secret::tcache_key().rotate_left(17)
}

fn options() -> MapOptions {
    match PARAMS.hugetlb.load(Relaxed) {
        0 => MapOptions::new(),
        1 => MapOptions::new().huge(Huge::Transparent),
        2 => MapOptions::new().huge(Huge::HugeTlb(0)),
        n => MapOptions::new().huge(Huge::HugeTlb(n)),
    }
}

/// True when a chunk of `nb` bytes should get its own mapping.
#[inline]
pub(crate) fn wanted(nb: usize) -> bool {
    nb >= PARAMS.mmap_threshold.load(Relaxed)
        && N_MMAPS.load(Relaxed) < PARAMS.mmap_max.load(Relaxed)
}

/// Maps a chunk of at least `nb` bytes; null when the OS refuses or mmap_max is reached.
pub(crate) fn alloc(nb: usize) -> P {
    if N_MMAPS.load(Relaxed) >= PARAMS.mmap_max.load(Relaxed) {
        return ptr::null_mut();
    }
    // A mapped chunk has no next chunk lending it its first word: it needs SIZE_SZ more than a heap
    // chunk of the same `nb` to give the same usable size.
    let Some(need) = nb.checked_add(LEAD + SIZE_SZ) else {
        return ptr::null_mut();
    };
    crate::secret::init_keys();
    let Ok(m) = map(need, &options()) else {
        return ptr::null_mut();
    };
    let base = m.ptr().as_ptr() as usize;
    // SAFETY: the mapping is fresh and at least LEAD + nb bytes long.
    unsafe {
        (base as *mut Record).write(Record {
            mapping: m,
            check: check_word(base),
        });
        let p = (base + LEAD) as P;
        (*p).prev_size = LEAD;
        set_head(p, (m.len() - LEAD) | IS_MMAPPED);
        account(1, m.len());
        p
    }
}

fn account(n: isize, bytes: usize) {
    if n > 0 {
        let now = N_MMAPS.fetch_add(1, Relaxed) + 1;
        MAX_N_MMAPS.fetch_max(now, Relaxed);
        let mem = MMAPPED_MEM.fetch_add(bytes, Relaxed) + bytes;
        MAX_MMAPPED_MEM.fetch_max(mem, Relaxed);
    } else {
        N_MMAPS.fetch_sub(1, Relaxed);
        MMAPPED_MEM.fetch_sub(bytes, Relaxed);
    }
}

/// Finds and checks the record of mapped chunk `p`; `what` names the caller in a report.
///
/// # Safety
/// `p` carries IS_MMAPPED and its header is readable.
unsafe fn record(p: P, what: &str) -> *mut Record {
    // SAFETY: per the contract; the record is read only after the base passed the alignment test.
    unsafe {
        let off = prev_size(p);
        let sz = size(p);
        let base = (p as usize).wrapping_sub(off);
        let page = page_size();
        if (base | off.wrapping_add(sz)) & (page - 1) != 0 || off < LEAD || !aligned(off) {
            report(what, mem(p) as usize);
        }
        let r = base as *mut Record;
        if (*r).check != check_word(base)
            || (*r).mapping.ptr().as_ptr() as usize != base
            || (*r).mapping.len() != off + sz
        {
            report(what, mem(p) as usize);
        }
        r
    }
}

/// Unmaps mapped chunk `p` (glibc's `munmap_chunk`), adjusting the dynamic thresholds.
///
/// # Safety
/// `p` carries IS_MMAPPED; the block is not used again.
pub(crate) unsafe fn free(p: P) {
    // SAFETY: per the contract; `record` validates before anything is unmapped.
    unsafe {
        let r = record(p, "munmap_chunk(): invalid pointer");
        let sz = size(p);
        if !PARAMS.no_dyn_threshold.load(Relaxed)
            && sz > PARAMS.mmap_threshold.load(Relaxed)
            && sz <= DEFAULT_MMAP_THRESHOLD_MAX
        {
            PARAMS.mmap_threshold.store(sz, Relaxed);
            PARAMS.trim_threshold.store(2 * sz, Relaxed);
        }
        let m = (*r).mapping;
        (*r).check = 0;
        account(-1, m.len());
        let _ = m.unmap();
    }
}

/// Resizes mapped chunk `p` to hold a chunk of `nb` bytes with mremap (glibc's `mremap_chunk`).
/// Null, with `p` untouched, when the OS refuses.
///
/// # Safety
/// `p` carries IS_MMAPPED; on success only the returned chunk is valid.
pub(crate) unsafe fn remap(p: P, nb: usize) -> P {
    // SAFETY: per the contract; the record is validated first and rewritten at the new place.
    unsafe {
        let r = record(p, "mremap_chunk(): invalid pointer");
        let off = prev_size(p);
        let old = (*r).mapping;
        let Some(total) = nb.checked_add(off + SIZE_SZ) else {
            return ptr::null_mut();
        };
        let Some(total) = total.checked_next_multiple_of(old.granule()) else {
            return ptr::null_mut();
        };
        if total == old.len() {
            return p;
        }
        let Ok(m) = old.remap(total) else {
            return ptr::null_mut();
        };
        let base = m.ptr().as_ptr() as usize;
        let r = base as *mut Record;
        (*r).mapping = m;
        (*r).check = check_word(base);
        let np = (base + off) as P;
        set_head(np, (m.len() - off) | IS_MMAPPED);
        MMAPPED_MEM.fetch_sub(old.len(), Relaxed);
        let mem = MMAPPED_MEM.fetch_add(m.len(), Relaxed) + m.len();
        MAX_MMAPPED_MEM.fetch_max(mem, Relaxed);
        np
    }
}

/// Checks mapped chunk `p` as free would, without freeing it.
///
/// # Safety
/// As for [`free`].
pub(crate) unsafe fn validate(p: P, what: &str) {
    // SAFETY: per the contract.
    unsafe {
        record(p, what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Usable size (chunk size − 16) must cover the request (`nb` − 8) at every offset in a page,
    /// including requests whose chunk size is just below a page multiple.
    #[test]
    fn usable_covers_every_request() {
        let page = page_size();
        for n in (40 * page - 64..40 * page + 16).chain(200_000..200_040) {
            let nb = request2size(n).unwrap();
            let p = alloc(nb);
            assert!(!p.is_null());
            // SAFETY: the chunk is ours.
            unsafe {
                assert!(size(p) - HDR >= n, "request {n}: usable {}", size(p) - HDR);
                mem(p).add(n - 1).write(1);
                let q = remap(p, request2size(n + page).unwrap());
                assert!(!q.is_null());
                assert!(size(q) - HDR >= n + page);
                mem(q).add(n + page - 1).write(1);
                free(q);
            }
        }
    }

    #[test]
    fn map_remap_free() {
        let p = alloc(300_000);
        assert!(!p.is_null());
        // SAFETY: the chunk is ours.
        unsafe {
            assert!(is_mmapped(p));
            assert!(size(p) >= 300_000);
            let m = mem(p);
            m.write_bytes(7, 300_000 - 16);
            let q = remap(p, 900_000);
            assert!(!q.is_null());
            assert!(size(q) >= 900_000);
            assert_eq!(mem(q).add(1000).read(), 7);
            free(q);
        }
    }
}

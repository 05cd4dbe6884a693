//! The per-thread cache: 64 LIFO lists of exact chunk sizes (32 to 1040 bytes), at most
//! `tcache_count` chunks each, used without any lock by the thread that owns it.
//!
//! An entry overlays the user memory of a chunk that still looks in use to its neighbours: word 0 is
//! the safe-linked `next`, word 1 the process's tcache key, which free uses to notice a chunk that is
//! probably already cached (then it walks the list to be sure: "double free detected in tcache").
//! Every decoded pointer is checked for 16-byte alignment before it is followed.

use core::ptr;
use core::sync::atomic::Ordering::Relaxed;

use crate::chunk::*;
use crate::config::PARAMS;
use crate::fault::{check, report};
use crate::secret::{protect, reveal, tcache_key};

#[repr(C)]
pub(crate) struct Tcache {
    pub counts: [u16; TCACHE_MAX_BINS],
    pub entries: [*mut Entry; TCACHE_MAX_BINS],
}

#[repr(C)]
pub(crate) struct Entry {
    pub next: usize,
    pub key: usize,
}

impl Tcache {
    pub(crate) const fn new() -> Tcache {
        Tcache {
            counts: [0; TCACHE_MAX_BINS],
            entries: [ptr::null_mut(); TCACHE_MAX_BINS],
        }
    }
}

/// The bin for chunk size `nb` if the tcache serves it.
#[inline(always)]
pub(crate) fn bin_for(nb: usize) -> Option<usize> {
    let i = csize2tidx(nb);
    (i < PARAMS.tcache_bins.load(Relaxed)).then_some(i)
}

#[inline(always)]
pub(crate) fn limit() -> usize {
    PARAMS.tcache_count.load(Relaxed)
}

/// Pops a block from bin `i` (which must be non-empty); returns the user pointer.
///
/// # Safety
/// `tc` is the calling thread's cache and `tc.counts[i] > 0`.
#[inline(always)]
pub(crate) unsafe fn get(tc: &mut Tcache, i: usize) -> *mut u8 {
    let e = tc.entries[i];
    check(
        aligned(e as usize),
        "malloc(): unaligned tcache chunk detected",
        e as usize,
    );
    // SAFETY: a cached entry is a live chunk's user memory, owned by this cache.
    unsafe {
        let field = ptr::addr_of!((*e).next);
        tc.entries[i] = reveal(field, field.read()) as *mut Entry;
        tc.counts[i] -= 1;
        (*e).key = 0;
    }
    e.cast()
}

/// Caches chunk `p` in bin `i`.
///
/// # Safety
/// `p` is an in-use chunk nobody else refers to, of the size of bin `i`; `tc` is the caller's cache.
#[inline(always)]
pub(crate) unsafe fn put(tc: &mut Tcache, p: P, i: usize) {
    // SAFETY: per the contract the chunk's user memory is ours to overlay.
    unsafe {
        let e = mem(p) as *mut Entry;
        let field = ptr::addr_of_mut!((*e).next);
        field.write(protect(field, tc.entries[i] as usize));
        (*e).key = tcache_key();
        tc.entries[i] = e;
        tc.counts[i] += 1;
    }
}

/// The key word of chunk `p`'s would-be entry: [`tcache_key`] if it may already be cached.
///
/// # Safety
/// `p` is a chunk in use (its user memory readable).
#[inline(always)]
pub(crate) unsafe fn key_of(p: P) -> usize {
    // SAFETY: per the contract.
    unsafe { (*(mem(p) as *const Entry)).key }
}

/// The double-free test of free: if `p`'s key word matches, walk bin `i` and abort if `p` is there.
/// Returns the key word, which the caller compares with the fast-bin mark.
///
/// # Safety
/// `p` passed free's pointer checks; `tc` is the caller's cache.
#[inline(always)]
pub(crate) unsafe fn check_double_free(tc: &Tcache, p: P, i: usize) -> usize {
    // SAFETY: the key word is inside the chunk's user memory, which free may read.
    let e = mem(p) as *mut Entry;
    // SAFETY: as above.
    let key = unsafe { (*e).key };
    if key == tcache_key() {
        // SAFETY: as above.
        unsafe { walk_for(tc, e, i, "free(): double free detected in tcache 2") };
    }
    key
}

/// True when `p` is cached in bin `i` of `tc` (used by realloc to spot a freed pointer).
///
/// # Safety
/// As for [`check_double_free`].
pub(crate) unsafe fn contains(tc: &Tcache, p: P, i: usize) -> bool {
    let e = mem(p) as *mut Entry;
    // SAFETY: as above.
    unsafe { (*e).key == tcache_key() && find(tc, e, i) }
}

#[cold]
unsafe fn walk_for(tc: &Tcache, e: *mut Entry, i: usize, what: &str) {
    // SAFETY: per the caller.
    if unsafe { find(tc, e, i) } {
        report(what, e as usize);
    }
}

#[cold]
unsafe fn find(tc: &Tcache, e: *mut Entry, i: usize) -> bool {
    let max = limit().max(tc.counts[i] as usize);
    let mut t = tc.entries[i];
    let mut n = 0;
    while !t.is_null() {
        check(
            n < max,
            "free(): too many chunks detected in tcache",
            e as usize,
        );
        check(
            aligned(t as usize),
            "free(): unaligned chunk detected in tcache 2",
            t as usize,
        );
        if t == e {
            return true;
        }
        // SAFETY: a cached entry is readable user memory of a live chunk.
        t = unsafe {
            let field = ptr::addr_of!((*t).next);
            reveal(field, field.read()) as *mut Entry
        };
        n += 1;
    }
    false
}

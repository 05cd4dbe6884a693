//! Freeing into an arena (glibc's `_int_free` after the tcache), and giving top back to the OS.
//!
//! A fast-sized chunk is pushed onto its fast bin with a CAS and no lock; the fast bin's head is
//! compared with the chunk first ("double free or corruption (fasttop)"). Any other chunk is merged
//! with its free neighbours under the arena lock and put on the unsorted bin, or into top. A merged
//! chunk of 64 KiB or more consolidates the fast bins and trims the heap: empty heaps are unmapped and
//! top above the trim threshold is decommitted down to `top_pad`. The chunk of a big heap (see
//! `heap.rs`) is checked like any other and then unmapped with its heap.

use core::ptr;
use core::sync::atomic::Ordering::Relaxed;

use twinheap_page::{page_size, Release as How};

use crate::arena::{consolidate, merge_forward, unlink, Arena, State};
use crate::chunk::*;
use crate::config::{max_fast, perturb, PARAMS};
use crate::fastbin;
use crate::fault::{check, report};
use crate::heap::{delete_heap, heap_of, HEAP_MAX};
use crate::secret::protect;

const FASTBIN_CONSOLIDATION_THRESHOLD: usize = 65536;

/// Fills a freed chunk's user bytes with the perturb byte, if one is set.
#[inline(always)]
pub(crate) unsafe fn free_perturb(p: P, sz: usize) {
    let b = perturb();
    if b != 0 {
        // SAFETY: the chunk's user bytes belong to the allocator now.
        unsafe { ptr::write_bytes(mem(p), b, sz - HDR) };
    }
}

/// Frees heap chunk `p` into `av` without the tcache. Takes the lock unless `locked`.
///
/// # Safety
/// `p` passed free's pointer checks and belongs to `av`; `locked` tells whether the caller holds the
/// lock.
pub(crate) unsafe fn free_chunk(av: &Arena, p: P, locked: bool) {
    // SAFETY: per the contract; neighbours are checked before they are trusted.
    unsafe {
        let sz = size(p);
        if sz <= max_fast() {
            let next = at(p, sz);
            if size_nomask(next) <= HDR || size(next) >= av.system_mem() {
                report("free(): invalid next size (fast)", mem(p) as usize);
            }
            free_perturb(p, sz);
            av.have_fastchunks.store(true, Relaxed);
            let idx = fastbin_index(sz);
            let fb = &av.fastbins[idx];
            let field = ptr::addr_of_mut!((*p).fd).cast::<usize>();
            // `p` is ours until the push lands; `old` is a fast-bin entry of `av`, whose header is
            // read only with the lock held.
            let pushed = fastbin::push(fb, p, |old| {
                if locked && !old.is_null() && fastbin_index(size(old)) != idx {
                    report("invalid fastbin entry (free)", mem(p) as usize);
                }
                field.write(protect(field, old as usize));
                (*p).bk = crate::secret::fast_key() as P;
            });
            if pushed.is_err() {
                report("double free or corruption (fasttop)", mem(p) as usize);
            }
            return;
        }
        let held = (!locked).then(|| crate::solo::lock(&av.lock));
        merge(av, p, sz);
        if let Some(held) = held {
            crate::solo::unlock(&av.lock, held);
        }
    }
}

/// The fast-bin double-free test: a chunk carrying the fast-bin mark is looked for in its bin (under
/// the lock, since pops may run otherwise; `locked` says whether the caller holds it) and reported
/// if found. Callers that cannot wait pass `try_only`, and skip the walk if the lock is busy.
///
/// # Safety
/// `p` passed free's pointer checks and belongs to `av`.
#[inline(always)]
pub(crate) unsafe fn check_fast_double_free(av: &Arena, p: P, locked: bool, try_only: bool) {
    // SAFETY: the mark is in the chunk's user memory, which free may read.
    if unsafe { (*p).bk } as usize == crate::secret::fast_key() {
        // SAFETY: per the contract.
        unsafe { walk_fast_bin(av, p, locked, try_only) };
    }
}

#[cold]
unsafe fn walk_fast_bin(av: &Arena, p: P, locked: bool, try_only: bool) {
    // SAFETY: the bin is walked with the lock held, so no entry leaves it meanwhile.
    unsafe {
        let sz = size(p);
        if sz > max_fast() || sz < MINSIZE {
            return;
        }
        if !locked {
            if try_only {
                if !av.lock.try_lock() {
                    return;
                }
            } else {
                av.lock.lock();
            }
        }
        let mut q = fastbin::first(&av.fastbins[fastbin_index(sz)]);
        let mut found = false;
        while !q.is_null() && aligned(q as usize) {
            if q == p {
                found = true;
                break;
            }
            let field = ptr::addr_of!((*q).fd).cast::<usize>();
            q = crate::secret::reveal(field, field.read()) as P;
        }
        if !locked {
            av.lock.unlock();
        }
        if found {
            report("double free or corruption (fastbin)", mem(p) as usize);
        }
    }
}

/// [`free_chunk`] with the lock held.
///
/// # Safety
/// As for [`free_chunk`].
pub(crate) unsafe fn free_locked(av: &Arena, p: P) {
    // SAFETY: per the contract.
    unsafe { free_chunk(av, p, true) }
}

/// Merges the non-fast chunk `p` of `sz` bytes with its free neighbours (lock held).
#[inline(always)]
unsafe fn merge(av: &Arena, mut p: P, mut sz: usize) {
    // SAFETY: lock held; every neighbour is validated before it is merged.
    unsafe {
        let st: *mut State = av.st.get();
        let at_p = mem(p) as usize;
        if p == (*st).top {
            report("double free or corruption (top)", at_p);
        }
        let next = at(p, sz);
        let heap = heap_of(p as usize);
        if next as usize >= (*heap).end() || (next as usize) < p as usize {
            report("double free or corruption (out)", at_p);
        }
        if !prev_inuse(next) {
            report("double free or corruption (!prev)", at_p);
        }
        let nextsize = size(next);
        if size_nomask(next) <= HDR || nextsize >= av.system_mem() {
            report("free(): invalid next size (normal)", at_p);
        }
        if (*heap).is_big() {
            // A big heap's only chunk: the whole heap goes back to the OS.
            if next != (*heap).fence || p as usize >= heap as usize + HEAP_MAX {
                report("double free or corruption (out)", at_p);
            }
            av.sub_system_mem((*heap).size());
            delete_heap(heap);
            return;
        }
        free_perturb(p, sz);
        if !prev_inuse(p) {
            let ps = prev_size(p);
            sz += ps;
            p = at(p, ps.wrapping_neg());
            check(
                size(p) == ps,
                "corrupted size vs. prev_size while consolidating",
                at_p,
            );
            unlink(p);
        }
        sz = merge_forward(
            st,
            p,
            sz,
            next,
            nextsize,
            "free(): corrupted unsorted chunks",
        );
        if sz >= FASTBIN_CONSOLIDATION_THRESHOLD {
            if av.have_fastchunks.load(Relaxed) {
                consolidate(av);
            }
            // Only call out when there is something to trim: top above the threshold with at least
            // a page past `top_pad` (what `heap_trim` would release), or a newest heap left empty.
            let threshold = PARAMS.trim_threshold.load(Relaxed);
            let pad = PARAMS.top_pad.load(Relaxed);
            let top = (*st).top;
            let top_size = size(top);
            let h = (*st).heap;
            if (top_size >= threshold
                && top_size.saturating_sub(MINSIZE + 1).saturating_sub(pad) >= page_size())
                || (!(*h).prev.is_null() && top as usize == (*h).start())
            {
                heap_trim(av, pad, threshold);
            }
        }
    }
}

/// Unmaps heaps left empty behind the newest one, then decommits top down to `pad` bytes if it is
/// at least `threshold` bytes. True if any memory went back to the OS.
///
/// # Safety
/// Lock held.
pub(crate) unsafe fn heap_trim(av: &Arena, pad: usize, threshold: usize) -> bool {
    // SAFETY: lock held; the heaps and fenceposts are this arena's.
    unsafe {
        let st: *mut State = av.st.get();
        let mut top = (*st).top;
        if top.is_null() {
            return false;
        }
        let mut h = (*st).heap;
        let mut released = false;
        while !(*h).prev.is_null() && top as usize == (*h).start() {
            let prev = (*h).prev;
            let fence = (*prev).fence;
            let mut p = fence;
            let mut newsize = (*prev).end() - fence as usize;
            if !prev_inuse(fence) {
                let ps = prev_size(fence);
                p = at(fence, ps.wrapping_neg());
                check(
                    size(p) == ps,
                    "corrupted size vs. prev_size",
                    mem(p) as usize,
                );
                unlink(p);
                newsize += ps;
            }
            av.sub_system_mem((*h).size());
            delete_heap(h);
            released = true;
            (*prev).fence = ptr::null_mut();
            (*st).heap = prev;
            h = prev;
            top = p;
            set_head(top, newsize | PREV_INUSE);
            (*st).top = top;
            if (*st).last_remainder == p {
                (*st).last_remainder = ptr::null_mut();
            }
        }
        let top_size = size(top);
        if top_size < threshold {
            return released;
        }
        let Some(area) = top_size.checked_sub(MINSIZE + 1) else {
            return released;
        };
        if area <= pad {
            return released;
        }
        let extra = (area - pad) & !((*h).gran() - 1);
        if extra == 0 {
            return released;
        }
        let new_end = (*h).end() - extra;
        if (*h).shrink(new_end - h as usize) {
            av.sub_system_mem(extra);
            set_head(top, (top_size - extra) | PREV_INUSE);
            released = true;
        }
        released
    }
}

/// malloc_trim's pass over one arena: consolidate, give back whole free pages inside free chunks,
/// then trim top down to `pad`. True if anything was released.
///
/// # Safety
/// Lock held.
pub(crate) unsafe fn trim_arena(av: &Arena, pad: usize, how: How) -> bool {
    // SAFETY: lock held; only the interior pages of free chunks (past their list links) are released.
    unsafe {
        consolidate(av);
        let st: *mut State = av.st.get();
        let page = page_size();
        let mut released = false;
        for i in 1..NBINS {
            let bin = crate::arena::bin_at(st, i);
            let mut p = (*bin).fd;
            while p != bin {
                let sz = size(p);
                // Keep the page with the header and links; release whole pages after it.
                let start = (p as usize + MINSIZE + page - 1) & !(page - 1);
                let end = (p as usize + sz) & !(page - 1);
                if end > start && twinheap_page::release(start as *mut u8, end - start, how).is_ok()
                {
                    released = true;
                }
                p = (*p).fd;
            }
        }
        // Shrink top regardless of the trim threshold, as glibc's systrim does for malloc_trim,
        // and give up the commit charge of what automatic trimming only released.
        released |= heap_trim(av, pad, 0);
        let mut h = (*st).heap;
        while !h.is_null() {
            released |= (*h).decommit_unused();
            h = (*h).prev;
        }
        released
    }
}

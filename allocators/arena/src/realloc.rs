//! Resizing and aligned allocation inside one locked arena (glibc's `_int_realloc` and
//! `_int_memalign`).
//!
//! realloc grows in place into top or into a free next chunk, otherwise allocates, copies and frees;
//! shrinking splits off a tail of at least MINSIZE and frees it. memalign over-allocates by the
//! alignment plus MINSIZE, then frees the misaligned lead and the unneeded tail. The chunk of a big
//! heap is never split: it is resized in place or moved, and memalign places it aligned.

use core::ptr;

use crate::arena::{unlink, Arena, State};
use crate::chunk::*;
use crate::fault::report;
use crate::free::free_locked;
use crate::heap::heap_of;
use crate::malloc::{big_alloc, int_malloc, set_top};

/// Keeps flags, replaces the size.
#[inline(always)]
unsafe fn set_head_size(p: P, s: usize) {
    // SAFETY: the caller names a chunk header.
    unsafe { set_head(p, (size_nomask(p) & FLAGS) | s) }
}

/// Resizes in-use heap chunk `oldp` (of `oldsize` bytes) of `av` to hold `nb`. Returns the chunk now
/// holding the data (maybe `oldp`), or null with `oldp` untouched.
///
/// # Safety
/// Lock of `av` held; `oldp` is an in-use chunk of `av` that passed realloc's pointer checks.
pub(crate) unsafe fn int_realloc(av: &Arena, oldp: P, oldsize: usize, nb: usize) -> P {
    // SAFETY: lock held; neighbours are checked before use.
    unsafe {
        let st: *mut State = av.st.get();
        let abit = (*st).arena_bit;
        let sysmem = av.system_mem();
        if size_nomask(oldp) <= HDR || oldsize >= sysmem {
            report("realloc(): invalid old size", mem(oldp) as usize);
        }
        let next = at(oldp, oldsize);
        let nextsize = size(next);
        if next != (*st).top && (size_nomask(next) <= HDR || nextsize >= sysmem) {
            report("realloc(): invalid next size", mem(oldp) as usize);
        }
        // A big heap's single chunk is followed by its fencepost, never by top or a free chunk:
        // only the shrinking and the moving branches below can meet it.
        let (newp, newsize);
        if oldsize >= nb {
            if (*heap_of(oldp as usize)).is_big() {
                return realloc_big(av, oldp, oldsize, nb);
            }
            newp = oldp;
            newsize = oldsize;
        } else if next == (*st).top && oldsize + nextsize >= nb + MINSIZE {
            set_head_size(oldp, nb | abit);
            set_top(st, at(oldp, nb), oldsize + nextsize - nb);
            return oldp;
        } else if next != (*st).top
            && !crate::arena::inuse_at(next, nextsize)
            && oldsize + nextsize >= nb
        {
            unlink(next);
            newp = oldp;
            newsize = oldsize + nextsize;
        } else {
            if (*heap_of(oldp as usize)).is_big() {
                return realloc_big(av, oldp, oldsize, nb);
            }
            let fresh = int_malloc(av, nb, ptr::null_mut());
            if fresh.is_null() {
                return ptr::null_mut();
            }
            if fresh != next {
                ptr::copy_nonoverlapping(mem(oldp), mem(fresh), oldsize - SIZE_SZ);
                free_locked(av, oldp);
                return fresh;
            }
            // The new chunk was cut from a top that had to grow, right after the old one: extend
            // in place instead of copying (and the tail split off below goes back to top).
            newp = oldp;
            newsize = oldsize + size(fresh);
        }
        let rem = newsize - nb;
        if rem < MINSIZE {
            set_head_size(newp, newsize | abit);
            set_inuse_at(newp, newsize);
        } else {
            let r = at(newp, nb);
            set_head_size(newp, nb | abit);
            set_head(r, rem | PREV_INUSE | abit);
            set_inuse_at(r, rem);
            free_locked(av, r);
        }
        newp
    }
}

/// [`int_realloc`] for the chunk of a big heap: resized in place (the heap's tail committed or
/// decommitted), else moved. Never split, since the heap holds one chunk.
#[cold]
unsafe fn realloc_big(av: &Arena, oldp: P, oldsize: usize, nb: usize) -> P {
    // SAFETY: lock held; `oldp` is the in-use chunk of a big heap of `av`.
    unsafe {
        let heap = heap_of(oldp as usize);
        if let Some(delta) = (*heap).resize_big(oldp, nb) {
            if delta >= 0 {
                av.add_system_mem(&mut *av.st.get(), delta as usize);
            } else {
                av.sub_system_mem(delta.unsigned_abs());
            }
            return oldp;
        }
        let fresh = int_malloc(av, nb, ptr::null_mut());
        if fresh.is_null() {
            return ptr::null_mut();
        }
        ptr::copy_nonoverlapping(mem(oldp), mem(fresh), oldsize.min(nb) - SIZE_SZ);
        free_locked(av, oldp);
        fresh
    }
}

/// Allocates a chunk of `nb` bytes whose user pointer is a multiple of `align` (a power of two of at
/// least MINSIZE). Null when out of memory.
///
/// # Safety
/// Lock of `av` held.
pub(crate) unsafe fn int_memalign(av: &Arena, align: usize, nb: usize) -> P {
    // SAFETY: lock held; the lead and tail are carved from a chunk we own and freed as chunks.
    unsafe {
        let st: *mut State = av.st.get();
        let abit = (*st).arena_bit;
        let Some(req) = nb.checked_add(align + MINSIZE) else {
            return ptr::null_mut();
        };
        let mut p = int_malloc(av, req, ptr::null_mut());
        if p.is_null() {
            return ptr::null_mut();
        }
        if !is_mmapped(p) && (*heap_of(p as usize)).is_big() {
            // A big heap's chunk cannot be split: place an aligned chunk in one instead.
            free_locked(av, p);
            return big_alloc(av, nb, align);
        }
        let m = mem(p) as usize;
        if !m.is_multiple_of(align) {
            let mut np = chunk_of(((m + align - 1) & !(align - 1)) as *mut u8);
            if (np as usize - p as usize) < MINSIZE {
                np = at(np, align);
            }
            let lead = np as usize - p as usize;
            let newsize = size(p) - lead;
            if is_mmapped(p) {
                (*np).prev_size = prev_size(p) + lead;
                set_head(np, newsize | IS_MMAPPED);
                return np;
            }
            set_head(np, newsize | PREV_INUSE | abit);
            set_inuse_at(np, newsize);
            set_head_size(p, lead | abit);
            free_locked(av, p);
            p = np;
        }
        if !is_mmapped(p) {
            let sz = size(p);
            if sz > nb + MINSIZE {
                let r = at(p, nb);
                set_head(r, (sz - nb) | PREV_INUSE | abit);
                set_head_size(p, nb | abit);
                free_locked(av, r);
            }
        }
        p
    }
}

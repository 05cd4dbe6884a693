//! Allocation inside one locked arena (glibc's `_int_malloc` and `sysmalloc`).
//!
//! Order of search, as in glibc: fast bin of the exact size (refilling the tcache from it), small bin
//! of the exact size (same), then — consolidating fast bins first for a large request — the unsorted
//! bin, sorting every chunk it does not return into its bin (exact fits are stashed into the tcache
//! first, and the last remainder serves runs of small requests), best fit in the request's own large
//! bin, the binmap scan for the next non-empty larger bin, the top chunk, and finally new memory: a
//! mapping of its own for a large request, more committed heap, or a new heap.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::Ordering::Relaxed;

use crate::arena::{bin_at, consolidate, mark_bin, to_unsorted, unlink, unsorted, Arena, State};
use crate::chunk::*;
use crate::config::{max_fast, PARAMS};
use crate::fastbin;
use crate::fault::{check, report};
use crate::heap::{new_heap, HeapInfo, HEAP_MAX};
use crate::secret::reveal;
use crate::tcache::{self, Tcache};

const MAX_ITERS: usize = 10_000;

/// Pops the head of fast bin `idx` (lock held, so no other pop races).
#[inline(always)]
unsafe fn fast_pop(av: &Arena, idx: usize, what: &str) -> P {
    let victim = fastbin::pop(&av.fastbins[idx], |victim| {
        check(aligned(victim as usize), what, victim as usize);
        // SAFETY: a fastbin head is a free chunk of this arena; only the lock holder pops.
        unsafe {
            let field = ptr::addr_of!((*victim).fd).cast::<usize>();
            reveal(field, field.read()) as P
        }
    });
    if !victim.is_null() {
        // SAFETY: the chunk is ours now; its fast-bin mark goes.
        unsafe { (*victim).bk = ptr::null_mut() };
    }
    victim
}

/// Finds a chunk of `nb` bytes (a `request2size` value) in `av`, whose lock the caller holds. The
/// chunk comes back marked in use, with the arena's NON_MAIN_ARENA bit. `tc` (the caller's cache, or
/// null) is refilled from bins on the way. Null when no memory can be had.
///
/// # Safety
/// Lock of `av` held; `tc` null or the calling thread's cache.
#[inline(always)]
pub(crate) unsafe fn int_malloc(av: &Arena, nb: usize, tc: *mut Tcache) -> P {
    // SAFETY: per the contract.
    unsafe {
        let p = from_top_directly(av, nb);
        if !p.is_null() {
            return p;
        }
        search(av, nb, tc)
    }
}

/// The common case of a large request, inline: nothing to consolidate, nothing unsorted and no
/// large bin marked, so every step of [`search`] before top would find nothing (small bins hold
/// only chunks smaller than `nb`); cut the chunk from top, after top's own check. Null when the
/// case does not apply or top is too small.
///
/// # Safety
/// Lock of `av` held.
#[inline(always)]
unsafe fn from_top_directly(av: &Arena, nb: usize) -> P {
    // SAFETY: lock held; top is this arena's free chunk at the end of its newest heap.
    unsafe {
        let st: *mut State = av.st.get();
        let head = unsorted(st);
        if in_smallbin_range(nb)
            || (*st).binmap[2] | (*st).binmap[3] != 0
            || (*head).bk != head
            || av.have_fastchunks.load(Relaxed)
        {
            return ptr::null_mut();
        }
        let top = (*st).top;
        if top.is_null() {
            return top;
        }
        let sz = size(top);
        if sz > av.system_mem() {
            report("malloc(): corrupted top size", mem(top) as usize);
        }
        if sz < nb + MINSIZE {
            return ptr::null_mut();
        }
        split_top(st, nb)
    }
}

/// The full search of [`int_malloc`], out of line.
///
/// # Safety
/// As for [`int_malloc`].
#[inline(never)]
unsafe fn search(av: &Arena, nb: usize, tc: *mut Tcache) -> P {
    // SAFETY: the whole search runs under the arena lock over chunks of this arena, with every link
    // checked (as listed in docs/arena.md) before it is trusted.
    unsafe {
        let st: *mut State = av.st.get();
        let abit = (*st).arena_bit;
        let tbin = if tc.is_null() {
            None
        } else {
            tcache::bin_for(nb)
        };

        if nb <= max_fast() {
            let idx = fastbin_index(nb);
            let victim = fast_pop(av, idx, "malloc(): unaligned fastbin chunk detected 2");
            if !victim.is_null() {
                check(
                    fastbin_index(size(victim)) == idx,
                    "malloc(): memory corruption (fast)",
                    mem(victim) as usize,
                );
                if let Some(ti) = tbin {
                    let tc = &mut *tc;
                    while (tc.counts[ti] as usize) < tcache::limit() {
                        let c = fast_pop(av, idx, "malloc(): unaligned fastbin chunk detected 3");
                        if c.is_null() {
                            break;
                        }
                        tcache::put(tc, c, ti);
                    }
                }
                return victim;
            }
        }

        let idx;
        if in_smallbin_range(nb) {
            idx = smallbin_index(nb);
            let bin = bin_at(st, idx);
            let victim = (*bin).bk;
            if victim != bin {
                let bck = (*victim).bk;
                check(
                    (*bck).fd == victim,
                    "malloc(): smallbin double linked list corrupted",
                    mem(victim) as usize,
                );
                set_inuse_at(victim, nb);
                (*bin).bk = bck;
                (*bck).fd = bin;
                (*victim).size |= abit;
                if let Some(ti) = tbin {
                    let tc = &mut *tc;
                    while (tc.counts[ti] as usize) < tcache::limit() {
                        let c = (*bin).bk;
                        if c == bin {
                            break;
                        }
                        let bck = (*c).bk;
                        check(
                            (*bck).fd == c,
                            "malloc(): smallbin double linked list corrupted",
                            mem(c) as usize,
                        );
                        set_inuse_at(c, nb);
                        (*c).size |= abit;
                        (*bin).bk = bck;
                        (*bck).fd = bin;
                        tcache::put(tc, c, ti);
                    }
                }
                return victim;
            }
        } else {
            idx = largebin_index(nb);
            if av.have_fastchunks.load(Relaxed) {
                consolidate(av);
            }
        }

        let unsorted_limit = PARAMS.tcache_unsorted_limit.load(Relaxed);
        loop {
            let mut return_cached = false;
            let mut processed = 0usize;
            let mut iters = 0usize;
            let head = unsorted(st);
            loop {
                let victim = (*head).bk;
                if victim == head {
                    break;
                }
                let bck = (*victim).bk;
                let sz = size(victim);
                let next = at(victim, sz);
                let sysmem = av.system_mem();
                let at_v = mem(victim) as usize;
                if size_nomask(victim) <= HDR || sz > sysmem {
                    report("malloc(): invalid size (unsorted)", at_v);
                }
                if size_nomask(next) < HDR || size(next) > sysmem {
                    report("malloc(): invalid next size (unsorted)", at_v);
                }
                check(
                    prev_size(next) == sz,
                    "malloc(): mismatching next->prev_size (unsorted)",
                    at_v,
                );
                check(
                    (*bck).fd == victim && (*victim).fd == head,
                    "malloc(): unsorted double linked list corrupted",
                    at_v,
                );
                check(
                    !prev_inuse(next),
                    "malloc(): invalid next->prev_inuse (unsorted)",
                    at_v,
                );

                if in_smallbin_range(nb)
                    && bck == head
                    && victim == (*st).last_remainder
                    && sz > nb + MINSIZE
                {
                    let rsize = sz - nb;
                    let rem = at(victim, nb);
                    (*head).bk = rem;
                    (*head).fd = rem;
                    (*rem).bk = head;
                    (*rem).fd = head;
                    (*st).last_remainder = rem;
                    if !in_smallbin_range(rsize) {
                        (*rem).fd_nextsize = ptr::null_mut();
                        (*rem).bk_nextsize = ptr::null_mut();
                    }
                    set_head(victim, nb | PREV_INUSE | abit);
                    set_head(rem, rsize | PREV_INUSE);
                    set_foot(rem, rsize);
                    return victim;
                }

                (*head).bk = bck;
                (*bck).fd = head;

                if sz == nb {
                    set_inuse_at(victim, sz);
                    (*victim).size |= abit;
                    match tbin {
                        Some(ti) if ((*tc).counts[ti] as usize) < tcache::limit() => {
                            tcache::put(&mut *tc, victim, ti);
                            return_cached = true;
                        }
                        _ => return victim,
                    }
                } else {
                    place_in_bin(st, victim, sz);
                }

                processed += 1;
                if return_cached && unsorted_limit > 0 && processed > unsorted_limit {
                    let ti = tbin.unwrap_or(0);
                    return chunk_of(tcache::get(&mut *tc, ti));
                }
                iters += 1;
                if iters >= MAX_ITERS {
                    break;
                }
            }
            if return_cached {
                let ti = tbin.unwrap_or(0);
                return chunk_of(tcache::get(&mut *tc, ti));
            }

            if !in_smallbin_range(nb) {
                let bin = bin_at(st, idx);
                let first = (*bin).fd;
                if first != bin && size(first) >= nb {
                    let mut victim = (*first).bk_nextsize;
                    while size(victim) < nb {
                        victim = (*victim).bk_nextsize;
                    }
                    if victim != (*bin).bk && size_nomask(victim) == size_nomask((*victim).fd) {
                        victim = (*victim).fd;
                    }
                    let sz = size(victim);
                    unlink(victim);
                    take_split(
                        st,
                        victim,
                        sz,
                        nb,
                        false,
                        "malloc(): corrupted unsorted chunks",
                    );
                    return victim;
                }
            }

            // Binmap scan for the smallest non-empty bin above the request's own.
            let mut i = idx + 1;
            let victim = loop {
                if i >= NBINS {
                    break ptr::null_mut();
                }
                let block = i >> 5;
                let map = (*st).binmap[block] >> (i & 31);
                if map == 0 {
                    i = (block + 1) << 5;
                    continue;
                }
                i += map.trailing_zeros() as usize;
                let bin = bin_at(st, i);
                let v = (*bin).bk;
                if v == bin {
                    (*st).binmap[i >> 5] &= !(1 << (i & 31));
                    i += 1;
                    continue;
                }
                break v;
            };
            if !victim.is_null() {
                let sz = size(victim);
                unlink(victim);
                take_split(
                    st,
                    victim,
                    sz,
                    nb,
                    in_smallbin_range(nb),
                    "malloc(): corrupted unsorted chunks 2",
                );
                return victim;
            }

            // Top.
            let top = (*st).top;
            if !top.is_null() {
                let sz = size(top);
                if sz > av.system_mem() {
                    report("malloc(): corrupted top size", mem(top) as usize);
                }
                if sz >= nb + MINSIZE {
                    return split_top(st, nb);
                }
            }
            if av.have_fastchunks.load(Relaxed) {
                // `idx` still holds the request's bin (glibc restores it here because its binmap
                // scan advances it; ours scans with `i`), so the retry needs only the drain.
                consolidate(av);
                continue;
            }
            return sysmalloc(av, nb);
        }
    }
}

/// Sorts `victim` (off the unsorted list, size `sz`) into its small or large bin.
unsafe fn place_in_bin(st: *mut State, victim: P, sz: usize) {
    // SAFETY: lock held by the caller; links are checked as they are followed.
    unsafe {
        let vi;
        let mut bck;
        let mut fwd;
        if in_smallbin_range(sz) {
            vi = smallbin_index(sz);
            bck = bin_at(st, vi);
            fwd = (*bck).fd;
        } else {
            vi = largebin_index(sz);
            bck = bin_at(st, vi);
            fwd = (*bck).fd;
            if fwd != bck {
                if sz < size((*bck).bk) {
                    // Smaller than everything: goes last, and onto the size ring after the largest.
                    fwd = bck;
                    bck = (*bck).bk;
                    (*victim).fd_nextsize = (*fwd).fd;
                    (*victim).bk_nextsize = (*(*fwd).fd).bk_nextsize;
                    (*(*fwd).fd).bk_nextsize = victim;
                    (*(*victim).bk_nextsize).fd_nextsize = victim;
                } else {
                    while sz < size(fwd) {
                        fwd = (*fwd).fd_nextsize;
                    }
                    if sz == size(fwd) {
                        // Second place: the ring keeps its member.
                        fwd = (*fwd).fd;
                    } else {
                        (*victim).fd_nextsize = fwd;
                        (*victim).bk_nextsize = (*fwd).bk_nextsize;
                        check(
                            (*(*fwd).bk_nextsize).fd_nextsize == fwd,
                            "malloc(): largebin double linked list corrupted (nextsize)",
                            mem(victim) as usize,
                        );
                        (*fwd).bk_nextsize = victim;
                        (*(*victim).bk_nextsize).fd_nextsize = victim;
                    }
                    bck = (*fwd).bk;
                    check(
                        (*bck).fd == fwd,
                        "malloc(): largebin double linked list corrupted (bk)",
                        mem(victim) as usize,
                    );
                }
            } else {
                (*victim).fd_nextsize = victim;
                (*victim).bk_nextsize = victim;
            }
        }
        mark_bin(&mut *st, vi);
        (*victim).bk = bck;
        (*victim).fd = fwd;
        (*fwd).bk = victim;
        (*bck).fd = victim;
    }
}

/// Hands out `victim` (unlinked, size `sz`) for a request of `nb`, splitting a remainder of at least
/// MINSIZE into the unsorted bin (and making it the last remainder if `remember`).
unsafe fn take_split(st: *mut State, victim: P, sz: usize, nb: usize, remember: bool, what: &str) {
    // SAFETY: lock held by the caller; `victim` is a free chunk of this arena just unlinked.
    unsafe {
        let abit = (*st).arena_bit;
        let rsize = sz - nb;
        if rsize < MINSIZE {
            set_inuse_at(victim, sz);
            (*victim).size |= abit;
        } else {
            let rem = at(victim, nb);
            set_head(victim, nb | PREV_INUSE | abit);
            to_unsorted(st, rem, rsize, what);
            if remember {
                (*st).last_remainder = rem;
            }
        }
    }
}

/// Cuts `nb` bytes off the front of top (which has at least `nb + MINSIZE`).
#[inline(always)]
unsafe fn split_top(st: *mut State, nb: usize) -> P {
    // SAFETY: lock held; top is this arena's free chunk at the end of its newest heap.
    unsafe {
        let victim = (*st).top;
        let sz = size(victim);
        let rem = at(victim, nb);
        set_head(victim, nb | PREV_INUSE | (*st).arena_bit);
        (*st).top_split = victim;
        (*st).top_split_clean = (*(*st).heap).fresh;
        set_top(st, rem, sz - nb);
        victim
    }
}

/// Makes `p` (of `sz` bytes, reaching the end of the newest heap) the top chunk, and notes that its
/// header has been written for calloc's benefit.
///
/// # Safety
/// Lock held; `p` is free memory of this arena's newest heap.
pub(crate) unsafe fn set_top(st: *mut State, p: P, sz: usize) {
    // SAFETY: per the contract.
    unsafe {
        set_head(p, sz | PREV_INUSE);
        (*st).top = p;
        let h = (*st).heap;
        let written = p as usize + HDR;
        if written > (*h).fresh {
            (*h).fresh = written;
        }
    }
}

/// Bytes a heap's chunks start after (header, plus the arena for a secondary arena's first heap).
pub(crate) fn heap_lead(first_of_secondary: bool) -> usize {
    let mut n = size_of::<HeapInfo>();
    if first_of_secondary {
        n += (size_of::<Arena>() + ALIGN_MASK) & !ALIGN_MASK;
    }
    n
}

/// Gets memory from the OS for a chunk of `nb` bytes (glibc's `sysmalloc`).
unsafe fn sysmalloc(av: &Arena, nb: usize) -> P {
    // SAFETY: lock held; heaps and top are this arena's.
    unsafe {
        let mut tried_mmap = false;
        if crate::mmap::wanted(nb) {
            tried_mmap = true;
            let p = crate::mmap::alloc(nb);
            if !p.is_null() {
                return p;
            }
        }
        let st: *mut State = av.st.get();
        if nb > HEAP_MAX - heap_lead(true) - MINSIZE {
            // No heap can hold it: a mapping of its own if allowed at all, else a big heap (where
            // glibc's main arena would extend the break).
            if !tried_mmap {
                let p = crate::mmap::alloc(nb);
                if !p.is_null() {
                    return p;
                }
            }
            return big_alloc(av, nb, ALIGNMENT);
        }
        let pad = PARAMS.top_pad.load(Relaxed);
        let top = (*st).top;
        if top.is_null() {
            // The main arena's first heap.
            let lead = heap_lead(false);
            let need = lead + nb + MINSIZE;
            let h = new_heap(av as *const Arena as *mut Arena, need.saturating_add(pad))
                .or_else(|| new_heap(av as *const Arena as *mut Arena, need));
            match h {
                Some(h) => install_heap(av, st, h, lead),
                None => return mmap_fallback(nb, tried_mmap),
            }
        } else {
            let h = (*st).heap;
            let base = h as usize;
            let old_size = size(top);
            let need = (top as usize - base) + nb + MINSIZE;
            let grown = need <= HEAP_MAX
                && ((*h).grow(need.saturating_add(pad).min(HEAP_MAX)) || (*h).grow(need));
            if grown {
                let new_size = (*h).end() - top as usize;
                av.add_system_mem(&mut *st, new_size - old_size);
                set_head(top, new_size | PREV_INUSE);
            } else {
                let lead = heap_lead(false);
                let need = lead + nb + MINSIZE;
                let fresh = new_heap(av as *const Arena as *mut Arena, need.saturating_add(pad))
                    .or_else(|| new_heap(av as *const Arena as *mut Arena, need));
                let Some(nh) = fresh else {
                    return mmap_fallback(nb, tried_mmap);
                };
                (*nh).prev = h;
                install_heap(av, st, nh, lead);
                // Split first: with the new heap still empty, freeing the old top (which may trim)
                // would take the new heap for an empty one and unmap it.
                let victim = split_top(st, nb);
                retire_top(av, h, top, old_size);
                return victim;
            }
        }
        if size((*st).top) < nb + MINSIZE {
            return ptr::null_mut();
        }
        split_top(st, nb)
    }
}

/// Serves a chunk of `nb` bytes, user memory aligned to `align`, from a big heap of its own (see
/// `heap.rs`). Null when the OS refuses or the alignment is above 32 MiB.
///
/// # Safety
/// Lock of `av` held.
pub(crate) unsafe fn big_alloc(av: &Arena, nb: usize, align: usize) -> P {
    // SAFETY: lock held; the big heap is fresh and the chunk ours.
    unsafe {
        let st: *mut State = av.st.get();
        let me = av as *const Arena as *mut Arena;
        let Some((h, p)) = crate::heap::new_big_heap(me, nb, align, (*st).arena_bit) else {
            return ptr::null_mut();
        };
        av.add_system_mem(&mut *st, (*h).size());
        // Fresh pages read zero: calloc need not clear any of the chunk.
        (*st).top_split = p;
        (*st).top_split_clean = mem(p) as usize;
        p
    }
}

unsafe fn install_heap(av: &Arena, st: *mut State, h: *mut HeapInfo, lead: usize) {
    // SAFETY: `h` is a fresh heap of this arena; the lock is held.
    unsafe {
        let top = (h as usize + lead) as P;
        set_head(top, ((*h).end() - top as usize) | PREV_INUSE);
        (*h).fresh = top as usize + HDR;
        (*st).heap = h;
        (*st).top = top;
        av.add_system_mem(&mut *st, (*h).size());
    }
}

/// Closes old heap `h`, whose top `top` of `old_size` bytes the arena leaves behind: fenceposts at
/// its end, and the rest freed into the bins.
unsafe fn retire_top(av: &Arena, h: *mut HeapInfo, top: P, old_size: usize) {
    // SAFETY: lock held; `top` is the free end of `h`, no longer the arena's top.
    unsafe {
        let end = top as usize + old_size;
        (*h).fresh = (*h).end();
        let abit = (*av.st.get()).arena_bit;
        let fence_end = (end - HDR) as P;
        set_head(fence_end, PREV_INUSE);
        if old_size - MINSIZE >= MINSIZE {
            let fence = (end - MINSIZE) as P;
            set_head(fence, HDR | PREV_INUSE);
            (*h).fence = fence;
            set_head(top, (old_size - MINSIZE) | PREV_INUSE | abit);
            crate::free::free_locked(av, top);
        } else {
            set_head(top, (old_size - HDR) | PREV_INUSE);
            (*h).fence = top;
        }
    }
}

fn mmap_fallback(nb: usize, tried: bool) -> P {
    if tried {
        ptr::null_mut()
    } else {
        crate::mmap::alloc(nb)
    }
}

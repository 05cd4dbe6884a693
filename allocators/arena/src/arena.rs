//! One arena (glibc's `malloc_state`): its lock, fast bins, the unsorted/small/large bins with their
//! binmap, the top chunk and the last remainder, plus the list operations on them.
//!
//! Invariants, all under `lock` except the fast bins (pushed with a CAS by `free` without the lock,
//! popped only under it, so a pop never races another pop and the push/pop pair has no ABA problem;
//! the protocol and its loom models are in `fastbin.rs`):
//! - bin `i` (1 = unsorted, 2..=63 small, 64..=126 large) is a circular doubly linked list whose head
//!   is a fake chunk overlaid on `bins[2*(i-1)..]`, so that `head.fd`/`head.bk` are those two words;
//! - small bins hold one exact size; large bins are sorted largest first, and the first chunk of each
//!   size is on the `fd_nextsize`/`bk_nextsize` ring;
//! - a chunk in a bin is free, has PREV_INUSE set and NON_MAIN_ARENA clear, its footer written and
//!   the next chunk's PREV_INUSE clear; no two free chunks in bins are adjacent, and none is adjacent
//!   to top;
//! - binmap bit `i` is set whenever bin `i` is non-empty (it may stay set when empty);
//! - `top` is null until the arena's first heap exists, otherwise the free chunk at the end of the
//!   newest heap, at least MINSIZE, in no bin.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::Relaxed};

use twinheap_page::Lock;

use crate::chunk::*;
use crate::fault::{check, report};
use crate::heap::HeapInfo;

/// Unlocked state of an arena.
#[repr(C)]
pub(crate) struct State {
    pub top: P,
    pub last_remainder: P,
    pub bins: [P; NBINS * 2 - 2],
    /// Room for the last bin head's nextsize words (read, never meaningfully written).
    pub bins_tail: [P; 2],
    pub binmap: [u32; BINMAPSIZE],
    /// Newest heap of this arena.
    pub heap: *mut HeapInfo,
    /// NON_MAIN_ARENA for secondary arenas, 0 for the main arena.
    pub arena_bit: usize,
    pub max_system_mem: usize,
    /// The last chunk split off top and the start of the never-written memory at that moment: calloc
    /// need not clear bytes above it.
    pub top_split: P,
    pub top_split_clean: usize,
}

#[repr(C)]
pub(crate) struct Arena {
    pub lock: Lock,
    pub fastbins: [AtomicPtr<Chunk>; NFASTBINS],
    pub have_fastchunks: AtomicBool,
    /// Bytes of heap committed to this arena (heaps' committed prefixes, headers included).
    pub system_mem: AtomicUsize,
    pub st: UnsafeCell<State>,
    /// Next arena in the list of every arena; set once before publication.
    pub next: AtomicPtr<Arena>,
    /// The arena's number (0 = main).
    pub index: usize,
}

// SAFETY: the mutable state is reached only under `lock`; the rest is atomics.
unsafe impl Sync for Arena {}

impl Arena {
    pub(crate) const fn new(index: usize, arena_bit: usize) -> Arena {
        Arena {
            lock: Lock::new(),
            fastbins: [const { AtomicPtr::new(ptr::null_mut()) }; NFASTBINS],
            have_fastchunks: AtomicBool::new(false),
            system_mem: AtomicUsize::new(0),
            st: UnsafeCell::new(State {
                top: ptr::null_mut(),
                last_remainder: ptr::null_mut(),
                bins: [ptr::null_mut(); NBINS * 2 - 2],
                bins_tail: [ptr::null_mut(); 2],
                binmap: [0; BINMAPSIZE],
                heap: ptr::null_mut(),
                arena_bit,
                max_system_mem: 0,
                top_split: ptr::null_mut(),
                top_split_clean: 0,
            }),
            next: AtomicPtr::new(ptr::null_mut()),
            index,
        }
    }

    /// Makes every bin an empty circular list. The arena must be at its final address.
    ///
    /// # Safety
    /// Nobody else uses the arena yet.
    pub(crate) unsafe fn init_bins(&self) {
        // SAFETY: exclusive access per the contract.
        unsafe {
            let st = self.st.get();
            for i in 1..NBINS {
                let b = bin_at(st, i);
                (*b).fd = b;
                (*b).bk = b;
            }
        }
    }

    /// The unlocked state. Caller holds `lock` (or owns the arena exclusively).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn st(&self) -> &mut State {
        // SAFETY: per the contract, the lock gives exclusive access.
        unsafe { &mut *self.st.get() }
    }

    #[inline(always)]
    pub(crate) fn system_mem(&self) -> usize {
        self.system_mem.load(Relaxed)
    }

    pub(crate) fn add_system_mem(&self, st: &mut State, n: usize) {
        let now = self.system_mem.fetch_add(n, Relaxed) + n;
        st.max_system_mem = st.max_system_mem.max(now);
    }

    pub(crate) fn sub_system_mem(&self, n: usize) {
        self.system_mem.fetch_sub(n, Relaxed);
    }
}

/// The fake chunk heading bin `i`.
#[inline(always)]
pub(crate) fn bin_at(st: *mut State, i: usize) -> P {
    // SAFETY: only the address is computed; the index stays inside `bins`.
    let slot = unsafe { ptr::addr_of_mut!((*st).bins).cast::<P>().add((i - 1) * 2) };
    (slot as usize - 2 * SIZE_SZ) as P
}

#[inline(always)]
pub(crate) fn unsorted(st: *mut State) -> P {
    bin_at(st, 1)
}

#[inline(always)]
pub(crate) fn mark_bin(st: &mut State, i: usize) {
    st.binmap[i >> 5] |= 1 << (i & 31);
}

/// Takes `p` off its bin (glibc's `unlink_chunk`), checking both neighbours' links and, for large
/// chunks, the size ring.
///
/// # Safety
/// Lock held; `p` is a chunk in one of this arena's regular bins (anything else is reported).
pub(crate) unsafe fn unlink(p: P) {
    // SAFETY: `p` and its neighbours are chunks or bin heads of a locked arena; corrupt links are
    // reported before being followed further than one step.
    unsafe {
        let sz = size(p);
        if sz != prev_size(at(p, sz)) {
            report("corrupted size vs. prev_size", mem(p) as usize);
        }
        let fd = (*p).fd;
        let bk = (*p).bk;
        if (*fd).bk != p || (*bk).fd != p {
            report("corrupted double-linked list", mem(p) as usize);
        }
        (*fd).bk = bk;
        (*bk).fd = fd;
        if !in_smallbin_range(sz) && !(*p).fd_nextsize.is_null() {
            if (*(*p).fd_nextsize).bk_nextsize != p || (*(*p).bk_nextsize).fd_nextsize != p {
                report("corrupted double-linked list (not small)", mem(p) as usize);
            }
            if (*fd).fd_nextsize.is_null() {
                if (*p).fd_nextsize == p {
                    (*fd).fd_nextsize = fd;
                    (*fd).bk_nextsize = fd;
                } else {
                    (*fd).fd_nextsize = (*p).fd_nextsize;
                    (*fd).bk_nextsize = (*p).bk_nextsize;
                    (*(*p).fd_nextsize).bk_nextsize = fd;
                    (*(*p).bk_nextsize).fd_nextsize = fd;
                }
            } else {
                (*(*p).fd_nextsize).bk_nextsize = (*p).bk_nextsize;
                (*(*p).bk_nextsize).fd_nextsize = (*p).fd_nextsize;
            }
        }
    }
}

/// Puts the free chunk `p` of size `sz` at the front of the unsorted bin, writing its header
/// (PREV_INUSE set, arena bit clear) and footer.
///
/// # Safety
/// Lock held; `p` is a free chunk of this arena in no list.
pub(crate) unsafe fn to_unsorted(st: *mut State, p: P, sz: usize, what: &str) {
    // SAFETY: per the contract; the bin head is checked before it is relinked.
    unsafe {
        let bck = unsorted(st);
        let fwd = (*bck).fd;
        check((*fwd).bk == bck, what, mem(p) as usize);
        (*p).fd = fwd;
        (*p).bk = bck;
        if !in_smallbin_range(sz) {
            (*p).fd_nextsize = ptr::null_mut();
            (*p).bk_nextsize = ptr::null_mut();
        }
        (*bck).fd = p;
        (*fwd).bk = p;
        set_head(p, sz | PREV_INUSE);
        set_foot(p, sz);
    }
}

/// The second half of freeing a chunk whose backward merge is done: `p` (free, size `sz`, in no
/// list) absorbs `next` (size `nextsize`) if that is free or the top, and lands in the unsorted bin
/// (checked with `what`) or becomes the top. Returns the merged size.
///
/// # Safety
/// Lock held; `p` is a free chunk of this arena in no list and `next` the chunk right after it.
pub(crate) unsafe fn merge_forward(
    st: *mut State,
    p: P,
    mut sz: usize,
    next: P,
    nextsize: usize,
    what: &str,
) -> usize {
    // SAFETY: per the contract; `next` and the chunk after it are headers inside this heap.
    unsafe {
        if next == (*st).top {
            sz += nextsize;
            set_head(p, sz | PREV_INUSE);
            (*st).top = p;
            return sz;
        }
        if inuse_at(next, nextsize) {
            clear_inuse_at(next, 0);
        } else {
            sz += nextsize;
            unlink(next);
        }
        to_unsorted(st, p, sz, what);
        sz
    }
}

/// Empties every fast bin, merging each chunk with its free neighbours into the unsorted bin or top
/// (glibc's `malloc_consolidate`).
///
/// # Safety
/// Lock held.
pub(crate) unsafe fn consolidate(av: &Arena) {
    av.have_fastchunks.store(false, Relaxed);
    // Most bins are empty when a drain runs; the loop only tests heads (the compiler unrolls it),
    // and the merging lives in `drain_fast_bin`, out of line.
    for (i, fb) in av.fastbins.iter().enumerate() {
        let p = crate::fastbin::take_all(fb);
        if !p.is_null() {
            // SAFETY: lock held (our contract); `p` heads the list just taken from bin `i`.
            unsafe { drain_fast_bin(av, i, p) };
        }
    }
}

/// Merges every chunk of the list headed by `p`, just taken from fast bin `i`, with its free
/// neighbours into the unsorted bin or top.
///
/// # Safety
/// Lock held; `p` heads a list taken from fast bin `i` of `av`.
#[inline(never)]
unsafe fn drain_fast_bin(av: &Arena, i: usize, mut p: P) {
    // SAFETY: lock held; fastbin chunks are this arena's, their links decoded and checked.
    unsafe {
        let st = av.st.get();
        while !p.is_null() {
            check(
                aligned(p as usize),
                "malloc_consolidate(): unaligned fastbin chunk detected",
                mem(p) as usize,
            );
            check(
                size(p) >= MINSIZE && fastbin_index(size(p)) == i,
                "malloc_consolidate(): invalid chunk size",
                mem(p) as usize,
            );
            let field = ptr::addr_of!((*p).fd).cast::<usize>();
            let nextp = crate::secret::reveal(field, field.read()) as P;
            // Off the fast bin: drop its mark, which would otherwise linger in merged memory.
            (*p).bk = ptr::null_mut();
            let mut sz = size(p);
            let next = at(p, sz);
            let nextsize = size(next);
            if !prev_inuse(p) {
                let ps = prev_size(p);
                sz += ps;
                p = at(p, ps.wrapping_neg());
                check(
                    size(p) == ps,
                    "corrupted size vs. prev_size in fastbins",
                    mem(p) as usize,
                );
                unlink(p);
            }
            merge_forward(
                st,
                p,
                sz,
                next,
                nextsize,
                "malloc(): corrupted unsorted chunks",
            );
            p = nextp;
        }
    }
}

/// In use test for a chunk whose size is already known.
#[inline(always)]
pub(crate) unsafe fn inuse_at(p: P, sz: usize) -> bool {
    // SAFETY: the caller names a chunk followed by another chunk header.
    unsafe { prev_inuse(at(p, sz)) }
}

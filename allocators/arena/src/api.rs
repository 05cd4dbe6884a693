//! The public allocation interface: glibc's malloc, free, calloc, realloc, memalign and
//! malloc_usable_size semantics on top of the tcache, the arenas and mapped chunks.
//!
//! Every entry point validates what it is given before writing anything: a heap pointer must lie in
//! a heap that exists (a bitmap lookup), be 16-aligned, carry a sane size and agree with its heap on
//! which arena owns it; a mapped chunk must match the record at its mapping's start. Failures abort
//! with one line (see `fault`). Out-of-memory returns null with errno ENOMEM, a bad alignment EINVAL.

use core::ptr;

use twinheap_page::error::set_errno;

use crate::arena::Arena;
use crate::chunk::*;
use crate::config::perturb;
use crate::fault::report;
use crate::heap::is_heap_address;
use crate::registry::{self, arena_of};
use crate::solo;
use crate::tcache::{self, Tcache};
use crate::thread::{self, Thread};
use crate::{free as fr, malloc as ml, mmap, realloc as rl};

fn enomem() -> *mut u8 {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

#[inline(always)]
fn perturb_alloc(m: *mut u8, n: usize) {
    let b = perturb();
    if b != 0 {
        // SAFETY: the block holds at least `n` bytes.
        unsafe { ptr::write_bytes(m, b ^ 0xff, n) };
    }
}

/// Runs `f` on the calling thread's arena `av` with its lock taken (waiting for it, and noting the
/// contention), retrying once on the main arena when a secondary arena cannot serve the request.
#[inline(always)]
fn with_arena_retry(
    t: *mut Thread,
    av: &Arena,
    tc: *mut Tcache,
    f: impl Fn(&Arena, *mut Tcache) -> P,
) -> P {
    let held = thread::lock_own(t, av);
    let p = f(av, tc);
    // SAFETY: taken just above.
    unsafe { solo::unlock(&av.lock, held) };
    thread::maybe_move(t);
    if !p.is_null() {
        return p;
    }
    retry_on_main(av, tc, f)
}

/// [`with_arena_retry`]'s rare half, out of line: `f` on the main arena after secondary arena `av`
/// found no memory (null when `av` is the main arena already).
#[cold]
#[inline(never)]
fn retry_on_main(av: &Arena, tc: *mut Tcache, f: impl Fn(&Arena, *mut Tcache) -> P) -> P {
    let main = registry::main();
    if ptr::eq(av, main) {
        return ptr::null_mut();
    }
    let held = solo::lock(&main.lock);
    let p = f(main, tc);
    // SAFETY: taken just above.
    unsafe { solo::unlock(&main.lock, held) };
    p
}

/// Runs `f` on `av` only if its lock is free right now (re-entrant calls must not wait).
fn with_arena_try(av: &Arena, f: impl Fn(&Arena) -> P) -> P {
    if !av.lock.try_lock() {
        return ptr::null_mut();
    }
    let p = f(av);
    // SAFETY: taken just above.
    unsafe { av.lock.unlock() };
    p
}

/// The arena a call without the right to wait uses: the thread's, else the main arena.
fn careful_arena(t: *mut Thread) -> &'static Arena {
    if !t.is_null() {
        // SAFETY: a record's arena is set before the record is published and arenas live forever.
        let a = unsafe { (*t).arena };
        if !a.is_null() {
            // SAFETY: as above.
            return unsafe { &*a };
        }
    }
    registry::main()
}

/// Allocates `n` bytes (at least 24 usable), 16-aligned. Null with ENOMEM on failure.
#[inline(always)]
pub fn malloc(n: usize) -> *mut u8 {
    let Some(nb) = request2size(n) else {
        return enomem();
    };
    let t = thread::current();
    if t.is_null() || !thread::enter(t) {
        return malloc_careful(t, nb, n);
    }
    // SAFETY: `t` is this thread's record and we are inside the allocator on its behalf.
    unsafe {
        let tc = &mut (*t).tc;
        if let Some(i) = tcache::bin_for(nb) {
            if tc.counts[i] > 0 {
                let m = tcache::get(tc, i);
                thread::leave(t);
                return m;
            }
        }
    }
    malloc_from_arena(t, nb, n)
}

/// The part of malloc past the tcache, kept out of line so that the fast path stays small enough
/// to inline.
#[inline(never)]
fn malloc_from_arena(t: *mut Thread, nb: usize, n: usize) -> *mut u8 {
    // SAFETY: `t` is this thread's record, entered by `malloc`.
    let p = unsafe {
        let tc = ptr::addr_of_mut!((*t).tc);
        let av = &*(*t).arena;
        with_arena_retry(t, av, tc, |a, tc| ml::int_malloc(a, nb, tc))
    };
    thread::leave(t);
    if p.is_null() {
        return enomem();
    }
    let m = mem(p);
    perturb_alloc(m, n);
    m
}

#[cold]
fn malloc_careful(t: *mut Thread, nb: usize, n: usize) -> *mut u8 {
    let av = careful_arena(t);
    // SAFETY: the lock is taken by `with_arena_try`; no tcache is used.
    let p = with_arena_try(av, |a| unsafe { ml::int_malloc(a, nb, ptr::null_mut()) });
    if p.is_null() {
        return enomem();
    }
    let m = mem(p);
    perturb_alloc(m, n);
    m
}

/// What free and realloc learn about a heap pointer after checking it.
struct Checked {
    p: P,
    size: usize,
}

impl Checked {
    /// The owning arena, checked against the chunk's NON_MAIN_ARENA bit. Only paths that go to an
    /// arena need it (the tcache path does not, as in glibc).
    #[inline(always)]
    fn arena(&self, what: &str) -> &'static Arena {
        // SAFETY: `check_heap` established that the chunk lies in an existing heap.
        match unsafe { arena_of(self.p) } {
            Some(a) => a,
            None => report(what, mem(self.p) as usize),
        }
    }
}

/// Validates user pointer `m` of a heap chunk; `what` is the report's text.
#[inline(always)]
unsafe fn check_heap(m: *mut u8, what: &str) -> Checked {
    let p = chunk_of(m);
    // SAFETY: the caller established that `m` lies in an existing heap, so its header is mapped.
    unsafe {
        let head = size_nomask(p);
        let sz = head & !FLAGS;
        if (p as usize).wrapping_add(sz) < p as usize || head & IS_MMAPPED != 0 {
            report(what, m as usize);
        }
        if sz < MINSIZE || !aligned(sz) {
            report("free(): invalid size", m as usize);
        }
        Checked { p, size: sz }
    }
}

const FREE_INVALID: &str = "free(): invalid pointer";

/// Frees a block from malloc & co. Null is ignored; errno is kept.
///
/// # Safety
/// `m` is null or a live block of this allocator, not used afterwards. Anything else is detected
/// where possible (and aborts) but may also fault.
#[inline(always)]
pub unsafe fn free(m: *mut u8) {
    // SAFETY: per the contract.
    unsafe { free_impl(m, None) }
}

/// free, checking that `n` is at most the block's usable size ("invalid size" otherwise).
///
/// # Safety
/// As for [`free`].
#[inline(always)]
pub unsafe fn free_sized(m: *mut u8, n: usize) {
    // SAFETY: per the contract.
    unsafe { free_impl(m, Some(n)) }
}

#[inline(always)]
unsafe fn free_impl(m: *mut u8, sized: Option<usize>) {
    if m.is_null() {
        return;
    }
    if !aligned(m as usize) {
        report("free(): invalid pointer", m as usize);
    }
    if !is_heap_address(m as usize) {
        // SAFETY: per the contract this is a block we made; not being in a heap it must be mapped.
        unsafe { free_mapped(m, sized) };
        return;
    }
    // SAFETY: `m` lies in an existing heap.
    let c = unsafe { check_heap(m, "free(): invalid pointer") };
    if let Some(n) = sized {
        if n > c.size - SIZE_SZ {
            report("free(): invalid size", m as usize);
        }
    }
    // The common case inline, with every other path a tail call: the caller then saves no
    // registers (saving and restoring six cost 14 of the 75 instructions of a tcache free).
    let t = thread::current_if_slotted();
    if t.is_null() || !thread::enter(t) {
        // SAFETY: validated above.
        return unsafe { free_unentered(t, m, c.p, c.size) };
    }
    // SAFETY: `t` is this thread's record, entered; the chunk was validated.
    unsafe {
        let Some(i) = tcache::bin_for(c.size) else {
            return free_to_arena(t, c.p, c.size);
        };
        let tc = &mut (*t).tc;
        let key = tcache::key_of(c.p);
        if key == crate::secret::tcache_key() || key == crate::secret::fast_key() {
            // Maybe a double free: the full path walks the bins before anything else.
            return free_entered(t, c.p, c.size);
        }
        if tc.counts[i] as usize >= tcache::limit() {
            return free_to_arena(t, c.p, c.size);
        }
        tcache::put(tc, c.p, i);
        thread::leave(t);
    }
}

/// free's path for a thread that is not in its table slot (looked up out of line) or is already
/// inside the allocator (`busy_t`, a re-entrant call).
///
/// # Safety
/// `p` (of user pointer `m`, `size` bytes) was validated by `free_impl`; `busy_t` is null or the
/// calling thread's record, which `enter` refused.
#[cold]
#[inline(never)]
unsafe fn free_unentered(busy_t: *mut Thread, m: *mut u8, p: P, size: usize) {
    let c = Checked { p, size };
    let t = if busy_t.is_null() {
        thread::current_no_attach()
    } else {
        busy_t
    };
    if t.is_null() || !busy_t.is_null() || !thread::enter(t) {
        // SAFETY: validated by the caller.
        unsafe { free_careful(t, m, &c) };
        return;
    }
    // SAFETY: entered just above; validated by the caller.
    unsafe { free_entered(t, p, size) }
}

/// free with `t` entered, every check included: the tcache when its bin has room (after the
/// double-free walks a tcache or fast-bin key calls for), else the arena.
///
/// # Safety
/// `t` is the calling thread's record, entered; `p` of `size` bytes was validated by `free_impl`.
#[inline(never)]
unsafe fn free_entered(t: *mut Thread, p: P, size: usize) {
    let c = Checked { p, size };
    // SAFETY: as the contract says.
    unsafe {
        let tc = &mut (*t).tc;
        if let Some(i) = tcache::bin_for(c.size) {
            let key = tcache::check_double_free(tc, c.p, i);
            if key == crate::secret::fast_key() {
                fr::check_fast_double_free(c.arena(FREE_INVALID), c.p, false, false);
            }
            if (tc.counts[i] as usize) < tcache::limit() {
                tcache::put(tc, c.p, i);
                thread::leave(t);
                return;
            }
        }
        free_to_arena(t, c.p, c.size);
    }
}

/// The part of free past the tcache, out of line like [`malloc_from_arena`].
#[inline(never)]
unsafe fn free_to_arena(t: *mut Thread, p: P, size: usize) {
    let c = Checked { p, size };
    // SAFETY: the chunk was validated by `free_impl`, which entered `t`.
    unsafe {
        let av = c.arena(FREE_INVALID);
        fr::check_fast_double_free(av, c.p, false, false);
        fr::free_chunk(av, c.p, false);
    }
    thread::leave(t);
}

#[cold]
unsafe fn free_mapped(m: *mut u8, sized: Option<usize>) {
    let p = chunk_of(m);
    // SAFETY: per the caller's contract the header is readable.
    unsafe {
        if !is_mmapped(p) {
            report("free(): invalid pointer", m as usize);
        }
        if let Some(n) = sized {
            mmap::validate(p, "munmap_chunk(): invalid pointer");
            if n > size(p) - HDR {
                report("free(): invalid size", m as usize);
            }
        }
        mmap::free(p);
    }
}

#[cold]
unsafe fn free_careful(t: *mut Thread, m: *mut u8, c: &Checked) {
    let arena = c.arena(FREE_INVALID);
    if t.is_null() && !thread::is_attaching() {
        // No record (a thread past its exit destructor, or one that never allocated): nothing of
        // this thread's is inside the allocator, so waiting for the lock is safe.
        arena.lock.lock();
        // SAFETY: validated chunk of this arena, lock held.
        unsafe {
            fr::check_fast_double_free(arena, c.p, true, false);
            fr::free_locked(arena, c.p);
            arena.lock.unlock();
        }
        return;
    }
    if arena.lock.try_lock() {
        // SAFETY: validated chunk of this arena, lock held.
        unsafe {
            fr::check_fast_double_free(arena, c.p, true, true);
            fr::free_locked(arena, c.p);
            arena.lock.unlock();
        }
    } else if !t.is_null() {
        // Refused only for a block carrying a tcache or fast-bin key (maybe cached already): it is
        // left alone, never reused and never corrupting a list.
        let _ = thread::park(t, m);
    }
}

/// Allocates `count * size` zeroed bytes; overflow gives null with ENOMEM. Fresh memory (a new
/// mapping, or heap never written since it was committed) is not cleared again.
pub fn calloc(count: usize, size_each: usize) -> *mut u8 {
    let Some(n) = count.checked_mul(size_each) else {
        return enomem();
    };
    let Some(nb) = request2size(n) else {
        return enomem();
    };
    let t = thread::current();
    let careful = t.is_null() || !thread::enter(t);
    let av = careful_arena(t);
    let run = |a: &Arena, tc: *mut Tcache| -> (P, usize) {
        // SAFETY: lock of `a` held by the caller of this closure.
        unsafe {
            // Forget the previous split first: a chunk once cut from top and since freed and
            // reused from a bin may start at the remembered address while holding written bytes
            // above the remembered mark. Only a split made by this very call counts.
            (*a.st.get()).top_split = ptr::null_mut();
            let p = ml::int_malloc(a, nb, tc);
            let st = a.st();
            let clean = if !p.is_null() && st.top_split == p {
                st.top_split_clean
            } else {
                usize::MAX
            };
            (p, clean)
        }
    };
    let (p, clean) = if careful {
        if av.lock.try_lock() {
            let r = run(av, ptr::null_mut());
            // SAFETY: taken above.
            unsafe { av.lock.unlock() };
            r
        } else {
            (ptr::null_mut(), 0)
        }
    } else {
        // SAFETY: `t` is ours; its cache may be refilled under the arena lock.
        let tc = unsafe { ptr::addr_of_mut!((*t).tc) };
        let held = thread::lock_own(t, av);
        let mut r = run(av, tc);
        // SAFETY: taken above.
        unsafe { solo::unlock(&av.lock, held) };
        thread::maybe_move(t);
        if r.0.is_null() && !ptr::eq(av, registry::main()) {
            let main = registry::main();
            main.lock.lock();
            r = run(main, tc);
            // SAFETY: taken above.
            unsafe { main.lock.unlock() };
        }
        thread::leave(t);
        r
    };
    if p.is_null() {
        return enomem();
    }
    let m = mem(p);
    // SAFETY: the chunk is ours; we clear its usable bytes below the never-written mark.
    unsafe {
        if is_mmapped(p) {
            if perturb() != 0 {
                ptr::write_bytes(m, 0, size(p) - HDR);
            }
        } else {
            let usable = size(p) - SIZE_SZ;
            let end = (m as usize + usable).min(clean.max(m as usize));
            let end = if perturb() != 0 {
                m as usize + usable
            } else {
                end
            };
            ptr::write_bytes(m, 0, end - m as usize);
        }
    }
    m
}

/// Resizes a block, keeping its contents: `realloc(NULL, n)` is malloc, `realloc(p, 0)` frees `p` and
/// returns null (glibc's behaviour); on failure null with ENOMEM and the block untouched.
///
/// # Safety
/// `m` is null or a live block of this allocator; on success only the returned pointer is valid.
pub unsafe fn realloc(m: *mut u8, n: usize) -> *mut u8 {
    if m.is_null() {
        return malloc(n);
    }
    if n == 0 {
        // SAFETY: per the contract.
        unsafe { free(m) };
        return ptr::null_mut();
    }
    if !aligned(m as usize) {
        report("realloc(): invalid pointer", m as usize);
    }
    let Some(nb) = request2size(n) else {
        return enomem();
    };
    if !is_heap_address(m as usize) {
        // SAFETY: per the contract.
        return unsafe { realloc_mapped(m, n, nb) };
    }
    // SAFETY: `m` lies in an existing heap.
    let c = unsafe { check_heap(m, "realloc(): invalid pointer") };
    // SAFETY: the chunk's size was checked, so its successor's header is inside the heap.
    if !unsafe { inuse(c.p) } {
        report("realloc(): invalid pointer (freed)", m as usize);
    }
    let t = thread::current();
    let careful = t.is_null() || !thread::enter(t);
    if !careful {
        // SAFETY: `t` is ours.
        unsafe {
            if let Some(i) = tcache::bin_for(c.size) {
                if tcache::contains(&(*t).tc, c.p, i) {
                    report("realloc(): invalid pointer (freed)", m as usize);
                }
            }
        }
    }
    let old_size = c.size;
    let owner = c.arena("realloc(): invalid pointer");
    let np = if careful {
        with_arena_try(owner, |a| {
            // SAFETY: validated in-use chunk of `a`, lock held by `with_arena_try`.
            unsafe { rl::int_realloc(a, c.p, old_size, nb) }
        })
    } else {
        let held = solo::lock(&owner.lock);
        // SAFETY: validated in-use chunk of `owner`, resized under its lock.
        let np = unsafe { rl::int_realloc(owner, c.p, old_size, nb) };
        // SAFETY: taken above.
        unsafe { solo::unlock(&owner.lock, held) };
        np
    };
    if !np.is_null() {
        if !careful {
            thread::leave(t);
        }
        return mem(np);
    }
    if careful {
        return enomem();
    }
    thread::leave(t);
    // The owning arena is out of memory: try anywhere else, then copy.
    let q = malloc(n);
    if q.is_null() {
        return q;
    }
    // SAFETY: both blocks are live and distinct; the old one is freed after the copy.
    unsafe {
        ptr::copy_nonoverlapping(m, q, (old_size - SIZE_SZ).min(n));
        free(m);
    }
    q
}

#[cold]
unsafe fn realloc_mapped(m: *mut u8, n: usize, nb: usize) -> *mut u8 {
    let p = chunk_of(m);
    // SAFETY: per the caller's contract; the record is validated by `mmap::remap`.
    unsafe {
        if !is_mmapped(p) {
            report("realloc(): invalid pointer", m as usize);
        }
        let np = mmap::remap(p, nb);
        if !np.is_null() {
            return mem(np);
        }
        let usable = size(p) - HDR;
        if usable >= n {
            return m;
        }
        let q = malloc(n);
        if q.is_null() {
            return q;
        }
        ptr::copy_nonoverlapping(m, q, usable);
        mmap::free(p);
        q
    }
}

/// Allocates `n` bytes aligned to `align`, any power of two (memalign semantics; `aligned_alloc`
/// and `posix_memalign` in the shim). A non-power of two gives null with EINVAL.
pub fn aligned_alloc(align: usize, n: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    if align <= ALIGNMENT {
        return malloc(n);
    }
    let align = align.max(MINSIZE);
    if align > MAX_REQUEST || n > MAX_REQUEST - align - MINSIZE {
        return enomem();
    }
    let Some(nb) = request2size(n) else {
        return enomem();
    };
    let t = thread::current();
    let careful = t.is_null() || !thread::enter(t);
    let av = careful_arena(t);
    let p = if careful {
        with_arena_try(av, |a| {
            // SAFETY: lock held by `with_arena_try`.
            unsafe { rl::int_memalign(a, align, nb) }
        })
    } else {
        let p = with_arena_retry(t, av, ptr::null_mut(), |a, _| {
            // SAFETY: lock held by `with_arena_retry`.
            unsafe { rl::int_memalign(a, align, nb) }
        });
        thread::leave(t);
        p
    };
    if p.is_null() {
        return enomem();
    }
    let m = mem(p);
    perturb_alloc(m, n);
    m
}

/// glibc's malloc_usable_size: the bytes the block may use (size − 8 for a heap chunk, − 16 for a
/// mapped one); 0 for null or for a chunk that looks free.
///
/// # Safety
/// `m` is null or a live block of this allocator.
pub unsafe fn usable_size(m: *mut u8) -> usize {
    if m.is_null() {
        return 0;
    }
    if !aligned(m as usize) {
        report("malloc_usable_size(): invalid pointer", m as usize);
    }
    let p = chunk_of(m);
    // SAFETY: per the contract; heap chunks are validated first, mapped ones by their record.
    unsafe {
        if !is_heap_address(m as usize) {
            if !is_mmapped(p) {
                report("malloc_usable_size(): invalid pointer", m as usize);
            }
            mmap::validate(p, "malloc_usable_size(): invalid pointer");
            return size(p) - HDR;
        }
        let c = check_heap(m, "malloc_usable_size(): invalid pointer");
        c.arena("malloc_usable_size(): invalid pointer");
        if inuse(c.p) {
            c.size - SIZE_SZ
        } else {
            0
        }
    }
}

/// malloc_trim: consolidates every arena, gives back whole free pages inside free chunks and trims
/// each arena's top down to `pad` bytes. True if any memory was released.
pub fn trim(pad: usize) -> bool {
    let how = crate::config::release_kind();
    let mut any = false;
    registry::for_each(|a| {
        a.lock.lock();
        // SAFETY: lock held.
        any |= unsafe { fr::trim_arena(a, pad, how) };
        // SAFETY: taken above.
        unsafe { a.lock.unlock() };
    });
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn malloc_free_sizes_and_usable() {
        for n in [
            0usize, 1, 24, 25, 100, 1000, 1032, 1033, 5000, 70_000, 200_000,
        ] {
            let m = malloc(n);
            assert!(!m.is_null());
            assert_eq!(m as usize % 16, 0);
            // SAFETY: `m` is a live block of at least `n` bytes.
            unsafe {
                let u = usable_size(m);
                assert!(u >= n, "usable {u} < {n}");
                ptr::write_bytes(m, 0xab, u);
                free(m);
            }
        }
        // glibc's numbers.
        let m = malloc(0);
        // SAFETY: live block.
        unsafe {
            assert_eq!(usable_size(m), 24);
            free(m);
        }
        let m = malloc(25);
        // SAFETY: live block.
        unsafe {
            assert_eq!(usable_size(m), 40);
            free(m);
        }
    }

    #[test]
    fn realloc_keeps_contents() {
        let mut m = malloc(10);
        // SAFETY: live blocks, sizes tracked.
        unsafe {
            ptr::write_bytes(m, 7, 10);
            let mut n = 10;
            while n < 3_000_000 {
                let next = n * 3 / 2;
                m = realloc(m, next);
                assert!(!m.is_null());
                for i in 0..n {
                    assert_eq!(*m.add(i), 7, "byte {i} after growing to {next}");
                }
                ptr::write_bytes(m, 7, next);
                n = next;
            }
            m = realloc(m, 100);
            assert_eq!(*m.add(99), 7);
            assert!(realloc(m, 0).is_null());
        }
    }

    #[test]
    fn calloc_zeroes_and_overflows() {
        let a = malloc(4000);
        // SAFETY: live block.
        unsafe {
            ptr::write_bytes(a, 0xff, 4000);
            free(a);
        }
        for n in [8usize, 500, 4000, 300_000] {
            let m = calloc(1, n);
            assert!(!m.is_null());
            // SAFETY: live block of `n` bytes.
            unsafe {
                assert!((0..n).all(|i| *m.add(i) == 0));
                free(m);
            }
        }
        assert!(calloc(usize::MAX, 2).is_null());
        assert_eq!(twinheap_page::error::errno(), libc::ENOMEM);
    }

    #[test]
    fn aligned_blocks() {
        for align in [1usize, 16, 32, 64, 4096, 1 << 16, 1 << 21] {
            let m = aligned_alloc(align, 100);
            assert!(!m.is_null());
            assert_eq!(m as usize % align, 0);
            // SAFETY: live block.
            unsafe {
                ptr::write_bytes(m, 1, 100);
                free(m);
            }
        }
        assert!(aligned_alloc(24, 10).is_null());
        assert_eq!(twinheap_page::error::errno(), libc::EINVAL);
    }

    #[test]
    fn many_blocks_do_not_overlap() {
        let mut blocks: Vec<(*mut u8, usize)> = Vec::new();
        let mut x = 12345u64;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = match x % 10 {
                0..=5 => (x >> 8) as usize % 128,
                6..=7 => (x >> 8) as usize % 1100,
                8 => (x >> 8) as usize % 70_000,
                _ => (x >> 8) as usize % 300_000,
            };
            let m = malloc(n);
            assert!(
                !m.is_null(),
                "malloc({n}) failed at step {i}: {:?}",
                crate::info::stats()
            );
            // SAFETY: live blocks; freed ones are removed from the list.
            unsafe {
                ptr::write_bytes(m, (i % 251) as u8, n);
                blocks.push((m, n));
                if x.is_multiple_of(3) {
                    let j = (x >> 20) as usize % blocks.len();
                    let (q, qn) = blocks.swap_remove(j);
                    let tag = *q;
                    if qn > 0 {
                        assert!((0..qn).all(|k| *q.add(k) == tag));
                    }
                    free(q);
                }
            }
        }
        for (q, _) in blocks {
            // SAFETY: live blocks.
            unsafe { free(q) };
        }
    }
}

#[cfg(test)]
mod heap_growth_tests {
    use super::*;

    #[test]
    fn heaps_chain_beyond_64_mib() {
        crate::config::PARAMS
            .mmap_threshold
            .store(1 << 30, core::sync::atomic::Ordering::Relaxed);
        let mut v = std::vec::Vec::new();
        for i in 0..400 {
            let m = malloc(250_000);
            assert!(!m.is_null(), "step {i}: {:?}", crate::info::stats());
            // SAFETY: live block.
            unsafe { m.write(1) };
            v.push(m);
        }
        for m in v {
            // SAFETY: live blocks.
            unsafe { free(m) };
        }
    }
}

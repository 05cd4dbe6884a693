//! Introspection and control in glibc's terms: mallinfo2, malloc_stats, malloc_info and mallopt,
//! plus [`stats`], this crate's own counters for tests and tools.
//!
//! Figures are gathered arena by arena, each under its own lock, so a report is exact per arena but
//! arenas are read at slightly different moments. Chunks in a tcache count as in use, as in glibc.

use core::fmt::{self, Write};
use core::sync::atomic::Ordering::Relaxed;

use crate::arena::{bin_at, consolidate, Arena};
use crate::chunk::*;
use crate::config::{self, PARAMS};
use crate::heap::is_heap_address;
use crate::mmap::{MAX_MMAPPED_MEM, MAX_N_MMAPS, MMAPPED_MEM, N_MMAPS};
use crate::registry;
use crate::secret::reveal;

/// glibc's `struct mallinfo2`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo2 {
    /// Heap bytes obtained from the OS (committed), mapped chunks excluded.
    pub arena: usize,
    /// Free chunks, top included.
    pub ordblks: usize,
    /// Chunks in fast bins.
    pub smblks: usize,
    /// Mapped chunks.
    pub hblks: usize,
    /// Bytes in mapped chunks.
    pub hblkhd: usize,
    /// Always 0.
    pub usmblks: usize,
    /// Bytes in fast bins.
    pub fsmblks: usize,
    /// Heap bytes in use.
    pub uordblks: usize,
    /// Heap bytes free (top and fast bins included).
    pub fordblks: usize,
    /// Size of the main arena's top chunk (what trim could release at most).
    pub keepcost: usize,
}

/// Per-arena figures.
#[derive(Clone, Copy, Default)]
struct ArenaInfo {
    system: usize,
    max_system: usize,
    free: usize,
    free_chunks: usize,
    fast: usize,
    fast_chunks: usize,
    top: usize,
    heaps: usize,
}

/// Reads one arena's figures under its lock; `bin` is called per non-empty bin with
/// (index, smallest, largest, total, count) (index 0..NFASTBINS for fast bins, then 1..NBINS + 16).
fn scan(a: &Arena, mut bin: impl FnMut(usize, usize, usize, usize, usize)) -> ArenaInfo {
    a.lock.lock();
    let mut info = ArenaInfo::default();
    // SAFETY: the lock is held; lists are walked as they are, with fast-bin links decoded.
    unsafe {
        let st = a.st.get();
        info.system = a.system_mem();
        info.max_system = (*st).max_system_mem;
        if !(*st).top.is_null() {
            info.top = size((*st).top);
        }
        let mut h = (*st).heap;
        while !h.is_null() {
            info.heaps += 1;
            h = (*h).prev;
        }
        for (i, fb) in a.fastbins.iter().enumerate() {
            let mut p = crate::fastbin::first(fb);
            let (mut n, mut total) = (0, 0);
            while !p.is_null() && aligned(p as usize) {
                n += 1;
                total += size(p);
                let field = core::ptr::addr_of!((*p).fd).cast::<usize>();
                p = reveal(field, field.read()) as P;
            }
            if n != 0 {
                let s = (i + 2) << 4;
                bin(i, s - ALIGN_MASK, s, total, n);
            }
            info.fast += total;
            info.fast_chunks += n;
        }
        for i in 1..NBINS {
            let b = bin_at(st, i);
            let mut p = (*b).fd;
            let (mut n, mut total, mut lo, mut hi) = (0, 0, usize::MAX, 0);
            while p != b {
                let s = size(p);
                n += 1;
                total += s;
                lo = lo.min(s);
                hi = hi.max(s);
                p = (*p).fd;
            }
            if n != 0 {
                bin(NFASTBINS + i, lo, hi, total, n);
            }
            info.free += total;
            info.free_chunks += n;
        }
        a.lock.unlock();
    }
    info
}

/// glibc's mallinfo2: totals over every arena and the mapped chunks.
pub fn mallinfo2() -> Mallinfo2 {
    let mut m = Mallinfo2::default();
    registry::for_each(|a| {
        let i = scan(a, |_, _, _, _, _| {});
        let avail = i.free + i.fast + i.top;
        m.arena += i.system;
        m.ordblks += i.free_chunks + usize::from(i.top != 0);
        m.smblks += i.fast_chunks;
        m.fsmblks += i.fast;
        m.fordblks += avail;
        m.uordblks += i.system.saturating_sub(avail);
        if a.index == 0 {
            m.keepcost = i.top;
        }
    });
    m.hblks = N_MMAPS.load(Relaxed);
    m.hblkhd = MMAPPED_MEM.load(Relaxed);
    m
}

/// A line-buffered writer handing complete chunks of text to a callback, with no allocation.
struct Out<'a> {
    buf: [u8; 256],
    len: usize,
    sink: &'a mut dyn FnMut(&[u8]),
}

impl<'a> Out<'a> {
    fn new(sink: &'a mut dyn FnMut(&[u8])) -> Self {
        Out {
            buf: [0; 256],
            len: 0,
            sink,
        }
    }

    fn flush(&mut self) {
        if self.len != 0 {
            (self.sink)(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

/// glibc's malloc_stats text: per arena, system and in-use bytes; then the totals including mapped
/// chunks and the mapping peaks. Values are printed as glibc prints them (`%10u`, so 32-bit).
pub fn malloc_stats(out: &mut dyn FnMut(&[u8])) {
    let mut w = Out::new(out);
    let (mut system, mut in_use) = (0usize, 0usize);
    let mut index = 0;
    registry::for_each(|a| {
        let i = scan(a, |_, _, _, _, _| {});
        let used = i.system.saturating_sub(i.free + i.fast + i.top);
        system += i.system;
        in_use += used;
        let _ = write!(
            w,
            "Arena {index}:\nsystem bytes     = {:>10}\nin use bytes     = {:>10}\n",
            i.system as u32, used as u32
        );
        index += 1;
    });
    let mapped = MMAPPED_MEM.load(Relaxed);
    let _ = write!(
        w,
        "Total (incl. mmap):\nsystem bytes     = {:>10}\nin use bytes     = {:>10}\nmax mmap regions = {:>10}\nmax mmap bytes   = {:>10}\n",
        (system + mapped) as u32,
        (in_use + mapped) as u32,
        MAX_N_MMAPS.load(Relaxed) as u32,
        MAX_MMAPPED_MEM.load(Relaxed)
    );
    w.flush();
}

/// glibc's malloc_info XML (version 1). `options` must be 0, otherwise EINVAL and -1.
pub fn malloc_info(options: i32, out: &mut dyn FnMut(&[u8])) -> i32 {
    if options != 0 {
        twinheap_page::error::set_errno(libc::EINVAL);
        return -1;
    }
    let mut w = Out::new(out);
    let _ = writeln!(w, "<malloc version=\"1\">");
    let (mut fast_n, mut fast_b, mut rest_n, mut rest_b) = (0, 0, 0, 0);
    let (mut sys, mut sys_max, mut aspace) = (0, 0, 0);
    let mut index = 0;
    registry::for_each(|a| {
        let _ = writeln!(w, "<heap nr=\"{index}\">\n<sizes>");
        let mut unsorted = (0, 0, 0, 0);
        let i = scan(a, |bin, lo, hi, total, count| {
            if bin == NFASTBINS + 1 {
                unsorted = (lo, hi, total, count);
            } else {
                let _ = writeln!(
                    w,
                    "  <size from=\"{lo}\" to=\"{hi}\" total=\"{total}\" count=\"{count}\"/>"
                );
            }
        });
        if unsorted.3 != 0 {
            let (lo, hi, total, count) = unsorted;
            let _ = writeln!(
                w,
                "  <unsorted from=\"{lo}\" to=\"{hi}\" total=\"{total}\" count=\"{count}\"/>"
            );
        }
        let rest_count = i.free_chunks + usize::from(i.top != 0);
        let rest_size = i.free + i.top;
        let _ = writeln!(
            w,
            "</sizes>\n<total type=\"fast\" count=\"{}\" size=\"{}\"/>\n<total type=\"rest\" count=\"{rest_count}\" size=\"{rest_size}\"/>",
            i.fast_chunks, i.fast
        );
        let _ = writeln!(
            w,
            "<system type=\"current\" size=\"{}\"/>\n<system type=\"max\" size=\"{}\"/>",
            i.system, i.max_system
        );
        let _ = writeln!(
            w,
            "<aspace type=\"total\" size=\"{}\"/>\n<aspace type=\"mprotect\" size=\"{}\"/>",
            i.system, i.system
        );
        if a.index != 0 {
            let _ = writeln!(w, "<aspace type=\"subheaps\" size=\"{}\"/>", i.heaps);
        }
        let _ = writeln!(w, "</heap>");
        fast_n += i.fast_chunks;
        fast_b += i.fast;
        rest_n += rest_count;
        rest_b += rest_size;
        sys += i.system;
        sys_max += i.max_system;
        aspace += i.system;
        index += 1;
    });
    let _ = writeln!(
        w,
        "<total type=\"fast\" count=\"{fast_n}\" size=\"{fast_b}\"/>\n<total type=\"rest\" count=\"{rest_n}\" size=\"{rest_b}\"/>\n<total type=\"mmap\" count=\"{}\" size=\"{}\"/>",
        N_MMAPS.load(Relaxed),
        MMAPPED_MEM.load(Relaxed)
    );
    let _ = writeln!(
        w,
        "<system type=\"current\" size=\"{sys}\"/>\n<system type=\"max\" size=\"{sys_max}\"/>\n<aspace type=\"total\" size=\"{aspace}\"/>\n<aspace type=\"mprotect\" size=\"{aspace}\"/>\n</malloc>"
    );
    w.flush();
    0
}

pub const M_MXFAST: i32 = 1;
pub const M_TRIM_THRESHOLD: i32 = -1;
pub const M_TOP_PAD: i32 = -2;
pub const M_MMAP_THRESHOLD: i32 = -3;
pub const M_MMAP_MAX: i32 = -4;
pub const M_CHECK_ACTION: i32 = -5;
pub const M_PERTURB: i32 = -6;
pub const M_ARENA_TEST: i32 = -7;
pub const M_ARENA_MAX: i32 = -8;

/// glibc's mallopt: the same parameter numbers and return values (1 done or ignored, 0 rejected).
/// Like glibc it consolidates the main arena first. Negative values of size parameters become huge
/// sizes, as C's conversion to size_t does.
pub fn mallopt(param: i32, value: i32) -> i32 {
    let main = registry::main();
    main.lock.lock();
    // SAFETY: lock held.
    unsafe { consolidate(main) };
    let size = value as isize as usize;
    let p = &PARAMS;
    let fixed = |slot: &core::sync::atomic::AtomicUsize, v: usize| {
        slot.store(v, Relaxed);
        p.no_dyn_threshold.store(true, Relaxed);
        1
    };
    let r = match param {
        M_MXFAST => i32::from(value >= 0 && config::set_mxfast(value as usize)),
        M_TRIM_THRESHOLD => fixed(&p.trim_threshold, size),
        M_TOP_PAD => fixed(&p.top_pad, size),
        M_MMAP_THRESHOLD => fixed(&p.mmap_threshold, size),
        M_MMAP_MAX => fixed(&p.mmap_max, value.max(0) as usize),
        M_PERTURB => {
            p.perturb.store((value & 0xff) as usize, Relaxed);
            1
        }
        M_ARENA_TEST => {
            if value > 0 {
                p.arena_test.store(value as usize, Relaxed);
            }
            1
        }
        M_ARENA_MAX => {
            if value > 0 {
                p.arena_max.store(value as usize, Relaxed);
            }
            1
        }
        _ => 1,
    };
    // SAFETY: taken above.
    unsafe { main.lock.unlock() };
    r
}

/// This crate's own figures, for tests and tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Arenas created so far (the main arena included); never shrinks.
    pub arenas: usize,
    /// Heaps (64 MiB reservations, and big heaps of one chunk each) currently held by all arenas.
    pub heaps: usize,
    /// Heap bytes committed for chunks (mallinfo2's `arena`).
    pub heap_bytes: usize,
    /// Heap bytes in use by the program (tcache contents included).
    pub in_use_bytes: usize,
    /// Free heap bytes: bins, fast bins and top.
    pub free_bytes: usize,
    /// Live chunks with their own mapping, and their bytes.
    pub mmapped_chunks: usize,
    pub mmapped_bytes: usize,
    /// Bytes mapped for per-thread records.
    pub record_bytes: usize,
    /// The page backend's counters: bytes committed (read-write) and address space held.
    pub committed: usize,
    pub mapped: usize,
    /// Frees parked so far because a signal handler freed while its thread held the arena lock,
    /// and the most parked frees one interrupted call finished at once.
    pub parked_frees: usize,
    pub parked_batch_max: usize,
    /// Heaps backed by hugetlbfs pages (`hugetlb` 2 or a page size, when the system has them).
    pub hugetlb_heaps: usize,
}

/// Gathers [`ArenaStats`].
pub fn stats() -> ArenaStats {
    let mut s = ArenaStats::default();
    registry::for_each(|a| {
        let i = scan(a, |_, _, _, _, _| {});
        let avail = i.free + i.fast + i.top;
        s.heaps += i.heaps;
        s.heap_bytes += i.system;
        s.free_bytes += avail;
        s.in_use_bytes += i.system.saturating_sub(avail);
    });
    s.arenas = registry::narenas();
    s.heaps += crate::heap::BIG_HEAPS.load(Relaxed);
    s.hugetlb_heaps = crate::heap::HUGETLB_HEAPS.load(Relaxed);
    s.parked_frees = crate::thread::PARKED_FREES.load(Relaxed);
    s.parked_batch_max = crate::thread::PARKED_BATCH_MAX.load(Relaxed);
    s.mmapped_chunks = N_MMAPS.load(Relaxed);
    s.mmapped_bytes = MMAPPED_MEM.load(Relaxed);
    s.record_bytes = crate::thread::RECORD_BYTES.load(Relaxed);
    let page = twinheap_page::stats();
    s.committed = page.committed;
    s.mapped = page.mapped;
    s
}

/// Which arena (0 = main) owns block `m`; None for null, a mapped chunk, or a pointer outside every
/// heap. For tests and tools.
///
/// # Safety
/// `m` is null or a live block of this allocator.
pub unsafe fn arena_index(m: *mut u8) -> Option<usize> {
    if m.is_null() || !is_heap_address(m as usize) {
        return None;
    }
    // SAFETY: `m` lies in an existing heap.
    unsafe { registry::arena_of(chunk_of(m)).map(|a| a.index) }
}

/// True when block `m` has its own mapping (served by mmap rather than a heap).
///
/// # Safety
/// `m` is a live block of this allocator.
pub unsafe fn is_mapped(m: *mut u8) -> bool {
    // SAFETY: per the contract the header is readable.
    !is_heap_address(m as usize) && unsafe { is_mmapped(chunk_of(m)) }
}

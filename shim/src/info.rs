//! `mallinfo2`, `malloc_stats`, `malloc_info`, `malloc_trim` and `mallopt` for twinheap's allocators
//! (the system allocator answers these itself, see `c_api.rs`). The arena allocator implements them
//! in glibc's terms; for slab, which has no glibc-shaped state, they are built from its statistics.
//!
//! slab has no arenas, bins or top chunk, so glibc's fields are mapped as follows (docs/shim.md):
//! `arena` = bytes mapped for user memory (groups, large blocks, tombstones), `ordblks` = free slots,
//! `hblks` = large blocks in use, `uordblks` = bytes of the slots (or mappings) holding blocks in use,
//! `fordblks` = `arena - uordblks`; `smblks`, `hblkhd`, `usmblks`, `fsmblks` and `keepcost` are 0
//! (large blocks' bytes are counted in `arena`/`uordblks`, not in `hblkhd`).

use core::ffi::c_int;
use core::fmt::Write;

use twinheap::arena_allocator as arena;
use twinheap::slab_allocator as slab;

use crate::dispatch::Backend;
use crate::out::Chunked;

/// glibc's `struct mallinfo2` (every field a size_t, in glibc's order): the arena allocator's own
/// definition, which slab's figures and the C ABI reuse.
pub use twinheap::arena_allocator::Mallinfo2;

/// glibc's old `struct mallinfo` (int fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

impl Mallinfo {
    /// The old structure; values that do not fit an int are clamped to INT_MAX (glibc truncates them,
    /// which can show negative numbers; a clamp at least stays monotonic).
    pub fn from2(m: &Mallinfo2) -> Self {
        let c = |v: usize| v.min(c_int::MAX as usize) as c_int;
        Mallinfo {
            arena: c(m.arena),
            ordblks: c(m.ordblks),
            smblks: c(m.smblks),
            hblks: c(m.hblks),
            hblkhd: c(m.hblkhd),
            usmblks: c(m.usmblks),
            fsmblks: c(m.fsmblks),
            uordblks: c(m.uordblks),
            fordblks: c(m.fordblks),
            keepcost: c(m.keepcost),
        }
    }
}

fn slab_mallinfo2() -> Mallinfo2 {
    let s = slab::stats();
    let free_slots: usize = s
        .classes
        .iter()
        .map(|c| c.slots.saturating_sub(c.blocks))
        .sum();
    Mallinfo2 {
        arena: s.mapped,
        ordblks: free_slots,
        hblks: s.large_blocks,
        uordblks: s.in_slots,
        fordblks: s.mapped.saturating_sub(s.in_slots),
        ..Mallinfo2::default()
    }
}

/// `mallinfo2()` for slab and arena (the system allocator answers itself, see c_api).
pub fn mallinfo2(b: Backend) -> Mallinfo2 {
    match b {
        Backend::Slab | Backend::Boot | Backend::System => slab_mallinfo2(),
        Backend::Arena => arena::mallinfo2(),
    }
}

/// Bytes the allocator holds from the OS, for the `TWINHEAP_STATS` summary.
pub fn mapped_bytes() -> usize {
    match crate::dispatch::chosen() {
        Some(Backend::Slab) => {
            let s = slab::stats();
            s.mapped + s.metadata
        }
        Some(Backend::Arena) => {
            let m = arena::mallinfo2();
            m.arena + m.hblkhd
        }
        Some(Backend::System) => {
            let r = crate::system::real();
            match r.mallinfo2 {
                Some(f) => {
                    // SAFETY: the C library's mallinfo2 has no preconditions.
                    let m = unsafe { f() };
                    m.arena + m.hblkhd
                }
                None => 0,
            }
        }
        _ => 0,
    }
}

/// `malloc_trim(pad)`: 1 if memory went back to the OS. slab keeps no padding, so it ignores `pad`.
pub fn trim(b: Backend, pad: usize) -> c_int {
    match b {
        Backend::Slab | Backend::Boot | Backend::System => slab::trim() as c_int,
        Backend::Arena => arena::trim(pad) as c_int,
    }
}

/// `mallopt(param, value)`: the arena allocator honours glibc's parameters; slab has none, so under
/// slab every call returns 0 ("not done"). slab's knobs are tunables (docs/tunables.md).
pub fn mallopt(b: Backend, param: c_int, value: c_int) -> c_int {
    match b {
        Backend::Slab | Backend::Boot | Backend::System => 0,
        Backend::Arena => arena::mallopt(param, value),
    }
}

fn slab_malloc_stats(sink: &mut dyn FnMut(&[u8])) {
    let s = slab::stats();
    let mut w = Chunked::new(sink);
    let _ = write!(
        w,
        "twinheap slab:\n\
         system bytes     = {:>10}\n\
         in use bytes     = {:>10}\n\
         requested bytes  = {:>10}\n\
         metadata bytes   = {:>10}\n\
         large blocks     = {:>10}\n\
         class     blocks      slots     groups\n",
        s.mapped + s.metadata,
        s.in_slots,
        s.requested,
        s.metadata,
        s.large_blocks,
    );
    for (i, c) in s.classes.iter().enumerate().filter(|(_, c)| c.groups > 0) {
        let _ = writeln!(
            w,
            "{i:>5} {:>10} {:>10} {:>10}",
            c.blocks, c.slots, c.groups
        );
    }
    w.finish();
}

/// `malloc_stats()`: a summary on `sink` (stderr).
pub fn malloc_stats(b: Backend, sink: &mut dyn FnMut(&[u8])) {
    match b {
        Backend::Slab | Backend::Boot | Backend::System => slab_malloc_stats(sink),
        Backend::Arena => arena::malloc_stats(sink),
    }
}

fn slab_malloc_info(sink: &mut dyn FnMut(&[u8])) -> c_int {
    let s = slab::stats();
    let mut w = Chunked::new(sink);
    let _ = w.write_str("<malloc version=\"twinheap-slab-1\">\n<heap nr=\"0\">\n<sizes>\n");
    for (i, c) in s.classes.iter().enumerate().filter(|(_, c)| c.groups > 0) {
        let _ = writeln!(
            w,
            "  <class index=\"{i}\" blocks=\"{}\" slots=\"{}\" groups=\"{}\"/>",
            c.blocks, c.slots, c.groups
        );
    }
    let _ = write!(
        w,
        "</sizes>\n\
         <total type=\"mmap\" count=\"{}\" size=\"{}\"/>\n\
         <system type=\"current\" size=\"{}\"/>\n\
         <aspace type=\"total\" size=\"{}\"/>\n\
         <requested size=\"{}\"/>\n\
         <in_use size=\"{}\"/>\n\
         </heap>\n</malloc>\n",
        s.large_blocks,
        s.mapped,
        s.mapped + s.metadata,
        s.mapped + s.metadata,
        s.requested,
        s.in_slots,
    );
    w.finish();
    0
}

/// `malloc_info(options, ...)`: XML on `sink`; `options` must be 0, else it returns EINVAL (as glibc
/// does: the code is the return value, errno is not set).
pub fn malloc_info(b: Backend, options: c_int, sink: &mut dyn FnMut(&[u8])) -> c_int {
    if options != 0 {
        return libc::EINVAL;
    }
    match b {
        Backend::Slab | Backend::Boot | Backend::System => slab_malloc_info(sink),
        Backend::Arena => arena::malloc_info(0, sink),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_mallinfo_clamps() {
        let m = Mallinfo2 {
            arena: usize::MAX,
            uordblks: 5,
            ..Mallinfo2::default()
        };
        let old = Mallinfo::from2(&m);
        assert_eq!(old.arena, c_int::MAX);
        assert_eq!(old.uordblks, 5);
    }

    #[test]
    fn malloc_info_rejects_options_without_errno() {
        crate::out::set_errno(0);
        let mut sink = |_: &[u8]| panic!("nothing may be written");
        assert_eq!(malloc_info(Backend::Slab, 1, &mut sink), libc::EINVAL);
        // SAFETY: reading this thread's errno.
        assert_eq!(unsafe { *libc::__errno_location() }, 0);
    }

    #[test]
    fn slab_reports_are_well_formed() {
        let p = slab::malloc(1000);
        assert!(!p.is_null());
        let mut text = std::vec::Vec::new();
        assert_eq!(
            malloc_info(Backend::Slab, 0, &mut |b: &[u8]| text.extend_from_slice(b)),
            0
        );
        let xml = std::string::String::from_utf8(text).unwrap();
        assert!(xml.starts_with("<malloc version=\"twinheap-slab-1\">"));
        assert!(xml.trim_end().ends_with("</malloc>"));
        let mut stats = std::vec::Vec::new();
        malloc_stats(Backend::Slab, &mut |b: &[u8]| stats.extend_from_slice(b));
        let stats = std::string::String::from_utf8(stats).unwrap();
        assert!(stats.contains("in use bytes"));
        let m = mallinfo2(Backend::Slab);
        assert!(m.uordblks >= 1000 && m.arena >= m.uordblks);
        // SAFETY: `p` is live and freed once.
        unsafe { slab::free(p) };
    }
}

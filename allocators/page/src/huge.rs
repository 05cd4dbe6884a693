//! Huge pages: what the kernel offers and how to ask for it.
//!
//! Two opt-in modes, the equivalents of glibc.malloc.hugetlb=1 and =2:
//! - transparent huge pages: an ordinary mapping plus `madvise(MADV_HUGEPAGE)`; the kernel may or may
//!   not back it with huge pages, and refusing is not an error;
//! - hugetlbfs pages: `mmap(MAP_HUGETLB)`, which fails unless huge pages are reserved
//!   (vm.nr_hugepages); callers fall back to base pages.
//!
//! Sizes are read from /proc and /sys once and cached; nothing here allocates.
//!
//! [`reserve_hugetlb`] gives a [`Reservation`] backed by hugetlbfs pages (an arena heap with
//! glibc.malloc.hugetlb=2): its huge pages are reserved when it is made, so committing and touching
//! them later cannot fail with SIGBUS, and a system without enough huge pages refuses it at once.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::error::{ErrnoGuard, Error, Op};
use crate::reserve::Reservation;

/// The kind of pages a mapping asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Huge {
    /// Base pages.
    #[default]
    None,
    /// Base pages advised with MADV_HUGEPAGE (transparent huge pages).
    Transparent,
    /// hugetlbfs pages of the given size in bytes, or of the system default size when 0.
    /// Falls back to base pages when the kernel has none to give.
    HugeTlb(usize),
}

const UNKNOWN: usize = 0;
const ABSENT: usize = usize::MAX;

static HUGETLB_DEFAULT: AtomicUsize = AtomicUsize::new(UNKNOWN);
static THP_SIZE: AtomicUsize = AtomicUsize::new(UNKNOWN);

fn cached(slot: &AtomicUsize, read: fn() -> Option<usize>) -> Option<usize> {
    let value = match slot.load(Relaxed) {
        UNKNOWN => {
            let v = read().filter(|v| v.is_power_of_two()).unwrap_or(ABSENT);
            slot.store(v, Relaxed);
            v
        }
        v => v,
    };
    (value != ABSENT).then_some(value)
}

/// The default hugetlbfs page size (`Hugepagesize:` in /proc/meminfo), if the kernel has one.
pub fn hugetlb_default_size() -> Option<usize> {
    cached(&HUGETLB_DEFAULT, || {
        let mut buf = [0u8; 4096];
        let n = crate::sys::read_file(c"/proc/meminfo", &mut buf)?;
        let kib = crate::sys::find_number_after(&buf[..n], b"Hugepagesize:")?;
        usize::try_from(kib.checked_mul(1024)?).ok()
    })
}

/// The transparent huge page size (`hpage_pmd_size`), if THP is compiled into the kernel.
pub fn thp_size() -> Option<usize> {
    cached(&THP_SIZE, || {
        let mut buf = [0u8; 64];
        let n = crate::sys::read_file(
            c"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
            &mut buf,
        )?;
        let bytes = crate::sys::find_number_after(&buf[..n], b"")?;
        usize::try_from(bytes).ok()
    })
}

/// The system-wide THP policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThpMode {
    /// Every eligible anonymous mapping may get huge pages; advice changes nothing.
    Always,
    /// Only ranges advised with MADV_HUGEPAGE get huge pages.
    Madvise,
    /// THP is off.
    Never,
}

/// Reads the THP policy (the bracketed word in /sys/kernel/mm/transparent_hugepage/enabled).
pub fn thp_mode() -> Option<ThpMode> {
    let mut buf = [0u8; 128];
    let n = crate::sys::read_file(c"/sys/kernel/mm/transparent_hugepage/enabled", &mut buf)?;
    let text = &buf[..n];
    let open = text.iter().position(|&b| b == b'[')?;
    let close = open + text[open..].iter().position(|&b| b == b']')?;
    match &text[open + 1..close] {
        b"always" => Some(ThpMode::Always),
        b"madvise" => Some(ThpMode::Madvise),
        b"never" => Some(ThpMode::Never),
        _ => None,
    }
}

/// Asks for transparent huge pages on `[ptr, ptr + len)`. A kernel without THP answers EINVAL; the
/// memory stays usable either way, so callers may ignore the result. Keeps errno on success.
///
/// # Safety
/// The range must be mapped by the caller and page-aligned.
pub unsafe fn advise_hugepage(ptr: *mut u8, len: usize) -> Result<(), Error> {
    let errno = ErrnoGuard::save();
    // SAFETY: the caller owns the mapped range; MADV_HUGEPAGE changes no contents.
    if unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) } != 0 {
        let err = Error::last(Op::Advise);
        drop(errno);
        return Err(err);
    }
    Ok(())
}

/// Reserves `len` bytes of address space aligned to `align`, backed by hugetlbfs pages of `size`
/// bytes (0: the default huge page size), all PROT_NONE and nothing committed. `len` and `align`
/// must be multiples of the huge page size. The huge pages are reserved now (no MAP_NORESERVE): the
/// call fails with ENOMEM when the system has not enough of them, and the caller falls back to base
/// pages. Commit and decommit only at multiples of the huge page size.
///
/// Errors: EINVAL for a size that is not a power of two, or a length or alignment that is not a
/// multiple of the page size used; ENOMEM (or whatever mmap says) when the kernel refuses.
pub fn reserve_hugetlb(len: usize, align: usize, size: usize) -> Result<Reservation, Error> {
    let page = if size == 0 {
        hugetlb_default_size().ok_or(Error::new(Op::Reserve, libc::ENOMEM))?
    } else {
        size
    };
    let invalid = Error::new(Op::Reserve, libc::EINVAL);
    if !page.is_power_of_two() || len == 0 || !len.is_multiple_of(page) || !align.is_power_of_two()
    {
        return Err(invalid);
    }
    let align = align.max(page);
    // Aligned address space first (base pages, no memory), then hugetlbfs pages over it in place:
    // an aligned hugetlb mapping made directly would have to reserve the alignment slack too.
    let start = crate::raw::reserve_none(len, align, 0, Op::Reserve)?;
    let flags = libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | libc::MAP_FIXED
        | libc::MAP_HUGETLB
        | ((page.trailing_zeros() as libc::c_int) << libc::MAP_HUGE_SHIFT);
    // SAFETY: `[start, start + len)` is our own fresh reservation; MAP_FIXED replaces only it.
    let p = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let err = Error::last(Op::Reserve);
        // SAFETY: the reservation is ours and unused.
        unsafe { crate::raw::munmap_quiet(start, len) };
        return Err(err);
    }
    crate::stats::add_mapping(len, 0);
    let base = core::ptr::NonNull::new(start as *mut u8).ok_or(invalid)?;
    // SAFETY: exactly the range reserved above, nothing committed.
    Ok(unsafe { Reservation::from_raw_parts(base, len, 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_two_when_present() {
        if let Some(size) = hugetlb_default_size() {
            assert!(size.is_power_of_two() && size >= crate::page_size());
        }
        if let Some(size) = thp_size() {
            assert!(size.is_power_of_two() && size >= crate::page_size());
        }
        // Cached answers are stable.
        assert_eq!(hugetlb_default_size(), hugetlb_default_size());
    }

    #[test]
    fn hugetlb_reservations_work_or_fail_cleanly() {
        assert_eq!(
            reserve_hugetlb(3 << 20, 1 << 21, 3 << 20).map(|_| ()),
            Err(Error::new(Op::Reserve, libc::EINVAL))
        );
        let Some(size) = hugetlb_default_size() else {
            return;
        };
        match reserve_hugetlb(2 * size, 4 * size, 0) {
            Ok(mut r) => {
                assert_eq!(r.base().as_ptr() as usize % (4 * size), 0);
                assert_eq!(r.len(), 2 * size);
                r.commit(size).expect("commit one huge page");
                // SAFETY: committed, ours.
                unsafe {
                    r.base().as_ptr().write(7);
                    r.base().as_ptr().add(size - 1).write(9);
                    assert_eq!(r.base().as_ptr().read(), 7);
                    r.unreserve().expect("unmap");
                }
            }
            // No huge pages configured: refused at once, nothing left mapped. Other tests map and
            // unmap in parallel threads, so the process-wide count is compared in a forked child,
            // where no other thread runs.
            Err(e) => {
                assert_ne!(e.errno, libc::EINVAL, "{e:?}");
                // SAFETY: the child only makes system calls and reads atomic counters, then leaves
                // with _exit; the parent only waits.
                unsafe {
                    let pid = libc::fork();
                    assert!(pid >= 0);
                    if pid == 0 {
                        let before = crate::stats().mapped;
                        let refused = reserve_hugetlb(2 * size, 4 * size, 0).is_err();
                        let clean = crate::stats().mapped == before;
                        libc::_exit(i32::from(!refused) | i32::from(!clean) << 1);
                    }
                    let mut status = 0;
                    assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
                    assert!(libc::WIFEXITED(status), "child status {status:#x}");
                    assert_eq!(
                        libc::WEXITSTATUS(status),
                        0,
                        "1: not refused, 2: left mapped"
                    );
                }
            }
        }
    }
}

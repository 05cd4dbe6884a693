//! Huge pages: what the kernel offers and how to ask for it.
//!
//! Two opt-in modes, the equivalents of glibc.malloc.hugetlb=1 and =2:
//! - transparent huge pages: an ordinary mapping plus `madvise(MADV_HUGEPAGE)`; the kernel may or may
//!   not back it with huge pages, and refusing is not an error;
//! - hugetlbfs pages: `mmap(MAP_HUGETLB)`, which fails unless huge pages are reserved
//!   (vm.nr_hugepages); callers fall back to base pages.
//!
//! Sizes are read from /proc and /sys once and cached; nothing here allocates.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::error::{ErrnoGuard, Error, Op};

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
}

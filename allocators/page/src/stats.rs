//! Process-wide counters of what the backend holds from the OS.
//!
//! Plain relaxed atomics: each counter is exact on its own (every change is one atomic add or sub),
//! but a [`PageStats`] snapshot reads them one after another, so under concurrent mapping its fields
//! may come from slightly different moments. Only syscall paths touch these, never allocation fast paths.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static MAPPED: AtomicUsize = AtomicUsize::new(0);
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
static MAPPINGS: AtomicUsize = AtomicUsize::new(0);
static PEAK_MAPPED: AtomicUsize = AtomicUsize::new(0);

/// A snapshot of the backend's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Address space held: mappings, guard pages and whole reservations, committed or not.
    pub mapped: usize,
    /// Bytes currently readable and writable (commit charge). Released pages stay committed: they are
    /// still accessible, only not resident.
    pub committed: usize,
    /// Live mappings plus live reservations.
    pub mappings: usize,
    /// Highest value `mapped` has reached.
    pub peak_mapped: usize,
}

/// Reads the counters.
pub fn stats() -> PageStats {
    PageStats {
        mapped: MAPPED.load(Relaxed),
        committed: COMMITTED.load(Relaxed),
        mappings: MAPPINGS.load(Relaxed),
        peak_mapped: PEAK_MAPPED.load(Relaxed),
    }
}

pub(crate) fn add_mapping(mapped: usize, committed: usize) {
    MAPPINGS.fetch_add(1, Relaxed);
    grow(mapped, committed);
}

pub(crate) fn remove_mapping(mapped: usize, committed: usize) {
    MAPPINGS.fetch_sub(1, Relaxed);
    shrink(mapped, committed);
}

pub(crate) fn grow(mapped: usize, committed: usize) {
    if mapped != 0 {
        let now = MAPPED.fetch_add(mapped, Relaxed) + mapped;
        PEAK_MAPPED.fetch_max(now, Relaxed);
    }
    if committed != 0 {
        COMMITTED.fetch_add(committed, Relaxed);
    }
}

pub(crate) fn shrink(mapped: usize, committed: usize) {
    if mapped != 0 {
        MAPPED.fetch_sub(mapped, Relaxed);
    }
    if committed != 0 {
        COMMITTED.fetch_sub(committed, Relaxed);
    }
}

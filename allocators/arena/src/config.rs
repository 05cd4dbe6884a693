//! Run-time parameters: the `arena.*` tunables (glibc's `malloc_par`), set by [`init`] and `mallopt`.
//!
//! Every parameter is a relaxed atomic read on the paths that need it. The mmap and trim thresholds are
//! dynamic as in glibc (freeing a large mapped block raises them) until any of the four
//! threshold-related parameters is set explicitly, by [`Config`] or by `mallopt`.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use twinheap_page::Release;

use crate::chunk::{self, csize2tidx, request2size};

/// The arena allocator's options: every `arena.*` tunable. `None` (or 0 for `arena_max`) means "not
/// set": glibc's default applies and, for the thresholds, stays dynamic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub top_pad: Option<usize>,
    /// 0 off; otherwise blocks are filled with `!perturb` when handed out and `perturb` when freed.
    pub perturb: u8,
    pub mmap_threshold: Option<usize>,
    pub trim_threshold: Option<usize>,
    pub mmap_max: Option<usize>,
    /// 0: unset (8 × online CPUs once more than `arena_test` arenas exist).
    pub arena_max: usize,
    pub arena_test: usize,
    pub tcache_max: usize,
    pub tcache_count: usize,
    pub tcache_unsorted_limit: usize,
    pub mxfast: usize,
    /// 0 off, 1 transparent huge pages, 2 MAP_HUGETLB default size, N a huge page size.
    pub hugetlb: usize,
    /// How malloc_trim gives back free pages inside the heap (`page.release`).
    pub release: Release,
}

pub(crate) const DEFAULT_MMAP_THRESHOLD: usize = 128 << 10;
pub(crate) const DEFAULT_MMAP_THRESHOLD_MAX: usize = 32 << 20;
pub(crate) const DEFAULT_TRIM_THRESHOLD: usize = 128 << 10;
pub(crate) const DEFAULT_TOP_PAD: usize = 128 << 10;
pub(crate) const DEFAULT_MMAP_MAX: usize = 65536;
pub(crate) const DEFAULT_ARENA_TEST: usize = 8;

impl Config {
    /// glibc's defaults.
    pub const fn default() -> Config {
        Config {
            top_pad: None,
            perturb: 0,
            mmap_threshold: None,
            trim_threshold: None,
            mmap_max: None,
            arena_max: 0,
            arena_test: DEFAULT_ARENA_TEST,
            tcache_max: chunk::MAX_TCACHE_SIZE,
            tcache_count: chunk::TCACHE_FILL_COUNT,
            tcache_unsorted_limit: 0,
            mxfast: chunk::DEFAULT_MXFAST,
            hugetlb: 0,
            release: Release::DontNeed,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::default()
    }
}

pub(crate) struct Params {
    pub mmap_threshold: AtomicUsize,
    pub trim_threshold: AtomicUsize,
    pub top_pad: AtomicUsize,
    pub mmap_max: AtomicUsize,
    pub no_dyn_threshold: AtomicBool,
    pub arena_max: AtomicUsize,
    pub arena_test: AtomicUsize,
    /// Number of tcache bins in use (derived from tcache_max).
    pub tcache_bins: AtomicUsize,
    pub tcache_max_bytes: AtomicUsize,
    pub tcache_count: AtomicUsize,
    pub tcache_unsorted_limit: AtomicUsize,
    /// Largest fastbin chunk size.
    pub max_fast: AtomicUsize,
    pub perturb: AtomicUsize,
    pub hugetlb: AtomicUsize,
    pub release_free: AtomicBool,
}

pub(crate) static PARAMS: Params = Params {
    mmap_threshold: AtomicUsize::new(DEFAULT_MMAP_THRESHOLD),
    trim_threshold: AtomicUsize::new(DEFAULT_TRIM_THRESHOLD),
    top_pad: AtomicUsize::new(DEFAULT_TOP_PAD),
    mmap_max: AtomicUsize::new(DEFAULT_MMAP_MAX),
    no_dyn_threshold: AtomicBool::new(false),
    arena_max: AtomicUsize::new(0),
    arena_test: AtomicUsize::new(DEFAULT_ARENA_TEST),
    tcache_bins: AtomicUsize::new(chunk::TCACHE_MAX_BINS),
    tcache_max_bytes: AtomicUsize::new(chunk::MAX_TCACHE_SIZE),
    tcache_count: AtomicUsize::new(chunk::TCACHE_FILL_COUNT),
    tcache_unsorted_limit: AtomicUsize::new(0),
    max_fast: AtomicUsize::new(chunk::max_fast_for(chunk::DEFAULT_MXFAST)),
    perturb: AtomicUsize::new(0),
    hugetlb: AtomicUsize::new(0),
    release_free: AtomicBool::new(false),
};

/// Applies `config`. Meant for the first use; calling it again before any allocation is fine, and
/// later calls behave like the matching `mallopt` calls.
pub fn init(config: &Config) {
    let p = &PARAMS;
    let mut fixed = false;
    if let Some(v) = config.top_pad {
        p.top_pad.store(v, Relaxed);
        fixed = true;
    } else {
        p.top_pad.store(DEFAULT_TOP_PAD, Relaxed);
    }
    if let Some(v) = config.mmap_threshold {
        p.mmap_threshold.store(v, Relaxed);
        fixed = true;
    } else {
        p.mmap_threshold.store(DEFAULT_MMAP_THRESHOLD, Relaxed);
    }
    if let Some(v) = config.trim_threshold {
        p.trim_threshold.store(v, Relaxed);
        fixed = true;
    } else {
        p.trim_threshold.store(DEFAULT_TRIM_THRESHOLD, Relaxed);
    }
    if let Some(v) = config.mmap_max {
        p.mmap_max.store(v, Relaxed);
        fixed = true;
    } else {
        p.mmap_max.store(DEFAULT_MMAP_MAX, Relaxed);
    }
    p.no_dyn_threshold.store(fixed, Relaxed);
    p.perturb.store(usize::from(config.perturb), Relaxed);
    p.arena_max.store(config.arena_max, Relaxed);
    p.arena_test.store(config.arena_test.max(1), Relaxed);
    set_tcache_max(config.tcache_max);
    set_tcache_count(config.tcache_count);
    p.tcache_unsorted_limit
        .store(config.tcache_unsorted_limit, Relaxed);
    set_mxfast(config.mxfast);
    p.hugetlb.store(config.hugetlb, Relaxed);
    p.release_free
        .store(config.release == Release::Free, Relaxed);
}

pub(crate) fn release_kind() -> Release {
    if PARAMS.release_free.load(Relaxed) {
        Release::Free
    } else {
        Release::DontNeed
    }
}

/// glibc's rule: tcache_max above 1032 is rejected; the bins used are those up to its chunk size.
pub(crate) fn set_tcache_max(v: usize) -> bool {
    if v > chunk::MAX_TCACHE_SIZE {
        return false;
    }
    let Some(s) = request2size(v) else {
        return false;
    };
    PARAMS.tcache_max_bytes.store(v, Relaxed);
    PARAMS.tcache_bins.store(csize2tidx(s) + 1, Relaxed);
    true
}

pub(crate) fn set_tcache_count(v: usize) -> bool {
    if v > u16::MAX as usize {
        return false;
    }
    PARAMS.tcache_count.store(v, Relaxed);
    true
}

pub(crate) fn set_mxfast(v: usize) -> bool {
    if v > chunk::MAX_FAST_SIZE {
        return false;
    }
    PARAMS.max_fast.store(chunk::max_fast_for(v), Relaxed);
    true
}

#[inline(always)]
pub(crate) fn max_fast() -> usize {
    PARAMS.max_fast.load(Relaxed)
}

#[inline(always)]
pub(crate) fn perturb() -> u8 {
    PARAMS.perturb.load(Relaxed) as u8
}

/// The options in force, as a [`Config`] (thresholds reported as set when dynamic adjustment is off).
pub fn current() -> Config {
    let p = &PARAMS;
    let fixed = p.no_dyn_threshold.load(Relaxed);
    let opt = |v: &AtomicUsize| fixed.then(|| v.load(Relaxed));
    let max_fast = p.max_fast.load(Relaxed);
    Config {
        top_pad: opt(&p.top_pad),
        perturb: perturb(),
        mmap_threshold: opt(&p.mmap_threshold),
        trim_threshold: opt(&p.trim_threshold),
        mmap_max: opt(&p.mmap_max),
        arena_max: p.arena_max.load(Relaxed),
        arena_test: p.arena_test.load(Relaxed),
        tcache_max: p.tcache_max_bytes.load(Relaxed),
        tcache_count: p.tcache_count.load(Relaxed),
        tcache_unsorted_limit: p.tcache_unsorted_limit.load(Relaxed),
        mxfast: if max_fast < chunk::MINSIZE {
            0
        } else {
            max_fast - chunk::SIZE_SZ
        },
        hugetlb: p.hugetlb.load(Relaxed),
        release: release_kind(),
    }
}

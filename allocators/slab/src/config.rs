//! Run-time options, fixed before the first allocation.
//!
//! The facade turns the `slab.*` and `page.*` tunables into a [`Config`] and calls [`init`] before it
//! first allocates; code that never calls it gets [`Config::DEFAULT`], the hardened default. Options are
//! read on hot paths, so they live in plain atomics loaded with relaxed ordering.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};

use twinheap_page::Release;

/// slab's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Zero a block's bytes when it is freed (`slab.zero_on_free`).
    pub zero_on_free: bool,
    /// When a slot is handed out again, check that it is still all zero, i.e. that nothing wrote to it
    /// after it was freed (`slab.check_write_after_free`). Only effective with `zero_on_free`.
    pub check_write_after_free: bool,
    /// How pages given back inside retained memory would go to the OS (`page.release`). Not used yet:
    /// slab unmaps whole groups and large blocks instead of advising pages.
    pub release: Release,
    /// Bytes of freed large blocks kept for reuse (`slab.large_cache`); 0 turns the cache off.
    pub large_cache: usize,
    /// Close every cached large block to writes, so that a write after free faults at once
    /// (`slab.protect_freed_large`). Off, a cached block that was zeroed with stores stays writable
    /// and is scanned when it is reused, like a slot: no protection change (and no TLB flush on the
    /// other CPUs) at its free and its reuse.
    pub protect_freed_large: bool,
}

impl Config {
    pub const DEFAULT: Config = Config {
        zero_on_free: true,
        check_write_after_free: true,
        release: Release::DontNeed,
        large_cache: LARGE_CACHE_DEFAULT,
        protect_freed_large: true,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// Default of `slab.large_cache`: 32 MiB, half of the most glibc keeps at the top of its heap once
/// its dynamic thresholds have grown (a trim threshold of twice the 32 MiB mmap threshold maximum).
pub const LARGE_CACHE_DEFAULT: usize = 32 << 20;

static LARGE_CACHE: AtomicUsize = AtomicUsize::new(LARGE_CACHE_DEFAULT);
static ZERO_ON_FREE: AtomicBool = AtomicBool::new(true);
static CHECK_WAF: AtomicBool = AtomicBool::new(true);
static RELEASE: AtomicU8 = AtomicU8::new(0);
static PROTECT_FREED_LARGE: AtomicBool = AtomicBool::new(true);

/// Applies `config`. Meant to run once, before the first allocation: turning zeroing on later would
/// make the write-after-free check see old data in slots freed earlier, so the check stays off unless
/// zeroing was on from the start.
pub fn init(config: &Config) {
    ZERO_ON_FREE.store(config.zero_on_free, Relaxed);
    CHECK_WAF.store(
        config.check_write_after_free && config.zero_on_free,
        Relaxed,
    );
    RELEASE.store(matches!(config.release, Release::Free) as u8, Relaxed);
    LARGE_CACHE.store(config.large_cache, Relaxed);
    PROTECT_FREED_LARGE.store(config.protect_freed_large, Relaxed);
}

/// The options in force.
pub fn current() -> Config {
    Config {
        zero_on_free: zero_on_free(),
        check_write_after_free: check_write_after_free(),
        release: if RELEASE.load(Relaxed) == 1 {
            Release::Free
        } else {
            Release::DontNeed
        },
        large_cache: large_cache(),
        protect_freed_large: protect_freed_large(),
    }
}

#[inline]
pub(crate) fn zero_on_free() -> bool {
    ZERO_ON_FREE.load(Relaxed)
}

#[inline]
pub(crate) fn check_write_after_free() -> bool {
    CHECK_WAF.load(Relaxed)
}

#[inline]
pub(crate) fn large_cache() -> usize {
    LARGE_CACHE.load(Relaxed)
}

#[inline]
pub(crate) fn protect_freed_large() -> bool {
    PROTECT_FREED_LARGE.load(Relaxed)
}

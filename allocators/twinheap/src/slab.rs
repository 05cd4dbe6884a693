//! `twinheap::Slab`: the hardened slab allocator as a Rust global allocator.
//!
//! ```
//! #[global_allocator]
//! static ALLOC: twinheap::Slab = twinheap::Slab;
//! ```
//!
//! The first allocation reads the process configuration (the `slab.*` and `page.*` tunables) and hands
//! it to the allocator; there is no init call. Rust's `dealloc` passes the layout, so every free is a
//! sized free: a size that disagrees with the allocation aborts ("size mismatch").

use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use twinheap_page::Release;
use twinheap_slab as slab;

use crate::tunables::{Id, Tunables};

/// The slab allocator. A unit struct: `static A: Slab = Slab;` is all it takes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slab;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// The slab options the tunables ask for.
pub fn slab_config(t: &Tunables) -> slab::Config {
    slab::Config {
        zero_on_free: t.get(Id::SlabZeroOnFree) != 0,
        check_write_after_free: t.get(Id::SlabCheckWriteAfterFree) != 0,
        release: if t.get(Id::PageRelease) == 1 {
            Release::Free
        } else {
            Release::DontNeed
        },
        large_cache: usize::try_from(t.get(Id::SlabLargeCache)).unwrap_or(usize::MAX),
        protect_freed_large: t.get(Id::SlabProtectFreedLarge) != 0,
    }
}

/// Applies the process configuration to slab once. Allocations racing with the first call run with
/// slab's hardened defaults, which the configuration can only relax, never tighten mid-flight.
#[inline]
pub(crate) fn configure() {
    if !CONFIGURED.load(Relaxed) {
        configure_slow();
    }
}

#[cold]
fn configure_slow() {
    slab::init(&slab_config(&crate::env::process_config().tunables));
    CONFIGURED.store(true, Relaxed);
}

crate::global::global_alloc_via!(
    Slab,
    SlabOps,
    slab,
    align = slab::UNIT,
    configure = configure
);

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

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use twinheap_page::Release;
use twinheap_slab as slab;

use crate::global::{self, Ops};
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

/// slab's operations for the shared `GlobalAlloc` logic.
struct SlabOps;

impl Ops for SlabOps {
    const MALLOC_ALIGN: usize = slab::UNIT;
    #[inline]
    fn configure() {
        configure();
    }
    #[inline]
    fn malloc(n: usize) -> *mut u8 {
        slab::malloc(n)
    }
    #[inline]
    fn calloc(n: usize) -> *mut u8 {
        slab::calloc(1, n)
    }
    #[inline]
    fn aligned_alloc(align: usize, n: usize) -> *mut u8 {
        slab::aligned_alloc(align, n)
    }
    #[inline]
    unsafe fn free_sized(p: *mut u8, n: usize) {
        // SAFETY: the trait's contract: a live slab block of `n` requested bytes.
        unsafe { slab::free_sized(p, n) }
    }
    #[inline]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: the trait's contract: a live slab block.
        unsafe { slab::realloc(p, n) }
    }
}

// SAFETY: every method forwards to slab through `global`, and slab returns blocks of at least the
// requested size and alignment (or null), keeps contents on realloc, and accepts back exactly the
// blocks it made.
unsafe impl GlobalAlloc for Slab {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        global::alloc::<SlabOps>(layout)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        global::alloc_zeroed::<SlabOps>(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator made with `layout`.
        unsafe { global::dealloc::<SlabOps>(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above, with GlobalAlloc's promise on `new_size`.
        unsafe { global::realloc::<SlabOps>(ptr, layout, new_size) }
    }
}

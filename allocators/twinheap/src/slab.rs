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

// SAFETY: every method forwards to slab, which returns blocks of at least the requested size and
// alignment (or null), keeps contents on realloc, and accepts back exactly the blocks it made.
unsafe impl GlobalAlloc for Slab {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        configure();
        if layout.align() <= slab::UNIT {
            slab::malloc(layout.size())
        } else {
            slab::aligned_alloc(layout.align(), layout.size())
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        configure();
        if layout.align() <= slab::UNIT {
            slab::calloc(1, layout.size())
        } else {
            let p = slab::aligned_alloc(layout.align(), layout.size());
            if !p.is_null() {
                // SAFETY: `p` holds `layout.size()` bytes.
                unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
            }
            p
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator made with `layout`.
        unsafe { slab::free_sized(ptr, layout.size()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= slab::UNIT {
            // SAFETY: `ptr` is a live block of this allocator.
            return unsafe { slab::realloc(ptr, new_size) };
        }
        // slab's realloc only promises 16-byte alignment when it moves a block.
        let q = slab::aligned_alloc(layout.align(), new_size);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; the old one is freed with its own layout.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                slab::free_sized(ptr, layout.size());
            }
        }
        q
    }
}

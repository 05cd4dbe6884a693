//! The `GlobalAlloc` logic [`crate::Slab`] and [`crate::Arena`] share, over an allocator's C-style
//! operations ([`Ops`]).
//!
//! Invariants: the allocator is configured (from the process's tunables, once) before the first block
//! is made; a layout whose alignment the allocator's `malloc` already guarantees goes to `malloc`,
//! `calloc` or `realloc`, any other to `aligned_alloc`; every free passes the layout's size, so an
//! allocator that checks sized frees (slab) sees Rust's sizes.

use core::alloc::Layout;
use core::ptr;

/// One allocator's C-style operations, as the two allocator crates export them.
pub(crate) trait Ops {
    /// The alignment every `malloc` block has.
    const MALLOC_ALIGN: usize;
    /// Applies the process configuration once; cheap after the first call.
    fn configure();
    fn malloc(n: usize) -> *mut u8;
    fn calloc(n: usize) -> *mut u8;
    fn aligned_alloc(align: usize, n: usize) -> *mut u8;
    /// # Safety
    /// `p` is a live block of this allocator of `n` requested bytes.
    unsafe fn free_sized(p: *mut u8, n: usize);
    /// # Safety
    /// `p` is a live block of this allocator; `n` is non-zero.
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8;
}

#[inline]
pub(crate) fn alloc<O: Ops>(layout: Layout) -> *mut u8 {
    O::configure();
    if layout.align() <= O::MALLOC_ALIGN {
        O::malloc(layout.size())
    } else {
        O::aligned_alloc(layout.align(), layout.size())
    }
}

#[inline]
pub(crate) fn alloc_zeroed<O: Ops>(layout: Layout) -> *mut u8 {
    O::configure();
    if layout.align() <= O::MALLOC_ALIGN {
        return O::calloc(layout.size());
    }
    let p = O::aligned_alloc(layout.align(), layout.size());
    if !p.is_null() {
        // SAFETY: `p` holds `layout.size()` bytes.
        unsafe { ptr::write_bytes(p, 0, layout.size()) };
    }
    p
}

/// # Safety
/// `p` is a live block of `O` made with `layout`.
#[inline]
pub(crate) unsafe fn dealloc<O: Ops>(p: *mut u8, layout: Layout) {
    // SAFETY: the caller's contract.
    unsafe { O::free_sized(p, layout.size()) }
}

/// # Safety
/// `p` is a live block of `O` made with `layout`; `new_size` is non-zero and, rounded up to the
/// alignment, does not overflow (GlobalAlloc's contract).
#[inline]
pub(crate) unsafe fn realloc<O: Ops>(p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    if layout.align() <= O::MALLOC_ALIGN {
        // SAFETY: the caller's contract.
        return unsafe { O::realloc(p, new_size) };
    }
    // A moved block is only promised malloc's alignment by realloc, so move by hand.
    let q = O::aligned_alloc(layout.align(), new_size);
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; the old one is freed with its own size.
        unsafe {
            ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
            O::free_sized(p, layout.size());
        }
    }
    q
}

/// Implements [`Ops`] for `$ops` over the allocator crate `$krate` (which exports `malloc`, `calloc`,
/// `aligned_alloc`, `free_sized` and `realloc` with C semantics) and `GlobalAlloc` for the unit struct
/// `$ty` through the functions above. `$configure` applies the tunables once.
macro_rules! global_alloc_via {
    ($ty:ident, $ops:ident, $krate:ident, align = $align:expr, configure = $configure:path) => {
        /// The allocator's operations for the shared `GlobalAlloc` logic.
        struct $ops;

        impl $crate::global::Ops for $ops {
            const MALLOC_ALIGN: usize = $align;
            #[inline]
            fn configure() {
                $configure();
            }
            #[inline]
            fn malloc(n: usize) -> *mut u8 {
                $krate::malloc(n)
            }
            #[inline]
            fn calloc(n: usize) -> *mut u8 {
                $krate::calloc(1, n)
            }
            #[inline]
            fn aligned_alloc(align: usize, n: usize) -> *mut u8 {
                $krate::aligned_alloc(align, n)
            }
            #[inline]
            unsafe fn free_sized(p: *mut u8, n: usize) {
                // SAFETY: the trait's contract: a live block of this allocator of `n` bytes.
                unsafe { $krate::free_sized(p, n) }
            }
            #[inline]
            unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
                // SAFETY: the trait's contract: a live block of this allocator.
                unsafe { $krate::realloc(p, n) }
            }
        }

        // SAFETY: every method forwards to the allocator through `global`, and the allocator returns
        // blocks of at least the requested size and alignment (or null), keeps contents on realloc,
        // and accepts back exactly the blocks it made.
        unsafe impl core::alloc::GlobalAlloc for $ty {
            #[inline]
            unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
                $crate::global::alloc::<$ops>(layout)
            }

            #[inline]
            unsafe fn alloc_zeroed(&self, layout: core::alloc::Layout) -> *mut u8 {
                $crate::global::alloc_zeroed::<$ops>(layout)
            }

            #[inline]
            unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
                // SAFETY: the caller passes a block this allocator made with `layout`.
                unsafe { $crate::global::dealloc::<$ops>(ptr, layout) }
            }

            #[inline]
            unsafe fn realloc(
                &self,
                ptr: *mut u8,
                layout: core::alloc::Layout,
                new_size: usize,
            ) -> *mut u8 {
                // SAFETY: as above, with GlobalAlloc's promise on `new_size`.
                unsafe { $crate::global::realloc::<$ops>(ptr, layout, new_size) }
            }
        }
    };
}
pub(crate) use global_alloc_via;

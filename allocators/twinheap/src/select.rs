//! `twinheap::Select`: the allocator the environment asks for, as a Rust global allocator.
//!
//! ```
//! #[global_allocator]
//! static ALLOC: twinheap::Select = twinheap::Select;
//! ```
//!
//! The first call reads `TWINHEAP` (`slab`, the default; `arena`; or `system`) through
//! [`crate::env::process_config`] and fixes the choice for the life of the process: blocks made by one
//! allocator must be freed by the same one, so the choice can never change once something is allocated.
//! `system` forwards to the C library's `malloc` family, which is whatever the process links or preloads
//! (so `LD_PRELOAD=libjemalloc.so TWINHEAP=system` runs a Rust program on jemalloc).
//!
//! Invariant: [`CHOICE`] goes from `UNSET` to one allocator exactly once (compare-exchange), and every
//! later call dispatches on that value.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU8, Ordering::Acquire, Ordering::Relaxed};

use crate::tunables::Choice;
use crate::{Arena, Slab};

/// The allocator `TWINHEAP` chooses. A unit struct: `static A: Select = Select;` is all it takes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Select;

const UNSET: u8 = 0;
const SLAB: u8 = 1;
const ARENA: u8 = 2;
const SYSTEM: u8 = 3;

static CHOICE: AtomicU8 = AtomicU8::new(UNSET);

/// The allocator this process's `Select` uses (reading the environment if nothing has yet).
pub fn selected() -> Choice {
    match chosen() {
        ARENA => Choice::Arena,
        SYSTEM => Choice::System,
        _ => Choice::Slab,
    }
}

#[inline]
fn chosen() -> u8 {
    let c = CHOICE.load(Relaxed);
    if c != UNSET {
        return c;
    }
    choose()
}

#[cold]
fn choose() -> u8 {
    let want = match crate::env::process_config().allocator {
        Choice::Slab => SLAB,
        Choice::Arena => ARENA,
        Choice::System => SYSTEM,
    };
    // Two threads may race here; both read the same environment, and the first store wins either way.
    match CHOICE.compare_exchange(UNSET, want, Relaxed, Acquire) {
        Ok(_) => want,
        Err(first) => first,
    }
}

/// The C library's `malloc` guarantees this alignment (glibc and musl on 64-bit targets).
const SYSTEM_ALIGN: usize = 2 * core::mem::size_of::<usize>();

fn system_alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    if layout.align() <= SYSTEM_ALIGN && layout.align() <= layout.size() {
        // SAFETY: malloc and calloc accept any size and return null or a block of that size.
        return unsafe {
            if zeroed {
                libc::calloc(1, layout.size()) as *mut u8
            } else {
                libc::malloc(layout.size()) as *mut u8
            }
        };
    }
    let mut out = core::ptr::null_mut();
    let align = layout.align().max(core::mem::size_of::<usize>());
    // SAFETY: `align` is a power of two and a multiple of the pointer size, as posix_memalign requires;
    // `out` is a valid place for the result.
    if unsafe { libc::posix_memalign(&mut out, align, layout.size()) } != 0 {
        return core::ptr::null_mut();
    }
    if zeroed {
        // SAFETY: posix_memalign returned a block of `layout.size()` bytes.
        unsafe { core::ptr::write_bytes(out as *mut u8, 0, layout.size()) };
    }
    out as *mut u8
}

// SAFETY: every method forwards to one allocator, fixed for the life of the process before the first
// block is made, so each block is freed and resized by the allocator that made it; each of them honours
// the GlobalAlloc contract (size, alignment, contents kept on realloc).
unsafe impl GlobalAlloc for Select {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match chosen() {
            // SAFETY: the caller's contract is passed through unchanged.
            ARENA => unsafe { Arena.alloc(layout) },
            SYSTEM => system_alloc(layout, false),
            // SAFETY: as above.
            _ => unsafe { Slab.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match chosen() {
            // SAFETY: the caller's contract is passed through unchanged.
            ARENA => unsafe { Arena.alloc_zeroed(layout) },
            SYSTEM => system_alloc(layout, true),
            // SAFETY: as above.
            _ => unsafe { Slab.alloc_zeroed(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match chosen() {
            // SAFETY: `ptr` was made by this allocator (the choice never changes) with `layout`.
            ARENA => unsafe { Arena.dealloc(ptr, layout) },
            // SAFETY: as above; the system allocator frees blocks from malloc and posix_memalign alike.
            SYSTEM => unsafe { libc::free(ptr as *mut libc::c_void) },
            // SAFETY: as above.
            _ => unsafe { Slab.dealloc(ptr, layout) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match chosen() {
            // SAFETY: `ptr` was made by this allocator with `layout`.
            ARENA => unsafe { Arena.realloc(ptr, layout, new_size) },
            SYSTEM if layout.align() <= SYSTEM_ALIGN && layout.align() <= new_size => {
                // SAFETY: `ptr` came from the C library's allocator; realloc keeps the contents.
                unsafe { libc::realloc(ptr as *mut libc::c_void, new_size) as *mut u8 }
            }
            SYSTEM => {
                // The C library's realloc only keeps malloc's alignment, so move by hand.
                // SAFETY: the new layout has the old (valid) alignment and a non-overflowing size,
                // which the caller guarantees.
                let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let q = system_alloc(new, false);
                if !q.is_null() {
                    // SAFETY: both blocks are live and distinct; the old one is then freed.
                    unsafe {
                        core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                        libc::free(ptr as *mut libc::c_void);
                    }
                }
                q
            }
            // SAFETY: `ptr` was made by this allocator with `layout`.
            _ => unsafe { Slab.realloc(ptr, layout, new_size) },
        }
    }
}

//! `twinheap::Arena`: the ptmalloc2-style arena allocator as a Rust global allocator.
//!
//! ```
//! #[global_allocator]
//! static ALLOC: twinheap::Arena = twinheap::Arena;
//! ```
//!
//! The first allocation reads the process configuration (the `arena.*` tunables, their glibc names and
//! `MALLOC_*_` variables, and `page.release`) and hands it to the allocator; there is no init call.
//! Rust's `dealloc` passes the layout, so every free is a sized free: a size larger than the block
//! aborts ("free(): invalid size").

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use twinheap_arena as arena;
use twinheap_page::Release;

use crate::tunables::{Id, Tunables};

/// The arena allocator. A unit struct: `static A: Arena = Arena;` is all it takes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Arena;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// The arena options the tunables ask for. Thresholds left unset stay dynamic, as in glibc.
pub fn arena_config(t: &Tunables) -> arena::Config {
    let explicit = |id: Id| t.is_set(id).then(|| t.get(id) as usize);
    arena::Config {
        top_pad: explicit(Id::ArenaTopPad),
        perturb: t.get(Id::ArenaPerturb) as u8,
        mmap_threshold: explicit(Id::ArenaMmapThreshold),
        trim_threshold: explicit(Id::ArenaTrimThreshold),
        mmap_max: explicit(Id::ArenaMmapMax),
        arena_max: if t.is_set(Id::ArenaArenaMax) {
            t.get(Id::ArenaArenaMax) as usize
        } else {
            0
        },
        arena_test: t.get(Id::ArenaArenaTest) as usize,
        tcache_max: t.get(Id::ArenaTcacheMax) as usize,
        tcache_count: t.get(Id::ArenaTcacheCount) as usize,
        tcache_unsorted_limit: t.get(Id::ArenaTcacheUnsortedLimit) as usize,
        mxfast: t.get(Id::ArenaMxfast) as usize,
        hugetlb: t.get(Id::ArenaHugetlb) as usize,
        release: if t.get(Id::PageRelease) == 1 {
            Release::Free
        } else {
            Release::DontNeed
        },
    }
}

/// Applies the process configuration to the arena allocator once.
#[inline]
pub(crate) fn configure() {
    if !CONFIGURED.load(Relaxed) {
        configure_slow();
    }
}

#[cold]
fn configure_slow() {
    arena::init(&arena_config(&crate::env::process_config().tunables));
    CONFIGURED.store(true, Relaxed);
}

// SAFETY: every method forwards to the arena allocator, which returns blocks of at least the
// requested size and alignment (or null), keeps contents on realloc, and accepts back exactly the
// blocks it made.
unsafe impl GlobalAlloc for Arena {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        configure();
        if layout.align() <= 16 {
            arena::malloc(layout.size())
        } else {
            arena::aligned_alloc(layout.align(), layout.size())
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        configure();
        if layout.align() <= 16 {
            arena::calloc(1, layout.size())
        } else {
            let p = arena::aligned_alloc(layout.align(), layout.size());
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
        unsafe { arena::free_sized(ptr, layout.size()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= 16 {
            // SAFETY: `ptr` is a live block of this allocator; `new_size` is non-zero (GlobalAlloc).
            return unsafe { arena::realloc(ptr, new_size) };
        }
        // A moved block is only promised 16-byte alignment by realloc.
        let q = arena::aligned_alloc(layout.align(), new_size);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                arena::free(ptr);
            }
        }
        q
    }
}

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

crate::global::global_alloc_via!(Arena, ArenaOps, arena, align = 16, configure = configure);

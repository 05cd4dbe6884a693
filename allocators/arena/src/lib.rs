//! twinheap's arena allocator: glibc's ptmalloc2 design — boundary-tagged chunks, a per-thread
//! tcache, fast, unsorted, small and large bins, several arenas, mmap and trim thresholds — with
//! glibc's tunables, mallopt, malloc_trim, mallinfo2, malloc_stats and malloc_info.
//!
//! Differences from glibc (details in docs/arena.md): no arena uses brk (every arena lives in 64 MiB
//! heaps committed on demand through the page backend); freeing checks that a pointer lies in a heap
//! this allocator made before reading its header; every heap arena trims and unmaps empty heaps.
//!
//! All functions are thread-safe, never allocate through anything else, never unwind, and report
//! failure as null with errno ENOMEM (EINVAL for a bad alignment). Detected heap corruption aborts
//! with one line: `twinheap(arena): <what> at 0x<address>`.
#![no_std]
#![cfg_attr(loom, allow(dead_code))]

#[cfg(test)]
extern crate std;

#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
mod arena;
mod attach;
#[cfg(not(loom))]
mod chunk;
#[cfg(not(loom))]
mod config;
mod fastbin;
#[cfg(not(loom))]
mod fault;
#[cfg(not(loom))]
mod fork;
#[cfg(not(loom))]
mod free;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod info;
#[cfg(not(loom))]
mod malloc;
#[cfg(not(loom))]
mod mmap;
mod parked;
#[cfg(not(loom))]
mod realloc;
#[cfg(not(loom))]
mod registry;
#[cfg(not(loom))]
mod secret;
#[cfg(not(loom))]
mod solo;
#[cfg(not(loom))]
mod tcache;
#[cfg(not(loom))]
mod thread;

#[cfg(not(loom))]
pub use api::{aligned_alloc, calloc, free, free_sized, malloc, realloc, trim, usable_size};
#[cfg(not(loom))]
pub use config::{current as config, init, Config};
#[cfg(not(loom))]
pub use info::{
    arena_index, is_mapped, mallinfo2, malloc_info, malloc_stats, mallopt, stats, ArenaStats,
    Mallinfo2, M_ARENA_MAX, M_ARENA_TEST, M_CHECK_ACTION, M_MMAP_MAX, M_MMAP_THRESHOLD, M_MXFAST,
    M_PERTURB, M_TOP_PAD, M_TRIM_THRESHOLD,
};

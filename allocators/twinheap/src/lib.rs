//! twinheap's facade: the one place that reads the environment.
//!
//! Rust programs (through `GlobalAlloc` types) and C programs (through the `LD_PRELOAD` shim) are
//! configured the same way, by [`env::process_config`], which reads `TWINHEAP`, `TWINHEAP_TUNABLES`,
//! `GLIBC_TUNABLES` and glibc's legacy `MALLOC_*` variables once, without allocating. [`tunables`] holds
//! the table of every setting, the parser and the generated documentation (`docs/tunables.md`).
//!
//! The allocator types users name are unit structs implementing `GlobalAlloc`: [`Slab`] (the hardened
//! slab allocator), [`Arena`] (the ptmalloc2-style arena allocator, configured by the `arena.*`
//! tunables and glibc's names for them) and `Select` (chosen by `TWINHEAP`).
//! They pass the values from [`tunables::Config`] down to the allocator crates, which do not read the
//! environment themselves.
//!
//! The crate is `no_std` and must stay usable from inside the first `malloc` of a process: no
//! allocation, no panics on any input, no libc stdio.

#![no_std]

#[cfg(test)]
extern crate std;

mod arena;
pub mod env;
mod global;
mod select;
mod slab;
pub mod tunables;

pub use arena::{arena_config, Arena};
pub use select::{selected, Select};
pub use slab::{slab_config, Slab};
/// The arena allocator's own interface (malloc_trim, mallopt, mallinfo2, malloc_stats, ...), for
/// callers that want more than `GlobalAlloc`.
pub use twinheap_arena as arena_allocator;
/// The slab allocator's own interface (malloc, free, stats, trim, ...), for callers that want more
/// than `GlobalAlloc`.
pub use twinheap_slab as slab_allocator;

//! twinheap's page backend: the only code in the project that asks the OS for memory.
//!
//! Both allocators (slab and arena) build on this crate and nothing else touches mmap, munmap, mremap,
//! madvise or mprotect. It offers:
//!
//! - [`page_size`], read at run time (4, 16 and 64 KiB kernels all work);
//! - [`map`]: anonymous read-write mappings with any power-of-two alignment, optional PROT_NONE guard
//!   pages before and/or after, optional huge pages ([`Huge`]); [`Mapping::remap`] resizes with mremap
//!   and keeps contents, alignment and guards; [`Mapping::unmap`] gives it all back;
//! - [`map_growable`]: a guarded mapping with reserved room after it, grown in place by one mprotect
//!   ([`Mapping::resize`]), made read-only or inaccessible and opened again ([`Mapping::protect`],
//!   [`Mapping::reopen`]) so that freed blocks can be kept for reuse;
//! - [`reserve`]: address space without memory, with a committed prefix that grows and shrinks
//!   ([`Reservation::commit`], [`Reservation::decommit`]);
//! - [`release`]: give pages back with MADV_DONTNEED or MADV_FREE, and learn whether they now read zero;
//! - [`stats`]: bytes mapped and committed, mappings, peak;
//! - [`Lock`] and [`Mutex`]: a const-constructible sleeping lock (spin briefly, then futex), fork-safe;
//! - [`diag`]: one-line messages on stderr without allocating, and [`diag::fatal`] for heap faults.
//!
//! Rules kept everywhere: nothing allocates, nothing panics on bad input (errors are [`Error`] values
//! with errno), and paths that give memory back keep the caller's errno.
#![no_std]

pub mod diag;
pub mod entropy;
pub mod error;
mod futex;
pub mod grow;
pub mod huge;
pub mod lock;
pub mod map;
pub mod pagesize;
mod raw;
pub mod release;
pub mod reserve;
pub mod stats;
pub mod sys;

pub use entropy::OsEntropy;
pub use error::{Error, Op};
pub use grow::{map_growable, Access};
pub use huge::Huge;
pub use lock::{Lock, Mutex, MutexGuard};
pub use map::{map, MapOptions, Mapping};
pub use pagesize::page_size;
pub use release::{release, Contents, Release};
pub use reserve::{reserve, Reservation};
pub use stats::{stats, PageStats};

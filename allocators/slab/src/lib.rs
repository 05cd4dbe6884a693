//! twinheap's slab allocator: musl mallocng's hardening, with per-thread heaps so it scales.
//!
//! Requests up to 131056 bytes are served from 48 size classes of 16-byte units, in groups of 1 to 32
//! equal slots laid out in 1 MiB segments with no header next to any block; larger ones get their own
//! mapping between guard pages. Metadata lives out of band in records stamped with a per-process
//! secret, found from the address alone; every free, realloc and usable-size call validates the
//! pointer against it before writing anything, and any inconsistency aborts with one line on stderr:
//! `twinheap(slab): <fault> at 0x<address>`. Freed slots are zeroed and checked for writes before
//! reuse; reuse is delayed and slot choice randomised.
//!
//! See docs/slab.md for the design, every check, and measured costs.
//!
//! All functions are thread-safe, never allocate through anything else, never unwind, and report
//! failure as a null pointer with errno set to ENOMEM (or EINVAL for a bad alignment).
#![no_std]
// Under loom only the mask protocol and its models are built; outside the models it is unused.
#![cfg_attr(loom, allow(dead_code))]

#[cfg(test)]
extern crate std;

#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
mod cache;
#[cfg(not(loom))]
mod class;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod fault;
#[cfg(not(loom))]
mod fork;
#[cfg(not(loom))]
mod free;
#[cfg(not(loom))]
mod group;
#[cfg(not(loom))]
mod header;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod large;
mod masks;
#[cfg(not(loom))]
mod meta;
#[cfg(not(loom))]
mod pending;
#[cfg(not(loom))]
mod records;
#[cfg(not(loom))]
mod secret;
mod segmap;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod slot;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod thread;
#[cfg(not(loom))]
mod validate;
#[cfg(not(loom))]
mod zero;

#[cfg(not(loom))]
pub use api::*;
#[cfg(not(loom))]
pub use class::{MAX_SMALL, UNIT};
#[cfg(not(loom))]
pub use config::{current as config, init, Config};
#[cfg(not(loom))]
pub use fault::Fault;
#[cfg(not(loom))]
#[doc(hidden)]
pub use fork::registered as fork_handlers_registered;
#[cfg(not(loom))]
pub use stats::{stats, ClassStats, SlabStats};

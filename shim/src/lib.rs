//! twinheap's C shim: `libtwinheap.so` for `LD_PRELOAD` and `libtwinheap.a` to link in as a C
//! program's allocator.
//!
//! Layers (see docs/shim.md): the C entry points in [`c_api`] keep glibc's conventions (errno, return
//! codes, `free` keeping errno) and hand every call to [`dispatch`], which picks the allocator chosen by
//! `TWINHEAP` once, at the first call, and forwards through the `twinheap` facade (slab, arena) or to the
//! C library's own allocator ([`system`]). Blocks handed out while that choice is still being made come
//! from [`bootstrap`], a static buffer that every free and realloc recognises first.
//!
//! The crate is `no_std` so the static library carries no Rust standard library and links into glibc
//! and musl programs alike. Nothing here allocates through anything but the chosen allocator, and
//! nothing unwinds: the release profile aborts on panic, and the C++ throwing operators ([`cxx`]) are
//! written in assembly with their own unwind information so that exceptions never cross a Rust frame.
#![no_std]

#[cfg(test)]
extern crate std;

mod bootstrap;
mod c_api;
mod cxx;
mod dispatch;
mod info;
mod out;
mod stats;
mod system;
mod weak;

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    out::warn_str("internal error (panic) in the C shim; aborting");
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// The unwinding personality routine that the precompiled `core` refers to. Nothing here unwinds
/// (panic = "abort"), so it is never called; release builds drop the reference through LTO, but without
/// LTO (dev builds) it would stay an unresolved symbol of the `.so` and stop every program loading it.
#[cfg(not(test))]
#[no_mangle]
extern "C" fn rust_eh_personality() {}

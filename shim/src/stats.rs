//! `TWINHEAP_STATS=1`: call counters and live/peak bytes, printed on stderr when the process exits.
//!
//! Off by default; then every entry point pays one relaxed load of `ON` and a not-taken branch. When
//! on, each call adds to relaxed atomics and measures the block with the allocator's usable size
//! (docs/shim.md has the measured cost). Bytes are usable sizes: for slab that is the requested size,
//! for the system allocator its rounded size.
//!
//! The variable is read at the first call from libc's `environ` (when it is already set) and again by
//! the shim's constructor (see `dispatch.rs`), so static programs whose first allocation precedes
//! `environ` are covered from then on. The report runs from `.fini_array`, after the program's own
//! destructors.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};

use crate::dispatch;
use crate::out;

static ON: AtomicBool = AtomicBool::new(false);

/// Which counter a call adds to.
#[derive(Clone, Copy)]
pub enum Call {
    Malloc = 0,
    Calloc,
    Realloc,
    Aligned,
    Free,
}

const NAMES: [&str; 5] = ["malloc", "calloc", "realloc", "aligned", "free"];

static CALLS: [AtomicUsize; 5] = [const { AtomicUsize::new(0) }; 5];
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Whether counting is on.
#[inline(always)]
pub fn on() -> bool {
    ON.load(Relaxed)
}

/// Counts a call that handed out `bytes` more (or fewer, if negative) bytes.
#[cold]
pub fn count(call: Call, delta: isize) {
    CALLS[call as usize].fetch_add(1, Relaxed);
    if delta != 0 {
        let live = LIVE.fetch_add(delta, Relaxed) + delta;
        if delta > 0 && live > 0 {
            PEAK.fetch_max(live as usize, Relaxed);
        }
    }
}

extern "C" {
    static environ: *const *const core::ffi::c_char;
}

/// Reads `TWINHEAP_STATS` from `environ` if libc has set it up. Only the value `1` turns counting on.
pub fn configure() {
    // SAFETY: reading libc's `environ` pointer value, initialised (possibly null) before user code.
    let mut e = unsafe { environ };
    if e.is_null() {
        return;
    }
    loop {
        // SAFETY: a non-null environ is a null-terminated array of NUL-terminated strings.
        let s = unsafe { *e };
        if s.is_null() {
            return;
        }
        // SAFETY: as above.
        let entry = unsafe { core::ffi::CStr::from_ptr(s) }.to_bytes();
        if let Some(v) = entry.strip_prefix(b"TWINHEAP_STATS=") {
            ON.store(v == b"1", Relaxed);
            return;
        }
        // SAFETY: `s` was not the terminator, so the next entry is still in the array.
        e = unsafe { e.add(1) };
    }
}

extern "C" fn on_exit() {
    if on() {
        report();
    }
}

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = on_exit;

/// Prints the summary on stderr.
pub fn report() {
    let backend = dispatch::chosen().map_or("none", |b| b.name());
    let mapped = crate::info::mapped_bytes();
    let mut sink = |b: &[u8]| out::write_stderr(b);
    let mut w = out::Chunked::new(&mut sink);
    let _ = write!(
        w,
        "twinheap stats: allocator={backend} peak_bytes={} live_bytes={} mapped_bytes={mapped} calls:",
        PEAK.load(Relaxed),
        LIVE.load(Relaxed),
    );
    for (name, n) in NAMES.iter().zip(CALLS.iter()) {
        let _ = write!(w, " {name}={}", n.load(Relaxed));
    }
    let _ = w.write_str("\n");
    w.finish();
}

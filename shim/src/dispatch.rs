//! The allocator choice and the one place that forwards to an allocator.
//!
//! The choice is made once, at the first call into the shim, from `twinheap::env::process_config()`
//! (which reads the environment without allocating and before libc is initialised if need be), and
//! published in `STATE` with Release ordering; every later call pays one Acquire load and a predictable
//! branch. Each forwarding function has one match arm per allocator.
//!
//! Early start and re-entrancy: the first caller (the one that sets `CHOOSING`) reads the
//! configuration, starts the allocator and only then publishes the choice. Calls re-entered from the
//! chooser itself are served by the bootstrap heap ([`Backend::Boot`]). Other threads wait for the
//! choice, but only for a bounded time (about a thousand yields): one of them might hold a lock the
//! chooser needs (the loader's, or `pthread_atfork`'s), so after that they too take bootstrap blocks
//! rather than risk a deadlock. Waiting first keeps a busy start from draining the bootstrap heap.
//! A process forked while another thread was choosing has no chooser left: its first waiting call
//! sees that the chooser's pid is not its own and makes the choice itself.
//!
//! The shim's constructor makes the choice (if no allocation has made it yet) before the program's
//! own constructors and `main` run, normally while the process still has one thread. The allocators
//! register their fork handlers during their first allocation; a fork by another thread in the middle
//! of that first allocation would give the child a locked allocator, so doing it before threads exist
//! closes that window for every program that does not start threads from an earlier constructor.
//! Re-entered calls are real: `TWINHEAP=system` looks the C library up with `dlsym`, which may
//! allocate; and an allocator's very first call registers its fork handlers with `pthread_atfork`,
//! which allocates on musl. That is why the chooser makes the allocator's first allocation itself (a
//! warm-up) before publishing: the nested allocation then lands in the bootstrap heap. (slab now
//! registers when its first call returns and arena serves calls nested in its attachment without
//! waiting, so neither needs it to register at all; the warm-up still registers them before the
//! program's threads exist.)

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};

use twinheap::arena_allocator as arena;
use twinheap::slab_allocator as slab;
use twinheap::tunables::Choice;

use crate::{bootstrap, out, system};

const UNSET: u8 = 0;
const SLAB: u8 = 1;
const ARENA: u8 = 2;
const SYSTEM: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNSET);
static CHOOSING: AtomicBool = AtomicBool::new(false);
/// The choosing thread's identity (see [`me`]), 0 until it is known.
static CHOOSER: AtomicUsize = AtomicUsize::new(0);
/// The pid of the process the chooser ran in, 0 until known.
static CHOOSER_PID: AtomicI32 = AtomicI32::new(0);
/// How many times a thread yields waiting for the chooser before it takes bootstrap blocks.
const WAIT_YIELDS: usize = 1000;

/// Where a call goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    /// The choice is being made (system allocator being resolved): the bootstrap heap.
    Boot,
    Slab,
    Arena,
    System,
}

impl Backend {
    /// The allocator's name as `TWINHEAP` spells it (and as fault lines show it).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Boot => "bootstrap",
            Backend::Slab => "slab",
            Backend::Arena => "arena",
            Backend::System => "system",
        }
    }
}

/// The allocator in use, choosing it at the first call.
#[inline(always)]
pub fn backend() -> Backend {
    match STATE.load(Ordering::Acquire) {
        SLAB => Backend::Slab,
        ARENA => Backend::Arena,
        SYSTEM => Backend::System,
        _ => choose(),
    }
}

/// Runs from `.init_array`: picks the allocator now (see the module doc) and rereads `TWINHEAP_STATS`
/// now that `environ` is surely set.
extern "C" fn choose_at_start() {
    crate::stats::configure();
    backend();
}

#[used]
#[link_section = ".init_array"]
static CHOOSE_AT_START: extern "C" fn() = choose_at_start;

/// The allocator in use if one was chosen, without choosing.
pub fn chosen() -> Option<Backend> {
    match STATE.load(Ordering::Acquire) {
        SLAB => Some(Backend::Slab),
        ARENA => Some(Backend::Arena),
        SYSTEM => Some(Backend::System),
        _ => None,
    }
}

#[cold]
#[inline(never)]
fn choose() -> Backend {
    if CHOOSING.swap(true, Ordering::AcqRel) {
        return wait_for_choice();
    }
    CHOOSER.store(me(), Ordering::Relaxed);
    CHOOSER_PID.store(pid(), Ordering::Relaxed);
    make_choice()
}

/// Reads the configuration, starts the allocator and publishes the choice.
fn make_choice() -> Backend {
    let config = twinheap::env::process_config();
    crate::stats::configure();
    let (backend, state) = match config.allocator {
        Choice::Slab => (start_slab(config), SLAB),
        Choice::Arena => (start_arena(config), ARENA),
        Choice::System if system::resolve() => (Backend::System, SYSTEM),
        Choice::System => {
            out::warn_str(
                "TWINHEAP=system: the C library's allocator cannot be found (no dlsym: statically \
                 linked?); using slab",
            );
            (start_slab(config), SLAB)
        }
    };
    STATE.store(state, Ordering::Release);
    backend
}

/// For a call that arrives while another is choosing: re-entered calls get the bootstrap heap at
/// once, other threads after a bounded wait.
#[cold]
fn wait_for_choice() -> Backend {
    if CHOOSER.load(Ordering::Relaxed) != me() {
        for _ in 0..WAIT_YIELDS {
            if let Some(b) = chosen() {
                return b;
            }
            if let Some(b) = take_over_if_orphaned() {
                return b;
            }
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }
    chosen().unwrap_or(Backend::Boot)
}

/// In a child forked while another thread was choosing: makes the choice on this thread instead.
/// The compare-exchange lets one thread of the child do it.
fn take_over_if_orphaned() -> Option<Backend> {
    let chooser = CHOOSER_PID.load(Ordering::Relaxed);
    let mine = pid();
    if chooser == 0 || chooser == mine {
        return None;
    }
    CHOOSER_PID
        .compare_exchange(chooser, mine, Ordering::Relaxed, Ordering::Relaxed)
        .ok()?;
    CHOOSER.store(me(), Ordering::Relaxed);
    Some(make_choice())
}

fn pid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// The calling thread's identity: its thread pointer, readable before libc is initialised.
#[cfg(target_arch = "x86_64")]
fn me() -> usize {
    let tp: usize;
    // SAFETY: `fs:0` holds the thread control block's self-pointer on x86_64 Linux (glibc and musl),
    // set before any code of the thread runs; the load has no side effects.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// The calling thread's identity.
#[cfg(not(target_arch = "x86_64"))]
fn me() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

fn start_slab(config: &twinheap::tunables::Config) -> Backend {
    slab::init(&twinheap::slab_config(&config.tunables));
    warm_up(Backend::Slab);
    Backend::Slab
}

fn start_arena(config: &twinheap::tunables::Config) -> Backend {
    arena::init(&twinheap::arena_config(&config.tunables));
    warm_up(Backend::Arena);
    Backend::Arena
}

/// The allocator's first allocation, made while the choice is unpublished so that anything it
/// allocates re-entrantly (see the module doc) is served by the bootstrap heap.
fn warm_up(b: Backend) {
    let p = malloc(b, 1);
    if !p.is_null() {
        // SAFETY: `p` was just allocated by `b` and is not used again.
        unsafe { free(b, p) };
    }
}

/// `malloc(n)`: null with errno ENOMEM on failure.
#[inline(always)]
pub fn malloc(b: Backend, n: usize) -> *mut u8 {
    match b {
        Backend::Slab => slab::malloc(n),
        Backend::Arena => arena::malloc(n),
        // SAFETY: the C library's malloc has no preconditions.
        Backend::System => unsafe { (system::real().malloc)(n) }.cast(),
        Backend::Boot => bootstrap::alloc(n, 16),
    }
}

/// `calloc(count, size)`: zeroed; null with ENOMEM on overflow or failure.
#[inline(always)]
pub fn calloc(b: Backend, count: usize, size: usize) -> *mut u8 {
    match b {
        Backend::Slab => slab::calloc(count, size),
        Backend::Arena => arena::calloc(count, size),
        // SAFETY: the C library's calloc has no preconditions.
        Backend::System => unsafe { (system::real().calloc)(count, size) }.cast(),
        Backend::Boot => match count.checked_mul(size) {
            Some(n) => bootstrap::alloc(n, 16),
            None => {
                out::set_errno(libc::ENOMEM);
                core::ptr::null_mut()
            }
        },
    }
}

/// A block of `n` bytes aligned to `align`, a power of two; null with ENOMEM on failure.
#[inline(always)]
pub fn aligned(b: Backend, align: usize, n: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    match b {
        Backend::Slab => slab::aligned_alloc(align, n),
        Backend::Arena => arena::aligned_alloc(align, n),
        // SAFETY: memalign accepts any power-of-two alignment.
        Backend::System => unsafe { (system::real().memalign)(align, n) }.cast(),
        Backend::Boot => bootstrap::alloc(n, align),
    }
}

/// Frees `p`, a non-null block of `b` (never a bootstrap block).
///
/// # Safety
/// `p` is a live block of the chosen allocator, not used afterwards.
#[inline(always)]
pub unsafe fn free(b: Backend, p: *mut u8) {
    // SAFETY: per the contract.
    unsafe {
        match b {
            Backend::Slab | Backend::Boot => slab::free(p),
            Backend::Arena => arena::free(p),
            Backend::System => (system::real().free)(p.cast()),
        }
    }
}

/// Frees `p` whose requested size the caller states; allocators that check sizes abort on a mismatch.
///
/// # Safety
/// As for [`free`].
#[inline(always)]
pub unsafe fn free_sized(b: Backend, p: *mut u8, n: usize) {
    // SAFETY: per the contract.
    unsafe {
        match b {
            Backend::Slab | Backend::Boot => slab::free_sized(p, n),
            Backend::Arena => arena::free_sized(p, n),
            Backend::System => (system::real().free)(p.cast()),
        }
    }
}

/// Resizes `p` (non-null, not a bootstrap block) to `n > 0` bytes keeping contents; null with ENOMEM
/// on failure, leaving `p` untouched.
///
/// # Safety
/// As for [`free`]; on success only the returned pointer is valid.
#[inline(always)]
pub unsafe fn realloc(b: Backend, p: *mut u8, n: usize) -> *mut u8 {
    // SAFETY: per the contract.
    unsafe {
        match b {
            Backend::Slab | Backend::Boot => slab::realloc(p, n),
            Backend::Arena => arena::realloc(p, n),
            Backend::System => (system::real().realloc)(p.cast(), n).cast(),
        }
    }
}

/// Usable size of `p` (non-null, not a bootstrap block).
///
/// # Safety
/// `p` is a live block of the chosen allocator.
#[inline(always)]
pub unsafe fn usable_size(b: Backend, p: *mut u8) -> usize {
    // SAFETY: per the contract.
    unsafe {
        match b {
            Backend::Slab | Backend::Boot => slab::usable_size(p),
            Backend::Arena => arena::usable_size(p),
            Backend::System => (system::real().usable_size)(p.cast()),
        }
    }
}

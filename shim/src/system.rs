//! `TWINHEAP=system`: the C library's own allocator, found behind the shim.
//!
//! The shim exports `malloc` and friends, so the C library's versions are looked up with
//! `dlsym(RTLD_NEXT, name)`: the next definition after the object that holds the shim (libc.so when
//! the shim is preloaded or linked into a dynamic executable). `dlsym` is reached through a weak
//! reference, so the static library never pulls it in; without it (a static program) [`resolve`]
//! fails and the dispatcher falls back to the default allocator with a warning.
//!
//! Resolution runs once, on the thread that wins the dispatcher's race; `dlsym` may allocate during it,
//! which the dispatcher serves from the bootstrap heap. The table is written before the dispatcher
//! publishes the choice with Release ordering and is never written again.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void};

use crate::info::Mallinfo2;

type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

/// The C library's allocator functions. The first six are required; the others are optional (an older
/// or different C library may lack them) and the C entry points fall back when one is missing.
#[derive(Clone, Copy)]
pub struct Real {
    pub malloc: unsafe extern "C" fn(usize) -> *mut c_void,
    pub free: unsafe extern "C" fn(*mut c_void),
    pub calloc: unsafe extern "C" fn(usize, usize) -> *mut c_void,
    pub realloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    pub memalign: unsafe extern "C" fn(usize, usize) -> *mut c_void,
    pub usable_size: unsafe extern "C" fn(*mut c_void) -> usize,
    pub trim: Option<unsafe extern "C" fn(usize) -> c_int>,
    pub mallopt: Option<unsafe extern "C" fn(c_int, c_int) -> c_int>,
    pub mallinfo2: Option<unsafe extern "C" fn() -> Mallinfo2>,
    pub malloc_stats: Option<unsafe extern "C" fn()>,
    pub malloc_info: Option<unsafe extern "C" fn(c_int, *mut libc::FILE) -> c_int>,
}

struct Table(UnsafeCell<Option<Real>>);

// SAFETY: written once by the single resolving thread before the dispatcher publishes SYSTEM (Release);
// read only after observing SYSTEM (Acquire). Never written again.
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new(None));

/// Reinterprets a code address as a function pointer type `F` (or `Option` of one).
///
/// # Safety
/// `F` is pointer-sized and `addr` is a function of that signature (or 0 for `Option`).
unsafe fn cast<F: Copy>(addr: usize) -> F {
    const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<usize>()) };
    // SAFETY: same size (checked above); validity per the contract.
    unsafe { core::mem::transmute_copy::<usize, F>(&addr) }
}

/// Looks one symbol up behind the shim; null if absent or if it is the shim's own definition.
///
/// # Safety
/// `dlsym` is the address of the C library's `dlsym`; `name` ends with a NUL.
unsafe fn lookup(dlsym: DlsymFn, name: &[u8], ours: usize) -> usize {
    // SAFETY: per the contract; RTLD_NEXT is a valid handle for a caller inside a loaded object.
    let p = unsafe { dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    if p == ours {
        0
    } else {
        p
    }
}

/// Finds the C library's allocator. Returns false when `dlsym` is unavailable or a required function
/// cannot be found. Must be called by one thread only, before the dispatcher publishes SYSTEM.
pub fn resolve() -> bool {
    let d = crate::weak::dlsym();
    if d == 0 {
        return false;
    }
    // SAFETY: a non-zero weak address of `dlsym` is the C library's dlsym, which has this signature.
    let dlsym: DlsymFn = unsafe { cast(d) };
    macro_rules! find {
        ($name:literal, $ours:expr) => {
            // SAFETY: dlsym as above; the name literal is NUL-terminated.
            unsafe {
                lookup(
                    dlsym,
                    concat!($name, "\0").as_bytes(),
                    $ours as *const () as usize,
                )
            }
        };
    }
    use crate::c_api as c;
    let required = [
        find!("malloc", c::malloc),
        find!("free", c::free),
        find!("calloc", c::calloc),
        find!("realloc", c::realloc),
        find!("memalign", c::memalign),
        find!("malloc_usable_size", c::malloc_usable_size),
    ];
    if required.contains(&0) {
        return false;
    }
    let optional = [
        find!("malloc_trim", c::malloc_trim),
        find!("mallopt", c::mallopt),
        find!("mallinfo2", c::mallinfo2),
        find!("malloc_stats", c::malloc_stats),
        find!("malloc_info", c::malloc_info),
    ];
    // SAFETY: each address was returned by dlsym for the C library's function of that name, whose C
    // signature is the one given in `Real`; for the optional ones, 0 becomes None.
    let real = unsafe {
        Real {
            malloc: cast(required[0]),
            free: cast(required[1]),
            calloc: cast(required[2]),
            realloc: cast(required[3]),
            memalign: cast(required[4]),
            usable_size: cast(required[5]),
            trim: cast(optional[0]),
            mallopt: cast(optional[1]),
            mallinfo2: cast(optional[2]),
            malloc_stats: cast(optional[3]),
            malloc_info: cast(optional[4]),
        }
    };
    // SAFETY: only the resolving thread writes, before the choice is published (see `Table`).
    unsafe { *TABLE.0.get() = Some(real) };
    true
}

/// The table. Only called after the dispatcher published SYSTEM, which happens after [`resolve`]
/// succeeded.
#[inline]
pub fn real() -> &'static Real {
    // SAFETY: see `Table`: the write happened-before the Acquire load that led here.
    match unsafe { &*TABLE.0.get() } {
        Some(r) => r,
        None => crate::out::fatal("shim", "system allocator used before it was resolved", 0),
    }
}

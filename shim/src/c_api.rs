//! The C entry points: the malloc family with glibc's conventions, and the `__libc_*` aliases.
//!
//! Conventions (glibc 2.36 unless docs/shim.md says otherwise): failures return null with errno
//! ENOMEM; a bad alignment is EINVAL; `posix_memalign` returns its error code and leaves errno alone;
//! `calloc`/`reallocarray` overflow is ENOMEM; `realloc(p, 0)` frees `p` and returns null;
//! `free(NULL)` does nothing; `free` keeps errno; `memalign` rounds a non-power-of-two alignment up.
//!
//! Every function that takes a pointer checks the bootstrap heap first, so blocks handed out while the
//! allocator was being chosen never reach an allocator that did not make them.

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::dispatch::{self, backend, Backend};
use crate::info::{self, Mallinfo, Mallinfo2};
use crate::out::{self, KeepErrno};
use crate::stats::{self, Call};
use crate::{bootstrap, system};

/// glibc's MALLOC_ALIGNMENT on 64-bit targets: what plain malloc guarantees.
const MALLOC_ALIGN: usize = 16;

#[inline(always)]
fn noted(call: Call, b: Backend, p: *mut u8) -> *mut c_void {
    if stats::on() && !p.is_null() {
        // SAFETY: `p` was just returned by `b`.
        stats::count(call, unsafe { usable(b, p) } as isize);
    }
    p.cast()
}

/// Usable size of any live block, bootstrap blocks included.
///
/// # Safety
/// `p` is a non-null live block.
#[inline]
unsafe fn usable(b: Backend, p: *mut u8) -> usize {
    // SAFETY: per the contract.
    unsafe {
        if bootstrap::owns(p) {
            bootstrap::size(p)
        } else {
            dispatch::usable_size(b, p)
        }
    }
}

fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: getauxval has no preconditions; it returns 0 when the entry is absent.
    let p = match unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize {
        0 => 4096,
        p => p,
    };
    PAGE.store(p, Relaxed);
    p
}

/// Allocates `n` bytes aligned to 16; `malloc(0)` returns a unique pointer.
#[no_mangle]
pub extern "C" fn malloc(n: usize) -> *mut c_void {
    let b = backend();
    noted(Call::Malloc, b, dispatch::malloc(b, n))
}

/// Frees a block; null is ignored; errno is kept.
///
/// # Safety
/// `p` is null or a live block from this allocator, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    let p = p.cast::<u8>();
    if p.is_null() || bootstrap::owns(p) {
        return;
    }
    let b = backend();
    if stats::on() {
        // SAFETY: per the contract `p` is live.
        stats::count(Call::Free, -(unsafe { usable(b, p) } as isize));
    }
    // SAFETY: per the contract.
    unsafe { dispatch::free(b, p) }
}

/// Zeroed `count * size` bytes; overflow is ENOMEM.
#[no_mangle]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let b = backend();
    noted(Call::Calloc, b, dispatch::calloc(b, count, size))
}

/// Resizes a block keeping its contents. `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p`
/// and returns null (glibc's choice); on failure null with ENOMEM and `p` is untouched.
///
/// # Safety
/// `p` is null or a live block; after success only the returned pointer is valid.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    let p = p.cast::<u8>();
    if p.is_null() {
        return malloc(n);
    }
    if n == 0 {
        // SAFETY: per the contract.
        unsafe { free(p.cast()) };
        return ptr::null_mut();
    }
    if bootstrap::owns(p) {
        let q = malloc(n).cast::<u8>();
        if !q.is_null() {
            // SAFETY: `p` holds its recorded size, `q` holds `n` bytes; they are distinct blocks.
            unsafe { ptr::copy_nonoverlapping(p, q, bootstrap::size(p).min(n)) };
        }
        return q.cast();
    }
    let b = backend();
    let old = if stats::on() {
        // SAFETY: `p` is live per the contract.
        unsafe { usable(b, p) }
    } else {
        0
    };
    // SAFETY: per the contract.
    let q = unsafe { dispatch::realloc(b, p, n) };
    if stats::on() && !q.is_null() {
        // SAFETY: `q` was just returned.
        let new = unsafe { usable(b, q) };
        stats::count(Call::Realloc, new as isize - old as isize);
    }
    q.cast()
}

/// `realloc(p, count * size)` with an overflow check (ENOMEM, `p` untouched).
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: per the contract.
        Some(n) => unsafe { realloc(p, n) },
        None => {
            out::set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// The aligned allocation behind memalign, aligned_alloc, posix_memalign, valloc and pvalloc.
#[inline]
fn aligned(align: usize, n: usize) -> *mut c_void {
    let b = backend();
    let p = if align <= MALLOC_ALIGN {
        dispatch::malloc(b, n)
    } else {
        dispatch::aligned(b, align, n)
    };
    noted(Call::Aligned, b, p)
}

/// glibc's memalign: alignments above `SIZE_MAX / 2 + 1` are EINVAL; others that are not powers of
/// two are rounded up to the next one.
#[no_mangle]
pub extern "C" fn memalign(align: usize, n: usize) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        out::set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align.max(1).next_power_of_two(), n)
}

/// C11 aligned_alloc: the alignment must be a power of two (EINVAL otherwise, as glibc 2.36); the
/// size need not be a multiple of it.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, n: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        out::set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align, n)
}

/// POSIX: returns 0, EINVAL (alignment not a power-of-two multiple of `sizeof(void *)`) or ENOMEM;
/// errno is left unchanged and `*out` is written only on success.
///
/// # Safety
/// `out` is valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, n: usize) -> c_int {
    let word = core::mem::size_of::<*mut c_void>();
    if !align.is_multiple_of(word) || !(align / word).is_power_of_two() {
        return libc::EINVAL;
    }
    let _keep = KeepErrno::save();
    let p = aligned(align, n);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: per the contract.
    unsafe { out.write(p) };
    0
}

/// A page-aligned block.
#[no_mangle]
pub extern "C" fn valloc(n: usize) -> *mut c_void {
    aligned(page_size(), n)
}

/// A page-aligned block of `n` rounded up to whole pages (ENOMEM if that overflows).
#[no_mangle]
pub extern "C" fn pvalloc(n: usize) -> *mut c_void {
    let page = page_size();
    match n.checked_add(page - 1) {
        Some(r) => aligned(page, r & !(page - 1)),
        None => {
            out::set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// Bytes usable in a block (for slab: exactly the requested size); 0 for null.
///
/// # Safety
/// `p` is null or a live block.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    let p = p.cast::<u8>();
    if p.is_null() {
        return 0;
    }
    let b = backend();
    // SAFETY: per the contract.
    unsafe { usable(b, p) }
}

/// C23 free_sized: `n` must be the size that was requested; slab aborts on a mismatch ("size
/// mismatch"), the system allocator ignores it.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, n: usize) {
    let p = p.cast::<u8>();
    if p.is_null() || bootstrap::owns(p) {
        return;
    }
    let b = backend();
    if stats::on() {
        // SAFETY: per the contract `p` is live.
        stats::count(Call::Free, -(unsafe { usable(b, p) } as isize));
    }
    // SAFETY: per the contract.
    unsafe { dispatch::free_sized(b, p, n) }
}

/// C23 free_aligned_sized: as [`free_sized`], and a pointer not aligned to `align` (or an alignment
/// that is not a power of two) aborts with "alignment mismatch" under twinheap's allocators.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, n: usize) {
    if p.is_null() {
        return;
    }
    let b = backend();
    if b != Backend::System && (!align.is_power_of_two() || p as usize & (align - 1) != 0) {
        out::fatal(b.name(), "alignment mismatch", p as usize);
    }
    // SAFETY: per the contract.
    unsafe { free_sized(p, n) }
}

/// Gives free memory back to the OS; 1 if anything was released.
#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    match backend() {
        // SAFETY: the C library's malloc_trim has no preconditions.
        Backend::System => system::real().trim.map_or(0, |f| unsafe { f(pad) }),
        b => info::trim(b, pad),
    }
}

/// glibc's mallopt. Under slab every parameter is refused (returns 0); see docs/shim.md.
#[no_mangle]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    match backend() {
        // SAFETY: the C library's mallopt accepts any parameter.
        Backend::System => system::real()
            .mallopt
            .map_or(0, |f| unsafe { f(param, value) }),
        b => info::mallopt(b, param, value),
    }
}

/// Memory statistics (see docs/shim.md for how slab fills the fields).
#[no_mangle]
pub extern "C" fn mallinfo2() -> Mallinfo2 {
    match backend() {
        // SAFETY: the C library's mallinfo2 has no preconditions.
        Backend::System => system::real()
            .mallinfo2
            .map_or(Mallinfo2::default(), |f| unsafe { f() }),
        b => info::mallinfo2(b),
    }
}

/// The old int-field mallinfo; values above INT_MAX are clamped.
#[no_mangle]
pub extern "C" fn mallinfo() -> Mallinfo {
    Mallinfo::from2(&mallinfo2())
}

/// Prints a summary of the heap on stderr.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    match backend() {
        Backend::System => {
            if let Some(f) = system::real().malloc_stats {
                // SAFETY: the C library's malloc_stats has no preconditions.
                unsafe { f() }
            }
        }
        b => info::malloc_stats(b, &mut |bytes| out::write_stderr(bytes)),
    }
}

/// Writes an XML description of the heap to `fp` with the C library's `fwrite`. `options` must be 0.
///
/// # Safety
/// `fp` is a valid open `FILE *`.
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut libc::FILE) -> c_int {
    match backend() {
        Backend::System => match system::real().malloc_info {
            // SAFETY: per the contract.
            Some(f) => unsafe { f(options, fp) },
            None => 0,
        },
        b => info::malloc_info(b, options, &mut |bytes| {
            // SAFETY: `fp` is valid per the contract and `bytes` is readable. No allocator lock is
            // held here, so fwrite may allocate its buffer.
            unsafe { libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), fp) };
        }),
    }
}

/// Exports `$alias` as another name of `$target` (glibc's `__libc_*` entry points, which some
/// programs and interposers call directly).
macro_rules! alias {
    ($(#[$doc:meta])* unsafe $alias:ident = $target:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        /// # Safety
        /// As for the function it names.
        #[no_mangle]
        pub unsafe extern "C" fn $alias($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: same contract as the target.
            unsafe { $target($($arg),*) }
        }
    };
    ($(#[$doc:meta])* $alias:ident = $target:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "C" fn $alias($($arg: $ty),*) $(-> $ret)? {
            $target($($arg),*)
        }
    };
}

alias!(
    /// glibc's name for [`malloc`].
    __libc_malloc = malloc(n: usize) -> *mut c_void
);
alias!(
    /// glibc's name for [`free`].
    unsafe __libc_free = free(p: *mut c_void)
);
alias!(
    /// glibc's name for [`calloc`].
    __libc_calloc = calloc(count: usize, size: usize) -> *mut c_void
);
alias!(
    /// glibc's name for [`realloc`].
    unsafe __libc_realloc = realloc(p: *mut c_void, n: usize) -> *mut c_void
);
alias!(
    /// glibc's name for [`memalign`].
    __libc_memalign = memalign(align: usize, n: usize) -> *mut c_void
);
alias!(
    /// glibc's name for [`valloc`].
    __libc_valloc = valloc(n: usize) -> *mut c_void
);
alias!(
    /// glibc's name for [`pvalloc`].
    __libc_pvalloc = pvalloc(n: usize) -> *mut c_void
);
alias!(
    /// glibc's name for [`mallinfo`].
    __libc_mallinfo = mallinfo() -> Mallinfo
);
alias!(
    /// glibc's name for [`mallopt`].
    __libc_mallopt = mallopt(param: c_int, value: c_int) -> c_int
);

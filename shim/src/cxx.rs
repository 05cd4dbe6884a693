//! The C++ `operator new` / `operator delete` family (Itanium C++ ABI names, 64-bit `size_t`).
//!
//! Throwing `new` must be able to throw `std::bad_alloc` (or whatever the new-handler throws) through
//! its own frame, but a Rust frame built with `panic = "abort"` cannot be unwound. So the four throwing
//! operators are naked assembly functions with CFI directives: they call [`attempt`] (a Rust function
//! that never throws), and on null follow the standard's loop: fetch `std::get_new_handler()`; if there
//! is one, call it and retry; if not, call `std::__throw_bad_alloc()`. Both C++ runtime functions are
//! weak references, so C programs need no libstdc++; if they are missing (a static C++ link that did not
//! pull them in, see docs/shim.md), the process aborts with a message instead of throwing. The unwinder
//! thus only ever crosses these assembly frames, whose unwind information is exact.
//!
//! The `nothrow` variants return null on failure without calling the new-handler (a handler that throws
//! could not be caught here). Sized deletes pass the size to `free_sized`, so slab checks it. Only x86_64
//! has the assembly; on other targets a failing throwing `new` aborts with a message.

use core::ffi::c_void;

use crate::c_api;

/// One allocation attempt: `align == 0` means the default alignment. Never throws, never calls the
/// new-handler; null on failure (including an alignment that is not a power of two).
extern "C" fn attempt(n: usize, align: usize) -> *mut c_void {
    if align == 0 {
        c_api::malloc(n)
    } else {
        c_api::aligned_alloc(align, n)
    }
}

/// Called when `operator new` fails and there is no C++ runtime to report it to.
extern "C" fn no_runtime() -> ! {
    crate::out::warn_str(
        "operator new: out of memory and no C++ runtime to throw std::bad_alloc; aborting",
    );
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

#[cfg(target_arch = "x86_64")]
macro_rules! throwing_new {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*), $load_align:literal) => {
        $(#[$doc])*
        #[no_mangle]
        #[unsafe(naked)]
        pub extern "C" fn $name($($arg: $ty),*) -> *mut c_void {
            core::arch::naked_asm!(
                ".weak _ZSt15get_new_handlerv",
                ".weak _ZSt17__throw_bad_allocv",
                ".cfi_startproc",
                "push rbx",
                ".cfi_def_cfa_offset 16",
                ".cfi_offset rbx, -16",
                "push r12",
                ".cfi_def_cfa_offset 24",
                ".cfi_offset r12, -24",
                "sub rsp, 8",
                ".cfi_def_cfa_offset 32",
                "mov rbx, rdi",
                $load_align,
                "2:",
                "mov rdi, rbx",
                "mov rsi, r12",
                "call {attempt}",
                "test rax, rax",
                "jz 3f",
                ".cfi_remember_state",
                "add rsp, 8",
                ".cfi_def_cfa_offset 24",
                "pop r12",
                ".cfi_def_cfa_offset 16",
                "pop rbx",
                ".cfi_def_cfa_offset 8",
                "ret",
                ".cfi_restore_state",
                "3:",
                "mov rax, qword ptr [rip + _ZSt15get_new_handlerv@GOTPCREL]",
                "test rax, rax",
                "jz 4f",
                "call rax",
                "test rax, rax",
                "jz 5f",
                "call rax",
                "jmp 2b",
                "5:",
                "mov rax, qword ptr [rip + _ZSt17__throw_bad_allocv@GOTPCREL]",
                "test rax, rax",
                "jz 4f",
                "call rax",
                "4:",
                "call {no_runtime}",
                "ud2",
                ".cfi_endproc",
                attempt = sym attempt,
                no_runtime = sym no_runtime,
            )
        }
    };
}

#[cfg(not(target_arch = "x86_64"))]
macro_rules! throwing_new {
    ($(#[$doc:meta])* $name:ident($n:ident: $t:ty $(, $a:ident: $ta:ty)?), $load_align:literal) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "C" fn $name($n: $t $(, $a: $ta)?) -> *mut c_void {
            let p = attempt($n, 0 $(+ $a)?);
            if p.is_null() {
                no_runtime();
            }
            p
        }
    };
}

throwing_new!(
    /// `operator new(size_t)`.
    _Znwm(n: usize),
    "xor r12d, r12d"
);
throwing_new!(
    /// `operator new[](size_t)`.
    _Znam(n: usize),
    "xor r12d, r12d"
);
throwing_new!(
    /// `operator new(size_t, std::align_val_t)`.
    _ZnwmSt11align_val_t(n: usize, align: usize),
    "mov r12, rsi"
);
throwing_new!(
    /// `operator new[](size_t, std::align_val_t)`.
    _ZnamSt11align_val_t(n: usize, align: usize),
    "mov r12, rsi"
);

/// `operator new(size_t, const std::nothrow_t&)`: null on failure.
#[no_mangle]
pub extern "C" fn _ZnwmRKSt9nothrow_t(n: usize, _tag: *const c_void) -> *mut c_void {
    attempt(n, 0)
}

/// `operator new[](size_t, const std::nothrow_t&)`: null on failure.
#[no_mangle]
pub extern "C" fn _ZnamRKSt9nothrow_t(n: usize, _tag: *const c_void) -> *mut c_void {
    attempt(n, 0)
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`: null on failure.
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    n: usize,
    align: usize,
    _tag: *const c_void,
) -> *mut c_void {
    attempt(n, align)
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`: null on failure.
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    n: usize,
    align: usize,
    _tag: *const c_void,
) -> *mut c_void {
    attempt(n, align)
}

/// Declares unsized deletes (everything goes to `free`).
macro_rules! delete {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// `p` is null or a live block from the matching `operator new`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void $(, $arg: $ty)*) {
            $(let _ = $arg;)*
            // SAFETY: per the contract.
            unsafe { c_api::free(p) }
        }
    )*};
}

/// Declares sized deletes (the size goes to `free_sized`, which slab checks).
macro_rules! sized_delete {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// `p` is null or a live block from the matching `operator new` with size `n`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void, n: usize $(, $arg: $ty)*) {
            $(let _ = $arg;)*
            // SAFETY: per the contract.
            unsafe { c_api::free_sized(p, n) }
        }
    )*};
}

delete! {
    /// `operator delete(void*)`.
    _ZdlPv();
    /// `operator delete[](void*)`.
    _ZdaPv();
    /// `operator delete(void*, const std::nothrow_t&)`.
    _ZdlPvRKSt9nothrow_t(tag: *const c_void);
    /// `operator delete[](void*, const std::nothrow_t&)`.
    _ZdaPvRKSt9nothrow_t(tag: *const c_void);
    /// `operator delete(void*, std::align_val_t)`.
    _ZdlPvSt11align_val_t(align: usize);
    /// `operator delete[](void*, std::align_val_t)`.
    _ZdaPvSt11align_val_t(align: usize);
    /// `operator delete(void*, std::align_val_t, const std::nothrow_t&)`.
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, tag: *const c_void);
    /// `operator delete[](void*, std::align_val_t, const std::nothrow_t&)`.
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, tag: *const c_void);
}

sized_delete! {
    /// `operator delete(void*, size_t)`.
    _ZdlPvm();
    /// `operator delete[](void*, size_t)`.
    _ZdaPvm();
    /// `operator delete(void*, size_t, std::align_val_t)`.
    _ZdlPvmSt11align_val_t(align: usize);
    /// `operator delete[](void*, size_t, std::align_val_t)`.
    _ZdaPvmSt11align_val_t(align: usize);
}

//! Addresses of optional symbols, taken through weak references so that linking the shim never pulls
//! them in: `dlsym`, only needed for `TWINHEAP=system`. (The C++ operators in `cxx.rs` use the same
//! technique inline for the C++ runtime's `std::get_new_handler` and `std::__throw_bad_alloc`.)
//!
//! Rust has no stable weak linkage, so each address is read from the GOT by a two-instruction naked
//! function carrying a `.weak` directive. A symbol no loaded object defines reads as 0: in a static
//! link the linker resolves an undefined weak reference to 0, in the `.so` the dynamic linker does.
//! Only x86_64 has the reader; elsewhere the address is 0 (no `TWINHEAP=system`).

#[cfg(target_arch = "x86_64")]
macro_rules! weak_address {
    ($(#[$doc:meta])* $name:ident, $sym:literal) => {
        $(#[$doc])*
        #[unsafe(naked)]
        pub extern "C" fn $name() -> usize {
            core::arch::naked_asm!(
                concat!(".weak ", $sym),
                concat!("mov rax, qword ptr [rip + ", $sym, "@GOTPCREL]"),
                "ret",
            )
        }
    };
}

#[cfg(not(target_arch = "x86_64"))]
macro_rules! weak_address {
    ($(#[$doc:meta])* $name:ident, $sym:literal) => {
        $(#[$doc])*
        pub extern "C" fn $name() -> usize {
            0
        }
    };
}

weak_address!(
    /// `dlsym`, or 0.
    dlsym,
    "dlsym"
);

//! The one way the arena allocator reports heap corruption: `twinheap(arena): <what> at 0x<address>`
//! on stderr in a single write(2), then abort(). Never continues after a detected fault.
//!
//! The texts follow glibc's messages (without glibc's function-name prefixes) so that people who know
//! glibc's aborts recognise them; the address is the user pointer concerned.

#[cold]
#[inline(never)]
pub(crate) fn report(what: &str, address: usize) -> ! {
    twinheap_page::diag::fatal("arena", what, address)
}

/// Aborts with `what` unless `ok`.
#[inline(always)]
pub(crate) fn check(ok: bool, what: &str, address: usize) {
    if !ok {
        report(what, address);
    }
}

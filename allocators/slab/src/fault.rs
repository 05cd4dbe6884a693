//! The faults slab detects, and the one way it reports them: a single line on stderr, then abort.
//!
//! A fault never continues: once the heap is known to be inconsistent, any further write could be the
//! attacker's. The line is `twinheap(slab): <fault> at 0x<address>`.

/// Everything slab aborts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The pointer's slot is already free (or waiting for reuse).
    DoubleFree,
    /// The pointer is not one slab handed out: misaligned, interior, foreign, or never allocated.
    InvalidFree,
    /// Bytes past the end of the block (its slack canary or the next slot's header) were written.
    HeapOverflow,
    /// Out-of-band metadata or a group header does not check out against the secret and each other.
    CorruptedMetadata,
    /// A sized free (Rust's dealloc, C23 free_sized, C++ sized delete) named another size.
    SizeMismatch,
    /// A freed slot was written before it was handed out again.
    WriteAfterFree,
}

impl Fault {
    pub fn text(self) -> &'static str {
        match self {
            Fault::DoubleFree => "double free",
            Fault::InvalidFree => "invalid free",
            Fault::HeapOverflow => "heap overflow",
            Fault::CorruptedMetadata => "corrupted metadata",
            Fault::SizeMismatch => "size mismatch",
            Fault::WriteAfterFree => "write after free",
        }
    }
}

/// Reports `fault` at `address` and aborts.
#[cold]
#[inline(never)]
pub fn report(fault: Fault, address: usize) -> ! {
    twinheap_page::diag::fatal("slab", fault.text(), address)
}

/// Aborts with `fault` unless `ok`.
#[inline(always)]
pub fn check(ok: bool, fault: Fault, address: usize) {
    if !ok {
        report(fault, address);
    }
}

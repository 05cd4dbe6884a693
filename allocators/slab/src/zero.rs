//! Runs of zero bytes: the write-after-free scan of a slot being reused and the zeroing of a freed
//! block.
//!
//! Both run on every malloc and free of the hardened default, over the whole slot and the whole
//! block, so they decide the cost of medium and large blocks. Both treat up to 64 bytes with a few
//! overlapping word loads or stores and no loop; longer runs use the widest vectors the CPU and OS
//! support: 64-byte AVX-512 loads and stores from 512 bytes on (256 bytes per step), 32-byte AVX2
//! ones below that or without AVX-512 (128 bytes per step), aligned in the middle; else words and
//! memset. On the Xeon the figures in docs/slab.md come from, AVX-512 zeroes 8 KiB in about 60% of
//! AVX2's time and scans it in about 70%. The
//! scan ORs everything without an early exit and locates a failure only afterwards. The scan is
//! always complete: sampling it would weaken the write-after-free check.

use core::ptr;

/// True if any byte of `[from, to)` is not zero. `from` is 8-aligned and the length a multiple of 4
/// (true of every slot: 16-aligned starts and strides, and of a large block's usable bytes). One pass of OR-ed
/// loads with no early exit; the rare failure is located by [`first_nonzero`]. Up to 64 bytes (the
/// small classes) a few overlapping word loads cover the range with no loop; longer runs use AVX2
/// when the CPU has it (32-byte loads, 128 bytes per step).
#[inline(always)]
pub(crate) unsafe fn any_nonzero(from: *const u8, to: *const u8) -> bool {
    let len = to as usize - from as usize;
    debug_assert!((from as usize).is_multiple_of(8) && len.is_multiple_of(4));
    if len <= 64 {
        // SAFETY: per the contract.
        return unsafe { short_nonzero(from, len) };
    }
    #[cfg(target_arch = "x86_64")]
    match simd::level() {
        simd::Level::Avx512 if len >= avx512::MIN => {
            // SAFETY: the CPU supports AVX-512F (checked); the range is the caller's, long enough.
            return unsafe { avx512::any_nonzero(from, len) };
        }
        // SAFETY: AVX-512 implies AVX2; the range is the caller's and longer than 64.
        simd::Level::Avx512 | simd::Level::Avx2 => return unsafe { avx2::any_nonzero(from, len) },
        simd::Level::None => {}
    }
    // SAFETY: per the contract.
    unsafe { words_nonzero(from, len) }
}

/// [`any_nonzero`] for at most 64 bytes: loads from both ends overlap to cover the range, so no
/// byte outside it is read and no loop runs.
#[inline(always)]
unsafe fn short_nonzero(from: *const u8, len: usize) -> bool {
    // SAFETY: every load lies inside [from, from + len).
    unsafe {
        if len < 8 {
            return len >= 4 && (from as *const u32).read_unaligned() != 0;
        }
        let r = |at: usize| (from.add(at) as *const u64).read_unaligned();
        let mut acc = r(0) | r(len - 8);
        if len > 16 {
            acc |= r(8) | r(len - 16);
            if len > 32 {
                acc |= r(16) | r(24) | r(len - 24) | r(len - 32);
            }
        }
        acc != 0
    }
}

/// The portable scan behind [`any_nonzero`].
#[inline]
unsafe fn words_nonzero(from: *const u8, len: usize) -> bool {
    let words = from as *const u64;
    let mut acc = 0u64;
    // SAFETY: every read is inside [from, from + len) and aligned.
    unsafe {
        for i in 0..len / 8 {
            acc |= words.add(i).read();
        }
        if !len.is_multiple_of(8) {
            acc |= u64::from((from.add(len - 4) as *const u32).read());
        }
    }
    acc != 0
}

/// Which vector width the scan and the zeroing use, detected once.
#[cfg(target_arch = "x86_64")]
mod simd {
    use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Level {
        None,
        Avx2,
        /// AVX-512F, and AVX2 with it.
        Avx512,
    }

    /// 0 not yet known, else `Level as u8 + 1`.
    static STATE: AtomicU8 = AtomicU8::new(0);

    #[inline]
    pub(super) fn level() -> Level {
        match STATE.load(Relaxed) {
            0 => detect(),
            1 => Level::None,
            2 => Level::Avx2,
            _ => Level::Avx512,
        }
    }

    /// What the CPU supports and the OS saves on a context switch (CPUID and XCR0, as the
    /// architecture manual says): AVX2 needs the SSE and AVX state (XCR0 bits 1-2), AVX-512 the
    /// opmask and both ZMM halves as well (bits 5-7).
    #[cold]
    fn detect() -> Level {
        // SAFETY: CPUID exists on every x86_64 CPU; XGETBV is used only once OSXSAVE says the OS
        // enabled it.
        let level = unsafe {
            let leaf1 = __cpuid(1);
            let osxsave = leaf1.ecx & (1 << 27) != 0;
            let avx = leaf1.ecx & (1 << 28) != 0;
            if !(osxsave && avx) || __cpuid(0).eax < 7 {
                Level::None
            } else {
                let xcr0 = _xgetbv(0);
                let ebx7 = __cpuid_count(7, 0).ebx;
                let avx2 = xcr0 & 0b110 == 0b110 && ebx7 & (1 << 5) != 0;
                let avx512 = avx2 && xcr0 & 0b1110_0000 == 0b1110_0000 && ebx7 & (1 << 16) != 0;
                if avx512 {
                    Level::Avx512
                } else if avx2 {
                    Level::Avx2
                } else {
                    Level::None
                }
            }
        };
        STATE.store(level as u8 + 1, Relaxed);
        level
    }
}

/// Defines a module with the scan and the zeroing for one vector width `W` (bytes): loads and
/// stores of `W` bytes, four per step; the first and last `W` bytes unaligned, everything between
/// aligned (a slot starts 16-aligned, so unaligned wide accesses would split cache lines). Each
/// function requires a CPU with `$feature` and a range of at least `$min` bytes (at least 2·W).
macro_rules! vector_forms {
    (
        $(#[$doc:meta])* mod $name:ident: $feature:literal, $vec:ident, $w:literal, min $min:literal,
        $load:ident, $loadu:ident, $or:ident, $zero:ident, $store:ident, $storeu:ident,
        nonzero($acc:ident) = $nonzero:expr, uses [$($extra:ident),*]
    ) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use core::arch::x86_64::{$vec, $load, $loadu, $or, $zero, $store, $storeu $(, $extra)*};

            /// Shortest run these forms are given.
            pub(super) const MIN: usize = $min;

            /// [`super::any_nonzero`] with `W`-byte loads into four accumulators.
            ///
            /// # Safety
            /// The CPU supports the feature; `[from, from + len)` is readable and `len >= MIN`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn any_nonzero(from: *const u8, len: usize) -> bool {
                debug_assert!(len >= MIN);
                let end = from as usize + len;
                // SAFETY: every load is inside the range: the two unaligned ones at its ends, the
                // aligned ones from the first W-byte boundary after `from` up to the last one at
                // or before `end`.
                unsafe {
                    let mut a = $loadu(from as *const $vec);
                    let mut b = $loadu((end - $w) as *const $vec);
                    let mut c = $zero();
                    let mut d = $zero();
                    let mut q = (from as usize + $w) & !($w - 1);
                    while q + 4 * $w <= end {
                        a = $or(a, $load(q as *const $vec));
                        b = $or(b, $load((q + $w) as *const $vec));
                        c = $or(c, $load((q + 2 * $w) as *const $vec));
                        d = $or(d, $load((q + 3 * $w) as *const $vec));
                        q += 4 * $w;
                    }
                    while q + $w <= end {
                        a = $or(a, $load(q as *const $vec));
                        q += $w;
                    }
                    let $acc = $or($or(a, b), $or(c, d));
                    $nonzero
                }
            }

            /// Zeroes `[p, p + len)` with `W`-byte stores.
            ///
            /// # Safety
            /// The CPU supports the feature; `[p, p + len)` is writable and `len >= MIN`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn zero(p: *mut u8, len: usize) {
                debug_assert!(len >= MIN);
                let end = p as usize + len;
                // SAFETY: as in `any_nonzero`, with stores.
                unsafe {
                    let z = $zero();
                    $storeu(p as *mut $vec, z);
                    $storeu((end - $w) as *mut $vec, z);
                    let mut q = (p as usize + $w) & !($w - 1);
                    while q + 4 * $w <= end {
                        $store(q as *mut $vec, z);
                        $store((q + $w) as *mut $vec, z);
                        $store((q + 2 * $w) as *mut $vec, z);
                        $store((q + 3 * $w) as *mut $vec, z);
                        q += 4 * $w;
                    }
                    while q + $w <= end {
                        $store(q as *mut $vec, z);
                        q += $w;
                    }
                }
            }
        }
    };
}

vector_forms! {
    /// 32-byte AVX2 forms, for runs above 64 bytes.
    mod avx2: "avx2", __m256i, 32, min 64,
    _mm256_load_si256, _mm256_loadu_si256, _mm256_or_si256, _mm256_setzero_si256,
    _mm256_store_si256, _mm256_storeu_si256,
    nonzero(acc) = _mm256_testz_si256(acc, acc) == 0, uses [_mm256_testz_si256]
}

vector_forms! {
    /// 64-byte AVX-512 forms. From 512 bytes: below that AVX2 needs at most four steps, and
    /// criterion measured no gain at 256-byte blocks (within its noise there).
    mod avx512: "avx512f", __m512i, 64, min 512,
    _mm512_load_si512, _mm512_loadu_si512, _mm512_or_si512, _mm512_setzero_si512,
    _mm512_store_si512, _mm512_storeu_si512,
    nonzero(acc) = _mm512_test_epi64_mask(acc, acc) != 0, uses [_mm512_test_epi64_mask]
}

/// Zeroes `[p, p + len)` exactly. Small lengths (most blocks) use a few overlapping word stores
/// instead of a call to memset; longer ones vector stores when the CPU has them (glibc's memset
/// would choose `rep stosb` from 2 KiB on, which is no faster here and which callgrind counts
/// byte by byte, hiding every other cost in a profile).
#[inline]
pub(crate) unsafe fn zero(p: *mut u8, len: usize) {
    // SAFETY: the caller owns [p, p + len); overlapping stores stay inside it.
    unsafe {
        if len > 64 {
            zero_long(p, len);
        } else if len >= 8 {
            // Stores from both ends cover the range; no loop, which the compiler would turn back
            // into a memset call.
            let w = |at: usize| (p.add(at) as *mut u64).write_unaligned(0);
            w(0);
            w(len - 8);
            if len > 16 {
                w(8);
                w(len - 16);
                if len > 32 {
                    w(16);
                    w(24);
                    w(len - 24);
                    w(len - 32);
                }
            }
        } else if len >= 4 {
            (p as *mut u32).write_unaligned(0);
            (p.add(len - 4) as *mut u32).write_unaligned(0);
        } else {
            for i in 0..len {
                p.add(i).write_volatile(0);
            }
        }
    }
}

/// [`zero`] above 64 bytes: vector stores, out of line so that the short case inlines into free.
///
/// # Safety
/// As for [`zero`].
#[inline(never)]
unsafe fn zero_long(p: *mut u8, len: usize) {
    // SAFETY: the caller owns [p, p + len).
    unsafe {
        #[cfg(target_arch = "x86_64")]
        match simd::level() {
            simd::Level::Avx512 if len >= avx512::MIN => return avx512::zero(p, len),
            simd::Level::Avx512 | simd::Level::Avx2 => return avx2::zero(p, len),
            simd::Level::None => {}
        }
        ptr::write_bytes(p, 0, len);
    }
}

/// The first byte of `[from, to)` that is not zero, for the report of a failed check.
#[cold]
pub(crate) unsafe fn first_nonzero(from: *const u8, to: *const u8) -> Option<*const u8> {
    if from >= to {
        return None;
    }
    let len = to as usize - from as usize;
    let mut i = 0;
    // SAFETY: every read is inside [from, to); word reads are 8-aligned.
    unsafe {
        while i < len && !(from as usize + i).is_multiple_of(8) {
            if *from.add(i) != 0 {
                return Some(from.add(i));
            }
            i += 1;
        }
        // Whole 64-byte chunks, OR-reduced without an early exit so the loop vectorises; a dirty
        // chunk is located exactly by the loops below.
        while i + 64 <= len {
            let w = from.add(i) as *const u64;
            let mut acc = 0;
            for k in 0..8 {
                acc |= w.add(k).read();
            }
            if acc != 0 {
                break;
            }
            i += 64;
        }
        while i + 8 <= len && (from.add(i) as *const u64).read() == 0 {
            i += 8;
        }
        while i < len {
            if *from.add(i) != 0 {
                return Some(from.add(i));
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nonzero_finds_the_exact_byte() {
        let mut buf = [0u64; 40];
        let base = buf.as_mut_ptr() as *mut u8;
        let len = 320;
        for start in [0, 3, 8] {
            for at in [start, start + 1, 63, 64, 130, 255, 319] {
                // SAFETY: all offsets are inside the 320-byte buffer.
                unsafe {
                    core::ptr::write_bytes(base, 0, len);
                    assert_eq!(first_nonzero(base.add(start), base.add(len)), None);
                    *base.add(at) = 7;
                    assert_eq!(
                        first_nonzero(base.add(start), base.add(len)),
                        Some(base.add(at) as *const u8)
                    );
                }
            }
        }
    }

    #[test]
    fn scan_sees_every_byte_at_every_length() {
        let mut buf = [0u64; 160];
        let base = buf.as_mut_ptr() as *mut u8;
        for len in (0..=1280).step_by(4) {
            // SAFETY: every offset is inside the 1280-byte buffer.
            unsafe {
                core::ptr::write_bytes(base, 0, 1280);
                assert!(!any_nonzero(base, base.add(len)), "len {len}");
                for at in [0, len / 3, len / 2 + 1, len.saturating_sub(1)] {
                    if at >= len {
                        continue;
                    }
                    *base.add(at) = 0x80;
                    assert!(any_nonzero(base, base.add(len)), "len {len} at {at}");
                    *base.add(at) = 0;
                }
                // A byte just past the range is not the range's business.
                *base.add(len) = 1;
                assert!(!any_nonzero(base, base.add(len)), "len {len} past end");
                *base.add(len) = 0;
            }
        }
    }

    /// A 32-byte aligned buffer, so that the scan and the zeroing are tried at every alignment
    /// their aligned middle part can meet.
    #[repr(C, align(32))]
    struct Aligned([u8; 1024]);

    #[test]
    fn scan_sees_every_byte_at_every_alignment() {
        let mut buf = Aligned([0; 1024]);
        let base = buf.0.as_mut_ptr();
        for start in [0, 8, 16, 24] {
            for len in (0..=400).step_by(4) {
                for at in 0..len {
                    // SAFETY: start + len <= 424 < 1024.
                    unsafe {
                        let from = base.add(start);
                        assert!(!any_nonzero(from, from.add(len)), "start {start} len {len}");
                        *from.add(at) = 1;
                        assert!(
                            any_nonzero(from, from.add(len)),
                            "start {start} len {len} at {at}"
                        );
                        *from.add(at) = 0;
                        // Bytes just outside the range are not its business.
                        *from.add(len) = 1;
                        if start > 0 {
                            *from.sub(1) = 1;
                        }
                        assert!(!any_nonzero(from, from.add(len)), "start {start} len {len}");
                        *from.add(len) = 0;
                        if start > 0 {
                            *from.sub(1) = 0;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn zero_clears_exactly_its_range_at_every_alignment() {
        let mut buf = Aligned([0; 1024]);
        for start in [0, 1, 8, 16, 24, 31] {
            for len in 0..=700 {
                buf.0.fill(0xa5);
                // SAFETY: start + len <= 731 < 1024.
                unsafe { zero(buf.0.as_mut_ptr().add(start), len) };
                for (i, &b) in buf.0.iter().enumerate() {
                    let inside = i >= start && i < start + len;
                    assert_eq!(b == 0, inside, "start {start} len {len} byte {i}");
                }
            }
        }
    }

    /// The AVX-512 forms directly (the dispatching tests above reach them only from 256 bytes,
    /// at the few lengths they try): every length from their minimum to 1 KiB at every 16-byte
    /// alignment a slot can have within a cache line, a dirty byte at every position.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_forms_see_and_clear_exactly_their_range() {
        if simd::level() != simd::Level::Avx512 {
            std::eprintln!("no AVX-512 here: its forms are not exercised");
            return;
        }
        #[repr(C, align(64))]
        struct Buf([u8; 1280]);
        let mut buf = Buf([0; 1280]);
        let base = buf.0.as_mut_ptr();
        for start in [0, 16, 32, 48] {
            for len in (avx512::MIN..=1024).step_by(16) {
                // SAFETY: start + len + 1 <= 1073 < 1280; the CPU has AVX-512F (checked above).
                unsafe {
                    let from = base.add(start);
                    assert!(!avx512::any_nonzero(from, len), "start {start} len {len}");
                    for at in 0..len {
                        *from.add(at) = 0x80;
                        assert!(avx512::any_nonzero(from, len), "{start} {len} {at}");
                        *from.add(at) = 0;
                    }
                    *from.add(len) = 1;
                    if start > 0 {
                        *from.sub(1) = 1;
                    }
                    assert!(!avx512::any_nonzero(from, len), "outside {start} {len}");
                    core::ptr::write_bytes(base, 0xa5, 1280);
                    avx512::zero(from, len);
                    for i in 0..1280 {
                        let inside = i >= start && i < start + len;
                        assert_eq!(*base.add(i) == 0, inside, "zero {start} {len} byte {i}");
                    }
                    core::ptr::write_bytes(base, 0, 1280);
                }
            }
        }
    }

    #[test]
    fn zero_clears_exactly_its_range() {
        let mut buf = [0u8; 160];
        for start in [0, 1, 16] {
            for len in 0..=130 {
                buf.fill(0xa5);
                // SAFETY: start + len <= 146 < 160.
                unsafe { zero(buf.as_mut_ptr().add(start), len) };
                for (i, &b) in buf.iter().enumerate() {
                    let inside = i >= start && i < start + len;
                    assert_eq!(b == 0, inside, "start {start} len {len} byte {i}");
                }
            }
        }
    }
}

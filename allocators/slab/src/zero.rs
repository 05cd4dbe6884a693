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
                match (avx2, avx512) {
                    (_, true) => Level::Avx512,
                    (true, false) => Level::Avx2,
                    _ => Level::None,
                }
            }
        };
        STATE.store(level as u8 + 1, Relaxed);
        level
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::{
        __m256i, _mm256_load_si256, _mm256_loadu_si256, _mm256_or_si256, _mm256_setzero_si256,
        _mm256_store_si256, _mm256_storeu_si256, _mm256_testz_si256,
    };

    /// [`super::any_nonzero`] with 32-byte loads, 128 bytes per step into four accumulators. The
    /// first and last 32 bytes are loaded unaligned; everything between with aligned loads (a slot
    /// starts 16-aligned, so unaligned 32-byte loads would split every other cache line).
    ///
    /// # Safety
    /// The CPU supports AVX2; `[from, from + len)` is readable and `len >= 64`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn any_nonzero(from: *const u8, len: usize) -> bool {
        debug_assert!(len >= 64);
        let end = from as usize + len;
        // SAFETY: every load is inside the range: the two unaligned ones at its ends, the aligned
        // ones from the first 32-byte boundary after `from` up to the last one at or before `end`.
        unsafe {
            let mut a = _mm256_loadu_si256(from as *const __m256i);
            let mut b = _mm256_loadu_si256((end - 32) as *const __m256i);
            let mut c = _mm256_setzero_si256();
            let mut d = _mm256_setzero_si256();
            let mut q = (from as usize + 32) & !31;
            while q + 128 <= end {
                a = _mm256_or_si256(a, _mm256_load_si256(q as *const __m256i));
                b = _mm256_or_si256(b, _mm256_load_si256((q + 32) as *const __m256i));
                c = _mm256_or_si256(c, _mm256_load_si256((q + 64) as *const __m256i));
                d = _mm256_or_si256(d, _mm256_load_si256((q + 96) as *const __m256i));
                q += 128;
            }
            while q + 32 <= end {
                a = _mm256_or_si256(a, _mm256_load_si256(q as *const __m256i));
                q += 32;
            }
            let acc = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
            _mm256_testz_si256(acc, acc) == 0
        }
    }

    /// Zeroes `[p, p + len)` with 32-byte stores, aligned ones between an unaligned first and last.
    ///
    /// # Safety
    /// The CPU supports AVX2; `[p, p + len)` is writable and `len >= 64`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn zero(p: *mut u8, len: usize) {
        debug_assert!(len >= 64);
        let end = p as usize + len;
        // SAFETY: as in `any_nonzero`, with stores.
        unsafe {
            let z = _mm256_setzero_si256();
            _mm256_storeu_si256(p as *mut __m256i, z);
            _mm256_storeu_si256((end - 32) as *mut __m256i, z);
            let mut q = (p as usize + 32) & !31;
            while q + 128 <= end {
                _mm256_store_si256(q as *mut __m256i, z);
                _mm256_store_si256((q + 32) as *mut __m256i, z);
                _mm256_store_si256((q + 64) as *mut __m256i, z);
                _mm256_store_si256((q + 96) as *mut __m256i, z);
                q += 128;
            }
            while q + 32 <= end {
                _mm256_store_si256(q as *mut __m256i, z);
                q += 32;
            }
        }
    }
}

/// The AVX-512 forms of the scan and the zeroing, for runs of at least [`avx512::MIN`] bytes.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::{
        __m512i, _mm512_load_si512, _mm512_loadu_si512, _mm512_or_si512, _mm512_setzero_si512,
        _mm512_store_si512, _mm512_storeu_si512, _mm512_test_epi64_mask,
    };

    /// Shortest run given to 64-byte vectors: below it AVX2 needs at most four steps, and
    /// criterion measured no gain at 256-byte blocks (within its noise there).
    pub(super) const MIN: usize = 512;

    /// [`super::any_nonzero`] with 64-byte loads, 256 bytes per step into four accumulators; the
    /// first and last 64 bytes unaligned, everything between aligned (a 64-byte load that crosses
    /// a cache line costs two).
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `[from, from + len)` is readable and `len >= MIN`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn any_nonzero(from: *const u8, len: usize) -> bool {
        debug_assert!(len >= MIN);
        let end = from as usize + len;
        // SAFETY: every load is inside the range: the two unaligned ones at its ends, the aligned
        // ones from the first 64-byte boundary after `from` up to the last one at or before `end`.
        unsafe {
            let mut a = _mm512_loadu_si512(from as *const __m512i);
            let mut b = _mm512_loadu_si512((end - 64) as *const __m512i);
            let mut c = _mm512_setzero_si512();
            let mut d = _mm512_setzero_si512();
            let mut q = (from as usize + 64) & !63;
            while q + 256 <= end {
                a = _mm512_or_si512(a, _mm512_load_si512(q as *const __m512i));
                b = _mm512_or_si512(b, _mm512_load_si512((q + 64) as *const __m512i));
                c = _mm512_or_si512(c, _mm512_load_si512((q + 128) as *const __m512i));
                d = _mm512_or_si512(d, _mm512_load_si512((q + 192) as *const __m512i));
                q += 256;
            }
            while q + 64 <= end {
                a = _mm512_or_si512(a, _mm512_load_si512(q as *const __m512i));
                q += 64;
            }
            let acc = _mm512_or_si512(_mm512_or_si512(a, b), _mm512_or_si512(c, d));
            _mm512_test_epi64_mask(acc, acc) != 0
        }
    }

    /// Zeroes `[p, p + len)` with 64-byte stores, aligned ones between an unaligned first and last.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `[p, p + len)` is writable and `len >= MIN`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn zero(p: *mut u8, len: usize) {
        debug_assert!(len >= MIN);
        let end = p as usize + len;
        // SAFETY: as in `any_nonzero`, with stores.
        unsafe {
            let z = _mm512_setzero_si512();
            _mm512_storeu_si512(p as *mut __m512i, z);
            _mm512_storeu_si512((end - 64) as *mut __m512i, z);
            let mut q = (p as usize + 64) & !63;
            while q + 256 <= end {
                _mm512_store_si512(q as *mut __m512i, z);
                _mm512_store_si512((q + 64) as *mut __m512i, z);
                _mm512_store_si512((q + 128) as *mut __m512i, z);
                _mm512_store_si512((q + 192) as *mut __m512i, z);
                q += 256;
            }
            while q + 64 <= end {
                _mm512_store_si512(q as *mut __m512i, z);
                q += 64;
            }
        }
    }
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
            #[cfg(target_arch = "x86_64")]
            match simd::level() {
                simd::Level::Avx512 if len >= avx512::MIN => return avx512::zero(p, len),
                simd::Level::Avx512 | simd::Level::Avx2 => return avx2::zero(p, len),
                simd::Level::None => {}
            }
            ptr::write_bytes(p, 0, len);
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

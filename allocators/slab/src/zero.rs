//! Runs of zero bytes: the write-after-free scan of a slot being reused and the zeroing of a freed
//! block.
//!
//! Both run on every malloc and free of the hardened default, over the whole slot and the whole
//! block, so they decide the cost of medium and large blocks: the scan ORs words without an early
//! exit (AVX2 when available) and locates a failure only afterwards; zeroing avoids a memset call
//! for small blocks.

use core::ptr;

/// True if any byte of `[from, to)` is not zero. `from` is 8-aligned and the length a multiple of 4
/// (true of every slot: 16-aligned starts, strides of 16·k − 4 usable bytes). One pass of OR-ed
/// words with no early exit; the rare failure is located by [`first_nonzero`]. Long runs use AVX2
/// when the CPU has it (32-byte loads halve the scan of large slots).
#[inline]
pub(crate) unsafe fn any_nonzero(from: *const u8, to: *const u8) -> bool {
    let len = to as usize - from as usize;
    debug_assert!(from as usize % 8 == 0 && len % 4 == 0);
    #[cfg(target_arch = "x86_64")]
    if len >= 256 && avx2::available() {
        // SAFETY: the CPU supports AVX2 (checked); the range is the caller's.
        return unsafe { avx2::any_nonzero(from, len) };
    }
    // SAFETY: per the contract.
    unsafe { words_nonzero(from, len) }
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
        if len % 8 != 0 {
            acc |= u64::from((from.add(len - 4) as *const u32).read());
        }
    }
    acc != 0
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::{
        __cpuid, __cpuid_count, __m256i, _mm256_loadu_si256, _mm256_or_si256, _mm256_testz_si256,
        _xgetbv,
    };
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

    /// 0 not yet known, 1 absent, 2 present.
    static STATE: AtomicU8 = AtomicU8::new(0);

    /// True when the CPU and the OS support AVX2 (CPUID and XCR0, as the architecture manual says).
    #[inline]
    pub(super) fn available() -> bool {
        match STATE.load(Relaxed) {
            0 => detect(),
            s => s == 2,
        }
    }

    #[cold]
    fn detect() -> bool {
        // SAFETY: CPUID exists on every x86_64 CPU; XGETBV is used only once OSXSAVE says the OS
        // enabled it.
        let yes = unsafe {
            let leaf1 = __cpuid(1);
            let osxsave = leaf1.ecx & (1 << 27) != 0;
            let avx = leaf1.ecx & (1 << 28) != 0;
            osxsave
                && avx
                && _xgetbv(0) & 0b110 == 0b110
                && __cpuid(0).eax >= 7
                && __cpuid_count(7, 0).ebx & (1 << 5) != 0
        };
        STATE.store(if yes { 2 } else { 1 }, Relaxed);
        yes
    }

    /// [`super::any_nonzero`] with 32-byte loads, 64 bytes per step.
    ///
    /// # Safety
    /// The CPU supports AVX2; `[from, from + len)` is readable, `from` 8-aligned, `len % 4 == 0`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn any_nonzero(from: *const u8, len: usize) -> bool {
        // SAFETY: every load is inside the range (unaligned loads are allowed).
        unsafe {
            let mut a = _mm256_loadu_si256(from as *const __m256i);
            let mut b = a;
            let mut i = 0;
            while i + 64 <= len {
                a = _mm256_or_si256(a, _mm256_loadu_si256(from.add(i) as *const __m256i));
                b = _mm256_or_si256(b, _mm256_loadu_si256(from.add(i + 32) as *const __m256i));
                i += 64;
            }
            let acc = _mm256_or_si256(a, b);
            _mm256_testz_si256(acc, acc) == 0 || super::words_nonzero(from.add(i), len - i)
        }
    }
}

/// Zeroes `[p, p + len)` exactly. Small lengths (most blocks) use a few overlapping word stores
/// instead of a call to memset.
#[inline]
pub(crate) unsafe fn zero(p: *mut u8, len: usize) {
    // SAFETY: the caller owns [p, p + len); overlapping stores stay inside it.
    unsafe {
        if len > 64 {
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
        while i < len && (from as usize + i) % 8 != 0 {
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

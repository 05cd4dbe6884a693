//! The kernel's entropy, for the allocators' secrets (slab's meta-area stamp, arena's tcache key).
//!
//! [`OsEntropy`] is a `rand_core` generator over getrandom(2), non-blocking, that keeps errno. When
//! getrandom is missing (Linux < 3.17) or not yet seeded, it falls back to the 16 random bytes the
//! kernel puts in every process's auxiliary vector (AT_RANDOM), mixed with a counter so successive draws
//! differ and the values differ from what libc derives from the same bytes for its own guards.
//!
//! Lives in the page backend because it is a system call both allocators need and neither may own.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rand_core::RngCore;

use crate::error::{errno, ErrnoGuard};

/// Random bits from the kernel; see the module documentation for the fallback.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

static FALLBACK_COUNTER: AtomicU64 = AtomicU64::new(0);

impl RngCore for OsEntropy {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill_bytes(&mut bytes);
        u64::from_ne_bytes(bytes)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        let _errno = ErrnoGuard::save();
        let mut filled = 0;
        while filled < dst.len() {
            // SAFETY: the destination is the unfilled tail of `dst`.
            let n = unsafe {
                libc::getrandom(
                    dst[filled..].as_mut_ptr().cast(),
                    dst.len() - filled,
                    libc::GRND_NONBLOCK,
                )
            };
            if n > 0 {
                filled += n as usize;
            } else if n < 0 && errno() == libc::EINTR {
                continue;
            } else {
                break;
            }
        }
        if filled < dst.len() {
            fill_from_auxv(&mut dst[filled..]);
        }
    }
}

/// A counter value that differs on every call, for cheap derived randomness (see slab's placement).
pub fn counter() -> u64 {
    FALLBACK_COUNTER.fetch_add(1, Relaxed)
}

fn fill_from_auxv(dst: &mut [u8]) {
    // SAFETY: getauxval has no preconditions; AT_RANDOM, when present, points at 16 readable bytes.
    let at_random = unsafe { libc::getauxval(crate::sys::AT_RANDOM) } as *const u64;
    let (a, b) = if at_random.is_null() {
        (0x9e37_79b9_7f4a_7c15, &FALLBACK_COUNTER as *const _ as u64)
    } else {
        // SAFETY: see above; read_unaligned because the auxv bytes carry no alignment promise.
        unsafe {
            (
                at_random.read_unaligned(),
                at_random.add(1).read_unaligned(),
            )
        }
    };
    for chunk in dst.chunks_mut(8) {
        let v = mix(a ^ mix(b.wrapping_add(counter())));
        chunk.copy_from_slice(&v.to_ne_bytes()[..chunk.len()]);
    }
}

/// A strong 64-bit mixing function (splitmix64's finaliser).
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ() {
        let a = OsEntropy.next_u64();
        let b = OsEntropy.next_u64();
        assert_ne!(a, b);
    }

    #[test]
    fn fallback_draws_differ_and_keep_errno() {
        let mut buf = [0u8; 24];
        fill_from_auxv(&mut buf);
        assert_ne!(&buf[..8], &buf[8..16]);
        assert_ne!(&buf[8..16], &buf[16..24]);
        crate::error::set_errno(libc::ENOMEM);
        let _ = OsEntropy.next_u64();
        assert_eq!(errno(), libc::ENOMEM);
    }
}

//! Process secrets: the tcache key that marks cached chunks (double-free detection) and safe-linking
//! of the singly linked tcache and fastbin lists.
//!
//! The key is random per process (getrandom through `rand_core`'s `RngCore`, falling back to the
//! kernel's AT_RANDOM bytes), as in glibc since 2.34, so an attacker cannot forge "this chunk is
//! cached" or predict it. Safe-linking stores `(address_of_link >> 12) ^ pointer`: a corrupted or
//! forged link decodes to a pointer that is, with high probability, misaligned, and every decoded
//! pointer is checked for 16-byte alignment.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use rand_core::RngCore;

use twinheap_page::OsEntropy;

static KEY: AtomicUsize = AtomicUsize::new(0);

/// The tcache key; never 0 (0 is what a chunk leaving the cache gets). Valid once [`init_keys`] ran,
/// which every thread does before it can own a tcache.
#[inline(always)]
pub(crate) fn tcache_key() -> usize {
    KEY.load(Relaxed)
}

/// Draws the keys if this has not happened yet.
pub(crate) fn init_keys() {
    if KEY.load(Relaxed) == 0 {
        init_key();
    }
    if FAST_KEY.load(Relaxed) == 0 {
        FAST_KEY.store(KEY.load(Relaxed).rotate_left(29) ^ 0x5bd1_e995, Relaxed);
    }
}

#[cold]
fn init_key() -> usize {
    let _errno = twinheap_page::error::ErrnoGuard::save();
    let mut k = 0;
    while k == 0 {
        k = OsEntropy.next_u64() as usize;
    }
    match KEY.compare_exchange(0, k, Relaxed, Relaxed) {
        Ok(_) => k,
        Err(existing) => existing,
    }
}

/// The word a chunk on a fast bin carries in its second user word (where a tcache entry keeps its
/// key), so that freeing it again can be recognised even when it is not the bin's head.
/// Valid once [`init_keys`] ran.
#[inline(always)]
pub(crate) fn fast_key() -> usize {
    FAST_KEY.load(Relaxed)
}

static FAST_KEY: AtomicUsize = AtomicUsize::new(0);

/// Encodes `ptr` for storage in the link field at `field`.
#[inline(always)]
pub(crate) fn protect(field: *const usize, ptr: usize) -> usize {
    ((field as usize) >> 12) ^ ptr
}

/// Decodes the value stored at `field`.
#[inline(always)]
pub(crate) fn reveal(field: *const usize, stored: usize) -> usize {
    protect(field, stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_nonzero() {
        init_keys();
        let k = tcache_key();
        assert_ne!(k, 0);
        assert_eq!(tcache_key(), k);
    }

    #[test]
    fn linking_round_trips() {
        let field = 0x7f00_1234_5010usize as *const usize;
        let p = 0x7f00_1234_6000usize;
        let s = protect(field, p);
        assert_ne!(s, p);
        assert_eq!(reveal(field, s), p);
        assert_eq!(reveal(field, 0), 0x7f00_1234_5010 >> 12);
    }
}

//! Chunks: the boundary-tagged blocks every arena is carved into, and their size arithmetic.
//!
//! A chunk starts with two words, `prev_size` and `size`; user memory begins 16 bytes in. The size
//! word holds the whole chunk size (a multiple of 16) and three flags in its low bits:
//! [`PREV_INUSE`] (the chunk below is in use; when clear, `prev_size` holds that chunk's size),
//! [`IS_MMAPPED`] (the chunk is its own mapping) and [`NON_MAIN_ARENA`] (the chunk belongs to a
//! secondary arena). A free chunk's size is repeated in the next chunk's `prev_size` (its footer),
//! which is user data while the chunk is in use, so an in-use heap chunk costs 8 bytes of overhead.
//!
//! Invariants: every chunk address is 16-aligned; every heap chunk is at least [`MINSIZE`]; whether a
//! chunk is in use is the PREV_INUSE bit of the chunk after it.

use core::ptr;

/// One size word.
pub(crate) const SIZE_SZ: usize = 8;
/// Alignment of every chunk and every user pointer.
pub(crate) const ALIGNMENT: usize = 16;
pub(crate) const ALIGN_MASK: usize = ALIGNMENT - 1;
/// The two header words.
pub(crate) const HDR: usize = 16;
/// Smallest chunk: header plus the two list links.
pub(crate) const MINSIZE: usize = 32;

pub(crate) const PREV_INUSE: usize = 0x1;
pub(crate) const IS_MMAPPED: usize = 0x2;
pub(crate) const NON_MAIN_ARENA: usize = 0x4;
pub(crate) const FLAGS: usize = PREV_INUSE | IS_MMAPPED | NON_MAIN_ARENA;

/// Largest request: anything above PTRDIFF_MAX fails, as in glibc.
pub(crate) const MAX_REQUEST: usize = isize::MAX as usize;

/// The chunk view. Only free chunks use `fd`/`bk`, and only free large chunks the `*_nextsize` links.
#[repr(C)]
pub(crate) struct Chunk {
    pub prev_size: usize,
    pub size: usize,
    pub fd: *mut Chunk,
    pub bk: *mut Chunk,
    pub fd_nextsize: *mut Chunk,
    pub bk_nextsize: *mut Chunk,
}

pub(crate) type P = *mut Chunk;

/// Chunk size for a request of `n` bytes: room for the size word, rounded to 16, at least MINSIZE.
/// `None` above the request limit.
#[inline(always)]
pub(crate) const fn request2size(n: usize) -> Option<usize> {
    if n > MAX_REQUEST - 64 {
        return None;
    }
    let s = (n + SIZE_SZ + ALIGN_MASK) & !ALIGN_MASK;
    Some(if s < MINSIZE { MINSIZE } else { s })
}

#[inline(always)]
pub(crate) fn mem(p: P) -> *mut u8 {
    (p as usize + HDR) as *mut u8
}

#[inline(always)]
pub(crate) fn chunk_of(m: *mut u8) -> P {
    (m as usize).wrapping_sub(HDR) as P
}

#[inline(always)]
pub(crate) fn at(p: P, offset: usize) -> P {
    (p as usize).wrapping_add(offset) as P
}

/// # Safety (all accessors below)
/// `p` must point at readable (for setters, writable) chunk header memory.
#[inline(always)]
pub(crate) unsafe fn size_nomask(p: P) -> usize {
    // SAFETY: per the module contract, `p` names a chunk header.
    unsafe { ptr::addr_of!((*p).size).read() }
}

#[inline(always)]
pub(crate) unsafe fn size(p: P) -> usize {
    // SAFETY: as above.
    unsafe { size_nomask(p) & !FLAGS }
}

#[inline(always)]
pub(crate) unsafe fn set_head(p: P, v: usize) {
    // SAFETY: as above.
    unsafe { ptr::addr_of_mut!((*p).size).write(v) }
}

#[inline(always)]
pub(crate) unsafe fn prev_size(p: P) -> usize {
    // SAFETY: as above.
    unsafe { ptr::addr_of!((*p).prev_size).read() }
}

/// Writes `s` as the footer of the chunk at `p` of size `s` (the next chunk's prev_size).
#[inline(always)]
pub(crate) unsafe fn set_foot(p: P, s: usize) {
    // SAFETY: as above; the footer lies inside the next chunk's header.
    unsafe { ptr::addr_of_mut!((*at(p, s)).prev_size).write(s) }
}

#[inline(always)]
pub(crate) unsafe fn prev_inuse(p: P) -> bool {
    // SAFETY: as above.
    unsafe { size_nomask(p) & PREV_INUSE != 0 }
}

#[inline(always)]
pub(crate) unsafe fn is_mmapped(p: P) -> bool {
    // SAFETY: as above.
    unsafe { size_nomask(p) & IS_MMAPPED != 0 }
}

#[inline(always)]
pub(crate) unsafe fn non_main(p: P) -> bool {
    // SAFETY: as above.
    unsafe { size_nomask(p) & NON_MAIN_ARENA != 0 }
}

/// In use = the next chunk's PREV_INUSE.
#[inline(always)]
pub(crate) unsafe fn inuse(p: P) -> bool {
    // SAFETY: as above; the next chunk's header follows this chunk.
    unsafe { prev_inuse(at(p, size(p))) }
}

#[inline(always)]
pub(crate) unsafe fn set_inuse_at(p: P, s: usize) {
    // SAFETY: as above.
    unsafe { (*at(p, s)).size |= PREV_INUSE }
}

#[inline(always)]
pub(crate) unsafe fn clear_inuse_at(p: P, s: usize) {
    // SAFETY: as above.
    unsafe { (*at(p, s)).size &= !PREV_INUSE }
}

#[inline(always)]
pub(crate) const fn aligned(a: usize) -> bool {
    a & ALIGN_MASK == 0
}

// ---- bins ----------------------------------------------------------------------------------------

pub(crate) const NBINS: usize = 128;
pub(crate) const NSMALLBINS: usize = 64;
pub(crate) const MIN_LARGE_SIZE: usize = NSMALLBINS * ALIGNMENT;
pub(crate) const BINMAPSIZE: usize = 4;

#[inline(always)]
pub(crate) const fn in_smallbin_range(s: usize) -> bool {
    s < MIN_LARGE_SIZE
}

#[inline(always)]
pub(crate) const fn smallbin_index(s: usize) -> usize {
    s >> 4
}

pub(crate) const fn largebin_index(s: usize) -> usize {
    if (s >> 6) <= 48 {
        48 + (s >> 6)
    } else if (s >> 9) <= 20 {
        91 + (s >> 9)
    } else if (s >> 12) <= 10 {
        110 + (s >> 12)
    } else if (s >> 15) <= 4 {
        119 + (s >> 15)
    } else if (s >> 18) <= 2 {
        124 + (s >> 18)
    } else {
        126
    }
}

/// The bin of a chunk of size `s`. Only the tests need the combined form: malloc picks the small
/// or large formula once per request and keeps the index.
#[cfg(test)]
pub(crate) const fn bin_index(s: usize) -> usize {
    if in_smallbin_range(s) {
        smallbin_index(s)
    } else {
        largebin_index(s)
    }
}

// ---- fast bins ------------------------------------------------------------------------------------

/// Largest settable fastbin request (mxfast's maximum).
pub(crate) const MAX_FAST_SIZE: usize = 160;
pub(crate) const NFASTBINS: usize = fastbin_index(MAX_FAST_SIZE + SIZE_SZ + ALIGN_MASK) + 1;
pub(crate) const DEFAULT_MXFAST: usize = 128;

#[inline(always)]
pub(crate) const fn fastbin_index(s: usize) -> usize {
    (s >> 4) - 2
}

/// The chunk-size limit that `mxfast` (a request size) sets; 0 leaves no chunk fast.
pub(crate) const fn max_fast_for(mxfast: usize) -> usize {
    if mxfast == 0 {
        MINSIZE / 2
    } else {
        (mxfast + SIZE_SZ) & !ALIGN_MASK
    }
}

// ---- tcache ---------------------------------------------------------------------------------------

pub(crate) const TCACHE_MAX_BINS: usize = 64;
pub(crate) const TCACHE_FILL_COUNT: usize = 7;
pub(crate) const MAX_TCACHE_SIZE: usize = tidx2usize(TCACHE_MAX_BINS - 1);

/// The tcache bin of chunk size `s`. Every caller passes a real chunk size (a `request2size` value
/// or a checked header size), a multiple of ALIGNMENT of at least MINSIZE, so the division is
/// exact; glibc's rounding up would cost three more instructions on every malloc and free.
#[inline(always)]
pub(crate) const fn csize2tidx(s: usize) -> usize {
    debug_assert!(s >= MINSIZE && s.is_multiple_of(ALIGNMENT));
    (s - MINSIZE) / ALIGNMENT
}

pub(crate) const fn tidx2usize(i: usize) -> usize {
    i * ALIGNMENT + MINSIZE - SIZE_SZ
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_sizes_match_glibc() {
        assert_eq!(request2size(0), Some(32));
        assert_eq!(request2size(24), Some(32));
        assert_eq!(request2size(25), Some(48));
        assert_eq!(request2size(41), Some(64));
        assert_eq!(request2size(1032), Some(1040));
        assert_eq!(request2size(usize::MAX), None);
        assert_eq!(request2size(MAX_REQUEST), None);
    }

    #[test]
    fn bin_indexes() {
        assert_eq!(smallbin_index(32), 2);
        assert_eq!(smallbin_index(1008), 63);
        assert_eq!(largebin_index(1024), 64);
        assert_eq!(largebin_index(3120), 96);
        assert_eq!(largebin_index((64 << 10) - 16), 120);
        assert_eq!(largebin_index(1 << 20), 126);
        assert_eq!(NFASTBINS, 10);
        for s in (32..200_000).step_by(16) {
            let i = bin_index(s);
            assert!((2..=126).contains(&i));
            assert!(bin_index(s + 16) >= i, "bins are monotone");
        }
    }

    #[test]
    fn tcache_limits() {
        assert_eq!(MAX_TCACHE_SIZE, 1032);
        assert_eq!(csize2tidx(32), 0);
        assert_eq!(csize2tidx(1040), 63);
        assert_eq!(max_fast_for(128), 128);
        assert_eq!(max_fast_for(120), 128);
        assert_eq!(max_fast_for(160), 160);
        assert!(fastbin_index(max_fast_for(160)) < NFASTBINS);
    }
}

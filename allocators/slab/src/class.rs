//! Size classes: which slot size serves a request.
//!
//! 48 classes of 16-byte units, the table of musl's mallocng: linear up to 8 units (128 bytes), then four
//! steps per doubling. Slots carry no in-band header (a block is found through its segment, see
//! `segment.rs`), so a class of `s` units serves requests up to `16 * s` bytes exactly: a 48-byte
//! request takes a 48-byte slot. The largest class serves 131056 bytes; anything larger is a large
//! allocation with its own mapping.
//!
//! Per class this file also fixes the group geometry the free path computes with: slots per group
//! (32, fewer for slots above 32 KiB so that a group fits a 1 MiB segment), the group's span, and
//! the multipliers that divide an offset by the span or the stride without a division.

/// Granularity and alignment of slots and of every pointer handed out.
pub const UNIT: usize = 16;
/// Number of size classes.
pub const CLASSES: usize = 48;

/// Slot sizes in units, per class.
pub const SIZES: [u16; CLASSES] = [
    1, 2, 3, 4, 5, 6, 7, 8, //
    9, 10, 12, 15, 18, 20, 25, 31, //
    36, 42, 50, 63, 72, 84, 102, 127, //
    146, 170, 204, 255, 292, 340, 409, 511, //
    584, 682, 818, 1023, 1169, 1364, 1637, 2047, //
    2340, 2730, 3276, 4095, 4680, 5460, 6552, 8191,
];

/// Largest request a class serves; larger requests are large allocations.
pub const MAX_SMALL: usize = SIZES[CLASSES - 1] as usize * UNIT;

/// Slot strides in bytes, padded to 64 entries so that a lookup by `class & 63` needs no bounds
/// check on the malloc and free paths (the padding, never a valid class, reads 0).
const STRIDES: [u32; 64] = {
    let mut t = [0u32; 64];
    let mut c = 0;
    while c < CLASSES {
        t[c] = SIZES[c] as u32 * UNIT as u32;
        c += 1;
    }
    t
};

/// Slot stride of a class in bytes (`class < CLASSES`).
#[inline]
pub const fn stride(class: usize) -> usize {
    debug_assert!(class < CLASSES);
    STRIDES[class & 63] as usize
}

/// Largest request class `class` serves.
#[cfg(test)]
pub const fn capacity(class: usize) -> usize {
    stride(class)
}

/// log2 of a segment's length (see `segment.rs`): every group lies inside one segment.
pub(crate) const SEG_SHIFT: u32 = 20;

/// Offsets inside a segment are below 2^SEG_SHIFT; a divisor `d` below that divides them exactly as
/// `(x * ceil(2^K / d)) >> K` with `K = 2 * SEG_SHIFT` (Granlund and Montgomery: `K >= N + log2 d`).
const K: u32 = 2 * SEG_SHIFT;

const fn magic(d: u64) -> u64 {
    match (1u64 << K).checked_div(d) {
        // ceil(2^K / d); the padding entries (d == 0) are never used.
        Some(q) => q + !(1u64 << K).is_multiple_of(d) as u64,
        None => 0,
    }
}

/// Per class (padded to 64 like [`STRIDES`]): slots per group, group span in bytes, and the
/// multipliers for dividing by the span and by the stride.
const COUNTS: [u32; 64] = {
    let mut t = [0u32; 64];
    let mut c = 0;
    while c < CLASSES {
        let fit = (1u32 << SEG_SHIFT) / STRIDES[c];
        t[c] = if fit < 32 { fit } else { 32 };
        c += 1;
    }
    t
};
const SPANS: [u32; 64] = {
    let mut t = [0u32; 64];
    let mut c = 0;
    while c < CLASSES {
        t[c] = COUNTS[c] * STRIDES[c];
        c += 1;
    }
    t
};
const SPAN_MAGIC: [u64; 64] = {
    let mut t = [0u64; 64];
    let mut c = 0;
    while c < CLASSES {
        t[c] = magic(SPANS[c] as u64);
        c += 1;
    }
    t
};
const STRIDE_MAGIC: [u64; 64] = {
    let mut t = [0u64; 64];
    let mut c = 0;
    while c < CLASSES {
        t[c] = magic(STRIDES[c] as u64);
        c += 1;
    }
    t
};

/// Slots in every group of `class` (1..=32).
#[inline]
pub(crate) const fn count(class: usize) -> usize {
    COUNTS[class & 63] as usize
}

/// Bytes a group of `class` spans: its slots, nothing else.
#[inline]
pub(crate) const fn span(class: usize) -> usize {
    SPANS[class & 63] as usize
}

/// `off / span(class)` for `off` below a segment's length.
#[inline(always)]
pub(crate) fn group_index(class: usize, off: usize) -> usize {
    ((off as u64 * SPAN_MAGIC[class & 63]) >> K) as usize
}

/// `off / stride(class)` for `off` below a segment's length.
#[inline(always)]
pub(crate) fn slot_index(class: usize, off: usize) -> usize {
    ((off as u64 * STRIDE_MAGIC[class & 63]) >> K) as usize
}

/// The smallest class whose capacity holds `n` bytes. `n` must be at most [`MAX_SMALL`].
///
/// Branch-free past the linear range: random request sizes would mispredict a search loop.
#[inline]
pub fn of(n: usize) -> usize {
    debug_assert!(n <= MAX_SMALL);
    // Units needed beyond the first.
    let units = n.saturating_sub(1) / UNIT;
    if units < 9 {
        return units;
    }
    // From class 8 on the classes come four to an octave of unit counts: those of [2^m, 2^(m+1))
    // for m >= 3 start at class 4m - 4, and the octave's last class is 2^(m+1) - 1 units, so the
    // answer is that first class plus the number of its first three that are too small.
    let need = units + 1;
    let m = (usize::BITS - 1 - need.leading_zeros()) as usize;
    let first = 4 * m - 4;
    let small = |c: usize| usize::from((SIZES_PADDED[c & 63] as usize) < need);
    first + small(first) + small(first + 1) + small(first + 2)
}

/// [`SIZES`] padded to 64 entries, for lookups masked by `& 63` (no bounds checks).
const SIZES_PADDED: [u16; 64] = {
    let mut t = [u16::MAX; 64];
    let mut c = 0;
    while c < CLASSES {
        t[c] = SIZES[c];
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_maps_to_the_smallest_fitting_class() {
        let mut class = 0;
        for n in 0..=MAX_SMALL {
            while capacity(class) < n {
                class += 1;
            }
            assert_eq!(of(n), class, "size {n}");
        }
    }

    #[test]
    fn table_is_increasing_and_capped() {
        assert!(SIZES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(MAX_SMALL, 131_056);
        assert_eq!(capacity(0), 16);
        assert_eq!(of(0), 0);
        assert_eq!(of(16), 0);
        assert_eq!(of(17), 1);
        assert_eq!(of(48), 2); // exact fit: no header
        assert_eq!(of(129), 8);
    }

    #[test]
    fn groups_fit_a_segment_and_divisions_are_exact() {
        for class in 0..CLASSES {
            let (cnt, span, stride) = (count(class), span(class), stride(class));
            assert!(
                (1..=32).contains(&cnt) && span <= 1 << SEG_SHIFT,
                "class {class}"
            );
            assert!(cnt == 32 || span + stride > 1 << SEG_SHIFT, "class {class}");
            // Every quotient boundary and its neighbours, up to the end of a segment.
            for d in [span, stride] {
                let mut q = 0;
                while q * d < 1 << SEG_SHIFT {
                    for off in [q * d, q * d + 1, (q + 1) * d - 1] {
                        if off < 1 << SEG_SHIFT {
                            let got = if d == span {
                                group_index(class, off)
                            } else {
                                slot_index(class, off)
                            };
                            assert_eq!(got, off / d, "class {class} off {off} d {d}");
                        }
                    }
                    q += 1;
                }
            }
        }
    }
}

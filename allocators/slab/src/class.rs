//! Size classes: which slot size serves a request.
//!
//! 48 classes of 16-byte units, the table of musl's mallocng: linear up to 8 units (128 bytes), then four
//! steps per doubling, chosen so that groups of slots tile power-of-two spans with little waste. A class
//! of `s` units serves requests up to `16 * s - 4` bytes: the last 4 bytes of every slot hold the next
//! slot's in-band header. The largest class serves 131052 bytes; anything larger is a large allocation
//! with its own mapping.

/// Granularity and alignment of slots and of every pointer handed out.
pub const UNIT: usize = 16;
/// In-band header bytes in front of each allocation.
pub const HEADER: usize = 4;
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
pub const MAX_SMALL: usize = SIZES[CLASSES - 1] as usize * UNIT - HEADER;

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
    stride(class) - HEADER
}

/// The smallest class whose capacity holds `n` bytes. `n` must be at most [`MAX_SMALL`].
#[inline]
pub fn of(n: usize) -> usize {
    debug_assert!(n <= MAX_SMALL);
    // Units needed beyond the first, counting the 4-byte header.
    let units = (n + HEADER - 1) / UNIT;
    if units < 9 {
        return units;
    }
    // From class 8 on there are four classes per doubling of the unit count; start at the first class
    // of the octave holding `units + 1` and step up at most three times.
    let need = (units + 1) as u16;
    let octave = (usize::BITS - 1 - (units >> 3).leading_zeros()) as usize;
    let mut class = 4 * octave + 4;
    while SIZES[class] < need {
        class += 1;
    }
    class
}

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
        assert_eq!(MAX_SMALL, 131_052);
        assert_eq!(capacity(0), 12);
        assert_eq!(of(0), 0);
        assert_eq!(of(13), 1);
        assert_eq!(of(48), 3); // 64-byte slots: 48 bytes plus the 4-byte header do not fit in 48
    }
}

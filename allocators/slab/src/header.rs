//! The in-band header in front of every block, and the slot layout around it.
//!
//! A group is `[group header, 16 bytes][slot 0][slot 1]...`. The group header holds the pointer to the
//! group's [`Meta`]; its last 4 bytes are slot 0's block header. Each slot is `stride` bytes; its last 4
//! bytes are the next slot's header, so a slot serves at most `stride - 4` bytes. Slot `i` starts at
//! `storage + i * stride` and its usable bytes end at `end = start + stride - 4`.
//!
//! The 4-byte header at `p - 4`:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | flags: [`FLAG_BIG`] (offset too large for 16 bits: the u16 is 0, a u32 sits at `p - 8`), [`FLAG_FREED`] |
//! | 1 | slot index (bits 0-4) and code (bits 5-7): 0-4 = that many slack bytes after the block; 5 = slack count stored as u32 at `end - 4`; 6 = the slot holds a nested group; 7 = slot-start record of a block placed at an offset |
//! | 2-3 | distance in 16-byte units from `storage` to `p` |
//!
//! When a block has slack, the byte right after it is a canary derived from the secret and the address
//! (never 0, so the classic off-by-one NUL is caught), and the byte at `end` (the next slot's flag byte)
//! must hold only flags. A block placed at an offset inside its slot also leaves a slot-start record at
//! `start - 4` saying where it is, so the next use of the slot continues the cycle.
//!
//! A freed block keeps its header with [`FLAG_FREED`] set, so a second free of the same pointer is
//! recognised as a double free rather than as garbage.
//!
//! [`Meta`]: crate::meta::Meta

use crate::class::UNIT;

pub(crate) const FLAG_BIG: u8 = 0x01;
pub(crate) const FLAG_FREED: u8 = 0x80;
pub(crate) const CODE_U32: u8 = 5;
pub(crate) const CODE_NESTED: u8 = 6;
pub(crate) const CODE_START: u8 = 7;

/// Size of the group header.
pub(crate) const GROUP_HEADER: usize = UNIT;
/// Bytes after a slot's usable end that belong to the next header (its flag byte must stay clean).
pub(crate) const HEADER_AFTER: usize = 4;

/// A decoded block header (not yet validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub flags: u8,
    pub idx: u8,
    pub code: u8,
    /// Distance from storage to the block, in units.
    pub off: usize,
}

/// Reads the header in front of `p`.
///
/// # Safety
/// The 4 bytes before `p` (8 if the big flag is set) must be readable.
#[inline]
pub(crate) unsafe fn read(p: *const u8) -> Header {
    // SAFETY: per the contract. One little-endian word: flags, index and code, 16-bit offset.
    unsafe {
        let word = u32::from_le((p.sub(4) as *const u32).read_unaligned());
        let flags = word as u8;
        let b1 = (word >> 8) as u8;
        let mut off = (word >> 16) as usize;
        if flags & FLAG_BIG != 0 {
            off = if off == 0 {
                (p.sub(8) as *const u32).read_unaligned() as usize
            } else {
                usize::MAX
            };
        }
        Header {
            flags,
            idx: b1 & 31,
            code: b1 >> 5,
            off,
        }
    }
}

/// Writes the header in front of `p`: slot `idx`, `code`, `off` units from storage.
///
/// # Safety
/// The bytes before `p` belong to the block's slot (or its slot-start header area).
#[inline]
pub(crate) unsafe fn write(p: *mut u8, idx: usize, code: u8, off: usize) {
    let b1 = u32::from((idx as u8 & 31) | (code << 5)) << 8;
    // SAFETY: per the contract.
    unsafe {
        if off > 0xffff {
            (p.sub(8) as *mut u32).write_unaligned(off as u32);
            (p.sub(4) as *mut u32).write_unaligned(u32::to_le(u32::from(FLAG_BIG) | b1));
        } else {
            (p.sub(4) as *mut u32).write_unaligned(u32::to_le(b1 | (off as u32) << 16));
        }
    }
}

/// [`write`] for a block in a group with slots of a size class: a group spans less than 1 MiB, so
/// the offset always fits the header's 16 bits.
///
/// # Safety
/// As for [`write`]; `off <= 0xffff`.
#[inline(always)]
pub(crate) unsafe fn write_classed(p: *mut u8, idx: usize, code: u8, off: usize) {
    debug_assert!(off <= 0xffff && idx < 32);
    let word = u32::from((idx as u8 & 31) | (code << 5)) << 8 | (off as u32) << 16;
    // SAFETY: per the contract.
    unsafe { (p.sub(4) as *mut u32).write_unaligned(u32::to_le(word)) };
}

/// The canary byte after a block at `p` of `n` bytes: secret-derived, never 0. Only called for
/// blocks of groups or mappings with a meta record, which exist only once the secret does.
#[inline]
pub(crate) fn canary(p: usize, n: usize) -> u8 {
    let h = crate::secret::known() ^ (p as u64).rotate_left(17) ^ n as u64;
    ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8) | 1
}

/// Records the block's size: the slack count in the header code (or at `end - 4`) and the canary.
///
/// # Safety
/// `[p, end)` is the block's slot range and `n <= end - p`.
#[inline]
pub(crate) unsafe fn set_size(p: *mut u8, end: *mut u8, n: usize) {
    // SAFETY: per the contract.
    unsafe {
        let code = encode_size(p, end, n);
        *p.sub(3) = (*p.sub(3) & 31) | (code << 5);
    }
}

/// Writes the parts of a block's size encoding that lie after the block (the canary, and the slack
/// count when it needs a word) and returns the header code to go with them.
///
/// # Safety
/// As for [`set_size`].
#[inline]
pub(crate) unsafe fn encode_size(p: *mut u8, end: *mut u8, n: usize) -> u8 {
    let reserved = end as usize - p as usize - n;
    // SAFETY: every byte written lies in [p + n, end), which belongs to this block's slot.
    unsafe {
        if reserved > 0 {
            *p.add(n) = canary(p as usize, n);
        }
        if reserved >= usize::from(CODE_U32) {
            (end.sub(4) as *mut u32).write_unaligned(reserved as u32);
            CODE_U32
        } else {
            reserved as u8
        }
    }
}

/// The requested size of the block at `p`, after checking the slack encoding and the canaries.
/// Returns `None` when they show bytes past the block were written.
///
/// # Safety
/// `code` is the size code of the header in front of `p`, validated against the block's meta;
/// `[p - 4, end + 1)` is readable.
#[inline]
pub(crate) unsafe fn nominal_size(p: *const u8, end: *const u8, code: u8) -> Option<usize> {
    let room = end as usize - p as usize;
    // SAFETY: per the contract; `end - 4 >= p` whenever the code says the count is stored there.
    unsafe {
        let reserved = match code {
            0..=4 => usize::from(code),
            CODE_U32 if room >= 4 => {
                let r = (end.sub(4) as *const u32).read_unaligned() as usize;
                if r < usize::from(CODE_U32) {
                    return None;
                }
                r
            }
            _ => return None,
        };
        if reserved > room || *end & !(FLAG_FREED | FLAG_BIG) != 0 {
            return None;
        }
        let n = room - reserved;
        if reserved > 0 && *p.add(n) != canary(p as usize, n) {
            return None;
        }
        Some(n)
    }
}

/// Chooses where a block of `n` bytes goes in its slot `[start, end)`: `prev + 1` units into the
/// slack (cycling back to 0 past its end), so that a dangling pointer to the previous block no longer
/// names the new one; a never-used slot (`prev == usize::MAX`) starts at a random point.
#[inline]
pub(crate) fn cycle_offset(start: usize, end: usize, n: usize, prev: usize, fresh: u32) -> usize {
    let slack = (end - start - n) / UNIT;
    if slack == 0 {
        return 0;
    }
    if prev == usize::MAX {
        // `fresh` scaled into 0..=slack: a multiply, not a division.
        return ((u64::from(fresh) * (slack as u64 + 1)) >> 32) as usize;
    }
    let next = prev + 1;
    if next > slack {
        0
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_small_and_big_offsets() {
        let mut buf = [0u64; 8];
        let base = buf.as_mut_ptr() as *mut u8;
        for (idx, code, off) in [
            (0, 0, 0),
            (31, 7, 0xffff),
            (5, 3, 0x10000),
            (17, 5, 123_456),
        ] {
            // SAFETY: p is 32 bytes into a 64-byte buffer.
            unsafe {
                let p = base.add(32);
                write(p, idx, code, off);
                let h = read(p);
                assert_eq!((h.idx as usize, h.code, h.off), (idx, code, off));
                assert_eq!(h.flags & FLAG_BIG != 0, off > 0xffff);
            }
        }
    }

    #[test]
    fn size_round_trips_and_detects_overflow() {
        // Canaries need the secret, which a record check would have created first.
        crate::secret::secret();
        let mut buf = [0u64; 16];
        let base = buf.as_mut_ptr() as *mut u8;
        // SAFETY: all pointers stay inside the 128-byte buffer.
        unsafe {
            let p = base.add(16);
            let end = base.add(16 + 60);
            for n in [60, 59, 56, 55, 20, 0] {
                core::ptr::write_bytes(base, 0, 128);
                write(p, 2, 0, 0);
                set_size(p, end, n);
                let h = read(p);
                assert_eq!(nominal_size(p, end, h.code), Some(n), "n = {n}");
                if n < 60 {
                    *p.add(n) ^= 0x5a; // one byte too many
                    assert_eq!(nominal_size(p, end, read(p).code), None, "n = {n}");
                    *p.add(n) ^= 0x5a;
                }
                *end = 0x41; // overflow into the next slot's header
                assert_eq!(nominal_size(p, end, read(p).code), None, "n = {n}");
            }
        }
    }

    #[test]
    fn canary_is_never_zero() {
        crate::secret::secret();
        for p in (0..100_000usize).step_by(16) {
            assert_ne!(canary(p, p / 3), 0);
        }
    }

    #[test]
    fn offsets_cycle_through_the_slack() {
        let (start, end) = (0, 100);
        let mut prev = usize::MAX;
        let mut seen = [false; 3];
        for _ in 0..6 {
            prev = cycle_offset(start, end, 60, prev, 0);
            seen[prev] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert_eq!(cycle_offset(0, 60, 60, 5, 9), 0);
    }
}

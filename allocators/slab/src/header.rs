//! The in-band header of a large block (blocks of size classes have none: see `segment.rs`).
//!
//! A large block's mapping is laid out like a one-slot group: `[group header, 16 bytes][block...]
//! [4 bytes]`. The group header holds the pointer to the block's [`Meta`]; its last 4 bytes are the
//! block header when the block starts right after it. The block sits at a random 16-byte offset
//! (or `align` bytes in), and then a slot-start record at `storage - 4` says where.
//!
//! The 4-byte header at `p - 4`:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | flags: [`FLAG_BIG`] (offset too large for 16 bits: the u16 is 0, a u32 sits at `p - 8`), [`FLAG_FREED`] |
//! | 1 | slot index (bits 0-4, always 0) and code (bits 5-7): 0-4 = that many slack bytes after the block; 5 = slack count stored as u32 at `end - 4`; 7 = slot-start record of a block placed at an offset |
//! | 2-3 | distance in 16-byte units from `storage` to `p` |
//!
//! When a block has slack, the byte right after it is a canary derived from the secret and the address
//! (never 0), and the byte at `end` must hold only flags.
//!
//! A freed block keeps its header with [`FLAG_FREED`] set, so a second free of the same pointer is
//! recognised as a double free rather than as garbage.
//!
//! [`Meta`]: crate::meta::Meta

use crate::class::UNIT;
use crate::slot::canary;

pub(crate) const FLAG_BIG: u8 = 0x01;
pub(crate) const FLAG_FREED: u8 = 0x80;
pub(crate) const CODE_U32: u8 = 5;
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
}

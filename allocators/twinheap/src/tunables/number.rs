//! Number syntax for tunable values, and how numbers are shown back to users.
//!
//! The syntax is glibc's for `GLIBC_TUNABLES` (decimal, `0x`/`0X` hex, leading-`0` octal), made strict:
//! no sign, no surrounding blanks, no trailing garbage, at least one digit. Names in `TWINHEAP_TUNABLES`
//! of kind size may add one binary suffix `K`/`M`/`G` (either case). A value that does not fit in a `u64`
//! — by its digits or through its suffix — is an overflow, never a wrapped number.

use core::fmt;

/// Why a value is not a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumError {
    /// Not the number syntax at all (empty, sign, blank, bad digit, unknown suffix).
    Bad,
    /// Well-formed, but larger than `u64::MAX`.
    Overflow,
}

/// Parses `s`; `suffix` allows one trailing `K`/`M`/`G` (×2^10/2^20/2^30).
pub fn parse_number(s: &[u8], suffix: bool) -> Result<u64, NumError> {
    let (body, shift) = match s.split_last() {
        Some((&last, body)) if suffix => match last {
            b'k' | b'K' => (body, 10),
            b'm' | b'M' => (body, 20),
            b'g' | b'G' => (body, 30),
            _ => (s, 0),
        },
        _ => (s, 0),
    };
    let (digits, radix) = match body {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        // "0" alone lands here too: an octal prefix followed by no digits is zero, as in C.
        [b'0', rest @ ..] => (rest, 8),
        _ => (body, 10),
    };
    if digits.is_empty() && radix != 8 {
        return Err(NumError::Bad);
    }
    // Check the syntax fully before computing, so that "99999999999999999999x" is reported as malformed
    // rather than as too large.
    if !digits.iter().all(|&b| digit(b, radix).is_some()) {
        return Err(NumError::Bad);
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = digit(b, radix).ok_or(NumError::Bad)?;
        n = n
            .checked_mul(u64::from(radix))
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(NumError::Overflow)?;
    }
    if n.leading_zeros() < shift {
        return Err(NumError::Overflow);
    }
    Ok(n << shift)
}

fn digit(b: u8, radix: u32) -> Option<u32> {
    char::from(b).to_digit(radix)
}

/// Shows a number as users would write it: decimal, except that the huge bounds read as powers of two
/// (`2^62`, `2^64-1`) instead of twenty-digit numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pretty(pub u64);

impl fmt::Display for Pretty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v == u64::MAX {
            f.write_str("2^64-1")
        } else if v.is_power_of_two() && v >= 1 << 32 {
            write!(f, "2^{}", v.trailing_zeros())
        } else {
            write!(f, "{v}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    const MAX: u64 = u64::MAX;

    #[test]
    fn table() {
        use NumError::*;
        #[rustfmt::skip]
        let cases: &[(&[u8], bool, Result<u64, NumError>)] = &[
            (b"0", false, Ok(0)),
            (b"00", false, Ok(0)),
            (b"7", false, Ok(7)),
            (b"131072", false, Ok(131072)),
            (b"010", false, Ok(8)),
            (b"08", false, Err(Bad)),
            (b"0x10", false, Ok(16)),
            (b"0XfF", false, Ok(255)),
            (b"0x", false, Err(Bad)),
            (b"0xg", false, Err(Bad)),
            (b"", false, Err(Bad)),
            (b"", true, Err(Bad)),
            (b"-1", false, Err(Bad)),
            (b"+1", false, Err(Bad)),
            (b" 1", false, Err(Bad)),
            (b"1 ", false, Err(Bad)),
            (b"1\0", false, Err(Bad)),
            (b"abc", false, Err(Bad)),
            (b"18446744073709551615", false, Ok(MAX)),
            (b"18446744073709551616", false, Err(Overflow)),
            (b"99999999999999999999999999", false, Err(Overflow)),
            (b"99999999999999999999999999x", false, Err(Bad)),
            (b"0xffffffffffffffff", false, Ok(MAX)),
            (b"0x10000000000000000", false, Err(Overflow)),
            (b"01777777777777777777777", false, Ok(MAX)),
            (b"02000000000000000000000", false, Err(Overflow)),
            (b"1K", false, Err(Bad)),
            (b"1K", true, Ok(1024)),
            (b"1k", true, Ok(1024)),
            (b"3M", true, Ok(3 << 20)),
            (b"1G", true, Ok(1 << 30)),
            (b"1g", true, Ok(1 << 30)),
            (b"0x10K", true, Ok(16 << 10)),
            (b"010K", true, Ok(8 << 10)),
            (b"0K", true, Ok(0)),
            (b"K", true, Err(Bad)),
            (b"16E", true, Err(Bad)),
            (b"1KK", true, Err(Bad)),
            (b"1 K", true, Err(Bad)),
            (b"1KB", true, Err(Bad)),
            (b"17179869183G", true, Ok(17179869183 << 30)),
            (b"17179869184G", true, Err(Overflow)),
            (b"18446744073709551615K", true, Err(Overflow)),
            (b"0x3fffffffffffffK", true, Ok(0x3fffffffffffff << 10)),
            (b"0x40000000000000K", true, Err(Overflow)),
        ];
        for &(input, suffix, want) in cases {
            assert_eq!(
                parse_number(input, suffix),
                want,
                "{:?} suffix={suffix}",
                std::string::String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn pretty() {
        assert_eq!(Pretty(0).to_string(), "0");
        assert_eq!(Pretty(131072).to_string(), "131072");
        assert_eq!(Pretty(1 << 62).to_string(), "2^62");
        assert_eq!(Pretty(MAX).to_string(), "2^64-1");
    }
}

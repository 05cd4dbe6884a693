//! Warnings about the environment: what the parser reports, and the one line each becomes on stderr.
//!
//! A [`Warning`] borrows the offending bytes straight from the environment; nothing is copied or
//! allocated. [`Warning::line`] renders it into a fixed [`Line`]: the variable, the tunable and the value
//! are always named. Bytes from the environment are shown as they are (they may not be UTF-8), except
//! control bytes, which are escaped as `\xNN` so a value cannot forge extra lines or terminal escapes,
//! and quoted text is cut after [`QUOTE_MAX`] bytes so the explanation always fits on the line.

use core::fmt::Write;

use twinheap_page::diag::Line;

use super::{Id, Kind, Spec};

/// Longest piece of environment text quoted in a warning.
const QUOTE_MAX: usize = 64;

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `name` is not a tunable this variable accepts.
    UnknownName,
    /// `name` holds a whole item that has no `=`.
    Malformed,
    /// `TWINHEAP` names no allocator; the default (slab) is used.
    BadAllocator,
    /// `value` is not in the syntax of the tunable's kind.
    BadValue(Id),
    /// `value` parses but is outside what the tunable accepts (including u64 overflow).
    OutOfRange(Id),
}

/// One problem found in the environment. The setting concerned is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warning<'a> {
    /// The environment variable it was found in, e.g. `TWINHEAP_TUNABLES` or `MALLOC_TOP_PAD_`.
    pub var: &'static str,
    /// The name as spelled in the environment (a twinheap or glibc name, or the variable itself).
    pub name: &'a [u8],
    /// The value as spelled in the environment; empty for [`Reason::Malformed`] and [`Reason::UnknownName`].
    pub value: &'a [u8],
    pub reason: Reason,
}

impl Warning<'_> {
    /// Prints the warning on stderr as one line, in one `write(2)`, without allocating.
    pub fn emit(&self) {
        self.line().emit();
    }

    /// The line [`Warning::emit`] prints, without its newline: `twinheap: <var>: <message>`.
    pub fn line(&self) -> Line {
        let mut line = Line::new();
        // Writing into a Line never fails; it truncates instead.
        let _ = self.write_message(&mut line);
        line
    }

    fn write_message(&self, line: &mut Line) -> core::fmt::Result {
        write!(line, "twinheap: {}: ", self.var)?;
        match self.reason {
            Reason::UnknownName => {
                line.write_str("unknown tunable ")?;
                quote(line, self.name);
                line.write_str(" ignored")
            }
            Reason::Malformed => {
                quote(line, self.name);
                line.write_str(" is not name=value, ignored")
            }
            Reason::BadAllocator => {
                line.write_str("unknown allocator ")?;
                quote(line, self.value);
                line.write_str(" (expected slab, arena or system), using slab")
            }
            Reason::BadValue(id) => {
                let spec = id.spec();
                self.write_subject(line, spec)?;
                line.write_str(" is not ")?;
                match spec.kind {
                    Kind::Size | Kind::Int => line.write_str("a number")?,
                    Kind::Bool => {
                        line.write_str("a boolean (0, 1, true, false, on, off, yes, no)")?
                    }
                    Kind::Choice(_) => {
                        line.write_str("one of ")?;
                        spec.write_range(line)?;
                    }
                }
                write_ignored(line, spec)
            }
            Reason::OutOfRange(id) => {
                let spec = id.spec();
                self.write_subject(line, spec)?;
                line.write_str(" is out of range ")?;
                spec.write_range(line)?;
                write_ignored(line, spec)
            }
        }
    }

    /// `value 'V' for 'NAME'`, adding the twinheap name when the user spelled it another way.
    fn write_subject(&self, line: &mut Line, spec: &Spec) -> core::fmt::Result {
        line.write_str("value ")?;
        quote(line, self.value);
        if self.name != self.var.as_bytes() {
            line.write_str(" for ")?;
            quote(line, self.name);
        }
        if self.name != spec.name.as_bytes() {
            write!(line, " ({})", spec.name)?;
        }
        Ok(())
    }
}

/// `, ignored (default D)`. Says "default" rather than "default stands": a valid earlier or
/// lower-precedence setting of the same tunable may be what stands.
fn write_ignored(line: &mut Line, spec: &Spec) -> core::fmt::Result {
    line.write_str(", ignored (default ")?;
    spec.write_default(line)?;
    line.write_str(")")
}

/// Writes `'bytes'`, escaping control bytes and cutting long text with `...`.
fn quote(line: &mut Line, bytes: &[u8]) {
    let (shown, cut) = match bytes.get(..QUOTE_MAX) {
        Some(head) if bytes.len() > QUOTE_MAX => (head, true),
        _ => (bytes, false),
    };
    line.push_bytes(b"'");
    for chunk in shown.split_inclusive(|b| is_control(*b)) {
        match chunk.split_last() {
            Some((&last, head)) if is_control(last) => {
                line.push_bytes(head);
                let _ = write!(line, "\\x{last:02x}");
            }
            _ => line.push_bytes(chunk),
        }
    }
    if cut {
        line.push_bytes(b"...");
    }
    line.push_bytes(b"'");
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(w: Warning<'_>) -> std::string::String {
        std::string::String::from_utf8_lossy(w.line().as_bytes()).into_owned()
    }

    #[test]
    fn messages() {
        let w = |var, name: &'static [u8], value: &'static [u8], reason| Warning {
            var,
            name,
            value,
            reason,
        };
        let cases: &[(Warning<'static>, &str)] = &[
            (
                w("TWINHEAP_TUNABLES", b"slab.zero_on_fre", b"", Reason::UnknownName),
                "twinheap: TWINHEAP_TUNABLES: unknown tunable 'slab.zero_on_fre' ignored",
            ),
            (
                w("TWINHEAP_TUNABLES", b"arena.mxfast", b"999", Reason::OutOfRange(Id::ArenaMxfast)),
                "twinheap: TWINHEAP_TUNABLES: value '999' for 'arena.mxfast' is out of range 0..=160, \
                 ignored (default 128)",
            ),
            (
                w("GLIBC_TUNABLES", b"glibc.malloc.mxfast", b"abc", Reason::BadValue(Id::ArenaMxfast)),
                "twinheap: GLIBC_TUNABLES: value 'abc' for 'glibc.malloc.mxfast' (arena.mxfast) is not a \
                 number, ignored (default 128)",
            ),
            (
                w("MALLOC_ARENA_MAX", b"MALLOC_ARENA_MAX", b"0", Reason::OutOfRange(Id::ArenaArenaMax)),
                "twinheap: MALLOC_ARENA_MAX: value '0' (arena.arena_max) is out of range 1..=1048576, \
                 ignored (default 8 × online CPUs)",
            ),
            (
                w("TWINHEAP_TUNABLES", b"page.release", b"x", Reason::BadValue(Id::PageRelease)),
                "twinheap: TWINHEAP_TUNABLES: value 'x' for 'page.release' is not one of dontneed, free, \
                 ignored (default dontneed)",
            ),
            (
                w("TWINHEAP_TUNABLES", b"slab.zero_on_free", b"2", Reason::BadValue(Id::SlabZeroOnFree)),
                "twinheap: TWINHEAP_TUNABLES: value '2' for 'slab.zero_on_free' is not a boolean (0, 1, true, \
                 false, on, off, yes, no), ignored (default 1)",
            ),
            (
                w("TWINHEAP_TUNABLES", b"arena.hugetlb", b"3", Reason::OutOfRange(Id::ArenaHugetlb)),
                "twinheap: TWINHEAP_TUNABLES: value '3' for 'arena.hugetlb' is out of range 0, 1, 2 or a \
                 power of two >= 65536, ignored (default 0)",
            ),
            (
                w("TWINHEAP_TUNABLES", b"abc", b"", Reason::Malformed),
                "twinheap: TWINHEAP_TUNABLES: 'abc' is not name=value, ignored",
            ),
            (
                w("TWINHEAP", b"TWINHEAP", b"jemalloc", Reason::BadAllocator),
                "twinheap: TWINHEAP: unknown allocator 'jemalloc' (expected slab, arena or system), using slab",
            ),
            (
                w("TWINHEAP_TUNABLES", b"a\nb\x1b[1m\xff", b"", Reason::UnknownName),
                "twinheap: TWINHEAP_TUNABLES: unknown tunable 'a\\x0ab\\x1b[1m\u{fffd}' ignored",
            ),
        ];
        for (warning, want) in cases {
            assert_eq!(text(*warning), *want);
        }
    }

    #[test]
    fn raw_bytes_are_kept_and_long_text_cut() {
        let w = Warning {
            var: "TWINHEAP_TUNABLES",
            name: b"\xff\xfe",
            value: b"",
            reason: Reason::UnknownName,
        };
        assert_eq!(
            w.line().as_bytes(),
            b"twinheap: TWINHEAP_TUNABLES: unknown tunable '\xff\xfe' ignored"
        );

        let long = [b'x'; 300];
        let w = Warning {
            var: "TWINHEAP_TUNABLES",
            name: &long,
            value: b"",
            reason: Reason::UnknownName,
        };
        let line = w.line();
        let text = line.as_bytes();
        assert!(
            text.ends_with(b"xxx...' ignored"),
            "{}",
            std::string::String::from_utf8_lossy(text)
        );
        assert_eq!(text.iter().filter(|&&b| b == b'x').count(), QUOTE_MAX);
    }
}

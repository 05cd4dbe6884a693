//! The environment parser: `NAME=VALUE` entries as raw bytes in, a [`Config`] and warnings out.
//!
//! It may run inside the first `malloc` of a process, so it allocates nothing, keeps no state, and
//! cannot panic on any input: it only slices with `split`/`splitn`/`get` and does checked arithmetic.
//!
//! Rules (the user-facing version is in `docs/tunables.md`):
//! - Variables read: `TWINHEAP`, `TWINHEAP_TUNABLES`, `GLIBC_TUNABLES` and the legacy `MALLOC_*`
//!   variables of the table (`MALLOC_CHECK_` is recognised and ignored). If a variable occurs more than
//!   once in the environment, the first occurrence counts, as with `getenv`.
//! - Precedence does not depend on the order of the environment: legacy `MALLOC_*` variables apply
//!   first, then `GLIBC_TUNABLES`, then `TWINHEAP_TUNABLES`; each later source overrides. Within one
//!   variable the last valid setting wins. An invalid setting is reported and ignored, so whatever was
//!   in force before it — an earlier valid setting, a lower-precedence source or the default — stands.
//! - `TWINHEAP_TUNABLES` is `name=value:name=value`; empty items are skipped; an item without `=`, an
//!   unknown name or a bad value is reported and skipped, and the rest still applies.
//! - `GLIBC_TUNABLES` belongs to glibc: only `glibc.malloc.*` names that map onto a twinheap tunable are
//!   taken, every other name is silently left to glibc, and — as glibc does — a string with a non-empty
//!   item lacking `=` is discarded whole, silently (glibc prints its own warning). Bad values of mapped
//!   names are reported.
//! - In secure mode (AT_SECURE: setuid/setgid programs) nothing is read and nothing is reported.

use super::number::{parse_number, NumError};
use super::{
    by_glibc_name, by_legacy_env, by_name, Choice, Config, Id, Kind, Reason, Spec, Tunables,
    Warning,
};

const TWINHEAP: &str = "TWINHEAP";
const TWINHEAP_TUNABLES: &str = "TWINHEAP_TUNABLES";
const GLIBC_TUNABLES: &str = "GLIBC_TUNABLES";
/// glibc's heap-checking switch: twinheap's checks are always on, so it is accepted and has no effect.
const MALLOC_CHECK: &str = "MALLOC_CHECK_";

/// Which of our variables an environment entry is.
#[derive(Clone, Copy)]
enum Var {
    Allocator,
    Own,
    Glibc,
    Legacy(Id),
    Ignored,
}

fn classify(name: &[u8]) -> Option<Var> {
    let var = if name == TWINHEAP.as_bytes() {
        Var::Allocator
    } else if name == TWINHEAP_TUNABLES.as_bytes() {
        Var::Own
    } else if name == GLIBC_TUNABLES.as_bytes() {
        Var::Glibc
    } else if name == MALLOC_CHECK.as_bytes() {
        Var::Ignored
    } else {
        Var::Legacy(by_legacy_env(name)?.id)
    };
    Some(var)
}

/// Splits `name=value` at the first `=`; `None` without one.
fn split_entry(entry: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = entry.splitn(2, |&b| b == b'=');
    Some((parts.next()?, parts.next()?))
}

/// Whether the parser would look at this `NAME=VALUE` entry. Lets a caller that must buffer the
/// environment keep only what matters.
pub fn wanted(entry: &[u8]) -> bool {
    match split_entry(entry) {
        Some((name, _)) => matches!(
            classify(name),
            Some(Var::Allocator | Var::Own | Var::Glibc | Var::Legacy(_))
        ),
        None => false,
    }
}

/// The values of our variables, borrowed from the environment.
struct Found<'a> {
    allocator: Option<&'a [u8]>,
    own: Option<&'a [u8]>,
    glibc: Option<&'a [u8]>,
    legacy: [Option<&'a [u8]>; Id::COUNT],
}

/// Reads the configuration from `env`, one `NAME=VALUE` entry per item, reporting every problem to
/// `sink` (which may print it with [`Warning::emit`] or collect it). `secure` is AT_SECURE: when true
/// the environment is not looked at and the defaults are returned.
pub fn parse<'a>(
    env: impl IntoIterator<Item = &'a [u8]>,
    secure: bool,
    sink: &mut dyn FnMut(Warning<'a>),
) -> Config {
    let mut config = Config::defaults();
    if secure {
        return config;
    }
    let mut found = Found {
        allocator: None,
        own: None,
        glibc: None,
        legacy: [None; Id::COUNT],
    };
    for entry in env {
        let Some((name, value)) = split_entry(entry) else {
            continue;
        };
        let slot = match classify(name) {
            Some(Var::Allocator) => &mut found.allocator,
            Some(Var::Own) => &mut found.own,
            Some(Var::Glibc) => &mut found.glibc,
            Some(Var::Legacy(id)) => &mut found.legacy[id as usize],
            Some(Var::Ignored) | None => continue,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }

    if let Some(value) = found.allocator {
        config.allocator = parse_allocator(value, sink);
    }
    let t = &mut config.tunables;
    for (spec, value) in super::TABLE.iter().zip(found.legacy) {
        if let (Some(var), Some(value)) = (spec.legacy_env, value) {
            apply(t, spec, var, var.as_bytes(), value, false, sink);
        }
    }
    if let Some(list) = found.glibc {
        parse_glibc(t, list, sink);
    }
    if let Some(list) = found.own {
        parse_own(t, list, sink);
    }
    config
}

fn parse_allocator<'a>(value: &'a [u8], sink: &mut dyn FnMut(Warning<'a>)) -> Choice {
    match value {
        b"slab" => Choice::Slab,
        b"arena" => Choice::Arena,
        b"system" => Choice::System,
        // `TWINHEAP= prog` is how shells unset a variable for one command: treat it as absent.
        b"" => Choice::Slab,
        _ => {
            sink(Warning {
                var: TWINHEAP,
                name: TWINHEAP.as_bytes(),
                value,
                reason: Reason::BadAllocator,
            });
            Choice::Slab
        }
    }
}

fn items(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b':').filter(|item| !item.is_empty())
}

fn parse_own<'a>(t: &mut Tunables, list: &'a [u8], sink: &mut dyn FnMut(Warning<'a>)) {
    let var = TWINHEAP_TUNABLES;
    for item in items(list) {
        let Some((name, value)) = split_entry(item) else {
            sink(Warning {
                var,
                name: item,
                value: b"",
                reason: Reason::Malformed,
            });
            continue;
        };
        match by_name(name) {
            Some(spec) => apply(t, spec, var, name, value, true, sink),
            None => sink(Warning {
                var,
                name,
                value: b"",
                reason: Reason::UnknownName,
            }),
        }
    }
}

fn parse_glibc<'a>(t: &mut Tunables, list: &'a [u8], sink: &mut dyn FnMut(Warning<'a>)) {
    if items(list).any(|item| split_entry(item).is_none()) {
        return;
    }
    for (name, value) in items(list).filter_map(split_entry) {
        if let Some(spec) = by_glibc_name(name) {
            apply(t, spec, GLIBC_TUNABLES, name, value, false, sink);
        }
    }
}

/// Stores `value` into `spec`'s tunable if valid, else reports it and leaves the tunable as it was.
fn apply<'a>(
    t: &mut Tunables,
    spec: &Spec,
    var: &'static str,
    name: &'a [u8],
    value: &'a [u8],
    suffixes: bool,
    sink: &mut dyn FnMut(Warning<'a>),
) {
    match parse_value(spec, value, suffixes) {
        Ok(v) => t.set(spec.id, v),
        Err(reason) => sink(Warning {
            var,
            name,
            value,
            reason,
        }),
    }
}

/// Parses a value in the syntax of `spec`'s kind and checks it is one `spec` accepts.
fn parse_value(spec: &Spec, value: &[u8], suffixes: bool) -> Result<u64, Reason> {
    let id = spec.id;
    let v = match spec.kind {
        Kind::Size | Kind::Int => {
            let suffixes = suffixes && spec.kind == Kind::Size;
            match parse_number(value, suffixes) {
                Ok(v) => v,
                Err(NumError::Bad) => return Err(Reason::BadValue(id)),
                Err(NumError::Overflow) => return Err(Reason::OutOfRange(id)),
            }
        }
        Kind::Bool => match value {
            b"0" | b"false" | b"off" | b"no" => 0,
            b"1" | b"true" | b"on" | b"yes" => 1,
            _ => return Err(Reason::BadValue(id)),
        },
        Kind::Choice(words) => match words.iter().position(|w| w.as_bytes() == value) {
            Some(i) => i as u64,
            None => return Err(Reason::BadValue(id)),
        },
    };
    if spec.accepts(v) {
        Ok(v)
    } else {
        Err(Reason::OutOfRange(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_entries() {
        for yes in [
            &b"TWINHEAP=slab"[..],
            b"TWINHEAP=",
            b"TWINHEAP_TUNABLES=x",
            b"GLIBC_TUNABLES=",
            b"MALLOC_ARENA_MAX=2",
            b"MALLOC_TOP_PAD_=0",
        ] {
            assert!(wanted(yes), "{}", std::string::String::from_utf8_lossy(yes));
        }
        for no in [
            &b"TWINHEAP"[..],
            b"MALLOC_CHECK_=3",
            b"PATH=/bin",
            b"twinheap=slab",
            b"",
            b"=",
            b"TWINHEAPX=1",
        ] {
            assert!(!wanted(no), "{}", std::string::String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn value_kinds() {
        let release = Id::PageRelease.spec();
        assert_eq!(parse_value(release, b"free", true), Ok(1));
        assert_eq!(parse_value(release, b"dontneed", true), Ok(0));
        assert_eq!(
            parse_value(release, b"Free", true),
            Err(Reason::BadValue(Id::PageRelease))
        );
        assert_eq!(
            parse_value(release, b"1", true),
            Err(Reason::BadValue(Id::PageRelease))
        );
        let zero = Id::SlabZeroOnFree.spec();
        for (text, v) in [
            (&b"0"[..], 0),
            (b"1", 1),
            (b"true", 1),
            (b"false", 0),
            (b"on", 1),
            (b"off", 0),
        ] {
            assert_eq!(parse_value(zero, text, true), Ok(v));
        }
        assert_eq!(parse_value(zero, b"yes", true), Ok(1));
        assert_eq!(parse_value(zero, b"no", true), Ok(0));
        assert_eq!(
            parse_value(zero, b"2", true),
            Err(Reason::BadValue(Id::SlabZeroOnFree))
        );
        assert_eq!(
            parse_value(zero, b"TRUE", true),
            Err(Reason::BadValue(Id::SlabZeroOnFree))
        );
        // Int kinds never take suffixes, even in TWINHEAP_TUNABLES.
        let mmap_max = Id::ArenaMmapMax.spec();
        assert_eq!(
            parse_value(mmap_max, b"1K", true),
            Err(Reason::BadValue(Id::ArenaMmapMax))
        );
        assert_eq!(parse_value(mmap_max, b"2147483647", true), Ok(2147483647));
        assert_eq!(
            parse_value(mmap_max, b"2147483648", true),
            Err(Reason::OutOfRange(Id::ArenaMmapMax))
        );
        let top_pad = Id::ArenaTopPad.spec();
        assert_eq!(parse_value(top_pad, b"1K", true), Ok(1024));
        assert_eq!(
            parse_value(top_pad, b"1K", false),
            Err(Reason::BadValue(Id::ArenaTopPad))
        );
    }
}

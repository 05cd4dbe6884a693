//! The user documentation of the tunables, rendered from [`TABLE`] into Markdown.
//!
//! `docs/tunables.md` is this function's output; a test in `tests/tests/tunables.rs` fails when the file
//! and the table disagree, so the page cannot drift from the code. The prose here describes what
//! `parse.rs` and `env.rs` do; change them together.

use core::fmt::{self, Write};

use super::{Kind, Spec, TABLE};

const INTRO: &str = "\
# twinheap tunables

<!-- Generated from the table in allocators/twinheap/src/tunables.rs; do not edit by hand.
     To regenerate: TWINHEAP_BLESS=1 cargo test -p twinheap-tests --test tunables -->

twinheap reads its configuration from the environment once, at the first allocation. The same rules
apply to Rust programs that use a twinheap allocator type and to C programs run with the `LD_PRELOAD`
library.

## Choosing the allocator

`TWINHEAP=slab`, `TWINHEAP=arena` or `TWINHEAP=system` (the system allocator, unchanged). Unset or empty
means `slab`; any other value prints a warning and uses `slab`.

## Setting tunables

`TWINHEAP_TUNABLES=name=value:name=value:...`, with the names from the table below, for example

```sh
TWINHEAP_TUNABLES=slab.zero_on_free=0:arena.top_pad=1M ./program
```

- Names are exact and case-sensitive. Empty items (`::`) are allowed.
- If a tunable appears several times, the last valid setting wins.
- A setting that cannot be used — unknown name, item without `=`, malformed or out-of-range value —
  prints a warning and is ignored; whatever was in force before it stands (an earlier valid setting,
  the glibc spelling, or the default) and the rest of the string still applies.

Values by type:

- **size** and **integer**: an unsigned number in decimal (`131072`), hexadecimal (`0x20000`) or octal
  with a leading zero (`0400000`). No sign, no spaces. In `TWINHEAP_TUNABLES` a size may end with one
  binary suffix: `K`, `M` or `G` (or `k`, `m`, `g`), meaning ×1024, ×1024², ×1024³, so `1M` is 1048576.
  A number too large for 64 bits, with or without its suffix, is out of range; it never wraps.
  `0xffffffffffffffff` is the largest value (2^64-1).
- **boolean**: `1`, `true`, `on`, `yes` or `0`, `false`, `off`, `no`.
- **choice**: one of the listed words.

## glibc compatibility

Settings written for glibc's malloc keep working with the arena allocator:

- In `GLIBC_TUNABLES`, each `glibc.malloc.*` name listed in the table sets the matching `arena.*`
  tunable, in glibc's number syntax (no suffixes). All other names (`glibc.rtld.*`, `glibc.pthread.*`,
  ...) belong to glibc and are ignored without a warning. If `GLIBC_TUNABLES` contains an item without
  `=`, glibc discards the whole string, and so does twinheap (glibc prints the warning).
- The legacy variables (`MALLOC_ARENA_MAX`, `MALLOC_TOP_PAD_`, ...) listed in the table work the same
  way.
- `glibc.malloc.check` and `MALLOC_CHECK_` are accepted and have no effect: twinheap's checks are
  always on.

## Precedence

For each tunable, `TWINHEAP_TUNABLES` overrides `GLIBC_TUNABLES`, which overrides a legacy `MALLOC_*`
variable, whatever their order in the environment. If a variable appears more than once in the
environment, its first occurrence counts, as with `getenv`.

## Programs running setuid or setgid

When the kernel marks the process as secure (`AT_SECURE`: setuid or setgid programs), all of these
variables are ignored and the defaults are used, without warnings, as glibc 2.39 and later do with
`GLIBC_TUNABLES`.

## Warnings

Every problem is reported as one line on standard error, starting with `twinheap:` and naming the
variable, the tunable and the value, for example

```text
twinheap: TWINHEAP_TUNABLES: value '999' for 'arena.mxfast' is out of range 0..=160, ignored (default 128)
```

The program then runs with the remaining settings.
";

// STATUS NOTE: delete this paragraph (and its use below) once the slab and arena allocators have landed.
const STATUS_NOTE: &str = "\
> **Status.** The `slab.*` tunables take effect in the slab allocator, and the `arena.*` tunables (and
> the glibc names and `MALLOC_*_` variables that map onto them) in the arena allocator. `page.release`
> chooses how the arena allocator's `malloc_trim` gives back free pages inside its heaps; slab unmaps
> the memory it gives back instead of advising it, so there it has no effect.
";

const TABLE_HEAD: &str = "\
## Reference

| Name | Type | Range | Default | Honoured by | glibc tunable / legacy variable | Meaning |
|---|---|---|---|---|---|---|
";

/// Renders the user documentation page for all tunables.
pub fn write_markdown(out: &mut dyn Write) -> fmt::Result {
    out.write_str(INTRO)?;
    out.write_str("\n")?;
    out.write_str(STATUS_NOTE)?;
    out.write_str("\n")?;
    out.write_str(TABLE_HEAD)?;
    for spec in &TABLE {
        write_row(out, spec)?;
    }
    Ok(())
}

fn write_row(out: &mut dyn Write, spec: &Spec) -> fmt::Result {
    let kind = match spec.kind {
        Kind::Size => "size",
        Kind::Int => "integer",
        Kind::Bool => "boolean",
        Kind::Choice(_) => "choice",
    };
    write!(out, "| `{}` | {} | ", spec.name, kind)?;
    spec.write_range(out)?;
    out.write_str(" | ")?;
    spec.write_default(out)?;
    write!(out, " | {} | ", spec.honoured_by)?;
    match (spec.glibc, spec.legacy_env) {
        (Some(g), Some(l)) => write!(out, "`{g}`<br>`{l}`")?,
        (Some(g), None) => write!(out, "`{g}`")?,
        (None, Some(l)) => write!(out, "`{l}`")?,
        (None, None) => out.write_str("—")?,
    }
    writeln!(out, " | {} |", spec.meaning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_tunable() {
        let mut page = std::string::String::new();
        write_markdown(&mut page).unwrap();
        for spec in &TABLE {
            assert!(
                page.contains(&std::format!("| `{}` |", spec.name)),
                "{}",
                spec.name
            );
        }
        assert!(
            page.contains("| `arena.arena_max` | size | 1..=1048576 | 8 × online CPUs | arena |")
        );
        assert!(page.contains("| `arena.trim_threshold` | size | 0..=2^64-1 | 131072 |"));
        assert!(page
            .contains("| `page.release` | choice | dontneed, free | dontneed | slab, arena | — |"));
    }
}

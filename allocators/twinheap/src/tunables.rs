//! The tunables table: the one definition of every setting twinheap reads from the environment.
//!
//! [`TABLE`] lists each tunable once — name, kind, range, default, meaning, which allocator honours it and
//! the glibc spellings that map onto it. The parser ([`parse`]), the warnings ([`Warning`]) and the user
//! documentation ([`write_markdown`], rendered into `docs/tunables.md`) are all driven by it, so adding a
//! tunable means adding one entry here and one [`Id`] variant.
//!
//! Invariants:
//! - `TABLE[i].id as usize == i` (checked at compile time), so an [`Id`] indexes the table directly.
//! - Every default lies within its range and is accepted by [`Spec::accepts`], except a default marked
//!   with `default_text` (an "automatic" value chosen at run time, stored as `0`).
//! - A [`Tunables`] only ever holds values that [`Spec::accepts`]; the parser never stores anything else.

use core::fmt;

mod markdown;
mod number;
mod parse;
mod warning;

pub use markdown::write_markdown;
pub use number::Pretty;
pub use parse::{parse, wanted};
pub use warning::{Reason, Warning};

/// One tunable. The discriminant is the tunable's index in [`TABLE`] and its bit in [`Tunables`]' set mask.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Id {
    PageRelease,
    SlabZeroOnFree,
    SlabCheckWriteAfterFree,
    SlabLargeCache,
    SlabProtectFreedLarge,
    ArenaTopPad,
    ArenaPerturb,
    ArenaMmapThreshold,
    ArenaTrimThreshold,
    ArenaMmapMax,
    ArenaArenaMax,
    ArenaArenaTest,
    ArenaTcacheMax,
    ArenaTcacheCount,
    ArenaTcacheUnsortedLimit,
    ArenaMxfast,
    ArenaHugetlb,
}

impl Id {
    /// Number of tunables; the length of [`TABLE`].
    pub const COUNT: usize = 17;

    /// This tunable's table entry.
    pub fn spec(self) -> &'static Spec {
        &TABLE[self as usize]
    }
}

/// How a value is written and stored. Every kind is stored as a `u64`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// An unsigned number; in `TWINHEAP_TUNABLES` it may carry one `K`/`M`/`G` binary suffix.
    Size,
    /// An unsigned number without suffix.
    Int,
    /// `0`/`1`/`true`/`false`/`on`/`off`/`yes`/`no`, stored as 0 or 1.
    Bool,
    /// One of the listed words, stored as its index.
    Choice(&'static [&'static str]),
}

/// A validity rule on top of `min..=max`, for the one tunable whose valid values are not an interval.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Extra {
    /// 0, 1, 2, or a power of two of at least 64 KiB (a huge page size in bytes).
    HugePageSize,
}

impl Extra {
    fn accepts(self, v: u64) -> bool {
        match self {
            Extra::HugePageSize => v <= 2 || (v.is_power_of_two() && v >= 65536),
        }
    }

    /// How the valid values read in warnings and documentation.
    pub fn text(self) -> &'static str {
        match self {
            Extra::HugePageSize => "0, 1, 2 or a power of two >= 65536",
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Spec {
    pub id: Id,
    /// The name used in `TWINHEAP_TUNABLES`, namespaced `page.*`, `slab.*` or `arena.*`.
    pub name: &'static str,
    pub kind: Kind,
    pub min: u64,
    pub max: u64,
    pub default: u64,
    /// Set when the stored default is a placeholder resolved at run time; this text describes it.
    pub default_text: Option<&'static str>,
    /// Further validity rule, if the valid values are not simply `min..=max`.
    pub extra: Option<Extra>,
    /// Which allocators read this value: `"slab"`, `"arena"` or `"slab, arena"`.
    pub honoured_by: &'static str,
    /// The `GLIBC_TUNABLES` name that maps onto this tunable.
    pub glibc: Option<&'static str>,
    /// The legacy `MALLOC_*` environment variable that maps onto this tunable.
    pub legacy_env: Option<&'static str>,
    /// One paragraph for users; must not contain `|` or a newline (it lands in a Markdown table cell).
    pub meaning: &'static str,
}

impl Spec {
    /// Whether `v` is a value this tunable may hold.
    pub fn accepts(&self, v: u64) -> bool {
        let in_range = v >= self.min && v <= self.max;
        match self.extra {
            Some(extra) => in_range && extra.accepts(v),
            None => in_range,
        }
    }

    /// Writes the valid values as users see them: `0..=160`, `0 or 1`, `dontneed, free`.
    pub fn write_range(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        match (self.kind, self.extra) {
            (_, Some(extra)) => out.write_str(extra.text()),
            (Kind::Bool, None) => out.write_str("0 or 1"),
            (Kind::Choice(words), None) => write_words(out, words),
            (Kind::Size | Kind::Int, None) => {
                write!(out, "{}..={}", Pretty(self.min), Pretty(self.max))
            }
        }
    }

    /// Writes the default as users would spell it: a number, a choice's word, or the automatic rule.
    pub fn write_default(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        if let Some(text) = self.default_text {
            return out.write_str(text);
        }
        match self.kind {
            Kind::Choice(words) => {
                out.write_str(words.get(self.default as usize).copied().unwrap_or("?"))
            }
            Kind::Bool | Kind::Size | Kind::Int => write!(out, "{}", Pretty(self.default)),
        }
    }
}

/// Writes `a, b, c`.
fn write_words(out: &mut dyn fmt::Write, words: &[&str]) -> fmt::Result {
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        out.write_str(w)?;
    }
    Ok(())
}

const RELEASE_CHOICES: &[&str] = &["dontneed", "free"];

/// Shorthand for the common case; entries override what differs.
const fn entry(id: Id, name: &'static str, kind: Kind, honoured_by: &'static str) -> Spec {
    let max = match kind {
        Kind::Bool => 1,
        Kind::Choice(words) => words.len() as u64 - 1,
        Kind::Size | Kind::Int => u64::MAX,
    };
    Spec {
        id,
        name,
        kind,
        min: 0,
        max,
        default: 0,
        default_text: None,
        extra: None,
        honoured_by,
        glibc: None,
        legacy_env: None,
        meaning: "",
    }
}

const TABLE_DATA: [Spec; Id::COUNT] = [
    Spec {
        default: 0,
        meaning: "How freed pages go back to the OS. `dontneed` uses MADV_DONTNEED: resident memory drops at \
                  once and the pages read as zero when touched again. `free` uses MADV_FREE: cheaper, but the \
                  kernel reclaims the pages lazily, so resident memory (RSS) stays high until there is memory \
                  pressure.",
        ..entry(Id::PageRelease, "page.release", Kind::Choice(RELEASE_CHOICES), "slab, arena")
    },
    Spec {
        default: 1,
        meaning: "Freed slots are zeroed, so stale data cannot leak through a read after free.",
        ..entry(Id::SlabZeroOnFree, "slab.zero_on_free", Kind::Bool, "slab")
    },
    Spec {
        default: 1,
        meaning: "When a slot is handed out again, check that its freed (zeroed) contents were not written \
                  in the meantime, which catches writes after free. Needs `slab.zero_on_free=1`.",
        ..entry(Id::SlabCheckWriteAfterFree, "slab.check_write_after_free", Kind::Bool, "slab")
    },
    Spec {
        max: 1 << 40,
        default: 32 << 20,
        meaning: "Bytes of freed large blocks (above 131056 bytes) kept for reuse, so that big buffers \
                  allocated and freed repeatedly cost no new mapping and no page faults. A cached block is \
                  zeroed (with `slab.zero_on_free`) or made inaccessible, and any write to it faults. At \
                  most 32 blocks; a block larger than this is never kept; 0 turns the cache off; trim \
                  empties it.",
        ..entry(Id::SlabLargeCache, "slab.large_cache", Kind::Size, "slab")
    },
    Spec {
        default: 1,
        meaning: "Cached freed large blocks are closed to writes, so that a write after free faults at \
                  once. With 0, a cached block that `slab.zero_on_free` cleared with stores stays writable \
                  and is checked when it is reused, like a slot (`slab.check_write_after_free`): no \
                  protection change at its free and at its reuse (closing a block flushes the TLB of \
                  every other CPU the process runs on). Blocks the cache does not keep are unmapped \
                  either way.",
        ..entry(Id::SlabProtectFreedLarge, "slab.protect_freed_large", Kind::Bool, "slab")
    },
    Spec {
        default: 131072,
        glibc: Some("glibc.malloc.top_pad"),
        legacy_env: Some("MALLOC_TOP_PAD_"),
        meaning: "Extra bytes requested from the OS each time the heap grows, beyond what the request needs, \
                  and kept at the top of the heap when it shrinks. More padding means fewer system calls and \
                  more idle memory.",
        ..entry(Id::ArenaTopPad, "arena.top_pad", Kind::Size, "arena")
    },
    Spec {
        max: 255,
        default: 0,
        glibc: Some("glibc.malloc.perturb"),
        legacy_env: Some("MALLOC_PERTURB_"),
        meaning: "When not 0, the bytes of every block handed out by malloc (not calloc) are set to the \
                  complement of this value, and freed blocks are filled with the value itself, so code that \
                  relies on uninitialised or freed memory fails visibly.",
        ..entry(Id::ArenaPerturb, "arena.perturb", Kind::Int, "arena")
    },
    Spec {
        max: 1 << 62,
        default: 131072,
        glibc: Some("glibc.malloc.mmap_threshold"),
        legacy_env: Some("MALLOC_MMAP_THRESHOLD_"),
        meaning: "Requests of at least this many bytes get their own mapping instead of heap space. Setting \
                  it fixes the threshold: the dynamic adjustment that otherwise raises it when such blocks \
                  are freed is turned off.",
        ..entry(Id::ArenaMmapThreshold, "arena.mmap_threshold", Kind::Size, "arena")
    },
    Spec {
        default: 131072,
        glibc: Some("glibc.malloc.trim_threshold"),
        legacy_env: Some("MALLOC_TRIM_THRESHOLD_"),
        meaning: "When the free space at the top of the heap exceeds this many bytes, it is returned to the \
                  OS. The maximum, 2^64-1 (0xffffffffffffffff), means never trim.",
        ..entry(Id::ArenaTrimThreshold, "arena.trim_threshold", Kind::Size, "arena")
    },
    Spec {
        max: 2147483647,
        default: 65536,
        glibc: Some("glibc.malloc.mmap_max"),
        legacy_env: Some("MALLOC_MMAP_MAX_"),
        meaning: "The most blocks that may have their own mapping at the same time; 0 serves every request \
                  from the heap.",
        ..entry(Id::ArenaMmapMax, "arena.mmap_max", Kind::Int, "arena")
    },
    Spec {
        min: 1,
        max: 1048576,
        default: 0,
        default_text: Some("8 × online CPUs"),
        glibc: Some("glibc.malloc.arena_max"),
        legacy_env: Some("MALLOC_ARENA_MAX"),
        meaning: "The most arenas (independent heaps that threads spread over to avoid contending for one \
                  lock) the process may create.",
        ..entry(Id::ArenaArenaMax, "arena.arena_max", Kind::Size, "arena")
    },
    Spec {
        min: 1,
        max: 1048576,
        default: 8,
        glibc: Some("glibc.malloc.arena_test"),
        legacy_env: Some("MALLOC_ARENA_TEST"),
        meaning: "How many arenas may be created before the limit on their number is first computed and \
                  checked. Has no effect when `arena.arena_max` is set.",
        ..entry(Id::ArenaArenaTest, "arena.arena_test", Kind::Size, "arena")
    },
    Spec {
        max: 1032,
        default: 1032,
        glibc: Some("glibc.malloc.tcache_max"),
        meaning: "The largest request, in bytes, that the per-thread cache serves.",
        ..entry(Id::ArenaTcacheMax, "arena.tcache_max", Kind::Size, "arena")
    },
    Spec {
        max: 65535,
        default: 7,
        glibc: Some("glibc.malloc.tcache_count"),
        meaning: "The most free blocks the per-thread cache keeps for each size; 0 turns the cache off.",
        ..entry(Id::ArenaTcacheCount, "arena.tcache_count", Kind::Size, "arena")
    },
    Spec {
        default: 0,
        glibc: Some("glibc.malloc.tcache_unsorted_limit"),
        meaning: "How many entries of the unsorted list malloc examines while it refills the per-thread \
                  cache; 0 means no limit.",
        ..entry(Id::ArenaTcacheUnsortedLimit, "arena.tcache_unsorted_limit", Kind::Size, "arena")
    },
    Spec {
        max: 160,
        default: 128,
        glibc: Some("glibc.malloc.mxfast"),
        meaning: "The largest request, in bytes, served from the fast bins (small blocks kept without \
                  coalescing); 0 turns the fast bins off.",
        ..entry(Id::ArenaMxfast, "arena.mxfast", Kind::Size, "arena")
    },
    Spec {
        default: 0,
        extra: Some(Extra::HugePageSize),
        glibc: Some("glibc.malloc.hugetlb"),
        meaning: "Huge pages: 0 off; 1 transparent huge pages, requested with madvise for the heaps and for \
                  blocks with their own mapping; 2 MAP_HUGETLB with the system's default huge page size; any \
                  other value is a huge page size in bytes (a power of two of at least 65536) to map with \
                  MAP_HUGETLB. MAP_HUGETLB applies to blocks with their own mapping only (heaps stay on base \
                  pages), falling back to base pages when the kernel has none.",
        ..entry(Id::ArenaHugetlb, "arena.hugetlb", Kind::Size, "arena")
    },
];

// The table is indexed by `Id as usize`; a mis-ordered entry must not compile.
const _: () = {
    let mut i = 0;
    while i < Id::COUNT {
        assert!(
            TABLE_DATA[i].id as usize == i,
            "TABLE entries must be in Id order"
        );
        i += 1;
    }
    assert!(Id::COUNT <= 64, "Tunables::set is a u64 bit mask");
};

/// Every tunable, indexed by [`Id`].
pub static TABLE: [Spec; Id::COUNT] = TABLE_DATA;

/// Looks a tunable up by its twinheap name (exact, case-sensitive).
pub fn by_name(name: &[u8]) -> Option<&'static Spec> {
    TABLE.iter().find(|s| s.name.as_bytes() == name)
}

/// Looks a tunable up by its `GLIBC_TUNABLES` name.
pub fn by_glibc_name(name: &[u8]) -> Option<&'static Spec> {
    TABLE
        .iter()
        .find(|s| s.glibc.map(str::as_bytes) == Some(name))
}

/// Looks a tunable up by its legacy `MALLOC_*` variable name.
pub fn by_legacy_env(var: &[u8]) -> Option<&'static Spec> {
    TABLE
        .iter()
        .find(|s| s.legacy_env.map(str::as_bytes) == Some(var))
}

/// The value of every tunable, and which ones were set explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunables {
    values: [u64; Id::COUNT],
    /// Bit `id as usize` is set when the value came from the environment (or [`Tunables::set`]), even if
    /// it equals the default: some settings change behaviour by being present (`arena.mmap_threshold`).
    set: u64,
}

impl Tunables {
    /// Every tunable at its default, none marked as set.
    pub const fn defaults() -> Self {
        let mut values = [0; Id::COUNT];
        let mut i = 0;
        while i < Id::COUNT {
            values[i] = TABLE_DATA[i].default;
            i += 1;
        }
        Tunables { values, set: 0 }
    }

    /// The current value: a number, 0/1 for a boolean, the index of the word for a choice.
    pub fn get(&self, id: Id) -> u64 {
        self.values[id as usize]
    }

    /// Whether the value was set explicitly rather than left at its default.
    pub fn is_set(&self, id: Id) -> bool {
        self.set & (1 << id as u32) != 0
    }

    /// Sets a value and marks it as set. The value must be one the tunable accepts.
    pub fn set(&mut self, id: Id, v: u64) {
        debug_assert!(
            id.spec().accepts(v),
            "{} does not accept {}",
            id.spec().name,
            v
        );
        self.values[id as usize] = v;
        self.set |= 1 << id as u32;
    }
}

impl Default for Tunables {
    fn default() -> Self {
        Self::defaults()
    }
}

/// Which allocator the process asked for with `TWINHEAP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Choice {
    #[default]
    Slab,
    Arena,
    /// Pass everything through to the system allocator.
    System,
}

impl Choice {
    /// The word used in `TWINHEAP`.
    pub fn name(self) -> &'static str {
        match self {
            Choice::Slab => "slab",
            Choice::Arena => "arena",
            Choice::System => "system",
        }
    }
}

/// Everything the environment configures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub allocator: Choice,
    pub tunables: Tunables,
}

impl Config {
    /// The configuration of an empty environment.
    pub const fn defaults() -> Self {
        Config {
            allocator: Choice::Slab,
            tunables: Tunables::defaults(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_id() {
        for (i, spec) in TABLE.iter().enumerate() {
            assert_eq!(spec.id as usize, i, "{}", spec.name);
            assert!(core::ptr::eq(spec.id.spec(), spec));
        }
    }

    #[test]
    fn names_are_unique_and_namespaced() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(
                ["page.", "slab.", "arena."]
                    .iter()
                    .any(|p| a.name.starts_with(p)),
                "{} is not namespaced",
                a.name
            );
            for b in &TABLE[i + 1..] {
                assert_ne!(a.name, b.name);
                assert!(a.glibc.is_none() || a.glibc != b.glibc, "{}", a.name);
                assert!(
                    a.legacy_env.is_none() || a.legacy_env != b.legacy_env,
                    "{}",
                    a.name
                );
            }
            if let Some(g) = a.glibc {
                assert!(g.starts_with("glibc.malloc."), "{g}");
            }
            if let Some(l) = a.legacy_env {
                assert!(l.starts_with("MALLOC_"), "{l}");
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        let t = Tunables::defaults();
        for spec in &TABLE {
            assert!(spec.min <= spec.max, "{}", spec.name);
            assert_eq!(t.get(spec.id), spec.default);
            assert!(!t.is_set(spec.id));
            if spec.default_text.is_some() {
                // The placeholder must be recognisably outside what a user may set.
                assert!(!spec.accepts(spec.default), "{}", spec.name);
            } else {
                assert!(spec.accepts(spec.default), "{}", spec.name);
            }
        }
    }

    #[test]
    fn kinds_have_consistent_ranges() {
        for spec in &TABLE {
            match spec.kind {
                Kind::Bool => assert_eq!((spec.min, spec.max), (0, 1), "{}", spec.name),
                Kind::Choice(words) => {
                    assert_eq!(
                        (spec.min, spec.max),
                        (0, words.len() as u64 - 1),
                        "{}",
                        spec.name
                    )
                }
                Kind::Size | Kind::Int => {}
            }
            assert!(!spec.meaning.is_empty(), "{}", spec.name);
            assert!(!spec.meaning.contains(['|', '\n']), "{}", spec.name);
        }
    }

    #[test]
    fn set_marks_even_the_default() {
        let mut t = Tunables::defaults();
        t.set(Id::ArenaMxfast, 128);
        assert!(t.is_set(Id::ArenaMxfast));
        assert!(!t.is_set(Id::ArenaTopPad));
        assert_eq!(t.get(Id::ArenaMxfast), 128);
        assert_ne!(t, Tunables::defaults());
    }

    #[test]
    fn hugetlb_rule() {
        let spec = Id::ArenaHugetlb.spec();
        for ok in [0, 1, 2, 65536, 1 << 21, 1 << 30, 1 << 63] {
            assert!(spec.accepts(ok), "{ok}");
        }
        for bad in [3, 4, 4096, 32768, 65537, (1 << 21) + 1, u64::MAX] {
            assert!(!spec.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(
            by_name(b"arena.mxfast").map(|s| s.id),
            Some(Id::ArenaMxfast)
        );
        assert_eq!(by_name(b"Arena.mxfast"), None);
        assert_eq!(
            by_glibc_name(b"glibc.malloc.mxfast").map(|s| s.id),
            Some(Id::ArenaMxfast)
        );
        assert_eq!(by_glibc_name(b"glibc.malloc.check"), None);
        assert_eq!(
            by_legacy_env(b"MALLOC_ARENA_MAX").map(|s| s.id),
            Some(Id::ArenaArenaMax)
        );
        assert_eq!(by_legacy_env(b"MALLOC_CHECK_"), None);
    }
}

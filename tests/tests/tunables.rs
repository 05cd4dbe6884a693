//! Integration tests of twinheap's environment configuration: the parser against a table of
//! environments, a pseudo-random robustness run, the generated `docs/tunables.md`, and
//! `process_config` in a child process with a real environment.

use std::process::Command;

use twinheap::tunables::{parse, write_markdown, Choice, Config, Id, Reason, Warning, TABLE};

const MAX: u64 = u64::MAX;

/// Parses `env` (not secure) and returns the config and the warnings as the lines they would print.
fn run(env: &[&[u8]]) -> (Config, Vec<String>) {
    let mut lines = Vec::new();
    let config = parse(env.iter().copied(), false, &mut |w: Warning<'_>| {
        lines.push(String::from_utf8_lossy(w.line().as_bytes()).into_owned())
    });
    (config, lines)
}

struct Case {
    env: &'static [&'static [u8]],
    allocator: Choice,
    /// Tunables expected to be set, with their values; all others must be unset, at their default.
    set: &'static [(Id, u64)],
    /// The warning lines, in order, without the `twinheap: ` prefix.
    warnings: &'static [&'static str],
}

const fn case(
    env: &'static [&'static [u8]],
    set: &'static [(Id, u64)],
    warnings: &'static [&'static str],
) -> Case {
    Case {
        env,
        allocator: Choice::Slab,
        set,
        warnings,
    }
}

const fn choice(
    env: &'static [&'static [u8]],
    allocator: Choice,
    warnings: &'static [&'static str],
) -> Case {
    Case {
        env,
        allocator,
        set: &[],
        warnings,
    }
}

fn check(c: &Case) {
    let (config, lines) = run(c.env);
    let shown: Vec<String> = c
        .env
        .iter()
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    let want_lines: Vec<String> = c
        .warnings
        .iter()
        .map(|w| format!("twinheap: {w}"))
        .collect();
    assert_eq!(lines, want_lines, "warnings for {shown:?}");
    assert_eq!(config.allocator, c.allocator, "allocator for {shown:?}");
    for spec in &TABLE {
        match c.set.iter().find(|(id, _)| *id == spec.id) {
            Some(&(_, v)) => {
                assert_eq!(
                    config.tunables.get(spec.id),
                    v,
                    "{} for {shown:?}",
                    spec.name
                );
                assert!(
                    config.tunables.is_set(spec.id),
                    "{} not set for {shown:?}",
                    spec.name
                );
            }
            None => {
                assert_eq!(
                    config.tunables.get(spec.id),
                    spec.default,
                    "{} for {shown:?}",
                    spec.name
                );
                assert!(
                    !config.tunables.is_set(spec.id),
                    "{} set for {shown:?}",
                    spec.name
                );
            }
        }
    }
}

use Id::*;

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Empty and garbage input.
    case(&[], &[], &[]),
    case(&[b""], &[], &[]),
    case(&[b"=", b"==", b"PATH=/bin", b"\xff\xfe"], &[], &[]),
    case(&[b"TWINHEAP_TUNABLES="], &[], &[]),
    case(&[b"TWINHEAP_TUNABLES=:::"], &[], &[]),
    case(&[b"TWINHEAP_TUNABLES"], &[], &[]),
    case(&[b"TWINHEAP_TUNABLES=="], &[], &["TWINHEAP_TUNABLES: unknown tunable '' ignored"]),
    case(&[b"TWINHEAP_TUNABLES==="], &[], &["TWINHEAP_TUNABLES: unknown tunable '' ignored"]),
    case(&[b"TWINHEAP_TUNABLES=a=b=c"], &[], &["TWINHEAP_TUNABLES: unknown tunable 'a' ignored"]),
    case(&[b"TWINHEAP_TUNABLES=\xff\xfe=1"],
         &[], &["TWINHEAP_TUNABLES: unknown tunable '\u{fffd}\u{fffd}' ignored"]),
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=\xff"], &[],
         &["TWINHEAP_TUNABLES: value '\u{fffd}' for 'arena.mxfast' is not a number, ignored (default 128)"]),
    case(&[b"TWINHEAP_TUNABLES=slab.zero_on_free=1=2"], &[],
         &["TWINHEAP_TUNABLES: value '1=2' for 'slab.zero_on_free' is not a boolean (0, 1, true, false, on, off, \
            yes, no), ignored (default 1)"]),
    // An item without '=' is reported; the rest still applies.
    case(&[b"TWINHEAP_TUNABLES=slab.zero_on_free:arena.mxfast=64"], &[(ArenaMxfast, 64)],
         &["TWINHEAP_TUNABLES: 'slab.zero_on_free' is not name=value, ignored"]),
    case(&[b"TWINHEAP_TUNABLES=::arena.mxfast=64::"], &[(ArenaMxfast, 64)], &[]),
    // Duplicates: last valid wins; a bad later one leaves the earlier one.
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=64:arena.mxfast=32"], &[(ArenaMxfast, 32)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=64:arena.mxfast=999"], &[(ArenaMxfast, 64)],
         &["TWINHEAP_TUNABLES: value '999' for 'arena.mxfast' is out of range 0..=160, ignored (default 128)"]),
    // Huge numbers.
    case(&[b"TWINHEAP_TUNABLES=arena.trim_threshold=18446744073709551615"],
         &[(ArenaTrimThreshold, MAX)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.trim_threshold=0xffffffffffffffff"],
         &[(ArenaTrimThreshold, MAX)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.trim_threshold=18446744073709551616"], &[],
         &["TWINHEAP_TUNABLES: value '18446744073709551616' for 'arena.trim_threshold' is out of range 0..=2^64-1, \
            ignored (default 131072)"]),
    case(&[b"TWINHEAP_TUNABLES=arena.top_pad=1G"], &[(ArenaTopPad, 1 << 30)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.top_pad=4k:arena.mxfast=0x40"],
         &[(ArenaTopPad, 4096), (ArenaMxfast, 64)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.top_pad=16E"], &[],
         &["TWINHEAP_TUNABLES: value '16E' for 'arena.top_pad' is not a number, ignored (default 131072)"]),
    case(&[b"TWINHEAP_TUNABLES=arena.top_pad=17179869184G"], &[],
         &["TWINHEAP_TUNABLES: value '17179869184G' for 'arena.top_pad' is out of range 0..=2^64-1, ignored \
            (default 131072)"]),
    case(&[b"TWINHEAP_TUNABLES=arena.top_pad=17179869183G"],
         &[(ArenaTopPad, 17179869183 << 30)], &[]),
    // Int tunables take no suffix.
    case(&[b"TWINHEAP_TUNABLES=arena.mmap_max=1K"], &[],
         &["TWINHEAP_TUNABLES: value '1K' for 'arena.mmap_max' is not a number, ignored (default 65536)"]),
    // Hex and octal.
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=0X50"], &[(ArenaMxfast, 80)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=0100"], &[(ArenaMxfast, 64)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=0"], &[(ArenaMxfast, 0)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=08"], &[],
         &["TWINHEAP_TUNABLES: value '08' for 'arena.mxfast' is not a number, ignored (default 128)"]),
    // Signs and blanks are rejected, not trimmed.
    case(&[b"TWINHEAP_TUNABLES=arena.perturb=-1"], &[],
         &["TWINHEAP_TUNABLES: value '-1' for 'arena.perturb' is not a number, ignored (default 0)"]),
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast= 64"], &[],
         &["TWINHEAP_TUNABLES: value ' 64' for 'arena.mxfast' is not a number, ignored (default 128)"]),
    case(&[b"TWINHEAP_TUNABLES= arena.mxfast=64"],
         &[], &["TWINHEAP_TUNABLES: unknown tunable ' arena.mxfast' ignored"]),
    // Unknown names, including near misses and glibc names in the wrong variable.
    case(&[b"TWINHEAP_TUNABLES=bogus=1:slab.Zero_on_free=0:glibc.malloc.mxfast=64:arena.mxfast=64"],
         &[(ArenaMxfast, 64)],
         &["TWINHEAP_TUNABLES: unknown tunable 'bogus' ignored",
           "TWINHEAP_TUNABLES: unknown tunable 'slab.Zero_on_free' ignored",
           "TWINHEAP_TUNABLES: unknown tunable 'glibc.malloc.mxfast' ignored"]),
    // Ranges.
    case(&[b"TWINHEAP_TUNABLES=arena.perturb=255:arena.arena_max=1048576:arena.tcache_max=1032:arena.hugetlb=2"],
         &[(ArenaPerturb, 255), (ArenaArenaMax, 1048576), (ArenaTcacheMax, 1032), (ArenaHugetlb, 2)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.perturb=256:arena.arena_max=0:arena.tcache_max=1033:arena.hugetlb=4096"], &[],
         &["TWINHEAP_TUNABLES: value '256' for 'arena.perturb' is out of range 0..=255, ignored (default 0)",
           "TWINHEAP_TUNABLES: value '0' for 'arena.arena_max' is out of range 1..=1048576, ignored (default 8 × \
            online CPUs)",
           "TWINHEAP_TUNABLES: value '1033' for 'arena.tcache_max' is out of range 0..=1032, ignored (default 1032)",
           "TWINHEAP_TUNABLES: value '4096' for 'arena.hugetlb' is out of range 0, 1, 2 or a power of two >= 65536, \
            ignored (default 0)"]),
    case(&[b"TWINHEAP_TUNABLES=arena.hugetlb=2M:arena.mmap_threshold=0x4000000000000000"],
         &[(ArenaHugetlb, 2 << 20), (ArenaMmapThreshold, 1 << 62)], &[]),
    case(&[b"TWINHEAP_TUNABLES=arena.mmap_threshold=0x4000000000000001"], &[],
         &["TWINHEAP_TUNABLES: value '0x4000000000000001' for 'arena.mmap_threshold' is out of range 0..=2^62, \
            ignored (default 131072)"]),
    // Booleans and choices.
    case(&[b"TWINHEAP_TUNABLES=page.release=free:slab.zero_on_free=off:slab.check_write_after_free=no"],
         &[(PageRelease, 1), (SlabZeroOnFree, 0), (SlabCheckWriteAfterFree, 0)], &[]),
    case(&[b"TWINHEAP_TUNABLES=page.release=FREE"], &[],
         &["TWINHEAP_TUNABLES: value 'FREE' for 'page.release' is not one of dontneed, free, ignored (default \
            dontneed)"]),
    // A setting equal to the default is still a setting.
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=128:page.release=dontneed"],
         &[(ArenaMxfast, 128), (PageRelease, 0)], &[]),
    // GLIBC_TUNABLES: mapped malloc names only, glibc syntax.
    case(&[b"GLIBC_TUNABLES=glibc.malloc.mxfast=64:glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0"],
         &[(ArenaMxfast, 64), (ArenaArenaMax, 2), (ArenaTcacheCount, 0)], &[]),
    case(&[b"GLIBC_TUNABLES=glibc.rtld.nns=2:glibc.pthread.rseq=0:glibc.malloc.check=3:glibc.malloc.bogus=1:x.y=z"],
         &[], &[]),
    case(&[b"GLIBC_TUNABLES=glibc.malloc.top_pad=1K:glibc.malloc.mxfast=161"], &[],
         &["GLIBC_TUNABLES: value '1K' for 'glibc.malloc.top_pad' (arena.top_pad) is not a number, ignored (default \
            131072)",
           "GLIBC_TUNABLES: value '161' for 'glibc.malloc.mxfast' (arena.mxfast) is out of range 0..=160, ignored \
            (default 128)"]),
    // Malformed GLIBC_TUNABLES is discarded whole, silently; empty items are not malformed.
    case(&[b"GLIBC_TUNABLES=glibc.malloc.mxfast=64:oops:glibc.malloc.arena_max=2"], &[], &[]),
    case(&[b"GLIBC_TUNABLES=glibc.malloc.mxfast=99999:oops"], &[], &[]),
    case(&[b"GLIBC_TUNABLES=::glibc.malloc.mxfast=64::"], &[(ArenaMxfast, 64)], &[]),
    case(&[b"GLIBC_TUNABLES=glibc.malloc.mxfast=64:glibc.malloc.mxfast=16"],
         &[(ArenaMxfast, 16)], &[]),
    // Legacy variables.
    case(&[b"MALLOC_ARENA_MAX=4", b"MALLOC_ARENA_TEST=2", b"MALLOC_TOP_PAD_=0x1000", b"MALLOC_PERTURB_=165",
           b"MALLOC_MMAP_MAX_=0", b"MALLOC_TRIM_THRESHOLD_=0xffffffffffffffff", b"MALLOC_MMAP_THRESHOLD_=65536"],
         &[(ArenaArenaMax, 4), (ArenaArenaTest, 2), (ArenaTopPad, 4096), (ArenaPerturb, 165), (ArenaMmapMax, 0),
           (ArenaTrimThreshold, MAX), (ArenaMmapThreshold, 65536)], &[]),
    case(&[b"MALLOC_MMAP_THRESHOLD_=1M", b"MALLOC_ARENA_MAX=0", b"MALLOC_CHECK_=3"], &[],
         // Legacy variables are reported in table order.
         &["MALLOC_MMAP_THRESHOLD_: value '1M' (arena.mmap_threshold) is not a number, ignored (default 131072)",
           "MALLOC_ARENA_MAX: value '0' (arena.arena_max) is out of range 1..=1048576, ignored (default 8 × online \
            CPUs)"]),
    // Names of variables are exact.
    case(&[b"malloc_arena_max=4", b"MALLOC_ARENA_MAX_=4", b"twinheap_tunables=arena.mxfast=1"],
         &[], &[]),
    // A bad value in a higher-precedence source leaves the lower one in force.
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=x", b"GLIBC_TUNABLES=glibc.malloc.mxfast=16"], &[(ArenaMxfast, 16)],
         &["TWINHEAP_TUNABLES: value 'x' for 'arena.mxfast' is not a number, ignored (default 128)"]),
    // The first occurrence of a variable counts, as with getenv.
    case(&[b"TWINHEAP_TUNABLES=arena.mxfast=16", b"TWINHEAP_TUNABLES=arena.mxfast=32"],
         &[(ArenaMxfast, 16)], &[]),
    // Allocator choice.
    choice(&[b"TWINHEAP=slab"], Choice::Slab, &[]),
    choice(&[b"TWINHEAP=arena"], Choice::Arena, &[]),
    choice(&[b"TWINHEAP=system"], Choice::System, &[]),
    choice(&[b"TWINHEAP="], Choice::Slab, &[]),
    choice(&[b"TWINHEAP=Arena"], Choice::Slab,
           &["TWINHEAP: unknown allocator 'Arena' (expected slab, arena or system), using slab"]),
    choice(&[b"TWINHEAP=arena "], Choice::Slab,
           &["TWINHEAP: unknown allocator 'arena ' (expected slab, arena or system), using slab"]),
    choice(&[b"TWINHEAP=\x1b[31m"], Choice::Slab,
           &["TWINHEAP: unknown allocator '\\x1b[31m' (expected slab, arena or system), using slab"]),
    choice(&[b"TWINHEAP=system", b"TWINHEAP=arena"], Choice::System, &[]),
];

#[test]
fn parse_table() {
    for c in CASES {
        check(c);
    }
}

#[test]
fn precedence_does_not_depend_on_order() {
    let own: &[u8] = b"TWINHEAP_TUNABLES=arena.top_pad=1";
    let glibc: &[u8] = b"GLIBC_TUNABLES=glibc.malloc.top_pad=2";
    let legacy: &[u8] = b"MALLOC_TOP_PAD_=3";
    let orders: [[&[u8]; 3]; 6] = [
        [own, glibc, legacy],
        [own, legacy, glibc],
        [glibc, own, legacy],
        [glibc, legacy, own],
        [legacy, own, glibc],
        [legacy, glibc, own],
    ];
    for env in orders {
        let (config, warnings) = run(&env);
        assert!(warnings.is_empty());
        assert_eq!(config.tunables.get(Id::ArenaTopPad), 1, "{env:?}");
        // Without the twinheap name, GLIBC_TUNABLES beats the legacy variable.
        let rest: Vec<&[u8]> = env.iter().copied().filter(|e| *e != own).collect();
        assert_eq!(run(&rest).0.tunables.get(Id::ArenaTopPad), 2, "{rest:?}");
        let only_legacy: Vec<&[u8]> = env.iter().copied().filter(|e| *e == legacy).collect();
        assert_eq!(run(&only_legacy).0.tunables.get(Id::ArenaTopPad), 3);
    }
}

#[test]
fn secure_mode_ignores_everything() {
    let env: &[&[u8]] = &[
        b"TWINHEAP=arena",
        b"TWINHEAP_TUNABLES=slab.zero_on_free=0:bogus=1:arena.mxfast=999",
        b"GLIBC_TUNABLES=glibc.malloc.mxfast=64",
        b"MALLOC_ARENA_MAX=2",
        b"TWINHEAP=nonsense",
    ];
    let mut count = 0;
    let config = parse(env.iter().copied(), true, &mut |_| count += 1);
    assert_eq!(config, Config::defaults());
    assert_eq!(count, 0);
    // The same environment does change things when not secure.
    let (config, warnings) = run(env);
    assert_ne!(config, Config::defaults());
    assert_eq!(warnings.len(), 2);
}

#[test]
fn warnings_carry_the_offending_bytes() {
    let env: &[&[u8]] = &[
        b"TWINHEAP_TUNABLES=arena.mxfast=999:nope=1",
        b"MALLOC_PERTURB_=x",
    ];
    let mut got = Vec::new();
    parse(env.iter().copied(), false, &mut |w| got.push(w));
    assert_eq!(
        got,
        [
            Warning {
                var: "MALLOC_PERTURB_",
                name: b"MALLOC_PERTURB_",
                value: b"x",
                reason: Reason::BadValue(Id::ArenaPerturb)
            },
            Warning {
                var: "TWINHEAP_TUNABLES",
                name: b"arena.mxfast",
                value: b"999",
                reason: Reason::OutOfRange(Id::ArenaMxfast)
            },
            Warning {
                var: "TWINHEAP_TUNABLES",
                name: b"nope",
                value: b"",
                reason: Reason::UnknownName
            },
        ]
    );
}

/// xorshift64: a small, reproducible source of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_input_never_panics_and_keeps_invariants() {
    const PREFIXES: &[&[u8]] = &[
        b"TWINHEAP=",
        b"TWINHEAP_TUNABLES=",
        b"GLIBC_TUNABLES=",
        b"MALLOC_ARENA_MAX=",
        b"MALLOC_TOP_PAD_=",
        b"MALLOC_PERTURB_=",
        b"",
    ];
    const PIECES: &[&[u8]] = &[
        b":",
        b"=",
        b"0",
        b"1",
        b"9",
        b"0x",
        b"0X",
        b"f",
        b"K",
        b"m",
        b"G",
        b"E",
        b"-",
        b" ",
        b"\0",
        b"\xff",
        b"\xc3",
        b"\n",
        b"18446744073709551615",
        b"99999999999",
    ];
    const NAMES: &[&[u8]] = &[
        b"arena.mxfast",
        b"arena.top_pad",
        b"arena.hugetlb",
        b"arena.perturb",
        b"page.release",
        b"slab.zero_on_free",
        b"glibc.malloc.mxfast",
        b"glibc.malloc.top_pad",
        b"glibc.malloc.hugetlb",
        b"glibc.rtld.nns",
        b"arena.mxfas",
        b"",
    ];
    const VALUES: &[&[u8]] = &[
        b"0",
        b"1",
        b"2",
        b"64",
        b"160",
        b"161",
        b"0x10",
        b"010",
        b"1K",
        b"2M",
        b"1G",
        b"free",
        b"dontneed",
        b"true",
        b"off",
        b"slab",
        b"arena",
        b"system",
        b"18446744073709551615",
        b"",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut total_warnings = 0;
    let mut total_set = 0;
    for _ in 0..5000 {
        let entries: Vec<Vec<u8>> = (0..1 + rng.below(4))
            .map(|_| {
                let mut e = PREFIXES[rng.below(PREFIXES.len())].to_vec();
                for i in 0..rng.below(5) {
                    if i > 0 {
                        e.push(b':');
                    }
                    // Mostly well-formed items, so values get stored too; then some noise.
                    if rng.below(3) > 0 {
                        e.extend_from_slice(NAMES[rng.below(NAMES.len())]);
                        e.push(b'=');
                    }
                    e.extend_from_slice(VALUES[rng.below(VALUES.len())]);
                    for _ in 0..rng.below(6).saturating_sub(3) {
                        if rng.below(4) == 0 {
                            e.push(rng.next() as u8);
                        } else {
                            e.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                        }
                    }
                }
                e
            })
            .collect();
        let mut warnings = 0;
        let config = parse(entries.iter().map(|e| &e[..]), false, &mut |w| {
            let line = w.line();
            assert!(line.as_bytes().starts_with(b"twinheap: "));
            assert!(!line.as_bytes().contains(&b'\n'));
            warnings += 1;
        });
        total_warnings += warnings;
        for spec in &TABLE {
            let v = config.tunables.get(spec.id);
            if config.tunables.is_set(spec.id) {
                total_set += 1;
                assert!(spec.accepts(v), "{} = {v} from {entries:?}", spec.name);
            } else {
                assert_eq!(v, spec.default, "{} from {entries:?}", spec.name);
            }
        }
        let secure = parse(entries.iter().map(|e| &e[..]), true, &mut |_| {
            panic!("warning in secure mode")
        });
        assert_eq!(secure, Config::defaults());
    }
    // The generator must actually reach both outcomes, or the test proves little.
    assert!(total_warnings > 2000, "{total_warnings}");
    assert!(total_set > 200, "{total_set}");
}

#[test]
fn docs_match_the_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/tunables.md");
    let mut page = String::new();
    write_markdown(&mut page).unwrap();
    if std::env::var_os("TWINHEAP_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(path, &page).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == page,
        "docs/tunables.md is out of date with the tunables table; regenerate it with \
         `TWINHEAP_BLESS=1 cargo test -p twinheap-tests --test tunables`"
    );
}

const CHILD_ENV: &str = "TWINHEAP_TEST_CHILD";

/// Not a test by itself: when re-run by `process_config_in_a_child` it prints the process config.
#[test]
fn child_print_process_config() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let config = twinheap::env::process_config();
    // Warnings are printed once, at the first call only.
    assert!(std::ptr::eq(config, twinheap::env::process_config()));
    println!("\nCHILD allocator={}", config.allocator.name());
    for spec in &TABLE {
        println!(
            "CHILD {}={} set={}",
            spec.name,
            config.tunables.get(spec.id),
            config.tunables.is_set(spec.id)
        );
    }
}

#[test]
fn process_config_in_a_child() {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_print_process_config",
        "--nocapture",
        "--test-threads=1",
    ]);
    // Start from an environment free of anything the parser reads, whatever the runner inherited.
    for (name, _) in std::env::vars_os() {
        if twinheap::tunables::wanted(format!("{}=", name.to_string_lossy()).as_bytes()) {
            cmd.env_remove(name);
        }
    }
    cmd.env(CHILD_ENV, "1")
        .env("TWINHEAP", "arena")
        .env("MALLOC_ARENA_MAX", "3")
        .env(
            "TWINHEAP_TUNABLES",
            "bogus.name=1:arena.mxfast=999:slab.zero_on_free=0",
        );
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        warnings,
        [
            "twinheap: TWINHEAP_TUNABLES: unknown tunable 'bogus.name' ignored",
            "twinheap: TWINHEAP_TUNABLES: value '999' for 'arena.mxfast' is out of range 0..=160, \
             ignored (default 128)",
        ],
        "child stderr"
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("CHILD ").map(|(_, rest)| rest))
        .collect();
    assert_eq!(lines.len(), 1 + TABLE.len(), "child stdout:\n{stdout}");
    for want in [
        "allocator=arena",
        "slab.zero_on_free=0 set=true",
        "arena.mxfast=128 set=false",
        "arena.arena_max=3 set=true",
        "slab.check_write_after_free=1 set=false",
    ] {
        assert!(
            lines.contains(&want),
            "missing {want:?} in child stdout:\n{stdout}"
        );
    }
}

//! The page backend's process-wide counters (`twinheap_page::stats`) against an exact model.
//!
//! The counters are global, so this binary holds exactly one test: nothing else in the process maps
//! through the backend while it runs, and every snapshot can be compared exactly. A seeded random
//! sequence of maps, unmaps, remaps, reservations, commits, decommits, releases and rejected calls is
//! applied, and after every operation `stats()` minus the starting snapshot must equal the model.

use twinheap_page::{
    map, page_size, release, reserve, stats, Error, Huge, MapOptions, Mapping, Op, PageStats,
    Release, Reservation,
};
use twinheap_tests::{poke, touch, Rng64};

const MIB: usize = 1 << 20;
/// Each seed is a separate sequence of `OPS` operations; a failure names its seed.
const SEEDS: [u64; 4] = [0x7417_4ea9_0000_0001, 2, 3, 0xdead_beef];
const OPS: usize = 2000;
const MAX_LIVE: usize = 48;

fn round_up(n: usize, granule: usize) -> usize {
    n.div_ceil(granule) * granule
}

/// A size in `1..=2^max_shift`, spread logarithmically so that small and large sizes both occur.
fn log_size(rng: &mut Rng64, max_shift: usize) -> usize {
    let shift = rng.range(0, max_shift);
    rng.range(1, 1 << shift)
}

/// What the backend holds on behalf of this test, as the model computes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Model {
    mapped: usize,
    committed: usize,
    mappings: usize,
    /// Highest `mapped` between operations.
    peak_low: usize,
    /// Highest `mapped` including the moment inside a moving remap when old and new both exist.
    peak_high: usize,
}

impl Model {
    fn add(&mut self, mapped: usize, committed: usize) {
        self.mappings += 1;
        self.grow(mapped, committed);
    }

    fn remove(&mut self, mapped: usize, committed: usize) {
        self.mappings -= 1;
        self.mapped -= mapped;
        self.committed -= committed;
    }

    fn grow(&mut self, mapped: usize, committed: usize) {
        self.mapped += mapped;
        self.committed += committed;
        self.peak_low = self.peak_low.max(self.mapped);
        self.peak_high = self.peak_high.max(self.mapped);
    }
}

/// A live mapping and the guard pages the model expects around it.
struct Live {
    m: Mapping,
    guards: usize,
    /// Guarded or aligned: when it cannot grow in place, remap builds a new mapping and moves the
    /// pages there, so for a moment old and new are both mapped (and counted).
    moves_by_rebuild: bool,
}

#[track_caller]
fn assert_matches(seed: u64, start: PageStats, model: &Model, step: usize, op: &str) {
    let now = stats();
    let got = (
        now.mapped.wrapping_sub(start.mapped),
        now.committed.wrapping_sub(start.committed),
        now.mappings.wrapping_sub(start.mappings),
    );
    let want = (model.mapped, model.committed, model.mappings);
    assert_eq!(
        got, want,
        "seed {seed:#x} op {step} ({op}): (mapped, committed, mappings) since start differ from the model; \
         start {start:?}, now {now:?}"
    );
    assert!(
        now.peak_mapped >= now.mapped,
        "seed {seed:#x} op {step} ({op}): peak below mapped: {now:?}"
    );
    let low = start.peak_mapped.max(start.mapped + model.peak_low);
    let high = start.peak_mapped.max(start.mapped + model.peak_high);
    assert!(
        (low..=high).contains(&now.peak_mapped),
        "seed {seed:#x} op {step} ({op}): peak {} outside [{low}, {high}]",
        now.peak_mapped
    );
}

#[test]
fn counters_follow_a_random_sequence_exactly() {
    for seed in SEEDS {
        run_sequence(seed);
    }
}

fn run_sequence(seed: u64) {
    let page = page_size();
    let mut rng = Rng64::new(seed);
    let start = stats();
    let mut model = Model::default();
    let mut maps: Vec<Live> = Vec::new();
    let mut reservations: Vec<Reservation> = Vec::new();
    let mut last_peak = start.peak_mapped;
    let mut counts = [0usize; 9];

    for step in 0..OPS {
        let live = maps.len() + reservations.len();
        let roll = rng.below(100);
        let op = if live >= MAX_LIVE {
            if rng.chance(1, 2) && !maps.is_empty() {
                "unmap"
            } else {
                "unreserve"
            }
        } else {
            match roll {
                0..=29 => "map",
                30..=44 => "unmap",
                45..=64 => "remap",
                65..=72 => "reserve",
                73..=82 => "commit",
                83..=89 => "decommit",
                90..=93 => "unreserve",
                94..=96 => "release",
                _ => "reject",
            }
        };
        match op {
            "map" => {
                counts[0] += 1;
                let len = log_size(&mut rng, 23); // 1 B ..= 8 MiB
                let align = 1usize << rng.range(0, 25); // 1 B ..= 32 MiB
                let (before, after) = (rng.chance(1, 3), rng.chance(1, 3));
                let huge = if rng.chance(1, 8) {
                    Huge::Transparent
                } else {
                    Huge::None
                };
                let opts = MapOptions::new()
                    .align(align)
                    .guards(before, after)
                    .huge(huge);
                let m = map(len, &opts).unwrap_or_else(|e| {
                    panic!("seed {seed:#x} op {step}: map({len}, {opts:?}): {e}")
                });
                let usable = round_up(len, page);
                let guards = (usize::from(before) + usize::from(after)) * page;
                assert_eq!(m.len(), usable, "seed {seed:#x} op {step}: len");
                assert_eq!(
                    m.extent().1,
                    usable + guards,
                    "seed {seed:#x} op {step}: extent"
                );
                // SAFETY: fresh mapping; first and last byte are usable.
                unsafe {
                    poke(m.ptr().as_ptr() as usize, 1);
                    poke(m.ptr().as_ptr() as usize + usable - 1, 2);
                }
                model.add(usable + guards, usable);
                let moves_by_rebuild = before || after || align > page;
                maps.push(Live {
                    m,
                    guards,
                    moves_by_rebuild,
                });
            }
            "unmap" if !maps.is_empty() => {
                counts[1] += 1;
                let i = rng.below(maps.len() as u64) as usize;
                let live = maps.swap_remove(i);
                // SAFETY: live mapping, dropped from the model, never used again.
                unsafe { live.m.unmap() }
                    .unwrap_or_else(|e| panic!("seed {seed:#x} op {step}: unmap: {e}"));
                model.remove(live.m.len() + live.guards, live.m.len());
            }
            "remap" if !maps.is_empty() => {
                counts[2] += 1;
                let i = rng.below(maps.len() as u64) as usize;
                let old = maps[i].m;
                let new_len = log_size(&mut rng, 23);
                let usable = round_up(new_len, page);
                // SAFETY: `old` is live; only the result is used afterwards.
                let m = unsafe { old.remap(new_len) }.unwrap_or_else(|e| {
                    panic!(
                        "seed {seed:#x} op {step}: remap {} -> {new_len}: {e}",
                        old.len()
                    )
                });
                assert_eq!(m.len(), usable, "seed {seed:#x} op {step}: remap len");
                assert_eq!(
                    m.options(),
                    old.options(),
                    "seed {seed:#x} op {step}: remap options"
                );
                if usable > old.len() {
                    // A guarded or aligned mapping that moved was built anew before the old one went:
                    // for a moment both were mapped.
                    if maps[i].moves_by_rebuild && m.ptr() != old.ptr() {
                        let both = model.mapped + usable + maps[i].guards;
                        model.peak_high = model.peak_high.max(both);
                    }
                    model.grow(usable - old.len(), usable - old.len());
                } else {
                    model.mapped -= old.len() - usable;
                    model.committed -= old.len() - usable;
                }
                // SAFETY: the mapping is live and `usable` long.
                unsafe {
                    poke(m.ptr().as_ptr() as usize + usable - 1, 3);
                    assert_eq!(
                        touch(m.ptr().as_ptr() as usize),
                        1,
                        "seed {seed:#x} op {step}: remap lost data"
                    );
                }
                maps[i].m = m;
            }
            "reserve" => {
                counts[3] += 1;
                let len = rng.range(1, 64 * MIB);
                let align = 1usize << rng.range(0, 26);
                let r = reserve(len, align).unwrap_or_else(|e| {
                    panic!("seed {seed:#x} op {step}: reserve({len}, {align}): {e}")
                });
                assert_eq!((r.len(), r.committed()), (round_up(len, page), 0));
                model.add(r.len(), 0);
                reservations.push(r);
            }
            "commit" if !reservations.is_empty() => {
                counts[4] += 1;
                let i = rng.below(reservations.len() as u64) as usize;
                let r = &mut reservations[i];
                let upto = rng.range(0, r.len() + page);
                let before = r.committed();
                let rounded = round_up(upto, page);
                if rounded > r.len() {
                    assert_eq!(r.commit(upto), Err(Error::new(Op::Commit, libc::ENOMEM)));
                    assert_eq!(r.committed(), before);
                } else {
                    r.commit(upto).unwrap_or_else(|e| {
                        panic!("seed {seed:#x} op {step}: commit({upto}): {e}")
                    });
                    assert_eq!(
                        r.committed(),
                        before.max(rounded),
                        "seed {seed:#x} op {step}: committed"
                    );
                    model.grow(0, r.committed() - before);
                    if r.committed() > 0 {
                        // SAFETY: the last committed byte is usable.
                        unsafe { poke(r.base().as_ptr() as usize + r.committed() - 1, 4) };
                    }
                }
            }
            "decommit" if !reservations.is_empty() => {
                counts[5] += 1;
                let i = rng.below(reservations.len() as u64) as usize;
                let r = &mut reservations[i];
                let upto = rng.range(0, r.len());
                let before = r.committed();
                // SAFETY: nothing keeps references into the reservation.
                unsafe { r.decommit(upto) }
                    .unwrap_or_else(|e| panic!("seed {seed:#x} op {step}: decommit({upto}): {e}"));
                assert_eq!(
                    r.committed(),
                    before.min(round_up(upto, page)),
                    "seed {seed:#x} op {step}"
                );
                model.committed -= before - r.committed();
            }
            "unreserve" if !reservations.is_empty() => {
                counts[6] += 1;
                let i = rng.below(reservations.len() as u64) as usize;
                let r = reservations.swap_remove(i);
                let (len, committed) = (r.len(), r.committed());
                // SAFETY: never used again.
                unsafe { r.unreserve() }
                    .unwrap_or_else(|e| panic!("seed {seed:#x} op {step}: unreserve: {e}"));
                model.remove(len, committed);
            }
            "release" if !maps.is_empty() => {
                counts[7] += 1;
                // Released pages stay mapped and committed: no counter moves.
                let m = maps[rng.below(maps.len() as u64) as usize].m;
                let how = if rng.chance(1, 2) {
                    Release::DontNeed
                } else {
                    Release::Free
                };
                // SAFETY: the mapping is live; its contents are not needed (the first byte is
                // rewritten for the remap check).
                unsafe {
                    release(m.ptr().as_ptr(), m.len(), how).unwrap();
                    poke(m.ptr().as_ptr() as usize, 1);
                }
            }
            "reject" => {
                counts[8] += 1;
                // Rejected calls change nothing.
                assert!(map(0, &MapOptions::new()).is_err());
                assert!(map(page, &MapOptions::new().align(3 << 12)).is_err());
                assert!(map(usize::MAX, &MapOptions::new().guards(true, true)).is_err());
                assert!(reserve(0, page).is_err());
                assert!(reserve(usize::MAX, page).is_err());
                if let Some(live) = maps.first() {
                    // SAFETY: a rejected remap leaves the mapping live and unchanged.
                    unsafe {
                        assert!(live.m.remap(0).is_err());
                        assert!(live.m.remap(usize::MAX).is_err());
                    }
                }
                if let Some(r) = reservations.first_mut() {
                    let len = r.len();
                    assert!(r.commit(len + 1).is_err());
                }
            }
            _ => {} // an operation on an empty set: nothing to do
        }
        assert_matches(seed, start, &model, step, op);
        let now = stats().peak_mapped;
        assert!(
            now >= last_peak,
            "seed {seed:#x} op {step} ({op}): peak went down"
        );
        last_peak = now;
    }

    // Every kind of operation ran a fair number of times.
    assert!(
        counts.iter().all(|&c| c >= 20),
        "operation counts {counts:?}"
    );

    for live in maps.drain(..) {
        // SAFETY: live, never used again.
        unsafe { live.m.unmap() }.unwrap();
        model.remove(live.m.len() + live.guards, live.m.len());
    }
    for r in reservations.drain(..) {
        let (len, committed) = (r.len(), r.committed());
        // SAFETY: never used again.
        unsafe { r.unreserve() }.unwrap();
        model.remove(len, committed);
    }
    assert_matches(seed, start, &model, OPS, "release everything");
    let end = stats();
    assert_eq!(
        (end.mapped, end.committed, end.mappings),
        (start.mapped, start.committed, start.mappings),
        "counters did not return to the start"
    );
    assert!(end.peak_mapped >= start.mapped + model.peak_low);
}

//! Groups: how many slots a new group gets, where its memory comes from, and when an empty one goes.
//!
//! A group's slot count grows with how many slots its class already has in the heap (usage), so a small
//! program gets small groups and a large one gets groups of up to 32 slots. Groups spanning at most
//! half a page are nested inside a slot of a larger class (recursively) instead of taking whole pages;
//! larger groups get their own mapping. Counts follow mallocng's tables, which make groups tile
//! power-of-two spans with little waste.

use twinheap_page::{map, page_size, MapOptions};

use crate::class::{self, UNIT};
use crate::header::GROUP_HEADER;
use crate::recycle;

/// First-group, middle and high-usage counts for the classes below 9 (16 to 144-byte slots).
const SMALL_COUNTS: [[u8; 3]; 9] = [
    [30, 30, 30],
    [31, 15, 15],
    [20, 10, 10],
    [31, 15, 7],
    [25, 12, 6],
    [21, 10, 5],
    [18, 8, 4],
    [31, 15, 7],
    [28, 14, 6],
];

/// Starting counts for classes 9 and up, by `class % 4`; halved while usage is low.
const MEDIUM_COUNTS: [usize; 4] = [28, 24, 20, 32];

/// Offsets in headers are 16-bit units, so a group must span less than 1 MiB.
const MAX_SPAN: usize = 0x1_0000 * UNIT;

/// Slot count for a new group of `class` when the heap already has `usage` slots of it.
pub(crate) fn count(class: usize, usage: usize) -> usize {
    let stride = class::stride(class);
    let mut cnt = if class < SMALL_COUNTS.len() {
        let [high, mid, low] = SMALL_COUNTS[class].map(usize::from);
        if usage >= 4 * high {
            high
        } else if usage >= 4 * mid {
            mid
        } else {
            low
        }
    } else {
        let mut cnt = MEDIUM_COUNTS[class % 4];
        while cnt % 2 == 0 && 4 * cnt > usage {
            cnt /= 2;
        }
        cnt
    };
    while cnt > 1 && GROUP_HEADER + cnt * stride >= MAX_SPAN {
        cnt /= 2;
    }
    if cnt == 1 && GROUP_HEADER + 2 * stride <= page_size() / 2 {
        cnt = 2;
    }
    cnt
}

/// Bytes a group of `cnt` slots of `class` spans.
pub(crate) fn span(class: usize, cnt: usize) -> usize {
    GROUP_HEADER + cnt * class::stride(class)
}

/// True when a group of this span lives in a slot of a larger class rather than in its own pages.
pub(crate) fn is_nested(span: usize) -> bool {
    span <= page_size() / 2
}

/// Memory for a group of `cnt` slots: a recycled mapping of a released group (`recycle.rs`), or a
/// new one. Returns the mapping and the slot count it can hold (the page rounding often leaves room
/// for more slots, up to 32). `try_only`: wait for no lock (a call re-entered from a signal handler).
pub(crate) fn map_group(
    class: usize,
    cnt: usize,
    try_only: bool,
) -> Option<(twinheap_page::Mapping, usize)> {
    let len = span(class, cnt);
    let mapping = match recycle::take(len, try_only) {
        Some(mapping) => mapping,
        None => map(len, &MapOptions::new()).ok()?,
    };
    let fits = (mapping.len() - GROUP_HEADER) / class::stride(class);
    Some((mapping, fits.clamp(cnt, 32)))
}

/// Bytes of a group's mapping it may have written: its header and activated slots, page-rounded.
pub(crate) fn dirty(class: usize, active: usize) -> usize {
    span(class, active).next_multiple_of(page_size())
}

/// How many slots to activate in a fresh mapped group: those within its first 4 KiB (at least one),
/// so that slot choice does not touch every page of a large group at once.
pub(crate) fn initial_active(class: usize, cnt: usize) -> usize {
    ((4096 - GROUP_HEADER) / class::stride(class)).clamp(1, cnt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_grow_with_usage_and_stay_in_range() {
        for class in 0..class::CLASSES {
            let mut last = 0;
            for usage in [0, 10, 100, 1000, 100_000] {
                let cnt = count(class, usage);
                assert!((1..=32).contains(&cnt), "class {class}");
                assert!(span(class, cnt) < MAX_SPAN, "class {class}");
                assert!(cnt >= last, "class {class} usage {usage}");
                last = cnt;
            }
        }
        assert_eq!(count(3, 0), 7);
        assert_eq!(count(3, 1_000_000), 31);
    }
}

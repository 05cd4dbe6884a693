//! Out-of-band metadata: one [`Meta`] record per group, kept in meta areas far from user data.
//!
//! Meta areas are 4 KiB blocks carved from dedicated regions (mappings with a PROT_NONE guard page on
//! each side). Each area starts with a check word equal to the process secret; a free trusts a meta
//! pointer only if it lies inside a meta region, on a record boundary, in an area whose check word is
//! the secret. A linear overflow from user memory cannot reach this metadata, and a forged group header
//! cannot point a free at a fake record without knowing the secret and owning a meta region.
//!
//! Records are recycled through a free list, zeroed first, so a stale pointer leads to a record
//! whose `mem` no longer points back. `trim` gives the pages of areas whose records are all free
//! back to the OS (MADV_DONTNEED: they read as zero and cost no memory until reused); a bitmap marks
//! them released, so a stale meta pointer into one is recognised as not naming a record rather than
//! as a corrupted area. Released areas are reused before new ones are carved. A region whose areas
//! are all released is unmapped by `trim` and leaves the region table, so a pointer into it is no
//! longer inside any region and is rejected before anything is read (mallocng never unmaps its
//! meta areas: there a meta pointer comes from an in-band header; here blocks of size classes find
//! their record out of band, and a large block's record is live as long as the block). The pool has one lock,
//! taken only when a group is created or released (and by trim), never on the malloc or free fast
//! paths.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Release};

use twinheap_page::{map, page_size, MapOptions, Mapping, Mutex};

use crate::heap::Heap;
use crate::masks::Masks;
use crate::secret::secret;

/// Size and alignment of a meta area.
pub(crate) const AREA: usize = 4096;
/// Bytes at the start of each area: the check word and padding.
const AREA_HEADER: usize = 16;
/// Class code of a large allocation (one mapping per block).
pub(crate) const LARGE: u8 = 63;

/// One group's out-of-band record.
///
/// Which lock guards what: `prev`, `next`, `all_prev`, `all_next`, `active_idx` and `dying` change
/// only under the owner heap's lock (the large-block list lock for large blocks); `masks` follow the
/// protocol in `masks.rs`; `mem`, `heap`, `last_idx`, `class` and `mapping` are set before the group's first slot is
/// handed out and cleared only after its last slot is free; `slots[i]` is written by whoever holds
/// slot `i` (the thread that hands it out, then the one that frees it).
#[repr(C)]
pub(crate) struct Meta {
    pub(crate) prev: *mut Meta,
    pub(crate) next: *mut Meta,
    /// The group's first slot (a large block's mapping); a free checks it against the address.
    pub(crate) mem: *mut u8,
    /// Owner heap (null for large allocations).
    pub(crate) heap: *const Heap,
    /// Which slots are available, freed or in use (see `masks.rs` for who may change what).
    pub(crate) masks: Masks,
    /// Number of slots minus one (0..=31).
    pub(crate) last_idx: u8,
    /// Highest slot index activated so far (lazy activation keeps untouched pages clean).
    pub(crate) active_idx: u8,
    /// Size class (0..48), or [`LARGE`].
    pub(crate) class: u8,
    /// True from the moment the group is chosen for release until its record is recycled, so that a
    /// statistics walk under the heap lock skips memory about to be unmapped.
    pub(crate) dying: bool,
    /// The mapping the group (or large block) lives in; `None` for groups nested in a larger slot.
    pub(crate) mapping: Option<Mapping>,
    /// Links of the owner's list of all its groups (full ones included), for statistics and trim.
    pub(crate) all_prev: *mut Meta,
    pub(crate) all_next: *mut Meta,
    /// Per slot, what its block is (see `slot.rs`): requested size, offset in the slot, whether it
    /// is live and whether the slot was ever used. Kept here, out of band, instead of in a header.
    pub(crate) slots: [AtomicU32; 32],
}

static_assertions::const_assert!(size_of::<Meta>() <= 216);
static_assertions::const_assert!(AREA.is_multiple_of(16) && AREA_HEADER.is_multiple_of(8));

/// Records per area.
const PER_AREA: usize = (AREA - AREA_HEADER) / size_of::<Meta>();

impl Meta {
    /// Bit mask with one bit per slot.
    #[inline]
    pub(crate) fn all_slots(&self) -> u32 {
        u32::MAX >> (31 - u32::from(self.last_idx))
    }

    /// Bit mask of the activated slots.
    #[inline]
    pub(crate) fn active_slots(&self) -> u32 {
        u32::MAX >> (31 - u32::from(self.active_idx))
    }
}

struct Pool {
    /// Recycled, zeroed records linked through `next`.
    free: *mut Meta,
    /// Next unused record address in the current area, and that area's end.
    cursor: usize,
    area_end: usize,
    /// Next never-used area of the newest region, that region's end, and the size of the next one.
    fresh: usize,
    region_end: usize,
    next_region: usize,
    /// Areas given back to the OS by [`release_unused`], available for reuse.
    released: usize,
    /// Each region's mapping, by table index; `None` for a free index.
    mappings: [Option<Mapping>; MAX_REGIONS],
}

// SAFETY: the pool's pointers name process-global meta memory; the Mutex serialises all access.
unsafe impl Send for Pool {}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: ptr::null_mut(),
    cursor: 0,
    area_end: 0,
    fresh: 0,
    region_end: 0,
    next_region: 64 << 10,
    released: 0,
    mappings: [None; MAX_REGIONS],
});

/// Meta regions, so that a free can range-check a meta pointer without a lock. An index whose
/// region was unmapped reads 0 for both bounds (which no address lies between) until a new region
/// takes it.
const MAX_REGIONS: usize = 48;
static REGION_START: [AtomicUsize; MAX_REGIONS] = [const { AtomicUsize::new(0) }; MAX_REGIONS];
static REGION_END: [AtomicUsize; MAX_REGIONS] = [const { AtomicUsize::new(0) }; MAX_REGIONS];
static REGIONS: AtomicUsize = AtomicUsize::new(0);
/// The newest region in one word, so that [`check_record`] tests membership with one load and no
/// torn pair of bounds: its start, which is aligned to its length (a power of two), with log2 of the
/// length in the low bits. An address lies in it exactly when `(addr ^ NEWEST) >> (NEWEST & 63)` is
/// zero. 0 (no region yet) matches no address but 0, which is never on a record boundary.
static NEWEST: AtomicUsize = AtomicUsize::new(0);
/// Bytes of meta regions mapped, for statistics.
static META_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Bytes of meta areas given back to the OS (still mapped, not backed), for statistics.
static RELEASED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The largest region (see `new_region`), in areas, and one bit per area of each region: released.
const MAX_REGION: usize = 16 << 20;
const BITMAP_WORDS: usize = MAX_REGION / AREA / 64;
static RELEASED: [[AtomicU64; BITMAP_WORDS]; MAX_REGIONS] =
    [const { [const { AtomicU64::new(0) }; BITMAP_WORDS] }; MAX_REGIONS];

/// Region index and area index of an area inside a meta region.
fn locate(area: usize) -> Option<(usize, usize)> {
    let regions = REGIONS.load(Acquire);
    (0..regions).find_map(|i| {
        let start = REGION_START[i].load(Acquire);
        (area >= start && area < REGION_END[i].load(Acquire)).then(|| (i, (area - start) / AREA))
    })
}

fn is_released(region: usize, index: usize) -> bool {
    RELEASED[region][index / 64].load(Acquire) & (1 << (index % 64)) != 0
}

fn set_released(region: usize, index: usize, released: bool) {
    let bit = 1u64 << (index % 64);
    let word = &RELEASED[region][index / 64];
    if released {
        word.fetch_or(bit, Release);
    } else {
        word.fetch_and(!bit, Release);
    }
}

/// Takes a zeroed record, or `None` when the OS refuses more memory (or, with `try_only`, when the
/// pool is locked: a call re-entered from a signal handler must not wait).
pub(crate) fn alloc(try_only: bool) -> Option<*mut Meta> {
    let mut pool = if try_only {
        POOL.try_lock()?
    } else {
        POOL.lock()
    };
    if !pool.free.is_null() {
        let m = pool.free;
        // SAFETY: records on the free list are valid, zeroed except for the `next` link.
        unsafe {
            pool.free = (*m).next;
            (*m).next = ptr::null_mut();
        }
        return Some(m);
    }
    if pool.cursor + size_of::<Meta>() > pool.area_end {
        let area = if pool.released > 0 {
            reuse_released(&mut pool)
        } else if pool.fresh + AREA <= pool.region_end {
            let area = pool.fresh;
            pool.fresh += AREA;
            area
        } else {
            new_region(&mut pool)?
        };
        // SAFETY: `area` is the start of an unused, zeroed 4 KiB block inside a meta region.
        unsafe { (area as *mut u64).write(secret()) };
        pool.cursor = area + AREA_HEADER;
        pool.area_end = area + AREA;
    }
    let m = pool.cursor as *mut Meta;
    pool.cursor += size_of::<Meta>();
    Some(m)
}

fn new_region(pool: &mut Pool) -> Option<usize> {
    let used = REGIONS.load(Acquire);
    let index = (0..used)
        .find(|&i| pool.mappings[i].is_none())
        .unwrap_or(used);
    if index == MAX_REGIONS {
        return None;
    }
    // The secret exists before any area can be found in a region: `check_record` compares check
    // words with it without an initialisation branch.
    secret();
    let len = pool.next_region;
    // Aligned to its own length, so that membership of the newest region is one shift (`NEWEST`).
    let region: Mapping = map(len, &MapOptions::new().align(len).guards(true, true)).ok()?;
    let start = region.ptr().as_ptr() as usize;
    REGION_START[index].store(start, Release);
    REGION_END[index].store(start + region.len(), Release);
    pool.mappings[index] = Some(region);
    if index == used {
        REGIONS.store(index + 1, Release);
    }
    // A region that is not aligned to its length (never expected) is left to the slow path.
    let aligned = len.is_power_of_two() && start & (len - 1) == 0 && region.len() >= len;
    debug_assert!(aligned);
    NEWEST.store(
        if aligned {
            start | len.trailing_zeros() as usize
        } else {
            0
        },
        Release,
    );
    META_BYTES.fetch_add(region.len(), Release);
    pool.region_end = start + region.len();
    pool.fresh = start + AREA;
    pool.next_region = (len * 2).min(MAX_REGION);
    Some(start)
}

/// Takes a released area back into use; its page reads zero again, so it is a fresh area.
fn reuse_released(pool: &mut Pool) -> usize {
    for region in 0..REGIONS.load(Acquire) {
        if pool.mappings[region].is_none() {
            continue;
        }
        for (w, word) in RELEASED[region].iter().enumerate() {
            let bits = word.load(Acquire);
            if bits != 0 {
                let index = w * 64 + bits.trailing_zeros() as usize;
                let area = REGION_START[region].load(Acquire) + index * AREA;
                // Stamp before the bit goes, so that a stale pointer into the area never sees an
                // unreleased area without the secret (that would read as corrupted metadata).
                // SAFETY: a released area is pool-owned memory of a live region, reading zero.
                unsafe { (area as *mut u64).write(secret()) };
                set_released(region, index, false);
                pool.released -= 1;
                RELEASED_BYTES.fetch_sub(AREA, Release);
                return area;
            }
        }
    }
    unreachable!("released areas are counted")
}

/// Gives back to the OS the pages of meta areas whose records are all free (for `trim`). Returns the
/// bytes given back.
pub(crate) fn release_unused() -> usize {
    let mut pool = POOL.lock();
    let page = page_size();
    if !page.is_multiple_of(AREA) {
        return 0;
    }
    // Count each area's free records in the spare word of its header (under the pool lock).
    let count = |area: usize| (area + 8) as *mut usize;
    let mut m = pool.free;
    while !m.is_null() {
        // SAFETY: free records lie in live (not released) areas; the header word is pool-owned.
        unsafe {
            *count(m as usize & !(AREA - 1)) += 1;
            m = (*m).next;
        }
    }
    // The area being carved: its records past the cursor were never handed out, so they count as
    // free too; if the whole area goes, carving starts afresh (below).
    if pool.cursor != 0 {
        // SAFETY: as above.
        unsafe {
            *count((pool.area_end - 1) & !(AREA - 1)) +=
                (pool.area_end - pool.cursor) / size_of::<Meta>()
        };
    }
    let whole = |area: usize| {
        // SAFETY: as above.
        unsafe { *count(area) == PER_AREA }
    };
    // Drop the records of wholly free areas from the free list before any page goes.
    let mut link: *mut *mut Meta = &mut pool.free;
    // SAFETY: the list is pool-owned; every record on it is live.
    unsafe {
        while !(*link).is_null() {
            let r = *link;
            if whole(r as usize & !(AREA - 1)) {
                *link = (*r).next;
            } else {
                link = &mut (*r).next;
            }
        }
    }
    // Release whole pages of such areas; reset every other count.
    let mut released = 0;
    for region in 0..REGIONS.load(Acquire) {
        let start = REGION_START[region].load(Acquire);
        let region_end = REGION_END[region].load(Acquire);
        // Only areas handed out so far: the newest region is carved up to `fresh`.
        let end = if (start..=region_end).contains(&pool.fresh) {
            pool.fresh
        } else {
            region_end
        };
        let mut at = start;
        while at + page <= end {
            let first = (at - start) / AREA;
            let areas = page / AREA;
            let gone = (0..areas).any(|k| is_released(region, first + k));
            if !gone && (0..areas).all(|k| whole(at + k * AREA)) {
                // SAFETY: no record in these areas is in use or on the free list any more.
                if unsafe {
                    twinheap_page::release(at as *mut u8, page, twinheap_page::Release::DontNeed)
                }
                .is_ok()
                {
                    for k in 0..areas {
                        set_released(region, first + k, true);
                    }
                    pool.released += areas;
                    released += page;
                    RELEASED_BYTES.fetch_add(page, Release);
                    at += page;
                    continue;
                }
            }
            for k in 0..areas {
                let area = at + k * AREA;
                if !is_released(region, first + k) {
                    // SAFETY: as above.
                    unsafe {
                        if *count(area) != 0 {
                            *count(area) = 0;
                        }
                    }
                }
            }
            at += page;
        }
    }
    // The never-used rest of the newest region was never touched (it reads zero and is not
    // resident): count it with the released areas, so it is reused the same way and statistics
    // show only areas that hold (or held) records.
    if let Some((region, index)) = locate(pool.fresh) {
        let end = REGION_END[region].load(Acquire);
        let areas = (end - pool.fresh) / AREA;
        for k in 0..areas {
            set_released(region, index + k, true);
        }
        pool.released += areas;
        RELEASED_BYTES.fetch_add(areas * AREA, Release);
        pool.fresh = end;
    }
    // The area being carved may have been released with the rest: start a new one when needed.
    if pool.cursor != 0 {
        if let Some((region, index)) = locate((pool.area_end - 1) & !(AREA - 1)) {
            if is_released(region, index) {
                pool.cursor = 0;
                pool.area_end = 0;
            }
        }
    }
    unmap_released_regions(&mut pool);
    released
}

/// Unmaps every region whose areas are all released (for `trim`): its address space goes back too.
/// Meta pointers reach a free only from slab's own out-of-band records (segment entries) or from a
/// large block's header, whose record is live while the block is; a stale pointer into an unmapped
/// region is not inside any region any more, so it reads as "not a record" without a dereference
/// (only a free racing with this trim could still fault).
fn unmap_released_regions(pool: &mut Pool) {
    for i in 0..REGIONS.load(Acquire) {
        let Some(region) = pool.mappings[i] else {
            continue;
        };
        let areas = region.len() / AREA;
        if !(0..areas).all(|k| is_released(i, k)) {
            continue;
        }
        let start = region.ptr().as_ptr() as usize;
        if NEWEST.load(Acquire) & !63 == start {
            NEWEST.store(0, Release);
            pool.fresh = 0;
            pool.region_end = 0;
        }
        REGION_START[i].store(0, Release);
        REGION_END[i].store(0, Release);
        for word in &RELEASED[i] {
            word.store(0, Release);
        }
        pool.released -= areas;
        RELEASED_BYTES.fetch_sub(areas * AREA, Release);
        META_BYTES.fetch_sub(region.len(), Release);
        pool.mappings[i] = None;
        // SAFETY: every area of the region is released: no record in it is in use or listed, and
        // no table names it any more.
        let _ = unsafe { region.unmap() };
    }
    // Regions double in size; after everything went, start small again.
    if pool.mappings.iter().all(Option::is_none) {
        pool.next_region = 64 << 10;
    }
}

/// Returns a record to the pool, zeroing it first.
///
/// # Safety
/// `m` came from [`alloc`], and no group, list or pointer refers to it any more.
pub(crate) unsafe fn free(m: *mut Meta) {
    // SAFETY: per the contract the record is ours alone; all-zero is a valid Meta (null pointers,
    // zero masks, `None`).
    unsafe { ptr::write_bytes(m, 0, 1) };
    let mut pool = POOL.lock();
    // SAFETY: as above.
    unsafe { (*m).next = pool.free };
    pool.free = m;
}

/// What an address claimed to be a meta record turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A record slot in a meta area stamped with the secret.
    Valid,
    /// Not a record slot inside any meta region: the pointer did not lead to slab's metadata.
    NotMeta,
    /// A record slot of a meta region whose area check word is not the secret: metadata was overwritten.
    BadCheck,
}

/// Classifies `addr` without dereferencing anything outside the meta regions.
///
/// Every free runs this (on the meta pointer its segment names), so the common case is short: the record-boundary test is one multiply,
/// one rotate and one compare (see [`record_index`]), membership of the newest region one xor and
/// one shift (see [`NEWEST`]), then the area's check word. Older regions, and the answers other
/// than [`Record::Valid`], are found out of line.
#[inline]
pub(crate) fn check_record(addr: usize) -> Record {
    if record_index(addr) >= PER_AREA as u32 {
        return Record::NotMeta;
    }
    let newest = NEWEST.load(Acquire);
    if (addr ^ newest) >> (newest & 63) != 0 {
        return check_older(addr);
    }
    let area = addr & !(AREA - 1);
    // SAFETY: the area lies inside the newest meta region, which is mapped (`NEWEST` is cleared
    // before a region is unmapped; a released area reads zero).
    let word = unsafe { (area as *const u64).read() };
    // The region exists, so the secret does (`new_region` makes it before publishing).
    if word == crate::secret::known() {
        Record::Valid
    } else {
        check_older(addr)
    }
}

/// [`check_record`] for what the newest region does not answer: the record lies in an older
/// region, in none, or its area's check word is not the secret.
#[cold]
#[inline(never)]
fn check_older(addr: usize) -> Record {
    let area = addr & !(AREA - 1);
    let regions = REGIONS.load(Acquire);
    // Newest first: regions double in size, so the newest hold most records.
    for i in (0..regions).rev() {
        let start = REGION_START[i].load(Acquire);
        if area >= start && area < REGION_END[i].load(Acquire) {
            // SAFETY: the area lies inside a meta region listed in the table, which is mapped (a
            // region leaves the table before it is unmapped; a released area reads zero).
            let word = unsafe { (area as *const u64).read() };
            return if word == secret() {
                Record::Valid
            } else if is_released(i, (area - start) / AREA) {
                Record::NotMeta
            } else {
                Record::BadCheck
            };
        }
    }
    Record::NotMeta
}

/// Bytes per record, split into a power of two and an odd factor (216 = 8 · 27).
const RECORD: usize = size_of::<Meta>();
const RECORD_SHIFT: u32 = RECORD.trailing_zeros();
const RECORD_ODD: u32 = (RECORD >> RECORD_SHIFT) as u32;

/// The inverse of an odd `d` modulo 2^32, by Newton's iteration (each step doubles the number of
/// correct low bits; an odd `d` is its own inverse modulo 8).
const fn inverse(d: u32) -> u32 {
    let mut x = d;
    let mut i = 0;
    while i < 4 {
        x = x.wrapping_mul(2u32.wrapping_sub(d.wrapping_mul(x)));
        i += 1;
    }
    x
}
const RECORD_INVERSE: u32 = inverse(RECORD_ODD);
static_assertions::const_assert!(RECORD_ODD.wrapping_mul(RECORD_INVERSE) == 1);
static_assertions::const_assert!(RECORD_ODD % 2 == 1);

/// The index of the record `addr` names within its area, or a number of at least [`PER_AREA`] when
/// `addr` is not on a record boundary.
///
/// For `n = q · RECORD` (the offset past the area header), `n · RECORD_ODD⁻¹` is `q · 2^shift`
/// modulo 2^32, which the rotation turns back into `q`. The map `n ↦ rotr(n · inverse, shift)` is a
/// bijection of u32, so the values below `PER_AREA` are reached only from those exact offsets:
/// every other offset, including those inside the area header (which wrap around below zero),
/// lands at or above it. This replaces a remainder, a range test and an underflow test with one
/// multiply, one rotate and one compare, and no division.
#[inline(always)]
fn record_index(addr: usize) -> u32 {
    let n = ((addr & (AREA - 1)) as u32).wrapping_sub(AREA_HEADER as u32);
    n.wrapping_mul(RECORD_INVERSE).rotate_right(RECORD_SHIFT)
}

/// Bytes mapped for meta regions, less the areas given back to the OS.
pub(crate) fn mapped_bytes() -> usize {
    META_BYTES.load(Acquire) - RELEASED_BYTES.load(Acquire)
}

/// Takes the pool lock for fork; see `fork.rs`.
pub(crate) fn fork_lock() -> &'static twinheap_page::Lock {
    POOL.raw()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The record-boundary test without a division gives exactly the answers of the plain one, for
    /// every offset in an area, and at every area of a 1 MiB stretch (the area bits are ignored).
    #[test]
    fn record_index_matches_division() {
        for addr in 0..(1usize << 20) {
            let offset = addr % AREA;
            let plain = offset >= AREA_HEADER
                && (offset - AREA_HEADER).is_multiple_of(RECORD)
                && (offset - AREA_HEADER) / RECORD < PER_AREA;
            let fast = record_index(addr) < PER_AREA as u32;
            assert_eq!(plain, fast, "addr {addr:#x}");
            if plain {
                assert_eq!(record_index(addr) as usize, (offset - AREA_HEADER) / RECORD);
            }
        }
    }

    /// Records from the pool pass the check; addresses around them, and outside every region, do not.
    #[test]
    fn records_pass_and_their_neighbours_do_not() {
        let m = alloc(false).expect("a meta record") as usize;
        assert_eq!(check_record(m), Record::Valid);
        for delta in [1usize, 8, 16, 44, 87] {
            assert_eq!(check_record(m + delta), Record::NotMeta, "m + {delta}");
            assert_eq!(check_record(m - delta), Record::NotMeta, "m - {delta}");
        }
        let area = m & !(AREA - 1);
        assert_eq!(check_record(area), Record::NotMeta);
        assert_eq!(check_record(area + AREA_HEADER), Record::Valid);
        let outside = &m as *const usize as usize & !(AREA - 1);
        assert_eq!(check_record(outside + AREA_HEADER), Record::NotMeta);
        assert_eq!(check_record(AREA_HEADER), Record::NotMeta);
        // SAFETY: the record was never published.
        unsafe { free(m as *mut Meta) };
    }
}

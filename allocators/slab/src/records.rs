//! Memory for segment records: cut from shared guarded regions, and recycled per class.
//!
//! A segment record (`segment::Seg` and its group entries) needs a few hundred bytes to 16 KiB. A
//! mapping of its own, between guard pages, would cost one or two entries in the process's memory
//! map per 1 MiB segment, and a program with a few tens of GiB of small blocks would run into
//! `vm.max_map_count` (65,530 by default). Instead records are cut, in whole pages, from regions
//! with a guard page before and after each; user memory is never next to them. The first region is
//! [`FIRST_REGION`] bytes and each new one twice the last, up to [`REGION`], so that a small
//! program maps little metadata. Every record of a class has the same length, so a record given
//! back joins its class's free list and the next segment of that class takes it as it is.
//!
//! Invariants, under the pool lock:
//! - a record is live (a segment's), on its class's free list, or not yet cut (at or past its
//!   region's `cut` offset);
//! - a record on a free list reads zero except for its first word, the link to the next one: its
//!   pages were given back to the OS before it was linked, so a record taken again needs no
//!   clearing;
//! - `live[r]` counts region `r`'s live records; a region with none is unmapped at trim, after its
//!   records are taken off the free lists.
//!
//! When the region table is full, or a region cannot be mapped, a record gets a guarded mapping of
//! its own ([`Record::own`]).

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use twinheap_page::{map, page_size, MapOptions, Mapping, Mutex};

use crate::class::CLASSES;

/// Bytes of the largest region (its guard pages come on top), and of the first.
const REGION: usize = 1 << 20;
const FIRST_REGION: usize = 32 << 10;
/// Regions the pool can hold: enough for the records of about a TiB of segments.
const REGIONS: usize = 1024;

struct Pool {
    regions: [Option<Mapping>; REGIONS],
    /// Per region: usable bytes, bytes cut so far, and records live.
    size: [usize; REGIONS],
    cut: [usize; REGIONS],
    live: [u32; REGIONS],
    /// The region new records are cut from, and the size of the last region mapped.
    current: usize,
    last_size: usize,
    /// Per class: the first free record, linked through its first word.
    free: [*mut u8; CLASSES],
}

// SAFETY: the pointers name records inside the pool's own regions; the Mutex serialises access.
unsafe impl Send for Pool {}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    regions: [None; REGIONS],
    size: [0; REGIONS],
    cut: [0; REGIONS],
    live: [0; REGIONS],
    current: 0,
    last_size: 0,
    free: [ptr::null_mut(); CLASSES],
});

/// Bytes of regions and of records' own mappings mapped (guards included).
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// A record's memory: `ptr`, zeroed, cut from a region, or mapped on its own (`own`).
#[derive(Clone, Copy)]
pub(crate) struct Record {
    pub(crate) ptr: *mut u8,
    own: Option<Mapping>,
}

/// The length a record of `len` bytes takes in a region: whole pages, so that a freed record's
/// memory can be given back on its own.
fn footprint(len: usize) -> usize {
    len.next_multiple_of(page_size())
}

impl Pool {
    /// The region holding `rec`, if any.
    fn region_of(&self, rec: *mut u8) -> Option<usize> {
        let a = rec as usize;
        (0..REGIONS).find(|&r| {
            self.regions[r].is_some_and(|m| {
                let base = m.ptr().as_ptr() as usize;
                a >= base && a < base + self.size[r]
            })
        })
    }
}

/// A zeroed record of `len` bytes for a segment of `class` (every record of a class has the same
/// `len`): from the pool, else mapped on its own; `None` when neither is possible. `try_only`: wait
/// for no lock.
pub(crate) fn take(class: usize, len: usize, try_only: bool) -> Option<Record> {
    if let Some(ptr) = take_pooled(class, len, try_only) {
        return Some(Record { ptr, own: None });
    }
    let own = map(len, &MapOptions::new().guards(true, true)).ok()?;
    MAPPED.fetch_add(own.len(), Relaxed);
    Some(Record {
        ptr: own.ptr().as_ptr(),
        own: Some(own),
    })
}

/// [`take`] from the pool's regions.
fn take_pooled(class: usize, len: usize, try_only: bool) -> Option<*mut u8> {
    let size = footprint(len);
    if size > REGION {
        return None;
    }
    let mut pool = if try_only {
        POOL.try_lock()?
    } else {
        POOL.lock()
    };
    let rec = pool.free[class];
    if !rec.is_null() {
        // SAFETY: a free record is ours under the lock; its first word is the link.
        unsafe {
            pool.free[class] = (rec as *mut *mut u8).read();
            (rec as *mut *mut u8).write(ptr::null_mut());
        }
        let r = pool.region_of(rec)?;
        pool.live[r] += 1;
        return Some(rec);
    }
    let mut r = pool.current;
    if pool.regions[r].is_none() || pool.cut[r] + size > pool.size[r] {
        r = pool.regions.iter().position(Option::is_none)?;
        let region_size = (pool.last_size * 2).clamp(FIRST_REGION, REGION).max(size);
        // A syscall under the pool lock: the lock is a leaf (no other lock is taken under it) and
        // new regions are rare (one per 1 MiB of records once they are full size).
        let region = map(region_size, &MapOptions::new().guards(true, true)).ok()?;
        MAPPED.fetch_add(region.len(), Relaxed);
        pool.regions[r] = Some(region);
        pool.size[r] = region_size;
        pool.last_size = region_size;
        pool.cut[r] = 0;
        pool.live[r] = 0;
        pool.current = r;
    }
    let region = pool.regions[r]?;
    // SAFETY: `cut + size` is within the region's usable bytes.
    let rec = unsafe { region.ptr().as_ptr().add(pool.cut[r]) };
    pool.cut[r] += size;
    pool.live[r] += 1;
    Some(rec)
}

/// Gives back a record that [`take`] returned for `class` and `len`.
///
/// # Safety
/// Nothing refers to the record any more, and `class` and `len` are those it was taken with.
pub(crate) unsafe fn give(record: Record, class: usize, len: usize) {
    let rec = record.ptr;
    if let Some(own) = record.own {
        MAPPED.fetch_sub(own.len(), Relaxed);
        // SAFETY: per the contract.
        let _ = unsafe { own.unmap() };
        return;
    }
    // Without the lock: the record is the caller's alone until it is linked.
    // SAFETY: the record's whole pages are its own (see `footprint`) and unused; afterwards they
    // read zero. Should the kernel refuse, they are cleared by hand.
    unsafe {
        if twinheap_page::release(rec, footprint(len), twinheap_page::Release::DontNeed).is_err() {
            ptr::write_bytes(rec, 0, footprint(len));
        }
    }
    let mut pool = POOL.lock();
    let Some(r) = pool.region_of(rec) else {
        return;
    };
    pool.live[r] -= 1;
    // SAFETY: the record is ours under the lock; its first word becomes the link.
    unsafe { (rec as *mut *mut u8).write(pool.free[class]) };
    pool.free[class] = rec;
}

/// Unmaps every region with no live record. Returns true if any was.
pub(crate) fn trim() -> bool {
    let mut pool = POOL.lock();
    let mut any = false;
    for r in 0..REGIONS {
        let Some(region) = pool.regions[r] else {
            continue;
        };
        if pool.live[r] != 0 {
            continue;
        }
        let base = region.ptr().as_ptr() as usize;
        let end = base + pool.size[r];
        // Take the region's records off the free lists before it goes.
        for class in 0..CLASSES {
            let mut link: *mut *mut u8 = &mut pool.free[class];
            // SAFETY: free records are ours under the lock; links name free records or null.
            unsafe {
                while !(*link).is_null() {
                    let rec = *link;
                    if (rec as usize) >= base && (rec as usize) < end {
                        *link = (rec as *mut *mut u8).read();
                    } else {
                        link = rec as *mut *mut u8;
                    }
                }
            }
        }
        pool.regions[r] = None;
        pool.size[r] = 0;
        pool.cut[r] = 0;
        if pool.current == r {
            pool.current = 0;
        }
        MAPPED.fetch_sub(region.len(), Relaxed);
        // SAFETY: no live record is in the region and none is listed any more.
        let _ = unsafe { region.unmap() };
        any = true;
    }
    if pool.regions.iter().all(Option::is_none) {
        // Growth starts small again.
        pool.last_size = 0;
    }
    any
}

/// Bytes of record regions and of records' own mappings.
pub(crate) fn mapped_bytes() -> usize {
    MAPPED.load(Relaxed)
}

/// The pool's lock, for fork handlers.
pub(crate) fn fork_lock() -> &'static twinheap_page::Lock {
    POOL.raw()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn records_are_cut_in_whole_pages_and_recycled_reading_zero() {
        // Other tests make segments concurrently, so only what this test holds is checked.
        let class = 7;
        let len = 5000;
        let a = take(class, len, false).expect("a record");
        let b = take(class, len, false).expect("another");
        let (ra, rb) = (a, b);
        let (a, b) = (a.ptr, b.ptr);
        assert_ne!(a, b);
        for r in [a, b] {
            assert!((r as usize).is_multiple_of(page_size()));
        }
        assert!(
            (a as usize).abs_diff(b as usize) >= footprint(len),
            "records do not overlap"
        );
        // SAFETY: `a` is ours, `len` bytes long.
        unsafe {
            ptr::write_bytes(a, 0xa5, len);
            give(ra, class, len);
        }
        let rc = take(class, len, false).expect("recycled");
        let c = rc.ptr;
        // SAFETY: as above.
        let bytes = unsafe { core::slice::from_raw_parts(c, len) };
        assert!(
            bytes.iter().all(|&x| x == 0),
            "a recycled record reads zero"
        );
        // SAFETY: both are ours.
        unsafe {
            give(rb, class, len);
            give(rc, class, len);
        }
    }
}

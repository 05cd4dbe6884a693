//! The arenas: the static main arena, secondary arenas created on demand, and which thread uses which.
//!
//! A new thread gets, in glibc's order: an arena no thread is attached to, else a new arena while the
//! limit allows (`arena_max`, or 8 × online CPUs once more than `arena_test` exist), else an existing
//! one, round robin, preferring one whose lock is free right now (the bookkeeping is in `attach`,
//! with its loom models). It then stays there. At thread exit the count drops and an arena nobody uses
//! becomes free for the next thread.
//!
//! Invariants: every arena ever created is on the list starting at [`main`], linked through `next`,
//! which is written once before an arena is published and never changes (so the list can be walked
//! without a lock, as fork handlers and statistics do), and in the `ARENAS` table by number; arenas
//! are never destroyed. The attachment state is guarded by the registry lock, taken before any arena
//! lock (fork takes them in that order); arena locks are only tried under it, never waited for.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

use twinheap_page::Mutex;

use crate::arena::Arena;
use crate::attach::{Attach, Pick};
use crate::chunk::*;
use crate::config::PARAMS;
use crate::heap::{heap_of, new_heap};
use crate::malloc::heap_lead;

/// Most arenas a process can have (glibc has no fixed cap; 8 × CPUs reaches it at 128 CPUs).
pub(crate) const MAX_ARENAS: usize = 1024;

struct Registry {
    attach: Attach<MAX_ARENAS>,
}

static REG: Mutex<Registry> = Mutex::new(Registry {
    attach: Attach::new(),
});

/// Every arena by number, set once before the arena is handed to any thread.
static ARENAS: [AtomicPtr<Arena>; MAX_ARENAS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_ARENAS];

static MAIN: Arena = Arena::new(0, 0);
static MAIN_READY: AtomicBool = AtomicBool::new(false);
static NARENAS: AtomicUsize = AtomicUsize::new(0);

/// The main arena, initialised on first use.
#[inline(always)]
pub(crate) fn main() -> &'static Arena {
    if !MAIN_READY.load(Acquire) {
        init_main();
    }
    &MAIN
}

#[cold]
fn init_main() {
    let _reg = REG.lock();
    if !MAIN_READY.load(Relaxed) {
        // SAFETY: no thread has the main arena yet: it becomes reachable only after the flag.
        unsafe { MAIN.init_bins() };
        ARENAS[0].store(&MAIN as *const Arena as *mut Arena, Release);
        NARENAS.store(1, Relaxed);
        MAIN_READY.store(true, Release);
    }
}

fn by_index(i: usize) -> &'static Arena {
    // SAFETY: indexes handed out by `Attach` name arenas published in ARENAS; arenas live forever.
    unsafe { &*ARENAS[i].load(Acquire) }
}

fn busy(i: usize) -> bool {
    by_index(i).lock.is_locked()
}

/// Number of arenas created so far (main included).
pub(crate) fn narenas() -> usize {
    NARENAS.load(Relaxed)
}

/// The arena owning heap chunk `p`, or None when its headers disagree with the NON_MAIN_ARENA bit.
///
/// # Safety
/// `p` lies in an existing heap (checked with `heap::is_heap_address`).
#[inline(always)]
pub(crate) unsafe fn arena_of(p: P) -> Option<&'static Arena> {
    // SAFETY: per the contract the heap header is mapped; arenas are never freed.
    unsafe {
        let owner = (*heap_of(p as usize)).arena;
        let main = &MAIN as *const Arena as *mut Arena;
        if non_main(p) == (owner == main) {
            return None;
        }
        Some(&*owner)
    }
}

/// Calls `f` on every arena.
pub(crate) fn for_each(mut f: impl FnMut(&'static Arena)) {
    let mut a: *const Arena = main();
    while !a.is_null() {
        // SAFETY: arenas are never freed and `next` is immutable once published.
        let arena = unsafe { &*a };
        f(arena);
        a = arena.next.load(Acquire);
    }
}

fn online_cpus() -> usize {
    static CACHED: AtomicUsize = AtomicUsize::new(0);
    let c = CACHED.load(Relaxed);
    if c != 0 {
        return c;
    }
    let mut buf = [0u8; 256];
    let n = twinheap_page::sys::read_file(c"/sys/devices/system/cpu/online", &mut buf)
        .map(|n| count_cpus(&buf[..n]))
        .filter(|&n| n > 0)
        .unwrap_or(2);
    CACHED.store(n, Relaxed);
    n
}

/// Counts the CPUs in a list such as `0-3,8,10-11`.
fn count_cpus(text: &[u8]) -> usize {
    let mut total = 0;
    for part in text.split(|&b| b == b',') {
        let part = part.trim_ascii();
        let num = |s: &[u8]| -> Option<usize> {
            let s = s.trim_ascii();
            if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
                return None;
            }
            s.iter().try_fold(0usize, |a, &b| {
                a.checked_mul(10)?.checked_add(usize::from(b - b'0'))
            })
        };
        match part.iter().position(|&b| b == b'-') {
            Some(dash) => {
                if let (Some(a), Some(b)) = (num(&part[..dash]), num(&part[dash + 1..])) {
                    if b >= a {
                        total += b - a + 1;
                    }
                }
            }
            None => {
                if num(part).is_some() {
                    total += 1;
                }
            }
        }
    }
    total
}

/// The most arenas allowed when `narenas` exist: `arena_max` if set; otherwise no limit until more
/// than `arena_test` exist, then 8 × online CPUs.
fn limit(narenas: usize) -> usize {
    let max = PARAMS.arena_max.load(Relaxed);
    if max != 0 {
        return max;
    }
    if narenas <= PARAMS.arena_test.load(Relaxed) {
        return usize::MAX;
    }
    8 * online_cpus()
}

/// Picks the arena for a thread starting to allocate, and counts it as attached.
pub(crate) fn attach_thread() -> &'static Arena {
    main();
    let i = REG.lock().attach.pick(busy);
    by_index(i)
}

/// The calling thread keeps finding arena `cur` locked: moves it to an unused arena, a new one
/// while the limit allows, or an idle one; returns where it ends up (maybe `cur`).
pub(crate) fn migrate(cur: &'static Arena) -> &'static Arena {
    let mut reg = REG.lock();
    let n = reg.attach.created_count();
    match reg.attach.pick_on_contention(cur.index, limit(n), busy) {
        Pick::Existing(i) => by_index(i),
        Pick::Create(i) => match create(i) {
            Some(a) => {
                ARENAS[i].store(a as *const Arena as *mut Arena, Release);
                // Publishing after main keeps the list of every arena intact for lock-free walks.
                a.next.store(MAIN.next.load(Relaxed), Relaxed);
                MAIN.next.store(a as *const Arena as *mut Arena, Release);
                reg.attach.created(i, cur.index);
                NARENAS.store(i + 1, Relaxed);
                a
            }
            None => {
                reg.attach.failed();
                cur
            }
        },
    }
}

/// A thread leaves arena `a` (thread exit); an arena nobody uses becomes free for the next thread.
pub(crate) fn detach_thread(a: &'static Arena) {
    REG.lock().attach.detach(a.index);
}

/// Builds a secondary arena in a new heap.
fn create(index: usize) -> Option<&'static Arena> {
    let lead = heap_lead(true);
    let pad = PARAMS.top_pad.load(Relaxed);
    let need = lead + MINSIZE;
    let h = new_heap(ptr::null_mut(), need.saturating_add(pad))
        .or_else(|| new_heap(ptr::null_mut(), need))?;
    let a = (h as usize + size_of::<crate::heap::HeapInfo>()) as *mut Arena;
    // SAFETY: the heap is fresh and committed past `lead`; nobody else can see the arena yet.
    unsafe {
        a.write(Arena::new(index, NON_MAIN_ARENA));
        (*a).init_bins();
        (*h).arena = a;
        let st = (*a).st();
        st.heap = h;
        let top = (h as usize + lead) as P;
        set_head(top, ((*h).end() - top as usize) | PREV_INUSE);
        st.top = top;
        (*h).fresh = top as usize + HDR;
        (*a).add_system_mem(st, (*h).size());
        Some(&*a)
    }
}

/// The registry lock, for fork handlers.
pub(crate) fn fork_lock() -> &'static twinheap_page::Lock {
    REG.raw()
}

/// In a fork child (single-threaded, every lock reset): only `survivor` still runs, so every other
/// arena is unattached and free for new threads.
pub(crate) fn after_fork_child(survivor: *const Arena) {
    let index = if survivor.is_null() {
        None
    } else {
        // SAFETY: the survivor's arena is live.
        Some(unsafe { (*survivor).index })
    };
    REG.lock().attach.after_fork_child(index);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus(b"0-1\n"), 2);
        assert_eq!(count_cpus(b"0-3,8,10-11\n"), 7);
        assert_eq!(count_cpus(b"0"), 1);
        assert_eq!(count_cpus(b""), 0);
        assert!(online_cpus() >= 1);
    }
}

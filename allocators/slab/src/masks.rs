//! A group's two slot masks and the protocol between the owner heap and freeing threads.
//!
//! `avail`: slots malloc may hand out now. `freed`: slots freed since the last activation, plus slots
//! not activated yet. A slot in neither is in use. The rules:
//!
//! - only the owner, holding its heap lock, removes bits: it takes one bit from `avail` per malloc,
//!   and moves `freed` bits to `avail` in bulk (activation) only when `avail` is empty;
//! - any thread adds a bit to `freed` when it frees a slot: lock-free by CAS when the group already
//!   has freed slots and this free does not complete the group; otherwise under the owner's lock,
//!   because then the group's list membership changes (a full group rejoins its list; an emptied
//!   group may be released). `freed == 0`, not `(freed | avail) == 0`, decides the first case:
//!   `avail` read without the lock is only an upper bound, and mallocng found the race that the
//!   weaker test allows.
//!
//! Under `cfg(loom)` the masks use loom's atomics and this module's models explore every
//! interleaving of an owner allocating and activating against threads freeing.

#[cfg(not(loom))]
use core::sync::atomic::AtomicU32;
#[cfg(loom)]
use loom::sync::atomic::AtomicU32;

use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// A group's slot masks. All-zero is a valid (empty) state.
#[derive(Debug, Default)]
pub(crate) struct Masks {
    avail: AtomicU32,
    freed: AtomicU32,
}

/// What a free found when it tried to mark its slot without the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lockless {
    /// The slot is marked freed; nothing else to do.
    Done,
    /// The free must take the owner's lock (first freed slot, or the group's last slot).
    NeedLock,
    /// The slot is already free or available: a double (or invalid) free.
    AlreadyFree,
}

impl Masks {
    /// Sets up a new group: `active` slots available, the rest of `all` waiting for activation.
    pub(crate) fn init(&self, all: u32, active: u32) {
        self.avail.store(active, Relaxed);
        self.freed.store(all & !active, Release);
    }

    /// Slots in use are in neither mask; this is the union (a snapshot unless the owner lock is held).
    #[inline]
    pub(crate) fn free_or_avail(&self) -> u32 {
        self.freed.load(Acquire) | self.avail.load(Relaxed)
    }

    /// Owner: the available slots.
    #[inline]
    pub(crate) fn avail(&self) -> u32 {
        self.avail.load(Relaxed)
    }

    /// Owner, lock held: hands out slot `bit`, which must be available.
    #[inline]
    pub(crate) fn take(&self, bit: u32) {
        let avail = self.avail.load(Relaxed);
        debug_assert!(avail & bit != 0);
        self.avail.store(avail & !bit, Relaxed);
    }

    /// Owner, lock held: makes slots taken earlier (and never handed out) available again.
    pub(crate) fn untake(&self, bits: u32) {
        self.avail.store(self.avail.load(Relaxed) | bits, Relaxed);
    }

    /// Owner, lock held, `avail` empty: moves freed slots within `active` to `avail`. Returns false if
    /// there were none.
    pub(crate) fn activate(&self, active: u32) -> bool {
        let ready = self.freed.load(Acquire) & active;
        if ready == 0 {
            return false;
        }
        // Concurrent frees only add bits, so clearing exactly `ready` loses none of theirs.
        self.freed.fetch_and(!ready, AcqRel);
        self.avail.store(self.avail.load(Relaxed) | ready, Relaxed);
        true
    }

    /// Any thread, no lock: tries to mark slot `bit` (or several slots at once, from an owner's
    /// pending frees) of a group whose slots are `all`.
    #[inline]
    pub(crate) fn free_lockless(&self, bit: u32, all: u32) -> Lockless {
        loop {
            let freed = self.freed.load(Acquire);
            let mask = freed | self.avail.load(Relaxed);
            if mask & bit != 0 {
                return Lockless::AlreadyFree;
            }
            if freed == 0 || mask | bit == all {
                return Lockless::NeedLock;
            }
            if self
                .freed
                .compare_exchange_weak(freed, freed | bit, AcqRel, Relaxed)
                .is_ok()
            {
                return Lockless::Done;
            }
        }
    }

    /// Owner lock held: marks slot(s) `bit` freed (the locked half of a free).
    pub(crate) fn mark_freed(&self, bit: u32) {
        self.freed.fetch_or(bit, Release);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    extern crate std;
    use super::*;
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    /// Owner heap and a remote freer race on a 3-slot group. The owner allocates, frees, and
    /// allocates again (forcing an activation); the remote thread frees a slot the owner handed it.
    /// Checks: no slot is handed out while in use, no free is reported as a double free, and in the
    /// end every slot is back in `freed | avail` exactly once.
    #[test]
    fn owner_and_remote_free_never_lose_or_duplicate_slots() {
        loom::model(|| {
            let all = 0b111;
            let group = Arc::new((Mutex::new(()), Masks::default()));
            group.1.init(all, all);
            // The owner hands slot 1 to the remote thread before it starts.
            {
                let _lock = group.0.lock().unwrap();
                group.1.take(0b010);
            }
            let remote = {
                let group = Arc::clone(&group);
                thread::spawn(move || free_slot(&group.0, &group.1, 0b010, all))
            };
            let mut held = std::vec::Vec::new();
            for _ in 0..3 {
                let _lock = group.0.lock().unwrap();
                let masks = &group.1;
                if masks.avail() == 0 && !masks.activate(all) {
                    continue;
                }
                let bit = 1 << masks.avail().trailing_zeros();
                assert!(!held.contains(&bit), "slot handed out twice");
                masks.take(bit);
                held.push(bit);
            }
            remote.join().unwrap();
            for bit in held {
                free_slot(&group.0, &group.1, bit, all);
            }
            let _lock = group.0.lock().unwrap();
            assert_eq!(group.1.free_or_avail(), all);
        });
    }

    /// Two threads free the last two slots of a group at once: exactly the expected locked frees
    /// happen and the group ends fully free.
    #[test]
    fn concurrent_frees_complete_the_group() {
        loom::model(|| {
            let all = 0b11;
            let group = Arc::new((Mutex::new(()), Masks::default()));
            group.1.init(all, all);
            {
                let _lock = group.0.lock().unwrap();
                group.1.take(0b01);
                group.1.take(0b10);
            }
            let other = {
                let group = Arc::clone(&group);
                thread::spawn(move || free_slot(&group.0, &group.1, 0b10, all))
            };
            free_slot(&group.0, &group.1, 0b01, all);
            other.join().unwrap();
            assert_eq!(group.1.free_or_avail(), all);
        });
    }

    /// The race that matters: the group already has a freed slot, so the remote thread's frees go
    /// lock-free (CAS on `freed`) while the owner, under its lock, activates (moves `freed` to
    /// `avail`) and allocates. A lost or resurrected bit shows up as a slot handed out twice, a slot
    /// handed out while the remote thread still holds it, or a group that does not end fully free.
    #[test]
    fn lockless_frees_race_activation() {
        loom::model(|| {
            use loom::sync::atomic::AtomicBool;
            let all = 0b1111;
            let group = Arc::new((
                Mutex::new(()),
                Masks::default(),
                [
                    AtomicBool::new(false),
                    AtomicBool::new(true),
                    AtomicBool::new(true),
                    AtomicBool::new(false),
                ],
            ));
            group.1.init(all, all);
            {
                let _lock = group.0.lock().unwrap();
                for bit in [1, 2, 4, 8] {
                    group.1.take(bit);
                }
                // The owner frees slot 3 first, so `freed` is non-zero when the remote thread frees.
                assert_eq!(group.1.free_lockless(8, all), Lockless::NeedLock);
                group.1.mark_freed(8);
            }
            let remote = {
                let group = Arc::clone(&group);
                thread::spawn(move || {
                    for (i, bit) in [(1, 2u32), (2, 4u32)] {
                        group.2[i].store(false, core::sync::atomic::Ordering::SeqCst);
                        free_slot(&group.0, &group.1, bit, all);
                    }
                })
            };
            let mut held = std::vec![1u32];
            for _ in 0..3 {
                let _lock = group.0.lock().unwrap();
                let masks = &group.1;
                if masks.avail() == 0 && !masks.activate(all) {
                    continue;
                }
                let i = masks.avail().trailing_zeros() as usize;
                let bit = 1u32 << i;
                assert!(!held.contains(&bit), "slot handed out twice");
                assert!(
                    !group.2[i].load(core::sync::atomic::Ordering::SeqCst),
                    "slot handed out while in use"
                );
                masks.take(bit);
                held.push(bit);
            }
            remote.join().unwrap();
            for bit in held {
                free_slot(&group.0, &group.1, bit, all);
            }
            assert_eq!(group.1.free_or_avail(), all);
        });
    }

    /// An owner's flush of its pending frees marks several slots of a group in one step, holding its
    /// heap lock throughout (as `heap::State::flush` does), while a remote thread frees the group's
    /// last slot and the owner then frees one more. Checks: no free is taken for a double free, and
    /// the group ends fully free, whichever thread completes it.
    #[test]
    fn multi_slot_flush_races_a_remote_free() {
        loom::model(|| {
            let all = 0b1111;
            let group = Arc::new((Mutex::new(()), Masks::default()));
            group.1.init(all, all);
            {
                let _lock = group.0.lock().unwrap();
                for bit in [1, 2, 4, 8] {
                    group.1.take(bit);
                }
            }
            let remote = {
                let group = Arc::clone(&group);
                thread::spawn(move || free_slot(&group.0, &group.1, 0b1000, all))
            };
            flush_slots(&group.0, &group.1, 0b0011, all);
            flush_slots(&group.0, &group.1, 0b0100, all);
            remote.join().unwrap();
            assert_eq!(group.1.free_or_avail(), all);
        });
    }

    /// The owner's flush as heap.rs runs it: the lock-free attempt and the locked fallback, both
    /// under the owner's lock.
    fn flush_slots(lock: &Mutex<()>, masks: &Masks, bits: u32, all: u32) {
        let _lock = lock.lock().unwrap();
        match masks.free_lockless(bits, all) {
            Lockless::Done => {}
            Lockless::AlreadyFree => panic!("spurious double free in a flush"),
            Lockless::NeedLock => {
                assert_eq!(masks.free_or_avail() & bits, 0, "spurious double free");
                masks.mark_freed(bits);
            }
        }
    }

    /// The free protocol as free.rs runs it.
    fn free_slot(lock: &Mutex<()>, masks: &Masks, bit: u32, all: u32) {
        match masks.free_lockless(bit, all) {
            Lockless::Done => {}
            Lockless::AlreadyFree => panic!("spurious double free"),
            Lockless::NeedLock => {
                let _lock = lock.lock().unwrap();
                assert_eq!(
                    masks.free_or_avail() & bit,
                    0,
                    "spurious double free under the lock"
                );
                masks.mark_freed(bit);
            }
        }
    }
}

//! Which arena a thread gets: the bookkeeping of arena attachment, reuse and thread exit, kept
//! apart from the arenas themselves so that loom can explore it (the models below).
//!
//! Arenas are numbered 0 (main) to `created - 1`. Invariants, all kept under the registry lock:
//! - `attached[i]` is the number of live threads using arena `i`;
//! - an arena is on the free stack exactly when it exists and `attached[i] == 0`, and at most once;
//! - `created` never exceeds the limit passed to [`Attach::pick`] at the time of creation, and never
//!   shrinks (arenas are never destroyed).
//!
//! A new thread gets an unused arena (most recently freed first), else shares one: round robin from a
//! cursor, the first whose lock is free right now, or the cursor's own if all are busy. Arenas are
//! created on contention, not per thread as in glibc: a thread that keeps finding its arena locked
//! moves ([`Attach::pick_on_contention`]) to an unused arena, else to a new one while the limit
//! allows, else to an idle one. Threads that do not contend therefore share arenas and their free
//! memory, which is what keeps glibc's per-arena bloat away; threads that do get their own.

/// What [`Attach::pick`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Use this existing arena (unused or shared); already counted as attached.
    Existing(usize),
    /// Create arena number `i`, then call [`Attach::created`] (or [`Attach::failed`]).
    Create(usize),
}

pub(crate) struct Attach<const N: usize> {
    created: usize,
    creating: bool,
    attached: [u32; N],
    free: [u16; N],
    nfree: usize,
    cursor: usize,
}

impl<const N: usize> Attach<N> {
    /// The main arena exists and is free.
    pub(crate) const fn new() -> Self {
        let mut a = Attach {
            created: 1,
            creating: false,
            attached: [0; N],
            free: [0; N],
            nfree: 1,
            cursor: 0,
        };
        a.free[0] = 0;
        a
    }

    pub(crate) fn created_count(&self) -> usize {
        self.created
    }

    fn pop_free(&mut self) -> Option<usize> {
        if self.nfree == 0 {
            return None;
        }
        self.nfree -= 1;
        let i = usize::from(self.free[self.nfree]);
        self.attached[i] += 1;
        Some(i)
    }

    /// Round robin from the cursor: the first arena other than `avoid` whose lock is free, or the
    /// cursor's. Counts the thread as attached.
    fn share(&mut self, avoid: Option<usize>, busy: impl Fn(usize) -> bool) -> usize {
        let n = self.created;
        let start = self.cursor % n;
        let mut pick = None;
        for k in 0..n {
            let i = (start + k) % n;
            if Some(i) != avoid && !busy(i) {
                pick = Some(i);
                break;
            }
        }
        let pick = pick.unwrap_or(if Some(start) == avoid && n > 1 {
            (start + 1) % n
        } else {
            start
        });
        self.cursor = (pick + 1) % n;
        self.attached[pick] += 1;
        pick
    }

    /// Chooses an arena for a new thread: an unused one, else a shared one (`busy(i)` tells whether
    /// arena `i`'s lock is taken right now). Never creates: creation waits for contention.
    pub(crate) fn pick(&mut self, busy: impl Fn(usize) -> bool) -> usize {
        match self.pop_free() {
            Some(i) => i,
            None => self.share(None, busy),
        }
    }

    /// The thread on arena `cur` keeps finding it locked. `limit` is the most arenas allowed (at
    /// most `N`). `Existing(cur)` means stay.
    pub(crate) fn pick_on_contention(
        &mut self,
        cur: usize,
        limit: usize,
        busy: impl Fn(usize) -> bool,
    ) -> Pick {
        if let Some(i) = self.pop_free() {
            self.detach(cur);
            return Pick::Existing(i);
        }
        if !self.creating && self.created < limit.min(N) {
            self.creating = true;
            return Pick::Create(self.created);
        }
        if self.created < 2 {
            return Pick::Existing(cur);
        }
        let i = self.share(Some(cur), &busy);
        if i == cur || busy(i) {
            // Nothing idle: moving would only trade one queue for another.
            self.attached[i] -= 1;
            return Pick::Existing(cur);
        }
        self.detach(cur);
        Pick::Existing(i)
    }

    /// Arena `i` (from `Pick::Create`) now exists; the thread moves there from `from`.
    pub(crate) fn created(&mut self, i: usize, from: usize) {
        debug_assert_eq!(i, self.created);
        self.creating = false;
        self.created += 1;
        self.attached[i] = 1;
        self.detach(from);
    }

    /// Creating an arena failed: the thread stays where it is.
    pub(crate) fn failed(&mut self) {
        self.creating = false;
    }

    /// A thread using arena `i` exits.
    pub(crate) fn detach(&mut self, i: usize) {
        if i >= self.created || self.attached[i] == 0 {
            return;
        }
        self.attached[i] -= 1;
        if self.attached[i] == 0 {
            self.free[self.nfree] = i as u16;
            self.nfree += 1;
        }
    }

    /// In a fork child only the forking thread runs: its arena (if any) keeps one user, every other
    /// arena is free.
    pub(crate) fn after_fork_child(&mut self, survivor: Option<usize>) {
        self.nfree = 0;
        self.creating = false;
        for i in (0..self.created).rev() {
            if Some(i) == survivor {
                self.attached[i] = 1;
            } else {
                self.attached[i] = 0;
                self.free[self.nfree] = i as u16;
                self.nfree += 1;
            }
        }
    }

    #[cfg(test)]
    fn check(&self) {
        for i in 0..self.created {
            let listed = self.free[..self.nfree]
                .iter()
                .filter(|&&f| usize::from(f) == i)
                .count();
            assert!(listed <= 1, "arena {i} listed twice");
            assert_eq!(
                listed == 1,
                self.attached[i] == 0,
                "arena {i}: free list vs count"
            );
        }
        assert!(self.free[..self.nfree]
            .iter()
            .all(|&f| usize::from(f) < self.created));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn shares_until_contention_then_creates() {
        let mut a = Attach::<8>::new();
        assert_eq!(a.pick(|_| false), 0, "the main arena is free");
        assert_eq!(a.pick(|_| false), 0, "no contention yet: share");
        a.check();
        // Thread 2 finds arena 0 busy: a new arena.
        assert_eq!(a.pick_on_contention(0, 3, |_| true), Pick::Create(1));
        a.created(1, 0);
        assert_eq!(a.pick_on_contention(0, 3, |_| true), Pick::Create(2));
        a.created(2, 0);
        a.check();
        // Arena 0 lost both its users: an unused arena is the first choice.
        assert_eq!(a.pick_on_contention(1, 3, |_| true), Pick::Existing(0));
        assert_eq!(a.pick_on_contention(2, 3, |_| true), Pick::Existing(1));
        assert_eq!(a.pick(|_| true), 2);
        a.check();
        // Limit reached, nothing unused: move to an idle arena, or stay when all are busy.
        assert_eq!(a.pick_on_contention(0, 3, |i| i == 0), Pick::Existing(1));
        assert_eq!(a.pick_on_contention(2, 3, |_| true), Pick::Existing(0));
        assert_eq!(a.pick(|_| true), 2);
        assert_eq!(a.pick_on_contention(0, 3, |_| true), Pick::Existing(0));
        a.check();
        a.detach(1);
        a.detach(1);
        a.check();
        a.after_fork_child(Some(2));
        a.check();
        assert_eq!(a.pick(|_| false), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    extern crate std;
    use super::*;
    use loom::sync::Arc;
    use loom::thread;
    use twinheap_page::{Lock, Mutex};

    struct World {
        reg: Mutex<Attach<4>>,
        arenas: [Lock; 4],
    }

    /// Attaches like the registry does: the registry lock, with arena locks only tried.
    fn attach(w: &World) -> usize {
        w.reg.lock().pick(|i| w.arenas[i].is_locked())
    }

    /// Uses arena `i` like malloc does: a failed try means contention and a move (creating an arena
    /// below `limit`); returns the arena the thread ends on.
    fn use_arena(w: &World, mut i: usize, limit: usize) -> usize {
        if !w.arenas[i].try_lock() {
            let mut reg = w.reg.lock();
            match reg.pick_on_contention(i, limit, |j| w.arenas[j].is_locked()) {
                Pick::Existing(j) => i = j,
                Pick::Create(j) => {
                    reg.created(j, i);
                    i = j;
                }
            }
            drop(reg);
            w.arenas[i].lock();
        }
        // SAFETY: taken just above.
        unsafe { w.arenas[i].unlock() };
        i
    }

    /// Two threads attach, use their arena (moving on contention) and exit while the main thread
    /// uses arena 0: every count stays exact, the limit holds, and at the end every arena is free
    /// exactly once.
    #[test]
    fn loom_attach_use_exit() {
        loom::model(|| {
            let w = Arc::new(World {
                reg: Mutex::new(Attach::new()),
                arenas: [Lock::new(), Lock::new(), Lock::new(), Lock::new()],
            });
            let main = attach(&w);
            assert_eq!(main, 0);
            let hs: std::vec::Vec<_> = (0..2)
                .map(|_| {
                    let w = w.clone();
                    thread::spawn(move || {
                        let i = attach(&w);
                        let i = use_arena(&w, i, 2);
                        assert!(i < 2, "limit of 2 arenas exceeded: {i}");
                        let mut reg = w.reg.lock();
                        reg.check();
                        reg.detach(i);
                        reg.check();
                    })
                })
                .collect();
            let main = use_arena(&w, main, 2);
            for h in hs {
                h.join().unwrap();
            }
            let mut reg = w.reg.lock();
            reg.detach(main);
            reg.check();
            assert!(reg.created_count() <= 2);
            assert_eq!(reg.nfree, reg.created_count());
        });
    }

    /// A thread exits while another attaches: no arena is created without contention, and the count
    /// of arena 0 ends exact whichever ran first.
    #[test]
    fn loom_reuse_after_exit() {
        loom::model(|| {
            let w = Arc::new(World {
                reg: Mutex::new(Attach::new()),
                arenas: [Lock::new(), Lock::new(), Lock::new(), Lock::new()],
            });
            let first = attach(&w);
            let w2 = w.clone();
            let exiting = thread::spawn(move || {
                let mut reg = w2.reg.lock();
                reg.detach(first);
            });
            let w3 = w.clone();
            let joining = thread::spawn(move || attach(&w3));
            exiting.join().unwrap();
            let got = joining.join().unwrap();
            let reg = w.reg.lock();
            reg.check();
            // Without contention nothing is created: the new thread shares or reuses arena 0.
            assert_eq!(got, 0);
            assert_eq!(reg.created_count(), 1);
            assert_eq!(reg.attached[0], 1);
        });
    }
}

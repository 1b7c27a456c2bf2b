//! Resident-page budget: the counters that enforce the resident limit.
//!
//! Two numbers are tracked, both in pages:
//! - `committed`: pages in a committed state (zero-map pool + resident +
//!   staged, see [`crate::page_state`]). This is an upper bound on the host
//!   memory the guest region uses. It never exceeds `cap = limit + slack`
//!   except through [`Budget::force_reserve`], which is only used when the
//!   swapper cannot make room (store failing writes, every victim busy) and is
//!   counted as an overshoot.
//! - `resident`: pages known to hold real memory (resident + staged). The
//!   evictor keeps this at or below `limit - headroom`.
//!
//! The limits can change while the swapper runs ([`Budget::set_limits`]):
//! readers take a consistent snapshot ([`Budget::limits`]) and the evictor
//! brings residency down to a lowered limit on its next round.
//!
//! Pure (atomics only), unit-tested without userfaultfd.

use std::sync::atomic::{AtomicU64, Ordering};

/// Budget limits, in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// The resident limit.
    pub limit: u64,
    /// How far committed (and so resident) memory may exceed `limit` because
    /// of zero-mapped pool pages written behind the swapper's back.
    pub slack: u64,
    /// Free room the background evictor keeps so faults rarely reclaim.
    pub headroom: u64,
}

impl Limits {
    /// Limits for `limit` pages with `slack` pages of zero-map pool slack; the
    /// headroom is `max(16, limit / 64)` capped at a quarter of the limit.
    pub fn new(limit: u64, slack: u64) -> Self {
        let headroom = (limit / 64).max(16).min(limit / 4).max(1);
        Self {
            limit,
            slack,
            headroom,
        }
    }

    /// Hard cap on committed pages.
    pub fn cap(&self) -> u64 {
        self.limit + self.slack
    }

    /// The evictor's target for resident pages.
    pub fn resident_target(&self) -> u64 {
        self.limit.saturating_sub(self.headroom)
    }

    /// Resident pages above which a fault wakes the evictor: half the
    /// headroom above its target. The gap is hysteresis, as between the
    /// kernel's low and high watermarks for kswapd: a wake-up evicts a batch
    /// of `headroom / 2` pages instead of one page per fault, so a fault
    /// rarely pays for a switch to the evictor's thread and back.
    pub fn wake_level(&self) -> u64 {
        self.limit.saturating_sub(self.headroom / 2)
    }

    /// Committed level up to which the pool may be refilled and up to which
    /// opportunistic work (prefetch, zero clusters) may reserve.
    pub fn soft_cap(&self) -> u64 {
        self.cap().saturating_sub(self.headroom)
    }

    /// Committed pages above which a fault wakes the evictor (see
    /// [`Limits::wake_level`]).
    pub fn committed_wake_level(&self) -> u64 {
        self.cap().saturating_sub(self.headroom / 2)
    }
}

fn pack(l: Limits) -> u64 {
    let clamp = |v: u64| v.min(u64::from(u32::MAX));
    clamp(l.limit) << 32 | clamp(l.slack)
}

/// The live counters.
#[derive(Debug)]
pub struct Budget {
    /// `limit << 32 | slack` (pages, each clamped to `u32::MAX`), so a
    /// reader always sees a limit and a slack that belong together; the
    /// headroom is derived from them.
    limits: AtomicU64,
    committed: AtomicU64,
    resident: AtomicU64,
    peak_committed: AtomicU64,
    peak_resident: AtomicU64,
    overshoots: AtomicU64,
}

impl Budget {
    /// A budget with nothing committed.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits: AtomicU64::new(pack(limits)),
            committed: AtomicU64::new(0),
            resident: AtomicU64::new(0),
            peak_committed: AtomicU64::new(0),
            peak_resident: AtomicU64::new(0),
            overshoots: AtomicU64::new(0),
        }
    }

    /// The limits now.
    pub fn limits(&self) -> Limits {
        let v = self.limits.load(Ordering::Acquire);
        Limits::new(v >> 32, v & u64::from(u32::MAX))
    }

    /// Replaces the limits (`limit` and `slack`; the headroom is derived).
    /// Nothing is evicted here: committed pages above a lowered cap stay
    /// until the evictor reclaims them (they are not counted as overshoots).
    pub fn set_limits(&self, limits: Limits) {
        self.limits.store(pack(limits), Ordering::Release);
    }

    /// Pages currently committed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Pages known resident (resident + staged).
    pub fn resident(&self) -> u64 {
        self.resident.load(Ordering::Acquire)
    }

    /// Zero-map pool size (committed but not known resident).
    pub fn pool(&self) -> u64 {
        self.committed().saturating_sub(self.resident())
    }

    /// Highest committed value seen.
    pub fn peak_committed(&self) -> u64 {
        self.peak_committed.load(Ordering::Relaxed)
    }

    /// Highest resident value seen.
    pub fn peak_resident(&self) -> u64 {
        self.peak_resident.load(Ordering::Relaxed)
    }

    /// Number of forced reservations that went beyond the cap.
    pub fn overshoots(&self) -> u64 {
        self.overshoots.load(Ordering::Relaxed)
    }

    /// Reserves `n` committed pages if that keeps committed at or below
    /// `ceiling`.
    pub fn try_reserve(&self, n: u64, ceiling: u64) -> bool {
        let mut cur = self.committed.load(Ordering::Acquire);
        loop {
            if cur + n > ceiling {
                return false;
            }
            match self.committed.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.peak_committed.fetch_max(cur + n, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Reserves `n` pages within the hard cap.
    pub fn try_reserve_cap(&self, n: u64) -> bool {
        self.try_reserve(n, self.limits().cap())
    }

    /// Reserves `n` pages unconditionally (last resort); counts an overshoot
    /// when the cap is exceeded.
    pub fn force_reserve(&self, n: u64) {
        let now = self.committed.fetch_add(n, Ordering::AcqRel) + n;
        self.peak_committed.fetch_max(now, Ordering::Relaxed);
        if now > self.limits().cap() {
            self.overshoots.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reserves `n` pages unconditionally without counting an overshoot
    /// (pages the swapper is told about rather than brings in: pages
    /// already populated at start, an explicit restore).
    pub fn admit(&self, n: u64) {
        let now = self.committed.fetch_add(n, Ordering::AcqRel) + n;
        self.peak_committed.fetch_max(now, Ordering::Relaxed);
    }

    /// Gives back `n` committed pages.
    pub fn release(&self, n: u64) {
        let prev = self.committed.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(prev >= n, "budget underflow: {prev} - {n}");
    }

    /// `n` committed pages became known resident.
    pub fn add_resident(&self, n: u64) {
        let now = self.resident.fetch_add(n, Ordering::AcqRel) + n;
        self.peak_resident.fetch_max(now, Ordering::Relaxed);
    }

    /// `n` resident pages left the resident set.
    pub fn sub_resident(&self, n: u64) {
        let prev = self.resident.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(prev >= n, "resident underflow: {prev} - {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn limits_derive_headroom_and_caps() {
        let l = Limits::new(4096, 256);
        assert_eq!(l.headroom, 64);
        assert_eq!(l.cap(), 4352);
        assert_eq!(l.resident_target(), 4032);
        assert_eq!(l.soft_cap(), 4288);
        assert_eq!(l.wake_level(), l.resident_target() + l.headroom / 2);
        assert_eq!(l.committed_wake_level(), l.soft_cap() + l.headroom / 2);
        let tiny = Limits::new(8, 0);
        assert_eq!(tiny.headroom, 2);
        assert_eq!(tiny.resident_target(), 6);
    }

    #[test]
    fn reserve_respects_ceiling() {
        let b = Budget::new(Limits::new(10, 0));
        assert!(b.try_reserve_cap(7));
        assert!(!b.try_reserve_cap(4));
        assert!(b.try_reserve_cap(3));
        assert_eq!(b.committed(), 10);
        b.release(5);
        assert_eq!(b.committed(), 5);
        assert_eq!(b.peak_committed(), 10);
        assert_eq!(b.overshoots(), 0);
        b.force_reserve(6);
        assert_eq!(b.overshoots(), 1);
        assert_eq!(b.peak_committed(), 11);
    }

    #[test]
    fn limits_can_change_while_reserving() {
        let b = Budget::new(Limits::new(100, 10));
        assert!(b.try_reserve_cap(100));
        assert_eq!(b.limits(), Limits::new(100, 10));
        b.set_limits(Limits::new(40, 4));
        assert_eq!(b.limits().limit, 40);
        assert_eq!(b.limits().slack, 4);
        assert_eq!(b.limits().headroom, Limits::new(40, 4).headroom);
        // Above the lowered cap nothing more fits, and what is committed stays.
        assert!(!b.try_reserve_cap(1));
        assert_eq!(b.committed(), 100);
        b.release(70);
        assert!(b.try_reserve_cap(14));
        assert!(!b.try_reserve_cap(1));
        // Raised again: room comes back.
        b.set_limits(Limits::new(200, 10));
        assert!(b.try_reserve_cap(100));
        // Huge values are clamped, not wrapped into the other half.
        b.set_limits(Limits::new(u64::MAX, 3));
        assert_eq!(b.limits().limit, u64::from(u32::MAX));
        assert_eq!(b.limits().slack, 3);
    }

    #[test]
    fn pool_is_committed_minus_resident() {
        let b = Budget::new(Limits::new(100, 10));
        assert!(b.try_reserve_cap(30));
        b.add_resident(12);
        assert_eq!(b.pool(), 18);
        b.sub_resident(2);
        assert_eq!(b.resident(), 10);
        assert_eq!(b.peak_resident(), 12);
    }

    #[test]
    fn concurrent_reservations_never_exceed_cap() {
        let b = Arc::new(Budget::new(Limits::new(1000, 24)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut got = 0u64;
                    for i in 0..10_000u64 {
                        if b.try_reserve_cap(1 + i % 3) {
                            got += 1 + i % 3;
                        }
                        if i % 2 == 0 && got > 0 {
                            b.release(1);
                            got -= 1;
                        }
                    }
                    got
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(b.committed(), total);
        assert!(b.peak_committed() <= 1024);
    }
}

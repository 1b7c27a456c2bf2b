//! Fault-injection countdowns: "sabotage the next `n` operations".
//!
//! A [`Countdown`] is armed with `n`; each [`Countdown::take`] that finds it
//! above zero uses one unit and says the operation should fail. [`FOREVER`]
//! (`u64::MAX`) never runs out until [`Countdown::clear`]. Shared by the
//! swapper's store injector and the VMM's disk injector, which arm them from
//! a test thread while device threads take from them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Armed with this, a countdown fires on every take until cleared.
pub const FOREVER: u64 = u64::MAX;

/// An atomic count of operations still to sabotage.
#[derive(Debug, Default)]
pub struct Countdown(AtomicU64);

impl Countdown {
    /// A disarmed countdown.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// The next `n` takes fire ([`FOREVER`]: every take until cleared).
    pub fn arm(&self, n: u64) {
        self.0.store(n, Ordering::Release);
    }

    /// Disarms it.
    pub fn clear(&self) {
        self.arm(0);
    }

    /// Uses one unit: whether this operation is to be sabotaged.
    pub fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match n {
                0 => None,
                FOREVER => Some(FOREVER),
                n => Some(n - 1),
            })
            .is_ok()
    }

    /// Units left ([`FOREVER`] if armed forever).
    pub fn remaining(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What every fault injector keeps besides its countdowns: how many
/// operations it sabotaged, and slow operations (armed like a countdown,
/// each sleeping for a set time).
#[derive(Debug, Default)]
pub struct Sabotage {
    injected: AtomicU64,
    slow_ops: Countdown,
    slow_ns: AtomicU64,
}

impl Sabotage {
    /// Counts one sabotaged operation.
    pub fn hit(&self) {
        self.injected.fetch_add(1, Ordering::Relaxed);
    }

    /// Operations sabotaged (failed, shortened or slowed) so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The next `n` operations first sleep for `delay` ([`FOREVER`]: all).
    pub fn slow(&self, n: u64, delay: std::time::Duration) {
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.slow_ns.store(ns, Ordering::Release);
        self.slow_ops.arm(n);
    }

    /// Disarms slow operations.
    pub fn clear_slow(&self) {
        self.slow_ops.clear();
    }

    /// Sleeps (and counts a hit) if a slow operation is armed.
    pub fn maybe_slow(&self) {
        if self.slow_ops.take() {
            self.hit();
            let ns = self.slow_ns.load(Ordering::Acquire);
            std::thread::sleep(std::time::Duration::from_nanos(ns));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fires_exactly_n_times() {
        let c = Countdown::new();
        assert!(!c.take());
        c.arm(3);
        assert_eq!(c.remaining(), 3);
        assert!(c.take() && c.take() && c.take());
        assert!(!c.take());
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn forever_until_cleared() {
        let c = Countdown::default();
        c.arm(FOREVER);
        for _ in 0..1000 {
            assert!(c.take());
        }
        assert_eq!(c.remaining(), FOREVER);
        c.clear();
        assert!(!c.take());
    }

    #[test]
    fn rearming_replaces_the_count() {
        let c = Countdown::new();
        c.arm(5);
        c.arm(1);
        assert!(c.take());
        assert!(!c.take());
    }

    #[test]
    fn concurrent_takes_never_exceed_the_count() {
        let c = Arc::new(Countdown::new());
        c.arm(1000);
        let fired: u64 = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..500).filter(|_| c.take()).count() as u64)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(fired, 1000);
    }

    #[test]
    fn sabotage_counts_hits_and_slows_only_armed_operations() {
        let s = Sabotage::default();
        s.maybe_slow();
        assert_eq!(s.injected(), 0);
        s.slow(2, std::time::Duration::from_millis(1));
        let t = std::time::Instant::now();
        s.maybe_slow();
        s.maybe_slow();
        s.maybe_slow();
        assert!(t.elapsed() >= std::time::Duration::from_millis(2));
        assert_eq!(s.injected(), 2);
        s.slow(FOREVER, std::time::Duration::ZERO);
        s.clear_slow();
        s.maybe_slow();
        s.hit();
        assert_eq!(s.injected(), 3);
    }
}

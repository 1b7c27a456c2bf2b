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
}

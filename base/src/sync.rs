//! Locks that ignore poisoning, and the [`Stop`] flag.
//!
//! A panic while a lock is held poisons it; swaplab's shared state stays
//! consistent across such a panic (counters, rings, flags), and the thread
//! that panicked is reported by whoever joins it, so every lock is taken
//! through these helpers instead of `unwrap()`ing the poison.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Locks `m`, even if a thread panicked while holding it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks `l`, even if a writer panicked.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks `l`, even if a writer panicked.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// A stop flag a periodic thread waits on instead of sleeping, so stopping
/// it takes effect at once.
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// let stop = Arc::new(base::Stop::new());
/// let s = stop.clone();
/// let t = std::thread::spawn(move || {
///     let mut ticks = 0;
///     while !s.wait_timeout(Duration::from_millis(10)) {
///         ticks += 1;
///     }
///     ticks
/// });
/// stop.stop();
/// t.join().unwrap();
/// ```
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    /// A flag not yet stopped.
    pub const fn new() -> Self {
        Self {
            stopped: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    /// Sets the flag and wakes every waiter. Stays set.
    pub fn stop(&self) {
        *lock(&self.stopped) = true;
        self.cv.notify_all();
    }

    /// Whether [`Stop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Waits until stopped, for at most `d`; whether it is stopped.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let (g, _) = self
            .cv
            .wait_timeout_while(lock(&self.stopped), d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn lock_survives_a_panic_while_held() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let r = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            *g = 2;
            panic!("poison it");
        })
        .join();
        assert!(r.is_err() && m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 3);
    }

    #[test]
    fn rwlock_helpers_survive_a_panic() {
        let l = Arc::new(RwLock::new(vec![1]));
        let l2 = l.clone();
        let r = std::thread::spawn(move || {
            let _g = l2.write().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(r.is_err() && l.is_poisoned());
        write(&l).push(2);
        assert_eq!(*read(&l), [1, 2]);
    }

    #[test]
    fn wait_times_out_while_not_stopped() {
        let s = Stop::new();
        assert!(!s.is_stopped());
        let t = Instant::now();
        assert!(!s.wait_timeout(Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn stop_wakes_a_waiter_and_stays_set() {
        let s = Arc::new(Stop::default());
        let s2 = s.clone();
        let t = Instant::now();
        let waiter = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(10));
        s.stop();
        assert!(waiter.join().unwrap());
        assert!(t.elapsed() < Duration::from_secs(60));
        assert!(s.is_stopped());
        assert!(s.wait_timeout(Duration::ZERO));
    }
}

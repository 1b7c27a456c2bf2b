//! State the balloon device, its worker thread and every handle share: the
//! target and `actual`, what the live queues need, the last guest statistics,
//! counters, batch times, events, and the change notification
//! [`Shared::wait_for`] waits on. Its own module so that the device
//! (`device.rs`) and the worker (`worker.rs`) both import it and neither imports
//! the other's file for it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base::sync::lock;
use swapper::ratelimit::RateLimiter;
use vmm::virtio::VirtioInterrupt;
use vmm_sys_util::eventfd::EventFd;

use crate::metrics::{BalloonEvent, BalloonEventKind, Counters, EventRing, Times};
use crate::stats::GuestStats;

/// What the worker and the handle need while the device is live.
#[derive(Debug)]
pub(crate) struct Live {
    pub interrupt: VirtioInterrupt,
    pub kick: EventFd,
}

/// State shared by the device, its worker and every handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub target_pages: AtomicU32,
    pub actual_pages: AtomicU32,
    pub live: Mutex<Option<Live>>,
    pub stats: Mutex<Option<GuestStats>>,
    pub counters: Counters,
    pub times: Mutex<Times>,
    pub events: EventRing,
    pub epoch: Instant,
    generation: Mutex<u64>,
    changed: Condvar,
    log: RateLimiter,
}

impl Shared {
    /// Shared state whose event ring keeps `event_capacity` events.
    pub(crate) fn new(epoch: Instant, event_capacity: usize) -> Self {
        Self {
            target_pages: AtomicU32::new(0),
            actual_pages: AtomicU32::new(0),
            live: Mutex::new(None),
            stats: Mutex::new(None),
            counters: Counters::default(),
            times: Mutex::new(Times::default()),
            events: EventRing::new(event_capacity),
            epoch,
            generation: Mutex::new(0),
            changed: Condvar::new(),
            log: RateLimiter::new(Duration::from_secs(1), 10),
        }
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Adds an event to the ring.
    pub fn event(&self, kind: BalloonEventKind, t_ns: u64, pages: u64, ns: u64) {
        if self.events.push(BalloonEvent {
            t_ns,
            kind,
            pages,
            ns,
        }) {
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Wakes [`Shared::wait_for`] callers (after any state change).
    pub fn changed(&self) {
        *lock(&self.generation) += 1;
        self.changed.notify_all();
    }

    /// Logs a warning the guest can trigger, rate-limited.
    pub fn warn(&self, msg: impl FnOnce() -> String) {
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(suppressed, "virtio-balloon: {}", msg());
        }
    }

    /// Waits until `cond()` holds, re-checking after every [`Shared::changed`];
    /// false if `timeout` passed first.
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.generation);
        loop {
            if cond() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn lock_times(&self) -> MutexGuard<'_, Times> {
        lock(&self.times)
    }

    pub fn set_stats(&self, s: GuestStats) {
        *lock(&self.stats) = Some(s);
    }
}

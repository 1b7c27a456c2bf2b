//! What the balloon did: counters ([`BalloonMetrics`], JSON via serde), time per
//! batch ([`BatchTimes`]) and a bounded ring of [`BalloonEvent`]s for traces.
//!
//! Counters are relaxed atomics updated by the worker thread (and the vCPU thread
//! for config-space writes); [`Counters::snapshot`] reads them all.

use std::collections::VecDeque;
use std::sync::Mutex;

use base::sync::lock;
use std::time::Duration;

/// Number of log2 buckets in [`BatchTimes::log2_us`]: bucket `i` counts batches
/// that took `[2^i, 2^(i+1))` µs (bucket 0 also takes everything under 1 µs, the
/// last one everything longer).
pub const TIME_BUCKETS: usize = 24;

base::counters! {
    /// Live counters (relaxed atomics).
    pub struct Counters;
    /// A snapshot of [`Counters`] plus gauges and batch times.
    #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct BalloonMetrics {
        /// Balloon target (`num_pages`), 4 KiB pages.
        pub target_pages: u64,
        /// Balloon size the guest reports (`actual`), 4 KiB pages.
        pub actual_pages: u64,
        counters {
            /// Times a driver activated the device.
            activations,
            /// Device resets.
            resets,
            /// Inflate buffers handled.
            inflate_batches,
            /// Valid PFNs in inflate buffers.
            inflate_pages,
            /// Deflate buffers handled.
            deflate_batches,
            /// Valid PFNs in deflate buffers.
            deflate_pages,
            /// Free page reports handled.
            report_batches,
            /// 4 KiB pages in free page reports.
            reported_pages,
            /// Bytes handed to the releaser successfully (inflate and reporting).
            released_bytes,
            /// Bytes handed back to the releaser's `reclaim` (deflate).
            reclaimed_bytes,
            /// Ranges the releaser failed to release (the guest is not told).
            release_errors,
            /// PFNs (or reported 4 KiB pages) outside guest RAM: ignored.
            invalid_pfns,
            /// Descriptors ignored: wrong direction, bad length, outside guest RAM.
            invalid_descriptors,
            /// Queues the device could not read (bad ring index, bad head index).
            queue_errors,
            /// Driver writes to read-only config fields (ignored).
            invalid_config_writes,
            /// Statistics buffers received.
            stats_updates,
            /// Statistics buffers returned to the guest (requests for fresh stats).
            stats_requests,
            /// Statistics buffers beyond the one the protocol allows (returned at once).
            extra_stats_buffers,
            /// Configuration-change interrupts raised (new target).
            config_interrupts,
            /// Used-buffer interrupts raised.
            used_interrupts,
            /// Interrupts that could not be raised.
            interrupt_errors,
            /// Targets set through the handle.
            target_sets,
            /// Worker wake-ups (queue notifications, timer ticks, requests).
            wakeups,
            /// Events dropped because the ring was full.
            events_dropped,
            /// Worker threads found dead of a panic when stopped (a bug).
            worker_panics,
        }
        /// Time to handle one inflate buffer (parse + release).
        pub inflate_time: BatchTimes,
        /// Time to handle one deflate buffer.
        pub deflate_time: BatchTimes,
        /// Time to handle one free page report.
        pub report_time: BatchTimes,
    }
}

/// Count, sum, maximum and a log2 histogram of batch durations.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchTimes {
    /// Batches timed.
    pub count: u64,
    /// Total time, ns.
    pub sum_ns: u64,
    /// Longest batch, ns.
    pub max_ns: u64,
    /// Batches by duration: bucket `i` is `[2^i, 2^(i+1))` µs.
    pub log2_us: Vec<u64>,
}

impl Default for BatchTimes {
    fn default() -> Self {
        Self {
            count: 0,
            sum_ns: 0,
            max_ns: 0,
            log2_us: vec![0; TIME_BUCKETS],
        }
    }
}

impl BatchTimes {
    /// Records one batch of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
        let us = ns / 1000;
        let bucket = if us == 0 { 0 } else { us.ilog2() as usize };
        if self.log2_us.len() < TIME_BUCKETS {
            self.log2_us.resize(TIME_BUCKETS, 0);
        }
        self.log2_us[bucket.min(TIME_BUCKETS - 1)] += 1;
    }

    /// Mean batch time, if any batch was timed.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.sum_ns / self.count))
    }
}

/// The three batch timers, behind one lock.
#[derive(Debug, Default)]
pub struct Times {
    /// Inflate buffers.
    pub inflate: BatchTimes,
    /// Deflate buffers.
    pub deflate: BatchTimes,
    /// Free page reports.
    pub report: BatchTimes,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalloonEventKind {
    /// An inflate buffer: `pages` valid PFNs released.
    Inflate,
    /// A deflate buffer: `pages` valid PFNs taken back by the guest.
    Deflate,
    /// A free page report: `pages` 4 KiB pages released.
    Report,
    /// A statistics buffer arrived (`pages` is 0).
    Stats,
    /// The host set a new target: `pages` is the target in 4 KiB pages.
    TargetSet,
}

/// One entry of the event ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BalloonEvent {
    /// When it happened (start of the batch), ns since the balloon's epoch.
    pub t_ns: u64,
    /// What happened.
    pub kind: BalloonEventKind,
    /// Pages involved (4 KiB).
    pub pages: u64,
    /// How long the device took, ns (0 for instantaneous events).
    pub ns: u64,
}

/// A bounded FIFO of events; the oldest are dropped when it is full.
#[derive(Debug)]
pub struct EventRing {
    ring: Mutex<VecDeque<BalloonEvent>>,
    capacity: usize,
}

impl EventRing {
    /// A ring holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
        }
    }

    /// Appends `e`; returns whether an old event had to be dropped.
    pub fn push(&self, e: BalloonEvent) -> bool {
        let mut r = lock(&self.ring);
        let dropped = r.len() >= self.capacity;
        if dropped {
            r.pop_front();
        }
        r.push_back(e);
        dropped
    }

    /// Takes every event, oldest first.
    pub fn drain(&self) -> Vec<BalloonEvent> {
        let mut r = lock(&self.ring);
        r.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn batch_times_bucket_by_log2_microseconds() {
        let mut t = BatchTimes::default();
        assert_eq!(t.mean(), None);
        t.record(500); // < 1 µs
        t.record(1_500); // 1 µs
        t.record(3_000); // 3 µs -> bucket 1
        t.record(1 << 50); // huge -> last bucket
        assert_eq!(t.count, 4);
        assert_eq!(t.max_ns, 1 << 50);
        assert_eq!(t.log2_us[0], 2);
        assert_eq!(t.log2_us[1], 1);
        assert_eq!(t.log2_us[TIME_BUCKETS - 1], 1);
        assert!(t.mean().is_some());
    }

    #[test]
    fn ring_drops_oldest_when_full() {
        let r = EventRing::new(2);
        let ev = |t| BalloonEvent {
            t_ns: t,
            kind: BalloonEventKind::Inflate,
            pages: 1,
            ns: 0,
        };
        assert!(!r.push(ev(1)));
        assert!(!r.push(ev(2)));
        assert!(r.push(ev(3)));
        let got: Vec<u64> = r.drain().iter().map(|e| e.t_ns).collect();
        assert_eq!(got, vec![2, 3]);
        assert!(r.drain().is_empty());
    }

    #[test]
    fn metrics_serialize_as_json_counters() {
        let c = Counters::default();
        c.inflate_pages.fetch_add(256, Ordering::Relaxed);
        let mut m = c.snapshot();
        m.inflate_time.record(10_000);
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(j["inflate_pages"], 256);
        assert_eq!(j["inflate_time"]["count"], 1);
        let e = BalloonEvent {
            t_ns: 1,
            kind: BalloonEventKind::TargetSet,
            pages: 3,
            ns: 0,
        };
        assert_eq!(serde_json::to_value(e).unwrap()["kind"], "target_set");
    }
}

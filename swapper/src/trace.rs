//! Per-fault trace records, the bounded ring that holds them, and per-path
//! latency histograms.
//!
//! One [`FaultRecord`] is created per userfaultfd fault event, by the handler
//! thread that served it, and carried unchanged to whoever drains the ring.
//! The ring holds at most `capacity` records (default 65 536, about 4 MiB);
//! when full the oldest record is dropped and counted in
//! [`TraceRing::dropped`]. Histograms are never dropped: every fault is
//! recorded in the histogram of its path.

use crate::registry::ThreadKind;
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::sync::Mutex;

/// How a fault was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPath {
    /// Zero-filled: never-touched, zeroed or ballooned page
    /// (`UFFDIO_ZEROPAGE`, or `UFFDIO_COPY` of zeros for a write).
    Zero,
    /// Read from the backing store and installed with `UFFDIO_COPY`.
    Store,
    /// Moved back from staging with `UFFDIO_MOVE` (clock inactive page).
    Minor,
    /// Moved back from staging where a prefetch had put it.
    PrefetchHit,
    /// A named page: read back from the disk block it mirrors
    /// ([`crate::named`]) and installed with `UFFDIO_COPY`.
    Named,
    /// First write to a clean (write-protected) page: marked dirty,
    /// protection removed.
    WriteProtect,
    /// Already resolved by someone else (another thread's fault, a prefetch,
    /// a pool refill): just woken.
    Stale,
    /// Not served: store read failure or checksum mismatch (see
    /// [`crate::FatalError`]).
    Fatal,
}

impl FaultPath {
    /// All paths, in a stable order.
    pub const ALL: [FaultPath; 8] = [
        FaultPath::Zero,
        FaultPath::Store,
        FaultPath::Minor,
        FaultPath::PrefetchHit,
        FaultPath::Named,
        FaultPath::WriteProtect,
        FaultPath::Stale,
        FaultPath::Fatal,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zero => "zero",
            Self::Store => "store",
            Self::Minor => "minor",
            Self::PrefetchHit => "prefetch_hit",
            Self::Named => "named",
            Self::WriteProtect => "write_protect",
            Self::Stale => "stale",
            Self::Fatal => "fatal",
        }
    }
}

/// One fault, as seen by the handler that served it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultRecord {
    /// Sequence number, assigned by the ring when the record is pushed: per
    /// swapper, gap-free, in push order (so drained records are sorted by it).
    pub seq: u64,
    /// Page index within the swapper's regions.
    pub page: u32,
    /// Host virtual address of the page.
    pub addr: u64,
    /// Faulting thread id.
    pub tid: i32,
    /// What that thread is, per the registry.
    pub thread: ThreadKind,
    /// How the fault was served.
    pub path: FaultPath,
    /// The access was a write.
    pub write: bool,
    /// When the handler read the event, ns since the swapper started.
    pub t_read_ns: u64,
    /// Time spent reading the store (0 if not read).
    pub store_read_ns: u32,
    /// Time spent in the installing ioctl(s) (COPY / ZEROPAGE / MOVE / WP),
    /// including the kernel waking the faulting thread (on a 2-CPU host
    /// most of it: the copy itself is ~2 µs).
    pub install_ns: u32,
    /// From reading the event to waking the faulting thread.
    pub total_ns: u32,
    /// Pages read ahead after this fault.
    pub prefetched: u16,
    /// Pages this fault had to evict itself (direct reclaim).
    pub reclaimed: u16,
}

/// Bounded FIFO of records.
#[derive(Debug)]
pub struct TraceRing {
    capacity: usize,
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<FaultRecord>,
    dropped: u64,
    next_seq: u64,
}

impl TraceRing {
    /// A ring holding at most `capacity` records (0 disables tracing).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Ring {
                records: VecDeque::with_capacity(capacity.min(1 << 16)),
                ..Ring::default()
            }),
        }
    }

    /// Appends a record, numbering it (its `seq` is overwritten) and dropping
    /// the oldest when full. Numbering under the ring's lock keeps `seq` in
    /// push order even when several handler threads push at once.
    pub fn push(&self, mut rec: FaultRecord) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        rec.seq = g.next_seq;
        g.next_seq += 1;
        if self.capacity == 0 {
            g.dropped += 1;
            return;
        }
        if g.records.len() == self.capacity {
            g.records.pop_front();
            g.dropped += 1;
        }
        g.records.push_back(rec);
    }

    /// Takes all records out.
    pub fn drain(&self) -> Vec<FaultRecord> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.records.drain(..).collect()
    }

    /// Records dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).dropped
    }

    /// Records currently held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Latency percentiles of one path, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Number of faults.
    pub count: u64,
    /// Minimum.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Maximum.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

impl LatencySummary {
    /// Summarises a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min_ns: h.min(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }
}

/// One total-latency histogram per path (1 ns .. 60 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct PathHistograms {
    hists: Vec<Histogram<u64>>,
}

impl Default for PathHistograms {
    fn default() -> Self {
        Self::new()
    }
}

impl PathHistograms {
    /// Empty histograms.
    pub fn new() -> Self {
        Self {
            hists: FaultPath::ALL
                .iter()
                .map(|_| {
                    Histogram::new_with_bounds(1, 60_000_000_000, 3)
                        .expect("static histogram bounds are valid")
                })
                .collect(),
        }
    }

    /// Records one fault.
    pub fn record(&mut self, path: FaultPath, ns: u64) {
        self.hists[path.index()].saturating_record(ns.max(1));
    }

    /// The histogram of `path`.
    pub fn get(&self, path: FaultPath) -> &Histogram<u64> {
        &self.hists[path.index()]
    }

    /// Summaries of every path that saw at least one fault.
    pub fn summaries(&self) -> Vec<(FaultPath, LatencySummary)> {
        FaultPath::ALL
            .iter()
            .filter(|p| !self.get(**p).is_empty())
            .map(|&p| (p, LatencySummary::of(self.get(p))))
            .collect()
    }
}

/// Thread-safe wrapper used by the handler threads.
#[derive(Debug, Default)]
pub struct SharedHistograms(Mutex<PathHistograms>);

impl SharedHistograms {
    /// Records one fault.
    pub fn record(&self, path: FaultPath, ns: u64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(path, ns);
    }

    /// Summaries of every path that saw a fault.
    pub fn summaries(&self) -> Vec<(FaultPath, LatencySummary)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).summaries()
    }

    /// A copy of the histograms.
    pub fn snapshot(&self) -> PathHistograms {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> FaultRecord {
        FaultRecord {
            seq,
            page: 1,
            addr: 0x1000,
            tid: 7,
            thread: ThreadKind::Vcpu(0),
            path: FaultPath::Store,
            write: false,
            t_read_ns: 5,
            store_read_ns: 1,
            install_ns: 2,
            total_ns: 3,
            prefetched: 0,
            reclaimed: 0,
        }
    }

    #[test]
    fn ring_is_bounded_and_counts_drops() {
        let r = TraceRing::new(3);
        for _ in 0..5 {
            r.push(rec(99));
        }
        assert_eq!(r.dropped(), 2);
        let got: Vec<u64> = r.drain().iter().map(|r| r.seq).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert!(r.is_empty());
    }

    #[test]
    fn disabled_ring_keeps_nothing() {
        let r = TraceRing::new(0);
        r.push(rec(0));
        assert!(r.is_empty());
        assert_eq!(r.dropped(), 1);
    }

    #[test]
    fn histograms_per_path() {
        let mut h = PathHistograms::new();
        for v in 1..=100u64 {
            h.record(FaultPath::Store, v * 1000);
        }
        h.record(FaultPath::Zero, 0);
        let s = h.summaries();
        assert_eq!(s.len(), 2);
        let store = s.iter().find(|(p, _)| *p == FaultPath::Store).unwrap().1;
        assert_eq!(store.count, 100);
        assert!((49_000..=51_000).contains(&store.p50_ns), "{store:?}");
        assert!(store.p99_ns >= 98_000);
        assert_eq!(LatencySummary::of(h.get(FaultPath::Minor)).count, 0);
    }

    #[test]
    fn record_serializes() {
        let j = serde_json::to_value(rec(9)).unwrap();
        assert_eq!(j["path"], "store");
        assert_eq!(j["thread"]["vcpu"], 0);
    }
}

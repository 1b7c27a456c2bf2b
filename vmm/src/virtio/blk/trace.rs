//! Per-request trace records, the bounded ring that holds them, and the device's
//! counters.
//!
//! One [`BlkRecord`] is created per descriptor chain the worker pops, by the worker
//! thread, once the chain's used entry is added, and carried unchanged to whoever
//! drains the [`BlkTrace`]. The ring is bounded: when full the oldest record is
//! dropped and counted. Counters ([`BlkCounters`]) are never dropped.
//!
//! Joining with the host swapper's fault records: a swapper fault raised by the
//! worker thread ([`BlkRecord::tid`]) at a time `t` with
//! [`BlkRecord::covers`]`(t)` happened while the device was serving that request (for
//! a write, while it copied the guest's data out of guest RAM: double paging). Both
//! sides must use the same epoch ([`super::BlkConfig::epoch`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use base::sync::lock;

use super::request::InvalidReason;

/// What a request asked for, as far as the device served it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlkKind {
    /// `VIRTIO_BLK_T_IN`: disk to guest.
    Read,
    /// `VIRTIO_BLK_T_OUT`: guest to disk.
    Write,
    /// `VIRTIO_BLK_T_FLUSH`.
    Flush,
    /// `VIRTIO_BLK_T_GET_ID`.
    GetId,
    /// `VIRTIO_BLK_T_DISCARD`.
    Discard,
    /// A request type the device does not implement (status `VIRTIO_BLK_S_UNSUPP`).
    Unsupported,
    /// A malformed request the device refused without doing any I/O (see
    /// [`BlkCounters::invalid_by_reason`]).
    Invalid,
}

/// [`BlkRecord::status`] when no status byte could be written (the chain had no
/// device-writable byte in guest RAM).
pub const STATUS_NONE: u8 = 0xff;

/// One request, as the device served it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlkRecord {
    /// Sequence number, assigned by the ring under its lock: gap-free, in push order.
    pub seq: u64,
    /// The worker thread that served it (the thread that touched the data buffers).
    pub tid: i32,
    /// What it was.
    pub kind: BlkKind,
    /// First sector (512 bytes) from the request header (0 if it had none).
    pub sector: u64,
    /// Data bytes the request described (0 for flush and refused requests).
    pub bytes: u32,
    /// When the chain was popped from the available ring, ns since the epoch.
    pub start_ns: u64,
    /// From `start_ns` until its used entry was added.
    pub service_ns: u64,
    /// The status byte written (`VIRTIO_BLK_S_*`), or [`STATUS_NONE`].
    pub status: u8,
    /// Major page faults the worker thread took while serving it (its copies
    /// to and from guest RAM reading pages back from the host's swap), when
    /// the device counts them ([`super::BlkConfig::count_major_faults`]); 0
    /// otherwise.
    #[serde(default)]
    pub major_faults: u32,
}

impl BlkRecord {
    /// When the used entry was added, ns since the epoch.
    pub fn end_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.service_ns)
    }

    /// Whether `t_ns` (ns since the same epoch) falls in `[start_ns, end_ns]`.
    pub fn covers(&self, t_ns: u64) -> bool {
        (self.start_ns..=self.end_ns()).contains(&t_ns)
    }
}

/// Default number of records a device's trace holds.
pub const DEFAULT_TRACE_CAPACITY: usize = 65_536;

/// A bounded FIFO of [`BlkRecord`]s, shared between the worker and readers.
#[derive(Debug)]
pub struct BlkTrace {
    capacity: usize,
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<BlkRecord>,
    dropped: u64,
    next_seq: u64,
}

impl BlkTrace {
    /// A ring holding at most `capacity` records (0: records are only counted).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Ring {
                records: VecDeque::with_capacity(capacity.min(4096)),
                ..Ring::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        lock(&self.inner)
    }

    /// Appends `rec`, numbering it (its `seq` is overwritten; the number is returned)
    /// and dropping the oldest record when full.
    pub fn push(&self, mut rec: BlkRecord) -> u64 {
        let mut g = self.lock();
        rec.seq = g.next_seq;
        g.next_seq += 1;
        if self.capacity == 0 {
            g.dropped += 1;
            return rec.seq;
        }
        if g.records.len() == self.capacity {
            g.records.pop_front();
            g.dropped += 1;
        }
        g.records.push_back(rec);
        rec.seq
    }

    /// Takes every record held, oldest first.
    pub fn drain(&self) -> Vec<BlkRecord> {
        self.lock().records.drain(..).collect()
    }

    /// Records dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Records pushed so far (held, drained or dropped).
    pub fn pushed(&self) -> u64 {
        self.lock().next_seq
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most records held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Backend I/O errors by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlkIoErrors {
    /// `EIO`.
    pub eio: u64,
    /// `ENOSPC` (or `EDQUOT`).
    pub enospc: u64,
    /// Short transfers (end of file, a write that stopped early).
    pub short: u64,
    /// Anything else.
    pub other: u64,
}

/// A snapshot of a device's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlkCounters {
    /// Descriptor chains popped and completed (used entry added) or consumed.
    pub requests: u64,
    /// Successful reads.
    pub reads: u64,
    /// Successful writes.
    pub writes: u64,
    /// Successful flushes.
    pub flushes: u64,
    /// Successful GET_ID requests.
    pub get_ids: u64,
    /// Successful discards.
    pub discards: u64,
    /// Bytes read from the disk into guest RAM.
    pub bytes_read: u64,
    /// Bytes written from guest RAM to the disk.
    pub bytes_written: u64,
    /// Bytes discarded.
    pub bytes_discarded: u64,
    /// Reads that failed in the backend (status `VIRTIO_BLK_S_IOERR`).
    pub read_errors: u64,
    /// Writes that failed in the backend.
    pub write_errors: u64,
    /// Flushes that failed in the backend.
    pub flush_errors: u64,
    /// Discards that failed in the backend.
    pub discard_errors: u64,
    /// Backend failures by cause (sum of the four `*_errors`).
    pub io_errors: BlkIoErrors,
    /// Requests of a type the device does not implement.
    pub unsupported: u64,
    /// Malformed requests refused (sum of `invalid_by_reason`).
    pub invalid: u64,
    /// Malformed requests by reason (only reasons seen).
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Queue notifications (kicks) the worker received.
    pub kicks: u64,
    /// Interrupts raised.
    pub interrupts: u64,
    /// Used entries for which the driver asked for no interrupt (EVENT_IDX or
    /// `VRING_AVAIL_F_NO_INTERRUPT`).
    pub interrupts_suppressed: u64,
    /// Interrupts that could not be raised.
    pub interrupt_errors: u64,
    /// Times the rings were unusable (available index too far ahead, used ring write
    /// failed): the device stopped serving until the next notification.
    pub queue_errors: u64,
}

impl BlkCounters {
    /// How many malformed requests were refused for `reason`.
    pub fn invalid_for(&self, reason: InvalidReason) -> u64 {
        self.invalid_by_reason
            .get(reason.name())
            .copied()
            .unwrap_or(0)
    }
}

/// The live counters (atomics, written by the worker, read by anyone).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
    pub get_ids: AtomicU64,
    pub discards: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub bytes_discarded: AtomicU64,
    pub read_errors: AtomicU64,
    pub write_errors: AtomicU64,
    pub flush_errors: AtomicU64,
    pub discard_errors: AtomicU64,
    pub eio: AtomicU64,
    pub enospc: AtomicU64,
    pub short: AtomicU64,
    pub other: AtomicU64,
    pub unsupported: AtomicU64,
    pub invalid: [AtomicU64; InvalidReason::ALL.len()],
    pub kicks: AtomicU64,
    pub interrupts: AtomicU64,
    pub interrupts_suppressed: AtomicU64,
    pub interrupt_errors: AtomicU64,
    pub queue_errors: AtomicU64,
}

/// Adds one to `c`, returning the new value.
pub(crate) fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

impl Counters {
    /// Counts a backend failure by cause; returns the total of failures so far.
    pub fn io_error(&self, e: &std::io::Error) -> u64 {
        use std::io::ErrorKind;
        let c = match (e.raw_os_error(), e.kind()) {
            (Some(libc::EIO), _) => &self.eio,
            (Some(libc::ENOSPC | libc::EDQUOT), _) => &self.enospc,
            (_, ErrorKind::UnexpectedEof | ErrorKind::WriteZero) => &self.short,
            _ => &self.other,
        };
        bump(c);
        [&self.eio, &self.enospc, &self.short, &self.other]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a refused request; returns the total of refused requests so far.
    pub fn invalid(&self, reason: InvalidReason) -> u64 {
        bump(&self.invalid[reason as usize]);
        self.invalid.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// A consistent-enough snapshot (each counter is read once).
    pub fn snapshot(&self) -> BlkCounters {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let invalid_by_reason: BTreeMap<String, u64> = InvalidReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), l(&self.invalid[*r as usize])))
            .filter(|(_, n)| *n > 0)
            .collect();
        BlkCounters {
            requests: l(&self.requests),
            reads: l(&self.reads),
            writes: l(&self.writes),
            flushes: l(&self.flushes),
            get_ids: l(&self.get_ids),
            discards: l(&self.discards),
            bytes_read: l(&self.bytes_read),
            bytes_written: l(&self.bytes_written),
            bytes_discarded: l(&self.bytes_discarded),
            read_errors: l(&self.read_errors),
            write_errors: l(&self.write_errors),
            flush_errors: l(&self.flush_errors),
            discard_errors: l(&self.discard_errors),
            io_errors: BlkIoErrors {
                eio: l(&self.eio),
                enospc: l(&self.enospc),
                short: l(&self.short),
                other: l(&self.other),
            },
            unsupported: l(&self.unsupported),
            invalid: invalid_by_reason.values().sum(),
            invalid_by_reason,
            kicks: l(&self.kicks),
            interrupts: l(&self.interrupts),
            interrupts_suppressed: l(&self.interrupts_suppressed),
            interrupt_errors: l(&self.interrupt_errors),
            queue_errors: l(&self.queue_errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sector: u64) -> BlkRecord {
        BlkRecord {
            seq: 999,
            tid: 1,
            kind: BlkKind::Read,
            sector,
            bytes: 512,
            start_ns: 100,
            service_ns: 50,
            status: 0,
            major_faults: 0,
        }
    }

    #[test]
    fn ring_numbers_drops_oldest_and_counts() {
        let t = BlkTrace::new(3);
        for s in 0..5 {
            assert_eq!(t.push(rec(s)), s);
        }
        assert_eq!(t.dropped(), 2);
        assert_eq!(t.pushed(), 5);
        let got = t.drain();
        assert_eq!(
            got.iter().map(|r| (r.seq, r.sector)).collect::<Vec<_>>(),
            vec![(2, 2), (3, 3), (4, 4)]
        );
        assert!(t.is_empty());
        t.push(rec(9));
        assert_eq!(t.drain()[0].seq, 5);
        let none = BlkTrace::new(0);
        none.push(rec(1));
        assert_eq!((none.len(), none.dropped()), (0, 1));
    }

    #[test]
    fn covers_is_inclusive_and_saturating() {
        let r = rec(0);
        assert!(!r.covers(99) && r.covers(100) && r.covers(150) && !r.covers(151));
        let end = BlkRecord {
            start_ns: u64::MAX - 1,
            service_ns: 10,
            ..r
        };
        assert_eq!(end.end_ns(), u64::MAX);
    }

    #[test]
    fn io_errors_are_classified() {
        let c = Counters::default();
        c.io_error(&std::io::Error::from_raw_os_error(libc::EIO));
        c.io_error(&std::io::Error::from_raw_os_error(libc::ENOSPC));
        c.io_error(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert_eq!(
            c.io_error(&std::io::Error::from_raw_os_error(libc::EBADF)),
            4
        );
        let s = c.snapshot();
        assert_eq!(
            s.io_errors,
            BlkIoErrors {
                eio: 1,
                enospc: 1,
                short: 1,
                other: 1
            }
        );
        c.invalid(InvalidReason::OutOfRange);
        assert_eq!(c.invalid(InvalidReason::OutOfRange), 2);
        let s = c.snapshot();
        assert_eq!(s.invalid, 2);
        assert_eq!(s.invalid_for(InvalidReason::OutOfRange), 2);
        assert_eq!(s.invalid_for(InvalidReason::ReadOnly), 0);
    }
}

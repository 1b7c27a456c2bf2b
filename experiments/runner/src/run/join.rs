//! Joining the two halves of a fault path: virtio-blk requests on the guest's
//! swap disk and host-swapper faults raised by the device thread serving them.
//!
//! The blk device serves its queue on one worker thread, so a host fault whose
//! faulting thread is that worker and whose time falls inside a request's
//! service window was raised *by* that request (both clocks count from the
//! swapper's epoch):
//!
//! - inside a **write** request (a guest swap-out): the host swapped a page in
//!   only so the guest could write it out: **double paging**;
//! - inside a **read** request (a guest swap-in): the host swapped in a page
//!   the device is about to overwrite entirely: a **stale swap read** (the
//!   VSwapper anomaly; the false-read mitigation removes it).

use serde::{Deserialize, Serialize};

/// A blk request as the join needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkSpan {
    /// The request's trace sequence number.
    pub seq: u64,
    /// Worker thread that served it.
    pub tid: i32,
    /// Data flowed guest → disk (a swap-out).
    pub write: bool,
    /// First sector.
    pub sector: u64,
    /// Bytes transferred.
    pub bytes: u32,
    /// Service window, ns since the epoch.
    pub start_ns: u64,
    /// End of the service window.
    pub end_ns: u64,
    /// The worker's major faults while serving it (counted under the kernel
    /// host swapper; 0 otherwise).
    pub major_faults: u32,
}

impl From<&vmm::virtio::blk::BlkRecord> for BlkSpan {
    /// A read or write request's span (`write` for anything but a read).
    fn from(r: &vmm::virtio::blk::BlkRecord) -> Self {
        BlkSpan {
            seq: r.seq,
            tid: r.tid,
            write: r.kind != vmm::virtio::blk::BlkKind::Read,
            sector: r.sector,
            bytes: r.bytes,
            start_ns: r.start_ns,
            end_ns: r.end_ns(),
            major_faults: r.major_faults,
        }
    }
}

/// A host fault as the join needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFault {
    /// The fault record's sequence number.
    pub seq: u64,
    /// Faulting thread.
    pub tid: i32,
    /// When the handler read the event, ns since the epoch.
    pub t_ns: u64,
    /// Handler time (read to wake-up).
    pub total_ns: u64,
    /// Guest page (host page index in the swapper's regions).
    pub page: u32,
}

/// One joined pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedEvent {
    /// The fault's sequence number.
    pub fault_seq: u64,
    /// The request's.
    pub request_seq: u64,
    /// Faulting (device) thread.
    pub tid: i32,
    /// Request direction: `true` for a guest swap-out (double paging).
    pub write: bool,
    /// First sector of the request.
    pub sector: u64,
    /// When the fault was read, ns since the epoch.
    pub t_ns: u64,
    /// Host fault latency.
    pub fault_ns: u64,
    /// The whole request's service time (it includes the fault).
    pub request_ns: u64,
    /// The page.
    pub page: u32,
}

/// What the join found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Joined {
    /// Faults inside write requests: double paging.
    pub double_paging: Vec<JoinedEvent>,
    /// Faults inside read requests: stale swap reads.
    pub stale_reads: Vec<JoinedEvent>,
    /// Device-thread faults outside any request window (e.g. the device
    /// reading a descriptor ring page the host had evicted, or writing the
    /// swap header, which is no swap-out).
    pub unmatched: u64,
}

/// Joins `faults` (any threads; only those of a request's thread count) with
/// `requests`. Runs in O((n + m) log m).
pub fn join(requests: &[BlkSpan], faults: &[HostFault]) -> Joined {
    let mut by_tid: std::collections::HashMap<i32, Vec<&BlkSpan>> = Default::default();
    for r in requests {
        by_tid.entry(r.tid).or_default().push(r);
    }
    for v in by_tid.values_mut() {
        v.sort_by_key(|r| r.start_ns);
    }
    let mut out = Joined::default();
    for f in faults {
        let Some(spans) = by_tid.get(&f.tid) else {
            continue;
        };
        // The last request that started at or before the fault.
        let i = spans.partition_point(|r| r.start_ns <= f.t_ns);
        let hit = i
            .checked_sub(1)
            .map(|i| spans[i])
            .filter(|r| f.t_ns <= r.end_ns);
        let Some(r) = hit else {
            out.unmatched += 1;
            continue;
        };
        let ev = JoinedEvent {
            fault_seq: f.seq,
            request_seq: r.seq,
            tid: f.tid,
            write: r.write,
            sector: r.sector,
            t_ns: f.t_ns,
            fault_ns: f.total_ns,
            request_ns: r.end_ns - r.start_ns,
            page: f.page,
        };
        if r.write {
            out.double_paging.push(ev);
        } else {
            out.stale_reads.push(ev);
        }
    }
    out
}

/// What the kernel host swapper's runs show instead of fault records: each
/// major fault the blk worker took while serving a request is one event of
/// that request (a write: double paging; a read: a stale read), whose
/// latency is the request's whole service time (the kernel does not time its
/// faults one by one; a request that faulted k times gives k events). No
/// fault record and no page: `fault_seq` is 0 and `page` is `u32::MAX`.
pub fn from_major_faults(requests: &[BlkSpan]) -> Joined {
    let mut out = Joined::default();
    for r in requests.iter().filter(|r| r.major_faults > 0) {
        let ev = JoinedEvent {
            fault_seq: 0,
            request_seq: r.seq,
            tid: r.tid,
            write: r.write,
            sector: r.sector,
            t_ns: r.start_ns,
            fault_ns: r.end_ns - r.start_ns,
            request_ns: r.end_ns - r.start_ns,
            page: u32::MAX,
        };
        let to = if r.write {
            &mut out.double_paging
        } else {
            &mut out.stale_reads
        };
        to.extend(std::iter::repeat_n(ev, r.major_faults as usize));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_faults_of_requests_are_events_timed_by_their_request() {
        let mut w = req(1, 9, true, 100, 400);
        w.major_faults = 2;
        let mut r = req(2, 9, false, 500, 550);
        r.major_faults = 1;
        let quiet = req(3, 9, true, 600, 700);
        let j = from_major_faults(&[w, r, quiet]);
        assert_eq!(j.double_paging.len(), 2);
        assert_eq!(j.stale_reads.len(), 1);
        assert!(j
            .double_paging
            .iter()
            .all(|e| e.request_seq == 1 && e.fault_ns == 300));
        assert_eq!(
            (j.stale_reads[0].request_seq, j.stale_reads[0].fault_ns),
            (2, 50)
        );
        assert_eq!(j.unmatched, 0);
    }

    fn req(seq: u64, tid: i32, write: bool, start: u64, end: u64) -> BlkSpan {
        BlkSpan {
            seq,
            tid,
            write,
            sector: seq * 8,
            bytes: 4096,
            start_ns: start,
            end_ns: end,
            major_faults: 0,
        }
    }

    fn fault(seq: u64, tid: i32, t: u64) -> HostFault {
        HostFault {
            seq,
            tid,
            t_ns: t,
            total_ns: 40,
            page: seq as u32,
        }
    }

    #[test]
    fn faults_join_the_request_their_thread_was_serving() {
        let reqs = [
            req(1, 7, true, 100, 200),
            req(2, 7, false, 300, 400),
            req(3, 7, true, 500, 600),
        ];
        let faults = [
            fault(10, 7, 150), // in the write: double paging
            fault(11, 7, 200), // at the end boundary: still inside
            fault(12, 7, 350), // in the read: stale read
            fault(13, 7, 250), // between requests
            fault(14, 8, 150), // another thread (a vCPU): not joined
            fault(15, 7, 50),  // before any request
            fault(16, 7, 700), // after all
        ];
        let j = join(&reqs, &faults);
        let dp: Vec<(u64, u64)> = j
            .double_paging
            .iter()
            .map(|e| (e.fault_seq, e.request_seq))
            .collect();
        assert_eq!(dp, [(10, 1), (11, 1)]);
        assert_eq!(j.stale_reads.len(), 1);
        assert_eq!(j.stale_reads[0].request_seq, 2);
        assert_eq!(j.stale_reads[0].request_ns, 100);
        assert_eq!(j.unmatched, 3);
    }

    #[test]
    fn unsorted_requests_of_two_devices() {
        let reqs = [req(2, 9, true, 300, 310), req(1, 5, true, 100, 900)];
        let j = join(&reqs, &[fault(1, 9, 305), fault(2, 5, 305)]);
        let mut got: Vec<u64> = j.double_paging.iter().map(|e| e.request_seq).collect();
        got.sort();
        assert_eq!(got, [1, 2]);
        assert_eq!(j.unmatched, 0);
    }
}

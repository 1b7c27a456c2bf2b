//! One run's records, as the trace needs them.

use swapper::FaultRecord;
use vmm::virtio::blk::BlkRecord;

use crate::run::ktrace::{monotonic_ns, KtraceCapture};
use crate::run::machine::RawRun;
use crate::run::result::HostSample;

/// One run's records, as the trace needs them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTrace<'a> {
    /// Host fault records.
    pub faults: &'a [FaultRecord],
    /// blk request records.
    pub requests: &'a [BlkRecord],
    /// Host timeline (times from the guest's start).
    pub timeline: &'a [HostSample],
    /// The guest's start, ns after the epoch.
    pub start_ns: u64,
    /// Kernel events and CLOCK_MONOTONIC at the epoch, ns.
    pub ktrace: Option<(&'a KtraceCapture, u64)>,
    /// Records the swapper and blk rings dropped before they were drained.
    pub ring_dropped: u64,
}

impl<'a> RunTrace<'a> {
    /// A raw run's records (and its kernel events, if recorded).
    pub fn from_raw(raw: &'a RawRun, ktrace: Option<&'a KtraceCapture>) -> Self {
        let start_ns = raw
            .guest
            .started
            .checked_duration_since(raw.epoch)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            faults: &raw.faults,
            requests: &raw.requests,
            timeline: &raw.timeline,
            start_ns,
            ktrace: ktrace.map(|k| (k, monotonic_ns(raw.epoch))),
            ring_dropped: raw.dropped,
        }
    }
}

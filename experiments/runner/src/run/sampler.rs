//! The sampler: a thread that, every 250 ms while the guest runs, drains the
//! swapper's and the swap disk's trace rings, records a host timeline sample
//! (residency, balloon, host swap and disk totals), reads every thread's CPU
//! time ([`super::cpu`]) and steps the balloon's policy; and once more when
//! stopped.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base::{lock, Stop};
use swapper::{FaultRecord, Swapper};
use vmm::virtio::blk::{BlkHandle, BlkRecord};
use vmm::HostRegion;

use super::api::host_resident_bytes;
use super::balloon::BalloonRun;
use super::cpu::{CpuTracker, ThreadCpu};
use super::recent::{balloon_events, Recent};
use super::result::HostSample;

/// Fault records and blk records a run keeps, each (about 64 bytes apiece:
/// at most ~130 MB per kind however long a guest faults); later ones are
/// counted as dropped.
pub const MAX_KEPT_RECORDS: usize = 2_000_000;

/// How often the sampler samples.
const PERIOD: Duration = Duration::from_millis(250);

/// Appends `more` to `into` up to [`MAX_KEPT_RECORDS`], counting the rest in
/// `dropped`.
pub fn keep<T>(into: &mut Vec<T>, more: Vec<T>, dropped: &mut u64) {
    let room = MAX_KEPT_RECORDS.saturating_sub(into.len());
    *dropped += more.len().saturating_sub(room) as u64;
    into.extend(more.into_iter().take(room));
}

/// What the sampler drains while the guest runs.
#[derive(Default)]
pub struct Collected {
    /// Host fault records.
    pub faults: Vec<FaultRecord>,
    /// blk request records.
    pub requests: Vec<BlkRecord>,
    /// Host timeline samples.
    pub timeline: Vec<HostSample>,
    /// Records not kept (beyond [`MAX_KEPT_RECORDS`]).
    pub dropped: u64,
    /// Host CPU time by thread name (filled by the last sample).
    pub host_cpu: Vec<ThreadCpu>,
}

/// What the sampler reads.
pub struct Sources {
    /// When the guest started (sample times count from it).
    pub started: Instant,
    /// The host swapper, if the run has one.
    pub swapper: Option<Arc<Swapper>>,
    /// The swap disk, if the guest has one.
    pub blk: Option<BlkHandle>,
    /// The balloon and its policy, stepped on every sample.
    pub balloon: Option<BalloonRun>,
    /// Where `vm.recent` events go, when there is a control socket.
    pub recent: Option<Arc<Recent>>,
    /// Guest RAM, host side (for residency without a swapper).
    pub regions: Vec<HostRegion>,
    /// Guest RAM bytes.
    pub guest_mem: u64,
    /// The kernel host swapper's counters, if the run has it.
    pub kernel: Option<super::kernel_host::KernelGauge>,
}

/// The running sampler thread. Stop it with [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<Stop>,
    collected: Arc<Mutex<Collected>>,
    thread: JoinHandle<Option<serde_json::Value>>,
}

impl Sampler {
    /// Starts sampling `sources`.
    pub fn start(sources: Sources) -> Self {
        let stop = Arc::new(Stop::new());
        let collected: Arc<Mutex<Collected>> = Arc::default();
        let thread = {
            let (stop, collected) = (stop.clone(), collected.clone());
            let mut sources = sources;
            let mut cpu = CpuTracker::start();
            std::thread::Builder::new()
                .name("swaplab-sampler".into())
                .spawn(move || loop {
                    let done = stop.wait_timeout(PERIOD);
                    let mut c = lock(&collected);
                    sources.sample(&mut c);
                    cpu.sample();
                    if done {
                        c.host_cpu = cpu.finish();
                        return sources.balloon.map(|b| b.finish());
                    }
                })
                .expect("spawning the sampler thread")
        };
        Self {
            stop,
            collected,
            thread,
        }
    }

    /// Stops the sampler after one last sample; the balloon's part of the
    /// result (see [`BalloonRun::finish`]) and everything collected.
    pub fn finish(self) -> (Option<serde_json::Value>, Collected) {
        self.stop.stop();
        let balloon = self.thread.join().ok().flatten();
        let collected = std::mem::take(&mut *lock(&self.collected));
        (balloon, collected)
    }
}

impl Sources {
    /// One sample: drains the rings into `c` and appends a timeline sample.
    fn sample(&mut self, c: &mut Collected) {
        let mut sample = HostSample {
            t_s: self.started.elapsed().as_secs_f64(),
            ..HostSample::default()
        };
        let status = self.swapper.as_ref().map(|sw| {
            let drained = sw.drain_trace();
            if let Some(r) = &self.recent {
                r.push_faults(&drained);
            }
            keep(&mut c.faults, drained, &mut c.dropped);
            sw.status()
        });
        if let Some(st) = &status {
            sample.host_swap_ins = st.counters.swapin_store;
            sample.host_named_ins = st.counters.swapin_named + st.counters.named_readahead;
            sample.host_evictions = st.counters.evictions;
        }
        if let Some(k) = &self.kernel {
            (sample.host_swap_ins, sample.host_evictions) = k.sample();
        }
        sample.host_resident_bytes =
            host_resident_bytes(status.as_ref(), &self.regions).unwrap_or(self.guest_mem);
        if let Some(b) = self.balloon.as_mut() {
            // The event ring is only drained for `vm.recent`.
            if let Some(r) = &self.recent {
                for text in balloon_events(&b.handle.drain_events()) {
                    r.push_event("balloon", &text);
                }
            }
            b.step(sample.host_resident_bytes, self.guest_mem);
            sample.balloon_bytes = b.handle.actual_bytes();
            sample.balloon_target_bytes = b.handle.target_bytes();
        }
        if let Some(b) = &self.blk {
            keep(&mut c.requests, b.drain_trace(), &mut c.dropped);
            let k = b.counters();
            sample.disk_reads = k.reads;
            sample.disk_writes = k.writes;
        }
        c.timeline.push(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_records_are_bounded_and_the_rest_counted() {
        let mut v = vec![0u8; MAX_KEPT_RECORDS - 2];
        let mut dropped = 0;
        keep(&mut v, vec![1, 2, 3, 4, 5], &mut dropped);
        assert_eq!((v.len(), dropped), (MAX_KEPT_RECORDS, 3));
        assert_eq!(&v[MAX_KEPT_RECORDS - 2..], [1, 2]);
        keep(&mut v, vec![6], &mut dropped);
        assert_eq!((v.len(), dropped), (MAX_KEPT_RECORDS, 4));
    }
}

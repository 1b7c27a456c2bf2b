//! A scenario run's result (`result.json`) and its summary table.
//!
//! The top-level counters are the ones issue #5 names; everything else is
//! detail for reports (see the README's "result.json" section).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::join::JoinedEvent;
use scenario::Scenario;

/// Latency percentiles of one path, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PathLatency {
    /// Events.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Maximum.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

impl PathLatency {
    /// Percentiles of `samples` (ns).
    pub fn of(samples: impl IntoIterator<Item = u64>) -> Self {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("static histogram bounds are valid");
        for s in samples {
            h.saturating_record(s.max(1));
        }
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }
}

/// Most latency samples kept per path in a result.
pub const MAX_SAMPLES: usize = 10_000;

/// Up to [`MAX_SAMPLES`] of `v`, evenly spaced.
pub fn thin(v: Vec<u64>) -> Vec<u64> {
    if v.len() <= MAX_SAMPLES {
        return v;
    }
    let step = v.len() as f64 / MAX_SAMPLES as f64;
    (0..MAX_SAMPLES)
        .map(|i| v[(i as f64 * step) as usize])
        .collect()
}

/// The fault paths every summary shows, in order.
pub const PATHS: &[(&str, &str)] = &[
    ("guest_swap_in", "guest swap-in (blk read)"),
    ("guest_swap_out", "guest swap-out (blk write)"),
    ("host_swap_in_vcpu", "host swap-in by vCPU"),
    ("host_swap_in_device", "host swap-in by device"),
    ("double_paging", "double paging"),
    ("host_swap_in_named", "host swap-in, named page"),
];

/// Not a path of its own: the store's read inside each store swap-in (the
/// `host swap-in` rows' part spent in the store: a Redis `GET`, a file read,
/// a copy or an lz4 decompression). Shown below the paths when there is one.
pub const STORE_READ_PATH: &str = "host_store_read";

/// The latency path of KVM's async page faults (`--ktrace`).
pub const ASYNC_PF_PATH: &str = "host_swap_in_async_pf";

/// What the guest's programs reported over the channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GuestReport {
    /// Pages the workload verified (its tags or patterns).
    pub pages_verified: u64,
    /// Pages with wrong content.
    pub integrity_errors: u64,
    /// The workload's own JSON lines (per pass/round and the summary).
    pub workload: Vec<serde_json::Value>,
    /// vmstat/meminfo samples (`swaplab-guest report`).
    pub samples: Vec<serde_json::Value>,
    /// Channel lines that were not JSON.
    pub bad_lines: u64,
}

/// One timeline sample taken by the host while the guest ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    /// Seconds since the vCPUs started.
    pub t_s: f64,
    /// Host-resident guest RAM (swapper's count; all RAM when not swapping).
    pub host_resident_bytes: u64,
    /// Host swap-ins so far.
    pub host_swap_ins: u64,
    /// Host evictions so far.
    pub host_evictions: u64,
    /// Named pages read back from their disk block so far (faults and
    /// read-ahead; the false-anonymity mitigation).
    #[serde(default)]
    pub host_named_ins: u64,
    /// Swap-disk reads so far.
    pub disk_reads: u64,
    /// Swap-disk writes so far.
    pub disk_writes: u64,
    /// Balloon size (actual), bytes.
    pub balloon_bytes: u64,
    /// Balloon target, bytes.
    pub balloon_target_bytes: u64,
}

/// `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// `ok`, or why the run failed.
    pub outcome: String,
    /// Where it ran and whether timings mean anything.
    pub environment: serde_json::Value,
    /// The scenario as run.
    pub spec: Scenario,
    /// From the vCPUs starting to the guest powering off.
    pub runtime_s: f64,
    /// Guest pages swapped in (guest /proc/vmstat).
    pub guest_pswpin: u64,
    /// Guest pages swapped out.
    pub guest_pswpout: u64,
    /// Read requests on the swap disk.
    pub swap_disk_reads: u64,
    /// Write requests on the swap disk.
    pub swap_disk_writes: u64,
    /// Pages the host wrote to its store.
    pub host_evictions: u64,
    /// Host faults that brought a page back: from the store, the prefetch
    /// cache or (named pages) the disk.
    pub host_swap_ins: u64,
    /// Host faults raised by the blk device while writing guest swap.
    pub double_paging_events: u64,
    /// Host faults raised by the blk device while reading guest swap into a
    /// host-evicted page (stale swap reads).
    pub stale_swap_reads: u64,
    /// Pages the guest verified.
    pub pages_verified: u64,
    /// Pages with wrong content (guest checks plus the swapper's checksums).
    pub integrity_errors: u64,
    /// Latency per path (the keys of [`PATHS`]).
    pub latency: BTreeMap<String, PathLatency>,
    /// Latency samples per path (ns; at most [`MAX_SAMPLES`] each, evenly
    /// thinned), for CDF plots.
    pub latency_samples: BTreeMap<String, Vec<u64>>,
    /// The VSwapper anomaly counters and the mitigations' effect.
    pub anomalies: BTreeMap<String, u64>,
    /// Every swapper counter at the end (absent without host swapping).
    pub swapper: Option<swapper::SwapperStatus>,
    /// Pages per server of a remote store (Redis, each cluster node) at the
    /// end of the run; absent for a local store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub store_nodes: Vec<swapper::store::StoreNode>,
    /// The blk device's counters.
    pub blk: Option<serde_json::Value>,
    /// The balloon's metrics.
    pub balloon: Option<serde_json::Value>,
    /// What the guest programs reported.
    pub guest: GuestReport,
    /// Host-side timeline.
    pub timeline: Vec<HostSample>,
    /// Double-paging events (first 10 000).
    pub double_paging: Vec<JoinedEvent>,
    /// VM exits and KVM stats.
    pub vm: Option<serde_json::Value>,
    /// The number `workload.metric` (or the application's) took from the
    /// command's output.
    #[serde(default)]
    pub metric: Option<f64>,
    /// Its name: the application's (`runtime_s`, `throughput_mb_s`,
    /// `requests_per_s`), `metric` for a command.
    #[serde(default)]
    pub metric_name: Option<String>,
    /// The root disk's counters (`guest.root_disk`).
    #[serde(default)]
    pub root_disk: Option<serde_json::Value>,
    /// Host CPU time by thread name while the guest ran, the busiest first
    /// ([`super::cpu`]).
    #[serde(default)]
    pub host_cpu: Vec<super::cpu::ThreadCpu>,
    /// What the kernel did as the host swapper (`host.swapper = "kernel"`):
    /// its cgroup, swap device, limit and counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_swap: Option<super::kernel_host::KernelHostReport>,
}

/// Why a run's host limit was not held, if it was not: the swapper's peak
/// residency went beyond `limit + slack`, was still beyond it at the end (it
/// could not get it back, e.g. its store failing every write), and the swapper
/// counted overshoots (pages it took beyond the cap because it could evict
/// nothing). The overshoots are needed because a scenario may lower the limit
/// while it runs: then the limit is the final one, and residency above it is
/// what the evictor had not yet brought down, not a breach.
pub fn limit_failure(s: &swapper::SwapperStatus) -> Option<String> {
    use crate::probe_run::summary::{limit_held, limit_not_held_message};
    let held = limit_held(
        s.peak_resident_pages,
        s.committed_pages,
        s.limit_pages,
        s.slack_pages,
    );
    (!held && s.limit_overshoots > 0).then(|| {
        limit_not_held_message(
            s.peak_resident_pages,
            s.committed_pages,
            s.limit_pages,
            s.slack_pages,
            s.counters.write_errors,
            s.limit_overshoots,
        )
    })
}

fn fmt_ns(ns: u64) -> String {
    report::stats::fmt_ns(ns)
}

impl RunResult {
    /// Adds the latencies of KVM's async page faults `--ktrace` recorded
    /// (not-present to ready, ns) as the path [`ASYNC_PF_PATH`]; nothing
    /// when there are none.
    pub fn add_async_pf(&mut self, ns: Vec<u64>) {
        if ns.is_empty() {
            return;
        }
        self.latency.insert(
            ASYNC_PF_PATH.to_string(),
            PathLatency::of(ns.iter().copied()),
        );
        self.latency_samples
            .insert(ASYNC_PF_PATH.to_string(), thin(ns));
    }

    /// The short summary table printed after a run.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "scenario {}: {} in {:.1} s\n",
            self.scenario, self.outcome, self.runtime_s
        );
        s.push_str(&format!(
            "  guest: pswpin {}  pswpout {}  swap-disk reads {} writes {}\n",
            self.guest_pswpin, self.guest_pswpout, self.swap_disk_reads, self.swap_disk_writes
        ));
        s.push_str(&format!(
            "  host:  evictions {}  swap-ins {}  double paging {}  stale swap reads {}\n",
            self.host_evictions,
            self.host_swap_ins,
            self.double_paging_events,
            self.stale_swap_reads
        ));
        s.push_str(&format!(
            "  integrity: {} pages verified, {} errors\n",
            self.pages_verified, self.integrity_errors
        ));
        if let Some(h) = self
            .spec
            .host
            .as_ref()
            .filter(|_| !self.store_nodes.is_empty())
        {
            let nodes: Vec<String> = self
                .store_nodes
                .iter()
                .map(|n| format!("{} {}", n.node, n.pages))
                .collect();
            let private = if h.store_url.as_deref() == Some(scenario::PRIVATE_STORE_URL) {
                " (the run's private redis-server, beside the VMM)"
            } else {
                ""
            };
            s.push_str(&format!(
                "  store: redis{private}; pages per node at the end: {}\n",
                nodes.join(", ")
            ));
        }
        if let Some(d) = &self.root_disk {
            let n = |k: &str| d.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            s.push_str(&format!(
                "  root disk: reads {} ({} MiB)  writes {} ({} MiB)\n",
                n("reads"),
                n("bytes_read") >> 20,
                n("writes"),
                n("bytes_written") >> 20
            ));
        }
        if let Some(k) = &self.kernel_swap {
            s.push_str(&format!(
                "  kernel swap: {} cgroup limit {} MiB (guest {} + VMM {} + allowance {}), guest \
                 resident peak {} MiB; swap-ins by vCPU {}, device {}, unattributed {}; silent writes \
                 and false reads not observable\n",
                k.swap_kind,
                k.cgroup_limit_bytes >> 20,
                k.guest_limit_bytes >> 20,
                k.vmm_overhead_bytes >> 20,
                k.growth_allowance_bytes >> 20,
                k.guest_resident_peak_bytes >> 20,
                k.swap_ins_vcpu,
                k.swap_ins_device,
                k.swap_ins_other
            ));
        }
        if let Some(m) = self.metric {
            let name = self.metric_name.as_deref().unwrap_or("metric");
            s.push_str(&format!("  {name}: {m}\n"));
        }
        s.push_str(&format!(
            "  {:<28} {:>9} {:>10} {:>10}\n",
            "path", "count", "p50", "p99"
        ));
        for (key, label) in PATHS {
            let l = self.latency.get(*key).copied().unwrap_or_default();
            let (p50, p99) = if l.count == 0 {
                ("-".to_string(), "-".to_string())
            } else if l.max_ns == 0 {
                ("untimed".to_string(), "untimed".to_string())
            } else {
                (fmt_ns(l.p50_ns), fmt_ns(l.p99_ns))
            };
            s.push_str(&format!(
                "  {:<28} {:>9} {:>10} {:>10}\n",
                label, l.count, p50, p99
            ));
        }
        if let Some(l) = self.latency.get(STORE_READ_PATH).filter(|l| l.count > 0) {
            s.push_str(&format!(
                "  {:<28} {:>9} {:>10} {:>10}\n",
                "store read within swap-ins",
                l.count,
                fmt_ns(l.p50_ns),
                fmt_ns(l.p99_ns)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_samples() {
        let l = PathLatency::of((1..=1000).map(|i| i * 1000));
        assert_eq!(l.count, 1000);
        assert!((499_000..=501_000).contains(&l.p50_ns), "{l:?}");
        assert!((989_000..=991_000).contains(&l.p99_ns), "{l:?}");
        assert!(l.max_ns >= 1_000_000 && l.max_ns < 1_001_000);
        assert_eq!(PathLatency::of([]).count, 0);
    }

    fn status(peak: u64, limit: u64, overshoots: u64, write_errors: u64) -> swapper::SwapperStatus {
        let mut s = swapper::SwapperStatus {
            limit_pages: limit,
            slack_pages: 256,
            peak_resident_pages: peak,
            committed_pages: peak,
            limit_overshoots: overshoots,
            ..Default::default()
        };
        s.counters.write_errors = write_errors;
        s
    }

    #[test]
    fn a_run_holds_its_limit_unless_the_swapper_overshot_past_it() {
        assert_eq!(limit_failure(&status(4096 + 256, 4096, 0, 0)), None);
        // Forced reservations that stayed within the cap are no breach.
        assert_eq!(limit_failure(&status(4000, 4096, 3, 3)), None);
        // A peak above a limit lowered later, without overshoots, is no breach.
        assert_eq!(limit_failure(&status(8192, 4096, 0, 0)), None);
        // An overshoot the swapper recovered from by the end is no breach.
        let mut recovered = status(8192, 4096, 5, 5);
        recovered.committed_pages = 4000;
        assert_eq!(limit_failure(&recovered), None);
        let why = limit_failure(&status(16384, 4096, 12000, 11000)).expect("not held");
        assert!(
            why.starts_with(
                "the host limit was not held: resident peaked at 16384 pages against a limit of 4096 + 256 slack, still 16384 at the end"
            ),
            "{why}"
        );
        assert!(why.contains("11000 store writes failed"), "{why}");
    }
}

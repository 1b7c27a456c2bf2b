//! The host-swap numbers a probe run reports at the top level of its JSON (the same
//! fields for the userfaultfd swapper and the kernel baseline), and their text form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::kernel::KernelRun;
use super::uffd::UffdRun;
use super::Latency;
use base::ByteSize;
use report::stats::fmt_ns;

/// How the host swaps test RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostSwapMode {
    /// swaplab's userfaultfd swapper.
    Uffd,
    /// The kernel: the VMM in a memory cgroup, swapping to a swap device.
    Kernel,
    /// No host swapping.
    None,
}

impl HostSwapMode {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uffd => "uffd",
            Self::Kernel => "kernel",
            Self::None => "none",
        }
    }
}

/// Percentiles of one fault path, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PathLatency {
    /// Faults.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
}

/// Top-level host-swap fields of `probe --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwapSummary {
    /// `uffd` or `kernel`.
    pub host_swap: String,
    /// The resident budget of test RAM.
    pub host_limit_bytes: u64,
    /// The same, in pages.
    pub host_limit_pages: u64,
    /// How far residency may exceed the limit, pages. uffd: the swapper's zero-map pool
    /// slack; kernel: the growth allowance added to the cgroup limit for the VMM.
    pub slack_pages: u64,
    /// Pages written out during the guest's run (uffd: to the store; kernel: `pswpout`).
    pub evictions: u64,
    /// Swap-ins during the guest's run, by path, and `total`. uffd: `store`, `minor`
    /// (clock's moved-aside pages), `prefetch_hit`; kernel: `major_fault` (faults that
    /// read swap) and `pages_read` (`pswpin`, readahead included).
    pub swap_ins: BTreeMap<String, u64>,
    /// Peak resident test-RAM pages. uffd: the swapper's committed peak (an upper bound
    /// on resident memory); kernel: the cgroup's peak minus the VMM's overhead.
    pub peak_resident_pages: u64,
    /// Bytes in the backing store at the end of the run (kernel: the VMM's `VmSwap`).
    pub store_bytes: u64,
    /// Pages whose content was wrong. uffd: checksum mismatches on swap-in (never
    /// served); kernel: the probe's own tag and counter checks (no checksums there).
    pub integrity_errors: u64,
    /// Resident test-RAM pages when the guest finished (uffd: committed pages; kernel:
    /// test RAM resident in the cgroup).
    #[serde(default)]
    pub end_resident_pages: u64,
    /// Whether the limit held: false when residency went past `host_limit_pages +
    /// slack_pages` and was still past it when the guest finished (the swapper could
    /// not get it back, e.g. its store's filesystem is full). The run then fails: its
    /// numbers were not measured under the limit asked for. An overshoot the swapper
    /// recovered from (store writes failed for a while, then worked) shows in
    /// `peak_resident_pages` and `limit_overshoots` and does not fail the run.
    #[serde(default = "yes")]
    pub limit_held: bool,
    /// Store writes that failed (uffd; the swapper keeps such a page resident rather
    /// than lose it, so a store that fails every write cannot hold the limit).
    /// Kernel: 0.
    #[serde(default)]
    pub write_errors: u64,
    /// Times the swapper had to take a page beyond `limit + slack` because it could
    /// evict nothing (uffd). Kernel: 0.
    #[serde(default)]
    pub limit_overshoots: u64,
    /// Fault latency by path. uffd: the swapper's service time (event read to wake-up);
    /// both: `guest`, the latency the guest measured for faulted accesses in the passes
    /// after the first (fault, service, vCPU wake-up).
    pub fault_latency_ns: BTreeMap<String, PathLatency>,
    /// Pages per server of a distributed store (uffd with a Redis Cluster: each
    /// node's share by hash slot) when the run ended; absent for a local store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub store_nodes: Vec<swapper::store::StoreNode>,
}

fn yes() -> bool {
    true
}

/// Whether a limit held: residency (`peak` at most, `end` when the run finished)
/// never went past `limit + slack`, or came back within it by the end.
pub fn limit_held(peak: u64, end: u64, limit: u64, slack: u64) -> bool {
    let cap = limit.saturating_add(slack);
    peak <= cap || end <= cap
}

/// Why a limit was not held, in one line: the peak against the limit, residency at
/// the end, and the cause the swapper counted (failed store writes, or evictions it
/// could not make).
pub fn limit_not_held_message(
    peak: u64,
    end: u64,
    limit: u64,
    slack: u64,
    write_errors: u64,
    overshoots: u64,
) -> String {
    let cause = if write_errors > 0 {
        format!(
            " ({write_errors} store writes failed, so the pages stayed resident; is the store's filesystem full?)"
        )
    } else if overshoots > 0 {
        format!(" ({overshoots} times the swapper found no page it could evict)")
    } else {
        String::new()
    };
    format!(
        "the host limit was not held: resident peaked at {peak} pages against a limit of {limit} + {slack} slack, still {end} at the end{cause}"
    )
}

/// Why `m`'s run cannot count because its limit was not held, if it was not.
pub fn limit_failure(m: &SwapSummary) -> Option<String> {
    (!m.limit_held).then(|| {
        limit_not_held_message(
            m.peak_resident_pages,
            m.end_resident_pages,
            m.host_limit_pages,
            m.slack_pages,
            m.write_errors,
            m.limit_overshoots,
        )
    })
}

fn guest_latency(l: &Latency, count: u64) -> PathLatency {
    PathLatency {
        count,
        p50: l.p50,
        p90: l.p90,
        p99: l.p99,
        max: l.max,
    }
}

/// The summary of a swapped run (`limit_bytes` as given).
pub fn uffd_summary(run: &UffdRun, limit_bytes: u64) -> SwapSummary {
    let st = &run.swap.at_run_end;
    let c = &st.counters;
    let swap_ins = [
        ("store", c.swapin_store),
        ("minor", c.swapin_minor),
        ("prefetch_hit", c.prefetch_hits),
        ("total", st.swap_ins()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut fault_latency_ns: BTreeMap<String, PathLatency> = st
        .latency
        .iter()
        .map(|(k, l)| {
            (
                k.clone(),
                PathLatency {
                    count: l.count,
                    p50: l.p50_ns,
                    p90: l.p90_ns,
                    p99: l.p99_ns,
                    max: l.max_ns,
                },
            )
        })
        .collect();
    let steady = &run.result.steady;
    fault_latency_ns.insert(
        "guest".into(),
        guest_latency(&steady.fault_latency_ns, steady.faulted_accesses),
    );
    SwapSummary {
        host_swap: "uffd".into(),
        host_limit_bytes: limit_bytes,
        host_limit_pages: st.limit_pages,
        slack_pages: st.slack_pages,
        evictions: c.evictions,
        swap_ins,
        peak_resident_pages: st.peak_resident_pages,
        store_bytes: st.store_bytes,
        integrity_errors: run.swap.final_status.counters.integrity_errors,
        // The limit never changes during a probe, so the run's peak is measured
        // against the limit it had all along.
        end_resident_pages: st.committed_pages,
        limit_held: limit_held(
            st.peak_resident_pages,
            st.committed_pages,
            st.limit_pages,
            st.slack_pages,
        ),
        write_errors: st.counters.write_errors,
        limit_overshoots: st.limit_overshoots,
        fault_latency_ns,
        store_nodes: run.swap.store_nodes.clone(),
    }
}

fn get_u64(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// The summary of a kernel-swap run.
pub fn kernel_summary(run: &KernelRun) -> SwapSummary {
    let r = &run.report;
    let child = &r.child;
    let sum = |f: fn(&super::kernel::KernelPassStats) -> u64| child.passes.iter().map(f).sum();
    let major: u64 = sum(|p| p.major_faults);
    let swap_ins = [
        ("major_fault", major),
        ("pages_read", sum(|p| p.pswpin)),
        ("total", major),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let p = &run.probe;
    let guest = PathLatency {
        count: get_u64(p, &["steady", "faulted_accesses"]),
        p50: get_u64(p, &["steady", "fault_latency_ns", "p50"]),
        p90: get_u64(p, &["steady", "fault_latency_ns", "p90"]),
        p99: get_u64(p, &["steady", "fault_latency_ns", "p99"]),
        max: get_u64(p, &["steady", "fault_latency_ns", "max"]),
    };
    let host_limit_pages = child.guest_limit_bytes / 4096;
    let slack_pages = child.growth_allowance_bytes / 4096;
    let peak_resident_pages = r.cgroup_peak_bytes.saturating_sub(child.vmm_overhead_bytes) / 4096;
    let end_resident_pages = child
        .at_run_end
        .as_ref()
        .map_or(0, |e| e.test_ram_resident_bytes / 4096);
    SwapSummary {
        host_swap: "kernel".into(),
        host_limit_bytes: child.guest_limit_bytes,
        host_limit_pages,
        slack_pages,
        evictions: sum(|p| p.pswpout),
        swap_ins,
        peak_resident_pages,
        end_resident_pages,
        limit_held: limit_held(
            peak_resident_pages,
            end_resident_pages,
            host_limit_pages,
            slack_pages,
        ),
        write_errors: 0,
        limit_overshoots: 0,
        store_bytes: child.at_run_end.as_ref().map_or(0, |e| e.vm_swap_bytes),
        integrity_errors: get_u64(p, &["integrity", "bad_tags"])
            + get_u64(p, &["integrity", "pages_mismatched"]),
        fault_latency_ns: [("guest".to_string(), guest)].into_iter().collect(),
        store_nodes: Vec::new(),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn render_common(s: &mut String, m: &SwapSummary) {
    if let Some(why) = limit_failure(m) {
        let _ = writeln!(s, "  FAILED: {why}");
    }
    let ins: Vec<String> = m
        .swap_ins
        .iter()
        .filter(|(k, _)| k.as_str() != "total")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        s,
        "  evictions {}, swap-ins {} ({}), store {}, integrity errors {}",
        m.evictions,
        m.swap_ins.get("total").copied().unwrap_or(0),
        ins.join(", "),
        mib(m.store_bytes),
        m.integrity_errors
    );
    if !m.store_nodes.is_empty() {
        let nodes: Vec<String> = m
            .store_nodes
            .iter()
            .map(|n| format!("{} {}", n.node, n.pages))
            .collect();
        let _ = writeln!(s, "  store pages per node: {}", nodes.join(", "));
    }
    let _ = writeln!(
        s,
        "  {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "fault latency", "count", "p50", "p90", "p99", "max"
    );
    for (k, l) in &m.fault_latency_ns {
        let _ = writeln!(
            s,
            "  {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
            k,
            l.count,
            fmt_ns(l.p50),
            fmt_ns(l.p90),
            fmt_ns(l.p99),
            fmt_ns(l.max)
        );
    }
}

/// Text section for a swapped run.
pub fn render_uffd(run: &UffdRun, m: &SwapSummary) -> String {
    let mut s = String::new();
    let st = &run.swap.final_status;
    let _ = writeln!(
        s,
        "\nhost swap: uffd (store {}, policy {}{})",
        st.store,
        st.policy,
        if st.passive {
            ", passive: test RAM fits within limit + slack, nothing registered"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "  limit {} ({} pages) + slack {} pages; peak resident {} pages{}",
        ByteSize(m.host_limit_bytes),
        m.host_limit_pages,
        m.slack_pages,
        m.peak_resident_pages,
        run.swap
            .scanned_resident_pages
            .map(|n| format!(" (page tables at the end: {n})"))
            .unwrap_or_default()
    );
    render_common(&mut s, m);
    let _ = writeln!(
        s,
        "  {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "pass", "faults", "evicted", "store", "minor", "prefetch", "resident"
    );
    for p in &run.swap.passes {
        let g = |k: &str| p.swap_ins.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "  {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            p.pass,
            p.faults,
            p.evictions,
            g("store"),
            g("minor"),
            g("prefetch_hit"),
            p.resident_pages
        );
    }
    let c = &st.counters;
    let _ = writeln!(
        s,
        "  after the host's check of every page: {} swap-ins, {} silent writes avoided, {} zero pages, {} write errors, {} fatal errors",
        st.swap_ins(),
        c.silent_writes_avoided,
        c.zero_pages,
        c.write_errors,
        st.fatal_errors
    );
    s
}

/// Text section for a kernel-swap run.
pub fn render_kernel(run: &KernelRun, m: &SwapSummary) -> String {
    let mut s = String::new();
    let r = &run.report;
    let c = &r.child;
    let _ = writeln!(
        s,
        "\nhost swap: kernel (cgroup {:?} {}, {} {} of {}; both removed)",
        r.cgroup_version,
        r.cgroup.display(),
        r.swap_kind,
        r.swap_device.display(),
        mib(r.swap_bytes)
    );
    let _ = writeln!(
        s,
        "  cgroup limit {} = guest {} + VMM overhead {} + growth allowance {}",
        mib(c.cgroup_limit_bytes),
        ByteSize(c.guest_limit_bytes),
        mib(c.vmm_overhead_bytes),
        mib(c.growth_allowance_bytes)
    );
    if let Some(e) = &c.at_run_end {
        let _ = writeln!(
            s,
            "  cgroup peak {}; at the end test RAM {} + VMM {} = {}, {} in swap",
            mib(r.cgroup_peak_bytes),
            mib(e.test_ram_resident_bytes),
            mib(e.vmm_bytes),
            mib(e.cgroup_usage_bytes),
            mib(e.vm_swap_bytes)
        );
    }
    render_common(&mut s, m);
    let _ = writeln!(
        s,
        "  {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "pass", "major", "minor", "pswpin", "pswpout", "resident"
    );
    for p in &c.passes {
        let _ = writeln!(
            s,
            "  {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}",
            p.pass, p.major_faults, p.minor_faults, p.pswpin, p.pswpout, p.test_ram_resident_pages
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(peak: u64, write_errors: u64, overshoots: u64) -> SwapSummary {
        let end = peak;
        SwapSummary {
            host_swap: "uffd".into(),
            host_limit_bytes: 16 << 20,
            host_limit_pages: 4096,
            slack_pages: 256,
            peak_resident_pages: peak,
            end_resident_pages: end,
            limit_held: limit_held(peak, end, 4096, 256),
            write_errors,
            limit_overshoots: overshoots,
            ..Default::default()
        }
    }

    #[test]
    fn the_limit_is_held_up_to_limit_plus_slack() {
        assert!(limit_held(0, 0, 4096, 256));
        assert!(limit_held(4096 + 256, 4096 + 256, 4096, 256));
        assert!(!limit_held(4096 + 257, 4096 + 257, 4096, 256));
        assert!(limit_held(u64::MAX, u64::MAX, u64::MAX, 1));
        // An overshoot the swapper recovered from by the end (store writes failed for
        // a while, then worked) holds.
        assert!(limit_held(6000, 4000, 4096, 256));
        assert_eq!(limit_failure(&summary(4352, 0, 0)), None);
    }

    #[test]
    fn an_unheld_limit_names_the_peak_the_limit_and_the_failed_writes() {
        let m = summary(16384, 12000, 12100);
        let why = limit_failure(&m).expect("not held");
        assert!(
            why.starts_with(
                "the host limit was not held: resident peaked at 16384 pages against a limit of 4096 + 256 slack, still 16384 at the end"
            ),
            "{why}"
        );
        assert!(why.contains("12000 store writes failed"), "{why}");
        // Without write errors, the overshoots are the cause named.
        let why = limit_failure(&summary(5000, 0, 7)).expect("not held");
        assert!(
            why.contains("7 times the swapper found no page it could evict"),
            "{why}"
        );
        assert!(!why.contains("store writes"), "{why}");
    }

    #[test]
    fn the_json_says_whether_the_limit_held() {
        let j = serde_json::to_value(summary(16384, 3, 4)).unwrap();
        assert_eq!(j["limit_held"], false);
        assert_eq!(j["peak_resident_pages"], 16384);
        assert_eq!(j["host_limit_pages"], 4096);
        assert_eq!(j["slack_pages"], 256);
        assert_eq!(j["write_errors"], 3);
        assert_eq!(j["limit_overshoots"], 4);
        // A summary written before the field existed reads as held.
        let mut old = j.clone();
        let o = old.as_object_mut().unwrap();
        o.remove("limit_held");
        o.remove("end_resident_pages");
        o.remove("write_errors");
        o.remove("limit_overshoots");
        let back: SwapSummary = serde_json::from_value(old).unwrap();
        assert!(back.limit_held);
        assert_eq!(back.write_errors, 0);
    }

    #[test]
    fn the_text_reports_an_unheld_limit() {
        let mut s = String::new();
        render_common(&mut s, &summary(4000, 0, 0));
        assert!(!s.contains("FAILED"), "{s}");
        let mut s = String::new();
        render_common(&mut s, &summary(16384, 9, 9));
        assert!(
            s.contains("FAILED: the host limit was not held: resident peaked at 16384 pages"),
            "{s}"
        );
    }
}

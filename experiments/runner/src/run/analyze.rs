//! From a raw run ([`RawRun`]) to its [`RunResult`]: guest swap requests
//! joined with the host faults their device thread raised, channel lines
//! sorted into samples and workload totals, latencies and anomaly counters;
//! and the result's environment block ([`environment`]).

use std::collections::BTreeMap;

use swapper::{FaultPath, FaultRecord, ThreadKind};
use vmm::virtio::blk::{BlkKind, BlkRecord};

use super::join::{self, BlkSpan, HostFault, Joined};
use super::machine::RawRun;
use super::result::{self, GuestReport, PathLatency, RunResult, STORE_READ_PATH};
use scenario::Scenario;

/// Whether a host fault brought data back from the store (a host swap-in).
fn is_swap_in(r: &FaultRecord) -> bool {
    matches!(
        r.path,
        FaultPath::Store | FaultPath::PrefetchHit | FaultPath::Named
    )
}

/// Sectors of the swap area's first page: its header, which `mkswap` writes
/// at boot and the kernel never swaps a page out to.
const SWAP_HEADER_SECTORS: u64 = 8;

/// The blk requests that move swapped pages, as join spans: reads, and writes
/// other than the swap header's (a fault while `mkswap` writes it is no
/// double paging; it counts as a device fault outside requests).
fn spans(requests: &[BlkRecord]) -> Vec<BlkSpan> {
    requests
        .iter()
        .filter(|r| match r.kind {
            BlkKind::Read => true,
            BlkKind::Write => r.sector + u64::from(r.bytes).div_ceil(512) > SWAP_HEADER_SECTORS,
            _ => false,
        })
        .map(BlkSpan::from)
        .collect()
}

/// Device-thread faults that swapped data in.
fn device_faults(faults: &[FaultRecord]) -> Vec<HostFault> {
    faults
        .iter()
        .filter(|f| matches!(f.thread, ThreadKind::Device(_)) && is_swap_in(f))
        .map(|f| HostFault {
            seq: f.seq,
            tid: f.tid,
            t_ns: f.t_read_ns,
            total_ns: f.total_ns as u64,
            page: f.page,
        })
        .collect()
}

/// Finds `key` in a channel line, at the top level or one object deep.
fn field(v: &serde_json::Value, key: &str) -> Option<u64> {
    if let Some(x) = v.get(key).and_then(|x| x.as_u64()) {
        return Some(x);
    }
    v.as_object()?
        .values()
        .find_map(|inner| inner.get(key).and_then(|x| x.as_u64()))
}

/// Sorts channel lines into workload results and vmstat samples.
fn guest_report(channel: &[(f64, String)]) -> GuestReport {
    let mut g = GuestReport::default();
    for (t, line) in channel {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
            g.bad_lines += 1;
            continue;
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("host_t_s".into(), (*t).into());
        }
        if field(&v, "pswpout").is_some() {
            g.samples.push(v);
        } else {
            g.workload.push(v);
        }
    }
    // The workload's summary carries the totals; per-pass lines do not.
    if let Some(last) = g
        .workload
        .iter()
        .rev()
        .find(|v| v.get("pages_verified").is_some())
    {
        g.pages_verified = field(last, "pages_verified").unwrap_or(0);
        g.integrity_errors = field(last, "integrity_errors").unwrap_or(0);
    }
    g
}

/// The sandbox/native environment block of a result.
pub fn environment() -> serde_json::Value {
    let (kvm, _) = sandbox::host::kvm_flavour();
    let sandbox = sandbox::in_sandbox();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    // Inside the sandbox /dev/kvm is L1's kvm_amd (it looks like hardware KVM)
    // and the kernel is L1's: say so rather than report them as the host's.
    let (kvm, kernel_label) = if sandbox {
        (
            "nested: kvm_amd in the L1 sandbox VM under QEMU TCG".to_string(),
            "L1 kernel",
        )
    } else {
        (format!("{kvm:?}").to_lowercase(), "host kernel")
    };
    serde_json::json!({
        "kvm": kvm,
        "sandbox": sandbox,
        "timing_grade": !sandbox,
        "note": sandbox::environment_note(),
        "host_kernel": format!("{kernel} ({kernel_label})"),
    })
}

/// How the run ended (`ok` or why not) and the metric its workload gave.
fn outcome_and_metric(spec: &Scenario, raw: &RawRun) -> (String, Option<f64>) {
    let command = !spec.workload.known_working_set();
    let outcome = match crate::boot::verdict(&raw.guest, true) {
        Ok(0) if raw.fatal.is_empty() => "ok".to_string(),
        Ok(code) if raw.fatal.is_empty() && command => format!(
            "the guest command exited with status {code}{}",
            last_output(&raw.guest.marks.output)
        ),
        Ok(code) if raw.fatal.is_empty() => format!("the guest workload exited with status {code}"),
        Ok(_) => format!("host swapper: {}", raw.fatal[0]),
        Err(e) => e.message.lines().next().unwrap_or_default().to_string(),
    };
    // A run that ended well but whose swapper could not hold the host limit
    // failed all the same: its numbers were not measured under that limit.
    let outcome = match raw.swapper.as_ref().and_then(result::limit_failure) {
        Some(why) if outcome == "ok" => why,
        _ => outcome,
    };
    // The metric: a run whose number cannot be read did not measure it.
    let (metric, outcome) = match spec.workload.metric_pattern() {
        Some(pattern) if outcome == "ok" => {
            match scenario::metric::extract(&pattern, &raw.guest.marks.output) {
                Ok(v) => (Some(v), outcome),
                Err(why) => (
                    None,
                    format!("{why}{}", last_output(&raw.guest.marks.output)),
                ),
            }
        }
        _ => (None, outcome),
    };
    (outcome, metric)
}

/// Every path's latencies, ns: guest swap requests, host swap-ins by vCPU and
/// by device, double paging, named pages; and the store's read inside each
/// store swap-in.
fn latency_samples(raw: &RawRun, joined: &Joined) -> [(&'static str, Vec<u64>); 7] {
    let reqs = |k: BlkKind| raw.requests.iter().filter(move |r| r.kind == k);
    let host_by = |device: bool| {
        raw.faults
            .iter()
            .filter(move |f| {
                // Unregistered threads are kernel threads: KVM's async page
                // fault workers fault guest RAM in on a vCPU's behalf (even
                // with the guest's `no-kvmapf`, KVM halts the vCPU and lets a
                // kworker take the fault), so they count with the vCPUs.
                is_swap_in(f)
                    && matches!(f.thread, ThreadKind::Device(_)) == device
                    && !matches!(f.thread, ThreadKind::Vmm)
            })
            .map(|f| f.total_ns as u64)
    };
    let named = raw.faults.iter().filter(|f| f.path == FaultPath::Named);
    [
        (
            "guest_swap_in",
            reqs(BlkKind::Read).map(|r| r.service_ns).collect(),
        ),
        (
            "guest_swap_out",
            reqs(BlkKind::Write).map(|r| r.service_ns).collect(),
        ),
        ("host_swap_in_vcpu", host_by(false).collect()),
        (
            "host_swap_in_device",
            match &raw.kernel {
                // Timed by their request, like the double paging below.
                Some(_) => joined
                    .double_paging
                    .iter()
                    .chain(&joined.stale_reads)
                    .map(|e| e.fault_ns)
                    .collect(),
                None => host_by(true).collect(),
            },
        ),
        (
            "double_paging",
            joined.double_paging.iter().map(|e| e.fault_ns).collect(),
        ),
        // The false-anonymity mitigation's path: named pages read back from
        // their disk block, by any thread.
        (
            "host_swap_in_named",
            named.map(|f| f.total_ns as u64).collect(),
        ),
        // Where a store swap-in's time goes: the store's own read (a Redis
        // GET, a file pread, a copy or decompression), by any thread.
        (
            STORE_READ_PATH,
            raw.faults
                .iter()
                .filter(|f| f.path == FaultPath::Store)
                .map(|f| u64::from(f.store_read_ns))
                .collect(),
        ),
    ]
}

/// Turns a raw run into its result.
pub fn analyze(spec: &Scenario, raw: &RawRun) -> RunResult {
    let (outcome, metric) = outcome_and_metric(spec, raw);
    let guest = guest_report(&raw.channel);
    let last = guest.samples.last();
    // Under the kernel swapper there are no fault records: the blk worker's
    // own major faults during each request stand for them.
    let joined: Joined = match &raw.kernel {
        Some(_) => join::from_major_faults(&spans(&raw.requests)),
        None => join::join(&spans(&raw.requests), &device_faults(&raw.faults)),
    };
    let reqs = |k: BlkKind| raw.requests.iter().filter(move |r| r.kind == k);
    let samples = latency_samples(raw, &joined);
    let mut latency: BTreeMap<String, PathLatency> = samples
        .iter()
        .map(|(k, v)| (k.to_string(), PathLatency::of(v.iter().copied())))
        .collect();
    let kernel_swap = raw.kernel.clone().map(|mut k| {
        let vcpu: u64 = raw
            .host_cpu
            .iter()
            .filter(|t| t.name.starts_with("vcpu"))
            .map(|t| t.major_faults)
            .sum();
        let device: u64 = raw.requests.iter().map(|r| u64::from(r.major_faults)).sum();
        let peak = raw.timeline.iter().map(|s| s.host_resident_bytes).max();
        k.attribute(vcpu, device, peak.unwrap_or(0));
        // Counted, not timed: the kernel does not time a vCPU's faults.
        latency.insert(
            "host_swap_in_vcpu".into(),
            PathLatency {
                count: vcpu,
                ..PathLatency::default()
            },
        );
        k
    });
    let latency_samples = samples
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), result::thin(v)))
        .collect();
    let c = raw
        .swapper
        .as_ref()
        .map(|s| s.counters.clone())
        .unwrap_or_default();
    let mut anomalies = BTreeMap::new();
    anomalies.insert(
        "stale_swap_reads".to_string(),
        joined.stale_reads.len() as u64,
    );
    anomalies.insert("silent_writes_avoided".to_string(), c.silent_writes_avoided);
    anomalies.insert("zero_pages_not_stored".to_string(), c.zero_pages);
    anomalies.insert(
        "device_faults_outside_requests".to_string(),
        joined.unmatched,
    );
    anomalies.insert("trace_records_dropped".to_string(), raw.dropped);
    RunResult {
        scenario: spec.name.clone(),
        outcome,
        environment: {
            let mut e = environment();
            if let (Some(k), Some(o)) = (&raw.guest_kernel, e.as_object_mut()) {
                o.insert("guest_kernel".into(), k.clone().into());
            }
            e
        },
        spec: spec.clone(),
        runtime_s: (raw.guest.ended - raw.guest.started).as_secs_f64(),
        guest_pswpin: last.and_then(|v| field(v, "pswpin")).unwrap_or(0),
        guest_pswpout: last.and_then(|v| field(v, "pswpout")).unwrap_or(0),
        swap_disk_reads: reqs(BlkKind::Read).count() as u64,
        swap_disk_writes: reqs(BlkKind::Write).count() as u64,
        host_evictions: raw.kernel.as_ref().map_or(c.evictions, |k| k.swap_outs),
        host_swap_ins: raw
            .kernel
            .as_ref()
            .map_or(c.swapin_store + c.prefetch_hits + c.swapin_named, |k| {
                k.swap_ins
            }),
        double_paging_events: joined.double_paging.len() as u64,
        stale_swap_reads: joined.stale_reads.len() as u64,
        pages_verified: guest.pages_verified,
        integrity_errors: guest.integrity_errors + c.integrity_errors,
        latency,
        latency_samples,
        anomalies,
        swapper: raw.swapper.clone(),
        store_nodes: raw.store_nodes.clone(),
        blk: raw.blk.clone(),
        balloon: raw.balloon.clone(),
        guest,
        timeline: raw.timeline.clone(),
        double_paging: joined.double_paging.into_iter().take(10_000).collect(),
        vm: raw
            .guest
            .report
            .vm
            .as_ref()
            .and_then(|v| serde_json::to_value(v).ok()),
        metric_name: metric.map(|_| spec.workload.metric_name().to_string()),
        metric,
        root_disk: raw.root_blk.clone(),
        host_cpu: raw.host_cpu.clone(),
        kernel_swap,
    }
}

/// The last lines of a command's output, for a failure message (the whole
/// output is in the run's console log).
fn last_output(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "; it printed nothing".to_string();
    }
    let tail = &lines[lines.len().saturating_sub(3)..];
    let text: String = tail.join(" / ").chars().take(300).collect();
    format!("; its last output: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swap_header_write_is_no_swap_out() {
        let rec = |seq, kind, sector, bytes| BlkRecord {
            seq,
            tid: 1,
            kind,
            sector,
            bytes,
            start_ns: 0,
            service_ns: 10,
            status: 0,
            major_faults: 0,
        };
        let got: Vec<u64> = spans(&[
            rec(1, BlkKind::Write, 0, 4096), // mkswap's header
            rec(2, BlkKind::Write, 8, 4096), // the first swap slot
            rec(3, BlkKind::Write, 0, 8192), // header and a slot: kept
            rec(4, BlkKind::Read, 0, 4096),  // swapon reads the header
        ])
        .iter()
        .map(|s| s.seq)
        .collect();
        assert_eq!(got, [2, 3, 4]);
    }

    #[test]
    fn channel_lines_sort_into_samples_and_workload_totals() {
        let ch: Vec<(f64, String)> = [
            r#"{"kind":"vmstat","vmstat":{"pswpin":1,"pswpout":2}}"#,
            r#"{"kind":"touch","pass":1}"#,
            "garbage",
            r#"{"kind":"touch_done","pages_verified":100,"integrity_errors":0}"#,
            r#"{"kind":"vmstat","vmstat":{"pswpin":5,"pswpout":9}}"#,
        ]
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64, s.to_string()))
        .collect();
        let g = guest_report(&ch);
        assert_eq!(g.samples.len(), 2);
        assert_eq!(g.workload.len(), 2);
        assert_eq!(g.bad_lines, 1);
        assert_eq!(g.pages_verified, 100);
        assert_eq!(field(g.samples.last().unwrap(), "pswpout"), Some(9));
    }
}

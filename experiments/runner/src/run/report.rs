//! From a matrix of scenario runs ([`RunResult`]s) to the report's plain data
//! ([`MatrixResults`]) and from there to `report.md` and its SVG plots
//! ([`write_report`], rendered by [`report::render_all`]).
//!
//! The conversion maps this runner's counters to the report's well-known
//! names ([`counters`]); what it measures beyond them goes under "other
//! counters". A counter is left out (shown as `—`, not measured) when the
//! scenario could not produce it, e.g. host swap-ins without host swapping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use super::clock::rfc3339;
use super::result::{GuestReport, HostSample, RunResult};
use report::data::{
    self, counters, Environment, LatencySamples, LatencySummary, MatrixResults, Outcome,
    ScenarioResults, TimelineSample,
};
use report::markdown::Link;
use report::progress::RunEnd;
use scenario::Scenario;

pub mod progress;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A report file could not be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The matrix as the report names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatrixInfo {
    /// What was run: the matrix file or the scenario names given.
    pub name: String,
    /// One line for the report (the matrix file's description).
    pub description: String,
    /// Notes on how the matrix ran (e.g. that it was resumed), shown under it.
    pub notes: Vec<String>,
}

/// Results files in the output directory `report.md` links to when present.
pub const LINKED_FILES: &[(&str, &str)] = &[
    ("results.json", "every run's result (results.json)"),
    ("trace.json", "trace of every run for Perfetto (trace.json)"),
];

/// Outcome text [`super::analyze::analyze`] writes for a run that timed out.
const TIMEOUT_TEXT: &str = "did not power off within";

/// The report's outcome for a run: failed when it did not end `ok`, when
/// any page came back with wrong content, or when the host swapper did not
/// hold its limit (its numbers would not count).
pub fn outcome(r: &RunResult) -> Outcome {
    if r.outcome != "ok" {
        if r.outcome.contains(TIMEOUT_TEXT) {
            return Outcome::TimedOut;
        }
        return Outcome::Failed(r.outcome.clone());
    }
    if r.integrity_errors > 0 {
        return Outcome::Failed(format!(
            "{} pages came back with wrong content (integrity errors)",
            r.integrity_errors
        ));
    }
    if let Some(why) = r.swapper.as_ref().and_then(super::result::limit_failure) {
        return Outcome::Failed(why);
    }
    Outcome::Ok
}

/// `key` at the top level of `v` or in its `metrics` object.
fn json_u64(v: &Value, key: &str) -> Option<u64> {
    v.get(key)
        .or_else(|| v.get("metrics").and_then(|m| m.get(key)))
        .and_then(Value::as_u64)
}

/// Userspace VM exits (all reasons) from the result's `vm` block
/// (`vmm::VmReport`: `exits.by_reason.REASON.count`).
fn vm_exits(vm: &Value) -> Option<u64> {
    let by_reason = vm.get("exits")?.get("by_reason")?.as_object()?;
    Some(
        by_reason
            .values()
            .filter_map(|c| c.get("count").and_then(Value::as_u64))
            .sum(),
    )
}

/// A run's counters under the report's names (see the module docs).
pub fn run_counters(r: &RunResult) -> BTreeMap<String, u64> {
    let mut c = BTreeMap::new();
    let mut put = |k: &str, v: u64| {
        c.insert(k.to_string(), v);
    };
    let host = r.spec.host.is_some() || r.swapper.is_some();
    let disk = r.blk.is_some() || r.spec.guest.swap.is_some();
    if host {
        put(counters::HOST_SWAP_INS, r.host_swap_ins);
        put(counters::HOST_EVICTIONS, r.host_evictions);
    }
    if !r.guest.samples.is_empty() {
        put(counters::GUEST_SWAP_INS, r.guest_pswpin);
        put(counters::GUEST_SWAP_OUTS, r.guest_pswpout);
    }
    if host && disk {
        put(counters::DOUBLE_PAGING, r.double_paging_events);
        put(counters::STALE_READS, r.stale_swap_reads);
    }
    if disk {
        put("swap_disk_reads", r.swap_disk_reads);
        put("swap_disk_writes", r.swap_disk_writes);
    }
    put("pages_verified", r.pages_verified);
    put("integrity_errors", r.integrity_errors);
    if let Some(s) = &r.swapper {
        let k = &s.counters;
        put(counters::HOST_FAULTS, k.faults);
        put(counters::SILENT_WRITES, k.silent_writes);
        put(counters::DECAYED_SEQUENTIALITY, k.decayed_sequential_reads);
        put(counters::FALSE_READS, k.false_reads);
        put(counters::FALSE_ANONYMITY, k.false_anonymity);
        put("host_swap_ins_named", k.swapin_named);
        put("named_evictions", k.named_evictions);
        put("named_readahead", k.named_readahead);
        put("named_rescues", k.named_rescues);
        put("mirrors_registered", k.mirrors_registered);
        put("silent_writes_avoided", k.silent_writes_avoided);
        put("sequential_store_reads", k.sequential_store_reads);
        put("false_reads_avoided", k.false_reads_avoided);
        put("host_swap_ins_minor", k.swapin_minor);
        put("host_zero_fills", k.swapin_zero);
        put("peak_resident_pages", s.peak_resident_pages);
    }
    if let Some(k) = &r.kernel_swap {
        put("peak_resident_pages", k.guest_resident_peak_bytes / 4096);
        put("kernel_swap_ins_vcpu", k.swap_ins_vcpu);
        put("kernel_swap_ins_device", k.swap_ins_device);
        put("kernel_swap_ins_unattributed", k.swap_ins_other);
        put("kernel_cgroup_limit_bytes", k.cgroup_limit_bytes);
        put("kernel_cgroup_peak_bytes", k.cgroup_peak_bytes);
        put("kernel_vmm_overhead_bytes", k.vmm_overhead_bytes);
    }
    if let Some(b) = &r.balloon {
        if let Some(v) = json_u64(b, "inflate_pages") {
            put(counters::BALLOON_INFLATED, v);
        }
        if let Some(v) = json_u64(b, "deflate_pages") {
            put(counters::BALLOON_DEFLATED, v);
        }
        if let Some(v) = json_u64(b, "reported_pages") {
            put("balloon_reported_pages", v);
        }
    }
    if let Some(d) = &r.root_disk {
        for (k, name) in [
            ("bytes_read", "root_disk_read_bytes"),
            ("bytes_written", "root_disk_write_bytes"),
        ] {
            if let Some(v) = json_u64(d, k) {
                put(name, v);
            }
        }
    }
    if let Some(v) = r.vm.as_ref().and_then(vm_exits) {
        put(counters::VM_EXITS, v);
    }
    // The runner's other anomaly counts, unless already shown under a
    // report name above.
    for (k, v) in &r.anomalies {
        let shown = matches!(k.as_str(), "stale_swap_reads" | "silent_writes_avoided");
        // Host-swap anomalies mean nothing without host swapping.
        let host_only = matches!(
            k.as_str(),
            "zero_pages_not_stored" | "device_faults_outside_requests"
        );
        if !shown && (host || !host_only) {
            c.entry(k.clone()).or_insert(*v);
        }
    }
    c
}

/// Latency percentiles per path (paths without events left out).
pub fn run_latency(r: &RunResult) -> BTreeMap<String, LatencySummary> {
    r.latency
        .iter()
        .filter(|(_, l)| l.count > 0)
        .map(|(k, l)| {
            (
                k.clone(),
                LatencySummary {
                    count: l.count,
                    p50_ns: l.p50_ns,
                    p90_ns: l.p90_ns,
                    p99_ns: l.p99_ns,
                    max_ns: l.max_ns,
                },
            )
        })
        .collect()
}

/// Per-second rate of a counter between two samples (`None` when time did
/// not advance or the counter went backwards, e.g. after a guest reset).
fn rate(prev: u64, next: u64, dt_s: f64) -> Option<f64> {
    (dt_s > 0.0 && next >= prev).then(|| (next - prev) as f64 / dt_s)
}

/// The host's samples as timeline points: resident bytes (with host
/// swapping), balloon size (with a balloon), host swap rates.
fn host_timeline(samples: &[HostSample], host: bool, balloon: bool) -> Vec<TimelineSample> {
    let mut prev: Option<&HostSample> = None;
    samples
        .iter()
        .map(|s| {
            let mut t = TimelineSample {
                t_s: s.t_s,
                host_resident_bytes: host.then_some(s.host_resident_bytes),
                balloon_bytes: balloon.then_some(s.balloon_bytes),
                ..TimelineSample::default()
            };
            if let (true, Some(p)) = (host, prev) {
                let dt = s.t_s - p.t_s;
                t.host_swap_in_per_s = rate(p.host_swap_ins, s.host_swap_ins, dt);
                t.host_swap_out_per_s = rate(p.host_evictions, s.host_evictions, dt);
                if s.host_named_ins > 0 {
                    t.host_named_in_per_s = rate(p.host_named_ins, s.host_named_ins, dt);
                }
            }
            prev = Some(s);
            t
        })
        .collect()
}

/// One guest sample (a `swaplab-guest report` line, see
/// `workloads::guest::report`): host arrival time, guest clock, memory and
/// swap counters.
#[derive(Debug, Clone, Copy, PartialEq)]
struct GuestSample {
    t_s: f64,
    mono_ns: Option<u64>,
    free: Option<u64>,
    available: Option<u64>,
    pswpin: Option<u64>,
    pswpout: Option<u64>,
}

fn guest_sample(v: &Value) -> Option<GuestSample> {
    let u = |k: &str| v.get(k).and_then(Value::as_u64);
    Some(GuestSample {
        t_s: v.get("host_t_s").and_then(Value::as_f64)?,
        mono_ns: u("monotonic_ns"),
        free: u("mem_free_kib").map(|k| k * 1024),
        available: u("mem_available_kib").map(|k| k * 1024),
        pswpin: u("pswpin"),
        pswpout: u("pswpout"),
    })
}

/// The guest's samples as timeline points: free and available memory, and
/// swap rates from the differences of `pswpin`/`pswpout` over the guest's
/// own clock (its samples' arrival on the host jitters with the channel).
fn guest_timeline(g: &GuestReport) -> Vec<TimelineSample> {
    let mut prev: Option<GuestSample> = None;
    let mut out = Vec::new();
    for s in g.samples.iter().filter_map(guest_sample) {
        let mut t = TimelineSample {
            t_s: s.t_s,
            guest_free_bytes: s.free,
            guest_available_bytes: s.available,
            ..TimelineSample::default()
        };
        if let Some(p) = prev {
            let dt = match (p.mono_ns, s.mono_ns) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
                _ => s.t_s - p.t_s,
            };
            let r = |a: Option<u64>, b: Option<u64>| rate(a?, b?, dt);
            t.guest_swap_in_per_s = r(p.pswpin, s.pswpin);
            t.guest_swap_out_per_s = r(p.pswpout, s.pswpout);
        }
        prev = Some(s);
        out.push(t);
    }
    out
}

/// The run's timeline: host and guest samples merged in time order (each
/// point carries what its side measured).
pub fn run_timeline(r: &RunResult) -> Vec<TimelineSample> {
    let host = r.spec.host.is_some() || r.swapper.is_some();
    let mut t = host_timeline(&r.timeline, host, r.balloon.is_some());
    t.extend(guest_timeline(&r.guest));
    t.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    t
}

/// One repetition in the report's terms.
pub fn report_run(r: &RunResult, repetition: u32) -> data::RunResult {
    data::RunResult {
        repetition,
        outcome: outcome(r),
        runtime_s: r.runtime_s,
        counters: run_counters(r),
        latency: run_latency(r),
        samples: r
            .latency_samples
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), LatencySamples::Raw(v.clone())))
            .collect(),
        timeline: run_timeline(r),
        metric: r.metric.map(|value| report::data::Metric {
            name: r.metric_name.clone().unwrap_or_else(|| "metric".into()),
            value,
            lower_is_better: r
                .spec
                .workload
                .application()
                .is_none_or(|a| a.lower_is_better),
        }),
    }
}

/// Where `spec` sits in an application experiment, `base_mem` being the
/// guest memory of its application's unpressured baseline: the arrangement
/// from its configuration (a balloon; host swap with or without
/// mitigations; a smaller guest that swaps itself; else the baseline) and
/// the pressure, 1 − the host-resident budget (the host limit, or the
/// smaller guest's RAM) / `base_mem`.
pub fn experiment(spec: &Scenario, base_mem: u64) -> Option<report::data::Experiment> {
    let app = spec.workload.application()?;
    let mem = spec.guest.mem.bytes();
    let (arrangement, budget) = match (&spec.host, &spec.balloon.policy) {
        (Some(h), scenario::BalloonPolicy::Manual { .. }) => ("balloon", h.limit.bytes()),
        (Some(h), _) if !h.mitigations.is_empty() => ("host-swap-mitigated", h.limit.bytes()),
        (Some(h), _) => ("host-swap", h.limit.bytes()),
        (None, _) if mem < base_mem => ("guest-swap", mem),
        (None, _) => ("baseline", base_mem),
    };
    let pressure = if base_mem == 0 {
        0.0
    } else {
        (1.0 - budget as f64 / base_mem as f64).max(0.0)
    };
    Some(report::data::Experiment {
        group: app.name.to_string(),
        arrangement: arrangement.to_string(),
        pressure: (pressure * 1000.0).round() / 1000.0,
    })
}

/// Per application, the guest memory of its unpressured baseline (the
/// largest guest among its runs without host swap or balloon).
fn baseline_mems(runs: &[RunResult]) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for r in runs {
        let s = &r.spec;
        if let Some(app) = s.workload.application() {
            if s.host.is_none() && matches!(s.balloon.policy, scenario::BalloonPolicy::None) {
                let m = out.entry(app.name).or_insert(0);
                *m = (*m).max(s.guest.mem.bytes());
            }
        }
    }
    out
}

/// The report's environment from a result's `environment` block
/// ([`super::analyze::environment`]) plus what only the matrix knows.
pub fn environment(env: &Value, guest_kernel: &str, date: &str, commit: &str) -> Environment {
    let s = |k: &str| env.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let sandbox = env.get("sandbox").and_then(Value::as_bool).unwrap_or(false);
    Environment {
        kvm: s("kvm"),
        sandbox,
        timing_grade: env
            .get("timing_grade")
            .and_then(Value::as_bool)
            .unwrap_or(!sandbox),
        host_kernel: s("host_kernel"),
        guest_kernel: guest_kernel.to_string(),
        date: date.to_string(),
        commit: commit.to_string(),
    }
}

/// Groups `runs` by scenario (in order of first appearance; repetitions
/// numbered in order within their scenario) into the report's data.
pub fn matrix_results(info: &MatrixInfo, env: Environment, runs: &[RunResult]) -> MatrixResults {
    let base = baseline_mems(runs);
    let mut scenarios: Vec<ScenarioResults> = Vec::new();
    for r in runs {
        let i =
            match scenarios.iter().position(|s| s.name == r.scenario) {
                Some(i) => i,
                None => {
                    scenarios.push(ScenarioResults {
                        name: r.scenario.clone(),
                        description: r.spec.description.clone(),
                        config: serde_json::to_value(&r.spec).unwrap_or(Value::Null),
                        runs: Vec::new(),
                        experiment: r.spec.workload.application().and_then(|a| {
                            experiment(&r.spec, base.get(a.name).copied().unwrap_or(0))
                        }),
                    });
                    scenarios.len() - 1
                }
            };
        let s = &mut scenarios[i];
        let rep = s.runs.len() as u32 + 1;
        s.runs.push(report_run(r, rep));
    }
    MatrixResults {
        matrix: info.name.clone(),
        description: info.description.clone(),
        notes: info.notes.clone(),
        environment: env,
        scenarios,
    }
}

/// A result for a run that could not run at all (the machine failed to set
/// up or crashed): it appears in results.json and the report as failed.
pub fn failed_run(spec: &Scenario, why: &str) -> RunResult {
    RunResult {
        scenario: spec.name.clone(),
        outcome: why.to_string(),
        environment: super::analyze::environment(),
        spec: spec.clone(),
        runtime_s: 0.0,
        guest_pswpin: 0,
        guest_pswpout: 0,
        swap_disk_reads: 0,
        swap_disk_writes: 0,
        host_evictions: 0,
        host_swap_ins: 0,
        double_paging_events: 0,
        stale_swap_reads: 0,
        pages_verified: 0,
        integrity_errors: 0,
        latency: BTreeMap::new(),
        latency_samples: BTreeMap::new(),
        anomalies: BTreeMap::new(),
        swapper: None,
        store_nodes: Vec::new(),
        blk: None,
        balloon: None,
        guest: GuestReport::default(),
        timeline: Vec::new(),
        double_paging: Vec::new(),
        vm: None,
        metric: None,
        metric_name: None,
        root_disk: None,
        host_cpu: Vec::new(),
        kernel_swap: None,
    }
}

/// The guest kernel of the image in `image_dir` (package, version and
/// release from its manifest); empty when unknown.
pub fn guest_kernel(image_dir: Option<&Path>) -> String {
    image_dir
        .map(workloads::image::kernel_label)
        .unwrap_or_default()
}

/// swaplab's source commit, `-dirty` when tracked files changed: asked of
/// git in the source tree it was built from; empty when that fails (no git,
/// no tree). Never takes git's index lock.
pub fn source_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_OPTIONAL_LOCKS", "0")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return String::new();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{head}-dirty"),
        _ => head,
    }
}

/// The progress display's end of a run.
pub fn run_end(o: &Outcome) -> RunEnd<'_> {
    match o {
        Outcome::Ok => RunEnd::Ok,
        Outcome::TimedOut => RunEnd::TimedOut,
        Outcome::Failed(why) => RunEnd::Failed(why.lines().next().unwrap_or_default()),
    }
}

/// What the command line ran: the matrix files or scenario names given
/// (none: the standard matrix), with the description of a single matrix.
pub fn matrix_info(names: &[String]) -> MatrixInfo {
    let names: Vec<String> = if names.is_empty() {
        vec!["default".to_string()]
    } else {
        names.to_vec()
    };
    let description = match names.as_slice() {
        [one] => scenario::load(one)
            .map(|m| m.description)
            .unwrap_or_default(),
        _ => String::new(),
    };
    MatrixInfo {
        name: names.join(" "),
        description,
        notes: Vec::new(),
    }
}

/// The guest kernels the runs recorded: one, or each with the scenarios that
/// ran it (a matrix whose scenarios name kernels, `guest.kernel`); empty when
/// no run recorded one.
pub fn run_kernels(results: &[RunResult]) -> String {
    let mut kernels: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in results {
        let Some(k) = r.environment["guest_kernel"]
            .as_str()
            .filter(|k| !k.is_empty())
        else {
            continue;
        };
        match kernels.iter_mut().find(|(x, _)| *x == k) {
            Some((_, names)) => {
                if !names.contains(&r.scenario.as_str()) {
                    names.push(&r.scenario);
                }
            }
            None => kernels.push((k, vec![&r.scenario])),
        }
    }
    if kernels.len() == 1 {
        return kernels[0].0.to_string();
    }
    kernels
        .iter()
        .map(|(k, names)| format!("{k} ({})", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The environment of a matrix that started at `started`: where its runs
/// ran (from their results, or this process when there are none), the
/// guest kernels (as the runs recorded them, else from the guest image,
/// looked up only when a run succeeded, so a missing image is not built just
/// for the report) and the commit.
pub fn matrix_environment(results: &[RunResult], started: SystemTime) -> Environment {
    let env = results
        .first()
        .map_or_else(super::analyze::environment, |r| r.environment.clone());
    let mut kernel = run_kernels(results);
    if kernel.is_empty() && results.iter().any(|r| r.outcome == "ok") {
        kernel = crate::boot::BootFiles::resolve(None, None, None, false)
            .ok()
            .map(|f| guest_kernel(f.image_dir.as_deref()))
            .unwrap_or_default();
    }
    let secs = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    environment(&env, &kernel, &rfc3339(secs), &source_commit())
}

/// Writes `report.md` and its SVG plots for `results` into `out_dir`
/// (linking [`LINKED_FILES`] that exist there); returns the files written.
pub fn write_report(
    out_dir: &Path,
    info: &MatrixInfo,
    env: Environment,
    results: &[RunResult],
) -> Result<Vec<PathBuf>, ReportError> {
    let matrix = matrix_results(info, env, results);
    let links: Vec<Link> = LINKED_FILES
        .iter()
        .filter(|(name, _)| out_dir.join(name).exists())
        .map(|(name, title)| Link {
            title: title.to_string(),
            path: name.to_string(),
        })
        .collect();
    let mut written = Vec::new();
    for f in report::render_all(&matrix, &links) {
        let path = out_dir.join(&f.name);
        std::fs::write(&path, f.contents).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests;

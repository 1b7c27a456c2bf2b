//! What a run produces: the plain data the reports are rendered from
//! (serialised as the results JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Well-known counter names. Runners use these keys in [`RunResult::counters`]
/// so the report can put them in their rows; any other name is shown under
/// "other counters".
pub mod counters {
    /// Host-side userfaultfd faults handled (all paths).
    pub const HOST_FAULTS: &str = "host_faults";
    /// Pages the host swapper read back from its store.
    pub const HOST_SWAP_INS: &str = "host_swap_ins";
    /// Pages the host swapper evicted.
    pub const HOST_EVICTIONS: &str = "host_evictions";
    /// Pages the guest swapped in from its swap disk.
    pub const GUEST_SWAP_INS: &str = "guest_swap_ins";
    /// Pages the guest swapped out to its swap disk.
    pub const GUEST_SWAP_OUTS: &str = "guest_swap_outs";
    /// Guest swap-outs whose source page the host had evicted (double paging).
    pub const DOUBLE_PAGING: &str = "double_paging";
    /// Store writes of pages unchanged since their last store copy.
    pub const SILENT_WRITES: &str = "silent_writes";
    /// Store reads of pages the guest then overwrote whole.
    pub const STALE_READS: &str = "stale_reads";
    /// Store reads of pages the guest then freed or zeroed.
    pub const FALSE_READS: &str = "false_reads";
    /// Guest-sequential runs of pages scattered in the host store.
    pub const DECAYED_SEQUENTIALITY: &str = "decayed_sequentiality";
    /// Evictions that wrote a page to the store although it held a copy of a
    /// disk block the guest had read (guest page cache swapped as if
    /// anonymous).
    pub const FALSE_ANONYMITY: &str = "false_anonymity";
    /// Pages the balloon took from the guest.
    pub const BALLOON_INFLATED: &str = "balloon_inflated_pages";
    /// Pages the balloon gave back.
    pub const BALLOON_DEFLATED: &str = "balloon_deflated_pages";
    /// VM exits to the VMM.
    pub const VM_EXITS: &str = "vm_exits";

    /// The rows of the report's comparison table: (group, key, label).
    pub const ROWS: &[(&str, &str, &str)] = &[
        ("faults", HOST_FAULTS, "host faults"),
        ("faults", HOST_SWAP_INS, "host swap-ins (pages)"),
        ("faults", HOST_EVICTIONS, "host evictions (pages)"),
        ("faults", GUEST_SWAP_INS, "guest swap-ins (pages)"),
        ("faults", GUEST_SWAP_OUTS, "guest swap-outs (pages)"),
        ("faults", DOUBLE_PAGING, "double-paging events"),
        ("faults", VM_EXITS, "VM exits"),
        ("host-swap anomalies", SILENT_WRITES, "silent writes"),
        ("host-swap anomalies", STALE_READS, "stale reads"),
        ("host-swap anomalies", FALSE_READS, "false reads"),
        (
            "host-swap anomalies",
            DECAYED_SEQUENTIALITY,
            "decayed sequentiality",
        ),
        ("host-swap anomalies", FALSE_ANONYMITY, "false anonymity"),
        ("balloon", BALLOON_INFLATED, "balloon inflated (pages)"),
        ("balloon", BALLOON_DEFLATED, "balloon deflated (pages)"),
    ];
}

/// Where and how the runs ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// `/dev/kvm` flavour: `hardware`, `pvm` or `none`.
    pub kvm: String,
    /// Whether the guests ran natively or in the nested sandbox.
    pub sandbox: bool,
    /// Whether timings mean anything (false in the nested sandbox, where every
    /// exit to L1 userspace costs tens of microseconds).
    pub timing_grade: bool,
    /// Host kernel release.
    pub host_kernel: String,
    /// Guest kernel (package and release).
    pub guest_kernel: String,
    /// When the matrix started (RFC 3339).
    pub date: String,
    /// swaplab's git commit (with `-dirty` if the tree had changes).
    pub commit: String,
}

/// Latency percentiles of one fault path in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Events measured.
    pub count: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 90th percentile, ns.
    pub p90_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
}

/// One histogram bucket: `count` events with latency in
/// (previous bucket's `upper_ns`, `upper_ns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound, ns (inclusive).
    pub upper_ns: u64,
    /// Events in the bucket.
    pub count: u64,
}

/// Latencies of one path for CDF plots: every sample, or a histogram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencySamples {
    /// Each event's latency, ns (any order).
    Raw(Vec<u64>),
    /// Buckets in increasing `upper_ns`.
    Buckets(Vec<Bucket>),
}

/// One point of a run's timeline. Absent values were not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineSample {
    /// Seconds since the guest started.
    pub t_s: f64,
    /// Guest RAM resident on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_resident_bytes: Option<u64>,
    /// Free memory as the guest reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_free_bytes: Option<u64>,
    /// Available memory as the guest reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_available_bytes: Option<u64>,
    /// Memory in the balloon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon_bytes: Option<u64>,
    /// Guest swap-ins, pages/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_swap_in_per_s: Option<f64>,
    /// Guest swap-outs, pages/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_swap_out_per_s: Option<f64>,
    /// Host swap-ins, pages/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_swap_in_per_s: Option<f64>,
    /// Host evictions, pages/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_swap_out_per_s: Option<f64>,
    /// Named pages read back from their disk blocks, pages/s (the
    /// false-anonymity mitigation; part of the host swap-ins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_named_in_per_s: Option<f64>,
}

/// How a repetition ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Outcome {
    /// Ran to completion; its numbers count.
    Ok,
    /// Failed (the cause chain).
    Failed(String),
    /// Stopped at the scenario's timeout.
    TimedOut,
}

/// One repetition of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// 1-based.
    pub repetition: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time of the workload, seconds.
    pub runtime_s: f64,
    /// Event counts (see [`counters`] for the well-known names).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Per fault path (`host_swap_in`, `guest_swap_in`, …).
    #[serde(default)]
    pub latency: BTreeMap<String, LatencySummary>,
    /// Per fault path, for CDF plots.
    #[serde(default)]
    pub samples: BTreeMap<String, LatencySamples>,
    /// Memory and swap rates over time.
    #[serde(default)]
    pub timeline: Vec<TimelineSample>,
    /// The application's metric, for runs of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
}

/// An application's number for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// `runtime_s`, `throughput_mb_s`, `requests_per_s`, …
    pub name: String,
    /// The value.
    pub value: f64,
    /// Whether smaller is better (a runtime) rather than larger (a rate).
    pub lower_is_better: bool,
}

/// Where a scenario sits in an application experiment: which application
/// (`group`), under which memory arrangement, at which pressure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// The application (runs of one group are compared with its baseline).
    pub group: String,
    /// `baseline`, `guest-swap`, `host-swap`, `host-swap-mitigated` or `balloon`.
    pub arrangement: String,
    /// The fraction of the baseline guest's memory the host takes away
    /// (0 for the baseline).
    pub pressure: f64,
}

impl RunResult {
    /// Whether the run's numbers count.
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

/// All repetitions of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResults {
    /// The scenario's name.
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// The scenario as run (`serde_json::to_value(&scenario)`).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Repetitions in order.
    pub runs: Vec<RunResult>,
    /// Its place in an application experiment, if it is part of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
}

impl ScenarioResults {
    /// The runs whose numbers count.
    pub fn ok_runs(&self) -> impl Iterator<Item = &RunResult> {
        self.runs.iter().filter(|r| r.ok())
    }

    /// The scenario's `top` keys and `host` keys, as one object: what must
    /// agree for two scenarios to be compared.
    pub fn setup(&self, top: &[&str], host: &[&str]) -> serde_json::Value {
        let c = &self.config;
        let h = c.get("host").cloned().unwrap_or(serde_json::Value::Null);
        let mut m = serde_json::Map::new();
        for k in top {
            m.insert((*k).into(), c.get(*k).cloned().unwrap_or_default());
        }
        for k in host {
            m.insert(format!("host.{k}"), h.get(*k).cloned().unwrap_or_default());
        }
        serde_json::Value::Object(m)
    }
}

/// A whole `swaplab run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixResults {
    /// The matrix file.
    pub matrix: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// Notes on how it ran (e.g. that it was resumed after an L1 panic).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Where it ran.
    pub environment: Environment,
    /// Per scenario, in matrix order.
    pub scenarios: Vec<ScenarioResults>,
}

impl MatrixResults {
    /// Every scenario `subject` accepts, with the first that `twin` accepts
    /// whose `setup` equals its own, in matrix order (a subject without one
    /// is left out): the pairs a report section compares.
    pub fn twins<K: PartialEq>(
        &self,
        subject: impl Fn(&ScenarioResults) -> bool,
        twin: impl Fn(&ScenarioResults) -> bool,
        setup: impl Fn(&ScenarioResults) -> K,
    ) -> Vec<(&ScenarioResults, &ScenarioResults)> {
        self.scenarios
            .iter()
            .filter(|s| subject(s))
            .filter_map(|s| {
                let t = self
                    .scenarios
                    .iter()
                    .find(|t| twin(t) && setup(t) == setup(s))?;
                Some((s, t))
            })
            .collect()
    }
}

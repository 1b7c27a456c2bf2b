//! The scenario model: what a scenario or matrix file says, once parsed and
//! validated (see the crate documentation for the file format).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use workloads::probe::Pattern;

use base::ByteSize;

/// Where something is in a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    /// The file's name (a path, or `scenarios/NAME.toml` for a built-in).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// One problem in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where (absent for scenarios built in code).
    pub pos: Option<Pos>,
    /// The dotted key concerned (`host.policy`), if any.
    pub key: Option<String>,
    /// What is wrong, and what to do about it.
    pub message: String,
}

/// Longest message a [`Diagnostic`] prints: it quotes the file's text (a key,
/// a value), which can be as long as the file.
pub const MAX_MESSAGE: usize = 400;

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.pos {
            write!(f, "{p}: ")?;
        }
        let m = &self.message;
        if m.len() <= MAX_MESSAGE {
            return f.write_str(m);
        }
        let mut end = MAX_MESSAGE;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}… ({} more bytes)", &m[..end], m.len() - end)
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file is not valid TOML.
    #[error("{0}")]
    Syntax(Diagnostic),
    /// An unknown key, a value of the wrong type or out of range.
    #[error("{0}")]
    Schema(Diagnostic),
    /// Values that are fine alone but make the run meaningless together.
    #[error("{0}")]
    Invalid(Diagnostic),
    /// A scenario file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Neither a file nor a built-in scenario.
    #[error("no scenario file or built-in scenario named {name:?} (built-in: {known})")]
    NotFound {
        /// What was asked for.
        name: String,
        /// The built-in names, comma-separated.
        known: String,
    },
}

impl ScenarioError {
    /// The diagnostic, for errors about a file's contents.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            Self::Syntax(d) | Self::Schema(d) | Self::Invalid(d) => Some(d),
            Self::Io { .. } | Self::NotFound { .. } => None,
        }
    }
}

/// `host.store_url = "private"`: the run starts its own `redis-server` on
/// loopback where the VMM runs, for that run only.
pub const PRIVATE_STORE_URL: &str = "private";

/// Where the host swapper keeps evicted pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreChoice {
    /// A swap file (`swapper::StoreKind::File`).
    File,
    /// Plain copies in memory.
    Memory,
    /// lz4-compressed copies in memory (zram-like).
    Lz4,
    /// Far memory: a Redis server or cluster at `host.store_url`.
    Redis,
}

/// A mitigation of one of the host-swap anomalies VSwapper (ASPLOS 2014) named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mitigation {
    /// Do not write back a page that is unchanged since it was read from the store.
    SilentWrites,
    /// Do not read a page from the store that the guest is about to overwrite whole.
    StaleReads,
    /// Do not read a page from the store that the guest frees or zeroes: the
    /// stale-reads install, plus free page reporting through a balloon (the
    /// guest reports free 32 KiB blocks, the host discards them, and a later
    /// fault on one is a zero fill).
    FalseReads,
    /// Keep guest-sequential pages sequential in the store (and read them ahead).
    DecayedSequentiality,
    /// Drop guest page-cache pages that have a copy on the guest's disk instead of swapping them.
    FalseAnonymity,
}

impl Mitigation {
    /// Every mitigation with its name in scenario files.
    pub const ALL: [(&'static str, Mitigation); 5] = [
        ("silent-writes", Self::SilentWrites),
        ("stale-reads", Self::StaleReads),
        ("false-reads", Self::FalseReads),
        ("decayed-sequentiality", Self::DecayedSequentiality),
        ("false-anonymity", Self::FalseAnonymity),
    ];

    /// The name in scenario files.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }
}

/// The guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestConfig {
    /// Guest RAM.
    #[serde(with = "as_text")]
    pub mem: ByteSize,
    /// vCPUs.
    pub cpus: u32,
    /// Size of the guest's swap disk; `None`: no guest swap.
    #[serde(with = "opt_text")]
    pub swap: Option<ByteSize>,
    /// The workload runs on the guest root disk (a Debian userland on a
    /// virtio-blk disk, copy-on-write per run). Not a key of its own: the
    /// `command` workload sets it.
    #[serde(default)]
    pub root_disk: bool,
    /// The guest kernel's Debian package, `NAME[@SUITE]` (`guest.kernel`; as
    /// `swaplab image --kernel-package` takes it, which builds its image).
    /// `None`: the default guest image's kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// Which page the host swapper evicts (the runner maps it to the swapper's own kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// First in, first out.
    Fifo,
    /// Uniform random.
    Random,
    /// Second-chance clock with software reference bits.
    Clock,
}

/// Who swaps guest RAM out on the host (`host.swapper`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostSwapper {
    /// swaplab's userfaultfd swapper: every fault traced, policies, stores and
    /// mitigations of its own.
    #[default]
    Uffd,
    /// The Linux kernel: the VMM in a memory cgroup limited to the host limit
    /// plus its own overhead, swapping to a zram device (`store = "memory"` or
    /// `"lz4"`) or a swap file (`store = "file"`) made for the run.
    Kernel,
}

impl HostSwapper {
    /// Every swapper with its name in scenario files and on the command line.
    pub const ALL: [(&'static str, HostSwapper); 2] =
        [("uffd", Self::Uffd), ("kernel", Self::Kernel)];

    /// The name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uffd => "uffd",
            Self::Kernel => "kernel",
        }
    }
}

/// Host swapping (the userfaultfd swapper on guest RAM, or the kernel's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostConfig {
    /// Who swaps (results written before the key existed read as `uffd`).
    #[serde(default)]
    pub swapper: HostSwapper,
    /// Resident limit of guest RAM.
    #[serde(with = "as_text")]
    pub limit: ByteSize,
    /// Backing store.
    pub store: StoreChoice,
    /// Where the Redis store is (`store = "redis"` only): `redis://HOST:PORT[/DB]`
    /// or comma-separated nodes of one cluster, or [`PRIVATE_STORE_URL`]: a
    /// server the run starts beside the VMM for itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_url: Option<String>,
    /// Eviction policy.
    pub policy: PolicyKind,
    /// Prefetch cluster (0 = off).
    pub prefetch: u32,
    /// Mitigations switched on, sorted, no duplicates.
    pub mitigations: Vec<Mitigation>,
}

/// What the balloon does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "policy")]
pub enum BalloonPolicy {
    /// No balloon device.
    None,
    /// Inflate to `target` once the guest is up.
    Manual {
        /// Memory the balloon takes from the guest.
        #[serde(with = "as_text")]
        target: ByteSize,
    },
    /// Inflate and deflate with host memory pressure.
    Auto,
    /// Inflate to `target` and deflate to 0, turn about, every `period_s`.
    Churn {
        /// How far the balloon inflates.
        #[serde(with = "as_text")]
        target: ByteSize,
        /// Seconds between changes.
        period_s: u32,
    },
}

/// The balloon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalloonConfig {
    /// What it does.
    #[serde(flatten)]
    pub policy: BalloonPolicy,
    /// Guest statistics interval in ms (0 = no statistics).
    pub stats_interval_ms: u32,
}

/// Which guest program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Write every page of the working set once per pass.
    Touch,
    /// Touch, then check every page's contents.
    Integrity,
    /// Any program on the root disk (`workload.command`); its exit status
    /// decides success, `workload.metric` takes a number from its output.
    Command,
    /// An application from the registry (`workload.app`, see
    /// [`workloads::apps`]) on the root disk, with its own metric and check.
    App,
}

/// What runs in the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadConfig {
    /// The program.
    pub kind: WorkloadKind,
    /// Working-set size in MiB.
    pub mb: u64,
    /// Access order.
    #[serde(with = "as_text")]
    pub pattern: Pattern,
    /// Passes over the working set.
    pub passes: u32,
    /// Seed of the random patterns.
    pub seed: u64,
    /// Probability that an access after a page's first touch writes it
    /// (1: every access writes; 0: read-only after the first pass).
    pub write_ratio: f64,
    /// MiB of the guest's disk read (buffered, into the guest's page cache)
    /// after the workload; 0: none. Needs `guest.swap` at least as large.
    pub disk_read_mb: u64,
    /// MiB of the guest's disk, after the `disk_read_mb` ones, read into the
    /// guest's page cache before the workload and read again after it: page
    /// cache the host may swap out meanwhile as if it were anonymous memory
    /// (VSwapper's false page anonymity), which the guest then uses again.
    /// 0: none. Needs `guest.swap` at least `disk_read_mb + disk_cache_mb`.
    #[serde(default)]
    pub disk_cache_mb: u64,
    /// `integrity` only: verify round after round for this many seconds
    /// instead of `passes` rounds; 0: use `passes`.
    pub duration_s: u64,
    /// `command` only: the shell command, run on the root disk in `/root`.
    #[serde(default)]
    pub command: Option<String>,
    /// `command` only: a regular expression over the command's output; its
    /// first capture group (or the whole match) is the run's metric.
    #[serde(default)]
    pub metric: Option<String>,
    /// `app` only: the application's name in [`workloads::apps::APPS`].
    #[serde(default)]
    pub app: Option<String>,
}

impl WorkloadConfig {
    /// Working-set size in bytes.
    pub fn bytes(&self) -> u64 {
        self.mb.saturating_mul(1 << 20)
    }

    /// Whether the workload's memory use is known from `mb` (the synthetic
    /// workloads): a command or an application uses what it uses, so the
    /// checks that compare a working set with guest RAM or the host limit
    /// are not made for them.
    pub fn known_working_set(&self) -> bool {
        matches!(self.kind, WorkloadKind::Touch | WorkloadKind::Integrity)
    }

    /// The memory the workload says it uses, for the checks against guest
    /// RAM and the host limit: none for an application (its `mb` is data, a
    /// file set or an input, not necessarily memory) or a command that gives
    /// no `mb`.
    pub fn memory_bytes(&self) -> Option<u64> {
        match self.kind {
            WorkloadKind::App => None,
            WorkloadKind::Command if self.mb == 0 => None,
            _ => Some(self.bytes()),
        }
    }

    /// The application, for `kind = "app"` with a known name.
    pub fn application(&self) -> Option<&'static workloads::apps::App> {
        (self.kind == WorkloadKind::App)
            .then(|| self.app.as_deref().and_then(workloads::apps::find))
            .flatten()
    }

    /// The regular expression that takes the run's metric from the output:
    /// `workload.metric`, or the application's.
    pub fn metric_pattern(&self) -> Option<String> {
        match self.application() {
            Some(app) => Some(workloads::apps::metric_pattern(app)),
            None => self.metric.clone(),
        }
    }

    /// The metric's name: the application's (`runtime_s`, …), else `metric`.
    pub fn metric_name(&self) -> &'static str {
        self.application().map_or("metric", |a| a.metric)
    }
}

fn yes() -> bool {
    true
}

/// One experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Short name (`[a-z0-9][a-z0-9_-]*`).
    pub name: String,
    /// One line for the report.
    pub description: String,
    /// Runs of this scenario.
    pub repetitions: u32,
    /// Per-repetition timeout in seconds.
    pub timeout_s: u64,
    /// Whether `swaplab run --quick` runs it (a matrix leaves out what a
    /// quick look can do without, e.g. middle pressure levels).
    #[serde(default = "yes")]
    pub quick: bool,
    /// The guest.
    pub guest: GuestConfig,
    /// Host swapping; `None`: off.
    pub host: Option<HostConfig>,
    /// The balloon.
    pub balloon: BalloonConfig,
    /// The workload.
    pub workload: WorkloadConfig,
    /// Where each key was set (dotted key → position; `""` is the scenario
    /// itself), for error messages. Empty for scenarios built in code.
    #[serde(skip)]
    pub origin: BTreeMap<String, Pos>,
}

/// The scenarios one `swaplab run` goes through, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// The file it came from.
    pub source: String,
    /// One line for the report.
    pub description: String,
    /// The scenarios (names unique).
    pub scenarios: Vec<Scenario>,
}

impl Matrix {
    /// Total repetitions over all scenarios (for progress display).
    pub fn total_runs(&self) -> u64 {
        self.scenarios
            .iter()
            .map(|s| u64::from(s.repetitions))
            .sum()
    }
}

/// Values written as their display text (`160M`, `zipf:0.99`) and read back
/// with `FromStr`, so a result's `spec` reads back as the scenario it was.
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: serde::Deserializer<'de>,
    {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// [`as_text`] for an optional value (`null` when absent).
mod opt_text {
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: serde::Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: serde::Deserializer<'de>,
    {
        let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
        text.map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

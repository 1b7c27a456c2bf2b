//! Scenario files: what one experiment runs (guest, host swapping, balloon,
//! workload) and the matrix of scenarios `swaplab run` goes through.
//!
//! Scenarios are TOML. The built-in ones live in `scenarios/` at the repository
//! root and are compiled into the binary ([`builtin`]), so `swaplab run guest-swap`
//! works from any directory; `swaplab run path/to/file.toml` reads a file.
//! Every value is checked when the file is read: an unknown key, a value of the
//! wrong type or out of range, or a combination that would make the run
//! meaningless is an error naming the file, line, column and key, e.g.
//! `scenarios/default.toml:12:1: unknown key "polcy" in [host] (did you mean "policy"?)`.
//!
//! # A scenario file
//!
//! ```toml
//! name = "host-swap"
//! description = "the host swaps guest pages behind the guest's back"
//! repetitions = 3
//! timeout_s = 300
//!
//! [guest]
//! mem = "512M"
//! cpus = 1
//!
//! [host]
//! limit = "256M"
//! store = "memory"
//! policy = "clock"
//!
//! [workload]
//! kind = "touch"
//! mb = 384
//! pattern = "random"
//! passes = 2
//! ```
//!
//! Sizes are strings with binary units: `"4096"`, `"64K"`, `"256M"`, `"1G"`.
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `name` | string | required | `[a-z0-9][a-z0-9_-]*`, at most 64 characters; names result files, unique in a matrix |
//! | `description` | string | `""` | one line for the report |
//! | `repetitions` | integer 1–100 | 3 | how many times the scenario is run (each in a fresh VM) |
//! | `timeout_s` | integer 1–86400 | 600 | a repetition still running after this many seconds is stopped and counted as failed |
//! | `guest.mem` | size, 128M–64G | `"256M"` | guest RAM |
//! | `guest.cpus` | integer 1–32 | 1 | vCPUs |
//! | `guest.swap` | size, 1M–64G | none | size of the guest's swap disk (a virtio-blk device the guest swaps to); absent: the guest has no swap |
//! | `host.limit` | size | none | resident limit of guest RAM on the host, enforced by the userfaultfd swapper; absent: no host swapping (the rest of `[host]` then must not be given) |
//! | `host.store` | `file`, `memory`, `lz4` | `memory` | where the host swapper keeps evicted pages (a swap file, plain memory, lz4-compressed memory) |
//! | `host.policy` | `fifo`, `random`, `clock` | `clock` | which page the host swapper evicts |
//! | `host.prefetch` | integer 0–256 | 0 | on a sequential fault, also read up to this many following pages |
//! | `host.mitigations` | list of strings | `[]` | VSwapper-style mitigations of host-swap anomalies, from [`Mitigation`]: `silent-writes`, `stale-reads`, `false-reads` (also adds a balloon device with free page reporting), `decayed-sequentiality`, `false-anonymity` |
//! | `balloon.policy` | `none`, `manual`, `auto`, `churn` | `none` | `none`: no balloon device; `manual`: inflate to `balloon.target` once the guest is up, and the workload starts when the balloon holds it (`swaplab-guest balloon-wait`, at most 120 s); `auto`: inflate/deflate with host memory pressure (needs `host.limit`); `churn`: inflate to `balloon.target` and deflate to 0, turn about, every `balloon.period_s` (soak tests) |
//! | `balloon.target` | size | none | `manual` and `churn` only (required there): memory the balloon takes from the guest |
//! | `balloon.period_s` | integer 1–3600 | 10 | `churn` only: seconds between inflating and deflating |
//! | `balloon.stats_interval_ms` | integer 0 or 100–60000 | 1000 | how often the guest reports memory statistics; 0: never |
//! | `workload.kind` | `touch`, `integrity` | `touch` | `touch`: write every page of the working set once per pass in `pattern` order; `integrity`: the same, and check every page's contents afterwards |
//! | `workload.mb` | integer ≥ 1 | required | working-set size in MiB |
//! | `workload.pattern` | `seq`, `random`, `zipf[:S]`, `phase[:K]` | `seq` | access order (see [`workloads::probe::pattern`]) |
//! | `workload.passes` | integer 1–1000 | 1 | passes over the working set |
//! | `workload.seed` | integer | 1 | seed of the random patterns |
//! | `workload.write_ratio` | number 0–1 | 1 | `touch` only: after a page's first touch, the probability that an access writes it rather than reads it; below 1 the host sees clean pages it already has a copy of (silent writes) |
//! | `workload.duration_s` | integer 0–86400 | 0 | `integrity` only: verify (and rewrite a quarter of the pages) round after round for this many seconds, instead of `passes` rounds; must end within `timeout_s` |
//! | `workload.disk_read_mb` | integer 0–65536 | 0 | after the workload, read this many MiB of the guest's disk through the guest's page cache (`dd`), so the guest fills frames it freed with disk data (stale/false reads when the host had evicted them); needs `guest.swap` at least this large |
//!
//! Runs that would be meaningless are rejected ([`Scenario::validate`]):
//! a working set that cannot fit in the guest (guest RAM minus
//! [`GUEST_OS_RESERVE`] plus guest swap, minus a manual balloon) — the guest
//! would only OOM, and host swapping cannot help since it gives the guest no
//! more RAM; a host limit at or above guest RAM (the host would never swap) or
//! below [`MIN_HOST_LIMIT`]; `[host]` settings without `host.limit`; an `auto`
//! balloon without host pressure to react to; a manual balloon leaving the
//! guest less than [`GUEST_OS_RESERVE`]; the same mitigation listed twice.
//!
//! # A matrix file
//!
//! ```toml
//! description = "the standard matrix"
//!
//! [defaults]            # applied to every scenario below, for keys it does not set
//! repetitions = 3
//! timeout_s = 300
//! [defaults.workload]
//! passes = 2
//!
//! [[scenario]]
//! file = "baseline.toml"   # relative to this file (built-in matrices: a built-in)
//!
//! [[scenario]]             # or inline
//! name = "tiny"
//! [scenario.workload]
//! mb = 16
//! ```
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `description` | string | one line for the report |
//! | `defaults` | table | any scenario key except `name` and `description`; a scenario's own value wins |
//! | `scenario` | array of tables | each either `{ file = "..." }` (nothing else) or a scenario inline |
//!
//! A file with a `scenario` array (or `defaults`) is a matrix; any other file is one
//! scenario, run as a matrix of one.

mod builtin;
mod parse;
mod reader;
mod source;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use workloads::probe::Pattern;

use base::ByteSize;

pub use builtin::{builtin, builtin_names, load, BUILTIN};
pub use parse::{parse, parse_matrix, parse_scenario};
pub use source::Source;
pub use validate::{GUEST_OS_RESERVE, MIN_GUEST_MEM, MIN_HOST_LIMIT};

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

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pos {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
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

/// Host swapping (the userfaultfd swapper on guest RAM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostConfig {
    /// Resident limit of guest RAM.
    #[serde(with = "as_text")]
    pub limit: ByteSize,
    /// Backing store.
    pub store: StoreChoice,
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
    /// `integrity` only: verify round after round for this many seconds
    /// instead of `passes` rounds; 0: use `passes`.
    pub duration_s: u64,
}

impl WorkloadConfig {
    /// Working-set size in bytes.
    pub fn bytes(&self) -> u64 {
        self.mb.saturating_mul(1 << 20)
    }
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

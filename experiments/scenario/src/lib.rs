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
//! | `guest.kernel` | `NAME[@SUITE]` | the default image's (`linux-image-amd64`) | the guest kernel's Debian package, as `swaplab image --kernel-package` takes it (e.g. `"linux-image-amd64@bookworm-backports"`, 6.12); runs use the newest kernel of it in the cache (its image is built from it when missing) and never download one: a kernel never fetched is an error before anything boots |
//! | `host.swapper` | `uffd`, `kernel` | `uffd` | who swaps guest RAM out: swaplab's userfaultfd swapper, or the Linux kernel (the VMM in a memory cgroup limited to `host.limit` plus its own overhead, swapping to zram or a swap file made for the run; root only; no policy, prefetch or mitigations of its own) |
//! | `host.limit` | size | none | resident limit of guest RAM on the host, enforced by the host swapper; absent: no host swapping (the rest of `[host]` then must not be given) |
//! | `host.store` | `file`, `memory`, `lz4`, `redis` | `memory` | where the host swapper keeps evicted pages (a swap file, plain memory, lz4-compressed memory, far memory in Redis; for the kernel: a swap file, or zram with lz4; no `redis`) |
//! | `host.store_url` | string, at most 1024 bytes | none | `redis` only (required there): `redis://HOST:PORT[/DB]`, or comma-separated nodes of one Redis Cluster (one is enough), reachable from where the VMM runs; or `private`: the run starts its own `redis-server` on loopback where the VMM runs (in the nested sandbox's L1 when runs go there), for that run only, and stops it at the end |
//! | `host.policy` | `fifo`, `random`, `clock` | `clock` | which page the userfaultfd swapper evicts |
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
//! | `workload.disk_cache_mb` | integer 0–65536 | 0 | before the workload, read this many MiB of the guest's disk (the ones after `disk_read_mb`'s) into the guest's page cache, and read them again after it: page cache the host may swap out meanwhile as if anonymous (false page anonymity), used again; needs `guest.swap` at least `disk_read_mb + disk_cache_mb` |
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

pub mod bounds;
mod builtin;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod metric;
mod model;
mod parse;
mod reader;
mod source;
mod validate;

#[cfg(test)]
mod tests;

pub use builtin::{builtin, builtin_names, load, BUILTIN};
pub use model::{
    BalloonConfig, BalloonPolicy, Diagnostic, GuestConfig, HostConfig, HostSwapper, Matrix,
    Mitigation, PolicyKind, Pos, Scenario, ScenarioError, StoreChoice, WorkloadConfig,
    WorkloadKind, PRIVATE_STORE_URL,
};
pub use parse::{parse, parse_matrix, parse_scenario};
pub use source::Source;
pub use validate::{GUEST_OS_RESERVE, MIN_GUEST_MEM, MIN_HOST_LIMIT};

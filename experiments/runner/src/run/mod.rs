//! Scenario runs: `swaplab run <scenario>`.
//!
//! - [`spec`]: from a [`scenario::Scenario`] to the guest command and the swapper's
//!   configuration (mitigations on or off).
//! - [`machine`]: assembling the guest, swap disk, host swapper, balloon and
//!   result channel, and running it once ([`machine::run_machine`]).
//! - [`kernel_host`]: the kernel as the host swapper (`host.swapper =
//!   "kernel"`): the run's swap device and memory cgroup.
//! - [`sampler`]: the thread that drains the trace rings and records the
//!   host timeline while the guest runs.
//! - [`guard`]: the stall guard, the last resort for a run that does not end.
//! - [`join`]: pairing blk requests with the host faults their device thread
//!   raised (double paging, stale swap reads).
//! - [`result`]: `result.json` and the summary table; [`analyze`] turns a raw
//!   run into it.
//! - [`error`], [`interrupt`], [`threads`]: what the machine's parts share
//!   (its error, stopping it from another thread, naming its threads).
//! - [`clock`]: UTC timestamps for result directories and reports.
//! - [`resume`]: reading back the runs an earlier attempt at a matrix finished.
//! - [`cmd`]: the CLI.

pub mod analyze;
pub mod api;
pub mod balloon;
pub mod boot;
pub mod clock;
pub mod cmd;
pub mod cpu;
pub mod error;
pub mod guard;
pub mod interrupt;
pub mod jobs;
pub mod join;
pub mod kernel_host;
pub mod ktrace;
pub mod machine;
pub mod mapper;
pub mod private_store;
pub mod recent;
pub mod report;
pub mod result;
pub mod resume;
pub mod sampler;
pub mod spec;
pub mod threads;
pub mod trace;

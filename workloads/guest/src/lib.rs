//! `swaplab-guest`: the program that runs inside the guest image, built as a
//! static executable (see `workloads::image::guest_bin`).
//!
//! Subcommands print JSON lines (one object per line, each with a `kind`):
//!
//! - `info`: memory (`/proc/meminfo`), CPUs, kernel release, uptime.
//! - `touch --mb N [--passes P] [--pattern seq|random|zipf[:S]|phase[:K]] [--seed X]
//!   [--write-ratio R]`: access N MiB in the probe guests' patterns, timing every
//!   access and checking every page's tag ([`touch`]).
//! - `integrity --mb N [--rounds R] [--interval-ms M] [--rewrite F] [--seed X]`:
//!   fill N MiB with per-page patterns and verify every byte each round ([`integrity`]).
//! - `filecheck --path FILE --mb N [--rounds R] [--rewrite F] [--direct-share D] [--seed X]`:
//!   write an N MiB file of per-page patterns, then read it back and rewrite parts of
//!   it through the page cache and with `O_DIRECT`, verifying every byte ([`filecheck`]).
//! - `report [--interval-ms M] [--count N]`: swap, fault and reclaim counters,
//!   memory and timestamps, one line per sample ([`report`]).
//! - `agent [--input PATH]`: start and stop a `touch` workload when the host says
//!   so on the result channel (`start MB [PATTERN]`, `stop`, `quit`; [`agent`]).
//! - `balloon-wait --mb N [--timeout-s S]`: wait until the balloon holds N MiB
//!   ([`balloon_wait`]).
//!
//! Results go to the result channel when `--out PATH` is given (anywhere on the
//! command line) or `SWAPLAB_CHANNEL` names a path, else to stdout ([`output`]).
//! `pages_verified` and `integrity_errors`, wherever they appear, are totals since the
//! program started, so the last such line of a run (even a killed one) has its totals.
//!
//! The crate also owns the access-pattern generator ([`pattern`], [`rng`], [`zipf`])
//! that the probe guests use too; the workloads library re-exports it.
//!
//! Only `std` and `libc` are used, so the static guest build stays small, and the
//! binary's bytes (part of the guest image's cache key) depend on this crate alone:
//! edits elsewhere in the workspace do not change them.
//! Exit status: 0 on success, 1 on a runtime error or wrong memory contents, 2 on a
//! usage error.

// The guest programs and their command line.
pub mod agent;
pub mod args;
pub mod balloon_wait;
mod cli;
pub mod clock;
mod error;
pub mod filecheck;
pub mod hist;
pub mod info;
pub mod integrity;
pub mod json;
pub mod output;
pub mod report;
pub mod touch;

// The access-pattern generator, shared with the probe guests (re-exported by the
// workloads library as `workloads::probe::{pattern, rng, zipf}`).
pub mod pattern;
pub mod rng;
pub mod zipf;

pub use cli::{main, run, run_routed, USAGE};
pub use error::GuestError;

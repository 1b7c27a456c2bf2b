//! `swaplab bench`: benchmarks that print numbers (they assert nothing).
//!
//! - `bench boot`: boot times, swaplab against QEMU microvm ([`boot_bench`]).
//! - `bench balloon`: balloon inflate and deflate rates, swaplab against QEMU's
//!   virtio-balloon ([`balloon`]).
//! - `bench host-swap`: the userfaultfd swapper against kernel swap on the same probe
//!   workloads and media ([`host_swap`]).

pub mod balloon;
pub mod boot_bench;
pub mod far_memory;
pub mod host_swap;
pub mod qemu;
pub mod zipf_skew;

use std::time::Duration;

use runner::boot::BootFiles;
use sandbox::{needs_sandbox_here, SandboxMode};

/// Where and how a side-by-side benchmark with a Linux guest runs.
pub struct SideBySide {
    /// The `--sandbox` choice.
    pub sandbox: SandboxMode,
    /// Guest RAM (the sandbox's L1 gets room for both VMMs' guests).
    pub mem: u64,
    /// The sandbox's time limit for the whole benchmark.
    pub timeout: Duration,
    /// Print JSON instead of the text table.
    pub json: bool,
}

/// Runs a side-by-side benchmark: re-run in the nested sandbox when this host
/// cannot boot a stock kernel, else `measure` with the guest image's files and
/// print the result (`render`ed, or as JSON). Exit 0, 1 on failure, 2 on a
/// usage error.
pub fn side_by_side<B: serde::Serialize>(
    how: SideBySide,
    measure: impl FnOnce(BootFiles) -> anyhow::Result<B>,
    render: impl FnOnce(&B) -> String,
) -> anyhow::Result<u8> {
    let files = BootFiles::resolve(None, None, None, false)?;
    if needs_sandbox_here(how.sandbox) {
        return runner::boot::cmd::run_in_sandbox(&files, how.mem, how.timeout);
    }
    let b = measure(files)?;
    if how.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", render(&b));
    }
    Ok(0)
}

//! `swaplab bench`: benchmarks that print numbers (they assert nothing).
//!
//! - `bench boot`: boot times, swaplab against QEMU microvm ([`crate::boot::bench`]).
//! - `bench balloon`: balloon inflate and deflate rates, swaplab against QEMU's
//!   virtio-balloon ([`balloon`]).
//! - `bench host-swap`: the userfaultfd swapper against kernel swap on the same probe
//!   workloads and media ([`host_swap`]).

pub mod balloon;
pub mod host_swap;
pub mod zipf_skew;

use std::process::ExitCode;

/// `swaplab bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// Benchmarks.
#[derive(clap::Subcommand, Debug)]
pub enum BenchWhat {
    /// Boot time: swaplab against QEMU microvm, same kernel and initramfs.
    Boot(crate::boot::bench::BenchBootArgs),
    /// Balloon inflate and deflate rates: swaplab against QEMU's virtio-balloon, same
    /// kernel, initramfs and guest.
    Balloon(balloon::BenchBalloonArgs),
    /// Host swapping: the userfaultfd swapper against kernel swap (zram, swap file) on
    /// random, sequential and zipf 90/10 probe workloads; needs root for the kernel side.
    HostSwap(host_swap::HostSwapArgs),
}

/// Run `swaplab bench`.
pub fn main(args: &BenchArgs) -> ExitCode {
    match &args.what {
        BenchWhat::Boot(a) => crate::boot::bench::main(a),
        BenchWhat::Balloon(a) => balloon::main(a),
        BenchWhat::HostSwap(a) => crate::cli::finish(host_swap::run(a)),
    }
}

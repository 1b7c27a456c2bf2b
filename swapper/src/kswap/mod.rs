//! Kernel-swap baseline: what a QEMU/KVM user gets by default. The VMM runs
//! with the swapper off, inside a memory cgroup limited to the same size,
//! swapping to a swap device this module creates (zram or a swap file).
//!
//! Everything is a guard whose `Drop` undoes it — also when unwinding from a
//! panic:
//! - [`MemoryCgroup`]: a memory cgroup (v1 `memory` hierarchy, or v2 where
//!   the memory controller is available) created *below the caller's own
//!   cgroup* (so limits above it still apply), with a limit; processes added
//!   to it are moved back to where they came from on drop, then the
//!   directory is removed.
//! - [`SwapDevice`]: a zram device (a fresh one from `hot_add`; or `zram0`
//!   if hot-add is unavailable and it is unused) or a fallocated swap file,
//!   formatted with a swap header labelled `swaplab-<pid>` and enabled with
//!   `swapon(2)`; on drop: `swapoff`, zram reset and `hot_remove`, or file
//!   deletion.
//!
//! Names carry the creating pid (`swaplab-<pid>-<n>` cgroups,
//! `swaplab-swapfile-<pid>-<n>.swap` files, swap label `swaplab-<pid>`), so
//! [`sweep_leftovers`] can remove what a crashed run (dead pid) left behind
//! without touching a live run's resources.
//!
//! Needs root. Real devices only.

mod cgroup;
mod swapdev;
mod sweep;

pub use cgroup::{CgroupVersion, MemoryCgroup};
pub use swapdev::{SwapDevice, SwapKind};
pub use sweep::{sweep_leftovers, SweepReport};

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Prefix of every name this module creates.
pub const PREFIX: &str = "swaplab-";

/// Errors of the kernel-swap helpers.
#[derive(Debug, Error)]
pub enum KswapError {
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// No cgroup hierarchy with a memory controller is mounted.
    #[error("no memory cgroup controller found (neither v1 nor v2)")]
    NoMemoryController,
    /// No zram device could be obtained.
    #[error("no zram device available: {0}")]
    NoZram(String),
    /// The requested swap size is too small for a swap header.
    #[error("swap size {0} bytes is too small (need at least 40 KiB)")]
    TooSmall(u64),
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KswapError {
    let path = path.to_path_buf();
    move |source| KswapError::Io { what, path, source }
}

/// Whether process `pid` exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Parses `swaplab-<pid>...` (after `prefix`) and returns the pid.
pub(crate) fn pid_in_name(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Kernel-swap setup for one run: a swap device plus a memory cgroup.
/// Dropping it removes both (cgroup first, so nothing swaps any more when
/// the device goes).
#[derive(Debug)]
pub struct KernelSwap {
    /// The cgroup (dropped first: fields drop in declaration order).
    pub cgroup: MemoryCgroup,
    /// The swap device.
    pub swap: SwapDevice,
}

impl KernelSwap {
    /// Creates a swap device of `swap_bytes` and a memory cgroup limited to
    /// `limit_bytes`.
    pub fn new(limit_bytes: u64, swap: SwapKind, swap_bytes: u64) -> Result<Self, KswapError> {
        let swap = SwapDevice::create(swap, swap_bytes)?;
        let cgroup = MemoryCgroup::create(limit_bytes)?;
        Ok(Self { cgroup, swap })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_pids() {
        assert_eq!(pid_in_name("swaplab-123-4", PREFIX), Some(123));
        assert_eq!(
            pid_in_name("swaplab-swapfile-77-0.swap", "swaplab-swapfile-"),
            Some(77)
        );
        assert_eq!(pid_in_name("other-1", PREFIX), None);
        assert_eq!(pid_in_name("swaplab-x", PREFIX), None);
        assert!(pid_alive(std::process::id()));
    }
}

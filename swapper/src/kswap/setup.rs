//! [`KernelSwap`]: a swap device and a memory cgroup for one run.

use super::cgroup::MemoryCgroup;
use super::error::KswapError;
use super::swapdev::{SwapDevice, SwapKind};

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

    /// Removes both (cgroup first) and says what of them is still there:
    /// the cgroup directory, the swap area in `/proc/swaps`, the swap file.
    /// Empty when everything went.
    pub fn remove(self) -> Vec<String> {
        let cg = self.cgroup.path().to_path_buf();
        let (dev, file) = (self.swap.path().to_path_buf(), self.swap.is_file());
        drop(self);
        let mut left = Vec::new();
        if cg.exists() {
            left.push(format!("cgroup {}", cg.display()));
        }
        if super::swapdev::active_swaps()
            .iter()
            .any(|(p, _, _)| *p == dev)
        {
            left.push(format!("swap device {}", dev.display()));
        }
        if file && dev.exists() {
            left.push(format!("swap file {}", dev.display()));
        }
        left
    }
}

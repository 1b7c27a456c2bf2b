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
mod error;
mod names;
mod setup;
mod swapdev;
mod sweep;

pub use cgroup::{CgroupVersion, MemoryCgroup, MemoryStat};
pub use error::KswapError;
pub use names::PREFIX;
pub use setup::KernelSwap;
pub use swapdev::{SwapDevice, SwapKind};
pub use sweep::{sweep_leftovers, SweepReport};

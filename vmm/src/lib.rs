//! The swaplab VMM: KVM virtual machines whose RAM a host swapper can manage.
//!
//! - [`memory`]: guest RAM as a vm-memory [`GuestMemoryMmap`](vm_memory::GuestMemoryMmap)
//!   over anonymous mappings, and the [`GuestMemoryExt`] extension trait (host ranges for
//!   userfaultfd registration, discarding pages).
//! - [`vm`]: [`Vm`] (memslots, vCPUs, buses) → [`RunningVm`] (vCPU threads) →
//!   [`VmReport`]; [`VmHandle`] stops a VM from any thread.
//! - [`bus`]: the port-I/O and MMIO buses and the [`BusDevice`] trait.
//! - [`exits`]: userspace exit accounting by reason; [`stats`]: KVM's binary stats fd.
//! - [`flat`]: a no-OS 64-bit guest at CPL 3 on identity-mapped page tables.
//! - [`linux`]: booting a stock Linux kernel (PVH vmlinux or bzImage) with ACPI tables
//!   ([`acpi`]), platform devices ([`devices`]) and virtio-mmio devices ([`virtio`]).
//! - [`api`]: the control socket (one JSON request per line) and its [`api::ApiHandler`].

pub mod acpi;
pub mod api;
pub mod bus;
pub mod devices;
pub mod exits;
pub mod flat;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod linux;
pub mod memory;
mod poison;
pub mod stats;
mod stop;
pub use base::threads;
pub mod vcpu;
pub mod virtio;
pub mod vm;

/// vm-memory, re-exported so users of guest memory need not depend on it directly.
pub use vm_memory;

pub use bus::{Bus, BusAction, BusDevice, BusError, DeviceError, SharedDevice};
pub use exits::{ExitCount, ExitReason, ExitStats};
pub use flat::{FlatError, FlatGuest};
pub use memory::{create_guest_memory, GuestMemoryExt, HostRegion, MemoryError, RegionSpec};
pub use stats::{KvmStats, StatsError, StatsSnapshot};
pub use stop::kick_signal;
pub use vcpu::{VcpuEnd, VcpuError, VcpuReport, VcpuStartHook};
pub use vm::{IrqChip, RunningVm, Vm, VmConfig, VmError, VmHandle, VmReport};

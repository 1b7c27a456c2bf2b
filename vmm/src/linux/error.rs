//! [`LinuxError`]: why a Linux guest could not be built or run. Its own module
//! so that `mod.rs` (building) and `run.rs` (running) both import it.

use crate::acpi::AcpiError;
use crate::memory::MemoryError;
use crate::virtio::mmio::MmioError;
use crate::vm::VmError;

use super::bootinfo::BootInfoError;
use super::loader::LoadError;
use super::regs::RegsError;

/// Errors building or running a Linux guest.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// A bad configuration value.
    #[error("{0}")]
    Config(String),
    /// Guest RAM could not be created.
    #[error("creating guest RAM")]
    Memory(#[from] MemoryError),
    /// KVM refused something.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The kernel, initramfs or command line could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Boot structures could not be written.
    #[error("writing boot information")]
    BootInfo(#[from] BootInfoError),
    /// ACPI tables could not be built.
    #[error("building ACPI tables")]
    Acpi(#[from] AcpiError),
    /// vCPU state could not be set.
    #[error("setting up vCPU registers")]
    Regs(#[from] RegsError),
    /// A device could not be created.
    #[error("creating device {name}")]
    Device {
        /// Which.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A virtio device could not be attached.
    #[error("attaching virtio device {name}")]
    Virtio {
        /// Which.
        name: String,
        /// Why.
        #[source]
        source: MmioError,
    },
}

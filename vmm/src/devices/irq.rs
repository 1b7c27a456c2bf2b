//! Interrupt lines: how a device tells the guest to look at it.

use std::os::fd::AsRawFd;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// An edge on an interrupt line.
pub trait IrqLine: Send + Sync {
    /// Raise the interrupt.
    fn trigger(&self) -> std::io::Result<()>;
}

/// A KVM irqfd: writing the eventfd injects an edge on a GSI of the in-kernel IOAPIC
/// without a trip through the VMM's vCPU threads.
#[derive(Debug)]
pub struct IrqFd {
    evt: EventFd,
    gsi: u32,
}

impl IrqFd {
    /// Create an eventfd and register it with `vm` for `gsi` (needs the in-kernel irqchip).
    pub fn register(vm: &VmFd, gsi: u32) -> std::io::Result<Self> {
        let evt = EventFd::new(EFD_NONBLOCK)?;
        vm.register_irqfd(&evt, gsi)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        Ok(Self { evt, gsi })
    }

    /// The GSI.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

impl AsRawFd for IrqFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.evt.as_raw_fd()
    }
}

impl IrqLine for IrqFd {
    fn trigger(&self) -> std::io::Result<()> {
        self.evt.write(1)
    }
}

//! Platform devices of a Linux guest, each a [`crate::BusDevice`]:
//!
//! - [`serial`]: an 8250 UART (vm-superio) on COM1 whose interrupt is an irqfd and
//!   whose output goes to a [`console::ConsoleWriter`];
//! - [`console`]: guest console capture (a bounded tail, a sink, line hooks);
//! - [`power`]: the ACPI sleep-control/status and reset registers (power-off and
//!   reboot), and the i8042 reset line, recording the guest's [`power::PowerEvent`];
//! - [`irq`]: interrupt lines ([`irq::IrqLine`]) and KVM irqfds;
//! - [`Absent`]: legacy ports the kernel probes where nothing is present.

pub mod console;
pub mod irq;
pub mod power;
pub mod serial;

use crate::bus::{BusAction, BusDevice, DeviceError};

/// Whether to log the `count`th occurrence of something the guest can trigger at will:
/// the first five, then at powers of two.
pub(crate) fn should_log(count: u64) -> bool {
    count <= 5 || count.is_power_of_two()
}

/// Ports where no hardware exists but which a kernel probes (other COM ports, ...):
/// reads return all-ones, writes are ignored, and nothing is logged.
#[derive(Debug, Default)]
pub struct Absent {
    accesses: u64,
}

impl Absent {
    /// Accesses so far.
    pub fn accesses(&self) -> u64 {
        self.accesses
    }
}

impl BusDevice for Absent {
    fn read(&mut self, _offset: u64, data: &mut [u8]) -> Result<BusAction, DeviceError> {
        self.accesses += 1;
        data.fill(0xff);
        Ok(BusAction::Continue)
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> Result<BusAction, DeviceError> {
        self.accesses += 1;
        Ok(BusAction::Continue)
    }
}

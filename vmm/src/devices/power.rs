//! How the guest powers off or reboots: the registers a hardware-reduced ACPI FADT
//! points at, and the keyboard controller's reset line.
//!
//! - [`AcpiPm`] occupies three one-byte I/O ports: sleep control (`+0`), sleep status
//!   (`+1`) and reset (`+2`). Writing `SLP_EN | SLP_TYP=S5` to sleep control powers off;
//!   writing the reset value to the reset register reboots.
//! - [`I8042Reset`] is port 0x64 of an i8042: command `0xfe` pulses the CPU reset line
//!   (Linux's fallback when the ACPI reset register is not used).
//!
//! Either records the first [`PowerEvent`] in the shared [`PowerState`] and stops the VM.
//!
//! [`reset_vector_stub`] is the firmware this machine does not have: real-mode code
//! for the x86 reset vector that writes the ACPI reset register. Linux on a
//! hardware-reduced ACPI platform reboots through "EFI" first, then by jumping to the
//! BIOS reset vector in real mode (`reboot=bios`); without something there it would
//! execute zeroed memory forever instead of rebooting.

use std::sync::{Arc, Mutex};

use base::sync::lock;

use super::should_log;
use crate::bus::{BusAction, BusDevice, DeviceError};

/// Base port of the ACPI registers.
pub const ACPI_PM_PORT: u16 = 0x600;
/// Number of ports.
pub const ACPI_PM_PORTS: u16 = 3;
/// Sleep control register.
pub const SLEEP_CONTROL_PORT: u16 = ACPI_PM_PORT;
/// Sleep status register.
pub const SLEEP_STATUS_PORT: u16 = ACPI_PM_PORT + 1;
/// Reset register.
pub const RESET_PORT: u16 = ACPI_PM_PORT + 2;
/// What the guest writes to the reset register.
pub const RESET_VALUE: u8 = 1;
/// The i8042 command/status port.
pub const I8042_COMMAND_PORT: u16 = 0x64;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;
const I8042_RESET_CPU: u8 = 0xfe;

/// Physical address of the x86 reset vector (F000:FFF0).
pub const RESET_VECTOR: u64 = 0xf_fff0;

/// 16-bit code for the reset vector: `mov al, RESET_VALUE; mov dx, RESET_PORT;
/// out dx, al; cli; hlt; jmp $-1`.
pub fn reset_vector_stub() -> Vec<u8> {
    let [lo, hi] = RESET_PORT.to_le_bytes();
    vec![
        0xb0,
        RESET_VALUE,
        0xba,
        lo,
        hi,
        0xee,
        0xfa,
        0xf4,
        0xeb,
        0xfd,
    ]
}

/// What the guest asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerEvent {
    /// ACPI S5 through the sleep control register.
    PowerOff,
    /// The ACPI reset register.
    AcpiReset,
    /// The i8042 reset command.
    KeyboardReset,
}

/// The first power event of a VM, shared between its devices and its owner.
#[derive(Debug, Clone, Default)]
pub struct PowerState(Arc<Mutex<Option<PowerEvent>>>);

impl PowerState {
    /// Nothing happened yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record `event` unless one is recorded already.
    pub fn record(&self, event: PowerEvent) {
        lock(&self.0).get_or_insert(event);
    }

    /// The first event, if any.
    pub fn get(&self) -> Option<PowerEvent> {
        *lock(&self.0)
    }
}

/// The ACPI sleep control, sleep status and reset registers.
#[derive(Debug)]
pub struct AcpiPm {
    state: PowerState,
    s5_type: u8,
    ignored: u64,
}

impl AcpiPm {
    /// Registers that power off on sleep type `s5_type` (what `_S5_` says).
    pub fn new(state: PowerState, s5_type: u8) -> Self {
        Self {
            state,
            s5_type,
            ignored: 0,
        }
    }

    fn ignore(&mut self, what: std::fmt::Arguments<'_>) {
        self.ignored += 1;
        if should_log(self.ignored) {
            tracing::warn!(count = self.ignored, "ACPI power registers: ignored {what}");
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) -> Result<BusAction, DeviceError> {
        // Sleep status reads 0 (no wake event); the others are write-only.
        data.fill(0);
        Ok(BusAction::Continue)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<BusAction, DeviceError> {
        let &[v] = data else {
            self.ignore(format_args!("{}-byte write at +{offset}", data.len()));
            return Ok(BusAction::Continue);
        };
        let port = ACPI_PM_PORT as u64 + offset;
        if port == u64::from(SLEEP_CONTROL_PORT) && v & SLP_EN != 0 {
            let typ = (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
            if typ == self.s5_type {
                self.state.record(PowerEvent::PowerOff);
                return Ok(BusAction::Stop);
            }
            self.ignore(format_args!("sleep type {typ} (only S5 is supported)"));
        } else if port == u64::from(RESET_PORT) {
            if v == RESET_VALUE {
                self.state.record(PowerEvent::AcpiReset);
                return Ok(BusAction::Stop);
            }
            self.ignore(format_args!("reset value {v:#x}"));
        }
        // Sleep status writes clear wake bits: nothing to clear.
        Ok(BusAction::Continue)
    }
}

/// The i8042's command port, implementing only the CPU reset command.
#[derive(Debug)]
pub struct I8042Reset {
    state: PowerState,
}

impl I8042Reset {
    /// A reset line recording into `state`.
    pub fn new(state: PowerState) -> Self {
        Self { state }
    }
}

impl BusDevice for I8042Reset {
    fn read(&mut self, _offset: u64, data: &mut [u8]) -> Result<BusAction, DeviceError> {
        // Status: input and output buffers empty, so a driver waiting to send proceeds.
        data.fill(0);
        Ok(BusAction::Continue)
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Result<BusAction, DeviceError> {
        if data == [I8042_RESET_CPU] {
            self.state.record(PowerEvent::KeyboardReset);
            return Ok(BusAction::Stop);
        }
        Ok(BusAction::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_the_first_event_wins() {
        let st = PowerState::new();
        let mut pm = AcpiPm::new(st.clone(), 5);
        // Sleep type 3 (S3) is ignored; so is a word-sized write.
        assert_eq!(
            pm.write(0, &[SLP_EN | 3 << 2]).unwrap(),
            BusAction::Continue
        );
        assert_eq!(pm.write(0, &[0x34, 0]).unwrap(), BusAction::Continue);
        assert_eq!(pm.write(2, &[7]).unwrap(), BusAction::Continue);
        assert_eq!(st.get(), None);
        assert_eq!(pm.write(0, &[0x34]).unwrap(), BusAction::Stop);
        assert_eq!(st.get(), Some(PowerEvent::PowerOff));
        assert_eq!(pm.write(2, &[RESET_VALUE]).unwrap(), BusAction::Stop);
        assert_eq!(st.get(), Some(PowerEvent::PowerOff));
        assert_eq!(pm.ignored, 3);
    }

    #[test]
    fn reset_stub_writes_the_reset_register_and_fits_below_1_mib() {
        let stub = reset_vector_stub();
        assert_eq!(&stub[..5], &[0xb0, RESET_VALUE, 0xba, 0x02, 0x06]);
        assert_eq!(stub[5], 0xee, "out dx, al");
        // jmp $-1 lands on the hlt before it.
        let target = stub.len() as isize + isize::from(stub[stub.len() - 1] as i8);
        assert_eq!(stub[target as usize], 0xf4, "hlt");
        assert!(RESET_VECTOR + stub.len() as u64 <= 0x10_0000);
    }

    #[test]
    fn reset_register_and_keyboard_reset_reboot() {
        let st = PowerState::new();
        let mut pm = AcpiPm::new(st.clone(), 5);
        assert_eq!(pm.write(2, &[RESET_VALUE]).unwrap(), BusAction::Stop);
        assert_eq!(st.get(), Some(PowerEvent::AcpiReset));
        let st = PowerState::new();
        let mut kbd = I8042Reset::new(st.clone());
        let mut b = [0xffu8];
        kbd.read(0, &mut b).unwrap();
        assert_eq!(b, [0]);
        assert_eq!(kbd.write(0, &[0xd1]).unwrap(), BusAction::Continue);
        assert_eq!(kbd.write(0, &[0xfe]).unwrap(), BusAction::Stop);
        assert_eq!(st.get(), Some(PowerEvent::KeyboardReset));
    }
}

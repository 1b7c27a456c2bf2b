//! An 8250/16550A UART (vm-superio's model) as a port-I/O bus device.
//!
//! Register accesses are one byte wide; anything else is counted and ignored. The
//! UART's interrupt is an [`IrqLine`] (an irqfd on GSI 4 for COM1). Output goes to the
//! writer given at creation, typically a [`super::console::ConsoleWriter`]. The guest
//! has no input: the receive FIFO stays empty.

use std::io::Write;
use std::sync::Arc;

use vm_superio::{Serial, Trigger};

use super::irq::IrqLine;
use super::should_log;
use crate::bus::{BusAction, BusDevice, DeviceError};

/// COM1's base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's ISA IRQ (and GSI).
pub const COM1_GSI: u32 = 4;
/// Ports a UART occupies.
pub const UART_PORTS: u16 = 8;

/// vm-superio's trigger, raising an [`IrqLine`].
pub struct LineTrigger(Arc<dyn IrqLine>);

impl Trigger for LineTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.trigger()
    }
}

/// A UART on the port-I/O bus.
pub struct SerialDevice {
    uart: Serial<LineTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
    invalid: u64,
    errors: u64,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice")
            .field("invalid", &self.invalid)
            .field("errors", &self.errors)
            .finish()
    }
}

impl SerialDevice {
    /// A UART interrupting on `irq` and writing to `out`.
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Serial::new(LineTrigger(irq), out),
            invalid: 0,
            errors: 0,
        }
    }

    /// Accesses that were not one byte wide or were out of range.
    pub fn invalid_accesses(&self) -> u64 {
        self.invalid
    }

    fn offset(&mut self, offset: u64, len: usize) -> Option<u8> {
        if len == 1 && offset < u64::from(UART_PORTS) {
            return Some(offset as u8);
        }
        self.invalid += 1;
        if should_log(self.invalid) {
            tracing::warn!(
                offset,
                len,
                count = self.invalid,
                "ignored serial port access that is not one byte wide"
            );
        }
        None
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) -> Result<BusAction, DeviceError> {
        match self.offset(offset, data.len()) {
            Some(off) => data[0] = self.uart.read(off),
            None => data.fill(0xff),
        }
        Ok(BusAction::Continue)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<BusAction, DeviceError> {
        if let Some(off) = self.offset(offset, data.len()) {
            // The only failures are the output sink (which ConsoleWriter never reports)
            // and the irqfd; neither is the guest's fault, and neither may stop it.
            if let Err(e) = self.uart.write(off, data[0]) {
                self.errors += 1;
                if should_log(self.errors) {
                    tracing::warn!(count = self.errors, "serial port: {e:?}");
                }
            }
        }
        Ok(BusAction::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Count(AtomicU64);
    impl IrqLine for Count {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);
    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_interrupts_and_ignores_wide_accesses() {
        let irq = Arc::new(Count::default());
        let out = Out::default();
        let mut s = SerialDevice::new(irq.clone(), Box::new(out.clone()));
        // Enable the THR-empty interrupt, then send two bytes.
        s.write(1, &[0x02]).unwrap();
        let after_ier = irq.0.load(Ordering::SeqCst);
        assert!(after_ier >= 1);
        // Each byte raises THR-empty again once the driver has read IIR (the ack).
        let mut iir = [0u8];
        for b in [b"h", b"i"] {
            s.read(2, &mut iir).unwrap();
            s.write(0, b).unwrap();
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        assert_eq!(irq.0.load(Ordering::SeqCst), after_ier + 2);
        s.read(2, &mut iir).unwrap();
        assert_eq!(iir[0] & 0x0f, 0x02, "THR empty pending");
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        s.read(5, &mut lsr).unwrap();
        assert_ne!(lsr[0] & 0x20, 0);
        let mut wide = [0u8; 2];
        s.read(0, &mut wide).unwrap();
        assert_eq!(wide, [0xff, 0xff]);
        s.write(0, b"xy").unwrap();
        s.write(9, b"z").unwrap();
        assert_eq!(s.invalid_accesses(), 3);
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
    }
}

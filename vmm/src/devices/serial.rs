//! An 8250/16550A UART (vm-superio's model) as a port-I/O bus device, and the
//! line-splitting sink of the result channel.
//!
//! Register accesses are one byte wide; anything else is counted and ignored. The
//! UART's interrupt is an [`IrqLine`] (an irqfd on GSI 4 for COM1, GSI 3 for COM2).
//! Output goes to the writer given at creation: a [`super::console::ConsoleWriter`]
//! for the console on COM1, a [`ChannelWriter`] for the result channel on COM2. The
//! console has no input; the result channel takes short host-to-guest lines through
//! a [`ChannelInput`] (the UART's 64-byte receive FIFO, raising the receive
//! interrupt), e.g. commands for a guest agent reading `/dev/ttyS1`.
//!
//! The result channel keeps guest programs' results apart from the console (kernel
//! messages, the shell's output): [`ChannelWriter`] hands each complete line the guest
//! writes to a hook, with the line end (`\n`, and any `\r` before it) removed. A line
//! longer than [`MAX_CHANNEL_LINE`] is cut to that length and counted, so a guest that
//! never ends its line cannot make the VMM hold more than that.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base::sync::lock;
use vm_superio::{Serial, Trigger};

use super::irq::IrqLine;
use super::should_log;
use crate::bus::{BusAction, BusDevice, DeviceError};

/// COM1's base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's ISA IRQ (and GSI).
pub const COM1_GSI: u32 = 4;
/// COM2's base port (the result channel).
pub const COM2_PORT: u16 = 0x2f8;
/// COM2's ISA IRQ (and GSI).
pub const COM2_GSI: u32 = 3;
/// Ports a UART occupies.
pub const UART_PORTS: u16 = 8;
/// Longest result-channel line handed to the hook; longer ones are cut and counted.
pub const MAX_CHANNEL_LINE: usize = 64 << 10;

/// Called once per complete result-channel line (without its line end).
pub type ChannelHook = Box<dyn FnMut(&str) + Send>;

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

    /// Queues `line` and a `\n` in the receive FIFO if all of it fits, and
    /// raises the receive interrupt if the guest enabled it.
    pub fn enqueue_line(&mut self, line: &[u8]) -> Result<(), InputError> {
        let free = self.uart.fifo_capacity();
        let needed = line.len() + 1;
        if needed > free {
            return Err(InputError::Full { free, needed });
        }
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        // The bytes fit (checked above); the only failure left is the irqfd.
        if let Err(e) = self.uart.enqueue_raw_bytes(&bytes) {
            self.errors += 1;
            if should_log(self.errors) {
                tracing::warn!(count = self.errors, "serial input: {e:?}");
            }
        }
        Ok(())
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

/// Longest line (without its `\n`) a [`ChannelInput`] sends: it must fit the
/// UART's receive FIFO with its line end.
pub const MAX_INPUT_LINE: usize = 63;

/// Why host-to-guest input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The line is longer than [`MAX_INPUT_LINE`].
    #[error("line of {0} bytes is longer than 63")]
    TooLong(usize),
    /// The line holds a line end or another control byte.
    #[error("line holds control byte {0:#04x}; send one line without its line end")]
    ControlByte(u8),
    /// The guest has not read earlier input yet.
    #[error(
        "the guest has not read earlier input ({free} of 64 FIFO bytes free, {needed} needed)"
    )]
    Full {
        /// Free bytes in the receive FIFO.
        free: usize,
        /// Bytes the line needs with its `\n`.
        needed: usize,
    },
}

/// The host's side of a UART's receive direction: sends whole lines to the
/// guest (all of a line or nothing, so the guest never reads half of one).
#[derive(Clone)]
pub struct ChannelInput(Arc<Mutex<SerialDevice>>);

impl std::fmt::Debug for ChannelInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelInput")
    }
}

impl ChannelInput {
    /// Input into `uart`.
    pub fn new(uart: Arc<Mutex<SerialDevice>>) -> Self {
        Self(uart)
    }

    /// Queues `line` and a `\n` for the guest to read.
    pub fn send_line(&self, line: &str) -> Result<(), InputError> {
        check_input_line(line)?;
        let mut uart = lock(&self.0);
        uart.enqueue_line(line.as_bytes())
    }
}

/// Whether `line` can be sent as one line of input.
pub fn check_input_line(line: &str) -> Result<(), InputError> {
    if line.len() > MAX_INPUT_LINE {
        return Err(InputError::TooLong(line.len()));
    }
    match line.bytes().find(|b| b.is_ascii_control()) {
        Some(b) => Err(InputError::ControlByte(b)),
        None => Ok(()),
    }
}

/// Counters of a [`ChannelWriter`], readable while the guest runs.
#[derive(Debug, Default)]
pub struct ChannelCounters {
    lines: AtomicU64,
    bytes: AtomicU64,
    cut_lines: AtomicU64,
}

impl ChannelCounters {
    /// The counters now.
    pub fn snapshot(&self) -> ChannelStats {
        ChannelStats {
            lines: self.lines.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            cut_lines: self.cut_lines.load(Ordering::Relaxed),
        }
    }
}

/// What came through the result channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChannelStats {
    /// Complete lines handed to the hook.
    pub lines: u64,
    /// Bytes the guest wrote (line ends and cut bytes included).
    pub bytes: u64,
    /// Lines longer than [`MAX_CHANNEL_LINE`], handed over cut to that length.
    pub cut_lines: u64,
}

/// The result channel's sink: splits the guest's bytes into lines for a hook.
pub struct ChannelWriter {
    hook: ChannelHook,
    line: Vec<u8>,
    cut: bool,
    counters: Arc<ChannelCounters>,
}

impl std::fmt::Debug for ChannelWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelWriter")
            .field("pending", &self.line.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl ChannelWriter {
    /// A writer calling `hook` per line, and its counters.
    pub fn new(hook: ChannelHook) -> (Self, Arc<ChannelCounters>) {
        let counters = Arc::new(ChannelCounters::default());
        (
            Self {
                hook,
                line: Vec::new(),
                cut: false,
                counters: counters.clone(),
            },
            counters,
        )
    }

    fn end_line(&mut self) {
        while self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        if self.cut {
            self.counters.cut_lines.fetch_add(1, Ordering::Relaxed);
            let n = self.counters.cut_lines.load(Ordering::Relaxed);
            if should_log(n) {
                tracing::warn!(
                    count = n,
                    max = MAX_CHANNEL_LINE,
                    "result channel line too long: cut"
                );
            }
        }
        let text = String::from_utf8_lossy(&self.line);
        (self.hook)(&text);
        self.counters.lines.fetch_add(1, Ordering::Relaxed);
        self.line.clear();
        self.cut = false;
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.counters
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        for &b in buf {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < MAX_CHANNEL_LINE {
                self.line.push(b);
            } else {
                self.cut = true;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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

    #[test]
    fn channel_splits_lines_strips_line_ends_and_cuts_long_ones() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let l2 = lines.clone();
        let (mut w, counters) =
            ChannelWriter::new(Box::new(move |l| l2.lock().unwrap().push(l.to_string())));
        let first: &[u8] = b"{\"kind\":\"a\"}\r\nraw\n\r\n\n\xffok\r\r\npartial";
        for b in first {
            w.write_all(&[*b]).unwrap();
        }
        assert_eq!(
            *lines.lock().unwrap(),
            vec!["{\"kind\":\"a\"}", "raw", "", "", "\u{fffd}ok"]
        );
        let mut long = vec![b'x'; MAX_CHANNEL_LINE + 10];
        long.push(b'\n');
        w.write_all(b"\n").unwrap(); // ends "partial"
        w.write_all(&long).unwrap();
        w.write_all(b"short\n").unwrap();
        let got = lines.lock().unwrap().clone();
        assert_eq!(got[5], "partial");
        assert_eq!(got[6].len(), MAX_CHANNEL_LINE);
        assert_eq!(got[7], "short");
        let s = counters.snapshot();
        assert_eq!((s.lines, s.cut_lines), (8, 1));
        assert_eq!(s.bytes, (first.len() + 1 + long.len() + 6) as u64);
    }

    #[test]
    fn input_lines_reach_the_receive_fifo_whole_or_not_at_all() {
        let irq = Arc::new(Count::default());
        let uart = Arc::new(Mutex::new(SerialDevice::new(
            irq.clone(),
            Box::new(Out::default()),
        )));
        let input = ChannelInput::new(uart.clone());
        // Receive interrupt enabled, as the guest's driver does when the port opens.
        uart.lock().unwrap().write(1, &[0x01]).unwrap();
        let before = irq.0.load(Ordering::SeqCst);
        input.send_line("start 64").unwrap();
        assert!(irq.0.load(Ordering::SeqCst) > before, "receive interrupt");
        let read_all = |uart: &Arc<Mutex<SerialDevice>>| {
            let mut got = Vec::new();
            let mut s = uart.lock().unwrap();
            loop {
                let mut lsr = [0u8];
                s.read(5, &mut lsr).unwrap();
                if lsr[0] & 0x01 == 0 {
                    return got;
                }
                let mut b = [0u8];
                s.read(0, &mut b).unwrap();
                got.push(b[0]);
            }
        };
        assert_eq!(read_all(&uart), b"start 64\n");
        assert_eq!(
            input.send_line(&"x".repeat(64)),
            Err(InputError::TooLong(64))
        );
        assert_eq!(input.send_line("a\nb"), Err(InputError::ControlByte(b'\n')));
        // 63 + 1 bytes fill the FIFO; nothing more fits until the guest reads.
        input.send_line(&"y".repeat(63)).unwrap();
        let e = input.send_line("z").unwrap_err();
        assert_eq!(e, InputError::Full { free: 0, needed: 2 });
        assert!(e.to_string().contains("has not read"), "{e}");
        assert_eq!(read_all(&uart).len(), 64);
        input.send_line("stop").unwrap();
        assert_eq!(read_all(&uart), b"stop\n");
    }

    #[test]
    fn channel_through_the_uart() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let l2 = lines.clone();
        let (w, _) = ChannelWriter::new(Box::new(move |l| l2.lock().unwrap().push(l.to_string())));
        let mut s = SerialDevice::new(Arc::new(Count::default()), Box::new(w));
        for b in b"one\ntwo\n" {
            s.write(0, &[*b]).unwrap();
        }
        assert_eq!(*lines.lock().unwrap(), vec!["one", "two"]);
    }
}

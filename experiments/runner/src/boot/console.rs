//! Where a booting guest's console goes, and what the host learns from it.
//!
//! [`GuestConsole`] is the console sink of a Linux VM. It writes every byte to an
//! optional log file, shows the console on the terminal as asked ([`Show`]), and
//! watches for the guest image's `/init` markers: when `SWAPLAB-INIT` appears (the
//! guest reached `/init`) and how the command ended (`SWAPLAB-EXIT <status>` or
//! `SWAPLAB-FAIL <reason>`), and whether swap came up (`SWAPLAB-SWAP`, not shown).
//! With [`Show::Command`] only the command's output is shown: the lines between the
//! two markers. (Kernel messages printed while the command runs
//! are shown too: they cannot be told apart from the command's own output, e.g.
//! `dmesg`'s; with `quiet` the kernel prints only warnings.)

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use workloads::image::init::{self, GuestEnd, SwapSetup};

/// What to show on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Everything the guest prints.
    All,
    /// Only the command's output.
    Command,
    /// Nothing.
    Nothing,
}

/// What the console told the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks {
    /// When `/init` announced itself.
    pub init_at: Option<Instant>,
    /// The guest's uptime then, as `/init` printed it (seconds).
    pub init_uptime: Option<f64>,
    /// How the command ended.
    pub end: Option<GuestEnd>,
    /// When the end marker appeared.
    pub end_at: Option<Instant>,
    /// What `/init` said about swap (`swaplab.swap`).
    pub swap: Option<SwapSetup>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Boot,
    Command,
    Done,
}

/// The console sink.
pub struct GuestConsole {
    show: Show,
    out: Box<dyn Write + Send>,
    log: Option<File>,
    phase: Phase,
    line: Vec<u8>,
    marks: Arc<Mutex<Marks>>,
}

impl GuestConsole {
    /// A sink showing `show` on `out` and logging everything to `log`.
    pub fn new(
        show: Show,
        out: Box<dyn Write + Send>,
        log: Option<File>,
    ) -> (Self, Arc<Mutex<Marks>>) {
        let marks = Arc::new(Mutex::new(Marks::default()));
        (
            Self {
                show,
                out,
                log,
                phase: Phase::Boot,
                line: Vec::new(),
                marks: marks.clone(),
            },
            marks,
        )
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        base::lock(&self.marks)
    }

    fn end_line(&mut self) {
        let raw = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches('\r');
        match self.phase {
            Phase::Boot if text.contains(init::INIT_MARKER) => {
                let uptime = init::find_init_uptime(text);
                let mut m = self.marks();
                m.init_at = Some(Instant::now());
                m.init_uptime = uptime;
                drop(m);
                self.phase = Phase::Command;
            }
            Phase::Command if text.starts_with(init::SWAP_MARKER) => {
                let swap = init::find_swap(text);
                self.marks().swap = swap;
            }
            Phase::Command => {
                if let Some(end) = init::find_end(text) {
                    let marker = [init::EXIT_MARKER, init::FAIL_MARKER]
                        .iter()
                        .filter_map(|m| text.rfind(m))
                        .min()
                        .unwrap_or(0);
                    if self.show == Show::Command && marker > 0 {
                        let _ = self.out.write_all(&text.as_bytes()[..marker]);
                    }
                    let mut m = self.marks();
                    m.end = Some(end);
                    m.end_at = Some(Instant::now());
                    drop(m);
                    self.phase = Phase::Done;
                } else if self.show == Show::Command {
                    let _ = self.out.write_all(text.as_bytes());
                    let _ = self.out.write_all(b"\n");
                }
            }
            _ => {}
        }
        if self.show == Show::All {
            let _ = self.out.write_all(text.as_bytes());
            let _ = self.out.write_all(b"\n");
        }
        if self.show != Show::Nothing {
            let _ = self.out.flush();
        }
    }
}

impl Write for GuestConsole {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(log) = &mut self.log {
            log.write_all(buf)?;
        }
        for &b in buf {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < vmm::devices::console::MAX_LINE {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(log) = &mut self.log {
            log.flush()?;
        }
        self.out.flush()
    }
}

impl Drop for GuestConsole {
    fn drop(&mut self) {
        // A partial last line (the guest died mid-line) is still shown.
        if !self.line.is_empty() && self.show == Show::All {
            let _ = self.out.write_all(&self.line);
            let _ = self.out.write_all(b"\n");
            let _ = self.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const CONSOLE: &str = "[    0.000000] Linux version 6.1\r\nboot noise\r\nSWAPLAB-INIT uptime=2.50\r\nSWAPLAB-SWAP ok 1048576\r\n[    2.600000] virtio_mmio: warning\r\nMemTotal: 500000 kB\r\n2\r\nno newline SWAPLAB-EXIT 3\r\n[    3.0] reboot: Power down\r\n";

    fn feed(show: Show) -> (String, Marks) {
        let buf = Buf::default();
        let (mut c, marks) = GuestConsole::new(show, Box::new(buf.clone()), None);
        for b in CONSOLE.as_bytes() {
            c.write_all(&[*b]).unwrap();
        }
        drop(c);
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let m = marks.lock().unwrap().clone();
        (out, m)
    }

    #[test]
    fn command_mode_shows_only_the_command_output() {
        let (out, m) = feed(Show::Command);
        assert_eq!(
            out,
            "[    2.600000] virtio_mmio: warning\nMemTotal: 500000 kB\n2\nno newline "
        );
        assert_eq!(m.end, Some(GuestEnd::Exited(3)));
        assert_eq!(m.swap, Some(SwapSetup::On(1 << 20)));
        assert_eq!(m.init_uptime, Some(2.5));
        assert!(m.init_at.unwrap() <= m.end_at.unwrap());
    }

    #[test]
    fn all_mode_shows_everything_without_carriage_returns() {
        let (out, m) = feed(Show::All);
        assert_eq!(out, CONSOLE.replace('\r', ""));
        assert_eq!(m.end, Some(GuestEnd::Exited(3)));
        let (out, m) = feed(Show::Nothing);
        assert!(out.is_empty());
        assert!(m.init_at.is_some());
    }

    #[test]
    fn failures_end_the_command_output() {
        let buf = Buf::default();
        let (mut c, marks) = GuestConsole::new(Show::Command, Box::new(buf.clone()), None);
        c.write_all(b"SWAPLAB-INIT uptime=1\nSWAPLAB-FAIL insmod x.ko\nafter\n")
            .unwrap();
        assert_eq!(
            marks.lock().unwrap().end,
            Some(GuestEnd::Failed("insmod x.ko".into()))
        );
        assert!(buf.0.lock().unwrap().is_empty());
    }
}

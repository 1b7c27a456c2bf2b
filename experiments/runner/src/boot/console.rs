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
    /// The root disk `/init` mounted (`swaplab.root`), as the guest names it.
    pub root: Option<String>,
    /// The command's output (console lines between the start and end
    /// markers), its last [`OUTPUT_KEEP`] bytes.
    pub output: String,
    /// Bytes of output dropped from the front to keep it within [`OUTPUT_KEEP`].
    pub output_dropped: u64,
}

/// How much of a command's output [`Marks::output`] keeps (the tail).
pub const OUTPUT_KEEP: usize = 256 << 10;

impl Marks {
    fn keep_output(&mut self, text: &str) {
        self.output.push_str(text);
        self.output.push('\n');
        if self.output.len() > OUTPUT_KEEP {
            let mut cut = self.output.len() - OUTPUT_KEEP;
            while !self.output.is_char_boundary(cut) {
                cut += 1;
            }
            self.output.drain(..cut);
            self.output_dropped += cut as u64;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Boot,
    Command,
    /// The kernel log's copy of the end marker arrived before the tty's: the
    /// command has ended, but the tty may still be sending its last bytes
    /// (`SWAPLAB-EXIT 0` is printed synchronously by the kernel, the tty drains
    /// by interrupts). Kernel log lines are no longer output; the tty's marker
    /// ends the phase.
    Tail,
    Done,
}

/// The console sink.
pub struct GuestConsole {
    show: Show,
    out: Box<dyn Write + Send>,
    log: Option<File>,
    phase: Phase,
    line: Vec<u8>,
    /// The tty's part of a line the kernel log's marker cut in two (`bz-ok` of
    /// `bz-ok[    8.08] SWAPLAB-EXIT 0`): the line goes on after it.
    carry: String,
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
                carry: String::new(),
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
            Phase::Command if text.starts_with(init::ROOT_MARKER) => {
                let dev = text[init::ROOT_MARKER.len()..]
                    .trim()
                    .strip_prefix("ok ")
                    .map(|d| d.trim().to_string());
                self.marks().root = dev;
            }
            Phase::Command | Phase::Tail => self.command_line(text),
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

impl GuestConsole {
    /// A line of the command's output, or its end.
    fn command_line(&mut self, text: &str) {
        if self.phase == Phase::Tail && printk_stamp_len(text).is_some() {
            // The kernel's, after the command ended (`reboot: Power down`).
            return;
        }
        let text = std::mem::take(&mut self.carry) + text;
        let Some(end) = init::find_end(&text) else {
            self.output(&text, true);
            return;
        };
        // The first marker ends the output: /init also writes the exit marker
        // to the kernel log, whose console line can land inside the tty's
        // (`SWAPLAB-EXIT 0[    8.08] SWAPLAB-EXIT 0`), before it
        // (`[    8.08] SWAPLAB-EXIT 0`), or inside the command's last line
        // (`bz-ok[    8.08] SWAPLAB-EXIT 0`, its newline still to come).
        let first = [init::EXIT_MARKER, init::FAIL_MARKER]
            .iter()
            .filter_map(|m| text.find(m))
            .min()
            .unwrap_or(0);
        let marker = printk_prefix_start(&text[..first]);
        let mut m = self.marks();
        if m.end.is_none() {
            m.end = Some(end);
            m.end_at = Some(Instant::now());
        }
        drop(m);
        if marker < first {
            // The kernel log's copy: the tty's line goes on after it.
            self.carry = text[..marker].to_string();
            self.phase = Phase::Tail;
        } else {
            if marker > 0 {
                self.output(&text[..marker], false);
            }
            self.phase = Phase::Done;
        }
    }

    /// Shows and keeps `text`, a line of the command's output (`newline`:
    /// a whole one).
    fn output(&mut self, text: &str, newline: bool) {
        self.marks().keep_output(text);
        if self.show == Show::Command {
            let _ = self.out.write_all(text.as_bytes());
            if newline {
                let _ = self.out.write_all(b"\n");
            }
        }
    }
}

/// The length of the kernel log timestamp (`[    8.086337] `) `line` starts
/// with, if it does.
fn printk_stamp_len(line: &str) -> Option<usize> {
    let close = line.find("] ")?;
    (line.starts_with('[') && printk_prefix_start(&line[..close + 2]) == 0).then_some(close + 2)
}

/// Where a kernel log line's timestamp (`[    8.086337] `) ends `before`
/// begins, or `before.len()` if it does not end with one.
fn printk_prefix_start(before: &str) -> usize {
    let Some(stamp) = before.strip_suffix("] ") else {
        return before.len();
    };
    let Some(open) = stamp.rfind('[') else {
        return before.len();
    };
    let inside = stamp[open + 1..].trim_start();
    let is_time = !inside.is_empty()
        && inside.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && inside.contains('.');
    if is_time {
        open
    } else {
        before.len()
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
        // The tty's part of a line the kernel's marker cut, whose rest never
        // came (the guest powered off first), is still output.
        if !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            self.output(&carry, false);
        }
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
    fn the_kernel_logs_copy_of_the_exit_marker_never_joins_the_output() {
        for (console, output) in [
            // The kernel log's line inside the tty's (CI of session 15).
            (
                "meminfo\nSWAPLAB-EXIT 0[    8.086337] SWAPLAB-EXIT 0\n",
                "meminfo\n",
            ),
            // The kernel log's line first.
            (
                "meminfo\n[    8.086337] SWAPLAB-EXIT 0\nSWAPLAB-EXIT 0\n",
                "meminfo\n",
            ),
            // Output before the marker on its line, and a bracket that is not a time.
            ("no newline [x] SWAPLAB-EXIT 0\n", "no newline [x] "),
        ] {
            let buf = Buf::default();
            let (mut c, marks) = GuestConsole::new(Show::Command, Box::new(buf.clone()), None);
            c.write_all(format!("SWAPLAB-INIT uptime=1\n{console}").as_bytes())
                .unwrap();
            let m = marks.lock().unwrap().clone();
            assert_eq!(m.end, Some(GuestEnd::Exited(0)), "{console:?}");
            assert_eq!(m.output.trim_end(), output.trim_end(), "{console:?}");
            assert!(!m.output.contains("SWAPLAB"), "{console:?}");
        }
        assert_eq!(printk_prefix_start("ab[ 12.5] "), 2);
        assert_eq!(printk_prefix_start("ab[] "), 5);
        assert_eq!(printk_prefix_start("ab"), 2);
        assert_eq!(printk_stamp_len("[    9.0] reboot"), Some(10));
        assert_eq!(printk_stamp_len("[x] reboot"), None);
        assert_eq!(printk_stamp_len("a[ 9.0] b"), None);
    }

    /// The kernel log's marker overtakes the tty's last bytes (CI of session
    /// 17: `bz-ok` came out without its newline): they are still the command's.
    #[test]
    fn the_ttys_bytes_after_the_kernel_logs_marker_are_still_output() {
        for (console, output, shown) in [
            // Inside the command's last line, its newline after.
            (
                "bz-ok[    8.08] SWAPLAB-EXIT 0\n\nSWAPLAB-EXIT 0\n[    9.0] reboot: Power down\n",
                "bz-ok\n",
                "bz-ok\n",
            ),
            // Whole lines of the tty after it; kernel lines are not output.
            (
                "a\n[    8.08] SWAPLAB-EXIT 0\nb\n[    8.09] late\nc\nSWAPLAB-EXIT 0\n",
                "a\nb\nc\n",
                "a\nb\nc\n",
            ),
            // The tty's rest never came: its part is still output.
            (
                "bz-ok[    8.08] SWAPLAB-EXIT 0\n[    9.0] reboot: Power down\n",
                "bz-ok\n",
                "bz-ok",
            ),
        ] {
            let buf = Buf::default();
            let (mut c, marks) = GuestConsole::new(Show::Command, Box::new(buf.clone()), None);
            c.write_all(format!("SWAPLAB-INIT uptime=1\n{console}").as_bytes())
                .unwrap();
            assert_eq!(marks.lock().unwrap().end, Some(GuestEnd::Exited(0)));
            drop(c);
            let m = marks.lock().unwrap().clone();
            assert_eq!(m.output, output, "{console:?}");
            let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert_eq!(out, shown, "{console:?}");
        }
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

    #[test]
    fn the_command_output_is_kept_for_its_metric_and_the_root_disk_noted() {
        let (_, m) = feed(Show::Nothing);
        assert_eq!(
            m.output,
            "[    2.600000] virtio_mmio: warning\nMemTotal: 500000 kB\n2\nno newline \n"
        );
        assert_eq!(m.root, None);
        let (mut c, marks) = GuestConsole::new(Show::Nothing, Box::new(Buf::default()), None);
        c.write_all(b"boot\nSWAPLAB-INIT uptime=1\nSWAPLAB-ROOT ok /dev/vdb\nrate 5\n")
            .unwrap();
        // Only the tail of a long output stays, cut at a character boundary.
        let line = "\u{e9}".repeat(1000);
        for _ in 0..(OUTPUT_KEEP / line.len() + 10) {
            c.write_all(line.as_bytes()).unwrap();
            c.write_all(b"\n").unwrap();
        }
        c.write_all(b"rate 7\nSWAPLAB-EXIT 0\n").unwrap();
        let m = marks.lock().unwrap().clone();
        assert_eq!(m.root.as_deref(), Some("/dev/vdb"));
        assert!(m.output.len() <= OUTPUT_KEEP && m.output.len() > OUTPUT_KEEP - 4);
        assert!(m.output_dropped > 0);
        assert!(m.output.ends_with("rate 7\n") && !m.output.contains("rate 5"));
    }
}

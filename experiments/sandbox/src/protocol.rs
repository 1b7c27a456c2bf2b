//! The status protocol between L1's `/init` (and the job) and the host.
//!
//! L1 writes one line per event to the `swaplab.status` virtio-serial port
//! (before that port exists, to the kernel console prefixed with
//! `swaplab-init: `):
//!
//! - `stage NAME`: init entered a stage (`modules`, `ports`, `job`, `mount`, `run`);
//!   `stage run` means L1 has booted and the command is starting;
//! - `fail STAGE: MESSAGE`: init failed and is powering off;
//! - `cannot-start CODE MESSAGE`: the job could not start the command
//!   (not found, not executable, no such directory) and exits with `CODE`;
//! - `exit CODE`: the command finished with `CODE` (0-255; 128+N for signal N);
//! - `alive`: the heartbeat, every few seconds while the command runs (the
//!   host stops an L1 whose heartbeat stops: see `qemu::LIVENESS`).
//!
//! Whatever is not one of these is ignored.

/// Prefix of protocol lines on the kernel console.
pub const CONSOLE_PREFIX: &str = "swaplab-init: ";

/// Errors in protocol text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A line that starts like a protocol line but cannot be parsed.
    #[error("malformed status line from L1: {0:?}")]
    Malformed(String),
}

/// One event from L1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stage was entered.
    Stage(String),
    /// Init failed in `stage`.
    Fail {
        /// The stage.
        stage: String,
        /// What went wrong.
        message: String,
    },
    /// The command could not start.
    CannotStart {
        /// Exit code the job used.
        code: u8,
        /// Why.
        message: String,
    },
    /// The command exited.
    Exit(u8),
    /// L1 is alive (`alive`, every few seconds while the command runs).
    Alive,
}

/// Parse one line; `Ok(None)` for lines that are not protocol lines.
pub fn parse_line(line: &str) -> Result<Option<Event>, ProtocolError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || ProtocolError::Malformed(line.to_string());
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let code = |s: &str| s.trim().parse::<u8>().map_err(|_| bad());
    Ok(Some(match word {
        "stage" if !rest.is_empty() => Event::Stage(rest.trim().to_string()),
        "fail" => {
            let (stage, message) = rest.split_once(": ").ok_or_else(bad)?;
            Event::Fail {
                stage: stage.to_string(),
                message: message.to_string(),
            }
        }
        "cannot-start" => {
            let (c, message) = rest.split_once(' ').ok_or_else(bad)?;
            Event::CannotStart {
                code: code(c)?,
                message: message.to_string(),
            }
        }
        "exit" => Event::Exit(code(rest)?),
        "alive" if rest.is_empty() => Event::Alive,
        _ => return Ok(None),
    }))
}

/// Parse a kernel console line: only `swaplab-init: ` lines count.
pub fn parse_console_line(line: &str) -> Option<Event> {
    let rest = line.trim_start_matches('\r').strip_prefix(CONSOLE_PREFIX)?;
    parse_line(rest).ok().flatten()
}

/// Splits a byte stream into lines (partial lines are kept until completed).
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; returns the complete lines they finish (lossy UTF-8, without `\n`).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                lines.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.partial.clear();
            } else if self.partial.len() < 64 * 1024 {
                self.partial.push(b);
            }
        }
        lines
    }

    /// The unterminated last line, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            None
        } else {
            let s = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            Some(s)
        }
    }
}

/// A kernel panic line in the console text, if there is one.
pub fn find_panic(console: &str) -> Option<&str> {
    console
        .lines()
        .find(|l| l.contains("Kernel panic - not syncing"))
        .map(|l| l.trim())
}

/// Lines that open a kernel oops report.
const OOPS_STARTS: &[&str] = &[
    "BUG:",
    "Oops:",
    "general protection fault",
    "------------[ cut here ]",
    "double fault",
    "stack guard page",
    "kernel stack overflow",
    "Kernel panic - not syncing",
];

/// Most lines of an oops report an error message shows.
const OOPS_LINES: usize = 60;

/// The kernel's report of what led to its panic: from the first line that
/// opens an oops (`BUG:`, `Oops:`, a `cut here` marker, ...) through the panic
/// line, at most [`OOPS_LINES`] lines (the middle elided). `None` without a
/// panic.
pub fn panic_report(console: &str) -> Option<String> {
    let lines: Vec<&str> = console.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .position(|l| l.contains("Kernel panic - not syncing"))?;
    let start = lines[..=end]
        .iter()
        .position(|l| OOPS_STARTS.iter().any(|m| l.contains(m)))
        .unwrap_or(end);
    let report = &lines[start..=end];
    if report.len() <= OOPS_LINES {
        return Some(report.join("\n"));
    }
    let head = OOPS_LINES * 3 / 4;
    let tail = OOPS_LINES - head;
    let skipped = report.len() - head - tail;
    Some(format!(
        "{}\n[... {skipped} lines ...]\n{}",
        report[..head].join("\n"),
        report[report.len() - tail..].join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_event() {
        assert_eq!(
            parse_line("stage run\n").unwrap(),
            Some(Event::Stage("run".into()))
        );
        assert_eq!(
            parse_line("fail mount: cannot mount: it: broke").unwrap(),
            Some(Event::Fail {
                stage: "mount".into(),
                message: "cannot mount: it: broke".into()
            })
        );
        assert_eq!(
            parse_line("cannot-start 127 command not found: x (PATH=/bin)").unwrap(),
            Some(Event::CannotStart {
                code: 127,
                message: "command not found: x (PATH=/bin)".into()
            })
        );
        assert_eq!(parse_line("exit 7\r").unwrap(), Some(Event::Exit(7)));
        assert_eq!(parse_line("hello").unwrap(), None);
        assert!(parse_line("exit 300").is_err());
        assert!(parse_line("fail nocolon").is_err());
    }

    #[test]
    fn console_lines_need_the_prefix() {
        assert_eq!(
            parse_console_line("swaplab-init: stage modules"),
            Some(Event::Stage("modules".into()))
        );
        assert_eq!(parse_console_line("[    1.0] stage modules"), None);
    }

    #[test]
    fn splitter_handles_partial_lines() {
        let mut s = LineSplitter::default();
        assert!(s.feed(b"sta").is_empty());
        assert_eq!(s.feed(b"ge run\nexit 0\nx"), ["stage run", "exit 0"]);
        assert_eq!(s.finish().as_deref(), Some("x"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn finds_panics() {
        let c = "[ 1.0] ok\n[ 2.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n";
        assert_eq!(
            find_panic(c),
            Some("[ 2.0] Kernel panic - not syncing: VFS: Unable to mount root fs")
        );
        assert_eq!(find_panic("fine"), None);
    }

    #[test]
    fn the_panic_report_starts_at_the_oops() {
        let c = "[ 1.0] ok\n[ 2.0] BUG: unable to handle page fault\n[ 2.1] RIP: x\n\
                 [ 2.2] Kernel panic - not syncing: Fatal exception\n[ 2.3] after\n";
        assert_eq!(
            panic_report(c).unwrap(),
            "[ 2.0] BUG: unable to handle page fault\n[ 2.1] RIP: x\n\
             [ 2.2] Kernel panic - not syncing: Fatal exception"
        );
        assert_eq!(panic_report("[ 1.0] BUG: but no panic"), None);
        let bare = "[ 1.0] ok\n[ 2.0] Kernel panic - not syncing: VFS\n";
        assert_eq!(
            panic_report(bare).unwrap(),
            "[ 2.0] Kernel panic - not syncing: VFS"
        );
        let long: String = std::iter::once("BUG: x".to_string())
            .chain((0..200).map(|i| format!("line {i}")))
            .chain(std::iter::once("Kernel panic - not syncing: y".to_string()))
            .collect::<Vec<_>>()
            .join("\n");
        let r = panic_report(&long).unwrap();
        assert_eq!(r.lines().count(), OOPS_LINES + 1);
        assert!(r.starts_with("BUG: x\n"), "{r}");
        assert!(r.contains("[... 142 lines ...]"), "{r}");
        assert!(r.ends_with("Kernel panic - not syncing: y"), "{r}");
    }

    #[test]
    fn the_heartbeat_is_a_protocol_line() {
        assert_eq!(parse_line("alive\n").unwrap(), Some(Event::Alive));
        assert_eq!(parse_line("alive and well").unwrap(), None);
    }
}

//! `agent [--input PATH]`: a guest agent that starts and stops a memory-hungry
//! workload when the host asks, for live demos (`swaplab demo`).
//!
//! It reads commands, one per line, from `--input` (default: the result channel,
//! `$SWAPLAB_CHANNEL`, i.e. `/dev/ttyS1`, where the host sends lines with the
//! control socket's `guest.send`), and answers each with an `agent` JSON line on its
//! output (`event` = `ready`, `started`, `stopped`, `exited`, `error`, `quit`):
//!
//! - `start MB [PATTERN]`: run `swaplab-guest touch --mb MB --pattern PATTERN`
//!   (default `random`) for as many passes as it takes, until `stop`;
//! - `stop`: end the workload at once (`SIGKILL`: a pass over a host-swapped
//!   working set can take minutes, and its summary is not wanted);
//! - `quit`: end the workload and exit 0 (the guest then powers off).
//!
//! `SIGTERM`/`SIGINT` end the agent like `quit`. A workload that ends by itself is
//! reported as `exited` with its status.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command as Process, Stdio};

use super::args::Flags;
use super::error::GuestError;
use super::json::{emit, line, Value};
use super::output::{self, stop_requested};

/// Longest command line kept; longer input is cut (and then fails to parse).
const MAX_COMMAND: usize = 256;
/// Passes for a workload that runs until stopped.
const FOREVER_PASSES: &str = "4294967295";

/// A command from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start touching `mb` MiB in `pattern`.
    Start {
        /// MiB to touch.
        mb: u64,
        /// Access pattern (as `touch --pattern` takes it).
        pattern: String,
    },
    /// Stop the workload.
    Stop,
    /// Stop the workload and exit.
    Quit,
}

/// Parse one command line; the error says what is wrong.
pub fn parse_command(text: &str) -> Result<Command, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["start", mb, rest @ ..] if rest.len() <= 1 => {
            let mb: u64 = mb
                .parse()
                .ok()
                .filter(|m| (1..=1 << 20).contains(m))
                .ok_or_else(|| format!("start: bad MiB count {mb:?}"))?;
            let pattern = rest.first().unwrap_or(&"random").to_string();
            if !pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '.')
            {
                return Err(format!("start: bad pattern {pattern:?}"));
            }
            Ok(Command::Start { mb, pattern })
        }
        ["start", ..] => Err("usage: start MB [PATTERN]".into()),
        ["stop"] => Ok(Command::Stop),
        ["quit"] => Ok(Command::Quit),
        _ => Err(format!(
            "unknown command {:?} (start MB [PATTERN], stop, quit)",
            text.chars().take(64).collect::<String>()
        )),
    }
}

/// Splits bytes into lines (`\n` or `\r`), keeping at most `MAX_COMMAND` (256) bytes
/// of each.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; returns the lines they completed (empty lines dropped).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.pending.is_empty() {
                    lines.push(String::from_utf8_lossy(&self.pending).into_owned());
                    self.pending.clear();
                }
            } else if self.pending.len() < MAX_COMMAND {
                self.pending.push(b);
            }
        }
        lines
    }
}

struct Workload {
    child: Child,
    mb: u64,
}

fn event(out: &mut dyn Write, ev: &str, fields: &[(&str, Value<'_>)]) -> Result<(), GuestError> {
    let mut all = vec![("event", Value::S(ev))];
    all.extend_from_slice(fields);
    emit(out, &line("agent", &all))
}

fn stop(w: &mut Option<Workload>, out: &mut dyn Write) -> Result<(), GuestError> {
    if let Some(mut wl) = w.take() {
        let _ = wl.child.kill();
        let status = wl
            .child
            .wait()
            .map_err(GuestError::io("waiting for touch"))?;
        event(
            out,
            "stopped",
            &[
                ("mb", Value::U(wl.mb)),
                ("status", Value::O(status.code().map(|c| c as u64))),
            ],
        )?;
    }
    Ok(())
}

fn open_input(path: &str) -> Result<File, GuestError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(GuestError::io(format!("opening agent input {path}")))?;
    // SAFETY: the fd is open; isatty only inspects it.
    if unsafe { libc::isatty(file.as_raw_fd()) } == 1 {
        output::make_raw(&file).map_err(GuestError::io(format!("raw mode on {path}")))?;
    }
    Ok(file)
}

/// Waits up to `ms` for input on `file`; true if there is some.
fn readable(file: &File, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// Run the agent: `args` are its flags, results go to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> Result<(), GuestError> {
    let f = Flags::parse("agent", args, &["--input"])?;
    let input = match f.get("--input") {
        Some(p) => p.to_string(),
        None => std::env::var(output::CHANNEL_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                GuestError::Usage(format!(
                    "agent needs --input PATH or ${}",
                    output::CHANNEL_ENV
                ))
            })?,
    };
    let mut file = open_input(&input)?;
    let exe = std::env::current_exe().map_err(GuestError::io("finding swaplab-guest"))?;
    let mut splitter = LineSplitter::default();
    let mut workload: Option<Workload> = None;
    event(out, "ready", &[])?;
    let mut buf = [0u8; 256];
    while !stop_requested() {
        if let Some(wl) = workload.as_mut() {
            if let Ok(Some(status)) = wl.child.try_wait() {
                let mb = wl.mb;
                workload = None;
                event(
                    out,
                    "exited",
                    &[
                        ("mb", Value::U(mb)),
                        ("status", Value::O(status.code().map(|c| c as u64))),
                    ],
                )?;
            }
        }
        if !readable(&file, 250) {
            continue;
        }
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(GuestError::io(format!("reading {input}"))(e)),
        };
        if n == 0 {
            // A regular file or a closed pipe: no more commands.
            break;
        }
        for text in splitter.feed(&buf[..n]) {
            match parse_command(&text) {
                Ok(Command::Start { mb, pattern }) => {
                    if workload.is_some() {
                        event(out, "error", &[("message", Value::S("already running"))])?;
                        continue;
                    }
                    let child = Process::new(&exe)
                        .args(["--out", "/dev/null", "touch", "--mb", &mb.to_string()])
                        .args(["--passes", FOREVER_PASSES, "--pattern", &pattern])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .spawn()
                        .map_err(GuestError::io("starting touch"))?;
                    workload = Some(Workload { child, mb });
                    event(
                        out,
                        "started",
                        &[("mb", Value::U(mb)), ("pattern", Value::S(&pattern))],
                    )?;
                }
                Ok(Command::Stop) => {
                    if workload.is_none() {
                        event(out, "error", &[("message", Value::S("not running"))])?;
                    }
                    stop(&mut workload, out)?;
                }
                Ok(Command::Quit) => {
                    stop(&mut workload, out)?;
                    return event(out, "quit", &[]);
                }
                Err(message) => event(out, "error", &[("message", Value::S(&message))])?,
            }
        }
    }
    stop(&mut workload, out)?;
    event(out, "quit", &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_errors_say_why() {
        assert_eq!(
            parse_command("start 64"),
            Ok(Command::Start {
                mb: 64,
                pattern: "random".into()
            })
        );
        assert_eq!(
            parse_command("  start 8 zipf:0.9 "),
            Ok(Command::Start {
                mb: 8,
                pattern: "zipf:0.9".into()
            })
        );
        assert_eq!(parse_command("stop"), Ok(Command::Stop));
        assert_eq!(parse_command("quit"), Ok(Command::Quit));
        assert!(parse_command("start").unwrap_err().contains("usage"));
        assert!(parse_command("start 0").unwrap_err().contains("bad MiB"));
        assert!(parse_command("start x").unwrap_err().contains("bad MiB"));
        assert!(parse_command("start 8 a;b")
            .unwrap_err()
            .contains("pattern"));
        assert!(parse_command("start 8 seq x").is_err());
        assert!(parse_command("reboot").unwrap_err().contains("unknown"));
    }

    #[test]
    fn lines_split_on_either_line_end_and_stay_bounded() {
        let mut s = LineSplitter::default();
        assert!(s.feed(b"sta").is_empty());
        assert_eq!(s.feed(b"rt 4\r\n\nstop\n"), vec!["start 4", "stop"]);
        let long = vec![b'x'; 1000];
        assert!(s.feed(&long).is_empty());
        let got = s.feed(b"\n");
        assert_eq!(got[0].len(), MAX_COMMAND);
    }

    #[test]
    fn a_file_of_commands_runs_to_its_end() {
        let dir = std::env::temp_dir().join(format!("agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("cmds");
        std::fs::write(&input, "stop\nbogus\n").unwrap();
        let mut out = Vec::new();
        run(
            &["--input".to_string(), input.display().to_string()],
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text
            .lines()
            .map(|l| {
                let i = l.find("\"event\":\"").unwrap() + 9;
                &l[i..i + l[i..].find('"').unwrap()]
            })
            .collect();
        assert_eq!(events, ["ready", "error", "error", "quit"], "{text}");
        assert!(text.contains("not running"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

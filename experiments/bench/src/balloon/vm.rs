//! Starting the VMs `swaplab bench balloon` compares, each a child process
//! whose guest command's output arrives as lines: swaplab (`swaplab boot
//! --balloon --api-sock`) and QEMU microvm with a virtio-balloon and QMP.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::driver::{
    tail, BalloonBenchError, ControlSocket, Driver, JsonLines, NoDriver, Qmp, REQUEST_TIMEOUT,
};
use crate::qemu;
use runner::boot::console::{GuestConsole, Show};
use runner::boot::BootFiles;

/// Printed by the guest once it has touched (and freed) its memory.
const READY_MARKER: &str = "swaplab-bench-balloon: touched";
/// Statistics interval asked of both devices, seconds.
const STATS_INTERVAL_S: u64 = 1;

/// The guest command: touch, free, say so, wait to be stopped.
pub(super) fn guest_command(touch_mib: u64) -> String {
    format!(
        "swaplab-guest touch --mb {touch_mib} --out - >/dev/null && echo {READY_MARKER}; exec sleep 1000000"
    )
}

/// Lines of a VM's command output, arriving from a reader thread.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Waits for a line starting with `marker`.
    fn wait_for(&mut self, marker: &str, limit: Duration) -> Result<(), BalloonBenchError> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.starts_with(marker);
                    self.seen.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(BalloonBenchError::Timeout {
                        what: format!("the guest printing {marker:?}"),
                        secs: limit.as_secs(),
                        output: self.seen.clone(),
                    })
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(BalloonBenchError::Ended {
                        what: format!("printing {marker:?}"),
                        output: self.seen.clone(),
                    })
                }
            }
        }
    }
}

/// A writer sending each complete line to a channel.
struct LineSender {
    tx: mpsc::Sender<String>,
    buf: Vec<u8>,
}

impl LineSender {
    fn new(tx: mpsc::Sender<String>) -> Self {
        Self {
            tx,
            buf: Vec::new(),
        }
    }
}

impl Write for LineSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..i]);
            let _ = self.tx.send(text.trim_end_matches('\r').to_string());
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feeds `out` to `sink` on a thread until it closes.
fn pump(mut out: impl Read + Send + 'static, mut sink: impl Write + Send + 'static) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = sink.write_all(&buf[..n]);
                }
            }
        }
    });
}

/// A VM under test: its process, its output, its balloon.
pub(super) struct Vm {
    child: Child,
    lines: Lines,
    pub(super) driver: Box<dyn Driver>,
}

impl Vm {
    /// A started VM whose output arrives on `rx`, with no balloon driver yet.
    fn new(child: Child, rx: mpsc::Receiver<String>) -> Self {
        Vm {
            child,
            lines: Lines {
                rx,
                seen: Vec::new(),
            },
            driver: Box::new(NoDriver),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What both VMMs are given.
pub(super) struct Setup {
    pub(super) files: BootFiles,
    pub(super) mem: u64,
    pub(super) cpus: u32,
    pub(super) command: String,
    pub(super) limit: Duration,
}

impl Setup {
    /// QEMU's command line (swaplab adds `swaplab.channel=1` for its result channel).
    pub(super) fn qemu_cmdline(&self) -> Result<String, BalloonBenchError> {
        let base = format!("{} no-kvmapf", self.files.cmdline);
        workloads::image::init::cmdline_with_run(&base, Some(&self.command))
            .map_err(|e| BalloonBenchError::Protocol(e.to_string()))
    }
}

/// Boots swaplab (`swaplab boot --balloon --api-sock`) up to the guest's ready line.
pub(super) fn start_swaplab(s: &Setup, dir: &Path) -> Result<Vm, BalloonBenchError> {
    let sock = dir.join("swaplab-api.sock");
    let exe =
        sandbox::reexec::current_exe().map_err(|e| BalloonBenchError::Protocol(e.to_string()))?;
    let args: Vec<OsString> = vec![
        "boot".into(),
        "--sandbox".into(),
        "never".into(),
        "--mem".into(),
        format!("{}M", s.mem >> 20).into(),
        "--cpus".into(),
        s.cpus.to_string().into(),
        "--balloon".into(),
        "--api-sock".into(),
        sock.clone().into_os_string(),
        "--timeout".into(),
        s.limit.as_secs().max(1).to_string().into(),
        "--run".into(),
        s.command.clone().into(),
    ];
    let mut child = qemu::spawn(&exe, &args)?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        pump(out, LineSender::new(tx));
    }
    if let Some(err) = child.stderr.take() {
        pump(err, std::io::sink());
    }
    let mut vm = Vm::new(child, rx);
    vm.lines.wait_for(READY_MARKER, s.limit)?;
    vm.driver = Box::new(ControlSocket(JsonLines::connect(
        &sock,
        "the control socket",
        REQUEST_TIMEOUT,
    )?));
    Ok(vm)
}

/// Boots QEMU microvm with a virtio-balloon up to the guest's ready line.
pub(super) fn start_qemu(s: &Setup, program: &OsStr, dir: &Path) -> Result<Vm, BalloonBenchError> {
    let sock = dir.join("qmp.sock");
    let mut args = qemu::args(&s.files, &s.qemu_cmdline()?, s.mem, s.cpus);
    args.extend([
        "-device".into(),
        "virtio-balloon-device,id=balloon0,deflate-on-oom=on".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", sock.display()).into(),
    ]);
    let mut child = qemu::spawn(program, &args)?;
    let (tx, rx) = mpsc::channel();
    let (console, _marks) = GuestConsole::new(Show::Command, Box::new(LineSender::new(tx)), None);
    if let Some(out) = child.stdout.take() {
        pump(out, console);
    }
    let (etx, erx) = mpsc::channel();
    if let Some(err) = child.stderr.take() {
        pump(err, LineSender::new(etx));
    }
    let mut vm = Vm::new(child, rx);
    let mut qmp = match Qmp::open(&sock, s.mem, REQUEST_TIMEOUT) {
        Ok(q) => q,
        Err(e) => {
            let stderr: Vec<String> = erx.try_iter().collect();
            return Err(BalloonBenchError::Protocol(format!("{e}{}", tail(&stderr))));
        }
    };
    // Statistics every second, as swaplab's balloon asks for them.
    qmp.execute(
        "qom-set",
        Some(json!({
            "path": "/machine/peripheral/balloon0",
            "property": "guest-stats-polling-interval",
            "value": STATS_INTERVAL_S,
        })),
    )?;
    vm.lines.wait_for(READY_MARKER, s.limit)?;
    vm.driver = Box::new(qmp);
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_sender_splits_lines_across_writes() {
        let (tx, rx) = mpsc::channel();
        let mut w = LineSender::new(tx);
        w.write_all(b"ab").unwrap();
        w.write_all(b"c\r\nd\ne").unwrap();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["abc", "d"]);
        w.write_all(b"\n").unwrap();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["e"]);
    }

    #[test]
    fn guest_command_prints_the_marker_only_after_touching() {
        let c = guest_command(384);
        assert!(c.starts_with("swaplab-guest touch --mb 384 "), "{c}");
        assert!(c.contains(&format!("&& echo {READY_MARKER}")), "{c}");
    }
}

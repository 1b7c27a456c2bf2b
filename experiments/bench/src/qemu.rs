//! Booting the same kernel and initramfs under QEMU's microvm machine (with KVM), as the
//! reference for `swaplab bench boot` (and, with a virtio-balloon, `swaplab bench
//! balloon`, which starts QEMU with [`spawn`] and keeps it running).
//!
//! QEMU's serial console is its stdout; a reader thread feeds it to a
//! [`GuestConsole`] that notes when `/init` starts, and ends when QEMU closes the
//! pipe by exiting (`-no-reboot` makes a reboot an exit too). The caller's thread
//! waits for that with a time limit and kills QEMU when it passes. QEMU dies with
//! this process (`PR_SET_PDEATHSIG`).

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use runner::boot::console::{GuestConsole, Marks, Show};
use runner::boot::BootFiles;

use hostsys::child::ChildSetup;
use nix::sys::signal::Signal;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// Errors running QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuRunError {
    /// QEMU could not start.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("waiting for QEMU")]
    Wait(#[source] std::io::Error),
    /// QEMU failed or was killed before the guest reached `/init`.
    #[error("QEMU {status} before the guest reached /init{}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    Failed {
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
}

/// One QEMU boot.
#[derive(Debug, Clone)]
pub struct QemuRun {
    /// What the console showed.
    pub marks: Marks,
    /// When QEMU was started.
    pub started: Instant,
    /// When it exited (or was killed).
    pub ended: Instant,
    /// Whether it was killed at the time limit.
    pub timed_out: bool,
}

impl QemuRun {
    /// From starting QEMU to `/init`.
    pub fn to_init(&self) -> Option<Duration> {
        self.marks.init_at.map(|t| t - self.started)
    }

    /// From starting QEMU to its exit.
    pub fn total(&self) -> Duration {
        self.ended - self.started
    }
}

/// QEMU's arguments for booting `files` with `cmdline`.
pub fn args(files: &BootFiles, cmdline: &str, mem: u64, cpus: u32) -> Vec<OsString> {
    let mut a: Vec<OsString> = [
        "-M",
        "microvm,acpi=on",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    a.extend(["-m".into(), format!("{}M", mem >> 20).into()]);
    a.extend(["-smp".into(), cpus.to_string().into()]);
    a.extend(["-kernel".into(), files.kernel.clone().into_os_string()]);
    if let Some(i) = &files.initrd {
        a.extend(["-initrd".into(), i.clone().into_os_string()]);
    }
    a.extend(["-append".into(), cmdline.into()]);
    a
}

/// Start `qemu` (or another VMM) with `args`: stdin closed, stdout (the serial
/// console) and stderr piped, killed when this process dies.
pub fn spawn(qemu: &OsStr, args: &[OsString]) -> Result<Child, QemuRunError> {
    let mut cmd = Command::new(qemu);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // In the child before exec: get SIGKILL when this process dies.
    ChildSetup {
        death_signal: Some(Signal::SIGKILL),
        ..ChildSetup::default()
    }
    .apply(&mut cmd);
    cmd.spawn().map_err(|source| QemuRunError::Spawn {
        program: qemu.to_string_lossy().into_owned(),
        source,
    })
}

/// Boot under QEMU microvm, waiting at most `timeout` for it to exit.
pub fn run_microvm(
    qemu: &OsStr,
    files: &BootFiles,
    cmdline: &str,
    mem: u64,
    cpus: u32,
    timeout: Duration,
) -> Result<QemuRun, QemuRunError> {
    let started = Instant::now();
    let mut child = spawn(qemu, &args(files, cmdline, mem, cpus))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (sink, marks) = GuestConsole::new(Show::Nothing, Box::new(std::io::sink()), None);
    let (done_tx, done_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut sink = sink;
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = std::io::Write::write_all(&mut sink, &buf[..n]);
                }
            }
        }
        let _ = done_tx.send(Instant::now());
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let (ended, timed_out) = match done_rx.recv_timeout(timeout) {
        Ok(at) => (at, false),
        Err(_) => {
            let _ = child.kill();
            (Instant::now(), true)
        }
    };
    let status = child.wait().map_err(QemuRunError::Wait)?;
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    let marks = marks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if marks.init_at.is_none() {
        let text = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        return Err(QemuRunError::Failed {
            status: if timed_out {
                format!("was killed after {} s", timeout.as_secs())
            } else {
                format!("exited ({status})")
            },
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
        });
    }
    Ok(QemuRun {
        marks,
        started,
        ended,
        timed_out,
    })
}

//! Running L1 under QEMU's software emulation and supervising it.
//!
//! QEMU gets five pipes and nothing else from the host: the kernel console
//! (serial), the status port and the command's stdout and stderr ports
//! (virtio-serial), and its own stderr. The job travels in fw_cfg, read from
//! a sealed memfd QEMU inherits (not its command line, which every user can
//! read in /proc: the job holds the command's environment, `--env` values
//! included). So no temporary file exists on the host, and a killed swaplab
//! leaves nothing
//! behind; QEMU itself dies with its parent (`PR_SET_PDEATHSIG`). Forwarded
//! sockets ([`super::forward`]) add one socketpair end per port.
//!
//! The supervisor waits in `poll(2)` on those pipes with the nearest deadline
//! as timeout. QEMU's exit closes every pipe, which ends the loop.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hostsys::child::ChildSetup;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::job::qemu_opt_escape;
use super::protocol::{self, Event, LineSplitter};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// Machine: microvm (no PCI, no firmware to run; virtio-mmio devices described
/// in ACPI, which Debian's kernel needs) with the PIT kept for the kernel's timers.
const MACHINE: &str = "microvm,acpi=on";
/// The 9p mount tag of the host's root.
pub const ROOT_TAG: &str = "hostroot";
/// Kernel console bytes kept for error messages.
const CONSOLE_TAIL: usize = 64 * 1024;
/// QEMU stderr bytes kept for error messages.
const QEMU_STDERR_MAX: usize = 16 * 1024;
/// How much of QEMU's `-d cpu_reset` log is kept (the resets at start-up
/// log a register dump per vCPU, about 2 KiB each).
const QEMU_LOG_MAX: usize = 64 * 1024;
/// The line QEMU 7.2 logs (`-d cpu_reset`) when a vCPU of L1 triple-faults.
pub const TRIPLE_FAULT: &str = "Triple fault";

/// What QEMU's log says about an L1 triple fault: the "Triple fault" line
/// and, when a CPU reset dump follows it, that dump (the state it was in).
fn triple_fault(log: &[u8]) -> Option<String> {
    let log = String::from_utf8_lossy(log);
    let at = log.rfind(TRIPLE_FAULT)?;
    let tail: Vec<&str> = log[at..].lines().take(40).collect();
    Some(tail.join("\n"))
}
/// How long to wait for QEMU's pipes to close after killing it.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long L1 may take to power off after reporting the end of the command.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);
/// How long L1 may go without a heartbeat (`alive`, every second while the
/// command runs) before it is taken for wedged and stopped: far longer than
/// any wait for a CPU in L1 (the heartbeat is a shell loop, scheduled like
/// any task), short beside a run's own limits.
pub const LIVENESS: Duration = Duration::from_secs(120);

/// After this long without a heartbeat (one missed), the supervisor sends L1
/// an interrupt (a line on the [`KICK_PORT`], which L1 reads), quietly: the
/// interrupt ends the usual stall (see [`NUDGE_AFTER`]) at once.
pub const KICK_AFTER: Duration = Duration::from_secs(2);

/// After this long without a heartbeat, the supervisor asks QEMU what L1's
/// CPU is doing, says so, and sends L1 another interrupt; then an interrupt
/// and an NMI each time as much again passes in silence.
///
/// Why: L1's emulated CPU sometimes stops taking its interrupts (a QEMU TCG
/// fault seen under two busy L1s, in QEMU 7.2 and 10.0 alike: the LAPIC
/// timer's vector requested and deliverable for 30 s and more, not taken).
/// The stalls examined had the CPU in the L2 guest (their RIPs are L2 kernel
/// code, `copy_user_enhanced_fast_string`, `native_safe_halt`, or L2 user
/// space), where an interrupt for L1 should force an exit to L1 and did not.
/// A new interrupt makes QEMU look at the pending ones again; an NMI forces
/// the exit (KVM intercepts NMIs). With only an NMI at 15 s, stalls had ended
/// 0.8 to 40 s after it, some not at all. The stall is in [`Report::stalls`]
/// either way.
pub const NUDGE_AFTER: Duration = Duration::from_secs(4);

/// The port L1 reads kicks from.
pub const KICK_PORT: &str = "swaplab.kick";
/// What one kick writes to it.
const KICK: &[u8] = b"kick\n";

/// Errors running QEMU (not errors of L1: those are in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// QEMU is not installed.
    #[error("{0} not found: install the Debian package qemu-system-x86 (apt-get install qemu-system-x86)")]
    NotInstalled(String),
    /// Starting QEMU failed.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A system call of the supervisor failed.
    #[error("{what}: {source}")]
    Sys {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> QemuError {
    move |source| QemuError::Sys { what, source }
}

/// What to boot and run.
#[derive(Debug, Clone)]
pub struct Launch {
    /// QEMU binary (name or path).
    pub qemu: OsString,
    /// Uncompressed ELF vmlinux.
    pub vmlinux: PathBuf,
    /// initramfs.
    pub initramfs: PathBuf,
    /// L1 memory in MiB.
    pub mem_mib: u64,
    /// L1 vCPUs.
    pub cpus: u32,
    /// The job script.
    pub job: Vec<u8>,
    /// Host TSC frequency, handed to L1 so it does not calibrate (which fails
    /// under TCG on a busy host and can hang the boot).
    pub tsc_khz: Option<u64>,
    /// Extra kernel command-line words.
    pub extra_cmdline: Vec<String>,
    /// TCG threading (`single` or `multi`).
    pub tcg_thread: String,
}

/// Where output goes.
pub struct Sinks<'a> {
    /// The command's stdout.
    pub stdout: &'a mut dyn Write,
    /// The command's stderr.
    pub stderr: &'a mut dyn Write,
    /// A copy of the whole kernel console, if wanted.
    pub console: Option<&'a mut dyn Write>,
}

/// Time limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From QEMU's start to the end of the command.
    pub total: Duration,
    /// From QEMU's start to the command starting (`stage run`).
    pub boot: Duration,
    /// Longest wait for L1's heartbeat while the command runs.
    pub liveness: Duration,
}

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The boot limit.
    Boot,
    /// The total limit.
    Total,
    /// L1's heartbeat stopped for [`LIVENESS`].
    Unresponsive,
}

/// What happened in one L1 run.
#[derive(Debug)]
pub struct Report {
    /// Protocol events, with the time since QEMU started.
    pub events: Vec<(Duration, Event)>,
    /// QEMU's exit status.
    pub qemu_status: ExitStatus,
    /// The last part of the kernel console.
    pub console_tail: String,
    /// The last part of QEMU's own stderr.
    pub qemu_stderr: String,
    /// The register dump QEMU logged when L1's CPU triple-faulted (it then
    /// stops L1, as `-no-reboot` asks): empty when none did.
    pub l1_triple_fault: Option<String>,
    /// Set when QEMU was killed for exceeding a limit.
    pub expired: Option<Expired>,
    /// The heartbeat limit it ran with ([`Limits::liveness`]).
    pub liveness: Duration,
    /// Wall time from QEMU's start to its exit.
    pub elapsed: Duration,
    /// Silences of L1 that ended after a kick (see [`NUDGE_AFTER`]).
    pub stalls: Vec<Stall>,
    /// What QEMU said of L1's CPU when it last fell silent, if it did.
    pub l1_state: Option<String>,
}

/// L1 went silent and a kick woke it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    /// When the silence began (the last heartbeat), since QEMU started.
    pub from: Duration,
    /// How long it lasted.
    pub silent: Duration,
    /// What QEMU said of L1's CPU, if the silence lasted [`NUDGE_AFTER`].
    pub cpu: Option<String>,
}

impl Report {
    /// When `stage run` was reported (L1 booted; the command is starting).
    pub fn boot_time(&self) -> Option<Duration> {
        self.events
            .iter()
            .find(|(_, e)| *e == Event::Stage("run".into()))
            .map(|(t, _)| *t)
    }

    /// The last stage L1 reported.
    pub fn last_stage(&self) -> Option<&str> {
        self.events.iter().rev().find_map(|(_, e)| match e {
            Event::Stage(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// The kernel command line.
pub fn cmdline(launch: &Launch) -> String {
    let mut words = vec![
        "console=ttyS0".to_string(),
        "quiet".into(),
        "panic=-1".into(),
        "pci=off".into(),
        "cryptomgr.notests".into(),
        "tsc=reliable".into(),
        "swaplab.sandbox=1".into(),
    ];
    if let Some(khz) = launch.tsc_khz {
        words.push(format!("tsc_early_khz={khz}"));
    }
    words.extend(launch.extra_cmdline.iter().cloned());
    words.join(" ")
}

/// File descriptors (in QEMU) of the pipes' write ends.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    /// Kernel console.
    pub console: RawFd,
    /// Status port.
    pub status: RawFd,
    /// Command stdout.
    pub stdout: RawFd,
    /// Command stderr.
    pub stderr: RawFd,
    /// The job (a memfd).
    pub job: RawFd,
    /// QEMU's own log (`-D`): CPU resets and the triple fault behind one.
    pub log: RawFd,
    /// QEMU's end of the QMP monitor's socketpair ([`crate::qmp`]).
    pub monitor: RawFd,
    /// QEMU's end of the kick port's socketpair ([`KICK_PORT`]).
    pub kick: RawFd,
    /// L1's scratch disk ([`scratch_disk`]).
    pub scratch: RawFd,
}

/// A virtio-serial port backed by a connected socket QEMU inherits.
#[derive(Debug)]
pub struct SocketPort {
    /// The port's name in L1.
    pub name: String,
    /// QEMU's end.
    pub fd: OwnedFd,
}

/// QEMU's arguments. `ports` are extra virtio-serial ports: (name, socket fd in QEMU).
pub fn qemu_args(
    launch: &Launch,
    fds: ChildFds,
    ports: &[(String, RawFd)],
    root_security_model: &str,
) -> Vec<OsString> {
    let fd = |n: RawFd| format!("/proc/self/fd/{n}");
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    // A triple fault in L1 is a reset, which -no-reboot turns into an exit
    // with status 0, indistinguishable from a power-off but for this log:
    // QEMU writes "Triple fault" under -d cpu_reset (see TRIPLE_FAULT).
    push(&["-d", "cpu_reset", "-D", &fd(fds.log)]);
    // The monitor, spoken to only when L1 falls silent (see NUDGE_AFTER).
    // Named threads (`CPU 0/TCG`, `worker`, …) for what a silent L1's QEMU is doing.
    push(&["-name", "swaplab-l1,debug-threads=on"]);
    push(&["-chardev", &format!("socket,id=qmp,fd={}", fds.monitor)]);
    push(&["-mon", "chardev=qmp,mode=control"]);
    let accel = format!("tcg,thread={}", launch.tcg_thread);
    push(&["-M", MACHINE, "-accel", &accel, "-cpu", "max"]);
    push(&["-m", &format!("{}M", launch.mem_mib)]);
    push(&["-smp", &launch.cpus.to_string()]);
    push(&["-chardev", &format!("file,id=con,path={}", fd(fds.console))]);
    push(&["-serial", "chardev:con"]);
    push(&[
        "-fsdev",
        &format!("local,id={ROOT_TAG},path=/,security_model={root_security_model},multidevs=remap"),
    ]);
    push(&[
        "-device",
        &format!("virtio-9p-device,fsdev={ROOT_TAG},mount_tag={ROOT_TAG}"),
    ]);
    push(&["-device", "virtio-serial-device"]);
    for (id, n) in [
        ("status", fds.status),
        ("stdout", fds.stdout),
        ("stderr", fds.stderr),
    ] {
        push(&["-chardev", &format!("file,id={id},path={}", fd(n))]);
        push(&[
            "-device",
            &format!("virtserialport,chardev={id},name=swaplab.{id}"),
        ]);
    }
    push(&["-chardev", &format!("socket,id=kick,fd={}", fds.kick)]);
    push(&[
        "-device",
        &format!("virtserialport,chardev=kick,name={KICK_PORT}"),
    ]);
    for (i, (name, n)) in ports.iter().enumerate() {
        push(&["-chardev", &format!("socket,id=port{i},fd={n}")]);
        push(&[
            "-device",
            &format!(
                "virtserialport,chardev=port{i},name={}",
                qemu_opt_escape(name.as_bytes()).to_string_lossy()
            ),
        ]);
    }
    push(&[
        "-drive",
        &format!(
            "file={},if=none,id=scratch,format=raw,cache=unsafe,discard=unmap",
            fd(fds.scratch)
        ),
    ]);
    push(&[
        "-device",
        &format!(
            "virtio-blk-device,drive=scratch,serial={}",
            crate::scratch::SERIAL
        ),
    ]);
    push(&["-append", &cmdline(launch)]);
    a.push("-kernel".into());
    a.push(launch.vmlinux.clone().into_os_string());
    a.push("-initrd".into());
    a.push(launch.initramfs.clone().into_os_string());
    a.push("-fw_cfg".into());
    a.push(format!("name=opt/swaplab/job,file=/proc/self/fd/{}", fds.job).into());
    a
}

/// L1's scratch disk: a sparse file of [`crate::scratch::DISK_BYTES`] that
/// only QEMU and this process hold (`O_TMPFILE`, 0600, in `/var/tmp`, on disk
/// where tmpfs holds `/tmp`; it goes when they close it), for L1 to format
/// when it needs a file system a swap file can live on
/// ([`crate::scratch::swapfile_dir`]). Nothing is written to it unless L1
/// formats it.
fn scratch_disk() -> Result<File, QemuError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = ["/var/tmp".into(), std::env::temp_dir()]
        .into_iter()
        .find(|d: &std::path::PathBuf| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir)
        .map_err(sys("creating L1's scratch disk"))?;
    f.set_len(crate::scratch::DISK_BYTES)
        .map_err(sys("sizing L1's scratch disk"))?;
    Ok(f)
}

/// The job in an anonymous memory file, sealed read-only, for QEMU to read.
fn job_file(job: &[u8]) -> Result<OwnedFd, QemuError> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(
        "swaplab-job",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| sys("creating the job's memfd")(e.into()))?;
    let mut file = File::from(fd);
    file.write_all(job)
        .map_err(sys("writing the job's memfd"))?;
    let seals = nix::fcntl::SealFlag::F_SEAL_WRITE
        | nix::fcntl::SealFlag::F_SEAL_GROW
        | nix::fcntl::SealFlag::F_SEAL_SHRINK
        | nix::fcntl::SealFlag::F_SEAL_SEAL;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| sys("sealing the job's memfd")(e.into()))?;
    Ok(file.into())
}

/// A pipe, both ends close-on-exec: `(read, write)`.
fn pipe() -> Result<(File, OwnedFd), QemuError> {
    let (read, write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("creating a pipe")(e.into()))?;
    Ok((read.into(), write))
}

/// Starts QEMU. In the child before exec: unblock every signal (the parent may
/// block SIGINT/SIGTERM to catch them on a signalfd, and a blocked mask survives
/// exec: QEMU would ignore them), die with the parent, and keep `keep` (the
/// pipes' and sockets' QEMU ends) over exec. This process's copies of `keep`
/// are closed when this returns, so only QEMU holds them.
fn spawn(launch: &Launch, args: Vec<OsString>, keep: Vec<OwnedFd>) -> Result<Child, QemuError> {
    let mut cmd = Command::new(&launch.qemu);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    ChildSetup {
        unblock_signals: true,
        death_signal: Some(Signal::SIGKILL),
        keep,
        ..ChildSetup::default()
    }
    .apply(&mut cmd);
    cmd.spawn().map_err(|source| {
        let program = launch.qemu.to_string_lossy().into_owned();
        if source.kind() == std::io::ErrorKind::NotFound {
            QemuError::NotInstalled(program)
        } else {
            QemuError::Spawn { program, source }
        }
    })
}

/// What each of QEMU's threads is doing, from `/proc` (QEMU is our child):
/// name, scheduler state, CPU seconds so far and, for one that sleeps, the
/// innermost frames of its kernel stack, e.g. `CPU 0/TCG R 812.4s; qemu-system-x86
/// S 40.1s in do_sys_poll<__x64_sys_ppoll`. Tells whether the emulation thread
/// spins and what the main loop (which runs QEMU's timers) waits for.
fn qemu_threads(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "QEMU's threads cannot be read".into();
    };
    let ticks = hostsys::proc::clock_ticks_per_s() as f64;
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let dir = t.path();
        let Some(stat) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|l| hostsys::proc::parse_task_stat(&l))
        else {
            continue;
        };
        let (name, state) = (&stat.name, stat.state.as_str());
        let cpu = (stat.user_ticks + stat.sys_ticks) as f64 / ticks;
        let mut line = format!("{name} {state} {cpu:.1}s");
        if state != "R" {
            let frames: Vec<String> = std::fs::read_to_string(dir.join("stack"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .map(|f| f.split('+').next().unwrap_or(f).to_string())
                .filter(|f| !f.starts_with("__schedule") && f != "schedule")
                .take(3)
                .collect();
            if !frames.is_empty() {
                line.push_str(&format!(" in {}", frames.join("<")));
            }
        }
        out.push(line);
    }
    out.join("; ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Console,
    Status,
    Stdout,
    Stderr,
    QemuStderr,
    QemuLog,
}

/// Keep the last `max` bytes of a stream.
fn keep_tail(buf: &mut Vec<u8>, data: &[u8], max: usize) {
    buf.extend_from_slice(data);
    if buf.len() > max {
        let cut = buf.len() - max;
        buf.drain(..cut);
    }
}

/// Boot L1, run the job, stream its output to `sinks`, and report what happened.
/// QEMU gets the extra `ports`. `on_pid` is called with QEMU's pid once it
/// runs and with `None` before it is reaped (so nobody signals a reused pid).
pub fn run(
    launch: &Launch,
    root_security_model: &str,
    limits: Limits,
    sinks: Sinks<'_>,
    ports: Vec<SocketPort>,
    on_pid: Option<&dyn Fn(Option<u32>)>,
) -> Result<Report, QemuError> {
    let (con_r, con_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (log_r, log_w) = pipe()?;
    let (monitor, mon_theirs) =
        std::os::unix::net::UnixStream::pair().map_err(sys("creating the monitor's socketpair"))?;
    let mon_theirs = OwnedFd::from(mon_theirs);
    let (kick, kick_theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(sys("creating the kick port's socketpair"))?;
    // A kick must never block the supervisor: one that finds the buffer full
    // (L1 reads none) is dropped.
    kick.set_nonblocking(true)
        .map_err(sys("making the kick port non-blocking"))?;
    let kick_theirs = OwnedFd::from(kick_theirs);
    let job = job_file(&launch.job)?;
    let scratch = OwnedFd::from(scratch_disk()?);
    let fds = ChildFds {
        console: con_w.as_raw_fd(),
        status: st_w.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        job: job.as_raw_fd(),
        log: log_w.as_raw_fd(),
        monitor: mon_theirs.as_raw_fd(),
        kick: kick_theirs.as_raw_fd(),
        scratch: scratch.as_raw_fd(),
    };
    let port_fds: Vec<(String, RawFd)> = ports
        .iter()
        .map(|p| (p.name.clone(), p.fd.as_raw_fd()))
        .collect();
    let args = qemu_args(launch, fds, &port_fds, root_security_model);
    let mut keep = vec![
        con_w,
        st_w,
        out_w,
        err_w,
        job,
        log_w,
        mon_theirs,
        kick_theirs,
        scratch,
    ];
    keep.extend(ports.into_iter().map(|p| p.fd));
    let start = Instant::now();
    // Only QEMU may hold the write ends, so that its exit means EOF everywhere:
    // `spawn` closes ours.
    let mut child = spawn(launch, args, keep)?;
    if let Some(f) = on_pid {
        f(Some(child.id()));
    }
    let qemu_err: File = match child.stderr.take() {
        Some(e) => OwnedFd::from(e).into(),
        None => return Err(sys("QEMU stderr")(std::io::ErrorKind::Other.into())),
    };
    let mut streams: Vec<(Kind, Option<File>)> = vec![
        (Kind::Console, Some(con_r)),
        (Kind::Status, Some(st_r)),
        (Kind::Stdout, Some(out_r)),
        (Kind::Stderr, Some(err_r)),
        (Kind::QemuStderr, Some(qemu_err)),
        (Kind::QemuLog, Some(log_r)),
    ];
    let mut sup = Supervisor {
        start,
        sinks,
        events: Vec::new(),
        status_lines: LineSplitter::default(),
        console_lines: LineSplitter::default(),
        console_tail: Vec::new(),
        qemu_stderr: Vec::new(),
        qemu_log: Vec::new(),
        out_broken: false,
        err_broken: false,
        last_alive: None,
        qmp: crate::qmp::Qmp::new(monitor).ok(),
        kick,
        qemu_pid: child.id(),
        nudged: None,
        stalls: Vec::new(),
        l1_state: None,
    };
    let result = sup.pump(&mut streams, &mut child, limits);
    // Whatever happened, QEMU must not outlive this call.
    let _ = child.kill();
    if let Some(f) = on_pid {
        f(None);
    }
    let status = child.wait().map_err(sys("waiting for QEMU"))?;
    let expired = result?;
    sup.finish();
    Ok(Report {
        events: sup.events,
        qemu_status: status,
        console_tail: String::from_utf8_lossy(&sup.console_tail).into_owned(),
        qemu_stderr: String::from_utf8_lossy(&sup.qemu_stderr).into_owned(),
        l1_triple_fault: triple_fault(&sup.qemu_log),
        expired,
        liveness: limits.liveness,
        elapsed: start.elapsed(),
        stalls: sup.stalls,
        l1_state: sup.l1_state,
    })
}

struct Supervisor<'a> {
    start: Instant,
    sinks: Sinks<'a>,
    events: Vec<(Duration, Event)>,
    status_lines: LineSplitter,
    console_lines: LineSplitter,
    console_tail: Vec<u8>,
    qemu_stderr: Vec<u8>,
    qemu_log: Vec<u8>,
    out_broken: bool,
    err_broken: bool,
    /// The last heartbeat (or `stage run`, the first thing to count from).
    last_alive: Option<Instant>,
    /// QEMU's monitor (none if it could not be set up).
    qmp: Option<crate::qmp::Qmp>,
    /// Our end of the kick port ([`KICK_PORT`]).
    kick: std::os::unix::net::UnixStream,
    /// QEMU's process id.
    qemu_pid: u32,
    /// The silence going on, once it was kicked ([`KICK_AFTER`]).
    nudged: Option<Nudged>,
    stalls: Vec<Stall>,
    l1_state: Option<String>,
}

/// The kicks sent into one silence of L1: when the first and the last went,
/// how many of each kind, and what QEMU said of L1's CPU (at [`NUDGE_AFTER`]).
struct Nudged {
    first: Instant,
    /// What QEMU said of L1's CPU, once asked (at [`NUDGE_AFTER`]).
    cpu: Option<String>,
    last: Instant,
    /// Interrupts (kick lines) and NMIs sent so far.
    interrupts: u32,
    nmis: u32,
}

impl Nudged {
    /// A silence kicked at `now` with `interrupts` interrupts (0 or 1).
    fn new(now: Instant, interrupts: u32) -> Self {
        Nudged {
            first: now,
            cpu: None,
            last: now,
            interrupts,
            nmis: 0,
        }
    }

    /// What was sent last, for the line saying L1 answered.
    fn last_kick(&self) -> String {
        match (self.interrupts + self.nmis, self.nmis) {
            (0, _) => "the kick (which could not be sent)".into(),
            (1, 0) => "the interrupt".into(),
            (1, _) => "the NMI".into(),
            (_, 0) => format!("the last of {} interrupts", self.interrupts),
            (_, n) => format!("the last of {} interrupts and {n} NMIs", self.interrupts),
        }
    }
}

impl Supervisor<'_> {
    /// The event `e` came at `t`: recorded, except heartbeats, which only
    /// move [`Supervisor::last_alive`].
    fn event(&mut self, t: Duration, e: Event) {
        match e {
            Event::Alive => {
                let now = self.start + t;
                if let Some(n) = self.nudged.take() {
                    let from = self.last_alive.unwrap_or(n.first);
                    let silent = now.saturating_duration_since(from);
                    if n.cpu.is_some() {
                        let kicks = n.last_kick();
                        self.say(&format!(
                            "L1 answered again {:.1} s after {kicks}; it was silent for {:.1} s",
                            now.saturating_duration_since(n.last).as_secs_f64(),
                            silent.as_secs_f64()
                        ));
                    }
                    self.stalls.push(Stall {
                        from: from.saturating_duration_since(self.start),
                        silent,
                        cpu: n.cpu,
                    });
                }
                self.last_alive = Some(now);
            }
            e => {
                if e == Event::Stage("run".into()) {
                    self.last_alive = Some(self.start + t);
                }
                self.events.push((t, e));
            }
        }
    }

    /// When L1 reported an outcome (exit, cannot-start, failure): from then on
    /// it only has to power off.
    fn finished_at(&self) -> Option<Instant> {
        self.events
            .iter()
            .find(|(_, e)| !matches!(e, Event::Stage(_)))
            .map(|(t, _)| self.start + *t)
    }

    /// A line of the supervisor's own on the command's stderr.
    fn say(&mut self, line: &str) {
        if !self.err_broken {
            let w = &mut self.sinks.stderr;
            self.err_broken = writeln!(w, "swaplab sandbox: {line}")
                .and_then(|()| w.flush())
                .is_err();
        }
    }

    /// An interrupt for L1: a line on the kick port. False if it could not
    /// be written (L1 reads none and the buffer is full, or QEMU is gone).
    fn kick(&mut self) -> bool {
        (&self.kick).write_all(KICK).is_ok()
    }

    /// An NMI for L1, through QEMU's monitor.
    fn nmi(&mut self) -> Result<(), String> {
        match self.qmp.as_mut() {
            Some(q) => q.execute("inject-nmi", None).map(|_| ()),
            None => Err("QEMU's monitor is not set up".into()),
        }
    }

    /// L1 has been silent for [`KICK_AFTER`]: an interrupt, quietly.
    fn quiet_kick(&mut self) {
        let sent = self.kick();
        self.nudged = Some(Nudged::new(Instant::now(), u32::from(sent)));
    }

    /// L1 has been silent for `silent` ([`NUDGE_AFTER`]), an interrupt
    /// notwithstanding: ask QEMU what its CPU does, keep that, say so, and
    /// send L1 another interrupt.
    fn nudge(&mut self, silent: Duration) {
        let threads = qemu_threads(self.qemu_pid);
        let cpu = match self.qmp.as_mut() {
            None => "QEMU's monitor is not set up".to_string(),
            Some(q) => {
                let regs = q.hmp("info registers -a");
                let lapic = q.hmp("info lapic");
                let mut cpu = match &regs {
                    Ok(r) => crate::qmp::cpu_summary(r),
                    Err(e) => e.clone(),
                };
                if let Ok(l) = &lapic {
                    cpu = format!("{cpu}; {}", crate::qmp::lapic_summary(l));
                }
                let mut state = format!("{cpu}\nQEMU's threads: {threads}\n");
                for part in [regs, lapic] {
                    state.push_str(&part.unwrap_or_else(|e| e));
                    state.push('\n');
                }
                self.l1_state = Some(state);
                cpu
            }
        };
        let sent = self.kick();
        self.say(&format!(
            "L1 silent for {} s (no heartbeat); QEMU says {cpu}; {}; QEMU's threads: {threads}",
            silent.as_secs(),
            if sent {
                "sent it an interrupt"
            } else {
                "no interrupt could be sent"
            }
        ));
        let now = Instant::now();
        let n = self.nudged.get_or_insert(Nudged::new(now, 0));
        n.cpu = Some(cpu);
        n.last = now;
        n.interrupts += u32::from(sent);
    }

    /// L1 is still silent after the last kick: an interrupt and an NMI (said
    /// the first time only).
    fn nudge_again(&mut self) {
        let sent = self.kick();
        let nmi = self.nmi();
        let Some(mut n) = self.nudged.take() else {
            return;
        };
        if n.nmis == 0 {
            let what = match &nmi {
                Ok(()) => "sent it an interrupt and an NMI".to_string(),
                Err(e) => format!("no NMI sent ({e})"),
            };
            self.say(&format!(
                "L1 still silent {:.1} s after {}; {what}, and will every {} s",
                n.last.elapsed().as_secs_f64(),
                n.last_kick(),
                NUDGE_AFTER.as_secs()
            ));
        }
        n.last = Instant::now();
        n.interrupts += u32::from(sent);
        n.nmis += u32::from(nmi.is_ok());
        self.nudged = Some(n);
    }

    fn booted(&self) -> bool {
        self.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Stage(s) if s == "run"))
    }

    /// Read until every pipe is closed; kill QEMU when a limit passes.
    fn pump(
        &mut self,
        streams: &mut [(Kind, Option<File>)],
        child: &mut Child,
        limits: Limits,
    ) -> Result<Option<Expired>, QemuError> {
        let mut expired = None;
        let mut killed_at: Option<Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let open: Vec<usize> = (0..streams.len())
                .filter(|&i| streams[i].1.is_some())
                .collect();
            if open.is_empty() {
                return Ok(expired);
            }
            let now = Instant::now();
            let finished = self.finished_at();
            let deadline = match (killed_at, finished) {
                (Some(t), _) => t + KILL_GRACE,
                (None, Some(t)) => (t + POWEROFF_GRACE).min(self.start + limits.total),
                (None, None) if self.booted() => {
                    let total = self.start + limits.total;
                    // `stage run` (what `booted` means) set it.
                    let alive = self.last_alive.unwrap_or(self.start);
                    let stop = alive + limits.liveness;
                    // A quiet interrupt, then a said one with QEMU's view,
                    // then interrupts and NMIs.
                    let nudge = match &self.nudged {
                        None => alive + KICK_AFTER,
                        Some(n) if n.cpu.is_none() => alive + NUDGE_AFTER,
                        Some(n) => n.last + NUDGE_AFTER,
                    };
                    if now >= nudge && now < stop && now < total {
                        match &self.nudged {
                            None => self.quiet_kick(),
                            Some(n) if n.cpu.is_none() => self.nudge(now - alive),
                            Some(_) => self.nudge_again(),
                        }
                        continue;
                    }
                    total.min(stop).min(nudge.max(now))
                }
                (None, None) => self.start + limits.total.min(limits.boot),
            };
            if now >= deadline {
                if killed_at.is_some() {
                    return Ok(expired); // QEMU is dead; something else holds a pipe
                }
                // After an outcome, a stuck power-off is not the command's failure.
                expired = match finished {
                    Some(_) => None,
                    None if self.booted() && now < self.start + limits.total => {
                        Some(Expired::Unresponsive)
                    }
                    None if self.booted() || limits.total <= limits.boot => Some(Expired::Total),
                    None => Some(Expired::Boot),
                };
                let _ = child.kill();
                killed_at = Some(now);
                continue;
            }
            let timeout_ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::MAX);
            let ready: Vec<bool> = {
                let mut pfds: Vec<PollFd<'_>> = open
                    .iter()
                    .filter_map(|&i| streams[i].1.as_ref())
                    .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                    .collect();
                match poll(&mut pfds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(sys("poll")(e.into())),
                }
                pfds.iter()
                    .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            };
            for (&ready, &i) in ready.iter().zip(&open) {
                if !ready {
                    continue;
                }
                let kind = streams[i].0;
                let Some(file) = streams[i].1.as_mut() else {
                    continue;
                };
                match file.read(&mut buf) {
                    Ok(0) => streams[i].1 = None,
                    Ok(k) => self.dispatch(kind, &buf[..k]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(sys("reading from QEMU")(e)),
                }
            }
        }
    }

    fn dispatch(&mut self, kind: Kind, data: &[u8]) {
        let t = self.start.elapsed();
        match kind {
            Kind::Stdout => {
                if !self.out_broken {
                    let w = &mut self.sinks.stdout;
                    self.out_broken = w.write_all(data).and_then(|()| w.flush()).is_err();
                }
            }
            Kind::Stderr => {
                if !self.err_broken {
                    let w = &mut self.sinks.stderr;
                    self.err_broken = w.write_all(data).and_then(|()| w.flush()).is_err();
                }
            }
            Kind::Status => {
                for line in self.status_lines.feed(data) {
                    if let Ok(Some(e)) = protocol::parse_line(&line) {
                        self.event(t, e);
                    }
                }
            }
            Kind::Console => {
                if let Some(c) = self.sinks.console.as_mut() {
                    let _ = c.write_all(data);
                }
                keep_tail(&mut self.console_tail, data, CONSOLE_TAIL);
                for line in self.console_lines.feed(data) {
                    if let Some(e) = protocol::parse_console_line(&line) {
                        self.event(t, e);
                    }
                }
            }
            Kind::QemuStderr => keep_tail(&mut self.qemu_stderr, data, QEMU_STDERR_MAX),
            Kind::QemuLog => keep_tail(&mut self.qemu_log, data, QEMU_LOG_MAX),
        }
    }

    fn finish(&mut self) {
        let t = self.start.elapsed();
        if let Some(line) = self.status_lines.finish() {
            if let Ok(Some(e)) = protocol::parse_line(&line) {
                self.event(t, e);
            }
        }
        if let Some(c) = self.sinks.console.as_mut() {
            let _ = c.flush();
        }
    }
}

/// This host's TSC frequency in kHz, measured against the monotonic clock
/// over ~20 ms. Under TCG, L1's TSC is the host's, so L1 can skip its own
/// calibration. `None` where there is no TSC to read.
pub fn host_tsc_khz() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        use hostsys::cpu::rdtsc;
        // A (time, tsc) pair read within a few microseconds of each other.
        let sample = || {
            for _ in 0..10 {
                let a = Instant::now();
                let c = rdtsc();
                let b = Instant::now();
                if b - a < Duration::from_micros(5) {
                    return Some((a + (b - a) / 2, c));
                }
            }
            None
        };
        let (t0, c0) = sample()?;
        while t0.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let (t1, c1) = sample()?;
        let ns = (t1 - t0).as_nanos();
        let khz = u128::from(c1.checked_sub(c0)?) * 1_000_000 / ns.max(1);
        u64::try_from(khz).ok().filter(|&k| k > 0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether QEMU can be found (a path, or a name on `PATH`).
pub fn qemu_available(qemu: &std::ffi::OsStr) -> bool {
    let p = Path::new(qemu);
    if p.components().count() > 1 {
        return p.is_file();
    }
    crate::host::which(&qemu.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            qemu: QEMU.into(),
            vmlinux: "/k/vmlinux".into(),
            initramfs: "/k/l1.cpio".into(),
            mem_mib: 3072,
            cpus: 2,
            job: b"echo a,b\n".to_vec(),
            tsc_khz: Some(2_596_000),
            extra_cmdline: vec![],
            tcg_thread: "multi".into(),
        }
    }

    #[test]
    fn a_triple_fault_is_found_in_qemus_log_with_what_follows() {
        let boot = "CPU Reset (CPU 0)\nEAX=00000000 EBX=00000000\n";
        assert_eq!(triple_fault(boot.as_bytes()), None);
        let log = format!("{boot}Triple fault\nCPU Reset (CPU 1)\nRIP=ffffffff81000000\n");
        let found = triple_fault(log.as_bytes()).unwrap();
        assert!(
            found.starts_with("Triple fault\nCPU Reset (CPU 1)"),
            "{found}"
        );
        assert!(found.contains("RIP=ffffffff81000000"), "{found}");
    }

    #[test]
    fn args_wire_pipes_job_and_kernel() {
        let fds = ChildFds {
            console: 10,
            status: 11,
            stdout: 12,
            stderr: 13,
            job: 15,
            log: 16,
            monitor: 17,
            kick: 18,
            scratch: 19,
        };
        let ports = [("swaplab.fwd.0".to_string(), 14)];
        let a: Vec<String> = qemu_args(&launch(), fds, &ports, "passthrough")
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let after = |flag: &str| -> Vec<&str> {
            a.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(after("-kernel"), ["/k/vmlinux"]);
        assert_eq!(after("-m"), ["3072M"]);
        // The scratch disk: QEMU's inherited descriptor, found in L1 by serial.
        assert_eq!(
            after("-drive"),
            ["file=/proc/self/fd/19,if=none,id=scratch,format=raw,cache=unsafe,discard=unmap"]
        );
        assert!(
            after("-device").contains(&"virtio-blk-device,drive=scratch,serial=swaplab-scratch")
        );
        assert_eq!(after("-d"), ["cpu_reset"]);
        assert_eq!(after("-D"), ["/proc/self/fd/16"]);
        assert!(after("-chardev").contains(&"file,id=stdout,path=/proc/self/fd/12"));
        assert!(after("-device").contains(&"virtserialport,chardev=status,name=swaplab.status"));
        assert!(after("-chardev").contains(&"socket,id=port0,fd=14"));
        assert!(after("-chardev").contains(&"socket,id=qmp,fd=17"));
        assert_eq!(after("-mon"), ["chardev=qmp,mode=control"]);
        assert!(after("-chardev").contains(&"socket,id=kick,fd=18"));
        assert!(after("-device").contains(&"virtserialport,chardev=kick,name=swaplab.kick"));
        assert_eq!(after("-name"), ["swaplab-l1,debug-threads=on"]);
        assert!(after("-device").contains(&"virtserialport,chardev=port0,name=swaplab.fwd.0"));
        assert_eq!(
            after("-fw_cfg"),
            ["name=opt/swaplab/job,file=/proc/self/fd/15"]
        );
        assert!(
            !a.iter().any(|w| w.contains("echo a")),
            "the job is not on QEMU's command line: {a:?}"
        );
        let cmdline = after("-append")[0];
        assert!(cmdline.contains("tsc_early_khz=2596000"), "{cmdline}");
        assert!(cmdline.contains("swaplab.sandbox=1"), "{cmdline}");
    }

    #[test]
    fn threads_are_named_with_their_state_and_time() {
        let me = qemu_threads(std::process::id());
        assert!(me.contains(" R ") || me.contains(" S "), "{me}");
        assert!(me.split("; ").count() >= 1, "{me}");
        assert_eq!(qemu_threads(u32::MAX), "QEMU's threads cannot be read");
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut b = Vec::new();
        keep_tail(&mut b, b"hello", 3);
        keep_tail(&mut b, b"!", 3);
        assert_eq!(b, b"lo!");
    }

    #[test]
    fn tsc_frequency_is_plausible() {
        if let Some(khz) = host_tsc_khz() {
            assert!((100_000..20_000_000).contains(&khz), "{khz} kHz");
        }
    }
}

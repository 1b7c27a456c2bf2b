//! The nested sandbox: run a command inside an L1 Linux VM under QEMU's
//! software emulation (`-accel tcg -cpu max`, which exposes SVM with nested
//! paging), where `kvm_amd` loads and a stock L2 guest can boot on L1's
//! `/dev/kvm`. For hosts whose KVM cannot boot a stock kernel (PVM, or none).
//!
//! L1 runs Debian's kernel (from the guest image builder's cache) with the
//! sandbox's own initramfs ([`initramfs`]), mounts the host's `/` read-write
//! over virtio-9p, chroots into it, and runs the command in the caller's
//! directory with the caller's environment (filtered: see [`job`]) and stdin
//! from `/dev/null`. Its stdout and stderr stream back live through
//! virtio-serial ports; the kernel console stays out of them. The exit status
//! comes back on a status port ([`protocol`]). L1 then powers off.
//!
//! - CLI: `swaplab sandbox [--mem SIZE] [--cpus N] [--timeout S] -- CMD ARGS...`
//!   exits with the command's status.
//! - Library: [`run_in_sandbox`] runs a command; [`maybe_reexec`] re-runs the
//!   current swaplab command in the sandbox when needed, and [`in_sandbox`] /
//!   [`environment_note`] tell code (and reports) that it runs in L1.
//!
//! Results from the sandbox are functional, not timing-grade.
//!
//! ## Settings, and why
//!
//! - `-M microvm,acpi=on -accel tcg -cpu max`: no PCI bus or firmware to
//!   emulate; virtio-mmio devices are described in ACPI, which Debian's kernel
//!   needs (it lacks `VIRTIO_MMIO_CMDLINE_DEVICES`); `-cpu max` gives SVM with
//!   nested paging, so `kvm_amd` loads.
//! - `-kernel vmlinux` (uncompressed ELF, PVH entry): a bzImage costs ~3 s more,
//!   decompressing under emulation. The initramfs is an uncompressed cpio.
//! - Kernel command line: `quiet` (console output is slow), `tsc_early_khz=`
//!   the host's measured TSC rate and `tsc=reliable` (L1's TSC is the host's;
//!   calibrating it against the PIT fails on a busy host and the boot hangs),
//!   `cryptomgr.notests` (crypto self-tests cost ~0.2 s), `panic=-1` with
//!   `-no-reboot` (a panic ends QEMU), `pci=off`.
//! - Modules load in two chains at once (virtio/9p, and kvm), with their
//!   signatures stripped.
//! - 9p with `cache=loose`: exec and stat are ~10x faster than uncached under
//!   TCG. L1 does not see host-side changes to files it has already read; its
//!   writes reach the host at the latest when it syncs before powering off.
//!
//! Measured here (2 cores, shared with other builds): QEMU start to the command
//! starting ≈ 1.8–2.1 s on a quiet host, 4–7 s under load; `sandbox -- true`
//! ≈ 2.3 s end to end on a quiet host.

pub mod initramfs;
pub mod job;
pub mod protocol;
pub mod qemu;
pub mod reexec;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::size::ByteSize;

pub use reexec::{
    environment_note, in_sandbox, needs_sandbox_here, SandboxFlag, SandboxMode, NOTE,
};

use protocol::Event;
use qemu::{Expired, Limits, Report, Sinks};

/// Default L1 memory: room for an L2 guest of a couple of GiB.
pub const DEFAULT_MEM: u64 = 3 << 30;
/// Default L1 vCPUs (each is a host thread under multi-threaded TCG).
pub const DEFAULT_CPUS: u32 = 2;
/// Default limit for the whole run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);
/// Limit from QEMU's start to the command starting.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// Errors of the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Preparing the L1 kernel or initramfs failed.
    #[error("preparing the L1 image")]
    Image(#[from] initramfs::L1ImageError),
    /// No cache directory.
    #[error(transparent)]
    Cache(#[from] workloads::image::cache::CacheError),
    /// The command or its environment cannot be passed.
    #[error("sandbox job")]
    Job(#[from] job::JobError),
    /// QEMU could not be run.
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
    /// Re-running this program failed before starting.
    #[error(transparent)]
    Reexec(#[from] reexec::ReexecError),
    /// A bad setting.
    #[error("{0}")]
    Config(String),
    /// The working directory is unknown.
    #[error("cannot determine the working directory: {0}")]
    Cwd(#[source] std::io::Error),
    /// QEMU exited before L1 booted.
    #[error("QEMU failed ({status}) before L1 booted{}", detail(.stderr, .console))]
    QemuFailed {
        /// QEMU's exit status.
        status: String,
        /// The end of QEMU's stderr.
        stderr: String,
        /// The end of the kernel console.
        console: String,
    },
    /// L1's kernel panicked.
    #[error("the L1 kernel panicked: {line}{}", detail("", .console))]
    Panic {
        /// The panic line.
        line: String,
        /// The end of the kernel console.
        console: String,
    },
    /// L1's init failed.
    #[error("L1 init failed in stage {stage}: {message}")]
    InitFailed {
        /// The stage.
        stage: String,
        /// What went wrong.
        message: String,
    },
    /// The command could not start in L1.
    #[error("the command cannot start in L1: {message}")]
    CannotStart {
        /// The status the job exited with (126 or 127).
        code: u8,
        /// Why.
        message: String,
    },
    /// A time limit passed; QEMU was killed.
    #[error("{}; QEMU was killed (last L1 stage: {stage}){}", what, detail("", .console))]
    Timeout {
        /// Which limit, in words.
        what: String,
        /// The last stage L1 reported.
        stage: String,
        /// The end of the kernel console.
        console: String,
    },
    /// QEMU was stopped by a signal (Ctrl-C, SIGTERM) sent to it.
    #[error("QEMU was stopped by a signal before the command finished: {0}")]
    Interrupted(String),
    /// L1 stopped without reporting the command's status.
    #[error("L1 stopped without reporting the command's status (QEMU {status}, last stage: {stage}){}", detail(.stderr, .console))]
    NoStatus {
        /// QEMU's exit status.
        status: String,
        /// The last stage L1 reported.
        stage: String,
        /// The end of QEMU's stderr.
        stderr: String,
        /// The end of the kernel console.
        console: String,
    },
}

/// The last lines of QEMU's stderr and the kernel console, for error messages.
fn detail(stderr: &str, console: &str) -> String {
    let last = |s: &str, n: usize| {
        let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n  ")
    };
    let mut out = String::new();
    if !stderr.trim().is_empty() {
        out.push_str(&format!("\nQEMU said:\n  {}", last(stderr, 10)));
    }
    if !console.trim().is_empty() {
        out.push_str(&format!(
            "\nL1 console (last lines):\n  {}",
            last(console, 15)
        ));
    }
    out
}

impl SandboxError {
    /// The exit status a command-line tool should use for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            SandboxError::CannotStart { code, .. } => *code,
            SandboxError::Interrupted(_) => 130,
            SandboxError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// How to run L1.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// L1 memory in bytes.
    pub mem: u64,
    /// L1 vCPUs.
    pub cpus: u32,
    /// Limit for the whole run.
    pub timeout: Duration,
    /// Working directory of the command (default: this process's).
    pub cwd: Option<PathBuf>,
    /// Environment of the command (default: this process's, filtered by [`job::default_env`]).
    pub env: Option<Vec<(OsString, OsString)>>,
    /// Write the whole L1 kernel console here.
    pub console_log: Option<PathBuf>,
    /// Cache directory (default: [`workloads::image::cache::default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// QEMU binary.
    pub qemu: OsString,
    /// Extra L1 kernel command-line words (for debugging).
    pub kernel_args: Vec<String>,
    /// Print boot and run times to stderr.
    pub verbose: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mem: DEFAULT_MEM,
            cpus: DEFAULT_CPUS,
            timeout: DEFAULT_TIMEOUT,
            cwd: None,
            env: None,
            console_log: None,
            cache_dir: None,
            qemu: qemu::QEMU.into(),
            kernel_args: Vec::new(),
            verbose: false,
        }
    }
}

impl SandboxConfig {
    /// Defaults, overridden by `SWAPLAB_SANDBOX_MEM` (a size), `SWAPLAB_SANDBOX_CPUS`,
    /// `SWAPLAB_SANDBOX_TIMEOUT` (seconds) and `SWAPLAB_SANDBOX_CONSOLE` (a log file).
    pub fn from_env() -> Result<Self, SandboxError> {
        let mut c = SandboxConfig::default();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let bad = |k: &str, v: &str| SandboxError::Config(format!("{k}={v:?} is not valid"));
        if let Some(v) = var("SWAPLAB_SANDBOX_MEM") {
            c.mem = v
                .parse::<ByteSize>()
                .map_err(|_| bad("SWAPLAB_SANDBOX_MEM", &v))?
                .0;
        }
        if let Some(v) = var("SWAPLAB_SANDBOX_CPUS") {
            c.cpus = v.parse().map_err(|_| bad("SWAPLAB_SANDBOX_CPUS", &v))?;
        }
        if let Some(v) = var("SWAPLAB_SANDBOX_TIMEOUT") {
            c.timeout =
                Duration::from_secs(v.parse().map_err(|_| bad("SWAPLAB_SANDBOX_TIMEOUT", &v))?);
        }
        c.console_log = var("SWAPLAB_SANDBOX_CONSOLE").map(PathBuf::from);
        Ok(c)
    }

    fn validate(&self) -> Result<(), SandboxError> {
        if self.mem < 256 << 20 {
            return Err(SandboxError::Config(format!(
                "L1 memory {} is too small (at least 256M)",
                ByteSize(self.mem)
            )));
        }
        if !(1..=64).contains(&self.cpus) {
            return Err(SandboxError::Config(format!(
                "L1 vCPUs must be 1 to 64, not {}",
                self.cpus
            )));
        }
        if self.timeout.is_zero() {
            return Err(SandboxError::Config("the timeout must be positive".into()));
        }
        Ok(())
    }
}

/// A finished sandbox run.
#[derive(Debug, Clone)]
pub struct SandboxRun {
    /// The command's exit status (128+N if killed by signal N).
    pub exit_code: u8,
    /// From QEMU's start to the command starting in L1.
    pub boot_time: Option<Duration>,
    /// From QEMU's start to its exit.
    pub total_time: Duration,
    /// Whether the L1 initramfs was built by this run (not found in the cache).
    pub built_initramfs: bool,
}

/// Run `argv` in the sandbox, streaming its stdout and stderr to `stdout` and `stderr`.
pub fn run_in_sandbox(
    cfg: &SandboxConfig,
    argv: Vec<OsString>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<SandboxRun, SandboxError> {
    cfg.validate()?;
    if !qemu::qemu_available(&cfg.qemu) {
        return Err(qemu::QemuError::NotInstalled(cfg.qemu.to_string_lossy().into_owned()).into());
    }
    let cwd = match &cfg.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().map_err(SandboxError::Cwd)?,
    };
    let env = match &cfg.env {
        Some(e) => e.clone(),
        None => job::default_env(std::env::vars_os()),
    };
    let job = job::Job::new(argv, &cwd, env)?;
    let cache_dir = match &cfg.cache_dir {
        Some(d) => d.clone(),
        None => workloads::image::cache::default_cache_dir()?,
    };
    let image = initramfs::ensure_l1_image(&cache_dir)?;
    let launch = qemu::Launch {
        qemu: cfg.qemu.clone(),
        vmlinux: image.vmlinux.clone(),
        initramfs: image.initramfs.clone(),
        mem_mib: cfg.mem >> 20,
        cpus: cfg.cpus,
        job: job.script(),
        tsc_khz: qemu::host_tsc_khz(),
        extra_cmdline: cfg.kernel_args.clone(),
    };
    // As root, 9p keeps owners and modes as L1 sets them; otherwise files are
    // created as the calling user.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let model = if root { "passthrough" } else { "none" };
    let mut console_file = match &cfg.console_log {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| {
            SandboxError::Config(format!("cannot create console log {}: {e}", p.display()))
        })?),
        None => None,
    };
    let limits = Limits {
        total: cfg.timeout,
        boot: BOOT_TIMEOUT,
    };
    let sinks = Sinks {
        stdout,
        stderr,
        console: console_file.as_mut().map(|f| f as &mut dyn Write),
    };
    let report = qemu::run(&launch, model, limits, sinks)?;
    let code = interpret(&report, cfg.timeout)?;
    let run = SandboxRun {
        exit_code: code,
        boot_time: report.boot_time(),
        total_time: report.elapsed,
        built_initramfs: image.built,
    };
    if cfg.verbose {
        for (t, e) in &report.events {
            eprintln!("swaplab sandbox: {:7.3} s  {e:?}", t.as_secs_f64());
        }
        eprintln!(
            "swaplab sandbox: L1 ({} MiB, {} vCPUs, kernel {}) booted to the command in {}; total {:.2} s; exit {}",
            cfg.mem >> 20,
            cfg.cpus,
            image.kernel_version,
            run.boot_time
                .map_or("?".into(), |t| format!("{:.2} s", t.as_secs_f64())),
            run.total_time.as_secs_f64(),
            code
        );
    }
    Ok(run)
}

/// Turn a report into the command's status or an error naming what went wrong.
pub fn interpret(report: &Report, timeout: Duration) -> Result<u8, SandboxError> {
    let stage = report.last_stage().unwrap_or("none").to_string();
    for (_, e) in &report.events {
        match e {
            Event::Exit(code) => return Ok(*code),
            Event::CannotStart { code, message } => {
                return Err(SandboxError::CannotStart {
                    code: *code,
                    message: message.clone(),
                })
            }
            Event::Fail { stage, message } => {
                return Err(SandboxError::InitFailed {
                    stage: stage.clone(),
                    message: message.clone(),
                })
            }
            Event::Stage(_) => {}
        }
    }
    let console = report.console_tail.clone();
    if let Some(expired) = report.expired {
        let what = match expired {
            Expired::Boot => format!("L1 did not boot within {} s", BOOT_TIMEOUT.as_secs()),
            Expired::Total => format!("the sandbox timed out after {} s", timeout.as_secs()),
        };
        return Err(SandboxError::Timeout {
            what,
            stage,
            console,
        });
    }
    if let Some(line) = protocol::find_panic(&report.console_tail) {
        return Err(SandboxError::Panic {
            line: line.to_string(),
            console,
        });
    }
    if let Some(line) = report
        .qemu_stderr
        .lines()
        .find(|l| l.contains("terminating on signal"))
    {
        return Err(SandboxError::Interrupted(line.trim().to_string()));
    }
    let status = report.qemu_status.to_string();
    if report.events.is_empty() && !report.qemu_status.success() {
        return Err(SandboxError::QemuFailed {
            status,
            stderr: report.qemu_stderr.clone(),
            console,
        });
    }
    Err(SandboxError::NoStatus {
        status,
        stage,
        stderr: report.qemu_stderr.clone(),
        console,
    })
}

/// If this swaplab command must run in the sandbox (see [`SandboxMode`]),
/// run it there — `/proc/self/exe` with the same arguments and
/// `--sandbox=never` — after printing [`NOTE`] as the first line on stderr,
/// and return its exit status. `Ok(None)` means: run here.
///
/// L1's size and time limit come from [`SandboxConfig::from_env`]; use
/// [`maybe_reexec_with`] to size L1 for a particular guest.
pub fn maybe_reexec(mode: SandboxMode) -> Result<Option<ExitCode>, SandboxError> {
    if !needs_sandbox_here(mode) {
        return Ok(None);
    }
    maybe_reexec_with(mode, &SandboxConfig::from_env()?)
}

/// [`maybe_reexec`] with an explicit L1 configuration.
pub fn maybe_reexec_with(
    mode: SandboxMode,
    cfg: &SandboxConfig,
) -> Result<Option<ExitCode>, SandboxError> {
    if !needs_sandbox_here(mode) {
        return Ok(None);
    }
    let run = reexec_in_sandbox(cfg)?;
    Ok(Some(ExitCode::from(run.exit_code)))
}

/// Re-run this swaplab command in the sandbox unconditionally: print [`NOTE`]
/// on stderr, run `/proc/self/exe` with this process's arguments and
/// `--sandbox=never` in L1 configured by `cfg`, streaming its output here.
pub fn reexec_in_sandbox(cfg: &SandboxConfig) -> Result<SandboxRun, SandboxError> {
    let mut argv = vec![reexec::current_exe()?];
    argv.extend(reexec::reexec_args(std::env::args_os().skip(1)));
    eprintln!("swaplab: {NOTE}");
    run_in_sandbox(
        cfg,
        argv,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// `swaplab sandbox`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
The command runs as root in L1, chrooted into this host's / (9p, read-write), in the \
current directory, with stdin from /dev/null. Its stdout and stderr stream back \
live; swaplab exits with its status (126/127 if it cannot start, 1 if L1 fails).")]
pub struct SandboxArgs {
    /// L1 memory.
    #[arg(long, default_value = "3G")]
    pub mem: ByteSize,
    /// L1 vCPUs.
    #[arg(long, default_value_t = DEFAULT_CPUS)]
    pub cpus: u32,
    /// Kill L1 after this many seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Pass an environment variable: NAME=VALUE, or NAME to copy this
    /// process's value (PATH, HOME, SWAPLAB_*, RUST*, CARGO*, LC_* ... pass by default).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<OsString>,
    /// Write L1's kernel console to this file.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Add a word to L1's kernel command line (for debugging).
    #[arg(long, value_name = "WORD")]
    pub kernel_arg: Vec<String>,
    /// Print L1's stages with times, and how long it took to boot and to run the command.
    #[arg(short, long)]
    pub verbose: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Run `swaplab sandbox`: the command's exit status, or an error message and
/// 1 (126/127 when the command cannot start).
pub fn main(args: &SandboxArgs) -> ExitCode {
    let mut env = job::default_env(std::env::vars_os());
    for e in &args.env {
        job::apply_env_arg(&mut env, e, |k| std::env::var_os(k));
    }
    let cfg = SandboxConfig {
        mem: args.mem.0,
        cpus: args.cpus,
        timeout: Duration::from_secs(args.timeout),
        env: Some(env),
        console_log: args.console_log.clone(),
        kernel_args: args.kernel_arg.clone(),
        verbose: args.verbose,
        ..SandboxConfig::default()
    };
    let result = run_in_sandbox(
        &cfg,
        args.command.clone(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match result {
        Ok(run) => ExitCode::from(run.exit_code),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("swaplab: sandbox: {msg}");
            ExitCode::from(e.exit_code())
        }
    }
}

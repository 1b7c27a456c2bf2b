//! The nested sandbox: run a command inside an L1 Linux VM under QEMU's
//! software emulation (`-accel tcg -cpu max`, which exposes SVM with nested
//! paging), where `kvm_amd` loads and a stock L2 guest can boot on L1's
//! `/dev/kvm`. For hosts whose KVM cannot boot a stock kernel (PVM, or none).
//!
//! L1 runs Debian's kernel from `bookworm-backports` (6.12 at the time of
//! writing; [`initramfs::default_kernel_source`]), not bookworm's 6.1 that the
//! L2 guest image boots: the host swapper runs in L1 and needs userfaultfd's
//! `UFFD_FEATURE_MOVE` (Linux 6.8) and `POISON` (6.6), which 6.1 lacks. The
//! package is fetched through a private apt setup under the cache (the host's
//! apt sources stay as they are; see [`workloads::image::apt`]) and unpacked
//! like the guest kernel. `SWAPLAB_SANDBOX_KERNEL=host` (or `--l1-kernel host`)
//! boots the host's apt kernel (6.1) instead; any other value names a Debian
//! suite.
//!
//! L1 boots that kernel with the sandbox's own initramfs ([`initramfs`]: its
//! modules come from the same kernel package), mounts the host's `/`
//! read-write over virtio-9p, chroots into it (with a tmpfs of its own on
//! `/run`), and runs the command in the caller's directory with the caller's
//! environment (filtered: see [`job`]) and stdin from `/dev/null`. Its stdout
//! and stderr stream back live through virtio-serial ports; the kernel console
//! stays out of them. The exit status comes back on a status port
//! ([`protocol`]). L1 then powers off.
//!
//! Unix sockets can be forwarded out of L1 ([`forward`]): a listening socket
//! at a host path whose connections reach a socket the command listens on in
//! L1, up to 16 clients at once, each served independently. A re-executed swaplab command with
//! `--api-sock PATH` gets this transparently: PATH is forwarded and the
//! command finds where to listen in L1 in [`ENV_API_SOCK_INNER`].
//!
//! - CLI: `swaplab sandbox [--mem SIZE] [--cpus N] [--timeout S]
//!   [--forward-socket HOST[=INNER]] [--l1-kernel host|SUITE] -- CMD ARGS...`
//!   exits with the command's status; `swaplab sandbox --prepare` only fetches
//!   and builds L1's kernel and initramfs.
//! - Library: [`run_in_sandbox`] runs a command; [`maybe_reexec`] re-runs the
//!   current swaplab command in the sandbox when needed, and [`in_sandbox`] /
//!   [`environment_note`] tell code (and reports) that it runs in L1;
//!   [`SandboxConfig::forward_socket`] / [`SandboxConfig::forward_api_sock`]
//!   forward sockets.
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
//! starting ≈ 1.8–2.1 s on a quiet host with 6.1, 4–7 s under load; `sandbox
//! -- true` ≈ 2.3 s end to end on a quiet host. 6.12 boots as fast as 6.1:
//! 2.6 s to the command on a quiet moment; alternating the two on a loaded
//! host, 5.4–6.0 s (median 5.7) for 6.12 vs 5.2–8.1 s (median 6.3) for 6.1 at
//! load ≈ 4, 7.2–10.5 s (median 8.6) vs 5.6–10.8 s (median 8.9) at load 5–7;
//! L1's own clock shows `/init` starting at 2.90 s vs 2.88 s.

pub mod forward;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod host;
pub mod initramfs;
pub mod job;
pub mod keeper;
pub mod protocol;
pub mod qemu;
pub mod qmp;
pub mod reexec;
pub mod scratch;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base::ByteSize;
use workloads::image::kernel::KernelSource;

pub use reexec::{environment_note, in_sandbox, needs_sandbox_here, SandboxMode, NOTE};

use forward::{ForwardSocket, HostForward};
use protocol::Event;
use qemu::{Expired, Limits, Report, Sinks, SocketPort};

/// Default L1 memory: room for an L2 guest of a couple of GiB.
pub const DEFAULT_MEM: u64 = 3 << 30;
/// Default L1 vCPUs: one. Every L1 kernel panic on record was an `int3`
/// of a code patch (jump label, static call) seen by another L1 vCPU after
/// the patch had ended: cross-vCPU code modification under QEMU's
/// multi-threaded TCG. With one vCPU nothing runs beside a patch. Measured
/// side by side on this 2-core host: the test suite's 6-run matrix took
/// 305 s with one vCPU against 349 s with two; an L1 boot ~5.8 s against
/// ~4.8 s (`SWAPLAB_SANDBOX_CPUS` or `--cpus` gives more; one host thread
/// each). Single-threaded TCG (`SWAPLAB_SANDBOX_TCG_THREAD=single`) with two
/// vCPUs was no option: the same matrix was still in its first run after
/// 7 minutes, each vCPU waiting for the other's time slice on every IPI.
pub const DEFAULT_CPUS: u32 = 1;
/// Default limit for the whole run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);
/// Limit from QEMU's start to the command starting.
/// Longest time limit L1 takes (30 days): every duration is bounded.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// L1's own boot time limit.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Set in L1 for a re-executed swaplab command that had `--api-sock PATH`:
/// the path in L1 to listen on instead of PATH (which is on the host; the
/// sandbox forwards it there). See [`SandboxConfig::forward_api_sock`].
pub const ENV_API_SOCK_INNER: &str = "SWAPLAB_API_SOCK_INNER";
/// Where a swaplab command given `--api-sock requested` must listen: in the
/// sandbox, when the command was re-run there with that socket forwarded, the
/// inner path from [`ENV_API_SOCK_INNER`]; otherwise `requested` itself.
pub fn api_sock_listen_path(requested: &std::path::Path) -> PathBuf {
    match std::env::var_os(ENV_API_SOCK_INNER).filter(|v| !v.is_empty()) {
        Some(inner) if in_sandbox() => PathBuf::from(inner),
        _ => requested.to_path_buf(),
    }
}

/// Prefix of the variables that tell a command run by `swaplab sandbox
/// --forward-socket` where to listen: `SWAPLAB_FORWARD_SOCK_0`, `_1`, ...
pub const ENV_FORWARD_SOCK_PREFIX: &str = "SWAPLAB_FORWARD_SOCK_";

/// How a [`SandboxError::Panic`] begins: L1's kernel (emulated by TCG) died
/// under the command. Callers that can run their work again look for this.
pub const L1_PANICKED: &str = "the L1 kernel panicked";

/// How a [`SandboxError::TripleFault`] begins: a vCPU of L1 (emulated by
/// TCG) triple-faulted, which stops L1 as a reset would.
pub const L1_TRIPLE_FAULTED: &str = "L1's emulated CPU triple-faulted";

/// How a [`SandboxError::Unresponsive`] begins: L1's heartbeat stopped (its
/// kernel wedged, nothing in it ran), so it was stopped.
pub const L1_UNRESPONSIVE: &str = "L1 stopped responding";

/// The beginnings of the errors that say L1 itself died under the command
/// (its kernel panicked, its CPU triple-faulted, or it wedged): callers that
/// can run their work again in a fresh L1 look for these.
pub const L1_DIED: [&str; 3] = [L1_PANICKED, L1_TRIPLE_FAULTED, L1_UNRESPONSIVE];

/// `0` turns off [`SandboxConfig::hold_kvm`].
pub const ENV_HOLD_KVM: &str = "SWAPLAB_SANDBOX_HOLD_KVM";

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
    /// A socket cannot be forwarded.
    #[error("forwarding a socket out of the sandbox")]
    Forward(#[from] forward::ForwardError),
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
    #[error("{L1_PANICKED}: {line}\nL1 kernel's report:\n  {}", .oops.replace('\n', "\n  "))]
    Panic {
        /// The panic line.
        line: String,
        /// The oops that led to it ([`protocol::panic_report`]).
        oops: String,
    },
    /// A vCPU of L1 triple-faulted (QEMU logged it, and stopped L1).
    #[error("{L1_TRIPLE_FAULTED} (QEMU logged \"{}\"; last L1 stage: {stage}){}\nQEMU's log:\n  {}", qemu::TRIPLE_FAULT, detail("", .console), .log.replace('\n', "\n  "))]
    TripleFault {
        /// The last stage L1 reported.
        stage: String,
        /// What QEMU logged from the triple fault on.
        log: String,
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
    /// L1's heartbeat stopped for [`qemu::LIVENESS`]: it was stopped.
    #[error("L1 stopped responding: no heartbeat for {secs} s while the command ran (last stage: {stage}); it was stopped{}{}", state_detail(.state), detail("", .console))]
    Unresponsive {
        /// Seconds without a heartbeat.
        secs: u64,
        /// What QEMU said of L1's CPU once it fell silent (before the kicks
        /// that did not wake it), if it could be asked.
        state: Option<String>,
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
/// QEMU's view of a silent L1's CPU, for [`SandboxError::Unresponsive`]:
/// its summary line, then the dump, indented.
fn state_detail(state: &Option<String>) -> String {
    match state {
        None => String::new(),
        Some(s) => format!(
            "\nQEMU's view of L1 when it fell silent (neither interrupts nor NMIs woke it):\n  {}",
            s.lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n  ")
        ),
    }
}

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
    /// What killed L1 under the command, when L1 itself died, in words that
    /// follow "the sandbox's": "L1 kernel panicked (…)" or "L1 CPU
    /// triple-faulted (…)".
    pub fn l1_died(&self) -> Option<String> {
        match self {
            SandboxError::Panic { line, .. } => Some(format!(
                "L1 kernel panicked ({})",
                line.split_once("] ")
                    .map_or(line.as_str(), |(_, rest)| rest)
                    .trim()
            )),
            SandboxError::TripleFault { .. } => {
                Some("L1 CPU triple-faulted (QEMU TCG's emulation; QEMU logged it)".to_string())
            }
            SandboxError::Unresponsive { secs, .. } => Some(format!(
                "L1 stopped responding (no heartbeat for {secs} s: its kernel wedged)"
            )),
            _ => None,
        }
    }

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
    /// Where L1's kernel comes from (default [`initramfs::default_kernel_source`]).
    pub kernel: KernelSource,
    /// Unix sockets to forward out of L1 (see [`forward`] and [`SandboxConfig::forward_socket`]).
    pub forwards: Vec<ForwardSocket>,
    /// The swaplab binary that runs the L1 side of forwarded sockets
    /// (`swaplab sandbox --l1-bridge`) and the KVM keeper (`--l1-hold-kvm`);
    /// default: this process's executable, which then must be swaplab.
    pub bridge_exe: Option<PathBuf>,
    /// Hold idle VMs in L1 for its whole life ([`keeper`]), so guests come
    /// and go without KVM patching L1's code. On unless
    /// `SWAPLAB_SANDBOX_HOLD_KVM=0` (see [`keeper`]).
    pub hold_kvm: bool,
    /// QEMU's TCG threading: `single` runs every L1 vCPU on one host thread
    /// (no cross-vCPU code-patching races), `multi` one thread per vCPU.
    /// From `SWAPLAB_SANDBOX_TCG_THREAD` (see [`ENV_TCG_THREAD`]).
    pub tcg_thread: String,
    /// Print boot and run times to stderr.
    pub verbose: bool,
    /// How long L1 may go without a heartbeat before it is taken for wedged
    /// and stopped (default [`qemu::LIVENESS`]; [`ENV_LIVENESS`]).
    pub liveness: Duration,
}

/// Environment variable choosing QEMU's TCG threading for L1: `multi` (the
/// default) or `single`.
pub const ENV_TCG_THREAD: &str = "SWAPLAB_SANDBOX_TCG_THREAD";

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
            kernel: initramfs::default_kernel_source(),
            forwards: Vec::new(),
            bridge_exe: None,
            hold_kvm: std::env::var(ENV_HOLD_KVM).map_or(true, |v| v.trim() != "0"),
            tcg_thread: std::env::var(ENV_TCG_THREAD)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "multi".into()),
            verbose: false,
            liveness: qemu::LIVENESS,
        }
    }
}

/// Environment variable: how long L1 may go without a heartbeat, seconds
/// (10 to 3600; default [`qemu::LIVENESS`]).
pub const ENV_LIVENESS: &str = "SWAPLAB_SANDBOX_LIVENESS";

/// [`SandboxConfig::liveness`] from [`ENV_LIVENESS`], or the default.
pub fn liveness_from_env() -> Result<Duration, SandboxError> {
    let Some(v) = std::env::var(ENV_LIVENESS).ok().filter(|v| !v.is_empty()) else {
        return Ok(qemu::LIVENESS);
    };
    match v.parse::<u64>() {
        Ok(secs) if (10..=3600).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(SandboxError::Config(format!(
            "{ENV_LIVENESS}={v:?} is not valid (seconds, 10 to 3600)"
        ))),
    }
}

impl SandboxConfig {
    /// Defaults, overridden by `SWAPLAB_SANDBOX_MEM` (a size), `SWAPLAB_SANDBOX_CPUS`,
    /// `SWAPLAB_SANDBOX_TIMEOUT` (seconds), `SWAPLAB_SANDBOX_CONSOLE` (a log file)
    /// and `SWAPLAB_SANDBOX_KERNEL` (`host`, or a Debian suite: see [`initramfs::ENV_KERNEL`]).
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
        c.liveness = liveness_from_env()?;
        c.console_log = var("SWAPLAB_SANDBOX_CONSOLE").map(PathBuf::from);
        if let Some(v) = var(initramfs::ENV_KERNEL) {
            c.kernel =
                initramfs::parse_kernel_source(&v).ok_or_else(|| bad(initramfs::ENV_KERNEL, &v))?;
        }
        Ok(c)
    }

    /// Make `host` on the host a listening Unix socket whose connections
    /// reach the returned path in L1, where the command must listen (a path on
    /// L1's own tmpfs `/run`). Up to 16 connections are served at once, independently. The host
    /// socket file exists while the sandbox runs and is removed when it ends.
    pub fn forward_socket(&mut self, host: impl Into<PathBuf>) -> PathBuf {
        let inner = forward::default_inner(self.forwards.len());
        self.forwards.push(ForwardSocket {
            host: host.into(),
            inner: inner.clone(),
        });
        inner
    }

    /// For a swaplab command re-run in the sandbox: if `args` (its arguments,
    /// without `argv[0]`) have `--api-sock PATH` before a bare `--`, forward
    /// PATH (made absolute against `cwd`, default this process's directory)
    /// and set [`ENV_API_SOCK_INNER`] in the command's environment to the
    /// inner path, which the re-run command listens on instead of PATH.
    /// Returns the inner path, or `None` when there is no `--api-sock`.
    pub fn forward_api_sock(&mut self, args: &[OsString]) -> Result<Option<PathBuf>, SandboxError> {
        let Some(path) = reexec::api_sock_arg(args) else {
            return Ok(None);
        };
        let host = if path.is_absolute() {
            path
        } else {
            match &self.cwd {
                Some(c) => c.join(path),
                None => std::env::current_dir()
                    .map_err(SandboxError::Cwd)?
                    .join(path),
            }
        };
        let inner = self.forward_socket(host);
        let env = self
            .env
            .get_or_insert_with(|| job::default_env(std::env::vars_os()));
        env.retain(|(k, _)| k != ENV_API_SOCK_INNER);
        env.push((ENV_API_SOCK_INNER.into(), inner.clone().into_os_string()));
        Ok(Some(inner))
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
        if !matches!(self.tcg_thread.as_str(), "single" | "multi") {
            return Err(SandboxError::Config(format!(
                "{ENV_TCG_THREAD}={:?}: expected single or multi",
                self.tcg_thread
            )));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(SandboxError::Config(format!(
                "the timeout must be 1 to {} seconds, not {}",
                MAX_TIMEOUT.as_secs(),
                self.timeout.as_secs()
            )));
        }
        for (i, f) in self.forwards.iter().enumerate() {
            forward::check_path(&f.host)?;
            forward::check_path(&f.inner)?;
            if self.forwards[..i].iter().any(|g| g.host == f.host) {
                return Err(SandboxError::Config(format!(
                    "{} is forwarded twice",
                    f.host.display()
                )));
            }
        }
        Ok(())
    }
}

/// Prefix of L1's temporary directories: `swaplab-l1-tmp-<pid>-<random>`, the
/// pid being the host process that made it.
pub const L1_TMP_PREFIX: &str = "swaplab-l1-tmp-";

/// Removes the L1 temporary directories in `dir` whose host process is gone
/// (a sandbox killed with SIGKILL cannot remove its own). Best effort: a
/// directory that cannot be removed stays, with a warning.
pub fn sweep_l1_tmp(dir: &std::path::Path) -> Vec<PathBuf> {
    base::scratch::sweep(dir, L1_TMP_PREFIX)
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
    /// Silences of L1 that ended after a kick (each also said on stderr as it ended).
    pub stalls: Vec<qemu::Stall>,
}

/// The closing line on L1's silences (of [`qemu::KICK_AFTER`] or more), for a
/// run that had any: times measured across one include it.
fn stalls_line(stalls: &[qemu::Stall]) -> Option<String> {
    let longest = stalls.iter().map(|s| s.silent).max()?;
    let total: Duration = stalls.iter().map(|s| s.silent).sum();
    let times = match stalls.len() {
        1 => "once".to_string(),
        n => format!("{n} times"),
    };
    Some(format!(
        "swaplab sandbox: L1 fell silent {times} while the command ran ({:.1} s in all, the longest {:.1} s; {} s or more each) and a kick ended each silence; times measured across a silence include it",
        total.as_secs_f64(),
        longest.as_secs_f64(),
        qemu::KICK_AFTER.as_secs()
    ))
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
    let (job, _l1_tmp) = l1_job(cfg, argv)?;
    let image = prepare(cfg)?;
    let launch = qemu::Launch {
        qemu: cfg.qemu.clone(),
        vmlinux: image.vmlinux.clone(),
        initramfs: image.initramfs.clone(),
        mem_mib: cfg.mem >> 20,
        cpus: cfg.cpus,
        job: job.script(),
        tsc_khz: qemu::host_tsc_khz(),
        extra_cmdline: cfg.kernel_args.clone(),
        tcg_thread: cfg.tcg_thread.clone(),
    };
    // As root, 9p keeps owners and modes as L1 sets them; otherwise files are
    // created as the calling user.
    let root = nix::unistd::geteuid().is_root();
    let model = if root { "passthrough" } else { "none" };
    let mut console_file = console_log(cfg)?;
    let limits = Limits {
        total: cfg.timeout,
        boot: BOOT_TIMEOUT,
        liveness: cfg.liveness,
    };
    // While sockets are forwarded, Ctrl-C, SIGTERM and SIGHUP stop QEMU instead
    // of this process, so the run unwinds and the host socket files go away.
    // A signal caught before QEMU runs stops it as soon as it does.
    let signals = if cfg.forwards.is_empty() {
        None
    } else {
        Some(hostsys::signals::SignalScope::new().map_err(|e| {
            SandboxError::Config(format!("cannot catch signals while forwarding: {e}"))
        })?)
    };
    let handle = signals.as_ref().map(|s| s.handle());
    let on_pid = |pid: Option<u32>| {
        if let Some(h) = &handle {
            h.set_action(pid.map(|p| -> hostsys::signals::SignalAction {
                Box::new(move |_| {
                    // `p` is QEMU, our child, not yet reaped (so not a reused pid).
                    let pid = nix::unistd::Pid::from_raw(p as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                })
            }));
        }
    };
    let mut attempt = 1;
    let (report, _forwarders) = loop {
        let (forwarders, ports) = start_forwards(&cfg.forwards, cfg.verbose)?;
        let sinks = Sinks {
            stdout: &mut *stdout,
            stderr: &mut *stderr,
            console: console_file.as_mut().map(|f| f as &mut dyn Write),
        };
        let report = qemu::run(&launch, model, limits, sinks, ports, Some(&on_pid))?;
        let caught = signals.as_ref().and_then(|s| s.caught());
        // L1's kernel, emulated by TCG on a loaded host, has panicked in
        // early boot now and then (an oops in interrupt context, before any
        // of swaplab ran). Nothing of the command has run or been said yet,
        // so one fresh start is safe and hides nothing of what is measured.
        match boot_panic(&report) {
            Some(line) if attempt < L1_BOOT_ATTEMPTS && caught.is_none() => {
                eprintln!(
                    "swaplab: the sandbox's L1 died while booting, before the \
                     command started ({line}); starting it again"
                );
                attempt += 1;
                drop(forwarders);
            }
            _ => break (report, forwarders),
        }
    };
    let caught = signals.as_ref().and_then(|s| s.caught());
    let code = match (interpret(&report, cfg.timeout), caught) {
        // QEMU may have died of the signal before it could say so.
        (Err(_), Some(sig)) => {
            return Err(SandboxError::Interrupted(format!(
                "swaplab got {}",
                hostsys::signals::signal_name(sig)
            )))
        }
        (result, _) => result?,
    };
    let run = SandboxRun {
        exit_code: code,
        boot_time: report.boot_time(),
        total_time: report.elapsed,
        built_initramfs: image.built,
        stalls: report.stalls.clone(),
    };
    if cfg.verbose {
        log_run(cfg, &report, &image, &run);
    }
    if let Some(line) = stalls_line(&run.stalls) {
        // Best effort, as for the command's own stderr.
        let _ = writeln!(stderr, "{line}");
    }
    Ok(run)
}

/// The job L1 runs: `argv` in the configured (or current) directory and
/// environment, with the bridges and the KVM holder `cfg` asks for in the
/// background; and L1's temporary directory, which goes when it is dropped
/// (keep it until the sandbox has ended).
fn l1_job(
    cfg: &SandboxConfig,
    argv: Vec<OsString>,
) -> Result<(job::Job, tempfile::TempDir), SandboxError> {
    let cwd = match &cfg.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().map_err(SandboxError::Cwd)?,
    };
    let mut env = match &cfg.env {
        Some(e) => e.clone(),
        None => job::default_env(std::env::vars_os()),
    };
    // L1's root is the host's, so what the command leaves in its temporary
    // directory (a run's scratch files, a guest swap image) would stay on the
    // host when L1 is stopped mid-command (Ctrl-C, its time limit, a panic).
    // It gets a directory of its own instead, inside the one it would have
    // used, and the directory goes when the sandbox ends.
    let l1_tmp = {
        let base = env
            .iter()
            .find(|(k, _)| k == "TMPDIR")
            .map_or_else(std::env::temp_dir, |(_, v)| PathBuf::from(v));
        base::scratch::dir_in(&base, L1_TMP_PREFIX).map_err(|e| {
            SandboxError::Config(format!(
                "cannot create L1's temporary directory in {}: {e}",
                base.display()
            ))
        })?
    };
    env.retain(|(k, _)| k != "TMPDIR");
    env.push(("TMPDIR".into(), l1_tmp.path().as_os_str().to_owned()));
    let mut job = job::Job::new(argv, &cwd, env)?;
    if !cfg.forwards.is_empty() || cfg.hold_kvm {
        let exe = match &cfg.bridge_exe {
            Some(e) => e.clone().into_os_string(),
            None => reexec::current_exe()?,
        };
        if cfg.hold_kvm {
            // Set up before the command starts (see keeper::hold).
            job.setup
                .push(vec![exe.clone(), "sandbox".into(), "--l1-hold-kvm".into()]);
        }
        for (i, f) in cfg.forwards.iter().enumerate() {
            let mut spec = OsString::from(format!("{}=", forward::port_name(i)));
            spec.push(&f.inner);
            job.background.push(vec![
                exe.clone(),
                "sandbox".into(),
                "--l1-bridge".into(),
                spec,
            ]);
        }
    }
    Ok((job, l1_tmp))
}

/// The console log file, if one is configured.
fn console_log(cfg: &SandboxConfig) -> Result<Option<std::fs::File>, SandboxError> {
    match &cfg.console_log {
        Some(p) => Ok(Some(std::fs::File::create(p).map_err(|e| {
            SandboxError::Config(format!("cannot create console log {}: {e}", p.display()))
        })?)),
        None => Ok(None),
    }
}

/// `--verbose`: QEMU's events and a line on L1's boot and the run.
fn log_run(
    cfg: &SandboxConfig,
    report: &qemu::Report,
    image: &initramfs::L1Image,
    run: &SandboxRun,
) {
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
        run.exit_code
    );
}

/// Listen at every forwarded host path; the forwarders (which remove their
/// socket files when dropped) and the ports QEMU gets.
fn start_forwards(
    forwards: &[ForwardSocket],
    verbose: bool,
) -> Result<(Vec<HostForward>, Vec<SocketPort>), SandboxError> {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for (i, f) in forwards.iter().enumerate() {
        let (h, fd) = HostForward::create(&f.host)?;
        if verbose {
            eprintln!(
                "swaplab sandbox: forwarding {} to {} in L1",
                f.host.display(),
                f.inner.display()
            );
        }
        hosts.push(h);
        ports.push(SocketPort {
            name: forward::port_name(i),
            fd,
        });
    }
    Ok((hosts, ports))
}

/// How many times L1 is started when its kernel panics before the command runs.
pub const L1_BOOT_ATTEMPTS: u32 = 2;

/// What killed L1 before the command started, if its kernel panicked (the
/// panic line) or its emulated CPU triple-faulted.
pub fn boot_panic(report: &Report) -> Option<&str> {
    let started = report
        .events
        .iter()
        .any(|(_, e)| matches!(e, protocol::Event::Stage(s) if s == "run"));
    if started {
        return None;
    }
    protocol::find_panic(&report.console_tail)
        .or_else(|| report.l1_triple_fault.as_ref().map(|_| L1_TRIPLE_FAULTED))
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
            Event::Stage(_) | Event::Alive => {}
        }
    }
    let console = report.console_tail.clone();
    if let Some(expired) = report.expired {
        let what = match expired {
            Expired::Boot => format!("L1 did not boot within {} s", BOOT_TIMEOUT.as_secs()),
            Expired::Total => format!("the sandbox timed out after {} s", timeout.as_secs()),
            Expired::Unresponsive => {
                return Err(SandboxError::Unresponsive {
                    secs: report.liveness.as_secs(),
                    state: report.l1_state.clone(),
                    stage,
                    console,
                })
            }
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
            oops: protocol::panic_report(&report.console_tail).unwrap_or_default(),
        });
    }
    if let Some(log) = &report.l1_triple_fault {
        return Err(SandboxError::TripleFault {
            stage,
            log: log.clone(),
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
/// A `--api-sock PATH` among the arguments is forwarded transparently
/// ([`SandboxConfig::forward_api_sock`]): PATH works on the host as it would
/// without the sandbox.
pub fn reexec_in_sandbox(cfg: &SandboxConfig) -> Result<SandboxRun, SandboxError> {
    let mut argv = vec![reexec::current_exe()?];
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut cfg = cfg.clone();
    cfg.forward_api_sock(&args)?;
    argv.extend(reexec::reexec_args(args));
    eprintln!("swaplab: {NOTE}");
    run_in_sandbox(
        &cfg,
        argv,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// Make sure L1's kernel and initramfs for `cfg` are in the cache (what
/// `swaplab sandbox --prepare` and the setup script do), without booting.
pub fn prepare(cfg: &SandboxConfig) -> Result<initramfs::L1Image, SandboxError> {
    let cache_dir = match &cfg.cache_dir {
        Some(d) => d.clone(),
        None => workloads::image::cache::default_cache_dir()?,
    };
    Ok(initramfs::ensure_l1_image(&cache_dir, &cfg.kernel)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_line_counts_the_silences_and_names_the_longest() {
        assert_eq!(stalls_line(&[]), None);
        let stall = |s: f64| qemu::Stall {
            from: Duration::from_secs(60),
            silent: Duration::from_secs_f64(s),
            cpu: None,
        };
        let one = stalls_line(&[stall(30.8)]).unwrap();
        assert!(
            one.contains("fell silent once") && one.contains("30.8 s in all"),
            "{one}"
        );
        let two = stalls_line(&[stall(20.0), stall(31.5)]).unwrap();
        assert!(
            two.contains("2 times") && two.contains("51.5 s in all, the longest 31.5 s"),
            "{two}"
        );
    }

    #[test]
    fn l1_tmp_dirs_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // A pid above the kernel's pid_max (4194304) never runs.
        let dead = dir.path().join(format!("{L1_TMP_PREFIX}4999999-abc"));
        let ours = dir
            .path()
            .join(format!("{L1_TMP_PREFIX}{}-abc", std::process::id()));
        let other = dir.path().join("swaplab-other-1");
        for d in [&dead, &ours, &other] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dead.join("swap.img"), b"x").unwrap();
        assert_eq!(sweep_l1_tmp(dir.path()), vec![dead.clone()]);
        assert!(!dead.exists() && ours.exists() && other.exists());
    }
    use std::path::Path;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn api_sock_is_forwarded_and_named_in_the_environment() {
        let mut cfg = SandboxConfig {
            cwd: Some("/work".into()),
            env: Some(vec![("PATH".into(), "/bin".into())]),
            ..SandboxConfig::default()
        };
        assert_eq!(
            cfg.forward_api_sock(&os(&["boot", "--mem", "1G"])).unwrap(),
            None
        );
        assert!(cfg.forwards.is_empty());
        let inner = cfg
            .forward_api_sock(&os(&["boot", "--api-sock", "api.sock"]))
            .unwrap()
            .unwrap();
        assert_eq!(inner, Path::new("/run/swaplab/forward-0.sock"));
        assert_eq!(
            cfg.forwards,
            [ForwardSocket {
                host: "/work/api.sock".into(),
                inner: inner.clone()
            }]
        );
        let env = cfg.env.as_ref().unwrap();
        assert!(env.contains(&(ENV_API_SOCK_INNER.into(), inner.into_os_string())));
        assert!(env.contains(&("PATH".into(), "/bin".into())));
        // A second socket gets its own inner path.
        assert_eq!(
            cfg.forward_socket("/tmp/b.sock"),
            Path::new("/run/swaplab/forward-1.sock")
        );
        cfg.validate().unwrap();
        cfg.forward_socket("/work/api.sock");
        assert!(cfg.validate().is_err(), "the same host path twice");
    }

    #[test]
    fn only_a_panic_before_the_command_is_a_boot_panic() {
        use std::os::unix::process::ExitStatusExt;
        let panic = "[    1.05] Kernel panic - not syncing: Fatal exception in interrupt";
        let mut r = qemu::Report {
            events: vec![(
                Duration::from_secs(1),
                protocol::Event::Stage("modules".into()),
            )],
            qemu_status: std::process::ExitStatus::from_raw(0),
            console_tail: format!("[    1.04] VFS: Disk quotas\n{panic}\n"),
            qemu_stderr: String::new(),
            l1_triple_fault: None,
            expired: None,
            liveness: qemu::LIVENESS,
            elapsed: Duration::from_secs(2),
            stalls: Vec::new(),
            l1_state: None,
        };
        assert_eq!(boot_panic(&r), Some(panic));
        r.events
            .push((Duration::from_secs(2), protocol::Event::Stage("run".into())));
        assert_eq!(boot_panic(&r), None, "the command had started");
        r.events.truncate(1);
        r.console_tail = "[    1.04] VFS: Disk quotas\n".into();
        assert_eq!(boot_panic(&r), None, "no panic");
    }

    #[test]
    fn a_silent_l1_is_an_l1_death_that_says_so() {
        use std::os::unix::process::ExitStatusExt;
        let r = qemu::Report {
            events: vec![(Duration::from_secs(5), protocol::Event::Stage("run".into()))],
            qemu_status: std::process::ExitStatus::from_raw(9),
            console_tail: "[  200.1] watchdog: BUG: soft lockup - CPU#0 stuck for 23s!\n".into(),
            qemu_stderr: String::new(),
            l1_triple_fault: None,
            expired: Some(qemu::Expired::Unresponsive),
            liveness: Duration::from_secs(120),
            elapsed: Duration::from_secs(300),
            stalls: Vec::new(),
            l1_state: Some(
                "CPU 0: RIP=ffffffff81e0f7cb CPL=0 interrupts off, halted\nRAX=0\n".into(),
            ),
        };
        let e = interpret(&r, Duration::from_secs(3600)).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with(L1_UNRESPONSIVE), "{text}");
        assert!(
            text.contains("no heartbeat for 120 s") && text.contains("soft lockup"),
            "{text}"
        );
        assert!(
            text.contains("neither interrupts nor NMIs woke it):\n  CPU 0: RIP=ffffffff81e0f7cb CPL=0 interrupts off, halted\n  RAX=0"),
            "{text}"
        );
        assert!(L1_DIED.iter().any(|m| text.starts_with(m)));
        assert!(e.l1_died().unwrap().contains("stopped responding"));
    }
}

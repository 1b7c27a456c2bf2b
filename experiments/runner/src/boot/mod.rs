//! Booting the guest image (or any kernel) with the swaplab VMM: `swaplab boot` and
//! `swaplab bench boot`, and the library they share.
//!
//! - [`BootFiles::resolve`]: kernel, initramfs and base command line (the cached guest
//!   image's by default, its PVH vmlinux).
//! - [`run_guest`]: boot once ([`vmm::linux`]), watch the console ([`console`]), and
//!   return the report, the `/init` markers and times; [`run_guest_with`] also hands
//!   every line the guest writes to its result channel (`/dev/ttyS1`) to a hook.
//! - [`verdict`]: turn a run into the command's exit status or a clear error.

pub mod cmd;
pub mod console;
pub mod options;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm::devices::serial::{ChannelHook, ChannelStats};
use vmm::linux::{GuestOutcome, LinuxConfig, LinuxReport, LinuxVm};
use vmm::virtio::null::NullDevice;
use workloads::image::init::{self, GuestEnd};
use workloads::image::{ensure_image, GuestImage, ImageOptions};

use crate::run::guard::StallGuard;
use crate::run::ktrace::ShutdownWatch;
use console::{GuestConsole, Marks, Show};

/// Environment variable naming an image directory to use as is (set for the re-run
/// inside the sandbox, so L1 does not rebuild or re-hash the image).
pub const ENV_IMAGE_DIR: &str = "SWAPLAB_BOOT_IMAGE";
/// Environment variable with the images of scenarios' `guest.kernel`
/// packages, one `NAME[@SUITE]=DIR` per line (set for the re-run inside the
/// sandbox, found on the host before L1 boots).
pub const ENV_KERNEL_IMAGES: &str = "SWAPLAB_KERNEL_IMAGES";

/// Errors of a guest boot that are not the guest's doing.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The guest image could not be built or loaded.
    #[error("guest image")]
    Image(#[from] workloads::image::ImageError),
    /// The command line could not be built.
    #[error("guest command")]
    Command(#[from] init::InitError),
    /// The VM failed.
    #[error(transparent)]
    Vm(#[from] vmm::linux::LinuxError),
    /// A guest kernel named in a way no Debian package is.
    #[error("{0}")]
    KernelSpec(String),
    /// The guest did not end, nor stop, within its time limit and the stall
    /// guard's slack ([`crate::run::guard`]); its log has every thread's stack.
    #[error("{0}")]
    Stalled(String),
    /// `--kernel` is another release than the guest image's, whose
    /// initramfs (used because no `--initrd` was given) holds modules for
    /// its own kernel only: they would not load.
    #[error("{kernel} is kernel {release}, but the guest image's initramfs holds modules for {image_release} (they would not load: \"invalid module format\"); build an image for this kernel's Debian package with `swaplab image --kernel-package NAME[@SUITE]` (e.g. linux-image-amd64@bookworm-backports) and boot it with {env}=<its directory>, or give a matching --initrd")]
    ModulesMismatch {
        /// The kernel file.
        kernel: PathBuf,
        /// Its release.
        release: String,
        /// The image's.
        image_release: String,
        /// The variable that picks an image directory.
        env: &'static str,
    },
    /// The console log file could not be created.
    #[error("cannot create console log {path}")]
    ConsoleLog {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// Kernel (PVH vmlinux or bzImage).
    pub kernel: PathBuf,
    /// initramfs.
    pub initrd: Option<PathBuf>,
    /// Base command line (before `swaplab.run=`).
    pub cmdline: String,
    /// The image directory these came from, if any.
    pub image_dir: Option<PathBuf>,
    /// Images of other guest kernels a matrix's scenarios name
    /// (`guest.kernel` → image directory), passed on to the sandbox's re-run.
    pub kernel_images: Vec<(String, PathBuf)>,
}

impl BootFiles {
    /// Use `kernel`/`initrd`/`cmdline` where given, the guest image's otherwise (its
    /// bzImage instead of its vmlinux if `bzimage`). The image is found through
    /// [`ENV_IMAGE_DIR`] or built/found in the cache (printing progress to stderr).
    pub fn resolve(
        kernel: Option<&Path>,
        initrd: Option<&Path>,
        cmdline: Option<&str>,
        bzimage: bool,
    ) -> Result<Self, BootError> {
        let image = if kernel.is_some() && initrd.is_some() && cmdline.is_some() {
            None
        } else {
            Some(load_image()?)
        };
        let img = image.as_ref();
        if let (Some(k), None, Some(i)) = (kernel, initrd, img) {
            // The image's modules are for its own kernel.
            if let Some(release) = workloads::image::kernel::release_of(k) {
                if release != i.manifest.kernel_version {
                    return Err(BootError::ModulesMismatch {
                        kernel: k.to_path_buf(),
                        release,
                        image_release: i.manifest.kernel_version.clone(),
                        env: ENV_IMAGE_DIR,
                    });
                }
            }
        }
        let mut files = match image {
            Some(i) => Self::of_image(i, bzimage),
            // Only when all three are given: each is replaced below.
            None => Self {
                kernel: PathBuf::new(),
                initrd: None,
                cmdline: init::DEFAULT_CMDLINE.to_string(),
                image_dir: None,
                kernel_images: Vec::new(),
            },
        };
        if let Some(k) = kernel {
            files.kernel = k.to_path_buf();
        }
        if let Some(i) = initrd {
            files.initrd = Some(i.to_path_buf());
        }
        if let Some(c) = cmdline {
            files.cmdline = c.to_string();
        }
        Ok(files)
    }

    /// The files of the built image `img`: its vmlinux (its bzImage if
    /// `bzimage`), initramfs and command line.
    fn of_image(img: GuestImage, bzimage: bool) -> Self {
        Self {
            kernel: if bzimage {
                img.bzimage.clone()
            } else {
                img.vmlinux.clone()
            },
            initrd: Some(img.initramfs.clone()),
            cmdline: img.manifest.cmdline.clone(),
            image_dir: Some(img.dir),
            kernel_images: Vec::new(),
        }
    }

    /// The files of the guest image for a scenario's `guest.kernel` (`None`:
    /// the default image, as [`BootFiles::resolve`] finds it). A named
    /// kernel must be in the cache (`swaplab image --kernel-package` fetched
    /// it): runs never download one.
    pub fn for_kernel(spec: Option<&str>) -> Result<Self, BootError> {
        let Some(spec) = spec else {
            return Self::resolve(None, None, None, false);
        };
        Ok(Self::of_image(kernel_image(spec)?, false))
    }
}

/// The built image of the kernel package `spec` (`NAME[@SUITE]`): the one
/// [`ENV_KERNEL_IMAGES`] names, else found (or built from the cached kernel)
/// in the cache.
pub fn kernel_image(spec: &str) -> Result<GuestImage, BootError> {
    let listed = std::env::var(ENV_KERNEL_IMAGES).unwrap_or_default();
    if let Some(dir) = listed
        .lines()
        .filter_map(|l| l.split_once('='))
        .find_map(|(k, d)| (k == spec).then_some(d))
    {
        return Ok(GuestImage::load(Path::new(dir))?);
    }
    let (metapackage, source) = workloads::image::kernel::parse_package_spec(spec)
        .map_err(|e| BootError::KernelSpec(format!("guest.kernel {e}")))?;
    Ok(ensure_image(&ImageOptions {
        metapackage,
        source,
        offline: true,
        progress: Some(|msg| eprintln!("swaplab: {msg}")),
        ..ImageOptions::default()
    })?)
}

/// The images of the distinct `specs`, as [`ENV_KERNEL_IMAGES`] lists them.
pub fn kernel_images<'a>(
    specs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, PathBuf)>, BootError> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for spec in specs {
        if !out.iter().any(|(s, _)| s == spec) {
            out.push((spec.to_string(), kernel_image(spec)?.dir));
        }
    }
    Ok(out)
}

fn load_image() -> Result<GuestImage, BootError> {
    if let Some(dir) = std::env::var_os(ENV_IMAGE_DIR).filter(|d| !d.is_empty()) {
        return Ok(GuestImage::load(Path::new(&dir))?);
    }
    let opts = ImageOptions {
        progress: Some(|msg| eprintln!("swaplab: {msg}")),
        ..ImageOptions::default()
    };
    Ok(ensure_image(&opts)?)
}

/// One guest boot.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Files and base command line.
    pub files: BootFiles,
    /// The command for `/init` (`swaplab.run`), if any.
    pub run: Option<String>,
    /// Guest RAM.
    pub mem: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Time limit from the vCPUs starting.
    pub timeout: Duration,
    /// Do-nothing virtio devices to attach, by device type (discovery tests).
    pub null_devices: Vec<u32>,
    /// Give the guest the result channel (COM2, `/dev/ttyS1`) and tell `/init` to
    /// export `SWAPLAB_CHANNEL=/dev/ttyS1` to the command (`swaplab.channel=1`).
    pub channel: bool,
}

impl GuestSpec {
    /// The full kernel command line.
    pub fn cmdline(&self) -> Result<String, BootError> {
        Ok(init::cmdline_with(
            &self.files.cmdline,
            &init::InitParams {
                run: self.run.clone(),
                channel: self.channel,
                ..init::InitParams::default()
            },
        )?)
    }
}

/// A finished boot.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// The VM's report.
    pub report: LinuxReport,
    /// What the console showed.
    pub marks: Marks,
    /// When building the VM started.
    pub started: Instant,
    /// When the VM ended.
    pub ended: Instant,
    /// What came through the result channel, if the guest had one.
    pub channel: Option<ChannelStats>,
    /// The guest's shutdown exits (triple faults) as KVM's trace recorded
    /// them, with the RIP the registers read back after one no longer show:
    /// in the nested sandbox ([`watch_shutdowns`]); empty elsewhere.
    pub shutdown: Vec<String>,
}

impl GuestRun {
    /// From building the VM to `/init` announcing itself.
    pub fn to_init(&self) -> Option<Duration> {
        self.marks.init_at.map(|t| t - self.started)
    }

    /// From building the VM to its end.
    pub fn total(&self) -> Duration {
        self.ended - self.started
    }
}

/// Boot `spec` once, showing the console as `show` says on `out`, logging it to
/// `console_log`. With `spec.channel`, result-channel lines are counted and dropped.
pub fn run_guest(
    spec: &GuestSpec,
    show: Show,
    out: Box<dyn Write + Send>,
    console_log: Option<&Path>,
) -> Result<GuestRun, BootError> {
    run_guest_with(spec, show, out, console_log, None)
}

/// [`run_guest`], calling `channel` (on a vCPU thread, so keep it quick) with every
/// complete line the guest writes to its result channel. The channel device is
/// attached when `spec.channel` is set or a hook is given; only `spec.channel` tells
/// `/init` to point guest programs at it.
pub fn run_guest_with(
    spec: &GuestSpec,
    show: Show,
    out: Box<dyn Write + Send>,
    console_log: Option<&Path>,
    channel: Option<ChannelHook>,
) -> Result<GuestRun, BootError> {
    let cmdline = spec.cmdline()?;
    let log = match console_log {
        Some(p) => Some(
            std::fs::File::create(p).map_err(|source| BootError::ConsoleLog {
                path: p.to_path_buf(),
                source,
            })?,
        ),
        None => None,
    };
    let (sink, marks) = GuestConsole::new(show, out, log);
    let started = Instant::now();
    let mut config = linux_config(&spec.files.kernel, spec.mem, spec.cpus);
    config.initrd = spec.files.initrd.clone();
    config.cmdline = cmdline;
    config.console = Some(Box::new(sink));
    config.channel = match channel {
        Some(hook) => Some(hook),
        None if spec.channel => Some(Box::new(|_: &str| {})),
        None => None,
    };
    // Bounds everything below (assembly, the guest, its stop) by the time
    // limit plus the guard's slack: a boot never hangs, and one that stalls
    // logs every thread's kernel stack first.
    let guard = StallGuard::start("boot", spec.timeout);
    guard.stage("assembling the guest");
    let mut vm = LinuxVm::new(config)?;
    let channel = vm.channel_counters();
    for (i, &ty) in spec.null_devices.iter().enumerate() {
        vm.add_virtio(&format!("null{i}"), Box::new(NullDevice::new(ty)))?;
    }
    let watch = watch_shutdowns();
    let running = vm.start()?;
    guard.vm(running.handle());
    guard.stage("running the guest");
    let report = running.wait(Some(spec.timeout));
    guard.vm_ended();
    let ended = Instant::now();
    guard.stage("ending the guest");
    let shutdown = watch.map(ShutdownWatch::finish).unwrap_or_default();
    if let Some(reason) = guard.finish() {
        return Err(BootError::Stalled(reason));
    }
    let marks = base::lock(&marks).clone();
    Ok(GuestRun {
        report: report?,
        marks,
        started,
        ended,
        channel: channel.map(|c| c.snapshot()),
        shutdown,
    })
}

/// Exit status for a guest that did not end within its time limit (as `timeout(1)`).
pub const TIMEOUT_STATUS: u8 = 124;

/// Why a run is not a success, in words, with the status to exit with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GuestFailure {
    /// What happened, with the last console lines.
    pub message: String,
    /// Exit status.
    pub status: u8,
}

fn with_tail(msg: String, run: &GuestRun) -> String {
    let lines: Vec<&String> = run
        .report
        .console_tail
        .iter()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if lines.is_empty() {
        return format!("{msg} (the guest printed nothing)");
    }
    let body: Vec<String> = lines.iter().map(|l| format!("  | {l}")).collect();
    format!("{msg}\nlast guest console lines:\n{}", body.join("\n"))
}

/// The command's exit status if the guest ran it and powered off, else why not.
/// Without a command (`expect_command` false) powering off is success (0).
pub fn verdict(run: &GuestRun, expect_command: bool) -> Result<u8, GuestFailure> {
    let fail = |message: String, status: u8| GuestFailure {
        message: with_tail(message, run),
        status,
    };
    match (&run.report.outcome, &run.marks.end) {
        (GuestOutcome::PoweredOff, Some(GuestEnd::Exited(code))) => {
            Ok(u8::try_from(*code).unwrap_or(1))
        }
        (GuestOutcome::PoweredOff, Some(GuestEnd::Failed(why))) => Err(fail(
            format!("the guest's /init could not run the command: {why}"),
            1,
        )),
        (GuestOutcome::PoweredOff, None) if !expect_command => Ok(0),
        (GuestOutcome::PoweredOff, None) => Err(fail(
            "the guest powered off without reporting the command's exit status".into(),
            1,
        )),
        (
            GuestOutcome::Panicked {
                message,
                hints,
                then,
            },
            _,
        ) => {
            let then = match then.as_ref() {
                GuestOutcome::Rebooted { .. } => "; it then rebooted".to_string(),
                GuestOutcome::TimedOut { after_ms } => {
                    format!("; it was stopped at the {} s time limit", after_ms / 1000)
                }
                _ => "; it was stopped".to_string(),
            };
            let hints = if hints.is_empty() {
                String::new()
            } else {
                format!(" (earlier: {})", hints.join("; "))
            };
            Err(fail(
                format!("the guest kernel panicked: {message}{hints}{then}"),
                1,
            ))
        }
        (GuestOutcome::Rebooted { how }, _) if how == "triple_fault" => {
            let seen = if run.shutdown.is_empty() {
                String::new()
            } else {
                format!(" (KVM's trace: {})", run.shutdown.join("; "))
            };
            Err(fail(format!("{TRIPLE_FAULT}{seen}"), 1))
        }
        (GuestOutcome::Rebooted { how }, _) => Err(fail(
            format!(
                "the guest rebooted ({}) instead of powering off",
                how.replace('_', " ")
            ),
            1,
        )),
        (GuestOutcome::TimedOut { after_ms }, _) => Err(fail(
            format!(
                "the guest did not power off within {} s and was stopped{}",
                after_ms / 1000,
                if run.marks.init_at.is_none() {
                    " (it never reached /init)"
                } else {
                    ""
                }
            ),
            TIMEOUT_STATUS,
        )),
        (GuestOutcome::Stopped, _) => Err(fail("the guest was stopped".into(), 1)),
    }
}

/// In the nested sandbox, a watch on KVM's trace for the guest's triple
/// faults, started on the thread that then starts the vCPUs: on AMD, KVM
/// resets a vCPU on its shutdown exit, and only its `kvm_exit` event keeps
/// the RIP. Elsewhere `None` (there, `--ktrace` records every exit).
pub fn watch_shutdowns() -> Option<ShutdownWatch> {
    sandbox::in_sandbox().then(ShutdownWatch::start).flatten()
}

/// How a guest's triple fault (with no kernel panic before it) reads in a
/// [`verdict`]. In the nested sandbox it is a known residue of L1's emulated
/// SVM (see `run::cmd`, which runs such a run once more and counts it).
pub const TRIPLE_FAULT: &str = "the guest rebooted (triple fault) instead of powering off";

/// A [`LinuxConfig`] for the stock guest here. In the nested sandbox the
/// guest gets no XSAVE: L1's SVM, emulated by QEMU TCG, lets its `XSETBV`
/// through ([`vmm::linux::cpuid::hide_xsave`]).
pub fn linux_config(kernel: &Path, mem: u64, cpus: u32) -> LinuxConfig {
    let mut config = LinuxConfig::new(kernel, mem, cpus);
    config.xsave = !sandbox::in_sandbox();
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcome: GuestOutcome, end: Option<GuestEnd>, tail: &[&str]) -> GuestRun {
        let now = Instant::now();
        GuestRun {
            report: LinuxReport {
                outcome,
                setup_ns: 0,
                run_ns: 0,
                console_tail: tail.iter().map(|s| s.to_string()).collect(),
                console_bytes: 0,
                vm: None,
                virtio: Vec::new(),
            },
            marks: Marks {
                end,
                ..Marks::default()
            },
            started: now,
            ended: now,
            channel: None,
            shutdown: Vec::new(),
        }
    }

    #[test]
    fn outcomes_map_to_statuses_and_messages() {
        let ok = run(GuestOutcome::PoweredOff, Some(GuestEnd::Exited(3)), &[]);
        assert_eq!(verdict(&ok, true), Ok(3));
        let big = run(GuestOutcome::PoweredOff, Some(GuestEnd::Exited(300)), &[]);
        assert_eq!(verdict(&big, true), Ok(1));
        let plain = run(GuestOutcome::PoweredOff, None, &["x"]);
        assert_eq!(verdict(&plain, false), Ok(0));
        let e = verdict(&plain, true).unwrap_err();
        assert_eq!(e.status, 1);
        assert!(e.message.contains("without reporting") && e.message.contains("  | x"));
        let failed = run(
            GuestOutcome::PoweredOff,
            Some(GuestEnd::Failed("insmod a.ko".into())),
            &[],
        );
        let e = verdict(&failed, true).unwrap_err();
        assert!(e.message.contains("could not run the command: insmod a.ko"));
        assert!(e.message.contains("printed nothing"));
        let timeout = run(GuestOutcome::TimedOut { after_ms: 10_000 }, None, &["boot"]);
        let e = verdict(&timeout, true).unwrap_err();
        assert_eq!(e.status, TIMEOUT_STATUS);
        assert!(e.message.contains("within 10 s") && e.message.contains("never reached /init"));
        let panic = run(
            GuestOutcome::Panicked {
                message: "Kernel panic - not syncing: x".into(),
                hints: vec!["Initramfs unpacking failed: y".into()],
                then: Box::new(GuestOutcome::Rebooted {
                    how: "acpi_reset".into(),
                }),
            },
            None,
            &[],
        );
        let e = verdict(&panic, true).unwrap_err();
        assert_eq!(e.status, 1);
        assert!(e.message.starts_with(
            "the guest kernel panicked: Kernel panic - not syncing: x (earlier: Initramfs unpacking failed: y); it then rebooted"
        ), "{}", e.message);
        let reboot = run(
            GuestOutcome::Rebooted {
                how: "triple_fault".into(),
            },
            None,
            &[],
        );
        assert!(verdict(&reboot, false)
            .unwrap_err()
            .message
            .contains("rebooted (triple fault)"));
        let mut traced = reboot;
        traced.shutdown = vec!["vcpu 2 reason shutdown rip 0xffffffff81001234".into()];
        let m = verdict(&traced, false).unwrap_err().message;
        assert!(
            m.starts_with(&format!(
                "{TRIPLE_FAULT} (KVM's trace: vcpu 2 reason shutdown rip 0xffffffff81001234)"
            )),
            "{m}"
        );
    }
}

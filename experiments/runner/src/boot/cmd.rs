//! `swaplab boot`: boot the guest image (or a given kernel) and, with `--run`, run a
//! command in it, print its output and exit with its status.
//!
//! On a host whose KVM cannot boot a stock kernel (PVM, none) the command re-runs
//! itself in the nested sandbox (`--sandbox auto`, the default) and says so first.
//! The kernel and initramfs are checked here before that, so a missing or corrupt
//! file fails at once; the guest image is built (or found) here too, and L1 is told
//! where it is.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::console::Show;
pub use super::options::BootOptions;
use super::{
    run_guest_with, verdict, BootFiles, GuestRun, GuestSpec, ENV_IMAGE_DIR, ENV_KERNEL_IMAGES,
};
use crate::cli::usage;
use base::ByteSize;
use sandbox::{self, needs_sandbox_here, SandboxConfig, SandboxMode};
use vmm::devices::serial::ChannelHook;

/// Longest accepted `--timeout` (a typo guard).
const MAX_TIMEOUT: u64 = 24 * 3600;
/// Extra L1 memory beyond the guest's.
const L1_HEADROOM: u64 = 1 << 30;
/// Extra time for L1 beyond the guest's limit (its own boot, loading the kernel).
const L1_EXTRA_TIME: Duration = Duration::from_secs(120);

/// Check the arguments; user errors exit 2.
pub fn validate(args: &BootOptions) -> anyhow::Result<()> {
    let mem = args.mem.bytes();
    let min = vmm::linux::layout::MIN_MEM;
    if mem < min || mem % 4096 != 0 {
        return Err(usage(format!(
            "--mem must be a multiple of 4K and at least {}, got {}",
            ByteSize(min),
            args.mem
        )));
    }
    if let Some(host) = sandbox::host::host_mem_total_bytes() {
        if mem > host {
            return Err(usage(format!(
                "--mem {} is more than this host's memory ({} MiB)",
                args.mem,
                host >> 20
            )));
        }
    }
    if !(1..=vmm::linux::MAX_VCPUS).contains(&args.cpus) {
        return Err(usage(format!(
            "--cpus must be between 1 and {}, got {}",
            vmm::linux::MAX_VCPUS,
            args.cpus
        )));
    }
    if !(1..=MAX_TIMEOUT).contains(&args.timeout) {
        return Err(usage(format!(
            "--timeout must be between 1 and {MAX_TIMEOUT} seconds, got {}",
            args.timeout
        )));
    }
    if let Some(cmd) = &args.run {
        workloads::image::init::run_param(cmd).map_err(|e| usage(format!("--run: {e}")))?;
    }
    if let Some(l) = args.host_limit {
        if l.bytes() >= mem || l.bytes() < 32 << 20 {
            return Err(usage(format!(
                "--host-limit {l} must be at least 32M and below --mem {}",
                args.mem
            )));
        }
    }
    // Files this host writes: fail here, not after the sandbox has booted.
    for (flag, path) in [("--console", &args.console), ("--channel", &args.channel)] {
        if let Some(p) = path {
            std::fs::File::create(p).map_err(|e| usage(format!("{flag} {}: {e}", p.display())))?;
        }
    }
    Ok(())
}

/// Fail early on a missing or corrupt kernel or initramfs given on the command line.
pub fn check_files(
    kernel: Option<&std::path::Path>,
    initrd: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(k) = kernel {
        vmm::linux::loader::kernel_format(k)?;
    }
    if let Some(i) = initrd {
        vmm::linux::loader::check_initrd(i)?;
    }
    Ok(())
}

/// Re-run this command in the sandbox, with L1 sized for the guest and told where the
/// guest image is. Returns the exit status.
pub fn run_in_sandbox(
    files: &BootFiles,
    guest_mem: u64,
    guest_timeout: Duration,
) -> anyhow::Result<u8> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    run_args_in_sandbox(files, guest_mem, guest_timeout, args)
}

/// [`run_in_sandbox`] with these arguments (after the program name) instead
/// of this command's. A [`sandbox::SandboxError`] is the error's root cause,
/// for callers that handle some (an L1 panic) themselves.
pub fn run_args_in_sandbox(
    files: &BootFiles,
    guest_mem: u64,
    guest_timeout: Duration,
    args: Vec<OsString>,
) -> anyhow::Result<u8> {
    run_args_in_sandbox_to(
        files,
        guest_mem,
        guest_timeout,
        args,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`run_args_in_sandbox`], the command's output going to `stdout` and `stderr`.
pub fn run_args_in_sandbox_to(
    files: &BootFiles,
    guest_mem: u64,
    guest_timeout: Duration,
    args: Vec<OsString>,
    stdout: &mut dyn std::io::Write,
    stderr: &mut dyn std::io::Write,
) -> anyhow::Result<u8> {
    let mut cfg = SandboxConfig::from_env()?;
    cfg.mem = cfg.mem.max(guest_mem + L1_HEADROOM);
    cfg.timeout = cfg
        .timeout
        .max(guest_timeout + sandbox::BOOT_TIMEOUT + L1_EXTRA_TIME)
        .min(sandbox::MAX_TIMEOUT);
    let mut env = sandbox::job::default_env(std::env::vars_os());
    if let Some(dir) = &files.image_dir {
        env.retain(|(k, _)| k != ENV_IMAGE_DIR);
        env.push((ENV_IMAGE_DIR.into(), dir.clone().into_os_string()));
    }
    if !files.kernel_images.is_empty() {
        let mut listed = OsString::new();
        for (spec, dir) in &files.kernel_images {
            listed.push(format!("{spec}="));
            listed.push(dir);
            listed.push("\n");
        }
        env.retain(|(k, _)| k != ENV_KERNEL_IMAGES);
        env.push((ENV_KERNEL_IMAGES.into(), listed));
    }
    cfg.env = Some(env);
    // `--api-sock PATH`: PATH is forwarded out of L1; the re-run listens on SWAPLAB_API_SOCK_INNER.
    cfg.forward_api_sock(&args)?;
    let mut argv: Vec<OsString> = vec![sandbox::reexec::current_exe()?];
    argv.extend(sandbox::reexec::reexec_args(args));
    writeln!(stderr, "swaplab: {}", sandbox::NOTE)?;
    let run = sandbox::run_in_sandbox(&cfg, argv, stdout, stderr)?;
    Ok(run.exit_code)
}

/// Warn when booting a stock kernel here cannot work.
pub fn warn_if_pvm() {
    let (flavour, why) = sandbox::host::kvm_flavour();
    if flavour != sandbox::host::KvmFlavour::Hardware && !sandbox::in_sandbox() {
        eprintln!(
            "swaplab: warning: this host's KVM cannot boot a stock kernel ({why}); expect a timeout (use --sandbox auto)"
        );
    }
}

/// Boot as `args` say: the guest command's status (124 for a timeout); a
/// [`GuestFailure`] carries the status for a guest that failed.
pub fn run(args: &BootOptions) -> anyhow::Result<u8> {
    validate(args)?;
    seccomp::set_enabled(args.seccomp);
    check_files(args.kernel.as_deref(), args.initrd.as_deref())?;
    let files = BootFiles::resolve(
        args.kernel.as_deref(),
        args.initrd.as_deref(),
        args.cmdline.as_deref(),
        args.bzimage,
    )?;
    let timeout = Duration::from_secs(args.timeout);
    if args.root_disk {
        // Missing or damaged: said here, before the guest (or L1) boots.
        workloads::image::rootfs::find(None)?;
    }
    if needs_sandbox_here(args.sandbox) {
        return run_in_sandbox(&files, args.mem.bytes(), timeout);
    }
    if args.sandbox == SandboxMode::Never {
        warn_if_pvm();
    }
    if args.api_sock.is_some() || args.balloon || args.host_limit.is_some() || args.root_disk {
        return crate::run::boot::boot_with_devices(args);
    }
    let spec = GuestSpec {
        files,
        run: args.run.clone(),
        mem: args.mem.bytes(),
        cpus: args.cpus,
        timeout,
        null_devices: args.null_device.clone(),
        channel: args.channel.is_some(),
    };
    let show = if args.run.is_some() && !args.boot_log {
        Show::Command
    } else {
        Show::All
    };
    let hook = args.channel.as_deref().map(channel_file).transpose()?;
    let run = run_guest_with(
        &spec,
        show,
        Box::new(std::io::stdout()),
        args.console.as_deref(),
        hook,
    )
    .context("booting the guest")?;
    if args.verbose {
        eprint!("{}", summary(&spec, &run));
    }
    verdict(&run, args.run.is_some()).map_err(anyhow::Error::from)
}

/// A channel hook writing each line (and a newline) to a new file at `path`, one
/// write per line, unbuffered, so the file is complete however the run ends. A failed
/// write is reported once on stderr; later lines are dropped.
pub fn channel_file(path: &Path) -> anyhow::Result<ChannelHook> {
    let mut file = std::fs::File::create(path)
        .with_context(|| format!("cannot create channel file {}", path.display()))?;
    let shown = path.display().to_string();
    let mut failed = false;
    Ok(Box::new(move |line: &str| {
        if failed {
            return;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if let Err(e) = file.write_all(&buf) {
            failed = true;
            eprintln!("swaplab: writing channel file {shown}: {e}; later lines are lost");
        }
    }))
}

/// Boot times, outcome and exits, for `--verbose`.
pub fn summary(spec: &GuestSpec, run: &GuestRun) -> String {
    let secs = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()));
    let mut s = format!(
        "swaplab: {} MiB, {} vCPUs, kernel {}\nswaplab: VM built and loaded in {}; outcome {:?}; /init after {} (guest uptime {}), end after {}\n",
        spec.mem >> 20,
        spec.cpus,
        spec.files.kernel.display(),
        secs(Some(Duration::from_nanos(run.report.setup_ns))),
        run.report.outcome,
        secs(run.to_init()),
        run.marks
            .init_uptime
            .map_or("-".into(), |u| format!("{u:.2} s")),
        secs(Some(run.total())),
    );
    if let Some(vm) = &run.report.vm {
        let exits: Vec<String> = vm
            .exits
            .by_reason
            .iter()
            .map(|(r, c)| format!("{} {}", r.name(), c.count))
            .collect();
        let unclaimed: u64 = vm.vcpus.iter().map(|v| v.unclaimed_accesses).sum();
        s.push_str(&format!(
            "swaplab: userspace exits: {}; unclaimed accesses {unclaimed}; console {} bytes\n",
            exits.join(", "),
            run.report.console_bytes
        ));
    }
    if let Some(c) = &run.channel {
        s.push_str(&format!(
            "swaplab: result channel: {} lines, {} bytes, {} cut\n",
            c.lines, c.bytes, c.cut_lines
        ));
    }
    for v in &run.report.virtio {
        s.push_str(&format!(
            "swaplab: virtio {} (type {}, {:#x}, GSI {}): activated {}, {:?}\n",
            v.name, v.device_type, v.base, v.gsi, v.activated, v.stats
        ));
    }
    s
}

//! `swaplab boot`: boot the guest image (or a given kernel) and, with `--run`, run a
//! command in it.

use std::path::PathBuf;
use std::process::ExitCode;

use base::ByteSize;
use runner::boot::cmd::{self, BootOptions};
use runner::boot::GuestFailure;
use runner::cli::UsageError;

use crate::sandbox_cmd::SandboxFlag;

/// `swaplab boot`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct BootArgs {
    /// Kernel to boot: an ELF vmlinux with a PVH entry, or a bzImage (default: the
    /// guest image's vmlinux).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// initramfs (default: the guest image's).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Boot the guest image's bzImage instead of its PVH vmlinux.
    #[arg(long, conflicts_with = "kernel")]
    pub bzimage: bool,
    /// Guest RAM.
    #[arg(long, value_name = "SIZE", default_value = "512M")]
    pub mem: ByteSize,
    /// vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Kernel command line (default: the image's, `console=ttyS0 quiet panic=-1 pci=off`).
    #[arg(long, value_name = "ARGS")]
    pub cmdline: Option<String>,
    /// Run this shell command in the guest, print its output and exit with its status.
    #[arg(long, value_name = "COMMAND")]
    pub run: Option<String>,
    /// Stop a guest that has not powered off after this many seconds (exit status 124).
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub timeout: u64,
    /// Write the whole guest console to this file.
    #[arg(long, value_name = "FILE")]
    pub console: Option<PathBuf>,
    /// Give the guest a result channel (`/dev/ttyS1`; guest programs write their JSON
    /// lines there, `SWAPLAB_CHANNEL` names it) and write every line it receives to
    /// this file.
    #[arg(long, value_name = "FILE")]
    pub channel: Option<PathBuf>,
    /// With --run, show the whole console (kernel messages included), not only the
    /// command's output.
    #[arg(long)]
    pub boot_log: bool,
    /// Print boot times and VM exits to stderr at the end.
    #[arg(short, long)]
    pub verbose: bool,
    /// Serve the control socket here while the guest runs (`swaplab ctl --sock PATH`:
    /// `balloon set`, `balloon stats`, `swapper status`, `vm stats`). Works the same
    /// when the guest runs in the nested sandbox (the socket is forwarded).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Give the guest a virtio-balloon (deflate-on-OOM, stats every second); its
    /// target is set through the control socket.
    #[arg(long)]
    pub balloon: bool,
    /// Host-swap guest RAM above this resident limit (the userfaultfd swapper).
    #[arg(long, value_name = "SIZE")]
    pub host_limit: Option<ByteSize>,
    /// Run the command on the guest root disk (Debian bookworm with sysbench, pbzip2,
    /// dbench, redis, gcc, make; `swaplab image --root-disk` builds it), a private
    /// copy-on-write view per boot.
    #[arg(long)]
    pub root_disk: bool,
    /// Attach a do-nothing virtio device of this type (repeatable; for tests).
    #[arg(long, value_name = "TYPE", hide = true)]
    pub null_device: Vec<u32>,
    #[command(flatten)]
    pub sandbox: SandboxFlag,
    #[command(flatten)]
    pub seccomp: crate::cli::SeccompFlag,
}

impl BootArgs {
    /// The runner's options.
    pub fn options(&self) -> BootOptions {
        BootOptions {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            bzimage: self.bzimage,
            mem: self.mem,
            cpus: self.cpus,
            cmdline: self.cmdline.clone(),
            run: self.run.clone(),
            timeout: self.timeout,
            console: self.console.clone(),
            channel: self.channel.clone(),
            boot_log: self.boot_log,
            verbose: self.verbose,
            api_sock: self.api_sock.clone(),
            balloon: self.balloon,
            host_limit: self.host_limit,
            root_disk: self.root_disk,
            null_device: self.null_device.clone(),
            sandbox: self.sandbox.mode(),
            seccomp: self.seccomp.enabled(),
        }
    }
}

/// Run `swaplab boot`: the guest command's status, or an error and 1 (2 for usage
/// errors, 124 for a timeout).
pub fn main(args: &BootArgs) -> ExitCode {
    match cmd::run(&args.options()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = if e.downcast_ref::<UsageError>().is_some() {
                2
            } else if let Some(f) = e.downcast_ref::<GuestFailure>() {
                f.status
            } else {
                1
            };
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("swaplab: {}", chain.join(": "));
            ExitCode::from(code)
        }
    }
}

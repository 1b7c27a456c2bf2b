//! What `swaplab boot` is asked for, as plain options (the command line builds them).

use std::path::PathBuf;

use base::ByteSize;
use sandbox::SandboxMode;

/// What `swaplab boot` boots and how: the guest, its devices, where it runs.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Kernel to boot: an ELF vmlinux with a PVH entry, or a bzImage (default: the
    /// guest image's vmlinux).
    pub kernel: Option<PathBuf>,
    /// initramfs (default: the guest image's).
    pub initrd: Option<PathBuf>,
    /// Boot the guest image's bzImage instead of its PVH vmlinux.
    pub bzimage: bool,
    /// Guest RAM.
    pub mem: ByteSize,
    /// vCPUs.
    pub cpus: u32,
    /// Kernel command line (default: the image's, `console=ttyS0 quiet panic=-1 pci=off`).
    pub cmdline: Option<String>,
    /// Run this shell command in the guest, print its output and exit with its status.
    pub run: Option<String>,
    /// Stop a guest that has not powered off after this many seconds (exit status 124).
    pub timeout: u64,
    /// Write the whole guest console to this file.
    pub console: Option<PathBuf>,
    /// Give the guest a result channel (`/dev/ttyS1`; guest programs write their JSON
    /// lines there, `SWAPLAB_CHANNEL` names it) and write every line it receives to
    /// this file.
    pub channel: Option<PathBuf>,
    /// With --run, show the whole console (kernel messages included), not only the
    /// command's output.
    pub boot_log: bool,
    /// Print boot times and VM exits to stderr at the end.
    pub verbose: bool,
    /// Serve the control socket here while the guest runs (`swaplab ctl --sock PATH`:
    /// `balloon set`, `balloon stats`, `swapper status`, `vm stats`). Works the same
    /// when the guest runs in the nested sandbox (the socket is forwarded).
    pub api_sock: Option<PathBuf>,
    /// Give the guest a virtio-balloon (deflate-on-OOM, stats every second); its
    /// target is set through the control socket.
    pub balloon: bool,
    /// Host-swap guest RAM above this resident limit (the userfaultfd swapper).
    pub host_limit: Option<ByteSize>,
    /// Run the command on the guest root disk (Debian with the applications;
    /// a copy-on-write view, so nothing it writes stays).
    pub root_disk: bool,
    /// Attach a do-nothing virtio device of this type (repeatable; for tests).
    pub null_device: Vec<u32>,
    /// Where the guest runs.
    pub sandbox: SandboxMode,
    /// Run the VMM's threads under their seccomp filters (`--no-seccomp` turns
    /// this off).
    pub seccomp: bool,
}

impl BootOptions {
    /// The guest image booted with `mem`, `cpus` and a time limit, no command,
    /// devices or console file; callers set what they need on top.
    pub fn guest_image(mem: ByteSize, cpus: u32, timeout: u64, sandbox: SandboxMode) -> Self {
        Self {
            kernel: None,
            initrd: None,
            bzimage: false,
            mem,
            cpus,
            cmdline: None,
            run: None,
            timeout,
            console: None,
            channel: None,
            boot_log: false,
            verbose: false,
            api_sock: None,
            balloon: false,
            root_disk: false,
            host_limit: None,
            null_device: Vec::new(),
            sandbox,
            seccomp: true,
        }
    }
}

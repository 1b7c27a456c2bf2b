//! The L1 image: a Debian kernel (by default bookworm-backports', see
//! [`default_kernel_source`]; fetched and unpacked into the cache by the guest
//! image's kernel code) and the sandbox's own small initramfs (static busybox,
//! the modules below taken from that kernel's package, and `init.sh`), cached
//! in `<cache>/sandbox/l1-<key>.cpio` where `<key>` hashes every input.

use std::path::{Path, PathBuf};

use workloads::image::busybox::{self, BusyboxError};
use workloads::image::cache::{self, CacheError};
use workloads::image::initramfs::{InitramfsBuilder, InitramfsError};
use workloads::image::kernel::{self, KernelError, KernelFiles, KernelSource};
use workloads::image::modules::{self, ModulePath, ModulesError};

/// The L1 `/init`.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Modules L1 loads, in this order (each with its dependencies first).
/// virtio_console comes early: its named ports appear asynchronously, and the
/// modules loaded after it give them time to.
pub const L1_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_console",
    "qemu_fw_cfg",
    "9pnet_virtio",
    "9p",
];

/// Modules loaded at the same time as [`L1_MODULES`] (L1 has two vCPUs, and
/// module loading is slow under TCG), unless they share a dependency with them.
/// `zram`: the kernel host swapper's swap device (`host.swapper = "kernel"`);
/// `virtio_blk`, `ext4` and the `crc32c` ext4 mounts with: the scratch disk
/// its swap files go on
/// ([`crate::scratch`]); `veth` and `sch_netem` (no dependencies): emulated
/// distance with `tc netem` (`swaplab bench far-memory --distance netem`).
pub const L1_PARALLEL_MODULES: &[&str] = &[
    "kvm_amd",
    "zram",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "veth",
    "sch_netem",
];

/// busybox applets `init.sh` uses.
pub const APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "insmod", "cat", "echo", "sleep", "env", "chroot", "sync", "poweroff",
    "reboot", "kill", "ip",
];

/// Bump when the layout of the initramfs changes in a way the inputs do not show.
const FORMAT: u32 = 1;

/// Errors preparing the L1 image.
#[derive(Debug, thiserror::Error)]
pub enum L1ImageError {
    /// Cache directory trouble.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The kernel could not be fetched.
    #[error("L1 kernel")]
    Kernel(#[from] KernelError),
    /// A module is missing from the kernel package.
    #[error("L1 kernel modules")]
    Modules(#[from] ModulesError),
    /// busybox is missing or unsuitable.
    #[error("busybox for the L1 initramfs")]
    Busybox(#[from] BusyboxError),
    /// busybox lacks applets init.sh needs.
    #[error("{path} lacks the applet(s) {missing:?} the sandbox init needs")]
    Applets {
        /// busybox.
        path: PathBuf,
        /// What is missing.
        missing: Vec<String>,
    },
    /// Writing the archive failed.
    #[error("building the L1 initramfs")]
    Initramfs(#[from] InitramfsError),
}

/// A kernel and initramfs ready for QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1Image {
    /// Uncompressed ELF vmlinux (booted through its PVH entry).
    pub vmlinux: PathBuf,
    /// The initramfs (uncompressed cpio: unpacking is the fastest thing under TCG).
    pub initramfs: PathBuf,
    /// Kernel release.
    pub kernel_version: String,
    /// True when this call built the initramfs.
    pub built: bool,
}

/// Environment variable choosing L1's kernel: `host` (the host's apt sources:
/// bookworm's 6.1, the guest image's kernel) or a suite of Debian's archive
/// (default [`kernel::BACKPORTS_SUITE`]).
pub const ENV_KERNEL: &str = "SWAPLAB_SANDBOX_KERNEL";

/// L1's kernel by default: Debian's `linux-image-amd64` from bookworm-backports
/// (6.12), because the host swapper needs userfaultfd features that 6.1 lacks
/// (`UFFD_FEATURE_MOVE`, Linux 6.8; `POISON`, 6.6).
pub fn default_kernel_source() -> KernelSource {
    KernelSource::debian_suite(kernel::BACKPORTS_SUITE)
}

/// Parse a [`ENV_KERNEL`] value: `host`, or a suite name (`bookworm-backports`).
pub fn parse_kernel_source(value: &str) -> Option<KernelSource> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    match value {
        "host" => Some(KernelSource::Host),
        _ if ok => Some(KernelSource::debian_suite(value)),
        _ => None,
    }
}

fn say(msg: &str) {
    eprintln!("swaplab sandbox: {msg}");
}

/// A cached kernel from `source` if there is one (no apt query: that takes
/// time, and for a suite it may need the network), else fetch it.
pub fn kernel(cache_dir: &Path, source: &KernelSource) -> Result<KernelFiles, KernelError> {
    match kernel::cached_kernels_from(cache_dir, source, kernel::DEFAULT_METAPACKAGE)
        .into_iter()
        .next()
    {
        Some(k) => Ok(k),
        None => {
            kernel::ensure_kernel_from(cache_dir, source, kernel::DEFAULT_METAPACKAGE, Some(say))
        }
    }
}

/// The modules L1 loads, dependencies first, each once: a list loaded in
/// order, and a list loaded in order alongside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLists {
    /// Loaded one after another.
    pub main: Vec<ModulePath>,
    /// Loaded one after another, at the same time as `main`.
    pub parallel: Vec<ModulePath>,
}

fn closure_of(
    modules_dir: &Path,
    names: &[&str],
    skip: &[ModulePath],
) -> Result<Vec<ModulePath>, ModulesError> {
    let mut list: Vec<ModulePath> = Vec::new();
    for name in names {
        for m in modules::closure(modules_dir, &[name])? {
            if !list.iter().chain(skip).any(|x| x.name == m.name) {
                list.push(m);
            }
        }
    }
    Ok(list)
}

/// Resolve [`L1_MODULES`] and [`L1_PARALLEL_MODULES`] in `modules_dir`.
pub fn module_lists(modules_dir: &Path) -> Result<ModuleLists, ModulesError> {
    let mut main = closure_of(modules_dir, L1_MODULES, &[])?;
    let all_parallel = closure_of(modules_dir, L1_PARALLEL_MODULES, &[])?;
    let parallel = closure_of(modules_dir, L1_PARALLEL_MODULES, &main)?;
    if parallel.len() == all_parallel.len() {
        return Ok(ModuleLists { main, parallel });
    }
    // A shared dependency: load everything in one sequence.
    main.extend(parallel);
    Ok(ModuleLists {
        main,
        parallel: Vec::new(),
    })
}

/// The cache key of an initramfs built from these inputs.
pub fn key(kernel: &KernelFiles, busybox_sha256: &str, mods: &ModuleLists) -> String {
    let mut text = format!(
        "format={FORMAT}\nkernel={} {} {}\nbusybox={busybox_sha256}\n",
        kernel.record.package.name, kernel.record.package.version, kernel.version
    );
    for m in &mods.main {
        text.push_str(&format!("module={}\n", m.rel));
    }
    for m in &mods.parallel {
        text.push_str(&format!("parallel-module={}\n", m.rel));
    }
    text.push_str(INIT_SCRIPT);
    cache::sha256_hex(text.as_bytes())[..16].to_string()
}

/// Make sure the L1 kernel (from `source`) and initramfs exist in `cache_dir` and return them.
pub fn ensure_l1_image(cache_dir: &Path, source: &KernelSource) -> Result<L1Image, L1ImageError> {
    let k = kernel(cache_dir, source)?;
    let bb = busybox::find(
        std::env::var_os("SWAPLAB_BUSYBOX")
            .as_deref()
            .map(Path::new),
    )?;
    let names: Vec<&str> = bb
        .applets
        .iter()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .collect();
    let missing: Vec<String> = APPLETS
        .iter()
        .filter(|a| !names.contains(a))
        .map(|a| a.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(L1ImageError::Applets {
            path: bb.path,
            missing,
        });
    }
    let mods = module_lists(&k.modules_dir)?;
    let dir = cache_dir.join("sandbox");
    let path = dir.join(format!("l1-{}.cpio", key(&k, &bb.sha256, &mods)));
    let image = |built| L1Image {
        vmlinux: k.vmlinux.clone(),
        initramfs: path.clone(),
        kernel_version: k.version.clone(),
        built,
    };
    if path.is_file() {
        return Ok(image(false));
    }
    let _lock = cache::lock(&dir)?;
    if path.is_file() {
        return Ok(image(false)); // built by someone else while we waited
    }
    let mut b = InitramfsBuilder::new();
    b.add_base_layout()?;
    b.add_dir("newroot", 0o755)?;
    b.add_file(
        "bin/busybox",
        0o755,
        &std::fs::read(&bb.path).map_err(CacheError::io("reading", &bb.path))?,
    )?;
    for applet in APPLETS {
        b.add_symlink(&format!("bin/{applet}"), "busybox")?;
    }
    for (list, file) in [
        (&mods.main, "etc/swaplab-modules"),
        (&mods.parallel, "etc/swaplab-modules-parallel"),
    ] {
        let mut order = String::new();
        for m in list {
            let data = m.read()?;
            b.add_file(
                &format!("lib/modules/{}.ko", m.name),
                0o644,
                strip_signature(&data),
            )?;
            order.push_str(&m.name);
            order.push('\n');
        }
        b.add_file(file, 0o644, order.as_bytes())?;
    }
    b.add_file("init", 0o755, INIT_SCRIPT.as_bytes())?;
    cache::write_atomic(&path, &b.finish()?)?;
    prune(&dir, KEEP);
    Ok(image(true))
}

/// The marker that ends a signed module.
const SIG_MARKER: &[u8] = b"~Module signature appended~\n";
/// `struct module_signature`: 12 bytes, its last 4 the signature length (big-endian).
const SIG_INFO_LEN: usize = 12;

/// A module without its appended signature. The kernel checks signatures it
/// finds (hashing the whole module, slow under TCG) but Debian's does not
/// require them, so L1 loads unsigned modules faster (and taints itself, which
/// is harmless here). Unsigned or malformed input is returned unchanged.
pub fn strip_signature(ko: &[u8]) -> &[u8] {
    let Some(body) = ko.strip_suffix(SIG_MARKER) else {
        return ko;
    };
    let Some(info_start) = body.len().checked_sub(SIG_INFO_LEN) else {
        return ko;
    };
    let info = &body[info_start..];
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    match info_start.checked_sub(sig_len) {
        Some(end) => &ko[..end],
        None => ko,
    }
}

/// How many L1 initramfs files the cache keeps (the newest).
const KEEP: usize = 3;

/// Remove all but the `keep` newest `l1-*.cpio` files (best effort; call with the lock held).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("l1-") && n.ends_with(".cpio")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, path) in files.into_iter().skip(keep) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stripped() {
        let mut ko = b"\x7fELF-module-body".to_vec();
        let body_len = ko.len();
        ko.extend_from_slice(b"SIGNATURE");
        ko.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        ko.extend_from_slice(SIG_MARKER);
        assert_eq!(strip_signature(&ko), &ko[..body_len]);
        assert_eq!(strip_signature(b"unsigned"), b"unsigned");
        let mut bad = vec![0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0];
        bad.extend_from_slice(SIG_MARKER);
        assert_eq!(strip_signature(&bad), &bad[..]);
    }

    #[test]
    fn init_script_is_valid_sh() {
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", INIT_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn init_script_uses_only_installed_applets() {
        for line in INIT_SCRIPT.lines().map(str::trim) {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            let looks_like_command = first.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && ![
                    "export", "say", "fail", "stage", "off", "exit", "while", "do", "done", "for",
                    "case", "esac", "tries", "rc", "job", "prefix", "if", "then", "fi", "break",
                    "continue", "st", "read", "exec", "load", "wait",
                ]
                .contains(&first);
            if looks_like_command && !first.is_empty() {
                assert!(
                    APPLETS.contains(&first),
                    "init.sh runs {first:?}, not in APPLETS"
                );
            }
        }
    }
}

//! L1's scratch disk: a virtio disk QEMU gives every L1 (a sparse file on the
//! host, see `qemu::scratch_disk`), for what needs a real disk file system
//! inside L1, whose root is the host's over 9p and whose `/dev/shm` is tmpfs,
//! neither of which can hold a swap file. The kernel host swapper's
//! `store = "file"` formats it (ext4, on first use) and puts its swap file
//! there ([`swapfile_dir`]).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The disk's size (sparse on the host: only what L1 writes takes room).
pub const DISK_BYTES: u64 = 4 << 30;

/// Its virtio-blk serial, by which L1 finds it.
pub const SERIAL: &str = "swaplab-scratch";

/// Where L1 mounts it.
pub const MOUNT: &str = "/run/swaplab-scratch";

/// The scratch disk's device node in L1 (`/dev/vdX` whose serial is [`SERIAL`]).
fn device() -> Option<PathBuf> {
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|e| {
            let serial = std::fs::read_to_string(e.path().join("serial")).ok()?;
            (serial.trim() == SERIAL).then(|| Path::new("/dev").join(e.file_name()))
        })
}

fn mounted(at: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(at))
}

/// In L1: a directory on a disk file system that can hold swap files — the
/// scratch disk, formatted ext4 (without a journal: it lives as long as L1)
/// and mounted on [`MOUNT`] the first time it is asked for.
pub fn swapfile_dir() -> Result<PathBuf, String> {
    if mounted(MOUNT) {
        return Ok(PathBuf::from(MOUNT));
    }
    let dev = device().ok_or_else(|| {
        format!("L1 has no scratch disk (no /sys/block/*/serial reads {SERIAL:?})")
    })?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal", "-E"])
        .arg("lazy_itable_init=1,nodiscard")
        .arg(&dev)
        .output()
        .map_err(|e| format!("running mkfs.ext4 on {}: {e}", dev.display()))?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.ext4 {} failed ({}): {}",
            dev.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::create_dir_all(MOUNT).map_err(|e| format!("creating {MOUNT}: {e}"))?;
    nix::mount::mount(
        Some(dev.as_path()),
        MOUNT,
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mounting {} on {MOUNT}: {e}", dev.display()))?;
    Ok(PathBuf::from(MOUNT))
}

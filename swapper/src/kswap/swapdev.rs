//! Swap device guard: zram or a swap file, formatted and enabled; disabled
//! and removed on drop.

use super::error::{io_err, KswapError};
use super::names::PREFIX;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const PAGE: usize = 4096;
const SWAP_FLAG_PREFER: i32 = 0x8000;
/// Priority of swaplab swap devices (used before any lower-priority swap).
const PRIORITY: i32 = 100;
const MAGIC: &[u8] = b"SWAPSPACE2";
/// File name prefix of swap files.
pub const SWAPFILE_PREFIX: &str = "swaplab-swapfile-";

/// Which kind of swap device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwapKind {
    /// A compressed RAM disk (`zram`), built into the kernel here.
    Zram,
    /// A swap file created in `dir` (a file system that supports swap
    /// files, e.g. ext4; not tmpfs).
    File {
        /// Directory for the file.
        dir: PathBuf,
    },
}

#[derive(Debug)]
enum Backing {
    Zram { id: u32, hot_added: bool },
    File,
}

/// An enabled swap device; `swapoff` and removal on drop.
#[derive(Debug)]
pub struct SwapDevice {
    path: PathBuf,
    backing: Backing,
    bytes: u64,
    enabled: bool,
}

/// The swap label this process writes (`swaplab-<pid>`).
pub(crate) fn own_label() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// A version-1 swap header page for a `bytes`-long device.
pub(crate) fn swap_header(bytes: u64, label: &str) -> Vec<u8> {
    let mut h = vec![0u8; PAGE];
    let last_page = (bytes / PAGE as u64 - 1) as u32;
    h[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    h[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    // nr_badpages = 0; uuid from pid and time (uniqueness only matters to
    // tools that look devices up by uuid).
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let uuid = (t ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    h[1036..1052].copy_from_slice(&uuid);
    let l = label.as_bytes();
    h[1052..1052 + l.len().min(16)].copy_from_slice(&l[..l.len().min(16)]);
    h[PAGE - MAGIC.len()..].copy_from_slice(MAGIC);
    h
}

/// The label of the swap header at the start of `path`, if it has one.
pub(crate) fn read_label(path: &Path) -> Option<String> {
    let mut buf = vec![0u8; PAGE];
    let f = fs::File::open(path).ok()?;
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 0).ok()?;
    if &buf[PAGE - MAGIC.len()..] != MAGIC {
        return None;
    }
    let l = &buf[1052..1068];
    let end = l.iter().position(|&b| b == 0).unwrap_or(16);
    Some(String::from_utf8_lossy(&l[..end]).into_owned())
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

pub(crate) fn swapoff(path: &Path) -> std::io::Result<()> {
    let c = cpath(path);
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::swapoff(c.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Active swaps from `/proc/swaps`: (path, size KiB, used KiB).
pub(crate) fn active_swaps() -> Vec<(PathBuf, u64, u64)> {
    fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                PathBuf::from(f.first()?),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

/// Resets zram device `id` and removes it if `remove`.
pub(crate) fn release_zram(id: u32, remove: bool) {
    let _ = fs::write(format!("/sys/block/zram{id}/reset"), "1");
    if remove && id != 0 {
        let _ = fs::write("/sys/class/zram-control/hot_remove", id.to_string());
    }
}

impl SwapDevice {
    /// Creates and enables a swap device of `bytes`.
    pub fn create(kind: SwapKind, bytes: u64) -> Result<Self, KswapError> {
        let bytes = bytes - bytes % PAGE as u64;
        if bytes < 10 * PAGE as u64 {
            return Err(KswapError::TooSmall(bytes));
        }
        match kind {
            SwapKind::Zram => Self::zram(bytes),
            SwapKind::File { dir } => Self::file(&dir, bytes),
        }
    }

    fn zram(bytes: u64) -> Result<Self, KswapError> {
        let (id, hot_added) = match fs::read_to_string("/sys/class/zram-control/hot_add") {
            Ok(s) => (
                s.trim()
                    .parse::<u32>()
                    .map_err(|e| KswapError::NoZram(format!("hot_add said {s:?}: {e}")))?,
                true,
            ),
            Err(e) => {
                let free = fs::read_to_string("/sys/block/zram0/disksize")
                    .map(|s| s.trim() == "0")
                    .unwrap_or(false);
                if !free {
                    return Err(KswapError::NoZram(format!(
                        "no hot_add ({e}) and zram0 in use"
                    )));
                }
                (0, false)
            }
        };
        let path = PathBuf::from(format!("/dev/zram{id}"));
        // From here on, dropping `dev` releases the zram device.
        let mut dev = Self {
            path,
            backing: Backing::Zram { id, hot_added },
            bytes,
            enabled: false,
        };
        let sys = PathBuf::from(format!("/sys/block/zram{id}"));
        // lz4 like the swapper's lz4 store when the kernel has it.
        let _ = fs::write(sys.join("comp_algorithm"), "lz4");
        let ds = sys.join("disksize");
        fs::write(&ds, bytes.to_string()).map_err(io_err("writing", &ds))?;
        // devtmpfs creates the node asynchronously after hot_add.
        for _ in 0..2000 {
            if dev.path.exists() {
                break;
            }
            std::thread::yield_now();
        }
        dev.format_and_enable()?;
        Ok(dev)
    }

    fn file(dir: &Path, bytes: u64) -> Result<Self, KswapError> {
        let pid = std::process::id();
        let mut n = 0;
        let (file, path) = loop {
            let p = dir.join(format!("{SWAPFILE_PREFIX}{pid}-{n}.swap"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
            {
                Ok(f) => break (f, p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(io_err("creating swap file", &p)(e)),
            }
        };
        let mut dev = Self {
            path,
            backing: Backing::File,
            bytes,
            enabled: false,
        };
        // Swap files must not have holes: allocate every block.
        // SAFETY: fallocate on the descriptor we just opened.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
        if r != 0 {
            return Err(io_err("allocating", &dev.path)(
                std::io::Error::last_os_error(),
            ));
        }
        let _ = fs::set_permissions(&dev.path, fs::Permissions::from_mode(0o600));
        drop(file);
        dev.format_and_enable()?;
        Ok(dev)
    }

    fn format_and_enable(&mut self) -> Result<(), KswapError> {
        let mut f = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(io_err("opening", &self.path))?;
        f.write_all(&swap_header(self.bytes, &own_label()))
            .and_then(|_| f.sync_all())
            .map_err(io_err("writing swap header to", &self.path))?;
        drop(f);
        let c = cpath(&self.path);
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the
        // call.
        if unsafe { libc::swapon(c.as_ptr(), SWAP_FLAG_PREFER | PRIORITY) } != 0 {
            return Err(io_err("swapon", &self.path)(std::io::Error::last_os_error()));
        }
        self.enabled = true;
        Ok(())
    }

    /// Device node or file path (as listed in `/proc/swaps`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is a swap file (rather than a zram device).
    pub fn is_file(&self) -> bool {
        matches!(self.backing, Backing::File)
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of swap in use right now.
    pub fn used_bytes(&self) -> u64 {
        active_swaps()
            .into_iter()
            .find(|(p, _, _)| p == &self.path)
            .map_or(0, |(_, _, used)| used * 1024)
    }
}

impl Drop for SwapDevice {
    fn drop(&mut self) {
        if self.enabled {
            if let Err(e) = swapoff(&self.path) {
                tracing::error!("kswap: swapoff {}: {e}", self.path.display());
            }
        }
        match self.backing {
            Backing::Zram { id, hot_added } => release_zram(id, hot_added),
            Backing::File => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::error!("kswap: removing {}: {e}", self.path.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_and_label_round_trip() {
        let h = swap_header(64 << 20, "swaplab-4242");
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert_eq!(u32::from_le_bytes(h[1024..1028].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(h[1028..1032].try_into().unwrap()), 16383);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hdr");
        fs::write(&p, &h).unwrap();
        assert_eq!(read_label(&p).as_deref(), Some("swaplab-4242"));
        fs::write(&p, vec![0u8; PAGE]).unwrap();
        assert_eq!(read_label(&p), None);
    }
}

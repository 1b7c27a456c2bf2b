//! The guest's root disk: a Debian (bookworm) userland with the applications
//! the literature's experiments ran (sysbench, pbzip2, dbench, redis, a C
//! compiler and make), as an ext4 filesystem image the guest mounts as its
//! root from a virtio-blk disk, so its page cache is backed by a real disk.
//!
//! Built with `mmdebstrap` (the `essential` variant plus [`PACKAGES`], from
//! Debian's archive, nothing installed on the host) into a directory, then
//! `mkfs.ext4 -d` into a sparse image of [`DISK_BYTES`]; the directory is
//! removed. Cached like the guest image, under
//!
//! ```text
//! <cache>/rootfs/<key>/root.img        the filesystem image (never written by a run)
//! <cache>/rootfs/<key>/manifest.json   what it holds (RootfsManifest)
//! ```
//!
//! where `<key>` hashes the inputs (schema, suite, archive, package list,
//! size). Runs never write the cached image: each run's disk is a
//! copy-on-write view of it (`vmm::virtio::blk::overlay`). The guest
//! programs are not on the disk: `/init` bind-mounts the initramfs's
//! `swaplab-guest` over the placeholder [`GUEST_PROGRAM`], so a new guest
//! program does not rebuild the root disk.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::image::apt::DEBIAN_ARCHIVE;
use crate::image::cache::{self, CacheError};
use crate::image::tools::{self, Tool, ToolError};

/// Root-disk format version; part of the key.
pub const SCHEMA: u32 = 1;
/// The Debian suite of the userland.
pub const SUITE: &str = "bookworm";
/// Packages on top of the `essential` variant: the applications, what they
/// need to run and to be checked, and busybox.
pub const PACKAGES: &[&str] = &[
    "sysbench",
    "pbzip2",
    "xz-utils",
    "dbench",
    "redis-server",
    "redis-tools",
    "gcc",
    "libc6-dev",
    "make",
    "procps",
    "kmod",
    "busybox-static",
];
/// Size of the filesystem (sparse: only what is written takes host disk).
/// Room for the applications' data: fileio sets, dbench clients, a compile.
pub const DISK_BYTES: u64 = 4 << 30;
/// The filesystem's label; `/init` also checks it.
pub const LABEL: &str = "swaplab-root";
/// The image file in a root-disk directory.
pub const IMAGE: &str = "root.img";
/// The manifest file in a root-disk directory.
pub const MANIFEST: &str = "manifest.json";
/// Where the guest programs appear on the root disk (an empty file the
/// initramfs's program is bind-mounted over).
pub const GUEST_PROGRAM: &str = "/usr/local/bin/swaplab-guest";
/// How many root disks the cache keeps.
pub const KEEP: usize = 2;

/// `mmdebstrap`.
pub const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};
/// `mkfs.ext4`.
pub const MKFS_EXT4: Tool = Tool {
    program: "mkfs.ext4",
    package: "e2fsprogs",
};

/// Errors building or loading the root disk.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Cache directory trouble.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A build step failed.
    #[error("building the guest root disk: {step}")]
    Tool {
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: ToolError,
    },
    /// The manifest could not be read or written.
    #[error("{path}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The root disk has not been built.
    #[error("the guest root disk is not built ({dir} has none): build it with `swaplab image --root-disk` (or `bash scripts/setup.sh`)")]
    NotBuilt {
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A directory without its image, or an image that is not an ext4
    /// filesystem of the recorded size.
    #[error("{path}: {why} (rebuild it with `swaplab image --force`)")]
    Corrupt {
        /// The image or directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// A package on the disk, with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Debian version.
    pub version: String,
}

/// `manifest.json` of a root disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootfsManifest {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The input hash naming the directory.
    pub key: String,
    /// [`SUITE`].
    pub suite: String,
    /// The archive it came from.
    pub archive: String,
    /// The packages asked for, with the versions installed.
    pub packages: Vec<Package>,
    /// How many packages the disk holds in all.
    pub installed: usize,
    /// The image's size in bytes (the filesystem's).
    pub bytes: u64,
    /// Host disk the image takes (it is sparse).
    pub allocated: u64,
    /// Seconds the build took.
    pub build_s: f64,
}

/// A built root disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rootfs {
    /// The image file (read-only for runs).
    pub image: PathBuf,
    /// True when this call built it.
    pub built: bool,
    /// The manifest.
    pub manifest: RootfsManifest,
}

/// ext4's superblock magic, at byte 1080 of the image.
const EXT4_MAGIC: u16 = 0xEF53;
const MAGIC_OFFSET: u64 = 1024 + 56;

impl Rootfs {
    /// Load the root disk in `dir`, checking that its image is there, has
    /// the recorded size and starts with an ext4 superblock.
    pub fn load(dir: &Path) -> Result<Rootfs, RootfsError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(CacheError::io("reading", &path))?;
        let manifest: RootfsManifest =
            serde_json::from_str(&text).map_err(|source| RootfsError::Manifest { path, source })?;
        let image = dir.join(IMAGE);
        check_image(&image, manifest.bytes)?;
        Ok(Rootfs {
            image,
            built: false,
            manifest,
        })
    }
}

/// Checks that `image` is a regular file of `bytes` bytes with an ext4
/// superblock.
pub fn check_image(image: &Path, bytes: u64) -> Result<(), RootfsError> {
    use std::os::unix::fs::FileExt;
    let corrupt = |why: String| RootfsError::Corrupt {
        path: image.to_path_buf(),
        why,
    };
    let meta = std::fs::metadata(image).map_err(|e| corrupt(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(corrupt("not a regular file".into()));
    }
    if meta.len() != bytes {
        return Err(corrupt(format!(
            "{} bytes, the manifest says {bytes}",
            meta.len()
        )));
    }
    let f = std::fs::File::open(image).map_err(|e| corrupt(format!("cannot open it: {e}")))?;
    let mut magic = [0u8; 2];
    f.read_exact_at(&mut magic, MAGIC_OFFSET)
        .map_err(|e| corrupt(format!("cannot read its superblock: {e}")))?;
    if u16::from_le_bytes(magic) != EXT4_MAGIC {
        return Err(corrupt("no ext4 superblock".into()));
    }
    Ok(())
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct RootfsOptions {
    /// Cache directory; default [`cache::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Rebuild even when a disk with the same inputs exists.
    pub force: bool,
    /// Called with a short message before each slow step.
    pub progress: Option<fn(&str)>,
}

/// Everything that determines the disk; hashed into its key.
#[derive(Serialize)]
struct Inputs<'a> {
    schema: u32,
    suite: &'a str,
    archive: &'a str,
    packages: &'a [&'a str],
    bytes: u64,
}

fn key() -> String {
    let json = serde_json::to_vec(&Inputs {
        schema: SCHEMA,
        suite: SUITE,
        archive: DEBIAN_ARCHIVE,
        packages: PACKAGES,
        bytes: DISK_BYTES,
    })
    .expect("inputs serialize");
    cache::sha256_hex(&json)[..16].to_string()
}

/// The directory of the root disk for the current inputs under `cache_dir`.
pub fn dir_in(cache_dir: &Path) -> PathBuf {
    cache_dir.join("rootfs").join(key())
}

/// The cached root disk for the current inputs, without building it (runs
/// never download): [`RootfsError::NotBuilt`] when there is none,
/// [`RootfsError::Corrupt`] when its image is damaged.
pub fn find(cache_dir: Option<&Path>) -> Result<Rootfs, RootfsError> {
    let cache_dir = match cache_dir {
        Some(d) => d.to_path_buf(),
        None => cache::default_cache_dir()?,
    };
    let dir = dir_in(&cache_dir);
    if !dir.join(MANIFEST).exists() {
        return Err(RootfsError::NotBuilt { dir });
    }
    let r = Rootfs::load(&dir)?;
    cache::touch(&dir.join(MANIFEST));
    Ok(r)
}

fn say(opts: &RootfsOptions, msg: &str) {
    if let Some(p) = opts.progress {
        p(msg);
    }
    tracing::info!("{msg}");
}

/// Make sure the root disk exists in the cache and return it: found when
/// its inputs are unchanged, else built (about two minutes and 150 MB of
/// downloads) in a staging directory renamed into place.
pub fn ensure_rootfs(opts: &RootfsOptions) -> Result<Rootfs, RootfsError> {
    let cache_dir = match &opts.cache_dir {
        Some(d) => d.clone(),
        None => cache::default_cache_dir()?,
    };
    let dir = dir_in(&cache_dir);
    let parent = dir.parent().expect("dir_in has a parent").to_path_buf();
    let key = key();
    let entry = cache::Entry {
        area: &parent,
        key: &key,
        marker: MANIFEST,
        keep: KEEP,
        force: opts.force,
    };
    let (mut r, built) = cache::find_or_build(entry, Rootfs::load, |out| build(opts, &key, out))?;
    r.built = built;
    Ok(r)
}

/// Builds the root disk `key` into the empty directory `out`.
fn build(opts: &RootfsOptions, key: &str, out: &Path) -> Result<(), RootfsError> {
    say(
        opts,
        &format!("building the guest root disk {key} (Debian {SUITE} with mmdebstrap, about two minutes)"),
    );
    let t0 = Instant::now();
    let tree = out.join("tree");
    debootstrap(&tree)?;
    let packages = versions(&tree)?;
    let installed = count_installed(&tree);
    finish_tree(&tree, key)?;
    say(opts, "writing the root disk's ext4 image");
    let image = out.join(IMAGE);
    make_ext4(&tree, &image)?;
    std::fs::remove_dir_all(&tree).map_err(CacheError::io("removing", &tree))?;
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&image)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0)
    };
    let manifest = RootfsManifest {
        schema: SCHEMA,
        key: key.to_string(),
        suite: SUITE.into(),
        archive: DEBIAN_ARCHIVE.into(),
        packages,
        installed,
        bytes: DISK_BYTES,
        allocated,
        build_s: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    let mpath = out.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| RootfsError::Manifest {
        path: mpath.clone(),
        source,
    })?;
    std::fs::write(&mpath, json).map_err(CacheError::io("writing", &mpath))?;
    Ok(())
}

/// `mmdebstrap` the userland into `tree` (created).
fn debootstrap(tree: &Path) -> Result<(), RootfsError> {
    // mmdebstrap wants an existing (empty) directory.
    std::fs::create_dir_all(tree).map_err(CacheError::io("creating", tree))?;
    let include = format!("--include={}", PACKAGES.join(","));
    let target = format!("{}/", tree.display());
    let args = [
        "--quiet",
        "--variant=essential",
        include.as_str(),
        // Documentation and translations are not needed in a test guest.
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        SUITE,
        target.as_str(),
        DEBIAN_ARCHIVE,
    ];
    tools::run(MMDEBSTRAP, &args, None, None).map_err(|source| RootfsError::Tool {
        step: "mmdebstrap",
        source,
    })?;
    Ok(())
}

/// The versions of [`PACKAGES`] installed in `tree`.
fn versions(tree: &Path) -> Result<Vec<Package>, RootfsError> {
    let admin = tree.join("var/lib/dpkg");
    let admindir = format!("--admindir={}", admin.display());
    let mut args = vec![admindir.as_str(), "-W", "-f=${Package} ${Version}\\n"];
    args.extend(PACKAGES);
    let out = tools::run_text(tools::DPKG_QUERY, &args).map_err(|source| RootfsError::Tool {
        step: "listing the installed packages",
        source,
    })?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| Package {
            name: n.to_string(),
            version: v.to_string(),
        })
        .collect())
}

fn count_installed(tree: &Path) -> usize {
    std::fs::read_to_string(tree.join("var/lib/dpkg/status"))
        .map(|s| s.matches("\nPackage: ").count() + usize::from(s.starts_with("Package: ")))
        .unwrap_or(0)
}

/// What the guest needs on the disk besides the packages.
fn finish_tree(tree: &Path, key: &str) -> Result<(), RootfsError> {
    let write = |rel: &str, data: &[u8], mode: u32| -> Result<(), RootfsError> {
        use std::os::unix::fs::PermissionsExt;
        let p = tree.join(rel.trim_start_matches('/'));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(CacheError::io("creating", d))?;
        }
        std::fs::write(&p, data).map_err(CacheError::io("writing", &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(CacheError::io("setting the mode of", &p))?;
        Ok(())
    };
    write(GUEST_PROGRAM, b"", 0o755)?;
    write(
        "/etc/swaplab-rootfs",
        format!("key={key}\nsuite={SUITE}\n").as_bytes(),
        0o644,
    )?;
    write("/etc/hostname", b"swaplab\n", 0o644)?;
    // mmdebstrap leaves the host's resolver configuration behind; the guest
    // has no network.
    let _ = std::fs::remove_file(tree.join("etc/resolv.conf"));
    Ok(())
}

/// `mkfs.ext4 -d tree` into a new sparse `image` of [`DISK_BYTES`].
fn make_ext4(tree: &Path, image: &Path) -> Result<(), RootfsError> {
    let f = std::fs::File::create(image).map_err(CacheError::io("creating", image))?;
    f.set_len(DISK_BYTES)
        .map_err(CacheError::io("sizing", image))?;
    drop(f);
    let tree_arg = tree.display().to_string();
    let image_arg = image.display().to_string();
    let args = [
        "-q",
        "-F",
        "-L",
        LABEL,
        // Initialise inode tables now: the guest would otherwise spend its
        // first minutes (and the workload's disk time) doing it.
        "-E",
        "lazy_itable_init=0,lazy_journal_init=0",
        "-d",
        tree_arg.as_str(),
        image_arg.as_str(),
    ];
    tools::run(MKFS_EXT4, &args, None, None).map_err(|source| RootfsError::Tool {
        step: "mkfs.ext4",
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_short() {
        assert_eq!(key(), key());
        assert_eq!(key().len(), 16);
        assert!(dir_in(Path::new("/c")).starts_with("/c/rootfs"));
    }

    #[test]
    fn a_missing_or_corrupt_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Rootfs::load(dir.path()),
            Err(RootfsError::Cache(_))
        ));
        std::fs::write(dir.path().join(MANIFEST), b"{").unwrap();
        assert!(matches!(
            Rootfs::load(dir.path()),
            Err(RootfsError::Manifest { .. })
        ));
        let m = RootfsManifest {
            schema: SCHEMA,
            key: "k".into(),
            suite: SUITE.into(),
            archive: DEBIAN_ARCHIVE.into(),
            packages: vec![],
            installed: 0,
            bytes: 8192,
            allocated: 0,
            build_s: 0.0,
        };
        std::fs::write(dir.path().join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        let err = Rootfs::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("root.img") && err.contains("cannot read"),
            "{err}"
        );
        let img = dir.path().join(IMAGE);
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        let err = Rootfs::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("4096 bytes, the manifest says 8192"), "{err}");
        std::fs::write(&img, vec![0u8; 8192]).unwrap();
        let err = Rootfs::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("no ext4 superblock") && err.contains("--force"),
            "{err}"
        );
        let mut good = vec![0u8; 8192];
        good[MAGIC_OFFSET as usize..MAGIC_OFFSET as usize + 2]
            .copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        std::fs::write(&img, good).unwrap();
        assert_eq!(Rootfs::load(dir.path()).unwrap().manifest, m);
    }
}

//! The guest image: a stock Debian kernel plus an initramfs with busybox, the
//! guest programs from this crate (static), the modules a guest needs, and an
//! `/init` that runs the command named on the kernel command line.
//!
//! ```no_run
//! # fn main() -> Result<(), workloads::image::ImageError> {
//! use workloads::image::{ensure_image, init, ImageOptions};
//! let img = ensure_image(&ImageOptions::default())?;
//! let cmdline = init::cmdline_with_run(&img.manifest.cmdline, Some("grep MemTotal /proc/meminfo; nproc"))?;
//! // boot img.vmlinux (PVH entry img.manifest.pvh_entry) or img.bzimage with img.initramfs and cmdline,
//! // then look for init::find_end(console_output).
//! # let _ = cmdline; Ok(()) }
//! ```
//!
//! Images live in `<cache>/images/<key>/`, where `<key>` hashes every input
//! (kernel package and version, busybox and guest binaries, `/init`, module
//! list, compression), next to a `manifest.json` ([`Manifest`]). An unchanged
//! image is found, not rebuilt. See [`cache`] for the whole layout.
//!
//! Reusable pieces, for anyone building another image (e.g. the nested sandbox):
//! - [`kernel::ensure_debian_kernel`]: fetch and unpack Debian's kernel into the cache;
//!   gives bzImage, ELF vmlinux (PVH), modules directory, version.
//! - [`modules::closure`]: modules plus their dependencies, in load order.
//! - [`cpio::CpioWriter`] and [`initramfs::InitramfsBuilder`]: newc archives.
//! - [`busybox::find`]: the host's static busybox, installable into an initramfs.
//! - [`bzimage::extract_vmlinux`], [`elf::Elf`]: header parsing.

pub mod apt;
pub mod busybox;
pub mod bzimage;
pub mod cache;
pub mod cpio;
pub mod elf;
pub mod guest_bin;
pub mod init;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod rootfs;
pub mod tools;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use bzimage::Codec;
use cache::CacheError;
use initramfs::{Compression, InitramfsBuilder};

/// Modules every guest image loads (with their dependencies).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_balloon",
    "virtio_console",
];
/// Modules `/init` loads only for a root disk (`swaplab.root`), with their
/// dependencies: ext4 and the checksum its metadata and journal use
/// (a soft dependency `modules.dep` does not list).
pub const ROOT_MODULES: &[&str] = &["crc32c_generic", "ext4"];
/// Manifest format version; part of the image key.
pub const SCHEMA: u32 = 1;
/// Environment variable naming a busybox binary to use instead of [`busybox::DEFAULT_PATH`].
pub const ENV_BUSYBOX: &str = "SWAPLAB_BUSYBOX";
/// How many images the cache keeps (least recently used ones are removed).
pub const KEEP_IMAGES: usize = 8;
/// Name of the manifest file in an image directory.
pub const MANIFEST: &str = "manifest.json";

/// Errors from building or loading the guest image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Cache directory trouble.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The kernel could not be fetched or prepared.
    #[error("guest kernel")]
    Kernel(#[from] kernel::KernelError),
    /// Module resolution failed.
    #[error("guest kernel modules")]
    Modules(#[from] modules::ModulesError),
    /// busybox trouble.
    #[error("busybox")]
    Busybox(#[from] busybox::BusyboxError),
    /// Guest program trouble.
    #[error("guest programs")]
    GuestBin(#[from] guest_bin::GuestBinError),
    /// `/init` generation failed.
    #[error("guest /init")]
    Init(#[from] init::InitError),
    /// Writing the initramfs failed.
    #[error("initramfs")]
    Initramfs(#[from] initramfs::InitramfsError),
    /// A manifest could not be read or written.
    #[error("{path}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An image directory without its files.
    #[error("{0}: image directory is incomplete (rebuild with `swaplab image --force`)")]
    Incomplete(PathBuf),
    /// [`ImageOptions::offline`]: the kernel is not in the cache.
    #[error("the guest kernel {spec} is not in the cache (runs never download one): fetch it and build its image with `swaplab image --kernel-package {spec}`")]
    NotBuilt {
        /// The package as `NAME[@SUITE]`.
        spec: String,
    },
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Cache directory; default [`cache::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Rebuild even when an image with the same inputs exists.
    pub force: bool,
    /// Modules to load at boot (dependencies are added).
    pub modules: Vec<String>,
    /// A prebuilt static `swaplab-guest`; default `$SWAPLAB_GUEST_BIN`, else built from the workspace.
    pub guest_bin: Option<PathBuf>,
    /// busybox binary; default `$SWAPLAB_BUSYBOX`, else `/bin/busybox`.
    pub busybox: Option<PathBuf>,
    /// Initramfs compression.
    pub compression: Compression,
    /// Debian kernel package (a metapackage such as `linux-image-amd64`, or
    /// a versioned one).
    pub metapackage: String,
    /// Where apt finds it: the host's apt, or a suite of Debian's archive
    /// through a private apt setup (`bookworm-backports` for its 6.12).
    pub source: kernel::KernelSource,
    /// Called with a short message before each slow step.
    pub progress: Option<fn(&str)>,
    /// Use a kernel already in the cache, the newest one for `metapackage`
    /// and `source`: never download one ([`ImageError::NotBuilt`] instead).
    /// The image is still built from it when missing (local work only).
    pub offline: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            cache_dir: None,
            force: false,
            modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            guest_bin: None,
            busybox: None,
            compression: Compression::None,
            metapackage: kernel::DEFAULT_METAPACKAGE.to_string(),
            source: kernel::KernelSource::Host,
            progress: None,
            offline: false,
        }
    }
}

/// A module as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestModule {
    /// Canonical name.
    pub name: String,
    /// Path inside the guest (what `/init` passes to insmod).
    pub path: String,
}

/// A guest program as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestProgram {
    /// Name; installed as `/usr/bin/<name>`.
    pub name: String,
    /// SHA-256 of the binary.
    pub sha256: String,
}

/// File sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// bzImage.
    pub bzimage: u64,
    /// vmlinux.
    pub vmlinux: u64,
    /// initramfs.
    pub initramfs: u64,
}

/// `manifest.json`: what an image directory holds. File fields are names
/// relative to the image directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The input hash naming the directory.
    pub key: String,
    /// Kernel release (`uname -r`).
    pub kernel_version: String,
    /// The bzImage's full version string.
    pub kernel_version_string: Option<String>,
    /// Debian package the kernel came from.
    pub kernel_package: String,
    /// Its version.
    pub kernel_package_version: String,
    /// bzImage payload compression.
    pub kernel_codec: Codec,
    /// bzImage file.
    pub bzimage: String,
    /// Uncompressed ELF vmlinux file.
    pub vmlinux: String,
    /// initramfs file.
    pub initramfs: String,
    /// initramfs compression.
    pub initramfs_compression: Compression,
    /// PVH entry point (physical address) from vmlinux's Xen note.
    pub pvh_entry: u64,
    /// The same in hex, for people.
    pub pvh_entry_hex: String,
    /// Modules `/init` loads, in order.
    pub modules: Vec<ManifestModule>,
    /// Modules `/init` loads after those for a root disk ([`ROOT_MODULES`]).
    #[serde(default)]
    pub root_modules: Vec<ManifestModule>,
    /// busybox version banner.
    pub busybox_version: String,
    /// busybox SHA-256.
    pub busybox_sha256: String,
    /// Guest programs in `/usr/bin`.
    pub guest_programs: Vec<ManifestProgram>,
    /// SHA-256 of `/init`.
    pub init_sha256: String,
    /// Recommended kernel command line (add `swaplab.run=` with [`init::cmdline_with_run`]).
    pub cmdline: String,
    /// File sizes.
    pub sizes: Sizes,
}

/// A built guest image, with absolute paths.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuestImage {
    /// The image directory.
    pub dir: PathBuf,
    /// bzImage.
    pub bzimage: PathBuf,
    /// ELF vmlinux (PVH).
    pub vmlinux: PathBuf,
    /// initramfs.
    pub initramfs: PathBuf,
    /// True when this call built it, false when it was already up to date.
    pub built: bool,
    /// The manifest.
    pub manifest: Manifest,
}

impl GuestImage {
    /// Load the image in `dir` from its manifest, checking its files exist.
    pub fn load(dir: &Path) -> Result<GuestImage, ImageError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(CacheError::io("reading", &path))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|source| ImageError::Manifest { path, source })?;
        let img = GuestImage {
            dir: dir.to_path_buf(),
            bzimage: dir.join(&manifest.bzimage),
            vmlinux: dir.join(&manifest.vmlinux),
            initramfs: dir.join(&manifest.initramfs),
            built: false,
            manifest,
        };
        if ![&img.bzimage, &img.vmlinux, &img.initramfs]
            .iter()
            .all(|p| p.is_file())
        {
            return Err(ImageError::Incomplete(dir.to_path_buf()));
        }
        Ok(img)
    }
}

/// How reports name the kernel of the image in `dir`: `PACKAGE VERSION
/// (RELEASE)`, or the release alone, from its manifest read loosely (an
/// older manifest may lack fields); empty when there is none.
pub fn kernel_label(dir: &Path) -> String {
    let Some(text) = std::fs::read_to_string(dir.join(MANIFEST)).ok() else {
        return String::new();
    };
    let Ok(m) = serde_json::from_str::<serde_json::Value>(&text) else {
        return String::new();
    };
    let s = |k: &str| m.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
    match (
        s("kernel_package"),
        s("kernel_package_version"),
        s("kernel_version"),
    ) {
        ("", _, release) => release.to_string(),
        (pkg, ver, release) => format!("{pkg} {ver} ({release})"),
    }
}

/// Everything that determines an image's bytes; hashed into its key.
#[derive(Debug, Serialize)]
struct Inputs<'a> {
    schema: u32,
    kernel_package: &'a str,
    kernel_package_version: &'a str,
    busybox_sha256: &'a str,
    guest_programs: &'a [ManifestProgram],
    init_sha256: &'a str,
    modules: &'a [ManifestModule],
    root_modules: &'a [ManifestModule],
    compression: Compression,
}

fn image_key(inputs: &Inputs<'_>) -> String {
    let json = serde_json::to_vec(inputs).expect("inputs serialize");
    cache::sha256_hex(&json)[..16].to_string()
}

fn say(opts: &ImageOptions, msg: &str) {
    if let Some(p) = opts.progress {
        p(msg);
    }
    tracing::info!("{msg}");
}

/// The modules an image holds, in load order, and as the manifest records
/// them: `names` with their dependencies (loaded at every boot), then those
/// [`ROOT_MODULES`] add (loaded only for a root disk).
#[allow(clippy::type_complexity)]
fn image_modules(
    k: &kernel::KernelFiles,
    names: &[String],
) -> Result<
    (
        Vec<modules::ModulePath>,
        Vec<ManifestModule>,
        Vec<ManifestModule>,
    ),
    ImageError,
> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let base_mods = modules::closure(&k.modules_dir, &names)?;
    let all_names: Vec<&str> = names.iter().chain(ROOT_MODULES).copied().collect();
    let all_mods = modules::closure(&k.modules_dir, &all_names)?;
    let in_guest = |m: &modules::ModulePath| ManifestModule {
        name: m.name.clone(),
        path: format!("/lib/modules/{}/{}", k.version, m.uncompressed_rel()),
    };
    let manifest_modules: Vec<ManifestModule> = base_mods.iter().map(in_guest).collect();
    // The root disk's: those of the whole closure the base set lacks, in load order.
    let root_mods: Vec<modules::ModulePath> = all_mods
        .into_iter()
        .filter(|m| !base_mods.iter().any(|b| b.name == m.name))
        .collect();
    let root_modules: Vec<ManifestModule> = root_mods.iter().map(in_guest).collect();
    let mods = base_mods.into_iter().chain(root_mods).collect();
    Ok((mods, manifest_modules, root_modules))
}

/// The kernel `opts` asks for: fetched if needed, or with
/// [`ImageOptions::offline`] the newest cached one.
fn image_kernel(opts: &ImageOptions, cache_dir: &Path) -> Result<kernel::KernelFiles, ImageError> {
    if !opts.offline {
        return Ok(kernel::ensure_kernel_from(
            cache_dir,
            &opts.source,
            &opts.metapackage,
            opts.progress,
        )?);
    }
    kernel::cached_kernels_from(cache_dir, &opts.source, &opts.metapackage)
        .into_iter()
        .next()
        .ok_or_else(|| ImageError::NotBuilt {
            spec: match &opts.source {
                kernel::KernelSource::Host => opts.metapackage.clone(),
                kernel::KernelSource::Suite(s) => format!("{}@{}", opts.metapackage, s.suite),
            },
        })
}

/// Make sure the guest image for `opts` exists in the cache and return it.
///
/// Cheap when nothing changed: it resolves the kernel package (one apt query),
/// lets cargo confirm the guest programs are up to date, hashes the inputs and
/// finds the existing image. Otherwise it builds in a temporary directory and
/// renames it into place, so an interrupted build leaves nothing half-done.
pub fn ensure_image(opts: &ImageOptions) -> Result<GuestImage, ImageError> {
    let cache_dir = match &opts.cache_dir {
        Some(d) => d.clone(),
        None => cache::default_cache_dir()?,
    };
    let k = image_kernel(opts, &cache_dir)?;
    let (mods, manifest_modules, root_modules) = image_modules(&k, &opts.modules)?;
    let env_busybox = std::env::var_os(ENV_BUSYBOX)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let bb = busybox::find(opts.busybox.as_deref().or(env_busybox.as_deref()))?;
    let building = opts.guest_bin.is_none() && std::env::var_os(guest_bin::ENV_GUEST_BIN).is_none();
    let first =
        !guest_bin::built_path(&guest_bin::workspace_dir(), guest_bin::PROGRAMS[0]).is_file();
    if building && first {
        say(
            opts,
            "building the static guest programs (cargo; the first build takes a minute or two)",
        );
    }
    let programs = guest_bin::ensure(opts.guest_bin.as_deref())?;
    let manifest_programs: Vec<ManifestProgram> = programs
        .iter()
        .map(|p| ManifestProgram {
            name: p.name.clone(),
            sha256: p.sha256.clone(),
        })
        .collect();
    let paths =
        |ms: &[ManifestModule]| -> Vec<String> { ms.iter().map(|m| m.path.clone()).collect() };
    let init_script = init::script(&paths(&manifest_modules), &paths(&root_modules))?;
    let init_sha256 = cache::sha256_hex(init_script.as_bytes());
    let key = image_key(&Inputs {
        schema: SCHEMA,
        kernel_package: &k.record.package.name,
        kernel_package_version: &k.record.package.version,
        busybox_sha256: &bb.sha256,
        guest_programs: &manifest_programs,
        init_sha256: &init_sha256,
        modules: &manifest_modules,
        root_modules: &root_modules,
        compression: opts.compression,
    });
    let images = cache_dir.join("images");
    let entry = cache::Entry {
        area: &images,
        key: &key,
        marker: MANIFEST,
        keep: KEEP_IMAGES,
        force: opts.force,
    };
    let (mut img, built) = cache::find_or_build(entry, GuestImage::load, |out| {
        say(opts, &format!("building guest image {key}"));
        let mut b = InitramfsBuilder::new();
        b.add_base_layout()?;
        bb.install(&mut b)?;
        for p in &programs {
            b.add_file_from(&format!("usr/bin/{}", p.name), 0o755, &p.path)?;
        }
        for (m, mm) in mods
            .iter()
            .zip(manifest_modules.iter().chain(&root_modules))
        {
            b.add_file(&mm.path, 0o644, &m.read()?)?;
        }
        b.add_file("init", 0o755, init_script.as_bytes())?;
        b.add_file(
            "etc/swaplab-image",
            0o644,
            format!("key={key}\nkernel={}\n", k.version).as_bytes(),
        )?;
        let cpio = opts.compression.apply(b.finish()?)?;
        let initramfs_name = match opts.compression {
            Compression::None => "initramfs.cpio",
            Compression::Zstd => "initramfs.cpio.zst",
            Compression::Gzip => "initramfs.cpio.gz",
        };
        let write = |name: &str, data: &[u8]| {
            let p = out.join(name);
            std::fs::write(&p, data).map_err(CacheError::io("writing", &p))
        };
        write(initramfs_name, &cpio)?;
        cache::link_or_copy(&k.bzimage, &out.join("vmlinuz"))?;
        cache::link_or_copy(&k.vmlinux, &out.join("vmlinux"))?;
        let size = |name: &str| {
            std::fs::metadata(out.join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let manifest = Manifest {
            schema: SCHEMA,
            key: key.clone(),
            kernel_version: k.version.clone(),
            kernel_version_string: k.record.version_string.clone(),
            kernel_package: k.record.package.name.clone(),
            kernel_package_version: k.record.package.version.clone(),
            kernel_codec: k.record.codec,
            bzimage: "vmlinuz".into(),
            vmlinux: "vmlinux".into(),
            initramfs: initramfs_name.into(),
            initramfs_compression: opts.compression,
            pvh_entry: k.pvh_entry,
            pvh_entry_hex: format!("{:#x}", k.pvh_entry),
            modules: manifest_modules,
            root_modules,
            busybox_version: bb.version.clone(),
            busybox_sha256: bb.sha256.clone(),
            guest_programs: manifest_programs,
            init_sha256,
            cmdline: init::DEFAULT_CMDLINE.to_string(),
            sizes: Sizes {
                bzimage: size("vmlinuz"),
                vmlinux: size("vmlinux"),
                initramfs: size(initramfs_name),
            },
        };
        let manifest_path = out.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ImageError::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
        write(MANIFEST, &json)?;
        Ok(())
    })?;
    img.built = built;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        progs: &'a [ManifestProgram],
        mods: &'a [ManifestModule],
        c: Compression,
    ) -> Inputs<'a> {
        Inputs {
            schema: SCHEMA,
            kernel_package: "linux-image-6.1.0-56-amd64",
            kernel_package_version: "6.1.192-2",
            busybox_sha256: "bb",
            guest_programs: progs,
            init_sha256: "init",
            modules: mods,
            root_modules: &[],
            compression: c,
        }
    }

    #[test]
    fn key_changes_with_every_input() {
        let progs = vec![ManifestProgram {
            name: "swaplab-guest".into(),
            sha256: "a".into(),
        }];
        let mods = vec![ManifestModule {
            name: "virtio".into(),
            path: "/lib/modules/v/virtio.ko".into(),
        }];
        let base = image_key(&inputs(&progs, &mods, Compression::None));
        assert_eq!(base.len(), 16);
        assert_eq!(base, image_key(&inputs(&progs, &mods, Compression::None)));
        assert_ne!(base, image_key(&inputs(&progs, &mods, Compression::Zstd)));
        assert_ne!(base, image_key(&inputs(&progs, &[], Compression::None)));
        let other = vec![ManifestProgram {
            name: "swaplab-guest".into(),
            sha256: "b".into(),
        }];
        assert_ne!(base, image_key(&inputs(&other, &mods, Compression::None)));
        let mut i = inputs(&progs, &mods, Compression::None);
        i.kernel_package_version = "6.1.193-1";
        assert_ne!(base, image_key(&i));
        // A new /init (e.g. another protocol parameter) is a new image.
        let mut i = inputs(&progs, &mods, Compression::None);
        i.init_sha256 = "init2";
        assert_ne!(base, image_key(&i));
    }

    #[test]
    fn loading_an_incomplete_image_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            GuestImage::load(dir.path()),
            Err(ImageError::Cache(_))
        ));
        std::fs::write(dir.path().join(MANIFEST), b"{").unwrap();
        assert!(matches!(
            GuestImage::load(dir.path()),
            Err(ImageError::Manifest { .. })
        ));
    }
}

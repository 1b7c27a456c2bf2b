//! The guest kernel from Debian's `linux-image-amd64`, fetched with
//! `apt-get download`, unpacked with `dpkg-deb -x` into the cache (never
//! installed into the host's `/boot`), with the ELF vmlinux extracted from the
//! bzImage and a `modules.dep` generated for its modules.
//!
//! A kernel comes from a [`KernelSource`]: the host's apt (the guest image:
//! bookworm's 6.1), or one suite of Debian's archive through a private apt
//! configuration under the cache (the nested sandbox's L1:
//! [`BACKPORTS_SUITE`], see [`crate::image::apt`]). Kernels from both live side
//! by side in `kernels/`; each record says where it came from, so asking for
//! one source never returns a kernel of the other.
//!
//! ```no_run
//! # fn main() -> Result<(), workloads::image::kernel::KernelError> {
//! let cache = workloads::image::cache::default_cache_dir()?;
//! let k = workloads::image::kernel::ensure_debian_kernel(&cache)?;
//! println!("{} vmlinux={} pvh=0x{:x}", k.version, k.vmlinux.display(), k.pvh_entry);
//! let mods = workloads::image::modules::closure(&k.modules_dir, &["kvm_amd", "9pnet_virtio", "9p"])?;
//! # let _ = mods; Ok(()) }
//! ```
//!
//! Layout of `kernels/<package>_<version>/`:
//! `kernel.json` (a [`KernelRecord`]), `vmlinuz` (bzImage), `vmlinux` (ELF),
//! `config`, and `root/` (the unpacked package; modules in
//! `root/lib/modules/<version>/` with a generated `modules.dep`).

use std::path::{Path, PathBuf};

use crate::image::apt::{Apt, AptError, AptSuite};
use crate::image::bzimage::{self, BzImageError, Codec};
use crate::image::cache::{self, CacheError, Staging};
use crate::image::modules::{self, ModulesError};
use crate::image::tools::{self, ToolError};

/// Debian's kernel metapackage for amd64.
pub const DEFAULT_METAPACKAGE: &str = "linux-image-amd64";
/// The suite with a newer kernel for Debian 12 (6.12 at the time of writing).
pub const BACKPORTS_SUITE: &str = "bookworm-backports";

/// Where apt finds a kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// The host's own apt configuration and lists (on Debian 12: bookworm's 6.1).
    Host,
    /// One suite of an archive, through a private apt configuration under the
    /// cache (the host's apt configuration is neither used nor changed).
    Suite(AptSuite),
}

/// Parses `NAME` or `NAME@SUITE` (how `swaplab image --kernel-package` and a
/// scenario's `guest.kernel` name a guest kernel): the Debian package and where
/// apt finds it (the host's apt, or that suite of Debian's archive). The error
/// says what was expected.
pub fn parse_package_spec(spec: &str) -> Result<(String, KernelSource), String> {
    let (name, suite) = match spec.split_once('@') {
        Some((n, s)) => (n, Some(s)),
        None => (spec, None),
    };
    let ok = |t: &str| {
        !t.is_empty()
            && t.len() <= 100
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.~".contains(c))
    };
    if !ok(name) || suite.is_some_and(|s| !ok(s)) {
        return Err(format!(
            "{spec:?}: expected a Debian kernel package name, optionally @SUITE (e.g. linux-image-amd64@bookworm-backports)"
        ));
    }
    let source = suite.map_or(KernelSource::Host, KernelSource::debian_suite);
    Ok((name.to_string(), source))
}

impl KernelSource {
    /// `suite` of Debian's main archive.
    pub fn debian_suite(suite: &str) -> Self {
        KernelSource::Suite(AptSuite::debian(suite))
    }

    /// What kernel records store as their source: empty for the host, else the suite.
    pub fn id(&self) -> String {
        match self {
            KernelSource::Host => String::new(),
            KernelSource::Suite(s) => s.suite.clone(),
        }
    }

    /// How to run apt for this source.
    pub fn apt(&self, cache: &Path) -> Apt {
        match self {
            KernelSource::Host => Apt::Host,
            KernelSource::Suite(s) => Apt::private(cache, s.clone()),
        }
    }
}

impl std::fmt::Display for KernelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelSource::Host => f.write_str("the host's apt sources"),
            KernelSource::Suite(s) => f.write_str(&s.suite),
        }
    }
}

/// Errors from fetching and preparing the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Cache directory trouble.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// An apt/dpkg tool failed or is missing.
    #[error("{what}")]
    Tool {
        /// What we were doing.
        what: String,
        /// Why.
        #[source]
        source: ToolError,
    },
    /// The host's apt knows no such package (lists not updated?).
    #[error("apt has no candidate for {0} (run `apt-get update`?)")]
    NoCandidate(String),
    /// apt failed, or a private suite has no such package.
    #[error(transparent)]
    Apt(AptError),
    /// The metapackage does not depend on a `linux-image-*` package.
    #[error("{meta} does not depend on a linux-image-* package (Depends: {depends:?})")]
    NoImageDependency {
        /// The metapackage.
        meta: String,
        /// Its Depends field.
        depends: String,
    },
    /// The downloaded `.deb` does not match apt's SHA-256.
    #[error("{path}: SHA-256 {got} does not match apt's {expected}")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// apt's hash.
        expected: String,
        /// What the file has.
        got: String,
    },
    /// The package did not contain what a kernel package should.
    #[error("{package}: {what}")]
    BadPackage {
        /// The package.
        package: String,
        /// What is missing.
        what: String,
    },
    /// Extracting vmlinux failed.
    #[error("extracting vmlinux from {path}")]
    BzImage {
        /// The bzImage.
        path: PathBuf,
        /// Why.
        #[source]
        source: BzImageError,
    },
    /// vmlinux lacks the PVH entry note.
    #[error("{0}: vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); the kernel lacks CONFIG_PVH")]
    NoPvhNote(PathBuf),
    /// Generating modules.dep failed.
    #[error("indexing kernel modules")]
    Modules(#[from] ModulesError),
    /// A cached `kernel.json` cannot be read.
    #[error("{path}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl From<AptError> for KernelError {
    fn from(e: AptError) -> Self {
        match e {
            AptError::NoCandidate {
                package,
                suite: None,
            } => KernelError::NoCandidate(package),
            e => KernelError::Apt(e),
        }
    }
}

fn tool_err(what: impl Into<String>) -> impl FnOnce(ToolError) -> KernelError {
    let what = what.into();
    move |source| KernelError::Tool { what, source }
}

/// A Debian binary package at one version, as apt resolves it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DebianPackage {
    /// Package name (`linux-image-6.1.0-56-amd64`).
    pub name: String,
    /// Version (`6.1.192-2`).
    pub version: String,
    /// SHA-256 of the `.deb`, from apt's index (empty if apt gave none).
    pub sha256: String,
}

/// What is recorded in `kernel.json` (paths relative to the kernel directory).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelRecord {
    /// The metapackage this was resolved from.
    pub metapackage: String,
    /// Where apt found it ([`KernelSource::id`]: empty for the host's apt).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The real package.
    pub package: DebianPackage,
    /// Kernel release (`uname -r`, e.g. `6.1.0-56-amd64`).
    pub version: String,
    /// The bzImage's version string.
    pub version_string: Option<String>,
    /// Compression of the bzImage payload.
    pub codec: Codec,
    /// Physical PVH entry address from the vmlinux note.
    pub pvh_entry: u64,
    /// ELF entry of vmlinux (virtual).
    pub elf_entry: u64,
    /// bzImage, relative.
    pub bzimage: String,
    /// vmlinux, relative.
    pub vmlinux: String,
    /// Kernel config, relative.
    pub config: String,
    /// Modules directory, relative.
    pub modules_dir: String,
    /// Number of modules indexed in `modules.dep`.
    pub module_count: usize,
}

/// A prepared kernel in the cache, with absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    /// The kernel directory.
    pub dir: PathBuf,
    /// The bzImage (`vmlinuz`).
    pub bzimage: PathBuf,
    /// The uncompressed ELF vmlinux.
    pub vmlinux: PathBuf,
    /// `lib/modules/<version>` with `modules.dep`.
    pub modules_dir: PathBuf,
    /// Kernel config.
    pub config: PathBuf,
    /// Kernel release (`6.1.0-56-amd64`).
    pub version: String,
    /// PVH entry (physical).
    pub pvh_entry: u64,
    /// Everything recorded about it.
    pub record: KernelRecord,
}

impl KernelFiles {
    fn from_record(dir: &Path, record: KernelRecord) -> Self {
        KernelFiles {
            dir: dir.to_path_buf(),
            bzimage: dir.join(&record.bzimage),
            vmlinux: dir.join(&record.vmlinux),
            modules_dir: dir.join(&record.modules_dir),
            config: dir.join(&record.config),
            version: record.version.clone(),
            pvh_entry: record.pvh_entry,
            record,
        }
    }
}

/// Parse one field of `apt-cache show` output (first stanza).
fn control_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let prefix = format!("{field}:");
    text.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
}

/// The `linux-image-*` package a metapackage's `Depends:` names.
pub fn image_dependency(depends: &str) -> Option<String> {
    depends
        .split(',')
        .flat_map(|alt| alt.split('|'))
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| {
            d.starts_with("linux-image-") && d.chars().nth(12).is_some_and(|c| c.is_ascii_digit())
        })
        .map(str::to_string)
}

/// A remembered resolution (`kernels/resolved-<metapackage>.json`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Resolution {
    apt_lists: String,
    package: DebianPackage,
}

/// [`resolve_package`], remembered in `cache` while apt's lists are unchanged
/// (each `apt-cache` call costs about half a second).
pub fn resolve_package_cached(
    cache: &Path,
    metapackage: &str,
) -> Result<DebianPackage, KernelError> {
    resolve_cached_from(cache, &KernelSource::Host, metapackage)
}

/// [`resolve_package_from`] for `source`, remembered in `cache` while its lists are unchanged.
pub fn resolve_cached_from(
    cache: &Path,
    source: &KernelSource,
    metapackage: &str,
) -> Result<DebianPackage, KernelError> {
    let apt = source.apt(cache);
    let stamp = apt.lists_stamp();
    let suffix = match source {
        KernelSource::Host => String::new(),
        KernelSource::Suite(s) => format!("@{}", s.id()),
    };
    let file = cache.join("kernels").join(format!(
        "resolved-{}{suffix}.json",
        cache::path_component(metapackage)
    ));
    if let (Some(stamp), Ok(text)) = (&stamp, std::fs::read_to_string(&file)) {
        if let Ok(r) = serde_json::from_str::<Resolution>(&text) {
            if &r.apt_lists == stamp {
                return Ok(r.package);
            }
        }
    }
    let package = resolve_package_from(&apt, metapackage)?;
    if let Some(apt_lists) = stamp {
        let r = Resolution {
            apt_lists,
            package: package.clone(),
        };
        if let (Ok(json), Some(dir)) = (serde_json::to_vec(&r), file.parent()) {
            // Only an optimization: failing to remember is not an error.
            let _ = std::fs::create_dir_all(dir).map(|_| cache::write_atomic(&file, &json));
        }
    }
    Ok(package)
}

/// Resolve a metapackage (`linux-image-amd64`) to the real kernel package that
/// its candidate version depends on, with that package's candidate version.
pub fn resolve_package(metapackage: &str) -> Result<DebianPackage, KernelError> {
    resolve_package_from(&Apt::Host, metapackage)
}

/// [`resolve_package`] with `apt`.
pub fn resolve_package_from(apt: &Apt, metapackage: &str) -> Result<DebianPackage, KernelError> {
    let meta = apt.show(metapackage)?;
    let depends = control_field(&meta, "Depends").unwrap_or("");
    let name = image_dependency(depends).ok_or_else(|| KernelError::NoImageDependency {
        meta: metapackage.to_string(),
        depends: depends.to_string(),
    })?;
    let real = apt.show(&name)?;
    let version = control_field(&real, "Version")
        .ok_or_else(|| KernelError::NoCandidate(name.clone()))?
        .to_string();
    let sha256 = control_field(&real, "SHA256").unwrap_or("").to_string();
    Ok(DebianPackage {
        name,
        version,
        sha256,
    })
}

/// Ensure `downloads/<package>_<version>_amd64.deb` exists and matches apt's hash.
pub fn download_deb(cache: &Path, pkg: &DebianPackage) -> Result<PathBuf, KernelError> {
    download_deb_from(cache, &Apt::Host, pkg)
}

/// [`download_deb`] with `apt`.
pub fn download_deb_from(
    cache: &Path,
    apt: &Apt,
    pkg: &DebianPackage,
) -> Result<PathBuf, KernelError> {
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(CacheError::io("creating", &downloads))?;
    let dest = downloads.join(format!(
        "{}_{}_amd64.deb",
        pkg.name,
        cache::path_component(&pkg.version)
    ));
    if dest.exists() && (pkg.sha256.is_empty() || cache::sha256_file(&dest)? == pkg.sha256) {
        return Ok(dest);
    }
    let staging = Staging::new(&downloads, "download")?;
    let spec = format!("{}={}", pkg.name, pkg.version);
    apt.download(&spec, staging.path())?;
    let deb = std::fs::read_dir(staging.path())
        .map_err(CacheError::io("listing", staging.path()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| KernelError::BadPackage {
            package: spec.clone(),
            what: "apt-get download produced no .deb".into(),
        })?;
    if !pkg.sha256.is_empty() {
        let got = cache::sha256_file(&deb)?;
        if got != pkg.sha256 {
            return Err(KernelError::HashMismatch {
                path: deb,
                expected: pkg.sha256.clone(),
                got,
            });
        }
    }
    std::fs::rename(&deb, &dest).map_err(CacheError::io("moving download to", &dest))?;
    Ok(dest)
}

/// The kernel directory for a package.
pub fn kernel_dir(cache: &Path, pkg: &DebianPackage) -> PathBuf {
    cache.join("kernels").join(format!(
        "{}_{}",
        pkg.name,
        cache::path_component(&pkg.version)
    ))
}

fn load_record(dir: &Path) -> Result<Option<KernelFiles>, KernelError> {
    let path = dir.join("kernel.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let record: KernelRecord =
        serde_json::from_str(&text).map_err(|source| KernelError::Record { path, source })?;
    let files = KernelFiles::from_record(dir, record);
    let complete = files.vmlinux.is_file()
        && files.bzimage.is_file()
        && files.modules_dir.join("modules.dep").is_file();
    Ok(complete.then_some(files))
}

/// Cached kernels resolved from `metapackage` with the host's apt, newest record first.
pub fn cached_kernels(cache: &Path, metapackage: &str) -> Vec<KernelFiles> {
    cached_kernels_from(cache, &KernelSource::Host, metapackage)
}

/// Cached kernels resolved from `metapackage` in `source`, newest record first.
pub fn cached_kernels_from(
    cache: &Path,
    source: &KernelSource,
    metapackage: &str,
) -> Vec<KernelFiles> {
    let id = source.id();
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(cache.join("kernels")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Ok(Some(k)) = load_record(&e.path()) {
                if k.record.metapackage == metapackage && k.record.source == id {
                    let mtime = std::fs::metadata(e.path().join("kernel.json"))
                        .and_then(|m| m.modified())
                        .ok();
                    found.push((mtime, k));
                }
            }
        }
    }
    found.sort_by_key(|b| std::cmp::Reverse(b.0));
    found.into_iter().map(|(_, k)| k).collect()
}

/// The release (`uname -r`) of the kernel in `path`, if it can be told: a
/// bzImage's header names it, an ELF vmlinux holds the `Linux version
/// <release> ...` banner. `None` for anything else (or an unreadable file).
pub fn release_of(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    if let Ok(h) = crate::image::bzimage::SetupHeader::parse(&data) {
        return h
            .kernel_version
            .and_then(|v| v.split_whitespace().next().map(str::to_string));
    }
    const BANNER: &[u8] = b"Linux version ";
    let at = data.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let rest = &data[at..data.len().min(at + 100)];
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    let release = std::str::from_utf8(&rest[..end]).ok()?;
    (!release.is_empty()).then(|| release.to_string())
}

/// [`ensure_kernel`] for [`DEFAULT_METAPACKAGE`].
pub fn ensure_debian_kernel(cache: &Path) -> Result<KernelFiles, KernelError> {
    ensure_kernel(cache, DEFAULT_METAPACKAGE)
}

/// [`ensure_kernel_with`] without progress messages.
pub fn ensure_kernel(cache: &Path, metapackage: &str) -> Result<KernelFiles, KernelError> {
    ensure_kernel_with(cache, metapackage, None)
}

/// [`ensure_kernel_from`] with the host's apt.
pub fn ensure_kernel_with(
    cache: &Path,
    metapackage: &str,
    progress: Option<fn(&str)>,
) -> Result<KernelFiles, KernelError> {
    ensure_kernel_from(cache, &KernelSource::Host, metapackage, progress)
}

/// Make sure the kernel that `metapackage` currently resolves to in `source`
/// is unpacked in the cache, and return its files. Fast when it already is
/// (one `apt-cache` query, none while apt's lists are unchanged). When apt
/// cannot resolve the package (no lists, offline) but a kernel from the same
/// metapackage and source is cached, that one is used, with a warning.
///
/// A [`KernelSource::Suite`]'s private lists are fetched when missing (unless
/// a kernel from it is cached: then nothing touches the network) and fetched
/// again when the package they name can no longer be downloaded (an archive
/// like backports keeps only its newest version).
/// `progress` is called before the slow steps (lists, download, unpack).
pub fn ensure_kernel_from(
    cache: &Path,
    source: &KernelSource,
    metapackage: &str,
    progress: Option<fn(&str)>,
) -> Result<KernelFiles, KernelError> {
    let say = |msg: String| {
        if let Some(p) = progress {
            p(&msg);
        }
    };
    let apt = source.apt(cache);
    let cached = || {
        cached_kernels_from(cache, source, metapackage)
            .into_iter()
            .next()
    };
    if matches!(source, KernelSource::Suite(_)) && !apt.has_lists() {
        if let Some(k) = cached() {
            return Ok(k);
        }
        say(format!("fetching the package lists of {source}"));
        apt.update()?;
    }
    let pkg = match resolve_cached_from(cache, source, metapackage) {
        Ok(p) => p,
        Err(e) => {
            if let Some(k) = cached() {
                tracing::warn!(
                    "cannot resolve {metapackage} in {source} ({e}); using cached {}",
                    k.record.package.name
                );
                return Ok(k);
            }
            return Err(e);
        }
    };
    if let Some(k) = load_record(&kernel_dir(cache, &pkg))? {
        return Ok(k);
    }
    let kernels = cache.join("kernels");
    let _lock = cache::lock(&kernels)?;
    if let Some(k) = load_record(&kernel_dir(cache, &pkg))? {
        return Ok(k); // someone else built it while we waited
    }
    cache::clean_stale(&kernels)?;
    say(format!(
        "fetching and unpacking {} {} (from {metapackage}, {source})",
        pkg.name, pkg.version
    ));
    let (pkg, deb) = match download_deb_from(cache, &apt, &pkg) {
        Ok(deb) => (pkg, deb),
        Err(e) if matches!(source, KernelSource::Suite(_)) => {
            // The lists may name a version the archive no longer has.
            say(format!(
                "refreshing the package lists of {source} ({} {} did not download)",
                pkg.name, pkg.version
            ));
            apt.update()?;
            let newer = resolve_cached_from(cache, source, metapackage)?;
            if newer == pkg {
                return Err(e);
            }
            if let Some(k) = load_record(&kernel_dir(cache, &newer))? {
                return Ok(k);
            }
            let deb = download_deb_from(cache, &apt, &newer)?;
            (newer, deb)
        }
        Err(e) => return Err(e),
    };
    let dir = kernel_dir(cache, &pkg);
    let staging = Staging::new(&kernels, "kernel")?;
    let record = unpack_kernel(&deb, metapackage, source, &pkg, staging.path())?;
    let json = serde_json::to_vec_pretty(&record).map_err(|source| KernelError::Record {
        path: dir.join("kernel.json"),
        source,
    })?;
    cache::write_atomic(&staging.path().join("kernel.json"), &json)?;
    staging.publish(&dir)?;
    Ok(KernelFiles::from_record(&dir, record))
}

fn bad(pkg: &DebianPackage, what: impl Into<String>) -> KernelError {
    KernelError::BadPackage {
        package: pkg.name.clone(),
        what: what.into(),
    }
}

/// Unpack a kernel `.deb` into `dir` and prepare vmlinux and modules.dep.
fn unpack_kernel(
    deb: &Path,
    metapackage: &str,
    source: &KernelSource,
    pkg: &DebianPackage,
    dir: &Path,
) -> Result<KernelRecord, KernelError> {
    let root = dir.join("root");
    let args: [&std::ffi::OsStr; 3] = ["-x".as_ref(), deb.as_os_str(), root.as_os_str()];
    tools::run(tools::DPKG_DEB, &args, None, None)
        .map_err(tool_err(format!("unpacking {}", deb.display())))?;
    let boot = root.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(|_| bad(pkg, "no /boot directory"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("vmlinuz-"))
        .ok_or_else(|| bad(pkg, "no /boot/vmlinuz-*"))?;
    let version = vmlinuz["vmlinuz-".len()..].to_string();
    let modules_rel = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| format!("root/{m}/{version}"))
        .find(|m| dir.join(m).is_dir())
        .ok_or_else(|| bad(pkg, format!("no lib/modules/{version}")))?;

    let bz_path = dir.join("vmlinuz");
    cache::link_or_copy(&boot.join(&vmlinuz), &bz_path)?;
    let bz = std::fs::read(&bz_path).map_err(CacheError::io("reading", &bz_path))?;
    let x = bzimage::extract_vmlinux(&bz).map_err(|source| KernelError::BzImage {
        path: bz_path.clone(),
        source,
    })?;
    let vmlinux = dir.join("vmlinux");
    let pvh_entry = x
        .pvh_entry
        .ok_or_else(|| KernelError::NoPvhNote(vmlinux.clone()))?;
    let elf_entry = crate::image::elf::Elf::parse(&x.vmlinux)
        .map(|e| e.entry)
        .unwrap_or(0);
    std::fs::write(&vmlinux, &x.vmlinux).map_err(CacheError::io("writing", &vmlinux))?;

    let config = format!("root/boot/config-{version}");
    let module_count = modules::generate_modules_dep(&dir.join(&modules_rel))?;
    Ok(KernelRecord {
        metapackage: metapackage.to_string(),
        source: source.id(),
        package: pkg.clone(),
        version,
        version_string: x.header.kernel_version.clone(),
        codec: x.codec,
        pvh_entry,
        elf_entry,
        bzimage: "vmlinuz".into(),
        vmlinux: "vmlinux".into(),
        config,
        modules_dir: modules_rel,
        module_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\nSHA256: abc\n\nPackage: other\nVersion: 9\n";

    #[test]
    fn control_fields_from_first_stanza() {
        assert_eq!(control_field(META, "Version"), Some("6.1.192-2"));
        assert_eq!(control_field(META, "SHA256"), Some("abc"));
        assert_eq!(control_field(META, "Missing"), None);
        assert_eq!(control_field("Package: a\n\nVersion: 2\n", "Version"), None);
    }

    #[test]
    fn finds_the_real_image_package() {
        let d = control_field(META, "Depends").unwrap();
        assert_eq!(
            image_dependency(d).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            image_dependency(
                "initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-amd64 (= 6.12.9-1)"
            )
            .as_deref(),
            Some("linux-image-6.12.9-amd64")
        );
        assert_eq!(image_dependency("linux-image-amd64-signed-template"), None);
        assert_eq!(image_dependency(""), None);
    }

    #[test]
    fn kernel_dir_is_a_safe_name() {
        let pkg = DebianPackage {
            name: "linux-image-6.1.0-56-amd64".into(),
            version: "1:6.1.192~2".into(),
            sha256: String::new(),
        };
        assert_eq!(
            kernel_dir(Path::new("/c"), &pkg),
            PathBuf::from("/c/kernels/linux-image-6.1.0-56-amd64_1_6.1.192_2")
        );
    }

    #[test]
    fn incomplete_kernel_dir_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_record(dir.path()).unwrap().is_none());
        let record = KernelRecord {
            metapackage: "m".into(),
            source: String::new(),
            package: DebianPackage {
                name: "p".into(),
                version: "1".into(),
                sha256: String::new(),
            },
            version: "6.1.0-x".into(),
            version_string: None,
            codec: Codec::Xz,
            pvh_entry: 1,
            elf_entry: 2,
            bzimage: "vmlinuz".into(),
            vmlinux: "vmlinux".into(),
            config: "config".into(),
            modules_dir: "mods".into(),
            module_count: 0,
        };
        std::fs::write(
            dir.path().join("kernel.json"),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        assert!(load_record(dir.path()).unwrap().is_none(), "files missing");
        for f in ["vmlinuz", "vmlinux"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("mods")).unwrap();
        std::fs::write(dir.path().join("mods/modules.dep"), b"").unwrap();
        let k = load_record(dir.path()).unwrap().unwrap();
        assert_eq!(k.vmlinux, dir.path().join("vmlinux"));
        assert_eq!(k.version, "6.1.0-x");
    }

    /// A complete fake kernel directory `kernels/<name>` recorded as from `source`.
    fn fake_kernel(cache: &Path, name: &str, source: &KernelSource) {
        let dir = cache.join("kernels").join(name);
        std::fs::create_dir_all(dir.join("mods")).unwrap();
        for f in ["vmlinuz", "vmlinux", "mods/modules.dep"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let record = KernelRecord {
            metapackage: DEFAULT_METAPACKAGE.into(),
            source: source.id(),
            package: DebianPackage {
                name: name.into(),
                version: "1".into(),
                sha256: String::new(),
            },
            version: name.into(),
            version_string: None,
            codec: Codec::Xz,
            pvh_entry: 1,
            elf_entry: 2,
            bzimage: "vmlinuz".into(),
            vmlinux: "vmlinux".into(),
            config: "config".into(),
            modules_dir: "mods".into(),
            module_count: 0,
        };
        std::fs::write(
            dir.join("kernel.json"),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn sources_do_not_mix_and_a_cached_suite_kernel_needs_no_network() {
        let cache = tempfile::tempdir().unwrap();
        // Nothing listens on port 9 of the loopback: any apt call would fail.
        let mut suite = AptSuite::debian("swaplab-test-suite");
        suite.uri = "http://127.0.0.1:9/debian".into();
        let source = KernelSource::Suite(suite);
        fake_kernel(cache.path(), "host-kernel", &KernelSource::Host);
        fake_kernel(cache.path(), "suite-kernel", &source);

        let host = cached_kernels(cache.path(), DEFAULT_METAPACKAGE);
        assert_eq!(host.len(), 1);
        assert_eq!(host[0].version, "host-kernel");
        let from_suite = cached_kernels_from(cache.path(), &source, DEFAULT_METAPACKAGE);
        assert_eq!(from_suite.len(), 1);
        assert_eq!(from_suite[0].version, "suite-kernel");
        assert_eq!(from_suite[0].record.source, "swaplab-test-suite");

        // No private lists yet, but a kernel from the suite is cached: it is used
        // as is, without apt (which would fail here).
        let k = ensure_kernel_from(cache.path(), &source, DEFAULT_METAPACKAGE, None).unwrap();
        assert_eq!(k.version, "suite-kernel");
        assert!(!cache.path().join("apt").exists(), "apt was set up");

        // A host record written before sources existed has no `source` field.
        let json =
            std::fs::read_to_string(cache.path().join("kernels/host-kernel/kernel.json")).unwrap();
        assert!(!json.contains("\"source\""), "{json}");
    }

    #[test]
    fn a_kernel_release_is_read_from_its_banner() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("vmlinux");
        let mut data = vec![0x7fu8, b'E', b'L', b'F'];
        data.extend(vec![0u8; 5000]);
        data.extend(b"Linux version 6.12.95+deb12-amd64 (debian-kernel@lists.debian.org) #1\0");
        std::fs::write(&k, &data).unwrap();
        assert_eq!(release_of(&k).as_deref(), Some("6.12.95+deb12-amd64"));
        std::fs::write(&k, vec![0x5au8; 8192]).unwrap();
        assert_eq!(release_of(&k), None);
        assert_eq!(release_of(&dir.path().join("missing")), None);
    }
}

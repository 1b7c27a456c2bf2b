//! `swaplab image`: build (or find) the cached guest image and describe it.

use std::io::Write;
use std::path::PathBuf;

use workloads::image::initramfs::Compression;
use workloads::image::kernel::KernelSource;
use workloads::image::modules::ModulesError;
use workloads::image::rootfs::{ensure_rootfs, Rootfs, RootfsOptions};
use workloads::image::{ensure_image, GuestImage, ImageError, ImageOptions, DEFAULT_MODULES};

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Rebuild even when an image with the same inputs is cached.
    #[arg(long)]
    pub force: bool,
    /// Print the manifest (with absolute file paths) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Another kernel module to load at boot, with its dependencies (repeatable).
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// A prebuilt static swaplab-guest instead of building it (also $SWAPLAB_GUEST_BIN).
    #[arg(long, value_name = "PATH")]
    pub guest_bin: Option<PathBuf>,
    /// A static busybox instead of /bin/busybox (also $SWAPLAB_BUSYBOX).
    #[arg(long, value_name = "PATH")]
    pub busybox: Option<PathBuf>,
    /// Initramfs compression.
    #[arg(long, value_name = "none|zstd|gzip", default_value = "none", value_parser = ["none", "zstd", "gzip"])]
    pub compress: String,
    /// Cache directory (default: $SWAPLAB_CACHE, else $XDG_CACHE_HOME/swaplab, else ~/.cache/swaplab).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The guest kernel's Debian package, `NAME` from this host's apt or `NAME@SUITE` from
    /// that suite of Debian's archive (e.g. `linux-image-amd64@bookworm-backports`, 6.12).
    #[arg(long, value_name = "NAME[@SUITE]", default_value = workloads::image::kernel::DEFAULT_METAPACKAGE)]
    pub kernel_package: String,
    /// Also build (or find) the guest root disk: Debian with the applications, an ext4 image.
    #[arg(long)]
    pub root_disk: bool,
}

fn progress(msg: &str) {
    eprintln!("swaplab image: {msg}");
}

/// The options `args` ask for.
pub fn options(args: &ImageArgs) -> anyhow::Result<ImageOptions> {
    let compression: Compression = args.compress.parse().map_err(runner::cli::usage)?;
    let mut modules: Vec<String> = DEFAULT_MODULES.iter().map(|s| s.to_string()).collect();
    for m in &args.modules {
        if m.trim().is_empty() {
            return Err(runner::cli::usage("--module needs a module name"));
        }
        modules.push(m.clone());
    }
    let (metapackage, source) = kernel_package(&args.kernel_package)?;
    Ok(ImageOptions {
        metapackage,
        source,
        cache_dir: args.cache_dir.clone(),
        force: args.force,
        modules,
        guest_bin: args.guest_bin.clone(),
        busybox: args.busybox.clone(),
        compression,
        progress: Some(progress),
        offline: false,
    })
}

/// `NAME` or `NAME@SUITE`: the package and where apt finds it.
fn kernel_package(arg: &str) -> anyhow::Result<(String, KernelSource)> {
    workloads::image::kernel::parse_package_spec(arg)
        .map_err(|e| runner::cli::usage(format!("--kernel-package {e}")))
}

/// The manifest as JSON, with file names made absolute and `dir`/`built` added.
pub fn manifest_json(img: &GuestImage) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(&img.manifest)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("dir".into(), img.dir.display().to_string().into());
        obj.insert("built".into(), img.built.into());
        obj.insert("bzimage".into(), img.bzimage.display().to_string().into());
        obj.insert("vmlinux".into(), img.vmlinux.display().to_string().into());
        obj.insert(
            "initramfs".into(),
            img.initramfs.display().to_string().into(),
        );
    }
    Ok(v)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Run the subcommand.
pub fn run(args: &ImageArgs) -> anyhow::Result<()> {
    match run_inner(args) {
        // `swaplab image --json | head`: the reader left; that is not our failure.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run_inner(args: &ImageArgs) -> anyhow::Result<()> {
    let opts = options(args)?;
    let img = match ensure_image(&opts) {
        Ok(img) => img,
        Err(ImageError::Modules(e @ ModulesError::Unknown { .. })) => {
            return Err(runner::cli::usage(e.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let root = if args.root_disk {
        Some(ensure_rootfs(&RootfsOptions {
            cache_dir: opts.cache_dir.clone(),
            force: args.force,
            progress: Some(progress),
        })?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = manifest_json(&img)?;
        if let (Some(r), Some(obj)) = (&root, v.as_object_mut()) {
            obj.insert("root_disk".into(), root_json(r)?);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let m = &img.manifest;
    let state = if img.built { "built" } else { "up to date" };
    writeln!(out, "guest image {state}: {}", img.dir.display())?;
    writeln!(
        out,
        "  kernel     {} ({} {}, {} bzImage)",
        m.kernel_version, m.kernel_package, m.kernel_package_version, m.kernel_codec
    )?;
    writeln!(
        out,
        "  bzImage    {} ({})",
        img.bzimage.display(),
        mib(m.sizes.bzimage)
    )?;
    writeln!(
        out,
        "  vmlinux    {} ({}, PVH entry {})",
        img.vmlinux.display(),
        mib(m.sizes.vmlinux),
        m.pvh_entry_hex
    )?;
    writeln!(
        out,
        "  initramfs  {} ({}, compression {})",
        img.initramfs.display(),
        mib(m.sizes.initramfs),
        m.initramfs_compression.name()
    )?;
    let mods: Vec<&str> = m.modules.iter().map(|x| x.name.as_str()).collect();
    writeln!(out, "  modules    {}", mods.join(" "))?;
    writeln!(out, "  busybox    {}", m.busybox_version)?;
    let progs: Vec<&str> = m.guest_programs.iter().map(|p| p.name.as_str()).collect();
    writeln!(out, "  programs   {}", progs.join(" "))?;
    writeln!(
        out,
        "  cmdline    {} [swaplab.run=<base64 command>]",
        m.cmdline
    )?;
    if let Some(r) = &root {
        let m = &r.manifest;
        let state = if r.built { "built" } else { "up to date" };
        writeln!(out, "guest root disk {state}: {}", r.image.display())?;
        writeln!(
            out,
            "  ext4       {} ({} allocated), Debian {}, {} packages, built in {:.0} s",
            mib(m.bytes),
            mib(m.allocated),
            m.suite,
            m.installed,
            m.build_s
        )?;
        let apps: Vec<String> = m
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        writeln!(out, "  packages   {}", apps.join(", "))?;
    }
    Ok(())
}

/// The root disk's manifest as JSON, with the image's absolute path and `built`.
fn root_json(r: &Rootfs) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(&r.manifest)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("image".into(), r.image.display().to_string().into());
        obj.insert("built".into(), r.built.into());
    }
    Ok(v)
}

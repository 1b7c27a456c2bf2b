//! `swaplab doctor`: what this host offers, as text or JSON.

use std::path::Path;

use sandbox::host::{probe_host, HostReport, KvmFlavour, SwapArea};

/// Arguments of `swaplab doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print only the test tiers this host has, comma-separated (kvm, userfaultfd,
    /// root, qemu): what `scripts/test.sh` requires to run, never skip.
    #[arg(long, conflicts_with = "json")]
    pub tiers: bool,
}

/// Run `swaplab doctor`.
pub fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    let report = probe_host();
    if args.tiers {
        return runner::cli::print_out(&format!("{}\n", tiers(&report).join(",")));
    }
    if args.json {
        runner::cli::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        runner::cli::print_out(&render(&report))?;
    }
    Ok(())
}

/// The test tiers (`base::tier`) this host has.
pub fn tiers(r: &HostReport) -> Vec<&'static str> {
    use base::tier::Tier;
    [
        (r.kvm != KvmFlavour::None, Tier::Kvm),
        (r.userfaultfd, Tier::Userfaultfd),
        (nix::unistd::geteuid().is_root(), Tier::Root),
        (r.qemu, Tier::Qemu),
        (direct_io(Path::new(base::tier::DISK_TMP)), Tier::DirectIo),
    ]
    .into_iter()
    .filter_map(|(has, tier)| has.then_some(tier.name()))
    .collect()
}

/// Whether `dir` takes `O_DIRECT` files and punches holes in them.
fn direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = tempfile::Builder::new()
        .prefix("swaplab-doctor-")
        .tempfile_in(dir)
    else {
        return false;
    };
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(file.path());
    let punched = nix::fcntl::fallocate(
        file.as_file(),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        4096,
    );
    direct.is_ok() && punched.is_ok()
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The human-readable report.
pub fn render(r: &HostReport) -> String {
    let swaps = if r.swap_active.is_empty() {
        "none active".to_string()
    } else {
        r.swap_active
            .iter()
            .map(|SwapArea { name, size_kib }| format!("{name} ({} MiB)", size_kib / 1024))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = [
        ("host kernel", r.kernel.clone()),
        (
            "cpus / memory",
            format!("{} / {} MiB", r.cpus, r.mem_total_bytes >> 20),
        ),
        ("kvm", format!("{} ({})", json_name(&r.kvm), r.kvm_detail)),
        (
            "stock linux guest",
            format!(
                "{}{}",
                json_name(&r.stock_guest),
                match (r.stock_guest, r.qemu) {
                    (sandbox::host::StockGuest::Sandbox, false) =>
                        " (qemu-system-x86 missing: run scripts/setup.sh)",
                    (sandbox::host::StockGuest::Sandbox, true) =>
                        " (nested sandbox: functional, not timing-grade)",
                    _ => "",
                }
            ),
        ),
        (
            "userfaultfd",
            if r.userfaultfd {
                r.userfaultfd_features.join(" ")
            } else {
                "unavailable".into()
            },
        ),
        (
            "tracefs",
            match (&r.tracefs_mount, r.tracefs_available) {
                (Some(m), _) => format!("mounted at {m}"),
                (None, true) => "available, not mounted".into(),
                (None, false) => "unavailable".into(),
            },
        ),
        ("cgroup memory", json_name(&r.cgroup_memory)),
        ("swap", format!("{swaps}; tools {}", yes(r.swap_tools))),
        ("zram", yes(r.zram).into()),
        (
            "damon / page_idle",
            format!("{} / {}", yes(r.damon), yes(r.page_idle)),
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<18} {v}\n")).collect()
}

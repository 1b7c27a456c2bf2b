//! What this host offers: KVM flavour, userfaultfd features, tracefs, cgroups, swap.
//!
//! Everything here only reads; nothing is mounted, created or changed.

use std::fs;
use std::path::Path;

use serde::Serialize;

/// Which kind of `/dev/kvm` this host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvmFlavour {
    /// VT-x or AMD-V: stock kernels boot natively.
    Hardware,
    /// The PVM module: CPL3 guest code runs natively, stock kernels cannot boot.
    Pvm,
    /// No usable `/dev/kvm`.
    None,
}

/// Where a stock Linux guest can run on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StockGuest {
    /// Directly on this host's `/dev/kvm`.
    Native,
    /// Inside the nested sandbox (an L1 VM under QEMU's software emulation).
    Sandbox,
}

/// Which cgroup memory controller is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMemory {
    /// cgroup v1 memory hierarchy (`memory.limit_in_bytes`).
    V1,
    /// cgroup v2 with the memory controller enabled (`memory.max`).
    V2,
    /// Neither.
    None,
}

/// An active swap area, from `/proc/swaps`.
#[derive(Debug, Clone, Serialize)]
pub struct SwapArea {
    /// Device or file.
    pub name: String,
    /// Size in KiB.
    pub size_kib: u64,
}

/// Everything `swaplab doctor` reports.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// Host kernel release (`uname -r`).
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Host RAM in bytes.
    pub mem_total_bytes: u64,
    /// KVM flavour.
    pub kvm: KvmFlavour,
    /// Why that flavour was chosen.
    pub kvm_detail: String,
    /// Where a stock Linux guest runs.
    pub stock_guest: StockGuest,
    /// Whether QEMU (needed for the nested sandbox) is installed.
    pub qemu: bool,
    /// Whether userfaultfd can be opened.
    pub userfaultfd: bool,
    /// Lower-case names of the userfaultfd features the kernel offers.
    pub userfaultfd_features: Vec<String>,
    /// Whether the kernel has tracefs.
    pub tracefs_available: bool,
    /// Where tracefs is mounted, if it is.
    pub tracefs_mount: Option<String>,
    /// The cgroup memory controller available.
    pub cgroup_memory: CgroupMemory,
    /// Active swap areas.
    pub swap_active: Vec<SwapArea>,
    /// Whether `swapon`/`mkswap` are installed.
    pub swap_tools: bool,
    /// Whether zram is available (a device exists or the module can create one).
    pub zram: bool,
    /// Whether DAMON is built in.
    pub damon: bool,
    /// Whether idle page tracking (`page_idle`) exists.
    pub page_idle: bool,
}

/// Probe the host.
pub fn probe_host() -> HostReport {
    let (kvm, kvm_detail) = kvm_flavour();
    let uffd = userfaultfd_features();
    HostReport {
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        mem_total_bytes: host_mem_total_bytes().unwrap_or(0),
        kvm,
        kvm_detail,
        stock_guest: if kvm == KvmFlavour::Hardware {
            StockGuest::Native
        } else {
            StockGuest::Sandbox
        },
        qemu: which("qemu-system-x86_64"),
        userfaultfd: uffd.is_some(),
        userfaultfd_features: uffd.unwrap_or_default(),
        tracefs_available: read_trim("/proc/filesystems")
            .map(|f| f.lines().any(|l| l.trim_end().ends_with("tracefs")))
            .unwrap_or(false),
        tracefs_mount: tracefs_mount(),
        cgroup_memory: cgroup_memory(),
        swap_active: swap_areas(),
        swap_tools: which("swapon") && which("mkswap"),
        zram: Path::new("/sys/block/zram0").exists()
            || Path::new("/sys/class/zram-control").exists(),
        damon: Path::new("/sys/kernel/mm/damon").exists(),
        page_idle: Path::new("/sys/kernel/mm/page_idle/bitmap").exists(),
    }
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Whether an executable of this name is on `PATH` (or in the sbin directories).
pub fn which(name: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|d| Path::new(d).join(name).is_file());
    found
}

/// Host `MemTotal` in bytes.
pub fn host_mem_total_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_field(&meminfo, "MemTotal").map(|kib| kib * 1024)
}

/// A `/proc/meminfo`-style field in KiB.
pub fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// Decide the KVM flavour from `/dev/kvm`, the loaded modules and the CPU flags.
pub fn kvm_flavour() -> (KvmFlavour, String) {
    if !Path::new("/dev/kvm").exists() {
        return (KvmFlavour::None, "/dev/kvm does not exist".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return (KvmFlavour::Pvm, "kvm_pvm module loaded".into());
    }
    for m in ["kvm_intel", "kvm_amd"] {
        if Path::new("/sys/module").join(m).exists() {
            return (KvmFlavour::Hardware, format!("{m} module loaded"));
        }
    }
    let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |f: &str| {
        flags
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|w| w == f))
    };
    if has("vmx") || has("svm") {
        return (
            KvmFlavour::Hardware,
            "/dev/kvm present and CPU has vmx/svm (KVM built in)".into(),
        );
    }
    (
        KvmFlavour::None,
        "/dev/kvm present but neither PVM nor hardware virtualization found".into(),
    )
}

/// userfaultfd feature bits, by their lower-case names (from `linux/userfaultfd.h`).
pub const UFFD_FEATURES: &[(u64, &str)] = &[
    (1 << 0, "pagefault_flag_wp"),
    (1 << 1, "event_fork"),
    (1 << 2, "event_remap"),
    (1 << 3, "event_remove"),
    (1 << 4, "missing_hugetlbfs"),
    (1 << 5, "missing_shmem"),
    (1 << 6, "event_unmap"),
    (1 << 7, "sigbus"),
    (1 << 8, "thread_id"),
    (1 << 9, "minor_hugetlbfs"),
    (1 << 10, "minor_shmem"),
    (1 << 11, "exact_address"),
    (1 << 12, "wp_hugetlbfs_shmem"),
    (1 << 13, "wp_unpopulated"),
    (1 << 14, "poison"),
    (1 << 15, "wp_async"),
    (1 << 16, "move"),
];

/// Names for a feature mask.
pub fn uffd_feature_names(mask: u64) -> Vec<String> {
    UFFD_FEATURES
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, n)| (*n).to_string())
        .collect()
}

/// Ask the kernel which userfaultfd features it supports; `None` if userfaultfd is
/// unusable (neither the syscall nor `/dev/userfaultfd` gives one).
pub fn userfaultfd_features() -> Option<Vec<String>> {
    swapper::uffd::Uffd::offered_features(swapper::uffd::Source::Any)
        .ok()
        .map(uffd_feature_names)
}

fn tracefs_mount() -> Option<String> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (_dev, dir, fstype) = (it.next()?, it.next()?, it.next()?);
        (fstype == "tracefs").then(|| dir.to_string())
    })
}

/// Which memory controller is usable, preferring v2 when it is enabled.
pub fn cgroup_memory() -> CgroupMemory {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 && f[2] == "cgroup2" {
            let ctrl = Path::new(f[1]).join("cgroup.controllers");
            if read_trim(ctrl).is_some_and(|c| c.split_whitespace().any(|w| w == "memory")) {
                return CgroupMemory::V2;
            }
        }
    }
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 4
            && f[2] == "cgroup"
            && f[3].split(',').any(|o| o == "memory")
            && Path::new(f[1]).join("memory.limit_in_bytes").exists()
        {
            return CgroupMemory::V1;
        }
    }
    CgroupMemory::None
}

fn swap_areas() -> Vec<SwapArea> {
    fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(SwapArea {
                name: f.first()?.to_string(),
                size_kib: f.get(2)?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_names_map_bits() {
        assert_eq!(uffd_feature_names(0), Vec::<String>::new());
        assert_eq!(
            uffd_feature_names((1 << 16) | (1 << 15) | (1 << 8)),
            vec!["thread_id", "wp_async", "move"]
        );
    }

    #[test]
    fn meminfo_parsing() {
        let t = "MemTotal:       24576000 kB\nMemFree: 100 kB\n";
        assert_eq!(meminfo_field(t, "MemTotal"), Some(24_576_000));
        assert_eq!(meminfo_field(t, "MemFree"), Some(100));
        assert_eq!(meminfo_field(t, "Nope"), None);
    }
}

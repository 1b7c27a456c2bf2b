//! The kernel as the host swapper (`host.swapper = "kernel"`): what a
//! QEMU/KVM host does, and what VSwapper measured, beside swaplab's own
//! userfaultfd swapper on the same guest and workload.
//!
//! - [`KernelHost::enter`] sweeps what a killed earlier run left
//!   ([`swapper::kswap::sweep_leftovers`]), makes a swap device for the run
//!   (zram with lz4 for `store = "memory"` or `"lz4"`, a swap file for
//!   `store = "file"`) and a memory cgroup below this process's own, and moves
//!   this process into it *before* guest RAM is mapped and touched: memory is
//!   charged to the cgroup of the task that first touches it, so every guest
//!   page, KVM's structures for the VM and what the VMM allocates for the run
//!   are charged there. (What the process touched before stays charged where
//!   it was: only the run's own memory counts.)
//! - [`KernelHost::set_limit`], just before the vCPUs run: the cgroup's
//!   charge so far, less the guest RAM resident then (the kernel and initrd
//!   the loader wrote), is the VMM's overhead for the run; the limit becomes
//!   `host.limit + overhead + growth allowance` ([`growth_allowance`]), so
//!   guest RAM gets the resident budget the userfaultfd swapper would give it.
//! - While the guest runs, [`KernelGauge`] reads the cgroup's major faults
//!   (its swap-ins) and the system's `pswpout` (its evictions) into the
//!   timeline.
//! - [`KernelHost::finish`] reads the peaks and `memory.stat`, then removes
//!   the cgroup (this process moves back first) and the swap device, and
//!   checks that nothing of them remains. Dropping a [`KernelHost`] on any
//!   other path (an error, Ctrl-C or SIGTERM stopping the run) removes them
//!   too; after a SIGKILL the next kernel-swapper run sweeps them (their names
//!   carry the dead process's pid).
//!
//! What the kernel cannot show: it keeps no record of which page it wrote to
//! swap unchanged (silent writes) or read back only to be overwritten (false
//! reads); those rows read "not observable". Double paging and stale reads
//! are found by the blk worker's own major faults during each request
//! ([`vmm::virtio::blk::BlkConfig::count_major_faults`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use scenario::{HostConfig, StoreChoice};
use serde::{Deserialize, Serialize};
use swapper::kswap::{
    sweep_leftovers, CgroupVersion, KernelSwap, MemoryStat, SwapKind, SweepReport,
};
use vmm::HostRegion;

/// Errors of the kernel host swapper.
#[derive(Debug, thiserror::Error)]
pub enum KernelHostError {
    /// Not root.
    #[error(
        "host.swapper = \"kernel\" needs root (it makes a swap device and a memory cgroup for \
         the run)"
    )]
    NotRoot,
    /// Making, reading or removing the swap device or the cgroup failed.
    #[error("kernel host swapper")]
    Kswap(#[from] swapper::kswap::KswapError),
    /// L1's scratch disk could not be set up for the swap file.
    #[error("store = \"file\" in the nested sandbox: {0}")]
    Scratch(String),
    /// Something of the run remained after it was removed.
    #[error("the kernel host swapper's cleanup left {0} behind")]
    Leftover(String),
}

/// The VMM's room to grow after the vCPUs start: KVM's page tables and
/// reverse maps for guest memory (`mem / 64`; measured ≈ `mem / 100` by the
/// probe's kernel baseline) and 4 MiB for what the run's own bookkeeping
/// touches as it goes (trace records drained into the result, the timeline).
/// Whatever of it the VMM does not use, guest RAM may: the report gives the
/// guest's resident peak beside its budget.
pub fn growth_allowance(guest_mem: u64) -> u64 {
    (guest_mem / 64 + (4 << 20)).div_ceil(4096) * 4096
}

impl KernelHostReport {
    /// Splits `swap_ins` by who took them: the vCPUs' major faults
    /// (`vcpu_faults`), the swap disk worker's during requests
    /// (`device_faults`), the rest; records the guest's resident peak.
    pub fn attribute(&mut self, vcpu_faults: u64, device_faults: u64, resident_peak: u64) {
        self.swap_ins_vcpu = vcpu_faults;
        self.swap_ins_device = device_faults;
        self.swap_ins_other = self.swap_ins.saturating_sub(vcpu_faults + device_faults);
        self.guest_resident_peak_bytes = resident_peak;
    }
}

/// Where `store = "file"` puts its swap file: `SWAPLAB_SWAPFILE_DIR`; in the
/// nested sandbox, L1's scratch disk ([`sandbox::scratch::swapfile_dir`]);
/// else the system's temporary directory. It must be on a file system that
/// holds swap files, such as ext4 or xfs (tmpfs and 9p do not).
pub fn swapfile_dir() -> Result<PathBuf, KernelHostError> {
    if let Some(d) = std::env::var_os("SWAPLAB_SWAPFILE_DIR") {
        return Ok(PathBuf::from(d));
    }
    if sandbox::in_sandbox() {
        return sandbox::scratch::swapfile_dir().map_err(KernelHostError::Scratch);
    }
    Ok(std::env::temp_dir())
}

/// What the kernel did in a run, for `result.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelHostReport {
    /// `v1` or `v2`.
    pub cgroup_version: String,
    /// The run's cgroup (removed at its end).
    pub cgroup: String,
    /// `zram (lz4)` or `file`.
    pub swap_kind: String,
    /// The swap device or file (removed at the run's end).
    pub swap_device: String,
    /// Its size.
    pub swap_bytes: u64,
    /// The guest's resident budget (`host.limit`).
    pub guest_limit_bytes: u64,
    /// What the cgroup held just before the vCPUs ran, less resident guest RAM.
    pub vmm_overhead_bytes: u64,
    /// Room left for the VMM to grow ([`growth_allowance`]).
    pub growth_allowance_bytes: u64,
    /// The cgroup's limit: budget + overhead + allowance.
    pub cgroup_limit_bytes: u64,
    /// The cgroup's highest charge (VMM included) while the guest ran, or
    /// over the cgroup's whole life (page cache of the boot files included)
    /// where the kernel cannot reset it ([`Self::cgroup_peak_from_start`]).
    pub cgroup_peak_bytes: u64,
    /// Whether `cgroup_peak_bytes` counts from the vCPUs' start (the peak
    /// was reset then: v1, or v2 since Linux 6.12) rather than the cgroup's
    /// creation.
    #[serde(default)]
    pub cgroup_peak_from_start: bool,
    /// The highest amount of the cgroup's memory in swap (`memory.swap.peak`,
    /// v2), if the kernel says.
    pub swap_peak_bytes: Option<u64>,
    /// Major faults charged to the cgroup during the run: the kernel's
    /// swap-ins of guest RAM, whoever took them (vCPU, blk worker, KVM's
    /// async page-fault workers).
    pub swap_ins: u64,
    /// Pages written to swap during the run, system wide (`pswpout`; the
    /// run's device has the highest priority, and v2's `memory.stat` does not
    /// count swap-outs per cgroup).
    pub swap_outs: u64,
    /// Pages read from swap during the run, system wide (`pswpin`).
    pub swap_ins_system: u64,
    /// Of `swap_ins`: the vCPU threads' major faults (KVM faulting guest
    /// RAM in for the vCPU it runs on).
    pub swap_ins_vcpu: u64,
    /// Of `swap_ins`: the swap disk worker's, during its requests.
    pub swap_ins_device: u64,
    /// The rest of `swap_ins`, which no thread's count shows: KVM's async
    /// page-fault workers (kernel threads faulting guest RAM in while the
    /// vCPU runs on), and swap reads the cgroup counts when they start but
    /// no thread counts as a major fault — KVM's first, non-blocking try at
    /// a fault starts the read and returns; its retry finds the page in the
    /// swap cache, a minor fault (in the sandbox no async page fault fired,
    /// and this was 0.4–47 % of `swap_ins`).
    pub swap_ins_other: u64,
    /// The highest guest RAM resident in any timeline sample (`mincore`).
    pub guest_resident_peak_bytes: u64,
    /// Selected `memory.stat` counters at the end (hierarchical on v1).
    pub memory_stat: BTreeMap<String, u64>,
    /// What a killed earlier run had left and this run removed.
    pub swept: SweepReport,
}

/// The counters a sample reads, from a fixed starting point.
#[derive(Debug, Clone)]
pub struct KernelGauge {
    stat: PathBuf,
    version: CgroupVersion,
    base_majflt: u64,
    base_pswpout: u64,
    base_pswpin: u64,
}

/// `/proc/vmstat`'s `pswpin` and `pswpout`.
fn swap_counts() -> (u64, u64) {
    let v = crate::probe_run::kernel::vmstat(&["pswpin", "pswpout"]);
    (
        v.get("pswpin").copied().unwrap_or(0),
        v.get("pswpout").copied().unwrap_or(0),
    )
}

impl KernelGauge {
    fn new(stat: PathBuf, version: CgroupVersion) -> Self {
        let mut g = Self {
            stat,
            version,
            base_majflt: 0,
            base_pswpout: 0,
            base_pswpin: 0,
        };
        g.base_majflt = g.majflt();
        (g.base_pswpin, g.base_pswpout) = swap_counts();
        g
    }

    fn majflt(&self) -> u64 {
        MemoryStat::read(&self.stat, self.version)
            .get("pgmajfault")
            .unwrap_or(0)
    }

    /// (swap-ins charged to the cgroup, pages written to swap) since the
    /// vCPUs started.
    pub fn sample(&self) -> (u64, u64) {
        let (_, out) = swap_counts();
        (
            self.majflt().saturating_sub(self.base_majflt),
            out.saturating_sub(self.base_pswpout),
        )
    }
}

/// The swap device and cgroup of one run, with this process inside; see the
/// module docs. Dropping it removes both.
#[derive(Debug)]
pub struct KernelHost {
    swap: Option<KernelSwap>,
    /// Where the sweeps look for a killed run's swap files.
    sweep_dirs: Vec<PathBuf>,
    /// v2's `memory.peak`, held open: writing to it resets the peak this
    /// descriptor reads (Linux 6.12 on).
    peak: Option<std::fs::File>,
    report: KernelHostReport,
    guest_mem: u64,
    gauge: Option<KernelGauge>,
}

impl KernelHost {
    /// Sweeps, makes the swap device and the cgroup, and moves this process
    /// into it. `guest_mem` sizes the swap device (all of guest RAM fits).
    pub fn enter(h: &HostConfig, guest_mem: u64) -> Result<Self, KernelHostError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(KernelHostError::NotRoot);
        }
        // The swap file's directory is only made (formatted, in the
        // sandbox) for the file store.
        let dir = match h.store {
            StoreChoice::File => Some(swapfile_dir()?),
            // Redis is refused for the kernel swapper by validation.
            StoreChoice::Memory | StoreChoice::Lz4 | StoreChoice::Redis => None,
        };
        // A killed run's swap file is where this run's would be; for zram,
        // where one would be without making anything.
        let sweep = dir
            .clone()
            .or_else(|| match std::env::var_os("SWAPLAB_SWAPFILE_DIR") {
                Some(d) => Some(PathBuf::from(d)),
                None if sandbox::in_sandbox() => {
                    Some(PathBuf::from(sandbox::scratch::MOUNT)).filter(|d| d.is_dir())
                }
                None => Some(std::env::temp_dir()),
            });
        let dirs: Vec<&Path> = sweep.iter().map(PathBuf::as_path).collect();
        let swept = sweep_leftovers(&dirs)?;
        let sweep_dirs = sweep.into_iter().collect();
        let (kind, label) = match dir {
            None => (SwapKind::Zram, "zram (lz4)"),
            Some(dir) => (SwapKind::File { dir }, "file"),
        };
        // A loose limit until `set_limit` has measured the VMM's overhead.
        let loose = h.limit.bytes() + guest_mem;
        let swap_bytes = guest_mem + (64 << 20);
        let ks = KernelSwap::new(loose, kind, swap_bytes)?;
        let report = KernelHostReport {
            cgroup_version: match ks.cgroup.version() {
                CgroupVersion::V1 => "v1",
                CgroupVersion::V2 => "v2",
            }
            .into(),
            cgroup: ks.cgroup.path().display().to_string(),
            swap_kind: label.into(),
            swap_device: ks.swap.path().display().to_string(),
            swap_bytes: ks.swap.size_bytes(),
            guest_limit_bytes: h.limit.bytes(),
            swept,
            ..KernelHostReport::default()
        };
        tracing::info!(
            "kernel host swapper: cgroup {}, swapping to {}",
            report.cgroup,
            report.swap_device
        );
        let me = Self {
            swap: Some(ks),
            sweep_dirs,
            peak: None,
            report,
            guest_mem,
            gauge: None,
        };
        me.cgroup().add_process(std::process::id())?;
        Ok(me)
    }

    fn cgroup(&self) -> &swapper::kswap::MemoryCgroup {
        &self.swap.as_ref().expect("held until finish").cgroup
    }

    /// Measures the VMM's overhead (the cgroup's charge less its page cache
    /// and less the resident guest RAM in `regions`) and sets the limit; the
    /// counters count from here. Call it just before the vCPUs run.
    ///
    /// Page cache is left out: reading the guest kernel and initrd put tens
    /// of MiB of it in the cgroup (69 MiB in the sandbox), which the kernel
    /// reclaims first, so counting it as overhead would hand guest RAM that
    /// much more than its budget.
    pub fn set_limit(&mut self, regions: &[HostRegion]) -> Result<KernelGauge, KernelHostError> {
        let cg = self.cgroup();
        let v1 = cg.version() == CgroupVersion::V1;
        let usage = cg.usage_bytes()?;
        let stat = cg.stat().unwrap_or_default();
        let cache = stat.get(if v1 { "cache" } else { "file" }).unwrap_or(0);
        let resident: u64 = regions
            .iter()
            .map(|r| hostsys::mem::resident_pages(r.host_addr, r.len).unwrap_or(0) * 4096)
            .sum();
        let overhead = usage.saturating_sub(cache).saturating_sub(resident);
        let allowance = growth_allowance(self.guest_mem);
        let limit = self.report.guest_limit_bytes + overhead + allowance;
        cg.set_limit_bytes(limit)?;
        let gauge = KernelGauge::new(cg.path().join("memory.stat"), cg.version());
        self.report.cgroup_peak_from_start = self.reset_peak();
        self.report.vmm_overhead_bytes = overhead;
        self.report.growth_allowance_bytes = allowance;
        self.report.cgroup_limit_bytes = limit;
        self.gauge = Some(gauge.clone());
        Ok(gauge)
    }

    /// Resets the cgroup's peak charge, if the kernel can: v1's
    /// `memory.max_usage_in_bytes` takes a 0; v2's `memory.peak` takes any
    /// write and then reads the peak since, through the same descriptor.
    fn reset_peak(&mut self) -> bool {
        use std::io::Write;
        let path = self.cgroup().path().to_path_buf();
        if self.cgroup().version() == CgroupVersion::V1 {
            return std::fs::write(path.join("memory.max_usage_in_bytes"), "0").is_ok();
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path.join("memory.peak"));
        let Ok(mut f) = f else {
            return false;
        };
        let reset = f.write_all(b"reset\n").is_ok();
        if reset {
            self.peak = Some(f);
        }
        reset
    }

    /// The peak charge: through the reset descriptor if there is one.
    fn peak_bytes(&mut self) -> u64 {
        use std::io::{Read, Seek};
        if let Some(f) = self.peak.as_mut() {
            let mut s = String::new();
            if f.rewind().is_ok() && f.read_to_string(&mut s).is_ok() {
                if let Ok(v) = s.trim().parse() {
                    return v;
                }
            }
        }
        self.cgroup().peak_bytes().unwrap_or(0)
    }

    /// Reads what the kernel did, removes the cgroup (moving this process
    /// back) and the swap device, and checks that they are gone.
    pub fn finish(mut self) -> Result<KernelHostReport, KernelHostError> {
        let mut r = std::mem::take(&mut self.report);
        r.cgroup_peak_bytes = self.peak_bytes();
        self.peak = None;
        if let Some(g) = &self.gauge {
            let cg = self.cgroup();
            (r.swap_ins, r.swap_outs) = g.sample();
            r.swap_ins_system = swap_counts().0.saturating_sub(g.base_pswpin);
            r.swap_peak_bytes = std::fs::read_to_string(cg.path().join("memory.swap.peak"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let stat = cg.stat().unwrap_or_default();
            r.memory_stat = [
                "anon",
                "file",
                "shmem",
                "swapcached",
                "pgmajfault",
                "pgscan",
                "pgsteal",
                "workingset_refault_anon",
                "swpin_zero",
                "swpout_zero",
                "rss",
                "swap",
            ]
            .into_iter()
            .filter_map(|k| Some((k.to_string(), stat.get(k)?)))
            .collect();
        }
        let left = self.swap.take().expect("held until finish").remove();
        if !left.is_empty() {
            return Err(KernelHostError::Leftover(left.join(", ")));
        }
        // Once more at the end: twice in CI a killed run's cgroup could not
        // be removed at the start of the next run and was empty by its end
        // (most likely KVM's kernel threads for the killed VM, which join the
        // VMM's cgroups, still finishing).
        let dirs: Vec<&Path> = self.sweep_dirs.iter().map(PathBuf::as_path).collect();
        let again = sweep_leftovers(&dirs)?;
        r.swept.merge(again);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_covers_kvm_and_the_runs_bookkeeping() {
        let a = growth_allowance(512 << 20);
        assert_eq!(a % 4096, 0);
        assert_eq!(a, (8 << 20) + (4 << 20));
        assert!(growth_allowance(1 << 30) > a);
    }
}

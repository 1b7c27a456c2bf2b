//! Removing what a crashed run left behind.

use super::cgroup::{evacuate_and_remove, hierarchy};
use super::error::KswapError;
use super::names::{pid_alive, pid_in_name, PREFIX};
use super::swapdev::{active_swaps, read_label, release_zram, swapoff, SWAPFILE_PREFIX};
use crate::store::file::FILE_PREFIX;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// What [`sweep_leftovers`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    /// Swap devices and files disabled.
    pub swaps_disabled: Vec<PathBuf>,
    /// zram devices reset (and removed unless zram0).
    pub zram_released: Vec<u32>,
    /// Cgroups removed.
    pub cgroups_removed: Vec<PathBuf>,
    /// Cgroups of dead owners left alone because processes still run in
    /// them.
    pub cgroups_busy: Vec<PathBuf>,
    /// Files deleted (swap files, swapper store files).
    pub files_removed: Vec<PathBuf>,
}

impl SweepReport {
    /// Adds what a later sweep removed; a cgroup it removed is no longer
    /// busy.
    pub fn merge(&mut self, later: SweepReport) {
        self.cgroups_busy
            .retain(|c| !later.cgroups_removed.contains(c));
        self.swaps_disabled.extend(later.swaps_disabled);
        self.zram_released.extend(later.zram_released);
        self.cgroups_removed.extend(later.cgroups_removed);
        for c in later.cgroups_busy {
            if !self.cgroups_busy.contains(&c) {
                self.cgroups_busy.push(c);
            }
        }
        self.files_removed.extend(later.files_removed);
    }
}

fn dead_owner(name: &str, prefix: &str) -> bool {
    pid_in_name(name, prefix).is_some_and(|pid| !pid_alive(pid))
}

/// `PF_KTHREAD` in a task's `stat` flags.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether process `pid` (text) is a kernel thread, or no longer exists.
fn kernel_thread_or_gone(pid: &str) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // pid (comm) state ppid pgrp session tty_nr tpgid flags ...; comm may
    // hold spaces and parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

fn zram_id(p: &Path) -> Option<u32> {
    p.file_name()?.to_str()?.strip_prefix("zram")?.parse().ok()
}

/// Removes swaplab swap devices, swap files, store files (in `dirs`) and
/// memory cgroups whose creating process no longer exists. Resources of
/// live processes are never touched, nor cgroups that still hold processes.
pub fn sweep_leftovers(dirs: &[&Path]) -> Result<SweepReport, KswapError> {
    let mut report = SweepReport::default();
    // 1. Active swaps: zram devices carry our label, files our name.
    for (path, _, _) in active_swaps() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let ours = if let Some(id) = zram_id(&path) {
            let stale = read_label(&path).is_some_and(|l| dead_owner(&l, PREFIX));
            if stale && swapoff(&path).is_ok() {
                release_zram(id, true);
                report.zram_released.push(id);
            }
            stale
        } else if dead_owner(name, SWAPFILE_PREFIX) && swapoff(&path).is_ok() {
            if fs::remove_file(&path).is_ok() {
                report.files_removed.push(path.clone());
            }
            true
        } else {
            false
        };
        if ours {
            report.swaps_disabled.push(path);
        }
    }
    // 2. Configured but not enabled zram devices (crash before swapon).
    let active: Vec<PathBuf> = active_swaps().into_iter().map(|(p, _, _)| p).collect();
    if let Ok(entries) = fs::read_dir("/sys/block") {
        for e in entries.flatten() {
            let dev = PathBuf::from("/dev").join(e.file_name());
            let Some(id) = zram_id(&dev) else { continue };
            if active.contains(&dev) || report.zram_released.contains(&id) {
                continue;
            }
            if read_label(&dev).is_some_and(|l| dead_owner(&l, PREFIX)) {
                release_zram(id, true);
                report.zram_released.push(id);
            }
        }
    }
    // 3. Cgroups named swaplab-<dead pid>-<n> anywhere in the memory
    //    hierarchy (it is small: walk four levels).
    if let Ok((mount, _)) = hierarchy() {
        let mut stack = vec![(mount, 0)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if dead_owner(&name, PREFIX) {
                    let procs = fs::read_to_string(p.join("cgroup.procs")).unwrap_or_default();
                    // Kernel threads a dead VMM's KVM put there (its NX
                    // huge-page recovery worker joins the VMM's cgroups)
                    // leave when its VM is destroyed: wait for them.
                    let removed = procs.lines().all(|l| kernel_thread_or_gone(l.trim()))
                        && evacuate_and_remove(&p, &HashMap::new(), &dir).is_ok();
                    if removed {
                        report.cgroups_removed.push(p);
                    } else {
                        report.cgroups_busy.push(p);
                    }
                } else if depth < 4 {
                    stack.push((p, depth + 1));
                }
            }
        }
    }
    // 4. Files in the given directories.
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = dead_owner(&name, SWAPFILE_PREFIX) || dead_owner(&name, FILE_PREFIX);
            if stale && !active.contains(&e.path()) && fs::remove_file(e.path()).is_ok() {
                report.files_removed.push(e.path());
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_are_told_from_processes() {
        // kthreadd is pid 2 on Linux; this process is not a kernel thread.
        assert!(kernel_thread_or_gone("2"));
        assert!(!kernel_thread_or_gone(&std::process::id().to_string()));
        assert!(kernel_thread_or_gone("999999999"));
    }

    #[test]
    fn a_later_sweep_adds_what_it_removed_and_unbusies_cgroups() {
        let cg = PathBuf::from("/sys/fs/cgroup/swaplab-9-0");
        let mut first = SweepReport {
            cgroups_busy: vec![cg.clone()],
            zram_released: vec![3],
            ..SweepReport::default()
        };
        first.merge(SweepReport {
            cgroups_removed: vec![cg.clone()],
            ..SweepReport::default()
        });
        assert_eq!(first.cgroups_removed, [cg]);
        assert!(first.cgroups_busy.is_empty());
        assert_eq!(first.zram_released, [3]);
    }
}

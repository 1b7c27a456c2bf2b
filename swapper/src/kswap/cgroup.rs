//! Memory cgroup guard (v1 `memory` hierarchy or v2 with the memory
//! controller).

use super::error::{io_err, KswapError};
use super::names::PREFIX;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Which cgroup API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum CgroupVersion {
    /// cgroup v1, `memory` hierarchy.
    V1,
    /// cgroup v2 (unified) with the memory controller.
    V2,
}

/// Finds the memory hierarchy: (mount point, version).
pub(crate) fn hierarchy() -> Result<(PathBuf, CgroupVersion), KswapError> {
    let mi = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading", Path::new("/proc/self/mountinfo")))?;
    let mut v2 = None;
    for line in mi.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount = pre.split_whitespace().nth(4).unwrap_or("");
        let mut post = post.split_whitespace();
        let (fstype, opts) = (post.next().unwrap_or(""), post.nth(1).unwrap_or(""));
        if fstype == "cgroup" && opts.split(',').any(|o| o == "memory") {
            return Ok((PathBuf::from(mount), CgroupVersion::V1));
        }
        if fstype == "cgroup2" {
            let ctl =
                fs::read_to_string(Path::new(mount).join("cgroup.controllers")).unwrap_or_default();
            if ctl.split_whitespace().any(|c| c == "memory") {
                v2 = Some(PathBuf::from(mount));
            }
        }
    }
    v2.map(|m| (m, CgroupVersion::V2))
        .ok_or(KswapError::NoMemoryController)
}

/// The cgroup directory of process `pid` in the memory hierarchy.
pub(crate) fn cgroup_of(pid: u32, mount: &Path, version: CgroupVersion) -> Option<PathBuf> {
    let s = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = s.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
        let ok = match version {
            CgroupVersion::V1 => ctl.split(',').any(|c| c == "memory"),
            CgroupVersion::V2 => ctl.is_empty(),
        };
        ok.then(|| path.to_string())
    })?;
    Some(mount.join(rel.trim_start_matches('/')))
}

/// A memory cgroup with a limit; removed (after moving its processes back)
/// on drop.
#[derive(Debug)]
pub struct MemoryCgroup {
    path: PathBuf,
    version: CgroupVersion,
    mount: PathBuf,
    origins: Mutex<HashMap<u32, PathBuf>>,
}

impl MemoryCgroup {
    /// Creates `swaplab-<pid>-<n>` below the calling process's own memory
    /// cgroup, limited to `limit_bytes`.
    pub fn create(limit_bytes: u64) -> Result<Self, KswapError> {
        let (mount, version) = hierarchy()?;
        let parent = cgroup_of(std::process::id(), &mount, version).unwrap_or(mount.clone());
        Self::create_in(&parent, limit_bytes)
    }

    /// Creates the cgroup below `parent` (a directory of the memory
    /// hierarchy).
    pub fn create_in(parent: &Path, limit_bytes: u64) -> Result<Self, KswapError> {
        let (mount, version) = hierarchy()?;
        let pid = std::process::id();
        let mut n = 0;
        let path = loop {
            let p = parent.join(format!("{PREFIX}{pid}-{n}"));
            match fs::create_dir(&p) {
                Ok(()) => break p,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(io_err("creating cgroup", &p)(e)),
            }
        };
        // From here on, dropping `cg` removes the directory.
        let cg = Self {
            path,
            version,
            mount,
            origins: Mutex::default(),
        };
        let limit_file = match version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => {
                // Best effort: the controller must be enabled for children.
                let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory");
                "memory.max"
            }
        };
        cg.write(limit_file, &limit_bytes.to_string())?;
        Ok(cg)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), KswapError> {
        let p = self.path.join(file);
        fs::write(&p, value).map_err(io_err("writing", &p))
    }

    fn read(&self, file: &str) -> Result<String, KswapError> {
        let p = self.path.join(file);
        fs::read_to_string(&p).map_err(io_err("reading", &p))
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup API in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Moves process `pid` (all its threads) into the cgroup; it goes back
    /// to its current cgroup when the guard drops.
    pub fn add_process(&self, pid: u32) -> Result<(), KswapError> {
        if let Some(origin) = cgroup_of(pid, &self.mount, self.version) {
            self.origins
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(pid)
                .or_insert(origin);
        }
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Processes currently in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        self.read("cgroup.procs")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The memory limit in bytes.
    pub fn limit_bytes(&self) -> Result<u64, KswapError> {
        let f = match self.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        };
        Ok(self.read(f)?.trim().parse().unwrap_or(u64::MAX))
    }

    /// Sets the memory limit.
    pub fn set_limit_bytes(&self, bytes: u64) -> Result<(), KswapError> {
        let f = match self.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        };
        self.write(f, &bytes.to_string())
    }

    /// Current memory charged to the cgroup.
    pub fn usage_bytes(&self) -> Result<u64, KswapError> {
        let f = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        Ok(self.read(f)?.trim().parse().unwrap_or(0))
    }

    /// Highest memory charge seen.
    pub fn peak_bytes(&self) -> Result<u64, KswapError> {
        let f = match self.version {
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
            CgroupVersion::V2 => "memory.peak",
        };
        Ok(self.read(f)?.trim().parse().unwrap_or(0))
    }

    /// `memory.stat` as name → value.
    pub fn stat(&self) -> Result<MemoryStat, KswapError> {
        Ok(MemoryStat::parse(&self.read("memory.stat")?, self.version))
    }

    /// Sets `memory.swappiness` (v1 only; ignored on v2).
    pub fn set_swappiness(&self, v: u32) -> Result<(), KswapError> {
        match self.version {
            CgroupVersion::V1 => self.write("memory.swappiness", &v.to_string()),
            CgroupVersion::V2 => Ok(()),
        }
    }
}

/// A cgroup's `memory.stat`: name → value.
#[derive(Debug, Clone, Default)]
pub struct MemoryStat {
    values: HashMap<String, u64>,
    v1: bool,
}

impl MemoryStat {
    /// Parses `memory.stat`'s text, written by a cgroup of `version`.
    pub fn parse(text: &str, version: CgroupVersion) -> Self {
        let values = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect();
        Self {
            values,
            v1: version == CgroupVersion::V1,
        }
    }

    /// Reads the `memory.stat` at `path`; empty where it cannot be read.
    pub fn read(path: &Path, version: CgroupVersion) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default(), version)
    }

    /// `key`, in its hierarchical `total_` form on v1 where it has one.
    pub fn get(&self, key: &str) -> Option<u64> {
        let total = self.v1.then(|| self.values.get(&format!("total_{key}")));
        total.flatten().or_else(|| self.values.get(key)).copied()
    }
}

/// Moves every process of `dir` to its recorded origin (or `fallback`) and
/// removes the directory. Used by the guard and by the sweep.
pub(crate) fn evacuate_and_remove(
    dir: &Path,
    origins: &HashMap<u32, PathBuf>,
    fallback: &Path,
) -> Result<(), KswapError> {
    // A few rounds: processes may fork while being moved, and rmdir fails
    // with EBUSY until exiting tasks are gone.
    let mut last = None;
    for round in 0..200 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            let target = origins
                .get(&pid)
                .filter(|p| p.is_dir())
                .map(PathBuf::as_path)
                .unwrap_or(fallback);
            let _ = fs::write(target.join("cgroup.procs"), pid.to_string());
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        if round > 10 {
            // Exiting tasks take a scheduler tick or two to leave.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    Err(io_err("removing cgroup", dir)(
        last.expect("at least one attempt"),
    ))
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let origins = std::mem::take(&mut *self.origins.lock().unwrap_or_else(|e| e.into_inner()));
        let parent = self.path.parent().unwrap_or(&self.mount).to_path_buf();
        if let Err(e) = evacuate_and_remove(&self.path, &origins, &parent) {
            tracing::error!("kswap: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stat_takes_v1_totals_and_v2_plain_values() {
        let text = "pgmajfault 3\ntotal_pgmajfault 7\nswap 12\nbroken x\n";
        let v1 = MemoryStat::parse(text, CgroupVersion::V1);
        assert_eq!(v1.get("pgmajfault"), Some(7));
        assert_eq!(v1.get("swap"), Some(12));
        assert_eq!(v1.get("broken"), None);
        assert_eq!(v1.get("absent"), None);
        let v2 = MemoryStat::parse(text, CgroupVersion::V2);
        assert_eq!(v2.get("pgmajfault"), Some(3));
    }
}

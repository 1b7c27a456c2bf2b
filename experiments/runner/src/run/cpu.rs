//! Where the host's CPU time went during a run, thread by thread: the vCPUs,
//! the swapper's evictor and fault handlers, the device workers. Read from
//! `/proc/self/task/*/stat` on every sample (and once at the start), so a
//! thread that ends between samples loses at most one sample period of its
//! time; summed by thread name (`vcpu0`, `swapper-evict`, `vmm-blk`, …) into
//! `result.json`'s `host_cpu`. In the nested sandbox it shows how the one L1
//! CPU was shared between the guest and the swapper (perf's per-thread view,
//! without perf).

use std::collections::BTreeMap;
use std::path::Path;

/// One thread's CPU time, from its `stat` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Ticks {
    user: u64,
    sys: u64,
    major_faults: u64,
}

/// CPU time of the threads of one name during a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThreadCpu {
    /// The thread name (`comm`).
    pub name: String,
    /// Threads of that name seen.
    pub threads: u32,
    /// User time, ms (a vCPU's guest time is counted here by the kernel).
    pub user_ms: u64,
    /// System time, ms.
    pub sys_ms: u64,
    /// Major page faults (the kernel's swap-ins this thread waited for, or
    /// KVM took for it; see [`hostsys::proc::TaskStat::major_faults`]).
    #[serde(default)]
    pub major_faults: u64,
}

/// A thread's name and CPU time from its `stat` line; `None` for a
/// malformed line.
fn parse_stat(line: &str) -> Option<(String, Ticks)> {
    let t = hostsys::proc::parse_task_stat(line)?;
    Some((
        t.name,
        Ticks {
            user: t.user_ticks,
            sys: t.sys_ticks,
            major_faults: t.major_faults,
        },
    ))
}

/// Per-thread CPU times of this process over a run.
#[derive(Debug, Default)]
pub struct CpuTracker {
    /// At the start: threads that existed then (their time before the run
    /// is not the run's).
    start: BTreeMap<u32, Ticks>,
    /// The latest reading of every thread seen since.
    last: BTreeMap<u32, (String, Ticks)>,
    tick_ms: u64,
}

impl CpuTracker {
    /// Reads every thread's time now, as the run's starting point.
    pub fn start() -> Self {
        let tick_ms = 1000 / hostsys::proc::clock_ticks_per_s();
        let mut me = Self {
            tick_ms,
            ..Self::default()
        };
        me.sample_dir(Path::new("/proc/self/task"));
        me.start = me.last.iter().map(|(&tid, (_, t))| (tid, *t)).collect();
        me.last.clear();
        me
    }

    /// Reads every thread's time now.
    pub fn sample(&mut self) {
        self.sample_dir(Path::new("/proc/self/task"));
    }

    fn sample_dir(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            // A thread that ended since the listing: nothing to read.
            if let Some(parsed) = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|l| parse_stat(&l))
            {
                self.last.insert(tid, parsed);
            }
        }
    }

    /// The run's CPU time by thread name, the busiest first.
    pub fn finish(&self) -> Vec<ThreadCpu> {
        let mut by_name: BTreeMap<&str, ThreadCpu> = BTreeMap::new();
        for (tid, (name, t)) in &self.last {
            let from = self.start.get(tid).copied().unwrap_or_default();
            let e = by_name.entry(name).or_insert_with(|| ThreadCpu {
                name: name.clone(),
                threads: 0,
                user_ms: 0,
                sys_ms: 0,
                major_faults: 0,
            });
            e.threads += 1;
            e.major_faults += t.major_faults.saturating_sub(from.major_faults);
            e.user_ms += t.user.saturating_sub(from.user) * self.tick_ms;
            e.sys_ms += t.sys.saturating_sub(from.sys) * self.tick_ms;
        }
        let mut out: Vec<ThreadCpu> = by_name
            .into_values()
            .filter(|c| c.user_ms + c.sys_ms + c.major_faults > 0)
            .collect();
        out.sort_by(|a, b| {
            (b.user_ms + b.sys_ms)
                .cmp(&(a.user_ms + a.sys_ms))
                .then_with(|| a.name.cmp(&b.name))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_count_from_the_start_and_sum_by_name_busiest_first() {
        let t = |user, sys| Ticks {
            user,
            sys,
            major_faults: 0,
        };
        let mut c = CpuTracker {
            tick_ms: 10,
            ..CpuTracker::default()
        };
        c.start.insert(1, t(100, 100));
        c.last.insert(1, ("swaplab".into(), t(101, 100)));
        c.last.insert(2, ("vmm-blk".into(), t(3, 4)));
        c.last.insert(3, ("vmm-blk".into(), t(1, 0)));
        c.last.insert(4, ("vcpu0".into(), t(50, 20)));
        c.last.insert(5, ("idle".into(), t(0, 0)));
        let got = c.finish();
        let names: Vec<&str> = got.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["vcpu0", "vmm-blk", "swaplab"]);
        assert_eq!(
            got[1],
            ThreadCpu {
                name: "vmm-blk".into(),
                threads: 2,
                user_ms: 40,
                sys_ms: 40,
                major_faults: 0,
            }
        );
        assert_eq!((got[0].user_ms, got[0].sys_ms), (500, 200));
        assert_eq!((got[2].user_ms, got[2].sys_ms), (10, 0));
    }

    #[test]
    fn this_process_is_read_and_its_busy_thread_seen() {
        use nix::sys::resource::{getrusage, UsageWho};
        use nix::sys::time::TimeValLike;
        use std::sync::mpsc::channel;
        let mut c = CpuTracker::start();
        let (ready_tx, ready) = channel();
        let (done, done_rx) = channel::<()>();
        let spin = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(move || {
                // Burn 50 ms of this thread's own CPU time, then stay alive
                // until it has been sampled.
                let mut x = 0u64;
                loop {
                    let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
                    let used =
                        u.user_time().num_microseconds() + u.system_time().num_microseconds();
                    if used >= 50_000 {
                        break;
                    }
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                ready_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                x
            })
            .unwrap();
        ready.recv().unwrap();
        c.sample();
        done.send(()).unwrap();
        spin.join().unwrap();
        let got = c.finish();
        let spin = got
            .iter()
            .find(|t| t.name == "cpu-test-spin")
            .unwrap_or_else(|| panic!("{got:?}"));
        assert_eq!(spin.threads, 1);
        assert!(spin.user_ms + spin.sys_ms > 0, "{spin:?}");
    }
}

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
}

/// Parses a `/proc/<pid>/task/<tid>/stat` line: the thread's name and its
/// user and system time in clock ticks. `None` for a malformed line.
fn parse_stat(line: &str) -> Option<(String, Ticks)> {
    // The name is between the first '(' and the last ')' and may hold
    // anything, spaces and parentheses included.
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    // After the name: field 3 (state) onwards; utime and stime are fields
    // 14 and 15.
    let mut rest = line.get(close + 1..)?.split_ascii_whitespace().skip(11);
    let user = rest.next()?.parse().ok()?;
    let sys = rest.next()?.parse().ok()?;
    Some((name, Ticks { user, sys }))
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
        let tick_ms = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&t| t > 0 && t <= 1000)
            .map_or(10, |t| (1000 / t) as u64);
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
            });
            e.threads += 1;
            e.user_ms += t.user.saturating_sub(from.user) * self.tick_ms;
            e.sys_ms += t.sys.saturating_sub(from.sys) * self.tick_ms;
        }
        let mut out: Vec<ThreadCpu> = by_name
            .into_values()
            .filter(|c| c.user_ms + c.sys_ms > 0)
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

    const LINE: &str =
        "4242 (swapper-evict) S 1 2 3 0 -1 4194368 10 0 0 0 187 2271 0 0 20 0 9 0 100 0 0";

    #[test]
    fn a_stat_line_gives_name_user_and_system_ticks() {
        let (name, t) = parse_stat(LINE).unwrap();
        assert_eq!(name, "swapper-evict");
        assert_eq!(
            t,
            Ticks {
                user: 187,
                sys: 2271
            }
        );
        let odd = "7 (a) b (c)) R 1 2 3 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(
            parse_stat(odd).unwrap(),
            ("a) b (c)".into(), Ticks { user: 5, sys: 6 })
        );
        for bad in [
            "",
            "12 swapper 1 2",
            "1 (x) S 1 2",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_count_from_the_start_and_sum_by_name_busiest_first() {
        let t = |user, sys| Ticks { user, sys };
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
                sys_ms: 40
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

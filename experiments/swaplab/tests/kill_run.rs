//! SIGTERM and SIGKILL of `swaplab run` at any moment leave nothing that the
//! next run does not sweep: no process (the sandbox's QEMU, a guest's
//! threads), no scratch directory once the next run has started.
//!
//! Each moment is drawn at random in the first seconds of a small host-swap
//! run (L1 booting, the guest booting, the workload running) and printed, so
//! a failure names it. `SWAPLAB_KILL_MOMENTS=N` draws N moments per signal
//! (2 by default; the issue's note reports 20).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{linux_guest, temp_dir};

/// A small host-swap scenario: the guest boots, the swapper evicts.
const SCENARIO: &str = r#"
name = "kill-me"
timeout_s = 300
[guest]
mem = "128M"
[host]
limit = "64M"
policy = "random"
[workload]
kind = "touch"
mb = 24
pattern = "random"
passes = 1
"#;

/// Moments are drawn in [0, KILL_WINDOW): L1 takes about 6 s to boot here,
/// the guest a few more, then the workload runs.
const KILL_WINDOW: Duration = Duration::from_secs(20);

/// Every process whose parent chain leads to `root`.
fn descendants(root: u32) -> BTreeSet<u32> {
    let mut parent = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        parent.insert(pid, ppid);
    }
    let mut found = BTreeSet::new();
    for &pid in parent.keys() {
        let mut p = pid;
        while let Some(&pp) = parent.get(&p) {
            if pp == root {
                found.insert(pid);
                break;
            }
            if pp <= 1 {
                break;
            }
            p = pp;
        }
    }
    found
}

/// A pseudo-random number from the clock and a counter (no RNG crate needed
/// for picking moments; the moments are printed).
fn draw(i: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut x = nanos ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Starts `swaplab run` on `file`, sends `signal` after `after`, and returns
/// once it and everything it started are gone.
fn kill_at(file: &Path, scratch: &Path, out: &Path, signal: i32, after: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .env("SWAPLAB_JOBS", "1")
        .arg("run")
        .arg(file)
        .arg("--out")
        .arg(out)
        .env("TMPDIR", scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Sampled while it runs: what it started must not outlive it.
    let mut started = BTreeSet::new();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        started.extend(descendants(child.id()));
        std::thread::sleep(Duration::from_millis(50));
    }
    started.extend(descendants(child.id()));
    // SAFETY: kill only sends a signal to our child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let status = child.wait().unwrap();
    // Children die of PR_SET_PDEATHSIG, which the kernel delivers after the
    // parent's exit: wait (bounded) for each to be gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<u32> = started
            .iter()
            .copied()
            .filter(|p| {
                // A zombie is gone for our purpose (its parent reaps it).
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "signal {signal} after {after:?} ({status:?}): processes {left:?} outlived swaplab run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_run_killed_at_any_moment_leaves_nothing_the_next_run_does_not_sweep() {
    if linux_guest().is_none() {
        return;
    }
    let moments: u64 = std::env::var("SWAPLAB_KILL_MOMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let dir = temp_dir("kill-run");
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let file = dir.path().join("kill-me.toml");
    std::fs::write(&file, SCENARIO).unwrap();
    let mut n = 0;
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        for _ in 0..moments {
            n += 1;
            let after = Duration::from_millis(draw(n) % KILL_WINDOW.as_millis() as u64);
            eprintln!("{name} after {:.2} s", after.as_secs_f64());
            kill_at(
                &file,
                &scratch,
                &dir.path().join(format!("out-{n}")),
                signal,
                after,
            );
        }
    }
    // The next run sweeps what the killed ones left, and works.
    let out = Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .env("SWAPLAB_JOBS", "1")
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("out-next"))
        .env("TMPDIR", &scratch)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the next run failed: {err}");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left after the next run: {left:?}");
}

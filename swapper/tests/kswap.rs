//! Kernel-swap baseline helpers on real devices (root only): swap devices,
//! memory cgroups, cleanup on drop and on panic, sweeping leftovers of a
//! crashed run. Every test checks that the host is left as found.
//!
//! Child processes are this test binary re-executed with
//! `SWAPLAB_KSWAP_ROLE` set (see `child_role`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use swapper::kswap::*;

const ROLE: &str = "SWAPLAB_KSWAP_ROLE";

/// Swap is host-global: with two devices of equal priority the kernel
/// spreads pages over both, so the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn vm_swap_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmSwap:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn is_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        base::tier::skip(base::tier::Tier::Root, "kswap tests need root");
    }
    root
}

fn in_proc_swaps(p: &Path) -> bool {
    std::fs::read_to_string("/proc/swaps")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(p.to_str().unwrap()))
}

fn memory_cgroup_line(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .unwrap_or("")
        .to_string()
}

struct ChildProc {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl ChildProc {
    fn id(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, s: &str) {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(s.as_bytes())
            .unwrap();
    }

    /// Waits for a line starting with `prefix`; returns the rest.
    fn read_line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.out.read_line(&mut line).unwrap() > 0,
                "child ended before {prefix}"
            );
            // libtest prints "test child_role ... " without a newline before
            // the child's own output: look for the marker anywhere.
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_string();
            }
        }
    }

    /// Closes stdin and waits; true if the child succeeded.
    fn finish(mut self) -> bool {
        drop(self.child.stdin.take());
        self.child.wait().unwrap().success()
    }
}

fn spawn_child(role: &str) -> ChildProc {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    ChildProc { child, out }
}

/// Roles of the re-executed child. Not a real test: returns at once unless
/// the role variable is set.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let (what, arg) = role.split_once(':').unwrap();
    match what {
        // Wait for "go", touch `arg` MiB of distinct data, say "ready", wait
        // for stdin to close, verify the data, exit 0 if intact.
        "hog" => {
            let mib: usize = arg.parse().unwrap();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let words = mib << 17;
            let data: Vec<u64> = (0..words as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            println!("@ready:");
            std::io::stdout().flush().unwrap();
            let mut rest = String::new();
            let _ = std::io::stdin().read_line(&mut rest);
            let ok = data
                .iter()
                .enumerate()
                .all(|(i, &v)| v == (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            std::process::exit(if ok { 0 } else { 1 });
        }
        // Create a zram swap, a swap file and a cgroup, print them, and die
        // without cleaning up (like a crashed run).
        "leftovers" => {
            let z = SwapDevice::create(SwapKind::Zram, 16 << 20).unwrap();
            let f = SwapDevice::create(
                SwapKind::File {
                    dir: PathBuf::from(arg),
                },
                16 << 20,
            )
            .unwrap();
            let c = MemoryCgroup::create(64 << 20).unwrap();
            println!("@zram:{}", z.path().display());
            println!("@file:{}", f.path().display());
            println!("@cgroup:{}", c.path().display());
            std::io::stdout().flush().unwrap();
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn zram_device_is_removed_on_drop() {
    if !is_root() {
        return;
    }
    let _serial = serial();
    let dev = SwapDevice::create(SwapKind::Zram, 32 << 20).unwrap();
    let path = dev.path().to_path_buf();
    assert!(in_proc_swaps(&path), "{path:?} not enabled");
    let sys = PathBuf::from("/sys/block").join(path.file_name().unwrap());
    assert_eq!(
        std::fs::read_to_string(sys.join("disksize"))
            .unwrap()
            .trim(),
        (32u64 << 20).to_string()
    );
    drop(dev);
    assert!(!in_proc_swaps(&path));
    // Hot-added devices are removed; zram0 would only be reset.
    assert!(
        !sys.exists()
            || std::fs::read_to_string(sys.join("disksize"))
                .unwrap()
                .trim()
                == "0"
    );
}

#[test]
fn swap_file_is_removed_on_drop() {
    if !is_root() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = SwapDevice::create(
        SwapKind::File {
            dir: dir.path().to_path_buf(),
        },
        32 << 20,
    )
    .unwrap();
    let path = dev.path().to_path_buf();
    assert!(in_proc_swaps(&path));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 32 << 20);
    drop(dev);
    assert!(!in_proc_swaps(&path));
    assert!(!path.exists());
}

#[test]
fn cgroup_moves_processes_back_and_disappears() {
    if !is_root() {
        return;
    }
    let _serial = serial();
    let mut child = spawn_child("hog:1");
    let pid = child.id();
    let before = memory_cgroup_line(pid);
    let cg = MemoryCgroup::create(256 << 20).unwrap();
    let dir = cg.path().to_path_buf();
    assert_eq!(cg.limit_bytes().unwrap(), 256 << 20);
    cg.add_process(pid).unwrap();
    assert_eq!(cg.procs(), vec![pid]);
    assert!(memory_cgroup_line(pid).ends_with(dir.file_name().unwrap().to_str().unwrap()));
    drop(cg);
    assert!(!dir.exists(), "cgroup directory removed");
    assert_eq!(memory_cgroup_line(pid), before, "child back where it was");
    child.send("go\n");
    child.read_line("@ready:");
    assert!(child.finish());
}

fn baseline_swaps(kind: SwapKind) {
    let k = KernelSwap::new(16 << 20, kind, 128 << 20).unwrap();
    let (swap, dir) = (k.swap.path().to_path_buf(), k.cgroup.path().to_path_buf());
    let mut child = spawn_child("hog:48");
    k.cgroup.add_process(child.id()).unwrap();
    child.send("go\n");
    child.read_line("@ready:");
    // The child's own swap usage (other swap devices on the host may take
    // part of it).
    let swapped = vm_swap_kib(child.id()) << 10;
    let used = k.swap.used_bytes();
    let peak = k.cgroup.peak_bytes().unwrap();
    eprintln!(
        "{}: 48 MiB in a 16 MiB cgroup: {} MiB swapped out ({} MiB on this device), cgroup peak {} MiB",
        swap.display(),
        swapped >> 20,
        used >> 20,
        peak >> 20
    );
    assert!(swapped >= 16 << 20, "only {swapped} bytes swapped");
    assert!(in_proc_swaps(&swap));
    assert!(peak <= 17 << 20, "limit not enforced: peak {peak}");
    // The child reads everything back (swap-ins) and checks it.
    assert!(child.finish(), "data corrupted by swap");
    drop(k);
    assert!(!in_proc_swaps(&swap));
    assert!(!dir.exists());
}

#[test]
fn zram_baseline_swaps_and_cleans_up() {
    if !is_root() {
        return;
    }
    let _serial = serial();
    baseline_swaps(SwapKind::Zram);
}

#[test]
fn swap_file_baseline_swaps_and_cleans_up() {
    if !is_root() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    baseline_swaps(SwapKind::File {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn guards_clean_up_when_unwinding() {
    if !is_root() {
        return;
    }
    let _serial = serial();
    let mut seen = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let k = KernelSwap::new(32 << 20, SwapKind::Zram, 32 << 20).unwrap();
        seen = Some((k.swap.path().to_path_buf(), k.cgroup.path().to_path_buf()));
        panic!("experiment failed");
    }));
    assert!(r.is_err());
    let (swap, dir) = seen.unwrap();
    assert!(!in_proc_swaps(&swap));
    assert!(!dir.exists());
}

#[test]
fn sweep_removes_leftovers_of_a_crashed_run() {
    if !is_root() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // A swapper store file of a dead process too.
    let mut child = spawn_child(&format!("leftovers:{}", dir.path().display()));
    let zram = PathBuf::from(child.read_line("@zram:"));
    let file = PathBuf::from(child.read_line("@file:"));
    let cgroup = PathBuf::from(child.read_line("@cgroup:"));
    let dead = child.id();
    assert!(child.finish());
    let store_file = dir.path().join(format!("swaplab-swap-{dead}-0.img"));
    std::fs::write(&store_file, b"x").unwrap();
    // The crash left everything behind.
    assert!(in_proc_swaps(&zram) && in_proc_swaps(&file) && cgroup.exists());
    // A live run's resources are not touched.
    let live = SwapDevice::create(SwapKind::Zram, 16 << 20).unwrap();
    let report = sweep_leftovers(&[dir.path()]).unwrap();
    eprintln!("{report:?}");
    assert!(!in_proc_swaps(&zram) && !in_proc_swaps(&file));
    assert!(!file.exists() && !store_file.exists());
    assert!(!cgroup.exists());
    assert!(report.cgroups_removed.contains(&cgroup));
    assert!(report.swaps_disabled.contains(&zram));
    assert!(in_proc_swaps(live.path()), "live swap untouched");
    drop(live);
}

//! `swaplab probe --host-swap kernel`: the kernel baseline runs, reports the kernel's
//! counters, and leaves no swap device, swap file, cgroup or process behind — after a
//! normal run, a failing child, SIGTERM, and a SIGKILLed parent (whose leftovers the next
//! run sweeps).
//!
//! Needs /dev/kvm and root; skips with a printed reason otherwise. Each test checks the
//! resources of its own run (named in the run's log line), since other runs may be
//! using swap devices and cgroups at the same time.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

mod common;

fn usable() -> bool {
    common::have_kvm() && common::have_root("--host-swap kernel")
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swaplab"));
    c.args(args)
        .env("RUST_BACKTRACE", "1")
        .env("SWAPLAB_LOG", "info");
    c
}

/// The run's resources, from its "kernel swap: child N in cgroup C, swapping to S" line.
#[derive(Debug)]
struct Resources {
    child: u32,
    cgroup: PathBuf,
    swap: PathBuf,
}

fn parse_line(line: &str) -> Option<Resources> {
    let rest = &line[line.find("kernel swap: child ")? + "kernel swap: child ".len()..];
    let (pid, rest) = rest.split_once(" in cgroup ")?;
    let (cg, swap) = rest.split_once(", swapping to ")?;
    Some(Resources {
        child: pid.trim().parse().ok()?,
        cgroup: PathBuf::from(cg.trim()),
        swap: PathBuf::from(strip_ansi(swap).trim()),
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn resources(stderr: &str) -> Resources {
    stderr
        .lines()
        .find_map(|l| parse_line(&strip_ansi(l)))
        .unwrap_or_else(|| panic!("no 'kernel swap: child' line in {stderr}"))
}

fn in_proc_swaps(p: &Path) -> bool {
    std::fs::read_to_string("/proc/swaps")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().next() == p.to_str())
}

/// The swap label of the device or file at `p` (`swaplab-<creating pid>`), if any.
fn swap_label(p: &Path) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let f = std::fs::File::open(p).ok()?;
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 0).ok()?;
    if &buf[4086..] != b"SWAPSPACE2" {
        return None;
    }
    let l = &buf[1052..1068];
    let end = l.iter().position(|&b| b == 0).unwrap_or(16);
    Some(String::from_utf8_lossy(&l[..end]).into_owned())
}

/// Whether the run's swap device is still active. A zram device number is reused by
/// the next run that hot-adds one (perhaps another test's), so a zram device counts as
/// ours only if it still carries our label.
fn ours_active(r: &Resources) -> bool {
    if !in_proc_swaps(&r.swap) {
        return false;
    }
    if !r.swap.starts_with("/dev") {
        return true;
    }
    let name = r.cgroup.file_name().unwrap().to_str().unwrap();
    let pid = name
        .trim_start_matches("swaplab-")
        .split('-')
        .next()
        .unwrap();
    swap_label(&r.swap).as_deref() == Some(&format!("swaplab-{pid}"))
}

/// kernel runs are heavy: one at a time in this file.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Nothing of the run is left: no cgroup, no active swap, no swap file, no child.
fn assert_gone(r: &Resources) {
    assert!(
        !r.cgroup.exists(),
        "cgroup {} left behind",
        r.cgroup.display()
    );
    assert!(!ours_active(r), "swap {} still active", r.swap.display());
    if !r.swap.starts_with("/dev") {
        assert!(
            !r.swap.exists(),
            "swap file {} left behind",
            r.swap.display()
        );
    }
    assert!(!pid_alive(r.child), "child {} still running", r.child);
}

fn run(args: &[&str]) -> (Output, String) {
    let out = cmd(args).output().expect("run swaplab");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[test]
fn kernel_swap_runs_reports_and_cleans_up_for_zram_and_file() {
    if !usable() {
        return;
    }
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    for store in ["memory", "file"] {
        let (out, err) = run(&[
            "probe",
            "--json",
            "--mem",
            "64M",
            "--host-limit",
            "16M",
            "--pattern",
            "random",
            "--passes",
            "2",
            "--host-swap",
            "kernel",
            "--store",
            store,
            "--store-path",
            dir.path().to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{store}: {err}");
        let r = resources(&err);
        assert_gone(&r);
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v["host_swap"], "kernel");
        assert_eq!(u(&v["host_limit_pages"]), 4096);
        assert!(u(&v["evictions"]) > 0, "{store}: {}", v["kernel_swap"]);
        assert!(u(&v["swap_ins"]["total"]) > 0, "{store}: {}", v["swap_ins"]);
        assert_eq!(u(&v["integrity_errors"]), 0);
        assert_eq!(v["integrity"]["ok"], true);
        let k = &v["kernel_swap"];
        assert_eq!(
            k["swap_kind"],
            if store == "file" { "file" } else { "zram" }
        );
        assert_eq!(
            k["cgroup"].as_str().map(PathBuf::from),
            Some(r.cgroup.clone())
        );
        let c = &k["child"];
        // The cgroup limit is the guest budget plus what the VMM measured and allowed.
        assert_eq!(
            u(&c["cgroup_limit_bytes"]),
            (16 << 20) + u(&c["vmm_overhead_bytes"]) + u(&c["growth_allowance_bytes"])
        );
        assert!(u(&c["vmm_overhead_bytes"]) > 0);
        assert_eq!(c["passes"].as_array().unwrap().len(), 2);
        // The cgroup kept usage within its limit.
        assert!(u(&k["cgroup_peak_bytes"]) <= u(&c["cgroup_limit_bytes"]));
        assert!(v["rendered_text"].is_null() && v["kernel_child"].is_null());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn text_output_has_a_kernel_section() {
    if !usable() {
        return;
    }
    let _one_at_a_time = serial();
    let (out, err) = run(&[
        "probe",
        "--mem",
        "32M",
        "--host-limit",
        "8M",
        "--passes",
        "2",
        "--host-swap",
        "kernel",
    ]);
    assert!(out.status.success(), "{err}");
    assert_gone(&resources(&err));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pages touched 8192 of 8192"), "{text}");
    assert!(text.contains("host swap: kernel (cgroup"), "{text}");
    assert!(text.contains("cgroup limit"), "{text}");
    assert!(text.contains("VMM overhead"), "{text}");
}

/// A child that fails (here: an argument it rejects) fails the run, and nothing stays.
#[test]
fn a_failing_child_fails_the_run_and_leaves_nothing() {
    if !usable() {
        return;
    }
    let _one_at_a_time = serial();
    let (out, err) = run(&[
        "probe",
        "--mem",
        "32M",
        "--host-limit",
        "8M",
        "--host-swap",
        "kernel",
        "--internal-child-arg=--no-such-flag",
    ]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("kernel-swap child (exit status 2) failed"),
        "{last}"
    );
    assert!(last.contains("--no-such-flag"), "{last}");
    assert_gone(&resources(&err));
}

/// Reads the parent's stderr until the child is running; returns its resources and the
/// rest of the reader.
fn started(child: &mut Child) -> (Resources, BufReader<std::process::ChildStderr>) {
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "exited before starting the child"
        );
        if let Some(r) = parse_line(&strip_ansi(&line)) {
            return (r, err);
        }
    }
}

fn long_run() -> Child {
    cmd(&[
        "probe",
        "--json",
        "--mem",
        "64M",
        "--host-limit",
        "16M",
        "--pattern",
        "random",
        "--passes",
        "1000",
        "--host-swap",
        "kernel",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

#[test]
fn sigterm_stops_the_run_and_cleans_up() {
    if !usable() {
        return;
    }
    let _one_at_a_time = serial();
    let mut parent = long_run();
    let (r, mut err) = started(&mut parent);
    assert!(pid_alive(r.child) && r.cgroup.exists() && ours_active(&r));
    // SAFETY: signals our own child process.
    assert_eq!(unsafe { libc::kill(parent.id() as i32, libc::SIGTERM) }, 0);
    let status = parent.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("interrupted by SIGTERM"), "{rest}");
    assert_gone(&r);
}

/// Waits until process `pid` (not our child) has exited, on a pidfd.
fn wait_exit(pid: u32) {
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return; // already gone
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a pidfd becomes readable when the process exits.
    let r = unsafe { libc::poll(&mut p, 1, 60_000) };
    assert_eq!(r, 1, "process {pid} did not exit within a minute");
}

/// A SIGKILLed parent cannot clean up: its child dies with it (PDEATHSIG) and the next
/// run sweeps the cgroup and swap device it left.
#[test]
fn a_killed_parents_leftovers_are_swept_by_the_next_run() {
    if !usable() {
        return;
    }
    let _one_at_a_time = serial();
    let mut parent = long_run();
    let (r, _err) = started(&mut parent);
    parent.kill().unwrap();
    parent.wait().unwrap();
    wait_exit(r.child);
    assert!(!pid_alive(r.child), "the VMM outlived its parent");
    let (out, err) = run(&[
        "probe",
        "--json",
        "--mem",
        "16M",
        "--host-limit",
        "4M",
        "--passes",
        "2",
        "--host-swap",
        "kernel",
    ]);
    assert!(out.status.success(), "{err}");
    assert_gone(&resources(&err));
    assert_gone(&r);
}

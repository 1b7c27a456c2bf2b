//! `swaplab probe --host-limit` with the userfaultfd swapper, as a user runs it: the
//! acceptance run, every store and policy, fatal store errors, write errors, prefetch,
//! text output and flag validation.
//!
//! Runs that need KVM skip, with a printed reason, when /dev/kvm is absent.

mod common;

use common::{
    assert_swapper_stopped_the_vm, assert_usage_error, have_kvm, have_root, probe_json, swaplab, u,
};
use serde_json::Value;

/// What every swapped run must show: pages went out and came back, residency stayed
/// within limit + slack (by the swapper's accounting and by the page tables), and no
/// page came back wrong.
fn assert_swapped_ok(v: &Value, what: &str) {
    assert_eq!(v["host_swap"], "uffd", "{what}");
    let limit = u(&v["host_limit_pages"]);
    let slack = u(&v["slack_pages"]);
    assert!(limit > 0 && slack > 0, "{what}: {limit} + {slack}");
    assert!(u(&v["evictions"]) > 0, "{what}: no evictions");
    assert!(u(&v["swap_ins"]["total"]) > 0, "{what}: no swap-ins");
    let peak = u(&v["peak_resident_pages"]);
    assert!(
        peak <= limit + slack,
        "{what}: peak {peak} > {limit} + {slack}"
    );
    let scanned = u(&v["swapper"]["scanned_resident_pages"]);
    assert!(
        scanned <= limit + slack,
        "{what}: page tables say {scanned} resident > {limit} + {slack}"
    );
    assert_eq!(v["limit_held"], true, "{what}");
    assert_eq!(u(&v["integrity_errors"]), 0, "{what}");
    assert_eq!(v["integrity"]["ok"], true, "{what}: {}", v["integrity"]);
    assert_eq!(
        u(&v["swapper"]["final_status"]["fatal_errors"]),
        0,
        "{what}"
    );
    assert!(u(&v["store_bytes"]) > 0, "{what}: store empty at the end");
    // Per-path percentiles, ordered.
    let lat = v["fault_latency_ns"].as_object().expect("latency by path");
    assert!(
        lat.contains_key("store") && lat.contains_key("guest"),
        "{what}: {lat:?}"
    );
    for (path, l) in lat {
        let (p50, p90, p99, max) = (u(&l["p50"]), u(&l["p90"]), u(&l["p99"]), u(&l["max"]));
        assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{what} {path}: {l}");
    }
}

/// The acceptance run, exactly as stated (default store and policy).
#[test]
fn acceptance_run_256m_limit_64m() {
    if !have_kvm() {
        return;
    }
    let v = probe_json(&[
        "--mem",
        "256M",
        "--host-limit",
        "64M",
        "--pattern",
        "random",
        "--passes",
        "3",
    ]);
    assert_swapped_ok(&v, "256M/64M");
    assert_eq!(u(&v["host_limit_pages"]), 16384);
    assert_eq!(u(&v["pages_touched"]), 65536);
    // Passes 2 and 3 find three quarters of test RAM evicted.
    let swap_passes = v["swapper"]["passes"].as_array().unwrap();
    assert_eq!(swap_passes.len(), 3);
    for p in &swap_passes[1..] {
        let store = u(&p["swap_ins"]["store"]) + u(&p["swap_ins"]["minor"]);
        assert!(store > 40_000, "{p}");
    }
    assert!(v["swapper"]["final_status"]["counters"].is_object());
}

/// Every store and every policy, smaller so the matrix stays short.
#[test]
fn every_store_and_policy_swaps_without_corruption() {
    if !have_kvm() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir_s = dir.path().to_str().unwrap();
    for store in ["memory", "lz4", "file"] {
        for policy in ["fifo", "random", "clock"] {
            let v = probe_json(&[
                "--mem",
                "32M",
                "--host-limit",
                "8M",
                "--pattern",
                "random",
                "--passes",
                "3",
                "--store",
                store,
                "--policy",
                policy,
                "--store-path",
                dir_s,
            ]);
            assert_swapped_ok(&v, &format!("{store}/{policy}"));
            assert_eq!(v["swapper"]["final_status"]["store"], store);
            assert_eq!(v["swapper"]["final_status"]["policy"], policy);
        }
    }
    // The store file is gone with its swapper.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn o_direct_file_store_and_more_handlers() {
    if !have_kvm() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let v = probe_json(&[
        "--mem",
        "32M",
        "--host-limit",
        "8M",
        "--passes",
        "2",
        "--store",
        "file",
        "--o-direct",
        "--store-path",
        dir.path().to_str().unwrap(),
        "--handlers",
        "2",
        "--no-checksums",
    ]);
    assert_swapped_ok(&v, "file O_DIRECT, 2 handlers");
}

/// A store read failure stops the VM with the swapper's error; nothing is printed as a
/// result, the exit status is 1.
#[test]
fn store_read_failure_stops_the_vm_with_a_clear_error() {
    if !have_kvm() {
        return;
    }
    for (flag, needle) in [
        ("--inject-read-errors", "store read failed"),
        ("--inject-corrupt-reads", "checksum mismatch"),
    ] {
        let out = swaplab(&[
            "probe",
            "--json",
            "--mem",
            "32M",
            "--host-limit",
            "8M",
            "--passes",
            "2",
            flag,
            "1",
        ]);
        // The vCPU's fault (`Vcpu(0)`), for the reason `flag` gives.
        assert_swapper_stopped_the_vm(&out, &[needle, "Vcpu(0)"]);
    }
}

/// Failing writes (disk full) lose nothing: pages stay resident until writes work.
/// Few enough failures that the write backoff (1 ms doubling per failure) ends
/// within the run, so evictions resume and are seen.
#[test]
fn store_write_failures_lose_no_page() {
    if !have_kvm() {
        return;
    }
    let v = probe_json(&[
        "--mem",
        "32M",
        "--host-limit",
        "8M",
        "--passes",
        "2",
        "--inject-write-errors",
        "8",
    ]);
    let c = &v["swapper"]["final_status"]["counters"];
    assert!(u(&c["write_errors"]) >= 1, "{c}");
    assert_eq!(v["integrity"]["ok"], true);
    assert_eq!(u(&v["integrity_errors"]), 0);
    assert!(u(&v["evictions"]) > 0);
}

/// A tmpfs mounted on a directory, unmounted when dropped (on every path, a failed
/// assertion's unwinding included).
struct TmpfsMount(std::path::PathBuf);

impl TmpfsMount {
    fn new(dir: &std::path::Path, size: &str) -> Self {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs on {}: {st}", dir.display());
        Self(dir.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a child still holds a file): detach it so it goes when released.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// A file store on a full filesystem cannot hold the limit: every write fails, so the
/// swapper keeps the pages resident (none is lost) and residency grows past
/// limit + slack. The run says so and fails (exit 1), it does not end 0.
#[test]
fn a_full_store_filesystem_fails_the_run_naming_the_unheld_limit() {
    if !have_kvm() || !have_root("mounting a tmpfs") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let _mount = TmpfsMount::new(dir.path(), "1M");
    let out = swaplab(&[
        "probe",
        "--json",
        "--mem",
        "64M",
        "--host-limit",
        "16M",
        "--store",
        "file",
        "--store-path",
        dir.path().to_str().unwrap(),
        "--passes",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("swaplab: the host limit was not held: resident peaked at"),
        "{last}"
    );
    assert!(
        last.contains("against a limit of 4096 + 256 slack"),
        "{last}"
    );
    assert!(last.contains("store writes failed"), "{last}");
    // The result is still printed, and says the same.
    let v: Value = serde_json::from_slice(&out.stdout).expect("probe --json prints JSON");
    assert_eq!(v["limit_held"], false, "{v}");
    let (peak, limit, slack) = (
        u(&v["peak_resident_pages"]),
        u(&v["host_limit_pages"]),
        u(&v["slack_pages"]),
    );
    assert!(peak > limit + slack, "{peak} {limit} {slack}");
    assert!(u(&v["end_resident_pages"]) > limit + slack, "{v}");
    assert!(
        last.contains(&format!(
            "peaked at {peak} pages against a limit of {limit} + {slack} slack"
        )),
        "{last}"
    );
    assert!(u(&v["write_errors"]) > 0, "{v}");
    // No page was lost.
    assert_eq!(v["integrity"]["ok"], true, "{}", v["integrity"]);
    assert_eq!(u(&v["integrity_errors"]), 0);
}

/// A sequential write scan with prefetch takes about one fault per cluster.
#[test]
fn sequential_prefetch_takes_one_fault_per_cluster() {
    if !have_kvm() {
        return;
    }
    let v = probe_json(&[
        "--mem",
        "32M",
        "--host-limit",
        "8M",
        "--pattern",
        "seq",
        "--passes",
        "2",
        "--prefetch",
        "16",
    ]);
    assert_swapped_ok(&v, "seq prefetch 16");
    let pass2 = &v["swapper"]["passes"][1];
    // 8192 pages, 6000+ of them evicted: without prefetch every one faults.
    assert!(u(&pass2["faults"]) < 8192 / 4, "{pass2}");
    assert!(u(&v["swapper"]["final_status"]["counters"]["prefetched"]) > 4000);
}

#[test]
fn text_output_has_a_swapper_section() {
    if !have_kvm() {
        return;
    }
    let out = swaplab(&[
        "probe",
        "--mem",
        "16M",
        "--host-limit",
        "4M",
        "--passes",
        "2",
        "--policy",
        "fifo",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("host swap: uffd (store memory, policy fifo"),
        "{text}"
    );
    assert!(text.contains("limit 4M (1024 pages) + slack"), "{text}");
    assert!(text.contains("fault latency"), "{text}");
    assert!(text.contains("evictions"), "{text}");
}

#[test]
fn bad_swap_flags_give_one_line_and_exit_2() {
    let m = ["--mem", "64M"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = m.to_vec();
        v.extend_from_slice(extra);
        v
    };
    assert_usage_error(&with(&["--host-limit", "0"]), "--host-limit");
    assert_usage_error(&with(&["--host-limit", "32K"]), "at least 64K");
    assert_usage_error(&with(&["--host-limit", "5000"]), "multiple of 4K");
    assert_usage_error(&with(&["--host-limit", "128M"]), "more than --mem 64M");
    assert_usage_error(&with(&["--host-swap", "uffd"]), "needs --host-limit");
    assert_usage_error(&with(&["--host-swap", "kernel"]), "needs --host-limit");
    assert_usage_error(
        &with(&["--host-limit", "16M", "--host-swap", "none"]),
        "not none",
    );
    assert_usage_error(&with(&["--store", "lz4"]), "--store needs --host-limit");
    assert_usage_error(&with(&["--policy", "clock"]), "--policy needs --host-limit");
    assert_usage_error(
        &with(&[
            "--host-limit",
            "16M",
            "--host-swap",
            "kernel",
            "--prefetch",
            "8",
        ]),
        "uffd only",
    );
    assert_usage_error(
        &with(&["--host-limit", "16M", "--o-direct"]),
        "--store file",
    );
    assert_usage_error(
        &with(&["--host-limit", "16M", "--handlers", "0"]),
        "--handlers",
    );
    assert_usage_error(
        &with(&["--host-limit", "16M", "--prefetch", "99999"]),
        "--prefetch",
    );
    assert_usage_error(
        &with(&[
            "--host-limit",
            "16M",
            "--store",
            "file",
            "--store-path",
            "/nonexistent",
        ]),
        "not a directory",
    );
    assert_usage_error(&with(&["--host-limit", "16M", "--store", "disk"]), "disk");
    assert_usage_error(&with(&["--host-limit", "16M", "--policy", "lru"]), "lru");
    assert_usage_error(
        &with(&["--host-limit", "16M", "--host-swap", "zram"]),
        "zram",
    );
    assert_usage_error(&with(&["--kernel-cold-sweep", "5"]), "needs --host-limit");
}

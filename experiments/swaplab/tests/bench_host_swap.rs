//! `swaplab bench host-swap` smoke test: tiny sizes, checks that the JSON has every run
//! and the headline ratios as finite numbers. Times nothing: the bench prints numbers,
//! it does not judge them here.
//!
//! Needs /dev/kvm; the kernel-side figures need root (without it they are null and
//! `kernel_skipped` says why).

use std::process::Command;

use serde_json::Value;

mod common;

fn finite(v: &Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {}", v[key]));
    assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    x
}

#[test]
fn bench_host_swap_json_has_finite_ratios() {
    if !common::have_kvm() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .args([
            "bench",
            "host-swap",
            "--json",
            "--mem",
            "16M",
            "--limit",
            "4M",
            "--passes",
            "2",
            "--zipf-passes",
            "3",
            "--hotcold-passes",
            "4",
        ])
        .output()
        .expect("run swaplab");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let runs = v["runs"].as_array().expect("runs");
    for r in runs {
        assert!(r["error"].is_null(), "a run failed: {r}");
    }
    finite(&v, "zipf_fault_ratio");
    finite(&v, "zipf_guest_fault_ratio");
    finite(&v, "idle_throughput_ratio");
    finite(&v, "zipf_skew");
    // The floor, and every swapper figure the issue sets a bar for beside it.
    for key in [
        "floor_p50_ns",
        "floor_p99_ns",
        "random_p50_floor_ratio",
        "random_p50_floor_ratio_lz4",
        "random_p50_floor_ratio_file",
        "hotcold_swap_in_ratio",
        "hotcold_warmup_swap_in_ratio",
        "hotcold_fault_ratio",
        "first_touch_throughput_ratio",
    ] {
        finite(&v, key);
    }
    assert_eq!(v["checksums"], true);
    assert_eq!(common::u(&v["hotcold_limit_bytes"]), 8 << 20);
    let floor: Vec<&Value> = runs.iter().filter(|r| r["swap"] == "floor").collect();
    assert_eq!(floor.len(), 1, "one floor run: {runs:?}");
    for r in runs
        .iter()
        .filter(|r| r["swap"] == "uffd" && r["workload"] == "random")
    {
        finite(r, "p50_floor_ratio");
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        assert!(v["kernel_skipped"].is_null(), "{}", v["kernel_skipped"]);
        // The floor, 2 media × 3 workloads × (uffd, kernel), lz4 random,
        // hotcold fifo and clock, zipf fifo, 3 idle pairs.
        assert_eq!(runs.len(), 1 + 12 + 1 + 2 + 1 + 6, "{runs:?}");
        for key in [
            "random_p50_ratio",
            "random_p50_ratio_file",
            "sequential_throughput_ratio",
            "sequential_throughput_ratio_file",
        ] {
            finite(&v, key);
        }
        assert_eq!(v["comparisons"].as_array().unwrap().len(), 6);
    } else {
        eprintln!("kernel side skipped: not root");
        assert_eq!(v["kernel_skipped"], "not root");
        assert!(v["random_p50_ratio"].is_null());
    }
}

#[test]
fn bench_host_swap_rejects_bad_sizes() {
    for (args, needle) in [
        (&["--limit", "256M"][..], "--limit"),
        (&["--passes", "1"][..], "--passes"),
        (&["--mem", "1000"][..], "--mem"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_swaplab"))
            .args(["bench", "host-swap"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

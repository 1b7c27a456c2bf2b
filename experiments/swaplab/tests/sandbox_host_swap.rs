//! The host swapper inside the nested sandbox: L1 runs a kernel new enough for
//! the swapper's userfaultfd features (`UFFD_FEATURE_MOVE`, Linux 6.8), so a
//! host-swap probe works there. One boot runs `swaplab doctor --json` and a
//! small host-swap probe. Skipped (with a printed reason) where QEMU is not
//! installed.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn qemu_missing() -> bool {
    !common::have_program("qemu-system-x86_64", "qemu-system-x86")
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON object printed between `=== NAME` and the next `===` line.
fn section(stdout: &str, name: &str) -> Value {
    let start = format!("=== {name}");
    let text: String = stdout
        .lines()
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| !l.starts_with("=== "))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {text:?}"))
}

#[test]
fn host_swap_probe_runs_in_l1_with_uffd_move() {
    if qemu_missing() {
        return;
    }
    common::retry_if_l1_panicked(probe_in_l1);
}

/// doctor and a host-swap probe, in one L1.
fn probe_in_l1() {
    let exe = env!("CARGO_BIN_EXE_swaplab");
    // 8M of test RAM with 4M resident: every pass evicts and swaps in.
    let script = format!(
        "set -e
        echo '=== doctor'; '{exe}' doctor --json
        echo '=== probe'; '{exe}' probe --mem 8M --host-limit 4M --pattern random --passes 2 --json
        echo '=== end'"
    );
    let out = Command::new(exe)
        .args([
            "sandbox",
            "--mem",
            "1G",
            "--timeout",
            "600",
            "--",
            "sh",
            "-c",
        ])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);

    let doctor = section(&stdout, "doctor");
    let features = doctor["userfaultfd_features"]
        .as_array()
        .unwrap_or_else(|| panic!("no userfaultfd_features: {doctor}"));
    assert!(
        features.iter().any(|f| f == "move"),
        "L1's userfaultfd lacks the move feature: {doctor}"
    );

    let probe = section(&stdout, "probe");
    assert_eq!(probe["host_swap"], "uffd", "{probe}");
    let evictions = common::u(&probe["evictions"]);
    let swap_ins = common::u(&probe["swap_ins"]["total"]);
    assert!(evictions > 0, "no host evictions: {probe}");
    assert!(swap_ins > 0, "no host swap-ins: {probe}");
    assert_eq!(probe["integrity"]["ok"], true, "{probe}");
    assert_eq!(
        common::u(&probe["integrity"]["pages_checked"]),
        2048,
        "{probe}"
    );
    assert_eq!(common::u(&probe["integrity_errors"]), 0, "{probe}");
}

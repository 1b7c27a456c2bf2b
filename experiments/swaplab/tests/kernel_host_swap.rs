//! `host.swapper = "kernel"`: the kernel swaps guest RAM (the VMM in a memory
//! cgroup, swapping to zram or a swap file made for the run): host swap-ins,
//! double paging through the swap disk worker's major faults, the report's
//! kernel-vs-swaplab section (`swaplab run kernel-vs-uffd --quick`); and the
//! run's cgroup and swap device are gone after it however it ends: success,
//! failure, Ctrl-C, SIGTERM, and SIGKILL followed by the next run (which
//! sweeps them).
//!
//! The steps run in one shell script where the guests run: in one L1 of the
//! nested sandbox here (its cgroups, swaps and zram devices are L1's), or on
//! this host with hardware KVM. The script prints one `CHECK <name> ok` or
//! `CHECK <name> FAIL <what>` line per step.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{temp_dir, Tier};
use serde_json::Value;

/// A small kernel-swapper run (`name`, time limit, store): host swap-ins and
/// evictions in a few seconds; the standard matrix's host-swap sizes.
fn scenario(name: &str, timeout_s: u32, store: &str) -> String {
    format!(
        r#"
name = "{name}"
timeout_s = {timeout_s}
repetitions = 1
[guest]
mem = "160M"
swap = "128M"
[host]
swapper = "kernel"
limit = "96M"
store = "{store}"
[workload]
kind = "touch"
mb = 64
pattern = "random"
passes = 2
"#
    )
}

/// The steps (bash). `$1`: swaplab; `$2`: a directory holding ok.toml,
/// file.toml and fail.toml, for the results.
const SCRIPT: &str = r#"
set -u -m
sw=$1 dir=$2
# What of a kernel-swapper run can remain: swaplab cgroups, swap areas, zram
# devices in use (zram0 of the module itself, unused, is not one).
state() {
    for c in $(find /sys/fs/cgroup -maxdepth 8 -type d -name 'swaplab-*' 2>/dev/null); do
        echo "cgroup $c (holding: $(for p in $(cat "$c/cgroup.procs"); do cat "/proc/$p/comm"; done | tr '\n' ' '))"
    done
    tail -n +2 /proc/swaps | awk '{print "swap " $1}'
    for z in /sys/block/zram*; do
        [ -e "$z" ] || continue
        [ "${z##*/}" = zram0 ] && [ "$(cat "$z/disksize")" = 0 ] && continue
        echo "zram ${z##*/}"
    done
    for f in /run/swaplab-scratch/swaplab-swapfile-* "${TMPDIR:-/tmp}"/swaplab-swapfile-*; do
        [ -e "$f" ] && echo "file $f"
    done
}
before=$(state)
check() { # name, then the state to compare
    if [ "$2" = "$before" ]; then echo "CHECK $1 ok"; else echo "CHECK $1 FAIL left: $(echo "$2" | tr '\n' ';')"; fi
}
run() { "$sw" run "$dir/$1.toml" --out "$dir/$2" >"$dir/$2.log" 2>&1; }

"$sw" run kernel-vs-uffd --quick --out "$dir/matrix" >"$dir/matrix.log" 2>&1; echo "RC matrix $?"
check success "$(state)"
run file file; echo "RC file $?"
check file "$(state)"
run fail fail; echo "RC fail $?"
check failure "$(state)"

# Signals while the guest boots: once the run's cgroup exists.
signalled() { # signal, out dir
    "$sw" run "$dir/ok.toml" --out "$dir/$2" >"$dir/$2.log" 2>&1 &
    pid=$!
    n=0
    until find /sys/fs/cgroup -maxdepth 8 -type d -name "swaplab-$pid-*" | grep -q .; do
        n=$((n + 1))
        if [ "$n" -gt 3000 ] || ! kill -0 "$pid" 2>/dev/null; then echo "CHECK $2 FAIL no cgroup appeared"; break; fi
        sleep 0.1
    done
    kill -"$1" "$pid"
    wait "$pid"
    echo "RC $2 $?"
}
signalled INT sigint
check sigint "$(state)"
signalled TERM sigterm
check sigterm "$(state)"
signalled KILL sigkill
left=$(state)
if [ "$left" = "$before" ]; then echo "CHECK killed-leaves FAIL nothing left to sweep"; else echo "CHECK killed-leaves ok"; fi
# In the sandbox the next run's guest triple-faults once (injected), as L1's
# emulated SVM sometimes makes it: the sweep is its first attempt's.
SWAPLAB_INJECT_TRIPLE_FAULT=1 run ok next; echo "RC next $?"
check swept "$(state)"
"#;

fn checks(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CHECK "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect()
}

fn rc(stdout: &str, name: &str) -> Option<i32> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("RC {name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn result(dir: &std::path::Path, out: &str, scenario: &str) -> Value {
    let p = dir.join(out).join(scenario).join("1").join("result.json");
    let log = std::fs::read_to_string(dir.join(format!("{out}.log"))).unwrap_or_default();
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}\n{log}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn cases(tier: Tier) {
    let dir = temp_dir("kernel-host-swap");
    // A zram run; a swap-file run (in the sandbox, on L1's scratch disk);
    // one with a time limit no guest meets, which fails.
    for (file, name, timeout, store) in [
        ("ok", "kswap-ok", 600, "memory"),
        ("file", "kswap-file", 600, "file"),
        ("fail", "kswap-fail", 1, "memory"),
    ] {
        let path = dir.path().join(format!("{file}.toml"));
        std::fs::write(path, scenario(name, timeout, store)).unwrap();
    }
    std::fs::write(dir.path().join("steps.sh"), SCRIPT).unwrap();
    let exe = env!("CARGO_BIN_EXE_swaplab");
    let (d, script) = (
        dir.path().to_str().unwrap(),
        dir.path().join("steps.sh").display().to_string(),
    );
    let mut cmd = match tier {
        Tier::Sandbox => {
            let mut c = Command::new(exe);
            c.args(["sandbox", "--cpus", "2", "--", "bash", &script, exe, d]);
            c
        }
        Tier::Native => {
            let mut c = Command::new("bash");
            c.args([&script, exe, d]);
            c
        }
    };
    let out = common::output_within(&mut cmd, Duration::from_secs(1500));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "{all}");
    let got = checks(&stdout);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "success",
            "file",
            "failure",
            "sigint",
            "sigterm",
            "killed-leaves",
            "swept"
        ],
        "{all}"
    );
    for (name, r) in &got {
        assert_eq!(r, "ok", "{name}: {r}\n{all}");
    }
    // Exit statuses: ok, a failed run, 128 + the signal.
    for (name, want) in [
        ("matrix", 0),
        ("file", 0),
        ("fail", 1),
        ("sigint", 130),
        ("sigterm", 143),
        ("sigkill", 137),
        ("next", 0),
    ] {
        let log =
            std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
        assert_eq!(
            rc(&stdout, name),
            Some(want),
            "{name}\n{all}\n{name}.log:\n{log}"
        );
    }
    // The successful runs: the kernel swapped guest RAM, the guest did not.
    let file = result(dir.path(), "file", "kswap-file");
    assert_eq!(file["outcome"], "ok", "{file}");
    assert_eq!(file["kernel_swap"]["swap_kind"], "file", "{file}");
    assert!(common::u(&file["kernel_swap"]["swap_ins"]) > 0, "{file}");
    assert_eq!(common::u(&file["guest_pswpout"]), 0, "{file}");
    assert_eq!(common::u(&file["integrity_errors"]), 0, "{file}");
    let r = result(dir.path(), "matrix", "host-swap-kernel");
    assert_eq!(r["outcome"], "ok", "{r}");
    let k = &r["kernel_swap"];
    assert!(common::u(&k["swap_ins"]) > 0, "no host swap-ins: {k}");
    assert!(common::u(&r["host_swap_ins"]) > 0, "{r}");
    assert!(common::u(&r["host_evictions"]) > 0, "{r}");
    assert_eq!(common::u(&r["guest_pswpout"]), 0, "{r}");
    assert_eq!(common::u(&r["integrity_errors"]), 0, "{r}");
    assert!(common::u(&r["pages_verified"]) > 0, "{r}");
    assert_eq!(k["swap_kind"], "zram (lz4)", "{k}");
    // The limit is the budget plus what the VMM measured, and it held.
    let limit = common::u(&k["cgroup_limit_bytes"]);
    assert_eq!(
        limit,
        common::u(&k["guest_limit_bytes"])
            + common::u(&k["vmm_overhead_bytes"])
            + common::u(&k["growth_allowance_bytes"]),
        "{k}"
    );
    assert!(common::u(&k["guest_resident_peak_bytes"]) <= limit, "{k}");
    // Double paging, found through the swap disk worker's own major faults,
    // with its latency histogram.
    let dp = result(dir.path(), "matrix", "double-paging-kernel");
    assert_eq!(dp["outcome"], "ok", "{dp}");
    assert!(
        common::u(&dp["double_paging_events"]) > 0,
        "{}",
        dp["kernel_swap"]
    );
    assert!(
        common::u(&dp["latency"]["double_paging"]["count"]) > 0,
        "{dp}"
    );
    assert!(
        common::u(&dp["latency"]["double_paging"]["p50_ns"]) > 0,
        "{dp}"
    );
    assert!(common::u(&dp["kernel_swap"]["swap_ins_device"]) > 0, "{dp}");
    // The report puts each kernel scenario beside its userfaultfd twin.
    let report = std::fs::read_to_string(dir.path().join("matrix").join("report.md")).unwrap();
    for needle in [
        "## Host swap: kernel vs swaplab",
        "### `host-swap-kernel` vs `host-swap-uffd`",
        "### `double-paging-kernel` vs `double-paging-uffd`",
        "| silent writes | not observable |",
    ] {
        assert!(
            report.contains(needle),
            "{needle:?} not in report.md:\n{report}"
        );
    }
    // The failing run failed, and said why.
    let f = result(dir.path(), "fail", "kswap-fail");
    assert!(
        f["outcome"].as_str().unwrap_or_default().contains("within"),
        "{f}"
    );
    // The run after the SIGKILL swept what it left, and said so.
    // A run the guest's triple fault made go twice swept in its first
    // attempt, which is kept beside the second.
    let next = result(dir.path(), "next", "kswap-ok");
    let first = dir.path().join("next/kswap-ok/1-triple-fault/result.json");
    let first: Option<Value> = std::fs::read_to_string(first)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if tier == Tier::Sandbox {
        assert!(first.is_some(), "the injected triple fault did not happen");
    }
    let attempts: Vec<&Value> = first.iter().chain([&next]).collect();
    let n = |k: &str| -> usize {
        attempts
            .iter()
            .map(|r| r["kernel_swap"]["swept"][k].as_array().map_or(0, Vec::len))
            .sum()
    };
    let swept: Vec<&Value> = attempts
        .iter()
        .map(|r| &r["kernel_swap"]["swept"])
        .collect();
    assert!(n("cgroups_removed") >= 1, "{swept:?}");
    assert!(n("swaps_disabled") >= 1, "{swept:?}");
}

#[test]
fn kernel_swapped_runs_leave_nothing_however_they_end() {
    let Some(tier) = common::linux_guest() else {
        return;
    };
    if !common::have_root("the kernel host swapper") {
        return;
    }
    common::retry_if_l1_panicked(|| cases(tier));
}

//! In the nested sandbox: L1 runs a kernel new enough for the swapper's
//! userfaultfd features (`UFFD_FEATURE_MOVE`, Linux 6.8), so a host-swap
//! probe works there; and its kernel has `veth` and `sch_netem` (this
//! project's hosts have no netem), so `bench far-memory --distance netem`
//! runs there. One L1 boot per test; the two tests run side by side.
//! Skipped (with a printed reason) where QEMU is not installed.

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

/// The text between `=== NAME` and the next `===` line.
fn section_text(stdout: &str, name: &str) -> String {
    let start = format!("=== {name}");
    assert!(stdout.lines().any(|l| l == start), "no {start}: {stdout}");
    stdout
        .lines()
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| !l.starts_with("=== "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON object printed between `=== NAME` and the next `===` line.
fn section(stdout: &str, name: &str) -> Value {
    let text = section_text(stdout, name);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {text:?}"))
}

/// Runs `sh -c script` in one L1 (1 GiB, at most 600 s) and returns its
/// output after checking it exited 0; also its stdout as text.
fn in_l1(script: &str) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_swaplab"))
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
        .arg(script)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
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
    let (_, stdout) = in_l1(&script);

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

fn positive(v: &Value, key: &str) {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{key} = {x}: {v}");
}

/// `swaplab bench far-memory --distance netem` in the nested sandbox, whose
/// L1 kernel has `veth` and `sch_netem` (this project's hosts have no netem).
/// One L1 boot:
///
/// 1. leftovers of a dead process: a namespace `swaplab-4999999-0` and a veth
///    pair `swl4999999h0`/`p0` (pid_max is at most 2^22: no such process);
/// 2. a bench killed with SIGKILL once its server runs in its namespace:
///    its servers die with it (parent-death signal through `ip netns exec`
///    and `setpriv`), its namespace stays (SIGKILL runs no destructor);
/// 3. a whole bench at tiny sizes, delays 0 and 200 µs: it sweeps what 1
///    and 2 left, and its rows are `path: netem`, emulated, with figures;
/// 4. afterwards: no `swaplab-` namespace, no `swl` link, no redis-server,
///    no scratch directory of the servers.
///
/// Times nothing (L1 is emulated: its timings are functional). Skipped, with
/// a printed reason, where QEMU is not installed.
#[test]
fn bench_far_memory_netem_runs_in_l1_and_leaves_nothing() {
    if qemu_missing() {
        return;
    }
    common::retry_if_l1_panicked(netem_in_l1);
}

/// The script L1 runs (`BENCH` is the bench's command line without
/// `--gets` and `--delays-us`). `wait_for F` polls the shell function F
/// (at most 60 s).
const SCRIPT: &str = r#"set -e
wait_for() {
    i=0
    until "$1"; do
        i=$((i + 1))
        [ "$i" -lt 600 ] || { echo "timed out waiting for $1" >&2; cat /run/killed.err >&2; exit 1; }
        sleep 0.1
    done
}
server_in_ns() { [ -n "$(ip netns pids "swaplab-$pid-0" 2>/dev/null)" ]; }
no_server() { ! pgrep -x redis-server >/dev/null; }
ip netns add swaplab-4999999-0
ip link add swl4999999h0 type veth peer name swl4999999p0
echo '=== planted'; ip netns list; ip -o link
BENCH --gets 100000 --delays-us 200 >/dev/null 2>/run/killed.err &
pid=$!
wait_for server_in_ns
echo "=== killed $pid"
kill -9 "$pid"
wait "$pid" || true
wait_for no_server
ip netns list
echo '=== bench'
BENCH --gets 100 --delays-us 0,200
echo '=== after'
ip netns list
ip -o link
echo "redis-servers: $(pgrep -c -x redis-server || true)"
echo "scratch: $(ls -d "${TMPDIR:-/tmp}"/swaplab-far-memory-* 2>/dev/null | wc -l)"
echo '=== end'
"#;

fn netem_in_l1() {
    let exe = env!("CARGO_BIN_EXE_swaplab");
    let bench =
        format!("'{exe}' bench far-memory --distance netem --json --mem 16M --limit 4M --passes 2");
    let script = SCRIPT.replace("BENCH", &bench);
    let (out, stdout) = in_l1(&script);

    let planted = section_text(&stdout, "planted");
    assert!(planted.contains("swaplab-4999999-0"), "{planted}");
    assert!(planted.contains("swl4999999h0"), "{planted}");

    // The killed bench: its servers are gone (the script waited for that),
    // its namespace was left.
    let killed_line = stdout
        .lines()
        .find(|l| l.starts_with("=== killed "))
        .unwrap_or_else(|| panic!("{}", show(&out)));
    let killed_pid = killed_line.trim_start_matches("=== killed ");
    let killed = section_text(&stdout, killed_line.trim_start_matches("=== "));
    let left = format!("swaplab-{killed_pid}-0");
    assert!(
        killed.contains(&left),
        "SIGKILL ran no destructor: {killed}"
    );
    // It swept the dead process's leftovers when it made its own.
    assert!(!killed.contains("swaplab-4999999-0"), "{killed}");

    let text = section_text(&stdout, "bench");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("bench: not JSON ({e}): {}", show(&out)));
    eprintln!("L1 bench: {}", serde_json::to_string_pretty(&v).unwrap());
    assert_eq!(v["distance"], "netem", "{v}");
    let store = v["store"].as_str().unwrap_or_default();
    assert!(store.contains("network namespace swaplab-"), "{store}");
    positive(&v, "floor_p50_ns");
    let ds = v["distances"].as_array().expect("distances");
    let paths: Vec<&str> = ds.iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["loopback", "netem", "netem"], "{v}");
    let delays: Vec<u64> = ds[1..].iter().map(|d| common::u(&d["delay_us"])).collect();
    assert_eq!(delays, [0, 200]);
    for d in ds {
        assert_eq!(d["emulated"], d["path"] == "netem", "{d}");
        for key in [
            "get_p50_ns",
            "get_p99_ns",
            "bound_p50_ns",
            "swap_in_bound_ratio",
        ] {
            positive(d, key);
        }
        for run in ["random", "sequential", "sequential_prefetch"] {
            let r = &d[run];
            assert!(r["error"].is_null(), "{run} failed: {r}");
            positive(r, "fault_p50_ns");
            assert!(common::u(&r["swap_ins"]) > 0, "{run}: {r}");
        }
    }

    let after = section_text(&stdout, "after");
    assert!(!after.contains("swaplab-"), "a namespace is left: {after}");
    assert!(!after.contains(" swl"), "a veth is left: {after}");
    assert!(after.contains("redis-servers: 0"), "{after}");
    // The killed bench's scratch directory (its servers' logs) was swept too.
    assert!(after.contains("scratch: 0"), "{after}");
}

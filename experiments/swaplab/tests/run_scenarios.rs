//! `swaplab run`: scenario files are checked before anything runs, and the
//! guest-swap, host-swap and double-paging scenarios run end to end with a
//! real Debian guest (tier: natively on hardware KVM; in the nested sandbox
//! here), each showing what it is meant to show, with every page verified.
//!
//! The sizes are smaller than the built-in scenarios' (which `swaplab run`
//! uses) so the suite stays fast; the shapes are the same.

mod common;

use std::path::Path;

use common::{linux_guest_tier, swaplab, swaplab_with_env, temp_dir, Tier};
use runner::run::resume::{ENV_INJECT_L1_PANIC, ENV_INJECT_TRIPLE_FAULT};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_typo_in_a_scenario_file_fails_before_anything_runs() {
    let dir = temp_dir("run-typo");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"t\"\n[guest]\nmem = \"256M\"\n[host]\nlimit = \"128M\"\npolcy = \"fifo\"\n[workload]\nmb = 64\n",
    )
    .unwrap();
    let t = std::time::Instant::now();
    let out = swaplab(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.toml:6:1") && err.contains("\"polcy\""),
        "{err}"
    );
    assert!(err.contains("did you mean \"policy\""), "{err}");
    assert!(!err.contains("sandbox"), "went to the sandbox: {err}");
    assert!(t.elapsed().as_secs() < 30);
    assert!(!dir.path().join("results.json").exists());

    let out = swaplab(&["run", "no-such-scenario"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no-such-scenario"));
}

#[test]
fn sigterm_stops_the_matrix_and_writes_what_ran() {
    if !common::have_kvm() {
        return;
    }
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("run-sigterm");
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let out_dir = dir.path().join("out");
    // Here, on this host's KVM: the guest need not get far (on PVM it cannot),
    // only be running when the signal comes. Every thread of the run must
    // leave SIGTERM to the run's handler (one that did not killed it whole,
    // leaving no results and its scratch files behind).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .args([
            "run",
            "host-swap",
            "--repetitions",
            "2",
            "--sandbox=never",
            "--out",
        ])
        .arg(&out_dir)
        .env("TMPDIR", &scratch)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "ended early: {seen}");
        seen.push_str(&line);
        if line.contains("repetition 1/2 starting") {
            break;
        }
    }
    // The guest's vCPU thread running: every thread of the run is there.
    let tasks = format!("/proc/{}/task", child.id());
    let vcpu_running = || {
        std::fs::read_dir(&tasks).unwrap().any(|t| {
            std::fs::read_to_string(t.unwrap().path().join("comm"))
                .is_ok_and(|c| c.trim() == "vcpu0")
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !vcpu_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "no vcpu0 thread: {seen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill only sends a signal to our child, not yet reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    seen.push_str(&rest);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "{status:?}\n{seen}"
    );
    assert!(
        seen.contains("interrupted by SIGTERM after 1 of 2 runs"),
        "{seen}"
    );
    for f in ["results.json", "report.md", "host-swap/1/result.json"] {
        assert!(out_dir.join(f).is_file(), "no {f}\n{seen}");
    }
    assert!(!out_dir.join("host-swap/2").exists(), "{seen}");
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
}

/// `swaplab run` of the matrix `toml` (written to a file in a fresh temp
/// dir) with `--out <dir>/out`, `extra` arguments, `env`, and `TMPDIR` set to
/// `<dir>/tmp` (empty, for the caller to check that nothing is left there).
fn run_matrix(
    name: &str,
    toml: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    let dir = temp_dir(name);
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let file = dir.path().join("matrix.toml");
    std::fs::write(&file, toml).unwrap();
    let out_dir = dir.path().join("out");
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut env = env.to_vec();
    env.push(("TMPDIR", scratch.to_str().unwrap()));
    let out = swaplab_with_env(&args, &env);
    (dir, out_dir, out)
}

const MATRIX: &str = r#"
description = "the test suite's small guest-swap / host-swap / double-paging matrix"
[defaults]
repetitions = 1
# Runs take 20-60 s here (2-3x that under load); a stuck one must not hold
# the suite for long (the sandbox's limit is the sum of these).
timeout_s = 300
[defaults.workload]
kind = "touch"
pattern = "random"
passes = 1

[[scenario]]
name = "guest-swap"
[scenario.guest]
mem = "128M"
swap = "128M"
[scenario.workload]
mb = 96

# Host swap, uncooperative and mitigated: pass 2 only reads (silent writes
# when the host writes those pages out again), then the guest reads its disk
# into frames it freed (stale reads when the host had evicted them); 16 MiB
# of the disk sit in its page cache throughout and are read again at the end
# (false anonymity when the host swaps them out; named pages mitigated).
[[scenario]]
name = "host-swap"
[scenario.guest]
# Room for the 48M working set and 16M of cache besides the OS: only the
# host swaps (at 128M the guest swapped 5 pages out in one CI run).
mem = "144M"
swap = "64M"
[scenario.host]
limit = "80M"
policy = "random"
[scenario.workload]
mb = 48
passes = 2
write_ratio = 0.0
disk_read_mb = 48
disk_cache_mb = 16

[[scenario]]
name = "host-swap-mitigated"
[scenario.guest]
# Room for the 48M working set and 16M of cache besides the OS: only the
# host swaps (at 128M the guest swapped 5 pages out in one CI run).
mem = "144M"
swap = "64M"
[scenario.host]
limit = "80M"
policy = "random"
mitigations = ["silent-writes", "stale-reads", "false-reads", "decayed-sequentiality", "false-anonymity"]
[scenario.workload]
mb = 48
passes = 2
write_ratio = 0.0
disk_read_mb = 48
disk_cache_mb = 16

# host-swap's limit met by a balloon sized to it before the workload starts
# (guest RAM − limit: the guest keeps about 30M of the 77M its kernel reports,
# and swaps): the host has (almost) nothing to swap back in.
[[scenario]]
name = "balloon"
[scenario.guest]
mem = "128M"
swap = "64M"
[scenario.host]
limit = "80M"
policy = "random"
[scenario.balloon]
policy = "manual"
target = "48M"
[scenario.workload]
mb = 48
passes = 2
write_ratio = 0.0
disk_read_mb = 48

[[scenario]]
name = "double-paging"
[scenario.guest]
mem = "128M"
swap = "128M"
[scenario.host]
limit = "112M"
policy = "fifo"
[scenario.workload]
mb = 96

# A short soak: host swap, guest swap and balloon churn at once, with the
# integrity checker verifying round after round (the built-in `soak` runs
# the same for 10 minutes), the host's evictions going to far memory: a
# redis-server of the run's own, beside the VMM (in L1 in the sandbox).
[[scenario]]
name = "soak-short"
[scenario.guest]
mem = "160M"
swap = "128M"
[scenario.host]
limit = "96M"
policy = "clock"
store = "redis"
store_url = "private"
[scenario.balloon]
policy = "churn"
target = "40M"
period_s = 10
[scenario.workload]
kind = "integrity"
mb = 56
duration_s = 40
"#;

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an integer in {v}"))
}

fn by_name<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["scenario"] == name)
        .unwrap_or_else(|| panic!("no result for {name}"))
}

fn check_common(r: &Value, mb: u64) {
    let name = r["scenario"].as_str().unwrap();
    assert_eq!(r["outcome"], "ok", "{name}: {}", r["outcome"]);
    assert_eq!(u(r, "integrity_errors"), 0, "{name}");
    assert!(
        u(r, "pages_verified") >= mb * 256,
        "{name}: only {} pages verified",
        u(r, "pages_verified")
    );
    for key in [
        "guest_pswpin",
        "guest_pswpout",
        "swap_disk_reads",
        "swap_disk_writes",
        "host_evictions",
        "host_swap_ins",
        "double_paging_events",
    ] {
        assert!(r[key].is_u64(), "{name}: {key} missing");
    }
    for path in [
        "guest_swap_in",
        "guest_swap_out",
        "host_swap_in_vcpu",
        "host_swap_in_device",
        "double_paging",
    ] {
        assert!(r["latency"][path]["p99_ns"].is_u64(), "{name}: {path}");
    }
}

#[test]
fn guest_swap_host_swap_and_double_paging_show_their_fault_paths() {
    // In the sandbox, L1's kernel is crashed as the third run starts: the
    // matrix must resume in a fresh L1, keep the two finished runs and run
    // the third again (see swaplab::run::resume). And the fifth run's guest
    // triple-faults first thing: the run goes once more, counted.
    let (_dir, out_dir, out) = run_matrix(
        "run-matrix",
        MATRIX,
        &[],
        &[(ENV_INJECT_L1_PANIC, "3"), (ENV_INJECT_TRIPLE_FAULT, "5")],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    if linux_guest_tier() == Ok(Tier::Sandbox) {
        assert!(
            stderr.contains("sysrq triggered crash")
                && stderr.contains("starting L1 again to resume the matrix"),
            "{stderr}"
        );
        // L1 may also die on its own (a residue of its emulation, resumed
        // the same way): the note then tells that resume too, after this one.
        let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
        let note = report
            .lines()
            .find(|l| l.starts_with("> **Note.** Resumed"))
            .unwrap_or_else(|| panic!("no resume note\n{report}\n{stderr}"));
        assert!(
            note.contains(
                "after the sandbox's L1 kernel panicked (Kernel panic - not syncing: sysrq \
                 triggered crash) (cut off and run again from the start: host-swap-mitigated \
                 repetition 1/1)"
            ),
            "{note}\n{stderr}"
        );
        let note = report
            .lines()
            .find(|l| l.contains("runs ran a second time after the guest triple-faulted"))
            .unwrap_or_else(|| panic!("no triple-fault note\n{report}\n{stderr}"));
        assert!(
            note.contains("double-paging repetition 1/1"),
            "{note}\n{stderr}"
        );
        assert!(
            stderr.contains("double-paging repetition 1/1: the guest rebooted (triple fault)"),
            "{stderr}"
        );
        let first = out_dir.join("double-paging/1-triple-fault/result.json");
        let first: Value = serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
        assert!(
            first["outcome"].as_str().unwrap().contains("triple fault"),
            "{first}"
        );
    }
    // The summary: one table per run with every path.
    for row in [
        "guest swap-in (blk read)",
        "guest swap-out (blk write)",
        "host swap-in by vCPU",
        "host swap-in by device",
        "double paging",
    ] {
        // A table row: the label padded to its column (the host line also
        // says "double paging N").
        let needle = format!("  {row:<28} ");
        assert_eq!(stdout.matches(&needle).count(), 6, "{row}: {stdout}");
    }
    let all: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(all.len(), 6);
    for (name, rep) in [("guest-swap", 1), ("host-swap", 1), ("double-paging", 1)] {
        let p = out_dir.join(name).join(rep.to_string());
        assert!(Path::new(&p.join("result.json")).is_file(), "{p:?}");
    }

    let g = by_name(&all, "guest-swap");
    check_common(g, 96);
    assert!(
        u(g, "guest_pswpout") > 0 && u(g, "swap_disk_writes") > 0,
        "{g}"
    );
    assert_eq!(u(g, "host_evictions"), 0);

    let h = by_name(&all, "host-swap");
    check_common(h, 48);
    assert!(
        u(h, "host_evictions") > 0 && u(h, "host_swap_ins") > 0,
        "{h}"
    );
    assert_eq!(u(h, "guest_pswpout"), 0, "the guest had room: {h}");
    assert!(h["latency"]["host_swap_in_vcpu"]["count"].as_u64().unwrap() > 0);

    // The VSwapper anomalies the mitigations remove.
    let m = by_name(&all, "host-swap-mitigated");
    check_common(m, 48);
    let counter = |r: &Value, key: &str| u(&r["swapper"]["counters"], key);
    assert!(counter(h, "silent_writes") > 0, "no silent writes: {h}");
    assert_eq!(counter(m, "silent_writes"), 0, "{m}");
    assert!(u(h, "stale_swap_reads") > 0, "no stale reads: {h}");
    assert_eq!(counter(h, "false_reads_avoided"), 0);
    assert!(counter(m, "false_reads_avoided") > 0, "{m}");
    // Free page reporting (part of false-reads): the guest handed free
    // blocks back and the host dropped them.
    assert!(u(&m["balloon"]["metrics"], "reported_pages") > 0, "{m}");
    assert!(h["balloon"].is_null(), "no balloon without the mitigation");
    assert!(
        u(m, "stale_swap_reads") < u(h, "stale_swap_reads"),
        "mitigated {} vs {}",
        u(m, "stale_swap_reads"),
        u(h, "stale_swap_reads")
    );
    // False anonymity: page cache written to the store; mitigated, dropped
    // and read back from the disk (the Swap Mapper's named pages).
    assert!(counter(h, "false_anonymity") > 0, "no false anonymity: {h}");
    assert_eq!(counter(h, "named_evictions"), 0, "{h}");
    assert_eq!(counter(m, "false_anonymity"), 0, "{m}");
    assert!(counter(m, "named_evictions") > 0, "{m}");
    assert!(counter(m, "swapin_named") > 0, "no named faults: {m}");
    assert!(
        m["latency"]["host_swap_in_named"]["count"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Ballooning at the same pressure: the balloon was full before the
    // workload ran, and the host swapped (next to) nothing back in.
    let b = by_name(&all, "balloon");
    check_common(b, 48);
    let bm = &b["balloon"];
    assert!(
        u(&bm["metrics"], "inflate_pages") >= 48 << 8 && u(bm, "target_bytes") == 48 << 20,
        "{bm}"
    );
    let waited = b["guest"]["workload"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "balloon_wait")
        .unwrap_or_else(|| panic!("no balloon_wait line: {}", b["guest"]));
    assert!(u(waited, "balloon_pages") >= 48 << 8, "{waited}");
    // The balloon leaves the guest exactly the limit (the built-in scenario
    // adds 8M of margin and gets none): a few host swap-ins remain while the
    // guest swaps (0 to a tenth of host-swap's seen so far).
    assert!(
        u(b, "host_swap_ins") * 5 < u(h, "host_swap_ins"),
        "balloon {} vs host-swap {} host swap-ins",
        u(b, "host_swap_ins"),
        u(h, "host_swap_ins")
    );
    // The balloon leaves the guest exactly the limit, so the host may still
    // evict a little while the guest swaps: double paging only then.
    if u(b, "double_paging_events") > 0 {
        assert!(
            u(b, "guest_pswpout") > 0 && u(b, "host_evictions") > 0,
            "{b}"
        );
    }

    let d = by_name(&all, "double-paging");
    check_common(d, 96);
    assert!(
        u(d, "guest_pswpout") > 0 && u(d, "host_evictions") > 0,
        "{d}"
    );
    assert!(u(d, "double_paging_events") > 0, "no double paging: {d}");
    assert_eq!(
        d["latency"]["double_paging"]["count"].as_u64().unwrap(),
        u(d, "double_paging_events")
    );
    // Double paging appears only where both swap: never in guest-swap (no
    // host swap) or host-swap (no guest swap-out, checked above). The
    // mitigated run's guest may write a few pages to its swap disk (its page
    // cache grows under the disk reads; CI saw one event once): each double
    // paging event is the device faulting on a page the guest swaps out.
    assert_eq!(u(g, "double_paging_events"), 0, "{g}");
    assert_eq!(u(h, "double_paging_events"), 0, "{h}");
    let (m_dp, m_out) = (u(m, "double_paging_events"), u(m, "guest_pswpout"));
    assert!(
        m_dp <= m_out,
        "host-swap-mitigated: {m_dp} double-paging events for {m_out} guest swap-outs: {m}"
    );

    // The soak: every round verified while host swapping, guest swapping and balloon churn
    // went on underneath, nothing wrong.
    let k = by_name(&all, "soak-short");
    check_common(k, 56);
    assert!(
        u(k, "host_evictions") > 0 && u(k, "host_swap_ins") > 0,
        "{k}"
    );
    assert!(u(k, "guest_pswpout") > 0, "the guest did not swap: {k}");
    let m = &k["balloon"]["metrics"];
    assert!(
        u(m, "inflate_pages") > 0 && u(m, "deflate_pages") > 0,
        "the balloon did not churn: {m}"
    );
    // Its store was Redis, the run's own server: every host swap-in came from
    // it (checksummed: a wrong page would count as an integrity error above),
    // and it held pages at the end (the guest swapped, so it used more of its
    // RAM than the host keeps resident), no more than were evicted.
    assert_eq!(k["swapper"]["store"], "redis", "{k}");
    assert_eq!(k["spec"]["host"]["store_url"], "private", "{k}");
    let nodes = k["store_nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no store_nodes: {k}"));
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(
        nodes[0]["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("redis://127.0.0.1:"))
            && u(&nodes[0], "pages") > 0
            && u(&nodes[0], "pages") <= u(k, "host_evictions"),
        "{nodes:?}: {k}"
    );
    assert!(
        stdout.contains("  store: redis (the run's private redis-server, beside the VMM); pages per node at the end: redis://127.0.0.1:"),
        "{stdout}"
    );
}

/// A run whose far memory dies under it: the run's own redis-server is
/// killed (`SWAPLAB_INJECT_STORE_KILL`) once it holds 2000 pages. The run
/// fails with a message naming the store, serves no wrong data, and the
/// process survives it (no `SIGBUS` crash: KVM's signal for the poisoned
/// page stops the VM) to write its result.
#[test]
fn a_private_store_killed_mid_run_fails_the_run_naming_the_store() {
    if !common::have_kvm() {
        return;
    }
    const KILLED: &str = r#"
description = "a far-memory store killed mid-run"
[[scenario]]
name = "far-killed"
repetitions = 1
timeout_s = 300
[scenario.guest]
mem = "192M"
[scenario.host]
limit = "64M"
store = "redis"
store_url = "private"
[scenario.workload]
kind = "touch"
mb = 80
pattern = "random"
passes = 2
"#;
    let (_dir, out_dir, out) = run_matrix(
        "run-store-killed",
        KILLED,
        &[],
        &[(runner::run::private_store::ENV_INJECT_STORE_KILL, "2000")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("Bus error") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let failed = stderr
        .lines()
        .find(|l| l.contains("far-killed repetition 1/1: FAILED"))
        .unwrap_or_else(|| panic!("no failed run: {stderr}"));
    assert!(
        failed.contains("host swapper:")
            && failed.contains("store read failed: redis store redis://127.0.0.1:"),
        "{failed}"
    );
    let all: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(all.len(), 1);
    let r = &all[0];
    assert!(
        r["outcome"].as_str().unwrap().contains("store read failed"),
        "{r}"
    );
    assert_eq!(u(r, "integrity_errors"), 0, "{r}");
}

const SHARDED: &str = r#"
description = "four small runs in two shards"
[defaults]
repetitions = 2
timeout_s = 300
[defaults.guest]
mem = "128M"
[defaults.workload]
kind = "touch"
mb = 16
passes = 1

[[scenario]]
name = "plain"

[[scenario]]
name = "host-swapped"
[scenario.host]
limit = "72M"
"#;

/// `--jobs 2`: the matrix runs as two shards in two L1 VMs at once (they take
/// runs first come, first served), then this process gathers them into one report
/// (every run is there, so no third L1 is needed).
/// Bad combinations are usage errors before anything boots.
#[test]
fn jobs_run_shards_in_parallel_sandboxes_and_gather_them() {
    common::assert_cli_usage_error(&["run", "--jobs", "0"], "--jobs");
    common::assert_cli_usage_error(&["run", "--jobs", "17"], "--jobs");
    common::assert_cli_usage_error(&["run", "--jobs", "two"], "expected auto or a number");
    common::assert_cli_usage_error(
        &[
            "run",
            "--jobs",
            "2",
            "--shard",
            "1/2",
            "--out",
            "/nonexistent",
        ],
        "give one",
    );
    common::assert_cli_usage_error(&["run", "--shard", "3/2", "--out", "/x"], "expected I/N");
    common::assert_cli_usage_error(&["run", "--shard", "1/2"], "--out");
    let Some(tier) = common::linux_guest() else {
        return;
    };
    if tier == Tier::Native {
        // Here guests run on this host's KVM, one at a time.
        common::assert_cli_usage_error(&["run", "--jobs", "2"], "one at a time");
        return;
    }
    common::retry_if_l1_panicked(sharded_matrix);
}

fn sharded_matrix() {
    let (dir, out_dir, out) = run_matrix("run-jobs", SHARDED, &["--jobs", "2"], &[]);
    let scratch = dir.path().join("tmp");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let runs = |p: &Path| -> Vec<(String, u64)> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}\n{err}", p.display()));
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["outcome"], "ok", "{r}");
                let rep = r["spec"]["repetitions"].as_u64().unwrap();
                (r["scenario"].as_str().unwrap().to_string(), rep)
            })
            .collect()
    };
    // Every run once, gathered in matrix order...
    assert_eq!(runs(&out_dir.join("results.json")).len(), 4, "{err}");
    for rep in ["1", "2"] {
        for s in ["plain", "host-swapped"] {
            assert!(
                out_dir.join(s).join(rep).join("result.json").is_file(),
                "{s}/{rep}\n{err}"
            );
        }
    }
    // ...each run claimed by exactly one shard, and run by that shard's own L1.
    let mut ran = 0;
    for shard in ["1", "2"] {
        ran += runs(&out_dir.join("shards").join(shard).join("results.json")).len();
        assert!(out_dir
            .join("shards")
            .join(shard)
            .join("trace.json")
            .is_file());
        assert!(
            err.contains(&format!("[shard {shard}/2] swaplab: results in")),
            "{err}"
        );
    }
    assert_eq!(ran, 4, "the shards ran {ran} runs between them\n{err}");
    for nth in 1..=4 {
        let owners: Vec<_> = std::fs::read_dir(out_dir.join("shards/claims").join(nth.to_string()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(owners.len(), 1, "run {nth}: {owners:?}");
    }
    // Every run was there: they were gathered here, with no third L1.
    assert!(
        !err.lines()
            .any(|l| l.starts_with("swaplab: running in the nested sandbox")),
        "{err}"
    );
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        report.contains("2 shards in 2 sandboxes at once"),
        "{report}"
    );
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
}

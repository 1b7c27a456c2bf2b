//! `swaplab bench far-memory` at tiny sizes: the table's figures are there, every
//! distance is labelled emulated, no run failed, and the private redis-server is
//! gone afterwards. Times nothing: the bench prints numbers, it does not judge
//! them here.
//!
//! Needs /dev/kvm and redis-server (installed by `scripts/setup.sh`).

use serde_json::Value;

mod common;

fn positive(v: &Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {}", v[key]));
    assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    x
}

/// Held by the tests that count this host's redis-servers before and after
/// a bench: they must not run at once.
static SERVERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

use base::redis_server::running_servers as redis_servers;

/// `swaplab bench far-memory --json` at tiny sizes (16M, limit 4M) with
/// `extra` flags, the delays and the `GET`s given.
fn tiny_bench(extra: &[&str], delays_us: &str, gets: &str) -> std::process::Output {
    let mut args = vec![
        "bench",
        "far-memory",
        "--json",
        "--mem",
        "16M",
        "--limit",
        "4M",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--delays-us", delays_us, "--gets", gets]);
    common::swaplab(&args)
}

#[test]
fn bench_far_memory_json_has_every_distance_labelled_emulated() {
    if !common::have_kvm() || !common::have_program("redis-server", "redis-server") {
        return;
    }
    let _serial = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let before = redis_servers();
    let out = tiny_bench(&[], "0,50", "200");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    positive(&v, "floor_p50_ns");
    positive(&v, "worst_swap_in_bound_ratio");
    assert_eq!(v["store"], "private redis-server on loopback");
    // This project's hosts have no netem: auto falls back to the relay and
    // says why. Where the kernel has netem, auto takes it.
    let note = v["distance_note"].as_str().expect("distance_note");
    let relay = "relay";
    if v["distance"] == relay {
        assert!(note.contains("netem unavailable"), "{note}");
    } else {
        assert_eq!(v["distance"], "netem", "{v}");
        eprintln!("this host has netem: the relay rows are not checked here");
        return;
    }
    let ds = v["distances"].as_array().expect("distances");
    let paths: Vec<&str> = ds.iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["loopback", "relay", "relay"]);
    assert!(
        ds[0]["delay_us"].is_null() && ds[0]["emulated"] == false,
        "{}",
        ds[0]
    );
    let delays: Vec<u64> = ds[1..].iter().map(|d| common::u(&d["delay_us"])).collect();
    assert_eq!(delays, [0, 50]);
    for d in ds {
        assert_eq!(d["emulated"], d["path"] == "relay", "{d}");
        for key in [
            "get_p50_ns",
            "get_p99_ns",
            "bound_p50_ns",
            "swap_in_bound_ratio",
            "prefetch_throughput_ratio",
        ] {
            positive(d, key);
        }
        for run in ["random", "sequential", "sequential_prefetch"] {
            let r = &d[run];
            assert!(r["error"].is_null(), "{run} failed: {r}");
            positive(r, "fault_p50_ns");
            positive(r, "accesses_per_sec");
            assert!(
                common::u(&r["swap_ins"]) > 0,
                "{run} swapped nothing in: {r}"
            );
        }
    }
    // The GET round trip crosses the relay's delay twice.
    assert!(common::u(&ds[2]["get_p50_ns"]) >= 100_000, "{}", ds[2]);
    assert_eq!(redis_servers(), before, "the private redis-server is gone");
}

#[test]
fn bench_far_memory_rejects_bad_flags() {
    for (args, needle) in [
        (&["--limit", "256M"][..], "--limit"),
        (&["--passes", "1"][..], "--passes"),
        (&["--delays-us", "1000000"][..], "--delays-us"),
        (&["--gets", "0"][..], "--gets"),
        (&["--distance", "bogus"][..], "--distance"),
    ] {
        let mut all = vec!["bench", "far-memory"];
        all.extend_from_slice(args);
        common::assert_cli_usage_error(&all, needle);
    }
}

/// Names of network namespaces and links made by swaplab (`swaplab-…`,
/// `swl…`).
fn swaplab_net_names() -> Vec<String> {
    let list = |args: &[&str]| {
        let out = std::process::Command::new("ip").args(args).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let ns = list(&["netns", "list"]);
    let links = list(&["-o", "link"]);
    ns.lines()
        .filter_map(|l| l.split_whitespace().next())
        .chain(links.lines().filter_map(|l| l.split(": ").nth(1)))
        .filter(|n| n.starts_with("swaplab-") || n.starts_with("swl"))
        .map(str::to_string)
        .collect()
}

/// `--distance netem` never falls back: on a kernel without netem it fails,
/// after making the namespace and the veth pair, saying why, and leaves no
/// namespace, veth or server behind. (With netem it runs: the sandbox test
/// checks its rows.)
#[test]
fn bench_far_memory_netem_fails_cleanly_without_netem() {
    if !common::have_kvm()
        || !common::have_program("redis-server", "redis-server")
        || !common::have_program("ip", "iproute2")
        || !common::have_root("network namespaces")
    {
        return;
    }
    let _serial = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let before = (redis_servers(), swaplab_net_names());
    let out = tiny_bench(&["--distance", "netem"], "0", "10");
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v["distance"], "netem", "{v}");
        eprintln!("this host has netem: the failure path is not reached here");
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--distance netem") && err.contains("tc "),
            "{err}"
        );
    }
    assert_eq!(
        (redis_servers(), swaplab_net_names()),
        before,
        "left behind: {err}"
    );
}

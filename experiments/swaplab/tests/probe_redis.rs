//! `swaplab probe --store redis` end to end, against `redis-server`s these
//! tests start on loopback (`base::redis_server`): the acceptance run
//! (256M, limit 64M, no integrity error, fault latency per path), a three-node
//! Redis Cluster with pages per node reported, a server killed mid-run (a
//! clear error, nothing wrong served), keys gone afterwards, and flag checks.
//!
//! Runs that need KVM skip, with a printed reason, when /dev/kvm is absent;
//! a missing redis-server is a failure naming scripts/setup.sh.

mod common;

use base::redis_server::{RedisCluster, RedisServer};
use common::{assert_swapper_stopped_the_vm, assert_usage_error, have_kvm, probe_json, u};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every page key of every run.
const PAGE_KEYS: &str = "swaplab:*:*";

fn assert_clean_run(v: &Value, what: &str) {
    assert_eq!(v["host_swap"], "uffd", "{what}");
    assert_eq!(v["swapper"]["final_status"]["store"], "redis", "{what}");
    assert!(u(&v["evictions"]) > 0, "{what}: no evictions");
    assert!(u(&v["swap_ins"]["store"]) > 0, "{what}: no store swap-ins");
    assert_eq!(u(&v["integrity_errors"]), 0, "{what}");
    assert_eq!(v["integrity"]["ok"], true, "{what}: {}", v["integrity"]);
    assert_eq!(v["limit_held"], true, "{what}");
    assert_eq!(u(&v["write_errors"]), 0, "{what}");
    let lat = v["fault_latency_ns"].as_object().expect("latency by path");
    for path in ["store", "guest"] {
        let l = &lat[path];
        assert!(u(&l["count"]) > 0, "{what} {path}: {l}");
        assert!(u(&l["p50"]) <= u(&l["p99"]), "{what} {path}: {l}");
    }
}

#[test]
fn acceptance_run_256m_limit_64m_on_redis() {
    if !have_kvm() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let v = probe_json(&[
        "--mem",
        "256M",
        "--host-limit",
        "64M",
        "--store",
        "redis",
        "--store-url",
        &url,
    ]);
    assert_clean_run(&v, "256M/64M redis");
    assert_eq!(u(&v["pages_touched"]), 65536);
    let nodes = v["store_nodes"].as_array().expect("store_nodes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["node"], url.as_str());
    assert!(u(&nodes[0]["pages"]) > 40_000, "{nodes:?}");
    assert!(server.keys(PAGE_KEYS).is_empty(), "the run left keys");
    assert!(
        server.keys("swaplab:runs").is_empty(),
        "the run stayed registered"
    );
}

#[test]
fn a_three_node_cluster_holds_pages_on_every_node() {
    if !have_kvm() {
        return;
    }
    let cluster = RedisCluster::start(3);
    let v = probe_json(&[
        "--mem",
        "64M",
        "--host-limit",
        "16M",
        "--prefetch",
        "8",
        "--store",
        "redis",
        "--store-url",
        &cluster.url(),
    ]);
    assert_clean_run(&v, "cluster");
    let nodes = v["store_nodes"].as_array().expect("store_nodes");
    eprintln!("pages per node: {nodes:?}");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let total: u64 = nodes.iter().map(|n| u(&n["pages"])).sum();
    for n in nodes {
        assert!(u(&n["pages"]) > total / 5, "unevenly spread: {nodes:?}");
    }
    assert_eq!(cluster.keys_per_node(PAGE_KEYS), [0, 0, 0]);
}

#[test]
fn a_server_killed_mid_run_stops_the_vm_with_a_clear_error() {
    if !have_kvm() {
        return;
    }
    let mut server = RedisServer::start();
    let url = server.url();
    let child = Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .args(["probe", "--json", "--mem", "128M", "--host-limit", "32M"])
        .args(["--passes", "3", "--store", "redis", "--store-url", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swaplab probe");
    // Kill the server once a good part of test RAM lives in it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let keys: u64 = server.cli(&["DBSIZE"]).trim().parse().unwrap_or(0);
        if keys > 5000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the probe never evicted 5000 pages"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let out = common::output_within_child(child, Duration::from_secs(300), "swaplab probe");
    // The message names the server.
    assert_swapper_stopped_the_vm(&out, &[&url]);
}

#[test]
fn redis_flags_are_checked() {
    let url = ["--store-url", "redis://127.0.0.1:6379"];
    let base = ["--mem", "32M", "--host-limit", "8M"];
    let args = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    assert_usage_error(
        &args(&["--store", "redis"]),
        "--store redis needs --store-url",
    );
    assert_usage_error(
        &args(&["--store", "memory", url[0], url[1]]),
        "--store-url needs --store redis",
    );
    assert_usage_error(
        &args(&["--store", "redis", "--store-url", "http://x:1"]),
        "must start with redis://",
    );
    assert_usage_error(
        &args(&["--store", "redis", url[0], url[1], "--host-swap", "kernel"]),
        "--store redis applies to --host-swap uffd only",
    );
    assert_usage_error(
        &["--mem", "32M", url[0], url[1]],
        "--store-url needs --host-limit",
    );
}

//! Seccomp filters on the VMM's threads, through `swaplab probe` as a user runs it
//! (the native KVM and userfaultfd tier): a thread that makes a forbidden syscall
//! stops the run with status 159 and one line naming the thread and the syscall,
//! `--no-seccomp` runs the same thing to the end, and the probe's threads under
//! their filters (every store, the kernel-swap baseline's child) finish cleanly.
//!
//! The forbidden syscall comes from the debug hook `SWAPLAB_SECCOMP_PROBE=<class>`.
//! Runs skip, with a printed reason, when /dev/kvm is absent.

mod common;

use common::{have_kvm, have_root, swaplab, swaplab_with_env};

const SMALL: &[&str] = &["--mem", "16M", "--host-limit", "8M", "--passes", "1"];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["probe"];
    v.extend_from_slice(SMALL);
    v.extend_from_slice(extra);
    v
}

#[test]
fn a_forbidden_syscall_stops_the_run_naming_thread_and_syscall() {
    if !have_kvm() {
        return;
    }
    for (class, thread) in [
        ("vcpu", "vcpu0"),
        ("swapper-fault", "swapper-fault-0"),
        ("swapper-evict", "swapper-evict"),
    ] {
        let out = swaplab_with_env(&args(&[]), &[("SWAPLAB_SECCOMP_PROBE", class)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(159), "{class}: {err}");
        let line = format!(
            "swaplab: seccomp: thread {thread} made a forbidden syscall getpgid (121); \
             rerun with --no-seccomp to run without filters"
        );
        assert!(err.contains(&line), "{class}: {err}");

        let out = swaplab_with_env(
            &args(&["--no-seccomp"]),
            &[("SWAPLAB_SECCOMP_PROBE", class)],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{class} with --no-seccomp: {err}");
        assert!(!err.contains("seccomp"), "{class}: {err}");
    }
}

#[test]
fn every_store_runs_under_the_filters() {
    if !have_kvm() {
        return;
    }
    for store in [
        &["--store", "memory"][..],
        &["--store", "lz4"],
        &["--store", "file"],
        &["--store", "file", "--o-direct"],
        &["--handlers", "2", "--prefetch", "4", "--policy", "fifo"],
    ] {
        let out = swaplab(&args(store));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{store:?}: {err}");
        assert!(!err.contains("seccomp"), "{store:?}: {err}");
    }
}

/// A Redis store's fault handlers and evictor run as `swapper-remote`: under that
/// filter they reach the server, and the class's probe stops the run.
#[test]
fn a_redis_store_runs_under_the_swapper_remote_filter() {
    if !have_kvm() {
        return;
    }
    let server = base::redis_server::RedisServer::start();
    let url = server.url();
    let mut redis: Vec<&str> = args(&["--store", "redis", "--store-url"]);
    redis.push(&url);
    let out = swaplab(&redis);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("seccomp"), "{err}");
    let out = swaplab_with_env(&redis, &[("SWAPLAB_SECCOMP_PROBE", "swapper-remote")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(159), "{err}");
    assert!(
        err.contains("thread swapper-") && err.contains("made a forbidden syscall getpgid"),
        "{err}"
    );
}

/// The kernel-swap baseline re-runs the VMM in a memory cgroup: the child runs
/// under the filters too, and gets `--no-seccomp` when the parent has it.
#[test]
fn the_kernel_baseline_child_runs_under_the_filters_and_inherits_no_seccomp() {
    if !have_kvm() || !have_root("the kernel-swap baseline") {
        return;
    }
    let kernel = ["--host-swap", "kernel", "--store", "memory"];
    let out = swaplab(&args(&kernel));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    let mut no = kernel.to_vec();
    no.push("--no-seccomp");
    let out = swaplab_with_env(&args(&no), &[("SWAPLAB_SECCOMP_PROBE", "vcpu")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}

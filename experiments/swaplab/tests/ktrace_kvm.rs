//! `--ktrace` around real KVM activity: a probe guest runs while the
//! recorder is on; its vCPU's kernel events come back on CLOCK_MONOTONIC,
//! nobody else's do, and the host is left as found (tracing instance gone,
//! tracefs unmounted again if it was not mounted before), also when the
//! recording ends in a panic.
//!
//! Needs root (tracefs) and /dev/kvm; skipped with a reason otherwise. One
//! test function: the phases must not run concurrently (they mount and
//! unmount tracefs).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use runner::probe_run::{run_probe, ProbeConfig, ProbeHooks};
use runner::run::ktrace::{monotonic_ns, mounted, Ktrace, KtraceConfig, TRACEFS};

mod common;

fn can_run() -> bool {
    common::have_root("kernel tracing") && common::have_kvm()
}

fn tracefs_mounted() -> bool {
    mounted(Path::new(TRACEFS), "tracefs")
}

/// No instance of ours left under any tracing root.
fn no_instances_left() {
    for root in [TRACEFS, "/sys/kernel/debug/tracing"] {
        let Ok(dir) = std::fs::read_dir(Path::new(root).join("instances")) else {
            continue;
        };
        let ours = format!("swaplab-{}", std::process::id());
        let left: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&ours))
            .collect();
        assert!(left.is_empty(), "tracing instances left behind: {left:?}");
    }
}

#[test]
fn ktrace_records_a_probe_guest_and_leaves_the_host_as_found() {
    if !can_run() {
        return;
    }
    let was_mounted = tracefs_mounted();

    // Phase 1: a probe guest under the recorder.
    let k = Ktrace::start(&KtraceConfig::default()).expect("ktrace starts as root");
    assert!(k.instance().is_dir());
    assert!(tracefs_mounted(), "tracefs is mounted while recording");
    let vcpus: Arc<Mutex<Vec<i32>>> = Arc::default();
    let hooks = ProbeHooks {
        on_vcpu_start: Some({
            let vcpus = vcpus.clone();
            Arc::new(move |_, tid| vcpus.lock().unwrap().push(tid))
        }),
        ..ProbeHooks::default()
    };
    let cfg = ProbeConfig {
        mem_bytes: 16 << 20,
        passes: 1,
        ..ProbeConfig::default()
    };
    let t0 = Instant::now();
    run_probe(&cfg, hooks).expect("probe guest runs");
    let t1 = Instant::now();
    let instance = k.instance().to_path_buf();
    let cap = k.stop();
    assert!(
        !instance.exists(),
        "instance {} left behind",
        instance.display()
    );
    assert_eq!(
        tracefs_mounted(),
        was_mounted,
        "tracefs mount state changed"
    );

    let vcpus = vcpus.lock().unwrap().clone();
    assert_eq!(vcpus.len(), 1);
    let vcpu = vcpus[0];
    assert!(
        !cap.enabled.is_empty(),
        "no event enabled: missing {:?}",
        cap.missing
    );
    let on_vcpu: Vec<_> = cap.events.iter().filter(|e| e.tid == vcpu).collect();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for e in &on_vcpu {
        names.insert(cap.name(e));
    }
    eprintln!(
        "ktrace: {} events ({} on the vCPU: {names:?}), enabled {:?}, missing {:?}, dropped {}, lost {}",
        cap.events.len(),
        on_vcpu.len(),
        cap.enabled,
        cap.missing,
        cap.dropped,
        cap.lost
    );
    assert!(!on_vcpu.is_empty(), "no kernel event on the vCPU thread");
    assert_eq!(cap.comms.get(&vcpu).map(String::as_str), Some("vcpu0"));
    // Only this process's threads: the vCPU and the thread that started it
    // (memory setup), never another VM's.
    // SAFETY: gettid has no arguments and cannot fail.
    let me = unsafe { libc::gettid() };
    let foreign: BTreeSet<(i32, &str)> = cap
        .events
        .iter()
        .filter(|e| e.tid != vcpu && e.tid != me)
        .map(|e| (e.tid, cap.comms.get(&e.tid).map_or("?", String::as_str)))
        .collect();
    assert!(foreign.is_empty(), "events of other threads: {foreign:?}");
    // CLOCK_MONOTONIC, in order, within the run (µs resolution, plus the
    // conversion's own precision).
    let (lo, hi) = (monotonic_ns(t0), monotonic_ns(t1));
    let slack = 1_000_000;
    for e in &on_vcpu {
        assert!(
            e.mono_ns + slack >= lo && e.mono_ns <= hi + slack,
            "event at {} outside the guest's run [{lo}, {hi}]: {}",
            e.mono_ns,
            e.detail
        );
    }
    assert!(cap.events.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns));

    // Phase 2: a panic while recording still cleans up.
    let r = std::panic::catch_unwind(|| {
        let k = Ktrace::start(&KtraceConfig::default()).expect("ktrace starts again");
        let dir = k.instance().to_path_buf();
        assert!(dir.is_dir());
        panic!("boom while recording");
    });
    assert!(r.is_err());
    no_instances_left();
    assert_eq!(
        tracefs_mounted(),
        was_mounted,
        "tracefs mount state changed after a panic"
    );

    // Phase 3: an instance left by a swaplab that was killed while recording
    // (its pid: a child that has exited) goes when the next recording starts.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let k = Ktrace::start(&KtraceConfig::default()).expect("ktrace starts again");
    let stale = k
        .instance()
        .parent()
        .unwrap()
        .join(format!("swaplab-{dead}"));
    std::fs::create_dir(&stale).expect("a stale-looking instance");
    drop(k);
    // (Instances outlive an unmount: the next start mounts tracefs again.)
    let k = Ktrace::start(&KtraceConfig::default()).expect("ktrace starts again");
    let gone = !stale.exists();
    drop(k);
    assert!(gone, "stale instance {} left behind", stale.display());
    no_instances_left();
    assert_eq!(tracefs_mounted(), was_mounted);
}

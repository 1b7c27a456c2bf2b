//! The written trace parses as JSON, names its processes and tracks, nests
//! its slices, links request/fault pairs, stays under its cap and places
//! kernel events on the epoch's clock.

use serde_json::Value;

use super::*;
use crate::run::ktrace::{KEvent, KtraceCapture};
use crate::run::result::HostSample;
use swapper::FaultRecord;
use vmm::virtio::blk::BlkRecord;

const VCPU_TID: i32 = 101;
const BLK_TID: i32 = 202;

fn fault(
    seq: u64,
    tid: i32,
    thread: ThreadKind,
    path: FaultPath,
    t: u64,
    total: u32,
) -> FaultRecord {
    FaultRecord {
        seq,
        page: seq as u32,
        addr: 0x7f00_0000_0000 + seq * 4096,
        tid,
        thread,
        path,
        write: false,
        t_read_ns: t,
        store_read_ns: total / 2,
        install_ns: total / 4,
        total_ns: total,
        prefetched: 0,
        reclaimed: 0,
    }
}

fn request(seq: u64, kind: BlkKind, start: u64, service: u64) -> BlkRecord {
    BlkRecord {
        seq,
        tid: BLK_TID,
        kind,
        sector: seq * 8,
        bytes: 4096,
        start_ns: start,
        service_ns: service,
        status: 0,
        major_faults: 0,
    }
}

struct Run {
    faults: Vec<FaultRecord>,
    requests: Vec<BlkRecord>,
    timeline: Vec<HostSample>,
}

/// A vCPU faulting every 10 µs (two overlapping a little), a blk write with
/// a device fault inside (double paging), a read with one (stale read), a
/// flush, and a timeline.
fn run() -> Run {
    let dev = ThreadKind::Device(BLK_DEVICE);
    let mut faults: Vec<FaultRecord> = (0..20)
        .map(|i| {
            let path = if i % 2 == 0 {
                FaultPath::Store
            } else {
                FaultPath::Zero
            };
            fault(
                i,
                VCPU_TID,
                ThreadKind::Vcpu(0),
                path,
                1_000_000 + i * 10_000,
                5_000,
            )
        })
        .collect();
    // Overlaps the next fault on its thread by 2 µs: must be trimmed.
    faults[3].total_ns = 12_000;
    faults.push(fault(20, BLK_TID, dev, FaultPath::Store, 2_005_000, 3_000));
    faults.push(fault(21, BLK_TID, dev, FaultPath::Store, 3_005_000, 3_000));
    faults.push(fault(
        22,
        0,
        ThreadKind::Unknown,
        FaultPath::Zero,
        4_000_000,
        1_000,
    ));
    let requests = vec![
        request(1, BlkKind::Write, 2_000_000, 20_000),
        request(2, BlkKind::Read, 3_000_000, 20_000),
        request(3, BlkKind::Flush, 3_100_000, 1_000),
    ];
    let timeline = (0..4u64)
        .map(|i| HostSample {
            t_s: i as f64 * 0.25,
            host_resident_bytes: (64 + i) << 20,
            host_swap_ins: i * 10,
            host_evictions: i * 20,
            disk_reads: i,
            disk_writes: 2 * i,
            ..HostSample::default()
        })
        .collect();
    Run {
        faults,
        requests,
        timeline,
    }
}

impl Run {
    fn trace(&self) -> RunTrace<'_> {
        RunTrace {
            faults: &self.faults,
            requests: &self.requests,
            timeline: &self.timeline,
            start_ns: 500_000,
            ktrace: None,
            ring_dropped: 0,
        }
    }
}

fn write(cap: u64, runs: &[(&str, RunTrace<'_>)]) -> Vec<Value> {
    let mut t = MatrixTrace::new(Vec::new()).unwrap().with_cap(cap);
    for (label, r) in runs {
        t.add_run(label, r).unwrap();
    }
    t.add_failed("broken repetition 1/1", "no image").unwrap();
    let bytes = t.finish().unwrap();
    let doc: Value = serde_json::from_slice(&bytes).expect("trace.json is JSON");
    assert_eq!(doc["displayTimeUnit"], "ns");
    doc["traceEvents"].as_array().unwrap().clone()
}

fn of<'a>(events: &'a [Value], ph: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["ph"] == ph)
}

fn thread_names(events: &[Value], pid: u64) -> BTreeMap<u64, String> {
    of(events, "M")
        .filter(|e| e["name"] == "thread_name" && e["pid"] == pid)
        .map(|e| {
            (
                e["tid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_event_has_the_required_fields() {
    let r = run();
    let events = write(
        MAX_EVENTS_PER_RUN,
        &[("host-swap repetition 1/2", r.trace())],
    );
    for e in &events {
        let ph = e["ph"].as_str().expect("ph");
        assert!(
            e["name"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(),
            "{e}"
        );
        if ph != "M" {
            assert!(e["ts"].as_f64().is_some_and(|t| t >= 0.0), "{e}");
        }
        if ph == "X" {
            assert!(e["dur"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
            assert!(e["cat"].is_string(), "{e}");
        }
    }
    let procs: Vec<(u64, &str)> = of(&events, "M")
        .filter(|e| e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        procs,
        [
            (1, "host-swap repetition 1/2"),
            (2, "broken repetition 1/1 (FAILED)")
        ]
    );
    let failed = of(&events, "i")
        .find(|e| e["name"] == "run failed")
        .unwrap();
    assert_eq!(
        (failed["pid"].as_u64(), failed["args"]["reason"].as_str()),
        (Some(2), Some("no image"))
    );
}

#[test]
fn faults_and_requests_sit_on_named_per_thread_tracks() {
    let r = run();
    let events = write(MAX_EVENTS_PER_RUN, &[("run", r.trace())]);
    let names = thread_names(&events, 1);
    assert_eq!(names[&(VCPU_TID as u64)], "vCPU 0");
    assert_eq!(names[&(BLK_TID as u64)], "blk worker (guest swap disk)");
    let unknown = u64::from(NO_TID_TRACK + 1);
    assert_eq!(names[&unknown], "unknown thread 0");
    let slices: Vec<&Value> = of(&events, "X").collect();
    assert_eq!(slices.len(), 23 + 3);
    let on = |tid: i32, cat: &str| {
        slices
            .iter()
            .filter(|e| e["tid"] == tid && e["cat"] == cat)
            .count()
    };
    assert_eq!(on(VCPU_TID, "host_fault"), 20);
    assert_eq!(on(BLK_TID, "host_fault"), 2);
    assert_eq!(on(BLK_TID, "blk"), 3);
    let write = slices.iter().find(|e| e["name"] == "blk write").unwrap();
    assert_eq!(
        (write["ts"].as_f64(), write["dur"].as_f64()),
        (Some(2000.0), Some(20.0))
    );
    assert_eq!(write["args"]["sector"], 8);
    assert_eq!(write["args"]["bytes"], 4096);
    let f = slices
        .iter()
        .find(|e| e["args"]["seq"] == 2 && e["cat"] == "host_fault")
        .unwrap();
    assert_eq!(f["name"], "fault store");
    assert_eq!(
        (f["ts"].as_f64(), f["dur"].as_f64()),
        (Some(1020.0), Some(5.0))
    );
    assert_eq!(f["args"]["page"], 2);
    assert_eq!(f["args"]["addr"], "0x7f0000002000");
    assert_eq!(f["args"]["store_read_ns"], 2500);
    // The overlapping fault is trimmed to nest; its real time stays in args.
    let f3 = slices.iter().find(|e| e["args"]["seq"] == 3).unwrap();
    assert_eq!(
        (f3["dur"].as_f64(), f3["args"]["total_ns"].as_u64()),
        (Some(10.0), Some(12_000))
    );
    // Slices nest on every track.
    let mut by_tid: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for s in &slices {
        let ts = s["ts"].as_f64().unwrap();
        by_tid
            .entry(s["tid"].as_u64().unwrap())
            .or_default()
            .push((ts, ts + s["dur"].as_f64().unwrap()));
    }
    for (tid, mut v) in by_tid {
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut stack: Vec<f64> = Vec::new();
        for (s, e) in v {
            while stack.last().is_some_and(|&end| end <= s) {
                stack.pop();
            }
            if let Some(&end) = stack.last() {
                assert!(
                    e <= end + 1e-9,
                    "tid {tid}: ({s}, {e}) sticks out of a slice ending at {end}"
                );
            }
            stack.push(e);
        }
    }
}

#[test]
fn double_paging_and_stale_reads_are_linked_by_flows() {
    let r = run();
    let events = write(MAX_EVENTS_PER_RUN, &[("run", r.trace())]);
    let starts: Vec<&Value> = of(&events, "s").collect();
    let ends: Vec<&Value> = of(&events, "f").collect();
    assert_eq!((starts.len(), ends.len()), (2, 2));
    for (s, f) in starts.iter().zip(&ends) {
        assert_eq!(s["id"], f["id"]);
        assert_eq!(s["name"], f["name"]);
        assert_eq!(f["bp"], "e");
        assert_eq!(
            (s["tid"].as_i64(), f["tid"].as_i64()),
            (Some(BLK_TID.into()), Some(BLK_TID.into()))
        );
    }
    let dp = starts
        .iter()
        .position(|s| s["name"] == "double paging")
        .unwrap();
    // From the write request's start to the device fault's.
    assert_eq!(starts[dp]["ts"].as_f64(), Some(2000.0));
    assert_eq!(ends[dp]["ts"].as_f64(), Some(2005.0));
    assert!(starts.iter().any(|s| s["name"] == "stale swap read"));
}

#[test]
fn timeline_counters_are_placed_from_the_guest_start() {
    let r = run();
    let events = write(MAX_EVENTS_PER_RUN, &[("run", r.trace())]);
    let resident: Vec<&Value> = of(&events, "C")
        .filter(|e| e["name"] == "host resident (MiB)")
        .collect();
    assert_eq!(resident.len(), 4);
    // Sample at 0.25 s, guest started 0.5 ms after the epoch.
    assert_eq!(resident[1]["ts"].as_f64(), Some(250_500.0));
    assert_eq!(resident[1]["args"]["resident"].as_f64(), Some(65.0));
    let disk = of(&events, "C")
        .find(|e| e["name"] == "swap disk (requests, total)")
        .unwrap();
    assert!(disk["args"]["reads"].is_number() && disk["args"]["writes"].is_number());
    // All-zero series (no balloon here) are left out.
    assert!(!of(&events, "C").any(|e| e["name"] == "balloon (MiB)"));
}

#[test]
fn a_capped_run_keeps_pairs_first_and_says_what_it_left_out() {
    let mut r = run();
    for i in 0..1000 {
        r.faults.push(fault(
            100 + i,
            VCPU_TID,
            ThreadKind::Vcpu(0),
            FaultPath::Zero,
            5_000_000 + i * 10_000,
            1000,
        ));
    }
    let cap = 40;
    let events = write(cap, &[("big", r.trace())]);
    let run1: Vec<&Value> = events
        .iter()
        .filter(|e| e["pid"] == 1 && e["ph"] != "M")
        .collect();
    let data = run1.iter().filter(|e| e["cat"] != "meta").count() as u64;
    assert!(data <= cap, "{data} events over the cap {cap}");
    // Both pairs survive, with their arrows.
    assert_eq!(of(&events, "s").count(), 2);
    let marker = run1
        .iter()
        .find(|e| e["name"] == "trace truncated")
        .unwrap();
    let other = marker["args"]["other host faults"].as_u64().unwrap();
    assert!(other > 900, "{marker}");
    let name = of(&events, "M")
        .find(|e| e["name"] == "process_name" && e["pid"] == 1)
        .unwrap();
    assert!(
        name["args"]["name"]
            .as_str()
            .unwrap()
            .contains("events left out"),
        "{name}"
    );
    // What was kept of a thinned class is spread over the run, not its start.
    let kept: Vec<u64> = run1
        .iter()
        .filter(|e| e["name"] == "fault zero")
        .map(|e| e["args"]["seq"].as_u64().unwrap())
        .collect();
    assert!(kept.iter().any(|&s| s > 600), "{kept:?}");
}

fn kevent(k: &mut KtraceCapture, name: &str, mono_ns: u64, detail: &str) {
    let idx = match k.names.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            k.names.push(name.to_string());
            k.names.len() - 1
        }
    };
    k.events.push(KEvent {
        mono_ns,
        tid: VCPU_TID,
        cpu: 1,
        name: idx as u16,
        detail: detail.into(),
    });
}

#[test]
fn kernel_events_go_to_a_kvm_track_next_to_their_vcpu() {
    let r = run();
    let epoch_mono = 7_000_000_000;
    let mut k = KtraceCapture::default();
    k.comms.insert(VCPU_TID, "vcpu0".into());
    k.enabled = vec!["kvm:kvm_exit".into()];
    kevent(
        &mut k,
        "kvm_exit",
        epoch_mono + 1_000_000,
        "vcpu 0 reason EPT_VIOLATION rip 0x1",
    );
    kevent(
        &mut k,
        "kvm_page_fault",
        epoch_mono + 1_001_000,
        "vcpu 0 address 0x1000",
    );
    kevent(&mut k, "kvm_entry", epoch_mono + 1_040_000, "vcpu 0");
    kevent(
        &mut k,
        "kvm_exit",
        epoch_mono + 1_040_000,
        "vcpu 0 reason HLT rip 0x2",
    );
    kevent(&mut k, "kvm_entry", epoch_mono + 1_050_000, "vcpu 0");
    kevent(
        &mut k,
        "kvm_exit",
        epoch_mono + 2_000_000,
        "vcpu 0 reason IO rip 0x3",
    );
    let mut t = r.trace();
    t.ktrace = Some((&k, epoch_mono));
    let events = write(MAX_EVENTS_PER_RUN, &[("run", t)]);
    let track = (VCPU_TID as u64) | u64::from(KVM_TRACK);
    assert_eq!(thread_names(&events, 1)[&track], "vCPU 0 · kvm");
    let exits: Vec<&Value> = of(&events, "X").filter(|e| e["cat"] == "kvm").collect();
    assert_eq!(exits.len(), 2);
    assert_eq!(exits[0]["name"], "kvm exit: EPT_VIOLATION");
    assert_eq!(exits[0]["tid"].as_u64(), Some(track));
    // µs on the epoch's clock; the end reaches the entry's µs but not the next exit.
    assert_eq!(exits[0]["ts"].as_f64(), Some(1000.0));
    assert_eq!(exits[0]["dur"].as_f64(), Some(40.0));
    assert_eq!(exits[1]["name"], "kvm exit: HLT");
    assert_eq!(exits[1]["dur"].as_f64(), Some(10.999));
    let instants: Vec<&str> = of(&events, "i")
        .filter(|e| e["cat"] == "kvm")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // The page fault, and the last exit that never re-entered.
    assert_eq!(instants, ["kvm_page_fault", "kvm_exit"]);
    assert!(
        of(&events, "i").any(|e| e["name"] == "ktrace" && e["args"]["enabled"] == "kvm:kvm_exit")
    );
}

#[test]
fn thinning_spreads_evenly() {
    assert_eq!(thin(10, 3).collect::<Vec<_>>(), [0, 3, 6]);
    assert_eq!(thin(3, 10).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(thin(5, 0).count(), 0);
    assert_eq!(exit_reason("vcpu 0 reason npf rip 0x1"), "npf");
    assert_eq!(exit_reason("nothing"), "?");
    assert_eq!(vcpu_of_comm("vcpu12"), Some(12));
    assert_eq!(vcpu_of_comm("vcpux"), None);
    // kthreadd's children are named; user threads are not looked up.
    let me = std::process::id() as i32;
    assert_eq!(kernel_thread(me), None);
    assert_eq!(kernel_thread(0), None);
    assert_eq!(kernel_thread(2).as_deref(), Some("kthreadd"));
}

//! From synthetic run results to the report's data and files.

use serde_json::json;

use super::*;
use crate::run::result::PathLatency;
use scenario::load;

fn builtin(name: &str) -> Scenario {
    load(name).unwrap().scenarios.remove(0)
}

/// A guest sample line as `analyze` keeps it (the guest's `report` line
/// plus its arrival time).
fn guest_sample(t: f64, mono_ns: u64, free_kib: u64, pswpin: u64, pswpout: u64) -> Value {
    json!({
        "kind": "report", "seq": 1, "monotonic_ns": mono_ns, "boottime_ns": mono_ns,
        "mem_total_kib": 1 << 20, "mem_free_kib": free_kib, "mem_available_kib": free_kib * 2,
        "pswpin": pswpin, "pswpout": pswpout, "host_t_s": t,
    })
}

/// A double-paging run: host swapping, a guest swap disk, a balloon.
fn host_run(runtime_s: f64) -> RunResult {
    let mut r = failed_run(&builtin("double-paging"), "ok");
    r.runtime_s = runtime_s;
    r.guest_pswpin = 40;
    r.guest_pswpout = 90;
    r.swap_disk_reads = 5;
    r.swap_disk_writes = 12;
    r.host_evictions = 1000;
    r.host_swap_ins = 700;
    r.double_paging_events = 33;
    r.stale_swap_reads = 4;
    r.pages_verified = 4096;
    let mut st = swapper::SwapperStatus::default();
    st.counters.faults = 2000;
    st.counters.silent_writes = 11;
    st.counters.silent_writes_avoided = 0;
    st.counters.decayed_sequential_reads = 7;
    st.counters.sequential_store_reads = 9;
    st.counters.false_reads_avoided = 2;
    r.swapper = Some(st);
    r.blk = Some(json!({"reads": 5, "writes": 12}));
    r.balloon = Some(json!({
        "policy": "auto", "target_bytes": 0, "actual_bytes": 0,
        "metrics": {"inflate_pages": 256, "deflate_pages": 128, "reported_pages": 3},
    }));
    r.vm = Some(json!({"exits": {"by_reason": {
        "mmio_write": {"count": 10, "time_ns": 5}, "hlt": {"count": 5, "time_ns": 1},
    }, "in_kvm_run_ns": 1}}));
    r.anomalies = BTreeMap::from([
        ("stale_swap_reads".to_string(), 4),
        ("silent_writes_avoided".to_string(), 0),
        ("zero_pages_not_stored".to_string(), 17),
    ]);
    r.latency = BTreeMap::from([
        (
            "host_swap_in_vcpu".to_string(),
            PathLatency::of([1000, 2000, 3000]),
        ),
        ("guest_swap_out".to_string(), PathLatency::default()),
    ]);
    r.latency_samples = BTreeMap::from([("host_swap_in_vcpu".to_string(), vec![1000, 2000, 3000])]);
    r.timeline = (0..3u64)
        .map(|i| HostSample {
            t_s: i as f64,
            host_resident_bytes: (100 + i) << 20,
            host_swap_ins: [0, 100, 300][i as usize],
            host_evictions: [0, 50, 50][i as usize],
            balloon_bytes: i << 20,
            ..HostSample::default()
        })
        .collect();
    r.guest.samples = vec![
        guest_sample(0.2, 1_000_000_000, 1000, 0, 0),
        guest_sample(0.9, 1_500_000_000, 500, 10, 50),
    ];
    r
}

#[test]
fn counters_take_the_report_names() {
    let c = run_counters(&host_run(10.0));
    let get = |k: &str| c.get(k).copied();
    assert_eq!(get(counters::HOST_SWAP_INS), Some(700));
    assert_eq!(get(counters::HOST_EVICTIONS), Some(1000));
    assert_eq!(get(counters::HOST_FAULTS), Some(2000));
    assert_eq!(get(counters::GUEST_SWAP_INS), Some(40));
    assert_eq!(get(counters::GUEST_SWAP_OUTS), Some(90));
    assert_eq!(get(counters::DOUBLE_PAGING), Some(33));
    assert_eq!(get(counters::STALE_READS), Some(4));
    assert_eq!(get(counters::SILENT_WRITES), Some(11));
    assert_eq!(get(counters::DECAYED_SEQUENTIALITY), Some(7));
    assert_eq!(get(counters::BALLOON_INFLATED), Some(256));
    assert_eq!(get(counters::BALLOON_DEFLATED), Some(128));
    assert_eq!(get(counters::VM_EXITS), Some(15));
    for (k, v) in [
        ("swap_disk_reads", 5),
        ("swap_disk_writes", 12),
        ("pages_verified", 4096),
        ("integrity_errors", 0),
        ("silent_writes_avoided", 0),
        ("sequential_store_reads", 9),
        ("false_reads_avoided", 2),
        ("zero_pages_not_stored", 17),
        ("balloon_reported_pages", 3),
    ] {
        assert_eq!(get(k), Some(v), "{k}");
    }
    // Shown once, under the report's name.
    assert_eq!(get("stale_swap_reads"), None);
    // The swapper's false-read count (0 in this run) has its row.
    assert_eq!(get(counters::FALSE_READS), Some(0));
    // The Swap Mapper's count (0 here) has its row with the swapper.
    assert_eq!(get(counters::FALSE_ANONYMITY), Some(0));
}

#[test]
fn counters_a_scenario_cannot_produce_are_not_measured() {
    let mut r = failed_run(&builtin("guest-swap"), "ok");
    r.guest.samples = vec![guest_sample(0.1, 1, 1, 0, 0)];
    r.anomalies = BTreeMap::from([
        ("zero_pages_not_stored".to_string(), 0),
        ("device_faults_outside_requests".to_string(), 0),
        ("trace_records_dropped".to_string(), 0),
    ]);
    let c = run_counters(&r);
    assert!(!c.contains_key("zero_pages_not_stored"), "{c:?}");
    assert!(!c.contains_key("device_faults_outside_requests"), "{c:?}");
    assert_eq!(c.get("trace_records_dropped"), Some(&0));
    for k in [
        counters::HOST_SWAP_INS,
        counters::HOST_EVICTIONS,
        counters::HOST_FAULTS,
        counters::DOUBLE_PAGING,
        counters::SILENT_WRITES,
        counters::BALLOON_INFLATED,
    ] {
        assert!(!c.contains_key(k), "{k} in a guest-swap run: {c:?}");
    }
    assert_eq!(c.get(counters::GUEST_SWAP_OUTS), Some(&0));
    assert!(c.contains_key("swap_disk_writes"));
    // No guest samples: the guest's counters were not measured either.
    r.guest.samples.clear();
    assert!(!run_counters(&r).contains_key(counters::GUEST_SWAP_OUTS));
}

#[test]
fn timeline_merges_host_and_guest_samples_with_rates() {
    let t = run_timeline(&host_run(1.0));
    let times: Vec<f64> = t.iter().map(|s| s.t_s).collect();
    assert_eq!(times, [0.0, 0.2, 0.9, 1.0, 2.0]);
    // Host points: resident and balloon bytes, swap rates from differences.
    assert_eq!(t[0].host_resident_bytes, Some(100 << 20));
    assert_eq!(t[0].host_swap_in_per_s, None);
    assert_eq!(t[3].host_swap_in_per_s, Some(100.0));
    assert_eq!(t[4].host_swap_in_per_s, Some(200.0));
    assert_eq!(t[4].host_swap_out_per_s, Some(0.0));
    assert_eq!(t[4].balloon_bytes, Some(2 << 20));
    assert_eq!(t[3].guest_free_bytes, None);
    // Guest points: bytes from KiB, rates over the guest's clock (0.5 s),
    // not the arrival times (0.7 s apart).
    assert_eq!(t[1].guest_free_bytes, Some(1000 * 1024));
    assert_eq!(t[2].guest_available_bytes, Some(1000 * 1024));
    assert_eq!(t[1].guest_swap_out_per_s, None);
    assert_eq!(t[2].guest_swap_out_per_s, Some(100.0));
    assert_eq!(t[2].guest_swap_in_per_s, Some(20.0));
    assert_eq!(t[2].host_resident_bytes, None);
}

#[test]
fn timeline_without_host_swapping_has_no_host_series() {
    let mut r = failed_run(&builtin("guest-swap"), "ok");
    r.timeline = vec![HostSample {
        t_s: 1.0,
        host_resident_bytes: 1 << 30,
        ..HostSample::default()
    }];
    let t = run_timeline(&r);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].host_resident_bytes, None);
    assert_eq!(t[0].balloon_bytes, None);
}

#[test]
fn outcomes() {
    let mut r = host_run(1.0);
    r.outcome = "ok".into();
    assert_eq!(outcome(&r), Outcome::Ok);
    r.integrity_errors = 3;
    assert!(matches!(outcome(&r), Outcome::Failed(w) if w.contains("3 pages")));
    r.outcome = "the guest did not power off within 600 s and was stopped".into();
    assert_eq!(outcome(&r), Outcome::TimedOut);
    r.outcome = "host swapper: store read failed".into();
    assert_eq!(
        outcome(&r),
        Outcome::Failed("host swapper: store read failed".into())
    );
    assert_eq!(
        run_end(&Outcome::Failed("a\nb".into())),
        RunEnd::Failed("a")
    );
}

#[test]
fn a_run_whose_host_limit_was_not_held_failed_and_the_report_says_why() {
    let mut r = host_run(1.0);
    assert_eq!(outcome(&r), Outcome::Ok);
    let st = r.swapper.as_mut().unwrap();
    st.limit_pages = 4096;
    st.slack_pages = 256;
    st.peak_resident_pages = 16384;
    st.committed_pages = 16300;
    st.limit_overshoots = 12000;
    st.counters.write_errors = 11000;
    let why = "the host limit was not held: resident peaked at 16384 pages against a limit of 4096 + 256 slack, still 16300 at the end";
    assert!(
        matches!(&outcome(&r), Outcome::Failed(w) if w.starts_with(why) && w.contains("11000 store writes failed")),
        "{:?}",
        outcome(&r)
    );
    let dir = tempfile::tempdir().unwrap();
    let info = MatrixInfo {
        name: "mine".into(),
        description: String::new(),
        notes: Vec::new(),
    };
    write_report(dir.path(), &info, Environment::default(), &[r]).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("`double-paging` repetition 1: failed"), "{md}");
    assert!(md.contains(why), "{md}");
}

fn matrix() -> (MatrixResults, Vec<RunResult>) {
    let mut a = [host_run(10.0), host_run(30.0), host_run(99.0)];
    a[2].outcome = "the guest did not power off within 9 s and was stopped".into();
    a[1].host_swap_ins = 900;
    let mut b = failed_run(
        &builtin("guest-swap"),
        "running scenario guest-swap: no image",
    );
    b.runtime_s = 1.0;
    let runs = vec![a[0].clone(), b, a[1].clone(), a[2].clone()];
    let env = environment(
        &json!({"kvm": "hardware", "sandbox": true, "timing_grade": false, "host_kernel": "6.18"}),
        "linux-image-amd64 6.1 (6.1.0-1)",
        "2026-11-21T00:00:00Z",
        "abc",
    );
    let info = MatrixInfo {
        name: "double-paging guest-swap".into(),
        description: "two".into(),
        notes: Vec::new(),
    };
    (matrix_results(&info, env, &runs), runs)
}

#[test]
fn runs_group_by_scenario_with_repetitions_in_order() {
    let (m, _) = matrix();
    let names: Vec<&str> = m.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["double-paging", "guest-swap"]);
    let dp = &m.scenarios[0];
    let reps: Vec<u32> = dp.runs.iter().map(|r| r.repetition).collect();
    assert_eq!(reps, [1, 2, 3]);
    assert_eq!(dp.ok_runs().count(), 2);
    assert_eq!(dp.runs[2].outcome, Outcome::TimedOut);
    assert!(!dp.description.is_empty());
    assert_eq!(dp.config["name"], "double-paging");
    let gs = &m.scenarios[1];
    assert!(matches!(&gs.runs[0].outcome, Outcome::Failed(w) if w.contains("no image")));
    assert!(m.environment.sandbox && !m.environment.timing_grade);
    assert_eq!(
        m.environment.guest_kernel,
        "linux-image-amd64 6.1 (6.1.0-1)"
    );
    // Latency: the empty path is left out, samples kept raw.
    let r = &dp.runs[0];
    assert_eq!(r.latency.keys().collect::<Vec<_>>(), ["host_swap_in_vcpu"]);
    assert_eq!(r.latency["host_swap_in_vcpu"].count, 3);
    assert_eq!(
        r.samples["host_swap_in_vcpu"],
        LatencySamples::Raw(vec![1000, 2000, 3000])
    );
}

#[test]
fn write_report_renders_spreads_failures_and_plots() {
    let (_, runs) = matrix();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("results.json"), "[]").unwrap();
    let env = Environment {
        timing_grade: false,
        sandbox: true,
        ..Environment::default()
    };
    let info = MatrixInfo {
        name: "mine".into(),
        description: String::new(),
        notes: vec!["Resumed: 1 of 2 runs were kept".into()],
    };
    let files = write_report(dir.path(), &info, env, &runs).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"report.md".to_string()), "{names:?}");
    assert!(
        names.contains(&"timeline-double-paging.svg".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"latency-double-paging.svg".to_string()),
        "{names:?}"
    );
    for f in &files {
        assert!(f.starts_with(dir.path()) && f.exists());
        if f.extension().is_some_and(|e| e == "svg") {
            let text = std::fs::read_to_string(f).unwrap();
            roxmltree::Document::parse(&text).unwrap();
        }
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("NOT TIMING-GRADE"), "{md}");
    assert!(
        md.contains("> **Note.** Resumed: 1 of 2 runs were kept"),
        "{md}"
    );
    // Median and range over the two successful repetitions.
    assert!(md.contains("| runtime (s) | 20 (10–30) |"), "{md}");
    assert!(md.contains("800 (700–900)"), "{md}");
    assert!(
        md.contains("`double-paging` repetition 3: timed out"),
        "{md}"
    );
    assert!(md.contains("`guest-swap` repetition 1: failed"), "{md}");
    assert!(md.contains("(results.json)"), "{md}");
    assert!(!md.contains("trace.json"), "no trace.json there: {md}");
}

#[test]
fn rfc3339_dates_and_matrix_names() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    let m = matrix_info(&[]);
    assert_eq!(m.name, "default");
    assert!(!m.description.is_empty());
    assert_eq!(matrix_info(&["a".into(), "b".into()]).name, "a b");
}

#[test]
fn guest_kernel_from_the_image_manifest() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(guest_kernel(Some(dir.path())), "");
    assert_eq!(guest_kernel(None), "");
    std::fs::write(
        dir.path().join("manifest.json"),
        r#"{"kernel_package":"linux-image-6.1.0-28-amd64","kernel_package_version":"6.1.119-1","kernel_version":"6.1.0-28-amd64"}"#,
    )
    .unwrap();
    assert_eq!(
        guest_kernel(Some(dir.path())),
        "linux-image-6.1.0-28-amd64 6.1.119-1 (6.1.0-28-amd64)"
    );
}

#[test]
fn the_report_names_the_kernels_the_runs_recorded() {
    let run = |scenario: &str, kernel: &str| {
        let mut r = host_run(1.0);
        r.scenario = scenario.into();
        r.environment = serde_json::json!({ "guest_kernel": kernel });
        r
    };
    assert_eq!(run_kernels(&[]), "");
    assert_eq!(run_kernels(&[run("a", "")]), "");
    let a = run("a", "6.1 (6.1.0-57-amd64)");
    assert_eq!(
        run_kernels(&[a.clone(), run("b", "6.1 (6.1.0-57-amd64)")]),
        "6.1 (6.1.0-57-amd64)"
    );
    assert_eq!(
        run_kernels(&[
            a.clone(),
            run("b", "6.12 (6.12.95)"),
            a,
            run("c", "6.12 (6.12.95)")
        ]),
        "6.1 (6.1.0-57-amd64) (a); 6.12 (6.12.95) (b, c)"
    );
}

#[test]
fn the_papers_matrix_maps_to_arrangements_and_equal_pressure_levels() {
    let m = scenario::load("papers").unwrap();
    let runs: Vec<RunResult> = m
        .scenarios
        .iter()
        .map(|s| crate::run::report::failed_run(s, "not run"))
        .collect();
    let base = baseline_mems(&runs);
    assert_eq!(base.len(), 3, "{base:?}");
    let mut quick = 0;
    for s in &m.scenarios {
        let e = experiment(s, base[s.workload.app.as_deref().unwrap()]).unwrap();
        // The names say what the configuration must give.
        let want_arr = [
            "host-swap-mitigated",
            "guest-swap",
            "host-swap",
            "balloon",
            "baseline",
        ]
        .into_iter()
        .find(|a| s.name.contains(&format!("-{a}")))
        .unwrap();
        assert_eq!(e.arrangement, want_arr, "{}", s.name);
        let want_p = match s.name.rsplit('-').next().unwrap() {
            "25" => 0.25,
            "50" => 0.5,
            "37" => 0.375,
            _ => 0.0,
        };
        assert_eq!(e.pressure, want_p, "{}", s.name);
        assert_eq!(e.group, s.workload.app.clone().unwrap());
        quick += usize::from(s.quick);
        assert!(s.repetitions >= 3);
    }
    assert_eq!(m.scenarios.len(), 39);
    // --quick: the baselines and the 25 % and 50 % levels.
    assert_eq!(quick, 27);
}

#[test]
fn the_summary_names_a_remote_stores_pages_per_node_and_a_private_server() {
    let mut r = host_run(10.0);
    assert!(!r.summary().contains("store:"), "a local store has no line");
    r.store_nodes = vec![swapper::store::StoreNode {
        node: "redis://127.0.0.1:7000".into(),
        pages: 1234,
    }];
    let h = r.spec.host.as_mut().unwrap();
    h.store = scenario::StoreChoice::Redis;
    h.store_url = Some(scenario::PRIVATE_STORE_URL.into());
    let s = r.summary();
    assert!(
        s.contains(
            "  store: redis (the run's private redis-server, beside the VMM); pages per node at \
             the end: redis://127.0.0.1:7000 1234\n"
        ),
        "{s}"
    );
    // The store's part of the swap-ins, below the paths, only when measured.
    assert!(!s.contains("store read within swap-ins"), "{s}");
    r.latency.insert(
        crate::run::result::STORE_READ_PATH.into(),
        PathLatency::of([40_000, 50_000, 60_000]),
    );
    let s = r.summary();
    let row = s
        .lines()
        .find(|l| l.contains("store read within swap-ins"))
        .unwrap_or_else(|| panic!("{s}"));
    assert!(row.contains(" 3 ") && row.contains("50.0"), "{row}");
    // Round trip through results.json.
    let back: RunResult = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
    assert_eq!(back.store_nodes, r.store_nodes);
}

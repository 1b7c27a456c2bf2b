//! render_all: which files a matrix produces, and that they hang together.

use std::collections::BTreeMap;

use super::data::*;
use super::*;

fn run(rep: u32, ok: bool, samples: &[(&str, Vec<u64>)], timeline: bool) -> RunResult {
    RunResult {
        repetition: rep,
        outcome: if ok { Outcome::Ok } else { Outcome::TimedOut },
        runtime_s: 10.0,
        counters: BTreeMap::from([(counters::HOST_FAULTS.to_string(), 10)]),
        latency: BTreeMap::new(),
        samples: samples
            .iter()
            .map(|(p, v)| (p.to_string(), LatencySamples::Raw(v.clone())))
            .collect(),
        timeline: if timeline {
            (0..10u32)
                .map(|i| TimelineSample {
                    t_s: f64::from(i),
                    host_resident_bytes: Some(u64::from(i) << 20),
                    host_swap_in_per_s: Some(f64::from(i) * 100.0),
                    ..Default::default()
                })
                .collect()
        } else {
            Vec::new()
        },
        metric: None,
    }
}

fn matrix() -> MatrixResults {
    let host = vec![1000u64, 2000, 3000];
    let blk = vec![50_000u64, 60_000];
    MatrixResults {
        matrix: "scenarios/default.toml".into(),
        description: String::new(),
        notes: Vec::new(),
        environment: Environment::default(),
        scenarios: vec![
            ScenarioResults {
                name: "host-swap".into(),
                description: String::new(),
                config: serde_json::Value::Null,
                runs: vec![
                    run(1, false, &[("host_swap_in", vec![1; 1000])], true),
                    run(2, true, &[("host_swap_in", host.clone())], true),
                    run(3, true, &[("host_swap_in", host.clone())], false),
                ],
                experiment: None,
            },
            ScenarioResults {
                name: "double paging!".into(),
                description: String::new(),
                config: serde_json::Value::Null,
                runs: vec![run(
                    1,
                    true,
                    &[("host_swap_in", host), ("guest_swap_out", blk)],
                    false,
                )],
                experiment: None,
            },
            ScenarioResults {
                name: "baseline".into(),
                description: String::new(),
                config: serde_json::Value::Null,
                runs: vec![run(1, true, &[], false)],
                experiment: None,
            },
        ],
    }
}

#[test]
fn render_all_produces_the_plots_and_a_report_that_links_them() {
    let files = render_all(
        &matrix(),
        &[markdown::Link {
            title: "results".into(),
            path: "results.json".into(),
        }],
    );
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            // Only host_swap_in is in two scenarios.
            "latency-by-scenario-host_swap_in.svg",
            "latency-host-swap.svg",
            // From repetition 2: repetition 1 timed out.
            "timeline-host-swap.svg",
            "latency-double-paging-.svg",
            "report.md",
        ]
    );
    let md = &files.last().unwrap().contents;
    for f in &files[..files.len() - 1] {
        assert!(
            md.contains(&format!("]({})", f.name)),
            "{} not linked",
            f.name
        );
        roxmltree::Document::parse(&f.contents).unwrap();
    }
    assert!(md.contains("- [results](results.json)"));
    let by = |n: &str| &files.iter().find(|f| f.name == n).unwrap().contents;
    // Pooled over successful runs only: 3 + 3 events, not the timed-out 1000.
    assert!(by("latency-host-swap.svg").contains("host_swap_in (n=6)"));
    assert!(by("latency-by-scenario-host_swap_in.svg").contains("double paging! (n=3)"));
    assert!(by("timeline-host-swap.svg").contains("memory and swap over time (repetition 2)"));
}

#[test]
fn timeline_series_keep_only_measured_values() {
    let s = [
        TimelineSample {
            t_s: 0.0,
            balloon_bytes: Some(0),
            ..Default::default()
        },
        TimelineSample {
            t_s: 1.0,
            balloon_bytes: Some(4096),
            guest_swap_out_per_s: Some(3.0),
            ..Default::default()
        },
    ];
    let series = timeline_series(&s);
    assert_eq!(series.len(), 2);
    assert_eq!(
        (series[0].label.as_str(), series[0].unit),
        ("balloon", Unit::Bytes)
    );
    assert_eq!(series[0].points, [(0.0, 0.0), (1.0, 4096.0)]);
    assert_eq!(
        (series[1].label.as_str(), series[1].unit),
        ("guest swap-outs", Unit::PerSecond)
    );
    assert_eq!(series[1].points, [(1.0, 3.0)]);
}

#[test]
fn results_round_trip_through_json() {
    let mut m = matrix();
    m.scenarios[0].runs[0].outcome = Outcome::Failed("boom".into());
    m.scenarios[0].runs[1].samples.insert(
        "blk".into(),
        LatencySamples::Buckets(vec![Bucket {
            upper_ns: 10,
            count: 2,
        }]),
    );
    let json = serde_json::to_string(&m).unwrap();
    let back: MatrixResults = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["scenarios"][0]["runs"][0]["outcome"]["status"], "failed");
    assert_eq!(v["scenarios"][0]["runs"][0]["outcome"]["reason"], "boom");
    assert_eq!(v["scenarios"][0]["runs"][1]["outcome"]["status"], "ok");
    // Unmeasured timeline fields are left out.
    let t = &v["scenarios"][0]["runs"][1]["timeline"][0];
    assert!(t.get("balloon_bytes").is_none() && t.get("host_resident_bytes").is_some());
}

#[test]
fn slugs_are_file_name_safe() {
    assert_eq!(slug("Double Paging/x"), "double-paging-x");
    assert_eq!(slug("host_swap-in"), "host_swap-in");
}

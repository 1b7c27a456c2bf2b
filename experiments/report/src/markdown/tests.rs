//! report.md: the loud functional-only line, the comparison table's cells
//! (median and range over successful repetitions), failures, figures.

use std::collections::BTreeMap;

use super::*;
use crate::data::{Environment, LatencySummary, RunResult};

fn run(rep: u32, runtime_s: f64, faults: u64, p50_us: u64) -> RunResult {
    let mut counters = BTreeMap::new();
    counters.insert(counters::HOST_FAULTS.to_string(), faults);
    counters.insert(counters::SILENT_WRITES.to_string(), 0);
    counters.insert("vmm_custom".to_string(), 5);
    let mut latency = BTreeMap::new();
    latency.insert(
        "host_swap_in".to_string(),
        LatencySummary {
            count: faults,
            p50_ns: p50_us * 1000,
            p90_ns: p50_us * 2000,
            p99_ns: p50_us * 4000,
            max_ns: p50_us * 9000,
        },
    );
    RunResult {
        repetition: rep,
        outcome: Outcome::Ok,
        runtime_s,
        counters,
        latency,
        samples: BTreeMap::new(),
        timeline: Vec::new(),
        metric: None,
    }
}

fn results(timing_grade: bool) -> MatrixResults {
    let mut failed = run(3, 999.0, 999_999, 999);
    failed.outcome = Outcome::Failed("guest | panicked\nat boot".to_string());
    let mut timed_out = run(2, 0.0, 0, 0);
    timed_out.outcome = Outcome::TimedOut;
    MatrixResults {
        matrix: "scenarios/default.toml".into(),
        description: "the standard matrix".into(),
        notes: Vec::new(),
        environment: Environment {
            kvm: "pvm".into(),
            sandbox: !timing_grade,
            timing_grade,
            host_kernel: "6.18.0".into(),
            guest_kernel: "linux-image-6.1.0-40-amd64".into(),
            date: "2026-11-21T13:00:00Z".into(),
            commit: "f5251b5".into(),
        },
        scenarios: vec![
            ScenarioResults {
                name: "host-swap".into(),
                description: "host | swaps".into(),
                config: serde_json::Value::Null,
                runs: vec![run(1, 12.0, 1000, 40), run(2, 11.0, 1200, 44), failed],
                experiment: None,
            },
            ScenarioResults {
                name: "baseline".into(),
                description: "fits".into(),
                config: serde_json::Value::Null,
                runs: vec![run(1, 5.0, 7, 3), timed_out],
                experiment: None,
            },
        ],
    }
}

/// Cells of the table row starting with `| label |`.
fn row_cells(md: &str, label: &str) -> Vec<String> {
    let line = md
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no row {label:?} in\n{md}"));
    split_row(line)[1..].to_vec()
}

/// Splits a table row on unescaped pipes.
fn split_row(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cells.last_mut().unwrap().push(c);
                if let Some(n) = chars.next() {
                    cells.last_mut().unwrap().push(n);
                }
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.pop(); // after the trailing pipe
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

#[test]
fn sandbox_runs_get_a_loud_functional_only_line() {
    let md = render(&results(false), &[], &[]);
    let warn = md
        .lines()
        .find(|l| l.contains("NOT TIMING-GRADE"))
        .expect("warning line");
    assert!(warn.starts_with("> **"), "{warn}");
    assert!(warn.contains("nested sandbox"), "{warn}");
    // It comes before any number.
    assert!(md.find("NOT TIMING-GRADE").unwrap() < md.find("## Comparison").unwrap());
    assert_eq!(row_cells(&md, "timing-grade"), ["**no**"]);
    assert_eq!(row_cells(&md, "KVM"), ["pvm"]);
    assert_eq!(row_cells(&md, "swaplab commit"), ["`f5251b5`"]);
    let md = render(&results(true), &[], &[]);
    assert!(!md.contains("TIMING-GRADE"));
    assert_eq!(row_cells(&md, "guests ran"), ["natively on /dev/kvm"]);
}

#[test]
fn notes_come_under_the_description() {
    let mut r = results(true);
    assert!(!render(&r, &[], &[]).contains("Note."));
    r.notes = vec!["Resumed after a | panic".into()];
    let md = render(&r, &[], &[]);
    let note = md.lines().find(|l| l.contains("Note.")).expect("note line");
    assert_eq!(note, "> **Note.** Resumed after a \\| panic");
    assert!(md.find("the standard matrix").unwrap() < md.find("Note.").unwrap());
    assert!(md.find("Note.").unwrap() < md.find("## Environment").unwrap());
}

#[test]
fn comparison_cells_are_median_and_range_of_successful_runs() {
    let md = render(&results(true), &[], &[]);
    assert!(md.contains("median over the successful repetitions"));
    let header = md.lines().find(|l| l.starts_with("| | `")).unwrap();
    assert_eq!(split_row(header)[1..], ["`host-swap`", "`baseline`"]);
    // The failed run (999 s, 999999 faults) is left out.
    assert_eq!(row_cells(&md, "runtime (s)"), ["11.5 (11–12)", "5"]);
    assert_eq!(row_cells(&md, "host faults"), ["1100 (1000–1200)", "7"]);
    assert_eq!(row_cells(&md, "host_swap_in p50"), ["42 (40–44)", "3"]);
    assert_eq!(row_cells(&md, "host_swap_in p99"), ["168 (160–176)", "12"]);
    assert_eq!(
        row_cells(&md, "host_swap_in events"),
        ["1100 (1000–1200)", "7"]
    );
    assert_eq!(row_cells(&md, "silent writes"), ["0", "0"]);
    assert_eq!(row_cells(&md, "vmm_custom"), ["5", "5"]);
    // Standard counters no run reported are named once, not shown as rows.
    assert!(
        md.contains("Not measured in any run: host swap-ins (pages),"),
        "{md}"
    );
    assert!(!md.contains("| stale reads |"));
    // Every row of the table has one cell per scenario.
    let table: Vec<&str> = md
        .split("## Comparison")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('|'))
        .collect();
    assert!(table.len() > 8);
    for l in table {
        assert_eq!(split_row(l).len(), 3, "{l}");
    }
}

#[test]
fn failures_are_listed_and_escaped() {
    let md = render(&results(true), &[], &[]);
    assert!(md.contains("## Failed runs"));
    assert!(
        md.contains("- `host-swap` repetition 3: failed: guest \\| panicked at boot"),
        "{md}"
    );
    assert!(md.contains("- `baseline` repetition 2: timed out"));
    assert_eq!(row_cells(&md, "`host-swap`"), ["host \\| swaps", "2/3"]);
    let mut ok = results(true);
    for s in &mut ok.scenarios {
        s.runs.retain(|r| r.ok());
    }
    assert!(!render(&ok, &[], &[]).contains("Failed runs"));
}

#[test]
fn figures_and_files_are_linked() {
    let fig = [Link {
        title: "host-swap latency".into(),
        path: "latency-host-swap.svg".into(),
    }];
    let files = [Link {
        title: "results (JSON)".into(),
        path: "results.json".into(),
    }];
    let md = render(&results(true), &fig, &files);
    assert!(md.contains("![host-swap latency](latency-host-swap.svg)"));
    assert!(md.contains("- [results (JSON)](results.json)"));
}

#[test]
fn no_successful_runs_shows_dashes() {
    let mut r = results(true);
    r.scenarios[1].runs.retain(|r| !r.ok());
    let md = render(&r, &[], &[]);
    assert_eq!(row_cells(&md, "runtime (s)")[1], "—");
    assert_eq!(row_cells(&md, "host faults")[1], "—");
}

#[test]
fn number_formats() {
    assert_eq!(fmt_count(12.0), "12");
    assert_eq!(fmt_count(12.5), "12.5");
    assert_eq!(fmt_count(99_999.0), "99999");
    assert_eq!(fmt_count(123_456.0), "123k");
    assert_eq!(fmt_count(2_500_000.0), "2.5M");
    let s = spread(&[1.0, 2.0, 3.0]);
    assert_eq!(fmt_spread(s, &fmt_count), "2 (1–3)");
    assert_eq!(fmt_spread(spread(&[4.0, 4.0]), &fmt_count), "4");
    // A range that rounds to one value is not shown.
    assert_eq!(
        fmt_spread(spread(&[120_013.0, 120_039.0]), &fmt_count),
        "120k"
    );
    assert_eq!(fmt_spread(None, &fmt_count), "—");
    assert_eq!(cell("a|b\nc"), "a\\|b c");
}

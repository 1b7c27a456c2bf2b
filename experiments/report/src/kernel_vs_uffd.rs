//! The report section "Host swap: kernel vs swaplab": every scenario whose
//! host swapping the kernel did (`host.swapper = "kernel"`) beside the
//! scenario that is the same but for swaplab's userfaultfd swapper (same
//! guest, workload, balloon, host limit and store; the eviction policy is the
//! userfaultfd swapper's own), with runtime, pages moved, the cost per page
//! and the anomaly counts side by side.
//!
//! The kernel keeps no record of the pages it wrote back unchanged (silent
//! writes), read only to be freed or overwritten (false reads), scattered
//! (decayed sequentiality) or swapped although they mirrored the disk (false
//! anonymity): for its scenarios those rows read "not observable", never 0.

use std::fmt::Write as _;

use serde_json::Value;

use super::data::{counters, MatrixResults, ScenarioResults};
use super::stats::spread;
use super::svg::{fmt_count, trim_number};
use super::table::{cell, fmt_spread};

/// Counters the kernel cannot show.
pub const UNOBSERVABLE: &[&str] = &[
    counters::SILENT_WRITES,
    counters::FALSE_READS,
    counters::DECAYED_SEQUENTIALITY,
    counters::FALSE_ANONYMITY,
];

/// What the report says for a counter the scenario's host swapper cannot show.
pub const NOT_OBSERVABLE: &str = "not observable";

/// The scenario's host swapper: `uffd`, `kernel`, or `None` without host
/// swapping (results from before the key existed read as `uffd`).
pub fn swapper(sc: &ScenarioResults) -> Option<&str> {
    let host = sc.config.get("host").filter(|h| !h.is_null())?;
    Some(
        host.get("swapper")
            .and_then(Value::as_str)
            .unwrap_or("uffd"),
    )
}

/// Whether `key` is a counter `sc`'s host swapper cannot show.
pub fn unobservable(sc: &ScenarioResults, key: &str) -> bool {
    swapper(sc) == Some("kernel") && UNOBSERVABLE.contains(&key)
}

/// What must agree for two scenarios to be compared: everything but the
/// names, repetitions, time limit and the host swapper's own settings.
fn setup(sc: &ScenarioResults) -> Value {
    sc.setup(&["guest", "workload", "balloon"], &["limit", "store"])
}

/// (kernel scenario, its userfaultfd twin) pairs, in matrix order.
pub fn pairs(r: &MatrixResults) -> Vec<(&ScenarioResults, &ScenarioResults)> {
    r.twins(
        |k| swapper(k) == Some("kernel"),
        |u| swapper(u) == Some("uffd"),
        setup,
    )
}

/// Median of `f` over the scenario's successful runs.
pub(crate) fn median(
    sc: &ScenarioResults,
    f: impl Fn(&super::data::RunResult) -> Option<f64>,
) -> Option<f64> {
    let v: Vec<f64> = sc.ok_runs().filter_map(f).collect();
    spread(&v).map(|s| s.median)
}

/// A counter's median and range over the successful runs, as a cell.
pub(crate) fn counter(sc: &ScenarioResults, key: &str) -> String {
    if unobservable(sc, key) {
        return NOT_OBSERVABLE.to_string();
    }
    let v: Vec<f64> = sc
        .ok_runs()
        .filter_map(|r| r.counters.get(key).map(|&c| c as f64))
        .collect();
    fmt_spread(spread(&v), &fmt_count)
}

/// Host swap-ins + evictions of a run.
fn pages_moved(r: &super::data::RunResult) -> Option<f64> {
    let i = r.counters.get(counters::HOST_SWAP_INS)?;
    let e = r.counters.get(counters::HOST_EVICTIONS)?;
    Some((i + e) as f64)
}

/// Renders the section (nothing when the matrix has no pair).
pub fn section(out: &mut String, r: &MatrixResults) {
    let pairs = pairs(r);
    if pairs.is_empty() {
        return;
    }
    out.push_str(
        "## Host swap: kernel vs swaplab\n\nEach scenario whose guest RAM the kernel swapped \
         (the VMM in a memory cgroup limited to the host limit plus its own measured memory, \
         swapping to a device made for the run) beside the same scenario under swaplab's \
         userfaultfd swapper. Medians over the successful repetitions, range in parentheses. \
         *Cost per page*: the run's wall time per host page moved (swap-ins + evictions). \
         Kernel swap-ins are the cgroup's major faults, its evictions the system's `pswpout`; \
         its double paging and stale reads are the swap disk worker's own major faults during \
         a write or read request, timed by that request's service time (the kernel does not \
         time a fault on its own), where swaplab's are timed by the fault. What the kernel \
         keeps no record of reads *not observable*.\n\n",
    );
    for (k, u) in pairs {
        let _ = writeln!(
            out,
            "### `{}` vs `{}`\n\n| | kernel | swaplab (uffd) |\n|---|---|---|",
            cell(&k.name),
            cell(&u.name)
        );
        let both = |label: &str, f: &dyn Fn(&ScenarioResults) -> String| {
            format!("| {label} | {} | {} |\n", f(k), f(u))
        };
        let runtime = |s: &ScenarioResults| {
            let v: Vec<f64> = s.ok_runs().map(|r| r.runtime_s).collect();
            fmt_spread(spread(&v), &trim_number)
        };
        let moved = |s: &ScenarioResults| {
            let v: Vec<f64> = s.ok_runs().filter_map(pages_moved).collect();
            fmt_spread(spread(&v), &fmt_count)
        };
        let per_page = |s: &ScenarioResults| {
            let v: Vec<f64> = s
                .ok_runs()
                .filter_map(|r| {
                    let p = pages_moved(r).filter(|&p| p > 0.0)?;
                    Some(r.runtime_s * 1e6 / p)
                })
                .collect();
            fmt_spread(spread(&v), &trim_number)
        };
        let runs = |s: &ScenarioResults| format!("{} of {}", s.ok_runs().count(), s.runs.len());
        out.push_str(&both("successful runs", &runs));
        out.push_str(&both("runtime (s)", &runtime));
        out.push_str(&both("host pages moved", &moved));
        out.push_str(&both("cost per page (µs)", &per_page));
        for (key, label) in [
            (counters::HOST_SWAP_INS, "host swap-ins (pages)"),
            (counters::HOST_EVICTIONS, "host evictions (pages)"),
            ("peak_resident_pages", "guest RAM resident, peak (pages)"),
            (counters::GUEST_SWAP_OUTS, "guest swap-outs (pages)"),
            (counters::DOUBLE_PAGING, "double-paging events"),
            (counters::STALE_READS, "stale reads"),
            (counters::SILENT_WRITES, "silent writes"),
            (counters::FALSE_READS, "false reads"),
            (counters::DECAYED_SEQUENTIALITY, "decayed sequentiality"),
            (counters::FALSE_ANONYMITY, "false anonymity"),
        ] {
            out.push_str(&both(label, &|s| counter(s, key)));
        }
        let p50 = |s: &ScenarioResults| {
            median(s, |r| {
                r.latency
                    .get(counters::DOUBLE_PAGING)
                    .filter(|l| l.count > 0 && l.max_ns > 0)
                    .map(|l| l.p50_ns as f64 / 1000.0)
            })
            .map_or("—".to_string(), trim_number)
        };
        out.push_str(&both(
            "double paging p50 (µs; kernel: the whole request, swaplab: the fault)",
            &p50,
        ));
        let ratio = median(k, |r| Some(r.runtime_s))
            .zip(median(u, |r| Some(r.runtime_s)))
            .filter(|(_, b)| *b > 0.0)
            .map(|(a, b)| a / b);
        match ratio {
            Some(x) => {
                let _ = writeln!(
                    out,
                    "\nThe kernel's run took {:.2}× swaplab's (median runtimes).\n",
                    x
                );
            }
            None => out.push_str("\nNo successful runs of both: no ratio.\n\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Environment, Outcome, RunResult};
    use std::collections::BTreeMap;

    fn scenario(name: &str, swapper: Option<&str>, limit: &str, runtime: f64) -> ScenarioResults {
        let mut host = serde_json::json!({ "limit": limit, "store": "memory", "policy": "clock" });
        if let Some(s) = swapper {
            host["swapper"] = s.into();
        }
        let counters: BTreeMap<String, u64> = [
            (counters::HOST_SWAP_INS, 100),
            (counters::HOST_EVICTIONS, 300),
            (counters::DOUBLE_PAGING, 7),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ScenarioResults {
            name: name.into(),
            description: String::new(),
            config: serde_json::json!({
                "guest": { "mem": "160M" },
                "workload": { "mb": 64 },
                "balloon": { "policy": "none" },
                "host": host,
            }),
            runs: vec![RunResult {
                repetition: 1,
                outcome: Outcome::Ok,
                runtime_s: runtime,
                counters,
                latency: BTreeMap::new(),
                samples: BTreeMap::new(),
                timeline: Vec::new(),
                metric: None,
            }],
            experiment: None,
        }
    }

    fn matrix(scenarios: Vec<ScenarioResults>) -> MatrixResults {
        MatrixResults {
            matrix: "kernel-vs-uffd".into(),
            description: String::new(),
            notes: Vec::new(),
            environment: Environment::default(),
            scenarios,
        }
    }

    #[test]
    fn kernel_scenarios_pair_with_the_uffd_one_of_the_same_setup() {
        let m = matrix(vec![
            scenario("a-uffd", Some("uffd"), "96M", 2.0),
            scenario("b-uffd", None, "112M", 1.0),
            scenario("a-kernel", Some("kernel"), "96M", 3.0),
            scenario("b-kernel", Some("kernel"), "112M", 4.0),
            scenario("c-kernel", Some("kernel"), "64M", 4.0),
        ]);
        let names: Vec<(&str, &str)> = pairs(&m)
            .iter()
            .map(|(k, u)| (k.name.as_str(), u.name.as_str()))
            .collect();
        // An old result without the key is a uffd run; c-kernel has no twin.
        assert_eq!(names, [("a-kernel", "a-uffd"), ("b-kernel", "b-uffd")]);
    }

    #[test]
    fn the_section_puts_both_side_by_side_and_says_what_is_not_observable() {
        let m = matrix(vec![
            scenario("hs-uffd", Some("uffd"), "96M", 2.0),
            scenario("hs-kernel", Some("kernel"), "96M", 3.0),
        ]);
        let mut out = String::new();
        section(&mut out, &m);
        assert!(out.contains("## Host swap: kernel vs swaplab"), "{out}");
        assert!(out.contains("### `hs-kernel` vs `hs-uffd`"), "{out}");
        assert!(out.contains("| host pages moved | 400 | 400 |"), "{out}");
        // 3 s over 400 pages against 2 s over 400.
        assert!(
            out.contains("| cost per page (µs) | 7500 | 5000 |"),
            "{out}"
        );
        assert!(
            out.contains("| silent writes | not observable | — |"),
            "{out}"
        );
        assert!(out.contains("1.50× swaplab's"), "{out}");
        let mut none = String::new();
        section(
            &mut none,
            &matrix(vec![scenario("x", Some("uffd"), "96M", 1.0)]),
        );
        assert!(none.is_empty());
    }
}

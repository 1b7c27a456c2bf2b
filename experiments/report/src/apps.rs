//! Application experiments (the `papers` matrix): per application, each
//! arrangement's slowdown against the application's unpressured baseline at
//! each pressure level, the pages it moved, and whether the literature's
//! shapes held (mitigated host swap ≤ unmitigated, ballooning ≤ host swap, in
//! slowdown and in pages moved), with the counters that explain them.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::data::{counters, MatrixResults, RunResult, ScenarioResults};
use crate::svg::fmt_count;

/// The arrangements, in the order reports show them.
pub const ARRANGEMENTS: &[&str] = &["guest-swap", "host-swap", "host-swap-mitigated", "balloon"];

/// One arrangement at one pressure level.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Fraction of the baseline guest's memory taken away.
    pub pressure: f64,
    /// Slowdown against the baseline (≥ 1 is slower): runtime ratio, or the
    /// inverse ratio of a rate. Median, min and max over the runs.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Pages moved (host swap-ins + evictions + guest swap-ins + swap-outs), median.
    pub pages_moved: f64,
    /// Median of every counter over the runs, for the explanations.
    pub counters: BTreeMap<String, f64>,
    /// Runs that count.
    pub runs: usize,
}

/// One application's experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct AppExperiment {
    /// The application.
    pub group: String,
    /// Its metric's name.
    pub metric: String,
    /// Whether a smaller metric is better.
    pub lower_is_better: bool,
    /// The baseline's median metric (none: no successful baseline run).
    pub baseline: Option<f64>,
    /// The baseline runs' own spread as slowdowns against their median (min, max).
    pub baseline_spread: Option<(f64, f64)>,
    /// Per arrangement (in [`ARRANGEMENTS`] order), its points by pressure.
    pub lines: Vec<(String, Vec<Point>)>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn pages_moved(r: &RunResult) -> f64 {
    [
        counters::HOST_SWAP_INS,
        counters::HOST_EVICTIONS,
        counters::GUEST_SWAP_INS,
        counters::GUEST_SWAP_OUTS,
    ]
    .iter()
    .map(|k| r.counters.get(*k).copied().unwrap_or(0) as f64)
    .sum()
}

fn metric_runs(s: &ScenarioResults) -> Vec<(&RunResult, f64)> {
    s.ok_runs()
        .filter_map(|r| r.metric.as_ref().map(|m| (r, m.value)))
        .filter(|(_, v)| v.is_finite() && *v > 0.0)
        .collect()
}

/// The experiments in `r`, one per application, in matrix order.
pub fn experiments(r: &MatrixResults) -> Vec<AppExperiment> {
    let mut groups: Vec<&str> = Vec::new();
    for s in &r.scenarios {
        if let Some(e) = &s.experiment {
            if !groups.contains(&e.group.as_str()) {
                groups.push(&e.group);
            }
        }
    }
    groups.into_iter().map(|g| experiment(r, g)).collect()
}

fn experiment(r: &MatrixResults, group: &str) -> AppExperiment {
    let of = |arr: &'static str| {
        r.scenarios.iter().filter(move |s| {
            s.experiment
                .as_ref()
                .is_some_and(|e| e.group == group && e.arrangement == arr)
        })
    };
    let first_metric = r
        .scenarios
        .iter()
        .filter(|s| s.experiment.as_ref().is_some_and(|e| e.group == group))
        .flat_map(|s| s.runs.iter())
        .find_map(|run| run.metric.clone());
    let (metric, lower_is_better) = first_metric.map_or(("metric".to_string(), true), |m| {
        (m.name, m.lower_is_better)
    });
    let mut base: Vec<f64> = of("baseline")
        .flat_map(|s| metric_runs(s).into_iter().map(|(_, v)| v))
        .collect();
    let baseline = (!base.is_empty()).then(|| median(&mut base));
    let slowdown = |v: f64| baseline.map(|b| if lower_is_better { v / b } else { b / v });
    let spread: Vec<f64> = base.iter().filter_map(|v| slowdown(*v)).collect();
    let baseline_spread = (!spread.is_empty()).then(|| {
        (
            spread.iter().copied().fold(f64::INFINITY, f64::min),
            spread.iter().copied().fold(0.0, f64::max),
        )
    });
    let lines = ARRANGEMENTS
        .iter()
        .map(|arr| {
            let mut points: Vec<Point> = of(arr)
                .filter_map(|s| {
                    let e = s.experiment.as_ref()?;
                    let runs = metric_runs(s);
                    let mut sd: Vec<f64> = runs.iter().filter_map(|(_, v)| slowdown(*v)).collect();
                    if sd.is_empty() {
                        return None;
                    }
                    let mut moved: Vec<f64> = runs.iter().map(|(r, _)| pages_moved(r)).collect();
                    let mut keys: Vec<&String> =
                        runs.iter().flat_map(|(r, _)| r.counters.keys()).collect();
                    keys.sort();
                    keys.dedup();
                    let counters = keys
                        .into_iter()
                        .map(|k| {
                            let mut v: Vec<f64> = runs
                                .iter()
                                .map(|(r, _)| r.counters.get(k).copied().unwrap_or(0) as f64)
                                .collect();
                            (k.clone(), median(&mut v))
                        })
                        .collect();
                    Some(Point {
                        pressure: e.pressure,
                        min: sd.iter().copied().fold(f64::INFINITY, f64::min),
                        max: sd.iter().copied().fold(0.0, f64::max),
                        median: median(&mut sd),
                        pages_moved: median(&mut moved),
                        counters,
                        runs: runs.len(),
                    })
                })
                .collect();
            points.sort_by(|a, b| a.pressure.total_cmp(&b.pressure));
            (arr.to_string(), points)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    AppExperiment {
        group: group.to_string(),
        metric,
        lower_is_better,
        baseline,
        baseline_spread,
        lines,
    }
}

fn point<'a>(e: &'a AppExperiment, arr: &str, pressure: f64) -> Option<&'a Point> {
    e.lines
        .iter()
        .find(|(a, _)| a == arr)
        .and_then(|(_, pts)| pts.iter().find(|p| (p.pressure - pressure).abs() < 1e-9))
}

/// A percentage for a pressure level.
pub fn pct(p: f64) -> String {
    let v = p * 100.0;
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0} %")
    } else {
        format!("{v:.1} %")
    }
}

fn c(p: &Point, k: &str) -> String {
    fmt_count(p.counters.get(k).copied().unwrap_or(0.0))
}

/// What the counters say about `p`: where its pages went.
fn explain(p: &Point) -> String {
    format!(
        "host swap-ins {}, evictions {}, guest swap-ins {}, swap-outs {}; silent writes avoided {}, false reads avoided {}, stale reads {}, root-disk reads {} MiB",
        c(p, counters::HOST_SWAP_INS),
        c(p, counters::HOST_EVICTIONS),
        c(p, counters::GUEST_SWAP_INS),
        c(p, counters::GUEST_SWAP_OUTS),
        c(p, "silent_writes_avoided"),
        c(p, "false_reads_avoided"),
        c(p, counters::STALE_READS),
        fmt_count(p.counters.get("root_disk_read_bytes").copied().unwrap_or(0.0) / 1048576.0),
    )
}

/// The literature's shapes, checked at every pressure level both
/// arrangements ran: one Markdown bullet per (shape, level), saying whether it
/// held, with the numbers and the counters that explain them.
pub fn shapes(e: &AppExperiment) -> Vec<String> {
    let mut out = Vec::new();
    let mut levels: Vec<f64> = e
        .lines
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.pressure))
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    for (better, worse, claim) in [
        (
            "host-swap-mitigated",
            "host-swap",
            "mitigated host swap ≤ uncooperative host swap (VSwapper)",
        ),
        (
            "balloon",
            "host-swap",
            "ballooning ≤ host swap (Waldspurger)",
        ),
    ] {
        for &lv in &levels {
            let (Some(b), Some(w)) = (point(e, better, lv), point(e, worse, lv)) else {
                continue;
            };
            let slow = b.median <= w.median;
            let moved = b.pages_moved <= w.pages_moved;
            let verdict = match (slow, moved) {
                // Nothing paged: the level did not press this app, and the
                // slowdowns differ by run-to-run variation only.
                _ if b.pages_moved == 0.0 && w.pages_moved == 0.0 => {
                    "**not exercised** (neither moved a page at this level: the slowdowns differ by run-to-run variation, not paging)"
                }
                (true, true) => "**held**",
                (true, false) => "**held in slowdown, not in pages moved**",
                (false, true) => "**held in pages moved, not in slowdown**",
                (false, false) => "**did not hold**",
            };
            let mut line = String::new();
            let _ = write!(
                line,
                "{claim} at {}: {verdict}: slowdown {:.2}× vs {:.2}×, pages moved {} vs {}. {better}: {}. {worse}: {}.",
                pct(lv),
                b.median,
                w.median,
                fmt_count(b.pages_moved),
                fmt_count(w.pages_moved),
                explain(b),
                explain(w)
            );
            out.push(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Environment, Experiment, Metric, Outcome};

    fn run(value: f64, moved: u64) -> RunResult {
        RunResult {
            repetition: 1,
            outcome: Outcome::Ok,
            runtime_s: value,
            counters: BTreeMap::from([(counters::HOST_SWAP_INS.to_string(), moved)]),
            latency: BTreeMap::new(),
            samples: BTreeMap::new(),
            timeline: Vec::new(),
            metric: Some(Metric {
                name: "runtime_s".into(),
                value,
                lower_is_better: true,
            }),
        }
    }

    fn sc(arr: &str, pressure: f64, runs: Vec<RunResult>) -> ScenarioResults {
        ScenarioResults {
            name: format!("a-{arr}-{pressure}"),
            description: String::new(),
            config: serde_json::Value::Null,
            runs,
            experiment: Some(Experiment {
                group: "a".into(),
                arrangement: arr.into(),
                pressure,
            }),
        }
    }

    #[test]
    fn slowdowns_against_the_baseline_and_the_shapes() {
        let r = MatrixResults {
            matrix: "m".into(),
            description: String::new(),
            notes: Vec::new(),
            environment: Environment::default(),
            scenarios: vec![
                sc(
                    "baseline",
                    0.0,
                    vec![run(10.0, 0), run(12.0, 0), run(11.0, 0)],
                ),
                sc("host-swap", 0.5, vec![run(30.0, 900), run(33.0, 1100)]),
                sc("host-swap-mitigated", 0.5, vec![run(22.0, 500)]),
                sc("balloon", 0.5, vec![run(40.0, 100)]),
            ],
        };
        let e = experiments(&r);
        assert_eq!(e.len(), 1);
        let e = &e[0];
        assert_eq!(e.baseline, Some(11.0));
        let (lo, hi) = e.baseline_spread.unwrap();
        assert!((lo - 10.0 / 11.0).abs() < 1e-9 && (hi - 12.0 / 11.0).abs() < 1e-9);
        let hs = point(e, "host-swap", 0.5).unwrap();
        assert!((hs.median - 31.5 / 11.0).abs() < 1e-9);
        assert!((hs.min - 30.0 / 11.0).abs() < 1e-9 && (hs.max - 3.0).abs() < 1e-9);
        assert_eq!(hs.pages_moved, 1000.0);
        assert_eq!(hs.runs, 2);
        let s = shapes(e);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(
            s[0].contains("VSwapper") && s[0].contains("at 50 %: **held**"),
            "{}",
            s[0]
        );
        assert!(
            s[1].contains("**held in pages moved, not in slowdown**"),
            "{}",
            s[1]
        );
        assert!(s[1].contains("3.64× vs 2.86×"), "{}", s[1]);
    }

    #[test]
    fn a_level_where_nothing_paged_is_not_taken_for_a_shape() {
        let r = MatrixResults {
            matrix: "m".into(),
            description: String::new(),
            notes: Vec::new(),
            environment: Environment::default(),
            scenarios: vec![
                sc("baseline", 0.0, vec![run(10.0, 0)]),
                sc("host-swap", 0.25, vec![run(9.0, 0)]),
                sc("balloon", 0.25, vec![run(17.0, 0)]),
            ],
        };
        let s = shapes(&experiments(&r)[0]);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].contains("at 25 %: **not exercised**"), "{}", s[0]);
        assert!(s[0].contains("1.70× vs 0.90×"), "{}", s[0]);
    }

    #[test]
    fn a_rate_is_inverted_and_a_missing_baseline_gives_no_points() {
        let mut fast = run(200.0, 0);
        let mut slow = run(50.0, 0);
        for r in [&mut fast, &mut slow] {
            r.metric.as_mut().unwrap().lower_is_better = false;
        }
        let r = MatrixResults {
            matrix: "m".into(),
            description: String::new(),
            notes: Vec::new(),
            environment: Environment::default(),
            scenarios: vec![
                sc("baseline", 0.0, vec![fast]),
                sc("guest-swap", 0.25, vec![slow]),
            ],
        };
        let e = &experiments(&r)[0];
        assert_eq!(point(e, "guest-swap", 0.25).unwrap().median, 4.0);
        let none = MatrixResults {
            scenarios: vec![r.scenarios[1].clone()],
            ..r
        };
        assert!(experiments(&none)[0].lines.is_empty());
    }
}

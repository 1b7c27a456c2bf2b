//! `report.md`: environment, a comparison table across scenarios (median and
//! range over repetitions), figures and failures.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::data::{counters, MatrixResults, Outcome, ScenarioResults};
use super::stats::{spread, Spread};
use super::svg::{fmt_count, trim_number};
pub use super::table::{cell, fmt_spread};

/// A file the report links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Shown text.
    pub title: String,
    /// Path relative to `report.md`.
    pub path: String,
}

fn counter_spread(sc: &ScenarioResults, key: &str) -> Option<Spread> {
    let v: Vec<f64> = sc
        .ok_runs()
        .filter_map(|r| r.counters.get(key).map(|&c| c as f64))
        .collect();
    spread(&v)
}

fn latency_spread(
    sc: &ScenarioResults,
    path: &str,
    pick: fn(&super::data::LatencySummary) -> u64,
) -> Option<Spread> {
    let v: Vec<f64> = sc
        .ok_runs()
        .filter_map(|r| r.latency.get(path))
        // Counted but untimed (the kernel's vCPU swap-ins): no latency.
        .filter(|l| l.count > 0 && l.max_ns > 0)
        .map(|l| pick(l) as f64 / 1000.0)
        .collect();
    spread(&v)
}

/// One table row: label and a cell per scenario.
fn row(out: &mut String, label: &str, cells: impl IntoIterator<Item = String>) {
    let _ = write!(out, "| {label} |");
    for c in cells {
        let _ = write!(out, " {c} |");
    }
    out.push('\n');
}

fn environment(out: &mut String, r: &MatrixResults) {
    let e = &r.environment;
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            cell(s)
        }
    };
    if !e.timing_grade {
        let why = if e.sandbox {
            "The guests ran in the nested sandbox (an L1 Linux under QEMU TCG with kvm_amd), \
             where every exit to L1 userspace costs tens of microseconds"
        } else {
            "This host's KVM is not timing-grade"
        };
        let _ = writeln!(
            out,
            "> **⚠ FUNCTIONAL RESULTS ONLY — NOT TIMING-GRADE.** {why}. Runtimes and \
             latencies below show what happens, not how fast it would be on hardware \
             KVM: compare counts, not times.\n"
        );
    }
    out.push_str("## Environment\n\n| | |\n|---|---|\n");
    let rows = [
        ("KVM", or_unknown(&e.kvm)),
        (
            "guests ran",
            if e.sandbox {
                "in the nested sandbox (QEMU TCG L1, kvm_amd)".to_string()
            } else {
                "natively on /dev/kvm".to_string()
            },
        ),
        (
            "timing-grade",
            if e.timing_grade { "yes" } else { "**no**" }.to_string(),
        ),
        ("host kernel", or_unknown(&e.host_kernel)),
        ("guest kernel", or_unknown(&e.guest_kernel)),
        ("date", or_unknown(&e.date)),
        (
            "swaplab commit",
            if e.commit.is_empty() {
                "unknown".to_string()
            } else {
                format!("`{}`", cell(&e.commit))
            },
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out.push('\n');
}

fn scenarios(out: &mut String, r: &MatrixResults) {
    out.push_str("## Scenarios\n\n| scenario | description | successful runs |\n|---|---|---|\n");
    for s in &r.scenarios {
        let ok = s.ok_runs().count();
        let _ = writeln!(
            out,
            "| `{}` | {} | {ok}/{} |",
            cell(&s.name),
            cell(&s.description),
            s.runs.len()
        );
    }
    out.push('\n');
}

fn comparison(out: &mut String, r: &MatrixResults) {
    let sc = &r.scenarios;
    out.push_str(
        "## Comparison\n\nEach cell is the **median over the successful repetitions**, with the \
         range **(min–max)** in parentheses when they differ; `—`: not measured. Latencies \
         are each repetition's own percentile, in µs. Counts are per run.\n\n",
    );
    let _ = write!(out, "| |");
    for s in sc {
        let _ = write!(out, " `{}` |", cell(&s.name));
    }
    let _ = write!(out, "\n|---|");
    for _ in sc {
        out.push_str("---|");
    }
    out.push('\n');
    let blank = || sc.iter().map(|_| String::new());
    let runtime = sc.iter().map(|s| {
        let v: Vec<f64> = s.ok_runs().map(|r| r.runtime_s).collect();
        fmt_spread(spread(&v), &|x| trim_number(x))
    });
    row(out, "runtime (s)", runtime);

    let measured = |key: &str| sc.iter().any(|s| counter_spread(s, key).is_some());
    let mut unmeasured = Vec::new();
    let mut group = "";
    for &(g, key, label) in counters::ROWS {
        if !measured(key) {
            unmeasured.push(label);
            continue;
        }
        if g != group {
            group = g;
            row(out, &format!("**{g}**"), blank());
        }
        let cells = sc.iter().map(|s| {
            if crate::kernel_vs_uffd::unobservable(s, key) {
                crate::kernel_vs_uffd::NOT_OBSERVABLE.to_string()
            } else {
                fmt_spread(counter_spread(s, key), &fmt_count)
            }
        });
        row(out, label, cells);
    }

    let paths: BTreeSet<&str> = sc
        .iter()
        .flat_map(|s| {
            s.ok_runs()
                .flat_map(|r| r.latency.keys().map(String::as_str))
        })
        .collect();
    if !paths.is_empty() {
        row(out, "**fault latency, µs**", blank());
        for p in &paths {
            let events = sc.iter().map(|s| {
                let v: Vec<f64> = s
                    .ok_runs()
                    .filter_map(|r| r.latency.get(*p).map(|l| l.count as f64))
                    .collect();
                fmt_spread(spread(&v), &fmt_count)
            });
            row(out, &format!("{} events", cell(p)), events);
            for (name, pick) in [
                (
                    "p50",
                    (|l| l.p50_ns) as fn(&super::data::LatencySummary) -> u64,
                ),
                ("p99", |l| l.p99_ns),
            ] {
                let cells = sc
                    .iter()
                    .map(|s| fmt_spread(latency_spread(s, p, pick), &trim_number));
                row(out, &format!("{} {name}", cell(p)), cells);
            }
        }
    }

    let known: BTreeSet<&str> = counters::ROWS.iter().map(|r| r.1).collect();
    let others: BTreeSet<&str> = sc
        .iter()
        .flat_map(|s| {
            s.ok_runs()
                .flat_map(|r| r.counters.keys().map(String::as_str))
        })
        .filter(|k| !known.contains(k))
        .collect();
    if !others.is_empty() {
        row(out, "**other counters**", blank());
        for k in others {
            let cells = sc
                .iter()
                .map(|s| fmt_spread(counter_spread(s, k), &fmt_count));
            row(out, &cell(k), cells);
        }
    }
    if !unmeasured.is_empty() {
        let _ = write!(
            out,
            "\nNot measured in any run: {}.\n",
            unmeasured.join(", ")
        );
    }
    out.push('\n');
}

fn failures(out: &mut String, r: &MatrixResults) {
    let failed: Vec<String> = r
        .scenarios
        .iter()
        .flat_map(|s| {
            s.runs.iter().filter_map(move |run| {
                let what = match &run.outcome {
                    Outcome::Ok => return None,
                    Outcome::Failed(why) => format!("failed: {}", cell(why)),
                    Outcome::TimedOut => "timed out".to_string(),
                };
                Some(format!(
                    "- `{}` repetition {}: {what}",
                    cell(&s.name),
                    run.repetition
                ))
            })
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("## Failed runs\n\nThese are left out of the comparison.\n\n");
        for f in failed {
            out.push_str(&f);
            out.push('\n');
        }
        out.push('\n');
    }
}

/// The application experiments: per application, slowdown and pages moved
/// per arrangement and pressure level, then the literature's shapes.
fn applications(out: &mut String, r: &MatrixResults) {
    let exps = crate::apps::experiments(r);
    if exps.is_empty() {
        return;
    }
    out.push_str(
        "## Applications\n\nEach application's metric against its unpressured baseline (slowdown: \
         its runtime ratio, or the inverse ratio of a rate; median and range over the \
         repetitions), and the pages each arrangement moved (host swap-ins + evictions + guest \
         swap-ins + swap-outs, median). Pressure is the share of the baseline guest's memory \
         the host takes away; every arrangement at a level has the same host-resident budget.\n\n",
    );
    for e in &exps {
        let _ = writeln!(out, "### {}\n", cell(&e.group));
        match e.baseline {
            Some(b) => {
                let _ = writeln!(
                    out,
                    "Baseline {}: {} ({}).\n",
                    cell(&e.metric),
                    crate::svg::trim_number(b),
                    if e.lower_is_better {
                        "lower is better"
                    } else {
                        "higher is better"
                    }
                );
            }
            None => {
                out.push_str("No successful baseline run: no slowdown can be given.\n\n");
                continue;
            }
        }
        if e.lines.is_empty() {
            out.push_str("No pressured runs of it.\n\n");
            continue;
        }
        let mut levels: Vec<f64> = e
            .lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.pressure))
            .collect();
        levels.sort_by(f64::total_cmp);
        levels.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        let mut head = String::from("| arrangement |");
        let mut rule = String::from("|---|");
        for l in &levels {
            let _ = write!(head, " {} |", crate::apps::pct(*l));
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for (arr, pts) in &e.lines {
            let mut line = format!("| {} |", cell(arr));
            for l in &levels {
                match pts.iter().find(|p| (p.pressure - l).abs() < 1e-9) {
                    Some(p) => {
                        let _ = write!(
                            line,
                            " {:.2}× ({:.2}–{:.2}, n={}); {} pages |",
                            p.median,
                            p.min,
                            p.max,
                            p.runs,
                            fmt_count(p.pages_moved)
                        );
                    }
                    None => line.push_str(" – |"),
                }
            }
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
        let shapes = crate::apps::shapes(e);
        if shapes.is_empty() {
            out.push_str("No level has both arrangements of a shape: nothing to compare.\n\n");
        }
        for s in shapes {
            let _ = writeln!(out, "- {}", cell(&s));
        }
        out.push('\n');
    }
}

/// Renders `report.md`: `figures` are embedded as images, `files` (results
/// JSON, traces) listed as links; paths relative to the report.
pub fn render(results: &MatrixResults, figures: &[Link], files: &[Link]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# swaplab report: {}\n", cell(&results.matrix));
    if !results.description.is_empty() {
        let _ = writeln!(out, "{}\n", cell(&results.description));
    }
    for n in &results.notes {
        let _ = writeln!(out, "> **Note.** {}\n", cell(n));
    }
    environment(&mut out, results);
    scenarios(&mut out, results);
    comparison(&mut out, results);
    crate::anomalies::section(&mut out, results);
    crate::kernel_vs_uffd::section(&mut out, results);
    applications(&mut out, results);
    failures(&mut out, results);
    if !figures.is_empty() {
        out.push_str("## Figures\n\n");
        for f in figures {
            let _ = writeln!(
                out,
                "### {}\n\n![{}]({})\n",
                cell(&f.title),
                cell(&f.title),
                f.path
            );
        }
    }
    if !files.is_empty() {
        out.push_str("## Files\n\n");
        for f in files {
            let _ = writeln!(out, "- [{}]({})", cell(&f.title), f.path);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;

//! Reports of a `swaplab run`: pure functions from plain result data
//! ([`data`]) to files: `report.md` ([`markdown`]), SVG plots ([`svg`]) and
//! Chrome trace-event JSON for Perfetto ([`trace_event`]); and the runner's
//! progress display ([`progress`]).
//!
//! [`render_all`] turns a [`data::MatrixResults`] into every report file
//! (names relative to the results directory); the runner writes them.

pub mod anomalies;
pub mod apps;
pub mod data;
pub mod kernel_vs_uffd;
pub mod markdown;
pub mod progress;
pub mod stats;
pub mod svg;
pub mod table;
pub mod trace_event;

use std::collections::BTreeSet;

use data::{LatencySamples, MatrixResults, ScenarioResults, TimelineSample};
use markdown::Link;
use svg::{Series, Unit};

/// Points per CDF line in the rendered plots.
const CDF_POINTS: usize = 400;

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFile {
    /// File name (no directories).
    pub name: String,
    /// Contents.
    pub contents: String,
}

/// `s` reduced to `[a-z0-9_-]` for file names.
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Events in `s`.
pub fn sample_count(s: &LatencySamples) -> u64 {
    match s {
        LatencySamples::Raw(v) => v.len() as u64,
        LatencySamples::Buckets(b) => b.iter().map(|b| b.count).sum(),
    }
}

/// The timeline plot's series: memory in bytes, swap activity in pages/s;
/// only what was measured at least once.
pub fn timeline_series(samples: &[TimelineSample]) -> Vec<Series> {
    type Get = fn(&TimelineSample) -> Option<f64>;
    let lines: [(&str, Unit, Get); 9] = [
        ("host resident", Unit::Bytes, |s| {
            s.host_resident_bytes.map(|v| v as f64)
        }),
        ("guest free", Unit::Bytes, |s| {
            s.guest_free_bytes.map(|v| v as f64)
        }),
        ("guest available", Unit::Bytes, |s| {
            s.guest_available_bytes.map(|v| v as f64)
        }),
        ("balloon", Unit::Bytes, |s| {
            s.balloon_bytes.map(|v| v as f64)
        }),
        ("guest swap-ins", Unit::PerSecond, |s| s.guest_swap_in_per_s),
        ("guest swap-outs", Unit::PerSecond, |s| {
            s.guest_swap_out_per_s
        }),
        ("host swap-ins", Unit::PerSecond, |s| s.host_swap_in_per_s),
        ("host evictions", Unit::PerSecond, |s| s.host_swap_out_per_s),
        ("host named swap-ins", Unit::PerSecond, |s| {
            s.host_named_in_per_s
        }),
    ];
    lines
        .iter()
        .filter_map(|&(label, unit, get)| {
            let points: Vec<(f64, f64)> = samples
                .iter()
                .filter_map(|s| get(s).map(|v| (s.t_s, v)))
                .collect();
            (!points.is_empty()).then(|| Series {
                label: label.to_string(),
                unit,
                points,
            })
        })
        .collect()
}

/// The pooled CDF of `path` over a scenario's successful runs, labelled with its event count.
fn scenario_cdf(s: &ScenarioResults, path: &str) -> Option<(u64, Vec<(f64, f64)>)> {
    let runs: Vec<&LatencySamples> = s.ok_runs().filter_map(|r| r.samples.get(path)).collect();
    let n = runs.iter().map(|r| sample_count(r)).sum();
    stats::pooled_cdf(runs, CDF_POINTS).map(|pts| (n, pts))
}

/// Every report file for `results`: per fault path a CDF comparing scenarios
/// (`latency-by-scenario-PATH.svg`), per scenario a CDF of its paths
/// (`latency-SCENARIO.svg`) and the timeline of its first successful run
/// (`timeline-SCENARIO.svg`), and `report.md` embedding them and linking `files`.
pub fn render_all(results: &MatrixResults, files: &[Link]) -> Vec<ReportFile> {
    let mut out = Vec::new();
    let mut figures = Vec::new();
    let mut add = |name: String, title: String, contents: String| {
        figures.push(Link {
            title,
            path: name.clone(),
        });
        out.push(ReportFile { name, contents });
    };
    let paths: BTreeSet<&str> = results
        .scenarios
        .iter()
        .flat_map(|s| {
            s.ok_runs()
                .flat_map(|r| r.samples.keys().map(String::as_str))
        })
        .collect();
    for path in &paths {
        let series: Vec<(String, Vec<(f64, f64)>)> = results
            .scenarios
            .iter()
            .filter_map(|s| {
                scenario_cdf(s, path).map(|(n, pts)| (format!("{} (n={n})", s.name), pts))
            })
            .collect();
        if series.len() < 2 {
            continue; // the per-scenario plot already shows it
        }
        let refs: Vec<(&str, Vec<(f64, f64)>)> = series
            .iter()
            .map(|(l, p)| (l.as_str(), p.clone()))
            .collect();
        let title = format!("{path} latency by scenario (repetitions pooled)");
        let svg = svg::latency_cdf_points(&title, &refs);
        add(
            format!("latency-by-scenario-{}.svg", slug(path)),
            title,
            svg,
        );
    }
    for s in &results.scenarios {
        let series: Vec<(String, Vec<(f64, f64)>)> = paths
            .iter()
            .filter_map(|p| scenario_cdf(s, p).map(|(n, pts)| (format!("{p} (n={n})"), pts)))
            .collect();
        if !series.is_empty() {
            let refs: Vec<(&str, Vec<(f64, f64)>)> = series
                .iter()
                .map(|(l, p)| (l.as_str(), p.clone()))
                .collect();
            let title = format!("{}: fault latency by path (repetitions pooled)", s.name);
            let svg = svg::latency_cdf_points(&title, &refs);
            add(format!("latency-{}.svg", slug(&s.name)), title, svg);
        }
        if let Some(run) = s.ok_runs().find(|r| !r.timeline.is_empty()) {
            let title = format!(
                "{}: memory and swap over time (repetition {})",
                s.name, run.repetition
            );
            let svg = svg::timeline(&title, &timeline_series(&run.timeline));
            add(format!("timeline-{}.svg", slug(&s.name)), title, svg);
        }
    }
    for e in apps::experiments(results) {
        // Every line starts at the baseline (pressure 0, its own spread).
        let origin = e.baseline_spread.map(|(lo, hi)| (0.0, 1.0, lo, hi));
        let lines: Vec<svg::SlowdownLine<'_>> = e
            .lines
            .iter()
            .map(|(arr, pts)| svg::SlowdownLine {
                label: arr,
                points: origin
                    .into_iter()
                    .chain(pts.iter().map(|p| (p.pressure, p.median, p.min, p.max)))
                    .collect(),
            })
            .collect();
        let title = format!("{}: slowdown vs unpressured ({})", e.group, e.metric);
        let svg = svg::slowdown(&title, &lines);
        add(format!("apps-{}.svg", slug(&e.group)), title, svg);
    }
    let md = markdown::render(results, &figures, files);
    out.push(ReportFile {
        name: "report.md".to_string(),
        contents: md,
    });
    out
}

#[cfg(test)]
mod tests;

//! Hand-written SVG plots: latency CDFs on a log axis and memory/swap timelines.
//!
//! The output is a self-contained SVG 1.1 document (white background, no
//! scripts or external fonts) that browsers, GitHub and `rsvg-convert` render.
//! Each series is a `<g class="series">` with a `<title>` (its label) holding
//! one `<polyline>`; the legend sits below the plot, so it never covers data,
//! and axis labels that would overlap are dropped.

mod axis;
mod canvas;

use axis::{byte_ticks, decades, fmt_rate, linear_ticks, log_ticks, thin_labels, Tick};
pub use axis::{fmt_count, fmt_ns, trim_number};
use canvas::{Anchor, Canvas};

use super::stats::cdf_raw;

/// Colour-blind-safe palette (Okabe–Ito, without yellow), then greys.
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999",
];

const WIDTH: f64 = 760.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 44.0;
const PLOT_H: f64 = 300.0;
const LEGEND_ROW: f64 = 20.0;
const TICK_FONT: f64 = 11.0;
/// Points per CDF line (quantiles), whatever the sample count.
const CDF_POINTS: usize = 400;

/// What a timeline series measures, which picks its axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (left axis).
    Bytes,
    /// Events per second (right axis when there are byte series too).
    PerSecond,
}

/// One line of a timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// What it measures.
    pub unit: Unit,
    /// (seconds, value) points, in time order.
    pub points: Vec<(f64, f64)>,
}

/// The colour of series `i`.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The plot area.
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Frame {
    fn bottom(&self) -> f64 {
        self.top + self.height
    }
    fn right(&self) -> f64 {
        self.left + self.width
    }
    /// Pixel x of a fraction of the width.
    fn x(&self, f: f64) -> f64 {
        self.left + f.clamp(0.0, 1.0) * self.width
    }
    /// Pixel y of a fraction of the height (0 at the bottom).
    fn y(&self, f: f64) -> f64 {
        self.bottom() - f.clamp(0.0, 1.0) * self.height
    }
}

/// One legend entry.
struct Entry<'a> {
    label: &'a str,
    colour: &'static str,
    dashed: bool,
}

/// Legend rows for `entries` laid out left to right within `width`: (x, row) each.
fn legend_layout(entries: &[Entry<'_>], left: f64, width: f64) -> (Vec<(f64, usize)>, usize) {
    let mut out = Vec::with_capacity(entries.len());
    let (mut x, mut row) = (left, 0);
    for e in entries {
        let w = 28.0 + axis::text_width(e.label, 12.0) + 20.0;
        if x > left && x + w > left + width {
            x = left;
            row += 1;
        }
        out.push((x, row));
        x += w;
    }
    (out, if entries.is_empty() { 0 } else { row + 1 })
}

fn draw_legend(c: &mut Canvas, entries: &[Entry<'_>], layout: &[(f64, usize)], top: f64) {
    c.group("legend");
    for (e, &(x, row)) in entries.iter().zip(layout) {
        let y = top + row as f64 * LEGEND_ROW;
        c.line(
            x,
            y - 4.0,
            x + 22.0,
            y - 4.0,
            e.colour,
            2.5,
            e.dashed.then_some("6 3"),
        );
        c.text(x + 28.0, y, Anchor::Start, 12.0, e.label, None);
    }
    c.end_group();
}

/// Title, frame and the canvas sized for `legend_rows`.
fn start(title: &str, frame: &Frame, legend_rows: usize) -> (Canvas, f64) {
    let legend_top = frame.bottom() + 62.0;
    let height = legend_top + legend_rows as f64 * LEGEND_ROW + 6.0;
    let mut c = Canvas::new(WIDTH, height);
    c.text(WIDTH / 2.0, 26.0, Anchor::Middle, 16.0, title, None);
    (c, legend_top)
}

/// Vertical gridlines and x tick labels; `px` maps a tick value to a pixel x.
fn x_axis(c: &mut Canvas, frame: &Frame, ticks: &[Tick], px: &dyn Fn(f64) -> f64, title: &str) {
    c.group("axis x");
    let mut labels: Vec<(f64, Option<String>)> = ticks
        .iter()
        .map(|t| (px(t.value), t.label.clone()))
        .collect();
    for (x, label) in &labels {
        let colour = if label.is_some() {
            "#d0d0d0"
        } else {
            "#eeeeee"
        };
        c.line(*x, frame.top, *x, frame.bottom(), colour, 1.0, None);
    }
    thin_labels(&mut labels, TICK_FONT, 6.0);
    for (x, label) in &labels {
        if let Some(l) = label {
            c.line(
                *x,
                frame.bottom(),
                *x,
                frame.bottom() + 4.0,
                "#333333",
                1.0,
                None,
            );
            c.text(
                *x,
                frame.bottom() + 17.0,
                Anchor::Middle,
                TICK_FONT,
                l,
                None,
            );
        }
    }
    c.text(
        frame.x(0.5),
        frame.bottom() + 38.0,
        Anchor::Middle,
        12.0,
        title,
        None,
    );
    c.end_group();
}

/// Horizontal ticks (gridlines when `grid`) with labels on the left or right side.
fn y_axis(
    c: &mut Canvas,
    frame: &Frame,
    ticks: &[Tick],
    top: f64,
    right: bool,
    grid: bool,
    title: &str,
) {
    c.group(if right { "axis y2" } else { "axis y" });
    let py = |v: f64| frame.y(if top > 0.0 { v / top } else { 0.0 });
    // Labels are ~11 px tall: keep those at least 14 px apart.
    let mut last = f64::INFINITY;
    for t in ticks {
        let y = py(t.value);
        if grid {
            c.line(frame.left, y, frame.right(), y, "#d0d0d0", 1.0, None);
        }
        let Some(label) = &t.label else { continue };
        if (last - y).abs() < 14.0 {
            continue;
        }
        last = y;
        if right {
            c.line(
                frame.right(),
                y,
                frame.right() + 4.0,
                y,
                "#333333",
                1.0,
                None,
            );
            c.text(
                frame.right() + 7.0,
                y + 4.0,
                Anchor::Start,
                TICK_FONT,
                label,
                None,
            );
        } else {
            c.line(frame.left - 4.0, y, frame.left, y, "#333333", 1.0, None);
            c.text(
                frame.left - 7.0,
                y + 4.0,
                Anchor::End,
                TICK_FONT,
                label,
                None,
            );
        }
    }
    let (x, rot) = if right {
        (WIDTH - 14.0, 90.0)
    } else {
        (18.0, -90.0)
    };
    c.text(
        x,
        frame.top + frame.height / 2.0,
        Anchor::Middle,
        12.0,
        title,
        Some(rot),
    );
    c.end_group();
}

fn no_data(c: &mut Canvas, frame: &Frame) {
    c.text(
        frame.x(0.5),
        frame.y(0.5),
        Anchor::Middle,
        14.0,
        "no data",
        None,
    );
}

/// A latency CDF of raw samples (ns), one line per `(label, samples)`.
pub fn latency_cdf(title: &str, series: &[(&str, &[u64])]) -> String {
    let points: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, s)| (*label, cdf_raw(s, CDF_POINTS)))
        .collect();
    latency_cdf_points(title, &points)
}

/// A latency CDF from precomputed points (latency ns, fraction ≤ it),
/// increasing, e.g. from histogram buckets ([`super::stats::cdf_buckets`]).
pub fn latency_cdf_points(title: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let frame = Frame {
        left: LEFT,
        top: TOP,
        width: WIDTH - LEFT - 30.0,
        height: PLOT_H,
    };
    let entries: Vec<Entry<'_>> = series
        .iter()
        .enumerate()
        .map(|(i, (label, _))| Entry {
            label,
            colour: colour(i),
            dashed: false,
        })
        .collect();
    let (layout, rows) = legend_layout(&entries, frame.left, frame.width);
    let (mut c, legend_top) = start(title, &frame, rows);

    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
    let (min, max) = xs
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, 0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = decades(if min.is_finite() { min } else { 1.0 }, max);
    let px = |v: f64| frame.x((v.max(1.0).log10() - f64::from(lo)) / f64::from(hi - lo));

    x_axis(
        &mut c,
        &frame,
        &log_ticks(lo, hi),
        &px,
        "latency (log scale)",
    );
    let pct: Vec<Tick> = (0..=5)
        .map(|i| Tick {
            value: f64::from(i) * 0.2,
            label: Some(format!("{}%", i * 20)),
        })
        .collect();
    y_axis(
        &mut c,
        &frame,
        &pct,
        1.0,
        false,
        true,
        "fraction of events ≤ latency",
    );
    // Percentile guides, labelled just below the line at the left: the top
    // left is where a CDF leaves room.
    c.group("percentiles");
    for (f, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        let y = frame.y(f);
        c.line(frame.left, y, frame.right(), y, "#999999", 1.0, Some("2 3"));
        c.text(frame.left + 4.0, y + 11.0, Anchor::Start, 10.0, name, None);
    }
    c.end_group();

    if series.iter().all(|(_, p)| p.is_empty()) {
        no_data(&mut c, &frame);
    }
    for (i, (label, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        // Empirical CDF as steps: flat to the next sample, then up.
        let mut line = Vec::with_capacity(pts.len() * 2 + 1);
        let mut prev = 0.0;
        line.push((px(pts[0].0), frame.y(0.0)));
        for &(x, f) in pts {
            line.push((px(x), frame.y(prev)));
            line.push((px(x), frame.y(f)));
            prev = f;
        }
        c.group("series");
        c.title(label);
        c.polyline(&line, colour(i), 2.0, None);
        c.end_group();
    }
    c.rect(
        frame.left,
        frame.top,
        frame.width,
        frame.height,
        "none",
        "#333333",
    );
    draw_legend(&mut c, &entries, &layout, legend_top);
    c.finish()
}

/// A timeline: time (s) on x; byte series on the left axis, per-second
/// series (dashed) on the right axis (or the left, if there are no byte series).
pub fn timeline(title: &str, series: &[Series]) -> String {
    let has = |u: Unit| series.iter().any(|s| s.unit == u);
    let two_axes = has(Unit::Bytes) && has(Unit::PerSecond);
    let frame = Frame {
        left: LEFT,
        top: TOP,
        width: WIDTH - LEFT - if two_axes { 80.0 } else { 30.0 },
        height: PLOT_H,
    };
    let labels: Vec<String> = series
        .iter()
        .map(|s| {
            if two_axes && s.unit == Unit::PerSecond {
                format!("{} (right axis)", s.label)
            } else {
                s.label.clone()
            }
        })
        .collect();
    let entries: Vec<Entry<'_>> = series
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (s, label))| Entry {
            label,
            colour: colour(i),
            dashed: s.unit == Unit::PerSecond,
        })
        .collect();
    let (layout, rows) = legend_layout(&entries, frame.left, frame.width);
    let (mut c, legend_top) = start(title, &frame, rows);

    let finite = |s: &Series| {
        s.points
            .iter()
            .copied()
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .collect::<Vec<_>>()
    };
    let clean: Vec<Vec<(f64, f64)>> = series.iter().map(finite).collect();
    let max_of = |pick: &dyn Fn(&(f64, f64)) -> f64, unit: Option<Unit>| {
        series
            .iter()
            .zip(&clean)
            .filter(|(s, _)| unit.is_none_or(|u| s.unit == u))
            .flat_map(|(_, p)| p.iter().map(pick))
            .fold(0f64, f64::max)
    };
    let (t_top, t_ticks) = linear_ticks(max_of(&|p| p.0, None), 8, &|v| {
        format!("{} s", trim_number(v))
    });
    let px = |t: f64| frame.x(t / t_top);
    x_axis(&mut c, &frame, &t_ticks, &px, "time since guest start");

    let bytes_axis = byte_ticks(max_of(&|p| p.1, Some(Unit::Bytes)), 5);
    let rate_axis = linear_ticks(max_of(&|p| p.1, Some(Unit::PerSecond)), 5, &fmt_rate);
    if has(Unit::Bytes) || !has(Unit::PerSecond) {
        y_axis(
            &mut c,
            &frame,
            &bytes_axis.1,
            bytes_axis.0,
            false,
            true,
            "memory",
        );
    }
    if has(Unit::PerSecond) {
        y_axis(
            &mut c,
            &frame,
            &rate_axis.1,
            rate_axis.0,
            two_axes,
            !two_axes,
            "pages/s",
        );
    }
    if clean.iter().all(Vec::is_empty) {
        no_data(&mut c, &frame);
    }
    for (i, (s, pts)) in series.iter().zip(&clean).enumerate() {
        let top = match s.unit {
            Unit::Bytes => bytes_axis.0,
            Unit::PerSecond => rate_axis.0,
        };
        let line: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(t, v)| (px(t), frame.y(v / top)))
            .collect();
        c.group("series");
        c.title(&s.label);
        let dash = (s.unit == Unit::PerSecond).then_some("6 3");
        c.polyline(&line, colour(i), 2.0, dash);
        c.end_group();
    }
    c.rect(
        frame.left,
        frame.top,
        frame.width,
        frame.height,
        "none",
        "#333333",
    );
    draw_legend(&mut c, &entries, &layout, legend_top);
    c.finish()
}

/// The application experiments' plot: slowdown against the unpressured
/// baseline (y) by pressure level (x), one line per arrangement with its
/// spread as a vertical bar (min to max over the repetitions).
/// One arrangement: (pressure fraction, median, min, max) per level.
pub struct SlowdownLine<'a> {
    /// The legend's label.
    pub label: &'a str,
    /// Points, by pressure.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// The plot, with a dashed line at 1 (the baseline). Lines usually start at
/// pressure 0 with the baseline's own spread.
pub fn slowdown(title: &str, lines: &[SlowdownLine<'_>]) -> String {
    let frame = Frame {
        left: LEFT,
        top: TOP,
        width: WIDTH - LEFT - 30.0,
        height: PLOT_H,
    };
    let entries: Vec<Entry<'_>> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Entry {
            label: l.label,
            colour: colour(i),
            dashed: false,
        })
        .collect();
    let (layout, rows) = legend_layout(&entries, frame.left, frame.width);
    let (mut c, legend_top) = start(title, &frame, rows);
    let finite = |v: f64| v.is_finite();
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .filter(|v| finite(*v))
        .fold(0f64, f64::max)
        .max(0.1);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.3))
        .filter(|v| finite(*v))
        .fold(1f64, f64::max);
    let (x_top, x_ticks) = linear_ticks(x_max * 100.0, 6, &|v| format!("{} %", trim_number(v)));
    // Ticks are in percent, points in fractions.
    x_axis(
        &mut c,
        &frame,
        &x_ticks,
        &|v| frame.x(v / x_top),
        "memory the host takes away",
    );
    let px = |p: f64| frame.x(p * 100.0 / x_top);
    let (y_top, y_ticks) = linear_ticks(y_max * 1.1, 6, &|v| format!("{}×", trim_number(v)));
    y_axis(
        &mut c,
        &frame,
        &y_ticks,
        y_top,
        false,
        true,
        "slowdown vs unpressured",
    );
    let py = |v: f64| frame.y(v / y_top);
    c.line(
        frame.left,
        py(1.0),
        frame.left + frame.width,
        py(1.0),
        "#666666",
        1.0,
        Some("4 4"),
    );
    c.text(
        frame.left + 6.0,
        py(1.0) - 4.0,
        Anchor::Start,
        11.0,
        "baseline",
        None,
    );
    if lines.iter().all(|l| l.points.is_empty()) {
        no_data(&mut c, &frame);
    }
    for (i, l) in lines.iter().enumerate() {
        let col = colour(i);
        c.group("series");
        c.title(l.label);
        let pts: Vec<(f64, f64)> = l.points.iter().map(|p| (px(p.0), py(p.1))).collect();
        c.polyline(&pts, col, 2.0, None);
        for p in &l.points {
            // A marker, so a line of one point shows.
            c.rect(px(p.0) - 3.0, py(p.1) - 3.0, 6.0, 6.0, col, col);
            // The spread, with short caps; a small offset per line keeps bars apart.
            let x = px(p.0) + (i as f64 - 1.5) * 4.0;
            c.line(x, py(p.2), x, py(p.3), col, 1.5, None);
            c.line(x - 3.0, py(p.2), x + 3.0, py(p.2), col, 1.5, None);
            c.line(x - 3.0, py(p.3), x + 3.0, py(p.3), col, 1.5, None);
        }
        c.end_group();
    }
    draw_legend(&mut c, &entries, &layout, legend_top);
    c.finish()
}

#[cfg(test)]
mod tests;

//! The application experiments' plot: slowdown against the unpressured
//! baseline (y) by pressure level (x), one line per arrangement with its
//! spread as a vertical bar (min to max over the repetitions).

use super::axis::{linear_ticks, trim_number};
use super::canvas::Anchor;
use super::{colour, draw_legend, legend_layout, no_data, start, x_axis, y_axis, Entry, Frame};
use super::{LEFT, PLOT_H, TOP, WIDTH};

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

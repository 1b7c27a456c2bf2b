//! Markdown table cells the report's sections share: escaped text, and a
//! median with its range.

use super::stats::Spread;

/// Escapes text for a Markdown table cell (pipes, newlines).
pub fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// `median (min–max)`, or just the median when all repetitions agree, or `—`.
pub fn fmt_spread(s: Option<Spread>, fmt: &dyn Fn(f64) -> String) -> String {
    match s {
        None => "—".to_string(),
        Some(s) => {
            let (lo, hi) = (fmt(s.min), fmt(s.max));
            // A range that rounds to one value says nothing.
            if s.n == 1 || lo == hi {
                fmt(s.median)
            } else {
                format!("{} ({lo}–{hi})", fmt(s.median))
            }
        }
    }
}

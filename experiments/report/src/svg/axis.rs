//! Axis ticks and their labels: log decades of nanoseconds, "nice" linear steps,
//! byte and rate units, and label thinning so labels never overlap.

/// A tick: a domain value and its label (unlabelled ticks are minor gridlines).
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Value in the axis' domain units.
    pub value: f64,
    /// Label, if the tick has one.
    pub label: Option<String>,
}

/// Approximate width of `s` in pixels at `font_size` (sans-serif averages
/// about 0.6 em per character; enough to keep labels apart).
pub fn text_width(s: &str, font_size: f64) -> f64 {
    s.chars().count() as f64 * font_size * 0.6
}

/// A duration in ns as `250 ns`, `1 µs`, `2.5 ms`, `1 s`.
pub fn fmt_ns(ns: f64) -> String {
    let (v, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    format!("{} {unit}", trim_number(v))
}

/// `v` with at most 3 significant decimals and no trailing zeros.
pub fn trim_number(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Decade range `[lo, hi]` (powers of ten, ns) covering `min..=max`, at least one decade.
pub fn decades(min: f64, max: f64) -> (i32, i32) {
    let min = min.max(1.0);
    let max = max.max(min);
    let lo = min.log10().floor() as i32;
    let mut hi = max.log10().ceil() as i32;
    if hi <= lo {
        hi = lo + 1;
    }
    (lo, hi)
}

/// Ticks for a log axis over decades `lo..=hi`: each decade labelled; 2× and
/// 5× labelled too when there are at most two decades, else unlabelled
/// minor ticks at 2×–9×.
pub fn log_ticks(lo: i32, hi: i32) -> Vec<Tick> {
    let few = hi - lo <= 2;
    let mut out = Vec::new();
    for e in lo..=hi {
        let base = 10f64.powi(e);
        out.push(Tick {
            value: base,
            label: Some(fmt_ns(base)),
        });
        if e == hi {
            break;
        }
        for m in 2..=9 {
            let v = base * f64::from(m);
            let label = (few && (m == 2 || m == 5)).then(|| fmt_ns(v));
            out.push(Tick { value: v, label });
        }
    }
    out
}

/// A "nice" step (1, 2, 2.5 or 5 × 10^k) giving about `target` steps over `range`.
pub fn nice_step(range: f64, target: usize) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Linear ticks from 0 to a nice maximum ≥ `max` (which it returns), labelled by `fmt`.
pub fn linear_ticks(max: f64, target: usize, fmt: &dyn Fn(f64) -> String) -> (f64, Vec<Tick>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = nice_step(max, target);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    let ticks = (0..=n)
        .map(|i| {
            let v = step * i as f64;
            Tick {
                value: v,
                label: Some(fmt(v)),
            }
        })
        .collect();
    (step * n as f64, ticks)
}

/// A binary byte unit suited to values up to `max`: (divisor, name).
pub fn byte_unit(max: f64) -> (f64, &'static str) {
    const KI: f64 = 1024.0;
    if max >= 2.0 * KI * KI * KI {
        (KI * KI * KI, "GiB")
    } else if max >= 2.0 * KI * KI {
        (KI * KI, "MiB")
    } else if max >= 2.0 * KI {
        (KI, "KiB")
    } else {
        (1.0, "B")
    }
}

/// Linear ticks for bytes in a binary unit, stepped by a power of two of it
/// (`0, 64, 128, 192 … MiB`), so configured sizes like 256M fall on ticks.
pub fn byte_ticks(max: f64, target: usize) -> (f64, Vec<Tick>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let (div, name) = byte_unit(max);
    let raw = max / div / target.max(1) as f64;
    let step = 2f64.powi(raw.log2().ceil() as i32);
    let n = (max / div / step - 1e-9).ceil().max(1.0) as usize;
    let ticks = (0..=n)
        .map(|i| {
            let v = step * i as f64;
            Tick {
                value: v * div,
                label: Some(format!("{} {name}", trim_number(v))),
            }
        })
        .collect();
    (step * n as f64 * div, ticks)
}

/// A rate as `750`, `1.5k`, `2M`.
pub fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim_number(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim_number(v / 1e3))
    } else {
        trim_number(v)
    }
}

/// Keeps only labels whose extent (centred at their pixel position, `width`
/// each) does not overlap the previous kept label; `positions` increasing.
pub fn thin_labels(labels: &mut [(f64, Option<String>)], font_size: f64, gap: f64) {
    let mut last_end = f64::NEG_INFINITY;
    for (pos, label) in labels.iter_mut() {
        if let Some(l) = label {
            let half = text_width(l, font_size) / 2.0;
            if *pos - half < last_end + gap {
                *label = None;
            } else {
                last_end = *pos + half;
            }
        }
    }
}

/// A count: exact below 100 000, else 3 significant digits with k/M/G.
pub fn fmt_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim_number(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim_number(v / 1e6))
    } else if a >= 1e5 {
        format!("{}k", trim_number(v / 1e3))
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_with_units() {
        assert_eq!(fmt_ns(250.0), "250 ns");
        assert_eq!(fmt_ns(1000.0), "1 µs");
        assert_eq!(fmt_ns(2500.0), "2.5 µs");
        assert_eq!(fmt_ns(100_000.0), "100 µs");
        assert_eq!(fmt_ns(1e6), "1 ms");
        assert_eq!(fmt_ns(1e9), "1 s");
        assert_eq!(trim_number(12.34), "12.3");
        assert_eq!(trim_number(0.5), "0.5");
    }

    #[test]
    fn decade_ticks() {
        assert_eq!(decades(3000.0, 450_000.0), (3, 6));
        assert_eq!(decades(1000.0, 1000.0), (3, 4));
        assert_eq!(decades(0.0, 5.0), (0, 1));
        let t = log_ticks(3, 6);
        let labels: Vec<_> = t.iter().filter_map(|t| t.label.clone()).collect();
        assert_eq!(labels, ["1 µs", "10 µs", "100 µs", "1 ms"]);
        assert_eq!(t.len(), 3 * 9 + 1);
        let labels: Vec<_> = log_ticks(3, 4)
            .into_iter()
            .filter_map(|t| t.label)
            .collect();
        assert_eq!(labels, ["1 µs", "2 µs", "5 µs", "10 µs"]);
    }

    #[test]
    fn nice_linear_ticks() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1.0, 4), 0.25);
        assert_eq!(nice_step(73.0, 5), 20.0);
        let (top, t) = linear_ticks(73.0, 5, &trim_number);
        assert_eq!(top, 80.0);
        assert_eq!(t.len(), 5);
        assert_eq!(t[1].label.as_deref(), Some("20"));
        let (top, t) = linear_ticks(0.0, 5, &trim_number);
        assert_eq!((top, t.len()), (1.0, 6));
        let (top, t) = byte_ticks(300.0 * 1048576.0, 5);
        assert_eq!(top, 320.0 * 1048576.0);
        assert_eq!(t[1].label.as_deref(), Some("64 MiB"));
        assert_eq!(t[4].value, 256.0 * 1048576.0);
        let (top, t) = byte_ticks(3.0 * 1073741824.0, 5);
        assert_eq!(
            (top, t[1].label.as_deref()),
            (3.0 * 1073741824.0, Some("1 GiB"))
        );
        assert_eq!(fmt_rate(1500.0), "1.5k");
        assert_eq!(fmt_rate(2e6), "2M");
        assert_eq!(fmt_rate(12.0), "12");
    }

    #[test]
    fn overlapping_labels_are_dropped() {
        let mut l = vec![
            (0.0, Some("100 µs".to_string())),
            (10.0, Some("200 µs".to_string())),
            (60.0, Some("500 µs".to_string())),
            (65.0, None),
        ];
        thin_labels(&mut l, 11.0, 4.0);
        assert!(l[0].1.is_some() && l[1].1.is_none() && l[2].1.is_some());
    }
}

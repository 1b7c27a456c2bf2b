//! The plots parse as XML, have the elements they promise, and keep labels apart.

use super::*;

/// Parses `svg` and checks the document-level promises: an `<svg>` root with
/// a size, and only finite numbers in coordinates.
fn parse(svg: &str) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let w: f64 = root.attribute("width").unwrap().parse().unwrap();
    let h: f64 = root.attribute("height").unwrap().parse().unwrap();
    for n in doc.descendants().filter(|n| n.is_element()) {
        for a in ["x", "y", "x1", "x2", "y1", "y2", "width", "height"] {
            if let Some(v) = n.attribute(a) {
                let v: f64 = v.parse().unwrap_or_else(|_| panic!("{a}={v:?}"));
                assert!(v.is_finite() && v >= -1.0 && v <= w.max(h) + 1.0, "{a}={v}");
            }
        }
        if let Some(p) = n.attribute("points") {
            for xy in p.split_whitespace() {
                let (x, y) = xy.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((0.0..=w).contains(&x) && (0.0..=h).contains(&y), "{xy}");
            }
        }
    }
    doc
}

fn groups<'a>(doc: &'a roxmltree::Document<'a>, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some(class))
        .collect()
}

fn texts(node: roxmltree::Node<'_, '_>) -> Vec<String> {
    node.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect()
}

/// Horizontal extents of the labels in one row never overlap.
fn assert_no_overlap(node: roxmltree::Node<'_, '_>, size: f64) {
    let mut rows: std::collections::BTreeMap<String, Vec<(f64, f64, String)>> = Default::default();
    for t in node.descendants().filter(|n| n.has_tag_name("text")) {
        if t.attribute("transform").is_some() {
            continue;
        }
        let x: f64 = t.attribute("x").unwrap().parse().unwrap();
        let text = t.text().unwrap_or_default().to_string();
        let w = axis::text_width(&text, size);
        let (a, b) = match t.attribute("text-anchor") {
            Some("middle") => (x - w / 2.0, x + w / 2.0),
            Some("end") => (x - w, x),
            _ => (x, x + w),
        };
        rows.entry(t.attribute("y").unwrap().to_string())
            .or_default()
            .push((a, b, text));
    }
    for row in rows.values_mut() {
        row.sort_by(|p, q| p.0.total_cmp(&q.0));
        for pair in row.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "labels overlap: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
}

fn samples(base: u64, n: u64) -> Vec<u64> {
    // Spread over about two decades, deterministic.
    (0..n)
        .map(|i| base + (i * i * 7919) % (base * 100))
        .collect()
}

#[test]
fn latency_cdf_has_a_line_per_series_and_a_legend() {
    let a = samples(2_000, 5_000);
    let b = samples(40_000, 300);
    let svg = latency_cdf(
        "swap-in <latency> & more",
        &[("host_swap_in", &a), ("guest_swap_in", &b)],
    );
    let doc = parse(&svg);
    let series = groups(&doc, "series");
    assert_eq!(series.len(), 2);
    for (g, label) in series.iter().zip(["host_swap_in", "guest_swap_in"]) {
        let title = g.children().find(|n| n.has_tag_name("title")).unwrap();
        assert_eq!(title.text(), Some(label));
        let line = g.children().find(|n| n.has_tag_name("polyline")).unwrap();
        let n = line.attribute("points").unwrap().split_whitespace().count();
        assert!(n > 100 && n <= 2 * CDF_POINTS + 3, "{n} points");
    }
    let legend = texts(groups(&doc, "legend")[0]);
    assert_eq!(legend, ["host_swap_in", "guest_swap_in"]);
    // The title is escaped and survives.
    assert!(texts(doc.root_element()).contains(&"swap-in <latency> & more".to_string()));
    // Log axis with decade labels from 1 µs to 10 ms.
    let x = texts(groups(&doc, "axis x")[0]);
    for l in ["1 µs", "10 µs", "100 µs", "1 ms", "10 ms"] {
        assert!(x.contains(&l.to_string()), "{l} missing from {x:?}");
    }
    assert!(x.contains(&"latency (log scale)".to_string()));
    assert_no_overlap(groups(&doc, "axis x")[0], TICK_FONT);
    let y = texts(groups(&doc, "axis y")[0]);
    assert!(y.contains(&"40%".to_string()) && y.contains(&"100%".to_string()));
    assert_eq!(texts(groups(&doc, "percentiles")[0]), ["p50", "p90", "p99"]);
}

#[test]
fn narrow_cdf_gets_intermediate_ticks_without_overlap() {
    let a: Vec<u64> = (0..1000).map(|i| 30_000 + i * 20).collect();
    let doc_s = latency_cdf("narrow", &[("only", &a)]);
    let doc = parse(&doc_s);
    let x = texts(groups(&doc, "axis x")[0]);
    assert!(
        x.contains(&"20 µs".to_string()) && x.contains(&"50 µs".to_string()),
        "{x:?}"
    );
    assert_no_overlap(groups(&doc, "axis x")[0], TICK_FONT);
}

#[test]
fn cdf_lines_rise_monotonically_left_to_right() {
    let a = samples(1_000, 2_000);
    let svg = latency_cdf("m", &[("a", &a)]);
    let doc = parse(&svg);
    let line = groups(&doc, "series")[0]
        .children()
        .find(|n| n.has_tag_name("polyline"))
        .unwrap();
    let pts: Vec<(f64, f64)> = line
        .attribute("points")
        .unwrap()
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    // x never decreases, y (pixels, downwards) never increases.
    assert!(pts.windows(2).all(|w| w[1].0 >= w[0].0 && w[1].1 <= w[0].1));
    assert_eq!(pts.last().unwrap().1, TOP, "ends at 100%");
    assert_eq!(pts[0].1, TOP + PLOT_H, "starts at 0%");
}

#[test]
fn empty_plots_say_no_data() {
    for svg in [
        latency_cdf("none", &[]),
        latency_cdf("empty", &[("a", &[][..])]),
        timeline("none", &[]),
    ] {
        let doc = parse(&svg);
        assert!(
            texts(doc.root_element()).contains(&"no data".to_string()),
            "{svg}"
        );
    }
}

fn mib(v: f64) -> f64 {
    v * 1048576.0
}

fn timeline_series() -> Vec<Series> {
    let t = |f: &dyn Fn(f64) -> f64| {
        (0..60)
            .map(|i| (f64::from(i) * 0.5, f(f64::from(i))))
            .collect()
    };
    vec![
        Series {
            label: "host resident".into(),
            unit: Unit::Bytes,
            points: t(&|i| mib(100.0 + 4.0 * i).min(mib(256.0))),
        },
        Series {
            label: "guest free".into(),
            unit: Unit::Bytes,
            points: t(&|i| mib(400.0 - 5.0 * i).max(mib(20.0))),
        },
        Series {
            label: "host swap-ins".into(),
            unit: Unit::PerSecond,
            points: t(&|i| if i > 30.0 { 1500.0 + 10.0 * i } else { 0.0 }),
        },
    ]
}

#[test]
fn timeline_puts_rates_on_a_second_axis() {
    let svg = timeline("host-swap", &timeline_series());
    let doc = parse(&svg);
    assert_eq!(groups(&doc, "series").len(), 3);
    let y = texts(groups(&doc, "axis y")[0]);
    assert!(y.contains(&"memory".to_string()), "{y:?}");
    assert!(y.iter().any(|l| l.ends_with(" MiB")), "{y:?}");
    let y2 = texts(groups(&doc, "axis y2")[0]);
    assert!(
        y2.contains(&"pages/s".to_string()) && y2.iter().any(|l| l.ends_with('k')),
        "{y2:?}"
    );
    let dashed = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-dasharray").is_some())
        .count();
    assert_eq!(dashed, 1, "rates are dashed");
    let legend = texts(groups(&doc, "legend")[0]);
    assert!(
        legend.contains(&"host swap-ins (right axis)".to_string()),
        "{legend:?}"
    );
    let x = texts(groups(&doc, "axis x")[0]);
    assert!(x.contains(&"0 s".to_string()) && x.contains(&"time since guest start".to_string()));
    assert_no_overlap(groups(&doc, "axis x")[0], TICK_FONT);
}

#[test]
fn timeline_of_rates_alone_uses_the_left_axis() {
    let s: Vec<Series> = timeline_series()
        .into_iter()
        .filter(|s| s.unit == Unit::PerSecond)
        .collect();
    let doc_s = timeline("rates", &s);
    let doc = parse(&doc_s);
    assert!(groups(&doc, "axis y2").is_empty());
    assert!(texts(groups(&doc, "axis y")[0]).contains(&"pages/s".to_string()));
}

#[test]
fn timeline_skips_non_finite_points() {
    let s = vec![Series {
        label: "x".into(),
        unit: Unit::Bytes,
        points: vec![
            (0.0, 1.0),
            (f64::NAN, 2.0),
            (2.0, f64::INFINITY),
            (3.0, 4.0),
        ],
    }];
    let doc_s = timeline("nan", &s);
    let doc = parse(&doc_s);
    let line = doc
        .descendants()
        .find(|n| n.has_tag_name("polyline"))
        .unwrap();
    assert_eq!(
        line.attribute("points").unwrap().split_whitespace().count(),
        2
    );
}

#[test]
fn many_series_wrap_the_legend_without_overlap() {
    let data: Vec<Vec<u64>> = (1..=9).map(|i| samples(1000 * i, 50)).collect();
    let labels: Vec<String> = (1..=9)
        .map(|i| format!("a rather long path name {i}"))
        .collect();
    let series: Vec<(&str, &[u64])> = labels
        .iter()
        .map(String::as_str)
        .zip(data.iter().map(Vec::as_slice))
        .collect();
    let svg = latency_cdf("many", &series);
    let doc = parse(&svg);
    let legend = groups(&doc, "legend")[0];
    let rows: std::collections::BTreeSet<&str> = legend
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.attribute("y").unwrap())
        .collect();
    assert!(rows.len() >= 3, "wrapped into {} rows", rows.len());
    assert_no_overlap(legend, 12.0);
    // Every legend label fits in the canvas.
    for t in legend.descendants().filter(|n| n.has_tag_name("text")) {
        let x: f64 = t.attribute("x").unwrap().parse().unwrap();
        assert!(
            x + axis::text_width(t.text().unwrap(), 12.0) <= WIDTH,
            "{x}"
        );
    }
    // Colours repeat only after the palette is used up.
    let colours: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .map(|n| n.attribute("stroke").unwrap())
        .collect();
    assert_eq!(
        colours[..8]
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        8
    );
}

/// rsvg-convert (librsvg2-bin), when installed, renders both plots to PNG.
#[test]
fn plots_render_with_rsvg_convert() {
    let Ok(out) = std::process::Command::new("rsvg-convert")
        .arg("--version")
        .output()
    else {
        base::tier::skip(
            base::tier::Tier::Tool,
            "rsvg-convert is not installed (apt-get install librsvg2-bin)",
        );
        return;
    };
    assert!(out.status.success());
    let a = samples(2_000, 1000);
    let dir = tempfile::tempdir().unwrap();
    for (name, svg) in [
        ("cdf", latency_cdf("cdf", &[("a", &a)])),
        ("timeline", timeline("timeline", &timeline_series())),
    ] {
        let src = dir.path().join(format!("{name}.svg"));
        let png = dir.path().join(format!("{name}.png"));
        std::fs::write(&src, svg).unwrap();
        let st = std::process::Command::new("rsvg-convert")
            .arg("-o")
            .arg(&png)
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success(), "rsvg-convert failed on {name}");
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}

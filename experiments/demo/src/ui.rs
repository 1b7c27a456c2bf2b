//! Drawing the demo's screen (ratatui): big, bold numbers for the back of a
//! lecture hall, laid out to fit 80×24 and to use the room of a wider terminal.
//!
//! ```text
//!  swaplab demo · guest 256 MiB · up 42 s · script 3/7 · <status>
//! ┌Guest memory──────────────────┐┌Host──────────────────────────────┐
//! │total  248 MiB  free  90 MiB  ││resident  60 MiB / limit  64 MiB  │
//! │avail  120 MiB                ││████████████████████████████▌     │
//! │swap   in 0/s   out 12/s      ││swap-in  1234/s   total 56789     │
//! │                              ││evict    1200/s   total 60000     │
//! └──────────────────────────────┘└──────────────────────────────────┘
//! ┌Balloon──────────────────────────────────────────────────────────────┐
//! │██████████ balloon  96 MiB  target  96 MiB █████                      │
//! └─────────────────────────────────────────────────────────────────────┘
//! ┌Host fault latency (recent, µs)──────────────────────────────────────┐
//! │store   ▂▃▅█▂▁▁▃                                      p50 110 max 900│
//! └─────────────────────────────────────────────────────────────────────┘
//! ┌Events───────────────────────────────────────────────────────────────┐
//! │  12.3 s host     balloon target set to 96 MiB                       │
//! └─────────────────────────────────────────────────────────────────────┘
//!  + inflate  - deflate  w workload (off)  l limit (64 MiB)  q quit
//! ```

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Sparkline};
use ratatui::Frame;

use super::model::{quantile, Model};

/// What the screen shows besides the VM's numbers.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// The host limit levels `l` cycles through, bytes.
    pub limits: Vec<u64>,
    /// The current level.
    pub limit_idx: usize,
    /// Balloon step, bytes.
    pub step: u64,
    /// Workload size, MiB.
    pub workload_mb: u64,
    /// The status on the title line (what is going on, or the last error).
    pub status: String,
    /// Script steps played and in all, if a script runs.
    pub script: Option<(usize, usize)>,
}

fn mib(b: Option<u64>) -> String {
    b.map_or("—".into(), |b| format!("{}", b >> 20))
}

fn per_s(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{:.0}", r))
}

fn bold(s: impl Into<String>) -> Span<'static> {
    Span::styled(
        s.into(),
        Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
    )
}

fn label(s: &'static str) -> Span<'static> {
    Span::styled(s, Style::default().fg(Color::Cyan))
}

fn block(title: &'static str) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(Span::styled(
        title,
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame<'_>, m: &Model, c: &Controls) {
    let area = f.area();
    let paths = m.faults.len().clamp(1, 4) as u16;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(6),
            Constraint::Length(3),
            Constraint::Length(paths + 2),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .split(area);
    title(f, rows[0], m, c);
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
        .split(rows[1]);
    guest(f, cols[0], m);
    host(f, cols[1], m);
    balloon(f, rows[2], m);
    faults(f, rows[3], m);
    events(f, rows[4], m);
    help(f, rows[5], m, c);
}

fn title(f: &mut Frame<'_>, area: Rect, m: &Model, c: &Controls) {
    let mut spans = vec![
        Span::styled(
            " swaplab demo ",
            Style::default()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(" guest {} MiB", mib(m.guest_mem))),
    ];
    if let Some(up) = m.uptime_s {
        spans.push(Span::raw(format!(" · up {up:.0} s")));
    }
    if let Some((done, all)) = c.script {
        spans.push(Span::raw(format!(" · script {done}/{all}")));
    }
    spans.push(Span::raw(" · "));
    spans.push(bold(c.status.clone()));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn guest(f: &mut Frame<'_>, area: Rect, m: &Model) {
    let lines = vec![
        Line::from(vec![
            label("total "),
            bold(format!("{:>5} MiB", mib(m.guest_total))),
        ]),
        Line::from(vec![
            label("free  "),
            bold(format!("{:>5} MiB", mib(m.guest_free))),
        ]),
        Line::from(vec![
            label("avail "),
            bold(format!("{:>5} MiB", mib(m.guest_avail))),
        ]),
        Line::from(vec![
            label("swap in "),
            bold(format!("{}/s", per_s(m.guest_swap_in.per_s))),
            label(" out "),
            bold(format!("{}/s", per_s(m.guest_swap_out.per_s))),
        ]),
    ];
    f.render_widget(Paragraph::new(lines).block(block("Guest memory")), area);
}

fn host(f: &mut Frame<'_>, area: Rect, m: &Model) {
    let b = block("Host");
    let inner = b.inner(area);
    f.render_widget(b, area);
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .split(inner);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            label("resident "),
            bold(format!("{:>4} MiB", mib(m.host_resident))),
            label(" / limit "),
            bold(format!("{:>4} MiB", mib(m.host_limit))),
        ])),
        rows[0],
    );
    let ratio = match (m.host_resident, m.host_limit.or(m.guest_mem)) {
        (Some(r), Some(l)) if l > 0 => (r as f64 / l as f64).clamp(0.0, 1.0),
        _ => 0.0,
    };
    let pct = match (m.host_resident, m.host_limit) {
        (Some(r), Some(l)) if l > 0 => format!("{}% of the limit", r * 100 / l),
        _ => String::new(),
    };
    f.render_widget(
        Gauge::default()
            .gauge_style(Style::default().fg(Color::Magenta))
            .ratio(ratio)
            .label(pct),
        rows[1],
    );
    for (row, name, r) in [
        (rows[2], "swap-in ", &m.host_swap_in),
        (rows[3], "evict   ", &m.host_evict),
    ] {
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(name, Style::default().fg(Color::Cyan)),
                bold(format!("{:>6}/s", per_s(r.per_s))),
                label("  total "),
                bold(r.value().map_or("—".into(), |v| v.to_string())),
            ])),
            row,
        );
    }
}

fn balloon(f: &mut Frame<'_>, area: Rect, m: &Model) {
    let ratio = match (m.balloon_actual, m.guest_mem) {
        (Some(a), Some(g)) if g > 0 => (a as f64 / g as f64).clamp(0.0, 1.0),
        _ => 0.0,
    };
    let text = format!(
        "balloon {} MiB  target {} MiB",
        mib(m.balloon_actual),
        mib(m.balloon_target)
    );
    f.render_widget(
        Gauge::default()
            .block(block("Balloon"))
            .gauge_style(Style::default().fg(Color::Green))
            .ratio(ratio)
            .label(Span::styled(
                text,
                Style::default().add_modifier(Modifier::BOLD),
            )),
        area,
    );
}

fn faults(f: &mut Frame<'_>, area: Rect, m: &Model) {
    let b = block("Host fault latency (recent, µs)");
    let inner = b.inner(area);
    f.render_widget(b, area);
    if m.faults.is_empty() {
        f.render_widget(Paragraph::new("no host faults yet"), inner);
        return;
    }
    let n = inner.height as usize;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints(vec![Constraint::Length(1); n])
        .split(inner);
    for ((path, ns), row) in m.faults.iter().take(n).zip(rows.iter()) {
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([
                Constraint::Length(8),
                Constraint::Min(8),
                Constraint::Length(24),
            ])
            .split(*row);
        f.render_widget(Paragraph::new(label_owned(path_label(path))), cols[0]);
        let width = cols[1].width as usize;
        let us: Vec<u64> = ns[ns.len().saturating_sub(width)..]
            .iter()
            .map(|n| n / 1000)
            .collect();
        f.render_widget(
            Sparkline::default()
                .data(&us)
                .style(Style::default().fg(Color::Red)),
            cols[1],
        );
        let p = |q| quantile(ns, q).map_or("—".into(), |v| (v / 1000).to_string());
        f.render_widget(
            Paragraph::new(Line::from(vec![
                label(" p50 "),
                bold(p(0.5)),
                label(" max "),
                bold(p(1.0)),
            ])),
            cols[2],
        );
    }
}

/// Fault path names, cut to the column.
fn path_label(path: &str) -> &str {
    match path {
        "write_protect" => "wr-prot",
        "prefetch" => "prefetch",
        other => other.get(..8).unwrap_or(other),
    }
}

fn label_owned(s: &str) -> Span<'static> {
    Span::styled(s.to_string(), Style::default().fg(Color::Cyan))
}

fn events(f: &mut Frame<'_>, area: Rect, m: &Model) {
    let b = block("Events");
    let n = b.inner(area).height as usize;
    let lines: Vec<Line> = m
        .events
        .iter()
        .skip(m.events.len().saturating_sub(n))
        .map(|e| {
            Line::from(vec![
                Span::raw(format!("{:>6.1} s ", e.t_s)),
                label_owned(&format!("{:<8}", e.source)),
                Span::raw(e.text.clone()),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(b), area);
}

fn help(f: &mut Frame<'_>, area: Rect, m: &Model, c: &Controls) {
    let key = |k: &'static str| {
        Span::styled(
            k,
            Style::default()
                .fg(Color::Black)
                .bg(Color::White)
                .add_modifier(Modifier::BOLD),
        )
    };
    let limit = c
        .limits
        .get(c.limit_idx)
        .map_or("—".into(), |l| format!("{}", l >> 20));
    let spans = vec![
        key(" + "),
        Span::raw(format!(" inflate {}M ", c.step >> 20)),
        key(" - "),
        Span::raw(" deflate "),
        key(" w "),
        Span::raw(format!(
            " workload {} ",
            if m.workload_running { "on" } else { "off" }
        )),
        key(" l "),
        Span::raw(format!(" limit {limit}M ")),
        key(" q "),
        Span::raw(" quit"),
    ];
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Reading};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(w: u16, h: u16, m: &Model, c: &Controls) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, m, c)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    fn busy_model() -> Model {
        let mut m = Model {
            guest_mem: Some(256 << 20),
            guest_total: Some(248 << 20),
            guest_free: Some(90 << 20),
            guest_avail: Some(120 << 20),
            balloon_actual: Some(96 << 20),
            balloon_target: Some(128 << 20),
            host_resident: Some(60 << 20),
            host_limit: Some(64 << 20),
            uptime_s: Some(42.0),
            workload_running: true,
            ..Model::default()
        };
        m.host_swap_in.update(Reading { t_s: 0.0, value: 0 });
        m.host_swap_in.update(Reading {
            t_s: 1.0,
            value: 1234,
        });
        m.faults
            .insert("store".into(), (1..200).map(|i| i * 1000).collect());
        m.faults.insert("zero".into(), vec![5000; 10]);
        for i in 0..20 {
            m.events.push_back(Event {
                seq: i,
                t_s: i as f64,
                source: "host".into(),
                text: format!("event number {i}"),
            });
        }
        m
    }

    fn controls() -> Controls {
        Controls {
            limits: vec![224 << 20, 128 << 20, 64 << 20],
            limit_idx: 2,
            step: 32 << 20,
            workload_mb: 96,
            status: "running".into(),
            script: Some((3, 7)),
        }
    }

    #[test]
    fn everything_fits_at_80x24() {
        let s = screen(80, 24, &busy_model(), &controls());
        let all = s.join("\n");
        for needle in [
            "swaplab demo",
            "guest 256 MiB",
            "script 3/7",
            "total   248 MiB",
            "free     90 MiB",
            "avail   120 MiB",
            "resident   60 MiB / limit   64 MiB",
            "swap-in   1234/s  total 1234",
            "balloon 96 MiB  target 128 MiB",
            "store",
            "p50 100 max 199",
            "event number 19",
            "workload on",
            "limit 64M",
            " q ",
        ] {
            assert!(all.contains(needle), "{needle:?} missing from\n{all}");
        }
        // The help line is the last one, and the newest event is shown.
        assert!(s[23].contains("inflate 32M"), "{}", s[23]);
        assert!(s[23].contains("quit"), "{}", s[23]);
        assert!(
            !all.contains("event number 10"),
            "only the newest events fit"
        );
    }

    #[test]
    fn a_wide_terminal_shows_more_and_an_empty_model_draws() {
        let s = screen(160, 40, &busy_model(), &controls());
        let all = s.join("\n");
        assert!(all.contains("event number 10"), "{all}");
        assert!(s[39].contains("quit"));
        let empty = screen(80, 24, &Model::default(), &Controls::default());
        let all = empty.join("\n");
        assert!(all.contains("total     — MiB"), "{all}");
        assert!(all.contains("no host faults yet"), "{all}");
        // Tiny terminals do not panic.
        screen(20, 5, &busy_model(), &controls());
        screen(1, 1, &busy_model(), &controls());
    }
}

//! The runner's progress display on stderr: current scenario, repetition i/N,
//! elapsed time and an estimate of what is left.
//!
//! On a terminal it keeps one status line up to date in place (`\r`, erase
//! line) and prints a permanent line per finished run; anywhere else (CI logs,
//! pipes) it prints plain lines only, one when a run starts and one when it
//! ends. Write errors are ignored: progress must never fail a run.
//! [`Progress::tick`] redraws the elapsed time; call it from the runner's wait
//! loop (or a timer thread, with the display behind a mutex).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Longest status line on a terminal, so it never wraps on an 80-column one
/// (a wrapped line cannot be redrawn in place).
const STATUS_WIDTH: usize = 79;

/// How the display is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A status line redrawn in place.
    Tty,
    /// Plain lines only.
    Plain,
}

impl Style {
    /// `Tty` if stderr is a terminal, else `Plain`.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Tty
        } else {
            Self::Plain
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd<'a> {
    /// Completed.
    Ok,
    /// Failed, with a one-line reason.
    Failed(&'a str),
    /// Stopped at its timeout.
    TimedOut,
    /// Not run: its result was kept from an earlier attempt (`--resume`),
    /// which ended it as said.
    Kept(&'a str),
}

/// `m:ss` or `h:mm:ss`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

struct Current {
    scenario: String,
    repetition: u32,
    of: u32,
    started: Duration,
}

/// The progress display.
pub struct Progress<W: Write> {
    out: W,
    style: Style,
    clock: Box<dyn Fn() -> Duration + Send>,
    total: u64,
    done: u64,
    failed: u64,
    /// Sum of finished runs' durations (for the estimate).
    run_time: Duration,
    /// Runs that ran here (not kept from an earlier attempt): `run_time`'s count.
    timed: u64,
    current: Option<Current>,
    status_shown: bool,
}

impl Progress<std::io::Stderr> {
    /// A display on stderr for `total_runs` runs, styled for what stderr is.
    pub fn stderr(total_runs: u64) -> Self {
        Progress::new(std::io::stderr(), Style::for_stderr(), total_runs)
    }
}

impl<W: Write> Progress<W> {
    /// A display on `out` timed by the wall clock.
    pub fn new(out: W, style: Style, total_runs: u64) -> Self {
        let start = Instant::now();
        Self::with_clock(out, style, total_runs, Box::new(move || start.elapsed()))
    }

    /// A display whose time comes from `clock` (time since the matrix started).
    pub fn with_clock(
        out: W,
        style: Style,
        total_runs: u64,
        clock: Box<dyn Fn() -> Duration + Send>,
    ) -> Self {
        Self {
            out,
            style,
            clock,
            total: total_runs,
            done: 0,
            failed: 0,
            run_time: Duration::ZERO,
            timed: 0,
            current: None,
            status_shown: false,
        }
    }

    /// `[i/N]` for the current (or next) run.
    fn counter(&self) -> String {
        format!(
            "[{}/{}]",
            (self.done + 1).min(self.total.max(1)),
            self.total
        )
    }

    /// Estimated time left: mean finished-run time × runs left (the current one included).
    fn eta(&self, now: Duration) -> Option<Duration> {
        if self.timed == 0 {
            return None;
        }
        let mean = self.run_time / u32::try_from(self.timed).unwrap_or(u32::MAX);
        let left = self.total.saturating_sub(self.done);
        let in_run = self
            .current
            .as_ref()
            .map_or(Duration::ZERO, |c| now.saturating_sub(c.started));
        Some((mean * u32::try_from(left).unwrap_or(u32::MAX)).saturating_sub(in_run.min(mean)))
    }

    /// The terminal status line.
    fn status(&self, now: Duration) -> String {
        let Some(c) = &self.current else {
            return String::new();
        };
        let mut tail = format!(
            " · rep {}/{} · run {} · total {}",
            c.repetition,
            c.of,
            fmt_duration(now.saturating_sub(c.started)),
            fmt_duration(now)
        );
        if let Some(eta) = self.eta(now) {
            tail += &format!(" · ~{} left", fmt_duration(eta));
        }
        let head = format!("{} ", self.counter());
        let room = STATUS_WIDTH.saturating_sub(head.chars().count() + tail.chars().count());
        let name: String = if c.scenario.chars().count() > room {
            let mut n: String = c.scenario.chars().take(room.saturating_sub(1)).collect();
            n.push('…');
            n
        } else {
            c.scenario.clone()
        };
        format!("{head}{name}{tail}")
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            let _ = write!(self.out, "\r\x1b[2K");
            self.status_shown = false;
        }
    }

    fn draw_status(&mut self) {
        if self.style == Style::Tty && self.current.is_some() {
            let line = self.status((self.clock)());
            let _ = write!(self.out, "\r\x1b[2K{line}");
            self.status_shown = true;
        }
        let _ = self.out.flush();
    }

    /// A run starts.
    pub fn start_run(&mut self, scenario: &str, repetition: u32, of: u32) {
        let now = (self.clock)();
        self.current = Some(Current {
            scenario: scenario.to_string(),
            repetition,
            of,
            started: now,
        });
        if self.style == Style::Plain {
            let _ = writeln!(
                self.out,
                "swaplab: {} {scenario} repetition {repetition}/{of} starting (elapsed {})",
                self.counter(),
                fmt_duration(now)
            );
        }
        self.draw_status();
    }

    /// The current run ended.
    pub fn end_run(&mut self, end: RunEnd<'_>) {
        let now = (self.clock)();
        let Some(c) = self.current.take() else {
            return;
        };
        let took = now.saturating_sub(c.started);
        let secs = format!("{:.1} s", took.as_secs_f64());
        let what = match end {
            RunEnd::Ok => format!("ok in {secs}"),
            RunEnd::Failed(why) => format!("FAILED after {secs}: {why}"),
            RunEnd::TimedOut => format!("TIMED OUT after {secs}"),
            RunEnd::Kept(how) => format!("kept from the earlier attempt ({how})"),
        };
        let line = format!(
            "swaplab: {} {} repetition {}/{}: {what}",
            self.counter(),
            c.scenario,
            c.repetition,
            c.of
        );
        self.clear_status();
        let _ = writeln!(self.out, "{line}");
        self.done += 1;
        if !matches!(end, RunEnd::Kept(_)) {
            self.run_time += took;
            self.timed += 1;
        }
        if !matches!(end, RunEnd::Ok | RunEnd::Kept("ok")) {
            self.failed += 1;
        }
        let _ = self.out.flush();
    }

    /// A message line (kept above the status line on a terminal).
    pub fn note(&mut self, msg: &str) {
        self.clear_status();
        let _ = writeln!(self.out, "swaplab: {msg}");
        self.draw_status();
    }

    /// Redraws the status line with the current time (terminal only).
    pub fn tick(&mut self) {
        if self.style == Style::Tty {
            self.draw_status();
        }
    }

    /// Changes how many runs the display counts toward (when that was a guess).
    pub fn set_total(&mut self, total_runs: u64) {
        self.total = total_runs;
    }

    /// Prints the summary line and returns the writer.
    pub fn finish(mut self) -> W {
        let now = (self.clock)();
        self.clear_status();
        let failed = if self.failed > 0 {
            format!(", {} failed", self.failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            self.out,
            "swaplab: {} of {} runs done in {}{failed}",
            self.done,
            self.total,
            fmt_duration(now)
        );
        let _ = self.out.flush();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A display over a Vec with a clock the test sets (seconds).
    fn fake(style: Style, total: u64) -> (Progress<Vec<u8>>, Arc<AtomicU64>) {
        let t = Arc::new(AtomicU64::new(0));
        let t2 = Arc::clone(&t);
        let p = Progress::with_clock(
            Vec::new(),
            style,
            total,
            Box::new(move || Duration::from_secs(t2.load(Ordering::SeqCst))),
        );
        (p, t)
    }

    fn text(p: &Progress<Vec<u8>>) -> String {
        String::from_utf8(p.out.clone()).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_secs(5)), "0:05");
        assert_eq!(fmt_duration(Duration::from_secs(754)), "12:34");
        assert_eq!(fmt_duration(Duration::from_secs(3723)), "1:02:03");
    }

    #[test]
    fn plain_style_prints_whole_lines_without_escapes() {
        let (mut p, t) = fake(Style::Plain, 2);
        p.start_run("guest-swap", 1, 2);
        t.store(12, Ordering::SeqCst);
        p.tick();
        p.note("guest booted");
        p.end_run(RunEnd::Ok);
        p.start_run("guest-swap", 2, 2);
        t.store(20, Ordering::SeqCst);
        p.end_run(RunEnd::Failed("guest panicked"));
        let out = String::from_utf8(p.finish()).unwrap();
        assert!(!out.contains('\r') && !out.contains('\x1b'), "{out:?}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "swaplab: [1/2] guest-swap repetition 1/2 starting (elapsed 0:00)",
                "swaplab: guest booted",
                "swaplab: [1/2] guest-swap repetition 1/2: ok in 12.0 s",
                "swaplab: [2/2] guest-swap repetition 2/2 starting (elapsed 0:12)",
                "swaplab: [2/2] guest-swap repetition 2/2: FAILED after 8.0 s: guest panicked",
                "swaplab: 2 of 2 runs done in 0:20, 1 failed",
            ]
        );
    }

    #[test]
    fn tty_style_redraws_one_status_line() {
        let (mut p, t) = fake(Style::Tty, 3);
        p.start_run("host-swap", 1, 3);
        assert_eq!(
            text(&p),
            "\r\x1b[2K[1/3] host-swap · rep 1/3 · run 0:00 · total 0:00"
        );
        t.store(10, Ordering::SeqCst);
        p.tick();
        assert!(text(&p).ends_with("\r\x1b[2K[1/3] host-swap · rep 1/3 · run 0:10 · total 0:10"));
        // A note clears the status, prints its line, and redraws the status.
        p.note("hello");
        assert!(text(&p).ends_with(
            "\r\x1b[2Kswaplab: hello\n\r\x1b[2K[1/3] host-swap · rep 1/3 · run 0:10 · total 0:10"
        ));
        p.end_run(RunEnd::Ok);
        assert!(
            text(&p).ends_with("\r\x1b[2Kswaplab: [1/3] host-swap repetition 1/3: ok in 10.0 s\n")
        );
        // With one run done, the estimate appears: 10 s per run, 2 left, 4 s into this one.
        p.start_run("host-swap", 2, 3);
        t.store(14, Ordering::SeqCst);
        p.tick();
        assert!(
            text(&p).ends_with("[2/3] host-swap · rep 2/3 · run 0:04 · total 0:14 · ~0:16 left"),
            "{:?}",
            text(&p)
        );
        p.end_run(RunEnd::TimedOut);
        let out = String::from_utf8(p.finish()).unwrap();
        assert!(out.contains("repetition 2/3: TIMED OUT after 4.0 s\n"));
        assert!(
            out.ends_with("swaplab: 2 of 3 runs done in 0:14, 1 failed\n"),
            "{out:?}"
        );
    }

    #[test]
    fn kept_runs_say_so_and_stay_out_of_the_estimate() {
        let (mut p, t) = fake(Style::Tty, 4);
        p.start_run("balloon", 1, 4);
        p.end_run(RunEnd::Kept("ok"));
        p.start_run("balloon", 2, 4);
        p.end_run(RunEnd::Kept("guest panicked"));
        assert!(text(&p).contains("repetition 1/4: kept from the earlier attempt (ok)\n"));
        // No run has run here yet: no estimate.
        p.start_run("balloon", 3, 4);
        t.store(10, Ordering::SeqCst);
        p.tick();
        assert!(!text(&p).ends_with("left"), "{:?}", text(&p));
        p.end_run(RunEnd::Ok);
        // 10 s per run that ran here, one left.
        p.start_run("balloon", 4, 4);
        p.tick();
        assert!(text(&p).ends_with("~0:10 left"), "{:?}", text(&p));
        p.end_run(RunEnd::Ok);
        let out = String::from_utf8(p.finish()).unwrap();
        assert!(
            out.ends_with("4 of 4 runs done in 0:10, 1 failed\n"),
            "{out:?}"
        );
    }

    #[test]
    fn status_line_never_exceeds_the_width() {
        let (mut p, t) = fake(Style::Tty, 100);
        t.store(3 * 3600, Ordering::SeqCst);
        let long = "a-very-long-scenario-name-".repeat(6);
        p.start_run(&long, 10, 10);
        let out = text(&p);
        let line = out.rsplit("\x1b[2K").next().unwrap();
        assert_eq!(line.chars().count(), STATUS_WIDTH, "{line}");
        assert!(
            line.contains('…') && line.ends_with("total 3:00:00"),
            "{line}"
        );
    }

    #[test]
    fn end_without_start_is_ignored() {
        let (mut p, _) = fake(Style::Plain, 1);
        p.end_run(RunEnd::Ok);
        let out = String::from_utf8(p.finish()).unwrap();
        assert_eq!(out, "swaplab: 0 of 1 runs done in 0:00\n");
    }
}

//! `swaplab-guest balloon-wait --mb N [--timeout-s S]`: wait until the balloon
//! driver holds at least N MiB (`balloon_inflate − balloon_deflate` in
//! `/proc/vmstat`, pages), so a workload starts in the memory the host left the
//! guest rather than racing the inflation. Polls every 20 ms; prints one
//! `balloon_wait` line with what it saw and how long it waited; fails (exit 1)
//! after `--timeout-s` (default 120) naming how far the balloon got.

use std::io::Write;

use super::clock::monotonic_ns;
use super::error::GuestError;
use super::json::{emit, line, Value};
use super::report::read;
use super::{args::Flags, output};

/// Arguments of `balloon-wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalloonWaitArgs {
    /// Balloon size to wait for, MiB.
    pub mb: u64,
    /// Give up after this many seconds.
    pub timeout_s: u64,
}

impl BalloonWaitArgs {
    /// Parse `--mb N [--timeout-s S]`.
    pub fn parse(args: &[String]) -> Result<Self, GuestError> {
        let f = Flags::parse("balloon-wait", args, &["--mb", "--timeout-s"])?;
        Ok(Self {
            mb: f.mb()?,
            timeout_s: f.u64_in("--timeout-s", 1, 86_400)?.unwrap_or(120),
        })
    }
}

/// Pages the balloon driver holds now according to `vmstat` text (`None` when
/// the kernel has no balloon counters).
pub fn balloon_pages(vmstat: &str) -> Option<u64> {
    let (mut inflated, mut deflated) = (None, None);
    for l in vmstat.lines() {
        match l.split_once(' ') {
            Some(("balloon_inflate", v)) => inflated = v.trim().parse::<u64>().ok(),
            Some(("balloon_deflate", v)) => deflated = v.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    Some(inflated?.saturating_sub(deflated.unwrap_or(0)))
}

/// Wait, then print the line.
pub fn run(args: &BalloonWaitArgs, out: &mut dyn Write) -> Result<(), GuestError> {
    const POLL_NS: u64 = 20_000_000;
    let want = args.mb << 20 >> 12;
    let start = monotonic_ns();
    let deadline = start + args.timeout_s * 1_000_000_000;
    let mut next = start;
    loop {
        let have = balloon_pages(&read("/proc/vmstat")?).ok_or_else(|| GuestError::Io {
            what: "/proc/vmstat".into(),
            error: std::io::Error::other(
                "no balloon_inflate counter (kernel without CONFIG_MEMORY_BALLOON)",
            ),
        })?;
        let now = monotonic_ns();
        if have >= want {
            let l = line(
                "balloon_wait",
                &[
                    ("balloon_pages", Value::U(have)),
                    ("wanted_pages", Value::U(want)),
                    ("waited_ms", Value::U((now - start) / 1_000_000)),
                ],
            );
            return emit(out, &l);
        }
        if now >= deadline {
            return Err(GuestError::Io {
                what: "balloon-wait".into(),
                error: std::io::Error::other(format!(
                    "the balloon holds {} MiB of the {} MiB waited for after {} s",
                    have >> 8,
                    args.mb,
                    args.timeout_s
                )),
            });
        }
        next += POLL_NS;
        if !output::sleep_until(next) {
            return Err(GuestError::Usage("balloon-wait: stopped".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<BalloonWaitArgs, GuestError> {
        BalloonWaitArgs::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags() {
        assert_eq!(
            args(&["--mb", "72"]).unwrap(),
            BalloonWaitArgs {
                mb: 72,
                timeout_s: 120
            }
        );
        assert_eq!(
            args(&["--mb", "8", "--timeout-s", "5"]).unwrap().timeout_s,
            5
        );
        assert!(matches!(args(&[]), Err(GuestError::Usage(m)) if m.contains("--mb")));
        assert!(matches!(
            args(&["--mb", "8", "--timeout-s", "0"]),
            Err(GuestError::Usage(_))
        ));
    }

    #[test]
    fn counts_inflated_minus_deflated() {
        let v = "nr_free_pages 5\nballoon_inflate 20000\nballoon_deflate 1500\nballoon_migrate 3\n";
        assert_eq!(balloon_pages(v), Some(18500));
        assert_eq!(balloon_pages("balloon_inflate 7\n"), Some(7));
        assert_eq!(balloon_pages("balloon_deflate 7\n"), None);
        assert_eq!(balloon_pages("nr_free_pages 5\n"), None);
    }

    #[test]
    fn an_already_full_balloon_returns_at_once_or_a_kernel_without_one_fails() {
        // On the test host: either the counters exist (0 held < 1 MiB would
        // time out, so only the parse is checked) or the error names them.
        let text = std::fs::read_to_string("/proc/vmstat").unwrap();
        match balloon_pages(&text) {
            Some(_) => {}
            None => {
                let e = run(
                    &BalloonWaitArgs {
                        mb: 1,
                        timeout_s: 1,
                    },
                    &mut Vec::new(),
                )
                .unwrap_err();
                assert!(e.to_string().contains("balloon_inflate"), "{e}");
            }
        }
    }
}

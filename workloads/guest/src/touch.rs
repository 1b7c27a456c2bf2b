//! `swaplab-guest touch`: allocate memory and access its pages in a pattern, timing
//! every access and checking every page's contents.
//!
//! The page order comes from the probe guests' generator
//! ([`crate::pattern::AccessPlan`]: `seq`, `random`, `zipf[:S]`, `phase[:K]`,
//! the same sequence for the same seed). Each access reads the page's tag (its first
//! 40 bytes: seed, page index, pass and sequence number of its last write, and a check
//! word), compares it with what this program last wrote there (all zero for a page
//! never written), and with probability `--write-ratio` writes a new tag. A page's
//! first access is always a write, so the memory is really allocated (a read of a
//! never-written anonymous page maps the shared zero page). After the last pass
//! every page is checked once more.
//!
//! Each access is timed with `lfence; rdtsc` ([`super::clock`]); latencies go into a
//! log-bucket histogram ([`super::hist`]) per pass.

use std::io::Write;

use super::clock::Rate;
use super::error::GuestError;
use super::hist::Histogram;
use super::json::{emit, line, Value};
use super::{args::Flags, clock, output};
use crate::pattern::{AccessPlan, Pattern};
use crate::rng::SplitMix64;

/// Page size assumed for touching (x86-64 base pages).
pub const PAGE: usize = 4096;
/// Bytes of the tag at the start of each page.
pub const TAG_BYTES: usize = 40;
/// Bad page indices reported.
pub const MAX_BAD_REPORTED: usize = 8;
const TAG_MAGIC: u64 = 0x5357_4150_5441_4721; // "SWAPTAG!"

/// Arguments of `touch`.
#[derive(Debug, Clone, PartialEq)]
pub struct TouchArgs {
    /// MiB to allocate.
    pub mb: u64,
    /// Passes over the buffer.
    pub passes: u32,
    /// Page order.
    pub pattern: Pattern,
    /// Seed of the pattern and of the write choices.
    pub seed: u64,
    /// Probability that an access (after a page's first) writes.
    pub write_ratio: f64,
}

impl TouchArgs {
    /// Parse `--mb N [--passes P] [--pattern P] [--seed X] [--write-ratio R]`.
    pub fn parse(args: &[String]) -> Result<Self, GuestError> {
        let f = Flags::parse(
            "touch",
            args,
            &["--mb", "--passes", "--pattern", "--seed", "--write-ratio"],
        )?;
        let pattern = match f.get("--pattern") {
            None => Pattern::Seq,
            Some(p) => p
                .parse()
                .map_err(|e| GuestError::Usage(format!("touch: --pattern: {e}")))?,
        };
        Ok(TouchArgs {
            mb: f.mb()?,
            passes: f.u64_in("--passes", 1, u64::from(u32::MAX))?.unwrap_or(2) as u32,
            pattern,
            seed: f.u64_in("--seed", 0, u64::MAX)?.unwrap_or(1),
            write_ratio: f.f64_in("--write-ratio", 0.0, 1.0)?.unwrap_or(1.0),
        })
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The tag words for a write of `page` in `pass` with sequence number `seq`.
pub fn tag(seed: u64, page: u64, pass: u64, seq: u64) -> [u64; 5] {
    let head = [TAG_MAGIC ^ seed, page, pass, seq];
    let check = head
        .iter()
        .fold(0x1234_5678_9abc_def0u64, |a, &w| mix(a ^ w));
    [head[0], head[1], head[2], head[3], check]
}

fn read_tag(page: &[u8]) -> [u64; 5] {
    let mut t = [0u64; 5];
    for (i, w) in t.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&page[i * 8..i * 8 + 8]);
        *w = u64::from_le_bytes(b);
    }
    t
}

fn write_tag(page: &mut [u8], t: &[u64; 5]) {
    for (i, w) in t.iter().enumerate() {
        page[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
}

/// What a page should hold: never written, or its last write.
#[derive(Debug, Clone, Copy, Default)]
struct Expect {
    /// Sequence number of the last write (0: never written).
    seq: u64,
    /// Pass of the last write.
    pass: u32,
    /// Last pass that accessed the page (0: never).
    seen: u32,
}

/// Totals of a run.
#[derive(Debug, Default)]
struct Totals {
    accesses: u64,
    writes: u64,
    verified: u64,
    errors: u64,
    bad: Vec<u64>,
}

impl Totals {
    fn check(&mut self, page: u64, ok: bool) -> bool {
        self.verified += 1;
        if !ok {
            self.errors += 1;
            if self.bad.len() < MAX_BAD_REPORTED && !self.bad.contains(&page) {
                self.bad.push(page);
            }
        }
        ok
    }
}

fn ns(cycles: u64, per: f64) -> u64 {
    (cycles as f64 * per).round() as u64
}

/// Allocate, touch and report one JSON line per pass plus a summary.
pub fn run(args: &TouchArgs, out: &mut dyn Write) -> Result<(), GuestError> {
    run_with(args, out, &mut |_, _| {})
}

/// [`run`], calling `after_pass(pass, memory)` after each pass (a test hook: it may
/// damage the memory to check that the next access notices).
pub fn run_with(
    args: &TouchArgs,
    out: &mut dyn Write,
    after_pass: &mut dyn FnMut(u32, &mut [u8]),
) -> Result<(), GuestError> {
    let bytes = usize::try_from(args.mb << 20)
        .map_err(|_| GuestError::Usage("touch: --mb too large".into()))?;
    let pages = bytes / PAGE;
    let mut plan = AccessPlan::new(args.pattern, pages as u64, args.seed)
        .map_err(|e| GuestError::Usage(format!("touch: {e}")))?;
    // A zeroed allocation this large comes straight from mmap: no page is touched
    // until an access does.
    let mut buf = vec![0u8; bytes];
    let mut expect = vec![Expect::default(); pages];
    let mut writes_rng = SplitMix64::new(args.seed ^ 0x7772_6974_6573_2121);
    let mut chunk = vec![0u32; 4096];
    let mut t = Totals::default();
    let mut all = Histogram::new();
    let run_rate = Rate::start();
    let mut distinct = 0u64;
    let mut passes_done = 0;
    for pass in 1..=args.passes {
        if output::stop_requested() {
            break;
        }
        let mut h = Histogram::new();
        let (mut accesses, mut pages_seen, mut new_pages, mut writes) = (0u64, 0u64, 0u64, 0u64);
        let errors_before = t.errors;
        plan.start_pass(pass - 1);
        let rate = Rate::start();
        loop {
            let n = plan.fill(&mut chunk);
            if n == 0 {
                break;
            }
            for &p in &chunk[..n] {
                let page = p as usize;
                let e = &mut expect[page];
                let write = e.seq == 0
                    || args.write_ratio >= 1.0
                    || writes_rng.unit_f64() < args.write_ratio;
                let mem = &mut buf[page * PAGE..page * PAGE + TAG_BYTES];
                let t0 = clock::cycles();
                let got = read_tag(mem);
                let ok = if e.seq == 0 {
                    got == [0; 5]
                } else {
                    got == tag(args.seed, p.into(), e.pass.into(), e.seq)
                };
                if write {
                    let seq = t.writes + writes + 1;
                    write_tag(mem, &tag(args.seed, p.into(), pass.into(), seq));
                    e.seq = seq;
                    e.pass = pass;
                }
                let t1 = clock::cycles();
                h.record(t1.saturating_sub(t0));
                if e.seen != pass {
                    pages_seen += 1;
                    if e.seen == 0 {
                        new_pages += 1;
                    }
                    e.seen = pass;
                }
                writes += u64::from(write);
                accesses += 1;
                t.check(p.into(), ok);
            }
        }
        let (wall_ns, per) = rate.stop();
        t.accesses += accesses;
        t.writes += writes;
        distinct += new_pages;
        passes_done = pass;
        all.merge(&h);
        let l = line(
            "touch",
            &[
                ("pass", Value::U(u64::from(pass))),
                ("accesses", Value::U(accesses)),
                ("pages", Value::U(pages_seen)),
                ("new_pages", Value::U(new_pages)),
                ("writes", Value::U(writes)),
                ("wall_ns", Value::U(wall_ns)),
                (
                    "ns_per_page",
                    Value::F(wall_ns as f64 / accesses.max(1) as f64),
                ),
                ("p50_ns", Value::U(ns(h.quantile(0.5), per))),
                ("p90_ns", Value::U(ns(h.quantile(0.9), per))),
                ("p99_ns", Value::U(ns(h.quantile(0.99), per))),
                ("max_ns", Value::U(ns(h.max(), per))),
                ("pass_errors", Value::U(t.errors - errors_before)),
                ("pages_verified", Value::U(t.verified)),
                ("integrity_errors", Value::U(t.errors)),
            ],
        );
        emit(out, &l)?;
        after_pass(pass, &mut buf);
    }
    // Every page once more: the last write of each must still be there.
    let mut bad_pages = 0u64;
    for (page, e) in expect.iter().enumerate() {
        let got = read_tag(&buf[page * PAGE..page * PAGE + TAG_BYTES]);
        let ok = if e.seq == 0 {
            got == [0; 5]
        } else {
            got == tag(args.seed, page as u64, e.pass.into(), e.seq)
        };
        if !t.check(page as u64, ok) {
            bad_pages += 1;
        }
    }
    let (total_ns, per) = run_rate.stop();
    let pattern = args.pattern.to_string();
    let l = line(
        "touch_done",
        &[
            ("mb", Value::U(args.mb)),
            ("pages", Value::U(pages as u64)),
            ("passes", Value::U(u64::from(passes_done))),
            ("pattern", Value::S(&pattern)),
            ("seed", Value::U(args.seed)),
            ("write_ratio", Value::F(args.write_ratio)),
            ("accesses", Value::U(t.accesses)),
            ("writes", Value::U(t.writes)),
            ("pages_touched", Value::U(distinct)),
            ("total_ns", Value::U(total_ns)),
            ("p50_ns", Value::U(ns(all.quantile(0.5), per))),
            ("p90_ns", Value::U(ns(all.quantile(0.9), per))),
            ("p99_ns", Value::U(ns(all.quantile(0.99), per))),
            ("max_ns", Value::U(ns(all.max(), per))),
            ("pages_verified", Value::U(t.verified)),
            ("integrity_errors", Value::U(t.errors)),
            ("bad_pages", Value::U(bad_pages)),
            ("first_bad_pages", Value::A(&t.bad)),
            ("stopped", Value::B(passes_done < args.passes)),
        ],
    );
    emit(out, &l)?;
    if t.errors != 0 {
        return Err(GuestError::Integrity(format!(
            "{} of {} page checks found wrong contents (first bad pages {:?})",
            t.errors, t.verified, t.bad
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<TouchArgs, GuestError> {
        TouchArgs::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    use crate::json::parse_lines as lines;

    #[test]
    fn parses_flags() {
        assert_eq!(
            args(&["--mb", "16"]).unwrap(),
            TouchArgs {
                mb: 16,
                passes: 2,
                pattern: Pattern::Seq,
                seed: 1,
                write_ratio: 1.0,
            }
        );
        let a = args(&[
            "--mb=4",
            "--passes",
            "3",
            "--pattern=zipf:1.2",
            "--seed",
            "9",
            "--write-ratio",
            "0.25",
        ])
        .unwrap();
        assert_eq!(
            (a.mb, a.passes, a.pattern, a.seed, a.write_ratio),
            (4, 3, Pattern::Zipf { skew: 1.2 }, 9, 0.25)
        );
        assert_eq!(
            args(&["--mb", "1", "--pattern", "phase:8"])
                .unwrap()
                .pattern,
            Pattern::Phase { windows: 8 }
        );
        for bad in [
            &[][..],
            &["--mb"],
            &["--mb", "0"],
            &["--mb", "x"],
            &["--mb", "1", "--passes", "0"],
            &["--mb", "1", "--pattern", "zipf:0"],
            &["--mb", "1", "--pattern", "bogus"],
            &["--mb", "1", "--write-ratio", "2"],
            &["--mb", "1", "--seed", "-1"],
            &["--nope"],
        ] {
            assert!(matches!(args(bad), Err(GuestError::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn tags_differ_in_every_field() {
        let t = tag(1, 2, 3, 4);
        assert_ne!(t, tag(9, 2, 3, 4));
        assert_ne!(t, tag(1, 9, 3, 4));
        assert_ne!(t, tag(1, 2, 9, 4));
        assert_ne!(t, tag(1, 2, 3, 9));
        let mut page = vec![0u8; PAGE];
        write_tag(&mut page, &t);
        assert_eq!(read_tag(&page), t);
    }

    #[test]
    fn touches_every_page_each_pass_and_verifies_them() {
        for pattern in ["seq", "random", "phase:4"] {
            let a = args(&["--mb", "2", "--passes", "3", "--pattern", pattern]).unwrap();
            let mut out = Vec::new();
            run(&a, &mut out).unwrap();
            let l = lines(&out);
            assert_eq!(l.len(), 4, "{pattern}");
            let accesses = if pattern == "phase:4" { 2048 } else { 512 };
            for (i, p) in l[..3].iter().enumerate() {
                assert_eq!(p["kind"], "touch");
                assert_eq!(p["pass"], i + 1);
                assert_eq!(p["pages"], 512, "{pattern}");
                assert_eq!(p["accesses"], accesses, "{pattern}");
                assert_eq!(p["new_pages"], if i == 0 { 512 } else { 0 });
                assert_eq!(p["writes"], accesses);
                assert_eq!(p["pass_errors"], 0);
                let (p50, p99, max) = (&p["p50_ns"], &p["p99_ns"], &p["max_ns"]);
                assert!(p50.as_u64() <= p99.as_u64() && p99.as_u64() <= max.as_u64());
            }
            let d = &l[3];
            assert_eq!(d["kind"], "touch_done");
            assert_eq!(d["pages"], 512);
            assert_eq!(d["pages_touched"], 512);
            assert_eq!(d["accesses"], 3 * accesses);
            assert_eq!(d["pages_verified"], 3 * accesses + 512);
            assert_eq!(d["integrity_errors"], 0);
            assert_eq!(d["bad_pages"], 0);
            assert_eq!(d["first_bad_pages"], serde_json::json!([]));
            assert_eq!(d["pattern"], pattern);
            assert_eq!(d["stopped"], false);
        }
    }

    #[test]
    fn zipf_with_reads_touches_hot_pages_and_writes_first_touches() {
        let a = args(&[
            "--mb",
            "8",
            "--passes",
            "2",
            "--pattern",
            "zipf",
            "--write-ratio",
            "0",
        ])
        .unwrap();
        let mut out = Vec::new();
        run(&a, &mut out).unwrap();
        let l = lines(&out);
        let pages = 2048;
        assert_eq!(l[0]["accesses"], pages);
        let touched = l[2]["pages_touched"].as_u64().unwrap();
        assert!(touched < pages * 3 / 4, "zipf is skewed: {touched}");
        // Only first touches write with --write-ratio 0.
        assert_eq!(l[2]["writes"], touched);
        assert_eq!(l[2]["integrity_errors"], 0);
    }

    #[test]
    fn a_damaged_page_is_detected_and_reported() {
        let a = args(&["--mb", "1", "--passes", "2", "--write-ratio", "0"]).unwrap();
        let mut out = Vec::new();
        let err = run_with(&a, &mut out, &mut |pass, mem| {
            if pass == 1 {
                mem[3 * PAGE + 16] ^= 1; // page 3's pass field
                mem[200 * PAGE + 39] ^= 0x80; // page 200's check word
            }
        })
        .unwrap_err();
        assert!(matches!(err, GuestError::Integrity(_)), "{err}");
        let l = lines(&out);
        assert_eq!(l[0]["pass_errors"], 0);
        assert_eq!(l[1]["pass_errors"], 2);
        let d = &l[2];
        // Read-only accesses leave the damage: pass 2 and the final check both see it.
        assert_eq!(d["integrity_errors"], 4);
        assert_eq!(d["bad_pages"], 2);
        assert_eq!(d["first_bad_pages"], serde_json::json!([3, 200]));
    }
}

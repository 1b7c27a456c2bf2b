//! `swaplab-guest integrity`: fill memory with a known pattern and verify every byte
//! of it, round after round, while other load (swap, ballooning, host eviction) goes
//! on around it.
//!
//! Every page holds a pseudo-random stream (xorshift64*, one word per 8 bytes) seeded
//! by the run's seed, the page index and the round that last wrote it, so a page that
//! comes back from anywhere else (another page, an older copy, zeros) is caught, and
//! so is a single flipped bit. Round 0 fills everything; each later round verifies
//! every page, then rewrites a fraction (`--rewrite`, default a quarter, chosen at
//! random each round) with that round's pattern. A bad page is reported (index, and
//! offset of its first wrong byte) and rewritten, so each error is reported once.
//! `--rounds 0` runs until `SIGTERM`/`SIGINT`, which ends it after the current round
//! with its summary. Exit status 1 if any page was ever wrong.

use std::io::Write;

use super::clock::{monotonic_ns, Rate};
use super::error::GuestError;
use super::json::{emit, line, Value};
use super::touch::PAGE;
use super::{args::Flags, output};

/// Bad pages reported per line.
pub const MAX_BAD_REPORTED: usize = 8;
/// Pages checked between looks at the stop flag (SIGTERM, SIGINT).
const STOP_CHECK_PAGES: usize = 256;

/// Arguments of `integrity`.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrityArgs {
    /// MiB to fill.
    pub mb: u64,
    /// Verification rounds (0: until stopped).
    pub rounds: u64,
    /// Pause between rounds.
    pub interval_ms: u64,
    /// Fraction of pages rewritten each round.
    pub rewrite: f64,
    /// Seed of the patterns.
    pub seed: u64,
}

impl IntegrityArgs {
    /// Parse `--mb N [--rounds R] [--interval-ms M] [--rewrite F] [--seed X]`.
    pub fn parse(args: &[String]) -> Result<Self, GuestError> {
        let f = Flags::parse(
            "integrity",
            args,
            &["--mb", "--rounds", "--interval-ms", "--rewrite", "--seed"],
        )?;
        Ok(Self {
            mb: f.mb()?,
            rounds: f.u64_in("--rounds", 0, u64::MAX)?.unwrap_or(1),
            interval_ms: f.u64_in("--interval-ms", 0, 86_400_000)?.unwrap_or(0),
            rewrite: f.f64_in("--rewrite", 0.0, 1.0)?.unwrap_or(0.25),
            seed: f.u64_in("--seed", 0, u64::MAX)?.unwrap_or(1),
        })
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The word stream of one page: xorshift64* from a state derived from
/// `(seed, page, round)`.
#[derive(Debug, Clone)]
pub struct PageStream(u64);

impl PageStream {
    /// The stream of `page` written in `round`.
    pub fn new(seed: u64, page: u64, round: u64) -> Self {
        let s = mix(mix(mix(seed) ^ page) ^ round.rotate_left(32));
        Self(if s == 0 { 0x2545_f491_4f6c_dd1d } else { s })
    }

    /// The next word.
    #[inline]
    pub fn next_word(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Fill `page` (one page of memory) with the stream of `(seed, index, round)`.
pub fn fill(page: &mut [u8], seed: u64, index: u64, round: u64) {
    let mut s = PageStream::new(seed, index, round);
    for w in page.chunks_exact_mut(8) {
        w.copy_from_slice(&s.next_word().to_le_bytes());
    }
}

/// The offset of the first byte of `page` that differs from the stream of
/// `(seed, index, round)`, or `None` if it all matches.
pub fn first_wrong_byte(page: &[u8], seed: u64, index: u64, round: u64) -> Option<usize> {
    let mut s = PageStream::new(seed, index, round);
    for (i, w) in page.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let diff = u64::from_le_bytes(b) ^ s.next_word();
        if diff != 0 {
            return Some(i * 8 + (diff.trailing_zeros() / 8) as usize);
        }
    }
    None
}

/// Running totals.
#[derive(Debug, Default)]
struct Totals {
    verified: u64,
    errors: u64,
    bad: Vec<u64>,
    offsets: Vec<u64>,
}

/// Fill, verify and report: a start line, one line per round, a summary.
pub fn run(args: &IntegrityArgs, out: &mut dyn Write) -> Result<(), GuestError> {
    run_with(args, out, &mut |_, _| {})
}

/// [`run`], calling `before_round(round, memory)` before each round's verification
/// (a test hook: it may damage the memory to check that the round notices).
pub fn run_with(
    args: &IntegrityArgs,
    out: &mut dyn Write,
    before_round: &mut dyn FnMut(u64, &mut [u8]),
) -> Result<(), GuestError> {
    let bytes = usize::try_from(args.mb << 20)
        .map_err(|_| GuestError::Usage("integrity: --mb too large".into()))?;
    let pages = bytes / PAGE;
    let total = Rate::start();
    let mut buf = vec![0u8; bytes];
    let mut round_of = vec![0u64; pages];
    let fill_rate = Rate::start();
    for (i, page) in buf.chunks_exact_mut(PAGE).enumerate() {
        fill(page, args.seed, i as u64, 0);
    }
    let (fill_ns, _) = fill_rate.stop();
    emit(
        out,
        &line(
            "integrity_start",
            &[
                ("mb", Value::U(args.mb)),
                ("pages", Value::U(pages as u64)),
                ("rounds", Value::U(args.rounds)),
                ("rewrite", Value::F(args.rewrite)),
                ("seed", Value::U(args.seed)),
                ("fill_ns", Value::U(fill_ns)),
            ],
        ),
    )?;
    let threshold = (args.rewrite * u64::MAX as f64) as u64;
    let mut t = Totals::default();
    let mut round = 0u64;
    let interval_ns = args.interval_ms * 1_000_000;
    let mut next = monotonic_ns();
    let mut stopped = false;
    while args.rounds == 0 || round < args.rounds {
        if round > 0 && interval_ns > 0 {
            next += interval_ns;
            if !output::sleep_until(next) {
                stopped = true;
                break;
            }
        }
        // The first round always runs whole: a stop (the scenario's
        // duration_s) that comes while the memory is still being filled, or
        // during that round, must not end the run with nothing verified.
        if round > 0 && output::stop_requested() {
            stopped = true;
            break;
        }
        round += 1;
        before_round(round, &mut buf);
        let verify = Rate::start();
        let (mut errors, mut bad, mut offsets) = (0u64, Vec::new(), Vec::new());
        let mut checked = 0u64;
        for (i, page) in buf.chunks_exact_mut(PAGE).enumerate() {
            // A stop ends a later round early (a round under heavy swapping
            // can take minutes); the pages checked so far still count.
            if round > 1 && i % STOP_CHECK_PAGES == 0 && output::stop_requested() {
                stopped = true;
                break;
            }
            checked += 1;
            if let Some(off) = first_wrong_byte(page, args.seed, i as u64, round_of[i]) {
                errors += 1;
                if bad.len() < MAX_BAD_REPORTED {
                    bad.push(i as u64);
                    offsets.push(off as u64);
                }
                if t.bad.len() < MAX_BAD_REPORTED {
                    t.bad.push(i as u64);
                    t.offsets.push(off as u64);
                }
                fill(page, args.seed, i as u64, round);
                round_of[i] = round;
            }
        }
        let (verify_ns, _) = verify.stop();
        t.verified += checked;
        t.errors += errors;
        if stopped {
            break;
        }
        let rewrite = Rate::start();
        let mut rewritten = 0u64;
        for (i, page) in buf.chunks_exact_mut(PAGE).enumerate() {
            if round_of[i] != round && mix(args.seed ^ mix(i as u64 ^ (round << 40))) < threshold {
                fill(page, args.seed, i as u64, round);
                round_of[i] = round;
                rewritten += 1;
            }
        }
        let (rewrite_ns, _) = rewrite.stop();
        emit(
            out,
            &line(
                "integrity_round",
                &[
                    ("round", Value::U(round)),
                    ("pages", Value::U(pages as u64)),
                    ("round_errors", Value::U(errors)),
                    ("bad_pages", Value::A(&bad)),
                    ("bad_offsets", Value::A(&offsets)),
                    ("rewritten", Value::U(rewritten)),
                    ("verify_ns", Value::U(verify_ns)),
                    ("rewrite_ns", Value::U(rewrite_ns)),
                    ("pages_verified", Value::U(t.verified)),
                    ("integrity_errors", Value::U(t.errors)),
                ],
            ),
        )?;
    }
    let (total_ns, _) = total.stop();
    emit(
        out,
        &line(
            "integrity_done",
            &[
                ("mb", Value::U(args.mb)),
                ("pages", Value::U(pages as u64)),
                ("rounds", Value::U(round)),
                ("pages_verified", Value::U(t.verified)),
                ("integrity_errors", Value::U(t.errors)),
                ("first_bad_pages", Value::A(&t.bad)),
                ("first_bad_offsets", Value::A(&t.offsets)),
                ("total_ns", Value::U(total_ns)),
                ("stopped", Value::B(stopped)),
            ],
        ),
    )?;
    if t.errors != 0 {
        return Err(GuestError::Integrity(format!(
            "{} of {} page checks found wrong contents (first bad pages {:?}, first wrong bytes at {:?})",
            t.errors, t.verified, t.bad, t.offsets
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<IntegrityArgs, GuestError> {
        IntegrityArgs::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    use crate::json::parse_lines as lines;

    #[test]
    fn parses_flags() {
        let a = args(&["--mb", "8"]).unwrap();
        assert_eq!(
            a,
            IntegrityArgs {
                mb: 8,
                rounds: 1,
                interval_ms: 0,
                rewrite: 0.25,
                seed: 1
            }
        );
        let a = args(&[
            "--mb=1",
            "--rounds",
            "0",
            "--interval-ms",
            "500",
            "--rewrite",
            "1",
        ])
        .unwrap();
        assert_eq!((a.rounds, a.interval_ms, a.rewrite), (0, 500, 1.0));
        for bad in [
            &[][..],
            &["--mb", "1", "--rewrite", "-0.1"],
            &["--mb", "1", "--rounds", "x"],
            &["--mb", "1", "--interval-ms", "99999999999"],
            &["--mb", "1", "--passes", "2"],
        ] {
            assert!(matches!(args(bad), Err(GuestError::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn streams_differ_by_page_round_and_seed_and_find_the_first_wrong_byte() {
        let mut page = vec![0u8; PAGE];
        fill(&mut page, 1, 5, 2);
        assert_eq!(first_wrong_byte(&page, 1, 5, 2), None);
        assert!(first_wrong_byte(&page, 1, 6, 2).is_some());
        assert!(first_wrong_byte(&page, 1, 5, 3).is_some());
        assert!(first_wrong_byte(&page, 2, 5, 2).is_some());
        // The whole page is covered, not just a word: zero bytes are rare.
        assert!(page.iter().filter(|&&b| b == 0).count() < 64);
        page[4095] ^= 0x10;
        assert_eq!(first_wrong_byte(&page, 1, 5, 2), Some(4095));
        page[1234] = page[1234].wrapping_add(1);
        assert_eq!(first_wrong_byte(&page, 1, 5, 2), Some(1234));
        assert_eq!(first_wrong_byte(&[0u8; PAGE], 1, 5, 2), Some(0));
    }

    #[test]
    fn clean_memory_verifies_with_no_errors() {
        let a = args(&["--mb", "8", "--rounds", "2"]).unwrap();
        let mut out = Vec::new();
        run(&a, &mut out).unwrap();
        let l = lines(&out);
        assert_eq!(l.len(), 4);
        assert_eq!(l[0]["kind"], "integrity_start");
        assert_eq!(l[0]["pages"], 2048);
        for (i, r) in l[1..3].iter().enumerate() {
            assert_eq!(r["kind"], "integrity_round");
            assert_eq!(r["round"], i + 1);
            assert_eq!(r["round_errors"], 0);
            assert_eq!(r["pages_verified"], 2048 * (i + 1));
            // About a quarter is rewritten (binomial, sd ≈ 20).
            let n = r["rewritten"].as_u64().unwrap();
            assert!((400..=620).contains(&n), "{n}");
        }
        let d = &l[3];
        assert_eq!(d["kind"], "integrity_done");
        assert_eq!(d["rounds"], 2);
        assert_eq!(d["pages_verified"], 4096);
        assert_eq!(d["integrity_errors"], 0);
        assert_eq!(d["stopped"], false);
    }

    #[test]
    fn damage_is_found_reported_once_and_fails_the_run() {
        let a = args(&["--mb", "1", "--rounds", "3"]).unwrap();
        let mut out = Vec::new();
        let err = run_with(&a, &mut out, &mut |round, mem| match round {
            1 => mem[7 * PAGE + 100] ^= 4,
            2 => {
                // Page 9 gets page 8's contents (a misplaced swap-in).
                let (a, b) = mem.split_at_mut(9 * PAGE);
                b[..PAGE].copy_from_slice(&a[8 * PAGE..]);
            }
            _ => {}
        })
        .unwrap_err();
        assert!(matches!(err, GuestError::Integrity(_)));
        let l = lines(&out);
        assert_eq!(l[1]["round_errors"], 1);
        assert_eq!(l[1]["bad_pages"], serde_json::json!([7]));
        assert_eq!(l[1]["bad_offsets"], serde_json::json!([100]));
        assert_eq!(l[2]["round_errors"], 1);
        assert_eq!(l[2]["bad_pages"], serde_json::json!([9]));
        assert_eq!(l[2]["bad_offsets"], serde_json::json!([0]));
        assert_eq!(l[3]["round_errors"], 0, "rewritten after being reported");
        let d = &l[4];
        assert_eq!(d["integrity_errors"], 2);
        assert_eq!(d["first_bad_pages"], serde_json::json!([7, 9]));
        assert_eq!(d["first_bad_offsets"], serde_json::json!([100, 0]));
    }
}

//! `swaplab-guest touch`: allocate memory and write every page, timing each pass.

use std::io::Write;
use std::time::Instant;

use super::json::{line, Value};
use super::GuestError;

/// Page size assumed for touching (x86-64 base pages).
pub const PAGE: usize = 4096;

/// Order in which pages are touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Page 0, 1, 2, ...
    Seq,
    /// A fixed pseudo-random permutation.
    Random,
}

/// Arguments of `touch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TouchArgs {
    /// MiB to allocate.
    pub mb: u64,
    /// Passes over the buffer.
    pub passes: u32,
    /// Page order.
    pub pattern: Pattern,
}

fn usage(msg: String) -> GuestError {
    GuestError::Usage(msg)
}

impl TouchArgs {
    /// Parse `--mb N [--passes P] [--pattern seq|random]`.
    pub fn parse(args: &[String]) -> Result<Self, GuestError> {
        let mut mb = None;
        let mut passes = 2;
        let mut pattern = Pattern::Seq;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| usage(format!("{name} needs a value")))
            };
            match name {
                "--mb" => {
                    let v = value()?;
                    let n: u64 = v
                        .parse()
                        .map_err(|_| usage(format!("--mb {v:?} is not a number")))?;
                    if n == 0 || n > (1 << 20) {
                        return Err(usage(format!("--mb {n} is out of range (1..=1048576)")));
                    }
                    mb = Some(n);
                }
                "--passes" => {
                    let v = value()?;
                    passes = v
                        .parse()
                        .map_err(|_| usage(format!("--passes {v:?} is not a number")))?;
                    if passes == 0 {
                        return Err(usage("--passes must be at least 1".into()));
                    }
                }
                "--pattern" => {
                    pattern = match value()?.as_str() {
                        "seq" => Pattern::Seq,
                        "random" => Pattern::Random,
                        other => {
                            return Err(usage(format!(
                                "--pattern {other:?} (expected seq or random)"
                            )))
                        }
                    };
                }
                other => return Err(usage(format!("touch: unknown flag {other:?}"))),
            }
        }
        let mb = mb.ok_or_else(|| usage("touch needs --mb N".into()))?;
        Ok(TouchArgs {
            mb,
            passes,
            pattern,
        })
    }
}

/// A deterministic permutation of `0..n` (Fisher-Yates with xorshift64).
pub fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Allocate, touch, and report one JSON line per pass plus a summary.
pub fn run(args: &TouchArgs, out: &mut dyn Write) -> Result<(), GuestError> {
    let bytes = usize::try_from(args.mb << 20).map_err(|_| usage("--mb too large".into()))?;
    let pages = bytes / PAGE;
    // A zeroed allocation this large comes straight from mmap: no page is
    // touched until the first pass writes it.
    let mut buf = vec![0u8; bytes];
    let order = match args.pattern {
        Pattern::Seq => None,
        Pattern::Random => Some(permutation(pages, 0x5eed)),
    };
    let total = Instant::now();
    for pass in 1..=args.passes {
        let start = Instant::now();
        let stamp = pass as u8;
        match &order {
            None => buf
                .iter_mut()
                .step_by(PAGE)
                .for_each(|b| *b = b.wrapping_add(stamp)),
            Some(order) => order.iter().for_each(|&p| {
                let b = &mut buf[p as usize * PAGE];
                *b = b.wrapping_add(stamp);
            }),
        }
        std::hint::black_box(&mut buf);
        let ns = start.elapsed().as_nanos() as u64;
        let l = line(
            "touch",
            &[
                ("pass", Value::U(u64::from(pass))),
                ("pages", Value::U(pages as u64)),
                ("wall_ns", Value::U(ns)),
                ("ns_per_page", Value::F(ns as f64 / pages.max(1) as f64)),
            ],
        );
        writeln!(out, "{l}").map_err(GuestError::io("writing"))?;
    }
    // Every page's first byte is the sum of all pass stamps: check it, so the
    // writes cannot be optimized away and memory corruption shows up.
    let expected = (1..=args.passes).fold(0u8, |a, p| a.wrapping_add(p as u8));
    let bad = buf.iter().step_by(PAGE).filter(|&&b| b != expected).count();
    let l = line(
        "touch_done",
        &[
            ("mb", Value::U(args.mb)),
            ("pages", Value::U(pages as u64)),
            ("passes", Value::U(u64::from(args.passes))),
            ("total_ns", Value::U(total.elapsed().as_nanos() as u64)),
            ("bad_pages", Value::U(bad as u64)),
        ],
    );
    writeln!(out, "{l}").map_err(GuestError::io("writing"))?;
    if bad != 0 {
        return Err(GuestError::Io {
            what: format!("{bad} pages lost their contents"),
            error: std::io::Error::from(std::io::ErrorKind::InvalidData),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<TouchArgs, GuestError> {
        TouchArgs::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_flags() {
        assert_eq!(
            args(&["--mb", "16"]).unwrap(),
            TouchArgs {
                mb: 16,
                passes: 2,
                pattern: Pattern::Seq
            }
        );
        let a = args(&["--mb=4", "--passes", "3", "--pattern=random"]).unwrap();
        assert_eq!((a.mb, a.passes, a.pattern), (4, 3, Pattern::Random));
        for bad in [
            &[][..],
            &["--mb"],
            &["--mb", "0"],
            &["--mb", "x"],
            &["--mb", "1", "--passes", "0"],
            &["--mb", "1", "--pattern", "zipf"],
            &["--nope"],
        ] {
            assert!(matches!(args(bad), Err(GuestError::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = permutation(1000, 1);
        assert_ne!(p[..10], (0..10).collect::<Vec<u32>>()[..]);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }

    #[test]
    fn touches_every_page_each_pass() {
        for pattern in [Pattern::Seq, Pattern::Random] {
            let mut out = Vec::new();
            run(
                &TouchArgs {
                    mb: 2,
                    passes: 3,
                    pattern,
                },
                &mut out,
            )
            .unwrap();
            let text = String::from_utf8(out).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 4);
            assert_eq!(lines[0]["kind"], "touch");
            assert_eq!(lines[2]["pass"], 3);
            assert_eq!(lines[0]["pages"], 512);
            assert_eq!(lines[3]["kind"], "touch_done");
            assert_eq!(lines[3]["bad_pages"], 0);
        }
    }
}

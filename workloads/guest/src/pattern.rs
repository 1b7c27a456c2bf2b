//! Access patterns: which test page the probe touches next, generated on the host.
//!
//! Every pattern is deterministic for a given seed. A *pass* is one unit of reporting
//! (one latency histogram); [`AccessPlan`] hands out a pass's page indices in chunks.
//!
//! | pattern | one pass | pages touched per pass |
//! |---|---|---|
//! | `seq` | pages `0, 1, …, N-1` in order | all |
//! | `random` | a fresh uniformly random permutation of all pages | all, once each |
//! | `zipf[:S]` | `N` draws from Zipf(N, S) over ranks; rank → page through a random permutation fixed for the run, so hot pages are scattered and stay hot across passes. Default `S` = 0.99 (YCSB's default); larger is more skewed | the hot ones |
//! | `hotcold[:H:P]` | the first pass loads: every page once, in random order. Each later pass is `N` draws: with probability `P`% a uniformly random page of the hot set, else of the rest. The hot set is `H`% of the pages (at least one), scattered through a random permutation fixed for the run, so it stays the same across passes. Default 20:80 (the Pareto split) | all in the first pass; then the hot ones, and some of the cold |
//! | `phase[:K]` | test RAM is split into `K` equal windows (default 4). The pass visits the windows in turn, starting at window `pass mod K`; in each window it makes [`PHASE_ROUNDS`] rounds, each a fresh random permutation of the window. So the hot set (one window) moves within a pass, and the order moves between passes | all, [`PHASE_ROUNDS`] times each |

use std::fmt;
use std::str::FromStr;

use super::rng::SplitMix64;
use super::zipf::Zipf;

/// Default Zipf exponent.
pub const DEFAULT_ZIPF_SKEW: f64 = 0.99;
/// Default number of `phase` windows.
pub const DEFAULT_PHASE_WINDOWS: u32 = 4;
/// Rounds over each window in a `phase` pass.
pub const PHASE_ROUNDS: u32 = 4;
/// Largest accepted Zipf exponent.
pub const MAX_ZIPF_SKEW: f64 = 100.0;
/// Default `hotcold` split: 20% of the pages take 80% of the accesses.
pub const DEFAULT_HOTCOLD: (u8, u8) = (20, 80);
/// Largest accepted number of `phase` windows.
pub const MAX_PHASE_WINDOWS: u32 = 1 << 20;

/// Why a pattern string or plan was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternError {
    /// Not one of the known names.
    Unknown(String),
    /// The zipf skew is not a number in range.
    Skew(String),
    /// The phase window count is not an integer in range.
    Windows(String),
    /// The hotcold split is not two percentages from 1 to 99.
    HotCold(String),
    /// The pattern takes no parameter.
    Parameter(String),
    /// No pages, or more than page indices can address.
    Pages(u64),
    /// More windows than pages.
    TooManyWindows {
        /// Windows asked for.
        windows: u32,
        /// Pages available.
        pages: u64,
    },
}

// By hand rather than with thiserror: this crate depends on std and libc only
// (see Cargo.toml).
impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(s) => write!(
                f,
                "unknown pattern '{s}' (expected seq, random, zipf[:SKEW], hotcold[:H:P] or phase[:WINDOWS])"
            ),
            Self::Skew(s) => write!(
                f,
                "bad zipf skew '{s}': expected a number greater than 0 and at most 100, e.g. zipf:0.99"
            ),
            Self::Windows(s) => write!(
                f,
                "bad phase window count '{s}': expected an integer from 1 to 1048576, e.g. phase:4"
            ),
            Self::HotCold(s) => write!(
                f,
                "bad hotcold split '{s}': expected H:P, two whole percentages from 1 to 99 (H% of the pages take P% of the accesses), e.g. hotcold:20:80"
            ),
            Self::Parameter(s) => write!(f, "pattern '{s}' takes no parameter"),
            Self::Pages(n) => write!(f, "an access plan needs 1 to 2^32-1 pages, got {n}"),
            Self::TooManyWindows { windows, pages } => write!(
                f,
                "phase:{windows} needs at least {windows} pages, test RAM has {pages}"
            ),
        }
    }
}

impl std::error::Error for PatternError {}

/// An access pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Sequential.
    Seq,
    /// A random permutation each pass.
    Random,
    /// Zipfian hot/cold with exponent `skew`.
    Zipf {
        /// The exponent (> 0).
        skew: f64,
    },
    /// A fixed hot set of `hot_pct`% of the pages taking `access_pct`% of
    /// the accesses, the rest spread uniformly over the cold pages.
    HotCold {
        /// Share of the pages that are hot, percent (1..=99).
        hot_pct: u8,
        /// Share of the accesses that go to them, percent (1..=99).
        access_pct: u8,
    },
    /// A hot window that moves.
    Phase {
        /// Number of windows.
        windows: u32,
    },
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (name, param) = match t.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (t, None),
        };
        match (name.to_ascii_lowercase().as_str(), param) {
            ("seq" | "sequential", None) => Ok(Self::Seq),
            ("random" | "uniform", None) => Ok(Self::Random),
            ("seq" | "sequential" | "random" | "uniform", Some(_)) => {
                Err(PatternError::Parameter(name.to_string()))
            }
            ("zipf", None) => Ok(Self::Zipf {
                skew: DEFAULT_ZIPF_SKEW,
            }),
            ("zipf", Some(p)) => match p.trim().parse::<f64>() {
                Ok(skew) if skew > 0.0 && skew <= MAX_ZIPF_SKEW => Ok(Self::Zipf { skew }),
                _ => Err(PatternError::Skew(p.to_string())),
            },
            ("hotcold", None) => Ok(Self::HotCold {
                hot_pct: DEFAULT_HOTCOLD.0,
                access_pct: DEFAULT_HOTCOLD.1,
            }),
            ("hotcold", Some(p)) => {
                let pct = |v: &str| v.trim().parse::<u8>().ok().filter(|v| (1..=99).contains(v));
                match p.split_once(':').map(|(h, a)| (pct(h), pct(a))) {
                    Some((Some(hot_pct), Some(access_pct))) => Ok(Self::HotCold {
                        hot_pct,
                        access_pct,
                    }),
                    _ => Err(PatternError::HotCold(p.to_string())),
                }
            }
            ("phase", None) => Ok(Self::Phase {
                windows: DEFAULT_PHASE_WINDOWS,
            }),
            ("phase", Some(p)) => match p.trim().parse::<u32>() {
                Ok(w) if (1..=MAX_PHASE_WINDOWS).contains(&w) => Ok(Self::Phase { windows: w }),
                _ => Err(PatternError::Windows(p.to_string())),
            },
            _ => Err(PatternError::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Seq => write!(f, "seq"),
            Self::Random => write!(f, "random"),
            Self::Zipf { skew } => write!(f, "zipf:{skew}"),
            Self::HotCold {
                hot_pct,
                access_pct,
            } => write!(f, "hotcold:{hot_pct}:{access_pct}"),
            Self::Phase { windows } => write!(f, "phase:{windows}"),
        }
    }
}

/// Per-pattern generator state.
#[derive(Debug, Clone)]
enum State {
    /// Next page index.
    Seq { next: u32 },
    /// `order` is this pass's permutation, `pos` the next position in it.
    Random { order: Vec<u32>, pos: usize },
    /// `rank_to_page` is fixed for the run; `left` draws remain in the pass.
    Zipf {
        sampler: Zipf,
        rank_to_page: Vec<u32>,
        left: u64,
    },
    /// The first `hot` pages of `pages` (a permutation fixed for the run)
    /// are hot; `left` draws remain in the pass. In the first pass `load`
    /// holds a permutation of every page, handed out from `pos`.
    HotCold {
        pages: Vec<u32>,
        hot: u32,
        access_pct: u8,
        left: u64,
        load: Vec<u32>,
        pos: usize,
    },
    /// `order` holds the current window's permutation.
    Phase {
        windows: u32,
        /// Windows done in this pass (0..windows).
        step: u32,
        round: u32,
        first_window: u32,
        order: Vec<u32>,
        pos: usize,
    },
}

/// Generates the page indices of each pass.
#[derive(Debug, Clone)]
pub struct AccessPlan {
    pattern: Pattern,
    pages: u32,
    rng: SplitMix64,
    state: State,
    done: bool,
}

impl AccessPlan {
    /// A plan over `pages` test pages. Call [`AccessPlan::start_pass`] before each pass.
    pub fn new(pattern: Pattern, pages: u64, seed: u64) -> Result<Self, PatternError> {
        let n = u32::try_from(pages)
            .ok()
            .filter(|&n| n > 0)
            .ok_or(PatternError::Pages(pages))?;
        let mut rng = SplitMix64::new(seed);
        let state = match pattern {
            Pattern::Seq => State::Seq { next: 0 },
            Pattern::Random => State::Random {
                order: (0..n).collect(),
                pos: 0,
            },
            Pattern::Zipf { skew } => {
                let mut rank_to_page: Vec<u32> = (0..n).collect();
                rng.shuffle(&mut rank_to_page);
                State::Zipf {
                    sampler: Zipf::new(n.into(), skew),
                    rank_to_page,
                    left: 0,
                }
            }
            Pattern::HotCold {
                hot_pct,
                access_pct,
            } => {
                let mut pages: Vec<u32> = (0..n).collect();
                rng.shuffle(&mut pages);
                let hot = (u64::from(n) * u64::from(hot_pct) / 100).max(1) as u32;
                State::HotCold {
                    pages,
                    hot: hot.min(n),
                    access_pct,
                    left: 0,
                    load: Vec::new(),
                    pos: 0,
                }
            }
            Pattern::Phase { windows } => {
                if u64::from(windows) > pages {
                    return Err(PatternError::TooManyWindows { windows, pages });
                }
                State::Phase {
                    windows,
                    step: 0,
                    round: 0,
                    first_window: 0,
                    order: Vec::new(),
                    pos: 0,
                }
            }
        };
        Ok(Self {
            pattern,
            pages: n,
            rng,
            state,
            done: true,
        })
    }

    /// The pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Number of test pages.
    pub fn pages(&self) -> u64 {
        self.pages.into()
    }

    /// Accesses in one pass.
    pub fn accesses_per_pass(&self) -> u64 {
        match self.pattern {
            Pattern::Phase { .. } => u64::from(self.pages) * u64::from(PHASE_ROUNDS),
            _ => self.pages.into(),
        }
    }

    /// The pages of window `w` of `windows` (equal split, the last windows one page
    /// shorter when `pages` does not divide evenly).
    fn window(pages: u32, windows: u32, w: u32) -> std::ops::Range<u32> {
        let at = |i: u32| (u64::from(pages) * u64::from(i) / u64::from(windows)) as u32;
        at(w)..at(w + 1)
    }

    /// Begin pass `pass` (0-based).
    pub fn start_pass(&mut self, pass: u32) {
        self.done = false;
        let pages = self.pages;
        match &mut self.state {
            State::Seq { next } => *next = 0,
            State::Random { order, pos } => {
                self.rng.shuffle(order);
                *pos = 0;
            }
            State::Zipf { left, .. } => *left = pages.into(),
            State::HotCold {
                left, load, pos, ..
            } => {
                *left = pages.into();
                *pos = 0;
                load.clear();
                if pass == 0 {
                    load.extend(0..pages);
                    self.rng.shuffle(load);
                }
            }
            State::Phase {
                windows,
                step,
                round,
                first_window,
                order,
                pos,
            } => {
                *step = 0;
                *round = 0;
                *first_window = pass % *windows;
                order.clear();
                order.extend(Self::window(pages, *windows, *first_window));
                self.rng.shuffle(order);
                *pos = 0;
            }
        }
    }

    /// Fill `out` with the next page indices of the current pass; returns how many.
    /// 0 means the pass is over.
    pub fn fill(&mut self, out: &mut [u32]) -> usize {
        if self.done {
            return 0;
        }
        let pages = self.pages;
        let n = match &mut self.state {
            State::Seq { next } => {
                let n = out.len().min((pages - *next) as usize);
                for (slot, page) in out.iter_mut().zip(*next..) {
                    *slot = page;
                }
                *next += n as u32;
                n
            }
            State::Random { order, pos } => {
                let n = out.len().min(order.len() - *pos);
                out[..n].copy_from_slice(&order[*pos..*pos + n]);
                *pos += n;
                n
            }
            State::Zipf {
                sampler,
                rank_to_page,
                left,
            } => {
                let n = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                for slot in &mut out[..n] {
                    let rank = sampler.sample(&mut self.rng);
                    *slot = rank_to_page[(rank - 1) as usize];
                }
                *left -= n as u64;
                n
            }
            State::HotCold { load, pos, .. } if !load.is_empty() => {
                let n = out.len().min(load.len() - *pos);
                out[..n].copy_from_slice(&load[*pos..*pos + n]);
                *pos += n;
                n
            }
            State::HotCold {
                pages: order,
                hot,
                access_pct,
                left,
                ..
            } => {
                let n = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let (hot, all) = (u64::from(*hot), order.len() as u64);
                for slot in &mut out[..n] {
                    let i = if self.rng.below(100) < u64::from(*access_pct) || hot == all {
                        self.rng.below(hot)
                    } else {
                        hot + self.rng.below(all - hot)
                    };
                    *slot = order[i as usize];
                }
                *left -= n as u64;
                n
            }
            State::Phase {
                windows,
                step,
                round,
                first_window,
                order,
                pos,
            } => {
                let mut n = 0;
                while n < out.len() && *step < *windows {
                    let take = (out.len() - n).min(order.len() - *pos);
                    out[n..n + take].copy_from_slice(&order[*pos..*pos + take]);
                    n += take;
                    *pos += take;
                    if *pos == order.len() {
                        // Next round over this window, or the next window.
                        *pos = 0;
                        *round += 1;
                        if *round == PHASE_ROUNDS {
                            *round = 0;
                            *step += 1;
                            if *step < *windows {
                                let w = (*first_window + *step) % *windows;
                                order.clear();
                                order.extend(Self::window(pages, *windows, w));
                            }
                        }
                        if *step < *windows {
                            self.rng.shuffle(order);
                        }
                    }
                }
                n
            }
        };
        if n == 0 {
            self.done = true;
        }
        n
    }

    /// All page indices of pass `pass` (convenience for tests and small runs).
    pub fn pass_indices(&mut self, pass: u32) -> Vec<u32> {
        self.start_pass(pass);
        let mut all = Vec::with_capacity(self.accesses_per_pass() as usize);
        let mut buf = vec![0u32; 4096];
        loop {
            let n = self.fill(&mut buf);
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_permutation(v: &[u32], n: u32) -> bool {
        let mut s = v.to_vec();
        s.sort_unstable();
        s == (0..n).collect::<Vec<_>>()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!("seq".parse::<Pattern>().unwrap(), Pattern::Seq);
        assert_eq!("RANDOM".parse::<Pattern>().unwrap(), Pattern::Random);
        assert_eq!(
            "zipf".parse::<Pattern>().unwrap(),
            Pattern::Zipf { skew: 0.99 }
        );
        assert_eq!(
            "zipf:1.2".parse::<Pattern>().unwrap(),
            Pattern::Zipf { skew: 1.2 }
        );
        assert_eq!(
            "phase".parse::<Pattern>().unwrap(),
            Pattern::Phase { windows: 4 }
        );
        assert_eq!(
            "phase:8".parse::<Pattern>().unwrap(),
            Pattern::Phase { windows: 8 }
        );
        assert_eq!(
            "hotcold".parse::<Pattern>().unwrap(),
            Pattern::HotCold {
                hot_pct: 20,
                access_pct: 80
            }
        );
        assert_eq!(
            "hotcold:10:90".parse::<Pattern>().unwrap(),
            Pattern::HotCold {
                hot_pct: 10,
                access_pct: 90
            }
        );
        for p in ["seq", "random", "zipf:0.99", "hotcold:20:80", "phase:4"] {
            assert_eq!(p.parse::<Pattern>().unwrap().to_string(), p);
        }
    }

    #[test]
    fn rejects_bad_patterns_with_a_reason() {
        let err = |s: &str| s.parse::<Pattern>().unwrap_err();
        assert!(matches!(err("bogus"), PatternError::Unknown(_)));
        for bad in [
            "hotcold:0:80",
            "hotcold:20",
            "hotcold:20:100",
            "hotcold:x:y",
            "hotcold:20:80:1",
        ] {
            assert!(matches!(err(bad), PatternError::HotCold(_)), "{bad}");
        }
        assert!(err("bogus").to_string().contains("'bogus'"));
        for s in [
            "zipf:0", "zipf:-1", "zipf:abc", "zipf:", "zipf:NaN", "zipf:inf", "zipf:101",
        ] {
            assert!(matches!(err(s), PatternError::Skew(_)), "{s}");
        }
        for s in ["phase:0", "phase:x", "phase:-2"] {
            assert!(matches!(err(s), PatternError::Windows(_)), "{s}");
        }
        assert!(matches!(err("seq:3"), PatternError::Parameter(_)));
        assert!(matches!(
            AccessPlan::new(Pattern::Seq, 0, 1),
            Err(PatternError::Pages(0))
        ));
        assert!(matches!(
            AccessPlan::new(Pattern::Phase { windows: 8 }, 4, 1),
            Err(PatternError::TooManyWindows { .. })
        ));
    }

    #[test]
    fn seq_is_in_order_every_pass() {
        let mut p = AccessPlan::new(Pattern::Seq, 10_000, 1).unwrap();
        for pass in 0..2 {
            assert_eq!(p.pass_indices(pass), (0..10_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn random_is_a_fresh_permutation_each_pass() {
        let mut p = AccessPlan::new(Pattern::Random, 5000, 9).unwrap();
        let a = p.pass_indices(0);
        let b = p.pass_indices(1);
        assert!(is_permutation(&a, 5000));
        assert!(is_permutation(&b, 5000));
        assert_ne!(a, b);
        assert_ne!(a, (0..5000).collect::<Vec<_>>());
        // Same seed, same run.
        let mut q = AccessPlan::new(Pattern::Random, 5000, 9).unwrap();
        assert_eq!(q.pass_indices(0), a);
    }

    #[test]
    fn chunks_never_cross_passes() {
        let mut p = AccessPlan::new(Pattern::Random, 1000, 2).unwrap();
        p.start_pass(0);
        let mut buf = [0u32; 300];
        let sizes: Vec<usize> = std::iter::from_fn(|| Some(p.fill(&mut buf)))
            .take_while(|&n| n > 0)
            .collect();
        assert_eq!(sizes, vec![300, 300, 300, 100]);
        assert_eq!(p.fill(&mut buf), 0, "stays over until the next start_pass");
    }

    #[test]
    fn hotcold_puts_its_share_on_a_fixed_scattered_hot_set() {
        let pages = 10_000u64;
        let hc = Pattern::HotCold {
            hot_pct: 20,
            access_pct: 80,
        };
        let mut p = AccessPlan::new(hc, pages, 7).unwrap();
        assert_eq!(p.accesses_per_pass(), pages);
        // The first pass loads every page once.
        let mut load = p.pass_indices(0);
        load.sort_unstable();
        assert_eq!(load, (0..pages as u32).collect::<Vec<_>>());
        // Ranked by use over ten passes, the 2,000 most used pages take
        // about 80% of the next pass's accesses.
        let mut ranked = vec![0u32; pages as usize];
        for pass in 1..11 {
            for i in p.pass_indices(pass) {
                ranked[i as usize] += 1;
            }
        }
        let mut by_use: Vec<usize> = (0..pages as usize).collect();
        by_use.sort_by_key(|&i| std::cmp::Reverse(ranked[i]));
        let mut next = vec![0u32; pages as usize];
        for i in p.pass_indices(11) {
            next[i as usize] += 1;
        }
        let hot: u32 = by_use[..2_000].iter().map(|&i| next[i]).sum();
        let share = f64::from(hot) / pages as f64;
        assert!((0.77..0.83).contains(&share), "{share}");
        assert!(by_use[..2_000].iter().any(|&i| i >= 2_000), "scattered");
        // One page: every access is to it.
        let mut one = AccessPlan::new(hc, 1, 1).unwrap();
        assert_eq!(one.pass_indices(0), vec![0]);
    }

    #[test]
    fn zipf_is_skewed_and_stable_across_passes() {
        let pages = 10_000;
        let mut p = AccessPlan::new(Pattern::Zipf { skew: 0.99 }, pages, 5).unwrap();
        assert_eq!(p.accesses_per_pass(), pages);
        let count = |v: &[u32]| {
            let mut c = vec![0u32; pages as usize];
            for &i in v {
                c[i as usize] += 1;
            }
            c
        };
        let c0 = count(&p.pass_indices(0));
        let c1 = count(&p.pass_indices(1));
        let hottest = (0..pages as usize).max_by_key(|&i| c0[i]).unwrap();
        // Rank 1 gets ~1/H(10000, 0.99) ≈ 10% of the draws; the same page both passes.
        assert!(c0[hottest] > 500, "{}", c0[hottest]);
        assert!(c1[hottest] > 500, "{}", c1[hottest]);
        let distinct = c0.iter().filter(|&&c| c > 0).count();
        assert!(distinct < pages as usize * 3 / 4, "{distinct}");
        // Hot pages are scattered, not the first indices.
        assert_ne!(hottest, 0);
    }

    #[test]
    fn phase_sweeps_windows_in_rounds_and_rotates() {
        let pages = 1000u32;
        let mut p = AccessPlan::new(Pattern::Phase { windows: 4 }, pages.into(), 3).unwrap();
        assert_eq!(p.accesses_per_pass(), 4000);
        for pass in 0..5u32 {
            let v = p.pass_indices(pass);
            assert_eq!(v.len(), 4000);
            for (step, phase) in v.chunks(1000).enumerate() {
                let w = (pass + step as u32) % 4;
                let window = AccessPlan::window(pages, 4, w);
                for round in phase.chunks(250) {
                    let shifted: Vec<u32> = round.iter().map(|i| i - window.start).collect();
                    assert!(is_permutation(&shifted, 250), "pass {pass} step {step}");
                }
            }
        }
        // Uneven split still covers every page exactly once per round.
        let mut q = AccessPlan::new(Pattern::Phase { windows: 3 }, 10, 1).unwrap();
        let v = q.pass_indices(0);
        assert_eq!(v.len(), 40);
        let mut once: Vec<u32> = v.clone();
        once.sort_unstable();
        once.dedup();
        assert_eq!(once, (0..10).collect::<Vec<_>>());
    }
}

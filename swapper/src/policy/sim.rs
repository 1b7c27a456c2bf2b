//! Fault-count simulation of the policies under the swapper's mechanics
//! (mapped pages are invisible, staged pages take minor faults, evicted pages
//! take major faults).

use super::*;

#[derive(Clone, Copy, PartialEq)]
enum S {
    Out,
    Mapped,
    Staged,
}

struct Outcome {
    major: u64,
    minor: u64,
}

fn simulate(kind: PolicyKind, pages: usize, limit: usize, accesses: &[u32]) -> Outcome {
    let mut policy = new_policy(
        kind,
        PolicyParams {
            num_pages: pages,
            inactive_target: limit / 8,
            seed: 1,
        },
    );
    let mut state = vec![S::Out; pages];
    let mut used = 0usize;
    let (mut major, mut minor) = (0, 0);
    for &p in accesses {
        match state[p as usize] {
            S::Mapped => {}
            S::Staged => {
                minor += 1;
                state[p as usize] = S::Mapped;
                policy.reactivated(p);
            }
            S::Out => {
                major += 1;
                while used >= limit {
                    match policy.select(false).expect("something to evict") {
                        Victim::Evict(v) => {
                            state[v as usize] = S::Out;
                            used -= 1;
                        }
                        Victim::Deactivate(v) => {
                            state[v as usize] = S::Staged;
                            policy.staged(v);
                        }
                    }
                }
                state[p as usize] = S::Mapped;
                policy.mapped(p);
                used += 1;
            }
        }
    }
    Outcome { major, minor }
}

fn skewed(pages: usize, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let hot = pages / 10;
    (0..n)
        .map(|_| {
            if rng.below(10) < 9 {
                rng.below(hot as u64) as u32
            } else {
                (hot as u64 + rng.below((pages - hot) as u64)) as u32
            }
        })
        .collect()
}

#[test]
fn clock_beats_fifo_on_90_10() {
    let pages = 8192;
    let limit = 2048;
    let acc = skewed(pages, 400_000, 3);
    let fifo = simulate(PolicyKind::Fifo, pages, limit, &acc);
    let clock = simulate(PolicyKind::Clock, pages, limit, &acc);
    let random = simulate(PolicyKind::Random, pages, limit, &acc);
    let clock_total = clock.major + clock.minor;
    eprintln!(
        "fifo {} random {} clock {} (major {} minor {}), ratio {:.2}",
        fifo.major,
        random.major,
        clock_total,
        clock.major,
        clock.minor,
        clock_total as f64 / fifo.major as f64
    );
    assert_eq!(fifo.minor, 0);
    assert!(clock.major < fifo.major);
    assert!(clock_total < fifo.major);
}

#[test]
fn all_policies_equal_without_pressure() {
    let acc = skewed(1000, 10_000, 4);
    for kind in [PolicyKind::Fifo, PolicyKind::Random, PolicyKind::Clock] {
        let o = simulate(kind, 1000, 1000, &acc);
        let distinct = {
            let mut v = acc.clone();
            v.sort_unstable();
            v.dedup();
            v.len() as u64
        };
        assert_eq!(o.major, distinct, "{kind:?}");
        assert_eq!(o.minor, 0);
    }
}

fn hotcold(pages: usize, passes: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut perm: Vec<u32> = (0..pages as u32).collect();
    for i in (1..pages).rev() {
        perm.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let hot = pages / 5;
    let mut out: Vec<u32> = perm.clone();
    for i in (1..pages).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for _ in 1..passes {
        for _ in 0..pages {
            let i = if rng.below(100) < 80 {
                rng.below(hot as u64) as usize
            } else {
                hot + rng.below((pages - hot) as u64) as usize
            };
            out.push(perm[i]);
        }
    }
    out
}

/// Major faults (store swap-ins) in passes `from..to` of `acc` (`pages`
/// accesses a pass), and the minor faults beside them.
fn window(kind: PolicyKind, pages: usize, acc: &[u32], from: usize, to: usize) -> (u64, u64) {
    let limit = pages / 2;
    let a = simulate(kind, pages, limit, &acc[..from * pages]);
    let b = simulate(kind, pages, limit, &acc[..to * pages]);
    (b.major - a.major, b.minor - a.minor)
}

/// The bench's policy comparison (`bench host-swap`: hotcold 20:80 at half
/// the working set, 20 passes, the second half measured): the clock needs
/// more than a revolution of its hand to learn the hot set, so the passes
/// right after the load are a warm-up in which it is well short of its
/// steady state.
#[test]
fn clock_beats_fifo_on_hotcold_20_80_once_warm() {
    let pages = 16384;
    let acc = hotcold(pages, 20, 7);
    let ratio = |from, to| {
        let (f, fm) = window(PolicyKind::Fifo, pages, &acc, from, to);
        let (c, cm) = window(PolicyKind::Clock, pages, &acc, from, to);
        assert_eq!(fm, 0);
        (c as f64 / f as f64, (c + cm) as f64 / f as f64)
    };
    let (warm, _) = ratio(2, 10);
    let (steady, with_minor) = ratio(10, 20);
    eprintln!("hotcold clock / fifo: warm-up {warm:.3}, steady {steady:.3} ({with_minor:.3} with minor faults)");
    assert!(steady <= 0.7, "steady state {steady:.3}");
    assert!(with_minor < 1.0, "with minor faults {with_minor:.3}");
    assert!(warm > steady, "warm-up {warm:.3} vs steady {steady:.3}");
}

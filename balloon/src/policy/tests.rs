//! The balloon policies, without a VM.

use super::*;

const GIB: u64 = 1 << 30;

fn stats(t_ns: u64, available: u64, swap: u64) -> GuestStats {
    GuestStats {
        t_ns,
        available_memory: Some(available),
        swap_in: Some(swap / 2),
        swap_out: Some(swap - swap / 2),
        ..Default::default()
    }
}

fn obs(resident: u64, target: u64, s: GuestStats) -> Observation {
    Observation {
        host_resident_bytes: resident,
        guest_ram_bytes: 2 * GIB,
        target_bytes: target,
        actual_bytes: target,
        guest: Some(s),
    }
}

fn cfg() -> AutoConfig {
    // L = 1 GiB: margin 64 MiB -> high 960 MiB, low 896 MiB.
    AutoConfig::new(GIB)
}

#[test]
fn manual_returns_the_user_target_once() {
    let mut p = ManualPolicy::new();
    assert_eq!(p.step(&Observation::default()), None);
    p.set_target(100 * MIB + 5);
    assert_eq!(p.step(&Observation::default()), Some(100 * MIB));
    assert_eq!(p.step(&Observation::default()), None);
    assert_eq!(p.last_decision().unwrap().reason, Reason::Manual);
    p.set_target(0);
    // Already there: nothing to do.
    assert_eq!(p.step(&Observation::default()), None);
    assert_eq!(p.name(), "manual");
}

#[test]
fn auto_holds_without_statistics_and_on_stale_samples() {
    let mut p = AutoPolicy::new(cfg());
    let mut o = obs(2 * GIB, 0, stats(1, GIB, 0));
    o.guest = None;
    assert_eq!(p.step(&o), None, "no stats: cannot tell how far is safe");
    let o = obs(2 * GIB, 0, stats(1, GIB, 0));
    assert_eq!(p.step(&o), Some(64 * MIB));
    // Same sample again: the effect of the last decision is not visible yet.
    let o = obs(2 * GIB, 64 * MIB, stats(1, GIB, 0));
    assert_eq!(p.step(&o), None);
    let o = obs(2 * GIB, 64 * MIB, stats(2, GIB, 0));
    assert_eq!(p.step(&o), Some(128 * MIB));
    assert_eq!(p.last_decision().unwrap().reason, Reason::HostPressure);
}

#[test]
fn auto_inflates_by_the_excess_at_most_one_step() {
    let mut p = AutoPolicy::new(cfg());
    // 10 MiB above L - m: grow by exactly that.
    assert_eq!(p.step(&obs(970 * MIB, 0, stats(1, GIB, 0))), Some(10 * MIB));
    // Far above: one step.
    assert_eq!(
        p.step(&obs(3 * GIB, 10 * MIB, stats(2, GIB, 0))),
        Some(74 * MIB)
    );
}

#[test]
fn auto_inflate_keeps_the_guest_above_its_floors() {
    let mut p = AutoPolicy::new(cfg());
    // Available 80 MiB, floor 64 MiB: at most 16 MiB more.
    assert_eq!(
        p.step(&obs(2 * GIB, 0, stats(1, 80 * MIB, 0))),
        Some(16 * MIB)
    );
    // At the floor exactly: no growth.
    assert_eq!(p.step(&obs(2 * GIB, 16 * MIB, stats(2, 64 * MIB, 0))), None);
    // Guest RAM 2 GiB, keeps 128 MiB: the target never exceeds 1920 MiB.
    let mut p = AutoPolicy::new(cfg());
    assert_eq!(
        p.step(&obs(3 * GIB, 1900 * MIB, stats(1, GIB, 0))),
        Some(1920 * MIB)
    );
    assert_eq!(p.step(&obs(3 * GIB, 1920 * MIB, stats(2, GIB, 0))), None);
}

#[test]
fn auto_deflates_when_the_guest_swaps_and_then_cools_down() {
    let mut p = AutoPolicy::new(cfg());
    let t = 512 * MIB;
    // First sample: no rate yet; host pressure inflates.
    assert_eq!(
        p.step(&obs(2 * GIB, t, stats(1_000_000_000, GIB, 0))),
        Some(t + 64 * MIB)
    );
    let t = t + 64 * MIB;
    // The guest swapped 4 MiB in the last second: deflate by a quarter step.
    assert_eq!(
        p.step(&obs(2 * GIB, t, stats(2_000_000_000, GIB, 4 * MIB))),
        Some(t - 16 * MIB)
    );
    assert_eq!(p.last_decision().unwrap().reason, Reason::GuestPressure);
    let t = t - 16 * MIB;
    // Swapping stopped, host still over the limit: no inflating for 3 samples.
    for i in 3..6 {
        let o = obs(2 * GIB, t, stats(i * 1_000_000_000, GIB, 4 * MIB));
        assert_eq!(p.step(&o), None, "sample {i}");
    }
    let o = obs(2 * GIB, t, stats(6_000_000_000, GIB, 4 * MIB));
    assert_eq!(p.step(&o), Some(t + 64 * MIB));
}

#[test]
fn auto_deflates_by_the_available_memory_deficit() {
    let mut p = AutoPolicy::new(cfg());
    // 40 MiB short of the 64 MiB floor.
    assert_eq!(
        p.step(&obs(GIB, 300 * MIB, stats(1, 24 * MIB, 0))),
        Some(260 * MIB)
    );
    // Short by less than a quarter step: a quarter step.
    assert_eq!(
        p.step(&obs(GIB, 260 * MIB, stats(2, 60 * MIB, 0))),
        Some(244 * MIB)
    );
    // Nothing left to give back.
    assert_eq!(p.step(&obs(GIB, 0, stats(3, 0, 0))), None);
}

#[test]
fn auto_holds_in_the_hysteresis_band_and_deflates_below_it() {
    let mut p = AutoPolicy::new(cfg());
    // Band: [896, 960] MiB.
    for (i, r) in [896, 930, 960].into_iter().enumerate() {
        let o = obs(r * MIB, 200 * MIB, stats(i as u64 + 1, GIB, 0));
        assert_eq!(p.step(&o), None, "resident {r} MiB");
    }
    // 20 MiB below the band: give 20 MiB back.
    assert_eq!(
        p.step(&obs(876 * MIB, 200 * MIB, stats(10, GIB, 0))),
        Some(180 * MIB)
    );
    assert_eq!(p.last_decision().unwrap().reason, Reason::HostRoom);
    // Far below: one step, never below zero.
    assert_eq!(
        p.step(&obs(100 * MIB, 30 * MIB, stats(11, GIB, 0))),
        Some(0)
    );
    assert_eq!(p.step(&obs(100 * MIB, 0, stats(12, GIB, 0))), None);
}

#[test]
fn auto_waits_for_the_guest_to_catch_up() {
    let mut p = AutoPolicy::new(cfg());
    let mut o = obs(2 * GIB, 256 * MIB, stats(1, GIB, 0));
    o.actual_bytes = 100 * MIB;
    assert_eq!(p.step(&o), None);
    // Guest pressure still deflates a target the guest has not reached.
    let mut o = obs(2 * GIB, 256 * MIB, stats(2, 10 * MIB, 0));
    o.actual_bytes = 100 * MIB;
    assert_eq!(p.step(&o), Some(256 * MIB - 54 * MIB));
}

#[test]
fn auto_handles_counter_resets_and_missing_fields() {
    let mut p = AutoPolicy::new(cfg());
    assert_eq!(p.step(&obs(900 * MIB, 0, stats(1, GIB, 10 * GIB))), None);
    // Counters went backwards (guest reboot): rate 0, not pressure.
    assert_eq!(p.step(&obs(900 * MIB, 0, stats(2, GIB, 0))), None);
    // No available-memory figure: no headroom, so no inflating.
    let s = GuestStats {
        t_ns: 3,
        ..Default::default()
    };
    assert_eq!(p.step(&obs(2 * GIB, 0, s)), None);
}

/// A closed loop: a guest with a fixed working set, a host that counts every
/// page the guest touched minus what the balloon took. The target must settle
/// without changing direction more than once.
#[test]
fn auto_settles_without_oscillating_in_a_closed_loop() {
    let ram = 2 * GIB;
    let working_set = 700 * MIB;
    let touched_free = 600 * MIB; // guest pages touched once, now free (caches)
    let mut p = AutoPolicy::new(cfg());
    let mut target = 0u64;
    let mut swapped = 0u64;
    let mut directions = Vec::new();
    for step in 1..200u64 {
        // The balloon takes free touched pages first (they are resident).
        let from_free = target.min(touched_free);
        let resident = working_set + touched_free - from_free;
        let available = ram - working_set - target;
        // The guest swaps if the balloon eats into its working set.
        if ram - target < working_set + 64 * MIB {
            swapped += 8 * MIB;
        }
        let o = Observation {
            host_resident_bytes: resident,
            guest_ram_bytes: ram,
            target_bytes: target,
            actual_bytes: target,
            guest: Some(stats(step * 1_000_000_000, available, swapped)),
        };
        if let Some(t) = p.step(&o) {
            let up = t > target;
            if directions.last() != Some(&up) {
                directions.push(up);
            }
            target = t;
        }
    }
    assert!(directions.len() <= 2, "direction changes: {directions:?}");
    // Settled inside the band (or at a floor).
    let resident = working_set + touched_free - target.min(touched_free);
    assert!(resident <= GIB - 64 * MIB, "resident {resident}");
    assert!(
        resident >= GIB - 128 * MIB || target == 0,
        "resident {resident}"
    );
    assert_eq!(swapped, 0);
    assert!((340 * MIB..=404 * MIB).contains(&target), "target {target}");
}

#[test]
fn churn_alternates_on_its_period() {
    use std::time::{Duration, Instant};
    let mut p = ChurnPolicy::new(64 * 1024 * 1024 + 100, Duration::from_secs(10));
    let t0 = Instant::now();
    assert_eq!(
        p.step_at(t0),
        Some(64 * 1024 * 1024),
        "inflates first, page-rounded"
    );
    assert_eq!(p.step_at(t0 + Duration::from_secs(9)), None);
    assert_eq!(p.step_at(t0 + Duration::from_secs(10)), Some(0));
    assert_eq!(p.last_decision().map(|d| d.reason), Some(Reason::Churn));
    assert_eq!(p.step_at(t0 + Duration::from_secs(19)), None);
    assert_eq!(
        p.step_at(t0 + Duration::from_secs(21)),
        Some(64 * 1024 * 1024)
    );
    assert_eq!(p.name(), "churn");
}

//! Balloon policies: pure functions from what the host and the guest look like to
//! a new balloon target. The experiment runner calls [`BalloonPolicy::step`]
//! periodically with an [`Observation`] and passes any new target to
//! [`crate::BalloonHandle::set_target`]. Targets are balloon sizes (memory taken
//! from the guest), in bytes, multiples of 4 KiB.
//!
//! # [`ManualPolicy`]
//!
//! The target is whatever the user last asked for; `step` returns it once.
//!
//! # [`AutoPolicy`]: the rule
//!
//! Let `L` be the host limit for guest RAM, `R` the host-resident bytes of guest
//! RAM, `T` the current target and `A` what the guest holds (`actual`).
//! Parameters ([`AutoConfig`]): margin `m`, hysteresis `h`, available-memory floor
//! `f`, swap-rate threshold `s`, maximum step `Δ`, minimum guest memory `g`,
//! cooldown `c` steps.
//!
//! 1. **Fresh evidence only.** The policy acts at most once per guest statistics
//!    sample (identified by its arrival time). Without a new sample it holds: a
//!    stale sample would make it repeat a decision whose effect it cannot see yet.
//!    The guest's swap rate is `Δ(swap-in + swap-out) / Δt` between consecutive
//!    samples (a counter that goes backwards, e.g. after a guest reboot, counts
//!    as 0).
//! 2. **Guest pressure wins: deflate.** If the guest swaps faster than `s` bytes/s
//!    or its available memory is below `f`, the target drops by
//!    `max(f − available, Δ/4)`, capped at `Δ` and at `T`, and inflating is
//!    suspended for the next `c` samples. A balloon that makes the guest swap only
//!    moves swapping from the host to the guest (and invites double paging).
//! 3. **Wait for the guest.** If `|A − T| > Δ` the guest has not caught up with
//!    the last target: hold (except for rule 2).
//! 4. **Host pressure: inflate.** If `R > L − m` (the host would soon have to
//!    swap guest pages), the target grows by `min(R − (L − m), Δ)`, further capped
//!    so that the guest keeps `f` of available memory (`available − f`, assuming
//!    ballooned pages come out of available memory) and at least `g` of RAM
//!    (`T ≤ guest RAM − g`). Growth below one page is no change.
//! 5. **Host room: deflate.** If `R < L − m − h` the target drops by
//!    `min((L − m − h) − R, Δ, T)`: memory goes back to the guest when the host
//!    has room for it.
//! 6. Otherwise (`L − m − h ≤ R ≤ L − m`: the hysteresis band) hold.
//!
//! Why it does not oscillate: inflating and deflating-for-room are separated by
//! the band `h`; every change is at most `Δ`; a pressure deflate blocks inflating
//! for `c` steps; and nothing happens until the guest has caught up with the last
//! target and sent a sample taken after it.

use crate::spec::BALLOON_PAGE_SIZE;
use crate::stats::GuestStats;

const MIB: u64 = 1 << 20;

/// What the policy sees at one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Host memory held by guest RAM now (resident bytes of the guest mapping, or
    /// the swapper's resident count), bytes.
    pub host_resident_bytes: u64,
    /// Guest RAM size, bytes.
    pub guest_ram_bytes: u64,
    /// The balloon target now, bytes.
    pub target_bytes: u64,
    /// What the guest holds in the balloon (`actual`), bytes.
    pub actual_bytes: u64,
    /// The guest's latest statistics, if any arrived.
    pub guest: Option<GuestStats>,
}

/// Why a policy chose a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The user set it.
    Manual,
    /// The guest swaps or is short of available memory.
    GuestPressure,
    /// Host residency approaches the limit.
    HostPressure,
    /// The host has room to give memory back.
    HostRoom,
    /// A churn policy's scheduled inflate or deflate.
    Churn,
}

/// A policy's last decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// New target, bytes.
    pub target: u64,
    /// Why.
    pub reason: Reason,
}

/// Decides balloon targets.
pub trait BalloonPolicy: Send {
    /// Short name for reports (`manual`, `auto`).
    fn name(&self) -> &'static str;

    /// A new target in bytes, or `None` to leave it as it is.
    fn step(&mut self, obs: &Observation) -> Option<u64>;

    /// The last decision that changed the target, with its reason.
    fn last_decision(&self) -> Option<Decision>;
}

fn pages_floor(bytes: u64) -> u64 {
    bytes / BALLOON_PAGE_SIZE * BALLOON_PAGE_SIZE
}

/// The target is set by the user.
#[derive(Debug, Clone, Default)]
pub struct ManualPolicy {
    pending: Option<u64>,
    last: Option<Decision>,
}

impl ManualPolicy {
    /// A policy that changes nothing until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `step` returns `bytes` (rounded down to 4 KiB).
    pub fn set_target(&mut self, bytes: u64) {
        self.pending = Some(pages_floor(bytes));
    }
}

impl BalloonPolicy for ManualPolicy {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn step(&mut self, obs: &Observation) -> Option<u64> {
        let t = self.pending.take().filter(|t| *t != obs.target_bytes)?;
        self.last = Some(Decision {
            target: t,
            reason: Reason::Manual,
        });
        Some(t)
    }

    fn last_decision(&self) -> Option<Decision> {
        self.last
    }
}

/// Inflates to `high` and deflates to 0, turn about, every `period`: balloon
/// churn for soak tests (the guest gives memory up and takes it back while
/// its workload runs).
#[derive(Debug, Clone)]
pub struct ChurnPolicy {
    high: u64,
    period: std::time::Duration,
    next: Option<std::time::Instant>,
    inflated: bool,
    last: Option<Decision>,
}

impl ChurnPolicy {
    /// Alternates between `high` bytes (rounded down to 4 KiB) and 0, starting
    /// with an inflate at the first step; `period` is at least 1 ms.
    pub fn new(high: u64, period: std::time::Duration) -> Self {
        Self {
            high: pages_floor(high),
            period: period.max(std::time::Duration::from_millis(1)),
            next: None,
            inflated: false,
            last: None,
        }
    }

    /// [`BalloonPolicy::step`] at time `now`.
    pub fn step_at(&mut self, now: std::time::Instant) -> Option<u64> {
        if self.next.is_some_and(|due| now < due) {
            return None;
        }
        self.next = Some(now + self.period);
        self.inflated = !self.inflated;
        let target = if self.inflated { self.high } else { 0 };
        self.last = Some(Decision {
            target,
            reason: Reason::Churn,
        });
        Some(target)
    }
}

impl BalloonPolicy for ChurnPolicy {
    fn name(&self) -> &'static str {
        "churn"
    }

    fn step(&mut self, _obs: &Observation) -> Option<u64> {
        self.step_at(std::time::Instant::now())
    }

    fn last_decision(&self) -> Option<Decision> {
        self.last
    }
}

/// Parameters of [`AutoPolicy`] (see the module doc for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AutoConfig {
    /// Host memory guest RAM may use (`L`), bytes.
    pub host_limit: u64,
    /// Inflate when residency exceeds `L − margin`.
    pub margin: u64,
    /// Deflate for room only when residency is below `L − margin − hysteresis`.
    pub hysteresis: u64,
    /// Guest available memory below this is pressure (`f`), bytes.
    pub available_floor: u64,
    /// Guest swap-in + swap-out faster than this (bytes/s) is pressure (`s`).
    pub swap_rate_threshold: u64,
    /// Largest change per step (`Δ`), bytes.
    pub max_step: u64,
    /// Never balloon the guest below this much RAM (`g`), bytes.
    pub min_guest_bytes: u64,
    /// Steps without inflating after a pressure deflate (`c`).
    pub cooldown_steps: u32,
}

impl AutoConfig {
    /// Defaults for a host limit: margin `max(L/16, 16 MiB)`, hysteresis = margin,
    /// floor 64 MiB, any swapping is pressure, step 64 MiB, guest keeps 128 MiB,
    /// cooldown 3 steps.
    pub fn new(host_limit: u64) -> Self {
        let margin = (host_limit / 16).max(16 * MIB);
        Self {
            host_limit,
            margin,
            hysteresis: margin,
            available_floor: 64 * MIB,
            swap_rate_threshold: 0,
            max_step: 64 * MIB,
            min_guest_bytes: 128 * MIB,
            cooldown_steps: 3,
        }
    }
}

/// Inflates before the host would swap, deflates when the guest is under pressure.
#[derive(Debug, Clone)]
pub struct AutoPolicy {
    cfg: AutoConfig,
    /// Last sample acted on: (arrival ns, swap total).
    seen: Option<(u64, Option<u64>)>,
    cooldown: u32,
    last: Option<Decision>,
}

impl AutoPolicy {
    /// A policy with `cfg`.
    pub fn new(cfg: AutoConfig) -> Self {
        Self {
            cfg,
            seen: None,
            cooldown: 0,
            last: None,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &AutoConfig {
        &self.cfg
    }

    /// Swap rate (bytes/s) since the previous sample; `None` for the first one.
    fn swap_rate(&self, s: &GuestStats) -> Option<u64> {
        let (t0, total0) = self.seen?;
        let dt = s.t_ns.checked_sub(t0).filter(|d| *d > 0)?;
        let d = s.swap_total()?.saturating_sub(total0?);
        Some((u128::from(d) * 1_000_000_000 / u128::from(dt)).min(u128::from(u64::MAX)) as u64)
    }

    fn decide(&mut self, obs: &Observation, s: &GuestStats) -> Option<Decision> {
        let c = &self.cfg;
        let t = obs.target_bytes;
        let rate = self.swap_rate(s);
        let deficit = s
            .available_memory
            .map_or(0, |a| c.available_floor.saturating_sub(a));
        let swapping = rate.is_some_and(|r| r > c.swap_rate_threshold);
        if swapping || deficit > 0 {
            self.cooldown = c.cooldown_steps;
            let drop = deficit.max(c.max_step / 4).min(c.max_step).min(t);
            return Some(Decision {
                target: pages_floor(t - drop),
                reason: Reason::GuestPressure,
            });
        }
        let cooling = self.cooldown > 0;
        self.cooldown = self.cooldown.saturating_sub(1);
        if obs.actual_bytes.abs_diff(t) > c.max_step {
            return None;
        }
        let high = c.host_limit.saturating_sub(c.margin);
        let low = high.saturating_sub(c.hysteresis);
        let r = obs.host_resident_bytes;
        if r > high {
            if cooling {
                return None;
            }
            let headroom = s
                .available_memory
                .map_or(0, |a| a.saturating_sub(c.available_floor));
            let cap = obs.guest_ram_bytes.saturating_sub(c.min_guest_bytes);
            let grow = (r - high)
                .next_multiple_of(BALLOON_PAGE_SIZE)
                .min(c.max_step)
                .min(headroom)
                .min(cap.saturating_sub(t));
            return Some(Decision {
                target: pages_floor(t + grow),
                reason: Reason::HostPressure,
            });
        }
        if r < low && t > 0 {
            let drop = (low - r).min(c.max_step).min(t);
            return Some(Decision {
                target: pages_floor(t - drop),
                reason: Reason::HostRoom,
            });
        }
        None
    }
}

impl BalloonPolicy for AutoPolicy {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn step(&mut self, obs: &Observation) -> Option<u64> {
        let s = obs.guest.as_ref()?;
        if self.seen.is_some_and(|(t, _)| s.t_ns <= t) {
            return None;
        }
        let d = self.decide(obs, s);
        self.seen = Some((s.t_ns, s.swap_total()));
        let d = d.filter(|d| d.target != obs.target_bytes)?;
        self.last = Some(d);
        Some(d.target)
    }

    fn last_decision(&self) -> Option<Decision> {
        self.last
    }
}

#[cfg(test)]
mod tests;

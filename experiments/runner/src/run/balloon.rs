//! The balloon's part in a run: the device (released pages go through the
//! host swapper when there is one, so its residency stays right), and the
//! scenario's policy, stepped by the sampler.

use std::sync::Arc;
use std::time::Instant;

use balloon::{
    AutoConfig, AutoPolicy, Balloon, BalloonConfig, BalloonHandle, BalloonPolicy, ChurnPolicy,
    Decision, MadviseReleaser, ManualPolicy, Observation, PageReleaser, SwapperReleaser,
};
use serde_json::{json, Value};
use swapper::{Swapper, ThreadKind};
use vm_memory::GuestMemoryMmap;
use vmm::linux::LinuxVm;
use vmm::GuestMemoryExt;

use super::error::MachineError;
use super::spec::free_page_reporting;
use super::threads::{LateRegistry, BALLOON_DEVICE};
use scenario::{BalloonPolicy as Choice, Scenario};

/// A balloon device in a running VM and its policy.
pub struct BalloonRun {
    /// The device's handle.
    pub handle: BalloonHandle,
    policy: Box<dyn BalloonPolicy>,
    decisions: Vec<(f64, Decision)>,
    started: Instant,
}

impl BalloonRun {
    /// One policy step with the host's residency now.
    pub fn step(&mut self, host_resident_bytes: u64, guest_ram_bytes: u64) {
        let obs = Observation {
            host_resident_bytes,
            guest_ram_bytes,
            target_bytes: self.handle.target_bytes(),
            actual_bytes: self.handle.actual_bytes(),
            guest: self.handle.stats(),
        };
        if let Some(t) = self.policy.step(&obs) {
            self.handle.set_target(t);
            if let Some(d) = self.policy.last_decision() {
                self.decisions
                    .push((self.started.elapsed().as_secs_f64(), d));
            }
        }
    }

    /// The balloon's part of the result.
    pub fn finish(self) -> Value {
        json!({
            "policy": self.policy.name(),
            "target_bytes": self.handle.target_bytes(),
            "actual_bytes": self.handle.actual_bytes(),
            "metrics": serde_json::to_value(self.handle.metrics()).unwrap_or_default(),
            "last_stats": self.handle.stats().map(|s| serde_json::to_value(s).unwrap_or_default()),
            "decisions": self.decisions.iter().map(|(t, d)| json!({
                "t_s": t, "target_bytes": d.target, "reason": d.reason,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Adds the scenario's balloon to `vm`: none for `policy = "none"`, unless the
/// `false-reads` mitigation is on, which needs the balloon's free page
/// reporting (the guest hands back whole free blocks; the host discards them,
/// so a page the guest frees and later zeroes is not read from the store
/// first). Reporting is on exactly then; without a balloon policy the device
/// only reports (its target stays 0).
pub fn attach(
    vm: &mut LinuxVm,
    spec: &Scenario,
    swapper: Option<&Arc<Swapper>>,
    memory: &GuestMemoryMmap,
    registry: &LateRegistry,
    epoch: Instant,
) -> Result<Option<BalloonRun>, MachineError> {
    let reporting = free_page_reporting(spec);
    let policy: Box<dyn BalloonPolicy> = match &spec.balloon.policy {
        Choice::None if reporting => Box::new(ManualPolicy::new()),
        Choice::None => return Ok(None),
        Choice::Manual { target } => {
            let mut p = ManualPolicy::new();
            p.set_target(target.bytes());
            Box::new(p)
        }
        Choice::Churn { target, period_s } => Box::new(ChurnPolicy::new(
            target.bytes(),
            std::time::Duration::from_secs(u64::from(*period_s)),
        )),
        Choice::Auto => {
            let limit = spec
                .host
                .as_ref()
                .map_or(spec.guest.mem.bytes(), |h| h.limit.bytes());
            Box::new(AutoPolicy::new(AutoConfig::new(limit)))
        }
    };
    let releaser: Arc<dyn PageReleaser> = match swapper {
        Some(sw) => Arc::new(SwapperReleaser::new(sw.clone(), memory.host_regions())),
        None => Arc::new(MadviseReleaser::new(memory.clone())),
    };
    let mut cfg = BalloonConfig::new(releaser);
    cfg.free_page_reporting = reporting;
    cfg.stats_interval = match spec.balloon.stats_interval_ms {
        0 => None,
        ms => Some(std::time::Duration::from_millis(u64::from(ms))),
    };
    cfg.epoch = epoch;
    cfg.on_thread_start = Some({
        let registry = registry.clone();
        Box::new(move |tid| registry.register(tid, ThreadKind::Device(BALLOON_DEVICE)))
    });
    let (dev, handle) = Balloon::new(cfg);
    vm.add_virtio("balloon", Box::new(dev))?;
    Ok(Some(BalloonRun {
        handle,
        policy,
        decisions: Vec::new(),
        started: Instant::now(),
    }))
}

//! A probe run under [`swapper::floor::Floor`]: the bare userfaultfd round
//! trip that `bench host-swap` sets every swapper figure against.
//!
//! Test RAM is registered for missing faults before any vCPU runs; every
//! fault is answered with a copy of a page prepared in advance, and as each
//! pass ends every page is dropped, so each access of the next pass is one
//! round trip. The probe's latencies of the passes after the first are the
//! floor's.

use std::sync::{Arc, Mutex};

use base::lock;
use swapper::floor::{Floor, FloorStats};
use swapper::GuestRegion;
use vmm::HostRegion;

use super::{run_probe, ProbeConfig, ProbeError, ProbeHooks, ProbeResult};

/// Runs `config` with test RAM under the floor's handler; `extra`'s
/// `on_started` is kept (to stop the run on a signal).
pub fn run_probe_floor(
    config: &ProbeConfig,
    extra: ProbeHooks,
) -> Result<(ProbeResult, FloorStats), ProbeError> {
    let floor: Arc<Mutex<Option<Floor>>> = Arc::default();
    let stats: Arc<Mutex<FloorStats>> = Arc::default();
    let hooks = ProbeHooks {
        on_test_ram: Some({
            let floor = floor.clone();
            Box::new(move |r: &HostRegion| {
                let region = GuestRegion {
                    addr: r.host_addr,
                    len: r.len,
                };
                // SAFETY: test RAM is a private anonymous mapping owned by the
                // probe's guest memory, reached only through raw accesses;
                // `on_finish` below shuts the floor down before `run_probe`
                // unmaps it, on every path.
                *lock(&floor) = Some(unsafe { Floor::start(region) }?);
                Ok(())
            })
        }),
        on_pass_end: Some({
            let floor = floor.clone();
            Arc::new(move |_pass| {
                if let Some(f) = lock(&floor).as_ref() {
                    if let Err(e) = f.zap() {
                        tracing::warn!("floor: {e}");
                    }
                }
            })
        }),
        on_finish: Some({
            let (floor, stats) = (floor.clone(), stats.clone());
            Box::new(move || {
                if let Some(f) = lock(&floor).take() {
                    *lock(&stats) = f.shutdown();
                }
            })
        }),
        on_started: extra.on_started,
        on_vcpu_start: extra.on_vcpu_start,
    };
    let r = run_probe(config, hooks)?;
    let s = *lock(&stats);
    Ok((r, s))
}

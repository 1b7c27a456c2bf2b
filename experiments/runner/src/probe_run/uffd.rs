//! A probe run with the userfaultfd host swapper managing test RAM.
//!
//! [`run_probe_uffd`] starts a [`Swapper`] on test RAM in the `on_test_ram` hook (before
//! any vCPU runs), registers the vCPU threads, snapshots the swapper's counters as each
//! pass ends, and installs a [`swapper::FatalHook`] that aborts the VM with the
//! swapper's error: a page the swapper cannot produce (store read failure, checksum
//! mismatch) stops the run with that error; wrong data is never served.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base::lock;

use serde::Serialize;
use swapper::status::CounterSnapshot;
use swapper::store::StoreNode;
use swapper::{FatalError, GuestRegion, Swapper, SwapperConfig, SwapperStatus, ThreadKind};
use vmm::{HostRegion, VmHandle};

use super::{run_probe, ProbeConfig, ProbeError, ProbeHooks, ProbeResult};

/// Errors of a swapped probe run.
#[derive(Debug, thiserror::Error)]
pub enum UffdProbeError {
    /// The swapper could not serve a guest page; the VM was stopped.
    /// The VM's error (the cause) names the first fatal error.
    #[error("the host swapper could not serve guest memory ({count} fatal error{s}; the VM was stopped, no wrong data was served)", s = if *.count == 1 { "" } else { "s" })]
    Fatal {
        /// The first fatal error.
        first: Box<FatalError>,
        /// How many.
        count: usize,
        /// Every one of them.
        errors: Vec<FatalError>,
        /// The probe's own error.
        #[source]
        source: Box<ProbeError>,
    },
    /// The probe failed (the swapper could not start, the VM failed, ...).
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// Swapper counters in one pass (differences of counter snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassSwapStats {
    /// 1-based pass number.
    pub pass: u32,
    /// Userfaultfd fault events.
    pub faults: u64,
    /// Pages written to the store.
    pub evictions: u64,
    /// Swap-ins by path (`store`, `minor`, `prefetch_hit`) and `zero` fills.
    pub swap_ins: BTreeMap<String, u64>,
    /// Resident pages at the end of the pass.
    pub resident_pages: u64,
}

/// What the swapper did during a probe run.
#[derive(Debug, Clone, Serialize)]
pub struct UffdReport {
    /// Status when the last pass ended (the guest's run, before the host's
    /// verification read test RAM back).
    pub at_run_end: SwapperStatus,
    /// Per pass.
    pub passes: Vec<PassSwapStats>,
    /// Final status, after the host verified every page (its reads go through the
    /// swapper too) and the swapper shut down.
    pub final_status: SwapperStatus,
    /// Host resident pages of test RAM plus staging as the kernel's page tables say
    /// (`PAGEMAP_SCAN`) at the end of the last pass, if it could be read.
    pub scanned_resident_pages: Option<u64>,
    /// Pages per server of a distributed store (a Redis Cluster's nodes) when the
    /// guest's run ended; empty for a local store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub store_nodes: Vec<StoreNode>,
}

/// A finished swapped run.
#[derive(Debug, Clone)]
pub struct UffdRun {
    /// The probe's numbers.
    pub result: ProbeResult,
    /// The swapper's.
    pub swap: UffdReport,
}

fn delta(a: &CounterSnapshot, b: &CounterSnapshot, pass: u32, resident: u64) -> PassSwapStats {
    let swap_ins = [
        ("store", b.swapin_store - a.swapin_store),
        ("minor", b.swapin_minor - a.swapin_minor),
        ("prefetch_hit", b.prefetch_hits - a.prefetch_hits),
        ("zero", b.swapin_zero - a.swapin_zero),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    PassSwapStats {
        pass,
        faults: b.faults - a.faults,
        evictions: b.evictions - a.evictions,
        swap_ins,
        resident_pages: resident,
    }
}

/// Where the fatal hook finds the VM (it may fire before `on_started`).
#[derive(Default)]
struct VmSlot {
    handle: Option<VmHandle>,
    pending: Option<String>,
}

/// What `on_finish` leaves: the fatal errors, the status after shutdown and the
/// store's pages per server before it.
type Finished = (Vec<FatalError>, SwapperStatus, Vec<StoreNode>);

#[derive(Default)]
struct Shared {
    swapper: Mutex<Option<Swapper>>,
    vm: Mutex<VmSlot>,
    snapshots: Mutex<Vec<(CounterSnapshot, u64)>>,
    at_run_end: Mutex<Option<(SwapperStatus, Option<u64>)>>,
    /// Set by `on_finish`.
    finished: Mutex<Option<Finished>>,
}

/// Runs `config` with the swapper (`swap`, whose `on_fatal` is replaced) on test RAM.
/// `extra` hooks run after the swapper's own.
pub fn run_probe_uffd(
    config: &ProbeConfig,
    mut swap: SwapperConfig,
    extra: ProbeHooks,
) -> Result<UffdRun, UffdProbeError> {
    let shared = Arc::new(Shared::default());
    swap.on_fatal = Some({
        let shared = shared.clone();
        Arc::new(move |e: &FatalError| {
            let reason = format!("host swapper: {e}");
            let mut vm = lock(&shared.vm);
            match &vm.handle {
                Some(h) => h.abort(reason),
                None => {
                    vm.pending.get_or_insert(reason);
                }
            }
        })
    });
    let passes = config.passes;
    let hooks = ProbeHooks {
        on_test_ram: Some({
            let shared = shared.clone();
            let user = extra.on_test_ram;
            Box::new(move |r: &HostRegion| {
                let region = GuestRegion {
                    addr: r.host_addr,
                    len: r.len,
                };
                // SAFETY: test RAM is a private anonymous mapping owned by the probe's
                // guest memory; `on_finish` below shuts the swapper down before
                // `run_probe` unmaps it, on every path. No Rust reference covers it
                // (the VMM reaches it through raw volatile accesses only).
                let sw = unsafe { Swapper::start(swap, &[region]) }?;
                let c = sw.status();
                lock(&shared.snapshots).push((c.counters, c.resident_pages));
                *lock(&shared.swapper) = Some(sw);
                match user {
                    Some(u) => u(r),
                    None => Ok(()),
                }
            })
        }),
        on_vcpu_start: Some({
            let shared = shared.clone();
            let user = extra.on_vcpu_start;
            Arc::new(move |index, tid| {
                if let Some(sw) = lock(&shared.swapper).as_ref() {
                    sw.registry().register(tid, ThreadKind::Vcpu(index));
                }
                if let Some(u) = &user {
                    u(index, tid);
                }
            })
        }),
        on_started: Some({
            let shared = shared.clone();
            let user = extra.on_started;
            Box::new(move |h: VmHandle| {
                {
                    let mut vm = lock(&shared.vm);
                    if let Some(reason) = vm.pending.take() {
                        h.abort(reason);
                    }
                    vm.handle = Some(h.clone());
                }
                if let Some(u) = user {
                    u(h);
                }
            })
        }),
        on_pass_end: Some({
            let shared = shared.clone();
            let user = extra.on_pass_end;
            Arc::new(move |pass| {
                if let Some(sw) = lock(&shared.swapper).as_ref() {
                    let st = sw.status();
                    lock(&shared.snapshots).push((st.counters.clone(), st.resident_pages));
                    if pass == passes {
                        *lock(&shared.at_run_end) = Some((st, sw.scanned_resident_pages().ok()));
                    }
                }
                if let Some(u) = &user {
                    u(pass);
                }
            })
        }),
        on_finish: Some({
            let shared = shared.clone();
            let user = extra.on_finish;
            Box::new(move || {
                if let Some(u) = user {
                    u();
                }
                // The VM is gone: forget its handle, stop the swapper.
                lock(&shared.vm).handle = None;
                let sw = lock(&shared.swapper).take();
                if let Some(sw) = sw {
                    let errors = sw.fatal_errors();
                    // Asked here, not at the last pass's end: that hook runs on
                    // the vCPU thread, which may not open sockets.
                    let nodes = sw.store_nodes().unwrap_or_else(|e| {
                        tracing::warn!("probe: pages per store node: {e}");
                        Vec::new()
                    });
                    *lock(&shared.finished) = Some((errors, sw.shutdown(), nodes));
                }
            })
        }),
    };
    let outcome = run_probe(config, hooks);
    let finished = lock(&shared.finished).take();
    let result = match outcome {
        Ok(r) => r,
        Err(source) => {
            let errors = finished.map(|f| f.0).unwrap_or_default();
            return Err(match errors.first() {
                Some(first) => UffdProbeError::Fatal {
                    first: Box::new(first.clone()),
                    count: errors.len(),
                    errors,
                    source: Box::new(source),
                },
                None => UffdProbeError::Probe(source),
            });
        }
    };
    let (_, final_status, store_nodes) = finished.expect("on_test_ram ran, so the swapper started");
    let snaps = std::mem::take(&mut *lock(&shared.snapshots));
    let passes = (1u32..)
        .zip(snaps.windows(2))
        .map(|(pass, w)| delta(&w[0].0, &w[1].0, pass, w[1].1))
        .collect();
    let (at_run_end, scanned_resident_pages) = lock(&shared.at_run_end)
        .take()
        .unwrap_or_else(|| (final_status.clone(), None));
    Ok(UffdRun {
        result,
        swap: UffdReport {
            at_run_end,
            passes,
            final_status,
            scanned_resident_pages,
            store_nodes,
        },
    })
}

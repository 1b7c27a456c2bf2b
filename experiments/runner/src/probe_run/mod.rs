//! Running a probe guest end to end: build the VM, serve the doorbell, collect numbers.
//!
//! [`run_probe`] is the library entry point behind `swaplab probe`. [`ProbeHooks`] let a
//! caller act on the test RAM's host range before the vCPU starts (e.g. register it with
//! a userfaultfd swapper), learn the vCPU threads' TIDs, and hold a [`VmHandle`] to stop
//! the VM (e.g. on a fatal backing-store error).
//!
//! Guest layout: the control region (`workloads::probe::abi`, its own memslot) holds the
//! page tables, payload, control block and buffers; test RAM is a second memslot at
//! [`abi::TEST_RAM_BASE`], so a swapper can manage exactly the memory under test.

mod device;
pub mod floor;
pub mod hooks;
pub mod kernel;
pub mod plan;
pub mod render;
pub mod summary;
pub mod tsc;
pub mod uffd;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base::lock;
use serde::Serialize;
use vmm::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::{
    create_guest_memory, ExitCount, ExitReason, FlatGuest, GuestMemoryExt, HostRegion, RegionSpec,
    VcpuStartHook, Vm, VmConfig,
};
use workloads::probe::abi;
use workloads::probe::{AccessPlan, Pattern};

use device::ProbeDevice;
pub use hooks::{FinishHook, HookError, PassEndHook, StartedHook, TestRamHook, FAULT_THRESHOLD_NS};
pub use tsc::{TscFreq, TscSource};

/// Errors from running a probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The access pattern cannot be planned.
    #[error("access pattern")]
    Pattern(#[from] workloads::probe::PatternError),
    /// The payload did not assemble.
    #[error("probe payload")]
    Payload(#[from] workloads::probe::PayloadError),
    /// Guest memory could not be created.
    #[error("guest memory")]
    Memory(#[from] vmm::MemoryError),
    /// Writing the payload or control block failed.
    #[error("loading the probe into guest memory")]
    Load(#[from] vmm::vm_memory::GuestMemoryError),
    /// The flat-guest setup failed.
    #[error("setting up the flat guest")]
    Flat(#[from] vmm::FlatError),
    /// The VM failed.
    #[error("probe VM")]
    Vm(#[from] vmm::VmError),
    /// No TSC frequency could be found.
    #[error("cannot determine the TSC frequency (KVM_GET_TSC_KHZ failed and /proc/cpuinfo has no cpu MHz)")]
    Tsc,
    /// A hook asked to abort.
    #[error("probe hook failed")]
    Hook(#[source] HookError),
    /// The VM stopped before the payload finished its passes.
    #[error("the VM stopped after {passes_done} of {passes} passes, before the probe finished")]
    Incomplete {
        /// Passes completed.
        passes_done: usize,
        /// Passes requested.
        passes: u32,
    },
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// Test RAM in bytes (a non-zero multiple of 4 KiB).
    pub mem_bytes: u64,
    /// Access pattern.
    pub pattern: Pattern,
    /// Passes (at least 1).
    pub passes: u32,
    /// Seed for the pattern.
    pub seed: u64,
    /// Check every touched page's tag and access counter from the host afterwards.
    pub verify: bool,
    /// Run the VMM's and the swapper's threads under their seccomp filters
    /// (`--no-seccomp` turns this off).
    pub seccomp: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            mem_bytes: 256 << 20,
            pattern: Pattern::Random,
            passes: 2,
            seed: 1,
            verify: true,
            seccomp: true,
        }
    }
}

/// Callbacks into a probe run. All optional.
#[derive(Default)]
pub struct ProbeHooks {
    /// Called with test RAM's host placement after the VM is built and before any vCPU
    /// runs; an error aborts the run.
    pub on_test_ram: Option<TestRamHook>,
    /// Called on each vCPU thread as it starts, with (vCPU index, Linux TID).
    pub on_vcpu_start: Option<VcpuStartHook>,
    /// Called once the vCPUs are started, with a handle that can stop or abort the VM.
    pub on_started: Option<StartedHook>,
    /// Called as each pass ends (e.g. to snapshot swap counters per pass).
    pub on_pass_end: Option<PassEndHook>,
    /// Called as the run ends, after the host's verification and before test RAM is
    /// unmapped: release whatever `on_test_ram` set up on it (e.g. shut a swapper down).
    pub on_finish: Option<FinishHook>,
}

/// Runs the finish hook when dropped (declared after guest memory, so it runs first).
struct FinishGuard(Option<FinishHook>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Latency distribution of one pass, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Minimum.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

/// One pass's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassResult {
    /// 1-based pass number.
    pub pass: u32,
    /// Timed accesses.
    pub accesses: u64,
    /// Distinct pages touched in this pass.
    pub pages: u64,
    /// Pages touched for the first time in the run (first touches, for a fresh VM).
    pub new_pages: u64,
    /// Host wall time from handing out the pass's first chunk to draining its last.
    pub wall_ns: u64,
    /// Per-access latency.
    pub latency_ns: Latency,
    /// Accesses that took a host page fault (at least [`FAULT_THRESHOLD_NS`]).
    pub faulted_accesses: u64,
    /// Their latency (as the guest saw it: fault, service and vCPU wake-up).
    pub fault_latency_ns: Latency,
}

/// The passes after the first (pass 1 alone if there is one pass): steady state, once
/// first touches are done.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SteadyState {
    /// First pass included (1-based).
    pub from_pass: u32,
    /// Passes included.
    pub passes: u32,
    /// Their accesses.
    pub accesses: u64,
    /// Their summed wall time.
    pub wall_ns: u64,
    /// `accesses / wall` per second.
    pub accesses_per_sec: f64,
    /// Accesses that took a host page fault.
    pub faulted_accesses: u64,
    /// Mean faulted accesses per pass.
    pub faults_per_pass: f64,
    /// Latency of every access.
    pub latency_ns: Latency,
    /// Latency of the faulted accesses.
    pub fault_latency_ns: Latency,
}

/// Integrity checks on test RAM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Integrity {
    /// Whether every check passed.
    pub ok: bool,
    /// Tags the guest read that belonged to another page.
    pub bad_tags: u64,
    /// The last such page index and value, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_bad: Option<(u64, u64)>,
    /// Pages the host checked afterwards (0 when verification was off).
    pub pages_checked: u64,
    /// Pages whose tag or access counter did not match what the host handed out.
    pub pages_mismatched: u64,
}

/// KVM's in-kernel counters, summarised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KvmStatsSummary {
    /// Whether the kernel provided binary stats.
    pub available: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// VM-wide scalars.
    pub vm: BTreeMap<String, u64>,
    /// vCPU scalars summed over vCPUs (e.g. `exits`, `pf_taken`, `mmio_exits`).
    pub vcpu: BTreeMap<String, u64>,
}

/// Everything a probe run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Test RAM in bytes.
    pub mem_bytes: u64,
    /// Test RAM in 4 KiB pages.
    pub pages: u64,
    /// The pattern, as it would be given on the command line.
    pub pattern: String,
    /// The pattern seed.
    pub seed: u64,
    /// Distinct pages touched over the run.
    pub pages_touched: u64,
    /// Timed accesses over the run.
    pub accesses: u64,
    /// Wall time of the VM run (vCPU start to stop).
    pub wall_ns: u64,
    /// TSC frequency used for the conversion, in kHz.
    pub tsc_khz: u64,
    /// Where it came from.
    pub tsc_source: TscSource,
    /// Per pass.
    pub passes: Vec<PassResult>,
    /// The passes after the first, together.
    pub steady: SteadyState,
    /// Userspace VM exits by reason (count and VMM handling time).
    pub exits: BTreeMap<ExitReason, ExitCount>,
    /// Total time the vCPU spent inside `KVM_RUN`.
    pub vcpu_in_kvm_run_ns: u64,
    /// In-kernel KVM statistics.
    pub kvm_stats: KvmStatsSummary,
    /// Data checks.
    pub integrity: Integrity,
    /// Linux TIDs of the vCPU threads.
    pub vcpu_tids: Vec<i32>,
    /// Where test RAM was mapped in the host.
    pub test_ram: HostRegion,
}

fn latency(h: &hdrhistogram::Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        min: h.min(),
        mean: h.mean(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// Summarise the passes after the first (or the only pass).
fn steady_state(stats: &[device::PassAccum], passes: &[PassResult]) -> SteadyState {
    let skip = usize::from(passes.len() > 1);
    let (mut all, mut faults) = (device::new_histogram(), device::new_histogram());
    for p in &stats[skip..] {
        // Same bounds on both sides: adding cannot fail.
        let _ = all.add(&p.hist);
        let _ = faults.add(&p.faults);
    }
    let kept = &passes[skip..];
    let accesses: u64 = kept.iter().map(|p| p.accesses).sum();
    let wall_ns: u64 = kept.iter().map(|p| p.wall_ns).sum();
    let n = kept.len().max(1) as f64;
    SteadyState {
        from_pass: skip as u32 + 1,
        passes: kept.len() as u32,
        accesses,
        wall_ns,
        accesses_per_sec: if wall_ns == 0 {
            0.0
        } else {
            accesses as f64 * 1e9 / wall_ns as f64
        },
        faulted_accesses: faults.len(),
        faults_per_pass: faults.len() as f64 / n,
        latency_ns: latency(&all),
        fault_latency_ns: latency(&faults),
    }
}

/// Check every page the host handed out: its tag and its access counter.
fn verify_pages(mem: &GuestMemoryMmap, counts: &[u32]) -> Result<(u64, u64), ProbeError> {
    let (mut checked, mut mismatched) = (0, 0);
    for (page, &expect) in counts.iter().enumerate() {
        if expect == 0 {
            continue;
        }
        let gpa = abi::TEST_RAM_BASE + 4096 * page as u64;
        let tag: u64 = mem.read_obj(GuestAddress(gpa + abi::PAGE_TAG_OFFSET))?;
        let n: u64 = mem.read_obj(GuestAddress(gpa + abi::PAGE_COUNTER_OFFSET))?;
        checked += 1;
        if tag != abi::page_tag(gpa) || n != u64::from(expect) {
            mismatched += 1;
        }
    }
    Ok((checked, mismatched))
}

/// Run a probe guest as `config` says.
pub fn run_probe(config: &ProbeConfig, hooks: ProbeHooks) -> Result<ProbeResult, ProbeError> {
    check_config(config)?;
    seccomp::set_enabled(config.seccomp);
    let pages = config.mem_bytes / 4096;
    let plan = AccessPlan::new(config.pattern, pages, config.seed)?;
    let (mem, test_ram) = load_guest(config)?;
    // Dropped before `mem` (reverse declaration order) on every path out of here.
    let _finish = FinishGuard(hooks.on_finish);

    let (mut vm, tids) = build_vm(config, &mem, hooks.on_vcpu_start)?;
    let tsc = tsc::resolve(vm.tsc_khz().ok()).ok_or(ProbeError::Tsc)?;
    let device = Arc::new(Mutex::new(ProbeDevice::new(
        mem.clone(),
        plan,
        config.passes,
        tsc.khz,
        hooks.on_pass_end,
    )));
    vm.register_mmio(abi::DOORBELL_ADDR, 8, "probe-doorbell", device.clone())?;

    if let Some(hook) = hooks.on_test_ram {
        hook(&test_ram).map_err(ProbeError::Hook)?;
    }
    let running = vm.start()?;
    if let Some(hook) = hooks.on_started {
        hook(running.handle());
    }
    let report = running.wait()?;

    let dev = lock(&device);
    if !dev.finished() {
        return Err(ProbeError::Incomplete {
            passes_done: dev.pass_stats.iter().filter(|p| p.ended.is_some()).count(),
            passes: config.passes,
        });
    }
    let passes = pass_results(&dev.pass_stats);
    let steady = steady_state(&dev.pass_stats, &passes);
    let integrity = integrity(config, &mem, &dev.counts)?;
    let mut vcpu_tids: Vec<(u32, i32)> = lock(&tids).clone();
    vcpu_tids.sort_unstable();

    let ks = &report.kvm_stats;
    Ok(ProbeResult {
        mem_bytes: config.mem_bytes,
        pages,
        pattern: config.pattern.to_string(),
        seed: config.seed,
        pages_touched: dev.counts.iter().filter(|&&c| c > 0).count() as u64,
        accesses: passes.iter().map(|p| p.accesses).sum(),
        wall_ns: report.wall_ns,
        tsc_khz: tsc.khz,
        tsc_source: tsc.source,
        passes,
        steady,
        exits: report.exits.by_reason.clone(),
        vcpu_in_kvm_run_ns: report.exits.in_kvm_run_ns,
        kvm_stats: KvmStatsSummary {
            available: ks.available,
            unavailable_reason: ks.unavailable_reason.clone(),
            vm: ks.vm.as_ref().map(|s| s.values.clone()).unwrap_or_default(),
            vcpu: ks.vcpu_totals(),
        },
        integrity,
        vcpu_tids: vcpu_tids.into_iter().map(|(_, t)| t).collect(),
        test_ram,
    })
}

/// Rejects test RAM that is not whole pages and a probe without passes.
fn check_config(config: &ProbeConfig) -> Result<(), ProbeError> {
    if config.mem_bytes == 0 || config.mem_bytes % 4096 != 0 {
        return Err(ProbeError::Config(format!(
            "test RAM must be a non-zero multiple of 4 KiB, got {} bytes",
            config.mem_bytes
        )));
    }
    if config.passes == 0 {
        return Err(ProbeError::Config("a probe needs at least one pass".into()));
    }
    Ok(())
}

/// Guest memory with the probe's code and control block in place, and where
/// test RAM is mapped in the host.
fn load_guest(config: &ProbeConfig) -> Result<(GuestMemoryMmap, HostRegion), ProbeError> {
    let code = workloads::probe::assemble()?;
    let mem = create_guest_memory(&[
        RegionSpec::new(abi::CONTROL_BASE, abi::CONTROL_SIZE),
        RegionSpec::new(abi::TEST_RAM_BASE, config.mem_bytes),
    ])?;
    mem.write_slice(&code, GuestAddress(abi::CODE_ADDR))?;
    let cb = abi::CONTROL_BLOCK_ADDR;
    mem.write_obj(abi::TEST_RAM_BASE, GuestAddress(cb + abi::CB_RAM_BASE))?;
    mem.write_obj(0u64, GuestAddress(cb + abi::CB_COUNT))?;
    let test_ram = mem.host_region_of(abi::TEST_RAM_BASE)?;
    Ok((mem, test_ram))
}

/// (vCPU index, TID) of every vCPU started.
type VcpuTids = Arc<Mutex<Vec<(u32, i32)>>>;

/// The one-vCPU VM over `mem`, set up to run the flat probe code, and the
/// TIDs its vCPUs will have (each also goes to `on_vcpu_start`).
fn build_vm(
    config: &ProbeConfig,
    mem: &GuestMemoryMmap,
    on_vcpu_start: Option<VcpuStartHook>,
) -> Result<(Vm, VcpuTids), ProbeError> {
    let tids = VcpuTids::default();
    let hook: VcpuStartHook = {
        let tids = tids.clone();
        Arc::new(move |index, tid| {
            lock(&tids).push((index, tid));
            if let Some(user) = &on_vcpu_start {
                user(index, tid);
            }
        })
    };
    let vm = Vm::new(
        mem.clone(),
        VmConfig {
            vcpus: 1,
            on_vcpu_start: Some(hook),
        },
    )?;
    let flat = FlatGuest {
        tables_addr: abi::TABLES_ADDR,
        tables_size: abi::TABLES_SIZE,
        map: vec![
            (abi::CONTROL_BASE, abi::CONTROL_SIZE),
            (abi::DOORBELL_ADDR, 4096),
            (abi::TEST_RAM_BASE, config.mem_bytes),
        ],
        entry: abi::CODE_ADDR,
        stack_top: abi::STACK_TOP,
        args: vec![],
    };
    vmm::flat::setup(mem, vm.vcpu(0)?, &flat)?;
    Ok((vm, tids))
}

/// One result per pass, numbered from 1.
fn pass_results(stats: &[device::PassAccum]) -> Vec<PassResult> {
    (1u32..)
        .zip(stats)
        .map(|(pass, p)| PassResult {
            pass,
            accesses: p.hist.len(),
            pages: p.distinct,
            new_pages: p.new_pages,
            wall_ns: p
                .ended
                .map(|e| u64::try_from((e - p.started).as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            latency_ns: latency(&p.hist),
            faulted_accesses: p.faults.len(),
            fault_latency_ns: latency(&p.faults),
        })
        .collect()
}

/// What the guest found wrong (from its control block) and, with
/// `config.verify`, what the host finds on every page it handed out
/// (`counts`: accesses per page).
fn integrity(
    config: &ProbeConfig,
    mem: &GuestMemoryMmap,
    counts: &[u32],
) -> Result<Integrity, ProbeError> {
    let cb = abi::CONTROL_BLOCK_ADDR;
    let bad_tags: u64 = mem.read_obj(GuestAddress(cb + abi::CB_BAD_TAGS))?;
    let last_bad = if bad_tags > 0 {
        Some((
            mem.read_obj(GuestAddress(cb + abi::CB_LAST_BAD_PAGE))?,
            mem.read_obj(GuestAddress(cb + abi::CB_LAST_BAD_VALUE))?,
        ))
    } else {
        None
    };
    let (pages_checked, pages_mismatched) = if config.verify {
        verify_pages(mem, counts)?
    } else {
        (0, 0)
    };
    Ok(Integrity {
        ok: bad_tags == 0 && pages_mismatched == 0,
        bad_tags,
        last_bad,
        pages_checked,
        pages_mismatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::VmHandle;

    fn have_kvm() -> bool {
        if std::path::Path::new("/dev/kvm").exists() {
            return true;
        }
        base::tier::skip(base::tier::Tier::Kvm, "/dev/kvm is absent on this host");
        false
    }

    fn small(pattern: Pattern) -> ProbeConfig {
        ProbeConfig {
            mem_bytes: 8 << 20,
            pattern,
            passes: 2,
            seed: 3,
            verify: true,
            seccomp: true,
        }
    }

    #[test]
    fn hooks_see_test_ram_before_the_vcpu_and_its_tid() {
        if !have_kvm() {
            return;
        }
        let events = Arc::new(Mutex::new(Vec::<String>::new()));
        let (e1, e2, e3, e4, e5) = (
            events.clone(),
            events.clone(),
            events.clone(),
            events.clone(),
            events.clone(),
        );
        let hooks = ProbeHooks {
            on_test_ram: Some(Box::new(move |r: &HostRegion| {
                assert_eq!(r.guest_addr, abi::TEST_RAM_BASE);
                assert_eq!(r.len, 8 << 20);
                // Nothing touched yet: the mapping is still empty (reads as zero).
                // SAFETY: the region is a live, readable mapping for the whole run.
                let first = unsafe { (r.host_addr as *const u64).read_volatile() };
                assert_eq!(first, 0);
                e1.lock().unwrap().push("test_ram".into());
                Ok(())
            })),
            on_vcpu_start: Some(Arc::new(move |i, tid| {
                e2.lock().unwrap().push(format!("vcpu{i}:{tid}"));
            })),
            on_started: Some(Box::new(move |_h: VmHandle| {
                e3.lock().unwrap().push("started".into());
            })),
            on_pass_end: Some(Arc::new(move |pass| {
                e4.lock().unwrap().push(format!("pass{pass}"));
            })),
            on_finish: Some(Box::new(move || {
                e5.lock().unwrap().push("finish".into());
            })),
        };
        let r = run_probe(&small(Pattern::Random), hooks).unwrap();
        let events = events.lock().unwrap().clone();
        assert_eq!(events[0], "test_ram", "{events:?}");
        let ends: Vec<&String> = events.iter().filter(|e| e.starts_with("pass")).collect();
        assert_eq!(ends, ["pass1", "pass2"], "{events:?}");
        assert_eq!(
            events.last().map(String::as_str),
            Some("finish"),
            "{events:?}"
        );
        // Pass 2 re-touches resident pages: no host faults; pass 1 first-touched all.
        assert_eq!(r.steady.from_pass, 2);
        assert_eq!(r.steady.accesses, 2048);
        assert!(r.steady.accesses_per_sec > 0.0);
        assert!(r.passes[0].faulted_accesses > 1000, "{:?}", r.passes[0]);
        assert!(
            events.contains(&format!("vcpu0:{}", r.vcpu_tids[0])),
            "{events:?}"
        );
        assert!(events.contains(&"started".to_string()));
        assert_ne!(r.vcpu_tids[0], std::process::id() as i32);
        assert_eq!(r.pages_touched, 2048);
        assert!(r.integrity.ok);
    }

    #[test]
    fn wrong_page_data_is_caught() {
        if !have_kvm() {
            return;
        }
        // Plant another page's tag in page 5 before the guest runs.
        let hooks = ProbeHooks {
            on_test_ram: Some(Box::new(|r: &HostRegion| {
                let wrong = abi::page_tag(abi::TEST_RAM_BASE + 6 * 4096);
                // SAFETY: page 5 is inside the live, writable test RAM mapping and no
                // vCPU runs yet.
                unsafe { ((r.host_addr + 5 * 4096) as *mut u64).write_volatile(wrong) };
                Ok(())
            })),
            ..Default::default()
        };
        let r = run_probe(&small(Pattern::Seq), hooks).unwrap();
        assert!(!r.integrity.ok);
        assert_eq!(r.integrity.bad_tags, 1, "only the first access sees it");
        assert_eq!(
            r.integrity.last_bad,
            Some((5, abi::page_tag(abi::TEST_RAM_BASE + 6 * 4096)))
        );
        assert_eq!(r.integrity.pages_mismatched, 0, "the guest rewrote the tag");
    }

    #[test]
    fn a_hook_error_or_a_stop_ends_the_run_with_an_error() {
        if !have_kvm() {
            return;
        }
        let hooks = ProbeHooks {
            on_test_ram: Some(Box::new(|_: &HostRegion| Err("no userfaultfd".into()))),
            ..Default::default()
        };
        let e = run_probe(&small(Pattern::Seq), hooks).unwrap_err();
        assert!(matches!(e, ProbeError::Hook(_)), "{e:?}");

        // Stopped right after start: the payload cannot have finished 16k first touches.
        let mut config = small(Pattern::Random);
        config.mem_bytes = 64 << 20;
        let hooks = ProbeHooks {
            on_started: Some(Box::new(|h: VmHandle| h.stop())),
            ..Default::default()
        };
        let e = run_probe(&config, hooks).unwrap_err();
        assert!(
            matches!(e, ProbeError::Incomplete { passes: 2, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_bad_configs_before_touching_kvm() {
        let mut c = ProbeConfig {
            mem_bytes: 4095,
            ..Default::default()
        };
        assert!(matches!(
            run_probe(&c, ProbeHooks::default()),
            Err(ProbeError::Config(_))
        ));
        c.mem_bytes = 4096;
        c.passes = 0;
        assert!(matches!(
            run_probe(&c, ProbeHooks::default()),
            Err(ProbeError::Config(_))
        ));
    }
}

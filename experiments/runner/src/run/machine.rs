//! Assembling and running one scenario: the Linux guest ([`vmm::linux`]), its
//! swap disk ([`vmm::virtio::blk`]), the host swapper over its RAM
//! ([`swapper`]), the balloon ([`balloon`]) and the result channel (COM2);
//! a sampler thread that records the host-side timeline and drains the trace
//! rings while the guest runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use swapper::{FatalError, FaultRecord, GuestRegion, Swapper, ThreadKind};
use vmm::api::ApiServer;
use vmm::linux::{LinuxConfig, LinuxVm};
use vmm::virtio::blk::{Blk, BlkConfig, BlkHandle, BlkRecord, PageInstaller};
use vmm::{GuestMemoryExt, VmHandle};
use workloads::image::init;

use super::api::VmApi;
use super::guard::StallGuard;
use super::recent::Recent;
use super::result::HostSample;
use super::spec::{self, guest_command, SpecError};
use crate::boot::console::{GuestConsole, Show};
use crate::boot::{BootFiles, GuestRun};
use scenario::Scenario;

/// Errors setting up or running a scenario (not the guest's own failures,
/// which end up in the result's outcome).
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The guest image.
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),
    /// The VM.
    #[error(transparent)]
    Vm(#[from] vmm::linux::LinuxError),
    /// The host swapper.
    #[error("starting the host swapper")]
    Swapper(#[from] swapper::SwapperError),
    /// The swap disk.
    #[error("guest swap disk {path}")]
    SwapDisk {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The blk device.
    #[error("creating the swap disk device")]
    Blk(#[from] vmm::virtio::blk::BlkError),
    /// The guest command line.
    #[error("guest command line")]
    Cmdline(#[from] init::InitError),
    /// The control socket could not be opened.
    #[error("control socket: {0}")]
    Api(String),
    /// The balloon device.
    #[error("balloon device")]
    Balloon(#[from] balloon::BalloonError),
    /// The scenario asks for something not implemented.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The run did not end and the stall guard stepped in (see [`super::guard`]).
    #[error("{0}")]
    Stalled(String),
}

/// What the sampler drains while the guest runs: fault and request records,
/// timeline samples.
/// The last element counts records not kept (beyond [`MAX_KEPT_RECORDS`]).
type Collected = (Vec<FaultRecord>, Vec<BlkRecord>, Vec<HostSample>, u64);

/// Fault records and blk records a run keeps, each (about 64 bytes apiece:
/// at most ~130 MB per kind however long a guest faults); later ones are
/// counted as dropped.
pub const MAX_KEPT_RECORDS: usize = 2_000_000;

/// Appends `more` to `into` up to [`MAX_KEPT_RECORDS`], counting the rest in
/// `dropped`.
fn keep<T>(into: &mut Vec<T>, more: Vec<T>, dropped: &mut u64) {
    let room = MAX_KEPT_RECORDS.saturating_sub(into.len());
    *dropped += more.len().saturating_sub(room) as u64;
    into.extend(more.into_iter().take(room));
}

/// Device numbers in the swapper's thread registry.
pub const BLK_DEVICE: u32 = 0;
/// The balloon's worker.
pub const BALLOON_DEVICE: u32 = 1;

/// Everything a run produced, raw.
pub struct RawRun {
    /// The guest's run as `swaplab boot` sees it (report, console marks).
    pub guest: GuestRun,
    /// Channel lines with their arrival time (s since start).
    pub channel: Vec<(f64, String)>,
    /// Host fault records (all of them, drained while running).
    pub faults: Vec<FaultRecord>,
    /// blk request records.
    pub requests: Vec<BlkRecord>,
    /// Records the rings dropped (0 unless the sampler fell behind).
    pub dropped: u64,
    /// Final swapper status.
    pub swapper: Option<swapper::SwapperStatus>,
    /// Swapper fatal errors.
    pub fatal: Vec<FatalError>,
    /// The blk counters at the end.
    pub blk: Option<serde_json::Value>,
    /// The balloon's metrics, last stats and policy decisions.
    pub balloon: Option<serde_json::Value>,
    /// Host timeline.
    pub timeline: Vec<HostSample>,
    /// Guest RAM bytes.
    pub guest_mem: u64,
    /// The origin of fault and blk record times (the swapper's epoch).
    pub epoch: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A periodic sampler stopped through a condition variable (no sleeps).
struct Stop {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    fn wait(&self, d: Duration) -> bool {
        let g = lock(&self.flag);
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    fn stop(&self) {
        *lock(&self.flag) = true;
        self.cv.notify_all();
    }
}

/// Creates a sparse swap image of `bytes` in `dir`.
fn swap_image(dir: &Path, bytes: u64) -> Result<PathBuf, MachineError> {
    let path = dir.join("guest-swap.img");
    let err = |source| MachineError::SwapDisk {
        path: path.clone(),
        source,
    };
    let f = std::fs::File::create(&path).map_err(err)?;
    f.set_len(bytes).map_err(err)?;
    Ok(path)
}

/// Stops whichever machine is running from another thread (Ctrl-C): the
/// machine attaches its VM while the guest runs. Once interrupted, it stays
/// so: a machine attached later is stopped at once.
#[derive(Clone, Default)]
pub struct Interrupter(Arc<Mutex<InterruptState>>);

#[derive(Default)]
struct InterruptState {
    vm: Option<VmHandle>,
    reason: Option<String>,
}

impl Interrupter {
    /// Stops the running machine, if any, and every later one.
    pub fn interrupt(&self, reason: &str) {
        let mut g = lock(&self.0);
        if let Some(vm) = &g.vm {
            vm.abort(reason.to_string());
        }
        g.reason.get_or_insert_with(|| reason.to_string());
    }

    /// Why it was interrupted, if it was.
    pub fn reason(&self) -> Option<String> {
        lock(&self.0).reason.clone()
    }

    pub(crate) fn attach(&self, vm: VmHandle) {
        let mut g = lock(&self.0);
        if let Some(r) = &g.reason {
            vm.abort(r.clone());
        }
        g.vm = Some(vm);
    }

    pub(crate) fn detach(&self) {
        lock(&self.0).vm = None;
    }
}

/// How to run a machine, besides its scenario.
pub struct MachineOptions<'a> {
    /// Scratch directory (swap image, host store files).
    pub scratch: &'a Path,
    /// What of the guest console to show on stderr.
    pub show: Show,
    /// Where to log the whole console.
    pub console_log: Option<&'a Path>,
    /// Serve the control socket here while the guest runs.
    pub api_sock: Option<PathBuf>,
    /// Run this guest command instead of the scenario's workload.
    pub command: Option<String>,
    /// Show the console on stdout (`swaplab boot`) rather than stderr.
    pub console_to_stdout: bool,
    /// Lets the caller stop the run (the guest is aborted, the run fails).
    pub interrupter: Option<Interrupter>,
}

/// Runs `spec` once, under a [`StallGuard`].
pub fn run_machine(spec: &Scenario, opts: MachineOptions<'_>) -> Result<RawRun, MachineError> {
    let guard = StallGuard::start(&spec.name, Duration::from_secs(spec.timeout_s));
    let result = assemble_and_run(spec, opts, &guard);
    match (guard.finish(), result) {
        // It stalled while tearing down: the run's data is not to be trusted.
        (Some(reason), Ok(_)) => Err(MachineError::Stalled(reason)),
        (_, result) => result,
    }
}

fn assemble_and_run(
    spec: &Scenario,
    opts: MachineOptions<'_>,
    guard: &StallGuard,
) -> Result<RawRun, MachineError> {
    guard.stage("assembling the machine");
    let (scratch, show, console_log) = (opts.scratch, opts.show, opts.console_log);
    let files = BootFiles::resolve(None, None, None, false)?;
    let mut base = files.cmdline.clone();
    if spec.guest.swap.is_some() {
        base.push_str(&format!(" swaplab.swap={}", spec::GUEST_DISK));
    }
    // Fewer async page faults: the vCPU thread takes more of its host faults
    // itself. KVM still hands some to kworkers (it halts a vCPU whose guest
    // cannot take them), so the analysis counts unregistered threads with the
    // vCPUs.
    base.push_str(" swaplab.channel=1 no-kvmapf");
    // Debian's kernel zeroes every page it allocates (init_on_alloc), so a
    // page-cache page the disk is about to fill is first written by the vCPU:
    // the host's false read would hide behind a zeroing fault, and the disk's
    // data would never land in a host-evicted frame. Off, as on kernels of
    // the VSwapper era, so the stale/false reads and their mitigation show.
    base.push_str(" init_on_alloc=0");
    let command = opts.command.clone().unwrap_or_else(|| guest_command(spec));
    let cmdline = init::cmdline_with_run(&base, Some(&command))?;

    let t0 = Arc::new(Mutex::new(None::<Instant>));
    let channel: Arc<Mutex<Vec<(f64, String)>>> = Arc::default();
    let registry: Arc<Mutex<Option<swapper::ThreadRegistry>>> = Arc::default();
    let mut config = LinuxConfig::new(&files.kernel, spec.guest.mem.bytes(), spec.guest.cpus);
    config.initrd = files.initrd.clone();
    config.cmdline = cmdline;
    let log =
        match console_log {
            Some(p) => Some(std::fs::File::create(p).map_err(|source| {
                crate::boot::BootError::ConsoleLog {
                    path: p.to_path_buf(),
                    source,
                }
            })?),
            None => None,
        };
    let out: Box<dyn std::io::Write + Send> = if opts.console_to_stdout {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::io::stderr())
    };
    let (sink, marks) = GuestConsole::new(show, out, log);
    config.console = Some(Box::new(sink));
    // What `vm.recent` shows, when there is a control socket to ask.
    let recent: Option<Arc<Recent>> = opts
        .api_sock
        .as_ref()
        .map(|_| Arc::new(Recent::new(Instant::now())));
    config.channel = Some({
        let (channel, t0, recent) = (channel.clone(), t0.clone(), recent.clone());
        Box::new(move |line: &str| {
            let t = lock(&t0).map_or(0.0, |t| t.elapsed().as_secs_f64());
            if let Some(r) = &recent {
                if let Some(text) = super::recent::agent_event(line) {
                    r.push_event("guest", &text);
                }
            }
            lock(&channel).push((t, line.to_string()));
        })
    });
    config.on_vcpu_start = Some({
        let registry = registry.clone();
        Arc::new(move |index, tid| {
            if let Some(r) = lock(&registry).as_ref() {
                r.register(tid, ThreadKind::Vcpu(index));
            }
        })
    });
    let mut vm = LinuxVm::new(config)?;
    let channel_input = vm.channel_input();
    // Kept until the swapper is gone: the mapping must outlive it.
    let memory = vm.memory().clone();

    // The swapper's fatal errors stop this run's guest (or stop it as soon
    // as it starts).
    let fatal = Interrupter::default();
    let swapper = match &spec.host {
        Some(h) => {
            let mut cfg = spec::swapper_config(&spec.name, h, scratch)?;
            cfg.on_fatal = Some({
                let fatal = fatal.clone();
                Arc::new(move |e: &FatalError| fatal.interrupt(&format!("host swapper: {e}")))
            });
            let regions: Vec<GuestRegion> = memory
                .host_regions()
                .iter()
                .map(|r| GuestRegion {
                    addr: r.host_addr,
                    len: r.len,
                })
                .collect();
            guard.stage("starting the host swapper");
            // SAFETY: the regions are guest RAM, private anonymous mappings the
            // VMM created; `memory` keeps them mapped until after the swapper
            // is shut down below, on every path (and the guard, which may
            // hold the swapper for a while, holds the memory as long). The
            // VMM reaches guest RAM only through vm-memory's volatile
            // accessors, never Rust references.
            let sw = Arc::new(unsafe { Swapper::start(cfg, &regions) }?);
            guard.swapper(&sw, &memory);
            guard.stage("attaching the devices");
            *lock(&registry) = Some(sw.registry());
            Some(sw)
        }
        None => None,
    };
    let epoch = swapper.as_ref().map_or_else(Instant::now, |s| s.epoch());

    let blk: Option<BlkHandle> = match spec.guest.swap {
        Some(bytes) => {
            let path = swap_image(scratch, bytes.bytes())?;
            let registry = registry.clone();
            let dev = Blk::new(BlkConfig {
                id: "swaplab-swap".into(),
                epoch,
                on_thread_start: Some(Box::new(move |tid| {
                    if let Some(r) = lock(&registry).as_ref() {
                        r.register(tid, ThreadKind::Device(BLK_DEVICE));
                    }
                })),
                trace_capacity: 1 << 20,
                install_page: swapper
                    .as_ref()
                    .filter(|_| spec::false_reads_mitigated(spec.host.as_ref()))
                    .map(|sw| install_hook(sw, &memory)),
                ..BlkConfig::new(path)
            })?;
            let handle = dev.handle();
            vm.add_virtio("swap", Box::new(dev))?;
            Some(handle)
        }
        None => None,
    };

    let balloon =
        super::balloon::attach(&mut vm, spec, swapper.as_ref(), &memory, &registry, epoch)?;

    let running = vm.start()?;
    guard.vm(running.handle());
    guard.stage("running the guest");
    let started = running.started();
    let api = match &opts.api_sock {
        Some(path) => Some(
            ApiServer::start(
                path,
                Arc::new(VmApi {
                    balloon: balloon.as_ref().map(|b| b.handle.clone()),
                    swapper: swapper.clone(),
                    blk: blk.clone(),
                    regions: memory.host_regions(),
                    guest_mem: spec.guest.mem.bytes(),
                    started,
                    recent: recent.clone(),
                    channel_input,
                }),
            )
            .map_err(|e| MachineError::Api(e.to_string()))?,
        ),
        None => None,
    };
    *lock(&t0) = Some(started);
    {
        let h = running.handle();
        if let Some(i) = &opts.interrupter {
            i.attach(h.clone());
        }
        fatal.attach(h);
    }

    let stop = Arc::new(Stop {
        flag: Mutex::new(false),
        cv: Condvar::new(),
    });
    let collected: Arc<Mutex<Collected>> = Arc::default();
    let sampler = {
        let (stop, collected) = (stop.clone(), collected.clone());
        let (sw, blk, recent) = (swapper.clone(), blk.clone(), recent.clone());
        let mut balloon = balloon;
        let guest_mem = spec.guest.mem.bytes();
        let regions = memory.host_regions();
        std::thread::Builder::new()
            .name("swaplab-sampler".into())
            .spawn(move || loop {
                let done = stop.wait(Duration::from_millis(250));
                let mut guard = lock(&collected);
                let c = &mut *guard;
                let mut sample = HostSample {
                    t_s: started.elapsed().as_secs_f64(),
                    ..HostSample::default()
                };
                let status = sw.as_ref().map(|sw| {
                    let drained = sw.drain_trace();
                    if let Some(r) = &recent {
                        r.push_faults(&drained);
                    }
                    keep(&mut c.0, drained, &mut c.3);
                    sw.status()
                });
                if let Some(st) = &status {
                    sample.host_swap_ins = st.counters.swapin_store;
                    sample.host_evictions = st.counters.evictions;
                }
                sample.host_resident_bytes =
                    super::api::host_resident_bytes(status.as_ref(), &regions).unwrap_or(guest_mem);
                if let Some(b) = balloon.as_mut() {
                    // The event ring is only drained for `vm.recent`.
                    if let Some(r) = &recent {
                        for text in super::recent::balloon_events(&b.handle.drain_events()) {
                            r.push_event("balloon", &text);
                        }
                    }
                    b.step(sample.host_resident_bytes, guest_mem);
                    sample.balloon_bytes = b.handle.actual_bytes();
                    sample.balloon_target_bytes = b.handle.target_bytes();
                }
                if let Some(b) = &blk {
                    keep(&mut c.1, b.drain_trace(), &mut c.3);
                    let k = b.counters();
                    sample.disk_reads = k.reads;
                    sample.disk_writes = k.writes;
                }
                c.2.push(sample);
                if done {
                    return balloon.map(|b| b.finish());
                }
            })
            .expect("spawning the sampler thread")
    };
    let report = running.wait(Some(Duration::from_secs(spec.timeout_s)));
    guard.vm_ended();
    guard.stage("tearing down the machine");
    let ended = Instant::now();
    stop.stop();
    let balloon = sampler.join().ok().flatten();
    drop(api);
    fatal.detach();
    if let Some(i) = &opts.interrupter {
        i.detach();
    }
    let report = report?;

    let (mut faults, mut requests, timeline, mut dropped) = std::mem::take(&mut *lock(&collected));
    // Devices first: their handles may hold the swapper (install hook, releaser).
    let blk_counters = blk.map(|b| {
        keep(&mut requests, b.drain_trace(), &mut dropped);
        dropped += b.trace().dropped();
        serde_json::to_value(b.counters()).unwrap_or_default()
    });
    let (status, fatal) = match swapper {
        Some(sw) => {
            keep(&mut faults, sw.drain_trace(), &mut dropped);
            let fatal = sw.fatal_errors();
            let st = match Arc::try_unwrap(sw) {
                Ok(sw) => sw.shutdown(),
                Err(sw) => {
                    // Someone still holds the swapper: guest RAM must stay
                    // mapped for as long as it lives, so it is leaked.
                    tracing::warn!(
                        "host swapper still referenced at the end of the run; guest RAM is leaked"
                    );
                    std::mem::forget(memory.clone());
                    sw.status()
                }
            };
            dropped += st.trace_dropped;
            (Some(st), fatal)
        }
        None => (None, Vec::new()),
    };
    drop(memory);
    let channel = std::mem::take(&mut *lock(&channel));
    let marks = lock(&marks).clone();
    Ok(RawRun {
        guest: GuestRun {
            report,
            marks,
            started,
            ended,
            channel: None,
        },
        channel,
        faults,
        requests,
        dropped,
        swapper: status,
        fatal,
        blk: blk_counters,
        balloon,
        timeline,
        guest_mem: spec.guest.mem.bytes(),
        epoch,
    })
}

/// The false-read mitigation's hook for the blk device: a whole guest page a
/// disk read fills goes to the swapper, which installs it if the page is
/// evicted. Holds the swapper weakly (the device may outlive the run).
fn install_hook(sw: &Arc<Swapper>, memory: &vm_memory::GuestMemoryMmap) -> PageInstaller {
    let sw = Arc::downgrade(sw);
    let memory = memory.clone();
    Arc::new(move |gpa, page| {
        let (Some(sw), Ok(r)) = (sw.upgrade(), memory.host_region_of(gpa.0)) else {
            return false;
        };
        let host = r.host_addr + (gpa.0 - r.guest_addr) as usize;
        sw.install_page(host, page) == swapper::Installed::Yes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_records_are_bounded_and_the_rest_counted() {
        let mut v = vec![0u8; MAX_KEPT_RECORDS - 2];
        let mut dropped = 0;
        keep(&mut v, vec![1, 2, 3, 4, 5], &mut dropped);
        assert_eq!((v.len(), dropped), (MAX_KEPT_RECORDS, 3));
        assert_eq!(&v[MAX_KEPT_RECORDS - 2..], [1, 2]);
        keep(&mut v, vec![6], &mut dropped);
        assert_eq!((v.len(), dropped), (MAX_KEPT_RECORDS, 4));
    }
}

//! Assembling and running one scenario: the Linux guest ([`vmm::linux`]), its
//! swap disk ([`vmm::virtio::blk`]), the host swapper over its RAM
//! ([`swapper`]), the balloon ([`super::balloon`]) and the result channel
//! (COM2); a sampler thread ([`super::sampler`]) that records the host-side
//! timeline and drains the trace rings while the guest runs.
//!
//! [`assemble_and_run`] goes through the stages the stall guard names:
//! assembling the machine (the guest's command line and VM, [`build_vm`]),
//! starting the host swapper ([`start_swapper`]), attaching the devices
//! ([`attach_blk`], the balloon), running the guest (the control socket,
//! the sampler) and tearing it down ([`tear_down`]: devices first, then the
//! swapper, and guest RAM last).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base::lock;
use swapper::store::StoreNode;
use swapper::{FatalError, FaultRecord, GuestRegion, Swapper, SwapperStatus, ThreadKind};
use vm_memory::GuestMemoryMmap;
use vmm::api::ApiServer;
use vmm::linux::LinuxVm;
use vmm::virtio::blk::{Blk, BlkConfig, BlkHandle, BlkRecord};
use vmm::GuestMemoryExt;
use workloads::image::init;

use super::api::VmApi;
use super::balloon;
use super::cpu::ThreadCpu;
use super::error::MachineError;
use super::guard::StallGuard;
use super::interrupt::Interrupter;
use super::kernel_host::KernelHost;
use super::ktrace::ShutdownWatch;
use super::mapper::{self, ROOT_DISK, SWAP_DISK};
use super::recent::{agent_event, Recent};
use super::result::HostSample;
use super::sampler::{keep, Collected, Sampler, Sources};
use super::spec::{self, guest_command};
use super::threads::{LateRegistry, BLK_DEVICE, ROOT_DEVICE};
use crate::boot::console::{GuestConsole, Marks, Show};
use crate::boot::{BootFiles, GuestRun};
use scenario::{HostSwapper, Scenario};

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
    /// Pages per server of a remote store at the end (empty for a local one).
    pub store_nodes: Vec<StoreNode>,
    /// The blk counters at the end.
    pub blk: Option<serde_json::Value>,
    /// The root disk's blk counters at the end, and the copy-on-write
    /// blocks its run wrote (`guest.root_disk`).
    pub root_blk: Option<serde_json::Value>,
    /// The balloon's metrics, last stats and policy decisions.
    pub balloon: Option<serde_json::Value>,
    /// Host timeline.
    pub timeline: Vec<HostSample>,
    /// Host CPU time by thread name while the guest ran.
    pub host_cpu: Vec<ThreadCpu>,
    /// Guest RAM bytes.
    pub guest_mem: u64,
    /// What the kernel host swapper did, if the run had it.
    pub kernel: Option<super::kernel_host::KernelHostReport>,
    /// The origin of fault and blk record times (the swapper's epoch).
    pub epoch: Instant,
    /// The guest kernel: Debian package, version and release (from the
    /// guest image's manifest, as the report names it).
    pub guest_kernel: Option<String>,
}

/// The guest's swap image in the scratch directory.
struct SwapImage {
    path: PathBuf,
    /// Open it `O_DIRECT` (see [`swap_image`]).
    direct: bool,
}

/// Creates the guest's swap image of `bytes` in `dir`: sparse, unless the
/// kernel swaps the host (`kernel`). Then its contents must not be charged to
/// the run's memory cgroup as if the VMM's (the userfaultfd swapper's limit
/// does not count them either): on tmpfs (the sandbox's scratch) every block
/// is allocated now, before the run joins the cgroup, so the pages are
/// charged where this process was; elsewhere the image is opened `O_DIRECT`,
/// as production VMMs open theirs (`cache=none`), so it has no page cache.
///
/// The bytes of `data` hold a pattern (every 8 bytes a function of their
/// offset): the part of the disk the workload reads into the guest's page
/// cache holds data, as a used disk does, not zeros the host would drop
/// for free at eviction.
fn swap_image(
    dir: &Path,
    bytes: u64,
    kernel: bool,
    data: std::ops::Range<u64>,
) -> Result<SwapImage, MachineError> {
    let path = dir.join("guest-swap.img");
    let err = |source| MachineError::SwapDisk {
        path: path.clone(),
        source,
    };
    // Private: it will hold what the guest swaps out.
    let f = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true),
        0o600,
    )
    .open(&path)
    .map_err(err)?;
    f.set_len(bytes).map_err(err)?;
    fill_pattern(&f, data.start..data.end.min(bytes)).map_err(err)?;
    let tmpfs = nix::sys::statfs::fstatfs(&f)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if kernel && tmpfs {
        let len = i64::try_from(bytes).unwrap_or(i64::MAX);
        nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, len)
            .map_err(|e| err(e.into()))?;
    }
    Ok(SwapImage {
        path,
        direct: kernel && !tmpfs,
    })
}

/// Writes the disk pattern over `range` of `f` (see [`swap_image`]).
fn fill_pattern(f: &std::fs::File, range: std::ops::Range<u64>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut at = range.start & !7;
    while at < range.end {
        let n = CHUNK.min(range.end - at);
        for (i, w) in buf[..n as usize].chunks_exact_mut(8).enumerate() {
            let x = (at + 8 * i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all_at(&buf[..n as usize], at)?;
        at += n;
    }
    Ok(())
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
    /// Make the guest triple-fault before its command (its kernel restarts
    /// with `reboot=t`, by a triple fault, on sysrq b): the test hook of
    /// [`super::resume::ENV_INJECT_TRIPLE_FAULT`].
    pub triple_fault_first: bool,
}

/// Runs `spec` once, under a [`StallGuard`].
pub fn run_machine(spec: &Scenario, opts: MachineOptions<'_>) -> Result<RawRun, MachineError> {
    // Declared before the guard, so dropped after it: the guard may hold the
    // swapper, whose store this server is, for a while after a stall.
    let (_server, spec) = super::private_store::start(spec, opts.scratch)?;
    let spec = spec.as_ref();
    let guard = StallGuard::start(&spec.name, Duration::from_secs(spec.timeout_s));
    let result = assemble_and_run(spec, opts, &guard);
    match (guard.finish(), result) {
        // It stalled while tearing down: the run's data is not to be trusted.
        (Some(reason), Ok(_)) => Err(MachineError::Stalled(reason)),
        (_, result) => result,
    }
}

/// Assembles the machine, runs the guest and tears the machine down, telling
/// `guard` each stage. Locals are dropped in reverse order on every path:
/// whatever holds the swapper before the swapper, and the swapper before
/// `memory`, the guest RAM it manages.
fn assemble_and_run(
    spec: &Scenario,
    opts: MachineOptions<'_>,
    guard: &StallGuard,
) -> Result<RawRun, MachineError> {
    guard.stage("assembling the machine");
    let kernel_host = spec::kernel_host(spec.host.as_ref());
    let kernel_swaps = kernel_host.is_some();
    let swap_img = match spec.guest.swap {
        Some(b) => {
            let w = &spec.workload;
            let cached = (w.disk_read_mb << 20)..((w.disk_read_mb + w.disk_cache_mb) << 20);
            Some(swap_image(opts.scratch, b.bytes(), kernel_swaps, cached)?)
        }
        None => None,
    };
    // Before guest RAM is mapped: everything the run touches from here on is
    // charged to the kernel swapper's cgroup. Dropped last, on every path.
    let mut kernel = kernel_host
        .map(|h| KernelHost::enter(h, spec.guest.mem.bytes()))
        .transpose()?;
    let files = BootFiles::for_kernel(spec.guest.kernel.as_deref())?;
    let cmdline = guest_cmdline(
        spec,
        &files,
        opts.command.as_deref(),
        opts.triple_fault_first,
    )?;
    let hooks = Hooks::new(opts.api_sock.is_some());
    let (mut vm, marks) = build_vm(spec, &opts, &files, cmdline, &hooks)?;
    let channel_input = vm.channel_input();
    // Kept until the swapper is gone: the mapping must outlive it.
    let memory = vm.memory().clone();

    // The swapper's fatal errors stop this run's guest (or stop it as soon
    // as it starts).
    let fatal = Interrupter::default();
    let swapper = start_swapper(spec, opts.scratch, &memory, &fatal, &hooks.registry, guard)?;
    let epoch = swapper.as_ref().map_or_else(Instant::now, |s| s.epoch());
    let devices = Devices {
        swapper: swapper.as_ref(),
        memory: &memory,
        registry: &hooks.registry,
        epoch,
    };
    let blk = attach_blk(&mut vm, spec, swap_img, &devices)?;
    let root = attach_root(&mut vm, spec, opts.scratch, &devices)?;
    let balloon = balloon::attach(
        &mut vm,
        spec,
        swapper.as_ref(),
        &memory,
        &hooks.registry,
        epoch,
    )?;

    let gauge = match kernel.as_mut() {
        Some(k) => Some(k.set_limit(&memory.host_regions())?),
        None => None,
    };
    let watch = crate::boot::watch_shutdowns();
    let running = vm.start()?;
    guard.vm(running.handle());
    guard.stage("running the guest");
    let started = running.started();
    let api = serve_api(opts.api_sock.as_deref(), || VmApi {
        balloon: balloon.as_ref().map(|b| b.handle.clone()),
        swapper: swapper.clone(),
        blk: blk.clone(),
        regions: memory.host_regions(),
        guest_mem: spec.guest.mem.bytes(),
        started,
        recent: hooks.recent.clone(),
        channel_input,
    })?;
    *lock(&hooks.t0) = Some(started);
    {
        let h = running.handle();
        if let Some(i) = &opts.interrupter {
            i.attach(h.clone());
        }
        fatal.attach(h);
    }
    let sampler = Sampler::start(Sources {
        started,
        swapper: swapper.clone(),
        blk: blk.clone(),
        balloon,
        recent: hooks.recent.clone(),
        regions: memory.host_regions(),
        guest_mem: spec.guest.mem.bytes(),
        kernel: gauge,
    });

    let report = running.wait(Some(Duration::from_secs(spec.timeout_s)));
    guard.vm_ended();
    guard.stage("tearing down the machine");
    let ended = Instant::now();
    let (balloon, mut collected) = sampler.finish();
    drop(api);
    fatal.detach();
    if let Some(i) = &opts.interrupter {
        i.detach();
    }
    let report = report?;

    let root_blk = root.map(|h| serde_json::to_value(h.counters()).unwrap_or_default());
    let torn = tear_down(blk, swapper, memory, &mut collected);
    let kernel = kernel.map(KernelHost::finish).transpose()?;
    let channel = std::mem::take(&mut *lock(&hooks.channel));
    let marks = lock(&marks).clone();
    Ok(RawRun {
        guest: GuestRun {
            report,
            marks,
            started,
            ended,
            channel: None,
            shutdown: watch.map(ShutdownWatch::finish).unwrap_or_default(),
        },
        channel,
        faults: collected.faults,
        requests: collected.requests,
        dropped: collected.dropped,
        swapper: torn.status,
        fatal: torn.fatal,
        store_nodes: torn.store_nodes,
        blk: torn.blk,
        root_blk,
        balloon,
        timeline: collected.timeline,
        host_cpu: collected.host_cpu,
        guest_mem: spec.guest.mem.bytes(),
        epoch,
        kernel,
        guest_kernel: files
            .image_dir
            .as_deref()
            .map(workloads::image::kernel_label)
            .filter(|k| !k.is_empty()),
    })
}

/// The guest's kernel command line: the image's, the run's switches, and the
/// command to run (the scenario's workload unless `command` is given).
fn guest_cmdline(
    spec: &Scenario,
    files: &BootFiles,
    command: Option<&str>,
    triple_fault_first: bool,
) -> Result<String, MachineError> {
    let mut base = files.cmdline.clone();
    if spec.guest.swap.is_some() {
        base.push_str(&format!(" swaplab.swap={}", spec::GUEST_DISK));
    }
    if spec.guest.root_disk {
        base.push(' ');
        base.push_str(&init::root_param(ROOT_SERIAL)?);
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
    let mut command = command.map_or_else(|| guest_command(spec), str::to_string);
    if triple_fault_first {
        base.push_str(" reboot=t");
        command = format!("echo b > /proc/sysrq-trigger; {command}");
    }
    Ok(init::cmdline_with_run(&base, Some(&command))?)
}

/// What the VM's hooks (result channel, vCPU start) share with the run.
struct Hooks {
    /// When the guest started: channel lines are timed from it.
    t0: Arc<Mutex<Option<Instant>>>,
    /// Channel lines with their arrival time (s since `t0`).
    channel: Arc<Mutex<Vec<(f64, String)>>>,
    /// The swapper's thread registry, once it has started.
    registry: LateRegistry,
    /// What `vm.recent` shows, when there is a control socket to ask.
    recent: Option<Arc<Recent>>,
}

impl Hooks {
    fn new(api: bool) -> Self {
        Self {
            t0: Arc::default(),
            channel: Arc::default(),
            registry: LateRegistry::default(),
            recent: api.then(|| Arc::new(Recent::new(Instant::now()))),
        }
    }
}

/// The VM with its console, result channel and vCPU registration (no
/// devices yet), and the console's marks.
fn build_vm(
    spec: &Scenario,
    opts: &MachineOptions<'_>,
    files: &BootFiles,
    cmdline: String,
    hooks: &Hooks,
) -> Result<(LinuxVm, Arc<Mutex<Marks>>), MachineError> {
    let mut config =
        crate::boot::linux_config(&files.kernel, spec.guest.mem.bytes(), spec.guest.cpus);
    config.initrd = files.initrd.clone();
    config.cmdline = cmdline;
    let log =
        match opts.console_log {
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
    let (sink, marks) = GuestConsole::new(opts.show, out, log);
    config.console = Some(Box::new(sink));
    config.channel = Some({
        let (channel, t0, recent) = (
            hooks.channel.clone(),
            hooks.t0.clone(),
            hooks.recent.clone(),
        );
        Box::new(move |line: &str| {
            let t = lock(&t0).map_or(0.0, |t| t.elapsed().as_secs_f64());
            if let Some(r) = &recent {
                if let Some(text) = agent_event(line) {
                    r.push_event("guest", &text);
                }
            }
            lock(&channel).push((t, line.to_string()));
        })
    });
    config.on_vcpu_start = Some({
        let registry = hooks.registry.clone();
        Arc::new(move |index, tid| registry.register(tid, ThreadKind::Vcpu(index)))
    });
    Ok((LinuxVm::new(config)?, marks))
}

/// Starts the scenario's host swapper over guest RAM, if it has one; its
/// fatal errors interrupt `fatal`. The guard learns of it (to release its
/// faults on a stall, keeping `memory` mapped meanwhile).
fn start_swapper(
    spec: &Scenario,
    scratch: &Path,
    memory: &GuestMemoryMmap,
    fatal: &Interrupter,
    registry: &LateRegistry,
    guard: &StallGuard,
) -> Result<Option<Arc<Swapper>>, MachineError> {
    let Some(h) = spec
        .host
        .as_ref()
        .filter(|h| h.swapper == HostSwapper::Uffd)
    else {
        return Ok(None);
    };
    let mut cfg = spec::swapper_config(h, scratch);
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
    // VMM created; `memory` (in `assemble_and_run`) keeps them mapped until
    // after the swapper is shut down in `tear_down`, on every path (and the
    // guard, which may hold the swapper for a while, holds the memory as
    // long). The VMM reaches guest RAM only through vm-memory's volatile
    // accessors, never Rust references.
    let sw = Arc::new(unsafe { Swapper::start(cfg, &regions) }?);
    guard.swapper(&sw, memory);
    guard.stage("attaching the devices");
    registry.set(sw.registry());
    Ok(Some(sw))
}

/// What the devices share of the machine.
struct Devices<'a> {
    swapper: Option<&'a Arc<Swapper>>,
    memory: &'a GuestMemoryMmap,
    registry: &'a LateRegistry,
    /// The origin of record times.
    epoch: Instant,
}

/// Adds the guest's swap disk to `vm`, if the scenario gives it one.
fn attach_blk(
    vm: &mut LinuxVm,
    spec: &Scenario,
    image: Option<SwapImage>,
    d: &Devices<'_>,
) -> Result<Option<BlkHandle>, MachineError> {
    let Some(image) = image else {
        return Ok(None);
    };
    let registry = d.registry.clone();
    let dev = Blk::new(BlkConfig {
        id: "swaplab-swap".into(),
        epoch: d.epoch,
        on_thread_start: Some(Box::new(move |tid| {
            registry.register(tid, ThreadKind::Device(BLK_DEVICE))
        })),
        trace_capacity: 1 << 20,
        mapper: mapper::mapper(
            d.swapper,
            d.memory,
            SWAP_DISK,
            spec::false_reads_mitigated(spec.host.as_ref()),
        ),
        // Under the kernel swapper, double paging and stale reads show as
        // the worker's own major faults during a request.
        count_major_faults: spec::kernel_host(spec.host.as_ref()).is_some(),
        direct: image.direct,
        ..BlkConfig::new(image.path)
    })?;
    mapper::register(d.swapper, SWAP_DISK, &dev)?;
    let handle = dev.handle();
    vm.add_virtio("swap", Box::new(dev))?;
    Ok(Some(handle))
}

/// The root disk's serial (virtio-blk GET_ID), by which `/init` finds it.
pub const ROOT_SERIAL: &str = "swaplab-root";

/// Adds the guest's root disk to `vm` if the scenario runs on it: a
/// copy-on-write view of the cached image (its writes go to a private file
/// in `scratch` that nothing else sees and that goes with the run). Its
/// worker is a device thread for the swapper, and with the false-read
/// mitigation its reads install evicted pages like the swap disk's.
fn attach_root(
    vm: &mut LinuxVm,
    spec: &Scenario,
    scratch: &Path,
    d: &Devices<'_>,
) -> Result<Option<BlkHandle>, MachineError> {
    if !spec.guest.root_disk {
        return Ok(None);
    }
    let rootfs = workloads::image::rootfs::find(None)?;
    let registry = d.registry.clone();
    let dev = Blk::overlay(
        BlkConfig {
            id: ROOT_SERIAL.into(),
            epoch: d.epoch,
            on_thread_start: Some(Box::new(move |tid| {
                registry.register(tid, ThreadKind::Device(ROOT_DEVICE))
            })),
            // Its requests are counted, not traced.
            trace_capacity: 1,
            mapper: mapper::mapper(
                d.swapper,
                d.memory,
                ROOT_DISK,
                spec::false_reads_mitigated(spec.host.as_ref()),
            ),
            ..BlkConfig::new(&rootfs.image)
        },
        scratch,
    )
    .map_err(MachineError::RootDisk)?;
    mapper::register(d.swapper, ROOT_DISK, &dev)?;
    let handle = dev.handle();
    vm.add_virtio("root", Box::new(dev))?;
    Ok(Some(handle))
}

/// Serves the control socket at `path`, if given, while the guest runs.
fn serve_api(
    path: Option<&Path>,
    api: impl FnOnce() -> VmApi,
) -> Result<Option<ApiServer>, MachineError> {
    let Some(path) = path else {
        return Ok(None);
    };
    ApiServer::start(path, Arc::new(api()))
        .map(Some)
        .map_err(|e| MachineError::Api(e.to_string()))
}

/// What tearing down leaves for the result.
struct TornDown {
    /// The blk counters at the end.
    blk: Option<serde_json::Value>,
    /// Final swapper status.
    status: Option<SwapperStatus>,
    /// Swapper fatal errors.
    fatal: Vec<FatalError>,
    /// Pages per server of a remote store, asked before the swapper shut down.
    store_nodes: Vec<StoreNode>,
}

/// Drains and drops the swap disk, then drains and shuts down the swapper,
/// then unmaps guest RAM (`memory`), adding the last records to `c`.
fn tear_down(
    blk: Option<BlkHandle>,
    swapper: Option<Arc<Swapper>>,
    memory: GuestMemoryMmap,
    c: &mut Collected,
) -> TornDown {
    // Devices first: their handles may hold the swapper (install hook, releaser).
    let blk = blk.map(|b| {
        keep(&mut c.requests, b.drain_trace(), &mut c.dropped);
        c.dropped += b.trace().dropped();
        serde_json::to_value(b.counters()).unwrap_or_default()
    });
    let (status, fatal, store_nodes) = match swapper {
        Some(sw) => {
            keep(&mut c.faults, sw.drain_trace(), &mut c.dropped);
            let fatal = sw.fatal_errors();
            // Before the shutdown, which deletes a remote store's keys.
            let nodes = sw.store_nodes().unwrap_or_else(|e| {
                tracing::warn!("pages per store node: {e}");
                Vec::new()
            });
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
            c.dropped += st.trace_dropped;
            (Some(st), fatal, nodes)
        }
        None => (None, Vec::new(), Vec::new()),
    };
    drop(memory);
    TornDown {
        blk,
        status,
        fatal,
        store_nodes,
    }
}

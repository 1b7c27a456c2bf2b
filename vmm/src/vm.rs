//! A KVM virtual machine: memslots over guest memory, vCPUs, buses, and its threads.
//!
//! Lifecycle: [`Vm::new`] creates the VM, registers every guest-memory region as a
//! memslot and creates the vCPUs (with the host's supported CPUID). The caller then sets
//! up vCPU state ([`Vm::vcpu`], e.g. with [`crate::flat`]) and devices
//! ([`Vm::register_mmio`], [`Vm::register_pio`]), and calls [`Vm::start`], which spawns
//! one thread per vCPU and returns a [`RunningVm`]. [`RunningVm::wait`] joins them and
//! returns a [`VmReport`]. A [`VmHandle`] stops the VM from any thread.
//!
//! Nothing here is process-global except the (stateless) kick signal handler, so a
//! process may run several VMs at once.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::Serialize;
use vm_memory::GuestMemoryMmap;

use crate::bus::{Bus, BusError, SharedDevice};
use crate::exits::ExitStats;
use crate::memory::GuestMemoryExt;
use crate::stats::{KvmStats, StatsReader};
use crate::stop::{install_kick_handler, Shared};
use crate::vcpu::VcpuStartHook;
use crate::vcpu::{self, VcpuContext, VcpuError, VcpuReport};

/// Where KVM may put the three pages it needs for real-mode emulation on Intel hosts
/// without unrestricted guest. Guest layouts must keep RAM and MMIO out of it.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// Errors from creating, configuring or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{op} failed")]
    Kvm {
        /// Which operation.
        op: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Zero vCPUs requested.
    #[error("a VM needs at least one vCPU")]
    NoVcpus,
    /// No such vCPU.
    #[error("no vCPU {0}")]
    NoSuchVcpu(u32),
    /// Registering a device failed.
    #[error("cannot register device")]
    Bus(#[from] BusError),
    /// A vCPU thread could not be spawned.
    #[error("cannot spawn the thread for vCPU {index}")]
    Spawn {
        /// vCPU index.
        index: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A vCPU thread panicked.
    #[error("vCPU {0} thread panicked")]
    Panicked(u32),
    /// Stopped through [`VmHandle::abort`].
    #[error("VM aborted: {0}")]
    Aborted(String),
}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

/// VM-wide options.
#[derive(Clone, Default)]
pub struct VmConfig {
    /// Number of vCPUs (at least 1).
    pub vcpus: u32,
    /// Told each vCPU thread's TID as it starts.
    pub on_vcpu_start: Option<VcpuStartHook>,
}

impl std::fmt::Debug for VmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmConfig")
            .field("vcpus", &self.vcpus)
            .field("on_vcpu_start", &self.on_vcpu_start.is_some())
            .finish()
    }
}

/// KVM's in-kernel interrupt controllers (`KVM_CREATE_IRQCHIP`: PIC, IOAPIC and a
/// local APIC per vCPU) and, optionally, its PIT, created before the vCPUs. With them
/// `HLT` and interrupt delivery stay in the kernel, and devices raise interrupts through
/// irqfds on GSIs (see [`Vm::fd`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IrqChip {
    /// Also create the in-kernel i8254 PIT (`KVM_CREATE_PIT2`).
    pub pit: bool,
}

/// Stops a VM from any thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct VmHandle {
    shared: Arc<Shared>,
}

impl VmHandle {
    /// Ask every vCPU to leave `KVM_RUN` and end; the VM's result is success.
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// Stop the VM and make [`RunningVm::wait`] fail with `reason` (the first reason wins),
    /// e.g. when a backing store failed and guest memory can no longer be trusted.
    pub fn abort(&self, reason: impl Into<String>) {
        self.shared.abort(reason.into());
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop_requested()
    }
}

struct StatsReaders {
    vm: StatsReader,
    vcpus: Vec<StatsReader>,
}

fn open_stats(kvm: &Kvm, vm: &VmFd, vcpus: &[VcpuFd]) -> Result<StatsReaders, String> {
    if kvm.check_extension_raw(kvm_bindings::KVM_CAP_BINARY_STATS_FD.into()) <= 0 {
        return Err("the kernel lacks KVM_CAP_BINARY_STATS_FD".into());
    }
    let open = |what: &str, fd: &dyn std::os::fd::AsRawFd| {
        StatsReader::open(&fd.as_raw_fd()).map_err(|e| {
            let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            format!("{what}: {chain}")
        })
    };
    Ok(StatsReaders {
        vm: open("VM stats fd", vm)?,
        vcpus: vcpus
            .iter()
            .map(|v| open("vCPU stats fd", v))
            .collect::<Result<_, _>>()?,
    })
}

fn read_stats(stats: &Result<StatsReaders, String>) -> KvmStats {
    let readers = match stats {
        Ok(r) => r,
        Err(reason) => return KvmStats::unavailable(reason.clone()),
    };
    let snap = || -> Result<KvmStats, crate::stats::StatsError> {
        Ok(KvmStats {
            available: true,
            unavailable_reason: None,
            vm: Some(readers.vm.read()?),
            vcpus: readers
                .vcpus
                .iter()
                .map(StatsReader::read)
                .collect::<Result<_, _>>()?,
        })
    };
    snap().unwrap_or_else(|e| KvmStats::unavailable(format!("reading KVM stats: {e}")))
}

/// A configured VM whose vCPUs have not started.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    memory: GuestMemoryMmap,
    vcpus: Vec<VcpuFd>,
    pio: Bus,
    mmio: Bus,
    config: VmConfig,
    stats: Result<StatsReaders, String>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("regions", &self.memory.host_regions())
            .field("vcpus", &self.vcpus.len())
            .field("pio", &self.pio)
            .field("mmio", &self.mmio)
            .finish()
    }
}

impl Vm {
    /// Create a VM over `memory` (each region becomes a memslot, in order) with
    /// `config.vcpus` vCPUs, each given the host's supported CPUID.
    pub fn new(memory: GuestMemoryMmap, config: VmConfig) -> Result<Self, VmError> {
        Self::create(memory, config, None)
    }

    /// Like [`Vm::new`], with KVM's in-kernel interrupt controllers (and PIT, if asked)
    /// created before the vCPUs, as a guest operating system needs.
    pub fn with_irqchip(
        memory: GuestMemoryMmap,
        config: VmConfig,
        chip: IrqChip,
    ) -> Result<Self, VmError> {
        Self::create(memory, config, Some(chip))
    }

    fn create(
        memory: GuestMemoryMmap,
        config: VmConfig,
        chip: Option<IrqChip>,
    ) -> Result<Self, VmError> {
        if config.vcpus == 0 {
            return Err(VmError::NoVcpus);
        }
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        // Only used by KVM for real-mode emulation on some Intel hosts; PVM and AMD do
        // not need it, so a failure here is not fatal.
        if let Err(e) = fd.set_tss_address(KVM_TSS_ADDRESS as usize) {
            tracing::debug!("KVM_SET_TSS_ADDR: {e} (ignored)");
        }
        for (slot, r) in memory.host_regions().iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: r.guest_addr,
                memory_size: r.len as u64,
                userspace_addr: r.host_addr as u64,
            };
            // SAFETY: the host range is a live mapping owned by `memory`, which this VM
            // keeps (a clone) for as long as the memslot exists (the VM fd's lifetime).
            unsafe { fd.set_user_memory_region(region) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        if let Some(chip) = chip {
            // Must precede KVM_CREATE_VCPU, so each vCPU gets an in-kernel local APIC.
            fd.create_irq_chip()
                .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
            if chip.pit {
                let pit = kvm_pit_config {
                    flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
                    ..Default::default()
                };
                fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
            }
        }
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::with_capacity(config.vcpus as usize);
        for i in 0..config.vcpus {
            let vcpu = fd
                .create_vcpu(i.into())
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
            vcpus.push(vcpu);
        }
        let stats = open_stats(&kvm, &fd, &vcpus);
        Ok(Self {
            kvm,
            fd,
            memory,
            vcpus,
            pio: Bus::new(),
            mmio: Bus::new(),
            config,
            stats,
        })
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The `/dev/kvm` handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM fd (for ioctls this type does not wrap, e.g. an irqchip).
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpus.len() as u32
    }

    /// vCPU `index`, to set its registers before [`Vm::start`].
    pub fn vcpu(&self, index: u32) -> Result<&VcpuFd, VmError> {
        self.vcpus
            .get(index as usize)
            .ok_or(VmError::NoSuchVcpu(index))
    }

    /// The guest TSC frequency in kHz (`KVM_GET_TSC_KHZ` on vCPU 0).
    pub fn tsc_khz(&self) -> Result<u32, VmError> {
        self.vcpus[0]
            .get_tsc_khz()
            .map_err(kvm_err("KVM_GET_TSC_KHZ"))
    }

    /// Put `device` on the MMIO bus at `[base, base + len)`.
    pub fn register_mmio(
        &mut self,
        base: u64,
        len: u64,
        name: &str,
        device: SharedDevice,
    ) -> Result<(), VmError> {
        Ok(self.mmio.insert(base, len, name, device)?)
    }

    /// Put `device` on the port-I/O bus at ports `[base, base + len)`.
    pub fn register_pio(
        &mut self,
        base: u16,
        len: u16,
        name: &str,
        device: SharedDevice,
    ) -> Result<(), VmError> {
        Ok(self.pio.insert(base.into(), len.into(), name, device)?)
    }

    /// KVM's binary stats now (or why they are unavailable).
    pub fn kvm_stats(&self) -> KvmStats {
        read_stats(&self.stats)
    }

    /// Spawn the vCPU threads.
    pub fn start(self) -> Result<RunningVm, VmError> {
        install_kick_handler().map_err(VcpuError::Signal)?;
        crate::poison::install_sigbus_handler().map_err(VcpuError::Signal)?;
        let shared = Arc::new(Shared::new(self.vcpus.len()));
        let (pio, mmio) = (Arc::new(self.pio), Arc::new(self.mmio));
        let started = Instant::now();
        let mut threads = Vec::with_capacity(self.vcpus.len());
        for (index, fd) in (0u32..).zip(self.vcpus) {
            let ctx = VcpuContext {
                index,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                shared: shared.clone(),
                on_start: self.config.on_vcpu_start.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    seccomp::enter(seccomp::ThreadClass::Vcpu);
                    vcpu::run(ctx)
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(source) => {
                    shared.request_stop();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(VmError::Spawn { index, source });
                }
            }
        }
        Ok(RunningVm {
            _kvm: self.kvm,
            _fd: self.fd,
            memory: self.memory,
            shared,
            threads,
            stats: self.stats,
            started,
        })
    }
}

/// What a VM did, once all its vCPUs ended.
#[derive(Debug, Clone, Serialize)]
pub struct VmReport {
    /// Userspace exits summed over vCPUs.
    pub exits: ExitStats,
    /// Per-vCPU reports.
    pub vcpus: Vec<VcpuReport>,
    /// KVM's in-kernel statistics at the end.
    pub kvm_stats: KvmStats,
    /// Wall time from [`Vm::start`] to the last vCPU ending.
    pub wall_ns: u64,
}

/// A VM whose vCPU threads are running.
pub struct RunningVm {
    // Kept open until the threads are joined: the vCPU fds need the VM alive.
    _kvm: Kvm,
    _fd: VmFd,
    memory: GuestMemoryMmap,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Result<VcpuReport, VcpuError>>>,
    stats: Result<StatsReaders, String>,
    started: Instant,
}

impl RunningVm {
    /// A handle to stop the VM from any thread.
    pub fn handle(&self) -> VmHandle {
        VmHandle {
            shared: self.shared.clone(),
        }
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// KVM's binary stats now.
    pub fn kvm_stats(&self) -> KvmStats {
        read_stats(&self.stats)
    }

    /// Wait for every vCPU to end. Fails with the first vCPU error, or the abort reason.
    pub fn wait(mut self) -> Result<VmReport, VmError> {
        let mut reports = Vec::with_capacity(self.threads.len());
        let mut first_err = None;
        for (index, t) in (0u32..).zip(std::mem::take(&mut self.threads)) {
            match t.join() {
                Ok(Ok(r)) => reports.push(r),
                Ok(Err(e)) => {
                    first_err.get_or_insert(VmError::Vcpu(e));
                }
                Err(_) => {
                    self.shared.request_stop();
                    first_err.get_or_insert(VmError::Panicked(index));
                }
            }
        }
        let wall_ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let aborted = self.shared.take_abort_reason();
        if let Some(reason) = aborted {
            return Err(VmError::Aborted(reason));
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let mut exits = ExitStats::default();
        for r in &reports {
            exits.merge(&r.exits);
        }
        Ok(VmReport {
            exits,
            vcpus: reports,
            kvm_stats: read_stats(&self.stats),
            wall_ns,
        })
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shared.request_stop();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

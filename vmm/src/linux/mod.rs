//! Booting a stock Linux kernel: [`LinuxVm`] builds the machine, [`RunningLinux`]
//! runs it and reports how the guest ended ([`GuestOutcome`]).
//!
//! The machine: RAM per [`layout`] (vm-memory regions over the VMM's own anonymous
//! mappings, split around the 32-bit MMIO hole), KVM's in-kernel irqchip and PIT,
//! per-vCPU CPUID ([`cpuid`]), ACPI tables ([`crate::acpi`]: hardware-reduced FADT,
//! MADT, DSDT with the virtio-mmio devices), an 8250 console on COM1, optionally a
//! second 8250 on COM2 as the result channel ([`LinuxConfig::channel`]; the guest
//! sees it as `/dev/ttyS1`), the ACPI power registers and the i8042 reset line
//! ([`crate::devices`]), and any virtio-mmio devices added with [`LinuxVm::add_virtio`].
//!
//! ```no_run
//! # fn main() -> Result<(), vmm::linux::LinuxError> {
//! use vmm::linux::{LinuxConfig, LinuxVm};
//! let mut config = LinuxConfig::new("vmlinux", 512 << 20, 2);
//! config.initrd = Some("initramfs.cpio".into());
//! config.cmdline = "console=ttyS0 quiet panic=-1 pci=off".into();
//! config.console = Some(Box::new(std::io::stdout()));
//! let vm = LinuxVm::new(config)?;
//! // vm.memory() can be handed to a swapper here.
//! let report = vm.start()?.wait(Some(std::time::Duration::from_secs(60)))?;
//! println!("{:?}", report.outcome);
//! # Ok(()) }
//! ```

pub mod bootinfo;
pub mod cpuid;
mod error;
pub mod layout;
pub mod loader;
pub mod regs;
mod run;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Cap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use error::LinuxError;
pub use run::{GuestOutcome, LinuxReport, RunningLinux};

use crate::acpi;
use crate::bus::SharedDevice;
use crate::devices::console::{ConsoleLog, ConsoleWriter};
use crate::devices::irq::IrqFd;
use crate::devices::power::{self, AcpiPm, I8042Reset, PowerState};
use crate::devices::serial::{
    self, ChannelCounters, ChannelHook, ChannelInput, ChannelWriter, SerialDevice,
};
use crate::devices::Absent;
use crate::memory::{create_guest_memory, PAGE_SIZE};
use crate::vcpu::VcpuStartHook;
use crate::virtio::mmio::{self, MmioSlot, MmioTransport};
use crate::virtio::VirtioDevice;
use crate::vm::{IrqChip, Vm, VmConfig, VmError};
use bootinfo::BootInfoError;
use loader::{Entry, Kernel};
use regs::BootMode;
use run::{PanicWatch, WatchEvent};

/// Console bytes kept for reports and error messages.
pub const DEFAULT_CONSOLE_TAIL: usize = 64 << 10;
/// Most vCPUs (the MADT's xAPIC entries).
pub const MAX_VCPUS: u32 = 254;

/// Legacy ports Linux probes on a PC where this machine has nothing: Super I/O
/// configuration (0x2e, 0x4e), the CMOS RTC, the POST and DMA page registers, the
/// other three COM ports (COM2 unless the result channel is there) and PCI
/// configuration (even with `pci=off`). Claimed silently (reads return all-ones) so
/// the probes are not reported as unclaimed.
const ABSENT_PORTS: &[(u16, u16)] = &[
    (0x2e, 2),
    (0x4e, 2),
    (0x70, 2),
    (0x80, 1),
    (0x87, 1),
    (0x2e8, 8),
    (0x2f8, 8),
    (0x3e8, 8),
    (0xcf8, 8),
];

/// What to boot and how.
pub struct LinuxConfig {
    /// ELF vmlinux with a PVH note, or bzImage.
    pub kernel: PathBuf,
    /// initramfs (cpio, possibly compressed).
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in bytes (a multiple of 4 KiB, at least [`layout::MIN_MEM`]).
    pub mem_bytes: u64,
    /// vCPUs (1 to [`MAX_VCPUS`]).
    pub vcpus: u32,
    /// Where console output goes, besides the kept tail.
    pub console: Option<Box<dyn Write + Send>>,
    /// Console bytes kept for the report.
    pub console_tail: usize,
    /// Told each vCPU thread's TID as it starts.
    pub on_vcpu_start: Option<VcpuStartHook>,
    /// The result channel: a second UART on COM2 (port 0x2f8, IRQ 3, `/dev/ttyS1` in
    /// the guest, described in the DSDT only when set). Called on a vCPU thread once
    /// per complete line the guest writes there, line end removed; lines longer than
    /// [`serial::MAX_CHANNEL_LINE`] are cut and counted ([`LinuxVm::channel_counters`]).
    /// Keep it quick: the writing vCPU waits for it.
    pub channel: Option<ChannelHook>,
    /// Offer XSAVE (and AVX, PKU, ...) to the guest (default). Off for L1
    /// hypervisors that let the guest's `XSETBV` through, as QEMU TCG's
    /// emulated SVM does in the nested sandbox: see [`cpuid::hide_xsave`].
    pub xsave: bool,
}

impl std::fmt::Debug for LinuxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxConfig")
            .field("kernel", &self.kernel)
            .field("initrd", &self.initrd)
            .field("cmdline", &self.cmdline)
            .field("mem_bytes", &self.mem_bytes)
            .field("vcpus", &self.vcpus)
            .field("channel", &self.channel.is_some())
            .field("xsave", &self.xsave)
            .finish_non_exhaustive()
    }
}

impl LinuxConfig {
    /// `kernel` with `mem_bytes` of RAM and `vcpus` vCPUs; no initramfs, an empty
    /// command line, console output only kept in the report.
    pub fn new(kernel: impl Into<PathBuf>, mem_bytes: u64, vcpus: u32) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            mem_bytes,
            vcpus,
            console: None,
            console_tail: DEFAULT_CONSOLE_TAIL,
            on_vcpu_start: None,
            channel: None,
            xsave: true,
        }
    }

    fn validate(&self) -> Result<(), LinuxError> {
        if self.mem_bytes < layout::MIN_MEM || self.mem_bytes % PAGE_SIZE != 0 {
            return Err(LinuxError::Config(format!(
                "guest memory must be a multiple of 4 KiB and at least {} MiB, not {} bytes",
                layout::MIN_MEM >> 20,
                self.mem_bytes
            )));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(LinuxError::Config(format!(
                "a Linux guest needs 1 to {MAX_VCPUS} vCPUs, not {}",
                self.vcpus
            )));
        }
        Ok(())
    }
}

/// A Linux guest, loaded and wired, not yet running.
pub struct LinuxVm {
    vm: Vm,
    kernel: Kernel,
    initrd: Option<(u64, u64)>,
    cmdline_len: usize,
    mem_bytes: u64,
    power: PowerState,
    console: Arc<Mutex<ConsoleLog>>,
    panic: Arc<Mutex<PanicWatch>>,
    events: (mpsc::Sender<WatchEvent>, mpsc::Receiver<WatchEvent>),
    virtio: Vec<(String, MmioSlot, Arc<Mutex<MmioTransport>>)>,
    channel: Option<(Arc<ChannelCounters>, ChannelInput)>,
    created: Instant,
}

impl std::fmt::Debug for LinuxVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxVm")
            .field("vm", &self.vm)
            .field("kernel", &self.kernel.entry)
            .field("initrd", &self.initrd)
            .field("virtio", &self.virtio.len())
            .finish()
    }
}

fn device_err(name: &str) -> impl FnOnce(std::io::Error) -> LinuxError + '_ {
    move |e| LinuxError::Device {
        name: name.to_string(),
        source: Box::new(e),
    }
}

impl LinuxVm {
    /// Create the VM, load the kernel, initramfs and command line, and wire the
    /// platform devices.
    pub fn new(config: LinuxConfig) -> Result<Self, LinuxError> {
        let created = Instant::now();
        config.validate()?;
        let memory = create_guest_memory(&layout::ram_regions(config.mem_bytes))?;
        let mut vm = Vm::with_irqchip(
            memory,
            VmConfig {
                vcpus: config.vcpus,
                on_vcpu_start: config.on_vcpu_start,
            },
            IrqChip { pit: true },
        )?;
        set_cpuid(&vm, config.xsave)?;

        let mem = vm.memory().clone();
        let kernel = loader::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => {
                let floor = kernel.end.next_multiple_of(PAGE_SIZE);
                let limit = layout::low_ram_end(config.mem_bytes).min(kernel.initrd_limit());
                Some(loader::load_initrd(&mem, path, floor, limit)?)
            }
            None => None,
        };
        loader::write_cmdline(&mem, &config.cmdline)?;

        let (events_tx, events_rx) = mpsc::channel();
        let panic = Arc::new(Mutex::new(PanicWatch::default()));
        let (mut writer, console) = ConsoleWriter::new(config.console_tail);
        if let Some(sink) = config.console {
            writer.set_sink(sink);
        }
        writer.on_line(run::panic_hook(panic.clone(), events_tx.clone()));
        let irq = IrqFd::register(vm.fd(), serial::COM1_GSI).map_err(device_err("serial"))?;
        let uart: SharedDevice = Arc::new(Mutex::new(SerialDevice::new(
            Arc::new(irq),
            Box::new(writer),
        )));
        vm.register_pio(serial::COM1_PORT, serial::UART_PORTS, "com1", uart)?;
        let channel = match config.channel {
            Some(hook) => {
                let (writer, counters) = ChannelWriter::new(hook);
                let irq =
                    IrqFd::register(vm.fd(), serial::COM2_GSI).map_err(device_err("channel"))?;
                let uart = Arc::new(Mutex::new(SerialDevice::new(
                    Arc::new(irq),
                    Box::new(writer),
                )));
                let input = ChannelInput::new(uart.clone());
                vm.register_pio(serial::COM2_PORT, serial::UART_PORTS, "com2", uart)?;
                Some((counters, input))
            }
            None => None,
        };
        let power = PowerState::new();
        vm.register_pio(
            power::ACPI_PM_PORT,
            power::ACPI_PM_PORTS,
            "acpi-pm",
            Arc::new(Mutex::new(AcpiPm::new(power.clone(), acpi::S5_SLEEP_TYPE))),
        )?;
        vm.register_pio(
            power::I8042_COMMAND_PORT,
            1,
            "i8042",
            Arc::new(Mutex::new(I8042Reset::new(power.clone()))),
        )?;
        for &(port, len) in ABSENT_PORTS {
            if port == serial::COM2_PORT && channel.is_some() {
                continue;
            }
            vm.register_pio(port, len, "absent", Arc::new(Mutex::new(Absent::default())))?;
        }
        Ok(Self {
            vm,
            kernel,
            initrd,
            cmdline_len: config.cmdline.len(),
            mem_bytes: config.mem_bytes,
            power,
            console,
            panic,
            events: (events_tx, events_rx),
            virtio: Vec::new(),
            channel,
            created,
        })
    }

    /// Guest memory (to register with a swapper before the guest runs).
    pub fn memory(&self) -> &GuestMemoryMmap {
        self.vm.memory()
    }

    /// The underlying VM (to add devices).
    pub fn vm_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }

    /// The result channel's counters (lines, bytes, cut lines), if it is configured.
    /// They stay readable after [`LinuxVm::start`] consumes the VM.
    pub fn channel_counters(&self) -> Option<Arc<ChannelCounters>> {
        self.channel.as_ref().map(|(c, _)| c.clone())
    }

    /// Host-to-guest lines on the result channel (the guest reads them from
    /// `/dev/ttyS1`), if it is configured. Usable while the guest runs.
    pub fn channel_input(&self) -> Option<ChannelInput> {
        self.channel.as_ref().map(|(_, i)| i.clone())
    }

    /// Where the initramfs was loaded (address, size).
    pub fn initrd(&self) -> Option<(u64, u64)> {
        self.initrd
    }

    /// Add a virtio-mmio device in the next free slot; the DSDT will describe it.
    pub fn add_virtio(
        &mut self,
        name: &str,
        device: Box<dyn VirtioDevice>,
    ) -> Result<Arc<Mutex<MmioTransport>>, LinuxError> {
        let index = self.virtio.len() as u32;
        if index >= layout::VIRTIO_MAX_DEVICES {
            return Err(LinuxError::Config(format!(
                "at most {} virtio devices",
                layout::VIRTIO_MAX_DEVICES
            )));
        }
        let (base, gsi) = layout::virtio_slot(index);
        let slot = MmioSlot {
            base,
            size: layout::VIRTIO_MMIO_SIZE,
            gsi,
        };
        let t = mmio::attach(&mut self.vm, name, slot, device).map_err(|source| {
            LinuxError::Virtio {
                name: name.to_string(),
                source,
            }
        })?;
        self.virtio.push((name.to_string(), slot, t.clone()));
        Ok(t)
    }

    fn write_boot_info(&self) -> Result<BootMode, LinuxError> {
        let mem = self.vm.memory();
        let platform = acpi::Platform {
            vcpus: self.vm.vcpu_count(),
            apic_addr: layout::APIC_ADDR as u32,
            ioapic_addr: layout::IOAPIC_ADDR as u32,
            sleep_control_port: power::SLEEP_CONTROL_PORT,
            sleep_status_port: power::SLEEP_STATUS_PORT,
            reset_port: power::RESET_PORT,
            reset_value: power::RESET_VALUE,
            com1: Some((serial::COM1_PORT, serial::COM1_GSI as u8)),
            com2: self
                .channel
                .as_ref()
                .map(|_| (serial::COM2_PORT, serial::COM2_GSI as u8)),
            virtio: self
                .virtio
                .iter()
                .map(|(_, s, _)| acpi::VirtioSlot {
                    base: s.base,
                    size: s.size,
                    gsi: s.gsi,
                })
                .collect(),
        };
        let tables = acpi::build(&platform, layout::ACPI_ADDR)?;
        if tables.addr + tables.bytes.len() as u64 > layout::ACPI_END {
            return Err(LinuxError::Config(format!(
                "ACPI tables of {} bytes do not fit below 1 MiB",
                tables.bytes.len()
            )));
        }
        mem.write_slice(&tables.bytes, GuestAddress(tables.addr))
            .map_err(|source| BootInfoError::Memory {
                what: "ACPI tables",
                source,
            })?;
        mem.write_slice(
            &power::reset_vector_stub(),
            GuestAddress(power::RESET_VECTOR),
        )
        .map_err(|source| BootInfoError::Memory {
            what: "reset vector",
            source,
        })?;
        let e820 = layout::e820_map(self.mem_bytes);
        let mode = match self.kernel.entry {
            Entry::Pvh(entry) => {
                bootinfo::write_pvh(mem, &e820, self.initrd, tables.addr)?;
                BootMode::Pvh { entry }
            }
            Entry::BzImage(entry, header) => {
                bootinfo::write_zero_page(
                    mem,
                    header,
                    &e820,
                    self.initrd,
                    self.cmdline_len,
                    tables.addr,
                )?;
                BootMode::Linux64 { entry }
            }
        };
        regs::write_tables(mem, mode)?;
        Ok(mode)
    }

    /// Write the ACPI tables and boot structures, set up the vCPUs and start them.
    pub fn start(self) -> Result<RunningLinux, LinuxError> {
        let mode = self.write_boot_info()?;
        for i in 0..self.vm.vcpu_count() {
            let vcpu = self.vm.vcpu(i)?;
            regs::setup_common(vcpu, i)?;
            if i == 0 {
                regs::setup_boot_vcpu(vcpu, i, mode)?;
            }
        }
        let setup_ns = u64::try_from(self.created.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let running = self.vm.start()?;
        Ok(RunningLinux::new(
            running,
            self.power,
            self.console,
            self.panic,
            self.events,
            self.virtio,
            setup_ns,
        ))
    }
}

fn set_cpuid(vm: &Vm, xsave: bool) -> Result<(), LinuxError> {
    let kvm_err = |op| move |source| VmError::Kvm { op, source };
    let supported = vm
        .kvm()
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let tsc_deadline = vm.kvm().check_extension(Cap::TscDeadlineTimer);
    let count = vm.vcpu_count();
    for index in 0..count {
        let mut c = cpuid::for_vcpu(
            &supported,
            cpuid::Topology {
                index,
                count,
                tsc_deadline,
            },
        );
        if !xsave {
            cpuid::hide_xsave(c.as_mut_slice());
        }
        vm.vcpu(index)?
            .set_cpuid2(&c)
            .map_err(kvm_err("KVM_SET_CPUID2"))?;
    }
    Ok(())
}

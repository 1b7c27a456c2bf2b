//! The virtio-mmio transport (virtio 1.2, section 4.2; register layout version 2).
//!
//! [`MmioTransport`] is a [`BusDevice`] on the MMIO bus. It keeps the driver-visible
//! state — feature selectors, the selected queue and each queue's configuration, the
//! device status and the interrupt status — and checks every access against it:
//!
//! - registers are 32-bit and 32-bit aligned; config space takes 1, 2, 4 or 8 bytes
//!   inside [`VirtioDevice::config_len`];
//! - driver features may be written only between `DRIVER` and `FEATURES_OK`, and
//!   `FEATURES_OK` sticks only if the driver accepted a subset of the offered features
//!   including `VIRTIO_F_VERSION_1`;
//! - queues may be configured only after `FEATURES_OK`, before `DRIVER_OK`, while not
//!   ready; sizes must be powers of two up to the maximum;
//! - status bits are only added, in order (`ACKNOWLEDGE`, `DRIVER`, `FEATURES_OK`,
//!   `DRIVER_OK`), except `FAILED`; writing 0 resets the device.
//!
//! On `DRIVER_OK` the ready queues' rings are checked against guest memory and the
//! device is activated with them; if that fails the transport sets
//! `DEVICE_NEEDS_RESET` and raises a configuration interrupt. Anything invalid is
//! ignored (reads return 0), counted in [`TransportStats::invalid`] and logged with a
//! rate limit: the guest cannot make the VMM panic or flood its log.

use std::sync::{Arc, Mutex};

use kvm_ioctls::IoEventAddress;
use virtio_queue::{Queue, QueueState};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{
    status, Activation, ActiveQueue, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::bus::{BusAction, BusDevice, DeviceError};
use crate::devices::irq::{IrqFd, IrqLine};
use crate::devices::should_log;
use crate::vm::{Vm, VmError};

/// "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// Register layout version (modern).
pub const VERSION: u32 = 2;
/// Vendor ID reported to the guest ("SWPL").
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"SWPL");

/// Register offsets.
pub mod reg {
    /// Magic value.
    pub const MAGIC: u64 = 0x000;
    /// Version.
    pub const VERSION: u64 = 0x004;
    /// Device ID.
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor ID.
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device features (32 bits selected by `DEVICE_FEATURES_SEL`).
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Device features word selector.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features (32 bits selected by `DRIVER_FEATURES_SEL`).
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Driver features word selector.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Queue selector.
    pub const QUEUE_SEL: u64 = 0x030;
    /// Maximum size of the selected queue.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Size of the selected queue.
    pub const QUEUE_NUM: u64 = 0x038;
    /// Selected queue ready.
    pub const QUEUE_READY: u64 = 0x044;
    /// Queue notifier.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Interrupt status.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Interrupt acknowledge.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status.
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low 32 bits.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Descriptor table address, high 32 bits.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Available ring address, low.
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// Available ring address, high.
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// Used ring address, low.
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// Used ring address, high.
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// Shared memory region selector.
    pub const SHM_SEL: u64 = 0x0ac;
    /// Shared memory region length, low.
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// Shared memory region length, high.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// Shared memory region base, low.
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// Shared memory region base, high.
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// Configuration generation.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of device configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Errors attaching a device.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// An eventfd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The interrupt could not be wired to KVM.
    #[error("cannot register the irqfd for GSI {gsi}")]
    Irq {
        /// The GSI.
        gsi: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The device has no queues, too many, or a bad maximum size.
    #[error("device type {device_type} has an invalid queue layout: {why}")]
    Queues {
        /// Device type.
        device_type: u32,
        /// What is wrong.
        why: String,
    },
    /// The device does not offer VIRTIO_F_VERSION_1.
    #[error("device type {0} does not offer VIRTIO_F_VERSION_1")]
    NotModern(u32),
    /// Putting it on the bus failed.
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// Counters of what the guest did to the transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportStats {
    /// Accesses ignored as invalid (bad offset, width, value or state).
    pub invalid: u64,
    /// Queue notifications that reached userspace (no ioeventfd).
    pub notifies: u64,
    /// Times the device was activated.
    pub activations: u64,
    /// Activations refused (bad queues, device error).
    pub failed_activations: u64,
    /// Resets by the driver.
    pub resets: u64,
    /// Feature sets refused at `FEATURES_OK`.
    pub refused_features: u64,
}

/// One queue's driver-side configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ..Self::default()
        }
    }

    /// The queue, if its size and ring addresses are valid in `mem`.
    fn build(&self, mem: &GuestMemoryMmap, event_idx: bool) -> Result<Queue, String> {
        let state = QueueState {
            max_size: self.max_size,
            next_avail: 0,
            next_used: 0,
            event_idx_enabled: event_idx,
            size: self.size,
            ready: true,
            desc_table: self.desc,
            avail_ring: self.avail,
            used_ring: self.used,
        };
        let q = Queue::try_from(state).map_err(|e| format!("{e}"))?;
        let n = u64::from(self.size);
        // Split virtqueue sizes (virtio 1.2, 2.7): descriptors, avail and used rings
        // with their event fields.
        for (what, addr, len) in [
            ("descriptor table", self.desc, 16 * n),
            ("available ring", self.avail, 6 + 2 * n),
            ("used ring", self.used, 6 + 8 * n),
        ] {
            if !mem.check_range(GuestAddress(addr), len as usize) {
                return Err(format!("{what} at {addr:#x}+{len:#x} is outside guest RAM"));
            }
        }
        Ok(q)
    }
}

/// The virtio-mmio register block of one device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: VirtioInterrupt,
    notify: Vec<EventFd>,
    queues: Vec<QueueConfig>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
    stats: TransportStats,
    name: String,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("name", &self.name)
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .field("activated", &self.activated)
            .field("stats", &self.stats)
            .finish()
    }
}

impl MmioTransport {
    /// A transport for `device`, raising its interrupt on `line` and signalling queue
    /// `i`'s notifications on `notify[i]` (when they reach userspace).
    pub fn new(
        name: impl Into<String>,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        line: Arc<dyn IrqLine>,
        notify: Vec<EventFd>,
    ) -> Result<Self, MmioError> {
        let device_type = device.device_type();
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() || sizes.len() != notify.len() || sizes.len() > 1024 {
            return Err(MmioError::Queues {
                device_type,
                why: format!("{} queues, {} notifiers", sizes.len(), notify.len()),
            });
        }
        if let Some(bad) = sizes.iter().find(|s| **s == 0 || !s.is_power_of_two()) {
            return Err(MmioError::Queues {
                device_type,
                why: format!("maximum size {bad} is not a power of two"),
            });
        }
        if device.features() & VIRTIO_F_VERSION_1 == 0 {
            return Err(MmioError::NotModern(device_type));
        }
        Ok(Self {
            device,
            mem,
            interrupt: VirtioInterrupt::new(line),
            notify,
            queues: sizes.into_iter().map(QueueConfig::new).collect(),
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
            stats: TransportStats::default(),
            name: name.into(),
        })
    }

    /// The device model.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The device model, mutably.
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// Device status as the driver last set it.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device is live (between `DRIVER_OK` and a reset).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Counters.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// The device's interrupt (for device-initiated config changes).
    pub fn interrupt(&self) -> &VirtioInterrupt {
        &self.interrupt
    }

    /// Tell the driver the device's configuration changed.
    pub fn config_changed(&mut self) -> std::io::Result<()> {
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt.signal_config_change()
    }

    fn invalid(&mut self, what: String) {
        self.stats.invalid += 1;
        if should_log(self.stats.invalid) {
            tracing::warn!(
                device = %self.name,
                count = self.stats.invalid,
                "ignored invalid virtio-mmio access: {what}"
            );
        }
    }

    fn selected_queue(&self) -> Option<usize> {
        let i = self.queue_sel as usize;
        (i < self.queues.len()).then_some(i)
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let features = self.device.features();
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => features as u32,
                1 => (features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .selected_queue()
                .map_or(0, |i| u32::from(self.queues[i].max_size)),
            reg::QUEUE_READY => self
                .selected_queue()
                .map_or(0, |i| u32::from(self.queues[i].ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            // No shared memory regions: length reads as all-ones.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                self.invalid(format!("read of register {offset:#x}"));
                0
            }
        }
    }

    fn queue_configurable(&mut self, offset: u64) -> Option<usize> {
        let phase_ok =
            self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0;
        match self.selected_queue() {
            Some(i) if phase_ok && !self.queues[i].ready => Some(i),
            sel => {
                self.invalid(format!(
                    "queue register {offset:#x} written with queue {:?} selected in status {:#x}",
                    sel, self.status
                ));
                None
            }
        }
    }

    fn write_register(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                let phase_ok =
                    self.status & status::DRIVER != 0 && self.status & status::FEATURES_OK == 0;
                match (phase_ok, self.driver_features_sel) {
                    (true, 0) => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    (true, 1) => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    // Words beyond 64 bits: nothing is offered there, so zero is fine.
                    (true, _) if v == 0 => {}
                    _ => self.invalid(format!(
                        "driver features {v:#x} (word {}) in status {:#x}",
                        self.driver_features_sel, self.status
                    )),
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => {
                if let Some(i) = self.queue_configurable(offset) {
                    let max = u32::from(self.queues[i].max_size);
                    if v == 0 || v > max || !v.is_power_of_two() {
                        self.invalid(format!("queue {i} size {v} (maximum {max})"));
                    } else {
                        self.queues[i].size = v as u16;
                    }
                }
            }
            reg::QUEUE_READY => match v {
                1 => {
                    if let Some(i) = self.queue_configurable(offset) {
                        self.queues[i].ready = true;
                    }
                }
                0 => {
                    let phase_ok = self.status & status::DRIVER_OK == 0;
                    match self.selected_queue() {
                        Some(i) if phase_ok => self.queues[i].ready = false,
                        _ => self.invalid(format!("queue ready 0 in status {:#x}", self.status)),
                    }
                }
                _ => self.invalid(format!("queue ready {v}")),
            },
            reg::QUEUE_NOTIFY => self.notify_queue(v),
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_AVAIL_LOW
            | reg::QUEUE_AVAIL_HIGH
            | reg::QUEUE_USED_LOW
            | reg::QUEUE_USED_HIGH => {
                if let Some(i) = self.queue_configurable(offset) {
                    let q = &mut self.queues[i];
                    let field = match offset {
                        reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH => &mut q.desc,
                        reg::QUEUE_AVAIL_LOW | reg::QUEUE_AVAIL_HIGH => &mut q.avail,
                        _ => &mut q.used,
                    };
                    if offset & 4 == 0 {
                        *field = (*field & !0xffff_ffff) | u64::from(v);
                    } else {
                        *field = (*field & 0xffff_ffff) | (u64::from(v) << 32);
                    }
                }
            }
            reg::SHM_SEL => {}
            _ => self.invalid(format!("write of {v:#x} to register {offset:#x}")),
        }
    }

    fn notify_queue(&mut self, v: u32) {
        self.stats.notifies += 1;
        match self.notify.get(v as usize) {
            Some(evt) if self.activated => {
                if let Err(e) = evt.write(1) {
                    self.invalid(format!("notify of queue {v} failed: {e}"));
                }
            }
            _ => self.invalid(format!(
                "notify of queue {v} (activated: {})",
                self.activated
            )),
        }
    }

    fn set_status(&mut self, v: u32) {
        use status::*;
        if v == 0 {
            self.reset();
            return;
        }
        let known = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED;
        let old = self.status & !DEVICE_NEEDS_RESET;
        if v & !known != 0 || v & old != old {
            self.invalid(format!("status {v:#x} after {:#x}", self.status));
            return;
        }
        let new = v & !old;
        if new & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        let has = |bit: u32| (old | new) & bit != 0;
        let ordered = (new & DRIVER == 0 || has(ACKNOWLEDGE))
            && (new & FEATURES_OK == 0 || has(DRIVER))
            && (new & DRIVER_OK == 0 || has(FEATURES_OK));
        if !ordered {
            self.invalid(format!("status {v:#x} out of order after {old:#x}"));
            return;
        }
        let mut next = self.status | (new & (ACKNOWLEDGE | DRIVER));
        if new & FEATURES_OK != 0 {
            let offered = self.device.features();
            if self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0
            {
                next |= FEATURES_OK;
            } else {
                // Not latched: the driver reads the status back and gives up.
                self.stats.refused_features += 1;
                if should_log(self.stats.refused_features) {
                    tracing::warn!(
                        device = %self.name,
                        accepted = format_args!("{:#x}", self.driver_features),
                        offered = format_args!("{offered:#x}"),
                        "driver accepted features the device does not offer (or not VERSION_1)"
                    );
                }
                self.status = next;
                return;
            }
        }
        self.status = next;
        if new & DRIVER_OK != 0 && self.status & FEATURES_OK != 0 {
            self.status |= DRIVER_OK;
            self.activate();
        }
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = Vec::new();
        let mut problem = None;
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready {
                continue;
            }
            let notify = match self.notify[i].try_clone() {
                Ok(e) => e,
                Err(e) => {
                    problem = Some(format!("cannot clone queue {i}'s eventfd: {e}"));
                    break;
                }
            };
            match q.build(&self.mem, event_idx) {
                Ok(queue) => queues.push(ActiveQueue {
                    index: i as u16,
                    queue,
                    notify,
                }),
                Err(why) => {
                    problem = Some(format!("queue {i}: {why}"));
                    break;
                }
            }
        }
        let result = match problem {
            Some(p) => Err(p),
            None => self
                .device
                .activate(Activation {
                    mem: self.mem.clone(),
                    features: self.driver_features,
                    queues,
                    interrupt: self.interrupt.clone(),
                })
                .map_err(|e| {
                    let mut s = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(c) = src {
                        s.push_str(&format!(": {c}"));
                        src = c.source();
                    }
                    s
                }),
        };
        match result {
            Ok(()) => {
                self.activated = true;
                self.stats.activations += 1;
            }
            Err(why) => {
                self.stats.failed_activations += 1;
                if should_log(self.stats.failed_activations) {
                    tracing::warn!(device = %self.name, "cannot activate virtio device: {why}");
                }
                self.status |= status::DEVICE_NEEDS_RESET;
                let _ = self.config_changed();
            }
        }
    }

    fn reset(&mut self) {
        if self.activated || self.status != 0 {
            self.stats.resets += 1;
        }
        self.device.reset();
        self.activated = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.interrupt.clear();
        // Drop notifications the old driver left pending.
        for e in &self.notify {
            let _ = e.read();
        }
    }

    fn config_access_ok(&mut self, offset: u64, len: usize, write: bool) -> Option<usize> {
        let cfg = (offset - reg::CONFIG) as usize;
        let end = cfg.checked_add(len);
        if matches!(len, 1 | 2 | 4 | 8) && end.is_some_and(|e| e <= self.device.config_len()) {
            Some(cfg)
        } else {
            let op = if write { "write" } else { "read" };
            self.invalid(format!("config {op} of {len} bytes at {cfg:#x}"));
            None
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) -> Result<BusAction, DeviceError> {
        if offset >= reg::CONFIG {
            match self.config_access_ok(offset, data.len(), false) {
                Some(cfg) => self.device.read_config(cfg, data),
                None => data.fill(0),
            }
        } else if data.len() == 4 && offset % 4 == 0 {
            let v = self.read_register(offset);
            data.copy_from_slice(&v.to_le_bytes());
        } else {
            self.invalid(format!("{}-byte read at {offset:#x}", data.len()));
            data.fill(0);
        }
        Ok(BusAction::Continue)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<BusAction, DeviceError> {
        if offset >= reg::CONFIG {
            if let Some(cfg) = self.config_access_ok(offset, data.len(), true) {
                self.device.write_config(cfg, data);
            }
        } else if let (Ok(bytes), 0) = (<[u8; 4]>::try_from(data), offset % 4) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        } else {
            self.invalid(format!("{}-byte write at {offset:#x}", data.len()));
        }
        Ok(BusAction::Continue)
    }
}

/// Where a virtio-mmio device sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Register window base.
    pub base: u64,
    /// Window size (at least 0x200).
    pub size: u64,
    /// GSI of its interrupt.
    pub gsi: u32,
}

/// Put `device` on `vm`'s MMIO bus at `slot`: an irqfd on the slot's GSI for its
/// interrupt, and an ioeventfd per queue on `QueueNotify` (matching the queue index),
/// so neither notifications nor interrupts go through userspace. If KVM refuses an
/// ioeventfd the transport still delivers notifications from the exit path.
pub fn attach(
    vm: &mut Vm,
    name: &str,
    slot: MmioSlot,
    device: Box<dyn VirtioDevice>,
) -> Result<Arc<Mutex<MmioTransport>>, MmioError> {
    let line = IrqFd::register(vm.fd(), slot.gsi).map_err(|source| MmioError::Irq {
        gsi: slot.gsi,
        source,
    })?;
    let mut notify = Vec::new();
    for i in 0..device.queue_max_sizes().len() {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(MmioError::EventFd)?;
        let addr = IoEventAddress::Mmio(slot.base + reg::QUEUE_NOTIFY);
        if let Err(e) = vm.fd().register_ioevent(&evt, &addr, i as u32) {
            tracing::warn!(
                device = name,
                queue = i,
                "no ioeventfd ({e}); notifications exit to the VMM"
            );
        }
        notify.push(evt);
    }
    let transport = Arc::new(Mutex::new(MmioTransport::new(
        name,
        device,
        vm.memory().clone(),
        Arc::new(line),
        notify,
    )?));
    vm.register_mmio(slot.base, slot.size, name, transport.clone())?;
    Ok(transport)
}

#[cfg(test)]
mod tests;

//! virtio devices over the virtio-mmio transport (virtio 1.x, "modern" only).
//!
//! - [`VirtioDevice`]: what a device model implements (type, features, queue sizes,
//!   config space, activate/reset). The blk and balloon devices implement it.
//! - [`mmio::MmioTransport`]: the register block the guest driver talks to; it
//!   validates every access, runs the status state machine and hands the device its
//!   queues when the driver sets `DRIVER_OK`.
//! - [`mmio::attach`]: puts a device on a VM's MMIO bus with an irqfd for its interrupt
//!   and one ioeventfd per queue, so queue notifications never leave the kernel.
//! - [`blk::Blk`]: virtio-blk on a disk image, every request traced.
//! - [`null::NullDevice`]: a device of any type that does nothing (discovery tests).

pub mod blk;
pub mod mmio;
pub mod null;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::irq::IrqLine;

/// `VIRTIO_F_VERSION_1`: the device is virtio 1.x (required by this transport).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_RING_EVENT_IDX`.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready; the device is live.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Interrupt status bits.
pub const INT_USED_RING: u32 = 1;
/// Configuration change.
pub const INT_CONFIG: u32 = 2;

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up queues the device cannot use.
    #[error("bad queue setup: {0}")]
    BadQueues(String),
    /// The device failed to start (e.g. its worker thread).
    #[error("device failed to start")]
    Start(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A device's interrupt: the status bits the guest reads and acknowledges through the
/// transport, and the line (an irqfd) that tells it to look. Cheap to clone.
#[derive(Clone)]
pub struct VirtioInterrupt {
    status: Arc<AtomicU32>,
    line: Arc<dyn IrqLine>,
}

impl std::fmt::Debug for VirtioInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioInterrupt")
            .field("status", &self.status.load(Ordering::SeqCst))
            .finish()
    }
}

impl VirtioInterrupt {
    /// An interrupt raised on `line`, with no status bits set.
    pub fn new(line: Arc<dyn IrqLine>) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            line,
        }
    }

    /// The device put buffers in a used ring.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.signal(INT_USED_RING)
    }

    /// The device changed its configuration space.
    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.signal(INT_CONFIG)
    }

    fn signal(&self, bits: u32) -> std::io::Result<()> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.line.trigger()
    }

    /// Current status bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clear `bits` (the guest's InterruptACK).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clear everything (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// One queue the driver set up, handed to the device at activation.
#[derive(Debug)]
pub struct ActiveQueue {
    /// Queue index.
    pub index: u16,
    /// The queue (addresses validated against guest memory).
    pub queue: Queue,
    /// Becomes readable when the driver notifies the queue.
    pub notify: EventFd,
}

/// Everything a device gets when the driver sets `DRIVER_OK`.
#[derive(Debug)]
pub struct Activation {
    /// Guest memory, for the queues' buffers.
    pub mem: GuestMemoryMmap,
    /// The features the driver accepted.
    pub features: u64,
    /// The queues the driver marked ready, by index.
    pub queues: Vec<ActiveQueue>,
    /// The device's interrupt.
    pub interrupt: VirtioInterrupt,
}

/// A virtio device model behind a transport.
///
/// Config-space offsets are relative to the device's config space and always within
/// [`VirtioDevice::config_len`] (the transport checks). Nothing the guest writes may
/// make a device panic.
pub trait VirtioDevice: Send {
    /// virtio device ID (2 block, 5 balloon, ...).
    fn device_type(&self) -> u32;

    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits offered (must include [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;

    /// Bytes of device-specific configuration space.
    fn config_len(&self) -> usize {
        0
    }

    /// Read `data.len()` bytes of config space at `offset`.
    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let _ = offset;
        data.fill(0);
    }

    /// The driver wrote config space.
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        let _ = (offset, data);
    }

    /// Start serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;

    /// Stop using the queues and return to the pre-activation state (the driver wrote
    /// status 0). Must be idempotent.
    fn reset(&mut self);
}

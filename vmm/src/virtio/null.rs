//! A virtio device that does nothing: it offers only `VIRTIO_F_VERSION_1`, two queues it
//! never serves, and no config space. The guest still enumerates it (it shows up in
//! `/sys/bus/virtio/devices` with its device ID), which makes it a cheap probe that
//! the guest found the virtio-mmio devices the ACPI tables describe; as type 3 (console,
//! whose driver needs just two queues and no features) a driver binds and activates it.

use super::{ActivateError, Activation, VirtioDevice, VIRTIO_F_VERSION_1};

/// A do-nothing device of any device type.
#[derive(Debug)]
pub struct NullDevice {
    device_type: u32,
    activations: u64,
    active: Option<Activation>,
}

impl NullDevice {
    /// A device reporting `device_type` (e.g. 4, entropy, for which the guest image
    /// loads no driver).
    pub fn new(device_type: u32) -> Self {
        Self {
            device_type,
            activations: 0,
            active: None,
        }
    }

    /// How many times a driver activated it.
    pub fn activations(&self) -> u64 {
        self.activations
    }
}

impl VirtioDevice for NullDevice {
    fn device_type(&self) -> u32 {
        self.device_type
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 16]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.activations += 1;
        self.active = Some(activation);
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

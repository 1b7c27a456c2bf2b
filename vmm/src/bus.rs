//! Port-I/O and MMIO buses: devices registered on address ranges, looked up per exit.
//!
//! A [`Bus`] maps non-overlapping `[base, base + len)` ranges to devices. The vCPU loop
//! routes each `KVM_EXIT_IO` / `KVM_EXIT_MMIO` to the device owning the address, with the
//! offset into its range. Devices sit behind a `Mutex` because several vCPU threads may
//! reach the same device.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What the vCPU should do after a device handled an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BusAction {
    /// Resume the guest.
    #[default]
    Continue,
    /// Stop the whole VM cleanly (e.g. the guest reported it is done).
    Stop,
}

/// The error type devices return; the VM stops and reports it.
pub type DeviceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A device on a port-I/O or MMIO bus.
///
/// `offset` is relative to the base the device was registered at. Both methods have
/// defaults (reads return zeroes, writes are ignored) so a device implements only what
/// it decodes.
pub trait BusDevice: Send {
    /// The guest read `data.len()` bytes at `offset`; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]) -> Result<BusAction, DeviceError> {
        let _ = offset;
        data.fill(0);
        Ok(BusAction::Continue)
    }

    /// The guest wrote `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<BusAction, DeviceError> {
        let _ = (offset, data);
        Ok(BusAction::Continue)
    }
}

/// A device shared between the bus and whoever else holds it (e.g. to read results).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors from registering devices or dispatching accesses.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The new range overlaps a registered one.
    #[error("{name} at {base:#x}+{len:#x} overlaps {other} at {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// New device.
        name: String,
        /// New base.
        base: u64,
        /// New length.
        len: u64,
        /// Existing device.
        other: String,
        /// Existing base.
        other_base: u64,
        /// Existing length.
        other_len: u64,
    },
    /// Zero-length or wrapping range.
    #[error("{name}: invalid range {base:#x}+{len:#x}")]
    BadRange {
        /// Device.
        name: String,
        /// Base.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The device returned an error.
    #[error("device {name} failed on {op} at {addr:#x}")]
    Device {
        /// Device.
        name: String,
        /// "read" or "write".
        op: &'static str,
        /// Bus address of the access.
        addr: u64,
        /// The device's error.
        #[source]
        source: DeviceError,
    },
    /// A previous holder of the device lock panicked.
    #[error("device {0} is poisoned (a thread panicked while using it)")]
    Poisoned(String),
}

struct Entry {
    len: u64,
    name: String,
    device: SharedDevice,
}

/// A set of devices on non-overlapping address ranges.
#[derive(Default)]
pub struct Bus {
    entries: BTreeMap<u64, Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (base, e) in &self.entries {
            m.entry(&format_args!("{base:#x}+{:#x}", e.len), &e.name);
        }
        m.finish()
    }
}

/// Result of routing an access: whether a device claimed it, and what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// A device handled it.
    Handled(BusAction),
    /// No device is registered at the address.
    Unclaimed,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `device` on `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        name: impl Into<String>,
        device: SharedDevice,
    ) -> Result<(), BusError> {
        let name = name.into();
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(BusError::BadRange { name, base, len });
        }
        let last = base + (len - 1);
        // The closest range starting at or below `last` is the only one that can overlap.
        if let Some((&ob, e)) = self.entries.range(..=last).next_back() {
            if ob + (e.len - 1) >= base {
                return Err(BusError::Overlap {
                    name,
                    base,
                    len,
                    other: e.name.clone(),
                    other_base: ob,
                    other_len: e.len,
                });
            }
        }
        self.entries.insert(base, Entry { len, name, device });
        Ok(())
    }

    /// The device owning `addr`: (its base, its name, the device).
    pub fn lookup(&self, addr: u64) -> Option<(u64, &str, &SharedDevice)> {
        let (&base, e) = self.entries.range(..=addr).next_back()?;
        (addr - base < e.len).then_some((base, e.name.as_str(), &e.device))
    }

    /// Number of registered devices.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no device is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Route a guest read at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<Dispatch, BusError> {
        let Some((base, name, dev)) = self.lookup(addr) else {
            data.fill(0xff);
            return Ok(Dispatch::Unclaimed);
        };
        let mut dev = dev
            .lock()
            .map_err(|_| BusError::Poisoned(name.to_string()))?;
        dev.read(addr - base, data)
            .map(Dispatch::Handled)
            .map_err(|source| BusError::Device {
                name: name.to_string(),
                op: "read",
                addr,
                source,
            })
    }

    /// Route a guest write at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<Dispatch, BusError> {
        let Some((base, name, dev)) = self.lookup(addr) else {
            return Ok(Dispatch::Unclaimed);
        };
        let mut dev = dev
            .lock()
            .map_err(|_| BusError::Poisoned(name.to_string()))?;
        dev.write(addr - base, data)
            .map(Dispatch::Handled)
            .map_err(|source| BusError::Device {
                name: name.to_string(),
                op: "write",
                addr,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) -> Result<BusAction, DeviceError> {
            data.fill(offset as u8);
            Ok(BusAction::Continue)
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<BusAction, DeviceError> {
            if data == [0xee] {
                return Err("bad value".into());
            }
            self.writes.push((offset, data.to_vec()));
            Ok(if data == [0xff] {
                BusAction::Stop
            } else {
                BusAction::Continue
            })
        }
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x1000, 0x100, "a", a.clone()).unwrap();
        bus.insert(0x1100, 0x10, "b", b.clone()).unwrap();
        assert_eq!(bus.len(), 2);
        assert_eq!(
            bus.write(0x10ff, &[1]).unwrap(),
            Dispatch::Handled(BusAction::Continue)
        );
        assert_eq!(
            bus.write(0x1100, &[0xff]).unwrap(),
            Dispatch::Handled(BusAction::Stop)
        );
        assert_eq!(bus.write(0x1110, &[2]).unwrap(), Dispatch::Unclaimed);
        assert_eq!(bus.write(0xfff, &[2]).unwrap(), Dispatch::Unclaimed);
        assert_eq!(a.lock().unwrap().writes, vec![(0xff, vec![1])]);
        assert_eq!(b.lock().unwrap().writes, vec![(0, vec![0xff])]);
        let mut buf = [0u8; 4];
        bus.read(0x1105, &mut buf).unwrap();
        assert_eq!(buf, [5; 4]);
        assert_eq!(bus.read(0x2000, &mut buf).unwrap(), Dispatch::Unclaimed);
        assert_eq!(buf, [0xff; 4]);
        let err = bus.write(0x1000, &[0xee]).unwrap_err();
        assert!(err
            .to_string()
            .contains("device a failed on write at 0x1000"));
    }

    #[test]
    fn rejects_overlaps_and_empty_ranges() {
        let mut bus = Bus::new();
        let d = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x1000, 0x100, "a", d.clone()).unwrap();
        for (base, len) in [
            (0xf00, 0x101),
            (0x10ff, 1),
            (0x1000, 0x100),
            (0x800, 0x1000),
        ] {
            assert!(
                matches!(
                    bus.insert(base, len, "x", d.clone()),
                    Err(BusError::Overlap { .. })
                ),
                "{base:#x}+{len:#x}"
            );
        }
        bus.insert(0xf00, 0x100, "below", d.clone()).unwrap();
        bus.insert(0x1100, 1, "above", d.clone()).unwrap();
        assert!(matches!(
            bus.insert(0x5000, 0, "z", d.clone()),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, "w", d),
            Err(BusError::BadRange { .. })
        ));
    }
}

//! The virtio-blk devices' side of the host swapper's Swap Mapper (which
//! guest pages hold a copy of which disk blocks, see [`swapper::named`]) and
//! of the false-read mitigation: every whole page a disk read fills, and
//! every disk range a write or discard is about to change, goes to the
//! swapper; and the swapper reads named pages back through the device's own
//! view of its disk.

use std::sync::{Arc, Weak};

use swapper::Swapper;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::virtio::blk::{Blk, BlkReader, DiskMapper};
use vmm::GuestMemoryExt;

use super::error::MachineError;

/// The swapper's number for the guest's swap disk.
pub const SWAP_DISK: u8 = 0;
/// The swapper's number for the guest's root disk.
pub const ROOT_DISK: u8 = 1;

/// A disk's mapper. Holds the swapper weakly (the device may outlive the run).
struct SwapMapper {
    sw: Weak<Swapper>,
    memory: GuestMemoryMmap,
    disk: u8,
    /// The false-read mitigation: an evicted page a read fills is installed.
    fill_evicted: bool,
}

impl DiskMapper for SwapMapper {
    fn page_read(&self, gpa: GuestAddress, offset: u64, data: &[u8; 4096]) -> bool {
        let (Some(sw), Ok(r)) = (self.sw.upgrade(), self.memory.host_region_of(gpa.0)) else {
            return false;
        };
        let host = r.host_addr + (gpa.0 - r.guest_addr) as usize;
        sw.disk_page(host, self.disk, offset, data, self.fill_evicted) == swapper::Installed::Yes
    }

    fn disk_changing(&self, offset: u64, len: u64) {
        if let Some(sw) = self.sw.upgrade() {
            sw.disk_changing(self.disk, offset, len);
        }
    }
}

/// The device's reader, as the swapper reads disks.
struct Reader(BlkReader);

impl swapper::DiskReader for Reader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_at(buf, offset)
    }
}

/// The mapper for disk `disk` of a run whose host swapper is `sw` (none
/// without one, or under the kernel's).
pub fn mapper(
    sw: Option<&Arc<Swapper>>,
    memory: &GuestMemoryMmap,
    disk: u8,
    fill_evicted: bool,
) -> Option<Arc<dyn DiskMapper>> {
    let sw = sw?;
    Some(Arc::new(SwapMapper {
        sw: Arc::downgrade(sw),
        memory: memory.clone(),
        disk,
        fill_evicted,
    }))
}

/// Tells the swapper how to read disk `disk` (the device `dev`).
pub fn register(sw: Option<&Arc<Swapper>>, disk: u8, dev: &Blk) -> Result<(), MachineError> {
    let Some(sw) = sw else { return Ok(()) };
    Ok(sw.add_disk(disk, Arc::new(Reader(dev.reader())))?)
}

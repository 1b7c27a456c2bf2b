//! Giving the guest's ballooned and reported pages back to the host.
//!
//! The device hands a [`PageReleaser`] page-aligned guest-physical ranges that lie
//! inside one guest RAM region; the releaser turns them into host addresses itself.
//!
//! - [`MadviseReleaser`]: `MADV_DONTNEED` on the guest memory (vmm's
//!   [`GuestMemoryExt::discard`]). Right when nothing else manages the mapping. With
//!   a userfaultfd swapper registered on guest RAM it would raise `REMOVE` events
//!   the swapper must process before any fault can be resolved: use
//!   [`SwapperReleaser`] there.
//! - [`SwapperReleaser`]: [`swapper::Swapper::discard`]: the pages become
//!   "ballooned" in the swapper's page table, store slots and staged copies are
//!   freed, resident memory is returned and the swapper's budget released, with no
//!   `REMOVE` event. Its running [`DiscardStats`] say how much of what the guest
//!   gave up was really holding host memory or store space.
//!
//! Deflate ([`PageReleaser::reclaim`]) needs nothing from either: a released page
//! reads back as zeros on its next touch (a fresh anonymous page, or the swapper's
//! zero-page path).

use std::sync::{Arc, Mutex};

use base::sync::lock;
use swapper::{DiscardStats, Swapper, SwapperError};
use vmm::memory::{GuestMemoryExt, HostRegion, MemoryError};
use vmm::vm_memory::GuestMemoryMmap;

use crate::spec::BALLOON_PAGE_SIZE;

/// Why a range could not be released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The range is not whole 4 KiB pages.
    #[error("range {gpa:#x}+{len:#x} is not 4 KiB-aligned")]
    Unaligned {
        /// Guest-physical start.
        gpa: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The range is not inside one guest RAM region.
    #[error("range {gpa:#x}+{len:#x} is not inside one guest RAM region")]
    OutOfRange {
        /// Guest-physical start.
        gpa: u64,
        /// Length in bytes.
        len: u64,
    },
    /// madvise failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The swapper failed to discard the range.
    #[error(transparent)]
    Swapper(#[from] SwapperError),
}

/// Where released guest pages go.
pub trait PageReleaser: Send + Sync {
    /// The guest gave up `[gpa, gpa + len)` (balloon inflate, free page report):
    /// return its memory to the host. The range is whole 4 KiB pages inside one
    /// guest RAM region; its content may be lost (it reads as zeros afterwards).
    fn release(&self, gpa: u64, len: u64) -> Result<(), ReleaseError>;

    /// The guest takes `[gpa, gpa + len)` back (balloon deflate). The memory itself
    /// needs nothing (pages come back as zero pages on the next touch); this is for
    /// releasers that keep their own books. The default does nothing.
    fn reclaim(&self, gpa: u64, len: u64) -> Result<(), ReleaseError> {
        let _ = (gpa, len);
        Ok(())
    }
}

fn check_aligned(gpa: u64, len: u64) -> Result<(), ReleaseError> {
    if gpa % BALLOON_PAGE_SIZE != 0 || len % BALLOON_PAGE_SIZE != 0 {
        return Err(ReleaseError::Unaligned { gpa, len });
    }
    Ok(())
}

/// Host address of `[gpa, gpa + len)` if it lies inside one of `regions`.
fn host_range(regions: &[HostRegion], gpa: u64, len: u64) -> Result<usize, ReleaseError> {
    let inside = |r: &&HostRegion| {
        r.contains_guest(gpa)
            && (len == 0
                || gpa
                    .checked_add(len - 1)
                    .is_some_and(|l| r.contains_guest(l)))
    };
    let r = regions
        .iter()
        .find(inside)
        .ok_or(ReleaseError::OutOfRange { gpa, len })?;
    Ok(r.host_addr + (gpa - r.guest_addr) as usize)
}

/// Releases pages with `MADV_DONTNEED` on the guest memory mapping.
#[derive(Debug, Clone)]
pub struct MadviseReleaser {
    mem: GuestMemoryMmap,
}

impl MadviseReleaser {
    /// A releaser over `mem` (the VM's guest memory; a clone shares the mappings).
    pub fn new(mem: GuestMemoryMmap) -> Self {
        Self { mem }
    }
}

impl PageReleaser for MadviseReleaser {
    fn release(&self, gpa: u64, len: u64) -> Result<(), ReleaseError> {
        check_aligned(gpa, len)?;
        host_range(&self.mem.host_regions(), gpa, len)?;
        self.mem.discard(gpa, len)?;
        Ok(())
    }
}

/// Releases pages through the host swapper that manages guest RAM.
pub struct SwapperReleaser {
    swapper: Arc<Swapper>,
    regions: Vec<HostRegion>,
    totals: Mutex<DiscardStats>,
}

impl std::fmt::Debug for SwapperReleaser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapperReleaser")
            .field("regions", &self.regions)
            .field("totals", &self.totals())
            .finish()
    }
}

impl SwapperReleaser {
    /// A releaser for guest RAM placed at `regions` (the guest memory's
    /// [`GuestMemoryExt::host_regions`]) and managed by `swapper`.
    pub fn new(swapper: Arc<Swapper>, regions: Vec<HostRegion>) -> Self {
        Self {
            swapper,
            regions,
            totals: Mutex::new(DiscardStats::default()),
        }
    }

    /// What the swapper's discards did so far, summed: pages, pages that held host
    /// memory, store slots freed.
    pub fn totals(&self) -> DiscardStats {
        *lock(&self.totals)
    }
}

impl PageReleaser for SwapperReleaser {
    fn release(&self, gpa: u64, len: u64) -> Result<(), ReleaseError> {
        check_aligned(gpa, len)?;
        let host = host_range(&self.regions, gpa, len)?;
        let len = usize::try_from(len).map_err(|_| ReleaseError::OutOfRange { gpa, len })?;
        let d = self.swapper.discard(host, len)?;
        let mut t = lock(&self.totals);
        t.pages += d.pages;
        t.committed_released += d.committed_released;
        t.slots_freed += d.slots_freed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::memory::{create_guest_memory, RegionSpec};
    use vmm::vm_memory::{Bytes, GuestAddress};

    #[test]
    fn host_range_stays_inside_one_region() {
        let regions = [
            HostRegion {
                guest_addr: 0,
                host_addr: 0x10_0000,
                len: 0x4000,
            },
            HostRegion {
                guest_addr: 0x4000,
                host_addr: 0x90_0000,
                len: 0x4000,
            },
        ];
        assert_eq!(host_range(&regions, 0x1000, 0x3000).unwrap(), 0x10_1000);
        assert_eq!(host_range(&regions, 0x5000, 0x1000).unwrap(), 0x90_1000);
        // Adjacent in guest-physical space, not on the host: refused.
        assert!(host_range(&regions, 0x3000, 0x2000).is_err());
        assert!(host_range(&regions, 0x8000, 0x1000).is_err());
        assert!(host_range(&regions, u64::MAX - 0xfff, 0x2000).is_err());
    }

    #[test]
    fn madvise_releaser_zeroes_exactly_the_range() {
        let mem = create_guest_memory(&[RegionSpec::new(0, 16 * 4096)]).unwrap();
        for p in 0..16u64 {
            mem.write_obj(0xabcd_0000 + p, GuestAddress(p * 4096 + 8))
                .unwrap();
        }
        let r = MadviseReleaser::new(mem.clone());
        r.release(4 * 4096, 3 * 4096).unwrap();
        for p in 0..16u64 {
            let v: u64 = mem.read_obj(GuestAddress(p * 4096 + 8)).unwrap();
            let want = if (4..7).contains(&p) {
                0
            } else {
                0xabcd_0000 + p
            };
            assert_eq!(v, want, "page {p}");
        }
        assert!(matches!(
            r.release(100, 4096),
            Err(ReleaseError::Unaligned { .. })
        ));
        assert!(matches!(
            r.release(15 * 4096, 2 * 4096),
            Err(ReleaseError::OutOfRange { .. })
        ));
        r.reclaim(0, 4096).unwrap();
    }
}

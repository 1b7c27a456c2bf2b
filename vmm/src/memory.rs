//! Guest RAM: a vm-memory [`GuestMemoryMmap`] over anonymous mappings the VMM creates itself.
//!
//! Every region is a private anonymous mapping made with
//! `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE` and, by default, `MADV_NOHUGEPAGE`, so
//! guest pages are 4 KiB host pages that a userfaultfd swapper can register, evict
//! (`MADV_DONTNEED`) and fill (`UFFDIO_COPY`) one at a time. The mappings are owned by
//! vm-memory's [`MmapRegion`] (unmapped when the last clone of the memory is dropped).
//!
//! Behaviour the VMM and the swapper need on top of vm-memory lives in the
//! [`GuestMemoryExt`] extension trait rather than in a parallel memory type.

use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

/// Host page size assumed for guest RAM (x86-64).
pub const PAGE_SIZE: u64 = 4096;

/// Errors from building or inspecting guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A region has size zero or is not a multiple of the page size.
    #[error(
        "guest memory region at {addr:#x} has size {size:#x}, not a non-zero multiple of 4 KiB"
    )]
    BadSize {
        /// Guest-physical start.
        addr: u64,
        /// Requested size.
        size: u64,
    },
    /// A region's guest address is not page-aligned.
    #[error("guest memory region at {0:#x} is not 4 KiB-aligned")]
    Unaligned(u64),
    /// The anonymous mapping could not be created.
    #[error("cannot map {size} bytes of anonymous memory for guest RAM at {addr:#x}")]
    Mmap {
        /// Guest-physical start.
        addr: u64,
        /// Requested size.
        size: u64,
        /// What mmap said.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// madvise on a guest RAM mapping failed.
    #[error("madvise({advice}) on guest RAM at host {host_addr:#x} failed")]
    Madvise {
        /// The advice name.
        advice: &'static str,
        /// Host address of the range.
        host_addr: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Regions overlap, or none were given.
    #[error("invalid guest memory layout")]
    Layout(#[source] vm_memory::GuestRegionCollectionError),
    /// The guest address does not fall in any region.
    #[error("guest address {0:#x} is not in guest RAM")]
    NotMapped(u64),
}

/// One guest RAM region to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSpec {
    /// Guest-physical start (4 KiB-aligned).
    pub guest_addr: u64,
    /// Size in bytes (a non-zero multiple of 4 KiB).
    pub size: u64,
    /// Allow transparent huge pages on this region (default: off, so the host swaps
    /// and faults guest memory 4 KiB at a time).
    pub huge_pages: bool,
}

impl RegionSpec {
    /// A 4 KiB-page region of `size` bytes at `guest_addr`.
    pub fn new(guest_addr: u64, size: u64) -> Self {
        Self {
            guest_addr,
            size,
            huge_pages: false,
        }
    }
}

/// Where a guest RAM region lives in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostRegion {
    /// Guest-physical start.
    pub guest_addr: u64,
    /// Host virtual address of the first byte (what a userfaultfd registers).
    pub host_addr: usize,
    /// Length in bytes.
    pub len: usize,
}

impl HostRegion {
    /// Whether `gpa` falls in this region.
    pub fn contains_guest(&self, gpa: u64) -> bool {
        gpa >= self.guest_addr && gpa - self.guest_addr < self.len as u64
    }

    /// Whether the host address `hva` falls in this region.
    pub fn contains_host(&self, hva: usize) -> bool {
        hva >= self.host_addr && hva - self.host_addr < self.len
    }

    /// Number of 4 KiB pages in the region.
    pub fn pages(&self) -> u64 {
        self.len as u64 / PAGE_SIZE
    }
}

/// Create guest memory from `specs` (in any order; they must not overlap).
///
/// Each region is a fresh `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE` mapping, so
/// nothing is allocated until the guest (or the host) touches a page.
pub fn create_guest_memory(specs: &[RegionSpec]) -> Result<GuestMemoryMmap, MemoryError> {
    let mut sorted = specs.to_vec();
    sorted.sort_by_key(|s| s.guest_addr);
    let mut regions = Vec::with_capacity(sorted.len());
    for spec in &sorted {
        if spec.size == 0 || spec.size % PAGE_SIZE != 0 || usize::try_from(spec.size).is_err() {
            return Err(MemoryError::BadSize {
                addr: spec.guest_addr,
                size: spec.size,
            });
        }
        if spec.guest_addr % PAGE_SIZE != 0 {
            return Err(MemoryError::Unaligned(spec.guest_addr));
        }
        let mapping = MmapRegion::<()>::build(
            None,
            spec.size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
        .map_err(|source| MemoryError::Mmap {
            addr: spec.guest_addr,
            size: spec.size,
            source,
        })?;
        let advice = if spec.huge_pages {
            (libc::MADV_HUGEPAGE, "MADV_HUGEPAGE")
        } else {
            (libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE")
        };
        madvise(mapping.as_ptr() as usize, mapping.size(), advice)?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(spec.guest_addr)).ok_or(
            MemoryError::BadSize {
                addr: spec.guest_addr,
                size: spec.size,
            },
        )?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Layout)
}

fn madvise(host_addr: usize, len: usize, advice: (i32, &'static str)) -> Result<(), MemoryError> {
    // SAFETY: the range is (part of) an anonymous mapping owned by guest memory; the
    // advice values used here (huge-page hints, DONTNEED) never make the range invalid,
    // DONTNEED only drops its contents, which the caller asked for.
    let rc = unsafe { libc::madvise(host_addr as *mut libc::c_void, len, advice.0) };
    if rc != 0 {
        return Err(MemoryError::Madvise {
            advice: advice.1,
            host_addr,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// VMM-side behaviour on vm-memory's guest memory.
pub trait GuestMemoryExt {
    /// Host placement of every region, in guest-address order.
    fn host_regions(&self) -> Vec<HostRegion>;

    /// The region containing `gpa`.
    fn host_region_of(&self, gpa: u64) -> Result<HostRegion, MemoryError>;

    /// Total bytes of guest RAM.
    fn total_bytes(&self) -> u64 {
        self.host_regions().iter().map(|r| r.len as u64).sum()
    }

    /// Drop the contents of `[gpa, gpa + len)` (`MADV_DONTNEED`): the next access reads
    /// zeroes (or faults to a userfaultfd registered on the range).
    fn discard(&self, gpa: u64, len: u64) -> Result<(), MemoryError>;
}

impl GuestMemoryExt for GuestMemoryMmap {
    fn host_regions(&self) -> Vec<HostRegion> {
        self.iter()
            .map(|r| HostRegion {
                guest_addr: r.start_addr().0,
                host_addr: r.as_ptr() as usize,
                len: r.len() as usize,
            })
            .collect()
    }

    fn host_region_of(&self, gpa: u64) -> Result<HostRegion, MemoryError> {
        let r = self
            .find_region(GuestAddress(gpa))
            .ok_or(MemoryError::NotMapped(gpa))?;
        Ok(HostRegion {
            guest_addr: r.start_addr().0,
            host_addr: r.as_ptr() as usize,
            len: r.len() as usize,
        })
    }

    fn discard(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let region = self.host_region_of(gpa)?;
        let end = gpa.checked_add(len).ok_or(MemoryError::NotMapped(gpa))?;
        if len > 0 && !region.contains_guest(end - 1) {
            return Err(MemoryError::NotMapped(end - 1));
        }
        let host = region.host_addr + (gpa - region.guest_addr) as usize;
        madvise(host, len as usize, (libc::MADV_DONTNEED, "MADV_DONTNEED"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn regions_are_sorted_and_placed() {
        let mem = create_guest_memory(&[
            RegionSpec::new(1 << 32, 1 << 20),
            RegionSpec::new(0, 64 << 10),
        ])
        .unwrap();
        let regions = mem.host_regions();
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0].guest_addr, 0);
        assert_eq!(regions[0].len, 64 << 10);
        assert_eq!(regions[1].guest_addr, 1 << 32);
        assert_eq!(regions[1].pages(), 256);
        assert_eq!(mem.total_bytes(), (1 << 20) + (64 << 10));
        assert_eq!(mem.host_region_of((1 << 32) + 5).unwrap(), regions[1]);
        assert!(matches!(
            mem.host_region_of(1 << 30),
            Err(MemoryError::NotMapped(_))
        ));
    }

    #[test]
    fn writes_through_vm_memory_land_at_the_host_address() {
        let mem = create_guest_memory(&[RegionSpec::new(0x10000, 0x4000)]).unwrap();
        mem.write_obj(0xdead_beef_u64, GuestAddress(0x11008))
            .unwrap();
        let r = mem.host_regions()[0];
        // SAFETY: the address is inside the live mapping owned by `mem`, 8-byte aligned.
        let v = unsafe { ((r.host_addr + 0x1008) as *const u64).read_volatile() };
        assert_eq!(v, 0xdead_beef);
        mem.discard(0x11000, 0x1000).unwrap();
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x11008)).unwrap(), 0);
    }

    #[test]
    fn rejects_bad_layouts() {
        assert!(matches!(
            create_guest_memory(&[RegionSpec::new(0, 0)]),
            Err(MemoryError::BadSize { .. })
        ));
        assert!(matches!(
            create_guest_memory(&[RegionSpec::new(0, 100)]),
            Err(MemoryError::BadSize { .. })
        ));
        assert!(matches!(
            create_guest_memory(&[RegionSpec::new(0x800, 0x1000)]),
            Err(MemoryError::Unaligned(0x800))
        ));
        assert!(matches!(
            create_guest_memory(&[RegionSpec::new(0, 0x2000), RegionSpec::new(0x1000, 0x1000)]),
            Err(MemoryError::Layout(_))
        ));
        assert!(matches!(
            create_guest_memory(&[]),
            Err(MemoryError::Layout(_))
        ));
    }
}

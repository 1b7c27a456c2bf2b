//! Guest regions and the mapping between host addresses and page indices.

use crate::page::PAGE_SIZE;
use crate::page_state::PageIdx;
use thiserror::Error;

/// A host mapping the swapper manages (private anonymous memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GuestRegion {
    /// Host virtual address (page aligned).
    pub addr: usize,
    /// Length in bytes (page aligned).
    pub len: usize,
}

/// Errors of this module.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegionError {
    /// Address or length not page aligned, or empty.
    #[error("region {addr:#x}+{len:#x} is empty or not page aligned")]
    Unaligned {
        /// Address.
        addr: usize,
        /// Length.
        len: usize,
    },
    /// Two regions overlap.
    #[error("regions overlap at {0:#x}")]
    Overlap(usize),
    /// More pages than a page index can hold.
    #[error("too many pages")]
    TooLarge,
    /// No region given.
    #[error("no region to manage")]
    Empty,
}

/// All regions of one swapper, sorted by address.
#[derive(Clone, Debug)]
pub struct Regions {
    list: Vec<(GuestRegion, PageIdx)>,
    pages: u32,
}

impl Regions {
    /// Validates and indexes `regions`.
    pub fn new(regions: &[GuestRegion]) -> Result<Self, RegionError> {
        if regions.is_empty() {
            return Err(RegionError::Empty);
        }
        let mut sorted = regions.to_vec();
        sorted.sort_by_key(|r| r.addr);
        let mut list = Vec::new();
        let mut pages: u64 = 0;
        let mut prev_end = 0usize;
        for r in sorted {
            if r.len == 0 || r.addr % PAGE_SIZE != 0 || r.len % PAGE_SIZE != 0 {
                return Err(RegionError::Unaligned {
                    addr: r.addr,
                    len: r.len,
                });
            }
            if r.addr < prev_end {
                return Err(RegionError::Overlap(r.addr));
            }
            prev_end = r.addr + r.len;
            list.push((r, pages as PageIdx));
            pages += (r.len / PAGE_SIZE) as u64;
            if pages >= u32::MAX as u64 {
                return Err(RegionError::TooLarge);
            }
        }
        Ok(Self {
            list,
            pages: pages as u32,
        })
    }

    /// Total pages.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The regions with the index of their first page.
    pub fn iter(&self) -> impl Iterator<Item = (GuestRegion, PageIdx)> + '_ {
        self.list.iter().copied()
    }

    /// Page index of the page containing `addr`.
    pub fn page_of(&self, addr: usize) -> Option<PageIdx> {
        let i = self.list.partition_point(|(r, _)| r.addr + r.len <= addr);
        let (r, first) = self.list.get(i)?;
        (addr >= r.addr).then(|| first + ((addr - r.addr) / PAGE_SIZE) as PageIdx)
    }

    /// Host address of page `idx`.
    pub fn addr_of(&self, idx: PageIdx) -> usize {
        let i = self.list.partition_point(|(_, first)| *first <= idx) - 1;
        let (r, first) = self.list[i];
        r.addr + (idx - first) as usize * PAGE_SIZE
    }

    /// First page and end (exclusive) of the region containing `idx`.
    pub fn bounds_of(&self, idx: PageIdx) -> (PageIdx, PageIdx) {
        let i = self.list.partition_point(|(_, first)| *first <= idx) - 1;
        let (r, first) = self.list[i];
        (first, first + (r.len / PAGE_SIZE) as u32)
    }

    /// Number of pages from `idx` to the end of its region.
    pub fn pages_to_region_end(&self, idx: PageIdx) -> u32 {
        let i = self.list.partition_point(|(_, first)| *first <= idx) - 1;
        let (r, first) = self.list[i];
        (r.len / PAGE_SIZE) as u32 - (idx - first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(addr: usize, pages: usize) -> GuestRegion {
        GuestRegion {
            addr,
            len: pages * PAGE_SIZE,
        }
    }

    #[test]
    fn maps_addresses_both_ways_across_regions() {
        let regs = Regions::new(&[r(0x10_0000_0000, 4), r(0x1000_0000, 8)]).unwrap();
        assert_eq!(regs.pages(), 12);
        assert_eq!(regs.page_of(0x1000_0000), Some(0));
        assert_eq!(regs.page_of(0x1000_0000 + 7 * PAGE_SIZE + 5), Some(7));
        assert_eq!(regs.page_of(0x1000_0000 + 8 * PAGE_SIZE), None);
        assert_eq!(regs.page_of(0x10_0000_0000 + PAGE_SIZE), Some(9));
        assert_eq!(regs.page_of(0xfff), None);
        for i in 0..12 {
            assert_eq!(regs.page_of(regs.addr_of(i)), Some(i));
        }
        assert_eq!(regs.pages_to_region_end(6), 2);
        assert_eq!(regs.pages_to_region_end(8), 4);
        assert_eq!(regs.bounds_of(3), (0, 8));
        assert_eq!(regs.bounds_of(8), (8, 12));
    }

    #[test]
    fn rejects_bad_regions() {
        assert_eq!(Regions::new(&[]).unwrap_err(), RegionError::Empty);
        assert!(matches!(
            Regions::new(&[GuestRegion { addr: 1, len: 4096 }]),
            Err(RegionError::Unaligned { .. })
        ));
        assert_eq!(
            Regions::new(&[r(0x1000, 2), r(0x2000, 2)]).unwrap_err(),
            RegionError::Overlap(0x2000)
        );
    }
}

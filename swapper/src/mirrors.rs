//! The Swap Mapper's index: which pages mirror which disk blocks, and the
//! disks to read them from (see [`crate::named`]). Pure bookkeeping, under
//! leaf locks (never held while taking a page lock).

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::page::PAGE_SIZE;
use crate::page_state::{Mirror, PageIdx};

/// Reads a guest disk's bytes for the swapper (named faults, rescues).
pub trait DiskReader: Send + Sync {
    /// Fills `buf` from byte `offset` of the disk (all of it, or an error).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// Most disks one swapper knows.
pub const MAX_DISKS: usize = 16;

/// Most pages one named fault reads ahead.
pub const MAX_READAHEAD: u32 = 64;

/// The mirrors by disk block, and the disks to read them from.
#[derive(Default)]
pub(crate) struct MirrorIndex {
    by_block: Mutex<BTreeSet<(u8, u64, PageIdx)>>,
    disks: Mutex<Vec<Option<Arc<dyn DiskReader>>>>,
}

impl std::fmt::Debug for MirrorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorIndex")
            .field("mirrors", &self.blocks().len())
            .finish_non_exhaustive()
    }
}

impl MirrorIndex {
    fn blocks(&self) -> MutexGuard<'_, BTreeSet<(u8, u64, PageIdx)>> {
        self.by_block.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers disk `disk`.
    pub fn add_disk(&self, disk: u8, reader: Arc<dyn DiskReader>) -> Result<(), String> {
        let i = usize::from(disk);
        if i >= MAX_DISKS {
            return Err(format!("disk {disk}: at most {MAX_DISKS} disks"));
        }
        let mut d = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() <= i {
            d.resize_with(i + 1, || None);
        }
        d[i] = Some(reader);
        Ok(())
    }

    /// The reader of `disk`.
    pub fn disk(&self, disk: u8) -> Option<Arc<dyn DiskReader>> {
        let d = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        d.get(usize::from(disk)).cloned().flatten()
    }

    /// The index's entries for a mirror that went from `before` to `after`.
    pub fn moved(&self, idx: PageIdx, before: Option<Mirror>, after: Option<Mirror>) {
        if before == after {
            return;
        }
        let mut b = self.blocks();
        if let Some(m) = before {
            b.remove(&(m.disk, m.offset, idx));
        }
        if let Some(m) = after {
            b.insert((m.disk, m.offset, idx));
        }
    }

    /// The (offset, page) of mirrors whose block overlaps `[offset, end)` of `disk`.
    pub(crate) fn overlapping(&self, disk: u8, offset: u64, end: u64) -> Vec<(u64, PageIdx)> {
        let lo = offset.saturating_sub(PAGE_SIZE as u64 - 1);
        self.blocks()
            .range((disk, lo, 0)..(disk, end, 0))
            .map(|&(_, off, idx)| (off, idx))
            .collect()
    }

    /// The page mirroring the block at exactly `offset` of `disk`, if any.
    pub(crate) fn at(&self, disk: u8, offset: u64) -> Option<PageIdx> {
        self.blocks()
            .range((disk, offset, 0)..=(disk, offset, PageIdx::MAX))
            .next()
            .map(|&(_, _, idx)| idx)
    }

    /// Mirrors in the index.
    pub fn len(&self) -> usize {
        self.blocks().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(disk: u8, offset: u64) -> Mirror {
        Mirror {
            disk,
            offset,
            crc: 0,
        }
    }

    #[test]
    fn the_index_finds_every_block_a_write_overlaps() {
        let x = MirrorIndex::default();
        x.moved(1, None, Some(m(0, 0)));
        x.moved(2, None, Some(m(0, 4096)));
        x.moved(3, None, Some(m(0, 512))); // not page aligned on the disk
        x.moved(4, None, Some(m(1, 4096))); // another disk
        x.moved(5, None, Some(m(0, 4096))); // the same block in two pages
                                            // One sector at 4096 overlaps the blocks at 512 (512..4608) and 4096.
        assert_eq!(
            x.overlapping(0, 4096, 4608),
            vec![(512, 3), (4096, 2), (4096, 5)]
        );
        // A write just before a block does not touch it.
        assert_eq!(x.overlapping(0, 0, 512), vec![(0, 1)]);
        assert_eq!(x.overlapping(1, 0, 1 << 20), vec![(4096, 4)]);
        assert_eq!(x.at(0, 4096), Some(2));
        assert_eq!(x.at(0, 8192), None);
        // A mirror that moves or ends leaves the index.
        x.moved(2, Some(m(0, 4096)), Some(m(0, 8192)));
        assert_eq!(x.at(0, 8192), Some(2));
        x.moved(5, Some(m(0, 4096)), None);
        assert_eq!(x.at(0, 4096), None);
        assert_eq!(x.len(), 4);
    }

    #[test]
    fn disks_are_bounded() {
        struct Zero;
        impl DiskReader for Zero {
            fn read_at(&self, buf: &mut [u8], _: u64) -> io::Result<()> {
                buf.fill(0);
                Ok(())
            }
        }
        let x = MirrorIndex::default();
        x.add_disk(3, Arc::new(Zero)).unwrap();
        assert!(x.disk(3).is_some() && x.disk(2).is_none() && x.disk(200).is_none());
        assert!(x
            .add_disk(MAX_DISKS as u8, Arc::new(Zero))
            .unwrap_err()
            .contains("at most"));
    }
}

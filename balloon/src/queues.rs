//! What the guest puts in the balloon's queues, parsed and checked.
//!
//! - [`QueueLayout`]: which queue index plays which [`Role`] for a negotiated
//!   feature set (queues of features not negotiated take no index).
//! - [`walk_pfns`]: an inflate/deflate buffer (device-readable descriptors holding
//!   little-endian `u32` PFNs) read in chunks of [`PFN_CHUNK`], each chunk sorted
//!   and coalesced into page ranges that never cross a RAM region boundary.
//! - [`walk_reported`]: a free page report (descriptors naming free ranges by
//!   address and length).
//! - [`read_stats`]: the bytes of a statistics buffer.
//!
//! Nothing here trusts the guest: PFNs outside guest RAM, descriptors of the wrong
//! direction, lengths that are not a multiple of the entry size, and buffers that
//! cannot be read are counted in a [`Tally`] and skipped; the valid rest of the
//! buffer is still used.

use std::sync::atomic::{AtomicBool, Ordering};

use virtio_queue::desc::split::Descriptor;
use vmm::memory::HostRegion;
use vmm::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::spec::features::{FREE_PAGE_HINT, REPORTING, STATS_VQ};
use crate::spec::{BALLOON_PAGE_SIZE, PFN_SHIFT};
use crate::stats::{StatsError, STAT_ENTRY_SIZE};

/// PFNs read from guest memory at a time (1 KiB, the Linux driver's whole batch).
pub const PFN_CHUNK: usize = 256;

/// Largest statistics buffer read (the driver sends 10–16 entries).
pub const MAX_STATS_BYTES: usize = 64 * STAT_ENTRY_SIZE;

/// Why (part of) a buffer was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    /// A device-writable descriptor where a device-readable one is required.
    #[error("descriptor at {0:#x} is device-writable, a readable one is required")]
    WriteOnly(u64),
    /// A length that is not a whole number of entries.
    #[error("descriptor at {addr:#x} has length {len}, not a multiple of {unit}")]
    BadLength {
        /// Buffer address.
        addr: u64,
        /// Its length.
        len: u32,
        /// Entry size.
        unit: u32,
    },
    /// The buffer is not in guest RAM.
    #[error("descriptor at {addr:#x}+{len:#x} is outside guest RAM")]
    Unreadable {
        /// Buffer address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A statistics buffer that is not whole entries.
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// A reported range smaller than one aligned 4 KiB page.
    #[error("reported range {addr:#x}+{len:#x} holds no whole 4 KiB page")]
    NoWholePage {
        /// Range address.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// What a queue is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Pages the guest gives up.
    Inflate,
    /// Pages the guest takes back.
    Deflate,
    /// Guest statistics.
    Stats,
    /// Free page hinting (never offered by this device).
    FreePageHint,
    /// Free page reporting.
    Reporting,
}

/// Queue index → role for one negotiated feature set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLayout {
    roles: Vec<Role>,
}

impl QueueLayout {
    /// The layout the driver uses when it negotiated `features`.
    pub fn for_features(features: u64) -> Self {
        let mut roles = vec![Role::Inflate, Role::Deflate];
        for (bit, role) in [
            (STATS_VQ, Role::Stats),
            (FREE_PAGE_HINT, Role::FreePageHint),
            (REPORTING, Role::Reporting),
        ] {
            if features & bit != 0 {
                roles.push(role);
            }
        }
        Self { roles }
    }

    /// The role of queue `index`, if it has one.
    pub fn role(&self, index: u16) -> Option<Role> {
        self.roles.get(usize::from(index)).copied()
    }

    /// The index of `role`, if present.
    pub fn index_of(&self, role: Role) -> Option<u16> {
        self.roles.iter().position(|r| *r == role).map(|i| i as u16)
    }

    /// Number of queues in use.
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// Never true (inflate and deflate always exist).
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }
}

/// Guest RAM as sorted, page-aligned guest-physical ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamMap {
    ranges: Vec<(u64, u64)>,
}

impl RamMap {
    /// The RAM map of `regions` (guest memory's host regions).
    pub fn new(regions: &[HostRegion]) -> Self {
        let mut ranges: Vec<(u64, u64)> = regions
            .iter()
            .map(|r| (r.guest_addr, r.guest_addr.saturating_add(r.len as u64)))
            .collect();
        ranges.sort_unstable();
        Self { ranges }
    }

    /// The region holding the whole 4 KiB page at `gpa`.
    pub fn region_of_page(&self, gpa: u64) -> Option<usize> {
        let i = self.ranges.partition_point(|r| r.0 <= gpa).checked_sub(1)?;
        let (s, e) = self.ranges[i];
        (gpa >= s && gpa.checked_add(BALLOON_PAGE_SIZE)? <= e).then_some(i)
    }

    /// The parts of `[start, end)` inside RAM, as `(start, end)` ranges.
    pub fn intersect(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .filter_map(|&(s, e)| {
                let (a, b) = (start.max(s), end.min(e));
                (a < b).then_some((a, b))
            })
            .collect()
    }
}

/// Counts of what a buffer held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Valid 4 KiB pages.
    pub pages: u64,
    /// Ranges passed on.
    pub ranges: u64,
    /// Pages outside guest RAM.
    pub invalid_pfns: u64,
    /// Descriptors ignored (see [`BufferError`]).
    pub invalid_descriptors: u64,
    /// The first problem seen, for the log.
    pub first_error: Option<BufferError>,
}

impl Tally {
    pub(crate) fn bad_descriptor(&mut self, e: BufferError) {
        self.invalid_descriptors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Coalesces ascending pages into ranges within one region.
struct Ranges<'a, F: FnMut(u64, u64)> {
    ram: &'a RamMap,
    pending: Option<(u64, u64, usize)>,
    sink: F,
}

impl<F: FnMut(u64, u64)> Ranges<'_, F> {
    fn page(&mut self, gpa: u64, tally: &mut Tally) {
        let Some(region) = self.ram.region_of_page(gpa) else {
            tally.invalid_pfns += 1;
            return;
        };
        tally.pages += 1;
        match &mut self.pending {
            Some((_, end, r)) if *end == gpa && *r == region => *end += BALLOON_PAGE_SIZE,
            _ => {
                self.flush(tally);
                self.pending = Some((gpa, gpa + BALLOON_PAGE_SIZE, region));
            }
        }
    }

    fn flush(&mut self, tally: &mut Tally) {
        if let Some((s, e, _)) = self.pending.take() {
            tally.ranges += 1;
            (self.sink)(s, e - s);
        }
    }
}

/// Reads the PFN arrays of an inflate or deflate buffer and calls `sink(gpa, len)`
/// for each run of contiguous valid pages (ascending within a chunk of
/// [`PFN_CHUNK`] PFNs; duplicates within a chunk are dropped). Stops early when
/// `stop` becomes true.
pub fn walk_pfns(
    descs: impl IntoIterator<Item = Descriptor>,
    mem: &GuestMemoryMmap,
    ram: &RamMap,
    stop: &AtomicBool,
    mut sink: impl FnMut(u64, u64),
) -> Tally {
    let mut tally = Tally::default();
    let mut ranges = Ranges {
        ram,
        pending: None,
        sink: &mut sink,
    };
    let mut bytes = [0u8; PFN_CHUNK * 4];
    let mut pfns = Vec::with_capacity(PFN_CHUNK);
    for d in descs {
        let (addr, len) = (d.addr().0, d.len());
        if d.is_write_only() {
            tally.bad_descriptor(BufferError::WriteOnly(addr));
            continue;
        }
        if len % 4 != 0 {
            tally.bad_descriptor(BufferError::BadLength { addr, len, unit: 4 });
            continue;
        }
        let mut off = 0u64;
        while off < u64::from(len) && !stop.load(Ordering::Relaxed) {
            let n = (u64::from(len) - off).min(bytes.len() as u64) as usize;
            let at = addr.checked_add(off).map(GuestAddress);
            if at
                .and_then(|a| mem.read_slice(&mut bytes[..n], a).ok())
                .is_none()
            {
                tally.bad_descriptor(BufferError::Unreadable { addr, len });
                break;
            }
            pfns.clear();
            pfns.extend(
                bytes[..n]
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            pfns.sort_unstable();
            pfns.dedup();
            for &pfn in &pfns {
                ranges.page(u64::from(pfn) << PFN_SHIFT, &mut tally);
            }
            off += n as u64;
        }
    }
    ranges.flush(&mut tally);
    tally
}

/// Walks a free page report: each descriptor names a free range by address and
/// length (its direction does not matter: nothing is read or written). The whole
/// 4 KiB pages of each range inside RAM go to `sink(gpa, len)`; pages outside RAM
/// count as invalid.
pub fn walk_reported(
    descs: impl IntoIterator<Item = Descriptor>,
    ram: &RamMap,
    mut sink: impl FnMut(u64, u64),
) -> Tally {
    let mut tally = Tally::default();
    for d in descs {
        let (addr, len) = (d.addr().0, d.len());
        let start = addr.checked_next_multiple_of(BALLOON_PAGE_SIZE);
        let end = addr.saturating_add(u64::from(len)) / BALLOON_PAGE_SIZE * BALLOON_PAGE_SIZE;
        let (start, end) = match start {
            Some(s) if s < end => (s, end),
            _ => {
                tally.bad_descriptor(BufferError::NoWholePage { addr, len });
                continue;
            }
        };
        let mut inside = 0;
        for (s, e) in ram.intersect(start, end) {
            inside += e - s;
            tally.ranges += 1;
            sink(s, e - s);
        }
        tally.pages += inside / BALLOON_PAGE_SIZE;
        tally.invalid_pfns += (end - start - inside) / BALLOON_PAGE_SIZE;
    }
    tally
}

/// The bytes of a statistics buffer (device-readable descriptors, concatenated, at
/// most [`MAX_STATS_BYTES`]).
pub fn read_stats(
    descs: impl IntoIterator<Item = Descriptor>,
    mem: &GuestMemoryMmap,
) -> (Vec<u8>, Tally) {
    let mut tally = Tally::default();
    let mut out = Vec::new();
    for d in descs {
        let (addr, len) = (d.addr().0, d.len());
        if d.is_write_only() {
            tally.bad_descriptor(BufferError::WriteOnly(addr));
            continue;
        }
        let n = (len as usize).min(MAX_STATS_BYTES - out.len());
        let at = out.len();
        out.resize(at + n, 0);
        if mem.read_slice(&mut out[at..], GuestAddress(addr)).is_err() {
            out.truncate(at);
            tally.bad_descriptor(BufferError::Unreadable { addr, len });
        }
    }
    (out, tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> RamMap {
        RamMap::new(&[
            HostRegion {
                guest_addr: 0x10_0000,
                host_addr: 0,
                len: 0x10_0000,
            },
            HostRegion {
                guest_addr: 0,
                host_addr: 0,
                len: 0x8_0000,
            },
            // Adjacent to the first one in guest-physical space.
            HostRegion {
                guest_addr: 0x20_0000,
                host_addr: 0,
                len: 0x1000,
            },
        ])
    }

    #[test]
    fn layout_shifts_indices_with_features() {
        let all = QueueLayout::for_features(STATS_VQ | REPORTING);
        assert_eq!(all.role(2), Some(Role::Stats));
        assert_eq!(all.role(3), Some(Role::Reporting));
        assert_eq!(all.len(), 4);
        let no_stats = QueueLayout::for_features(REPORTING);
        assert_eq!(no_stats.role(0), Some(Role::Inflate));
        assert_eq!(no_stats.role(1), Some(Role::Deflate));
        assert_eq!(no_stats.role(2), Some(Role::Reporting));
        assert_eq!(no_stats.role(3), None);
        assert_eq!(no_stats.index_of(Role::Stats), None);
        let hint = QueueLayout::for_features(STATS_VQ | FREE_PAGE_HINT | REPORTING);
        assert_eq!(hint.index_of(Role::Reporting), Some(4));
        assert!(!QueueLayout::for_features(0).is_empty());
    }

    #[test]
    fn ram_map_finds_whole_pages_only() {
        let m = ram();
        assert_eq!(m.region_of_page(0), Some(0));
        assert_eq!(m.region_of_page(0x7_f000), Some(0));
        assert_eq!(m.region_of_page(0x8_0000), None);
        assert_eq!(m.region_of_page(0x1f_f000), Some(1));
        assert_eq!(m.region_of_page(0x20_0000), Some(2));
        assert_eq!(m.region_of_page(0x20_1000), None);
        assert_eq!(m.region_of_page(!0xfff), None);
        assert_eq!(
            m.intersect(0x7_0000, 0x18_0000),
            vec![(0x7_0000, 0x8_0000), (0x10_0000, 0x18_0000)]
        );
    }

    #[test]
    fn reported_ranges_are_trimmed_to_pages_and_ram() {
        let m = ram();
        let descs = [
            Descriptor::new(0x1000, 0x2000, 0, 0),
            // Unaligned: only the page 0x3000..0x4000 is whole.
            Descriptor::new(0x2800, 0x1900, 2, 0),
            // Half outside RAM.
            Descriptor::new(0x7_e000, 0x4000, 2, 0),
            // No whole page.
            Descriptor::new(0x5010, 0x100, 2, 0),
            // Crosses from region 1 into the adjacent region 2.
            Descriptor::new(0x1f_f000, 0x2000, 2, 0),
        ];
        let mut got = Vec::new();
        let t = walk_reported(descs, &m, |a, l| got.push((a, l)));
        assert_eq!(
            got,
            vec![
                (0x1000, 0x2000),
                (0x3000, 0x1000),
                (0x7_e000, 0x2000),
                (0x1f_f000, 0x1000),
                (0x20_0000, 0x1000)
            ]
        );
        assert_eq!(t.pages, 2 + 1 + 2 + 2);
        assert_eq!(t.invalid_pfns, 2);
        assert_eq!(t.invalid_descriptors, 1);
        assert!(matches!(
            t.first_error,
            Some(BufferError::NoWholePage { .. })
        ));
    }

    #[test]
    fn pfn_runs_split_at_region_boundaries_and_stop_early() {
        use vmm::memory::{create_guest_memory, GuestMemoryExt, RegionSpec};
        // Two regions adjacent in guest-physical space (separate host mappings).
        let mem = create_guest_memory(&[
            RegionSpec::new(0, 0x10_0000),
            RegionSpec::new(0x10_0000, 0x10_0000),
        ])
        .unwrap();
        let ram = RamMap::new(&mem.host_regions());
        let pfns: Vec<u32> = vec![0xfe, 0xff, 0x100, 0x101, 0x100, 0x200];
        let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(0x8000)).unwrap();
        let desc = Descriptor::new(0x8000, bytes.len() as u32, 0, 0);
        let stop = AtomicBool::new(false);
        let mut got = Vec::new();
        let t = walk_pfns([desc], &mem, &ram, &stop, |a, l| got.push((a, l)));
        assert_eq!(got, vec![(0xfe000, 0x2000), (0x10_0000, 0x2000)]);
        assert_eq!((t.pages, t.ranges, t.invalid_pfns), (4, 2, 1));
        // A stop request ends the walk before anything is read.
        stop.store(true, Ordering::Relaxed);
        got.clear();
        let t = walk_pfns([desc], &mem, &ram, &stop, |a, l| got.push((a, l)));
        assert!(got.is_empty());
        assert_eq!(t.pages, 0);
    }
}

//! Guest memory statistics from the balloon's statistics queue.
//!
//! The buffer is an array of packed little-endian `(u16 tag, u64 value)` entries
//! (10 bytes each, `struct virtio_balloon_stat`). Tags 0–9 are in virtio 1.2;
//! 10–15 were added in virtio 1.3 (Linux 6.12). Memory amounts and the swap
//! counters are bytes; fault and hugetlb counters are event counts. Every value
//! is cumulative since guest boot or a snapshot of the moment the guest filled the
//! buffer. Unknown tags are kept by number.

use std::collections::BTreeMap;

/// Size of one `(tag, value)` entry.
pub const STAT_ENTRY_SIZE: usize = 10;

/// Why a statistics buffer was not entirely understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// The buffer does not end on an entry boundary; the trailing bytes were
    /// ignored.
    #[error("statistics buffer of {0} bytes is not a whole number of 10-byte entries")]
    Trailing(usize),
}

/// A statistic the guest can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatTag {
    /// `VIRTIO_BALLOON_S_SWAP_IN` (0): bytes swapped in.
    SwapIn,
    /// `VIRTIO_BALLOON_S_SWAP_OUT` (1): bytes swapped out.
    SwapOut,
    /// `VIRTIO_BALLOON_S_MAJFLT` (2): major page faults.
    MajorFaults,
    /// `VIRTIO_BALLOON_S_MINFLT` (3): minor page faults.
    MinorFaults,
    /// `VIRTIO_BALLOON_S_MEMFREE` (4): unused memory, bytes.
    FreeMemory,
    /// `VIRTIO_BALLOON_S_MEMTOT` (5): total memory, bytes.
    TotalMemory,
    /// `VIRTIO_BALLOON_S_AVAIL` (6): memory available without swapping, bytes.
    AvailableMemory,
    /// `VIRTIO_BALLOON_S_CACHES` (7): file caches, bytes.
    DiskCaches,
    /// `VIRTIO_BALLOON_S_HTLB_PGALLOC` (8): hugetlb page allocations.
    HugetlbAllocations,
    /// `VIRTIO_BALLOON_S_HTLB_PGFAIL` (9): failed hugetlb page allocations.
    HugetlbFailures,
    /// `VIRTIO_BALLOON_S_OOM_KILL` (10): OOM kills.
    OomKills,
    /// `VIRTIO_BALLOON_S_ALLOC_STALL` (11): allocation stalls.
    AllocStalls,
    /// `VIRTIO_BALLOON_S_ASYNC_SCAN` (12): pages scanned by kswapd.
    AsyncScans,
    /// `VIRTIO_BALLOON_S_DIRECT_SCAN` (13): pages scanned by direct reclaim.
    DirectScans,
    /// `VIRTIO_BALLOON_S_ASYNC_RECLAIM` (14): pages reclaimed by kswapd.
    AsyncReclaims,
    /// `VIRTIO_BALLOON_S_DIRECT_RECLAIM` (15): pages reclaimed directly.
    DirectReclaims,
}

impl StatTag {
    /// Every known tag, in tag order.
    pub const ALL: [StatTag; 16] = [
        Self::SwapIn,
        Self::SwapOut,
        Self::MajorFaults,
        Self::MinorFaults,
        Self::FreeMemory,
        Self::TotalMemory,
        Self::AvailableMemory,
        Self::DiskCaches,
        Self::HugetlbAllocations,
        Self::HugetlbFailures,
        Self::OomKills,
        Self::AllocStalls,
        Self::AsyncScans,
        Self::DirectScans,
        Self::AsyncReclaims,
        Self::DirectReclaims,
    ];

    /// The tag for a wire value, if known.
    pub fn from_wire(tag: u16) -> Option<Self> {
        Self::ALL.get(usize::from(tag)).copied()
    }

    /// The wire value.
    pub fn wire(self) -> u16 {
        self as u16
    }

    /// The name used in reports (virtio's names, as QEMU and Firecracker print them).
    pub fn name(self) -> &'static str {
        match self {
            Self::SwapIn => "swap-in",
            Self::SwapOut => "swap-out",
            Self::MajorFaults => "major-faults",
            Self::MinorFaults => "minor-faults",
            Self::FreeMemory => "free-memory",
            Self::TotalMemory => "total-memory",
            Self::AvailableMemory => "available-memory",
            Self::DiskCaches => "disk-caches",
            Self::HugetlbAllocations => "hugetlb-allocations",
            Self::HugetlbFailures => "hugetlb-failures",
            Self::OomKills => "oom-kills",
            Self::AllocStalls => "alloc-stalls",
            Self::AsyncScans => "async-scans",
            Self::DirectScans => "direct-scans",
            Self::AsyncReclaims => "async-reclaims",
            Self::DirectReclaims => "direct-reclaims",
        }
    }
}

/// One statistics report from the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuestStats {
    /// When the buffer arrived, ns since the balloon's epoch.
    pub t_ns: u64,
    /// Bytes swapped in since boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    /// Bytes swapped out since boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    /// Major page faults since boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    /// Minor page faults since boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    /// Free memory, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    /// Total memory, bytes (shrinks as the balloon inflates without
    /// `DEFLATE_ON_OOM`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    /// Memory available for new work without swapping, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    /// File caches, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    /// Successful hugetlb page allocations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    /// Failed hugetlb page allocations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    /// OOM kills (virtio 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// Allocation stalls (virtio 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc_stalls: Option<u64>,
    /// Pages scanned by kswapd (virtio 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_scans: Option<u64>,
    /// Pages scanned by direct reclaim (virtio 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_scans: Option<u64>,
    /// Pages reclaimed by kswapd (virtio 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_reclaims: Option<u64>,
    /// Pages reclaimed by direct reclaim (virtio 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_reclaims: Option<u64>,
    /// Tags this device does not know, by number.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub unknown: BTreeMap<u16, u64>,
}

impl GuestStats {
    /// Parses a statistics buffer that arrived at `t_ns`. Whole entries are always
    /// used; a trailing partial entry is reported as an error next to the result.
    /// A tag that appears twice keeps its last value.
    pub fn parse(buf: &[u8], t_ns: u64) -> (Self, Option<StatsError>) {
        let mut s = GuestStats {
            t_ns,
            ..Default::default()
        };
        let mut entries = buf.chunks_exact(STAT_ENTRY_SIZE);
        for e in entries.by_ref() {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let mut v = [0u8; 8];
            v.copy_from_slice(&e[2..]);
            s.set_wire(tag, u64::from_le_bytes(v));
        }
        let err = (!entries.remainder().is_empty()).then_some(StatsError::Trailing(buf.len()));
        (s, err)
    }

    fn slot(&mut self, tag: StatTag) -> &mut Option<u64> {
        match tag {
            StatTag::SwapIn => &mut self.swap_in,
            StatTag::SwapOut => &mut self.swap_out,
            StatTag::MajorFaults => &mut self.major_faults,
            StatTag::MinorFaults => &mut self.minor_faults,
            StatTag::FreeMemory => &mut self.free_memory,
            StatTag::TotalMemory => &mut self.total_memory,
            StatTag::AvailableMemory => &mut self.available_memory,
            StatTag::DiskCaches => &mut self.disk_caches,
            StatTag::HugetlbAllocations => &mut self.hugetlb_allocations,
            StatTag::HugetlbFailures => &mut self.hugetlb_failures,
            StatTag::OomKills => &mut self.oom_kills,
            StatTag::AllocStalls => &mut self.alloc_stalls,
            StatTag::AsyncScans => &mut self.async_scans,
            StatTag::DirectScans => &mut self.direct_scans,
            StatTag::AsyncReclaims => &mut self.async_reclaims,
            StatTag::DirectReclaims => &mut self.direct_reclaims,
        }
    }

    /// Records `value` for the wire tag `tag` (unknown tags are kept by number).
    pub fn set_wire(&mut self, tag: u16, value: u64) {
        match StatTag::from_wire(tag) {
            Some(t) => *self.slot(t) = Some(value),
            None => {
                self.unknown.insert(tag, value);
            }
        }
    }

    /// The value of a known statistic, if the guest reported it.
    pub fn get(&self, tag: StatTag) -> Option<u64> {
        match tag {
            StatTag::SwapIn => self.swap_in,
            StatTag::SwapOut => self.swap_out,
            StatTag::MajorFaults => self.major_faults,
            StatTag::MinorFaults => self.minor_faults,
            StatTag::FreeMemory => self.free_memory,
            StatTag::TotalMemory => self.total_memory,
            StatTag::AvailableMemory => self.available_memory,
            StatTag::DiskCaches => self.disk_caches,
            StatTag::HugetlbAllocations => self.hugetlb_allocations,
            StatTag::HugetlbFailures => self.hugetlb_failures,
            StatTag::OomKills => self.oom_kills,
            StatTag::AllocStalls => self.alloc_stalls,
            StatTag::AsyncScans => self.async_scans,
            StatTag::DirectScans => self.direct_scans,
            StatTag::AsyncReclaims => self.async_reclaims,
            StatTag::DirectReclaims => self.direct_reclaims,
        }
    }

    /// Every reported statistic as `(name, value)`, known tags first in tag order,
    /// then unknown ones named by number (`"tag-42"`).
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = StatTag::ALL
            .iter()
            .filter_map(|&t| self.get(t).map(|v| (t.name().to_string(), v)))
            .collect();
        out.extend(self.unknown.iter().map(|(t, v)| (format!("tag-{t}"), *v)));
        out
    }

    /// Bytes swapped in and out since boot, if both are reported.
    pub fn swap_total(&self) -> Option<u64> {
        Some(self.swap_in?.saturating_add(self.swap_out?))
    }
}

/// Encodes `(tag, value)` entries the way the guest driver lays them out (tests and
/// tools that play the driver).
pub fn encode(entries: &[(u16, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * STAT_ENTRY_SIZE);
    for (tag, v) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_known_tag_by_name() {
        let entries: Vec<(u16, u64)> = (0u16..16).map(|t| (t, 1000 + u64::from(t))).collect();
        let (s, err) = GuestStats::parse(&encode(&entries), 77);
        assert_eq!(err, None);
        assert_eq!(s.t_ns, 77);
        for t in StatTag::ALL {
            assert_eq!(s.get(t), Some(1000 + u64::from(t.wire())), "{t:?}");
            assert_eq!(StatTag::from_wire(t.wire()), Some(t));
        }
        assert_eq!(s.swap_in, Some(1000));
        assert_eq!(s.available_memory, Some(1006));
        assert_eq!(s.hugetlb_failures, Some(1009));
        assert_eq!(s.direct_reclaims, Some(1015));
        assert!(s.unknown.is_empty());
        let names: Vec<String> = s.named().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], "swap-in");
        assert_eq!(names[6], "available-memory");
        assert_eq!(names.len(), 16);
        assert_eq!(s.swap_total(), Some(2001));
    }

    #[test]
    fn keeps_unknown_tags_and_reports_trailing_bytes() {
        let mut buf = encode(&[(4, 5 << 20), (99, 7), (4, 6 << 20)]);
        buf.extend_from_slice(&[1, 2, 3]);
        let (s, err) = GuestStats::parse(&buf, 1);
        assert_eq!(err, Some(StatsError::Trailing(33)));
        assert_eq!(s.free_memory, Some(6 << 20), "last value wins");
        assert_eq!(s.unknown.get(&99), Some(&7));
        assert_eq!(s.named().last().unwrap(), &("tag-99".to_string(), 7));
        assert_eq!(s.swap_total(), None);
    }

    #[test]
    fn serializes_with_virtio_names() {
        let (s, _) = GuestStats::parse(&encode(&[(0, 1), (6, 2), (200, 3)]), 5);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["swap-in"], 1);
        assert_eq!(j["available-memory"], 2);
        assert_eq!(j["unknown"]["200"], 3);
        assert!(j.get("swap-out").is_none());
        let back: GuestStats = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn empty_buffer_is_empty_stats() {
        let (s, err) = GuestStats::parse(&[], 3);
        assert_eq!(err, None);
        assert!(s.named().is_empty());
    }
}

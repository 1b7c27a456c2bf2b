//! KVM's binary statistics (`KVM_GET_STATS_FD`): in-kernel counters for a VM or a vCPU.
//!
//! The fd holds a header, an id string, a block of descriptors (flags, exponent, size,
//! offset, bucket size, name) and a data block of `u64`s. The layout part is constant for
//! the fd's lifetime, so a [`StatsReader`] parses it once and re-reads only the data.
//! Where the kernel lacks the capability the VM reports stats as unavailable instead of
//! failing.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use serde::Serialize;

vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

const HEADER_LEN: usize = 24;
const DESC_FIXED_LEN: usize = 16;
/// Refuse layouts that would make us allocate absurd amounts for a corrupt fd.
const MAX_DESCS: u32 = 4096;
const MAX_NAME: u32 = 4096;

/// Errors from opening or reading a stats fd.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The kernel lacks `KVM_CAP_BINARY_STATS_FD`.
    #[error("the kernel does not offer KVM_CAP_BINARY_STATS_FD")]
    Unsupported,
    /// The ioctl failed.
    #[error("KVM_GET_STATS_FD failed")]
    Ioctl(#[source] std::io::Error),
    /// Reading the fd failed.
    #[error("reading the KVM stats fd at offset {offset:#x} failed")]
    Read {
        /// File offset.
        offset: u64,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The header or descriptors make no sense.
    #[error("malformed KVM stats layout: {0}")]
    Malformed(String),
}

/// The kind of a statistic (`KVM_STATS_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatKind {
    /// Monotonic counter.
    Cumulative,
    /// Current value.
    Instant,
    /// Peak value.
    Peak,
    /// Linear histogram.
    LinearHist,
    /// Log2 histogram.
    LogHist,
    /// A type this code does not know.
    Unknown,
}

impl StatKind {
    fn from_flags(flags: u32) -> Self {
        match flags & kvm_bindings::KVM_STATS_TYPE_MASK {
            kvm_bindings::KVM_STATS_TYPE_CUMULATIVE => Self::Cumulative,
            kvm_bindings::KVM_STATS_TYPE_INSTANT => Self::Instant,
            kvm_bindings::KVM_STATS_TYPE_PEAK => Self::Peak,
            kvm_bindings::KVM_STATS_TYPE_LINEAR_HIST => Self::LinearHist,
            kvm_bindings::KVM_STATS_TYPE_LOG_HIST => Self::LogHist,
            _ => Self::Unknown,
        }
    }
}

/// One statistic's descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatDesc {
    /// Name, e.g. `exits` or `halt_wait_ns`.
    pub name: String,
    /// Kind.
    pub kind: StatKind,
    /// Raw `flags` (type, unit, base).
    pub flags: u32,
    /// Unit exponent.
    pub exponent: i16,
    /// Number of `u64` values (1 for scalars, buckets for histograms).
    pub size: u16,
    /// Offset of the values inside the data block.
    pub offset: u32,
}

/// Values read from one stats fd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// The fd's id string (e.g. `kvm-1234/vcpu-0`).
    pub id: String,
    /// Scalar statistics by name.
    pub values: BTreeMap<String, u64>,
    /// Histogram statistics by name (bucket counts).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub histograms: BTreeMap<String, Vec<u64>>,
}

impl StatsSnapshot {
    /// A scalar by name.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }
}

/// Random-access reads, so the parser can be tested on a byte buffer.
pub trait ReadAt {
    /// Fill `buf` from `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// The parsed, constant part of a stats fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsLayout {
    /// Id string.
    pub id: String,
    /// Descriptors, in fd order.
    pub descs: Vec<StatDesc>,
    /// File offset of the data block.
    pub data_offset: u32,
}

fn read_at<R: ReadAt + ?Sized>(src: &R, len: usize, offset: u64) -> Result<Vec<u8>, StatsError> {
    let mut buf = vec![0u8; len];
    src.read_exact_at(&mut buf, offset)
        .map_err(|source| StatsError::Read { offset, source })?;
    Ok(buf)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl StatsLayout {
    /// Parse the header, id and descriptors.
    pub fn parse<R: ReadAt + ?Sized>(src: &R) -> Result<Self, StatsError> {
        let h = read_at(src, HEADER_LEN, 0)?;
        let (name_size, num_desc) = (u32_at(&h, 4), u32_at(&h, 8));
        let (id_offset, desc_offset, data_offset) =
            (u32_at(&h, 12), u32_at(&h, 16), u32_at(&h, 20));
        if name_size == 0 || name_size > MAX_NAME || num_desc > MAX_DESCS {
            return Err(StatsError::Malformed(format!(
                "name_size {name_size}, num_desc {num_desc}"
            )));
        }
        let id = c_string(&read_at(src, name_size as usize, id_offset.into())?);
        let stride = DESC_FIXED_LEN + name_size as usize;
        let block = read_at(src, stride * num_desc as usize, desc_offset.into())?;
        let descs = block
            .chunks_exact(stride)
            .map(|d| {
                let flags = u32_at(d, 0);
                StatDesc {
                    name: c_string(&d[DESC_FIXED_LEN..]),
                    kind: StatKind::from_flags(flags),
                    flags,
                    exponent: i16::from_ne_bytes([d[4], d[5]]),
                    size: u16::from_ne_bytes([d[6], d[7]]),
                    offset: u32_at(d, 8),
                }
            })
            .collect();
        Ok(Self {
            id,
            descs,
            data_offset,
        })
    }

    /// Read the current values.
    pub fn read_values<R: ReadAt + ?Sized>(&self, src: &R) -> Result<StatsSnapshot, StatsError> {
        let mut snap = StatsSnapshot {
            id: self.id.clone(),
            ..Default::default()
        };
        for d in &self.descs {
            let offset = u64::from(self.data_offset) + u64::from(d.offset);
            let raw = read_at(src, 8 * usize::from(d.size), offset)?;
            let vals: Vec<u64> = raw
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
                .collect();
            match (d.kind, vals.as_slice()) {
                (StatKind::LinearHist | StatKind::LogHist, _) => {
                    snap.histograms.insert(d.name.clone(), vals);
                }
                (_, [v]) => {
                    snap.values.insert(d.name.clone(), *v);
                }
                _ => {
                    snap.histograms.insert(d.name.clone(), vals);
                }
            }
        }
        Ok(snap)
    }
}

/// An open stats fd with its parsed layout.
#[derive(Debug)]
pub struct StatsReader {
    file: File,
    layout: StatsLayout,
}

impl StatsReader {
    /// Open the stats fd of a KVM VM or vCPU fd (`KVM_GET_STATS_FD`).
    pub fn open(kvm_obj: &impl AsRawFd) -> Result<Self, StatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and only returns a new fd (or -1);
        // `kvm_obj` is a live VM or vCPU fd borrowed for the call.
        let fd = unsafe { vmm_sys_util::ioctl::ioctl(kvm_obj, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return Err(StatsError::Ioctl(std::io::Error::last_os_error()));
        }
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        let layout = StatsLayout::parse(&file)?;
        Ok(Self { file, layout })
    }

    /// The layout (id and descriptors).
    pub fn layout(&self) -> &StatsLayout {
        &self.layout
    }

    /// Read the current values.
    pub fn read(&self) -> Result<StatsSnapshot, StatsError> {
        self.layout.read_values(&self.file)
    }
}

/// KVM's in-kernel statistics for a VM and its vCPUs, or why they are missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KvmStats {
    /// Whether the kernel provided binary stats.
    pub available: bool,
    /// Why not, when unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// VM-wide statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<StatsSnapshot>,
    /// Per-vCPU statistics, by vCPU index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vcpus: Vec<StatsSnapshot>,
}

impl KvmStats {
    /// Stats marked unavailable, with the reason.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            available: false,
            unavailable_reason: Some(reason.into()),
            ..Default::default()
        }
    }

    /// Every scalar summed over all vCPUs.
    pub fn vcpu_totals(&self) -> BTreeMap<String, u64> {
        let mut totals = BTreeMap::new();
        for snap in &self.vcpus {
            for (name, v) in &snap.values {
                *totals.entry(name.clone()).or_insert(0u64) += v;
            }
        }
        totals
    }

    /// Sum of a scalar over all vCPUs (e.g. `exits`, `pf_taken`).
    pub fn vcpu_sum(&self, name: &str) -> Option<u64> {
        let mut found = false;
        let total = self
            .vcpus
            .iter()
            .filter_map(|s| s.get(name))
            .inspect(|_| found = true)
            .sum();
        found.then_some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a stats "file" the way the kernel lays it out.
    fn fake_fd(stats: &[(&str, u32, &[u64])]) -> Vec<u8> {
        let name_size = 48u32;
        let id_offset = HEADER_LEN as u32;
        let desc_offset = id_offset + name_size;
        let stride = DESC_FIXED_LEN as u32 + name_size;
        let data_offset = desc_offset + stride * stats.len() as u32;
        let mut b = Vec::new();
        for v in [
            0,
            name_size,
            stats.len() as u32,
            id_offset,
            desc_offset,
            data_offset,
        ] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        let mut id = b"kvm-42/vcpu-0".to_vec();
        id.resize(name_size as usize, 0);
        b.extend_from_slice(&id);
        let mut data = Vec::new();
        for (name, flags, vals) in stats {
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&(-9i16).to_ne_bytes());
            b.extend_from_slice(&(vals.len() as u16).to_ne_bytes());
            b.extend_from_slice(&(data.len() as u32).to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            let mut n = name.as_bytes().to_vec();
            n.resize(name_size as usize, 0);
            b.extend_from_slice(&n);
            for v in *vals {
                data.extend_from_slice(&v.to_ne_bytes());
            }
        }
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn parses_header_descriptors_and_values() {
        let fd = fake_fd(&[
            ("exits", kvm_bindings::KVM_STATS_TYPE_CUMULATIVE, &[1234]),
            ("pf_taken", kvm_bindings::KVM_STATS_TYPE_CUMULATIVE, &[77]),
            (
                "halt_wait_hist",
                kvm_bindings::KVM_STATS_TYPE_LOG_HIST,
                &[1, 2, 3],
            ),
            (
                "max_mmu_page_hash_collisions",
                kvm_bindings::KVM_STATS_TYPE_PEAK,
                &[9],
            ),
        ]);
        let layout = StatsLayout::parse(fd.as_slice()).unwrap();
        assert_eq!(layout.id, "kvm-42/vcpu-0");
        assert_eq!(layout.descs.len(), 4);
        assert_eq!(layout.descs[2].kind, StatKind::LogHist);
        assert_eq!(layout.descs[3].kind, StatKind::Peak);
        assert_eq!(layout.descs[0].exponent, -9);
        let snap = layout.read_values(fd.as_slice()).unwrap();
        assert_eq!(snap.get("exits"), Some(1234));
        assert_eq!(snap.get("pf_taken"), Some(77));
        assert_eq!(snap.histograms["halt_wait_hist"], vec![1, 2, 3]);
        assert_eq!(snap.get("halt_wait_hist"), None);
        let stats = KvmStats {
            available: true,
            vcpus: vec![snap.clone(), snap],
            ..Default::default()
        };
        assert_eq!(stats.vcpu_sum("exits"), Some(2468));
        assert_eq!(stats.vcpu_sum("nope"), None);
        assert_eq!(stats.vcpu_totals()["pf_taken"], 154);
        assert!(!stats.vcpu_totals().contains_key("halt_wait_hist"));
    }

    #[test]
    fn rejects_truncated_and_absurd_layouts() {
        let fd = fake_fd(&[("exits", 0, &[1])]);
        assert!(matches!(
            StatsLayout::parse(&fd[..10]),
            Err(StatsError::Read { .. })
        ));
        assert!(matches!(
            StatsLayout::parse(&fd[..fd.len() - 30]),
            Err(StatsError::Read { .. })
        ));
        let mut bad = fd.clone();
        bad[8..12].copy_from_slice(&(MAX_DESCS + 1).to_ne_bytes());
        assert!(matches!(
            StatsLayout::parse(bad.as_slice()),
            Err(StatsError::Malformed(_))
        ));
        // Data block cut short: layout parses, values don't.
        let layout = StatsLayout::parse(fd.as_slice()).unwrap();
        assert!(layout.read_values(&fd[..fd.len() - 4]).is_err());
    }
}

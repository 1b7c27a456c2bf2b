//! Parsing and validating one virtio-blk request (virtio 1.2, 5.2.6) from the
//! descriptors of a chain. Everything in it is guest-controlled.
//!
//! A request is a byte stream split over descriptors in any way the driver likes
//! (the device must not assume a framing): the device-readable part is the 16-byte
//! header (`le32 type, le32 reserved, le64 sector`) followed, for writes and
//! discards, by the data; the device-writable part is, for reads and GET_ID, the data
//! followed by the status byte, which is always the last device-writable byte.
//!
//! `parse` walks the chain once, checks every descriptor against guest RAM and the
//! readable-then-writable order, reads the header, and checks the request against
//! the disk: data lengths in whole sectors, the sector range inside the capacity
//! (without overflow), the data in the right direction and nothing extra, writes
//! refused on a read-only disk, discard segments well-formed. A refused request
//! comes back as `Rejected` with the [`InvalidReason`] and where its status byte
//! can be written, if anywhere.

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Bytes per sector (the unit of `sector` and `capacity`, whatever `blk_size` is).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the request header.
pub const HEADER_LEN: u64 = 16;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;
/// Length of one discard segment (`le64 sector, le32 num_sectors, le32 flags`).
pub const DISCARD_SEGMENT_LEN: u64 = 16;
/// Most descriptors the device accepts in one chain (indirect tables can hold 65535).
pub const MAX_CHAIN_DESCRIPTORS: usize = 1024;

/// Status: success.
pub const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
/// Status: I/O error (also any malformed request).
pub const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
/// Status: request type not supported.
pub const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidReason {
    /// The available ring named a descriptor index beyond the queue size (nothing can
    /// be completed: the chain is dropped).
    HeadOutOfRange,
    /// The chain does not end: a loop, a `next` index beyond the table, a descriptor
    /// table or indirect table that cannot be read, or more than 4 GiB in total.
    BrokenChain,
    /// More than [`MAX_CHAIN_DESCRIPTORS`] descriptors.
    TooManyDescriptors,
    /// A descriptor's buffer is not inside guest RAM.
    OutsideRam,
    /// A device-readable descriptor after a device-writable one, or data in the
    /// wrong direction for the request type (or bytes where none belong).
    WrongDirection,
    /// Fewer than 16 device-readable bytes: no complete header.
    ShortHeader,
    /// No device-writable byte: nowhere to put the status (used length 0).
    NoStatus,
    /// Data not a whole number of sectors (or of discard segments, or none).
    BadLength,
    /// The sector range ends beyond the capacity or overflows.
    OutOfRange,
    /// A write or discard on a read-only disk.
    ReadOnly,
    /// A discard segment with flags set (unmap, or reserved bits): `UNSUPP`.
    DiscardFlags,
    /// A discard with more segments or sectors than the configuration allows.
    DiscardLimits,
}

impl InvalidReason {
    /// All reasons, in a stable order (`reason as usize` indexes it).
    pub const ALL: [InvalidReason; 12] = [
        Self::HeadOutOfRange,
        Self::BrokenChain,
        Self::TooManyDescriptors,
        Self::OutsideRam,
        Self::WrongDirection,
        Self::ShortHeader,
        Self::NoStatus,
        Self::BadLength,
        Self::OutOfRange,
        Self::ReadOnly,
        Self::DiscardFlags,
        Self::DiscardLimits,
    ];

    /// snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::HeadOutOfRange => "head_out_of_range",
            Self::BrokenChain => "broken_chain",
            Self::TooManyDescriptors => "too_many_descriptors",
            Self::OutsideRam => "outside_ram",
            Self::WrongDirection => "wrong_direction",
            Self::ShortHeader => "short_header",
            Self::NoStatus => "no_status",
            Self::BadLength => "bad_length",
            Self::OutOfRange => "out_of_range",
            Self::ReadOnly => "read_only",
            Self::DiscardFlags => "discard_flags",
            Self::DiscardLimits => "discard_limits",
        }
    }

    /// The status byte a request refused for this reason gets.
    pub fn status(self) -> u8 {
        match self {
            Self::DiscardFlags => S_UNSUPP,
            _ => S_IOERR,
        }
    }
}

/// A guest buffer (validated to lie in guest RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// One discard range, in sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DiscardRange {
    pub sector: u64,
    pub sectors: u32,
}

/// What a valid request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Write,
    Flush,
    GetId,
    Discard(Vec<DiscardRange>),
    Unsupported(u32),
}

/// A request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub op: Op,
    /// From the header.
    pub sector: u64,
    /// The data buffers, in order (device-writable for reads and GET_ID).
    pub data: Vec<Segment>,
    /// Their total length.
    pub data_len: u32,
    /// The status byte.
    pub status: GuestAddress,
    /// Device-writable bytes in the chain (data for reads, and the status byte).
    pub writable_len: u32,
}

/// A refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub reason: InvalidReason,
    /// From the header, if it could be read.
    pub sector: u64,
    /// The request type, if the header could be read.
    pub request_type: Option<u32>,
    /// Where the status byte goes, if the chain has one in guest RAM.
    pub status: Option<GuestAddress>,
    /// Device-writable bytes in the chain.
    pub writable_len: u32,
}

/// What the device checks requests against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Capacity in sectors.
    pub capacity: u64,
    pub read_only: bool,
    /// DISCARD offered and negotiated (otherwise a discard is unsupported).
    pub discard: bool,
    pub max_discard_seg: u32,
    pub max_discard_sectors: u32,
}

/// The part `[offset, offset + len)` of the byte stream `segs`.
fn sub_stream(segs: &[Segment], mut offset: u64, mut len: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    for s in segs {
        if len == 0 {
            break;
        }
        let slen = u64::from(s.len);
        if offset >= slen {
            offset -= slen;
            continue;
        }
        let take = (slen - offset).min(len);
        // Inside a buffer already checked against guest RAM: no overflow.
        out.push(Segment {
            addr: GuestAddress(s.addr.0 + offset),
            len: take as u32,
        });
        len -= take;
        offset = 0;
    }
    out
}

fn total(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Reads `buf.len()` bytes of the stream `segs` from its start.
fn read_stream(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    buf: &mut [u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut done = 0;
    for s in sub_stream(segs, 0, buf.len() as u64) {
        let n = s.len as usize;
        mem.read_slice(&mut buf[done..done + n], s.addr)?;
        done += n;
    }
    Ok(())
}

/// Whether `[sector, sector + bytes / 512)` lies inside `capacity` sectors.
fn in_range(sector: u64, bytes: u64, capacity: u64) -> bool {
    sector
        .checked_add(bytes / SECTOR_SIZE)
        .is_some_and(|end| end <= capacity)
}

/// Parses and validates the chain whose descriptors `descs` yields.
pub(crate) fn parse(
    descs: impl Iterator<Item = Descriptor>,
    mem: &GuestMemoryMmap,
    limits: &Limits,
) -> Result<Request, Rejected> {
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    let mut problem = None;
    let mut count = 0usize;
    let mut ended = false;
    for d in descs {
        count += 1;
        if count > MAX_CHAIN_DESCRIPTORS {
            problem.get_or_insert(InvalidReason::TooManyDescriptors);
            ended = true;
            break;
        }
        ended = !d.has_next();
        let seg = Segment {
            addr: d.addr(),
            len: d.len(),
        };
        if !GuestMemoryBackend::check_range(mem, seg.addr, seg.len as usize) {
            problem.get_or_insert(InvalidReason::OutsideRam);
        }
        if d.is_write_only() {
            writable.push(seg);
        } else {
            if !writable.is_empty() {
                problem.get_or_insert(InvalidReason::WrongDirection);
            }
            readable.push(seg);
        }
    }
    if !ended {
        // The walk stopped early: the chain loops, is too long, names a descriptor
        // beyond the table or one that cannot be read.
        problem = Some(InvalidReason::BrokenChain);
    }
    let writable_len = total(&writable).min(u64::from(u32::MAX)) as u32;
    // The status byte: the last byte of the last non-empty writable buffer, if in RAM.
    let status = writable
        .iter()
        .rev()
        .find(|s| s.len > 0)
        .and_then(|s| s.addr.0.checked_add(u64::from(s.len) - 1))
        .map(GuestAddress)
        .filter(|a| GuestMemoryBackend::check_range(mem, *a, 1));
    let mut rejected = Rejected {
        reason: InvalidReason::BrokenChain,
        sector: 0,
        request_type: None,
        status,
        writable_len,
    };
    let reject = |reason| Err(Rejected { reason, ..rejected });
    if let Some(reason) = problem {
        return reject(reason);
    }
    let readable_len = total(&readable);
    if readable_len < HEADER_LEN {
        return reject(InvalidReason::ShortHeader);
    }
    let mut header = [0u8; HEADER_LEN as usize];
    if read_stream(mem, &readable, &mut header).is_err() {
        // Checked against RAM above; kept as a refusal rather than a panic.
        return reject(InvalidReason::OutsideRam);
    }
    let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    rejected.sector = sector;
    rejected.request_type = Some(request_type);
    let reject = |reason| Err(Rejected { reason, ..rejected });
    let Some(status) = status else {
        return reject(InvalidReason::NoStatus);
    };
    let w = u64::from(writable_len);
    let r_data = readable_len - HEADER_LEN;
    // Device-readable data after the header / device-writable data before the status.
    let supported = match request_type {
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID | VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_FLUSH => true,
        VIRTIO_BLK_T_DISCARD => limits.discard,
        _ => false,
    };
    let (op, data) = match request_type {
        // Answered UNSUPP whatever their layout.
        t if !supported => (Op::Unsupported(t), Vec::new()),
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID => {
            if r_data != 0 {
                return reject(InvalidReason::WrongDirection);
            }
            let op = if request_type == VIRTIO_BLK_T_IN {
                Op::Read
            } else {
                Op::GetId
            };
            (op, sub_stream(&writable, 0, w - 1))
        }
        VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_FLUSH => {
            if w != 1 {
                return reject(InvalidReason::WrongDirection);
            }
            let data = sub_stream(&readable, HEADER_LEN, r_data);
            match request_type {
                VIRTIO_BLK_T_OUT => (Op::Write, data),
                VIRTIO_BLK_T_FLUSH if r_data == 0 => (Op::Flush, data),
                VIRTIO_BLK_T_FLUSH => return reject(InvalidReason::WrongDirection),
                _ => (Op::Discard(Vec::new()), data),
            }
        }
        t => (Op::Unsupported(t), Vec::new()),
    };
    let data_len = total(&data);
    let op = match op {
        Op::Read | Op::Write => {
            if data_len % SECTOR_SIZE != 0 {
                return reject(InvalidReason::BadLength);
            }
            if op == Op::Write && limits.read_only {
                return reject(InvalidReason::ReadOnly);
            }
            if !in_range(sector, data_len, limits.capacity) {
                return reject(InvalidReason::OutOfRange);
            }
            op
        }
        Op::Discard(_) => Op::Discard(
            discard_ranges(mem, &data, data_len, limits)
                .map_err(|reason| Rejected { reason, ..rejected })?,
        ),
        op => op,
    };
    Ok(Request {
        op,
        sector,
        data,
        data_len: data_len as u32,
        status,
        writable_len,
    })
}

fn discard_ranges(
    mem: &GuestMemoryMmap,
    data: &[Segment],
    data_len: u64,
    limits: &Limits,
) -> Result<Vec<DiscardRange>, InvalidReason> {
    if limits.read_only {
        return Err(InvalidReason::ReadOnly);
    }
    if data_len == 0 || data_len % DISCARD_SEGMENT_LEN != 0 {
        return Err(InvalidReason::BadLength);
    }
    let n = data_len / DISCARD_SEGMENT_LEN;
    if n > u64::from(limits.max_discard_seg) {
        return Err(InvalidReason::DiscardLimits);
    }
    let mut raw = vec![0u8; data_len as usize];
    read_stream(mem, data, &mut raw).map_err(|_| InvalidReason::OutsideRam)?;
    let mut ranges = Vec::with_capacity(n as usize);
    for seg in raw.chunks_exact(DISCARD_SEGMENT_LEN as usize) {
        let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
        let sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap_or_default());
        let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
        if flags != 0 {
            return Err(InvalidReason::DiscardFlags);
        }
        if sectors > limits.max_discard_sectors {
            return Err(InvalidReason::DiscardLimits);
        }
        if !in_range(sector, u64::from(sectors) * SECTOR_SIZE, limits.capacity) {
            return Err(InvalidReason::OutOfRange);
        }
        ranges.push(DiscardRange { sector, sectors });
    }
    Ok(ranges)
}

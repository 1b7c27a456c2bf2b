//! `virtqueue`: a split virtqueue written byte for byte by the fuzzer — descriptor
//! table, available ring (flags, index, entries), where the queue starts, and patches
//! of guest memory for headers, indirect tables and buffers — served by the
//! virtio-blk request engine ([`SyncBlk`]) over real guest memory.
//!
//! Checks: no panic; every popped chain is counted once (`requests` = chains
//! finished, and the sum of the per-outcome counters); the used index moved by the
//! chains that could be completed; the last used entry names a head inside the
//! queue; the trace holds gap-free records with a real status; a read-only disk is
//! never written.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueState};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::harness::{guest_memory, CountingLine, Encoder, Input, SharedDisk};
use crate::virtio::blk::fuzz::SyncBlk;
use crate::virtio::blk::{InvalidReason, STATUS_NONE, S_IOERR, S_OK, S_UNSUPP};
use crate::virtio::VirtioInterrupt;

/// Guest RAM: `[0, LOW)`, a hole, `[HIGH, HIGH + HIGH_LEN)`.
pub(super) const LOW: u64 = 0x10000;
pub(super) const HIGH: u64 = 0x20000;
pub(super) const HIGH_LEN: u64 = 0x2000;
/// Ring layout (room for 256 entries each).
pub(super) const DESC: u64 = 0x1000;
pub(super) const AVAIL: u64 = 0x2000;
pub(super) const USED: u64 = 0x3000;
/// Disk size of the blk targets.
pub(super) const DISK: usize = 32 * 1024;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// A split queue at [`DESC`], [`AVAIL`], [`USED`] as the driver sees it.
pub(super) struct Ring {
    pub size: u16,
}

impl Ring {
    pub fn queue(&self, next: u16, event_idx: bool) -> Queue {
        let state = QueueState {
            max_size: 256,
            next_avail: next,
            next_used: next,
            event_idx_enabled: event_idx,
            size: self.size,
            ready: true,
            desc_table: DESC,
            avail_ring: AVAIL,
            used_ring: USED,
        };
        Queue::try_from(state).expect("a valid queue layout")
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.load(GuestAddress(USED + 2), Ordering::Acquire)
            .expect("used ring in RAM")
    }

    /// Used entry `i` (mod the size): (id, len).
    pub fn used(&self, mem: &GuestMemoryMmap, i: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(i % self.size);
        let id: u32 = mem.read_obj(GuestAddress(at)).expect("used ring in RAM");
        let len: u32 = mem
            .read_obj(GuestAddress(at + 4))
            .expect("used ring in RAM");
        (id, len)
    }

    pub fn used_ring_end(&self) -> u64 {
        USED + 6 + 8 * u64::from(self.size)
    }

    pub fn set_desc(&self, mem: &GuestMemoryMmap, i: u16, d: Descriptor) {
        let raw = RawDescriptor::from(d);
        mem.write_obj(raw, GuestAddress(DESC + 16 * u64::from(i)))
            .expect("descriptor table in RAM");
    }

    /// Publishes `head` in slot `idx` and makes the index `idx + 1`.
    pub fn publish(&self, mem: &GuestMemoryMmap, idx: u16, head: u16) {
        let slot = AVAIL + 4 + 2 * u64::from(idx % self.size);
        mem.write_obj(head, GuestAddress(slot))
            .expect("avail ring in RAM");
        mem.store(
            idx.wrapping_add(1),
            GuestAddress(AVAIL + 2),
            Ordering::Release,
        )
        .expect("avail ring in RAM");
    }
}

/// Maps a fuzzer offset into guest RAM (either region).
fn ram_addr(v: u32) -> u64 {
    let v = u64::from(v) % (LOW + HIGH_LEN);
    if v < LOW {
        v
    } else {
        HIGH + (v - LOW)
    }
}

/// The `virtqueue` fuzz target.
pub fn virtqueue(data: &[u8]) {
    let mut inp = Input::new(data);
    let size = 1u16 << (inp.u8() % 9);
    let flags = inp.u8();
    let (event_idx, read_only, discard, raw_idx) = (
        flags & 1 != 0,
        flags & 2 != 0,
        flags & 4 != 0,
        flags & 8 != 0,
    );
    let next = inp.u16();
    let avail_idx = if raw_idx {
        inp.u16()
    } else {
        next.wrapping_add(u16::from(inp.u8()) % (size + 1))
    };
    let avail_flags = inp.u16();
    let mem = guest_memory(LOW, HIGH, HIGH_LEN);
    let table = inp.bytes(16 * usize::from(size));
    mem.write_slice(table, GuestAddress(DESC))
        .expect("table in RAM");
    for i in 0..u64::from(size) {
        mem.write_obj(inp.u16(), GuestAddress(AVAIL + 4 + 2 * i))
            .expect("avail in RAM");
    }
    mem.write_obj(avail_flags, GuestAddress(AVAIL))
        .expect("avail in RAM");
    mem.write_obj(avail_idx, GuestAddress(AVAIL + 2))
        .expect("avail in RAM");
    mem.write_obj(next, GuestAddress(USED + 2))
        .expect("used in RAM");
    while !inp.is_empty() {
        let at = ram_addr(inp.u32());
        let len = usize::from(inp.u8());
        let bytes = inp.bytes(len);
        // Clipped at the end of its region.
        let _ = mem.write_slice(bytes, GuestAddress(at));
    }
    let ring = Ring { size };
    let disk = SharedDisk::patterned(DISK);
    let before = disk.contents();
    let line = Arc::new(CountingLine::default());
    let mut blk = SyncBlk::new(
        mem.clone(),
        ring.queue(next, event_idx),
        Box::new(disk.clone()),
        read_only,
        discard,
        VirtioInterrupt::new(line),
    )
    .expect("eventfd");
    blk.process();

    let done = blk.completed();
    let c = blk.counters();
    assert_eq!(c.requests, done, "every chain is counted once: {c:?}");
    let outcomes = c.reads
        + c.writes
        + c.flushes
        + c.get_ids
        + c.discards
        + c.read_errors
        + c.write_errors
        + c.flush_errors
        + c.discard_errors
        + c.unsupported
        + c.invalid;
    assert_eq!(outcomes, done, "each chain has exactly one outcome: {c:?}");
    assert!(
        done <= 65536,
        "at most one pass over the ring per notification"
    );
    let dropped = c.invalid_for(InvalidReason::HeadOutOfRange);
    if c.queue_errors == 0 && done > dropped {
        let used = ring.used_idx(&mem);
        assert_eq!(
            u64::from(used.wrapping_sub(next)),
            (done - dropped) % 65536,
            "used index moved by the completed chains: {c:?}"
        );
        // Written by the last add_used, after which nothing writes guest memory.
        let (id, _) = ring.used(&mem, used.wrapping_sub(1));
        assert!(id < u32::from(size), "used entry names head {id} >= {size}");
    }
    let recs = blk.trace().drain();
    assert_eq!(recs.len() as u64, done.min(1024));
    for w in recs.windows(2) {
        assert_eq!(w[0].seq + 1, w[1].seq, "gap-free trace");
    }
    for r in &recs {
        assert!(
            [S_OK, S_IOERR, S_UNSUPP, STATUS_NONE].contains(&r.status),
            "{r:?}"
        );
    }
    if read_only {
        assert!(disk.contents() == before, "a read-only disk was written");
    }
}

/// A virtio-blk request header: type and sector.
fn hdr(t: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&t.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    h
}

/// A descriptor as `(addr, len, flags)`; [`build`] fills in the next link.
type Desc = (u64, u32, u16);

/// One input: ring size (log2), feature flags, the first avail index, chains of
/// descriptors (the next link filled in) and guest-memory patches `(gpa, bytes)`.
fn build(
    size_log: u8,
    flags: u8,
    next: u16,
    chains: &[Vec<Desc>],
    patches: &[(u32, Vec<u8>)],
) -> Vec<u8> {
    let size = 1usize << size_log;
    let mut e = Encoder::default();
    e.u8(size_log)
        .u8(flags)
        .u16(next)
        .u8(chains.len() as u8)
        .u16(0);
    let mut table = vec![0u8; 16 * size];
    let mut heads = Vec::new();
    let mut i = 0usize;
    for chain in chains {
        heads.push(i as u16);
        for (k, &(addr, len, f)) in chain.iter().enumerate() {
            let last = k + 1 == chain.len();
            let fl = if last { f } else { f | F_NEXT };
            let d = &mut table[16 * i..16 * i + 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&fl.to_le_bytes());
            d[14..16].copy_from_slice(&((i + 1) as u16).to_le_bytes());
            i += 1;
        }
    }
    e.bytes(&table);
    let mut avail = vec![0u16; size];
    for (k, h) in heads.iter().enumerate() {
        avail[(usize::from(next) + k) % size] = *h;
    }
    for a in avail {
        e.u16(a);
    }
    for (at, bytes) in patches {
        e.u32(*at).u8(bytes.len() as u8).bytes(bytes);
    }
    e.0
}

/// Seeds: valid chains of each request type, indirect, split headers, a wrapped
/// ring, and a few broken ones.
pub(super) fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![each_request_type()];
    out.extend(with_features());
    out.push(discard_two_segments());
    out.push(indirect_chain());
    out.extend(broken_chains());
    out
}

/// A read, a write, a flush and a GET_ID.
fn each_request_type() -> Vec<u8> {
    let w = F_WRITE;
    build(
        4,
        0,
        0,
        &[
            vec![(0x8000, 16, 0), (0x9000, 512, w), (0x9f00, 1, w)],
            vec![(0x8100, 16, 0), (0xa000, 1024, 0), (0x9f01, 1, w)],
            vec![(0x8200, 16, 0), (0x9f02, 1, w)],
            vec![(0x8300, 16, 0), (0xb000, 20, w), (0x9f03, 1, w)],
        ],
        &[
            (0x8000, hdr(VIRTIO_BLK_T_IN, 3).to_vec()),
            (0x8100, hdr(VIRTIO_BLK_T_OUT, 8).to_vec()),
            (0x8200, hdr(VIRTIO_BLK_T_FLUSH, 0).to_vec()),
            (0x8300, hdr(VIRTIO_BLK_T_GET_ID, 0).to_vec()),
        ],
    )
}

/// The same with event idx, read-only and discard negotiated, and a wrapped index.
fn with_features() -> Vec<Vec<u8>> {
    let w = F_WRITE;
    let mut out = Vec::new();
    for (flags, next) in [(1u8, 0xfffeu16), (2, 7), (5, 0x8000)] {
        out.push(build(
            3,
            flags,
            next,
            &[
                vec![
                    (0x8000, 8, 0),
                    (0x8008, 8, 0),
                    (0x9000, 4096, w),
                    (0x9f00, 1, w),
                ],
                vec![
                    (0x8100, 16, 0),
                    (0xa000, 512, 0),
                    (0xa200, 512, 0),
                    (0x9f01, 1, w),
                ],
            ],
            &[
                (0x8000, hdr(VIRTIO_BLK_T_IN, 1).to_vec()),
                (0x8100, hdr(VIRTIO_BLK_T_OUT, 60).to_vec()),
            ],
        ));
    }
    out
}

/// A discard of two segments.
fn discard_two_segments() -> Vec<u8> {
    let w = F_WRITE;
    let mut seg = Vec::new();
    for (s, n) in [(4u64, 8u32), (40, 2)] {
        seg.extend_from_slice(&s.to_le_bytes());
        seg.extend_from_slice(&n.to_le_bytes());
        seg.extend_from_slice(&0u32.to_le_bytes());
    }
    build(
        2,
        4,
        0,
        &[vec![(0x8000, 16, 0), (0x8800, 32, 0), (0x9f00, 1, w)]],
        &[(0x8000, hdr(11, 0).to_vec()), (0x8800, seg)],
    )
}

/// An indirect chain: the table at 0xc000 holds header, data, status.
fn indirect_chain() -> Vec<u8> {
    let w = F_WRITE;
    let mut ind = Vec::new();
    for (k, (addr, len, f)) in [(0x8000u64, 16u32, 0u16), (0x9000, 512, w), (0x9f00, 1, w)]
        .into_iter()
        .enumerate()
    {
        let fl = if k < 2 { f | F_NEXT } else { f };
        ind.extend_from_slice(&addr.to_le_bytes());
        ind.extend_from_slice(&len.to_le_bytes());
        ind.extend_from_slice(&fl.to_le_bytes());
        ind.extend_from_slice(&((k + 1) as u16).to_le_bytes());
    }
    build(
        1,
        0,
        0,
        &[vec![(0xc000, 48, 4)]],
        &[(0x8000, hdr(VIRTIO_BLK_T_IN, 2).to_vec()), (0xc000, ind)],
    )
}

/// Broken: a loop, a head out of range, a buffer in the hole, data in the high
/// region, a status byte outside RAM, an unknown type.
fn broken_chains() -> Vec<Vec<u8>> {
    let w = F_WRITE;
    let mut out = Vec::new();
    let mut lp = build(
        1,
        0,
        0,
        &[vec![(0x8000, 16, 0), (0x9f00, 1, w)]],
        &[(0x8000, hdr(VIRTIO_BLK_T_IN, 0).to_vec())],
    );
    // Make descriptor 1 point back to 0 with NEXT set.
    let d1 = 7 + 16 + 12;
    lp[d1..d1 + 2].copy_from_slice(&(w | F_NEXT).to_le_bytes());
    lp[d1 + 2..d1 + 4].copy_from_slice(&0u16.to_le_bytes());
    out.push(lp);
    let mut oor = build(1, 0, 0, &[vec![(0x8000, 16, 0), (0x9f00, 1, w)]], &[]);
    let avail0 = 7 + 32;
    oor[avail0..avail0 + 2].copy_from_slice(&9u16.to_le_bytes());
    out.push(oor);
    out.push(build(
        4,
        0,
        0,
        &[
            vec![(0x8000, 16, 0), (0x18000, 512, w), (0x9f00, 1, w)],
            vec![(0x8000, 16, 0), (HIGH, 512, w), (HIGH + 0x1fff, 1, w)],
            vec![(0x8000, 16, 0), (0x9000, 512, w), (0x1_0000_0000, 1, w)],
            vec![(0x8100, 16, 0), (0x9f00, 1, w)],
        ],
        &[
            (0x8000, hdr(VIRTIO_BLK_T_IN, 0).to_vec()),
            (0x8100, hdr(0x77, 0).to_vec()),
        ],
    ));
    out
}

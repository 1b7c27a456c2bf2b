//! `blk_request`: up to 32 virtio-blk requests, each built from the input — type,
//! sector, data length, how header, data and status are split over descriptors
//! (direct or through an indirect table, in either RAM region), an optional mangling
//! of the chain and an optional backend fault — and served one at a time by the
//! device's request engine ([`SyncBlk`]) on a [`FaultyBackend`] over a model disk.
//!
//! Checks after each request, against a model: the status byte and the used length
//! (a failed read never claims its data); read data equals the model disk; the disk
//! equals the model (a failed or refused write changes nothing; a short write only
//! its reported prefix); guest memory changed only in the used ring and in
//! device-writable buffers. At the end the counters match the model's tally.

use std::sync::Arc;

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::harness::{guest_memory, CountingLine, Encoder, Input, SharedDisk};
use super::queue::{Ring, DISK, HIGH, HIGH_LEN, LOW, USED};
use crate::virtio::blk::fuzz::SyncBlk;
use crate::virtio::blk::{BlkFaultInjector, FaultyBackend, S_IOERR, S_OK, S_UNSUPP};
use crate::virtio::VirtioInterrupt;

const SECTOR: u64 = 512;
const CAPACITY: u64 = DISK as u64 / SECTOR;
const QSIZE: u16 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// The GET_ID answer of [`SyncBlk`].
const ID: &[u8; 20] = b"swaplab-fuzz\0\0\0\0\0\0\0\0";
/// Fill of device-writable buffers before each request.
const UNTOUCHED: u8 = 0xee;
const KNOWN_TYPES: [u32; 5] = [
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_DISCARD,
];

/// Backend faults a request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    ReadEio,
    WriteEnospc,
    ShortRead,
    ShortWrite,
    FlushEio,
    DiscardEio,
    WriteEio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    Other(u32),
}

impl Kind {
    fn type_code(self) -> u32 {
        match self {
            Kind::In => VIRTIO_BLK_T_IN,
            Kind::Out => VIRTIO_BLK_T_OUT,
            Kind::Flush => VIRTIO_BLK_T_FLUSH,
            Kind::GetId => VIRTIO_BLK_T_GET_ID,
            Kind::Discard => VIRTIO_BLK_T_DISCARD,
            Kind::Other(t) => t,
        }
    }
}

/// One discard segment as written.
#[derive(Clone, Copy, Debug)]
struct Seg {
    sector: u64,
    sectors: u32,
    flags: u32,
}

/// One request as read from the input.
#[derive(Clone, Debug)]
struct Req {
    kind: Kind,
    sector: u64,
    /// Data bytes (device-writable for reads and GET_ID, readable otherwise).
    data: Vec<u8>,
    segs: Vec<Seg>,
    split_header: bool,
    merge_status: bool,
    indirect: bool,
    high: bool,
    cuts: Vec<u16>,
    garbage: Option<u8>,
    fault: Fault,
}

fn read_req(inp: &mut Input<'_>) -> Req {
    let kind = match inp.u8() % 6 {
        0 => Kind::In,
        1 => Kind::Out,
        2 => Kind::Flush,
        3 => Kind::GetId,
        4 => Kind::Discard,
        _ => {
            let t = inp.u32();
            Kind::Other(if KNOWN_TYPES.contains(&t) {
                t | 0x100
            } else {
                t
            })
        }
    };
    let s = inp.u8();
    let sector = if s == 0xff { inp.u64() } else { u64::from(s) };
    let n = inp.u8();
    let mut segs = Vec::new();
    let dlen = match kind {
        Kind::In | Kind::Out => usize::from(n % 9) * SECTOR as usize,
        Kind::GetId => usize::from(n % 33),
        Kind::Discard => {
            for _ in 0..n % 4 {
                let (s, k, f) = (inp.u8(), inp.u8(), inp.u8());
                segs.push(Seg {
                    sector: u64::from(s),
                    sectors: u32::from(k),
                    flags: if f & 0x80 != 0 { u32::from(f) } else { 0 },
                });
            }
            16 * segs.len()
        }
        Kind::Flush | Kind::Other(_) => 0,
    };
    let layout = inp.u8();
    let pieces = 1 + usize::from(layout & 3);
    let cuts = (1..pieces).map(|_| inp.u16()).collect();
    let garbage = (layout & 32 != 0).then(|| inp.u8());
    let fault = match inp.u8() % 8 {
        0 => Fault::None,
        1 => Fault::ReadEio,
        2 => Fault::WriteEnospc,
        3 => Fault::ShortRead,
        4 => Fault::ShortWrite,
        5 => Fault::FlushEio,
        6 => Fault::DiscardEio,
        _ => Fault::WriteEio,
    };
    let fill = inp.u8();
    let data = match kind {
        Kind::Discard => segs
            .iter()
            .flat_map(|s| {
                let mut b = s.sector.to_le_bytes().to_vec();
                b.extend_from_slice(&s.sectors.to_le_bytes());
                b.extend_from_slice(&s.flags.to_le_bytes());
                b
            })
            .collect(),
        _ => {
            // Byte j is fill + 13j (mod 256): a 256-byte cycle, repeated (built
            // byte by byte for every request, it was a hot loop under the
            // fuzzer's comparison tracing).
            let cycle: [u8; 256] =
                std::array::from_fn(|j| fill.wrapping_add((j as u8).wrapping_mul(13)));
            let mut data = Vec::with_capacity(dlen);
            while data.len() < dlen {
                let n = (dlen - data.len()).min(cycle.len());
                data.extend_from_slice(&cycle[..n]);
            }
            data
        }
    };
    Req {
        kind,
        sector,
        data,
        segs,
        split_header: layout & 4 != 0,
        merge_status: layout & 8 != 0,
        indirect: layout & 16 != 0,
        high: layout & 64 != 0,
        cuts,
        garbage,
        fault,
    }
}

/// A descriptor as the harness lays it out.
#[derive(Clone, Copy, Debug)]
struct D {
    addr: u64,
    len: u32,
    write: bool,
}

/// Bump allocation of request buffers in guest RAM.
struct Alloc {
    low: u64,
    high: u64,
}

impl Alloc {
    fn new() -> Self {
        Self {
            low: 0x4000,
            high: HIGH,
        }
    }
    fn take(&mut self, len: u64, high: bool) -> u64 {
        let p = if high && self.high + len + 8 <= HIGH + HIGH_LEN {
            &mut self.high
        } else {
            &mut self.low
        };
        let at = *p;
        *p = (*p + len + 8 + 15) & !15;
        at
    }
}

fn in_range(sector: u64, bytes: u64) -> bool {
    sector
        .checked_add(bytes / SECTOR)
        .is_some_and(|end| end <= CAPACITY)
}

/// What the model expects of a well-formed request: the status, and whether a
/// backend fault made it fail.
fn expect(req: &Req, read_only: bool, discard: bool) -> (u8, bool) {
    let dlen = req.data.len() as u64;
    let status = match req.kind {
        Kind::In => {
            if in_range(req.sector, dlen) {
                S_OK
            } else {
                S_IOERR
            }
        }
        Kind::Out => {
            if !read_only && in_range(req.sector, dlen) {
                S_OK
            } else {
                S_IOERR
            }
        }
        Kind::Flush | Kind::GetId => S_OK,
        Kind::Discard => {
            if !discard {
                S_UNSUPP
            } else if read_only || req.segs.is_empty() {
                S_IOERR
            } else {
                let mut st = S_OK;
                for s in &req.segs {
                    if s.flags != 0 {
                        st = S_UNSUPP;
                        break;
                    }
                    if !in_range(s.sector, u64::from(s.sectors) * SECTOR) {
                        st = S_IOERR;
                        break;
                    }
                }
                st
            }
        }
        Kind::Other(_) => S_UNSUPP,
    };
    if status != S_OK {
        return (status, false);
    }
    let faulted = match req.kind {
        Kind::In => dlen > 0 && matches!(req.fault, Fault::ReadEio | Fault::ShortRead),
        Kind::Out => {
            dlen > 0
                && matches!(
                    req.fault,
                    Fault::WriteEnospc | Fault::ShortWrite | Fault::WriteEio
                )
        }
        Kind::Flush => req.fault == Fault::FlushEio,
        Kind::Discard => req.fault == Fault::DiscardEio,
        _ => false,
    };
    (if faulted { S_IOERR } else { S_OK }, faulted)
}

fn arm(inj: &BlkFaultInjector, f: Fault) {
    inj.clear();
    match f {
        Fault::None => {}
        Fault::ReadEio => inj.fail_reads(1, libc::EIO),
        Fault::WriteEnospc => inj.fail_writes(1, libc::ENOSPC),
        Fault::ShortRead => inj.short_reads(1),
        Fault::ShortWrite => inj.short_writes(1),
        Fault::FlushEio => inj.fail_flushes(1, libc::EIO),
        Fault::DiscardEio => inj.fail_discards(1, libc::EIO),
        Fault::WriteEio => inj.fail_writes(1, libc::EIO),
    }
}

/// Splits `len` bytes into `pieces` lengths at the input's cut points.
fn split(len: usize, cuts: &[u16]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % (len + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for p in points {
        out.push(p - prev);
        prev = p;
    }
    out.push(len - prev);
    out
}

/// Lays `req` out in guest memory: (descriptors, data pieces, status address).
fn lay_out(mem: &GuestMemoryMmap, req: &Req, alloc: &mut Alloc) -> (Vec<D>, Vec<D>, u64) {
    let mut hdr = [0u8; 16];
    hdr[..4].copy_from_slice(&req.kind.type_code().to_le_bytes());
    hdr[8..].copy_from_slice(&req.sector.to_le_bytes());
    let h = alloc.take(16, false);
    mem.write_slice(&hdr, GuestAddress(h))
        .expect("header in RAM");
    let mut descs = if req.split_header {
        vec![
            D {
                addr: h,
                len: 5,
                write: false,
            },
            D {
                addr: h + 5,
                len: 11,
                write: false,
            },
        ]
    } else {
        vec![D {
            addr: h,
            len: 16,
            write: false,
        }]
    };
    let writes_data = matches!(req.kind, Kind::In | Kind::GetId);
    let lens = split(req.data.len(), &req.cuts);
    let mut pieces = Vec::new();
    let mut off = 0;
    for (i, &l) in lens.iter().enumerate() {
        let last = i + 1 == lens.len();
        let extra = u64::from(last && writes_data && req.merge_status);
        let at = alloc.take(l as u64 + extra, req.high);
        let bytes: Vec<u8> = if writes_data {
            vec![UNTOUCHED; l + extra as usize]
        } else {
            req.data[off..off + l].to_vec()
        };
        mem.write_slice(&bytes, GuestAddress(at))
            .expect("buffer in RAM");
        off += l;
        pieces.push(D {
            addr: at,
            len: l as u32,
            write: writes_data,
        });
        descs.push(D {
            addr: at,
            len: (l as u64 + extra) as u32,
            write: writes_data,
        });
    }
    let status = if writes_data && req.merge_status {
        let last = descs.last().expect("a data piece");
        last.addr + u64::from(last.len) - 1
    } else {
        let at = alloc.take(1, false);
        descs.push(D {
            addr: at,
            len: 1,
            write: true,
        });
        at
    };
    mem.write_slice(&[0xff], GuestAddress(status))
        .expect("status in RAM");
    (descs, pieces, status)
}

/// Mangles a chain so that the device must refuse it.
fn mangle(descs: &mut Vec<D>, g: u8) {
    let n = descs.len();
    let pick =
        |cands: Vec<usize>, g: u8| cands.get(usize::from(g >> 2) % cands.len().max(1)).copied();
    match g % 4 {
        0 => {
            // Flip the direction of a non-empty descriptor before the status.
            let c: Vec<usize> = (0..n - 1).filter(|&i| descs[i].len > 0).collect();
            if let Some(i) = pick(c, g) {
                descs[i].write = !descs[i].write;
            }
        }
        1 => {
            // Move a non-empty descriptor before the status into the hole.
            let c: Vec<usize> = (0..n - 1).filter(|&i| descs[i].len > 0).collect();
            if let Some(i) = pick(c, g) {
                descs[i].addr = LOW + 0x4000;
            }
        }
        2 => {
            // Fewer than 16 header bytes.
            if descs[1].len == 11 && !descs[1].write {
                descs[1].len = 2;
            } else {
                descs[0].len = 4;
            }
        }
        _ => {
            // A device-readable buffer after the status.
            let d = descs[0];
            descs.push(D {
                addr: d.addr,
                len: 16,
                write: false,
            });
        }
    }
}

/// Writes the chain at descriptor 0 (directly or through an indirect table).
fn publish(
    mem: &GuestMemoryMmap,
    ring: &Ring,
    descs: &[D],
    indirect: bool,
    alloc: &mut Alloc,
    k: u16,
) {
    let desc = |i: usize, d: &D| {
        let mut f = if d.write { F_WRITE } else { 0 };
        if i + 1 < descs.len() {
            f |= F_NEXT;
        }
        Descriptor::new(d.addr, d.len, f, (i + 1) as u16)
    };
    if indirect {
        let table = alloc.take(16 * descs.len() as u64, false);
        for (i, d) in descs.iter().enumerate() {
            let raw = virtio_queue::desc::RawDescriptor::from(desc(i, d));
            mem.write_obj(raw, GuestAddress(table + 16 * i as u64))
                .expect("indirect table in RAM");
        }
        ring.set_desc(
            mem,
            0,
            Descriptor::new(table, 16 * descs.len() as u32, F_INDIRECT, 0),
        );
    } else {
        for (i, d) in descs.iter().enumerate() {
            ring.set_desc(mem, i as u16, desc(i, d));
        }
    }
    ring.publish(mem, k, 0);
}

/// Guest RAM (low, high) as it is now.
type Snapshot = (Vec<u8>, Vec<u8>);

/// Reads guest RAM into `snap` (buffers reused from request to request: a fresh
/// zeroed pair for every snapshot was a tenth of the target's time).
fn snapshot_into(mem: &GuestMemoryMmap, snap: &mut Snapshot) {
    snap.0.resize(LOW as usize, 0);
    snap.1.resize(HIGH_LEN as usize, 0);
    mem.read_slice(&mut snap.0, GuestAddress(0))
        .expect("low RAM");
    mem.read_slice(&mut snap.1, GuestAddress(HIGH))
        .expect("high RAM");
}

fn gather(mem: &GuestMemoryMmap, pieces: &[D]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        let mut b = vec![0u8; p.len as usize];
        mem.read_slice(&mut b, GuestAddress(p.addr))
            .expect("buffer in RAM");
        out.extend_from_slice(&b);
    }
    out
}

/// Expected counter values.
#[derive(Debug, Default)]
struct Tally {
    reads: u64,
    writes: u64,
    flushes: u64,
    get_ids: u64,
    discards: u64,
    failed_io: u64,
}

/// The device under test and what it runs on.
struct Rig {
    mem: GuestMemoryMmap,
    ring: Ring,
    disk: SharedDisk,
    inj: Arc<BlkFaultInjector>,
    blk: SyncBlk,
    /// Guest RAM before and after the request being served.
    before: Snapshot,
    after: Snapshot,
}

impl Rig {
    /// A fresh patterned disk behind a fault-injecting backend, served by the
    /// request engine on one queue.
    fn new(read_only: bool, discard: bool, event_idx: bool) -> Self {
        let mem = guest_memory(LOW, HIGH, HIGH_LEN);
        let ring = Ring { size: QSIZE };
        let disk = SharedDisk::patterned(DISK);
        let inj = BlkFaultInjector::new();
        let backend = FaultyBackend::new(Box::new(disk.clone()), inj.clone());
        let blk = SyncBlk::new(
            mem.clone(),
            ring.queue(0, event_idx),
            Box::new(backend),
            read_only,
            discard,
            VirtioInterrupt::new(Arc::new(CountingLine::default())),
        )
        .expect("eventfd");
        Self {
            mem,
            ring,
            disk,
            inj,
            blk,
            before: Snapshot::default(),
            after: Snapshot::default(),
        }
    }
}

/// One request's chain as laid out, and the device's answer.
struct Served {
    pieces: Vec<D>,
    status: u8,
    used_len: u32,
    writable: u64,
}

/// Lays `req` out as chain number `k` (counting from 0), lets the device process
/// it, and checks the completion: one used entry naming the head, a used length
/// within the chain's writable bytes, guest memory changed only where allowed.
fn serve(rig: &mut Rig, req: &Req, k: u16) -> Served {
    let mem = &rig.mem;
    let mut alloc = Alloc::new();
    let (mut descs, pieces, status_at) = lay_out(mem, req, &mut alloc);
    if let Some(g) = req.garbage {
        mangle(&mut descs, g);
    }
    publish(mem, &rig.ring, &descs, req.indirect, &mut alloc, k);
    arm(&rig.inj, req.fault);
    snapshot_into(mem, &mut rig.before);
    rig.blk.process();
    rig.inj.clear();
    let k = k + 1;
    assert_eq!(
        rig.blk.completed(),
        u64::from(k),
        "one request, one completion"
    );
    assert_eq!(rig.ring.used_idx(mem), k, "one used entry per request");
    let (id, used_len) = rig.ring.used(mem, k - 1);
    assert_eq!(id, 0, "the used entry names the chain's head");
    let mut st = [0u8];
    mem.read_slice(&mut st, GuestAddress(status_at))
        .expect("status in RAM");
    let writable: u64 = descs
        .iter()
        .filter(|d| d.write)
        .map(|d| u64::from(d.len))
        .sum();
    assert!(
        u64::from(used_len) <= writable,
        "used length {used_len} > writable {writable}"
    );
    snapshot_into(mem, &mut rig.after);
    check_writes_confined(&rig.ring, &descs, &rig.before, &rig.after);
    Served {
        pieces,
        status: st[0],
        used_len,
        writable,
    }
}

/// Guest memory: only the used ring and device-writable buffers change.
fn check_writes_confined(ring: &Ring, descs: &[D], before: &Snapshot, after: &Snapshot) {
    // Whether [lo, hi) lies inside the used ring or one device-writable buffer.
    let allowed = |lo: u64, hi: u64| {
        let within = |start: u64, end: u64| start <= lo && hi <= end;
        within(USED, ring.used_ring_end())
            || descs
                .iter()
                .any(|d| d.write && within(d.addr, d.addr + u64::from(d.len)))
    };
    // Whole pages compare at once (memcmp), then the 64-byte chunks of a page
    // that changed, and only a chunk that changed outside what is allowed byte
    // by byte. Byte by byte throughout, under the fuzzer's comparison tracing,
    // this check was most of the target's time; chunk by chunk, still a sixth.
    const PAGE: usize = 4096;
    const CHUNK: usize = 64;
    for (base, (b, a)) in [(0u64, (&before.0, &after.0)), (HIGH, (&before.1, &after.1))] {
        for (p, (pb, pa)) in b.chunks(PAGE).zip(a.chunks(PAGE)).enumerate() {
            if pb == pa {
                continue;
            }
            let page = base + (p * PAGE) as u64;
            for (c, (cb, ca)) in pb.chunks(CHUNK).zip(pa.chunks(CHUNK)).enumerate() {
                let start = page + (c * CHUNK) as u64;
                if cb == ca || allowed(start, start + cb.len() as u64) {
                    continue;
                }
                for (i, (x, y)) in cb.iter().zip(ca).enumerate() {
                    let gpa = start + i as u64;
                    assert!(
                        x == y || allowed(gpa, gpa + 1),
                        "device wrote {gpa:#x}, not a writable buffer"
                    );
                }
            }
        }
    }
}

/// Checks a well-formed request's status, used length and data (read back from
/// `mem`) against the model, applies what it did to the model disk and counts it in
/// `tally`; returns whether its backend fault fired.
fn check_answer(
    req: &Req,
    served: &Served,
    mem: &GuestMemoryMmap,
    model: &mut [u8],
    (read_only, discard): (bool, bool),
    tally: &mut Tally,
) -> bool {
    let st = served.status;
    let (want, faulted) = expect(req, read_only, discard);
    assert_eq!(
        st, want,
        "status of {req:?} (read-only {read_only}, discard {discard})"
    );
    let dlen = req.data.len();
    let data_written = match (req.kind, st) {
        (Kind::In, S_OK) => dlen,
        (Kind::GetId, S_OK) => dlen.min(ID.len()),
        _ => 0,
    } as u64;
    let w = served.writable;
    let want_used = if data_written == w - 1 {
        w
    } else {
        data_written
    };
    assert_eq!(
        u64::from(served.used_len),
        want_used,
        "used length of {req:?} ({st})"
    );
    let got = gather(mem, &served.pieces);
    let start = req.sector.wrapping_mul(SECTOR) as usize;
    match (req.kind, st) {
        (Kind::In, S_OK) => {
            assert!(
                got == model[start..start + dlen],
                "read data differ from the disk"
            );
            tally.reads += 1;
        }
        (Kind::In, _) | (Kind::GetId, S_IOERR) => {
            assert!(
                got.iter().all(|&b| b == UNTOUCHED),
                "a failed read wrote data"
            );
        }
        (Kind::GetId, _) => {
            let n = dlen.min(ID.len());
            assert_eq!(&got[..n], &ID[..n]);
            assert!(got[n..].iter().all(|&b| b == UNTOUCHED));
            tally.get_ids += 1;
        }
        (Kind::Out, S_OK) => {
            model[start..start + dlen].copy_from_slice(&req.data);
            tally.writes += 1;
        }
        (Kind::Out, _) if faulted && req.fault == Fault::ShortWrite => {
            let half = (dlen / 2) & !511;
            model[start..start + half].copy_from_slice(&req.data[..half]);
        }
        (Kind::Flush, S_OK) => tally.flushes += 1,
        (Kind::Discard, S_OK) => {
            for s in &req.segs {
                let a = (s.sector * SECTOR) as usize;
                model[a..a + s.sectors as usize * SECTOR as usize].fill(0);
            }
            tally.discards += 1;
        }
        _ => {}
    }
    faulted
}

/// At the end: the device's counters match the model's tally.
fn check_counters(blk: &SyncBlk, requests: u16, tally: &Tally) {
    let c = blk.counters();
    assert_eq!(c.requests, u64::from(requests));
    assert_eq!(
        (c.reads, c.writes, c.flushes, c.get_ids, c.discards),
        (
            tally.reads,
            tally.writes,
            tally.flushes,
            tally.get_ids,
            tally.discards
        ),
        "{c:?}"
    );
    assert_eq!(
        c.read_errors + c.write_errors + c.flush_errors + c.discard_errors,
        tally.failed_io,
        "{c:?}"
    );
}

/// The `blk_request` fuzz target.
pub fn blk_request(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = inp.u8();
    let (read_only, discard, event_idx) = (cfg & 1 != 0, cfg & 2 != 0, cfg & 4 != 0);
    let mut rig = Rig::new(read_only, discard, event_idx);
    let mut model = rig.disk.contents();
    let mut tally = Tally::default();
    let mut k = 0u16;
    while !inp.is_empty() && k < 32 {
        let req = read_req(&mut inp);
        let served = serve(&mut rig, &req, k);
        k += 1;
        let st = served.status;
        if req.garbage.is_some() {
            assert!(
                st == S_IOERR || st == S_UNSUPP,
                "mangled request answered {st}: {req:?}"
            );
            assert!(
                rig.disk.equals(&model),
                "a refused request changed the disk"
            );
            continue;
        }
        let faulted = check_answer(
            &req,
            &served,
            &rig.mem,
            &mut model,
            (read_only, discard),
            &mut tally,
        );
        tally.failed_io += u64::from(faulted);
        assert!(
            rig.disk.equals(&model),
            "disk differs from the model after {req:?} ({st})"
        );
    }
    check_counters(&rig.blk, k, &tally);
}

/// Encodes one request in the target's input format.
#[allow(clippy::too_many_arguments)]
fn enc_req(
    e: &mut Encoder,
    kind: u8,
    sector: u8,
    n: u8,
    segs: &[(u8, u8, u8)],
    layout: u8,
    cuts: &[u16],
    garbage: Option<u8>,
    fault: u8,
) {
    e.u8(kind);
    if kind == 5 {
        e.u32(0x1234);
    }
    e.u8(sector).u8(n);
    for &(s, k, f) in segs {
        e.u8(s).u8(k).u8(f);
    }
    e.u8(layout);
    for c in cuts {
        e.u16(*c);
    }
    if let Some(g) = garbage {
        e.u8(g);
    }
    e.u8(fault).u8(0x5a);
}

/// Seeds: each request type in several layouts, with and without faults, on a
/// read-write and a read-only disk, and mangled chains.
pub(super) fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for cfg in [0u8, 2, 3, 6] {
        let mut e = Encoder::default();
        e.u8(cfg);
        // write 4 sectors at 8 in 3 pieces, read them back in 2 pieces (indirect)
        enc_req(&mut e, 1, 8, 4, &[], 2, &[700, 1500], None, 0);
        enc_req(&mut e, 0, 8, 4, &[], 1 | 16, &[1000], None, 0);
        enc_req(&mut e, 2, 0, 0, &[], 0, &[], None, 0);
        enc_req(&mut e, 3, 0, 20, &[], 8, &[], None, 0);
        enc_req(&mut e, 4, 0, 2, &[(8, 2, 0), (60, 4, 0)], 4, &[], None, 0);
        enc_req(&mut e, 0, 60, 8, &[], 64, &[], None, 0);
        out.push(e.0);
    }
    // Faults: each kind on the request it hits.
    for (kind, fault) in [(0u8, 1u8), (1, 2), (0, 3), (1, 4), (2, 5), (4, 6), (1, 7)] {
        let mut e = Encoder::default();
        e.u8(2);
        enc_req(&mut e, kind, 4, 8, &[(4, 8, 0)], 1, &[512], None, fault);
        enc_req(&mut e, 0, 4, 8, &[], 0, &[], None, 0);
        out.push(e.0);
    }
    // Mangled chains, and requests the device must refuse.
    for g in [0u8, 1, 2, 3, 4, 9] {
        let mut e = Encoder::default();
        e.u8(0);
        enc_req(&mut e, 0, 1, 2, &[], 32 | 1, &[300], Some(g), 0);
        enc_req(&mut e, 1, 1, 2, &[], 32 | 4, &[], Some(g), 0);
        out.push(e.0);
    }
    let mut e = Encoder::default();
    e.u8(2);
    enc_req(&mut e, 0, 63, 2, &[], 0, &[], None, 0); // beyond the end
    enc_req(&mut e, 5, 0, 0, &[], 0, &[], None, 0); // unknown type
    enc_req(&mut e, 4, 0, 1, &[(0, 1, 0x81)], 0, &[], None, 0); // discard flags
    enc_req(&mut e, 4, 0, 0, &[], 0, &[], None, 0); // empty discard
    out.push(e.0);
    out
}

#[cfg(test)]
mod confinement {
    use super::*;

    fn ram() -> Snapshot {
        (vec![0u8; LOW as usize], vec![0u8; HIGH_LEN as usize])
    }

    const BUF: D = D {
        addr: 0x8000,
        len: 512,
        write: true,
    };

    #[test]
    fn writes_into_a_writable_buffer_or_the_used_ring_pass() {
        let ring = Ring { size: 16 };
        let (before, mut after) = (ram(), ram());
        after.0[0x8000] = 1;
        after.0[0x8000 + 511] = 2;
        after.0[USED as usize + 4] = 3;
        check_writes_confined(&ring, &[BUF], &before, &after);
    }

    #[test]
    #[should_panic(expected = "device wrote 0x8200, not a writable buffer")]
    fn a_write_one_byte_past_a_buffer_is_caught() {
        let ring = Ring { size: 16 };
        let (before, mut after) = (ram(), ram());
        after.0[0x8000 + 512] = 1;
        check_writes_confined(&ring, &[BUF], &before, &after);
    }

    #[test]
    #[should_panic(expected = "not a writable buffer")]
    fn a_write_into_a_device_readable_buffer_or_high_ram_is_caught() {
        let ring = Ring { size: 16 };
        let (before, mut after) = (ram(), ram());
        after.1[HIGH_LEN as usize - 1] = 1;
        let read_only = D {
            write: false,
            ..BUF
        };
        check_writes_confined(&ring, &[read_only], &before, &after);
    }
}

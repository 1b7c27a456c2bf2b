//! Thousands of random descriptor chains against a model of the disk.
//!
//! Most chains are structured: a request of a random type, sector and length whose
//! readable and writable byte streams are cut at random points into descriptors
//! placed anywhere in RAM (sometimes in an indirect table), with at most one defect
//! injected (sector out of range or overflowing, length not in sectors, a descriptor
//! flipped to the wrong direction or moved outside RAM, no status, a short header, a
//! loop). The model predicts the status byte, the used length, the data read, and
//! the disk contents after every batch. The rest are garbage chains: random
//! descriptors with random flags, lengths and `next` indices (loops, indices beyond
//! the table, nested indirect tables), reading only a constant garbage area and
//! writing only a sink, and now and then a head index beyond the queue.
//!
//! Checked throughout: the device never stops (every chain is finished, in order),
//! the disk equals the model (nothing written outside valid writes), and a canary
//! area no descriptor points to is never touched.

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};

use super::*;

const CHAINS: usize = 5000;
const CAP: u64 = (DISK / 512) as u64;
/// Structured buffers are bump-allocated here (across the 2 MiB region boundary).
const AREA: (u64, u64) = (0x10_0000, 0x30_0000);
const GARBAGE: (u64, u64) = (0x30_0000, 0x34_0000);
const SINK: (u64, u64) = (0x34_0000, 0x38_0000);
const CANARY: (u64, u64) = (0x38_0000, 0x40_0000);
/// Descriptor indices: structured chains below, garbage chains from here.
const GARBAGE_IDX: u16 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Read,
    Write,
    Flush,
    GetId,
    Unknown(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defect {
    None,
    OutOfRange,
    Overflow,
    BadLength,
    Flip,
    Outside,
    NoStatus,
    ShortHeader,
    Loop,
}

#[derive(Clone, Copy, Debug)]
struct Piece {
    addr: u64,
    len: u32,
    flags: u16,
}

/// A structured chain and what the model expects of it.
#[derive(Debug)]
struct Planned {
    head: u16,
    ty: Ty,
    defect: Defect,
    sector: u64,
    data_len: usize,
    pieces: Vec<Piece>,
    /// The bytes a valid write stores.
    write_data: Vec<u8>,
    indirect: bool,
}

fn in_ram(addr: u64, len: u64) -> bool {
    let end = addr.checked_add(len);
    end.is_some_and(|e| e <= LOW_END || (addr >= HIGH && e <= HIGH_END))
}

impl Planned {
    fn writable(&self) -> impl Iterator<Item = &Piece> {
        self.pieces.iter().filter(|p| p.flags & W != 0)
    }

    fn writable_len(&self) -> u32 {
        self.writable().map(|p| p.len).sum()
    }

    /// The last writable byte, if in RAM (where the device puts the status).
    fn status_at(&self) -> Option<u64> {
        let p = self.writable().filter(|p| p.len > 0).last()?;
        let at = p.addr.checked_add(u64::from(p.len) - 1)?;
        in_ram(at, 1).then_some(at)
    }

    /// The expected status byte (None: not predictable, for loops).
    fn expected_status(&self) -> Option<u8> {
        match (self.defect, self.ty) {
            (Defect::Loop, _) => None,
            (Defect::None, Ty::Unknown(_)) => Some(S_UNSUPP),
            (Defect::None, _) => Some(S_OK),
            _ => Some(S_IOERR),
        }
    }

    /// Bytes of the device-writable data a valid request fills.
    fn data_written(&self) -> u32 {
        match (self.defect, self.ty) {
            (Defect::None, Ty::Read) => self.data_len as u32,
            (Defect::None, Ty::GetId) => self.data_len.min(20) as u32,
            _ => 0,
        }
    }
}

struct Gen {
    rng: Rng,
    bump: u64,
}

impl Gen {
    fn alloc(&mut self, len: u64) -> u64 {
        let at = (self.bump + 15) & !15;
        self.bump = at + len.max(1);
        assert!(self.bump <= AREA.1, "bump area exhausted");
        at
    }

    /// Cuts `len` bytes into 1..=4 pieces (sometimes with an empty one).
    fn cuts(&mut self, len: usize) -> Vec<usize> {
        let n = 1 + self.rng.below(4) as usize;
        let mut points: Vec<usize> = (1..n)
            .map(|_| self.rng.below(len as u64 + 1) as usize)
            .collect();
        points.push(0);
        points.push(len);
        points.sort_unstable();
        let mut sizes: Vec<usize> = points.windows(2).map(|w| w[1] - w[0]).collect();
        sizes.retain(|&s| s > 0 || self.rng.chance(10));
        if sizes.is_empty() {
            sizes.push(len);
        }
        sizes
    }

    fn out_of_ram(&mut self, len: u32) -> u64 {
        match self.rng.below(3) {
            0 => HOLE + self.rng.below(HIGH - HOLE - u64::from(len)),
            1 => HIGH_END - u64::from(len / 2),
            _ => u64::MAX - self.rng.below(1 << 20),
        }
    }

    fn plan(&mut self, rig: &Rig, head: u16) -> Planned {
        let r = &mut self.rng;
        let ty = match r.below(10) {
            0..=2 => Ty::Read,
            3..=5 => Ty::Write,
            6 => Ty::Flush,
            7 => Ty::GetId,
            _ => Ty::Unknown(match r.below(3) {
                0 => 11, // DISCARD, not negotiated
                1 => 2 + r.below(2) as u32,
                _ => 16 + r.below(u64::from(u32::MAX - 16)) as u32,
            }),
        };
        let rw = matches!(ty, Ty::Read | Ty::Write);
        let unknown_readable = matches!(ty, Ty::Unknown(_)) && r.chance(50);
        let no_readable_data = !(ty == Ty::Write || unknown_readable);
        let defect = match r.below(20) {
            0 if rw => Defect::OutOfRange,
            1 if rw => Defect::Overflow,
            2 if rw => Defect::BadLength,
            3 if !matches!(ty, Ty::Unknown(_)) => Defect::Flip,
            4 => Defect::Outside,
            5 if matches!(ty, Ty::Read | Ty::Write | Ty::Flush) => Defect::NoStatus,
            6 if no_readable_data => Defect::ShortHeader,
            7 => Defect::Loop,
            _ => Defect::None,
        };
        let nsect = if r.chance(10) {
            r.below(65)
        } else {
            r.below(9)
        };
        let mut data_len = match ty {
            Ty::Read | Ty::Write => (nsect * 512) as usize,
            Ty::GetId => r.below(41) as usize,
            Ty::Flush => 0,
            Ty::Unknown(_) => r.below(1000) as usize,
        };
        if defect == Defect::BadLength {
            data_len += 1 + r.below(511) as usize;
        }
        let sectors = (data_len / 512) as u64;
        let sector = match defect {
            Defect::OutOfRange => CAP - sectors + 1 + r.below(10),
            Defect::Overflow => u64::MAX - r.below(16),
            _ if rw => r.below(CAP - sectors + 1),
            _ => r.next(),
        };
        let code = match ty {
            Ty::Read => VIRTIO_BLK_T_IN,
            Ty::Write => VIRTIO_BLK_T_OUT,
            Ty::Flush => VIRTIO_BLK_T_FLUSH,
            Ty::GetId => VIRTIO_BLK_T_GET_ID,
            Ty::Unknown(t) => t,
        };
        let mut readable = code.to_le_bytes().to_vec();
        readable.extend((r.next() as u32).to_le_bytes());
        readable.extend(sector.to_le_bytes());
        if defect == Defect::ShortHeader {
            readable.truncate(8 + r.below(8) as usize);
        }
        let write_data = if ty == Ty::Write || unknown_readable {
            r.bytes(data_len)
        } else {
            Vec::new()
        };
        readable.extend(&write_data);
        let mut writable_len = match ty {
            Ty::Read | Ty::GetId => data_len,
            Ty::Unknown(_) if !unknown_readable => data_len,
            _ => 0,
        } + 1;
        if defect == Defect::NoStatus {
            writable_len -= 1;
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        for size in self.cuts(readable.len()) {
            let addr = self.alloc(size as u64);
            rig.fill(addr, &readable[at..at + size]);
            at += size;
            pieces.push(Piece {
                addr,
                len: size as u32,
                flags: R,
            });
        }
        if writable_len > 0 {
            for size in self.cuts(writable_len) {
                let addr = self.alloc(size as u64);
                rig.fill(addr, &vec![0xee; size]);
                pieces.push(Piece {
                    addr,
                    len: size as u32,
                    flags: W,
                });
            }
        }
        let r = &mut self.rng;
        let nonempty: Vec<usize> = (0..pieces.len()).filter(|&i| pieces[i].len > 0).collect();
        match defect {
            Defect::Flip => {
                let i = nonempty[r.below(nonempty.len() as u64) as usize];
                pieces[i].flags ^= W;
            }
            Defect::Outside => {
                let i = nonempty[r.below(nonempty.len() as u64) as usize];
                let len = pieces[i].len;
                pieces[i].addr = self.out_of_ram(len);
            }
            _ => {}
        }
        let indirect = defect != Defect::Loop && self.rng.chance(20);
        Planned {
            head,
            ty,
            defect,
            sector,
            data_len,
            pieces,
            write_data,
            indirect,
        }
    }

    /// Writes a structured chain's descriptors at `base..` and returns how many
    /// table entries it used.
    fn place(&mut self, rig: &Rig, p: &Planned) -> u16 {
        let n = p.pieces.len() as u16;
        let (table, first) = if p.indirect {
            let t = self.alloc(16 * u64::from(n));
            rig.put_desc(p.head, t, 16 * u32::from(n), INDIRECT, 0);
            (t, 0)
        } else {
            (DESC, p.head)
        };
        for (i, piece) in p.pieces.iter().enumerate() {
            let idx = first + i as u16;
            let last = i as u16 + 1 == n;
            let (flags, next) = match (last, p.defect) {
                (false, _) => (piece.flags | NEXT, idx + 1),
                (true, Defect::Loop) => (piece.flags | NEXT, p.head),
                (true, _) => (piece.flags, 0),
            };
            rig.put_desc_at(table, idx, piece.addr, piece.len, flags, next);
        }
        if p.indirect {
            1
        } else {
            n
        }
    }

    /// A garbage chain in the garbage part of the table; returns its head.
    fn garbage(&mut self, rig: &Rig) -> u16 {
        let span = u64::from(QUEUE_SIZE - GARBAGE_IDX);
        for _ in 0..1 + self.rng.below(6) {
            let r = &mut self.rng;
            let idx = GARBAGE_IDX + r.below(span) as u16;
            let mut flags = 0;
            if r.chance(70) {
                flags |= NEXT;
            }
            if r.chance(50) {
                flags |= W;
            }
            if r.chance(5) {
                flags |= INDIRECT;
            }
            let len = if r.chance(5) {
                r.next() as u32
            } else {
                r.below(4096) as u32
            };
            let area = if flags & W != 0 { SINK } else { GARBAGE };
            let (addr, len) = if r.chance(20) {
                (self.out_of_ram(len.min(1 << 20)), len)
            } else {
                // In-area buffers stay in their area.
                let addr = area.0 + r.below(area.1 - area.0 - 4096);
                (addr, len.min((area.1 - addr) as u32))
            };
            let next = GARBAGE_IDX + self.rng.below(span + 6) as u16;
            rig.put_desc(idx, addr, len, flags, next);
        }
        if self.rng.chance(3) {
            QUEUE_SIZE + self.rng.below(1000) as u16
        } else {
            GARBAGE_IDX + self.rng.below(span) as u16
        }
    }
}

#[test]
fn random_chains_never_stop_the_device_and_match_the_model() {
    let mut rig = Rig::with(Opts {
        features: Some(VIRTIO_F_VERSION_1),
        ..Opts::default()
    });
    rig.fill(GARBAGE.0, &vec![0xee; (GARBAGE.1 - GARBAGE.0) as usize]);
    rig.fill(CANARY.0, &vec![0xc3; (CANARY.1 - CANARY.0) as usize]);
    let mut model = rig.image.clone();
    let mut gen = Gen {
        rng: Rng::new(0x5eed_b10c),
        bump: AREA.0,
    };
    let mut done = 0;
    let mut used_seen = 0u16;
    let mut defects = std::collections::HashMap::new();
    while done < CHAINS {
        gen.bump = AREA.0;
        let mut next_idx = 0u16;
        let mut batch: Vec<(u16, Option<Planned>)> = Vec::new();
        for _ in 0..1 + gen.rng.below(8) {
            if gen.rng.chance(10) {
                let head = gen.garbage(&rig);
                batch.push((head, None));
            } else {
                let mut p = gen.plan(&rig, next_idx);
                p.head = next_idx;
                next_idx += gen.place(&rig, &p);
                *defects.entry(format!("{:?}", p.defect)).or_insert(0) += 1;
                batch.push((p.head, Some(p)));
            }
        }
        for (head, _) in &batch {
            rig.publish(*head);
        }
        rig.kick();
        rig.wait();
        done += batch.len();
        for (head, plan) in &batch {
            if *head >= QUEUE_SIZE {
                continue;
            }
            let (id, len) = rig.used(used_seen);
            used_seen = used_seen.wrapping_add(1);
            assert_eq!(id, u32::from(*head), "used entries out of order");
            let Some(p) = plan else { continue };
            let status_at = p.status_at();
            let status = status_at.map(|a| rig.byte(a));
            if let Some(want) = p.expected_status() {
                assert_eq!(status, status_at.map(|_| want), "{p:#x?}");
                let w = p.writable_len();
                let dw = p.data_written();
                let want_len = if status_at.is_some() && dw == w.saturating_sub(1) {
                    w
                } else {
                    dw
                };
                assert_eq!(len, want_len, "{p:#x?}");
            }
            if p.defect != Defect::None || !matches!(p.ty, Ty::Read | Ty::Write) {
                continue;
            }
            let off = (p.sector * 512) as usize;
            match p.ty {
                Ty::Write => model[off..off + p.data_len].copy_from_slice(&p.write_data),
                Ty::Read => {
                    let mut got = Vec::new();
                    for piece in p.pieces.iter().filter(|x| x.flags & W != 0) {
                        got.extend(rig.bytes(piece.addr, piece.len as usize));
                    }
                    assert_eq!(got[..p.data_len], model[off..off + p.data_len], "{p:#x?}");
                }
                _ => {}
            }
        }
        assert_eq!(rig.used_idx(), used_seen);
        assert!(
            rig.disk() == model,
            "disk differs from the model after {done} chains"
        );
    }
    assert_eq!(
        rig.bytes(CANARY.0, (CANARY.1 - CANARY.0) as usize),
        vec![0xc3; (CANARY.1 - CANARY.0) as usize]
    );
    let c = rig.handle.counters();
    assert_eq!(c.requests, done as u64);
    assert!(
        c.invalid > 0 && c.unsupported > 0 && c.reads > 0 && c.writes > 0,
        "{c:?}"
    );
    // Every defect kind was exercised.
    assert_eq!(defects.len(), 9, "{defects:?}");
    eprintln!("{done} chains; defects {defects:?}; counters {c:?}");
    rig.assert_alive();
}

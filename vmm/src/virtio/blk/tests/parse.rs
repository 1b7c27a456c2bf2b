//! The request parser on its own: descriptors in, a request or a refusal out.

use crate::memory::{create_guest_memory, RegionSpec};
use crate::virtio::blk::request::*;
use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: u64 = 1 << 20;

fn mem() -> GuestMemoryMmap {
    create_guest_memory(&[RegionSpec::new(0, RAM)]).unwrap()
}

fn limits() -> Limits {
    Limits {
        capacity: 100,
        read_only: false,
        discard: true,
        max_discard_seg: 4,
        max_discard_sectors: 64,
    }
}

fn header(mem: &GuestMemoryMmap, at: u64, ty: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&ty.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(at)).unwrap();
}

/// Descriptors `(addr, len, writable)` chained in order.
fn chain(d: &[(u64, u32, bool)]) -> impl Iterator<Item = Descriptor> {
    let n = d.len();
    d.iter()
        .enumerate()
        .map(|(i, &(a, l, w))| {
            let mut f = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < n {
                f |= VRING_DESC_F_NEXT as u16;
            }
            Descriptor::new(a, l, f, i as u16 + 1)
        })
        .collect::<Vec<_>>()
        .into_iter()
}

fn reason(r: Result<Request, Rejected>) -> (InvalidReason, Option<GuestAddress>) {
    let e = r.unwrap_err();
    (e.reason, e.status)
}

#[test]
fn header_split_over_three_buffers_and_status_inside_the_data_buffer() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 7);
    // Header as 5 + 3 + 8 bytes out of one 16-byte header written contiguously.
    let req = parse(
        chain(&[
            (0x1000, 5, false),
            (0x1005, 3, false),
            (0x1008, 8, false),
            (0x2000, 1000, true),
            (0x3000, 25, true),
        ]),
        &m,
        &limits(),
    )
    .unwrap();
    assert_eq!(req.op, Op::Read);
    assert_eq!(req.sector, 7);
    assert_eq!(req.data_len, 1024);
    assert_eq!(
        req.data,
        vec![
            Segment {
                addr: GuestAddress(0x2000),
                len: 1000
            },
            Segment {
                addr: GuestAddress(0x3000),
                len: 24
            }
        ]
    );
    assert_eq!(req.status, GuestAddress(0x3018));
    assert_eq!(req.writable_len, 1025);
}

#[test]
fn write_data_may_share_the_header_buffer() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_OUT, 99);
    let req = parse(
        chain(&[
            (0x1000, 16 + 300, false),
            (0x4000, 212, false),
            (0x5000, 1, true),
        ]),
        &m,
        &limits(),
    )
    .unwrap();
    assert_eq!(
        (req.op.clone(), req.sector, req.data_len),
        (Op::Write, 99, 512)
    );
    assert_eq!(req.data[0].addr, GuestAddress(0x1010));
    // Sector 99 + 1 = 100 = capacity: the last sector is fine, one more is not.
    header(&m, 0x1000, VIRTIO_BLK_T_OUT, 100);
    let r = parse(
        chain(&[(0x1000, 16 + 512, false), (0x5000, 1, true)]),
        &m,
        &limits(),
    );
    assert_eq!(
        reason(r),
        (InvalidReason::OutOfRange, Some(GuestAddress(0x5000)))
    );
}

#[test]
fn every_malformed_shape_is_refused_with_its_reason() {
    let m = mem();
    let l = limits();
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 0);
    let st = Some(GuestAddress(0x5000));
    type Case = (Vec<(u64, u32, bool)>, InvalidReason, Option<GuestAddress>);
    let cases: Vec<Case> = vec![
        // Readable after writable.
        (
            vec![(0x1000, 16, false), (0x5000, 1, true), (0x2000, 512, false)],
            InvalidReason::WrongDirection,
            st,
        ),
        // Read data in a device-readable buffer.
        (
            vec![(0x1000, 16, false), (0x2000, 512, false), (0x5000, 1, true)],
            InvalidReason::WrongDirection,
            st,
        ),
        // Not whole sectors.
        (
            vec![(0x1000, 16, false), (0x2000, 511, true), (0x5000, 1, true)],
            InvalidReason::BadLength,
            st,
        ),
        // Header too short.
        (
            vec![(0x1000, 15, false), (0x5000, 1, true)],
            InvalidReason::ShortHeader,
            st,
        ),
        // Data beyond RAM; the status is still writable.
        (
            vec![
                (0x1000, 16, false),
                (RAM - 256, 512, true),
                (0x5000, 1, true),
            ],
            InvalidReason::OutsideRam,
            st,
        ),
        // Status beyond RAM: nowhere to answer.
        (
            vec![(0x1000, 16, false), (0x2000, 512, true), (RAM, 1, true)],
            InvalidReason::OutsideRam,
            None,
        ),
        // An address that wraps around.
        (
            vec![
                (0x1000, 16, false),
                (u64::MAX - 10, 512, true),
                (0x5000, 1, true),
            ],
            InvalidReason::OutsideRam,
            st,
        ),
        // No writable byte at all.
        (vec![(0x1000, 16, false)], InvalidReason::NoStatus, None),
        // Only an empty writable buffer.
        (
            vec![(0x1000, 16, false), (0x5000, 0, true)],
            InvalidReason::NoStatus,
            None,
        ),
    ];
    for (i, (descs, want, status)) in cases.into_iter().enumerate() {
        let got = reason(parse(chain(&descs), &m, &l));
        assert_eq!(got, (want, status), "case {i}: {descs:x?}");
    }
}

#[test]
fn sector_ranges_are_checked_without_overflow() {
    let m = mem();
    for (sector, ok) in [(0, true), (98, true), (99, false), (u64::MAX, false)] {
        header(&m, 0x1000, VIRTIO_BLK_T_IN, sector);
        let r = parse(
            chain(&[(0x1000, 16, false), (0x2000, 1024, true), (0x5000, 1, true)]),
            &m,
            &limits(),
        );
        assert_eq!(r.is_ok(), ok, "sector {sector}");
        if !ok {
            assert_eq!(r.unwrap_err().reason, InvalidReason::OutOfRange);
        }
    }
}

#[test]
fn read_only_flush_get_id_and_unknown_types() {
    let m = mem();
    let ro = Limits {
        read_only: true,
        ..limits()
    };
    header(&m, 0x1000, VIRTIO_BLK_T_OUT, 0);
    let w = [(0x1000, 16, false), (0x2000, 512, false), (0x5000, 1, true)];
    assert_eq!(
        parse(chain(&w), &m, &ro).unwrap_err().reason,
        InvalidReason::ReadOnly
    );
    assert!(parse(chain(&w), &m, &limits()).is_ok());
    // A read-only disk still reads.
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 0);
    let r = [(0x1000, 16, false), (0x2000, 512, true), (0x5000, 1, true)];
    assert_eq!(parse(chain(&r), &m, &ro).unwrap().op, Op::Read);
    header(&m, 0x1000, VIRTIO_BLK_T_FLUSH, 12345);
    let f = parse(chain(&[(0x1000, 16, false), (0x5000, 1, true)]), &m, &ro).unwrap();
    assert_eq!((f.op, f.data_len), (Op::Flush, 0));
    let bad = parse(chain(&w), &m, &limits()).unwrap_err();
    assert_eq!(bad.reason, InvalidReason::WrongDirection);
    header(&m, 0x1000, VIRTIO_BLK_T_GET_ID, 0);
    let g = parse(
        chain(&[(0x1000, 16, false), (0x2000, 20, true), (0x5000, 1, true)]),
        &m,
        &limits(),
    )
    .unwrap();
    assert_eq!((g.op, g.data_len), (Op::GetId, 20));
    for ty in [2u32, 3, 13, 14, 0x8000_0000, u32::MAX] {
        header(&m, 0x1000, ty, u64::MAX);
        // Unknown types are answered whatever their layout.
        let u = parse(
            chain(&[(0x1000, 16, false), (0x2000, 7, false), (0x5000, 3, true)]),
            &m,
            &limits(),
        )
        .unwrap();
        assert_eq!(u.op, Op::Unsupported(ty));
        assert_eq!(u.status, GuestAddress(0x5002));
    }
}

fn discard_seg(m: &GuestMemoryMmap, at: u64, sector: u64, sectors: u32, flags: u32) {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    m.write_slice(&s, GuestAddress(at)).unwrap();
}

#[test]
fn discard_segments_are_validated() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_DISCARD, 0);
    discard_seg(&m, 0x2000, 10, 8, 0);
    discard_seg(&m, 0x2010, 90, 10, 0);
    let d = [(0x1000, 16, false), (0x2000, 32, false), (0x5000, 1, true)];
    let req = parse(chain(&d), &m, &limits()).unwrap();
    assert_eq!(
        req.op,
        Op::Discard(vec![
            DiscardRange {
                sector: 10,
                sectors: 8
            },
            DiscardRange {
                sector: 90,
                sectors: 10
            }
        ])
    );
    let no_discard = Limits {
        discard: false,
        ..limits()
    };
    assert_eq!(
        parse(chain(&d), &m, &no_discard).unwrap().op,
        Op::Unsupported(VIRTIO_BLK_T_DISCARD)
    );
    let ro = Limits {
        read_only: true,
        ..limits()
    };
    let cases = [
        (0x2010, 91, 10, 0, &limits(), InvalidReason::OutOfRange),
        (0x2010, 0, 65, 0, &limits(), InvalidReason::DiscardLimits),
        (0x2010, 0, 1, 1, &limits(), InvalidReason::DiscardFlags),
        (0x2010, 0, 1, 4, &limits(), InvalidReason::DiscardFlags),
        (0x2010, 0, 1, 0, &ro, InvalidReason::ReadOnly),
    ];
    for (at, sector, sectors, flags, l, want) in cases {
        discard_seg(&m, at, sector, sectors, flags);
        let e = parse(chain(&d), &m, l).unwrap_err();
        assert_eq!(e.reason, want);
        assert_eq!(
            e.reason.status() == S_UNSUPP,
            want == InvalidReason::DiscardFlags
        );
    }
    let odd = [(0x1000, 16, false), (0x2000, 20, false), (0x5000, 1, true)];
    assert_eq!(
        parse(chain(&odd), &m, &limits()).unwrap_err().reason,
        InvalidReason::BadLength
    );
    let five = [(0x1000, 16, false), (0x2000, 80, false), (0x5000, 1, true)];
    assert_eq!(
        parse(chain(&five), &m, &limits()).unwrap_err().reason,
        InvalidReason::DiscardLimits
    );
}

#[test]
fn a_chain_that_does_not_end_is_broken_and_a_long_one_too_many() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 0);
    // The walk stopped while the last descriptor still had NEXT set.
    let d = vec![
        Descriptor::new(0x1000, 16, VRING_DESC_F_NEXT as u16, 1),
        Descriptor::new(
            0x5000,
            1,
            (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
            0,
        ),
    ];
    let e = parse(d.into_iter(), &m, &limits()).unwrap_err();
    assert_eq!(
        (e.reason, e.status),
        (InvalidReason::BrokenChain, Some(GuestAddress(0x5000)))
    );
    assert_eq!(
        parse(std::iter::empty(), &m, &limits()).unwrap_err().reason,
        InvalidReason::BrokenChain
    );
    let mut long = vec![(0x1000, 16, false)];
    long.extend((0..MAX_CHAIN_DESCRIPTORS).map(|i| (0x2000 + i as u64, 1, true)));
    assert_eq!(
        parse(chain(&long), &m, &limits()).unwrap_err().reason,
        InvalidReason::TooManyDescriptors
    );
}

//! Requests end to end: data round trips over odd descriptor splits, flush, GET_ID,
//! the configuration space, read-only disks, discard, indirect chains, interrupt
//! suppression, and every malformed request answered while the device carries on.

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_bindings::bindings::virtio_ring::{VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY};

use super::*;

#[test]
fn round_trip_over_odd_descriptor_splits_and_two_ram_regions() {
    let mut rig = Rig::new();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 13 + 5) as u8).collect();
    // Header in 7 + 9 bytes; data in 1000 + 2000 + 1096 bytes, the last buffer
    // straddling the boundary between the two RAM regions at 2 MiB.
    rig.header(HDR, VIRTIO_BLK_T_OUT, 5);
    let straddle = (2 << 20) - 600;
    rig.fill(BUF, &data[..1000]);
    rig.fill(BUF + 0x1000, &data[1000..3000]);
    rig.fill(straddle, &data[3000..]);
    rig.set_byte(STATUS, 0xee);
    let (_, used) = rig.run(&[
        (HDR, 7, R),
        (HDR + 7, 9, R),
        (BUF, 1000, R),
        (BUF + 0x1000, 2000, R),
        (straddle, 1096, R),
        (STATUS, 1, W),
    ]);
    assert_eq!((rig.byte(STATUS), used), (S_OK, 1));
    let mut want = rig.image.clone();
    want[5 * 512..5 * 512 + 4096].copy_from_slice(&data);
    assert_eq!(rig.disk(), want);

    // Read it back: the data in 3 pieces, the status byte sharing the last one.
    rig.header(HDR, VIRTIO_BLK_T_IN, 5);
    let out = 0x40000;
    let (_, used) = rig.run(&[
        (HDR, 16, R),
        (out, 100, W),
        (out + 0x1000, 3000, W),
        (out + 0x2000, 996 + 1, W),
    ]);
    assert_eq!(used, 4097);
    let mut got = rig.bytes(out, 100);
    got.extend(rig.bytes(out + 0x1000, 3000));
    got.extend(rig.bytes(out + 0x2000, 996));
    assert_eq!(got, data);
    assert_eq!(rig.byte(out + 0x2000 + 996), S_OK);

    let c = rig.handle.counters();
    assert_eq!((c.writes, c.reads, c.requests, c.invalid), (1, 1, 2, 0));
    assert_eq!((c.bytes_written, c.bytes_read), (4096, 4096));
    let trace = rig.handle.drain_trace();
    let tid = rig.handle.worker_tid().unwrap();
    assert_eq!(
        trace
            .iter()
            .map(|r| (r.seq, r.tid, r.kind, r.sector, r.bytes, r.status))
            .collect::<Vec<_>>(),
        vec![
            (0, tid, BlkKind::Write, 5, 4096, S_OK),
            (1, tid, BlkKind::Read, 5, 4096, S_OK)
        ]
    );
    assert!(trace[0].end_ns() <= trace[1].start_ns, "{trace:?}");
}

#[test]
fn large_requests_go_through_the_bounce_buffer_in_pieces() {
    let mut rig = Rig::with(Opts {
        disk: 4 << 20,
        ..Opts::default()
    });
    let data: Vec<u8> = (0..(1536 * 1024u32)).map(|i| (i % 253) as u8).collect();
    rig.header(HDR, VIRTIO_BLK_T_OUT, 8);
    rig.fill(0x100000, &data);
    rig.run(&[
        (HDR, 16, R),
        (0x100000, data.len() as u32, R),
        (STATUS, 1, W),
    ]);
    assert_eq!(rig.byte(STATUS), S_OK);
    assert_eq!(rig.disk()[4096..4096 + data.len()], data[..]);
    rig.header(HDR, VIRTIO_BLK_T_IN, 8);
    rig.run(&[
        (HDR, 16, R),
        (HIGH, data.len() as u32 / 2, W),
        (0x100000, data.len() as u32 / 2 + 1, W),
    ]);
    let mut back = rig.bytes(HIGH, data.len() / 2);
    back.extend(rig.bytes(0x100000, data.len() / 2));
    assert_eq!(back, data);
}

#[test]
fn config_space_features_flush_and_get_id() {
    let mut rig = Rig::new();
    let f = rig.blk.features();
    for b in [
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_SEG_MAX,
    ] {
        assert_ne!(f & (1 << b), 0, "feature {b}");
    }
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(f & VIRTIO_F_VERSION_1, 0);
    assert_eq!(rig.blk.device_type(), 2);
    assert_eq!(rig.blk.queue_max_sizes(), &[QUEUE_SIZE]);
    let cfg = |off: usize, len: usize| {
        let mut b = vec![0u8; len];
        rig.blk.read_config(off, &mut b);
        b
    };
    // Capacity read as the driver does (two 32-bit halves) and whole.
    let lo = u32::from_le_bytes(cfg(0, 4).try_into().unwrap());
    let hi = u32::from_le_bytes(cfg(4, 4).try_into().unwrap());
    assert_eq!(u64::from(lo) | (u64::from(hi) << 32), (DISK / 512) as u64);
    assert_eq!(cfg(0, 8), ((DISK / 512) as u64).to_le_bytes());
    assert_eq!(cfg(12, 4), SEG_MAX.to_le_bytes());
    assert_eq!(cfg(20, 4), 512u32.to_le_bytes());
    assert_eq!(cfg(34, 2), 1u16.to_le_bytes());
    assert_eq!(rig.blk.config_len(), CONFIG_LEN);
    // Out of range: zeros, no panic.
    assert_eq!(cfg(CONFIG_LEN - 2, 4), vec![0; 4]);
    assert_eq!(cfg(usize::MAX, 2), vec![0; 2]);

    assert_eq!(rig.flush(), S_OK);
    rig.header(HDR, VIRTIO_BLK_T_GET_ID, 0);
    rig.fill(BUF, &[0xaa; 32]);
    let (_, used) = rig.run(&[(HDR, 16, R), (BUF, 20, W), (STATUS, 1, W)]);
    assert_eq!(used, 21);
    let mut want = b"test-disk-0".to_vec();
    want.resize(20, 0);
    assert_eq!(rig.bytes(BUF, 20), want);
    assert_eq!(rig.byte(STATUS), S_OK);
    // A short buffer gets the start of the id; a long one the 20 bytes.
    rig.fill(BUF, &[0xaa; 32]);
    let (_, used) = rig.run(&[(HDR, 16, R), (BUF, 4, W), (STATUS, 1, W)]);
    assert_eq!((rig.bytes(BUF, 5), used), (b"test\xaa".to_vec(), 5));
    let (_, used) = rig.run(&[(HDR, 16, R), (BUF, 30, W), (STATUS, 1, W)]);
    assert_eq!(used, 20);
    assert_eq!(rig.bytes(BUF + 20, 10), vec![0xaa; 10]);
    let c = rig.handle.counters();
    assert_eq!((c.flushes, c.get_ids), (1, 3));
}

#[test]
fn direct_disks_advertise_4k_blocks_and_still_take_512_byte_requests() {
    let file = tempfile::NamedTempFile::new_in(base::tier::DISK_TMP).unwrap();
    std::fs::write(file.path(), [0u8; 8192]).unwrap();
    let mut probe = BlkConfig::new(file.path());
    probe.direct = true;
    if let Err(BlkError::Open { source, .. }) = Blk::new(probe) {
        if source.raw_os_error() == Some(libc::EINVAL) {
            base::tier::skip(
                base::tier::Tier::DirectIo,
                &format!("{} refuses O_DIRECT", base::tier::DISK_TMP),
            );
            return;
        }
        panic!("{source}");
    }
    let mut rig = Rig::with(Opts {
        direct: true,
        ..Opts::default()
    });
    let mut bs = [0u8; 4];
    rig.blk.read_config(20, &mut bs);
    assert_eq!(u32::from_le_bytes(bs), DIRECT_ALIGN as u32);
    // A guest that ignores blk_size still gets correct data (read-modify-write).
    assert_eq!(rig.write(3, &[0x99; 512]), S_OK);
    let mut want = rig.image.clone();
    want[3 * 512..4 * 512].fill(0x99);
    assert_eq!(rig.disk(), want);
    rig.assert_alive();
}

#[test]
fn read_only_disk_refuses_writes_and_still_reads() {
    let mut rig = Rig::with(Opts {
        read_only: true,
        ..Opts::default()
    });
    assert_ne!(rig.blk.features() & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(rig.blk.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
    assert!(rig.blk.is_read_only());
    assert_eq!(rig.write(0, &[1; 512]), S_IOERR);
    assert_eq!(rig.disk(), rig.image);
    assert_eq!(
        rig.handle.counters().invalid_for(InvalidReason::ReadOnly),
        1
    );
    assert_eq!(rig.flush(), S_OK);
    rig.assert_alive();
}

#[test]
fn discard_zeroes_the_range_when_negotiated_and_is_unsupported_otherwise() {
    let mut rig = Rig::new();
    let offered = rig.blk.features() & (1 << VIRTIO_BLK_F_DISCARD) != 0;
    if !offered {
        base::tier::skip(
            base::tier::Tier::DirectIo,
            "the blk image's file system cannot punch holes",
        );
        return;
    }
    let mut cfg = [0u8; 12];
    rig.blk.read_config(36, &mut cfg);
    assert_eq!(cfg[0..4], MAX_DISCARD_SECTORS.to_le_bytes());
    assert_eq!(cfg[4..8], MAX_DISCARD_SEG.to_le_bytes());
    assert_eq!(cfg[8..12], 1u32.to_le_bytes());
    let seg = |sector: u64, n: u32| {
        let mut s = sector.to_le_bytes().to_vec();
        s.extend(n.to_le_bytes());
        s.extend(0u32.to_le_bytes());
        s
    };
    let mut segs = seg(8, 8);
    segs.extend(seg(100, 3));
    rig.header(HDR, VIRTIO_BLK_T_DISCARD, 0);
    rig.fill(BUF, &segs);
    rig.run(&[(HDR, 16, R), (BUF, 32, R), (STATUS, 1, W)]);
    assert_eq!(rig.byte(STATUS), S_OK);
    let mut want = rig.image.clone();
    want[8 * 512..16 * 512].fill(0);
    want[100 * 512..103 * 512].fill(0);
    assert_eq!(rig.disk(), want);
    assert_eq!(rig.handle.counters().bytes_discarded, 11 * 512);

    // The same request without the feature negotiated: UNSUPP, nothing discarded.
    let mut plain = Rig::with(Opts {
        features: Some(rig.blk.features() & !(1 << VIRTIO_BLK_F_DISCARD)),
        ..Opts::default()
    });
    plain.header(HDR, VIRTIO_BLK_T_DISCARD, 0);
    plain.fill(BUF, &segs);
    plain.run(&[(HDR, 16, R), (BUF, 32, R), (STATUS, 1, W)]);
    assert_eq!(plain.byte(STATUS), S_UNSUPP);
    assert_eq!(plain.disk(), plain.image);
    assert_eq!(plain.handle.counters().unsupported, 1);
}

#[test]
fn indirect_chains_are_served() {
    let mut rig = Rig::new();
    let table = 0x50000;
    rig.header(HDR, VIRTIO_BLK_T_IN, 10);
    rig.put_desc_at(table, 0, HDR, 16, NEXT, 1);
    rig.put_desc_at(table, 1, BUF, 512, W | NEXT, 2);
    rig.put_desc_at(table, 2, BUF + 0x1000, 512, W | NEXT, 3);
    rig.put_desc_at(table, 3, STATUS, 1, W, 0);
    let (_, used) = rig.run(&[(table, 4 * 16, INDIRECT)]);
    assert_eq!((rig.byte(STATUS), used), (S_OK, 1025));
    let mut got = rig.bytes(BUF, 512);
    got.extend(rig.bytes(BUF + 0x1000, 512));
    assert_eq!(got, rig.image[10 * 512..12 * 512]);
    // An indirect table outside RAM: nothing can be read, nothing answered, counted.
    let (_, used) = rig.run(&[(HOLE, 4 * 16, INDIRECT)]);
    assert_eq!(used, 0);
    assert_eq!(
        rig.handle
            .counters()
            .invalid_for(InvalidReason::BrokenChain),
        1
    );
    rig.assert_alive();
}

/// One malformed request: its descriptors, the status it must get (None: none
/// written, used length 0) and the reason it must be counted under.
struct Bad {
    what: &'static str,
    ty: u32,
    sector: u64,
    descs: Vec<(u64, u32, u16)>,
    status: Option<u8>,
    reason: Option<InvalidReason>,
}

#[test]
fn every_malformed_request_gets_its_status_and_the_next_one_still_works() {
    let mut rig = Rig::new();
    let cap = (DISK / 512) as u64;
    let st = (STATUS, 1, W);
    let hdr = (HDR, 16, R);
    let bad = |what, ty, sector, descs, status, reason| Bad {
        what,
        ty,
        sector,
        descs,
        status,
        reason,
    };
    use InvalidReason as I;
    let cases = vec![
        bad(
            "write data device-writable",
            VIRTIO_BLK_T_OUT,
            0,
            vec![hdr, (BUF, 512, W), st],
            Some(S_IOERR),
            Some(I::WrongDirection),
        ),
        bad(
            "read data device-readable",
            VIRTIO_BLK_T_IN,
            0,
            vec![hdr, (BUF, 512, R), st],
            Some(S_IOERR),
            Some(I::WrongDirection),
        ),
        bad(
            "readable after writable",
            VIRTIO_BLK_T_IN,
            0,
            vec![(BUF, 512, W), hdr, st],
            Some(S_IOERR),
            Some(I::WrongDirection),
        ),
        bad(
            "length not in sectors",
            VIRTIO_BLK_T_IN,
            0,
            vec![hdr, (BUF, 500, W), st],
            Some(S_IOERR),
            Some(I::BadLength),
        ),
        bad(
            "write length not in sectors",
            VIRTIO_BLK_T_OUT,
            0,
            vec![hdr, (BUF, 513, R), st],
            Some(S_IOERR),
            Some(I::BadLength),
        ),
        bad(
            "last sector + 1",
            VIRTIO_BLK_T_IN,
            cap,
            vec![hdr, (BUF, 512, W), st],
            Some(S_IOERR),
            Some(I::OutOfRange),
        ),
        bad(
            "runs past the end",
            VIRTIO_BLK_T_OUT,
            cap - 1,
            vec![hdr, (BUF, 1024, R), st],
            Some(S_IOERR),
            Some(I::OutOfRange),
        ),
        bad(
            "sector overflow",
            VIRTIO_BLK_T_IN,
            u64::MAX - 1,
            vec![hdr, (BUF, 4096, W), st],
            Some(S_IOERR),
            Some(I::OutOfRange),
        ),
        bad(
            "unknown type",
            0x77,
            0,
            vec![hdr, (BUF, 512, W), st],
            Some(S_UNSUPP),
            None,
        ),
        bad(
            "no status (write)",
            VIRTIO_BLK_T_OUT,
            0,
            vec![hdr, (BUF, 512, R)],
            None,
            Some(I::NoStatus),
        ),
        bad(
            "data in the hole",
            VIRTIO_BLK_T_IN,
            0,
            vec![hdr, (HOLE + 4096, 512, W), st],
            Some(S_IOERR),
            Some(I::OutsideRam),
        ),
        bad(
            "data running into the hole",
            VIRTIO_BLK_T_IN,
            0,
            vec![hdr, (HOLE - 512, 1024, W), st],
            Some(S_IOERR),
            Some(I::OutsideRam),
        ),
        bad(
            "data beyond the end of RAM",
            VIRTIO_BLK_T_OUT,
            0,
            vec![hdr, (HIGH_END - 512, 1024, R), st],
            Some(S_IOERR),
            Some(I::OutsideRam),
        ),
        bad(
            "header outside RAM",
            VIRTIO_BLK_T_IN,
            0,
            vec![(u64::MAX - 8, 16, R), (BUF, 512, W), st],
            Some(S_IOERR),
            Some(I::OutsideRam),
        ),
        bad(
            "status outside RAM",
            VIRTIO_BLK_T_IN,
            0,
            vec![hdr, (BUF, 512, W), (HOLE, 1, W)],
            None,
            Some(I::OutsideRam),
        ),
        bad(
            "short header",
            VIRTIO_BLK_T_IN,
            0,
            vec![(HDR, 12, R), st],
            Some(S_IOERR),
            Some(I::ShortHeader),
        ),
        bad(
            "flush with data",
            VIRTIO_BLK_T_FLUSH,
            0,
            vec![hdr, (BUF, 512, R), st],
            Some(S_IOERR),
            Some(I::WrongDirection),
        ),
    ];
    for (i, case) in cases.iter().enumerate() {
        rig.header(HDR, case.ty, case.sector);
        rig.fill(BUF, &[0x5a; 1024]);
        rig.set_byte(STATUS, 0xee);
        let before = rig.handle.counters();
        let (_, used) = rig.run(&case.descs);
        let status = rig.byte(STATUS);
        // The used length covers the writable bytes only if all were written.
        let writable: u32 = case.descs.iter().filter(|d| d.2 == W).map(|d| d.1).sum();
        match case.status {
            Some(s) => assert_eq!(
                (status, used),
                (s, u32::from(writable == 1)),
                "{}",
                case.what
            ),
            None => assert_eq!((status, used), (0xee, 0), "{}", case.what),
        }
        let after = rig.handle.counters();
        if let Some(r) = case.reason {
            assert_eq!(
                after.invalid_for(r),
                before.invalid_for(r) + 1,
                "{}",
                case.what
            );
        } else {
            assert_eq!(after.unsupported, before.unsupported + 1, "{}", case.what);
        }
        assert_eq!(rig.disk(), rig.image, "{} changed the disk", case.what);
        assert_eq!(
            after.reads + after.writes,
            i as u64,
            "{} did I/O",
            case.what
        );
        let rec = rig.handle.drain_trace().pop().unwrap();
        let kind = if case.reason.is_some() {
            BlkKind::Invalid
        } else {
            BlkKind::Unsupported
        };
        assert_eq!(rec.kind, kind, "{}", case.what);
        assert_eq!(
            rec.status,
            case.status.unwrap_or(STATUS_NONE),
            "{}",
            case.what
        );
        rig.assert_alive();
        rig.handle.drain_trace();
    }
    assert_eq!(rig.handle.counters().invalid, cases.len() as u64 - 1);
}

#[test]
fn chains_that_loop_or_leave_the_table_are_refused() {
    let mut rig = Rig::new();
    rig.header(HDR, VIRTIO_BLK_T_IN, 0);
    rig.set_byte(STATUS, 0xee);
    // 200 -> 201 -> 200 -> ... : stopped after 256 descriptors.
    rig.put_desc(200, HDR, 16, NEXT, 201);
    rig.put_desc(201, STATUS, 1, W | NEXT, 200);
    rig.publish(200);
    // 202 -> 999 (beyond the table).
    rig.put_desc(202, HDR, 16, NEXT, 999);
    rig.publish(202);
    rig.kick();
    rig.wait();
    let c = rig.handle.counters();
    assert_eq!(c.invalid_for(InvalidReason::BrokenChain), 2);
    // The looping chain had a writable byte: it was told.
    assert_eq!(rig.byte(STATUS), S_IOERR);
    // (used length 0: the walk collected many writable bytes, only one was written)
    assert_eq!(rig.used(0), (200, 0));
    assert_eq!(rig.used(1), (202, 0));
    rig.assert_alive();
}

#[test]
fn a_head_index_beyond_the_queue_is_dropped_and_counted() {
    let mut rig = Rig::new();
    rig.publish(QUEUE_SIZE + 3);
    rig.kick();
    rig.wait();
    assert_eq!(rig.used_idx(), 0);
    assert_eq!(
        rig.handle
            .counters()
            .invalid_for(InvalidReason::HeadOutOfRange),
        1
    );
    rig.assert_alive();
}

#[test]
fn an_available_index_too_far_ahead_is_ignored_until_the_driver_fixes_it() {
    let mut rig = Rig::new();
    rig.set_avail_idx(QUEUE_SIZE + 1);
    rig.kick();
    eventually("a queue error counted", || {
        rig.handle.counters().queue_errors > 0
    });
    assert_eq!(rig.handle.completed(), 0);
    assert_eq!(rig.used_idx(), 0);
    rig.set_avail_idx(0);
    rig.assert_alive();
}

#[test]
fn interrupts_follow_the_no_interrupt_flag() {
    let mut rig = Rig::new();
    rig.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT as u16);
    rig.header(HDR, VIRTIO_BLK_T_IN, 0);
    for _ in 0..3 {
        rig.push(&[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    }
    rig.kick();
    rig.wait();
    let c = rig.handle.counters();
    assert_eq!(
        (rig.line.count(), c.interrupts, c.interrupts_suppressed),
        (0, 0, 3)
    );
    rig.set_avail_flags(0);
    rig.assert_alive();
    assert_eq!(rig.line.count(), 1);
    // Notifications are re-enabled once the queue runs dry (after the completion).
    eventually("notifications re-enabled", || {
        rig.used_flags() & VRING_USED_F_NO_NOTIFY as u16 == 0
    });
}

#[test]
fn interrupts_follow_event_idx() {
    let mut rig = Rig::with(Opts {
        event_idx: true,
        ..Opts::default()
    });
    // Interrupt once the used index passes 2 (i.e. after the third entry).
    rig.set_used_event(2);
    rig.header(HDR, VIRTIO_BLK_T_IN, 0);
    for _ in 0..5 {
        rig.push(&[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    }
    rig.kick();
    rig.wait();
    let c = rig.handle.counters();
    assert_eq!((rig.line.count(), c.interrupts_suppressed), (1, 4));
    assert_eq!(rig.used_idx(), 5);
    // The device asks to be notified at the next available entry (written once the
    // queue runs dry, after the completion).
    eventually("avail_event set", || rig.avail_event() == 5);
    rig.set_used_event(5);
    rig.assert_alive();
    assert_eq!(rig.line.count(), 2);
}

/// What a [`DiskMapper`] heard, and which page it takes.
#[derive(Default)]
struct Heard {
    /// (guest address, disk offset, data) of every page offered.
    pages: std::sync::Mutex<Vec<(u64, u64, Vec<u8>)>>,
    /// (offset, len) of every change announced, and the disk's bytes there
    /// at that moment (still the old ones).
    changes: std::sync::Mutex<Vec<(u64, u64)>>,
    take: u64,
}

impl super::DiskMapper for Heard {
    fn page_read(&self, gpa: vm_memory::GuestAddress, offset: u64, page: &[u8; 4096]) -> bool {
        self.pages
            .lock()
            .unwrap()
            .push((gpa.0, offset, page.to_vec()));
        gpa.0 == self.take
    }

    fn disk_changing(&self, offset: u64, len: u64) {
        self.changes.lock().unwrap().push((offset, len));
    }
}

/// The Swap Mapper's input and the false-read mitigation: whole aligned pages
/// of a read are offered to the mapper with their disk offsets; the ones it
/// takes are not written by the device, the others (and partial pages) are.
#[test]
fn whole_pages_of_reads_are_offered_to_the_mapper_with_their_disk_offsets() {
    let take = 0x41000u64; // the mapper takes this page, declines the others
    let heard = Arc::new(Heard {
        take,
        ..Heard::default()
    });
    let mut rig = Rig::with(Opts {
        mapper: Some(heard.clone()),
        ..Opts::default()
    });
    let out = 0x40000u64;
    // Mark the destination so skipped and written bytes can be told apart.
    rig.fill(out, &vec![0xaa; 3 * 4096 + 512]);
    // Sector 8 onwards (offset 4096), 3 pages + 512 bytes, the last buffer
    // starting mid-page: pages at 0x40000 and 0x41000 are whole, then
    // 0x42000..0x42800 in a buffer that starts at 0x42000 but is 2048 long.
    rig.header(HDR, VIRTIO_BLK_T_IN, 8);
    let (_, used) = rig.run(&[
        (HDR, 16, R),
        (out, 2 * 4096, W),
        (out + 0x2000, 2048, W),
        (out + 0x2800, 2560, W),
        (STATUS, 1, W),
    ]);
    assert_eq!((rig.byte(STATUS), used), (S_OK, 3 * 4096 + 512 + 1));
    let want = &rig.image[4096..4096 + 3 * 4096 + 512];
    let offered = heard.pages.lock().unwrap();
    let at: Vec<(u64, u64)> = offered.iter().map(|(g, o, _)| (*g, *o)).collect();
    assert_eq!(
        at,
        [(0x40000, 4096), (0x41000, 8192)],
        "only whole aligned pages are offered, each with its disk offset"
    );
    assert_eq!(
        offered[1].2,
        &want[4096..8192],
        "the mapper sees the disk's data"
    );
    assert_eq!(rig.bytes(out, 4096), &want[..4096], "declined page written");
    assert_eq!(
        rig.bytes(take, 4096),
        vec![0xaa; 4096],
        "taken page left to the mapper"
    );
    assert_eq!(rig.bytes(out + 0x2000, 4096 + 512), &want[8192..]);
    assert!(
        heard.changes.lock().unwrap().is_empty(),
        "a read changes nothing"
    );
}

/// Writes and discards announce their range to the mapper before the disk
/// changes; a reader sees the disk as the requests leave it.
#[test]
fn writes_and_discards_announce_their_range_and_readers_see_the_disk() {
    let heard = Arc::new(Heard::default());
    let mut rig = Rig::with(Opts {
        mapper: Some(heard.clone()),
        ..Opts::default()
    });
    let reader = rig.blk.reader();
    let mut before = vec![0u8; 1024];
    reader.read_at(&mut before, 5 * 512).unwrap();
    assert_eq!(before, rig.image[5 * 512..7 * 512]);
    rig.fill(BUF, &[0x5a; 1024]);
    rig.header(HDR, VIRTIO_BLK_T_OUT, 5);
    rig.run(&[(HDR, 16, R), (BUF, 1024, R), (STATUS, 1, W)]);
    assert_eq!(rig.byte(STATUS), S_OK);
    assert_eq!(*heard.changes.lock().unwrap(), [(5 * 512, 1024)]);
    let mut after = vec![0u8; 1024];
    reader.read_at(&mut after, 5 * 512).unwrap();
    assert_eq!(after, vec![0x5a; 1024]);
    // Beyond the disk: refused, naming the size.
    let size = rig.blk.capacity() * 512;
    let e = reader.read_at(&mut after, size - 512).unwrap_err();
    assert!(e.to_string().contains("beyond the disk"), "{e}");
    if rig.blk.features() & (1 << VIRTIO_BLK_F_DISCARD) != 0 {
        let mut seg = 8u64.to_le_bytes().to_vec();
        seg.extend(16u32.to_le_bytes());
        seg.extend(0u32.to_le_bytes());
        rig.header(HDR, VIRTIO_BLK_T_DISCARD, 0);
        rig.fill(BUF, &seg);
        rig.run(&[(HDR, 16, R), (BUF, 16, R), (STATUS, 1, W)]);
        assert_eq!(rig.byte(STATUS), S_OK);
        assert_eq!(heard.changes.lock().unwrap()[1], (8 * 512, 16 * 512));
    }
    assert!(heard.pages.lock().unwrap().is_empty());
}

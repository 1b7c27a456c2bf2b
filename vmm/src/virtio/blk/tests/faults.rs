//! Backend failures through [`FaultyBackend`]: each fails its own request with
//! `VIRTIO_BLK_S_IOERR`, is counted by cause, and leaves other requests alone.

use super::*;

fn faulty() -> (Rig, Arc<BlkFaultInjector>) {
    let inj = BlkFaultInjector::new();
    let rig = Rig::with(Opts {
        injector: Some(inj.clone()),
        ..Opts::default()
    });
    (rig, inj)
}

#[test]
fn read_errors_fail_only_their_request() {
    let (mut rig, inj) = faulty();
    inj.fail_reads(1, libc::EIO);
    let (st, data, used) = rig.read(0, 1024);
    assert_eq!(st, S_IOERR);
    // Nothing reached the buffer (the helper does not clear it: still zeros).
    assert_eq!(data, vec![0; 1024]);
    assert_eq!(used, 0);
    rig.assert_alive();
    let c = rig.handle.counters();
    assert_eq!((c.read_errors, c.io_errors.eio, c.reads), (1, 1, 1));
    let recs = rig.handle.drain_trace();
    assert_eq!(
        (recs[0].kind, recs[0].status, recs[1].status),
        (BlkKind::Read, S_IOERR, S_OK)
    );
}

#[test]
fn short_reads_report_only_what_reached_the_guest() {
    let (mut rig, inj) = faulty();
    inj.short_reads(1);
    rig.fill(BUF, &[0x11; 4096]);
    let (st, data, used) = rig.read(0, 4096);
    assert_eq!(st, S_IOERR);
    assert_eq!(
        used, 0,
        "the backend read failed before anything was copied"
    );
    assert_eq!(data, vec![0x11; 4096]);
    assert_eq!(rig.handle.counters().io_errors.short, 1);
    rig.assert_alive();
}

#[test]
fn write_errors_leave_the_disk_and_later_writes_alone() {
    let (mut rig, inj) = faulty();
    inj.fail_writes(1, libc::ENOSPC);
    assert_eq!(rig.write(4, &[0x77; 2048]), S_IOERR);
    assert_eq!(rig.disk(), rig.image);
    assert_eq!(rig.write(20, &[0x66; 512]), S_OK);
    let mut want = rig.image.clone();
    want[20 * 512..21 * 512].fill(0x66);
    assert_eq!(rig.disk(), want);
    // A short write stores a prefix and still fails the request.
    inj.short_writes(1);
    assert_eq!(rig.write(40, &[0x55; 2048]), S_IOERR);
    want[40 * 512..40 * 512 + 1024].fill(0x55);
    assert_eq!(rig.disk(), want);
    let c = rig.handle.counters();
    assert_eq!((c.write_errors, c.writes), (2, 1));
    assert_eq!((c.io_errors.enospc, c.io_errors.short), (1, 1));
    assert_eq!(c.bytes_written, 512);
    rig.assert_alive();
}

#[test]
fn flush_errors_and_slow_operations() {
    let (mut rig, inj) = faulty();
    inj.fail_flushes(1, libc::EIO);
    assert_eq!(rig.flush(), S_IOERR);
    assert_eq!(rig.flush(), S_OK);
    inj.slow(1, Duration::from_millis(30));
    assert_eq!(rig.write(1, &[3; 512]), S_OK);
    let recs = rig.handle.drain_trace();
    let slow = recs.last().unwrap();
    assert_eq!(slow.kind, BlkKind::Write);
    // Sleeping never returns early, so the service time includes the whole delay.
    assert!(slow.service_ns >= 30_000_000, "{slow:?}");
    let c = rig.handle.counters();
    assert_eq!((c.flush_errors, c.flushes, c.io_errors.eio), (1, 1, 1));
    assert_eq!(inj.injected(), 2);
}

#[test]
fn failing_every_operation_still_answers_every_request() {
    let (mut rig, inj) = faulty();
    inj.fail_reads(u64::MAX, libc::EIO);
    inj.fail_writes(u64::MAX, libc::EIO);
    inj.fail_flushes(u64::MAX, libc::EIO);
    rig.header(
        HDR,
        virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_T_IN,
        0,
    );
    for i in 0..80u64 {
        let status = STATUS + i;
        rig.set_byte(status, 0xee);
        rig.push(&[(HDR, 16, R), (BUF, 512, W), (status, 1, W)]);
    }
    rig.kick();
    rig.wait();
    assert_eq!(rig.used_idx(), 80);
    assert!((0..80).all(|i| rig.byte(STATUS + i) == S_IOERR));
    assert_eq!(rig.handle.counters().read_errors, 80);
    inj.clear();
    rig.assert_alive();
}

/// Requests bigger than the device's bounce buffer go to the backend in pieces;
/// these tests fail the second piece.
const BIG: usize = 1 << 20;
const PIECE: usize = 512 * 1024;

#[test]
fn a_read_failing_after_its_first_piece_never_reports_success() {
    for arm in [
        (|inj: &BlkFaultInjector| inj.fail_reads(1, libc::EIO)) as fn(&BlkFaultInjector),
        |inj| inj.short_reads(1),
    ] {
        let (mut rig, inj) = faulty();
        rig.fill(BUF, &vec![0x11; BIG]);
        inj.pass(1);
        arm(&inj);
        let (st, data, used) = rig.read(0, BIG as u32);
        assert_eq!(st, S_IOERR, "the guest gets the error");
        // The used length promises only the bytes that reached guest RAM, never
        // the whole buffer (BIG + 1 with the status byte).
        assert_eq!(used as usize, PIECE);
        let disk = rig.disk();
        assert_eq!(data[..PIECE], disk[..PIECE]);
        assert!(
            data[PIECE..].iter().all(|&b| b == 0x11),
            "nothing past the failure"
        );
        let c = rig.handle.counters();
        assert_eq!((c.read_errors, c.reads, c.bytes_read), (1, 0, 0));
        assert_eq!(inj.injected(), 1);
        rig.assert_alive();
    }
}

#[test]
fn a_failed_write_is_an_error_to_the_guest_and_leaves_the_rest_of_the_image() {
    let (mut rig, inj) = faulty();
    // EIO on a single-piece write: nothing on the image changes.
    inj.fail_writes(1, libc::EIO);
    assert_eq!(rig.write(8, &[0x42; 4096]), S_IOERR);
    assert_eq!(rig.disk(), rig.image);
    // ENOSPC on the second piece of a big write: the guest gets the error. The
    // first piece reached the image (as on a real disk, a failed write leaves its
    // range undefined); nothing beyond the failure did.
    inj.pass(1);
    inj.fail_writes(1, libc::ENOSPC);
    assert_eq!(rig.write(0, &vec![0x77; BIG]), S_IOERR);
    let disk = rig.disk();
    assert!(disk[..PIECE].iter().all(|&b| b == 0x77));
    assert_eq!(disk[PIECE..], rig.image[PIECE..]);
    let c = rig.handle.counters();
    assert_eq!((c.write_errors, c.writes, c.bytes_written), (2, 0, 0));
    assert_eq!((c.io_errors.eio, c.io_errors.enospc), (1, 1));
    let recs = rig.handle.drain_trace();
    assert!(recs
        .iter()
        .all(|r| r.kind == BlkKind::Write && r.status == S_IOERR));
    rig.assert_alive();
}

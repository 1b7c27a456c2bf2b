//! The trace ring under a guest that submits requests as fast as it can: it holds
//! its capacity, the newest records, and counts every one it dropped; the counters
//! miss nothing.

use virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_T_IN;

use super::*;

#[test]
fn the_trace_ring_keeps_its_capacity_and_counts_what_it_drops() {
    const CAP: usize = 256;
    const BATCH: u64 = 64;
    const REQUESTS: u64 = 40 * BATCH;
    let mut rig = Rig::with(Opts {
        trace_capacity: CAP,
        ..Opts::default()
    });
    rig.header(HDR, VIRTIO_BLK_T_IN, 5);
    for _ in 0..REQUESTS / BATCH {
        for _ in 0..BATCH {
            rig.push(&[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
        }
        rig.kick();
        rig.wait();
    }
    let trace = rig.handle.trace().clone();
    assert_eq!(trace.capacity(), CAP);
    assert_eq!(trace.len(), CAP);
    assert_eq!(trace.pushed(), REQUESTS);
    assert_eq!(trace.dropped(), REQUESTS - CAP as u64);
    let recs = rig.handle.drain_trace();
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    let want: Vec<u64> = (REQUESTS - CAP as u64..REQUESTS).collect();
    assert_eq!(seqs, want, "the newest records, in order");
    let c = rig.handle.counters();
    assert_eq!((c.requests, c.reads), (REQUESTS, REQUESTS));
    assert_eq!(c.bytes_read, REQUESTS * 512);
}

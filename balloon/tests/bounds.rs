//! The event ring under a guest that inflates as fast as it can: it holds
//! [`EVENT_CAPACITY`] events, the newest, and counts every one it dropped; the
//! counters miss nothing.

mod common;

use balloon::device::EVENT_CAPACITY;
use balloon::queues::Role;
use balloon::BalloonEventKind;
use common::*;
use vmm::virtio::{VirtioDevice, VIRTIO_F_VERSION_1};

#[test]
fn the_event_ring_keeps_its_capacity_and_counts_what_it_drops() {
    let mut rig = Rig::new(RigConfig {
        features: VIRTIO_F_VERSION_1,
        reporting: false,
        ..RigConfig::default()
    });
    // One page per buffer: every buffer is one inflate event.
    let len = rig.write_pfns(BUFFERS, &[DATA_PFN]);
    let total = (EVENT_CAPACITY + 3 * usize::from(QSIZE)) as u64;
    let mut sent = 0u64;
    while sent < total {
        if sent > 0 {
            // The test driver's rings do not wrap: start over with fresh ones (a
            // driver reset); the device keeps its counters and events.
            rig.dev.reset();
            rig.activate(VIRTIO_F_VERSION_1).unwrap();
        }
        let n = (total - sent).min(u64::from(QSIZE));
        for _ in 0..n {
            rig.q(Role::Inflate).add(&[(BUFFERS, len, false)]);
        }
        rig.q(Role::Inflate).kick();
        sent += n;
        rig.wait("inflate batches", |h| h.metrics().inflate_batches >= sent);
    }
    let m = rig.h.metrics();
    assert_eq!((m.inflate_batches, m.inflate_pages), (total, total));
    assert_eq!(m.events_dropped, total - EVENT_CAPACITY as u64);
    let events = rig.h.drain_events();
    assert_eq!(events.len(), EVENT_CAPACITY);
    assert!(events
        .iter()
        .all(|e| e.kind == BalloonEventKind::Inflate && e.pages == 1));
    assert!(events.windows(2).all(|w| w[0].t_ns <= w[1].t_ns));
}

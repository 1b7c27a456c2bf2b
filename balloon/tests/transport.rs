//! The balloon behind vmm's virtio-mmio transport, driven through the registers
//! in the order Linux's virtio_mmio + virtio_balloon drivers use them: features,
//! queues (whose indices depend on the features), `DRIVER_OK`, notifications,
//! config space and the configuration interrupt.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use balloon::features::{DEFLATE_ON_OOM, REPORTING, STATS_VQ};
use balloon::stats::encode;
use balloon::{Balloon, BalloonConfig, BalloonHandle, MadviseReleaser, DEVICE_TYPE};
use common::*;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vmm::bus::BusDevice;
use vmm::memory::{create_guest_memory, RegionSpec};
use vmm::virtio::mmio::{reg, MmioTransport};
use vmm::virtio::{status, INT_CONFIG, VIRTIO_F_VERSION_1};
use vmm::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

struct Guest {
    t: MmioTransport,
    h: BalloonHandle,
    line: Arc<Line>,
    mem: &'static GuestMemoryMmap,
}

impl Guest {
    fn new(reporting: bool) -> Self {
        let mem = leaked_memory(create_guest_memory(&[RegionSpec::new(0, RAM)]).unwrap());
        let mut cfg = BalloonConfig::new(Arc::new(MadviseReleaser::new(mem.clone())));
        cfg.stats_interval = None;
        cfg.free_page_reporting = reporting;
        let (dev, h) = Balloon::new(cfg);
        let line = Arc::new(Line::default());
        let n = if reporting { 4 } else { 3 };
        let notify = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let t = MmioTransport::new("balloon", Box::new(dev), mem.clone(), line.clone(), notify)
            .unwrap();
        Guest { t, h, line, mem }
    }

    fn r(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn w(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes()).unwrap();
    }

    fn device_features(&mut self) -> u64 {
        self.w(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.r(reg::DEVICE_FEATURES);
        self.w(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.r(reg::DEVICE_FEATURES);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Probe as the driver does: negotiate `features`, set up `queues` queues.
    fn probe(
        &mut self,
        features: u64,
        queues: u32,
    ) -> Vec<MockSplitQueue<'static, GuestMemoryMmap>> {
        self.w(reg::STATUS, status::ACKNOWLEDGE);
        self.w(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, features as u32);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, (features >> 32) as u32);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.w(reg::STATUS, s);
        assert_eq!(self.r(reg::STATUS), s, "features refused");
        let mut mocks = Vec::new();
        for i in 0..queues {
            self.w(reg::QUEUE_SEL, i);
            assert_eq!(self.r(reg::QUEUE_NUM_MAX), 256);
            let m = MockSplitQueue::create(
                self.mem,
                GuestAddress(0x1_0000 + u64::from(i) * 0x4000),
                QSIZE,
            );
            self.w(reg::QUEUE_NUM, u32::from(QSIZE));
            for (lo, addr) in [
                (reg::QUEUE_DESC_LOW, m.desc_table_addr().0),
                (reg::QUEUE_AVAIL_LOW, m.avail_addr().0),
                (reg::QUEUE_USED_LOW, m.used_addr().0),
            ] {
                self.w(lo, addr as u32);
                self.w(lo + 4, (addr >> 32) as u32);
            }
            self.w(reg::QUEUE_READY, 1);
            mocks.push(m);
        }
        self.w(reg::STATUS, s | status::DRIVER_OK);
        assert!(self.t.is_activated(), "{:?}", self.t.stats());
        mocks
    }

    fn num_pages(&mut self) -> u32 {
        self.r(reg::CONFIG)
    }
}

#[test]
fn linux_like_probe_inflate_and_config_change() {
    let mut g = Guest::new(true);
    assert_eq!(g.r(reg::DEVICE_ID), DEVICE_TYPE);
    let offered = g.device_features();
    assert_eq!(
        offered,
        VIRTIO_F_VERSION_1 | STATS_VQ | DEFLATE_ON_OOM | REPORTING
    );
    g.h.set_target(8 << 20);
    let mocks = g.probe(offered, 4);
    assert!(g.h.is_active());
    // towards_target() at probe.
    assert_eq!(g.num_pages(), 2048);

    // The driver inflates 256 pages and tells the device through QueueNotify.
    let pfns: Vec<u32> = (DATA_PFN..DATA_PFN + 256).collect();
    for &p in &pfns {
        g.mem
            .write_obj(0xffu8, GuestAddress(u64::from(p) << 12))
            .unwrap();
    }
    let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    g.mem.write_slice(&bytes, GuestAddress(BUFFERS)).unwrap();
    mocks[0]
        .add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(BUFFERS, 1024, 0, 0))],
            0,
        )
        .unwrap();
    g.w(reg::QUEUE_NOTIFY, 0);
    assert!(g.h.wait_for(WAIT, |h| h.metrics().inflate_pages == 256));
    assert_eq!(mocks[0].used().idx().load(), 1);
    assert_eq!(
        g.mem
            .read_obj::<u8>(GuestAddress(u64::from(DATA_PFN) << 12))
            .unwrap(),
        0
    );
    // update_balloon_size(): actual through config space.
    g.t.write(reg::CONFIG + 4, &256u32.to_le_bytes()).unwrap();
    assert_eq!(g.h.actual_bytes(), 1 << 20);

    // Stats (queue 2) and reporting (queue 3) are where the driver expects them.
    let buf = encode(&[(6, 123)]);
    g.mem
        .write_slice(&buf, GuestAddress(BUFFERS + 0x1000))
        .unwrap();
    mocks[2]
        .add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                BUFFERS + 0x1000,
                buf.len() as u32,
                0,
                0,
            ))],
            0,
        )
        .unwrap();
    g.w(reg::QUEUE_NOTIFY, 2);
    assert!(g.h.wait_for(WAIT, |h| h.stats().is_some()));
    assert_eq!(g.h.stats().unwrap().available_memory, Some(123));
    mocks[3]
        .add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(2 << 20, 1 << 20, 2, 0))],
            0,
        )
        .unwrap();
    g.w(reg::QUEUE_NOTIFY, 3);
    assert!(g.h.wait_for(WAIT, |h| h.metrics().reported_pages == 256));

    // A new target: configuration interrupt, the driver reads it and acks.
    g.w(reg::INTERRUPT_ACK, u32::MAX);
    let edges = g.line.0.load(Ordering::SeqCst);
    g.h.set_target(4 << 20);
    assert_eq!(g.line.0.load(Ordering::SeqCst), edges + 1);
    assert_eq!(g.r(reg::INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
    assert_eq!(g.num_pages(), 1024);
    g.w(reg::INTERRUPT_ACK, INT_CONFIG);
    assert_eq!(g.r(reg::INTERRUPT_STATUS) & INT_CONFIG, 0);

    // Driver removal: status 0 resets the device and stops its worker.
    g.w(reg::STATUS, 0);
    assert!(!g.h.is_active());
    assert_eq!(g.h.actual_bytes(), 0);
    assert_eq!(g.t.stats().invalid, 0, "{:?}", g.t.stats());
}

#[test]
fn without_stats_the_reporting_queue_is_queue_two() {
    let mut g = Guest::new(true);
    let mocks = g.probe(VIRTIO_F_VERSION_1 | REPORTING, 3);
    mocks[2]
        .add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                2 << 20,
                64 << 10,
                2,
                0,
            ))],
            0,
        )
        .unwrap();
    g.w(reg::QUEUE_NOTIFY, 2);
    assert!(g.h.wait_for(WAIT, |h| h.metrics().reported_pages == 16));
    assert_eq!(mocks[2].used().idx().load(), 1);
    assert_eq!(g.h.metrics().stats_updates, 0);
}

#[test]
fn features_the_device_does_not_offer_are_refused() {
    let mut g = Guest::new(false);
    let offered = g.device_features();
    assert_eq!(offered & REPORTING, 0);
    g.w(reg::STATUS, status::ACKNOWLEDGE);
    g.w(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    g.w(reg::DRIVER_FEATURES_SEL, 0);
    g.w(reg::DRIVER_FEATURES, (offered | REPORTING) as u32);
    g.w(reg::DRIVER_FEATURES_SEL, 1);
    g.w(reg::DRIVER_FEATURES, (offered >> 32) as u32);
    g.w(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(g.r(reg::STATUS) & status::FEATURES_OK, 0);
    assert_eq!(g.t.stats().refused_features, 1);
}

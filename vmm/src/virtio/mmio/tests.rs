//! The transport's register state machine, driven like a guest driver would, with a
//! test-double device and interrupt line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::memory::{create_guest_memory, RegionSpec};
use crate::virtio::{ActivateError, INT_CONFIG, INT_USED_RING};

const MEM: u64 = 1 << 20;
const FEATURE_A: u64 = 1;

#[derive(Debug, Default)]
struct Record {
    activations: Vec<(u64, Vec<u16>)>,
    resets: u32,
    config: [u8; 8],
    interrupt: Option<VirtioInterrupt>,
    notify: Vec<EventFd>,
    fail_next: bool,
}

struct Double(Arc<Mutex<Record>>);

impl VirtioDevice for Double {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | FEATURE_A
    }
    fn config_len(&self) -> usize {
        8
    }
    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let r = self.0.lock().unwrap();
        data.copy_from_slice(&r.config[offset..offset + data.len()]);
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        self.0.lock().unwrap().config[offset..offset + data.len()].copy_from_slice(data);
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let mut r = self.0.lock().unwrap();
        if std::mem::take(&mut r.fail_next) {
            return Err(ActivateError::BadQueues("test says no".into()));
        }
        r.activations
            .push((a.features, a.queues.iter().map(|q| q.index).collect()));
        r.notify = a.queues.into_iter().map(|q| q.notify).collect();
        r.interrupt = Some(a.interrupt);
        Ok(())
    }
    fn reset(&mut self) {
        let mut r = self.0.lock().unwrap();
        r.resets += 1;
        r.notify.clear();
        r.interrupt = None;
    }
}

#[derive(Debug, Default)]
struct Line(AtomicU64);

impl IrqLine for Line {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Rig {
    t: MmioTransport,
    rec: Arc<Mutex<Record>>,
    line: Arc<Line>,
}

fn rig() -> Rig {
    let rec = Arc::new(Mutex::new(Record::default()));
    let line = Arc::new(Line::default());
    let mem = create_guest_memory(&[RegionSpec::new(0, MEM)]).unwrap();
    let notify = (0..2)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let t = MmioTransport::new(
        "test",
        Box::new(Double(rec.clone())),
        mem,
        line.clone(),
        notify,
    )
    .unwrap();
    Rig { t, rec, line }
}

impl Rig {
    fn r(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn w(&mut self, off: u64, v: u32) {
        assert_eq!(
            self.t.write(off, &v.to_le_bytes()).unwrap(),
            BusAction::Continue
        );
    }
    fn invalid(&self) -> u64 {
        self.t.stats().invalid
    }
    /// ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK; true if it stuck.
    fn negotiate(&mut self, features: u64) -> bool {
        self.w(reg::STATUS, status::ACKNOWLEDGE);
        self.w(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, features as u32);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.w(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.r(reg::STATUS) & status::FEATURES_OK != 0
    }
    fn setup_queue(&mut self, q: u32, size: u32, base: u64) {
        self.w(reg::QUEUE_SEL, q);
        self.w(reg::QUEUE_NUM, size);
        for (lo, addr) in [
            (reg::QUEUE_DESC_LOW, base),
            (reg::QUEUE_AVAIL_LOW, base + 0x1000),
            (reg::QUEUE_USED_LOW, base + 0x2000),
        ] {
            self.w(lo, addr as u32);
            self.w(lo + 4, (addr >> 32) as u32);
        }
        self.w(reg::QUEUE_READY, 1);
    }
    fn driver_ok(&mut self) {
        self.w(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
    }
}

#[test]
fn identity_and_feature_words() {
    let mut r = rig();
    assert_eq!(r.r(reg::MAGIC), MAGIC);
    assert_eq!(r.r(reg::VERSION), 2);
    assert_eq!(r.r(reg::DEVICE_ID), 42);
    assert_eq!(r.r(reg::VENDOR_ID), VENDOR_ID);
    r.w(reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(r.r(reg::DEVICE_FEATURES), FEATURE_A as u32);
    r.w(reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(r.r(reg::DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
    r.w(reg::DEVICE_FEATURES_SEL, 7);
    assert_eq!(r.r(reg::DEVICE_FEATURES), 0);
    r.w(reg::QUEUE_SEL, 1);
    assert_eq!(r.r(reg::QUEUE_NUM_MAX), 8);
    r.w(reg::QUEUE_SEL, 2);
    assert_eq!(r.r(reg::QUEUE_NUM_MAX), 0, "no such queue");
    assert_eq!(r.r(reg::SHM_LEN_LOW), u32::MAX);
    assert_eq!(r.invalid(), 0);
}

#[test]
fn driver_init_activates_the_device_with_its_ready_queues() {
    let mut r = rig();
    assert!(r.negotiate(VIRTIO_F_VERSION_1 | FEATURE_A));
    r.setup_queue(0, 8, 0x10000);
    // Queue 1 stays unused.
    r.w(reg::QUEUE_SEL, 0);
    assert_eq!(r.r(reg::QUEUE_READY), 1);
    assert!(!r.t.is_activated());
    r.driver_ok();
    assert!(r.t.is_activated());
    assert_eq!(r.r(reg::STATUS) & status::DRIVER_OK, status::DRIVER_OK);
    let rec = r.rec.lock().unwrap();
    assert_eq!(
        rec.activations,
        vec![(VIRTIO_F_VERSION_1 | FEATURE_A, vec![0])]
    );
    drop(rec);
    assert_eq!(r.t.stats().activations, 1);
    assert_eq!(r.invalid(), 0);
    // Writing DRIVER_OK again does not activate twice.
    r.driver_ok();
    assert_eq!(r.t.stats().activations, 1);
}

#[test]
fn features_outside_the_offer_or_without_version_1_are_refused() {
    let mut r = rig();
    assert!(!r.negotiate(VIRTIO_F_VERSION_1 | 1 << 7));
    assert_eq!(r.t.stats().refused_features, 1);
    r.w(reg::STATUS, 0);
    assert!(!r.negotiate(FEATURE_A));
    assert_eq!(r.t.stats().refused_features, 2);
    // Without FEATURES_OK, DRIVER_OK is out of order and nothing activates.
    r.driver_ok();
    assert!(!r.t.is_activated());
    assert!(r.rec.lock().unwrap().activations.is_empty());
    r.w(reg::STATUS, 0);
    assert!(r.negotiate(VIRTIO_F_VERSION_1));
}

#[test]
fn invalid_accesses_are_counted_and_change_nothing() {
    fn bad(r: &mut Rig, f: &dyn Fn(&mut Rig)) {
        let before = r.invalid();
        f(r);
        assert_eq!(
            r.invalid(),
            before + 1,
            "access not counted as invalid once"
        );
    }
    let mut r = rig();
    bad(&mut r, &|r| {
        let mut b = [0u8; 2];
        r.t.read(reg::STATUS, &mut b).unwrap();
        assert_eq!(b, [0, 0]);
    });
    bad(&mut r, &|r| {
        let mut b = [0u8; 4];
        r.t.read(reg::STATUS + 1, &mut b).unwrap();
    });
    bad(&mut r, &|r| assert_eq!(r.r(0x0f0), 0));
    bad(&mut r, &|r| r.w(reg::MAGIC, 1));
    bad(&mut r, &|r| {
        r.t.write(reg::STATUS, &[1]).map(|_| ()).unwrap()
    });
    // Queue setup before FEATURES_OK.
    bad(&mut r, &|r| r.w(reg::QUEUE_NUM, 8));
    // Driver features before DRIVER.
    bad(&mut r, &|r| r.w(reg::DRIVER_FEATURES, 1));
    // DRIVER before ACKNOWLEDGE; unknown status bits.
    bad(&mut r, &|r| r.w(reg::STATUS, status::DRIVER));
    bad(&mut r, &|r| r.w(reg::STATUS, 0x10));
    assert_eq!(r.r(reg::STATUS), 0);
    assert!(r.negotiate(VIRTIO_F_VERSION_1));
    // Bad sizes, a missing queue, clearing status bits without a reset.
    bad(&mut r, &|r| r.w(reg::QUEUE_NUM, 3));
    bad(&mut r, &|r| r.w(reg::QUEUE_NUM, 32));
    bad(&mut r, &|r| {
        r.w(reg::QUEUE_SEL, 9);
        r.w(reg::QUEUE_READY, 1);
    });
    bad(&mut r, &|r| r.w(reg::STATUS, status::ACKNOWLEDGE));
    // Driver features after FEATURES_OK.
    bad(&mut r, &|r| r.w(reg::DRIVER_FEATURES, 0x3));
    // Config space: beyond its end, odd width.
    bad(&mut r, &|r| {
        let mut b = [0u8; 4];
        r.t.read(reg::CONFIG + 6, &mut b).unwrap();
    });
    bad(&mut r, &|r| {
        r.t.write(reg::CONFIG, &[1, 2, 3]).map(|_| ()).unwrap()
    });
    bad(&mut r, &|r| r.w(reg::QUEUE_NOTIFY, 0));
    assert_eq!(
        r.r(reg::STATUS),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK
    );
    r.w(reg::QUEUE_SEL, 0);
    assert_eq!(r.r(reg::QUEUE_READY), 0);
    assert!(!r.t.is_activated());
}

#[test]
fn rings_outside_ram_need_a_reset_and_reset_recovers() {
    let mut r = rig();
    assert!(r.negotiate(VIRTIO_F_VERSION_1));
    r.setup_queue(0, 16, MEM - 0x1000);
    r.driver_ok();
    assert!(!r.t.is_activated());
    let st = r.r(reg::STATUS);
    assert_ne!(st & status::DEVICE_NEEDS_RESET, 0, "{st:#x}");
    assert_eq!(r.t.stats().failed_activations, 1);
    assert_eq!(
        r.line.0.load(Ordering::SeqCst),
        1,
        "config interrupt raised"
    );
    assert_eq!(r.r(reg::INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(r.r(reg::CONFIG_GENERATION), 1);
    // A device that refuses activation is handled the same way.
    r.w(reg::STATUS, 0);
    assert_eq!(r.rec.lock().unwrap().resets, 1);
    assert_eq!(r.r(reg::STATUS), 0);
    assert_eq!(r.r(reg::INTERRUPT_STATUS), 0);
    r.w(reg::QUEUE_SEL, 0);
    assert_eq!(r.r(reg::QUEUE_READY), 0, "queues reset too");
    r.rec.lock().unwrap().fail_next = true;
    assert!(r.negotiate(VIRTIO_F_VERSION_1));
    r.setup_queue(0, 16, 0x10000);
    r.driver_ok();
    assert!(!r.t.is_activated());
    assert_eq!(r.t.stats().failed_activations, 2);
    // And then a clean attempt works.
    r.w(reg::STATUS, 0);
    assert!(r.negotiate(VIRTIO_F_VERSION_1));
    r.setup_queue(0, 16, 0x10000);
    r.setup_queue(1, 8, 0x20000);
    r.driver_ok();
    assert!(r.t.is_activated());
    assert_eq!(r.rec.lock().unwrap().activations[0].1, vec![0, 1]);
    assert_eq!(r.t.stats().resets, 2);
}

#[test]
fn notifications_interrupts_and_config_space() {
    let mut r = rig();
    assert!(r.negotiate(VIRTIO_F_VERSION_1));
    r.setup_queue(0, 16, 0x10000);
    r.driver_ok();
    // A notification that reaches userspace (no ioeventfd) lands on the queue's eventfd.
    r.w(reg::QUEUE_NOTIFY, 0);
    assert_eq!(r.rec.lock().unwrap().notify[0].read().unwrap(), 1);
    assert_eq!(r.t.stats().notifies, 1);
    let before = r.invalid();
    r.w(reg::QUEUE_NOTIFY, 5);
    assert_eq!(r.invalid(), before + 1);
    // The device raises a used-ring interrupt; the guest reads and acks it.
    let irq = r.rec.lock().unwrap().interrupt.clone().unwrap();
    irq.signal_used_queue().unwrap();
    assert_eq!(r.r(reg::INTERRUPT_STATUS), INT_USED_RING);
    r.w(reg::INTERRUPT_ACK, INT_USED_RING);
    assert_eq!(r.r(reg::INTERRUPT_STATUS), 0);
    // Config space, every legal width.
    r.t.write(reg::CONFIG, &0x1122_3344_5566_7788u64.to_le_bytes())
        .unwrap();
    let mut b2 = [0u8; 2];
    r.t.read(reg::CONFIG + 2, &mut b2).unwrap();
    assert_eq!(u16::from_le_bytes(b2), 0x5566);
    let mut b1 = [0u8; 1];
    r.t.write(reg::CONFIG + 7, &[0xaa]).unwrap();
    r.t.read(reg::CONFIG + 7, &mut b1).unwrap();
    assert_eq!(b1, [0xaa]);
    let gen = r.r(reg::CONFIG_GENERATION);
    r.t.config_changed().unwrap();
    assert_eq!(r.r(reg::CONFIG_GENERATION), gen + 1);
    // Reset tells the device and drops stale notifications.
    r.w(reg::QUEUE_NOTIFY, 0);
    r.w(reg::STATUS, 0);
    assert!(!r.t.is_activated());
    assert_eq!(r.rec.lock().unwrap().resets, 1);
}

#[test]
fn random_guest_never_breaks_the_transport() {
    // A deterministic pseudo-random driver: any register, any width, any value.
    let mut r = rig();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..50_000 {
        let v = next();
        let off = (v & 0x1ff) & !(if v & 0x200 == 0 { 3 } else { 0 });
        let len = [1usize, 2, 4, 8, 4, 4][(v >> 10) as usize % 6];
        let val = next();
        // Bias values towards meaningful ones.
        let val = if val & 1 == 0 { val >> 1 & 0x1f } else { val };
        if v & 0x800 == 0 {
            let mut b = vec![0u8; len];
            r.t.read(off, &mut b).unwrap();
        } else {
            r.t.write(off, &val.to_le_bytes()[..len]).unwrap();
        }
        let st = r.t.status();
        assert_eq!(st & !0xcf, 0, "status {st:#x} has unknown bits");
        if r.t.is_activated() {
            assert_ne!(st & status::DRIVER_OK, 0);
        }
    }
    assert!(r.invalid() > 0);
}

//! `mmio`: a sequence of register reads and writes (any offset, width and value,
//! with a bias towards the registers a driver uses and the values it writes) on the
//! virtio-mmio transport of a live virtio-blk device, interleaved with writes to
//! guest memory (where the queue the driver sets up lives). Notifications reach the
//! device's real worker thread.
//!
//! Checks after each access: the identification registers never change; the status
//! the transport keeps only holds bits in the order the state machine allows; the
//! device is live only with `DRIVER_OK`; the transport's counters never go back.
//! At the end a reset returns the device (it waits for the worker) and every
//! request the worker took was completed.

use std::sync::Arc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::harness::{guest_memory, CountingLine, Encoder, Input, SharedDisk};
use super::queue::{DISK, HIGH, HIGH_LEN, LOW};
use crate::bus::BusDevice;
use crate::virtio::blk::{Blk, BlkConfig};
use crate::virtio::mmio::{reg, MmioTransport, MAGIC, VENDOR_ID, VERSION};
use crate::virtio::{status, VIRTIO_F_VERSION_1};

/// Registers a driver writes, for the biased writes.
const REGS: [u64; 17] = [
    reg::DEVICE_FEATURES_SEL,
    reg::DRIVER_FEATURES,
    reg::DRIVER_FEATURES_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::INTERRUPT_ACK,
    reg::STATUS,
    reg::QUEUE_DESC_LOW,
    reg::QUEUE_DESC_HIGH,
    reg::QUEUE_AVAIL_LOW,
    reg::QUEUE_AVAIL_HIGH,
    reg::QUEUE_USED_LOW,
    reg::QUEUE_USED_HIGH,
    reg::SHM_SEL,
    reg::CONFIG_GENERATION,
];

/// Values a driver writes, for the biased writes.
const VALUES: [u32; 16] = [
    0,
    1,
    status::ACKNOWLEDGE,
    status::ACKNOWLEDGE | status::DRIVER,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    status::FAILED,
    (VIRTIO_F_VERSION_1 >> 32) as u32,
    0x3000_0a44,
    16,
    256,
    0x1000,
    0x2000,
    0x3000,
    0x1_0000,
    u32::MAX,
];

/// The `mmio` fuzz target.
pub fn mmio(data: &[u8]) {
    let mut inp = Input::new(data);
    let mem = guest_memory(LOW, HIGH, HIGH_LEN);
    let disk = SharedDisk::patterned(DISK);
    let blk = Blk::with_backend(BlkConfig::new("fuzz"), Box::new(disk)).expect("blk device");
    let handle = blk.handle();
    let notify = vec![EventFd::new(EFD_NONBLOCK).expect("eventfd")];
    let line = Arc::new(CountingLine::default());
    let mut t = MmioTransport::new("fuzz", Box::new(blk), mem.clone(), line, notify)
        .expect("a valid transport");
    let mut prev = t.stats();
    let mut ops = 0;
    while !inp.is_empty() && ops < 256 {
        ops += 1;
        let op = inp.u8();
        match op % 6 {
            0 => {
                let off = u64::from(inp.u8()) * 4 % 0x100;
                let mut b = [0u8; 4];
                t.read(off, &mut b).expect("reads never fail");
                let v = u32::from_le_bytes(b);
                match off {
                    reg::MAGIC => assert_eq!(v, MAGIC),
                    reg::VERSION => assert_eq!(v, VERSION),
                    reg::DEVICE_ID => assert_eq!(v, 2),
                    reg::VENDOR_ID => assert_eq!(v, VENDOR_ID),
                    reg::STATUS => assert_eq!(v, t.status()),
                    _ => {}
                }
            }
            1 => {
                let off = u64::from(inp.u8()) * 4 % 0x100;
                let v = inp.u32();
                t.write(off, &v.to_le_bytes()).expect("writes never fail");
            }
            2 => {
                let off = REGS[usize::from(inp.u8()) % REGS.len()];
                let v = VALUES[usize::from(inp.u8()) % VALUES.len()];
                t.write(off, &v.to_le_bytes()).expect("writes never fail");
            }
            3 => {
                let len = [1usize, 2, 4, 8, 3][usize::from(inp.u8()) % 5];
                let off = reg::CONFIG + u64::from(inp.u8());
                let mut b = [0u8; 8];
                if op & 0x80 != 0 {
                    b[..len].copy_from_slice(&inp.u64().to_le_bytes()[..len]);
                    t.write(off, &b[..len]).expect("writes never fail");
                } else {
                    t.read(off, &mut b[..len]).expect("reads never fail");
                }
            }
            4 => {
                let off = u64::from(inp.u16()) % 0x200;
                let len = usize::from(inp.u8()) % 9;
                let mut b = [0u8; 8];
                if op & 0x80 != 0 {
                    t.write(off, &b[..len]).expect("writes never fail");
                } else {
                    t.read(off, &mut b[..len]).expect("reads never fail");
                }
            }
            _ => {
                let at = u64::from(inp.u16());
                let len = usize::from(inp.u8());
                let bytes = inp.bytes(len);
                // Clipped at the end of RAM; the worker may be reading it meanwhile,
                // as with a real guest.
                let _ = mem.write_slice(bytes, GuestAddress(at));
            }
        }
        let s = t.status();
        use status::*;
        assert!(s & DRIVER_OK == 0 || s & FEATURES_OK != 0, "status {s:#x}");
        assert!(s & FEATURES_OK == 0 || s & DRIVER != 0, "status {s:#x}");
        assert!(s & DRIVER == 0 || s & ACKNOWLEDGE != 0, "status {s:#x}");
        assert!(
            s & DEVICE_NEEDS_RESET == 0 || s & DRIVER_OK != 0,
            "status {s:#x}"
        );
        if t.is_activated() {
            assert!(
                s & DRIVER_OK != 0 && s & DEVICE_NEEDS_RESET == 0,
                "live in {s:#x}"
            );
        }
        let st = t.stats();
        assert!(
            st.invalid >= prev.invalid
                && st.notifies >= prev.notifies
                && st.activations >= prev.activations
                && st.failed_activations >= prev.failed_activations
                && st.resets >= prev.resets
                && st.refused_features >= prev.refused_features,
            "{prev:?} -> {st:?}"
        );
        assert!(
            st.activations <= st.resets + 1,
            "live twice without a reset: {st:?}"
        );
        prev = st;
    }
    // A reset takes the queue away from the worker and waits for it.
    t.write(reg::STATUS, &0u32.to_le_bytes())
        .expect("writes never fail");
    assert!(!t.is_activated() && t.status() == 0);
    let c = handle.counters();
    assert_eq!(c.requests, handle.completed());
    assert!(handle.wait_completed(c.requests, Duration::ZERO));
}

/// Seeds: Linux's probe sequence up to `DRIVER_OK` with a queue at 0x1000, then a
/// read request and a notification; the same with refused features, a bad queue,
/// config reads and a reset.
pub(super) fn seeds() -> Vec<Vec<u8>> {
    let w = |e: &mut Encoder, off: u64, v: u32| {
        e.u8(1).u8((off / 4) as u8).u32(v);
    };
    let r = |e: &mut Encoder, off: u64| {
        e.u8(0).u8((off / 4) as u8);
    };
    let probe = |e: &mut Encoder, features_hi: u32, qsize: u32, desc: u32| {
        r(e, reg::MAGIC);
        r(e, reg::VERSION);
        r(e, reg::DEVICE_ID);
        w(e, reg::STATUS, 0);
        w(e, reg::STATUS, status::ACKNOWLEDGE);
        w(e, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(e, reg::DEVICE_FEATURES_SEL, 0);
        r(e, reg::DEVICE_FEATURES);
        w(e, reg::DEVICE_FEATURES_SEL, 1);
        r(e, reg::DEVICE_FEATURES);
        w(e, reg::DRIVER_FEATURES_SEL, 0);
        w(e, reg::DRIVER_FEATURES, 0x0000_0244);
        w(e, reg::DRIVER_FEATURES_SEL, 1);
        w(e, reg::DRIVER_FEATURES, features_hi);
        w(e, reg::STATUS, 0xb);
        r(e, reg::STATUS);
        // config: capacity (two 32-bit reads), blk_size
        e.u8(3).u8(2).u8(0);
        e.u8(3).u8(2).u8(4);
        e.u8(3).u8(2).u8(20);
        w(e, reg::QUEUE_SEL, 0);
        r(e, reg::QUEUE_READY);
        r(e, reg::QUEUE_NUM_MAX);
        w(e, reg::QUEUE_NUM, qsize);
        w(e, reg::QUEUE_DESC_LOW, desc);
        w(e, reg::QUEUE_DESC_HIGH, 0);
        w(e, reg::QUEUE_AVAIL_LOW, 0x2000);
        w(e, reg::QUEUE_AVAIL_HIGH, 0);
        w(e, reg::QUEUE_USED_LOW, 0x3000);
        w(e, reg::QUEUE_USED_HIGH, 0);
        w(e, reg::QUEUE_READY, 1);
        w(e, reg::STATUS, 0xf);
    };
    // A read of sector 1: descriptors 0..3 at 0x1000, header at 0x8000.
    let request = |e: &mut Encoder| {
        let mut table = Vec::new();
        for (addr, len, flags, next) in [
            (0x8000u64, 16u32, 1u16, 1u16),
            (0x9000, 512, 3, 2),
            (0x9f00, 1, 2, 0),
        ] {
            table.extend_from_slice(&addr.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&flags.to_le_bytes());
            table.extend_from_slice(&next.to_le_bytes());
        }
        e.u8(5).u16(0x1000).u8(table.len() as u8).bytes(&table);
        let mut hdr = [0u8; 16];
        hdr[8] = 1;
        e.u8(5).u16(0x8000).u8(16).bytes(&hdr);
        // avail: flags 0, idx 1, ring[0] = 0
        e.u8(5).u16(0x2000).u8(6).bytes(&[0, 0, 1, 0, 0, 0]);
        w(e, reg::QUEUE_NOTIFY, 0);
        r(e, reg::INTERRUPT_STATUS);
        w(e, reg::INTERRUPT_ACK, 1);
    };
    let mut out = Vec::new();
    let mut e = Encoder::default();
    probe(&mut e, 1, 16, 0x1000);
    request(&mut e);
    out.push(e.0.clone());
    w(&mut e, reg::STATUS, 0);
    probe(&mut e, 1, 128, 0x1000);
    request(&mut e);
    out.push(e.0);
    // Features without VERSION_1 are refused.
    let mut e = Encoder::default();
    probe(&mut e, 0, 16, 0x1000);
    out.push(e.0);
    // A queue outside RAM: activation fails, the device needs a reset.
    let mut e = Encoder::default();
    probe(&mut e, 1, 256, 0xffff_f000);
    r(&mut e, reg::STATUS);
    out.push(e.0);
    // A bad queue size, odd widths, config writes, registers out of order.
    let mut e = Encoder::default();
    w(&mut e, reg::QUEUE_NUM, 3);
    e.u8(4).u16(0x70).u8(2);
    e.u8(0x82).u16(0x71).u8(4);
    e.u8(0x81).u8(3).u8(0).u64(u64::MAX);
    e.u8(2).u8(8).u8(5);
    e.u8(2).u8(8).u8(6);
    out.push(e.0);
    out
}

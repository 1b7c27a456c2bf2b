//! virtio-blk behind the virtio-mmio transport, driven through its registers the way
//! Linux's `virtio_mmio` and `virtio_blk` probe a disk: identify, negotiate features,
//! read the configuration the driver reads, set up the queue, go live, do I/O with a
//! notification through `QueueNotify`, take the interrupt, reset, and come back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use vmm::devices::irq::IrqLine;
use vmm::virtio::blk::{Blk, BlkConfig, BlkHandle, BlkKind, S_OK};
use vmm::virtio::mmio::{reg, MmioTransport};
use vmm::virtio::{status, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use vmm::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::{create_guest_memory, BusDevice, RegionSpec};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const QSIZE: u16 = 128;
const WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Line(AtomicU64);

impl IrqLine for Line {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    line: Arc<Line>,
    handle: BlkHandle,
    next_desc: u16,
    avail: u16,
}

impl Driver {
    fn rd(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn wr(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes()).unwrap();
    }

    fn add_status(&mut self, bits: u32) {
        let s = self.rd(reg::STATUS);
        self.wr(reg::STATUS, s | bits);
    }

    /// Identify, negotiate `want` (masked by what is offered), set up queue 0, go live.
    fn probe(&mut self, want: u64) -> u64 {
        assert_eq!(self.rd(reg::MAGIC), 0x7472_6976);
        assert_eq!(self.rd(reg::VERSION), 2);
        assert_eq!(self.rd(reg::DEVICE_ID), 2);
        self.wr(reg::STATUS, 0);
        self.add_status(status::ACKNOWLEDGE);
        self.add_status(status::DRIVER);
        self.wr(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.rd(reg::DEVICE_FEATURES);
        self.wr(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.rd(reg::DEVICE_FEATURES);
        let offered = u64::from(lo) | (u64::from(hi) << 32);
        let accept = offered & want;
        self.wr(reg::DRIVER_FEATURES_SEL, 0);
        self.wr(reg::DRIVER_FEATURES, accept as u32);
        self.wr(reg::DRIVER_FEATURES_SEL, 1);
        self.wr(reg::DRIVER_FEATURES, (accept >> 32) as u32);
        self.add_status(status::FEATURES_OK);
        assert_ne!(
            self.rd(reg::STATUS) & status::FEATURES_OK,
            0,
            "features refused"
        );
        self.wr(reg::QUEUE_SEL, 0);
        assert_eq!(self.rd(reg::QUEUE_READY), 0);
        let max = self.rd(reg::QUEUE_NUM_MAX);
        assert!(max >= u32::from(QSIZE), "queue max {max}");
        self.wr(reg::QUEUE_NUM, u32::from(QSIZE));
        for (lo, v) in [
            (reg::QUEUE_DESC_LOW, DESC),
            (reg::QUEUE_AVAIL_LOW, AVAIL),
            (reg::QUEUE_USED_LOW, USED),
        ] {
            self.wr(lo, v as u32);
            self.wr(lo + 4, (v >> 32) as u32);
        }
        self.wr(reg::QUEUE_READY, 1);
        self.add_status(status::DRIVER_OK);
        assert!(self.t.is_activated(), "device not live: {:?}", self.t);
        self.next_desc = 0;
        self.avail = 0;
        accept
    }

    /// Config space as `virtio_cread` does it: 32-bit accesses (64-bit fields in two).
    fn config32(&mut self, off: u64) -> u32 {
        self.rd(reg::CONFIG + off)
    }

    fn submit(&mut self, descs: &[(u64, u32, bool)]) {
        let head = self.next_desc;
        for (i, &(addr, len, w)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % QSIZE;
            let mut flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let d = RawDescriptor::from(Descriptor::new(addr, len, flags, (idx + 1) % QSIZE));
            self.mem
                .write_obj(d, GuestAddress(DESC + 16 * u64::from(idx)))
                .unwrap();
        }
        self.next_desc = (head + descs.len() as u16) % QSIZE;
        let slot = u64::from(self.avail % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail = self.avail.wrapping_add(1);
        self.mem
            .store(self.avail, GuestAddress(AVAIL + 2), Ordering::Release)
            .unwrap();
        let before = self.handle.completed();
        self.wr(reg::QUEUE_NOTIFY, 0);
        assert!(self.handle.wait_completed(before + 1, WAIT));
    }

    fn header(&self, ty: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ty.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(0x10000)).unwrap();
    }

    fn status_byte(&self) -> u8 {
        self.mem.read_obj(GuestAddress(0x10100)).unwrap()
    }
}

fn driver(read_only: bool) -> (Driver, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let image: Vec<u8> = (0..(256 * 1024u32)).map(|i| (i % 251) as u8).collect();
    std::fs::write(file.path(), &image).unwrap();
    let mut cfg = BlkConfig::new(file.path());
    cfg.read_only = read_only;
    cfg.id = "vda-serial".into();
    let blk = Blk::new(cfg).unwrap();
    let handle = blk.handle();
    let mem = create_guest_memory(&[RegionSpec::new(0, 1 << 20)]).unwrap();
    let line = Arc::new(Line::default());
    let t = MmioTransport::new(
        "blk0",
        Box::new(blk),
        mem.clone(),
        line.clone(),
        vec![EventFd::new(EFD_NONBLOCK).unwrap()],
    )
    .unwrap();
    let d = Driver {
        t,
        mem,
        line,
        handle,
        next_desc: 0,
        avail: 0,
    };
    (d, file)
}

/// What Linux 6.1's virtio_blk asks for.
const LINUX_WANTS: u64 = VIRTIO_F_VERSION_1
    | VIRTIO_RING_F_EVENT_IDX
    | (1 << 28) // VIRTIO_RING_F_INDIRECT_DESC
    | (1 << VIRTIO_BLK_F_SEG_MAX)
    | (1 << VIRTIO_BLK_F_BLK_SIZE)
    | (1 << VIRTIO_BLK_F_FLUSH)
    | (1 << VIRTIO_BLK_F_RO)
    | (1 << 13); // DISCARD

#[test]
fn linux_style_probe_io_reset_and_reprobe() {
    let (mut d, file) = driver(false);
    let accepted = d.probe(LINUX_WANTS);
    for bit in [
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
    ] {
        assert_ne!(accepted & (1 << bit), 0, "feature {bit} not offered");
    }
    assert_ne!(accepted & VIRTIO_RING_F_EVENT_IDX, 0);
    assert_eq!(accepted & (1 << VIRTIO_BLK_F_RO), 0);
    // capacity (two halves), seg_max, blk_size.
    let cap = u64::from(d.config32(0)) | (u64::from(d.config32(4)) << 32);
    assert_eq!(cap, 512);
    assert!(d.config32(12) >= 1);
    assert_eq!(d.config32(20), 512);

    // Write two sectors at sector 3, read them back, get the id.
    d.header(VIRTIO_BLK_T_OUT, 3);
    d.mem
        .write_slice(&[0x42; 1024], GuestAddress(0x20000))
        .unwrap();
    d.submit(&[
        (0x10000, 16, false),
        (0x20000, 1024, false),
        (0x10100, 1, true),
    ]);
    assert_eq!(d.status_byte(), S_OK);
    d.header(VIRTIO_BLK_T_IN, 2);
    d.submit(&[
        (0x10000, 16, false),
        (0x30000, 2048, true),
        (0x10100, 1, true),
    ]);
    assert_eq!(d.status_byte(), S_OK);
    let mut back = vec![0u8; 2048];
    d.mem.read_slice(&mut back, GuestAddress(0x30000)).unwrap();
    let disk = std::fs::read(file.path()).unwrap();
    assert_eq!(back, disk[1024..3072]);
    assert_eq!(back[512..1536], [0x42; 1024]);
    d.header(VIRTIO_BLK_T_GET_ID, 0);
    d.submit(&[
        (0x10000, 16, false),
        (0x40000, 20, true),
        (0x10100, 1, true),
    ]);
    let mut id = [0u8; 20];
    d.mem.read_slice(&mut id, GuestAddress(0x40000)).unwrap();
    assert_eq!(&id[..10], b"vda-serial");

    // EVENT_IDX negotiated and used_event left at 0: only the first completion
    // interrupts, and the guest sees it in InterruptStatus.
    assert_eq!(d.line.0.load(Ordering::SeqCst), 1);
    assert_eq!(d.rd(reg::INTERRUPT_STATUS) & 1, 1);
    d.wr(reg::INTERRUPT_ACK, 1);
    assert_eq!(d.rd(reg::INTERRUPT_STATUS), 0);

    // Reset (status 0), then probe again from scratch: the device serves the new
    // rings from index 0.
    d.wr(reg::STATUS, 0);
    assert!(!d.t.is_activated());
    d.mem
        .write_slice(&[0u8; 0x3000], GuestAddress(DESC))
        .unwrap();
    d.probe(LINUX_WANTS & !VIRTIO_RING_F_EVENT_IDX);
    d.header(VIRTIO_BLK_T_IN, 3);
    d.submit(&[
        (0x10000, 16, false),
        (0x30000, 512, true),
        (0x10100, 1, true),
    ]);
    assert_eq!(d.status_byte(), S_OK);
    let recs = d.handle.drain_trace();
    assert_eq!(
        recs.iter().map(|r| r.kind).collect::<Vec<_>>(),
        vec![BlkKind::Write, BlkKind::Read, BlkKind::GetId, BlkKind::Read]
    );
    assert!(recs.iter().all(|r| Some(r.tid) == d.handle.worker_tid()));
    assert_eq!(d.t.stats().activations, 2);
    assert_eq!(d.t.stats().invalid, 0);
}

#[test]
fn read_only_disks_offer_ro() {
    let (mut d, _file) = driver(true);
    assert_ne!(d.t.device().features() & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(
        d.t.device().features() & (1 << 13),
        0,
        "DISCARD on a read-only disk"
    );
    let accepted = d.probe(LINUX_WANTS);
    assert_ne!(accepted & (1 << VIRTIO_BLK_F_RO), 0);
}

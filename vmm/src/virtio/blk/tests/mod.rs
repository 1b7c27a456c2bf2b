//! Device tests: a [`Blk`] on a temporary image file, activated with a split queue laid
//! out in real guest memory ([`create_guest_memory`]) by a small test driver that
//! writes descriptors, publishes them in the available ring and kicks the ioeventfd,
//! as the guest's driver would.

mod bounds;
mod faults;
mod lifecycle;
mod parse;
mod random;
mod requests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueState};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::devices::irq::IrqLine;
use crate::memory::{create_guest_memory, RegionSpec};
use crate::virtio::{ActiveQueue, VirtioInterrupt};

/// Guest RAM: [0, 4 MiB) as two adjacent regions, then a hole, then [8 MiB, 9 MiB).
pub(super) const LOW_END: u64 = 4 << 20;
pub(super) const HOLE: u64 = LOW_END;
pub(super) const HIGH: u64 = 8 << 20;
pub(super) const HIGH_END: u64 = HIGH + (1 << 20);
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// Request buffers of the simple helpers.
pub(super) const HDR: u64 = 0x10000;
pub(super) const STATUS: u64 = 0x10800;
pub(super) const BUF: u64 = 0x20000;
/// Deadlock guard for waits (never a timing assertion).
pub(super) const WAIT: Duration = Duration::from_secs(60);
/// Disk size of the default rig.
pub(super) const DISK: usize = 1 << 20;

/// An interrupt line that counts edges.
#[derive(Debug, Default)]
pub(super) struct Line(AtomicU64);

impl IrqLine for Line {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Line {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Descriptor flags.
pub(super) const R: u16 = 0;
pub(super) const W: u16 = VRING_DESC_F_WRITE as u16;
pub(super) const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub(super) const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// How to build a rig.
pub(super) struct Opts {
    pub disk: usize,
    pub read_only: bool,
    pub direct: bool,
    pub event_idx: bool,
    /// Driver features (default: everything offered).
    pub features: Option<u64>,
    pub injector: Option<Arc<BlkFaultInjector>>,
    pub on_start: Option<Box<dyn FnOnce(i32) + Send>>,
    pub mapper: Option<Arc<dyn super::DiskMapper>>,
    /// Trace ring capacity (default: [`DEFAULT_TRACE_CAPACITY`]).
    pub trace_capacity: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            disk: DISK,
            read_only: false,
            direct: false,
            event_idx: false,
            features: None,
            injector: None,
            on_start: None,
            mapper: None,
            trace_capacity: DEFAULT_TRACE_CAPACITY,
        }
    }
}

/// A device, its guest memory and image, and the driver side of its queue.
pub(super) struct Rig {
    pub mem: GuestMemoryMmap,
    pub blk: Blk,
    pub handle: BlkHandle,
    pub notify: EventFd,
    pub line: Arc<Line>,
    pub file: tempfile::NamedTempFile,
    pub image: Vec<u8>,
    pub size: u16,
    next_desc: u16,
    avail_idx: u16,
    /// Chains published so far.
    pub submitted: u64,
}

/// The initial image: every byte depends on its offset.
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i ^ (i >> 9) ^ (i >> 17)) as u8).collect()
}

impl Rig {
    pub fn new() -> Self {
        Self::with(Opts::default())
    }

    pub fn with(opts: Opts) -> Self {
        let file = tempfile::NamedTempFile::new_in(base::tier::DISK_TMP).unwrap();
        let image = pattern(opts.disk);
        std::fs::write(file.path(), &image).unwrap();
        let mut cfg = BlkConfig::new(file.path());
        cfg.read_only = opts.read_only;
        cfg.direct = opts.direct;
        cfg.id = "test-disk-0".into();
        cfg.on_thread_start = opts.on_start;
        cfg.mapper = opts.mapper;
        cfg.trace_capacity = opts.trace_capacity;
        let blk = match opts.injector {
            None => Blk::new(cfg).unwrap(),
            Some(inj) => {
                let raw = RawFile::open(file.path(), opts.read_only, false).unwrap();
                Blk::with_backend(cfg, Box::new(FaultyBackend::new(Box::new(raw), inj))).unwrap()
            }
        };
        let mem = create_guest_memory(&[
            RegionSpec::new(0, 2 << 20),
            RegionSpec::new(2 << 20, 2 << 20),
            RegionSpec::new(HIGH, HIGH_END - HIGH),
        ])
        .unwrap();
        let handle = blk.handle();
        let mut rig = Self {
            mem,
            blk,
            handle,
            notify: EventFd::new(EFD_NONBLOCK).unwrap(),
            line: Arc::new(Line::default()),
            file,
            image,
            size: QUEUE_SIZE,
            next_desc: 0,
            avail_idx: 0,
            submitted: 0,
        };
        let features = opts.features.unwrap_or(rig.blk.features());
        rig.activate(features, opts.event_idx, 0).unwrap();
        rig
    }

    /// Activates the device on the rings, the driver having consumed up to `next`.
    pub fn activate(
        &mut self,
        features: u64,
        event_idx: bool,
        next: u16,
    ) -> Result<(), ActivateError> {
        let state = QueueState {
            max_size: QUEUE_SIZE,
            next_avail: next,
            next_used: next,
            event_idx_enabled: event_idx,
            size: self.size,
            ready: true,
            desc_table: DESC,
            avail_ring: AVAIL,
            used_ring: USED,
        };
        let queue = Queue::try_from(state).unwrap();
        self.blk.activate(Activation {
            mem: self.mem.clone(),
            features,
            queues: vec![ActiveQueue {
                index: 0,
                queue,
                notify: self.notify.try_clone().unwrap(),
            }],
            interrupt: VirtioInterrupt::new(self.line.clone()),
        })
    }

    /// Writes descriptor `idx`.
    pub fn put_desc(&self, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.put_desc_at(DESC, idx, addr, len, flags, next);
    }

    /// Writes descriptor `idx` of the table at `table`.
    pub fn put_desc_at(&self, table: u64, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
        self.mem
            .write_obj(d, GuestAddress(table + 16 * u64::from(idx)))
            .unwrap();
    }

    /// Writes `descs` (addr, len, flags without NEXT) as a chain at the next free
    /// indices, publishes it and returns its head (no kick).
    pub fn push(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            let last = i + 1 == descs.len();
            let f = if last { flags } else { flags | NEXT };
            self.put_desc(idx, addr, len, f, (idx + 1) % self.size);
        }
        self.next_desc = (head + descs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    /// Makes the chain at `head` available.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
        self.submitted += 1;
    }

    /// Stores the available index (release, like the driver's barrier).
    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .store(idx.to_le(), GuestAddress(AVAIL + 2), Ordering::Release)
            .unwrap();
    }

    pub fn kick(&self) {
        self.notify.write(1).unwrap();
    }

    /// Waits until every published chain is finished.
    pub fn wait(&self) {
        assert!(
            self.handle.wait_completed(self.submitted, WAIT),
            "device finished {} of {} chains",
            self.handle.completed(),
            self.submitted
        );
    }

    /// Publishes `descs`, kicks, waits; returns the used entry `(id, len)`.
    pub fn run(&mut self, descs: &[(u64, u32, u16)]) -> (u32, u32) {
        let head = self.push(descs);
        self.kick();
        self.wait();
        let (id, len) = self.last_used();
        assert_eq!(id, u32::from(head), "used entry for another chain");
        (id, len)
    }

    pub fn used_idx(&self) -> u16 {
        u16::from_le(
            self.mem
                .load(GuestAddress(USED + 2), Ordering::Acquire)
                .unwrap(),
        )
    }

    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(i % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }

    pub fn last_used(&self) -> (u32, u32) {
        self.used(self.used_idx().wrapping_sub(1))
    }

    /// `avail_event` (the device's notification threshold with EVENT_IDX).
    pub fn avail_event(&self) -> u16 {
        let at = USED + 4 + 8 * u64::from(self.size);
        u16::from_le(self.mem.read_obj(GuestAddress(at)).unwrap())
    }

    /// The used ring's flags (`VRING_USED_F_NO_NOTIFY`).
    pub fn used_flags(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(USED)).unwrap())
    }

    /// Sets the available ring's flags (`VRING_AVAIL_F_NO_INTERRUPT`).
    pub fn set_avail_flags(&self, flags: u16) {
        self.mem
            .write_obj(flags.to_le(), GuestAddress(AVAIL))
            .unwrap();
    }

    /// Sets `used_event` (the driver's interrupt threshold with EVENT_IDX).
    pub fn set_used_event(&self, v: u16) {
        let at = AVAIL + 4 + 2 * u64::from(self.size);
        self.mem.write_obj(v.to_le(), GuestAddress(at)).unwrap();
    }

    pub fn header(&self, at: u64, ty: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ty.to_le_bytes());
        h[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // reserved / ioprio
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(at)).unwrap();
    }

    pub fn byte(&self, at: u64) -> u8 {
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    pub fn set_byte(&self, at: u64, v: u8) {
        self.mem.write_obj(v, GuestAddress(at)).unwrap();
    }

    pub fn fill(&self, at: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(at)).unwrap();
    }

    pub fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    pub fn disk(&self) -> Vec<u8> {
        std::fs::read(self.file.path()).unwrap()
    }

    /// A read of `len` bytes at `sector` into [`BUF`]; returns (status, data, used len).
    pub fn read(&mut self, sector: u64, len: u32) -> (u8, Vec<u8>, u32) {
        self.header(HDR, VIRTIO_BLK_T_IN, sector);
        self.set_byte(STATUS, 0xee);
        let (_, used) = self.run(&[(HDR, 16, R), (BUF, len, W), (STATUS, 1, W)]);
        (self.byte(STATUS), self.bytes(BUF, len as usize), used)
    }

    /// A write of `data` at `sector` from [`BUF`]; returns the status.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> u8 {
        self.header(HDR, VIRTIO_BLK_T_OUT, sector);
        self.fill(BUF, data);
        self.set_byte(STATUS, 0xee);
        self.run(&[(HDR, 16, R), (BUF, data.len() as u32, R), (STATUS, 1, W)]);
        self.byte(STATUS)
    }

    pub fn flush(&mut self) -> u8 {
        self.header(HDR, VIRTIO_BLK_T_FLUSH, 0);
        self.set_byte(STATUS, 0xee);
        self.run(&[(HDR, 16, R), (STATUS, 1, W)]);
        self.byte(STATUS)
    }

    /// Asserts a plain read still works and returns what the image holds.
    pub fn assert_alive(&mut self) {
        let (st, data, used) = self.read(3, 1024);
        assert_eq!((st, used), (S_OK, 1025), "a valid read after that failed");
        assert_eq!(data, self.disk()[3 * 512..3 * 512 + 1024]);
    }
}

/// Spins until `cond` holds (for device state written after the completion a test
/// can wait for); fails after [`WAIT`].
pub(super) fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::yield_now();
    }
}

/// A deterministic pseudo-random generator (splitmix64).
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

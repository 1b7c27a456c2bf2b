//! A test rig that plays the guest driver: guest memory, split queues built with
//! virtio-queue's `MockSplitQueue`, an interrupt line that counts, and helpers to
//! put buffers in the queues and kick them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balloon::features::{REPORTING, STATS_VQ};
use balloon::queues::QueueLayout;
use balloon::release::{MadviseReleaser, PageReleaser, ReleaseError};
use balloon::{Balloon, BalloonConfig, BalloonHandle};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vmm::devices::irq::IrqLine;
use vmm::memory::{create_guest_memory, GuestMemoryExt, RegionSpec};
use vmm::virtio::{Activation, ActiveQueue, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use vmm::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest RAM of the rig.
pub const RAM: u64 = 32 << 20;
/// Where buffers the driver hands out live.
pub const BUFFERS: u64 = 1 << 20;
/// First page the tests inflate (data area).
pub const DATA_PFN: u32 = (4 << 20) / 4096;
/// Queue size.
pub const QSIZE: u16 = 256;
/// Generous bound for the worker to react (failure detection only).
pub const WAIT: Duration = Duration::from_secs(20);

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

/// An interrupt line that counts edges.
#[derive(Debug, Default)]
pub struct Line(pub AtomicU64);

impl IrqLine for Line {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Wraps a releaser and records every call.
pub struct Recording {
    pub inner: Arc<dyn PageReleaser>,
    pub released: Mutex<Vec<(u64, u64)>>,
    pub reclaimed: Mutex<Vec<(u64, u64)>>,
}

impl Recording {
    pub fn new(inner: Arc<dyn PageReleaser>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            released: Mutex::new(Vec::new()),
            reclaimed: Mutex::new(Vec::new()),
        })
    }

    pub fn released(&self) -> Vec<(u64, u64)> {
        self.released.lock().unwrap().clone()
    }

    pub fn reclaimed(&self) -> Vec<(u64, u64)> {
        self.reclaimed.lock().unwrap().clone()
    }
}

impl PageReleaser for Recording {
    fn release(&self, gpa: u64, len: u64) -> Result<(), ReleaseError> {
        self.released.lock().unwrap().push((gpa, len));
        self.inner.release(gpa, len)
    }

    fn reclaim(&self, gpa: u64, len: u64) -> Result<(), ReleaseError> {
        self.reclaimed.lock().unwrap().push((gpa, len));
        self.inner.reclaim(gpa, len)
    }
}

/// One queue as the driver sees it.
pub struct DriverQueue {
    pub mock: MockSplitQueue<'static, GuestMemoryMmap>,
    pub notify: EventFd,
    next_desc: u16,
}

impl DriverQueue {
    /// Adds one chain of `(addr, len, device_writable)` buffers; returns its head.
    pub fn add(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let n = bufs.len() as u16;
        assert!(n > 0 && n <= QSIZE);
        if self.next_desc + n > QSIZE {
            self.next_desc = 0;
        }
        let head = self.next_desc;
        let raw: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let i = i as u16;
                let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
                if i + 1 < n {
                    flags |= VRING_DESC_F_NEXT;
                }
                RawDescriptor::from(Descriptor::new(addr, len, flags, head + i + 1))
            })
            .collect();
        self.mock.add_desc_chains(&raw, head).unwrap();
        self.next_desc += n;
        head
    }

    /// Adds raw descriptors at `offset` (anything at all) and publishes their heads.
    pub fn add_raw(&mut self, raw: &[RawDescriptor], offset: u16) {
        self.mock.add_desc_chains(raw, offset).unwrap();
    }

    pub fn kick(&self) {
        self.notify.write(1).unwrap();
    }

    /// The used ring's index.
    pub fn used_idx(&self) -> u16 {
        self.mock.used().idx().load()
    }

    /// Used element `i`: (descriptor id, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let e = self
            .mock
            .used()
            .ring()
            .ref_at(usize::from(i % QSIZE))
            .unwrap()
            .load();
        (e.id(), e.len())
    }
}

/// A balloon, its handle and a driver for its queues.
pub struct Rig {
    pub mem: &'static GuestMemoryMmap,
    pub dev: Balloon,
    pub h: BalloonHandle,
    pub line: Arc<Line>,
    pub interrupt: VirtioInterrupt,
    pub queues: Vec<DriverQueue>,
    pub layout: QueueLayout,
    pub releaser: Arc<Recording>,
}

/// Settings of a rig.
pub struct RigConfig {
    pub features: u64,
    pub stats_interval: Option<Duration>,
    pub reporting: bool,
    pub on_thread_start: Option<balloon::ThreadStartHook>,
}

impl Default for RigConfig {
    fn default() -> Self {
        Self {
            features: VIRTIO_F_VERSION_1 | STATS_VQ,
            stats_interval: None,
            reporting: true,
            on_thread_start: None,
        }
    }
}

/// Guest memory for a rig (leaked: the mock queues borrow it for `'static`).
pub fn leaked_memory(mem: GuestMemoryMmap) -> &'static GuestMemoryMmap {
    Box::leak(Box::new(mem))
}

impl Rig {
    pub fn new(cfg: RigConfig) -> Self {
        let mem = leaked_memory(create_guest_memory(&[RegionSpec::new(0, RAM)]).unwrap());
        Self::with(
            mem,
            Recording::new(Arc::new(MadviseReleaser::new(mem.clone()))),
            cfg,
        )
    }

    /// A rig over `mem` releasing through `releaser`; the device is activated.
    pub fn with(mem: &'static GuestMemoryMmap, releaser: Arc<Recording>, cfg: RigConfig) -> Self {
        let mut bc = BalloonConfig::new(releaser.clone());
        bc.stats_interval = cfg.stats_interval;
        bc.free_page_reporting = cfg.reporting;
        bc.on_thread_start = cfg.on_thread_start;
        let (dev, h) = Balloon::new(bc);
        let line = Arc::new(Line::default());
        let interrupt = VirtioInterrupt::new(line.clone());
        let mut rig = Rig {
            mem,
            dev,
            h,
            line,
            interrupt,
            queues: Vec::new(),
            layout: QueueLayout::for_features(cfg.features),
            releaser,
        };
        rig.activate(cfg.features).unwrap();
        rig
    }

    /// Fresh queues and an activation with `features`.
    pub fn activate(&mut self, features: u64) -> Result<(), vmm::virtio::ActivateError> {
        let n = QueueLayout::for_features(features).len();
        self.activate_first(features, n)
    }

    /// An activation with `features` where the driver set up only the first `n`
    /// queues.
    pub fn activate_first(
        &mut self,
        features: u64,
        n: usize,
    ) -> Result<(), vmm::virtio::ActivateError> {
        self.layout = QueueLayout::for_features(features);
        self.queues.clear();
        let mut active = Vec::new();
        for i in 0..n {
            let mock =
                MockSplitQueue::create(self.mem, GuestAddress(0x1_0000 + i as u64 * 0x4000), QSIZE);
            let queue: Queue = mock.create_queue().unwrap();
            let notify = EventFd::new(EFD_NONBLOCK).unwrap();
            active.push(ActiveQueue {
                index: i as u16,
                queue,
                notify: notify.try_clone().unwrap(),
            });
            self.queues.push(DriverQueue {
                mock,
                notify,
                next_desc: 0,
            });
        }
        self.dev.activate(Activation {
            mem: self.mem.clone(),
            features,
            queues: active,
            interrupt: self.interrupt.clone(),
        })
    }

    /// The driver queue playing `role`.
    pub fn q(&mut self, role: balloon::queues::Role) -> &mut DriverQueue {
        let i = self.layout.index_of(role).expect("role negotiated");
        &mut self.queues[usize::from(i)]
    }

    /// Writes `pfns` as a little-endian array at `addr`.
    pub fn write_pfns(&self, addr: u64, pfns: &[u32]) -> u32 {
        let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
        bytes.len() as u32
    }

    /// Writes `bytes` at guest address `addr`.
    pub fn mem_write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    /// Fills page `pfn` with a pattern derived from it.
    pub fn fill(&self, pfn: u32) {
        let v = vec![(pfn as u8) | 1; 4096];
        self.mem
            .write_slice(&v, GuestAddress(u64::from(pfn) << 12))
            .unwrap();
    }

    /// Whether page `pfn` still holds its pattern (false: something else), and
    /// whether it is all zeros.
    pub fn content(&self, pfn: u32) -> (bool, bool) {
        let mut v = vec![0u8; 4096];
        self.mem
            .read_slice(&mut v, GuestAddress(u64::from(pfn) << 12))
            .unwrap();
        (
            v.iter().all(|b| *b == (pfn as u8) | 1),
            v.iter().all(|b| *b == 0),
        )
    }

    /// Whether page `pfn` is resident (mincore), without touching it.
    pub fn resident(&self, pfn: u32) -> bool {
        let r = self.mem.host_regions()[0];
        let addr = r.host_addr + (pfn as usize) * 4096;
        let mut vec = [0u8; 1];
        // SAFETY: the page is inside the live guest mapping; mincore only reports.
        let rc = unsafe { libc::mincore(addr as *mut libc::c_void, 4096, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec[0] & 1 == 1
    }

    /// Waits until `cond` holds on the handle (fails the test after [`WAIT`]).
    pub fn wait(&self, what: &str, cond: impl FnMut(&BalloonHandle) -> bool) {
        assert!(
            self.h.wait_for(WAIT, cond),
            "timed out waiting for {what}: {:?}",
            self.h.metrics()
        );
    }
}

/// Feature set with free page reporting.
pub fn with_reporting(stats: bool) -> u64 {
    VIRTIO_F_VERSION_1 | REPORTING | if stats { STATS_VQ } else { 0 }
}

/// xorshift64*.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

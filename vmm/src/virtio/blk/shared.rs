//! What the device, its handles, the worker thread and the request engine
//! share: [`Shared`] (counters, trace, the worker's TID, preemption and
//! completion waits, the install hook) and the [`Active`] queue being served.
//! Its own module so that `worker.rs` and `serve.rs` both import it and
//! neither imports the other's file for it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base::sync::lock;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::backend::BlkBackend;
use super::request::Limits;
use super::trace::{BlkTrace, Counters};
use crate::virtio::VirtioInterrupt;

/// What a virtio-blk device tells about guest pages and disk blocks: the host
/// swapper's Swap Mapper (which pages hold a copy of which blocks) and the
/// false-read mitigation (an evicted page a read overwrites is installed, not
/// read back first). See [`BlkConfig::mapper`](super::BlkConfig::mapper).
pub trait DiskMapper: Send + Sync {
    /// A read is about to fill the whole, page-aligned guest page at `gpa`
    /// with `data`, the disk's bytes from `offset`. `true`: the mapper put
    /// `data` there itself and the device skips the page.
    fn page_read(&self, gpa: vm_memory::GuestAddress, offset: u64, data: &[u8; 4096]) -> bool;

    /// Bytes `[offset, offset + len)` of the disk are about to be written or
    /// discarded; returns when the change may go ahead.
    fn disk_changing(&self, offset: u64, len: u64);
}

/// The mapper, printable.
#[derive(Clone, Default)]
pub(crate) struct MapperHook(pub Option<Arc<dyn DiskMapper>>);

impl std::fmt::Debug for MapperHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MapperHook({})",
            if self.0.is_some() { "set" } else { "none" }
        )
    }
}

/// State shared by the device, its handles and the worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub name: String,
    pub counters: Counters,
    pub trace: Arc<BlkTrace>,
    /// The worker's TID (0 before it started).
    pub tid: AtomicI32,
    /// Set to make the worker stop serving at the next request boundary.
    pub(super) preempt: AtomicBool,
    completed: AtomicU64,
    waiters: AtomicUsize,
    wait_lock: Mutex<()>,
    wait_cv: Condvar,
    /// Who hears of disk pages read and disk ranges changing (see [`DiskMapper`]).
    pub(super) mapper: MapperHook,
    /// Count the worker's major faults per request ([`super::BlkConfig::count_major_faults`]).
    pub(super) count_major_faults: bool,
}

impl Shared {
    pub fn new(name: String, trace: Arc<BlkTrace>, mapper: MapperHook) -> Self {
        Self {
            name,
            counters: Counters::default(),
            trace,
            tid: AtomicI32::new(0),
            preempt: AtomicBool::new(false),
            completed: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
            mapper,
            count_major_faults: false,
        }
    }

    /// With the worker's major faults counted per request (or not).
    pub fn counting_major_faults(self, on: bool) -> Self {
        Self {
            count_major_faults: on,
            ..self
        }
    }

    /// Chains finished (used entry added, or dropped when that is impossible).
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    pub(super) fn complete_one(&self) {
        self.completed.fetch_add(1, Ordering::SeqCst);
        // Only wake (a syscall) when someone waits.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = lock(&self.wait_lock);
            self.wait_cv.notify_all();
        }
    }

    /// Waits until `n` chains have finished; false if `timeout` passed first.
    pub fn wait_completed(&self, n: u64, timeout: Duration) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.wait_lock);
        let done = loop {
            if self.completed() >= n {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            g = match self.wait_cv.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        };
        drop(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        done
    }
}

/// A queue being served.
pub(crate) struct Active {
    pub mem: GuestMemoryMmap,
    pub queue: Queue,
    pub notify: EventFd,
    pub interrupt: VirtioInterrupt,
    pub limits: Limits,
}

/// The worker's view of the shared disk: one operation at a time, each
/// under the disk's lock.
pub(crate) struct Locked(pub Arc<Mutex<Box<dyn BlkBackend>>>);

impl BlkBackend for Locked {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        base::sync::lock(&self.0).read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        base::sync::lock(&self.0).write_at(buf, offset)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        base::sync::lock(&self.0).flush()
    }

    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        base::sync::lock(&self.0).discard(offset, len)
    }

    fn supports_discard(&self) -> bool {
        base::sync::lock(&self.0).supports_discard()
    }

    fn size(&self) -> u64 {
        base::sync::lock(&self.0).size()
    }

    fn block_size(&self) -> u32 {
        base::sync::lock(&self.0).block_size()
    }
}

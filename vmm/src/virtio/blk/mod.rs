//! virtio-blk (virtio 1.2, 5.2): a disk image as a guest block device, with every
//! request traced.
//!
//! - [`Blk`]: the [`VirtioDevice`] (type 2, one request queue of 256). It offers
//!   `VERSION_1`, `FLUSH`, `BLK_SIZE`, `SEG_MAX`, `RING_EVENT_IDX`,
//!   `RING_INDIRECT_DESC`, `RO` for read-only disks and `DISCARD` where the backend
//!   can punch holes.
//! - [`backend`]: the [`BlkBackend`] trait and the raw image file ([`RawFile`],
//!   `pread`/`pwrite`, optionally `O_DIRECT`); [`faulty`]: [`FaultyBackend`], which
//!   fails or slows operations on demand through a shared [`BlkFaultInjector`].
//! - [`request`]: parsing and validating a request from its descriptor chain.
//! - `worker` and `serve`: the worker thread that serves the queue.
//! - [`trace`]: one [`BlkRecord`] per request in a bounded [`BlkTrace`], and
//!   [`BlkCounters`]; read them at any time through a [`BlkHandle`].
//!
//! A request the guest gets wrong (descriptors outside RAM, data in the wrong
//! direction, lengths not in sectors, sectors beyond the disk, writes to a read-only
//! disk, a chain that loops, …) is answered with `VIRTIO_BLK_S_IOERR` where a status
//! byte can be written (an unknown type with `VIRTIO_BLK_S_UNSUPP`), counted by
//! reason and logged with a rate limit; the device serves the next one as usual. A
//! backend failure fails only its own request.

pub mod backend;
pub mod faulty;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod overlay;
pub mod request;
mod serve;
mod shared;
pub mod trace;
mod worker;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::QueueT;

pub use backend::{BlkBackend, RawFile, DIRECT_ALIGN};
pub use faulty::{BlkFaultInjector, FaultyBackend};
pub use overlay::{Overlay, OVERLAY_BLOCK};
pub use request::{InvalidReason, ID_BYTES, SECTOR_SIZE, S_IOERR, S_OK, S_UNSUPP};
pub use trace::{
    BlkCounters, BlkIoErrors, BlkKind, BlkRecord, BlkTrace, DEFAULT_TRACE_CAPACITY, STATUS_NONE,
};

use super::{ActivateError, Activation, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use request::Limits;
pub use shared::DiskMapper;
use shared::{Active, MapperHook, Shared};
use worker::{WorkerCtl, WorkerSetup};

/// virtio device ID of a block device.
pub const DEVICE_TYPE: u32 = 2;
/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// `seg_max`: data buffers per request the driver may use.
pub const SEG_MAX: u32 = 128;
/// `max_discard_seg`.
pub const MAX_DISCARD_SEG: u32 = 32;
/// `max_discard_sectors` (1 GiB per segment).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
/// Bytes of configuration space: `struct virtio_blk_config` up to and including the
/// write-zeroes fields (the secure-erase and zoned fields are not offered).
pub const CONFIG_LEN: usize = 60;

/// Feature bit `n` as a mask.
const fn bit(n: u32) -> u64 {
    1 << n
}

/// Errors creating a [`Blk`].
#[derive(Debug, thiserror::Error)]
pub enum BlkError {
    /// The image could not be opened.
    #[error("cannot open disk image {path}{}", if *.direct { " with O_DIRECT" } else { "" })]
    Open {
        /// The image.
        path: PathBuf,
        /// Whether `O_DIRECT` was asked for (some file systems refuse it).
        direct: bool,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The GET_ID string does not fit in 20 bytes.
    #[error("disk id {id:?} is {len} bytes; at most 20 fit")]
    IdTooLong {
        /// The id.
        id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The copy-on-write overlay of an image could not be set up.
    #[error("cannot set up a copy-on-write overlay of disk image {path} in {}", .scratch_dir.display())]
    Overlay {
        /// The base image.
        path: PathBuf,
        /// Where its top layer was to be created.
        scratch_dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backend reports a block size the driver cannot use.
    #[error("block size {0} is not a power of two between 512 and 4096")]
    BlockSize(u32),
}

/// How to create a [`Blk`].
pub struct BlkConfig {
    /// The disk image (a regular file or a block device).
    pub path: PathBuf,
    /// Offer `VIRTIO_BLK_F_RO` and refuse writes (the image is opened read-only).
    pub read_only: bool,
    /// Open the image `O_DIRECT` (bypass the host page cache).
    pub direct: bool,
    /// The GET_ID answer (serial), at most 20 bytes; NUL-padded.
    pub id: String,
    /// Trace timestamps are ns since this instant (use the swapper's epoch to join
    /// the two traces).
    pub epoch: Instant,
    /// Called once, in the worker thread, with its TID when it starts (so the VMM can
    /// register it with the swapper as a device thread).
    pub on_thread_start: Option<Box<dyn FnOnce(i32) + Send>>,
    /// Records the trace ring holds ([`DEFAULT_TRACE_CAPACITY`] by default).
    pub trace_capacity: usize,
    /// Told of every whole, page-aligned guest page a read request fills,
    /// before the device writes it (with the page's disk offset; if it answers
    /// `true` the page now holds the data and the device skips it), and of
    /// every disk range a write or discard is about to change. The host
    /// swapper's Swap Mapper and false-read mitigation (see [`DiskMapper`]).
    pub mapper: Option<Arc<dyn DiskMapper>>,
    /// Read the worker thread's major page faults (`getrusage(RUSAGE_THREAD)`)
    /// before and after each request into [`BlkRecord::major_faults`]: when the
    /// kernel swaps guest RAM out, a request that faults guest pages back in
    /// shows here (the join the userfaultfd swapper's fault records give
    /// otherwise). Off by default: two syscalls per request.
    pub count_major_faults: bool,
}

impl BlkConfig {
    /// A read-write, buffered disk on `path` with id `swaplab-blk`, epoch now, the
    /// default trace capacity and no thread hook.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_only: false,
            direct: false,
            id: "swaplab-blk".into(),
            epoch: Instant::now(),
            on_thread_start: None,
            trace_capacity: DEFAULT_TRACE_CAPACITY,
            mapper: None,
            count_major_faults: false,
        }
    }
}

impl std::fmt::Debug for BlkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkConfig")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .field("direct", &self.direct)
            .field("id", &self.id)
            .field("on_thread_start", &self.on_thread_start.is_some())
            .field("trace_capacity", &self.trace_capacity)
            .finish_non_exhaustive()
    }
}

/// A cheap, cloneable view of a device's counters and trace, usable from any thread
/// while the device runs (and after it is gone).
#[derive(Debug, Clone)]
pub struct BlkHandle {
    shared: Arc<Shared>,
}

impl BlkHandle {
    /// A snapshot of the counters.
    pub fn counters(&self) -> BlkCounters {
        self.shared.counters.snapshot()
    }

    /// Takes every trace record held, oldest first.
    pub fn drain_trace(&self) -> Vec<BlkRecord> {
        self.shared.trace.drain()
    }

    /// The trace ring itself (dropped count, capacity).
    pub fn trace(&self) -> &Arc<BlkTrace> {
        &self.shared.trace
    }

    /// The worker thread's TID, once it has started.
    pub fn worker_tid(&self) -> Option<i32> {
        match self.shared.tid.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            t => Some(t),
        }
    }

    /// Descriptor chains finished so far (used entry added, or dropped when the
    /// head index was invalid).
    pub fn completed(&self) -> u64 {
        self.shared.completed()
    }

    /// Waits until `n` chains have finished in total; false if `timeout` passed
    /// first.
    pub fn wait_completed(&self, n: u64, timeout: Duration) -> bool {
        self.shared.wait_completed(n, timeout)
    }
}

/// Reads a device's disk from any thread ([`Blk::reader`]): each read takes
/// the disk's lock, so it sees every request before or after, never half.
#[derive(Clone)]
pub struct BlkReader {
    disk: Arc<Mutex<Box<dyn BlkBackend>>>,
    size: u64,
}

impl std::fmt::Debug for BlkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkReader")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl BlkReader {
    /// Fills `buf` from byte `offset` (all of it, or an error; a range beyond
    /// the disk is refused).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes at {offset} are beyond the disk ({} bytes)",
                    buf.len(),
                    self.size
                ),
            ));
        }
        base::sync::lock(&self.disk).read_at(buf, offset)
    }
}

/// A virtio-blk device.
pub struct Blk {
    features: u64,
    config: [u8; CONFIG_LEN],
    capacity: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    epoch: Instant,
    on_thread_start: Option<Box<dyn FnOnce(i32) + Send>>,
    /// The disk, shared by the worker and [`BlkReader`]s.
    disk: Arc<Mutex<Box<dyn BlkBackend>>>,
    worker: Option<WorkerCtl>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Blk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blk")
            .field("name", &self.shared.name)
            .field("capacity", &self.capacity)
            .field("read_only", &self.read_only)
            .field("features", &format_args!("{:#x}", self.features))
            .field("worker_running", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl Blk {
    /// A device on the raw image `cfg.path`.
    pub fn new(cfg: BlkConfig) -> Result<Self, BlkError> {
        let file = RawFile::open(&cfg.path, cfg.read_only, cfg.direct).map_err(|source| {
            BlkError::Open {
                path: cfg.path.clone(),
                direct: cfg.direct,
                source,
            }
        })?;
        Self::with_backend(cfg, Box::new(file))
    }

    /// A device on a private, writable copy-on-write view of the image `cfg.path`
    /// (an [`Overlay`], whose top layer is an anonymous file in `scratch_dir`): the
    /// image is only read, and the guest's changes vanish with the device.
    /// `cfg.direct` is ignored (the base is shared through the page cache).
    pub fn overlay(cfg: BlkConfig, scratch_dir: &Path) -> Result<Self, BlkError> {
        let overlay =
            Overlay::open(&cfg.path, scratch_dir).map_err(|source| BlkError::Overlay {
                path: cfg.path.clone(),
                scratch_dir: scratch_dir.to_path_buf(),
                source,
            })?;
        Self::with_backend(cfg, Box::new(overlay))
    }

    /// A device on `backend` (e.g. a [`FaultyBackend`]); `cfg.path` only names the
    /// device in logs and `cfg.direct` is ignored.
    pub fn with_backend(cfg: BlkConfig, backend: Box<dyn BlkBackend>) -> Result<Self, BlkError> {
        let id_len = cfg.id.len();
        if id_len > ID_BYTES {
            return Err(BlkError::IdTooLong {
                id: cfg.id,
                len: id_len,
            });
        }
        let mut id = [0u8; ID_BYTES];
        id[..id_len].copy_from_slice(cfg.id.as_bytes());
        let block_size = backend.block_size();
        if !block_size.is_power_of_two() || !(512..=4096).contains(&block_size) {
            return Err(BlkError::BlockSize(block_size));
        }
        let capacity = backend.size() / SECTOR_SIZE;
        let discard = !cfg.read_only && backend.supports_discard();
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | bit(VIRTIO_RING_F_INDIRECT_DESC)
            | bit(VIRTIO_BLK_F_FLUSH)
            | bit(VIRTIO_BLK_F_BLK_SIZE)
            | bit(VIRTIO_BLK_F_SEG_MAX);
        if cfg.read_only {
            features |= bit(VIRTIO_BLK_F_RO);
        }
        if discard {
            features |= bit(VIRTIO_BLK_F_DISCARD);
        }
        let mut config = [0u8; CONFIG_LEN];
        let mut put =
            |off: usize, bytes: &[u8]| config[off..off + bytes.len()].copy_from_slice(bytes);
        put(0, &capacity.to_le_bytes());
        put(12, &SEG_MAX.to_le_bytes());
        put(20, &block_size.to_le_bytes());
        put(34, &1u16.to_le_bytes()); // num_queues
        if discard {
            put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
            put(40, &MAX_DISCARD_SEG.to_le_bytes());
            put(44, &(block_size / SECTOR_SIZE as u32).to_le_bytes());
        }
        let name = format!("blk:{}", cfg.path.display());
        let trace = Arc::new(BlkTrace::new(cfg.trace_capacity));
        let disk = Arc::new(Mutex::new(backend));
        Ok(Self {
            features,
            config,
            capacity,
            read_only: cfg.read_only,
            id,
            epoch: cfg.epoch,
            on_thread_start: cfg.on_thread_start,
            disk,
            worker: None,
            shared: Arc::new(
                Shared::new(name, trace, MapperHook(cfg.mapper.clone()))
                    .counting_major_faults(cfg.count_major_faults),
            ),
        })
    }

    /// Counters and trace, for any thread.
    pub fn handle(&self) -> BlkHandle {
        BlkHandle {
            shared: self.shared.clone(),
        }
    }

    /// A reader of the disk for another thread (the host swapper reading a
    /// named page's block back), safe beside the worker's requests.
    pub fn reader(&self) -> BlkReader {
        BlkReader {
            disk: self.disk.clone(),
            size: self.capacity * SECTOR_SIZE,
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the disk is read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn start_worker(&mut self) -> Result<&WorkerCtl, ActivateError> {
        if self.worker.is_none() {
            let setup = WorkerSetup {
                shared: self.shared.clone(),
                id: self.id,
                epoch: self.epoch,
                on_start: self.on_thread_start.take(),
            };
            let ctl = WorkerCtl::spawn(setup, &self.disk)
                .map_err(|e| ActivateError::Start(Box::new(e)))?;
            self.worker = Some(ctl);
        }
        self.worker
            .as_ref()
            .ok_or_else(|| ActivateError::Start("no worker".into()))
    }
}

impl VirtioDevice for Blk {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn config_len(&self) -> usize {
        CONFIG_LEN
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        match offset
            .checked_add(data.len())
            .and_then(|end| self.config.get(offset..end))
        {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0),
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let Activation {
            mem,
            features,
            queues,
            interrupt,
        } = activation;
        let Some(q) = queues.into_iter().find(|q| q.index == 0) else {
            return Err(ActivateError::BadQueues(
                "the request queue (0) is not ready".into(),
            ));
        };
        if q.queue.avail_ring() == 0 {
            return Err(ActivateError::BadQueues(
                "the available ring is at guest address 0".into(),
            ));
        }
        let limits = Limits {
            capacity: self.capacity,
            read_only: self.read_only,
            discard: features & self.features & bit(VIRTIO_BLK_F_DISCARD) != 0,
            max_discard_seg: MAX_DISCARD_SEG,
            max_discard_sectors: MAX_DISCARD_SECTORS,
        };
        let active = Active {
            mem,
            queue: q.queue,
            notify: q.notify,
            interrupt,
            limits,
        };
        if self.start_worker()?.activate(active) {
            Ok(())
        } else {
            Err(ActivateError::Start(
                "the virtio-blk worker thread has exited".into(),
            ))
        }
    }

    fn reset(&mut self) {
        if let Some(w) = &self.worker {
            w.deactivate();
        }
    }
}

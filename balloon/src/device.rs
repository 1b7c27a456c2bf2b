//! The balloon device model and its handle.
//!
//! [`Balloon`] sits behind the virtio-mmio transport (which owns it and calls it on
//! vCPU threads for config-space accesses, activation and reset). Activation starts
//! one worker thread (`worker.rs`) that serves the queues; reset and drop
//! stop and join it. [`BalloonHandle`] is how the rest of the VMM talks to the
//! device from any thread: it shares the target, `actual`, the last guest
//! statistics, metrics and events with the device (atomics and short locks).
//!
//! Config space (virtio 1.2, 5.5.4), little-endian:
//!
//! | offset | field | who writes |
//! |---|---|---|
//! | 0 | `num_pages`: balloon target, 4 KiB pages | device ([`BalloonHandle::set_target`]) |
//! | 4 | `actual`: pages the guest holds in the balloon | driver |
//! | 8 | `free_page_hint_cmd_id` (unused, reads 0) | device |
//! | 12 | `poison_val` (unused, reads 0) | driver (ignored) |
//!
//! Writes anywhere but `actual` are ignored and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base::sync::lock;
use vmm::virtio::{ActivateError, Activation, VirtioDevice, VIRTIO_F_VERSION_1};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::metrics::{BalloonEvent, BalloonEventKind, BalloonMetrics};
use crate::queues::{QueueLayout, Role};
use crate::release::PageReleaser;
use crate::shared::{Live, Shared};
use crate::spec::features::{DEFLATE_ON_OOM, REPORTING, STATS_VQ};
use crate::spec::{BALLOON_PAGE_SIZE, DEVICE_TYPE};
use crate::stats::GuestStats;
pub use crate::worker::BalloonError;
use crate::worker::Worker;

/// Size of each queue. The reporting queue must hold at least 32 descriptors
/// (`PAGE_REPORTING_CAPACITY`) or Linux disables reporting.
pub const QUEUE_SIZE: u16 = 256;

/// Bytes of config space.
pub const CONFIG_LEN: usize = 16;

/// Events kept in the ring before the oldest are dropped.
pub const EVENT_CAPACITY: usize = 16 * 1024;

/// Called with the worker thread's TID each time one starts (e.g. to register it
/// with the swapper's thread registry, so its faults on guest memory are
/// attributed). A device reset and re-activation starts a new thread.
pub type ThreadStartHook = Box<dyn FnMut(i32) + Send>;

/// Device settings.
pub struct BalloonConfig {
    /// How often the worker returns the guest's statistics buffer so the guest
    /// sends fresh statistics. `None`: only at probe time and on
    /// [`BalloonHandle::request_stats`]. (`STATS_VQ` is offered either way.)
    pub stats_interval: Option<Duration>,
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
    pub deflate_on_oom: bool,
    /// Offer `VIRTIO_BALLOON_F_REPORTING` (free page reporting).
    pub free_page_reporting: bool,
    /// Where released pages go.
    pub releaser: Arc<dyn PageReleaser>,
    /// Time zero for events and statistics timestamps (share it with the rest of
    /// the VM's traces).
    pub epoch: Instant,
    /// Called on the worker thread when it starts, with its TID.
    pub on_thread_start: Option<ThreadStartHook>,
}

impl BalloonConfig {
    /// Defaults: statistics every second, `DEFLATE_ON_OOM` on, free page
    /// reporting off, epoch now. (With `DEFLATE_ON_OOM` the guest does not shrink
    /// its `MemTotal` by the balloon's size, and it deflates on its own instead of
    /// going out of memory.)
    pub fn new(releaser: Arc<dyn PageReleaser>) -> Self {
        Self {
            stats_interval: Some(Duration::from_secs(1)),
            deflate_on_oom: true,
            free_page_reporting: false,
            releaser,
            epoch: Instant::now(),
            on_thread_start: None,
        }
    }
}

impl std::fmt::Debug for BalloonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalloonConfig")
            .field("stats_interval", &self.stats_interval)
            .field("deflate_on_oom", &self.deflate_on_oom)
            .field("free_page_reporting", &self.free_page_reporting)
            .field("on_thread_start", &self.on_thread_start.is_some())
            .finish()
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    stop_evt: EventFd,
    thread: JoinHandle<()>,
}

/// The virtio-balloon device.
pub struct Balloon {
    shared: Arc<Shared>,
    offered: u64,
    queue_sizes: Vec<u16>,
    releaser: Arc<dyn PageReleaser>,
    stats_interval: Option<Duration>,
    on_thread_start: Option<Arc<Mutex<ThreadStartHook>>>,
    worker: Option<Running>,
}

impl std::fmt::Debug for Balloon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balloon")
            .field("offered", &format_args!("{:#x}", self.offered))
            .field("queues", &self.queue_sizes.len())
            .field("active", &self.worker.is_some())
            .finish()
    }
}

impl Balloon {
    /// A balloon with target 0 and its handle.
    pub fn new(cfg: BalloonConfig) -> (Balloon, BalloonHandle) {
        let mut offered = VIRTIO_F_VERSION_1 | STATS_VQ;
        if cfg.deflate_on_oom {
            offered |= DEFLATE_ON_OOM;
        }
        if cfg.free_page_reporting {
            offered |= REPORTING;
        }
        let shared = Arc::new(Shared::new(cfg.epoch, EVENT_CAPACITY));
        let queues = QueueLayout::for_features(offered).len();
        let dev = Balloon {
            shared: shared.clone(),
            offered,
            queue_sizes: vec![QUEUE_SIZE; queues],
            releaser: cfg.releaser,
            stats_interval: cfg.stats_interval,
            on_thread_start: cfg.on_thread_start.map(|h| Arc::new(Mutex::new(h))),
            worker: None,
        };
        (dev, BalloonHandle { shared })
    }

    /// Another handle to this device.
    pub fn handle(&self) -> BalloonHandle {
        BalloonHandle {
            shared: self.shared.clone(),
        }
    }

    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let target = self.shared.target_pages.load(Ordering::SeqCst);
        let actual = self.shared.actual_pages.load(Ordering::SeqCst);
        c[0..4].copy_from_slice(&target.to_le_bytes());
        c[4..8].copy_from_slice(&actual.to_le_bytes());
        c
    }

    fn stop_worker(&mut self) -> bool {
        let Some(r) = self.worker.take() else {
            return false;
        };
        r.stop.store(true, Ordering::SeqCst);
        if let Err(e) = r.stop_evt.write(1) {
            tracing::error!("virtio-balloon: cannot signal the worker to stop: {e}");
        }
        if r.thread.join().is_err() {
            self.shared
                .counters
                .worker_panics
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!("virtio-balloon: the worker thread panicked");
        }
        true
    }

    fn start_worker(&mut self, a: Activation) -> Result<(), ActivateError> {
        let layout = QueueLayout::for_features(a.features);
        let mut queues = Vec::new();
        for q in a.queues {
            match layout.role(q.index) {
                Some(Role::FreePageHint) | None => self.shared.warn(|| {
                    format!(
                        "queue {} has no use with features {:#x}",
                        q.index, a.features
                    )
                }),
                Some(role) => queues.push((role, q)),
            }
        }
        for needed in [Role::Inflate, Role::Deflate] {
            if !queues.iter().any(|(r, _)| *r == needed) {
                return Err(ActivateError::BadQueues(format!(
                    "the {needed:?} queue was not set up"
                )));
            }
        }
        let fd =
            |what| move |source| ActivateError::Start(Box::new(BalloonError::Fd { what, source }));
        let stop_evt = EventFd::new(EFD_NONBLOCK).map_err(fd("stop eventfd"))?;
        let kick = EventFd::new(EFD_NONBLOCK).map_err(fd("stats request eventfd"))?;
        let stats_timer = if queues.iter().any(|(r, _)| *r == Role::Stats) {
            self.stats_interval.filter(|d| !d.is_zero())
        } else {
            None
        };
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker::new(
            a.mem,
            queues,
            a.interrupt.clone(),
            self.shared.clone(),
            self.releaser.clone(),
            stop.clone(),
            stop_evt.try_clone().map_err(fd("stop eventfd"))?,
            kick.try_clone().map_err(fd("stats request eventfd"))?,
            stats_timer,
        )
        .map_err(|e| ActivateError::Start(Box::new(e)))?;
        let hook = self.on_thread_start.clone();
        let thread = std::thread::Builder::new()
            .name("balloon".into())
            .spawn(move || {
                seccomp::enter(seccomp::ThreadClass::Balloon);
                if let Some(h) = hook {
                    (lock(&h))(nix::unistd::gettid().as_raw());
                }
                worker.run();
            })
            .map_err(|e| ActivateError::Start(Box::new(BalloonError::Spawn(e))))?;
        self.worker = Some(Running {
            stop,
            stop_evt,
            thread,
        });
        *lock(&self.shared.live) = Some(Live {
            interrupt: a.interrupt,
            kick,
        });
        Ok(())
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn config_len(&self) -> usize {
        CONFIG_LEN
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let c = self.config_bytes();
        match offset
            .checked_add(data.len())
            .and_then(|end| c.get(offset..end))
        {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0),
        }
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        let mut actual = self
            .shared
            .actual_pages
            .load(Ordering::SeqCst)
            .to_le_bytes();
        let mut ignored = 0;
        for (i, b) in data.iter().enumerate() {
            match offset.checked_add(i) {
                Some(o @ 4..=7) => actual[o - 4] = *b,
                _ => ignored += 1,
            }
        }
        if ignored < data.len() {
            self.shared
                .actual_pages
                .store(u32::from_le_bytes(actual), Ordering::SeqCst);
        }
        if ignored > 0 {
            let n = self
                .shared
                .counters
                .invalid_config_writes
                .fetch_add(1, Ordering::Relaxed);
            self.shared.warn(|| {
                format!(
                    "ignored write of {} bytes at config offset {offset} (#{})",
                    data.len(),
                    n + 1
                )
            });
        }
        self.shared.changed();
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.stop_worker();
        self.start_worker(activation)?;
        self.shared
            .counters
            .activations
            .fetch_add(1, Ordering::Relaxed);
        self.shared.changed();
        Ok(())
    }

    fn reset(&mut self) {
        *lock(&self.shared.live) = None;
        if self.stop_worker() {
            self.shared.counters.resets.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.actual_pages.store(0, Ordering::SeqCst);
        self.shared.changed();
    }
}

impl Drop for Balloon {
    fn drop(&mut self) {
        *lock(&self.shared.live) = None;
        self.stop_worker();
    }
}

/// Talks to the balloon from any thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BalloonHandle {
    shared: Arc<Shared>,
}

impl BalloonHandle {
    /// Asks the guest to hold `bytes` in the balloon (rounded down to 4 KiB pages,
    /// at most `u32::MAX` pages). If the device is live the guest gets a
    /// configuration-change interrupt; otherwise it reads the target when its
    /// driver starts.
    pub fn set_target(&self, bytes: u64) {
        let pages = (bytes / BALLOON_PAGE_SIZE).min(u64::from(u32::MAX)) as u32;
        let sh = &self.shared;
        sh.target_pages.store(pages, Ordering::SeqCst);
        sh.counters.target_sets.fetch_add(1, Ordering::Relaxed);
        sh.event(
            BalloonEventKind::TargetSet,
            sh.now_ns(),
            u64::from(pages),
            0,
        );
        if let Some(live) = lock(&sh.live).as_ref() {
            match live.interrupt.signal_config_change() {
                Ok(()) => sh
                    .counters
                    .config_interrupts
                    .fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!("virtio-balloon: cannot raise the config interrupt: {e}");
                    sh.counters.interrupt_errors.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        sh.changed();
    }

    /// The balloon target, bytes.
    pub fn target_bytes(&self) -> u64 {
        u64::from(self.shared.target_pages.load(Ordering::SeqCst)) * BALLOON_PAGE_SIZE
    }

    /// What the guest says the balloon holds (its last write of `actual`), bytes.
    pub fn actual_bytes(&self) -> u64 {
        u64::from(self.shared.actual_pages.load(Ordering::SeqCst)) * BALLOON_PAGE_SIZE
    }

    /// Whether a driver has activated the device (and not reset it).
    pub fn is_active(&self) -> bool {
        lock(&self.shared.live).is_some()
    }

    /// The guest's last statistics.
    pub fn stats(&self) -> Option<GuestStats> {
        lock(&self.shared.stats).clone()
    }

    /// Returns the guest's statistics buffer now, so fresh statistics follow
    /// (asynchronously). False if the device is not live.
    pub fn request_stats(&self) -> bool {
        match lock(&self.shared.live).as_ref() {
            Some(live) => live.kick.write(1).is_ok(),
            None => false,
        }
    }

    /// Counters, gauges and batch times.
    pub fn metrics(&self) -> BalloonMetrics {
        let sh = &self.shared;
        let mut m = sh.counters.snapshot();
        m.target_pages = u64::from(sh.target_pages.load(Ordering::SeqCst));
        m.actual_pages = u64::from(sh.actual_pages.load(Ordering::SeqCst));
        let t = sh.lock_times();
        m.inflate_time = t.inflate.clone();
        m.deflate_time = t.deflate.clone();
        m.report_time = t.report.clone();
        m
    }

    /// Takes the events recorded so far, oldest first.
    pub fn drain_events(&self) -> Vec<BalloonEvent> {
        self.shared.events.drain()
    }

    /// The epoch event and statistics timestamps count from.
    pub fn epoch(&self) -> Instant {
        self.shared.epoch
    }

    /// Waits until `cond(self)` holds, re-checking after every change the device
    /// makes (a buffer handled, a config write, a target set, activation, reset);
    /// false if `timeout` passed first.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&BalloonHandle) -> bool,
    ) -> bool {
        self.shared.wait_for(timeout, || cond(self))
    }
}

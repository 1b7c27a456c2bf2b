//! The virtio-balloon device (virtio 1.2, section 5.5) and balloon policies.
//!
//! - [`Balloon`] ([`device`]): a [`vmm::virtio::VirtioDevice`] of type 5 with an
//!   inflate, a deflate, a statistics and (optionally) a free page reporting queue,
//!   served by one worker thread (`worker.rs`: an epoll loop over the queues'
//!   ioeventfds, a stop eventfd, a stats-request eventfd and the stats timer).
//!   [`Balloon::new`] also returns a [`BalloonHandle`]: set the target, read what
//!   the guest did (`actual`, guest statistics), metrics and an event ring.
//! - [`release`]: how pages the guest gives up are returned to the host: the
//!   [`PageReleaser`] trait, [`MadviseReleaser`] (plain `MADV_DONTNEED` on guest
//!   memory) and [`SwapperReleaser`] (through [`swapper::Swapper::discard`], so the
//!   host swapper's residency, store slots and page states stay coherent).
//! - [`queues`]: parsing what the guest puts in the queues (PFN arrays coalesced
//!   into ranges, reported free ranges, the statistics buffer).
//! - [`stats`]: guest statistics ([`GuestStats`]) by their virtio names.
//! - [`metrics`]: counters and batch times ([`BalloonMetrics`], JSON via serde) and
//!   the event ring ([`BalloonEvent`]).
//! - [`policy`]: pure functions from observations to a new balloon target
//!   ([`ManualPolicy`], [`AutoPolicy`]) behind the [`BalloonPolicy`] trait.
//!
//! # What the Linux driver expects (checked against `virtio_balloon.c`, 6.1)
//!
//! - Queues are numbered in the order inflate, deflate, stats (if `STATS_VQ` was
//!   negotiated), free page hinting (if `FREE_PAGE_HINT`), reporting (if
//!   `REPORTING`): a queue whose feature is not negotiated takes no index, so the
//!   reporting queue is queue 2 when `STATS_VQ` is off. [`queues::QueueLayout`]
//!   does this mapping. This device never offers free page hinting.
//! - Inflate and deflate buffers are one device-readable descriptor holding up to
//!   256 little-endian `u32` PFNs of 4 KiB balloon pages. The driver waits for each
//!   buffer to come back before sending the next one, and only touches deflated
//!   pages again after the device returned the deflate buffer.
//! - The statistics queue runs in reverse: the driver primes it with one buffer
//!   of `(u16 tag, u64 value)` packed little-endian entries at probe time and
//!   refills it each time the device returns it.
//! - Free page reporting sends scatter-gather lists of up to 32 device-writable
//!   descriptors, each naming a free block (order `pageblock_order`, 2 MiB on
//!   x86) by address and length; the queue must hold at least 32 descriptors.
//!   A 6.1 guest with `init_on_free` or page poisoning does not use reporting
//!   unless `PAGE_POISON` is offered, which this device does not do.
//! - Config space is `num_pages` (the target, device-written) and `actual`
//!   (driver-written), both little-endian `u32`, followed by two fields this
//!   device does not use (read as zero). The driver reads `num_pages` at probe
//!   time and on every configuration-change interrupt.
//! - `DEFLATE_ON_OOM` has no device-side behaviour: the guest deflates on its own
//!   under OOM and reports it through `actual` (and the deflate queue).

pub mod device;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod metrics;
pub mod policy;
pub mod queues;
pub mod release;
mod shared;
mod spec;
pub mod stats;
mod worker;

pub use device::{Balloon, BalloonConfig, BalloonError, BalloonHandle, ThreadStartHook};
pub use metrics::{BalloonEvent, BalloonEventKind, BalloonMetrics, BatchTimes};
pub use policy::{
    AutoConfig, AutoPolicy, BalloonPolicy, ChurnPolicy, Decision, ManualPolicy, Observation,
};
pub use release::{MadviseReleaser, PageReleaser, ReleaseError, SwapperReleaser};
pub use spec::{features, BALLOON_PAGE_SIZE, DEVICE_TYPE, PFN_SHIFT};
pub use stats::{GuestStats, StatTag};

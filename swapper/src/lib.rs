//! The swaplab host swapper: userfaultfd-managed guest RAM with a resident
//! limit, eviction to a backing store, and one trace record per fault.
//!
//! Works on any private anonymous mapping (no KVM needed), so everything is
//! testable with a plain `mmap` and toucher threads.
//!
//! # Using it
//!
//! ```no_run
//! # use swapper::*;
//! # fn demo(addr: usize, len: usize) -> Result<(), SwapperError> {
//! let cfg = SwapperConfig {
//!     limit_bytes: 64 << 20,
//!     store: StoreKind::Lz4,
//!     policy: PolicyKind::Clock,
//!     checksums: true,
//!     ..Default::default()
//! };
//! // SAFETY: the region is guest RAM, mapped for the lifetime of the swapper.
//! let sw = unsafe { Swapper::start(cfg, &[GuestRegion { addr, len }])? };
//! sw.registry().register(1234, ThreadKind::Vcpu(0));
//! // ... run the guest ...
//! let status = sw.status(); // serde: evictions, swap-ins, peak resident, …
//! let records = sw.drain_trace(); // one FaultRecord per fault
//! let final_status = sw.shutdown();
//! # Ok(()) }
//! ```
//!
//! # API for the VMM
//!
//! - [`Swapper::start`]`(config, &[GuestRegion])` — take over guest RAM
//!   (one or more private anonymous regions) with a [`SwapperConfig`]
//!   (limit, slack, [`StoreKind`], [`PolicyKind`], prefetch cluster, handler
//!   threads, checksums, [`FatalAction`], `on_fatal` hook).
//! - [`Swapper::registry`] → [`ThreadRegistry::register`]`(tid,
//!   `[`ThreadKind::Vcpu`]`(i) / `[`ThreadKind::Device`]`(d))` — name the
//!   threads whose faults the trace attributes.
//! - [`Swapper::status`] → [`SwapperStatus`] (serde: counters, peak
//!   resident, store bytes, per-path latency percentiles);
//!   [`Swapper::latency`], [`Swapper::histograms`] (hdrhistogram per
//!   [`FaultPath`]); [`Swapper::drain_trace`] → [`FaultRecord`]s.
//! - [`Swapper::discard`]`(addr, len)` — the balloon's release path.
//! - [`Swapper::add_disk`], [`Swapper::disk_page`], [`Swapper::disk_changing`]
//!   — the virtio-blk device's side of the Swap Mapper ([`named`]).
//! - Fatal errors: the `on_fatal` hook (called before the faulting thread
//!   can continue; stop the vCPUs there) and [`Swapper::fatal_errors`].
//! - [`Swapper::shutdown`] / [`Swapper::shutdown_restoring`] (or drop):
//!   threads joined, regions unregistered, store freed (swap file deleted).
//!
//! If all regions fit within `limit + slack` the swapper is *passive*: it
//! registers nothing (first touches cost exactly what plain memory costs)
//! and never evicts; see [`residency`].
//!
//! # Architecture
//!
//! - Pure modules, unit-tested without userfaultfd: [`page_state`] (the
//!   per-page state machine), [`slots`] (slot allocator), [`budget`]
//!   (resident accounting), [`policy`] (fifo, random, clock),
//!   [`store`] (file, memory, lz4, fault injection), [`integrity`],
//!   [`trace`], [`status`], [`registry`].
//! - Kernel interfaces: [`uffd`] (userfaultfd ioctls incl. `UFFDIO_MOVE`,
//!   `UFFDIO_COPY_MODE_WP`, `UFFDIO_POISON`), [`pagemap`] (`PAGEMAP_SCAN`),
//!   [`staging`] (swapper-owned pages moved out of the guest).
//! - Threads: N fault handlers (`swapper-fault-N`) and one evictor
//!   (`swapper-evict`).
//! - [`kswap`]: the kernel-swap baseline (memory cgroup + zram / swap file),
//!   with guards that clean up.
//!
//! # Key mechanisms
//!
//! - **Residency without first-touch faults**: the zero-map pool, see
//!   [`residency`]. Resident memory never exceeds `limit + slack`.
//! - **Eviction** by atomic `UFFDIO_MOVE` into staging, then silent-write
//!   avoidance, zero detection, store write; see [`evict`]. A failed store
//!   write keeps the page resident.
//! - **Dirty tracking**: pages brought back for a read are installed
//!   write-protected (`UFFDIO_COPY_MODE_WP`); the first write is a
//!   synchronous write-protect fault that marks the page dirty.
//! - **Fault paths** (zero, store, minor, prefetch hit, write-protect): see
//!   [`fault`]. Integrity: crc32 per stored page, verified on every
//!   swap-in; a failed read or mismatch is never served — the page is
//!   poisoned and a [`FatalError`] reported (callback + list).
//! - **Discard** (balloon) and `UFFD_EVENT_REMOVE`: see [`discard`].
//! - **Named pages** (VSwapper's Swap Mapper): pages a disk read filled
//!   mirror their disk block; counted at eviction as false page anonymity,
//!   or, with [`SwapperConfig::named`], dropped and read back from the disk;
//!   see [`named`].

pub mod budget;
pub mod config;
mod core;
pub mod discard;
pub mod evict;
mod evictor;
pub mod fatal;
pub mod fault;
pub mod floor;
mod handler;
pub mod install;
pub mod integrity;
pub mod kswap;
mod mirrors;
pub mod named;
mod page;
mod page_bits;
pub mod page_state;
pub mod pagemap;
pub mod policy;
pub mod ratelimit;
pub mod region;
pub mod registry;
mod release;
pub mod residency;
pub mod slots;
pub mod staging;
pub mod status;
pub mod store;
mod swapper;
pub mod trace;
pub mod uffd;

pub use config::{FatalAction, PrefetchMode, SwapperConfig};
pub use discard::DiscardStats;
pub use fatal::{FatalError, FatalHook, FatalKind};
pub use install::Installed;
pub use named::DiskReader;
pub use page::PAGE_SIZE;
pub use policy::PolicyKind;
pub use region::GuestRegion;
pub use registry::{ThreadKind, ThreadRegistry};
pub use status::SwapperStatus;
pub use store::faulty::FaultInjector;
pub use store::StoreKind;
pub use swapper::{Swapper, SwapperError};
pub use trace::{FaultPath, FaultRecord, LatencySummary, PathHistograms};

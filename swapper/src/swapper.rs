//! The public handle: start, observe, discard, shut down.

use crate::budget::{Budget, Limits};
use crate::config::{ConfigError, FatalAction, SwapperConfig};
use crate::core::Shared;
use crate::discard::DiscardStats;
use crate::fatal::{FatalError, FatalSink};
use crate::install::Installed;
use crate::mirrors::DiskReader;
use crate::page::PAGE_SIZE;
use crate::page_bits::PageBits;
use crate::page_state::{PageEntry, PageState};
use crate::pagemap::{Pagemap, PagemapError};
use crate::policy::{new_policy, PolicyParams};
use crate::ratelimit::RateLimiter;
use crate::region::{GuestRegion, RegionError, Regions};
use crate::registry::ThreadRegistry;
use crate::slots::SlotAllocator;
use crate::staging::{Staging, StagingError};
use crate::status::{Counters, SwapperStatus};
use crate::store::faulty::FaultyStore;
use crate::store::{AlignedPage, StoreError};
use crate::trace::{
    FaultPath, FaultRecord, LatencySummary, PathHistograms, SharedHistograms, TraceRing,
};
use crate::uffd::{self, Uffd, UffdError};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of the swapper API.
#[derive(Debug, Error)]
pub enum SwapperError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad regions.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// userfaultfd failure.
    #[error(transparent)]
    Uffd(#[from] UffdError),
    /// Staging area failure.
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// PAGEMAP_SCAN failure.
    #[error(transparent)]
    Pagemap(#[from] PagemapError),
    /// [`Swapper::set_limit`] refused the new limit.
    #[error("cannot change the resident limit: {0}")]
    SetLimit(String),
    /// The guest mapping cannot be managed (not private anonymous
    /// read-write memory).
    #[error("region at {addr:#x} cannot be managed: {reason}")]
    Unsupported {
        /// Region address.
        addr: usize,
        /// Why.
        reason: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running host swapper over one or more guest regions.
pub struct Swapper {
    shared: Arc<Shared>,
    evictor: Option<JoinHandle<()>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<OwnedFd>,
    registered: bool,
    /// The regions were unregistered (at most once).
    unregistered: AtomicBool,
}

impl Swapper {
    /// Takes over `regions`: registers them with userfaultfd (missing and,
    /// with dirty tracking, write-protect faults), imports the pages already
    /// populated, fills the zero-map pool and starts the evictor and the
    /// fault-handler threads. If the regions fit within `limit + slack`
    /// nothing is registered (passive mode: no eviction can be needed).
    /// Transparent huge pages are disabled on registered regions (eviction
    /// works on 4 KiB pages) and they are excluded from `fork` children.
    ///
    /// # Safety
    ///
    /// Each region must be private anonymous read-write memory owned by the
    /// caller that stays mapped until the swapper is shut down or dropped,
    /// and that no Rust reference covers: the swapper moves pages in and out
    /// of it behind the compiler's back (their content, as seen by any
    /// access, is preserved).
    pub unsafe fn start(cfg: SwapperConfig, regions: &[GuestRegion]) -> Result<Self, SwapperError> {
        cfg.validate()?;
        let regions = Regions::new(regions)?;
        let pages = regions.pages();
        let limits = Limits::new(cfg.limit_pages(), cfg.slack_pages());
        let passive = pages as u64 <= limits.cap();
        let uffd = create_uffd()?;
        for (r, _) in regions.iter().filter(|_| !passive) {
            for advice in [libc::MADV_NOHUGEPAGE, libc::MADV_DONTFORK] {
                // SAFETY: advice on the caller's region (see the contract);
                // it does not change contents.
                unsafe { libc::madvise(r.addr as *mut libc::c_void, r.len, advice) };
            }
            uffd.register(r.addr, r.len, cfg.dirty_tracking || cfg.named)?;
        }
        let capacity = cfg.store_pages.unwrap_or(pages);
        let mut store = crate::store::open(&cfg.store, capacity, cfg.store_timeout)?;
        if let Some(inj) = &cfg.fault_injector {
            store = Box::new(FaultyStore::new(store, inj.clone()));
        }
        let staging_pages = (limits.limit + 4 * cfg.prefetch as u64 + 256).min(u32::MAX as u64);
        let staging = Staging::new(staging_pages as u32)?;
        let policy = new_policy(
            cfg.policy,
            PolicyParams {
                num_pages: pages as usize,
                inactive_target: (limits.limit / cfg.inactive_divisor) as usize,
                seed: cfg.seed,
            },
        );
        let on_fatal = cfg.on_fatal.clone();
        let trace_capacity = cfg.trace_capacity;
        let shared = Arc::new(Shared {
            uffd,
            pagemap: Pagemap::open()?,
            table: (0..pages)
                .map(|_| Mutex::new(PageEntry::default()))
                .collect(),
            state_counts: Shared::init_counts(pages),
            pooled: PageBits::new(pages),
            budget: Budget::new(limits),
            policy: Mutex::new(policy),
            store,
            slots: Mutex::new(SlotAllocator::new(capacity)),
            staging,
            counters: Counters::default(),
            trace: TraceRing::new(trace_capacity),
            hists: SharedHistograms::default(),
            registry: ThreadRegistry::new(),
            fatal: FatalSink::new(on_fatal),
            epoch: Instant::now(),
            passive,
            stop: AtomicBool::new(false),
            evictor_stop: AtomicBool::new(false),
            released: AtomicBool::new(false),
            wake: Mutex::default(),
            wake_cv: Condvar::new(),
            last_fault: AtomicU32::new(u32::MAX - 1),
            last_store_read: AtomicU64::new(u64::MAX),
            mirrors: crate::mirrors::MirrorIndex::default(),
            last_named: AtomicU64::new(u64::MAX),
            refill_cursor: AtomicU32::new(0),
            shrink_cursor: AtomicU32::new(0),
            log: RateLimiter::new(Duration::from_secs(1), 10),
            zero_page: AlignedPage::boxed(),
            write_backoff_until: AtomicU64::new(0),
            write_backoff: AtomicU64::new(0),
            regions,
            cfg,
        });
        let stop = Arc::new(
            crate::handler::stop_fd().map_err(|source| SwapperError::Os {
                what: "eventfd",
                source,
            })?,
        );
        let mut sw = Self {
            shared: shared.clone(),
            evictor: None,
            threads: Vec::new(),
            stop: stop.clone(),
            registered: !passive,
            unregistered: AtomicBool::new(false),
        };
        if !passive {
            sw.check_move()?;
        }
        shared.import_existing()?;
        shared.refill_pool();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|source| SwapperError::Os {
                    what: "spawning swapper thread",
                    source,
                })
        };
        // A remote store's requests leave from these threads.
        let (evict_class, fault_class) = if shared.cfg.store.is_remote() {
            let remote = seccomp::ThreadClass::SwapperRemote;
            (remote, remote)
        } else {
            use seccomp::ThreadClass::{SwapperEvictor, SwapperHandler};
            (SwapperEvictor, SwapperHandler)
        };
        let s = shared.clone();
        sw.evictor = Some(spawn(
            "swapper-evict".into(),
            Box::new(move || {
                seccomp::enter(evict_class);
                crate::evictor::run(s)
            }),
        )?);
        for i in 0..shared.cfg.handler_threads {
            let (s, st) = (shared.clone(), stop.clone());
            sw.threads.push(spawn(
                format!("swapper-fault-{i}"),
                Box::new(move || {
                    seccomp::enter(fault_class);
                    crate::handler::run(s, st)
                }),
            )?);
        }
        Ok(sw)
    }

    /// Checks that pages can be moved between the regions and staging
    /// (private anonymous read-write memory), before anything depends on it.
    fn check_move(&self) -> Result<(), SwapperError> {
        let sh = &self.shared;
        for (r, _) in sh.regions.iter() {
            let s = sh.staging.alloc().expect("fresh staging has room");
            // SAFETY: first page of a region the caller handed over; no
            // thread runs yet.
            let moved = unsafe { sh.staging.move_in(s, r.addr) };
            let back = match moved {
                // SAFETY: puts the page just moved back where it was.
                Ok(true) => unsafe { sh.staging.move_out(s, &sh.uffd, r.addr, true) },
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            sh.staging.forget(s);
            if let Err(e) = back {
                return Err(SwapperError::Unsupported {
                    addr: r.addr,
                    reason: format!(
                        "UFFDIO_MOVE refused ({e}); private anonymous RW memory required"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The thread registry (fill it with vCPU and device thread TIDs).
    pub fn registry(&self) -> ThreadRegistry {
        self.shared.registry.clone()
    }

    /// Changes the resident limit while the swapper runs; returns the new
    /// limits. Lowering it wakes the evictor, which brings residency down
    /// to the new limit in the background; raising it gives faults room at
    /// once. The slack follows the configuration's rule for the new limit.
    ///
    /// The limit can move between 16 pages and the limit the swapper started
    /// with (its staging area is sized for that one). A swapper that started
    /// passive (everything fitted) has nothing registered and refuses.
    pub fn set_limit(&self, limit_bytes: u64) -> Result<Limits, SwapperError> {
        let sh = &self.shared;
        if sh.passive {
            return Err(SwapperError::SetLimit(
                "the swapper started passive (all guest memory fit in its limit), so no page is managed; start it with a lower limit"
                    .into(),
            ));
        }
        let max = sh.cfg.limit_pages();
        let pages = limit_bytes / PAGE_SIZE as u64;
        if !(16..=max).contains(&pages) {
            return Err(SwapperError::SetLimit(format!(
                "{limit_bytes} bytes is outside 16 pages ({} bytes) to the starting limit ({} bytes)",
                16 * PAGE_SIZE,
                max * PAGE_SIZE as u64
            )));
        }
        let cfg = SwapperConfig {
            limit_bytes: pages * PAGE_SIZE as u64,
            ..SwapperConfig::default()
        };
        let slack = match sh.cfg.slack_bytes {
            Some(b) => b / PAGE_SIZE as u64,
            None => cfg.slack_pages(),
        };
        let limits = Limits::new(pages, slack);
        sh.budget.set_limits(limits);
        sh.nudge(false);
        Ok(limits)
    }

    /// Counters and gauges.
    pub fn status(&self) -> SwapperStatus {
        self.shared.status()
    }

    /// Per-path latency summaries (paths with at least one fault).
    pub fn latency(&self) -> Vec<(FaultPath, LatencySummary)> {
        self.shared.hists.summaries()
    }

    /// A copy of the per-path histograms.
    pub fn histograms(&self) -> PathHistograms {
        self.shared.hists.snapshot()
    }

    /// The instant trace times count from: a [`FaultRecord`]'s `t_read_ns` is
    /// ns since this. Devices that trace their own work (blk requests) use the
    /// same origin so their records can be joined with faults.
    pub fn epoch(&self) -> Instant {
        self.shared.epoch
    }

    /// Takes the trace records collected so far (oldest first).
    pub fn drain_trace(&self) -> Vec<FaultRecord> {
        self.shared.trace.drain()
    }

    /// Fatal errors so far (pages that could not be served).
    pub fn fatal_errors(&self) -> Vec<FatalError> {
        self.shared.fatal.all()
    }

    /// Whether any fatal error happened.
    pub fn has_fatal(&self) -> bool {
        self.shared.fatal.any()
    }

    /// Gives the whole pages of `[addr, addr + len)` back to the host
    /// (balloon inflate, free page reporting): store copies and staged pages
    /// are dropped, the budget released, the range `MADV_DONTNEED`ed. A later
    /// access reads zeros.
    pub fn discard(&self, addr: usize, len: usize) -> Result<DiscardStats, SwapperError> {
        self.shared
            .discard(addr, len)
            .map_err(|source| SwapperError::Os {
                what: "madvise(MADV_DONTNEED)",
                source,
            })
    }

    /// The false-read mitigation (see [`crate::install`]): if the page at
    /// `addr` (page aligned) is evicted, installs `data` as its content
    /// without reading the store and returns [`Installed::Yes`]; otherwise
    /// does nothing and the caller writes the page itself.
    pub fn install_page(&self, addr: usize, data: &[u8; PAGE_SIZE]) -> Installed {
        self.shared.install_page(addr, data)
    }

    /// Registers guest disk `disk` (0..[`crate::named::MAX_DISKS`]) and how
    /// to read it, for named pages ([`crate::named`]).
    pub fn add_disk(&self, disk: u8, reader: Arc<dyn DiskReader>) -> Result<(), SwapperError> {
        self.shared
            .mirrors
            .add_disk(disk, reader)
            .map_err(|reason| SwapperError::Unsupported { addr: 0, reason })
    }

    /// A disk read is about to fill the whole guest page at `addr` with
    /// `data`, the bytes at `offset` of disk `disk` (the Swap Mapper's input,
    /// see [`crate::named`]). With [`SwapperConfig::named`] the swapper puts
    /// `data` there itself, write-protected, and answers
    /// [`Installed::Yes`]: the caller must not write the page. Otherwise it
    /// records the page as a copy of the block (for the `false_anonymity`
    /// count) and, with `fill_evicted`, installs an evicted page like
    /// [`Swapper::install_page`].
    pub fn disk_page(
        &self,
        addr: usize,
        disk: u8,
        offset: u64,
        data: &[u8; PAGE_SIZE],
        fill_evicted: bool,
    ) -> Installed {
        self.shared
            .disk_page(addr, (disk, offset), data, fill_evicted)
    }

    /// Bytes `[offset, offset + len)` of disk `disk` are about to be written
    /// or discarded: every page mirroring them stops being a copy, and a
    /// named page whose only copy is there is read back first. Call it
    /// before the change reaches the disk (it returns when that is safe).
    pub fn disk_changing(&self, disk: u8, offset: u64, len: u64) {
        self.shared.disk_changing(disk, offset, len);
    }

    /// Pages of the regions and staging holding real memory right now, as
    /// the kernel's page tables say (`PAGEMAP_SCAN`), independent of the
    /// swapper's own accounting.
    ///
    /// Pages do not move between guest memory and staging during the scan
    /// (an eviction under way would otherwise be seen in both); copies in and
    /// releases go on, so the count is of one moment per address.
    pub fn scanned_resident_pages(&self) -> Result<u64, SwapperError> {
        let sh = &self.shared;
        sh.staging.without_moves(|| {
            let mut n = 0;
            for (r, _) in sh.regions.iter() {
                n += sh.pagemap.count_real(r.addr, r.addr + r.len)?;
            }
            let s0 = sh.staging.addr(0);
            n += sh
                .pagemap
                .count_real(s0, s0 + sh.staging.capacity() as usize * PAGE_SIZE)?;
            Ok(n)
        })
    }

    /// The staging area (swapper-owned memory holding moved-aside pages),
    /// for measuring resident memory from outside.
    pub fn staging_region(&self) -> GuestRegion {
        GuestRegion {
            addr: self.shared.staging.addr(0),
            len: self.shared.staging.capacity() as usize * PAGE_SIZE,
        }
    }

    /// Managed regions.
    pub fn regions(&self) -> Vec<GuestRegion> {
        self.shared.regions.iter().map(|(r, _)| r).collect()
    }

    /// Brings every evicted and staged page back into the mapping (ignoring
    /// the limit) so the regions hold their full content. The evictor keeps
    /// running and may evict again: see [`Swapper::shutdown_restoring`].
    pub fn restore_all(&self) -> Result<u64, SwapperError> {
        let sh = &self.shared;
        let mut buf = AlignedPage::boxed();
        let mut n = 0;
        for idx in 0..sh.regions.pages() {
            let mut g = sh.lock(idx);
            let before = *g;
            let addr = sh.addr(idx);
            match g.state {
                PageState::Evicted => {
                    let slot = g.slot.expect("evicted page has a slot");
                    sh.store.read(slot, &mut buf.0)?;
                    if sh.cfg.checksums {
                        crate::integrity::verify(g.crc, &buf.0).map_err(|m| {
                            SwapperError::Unsupported {
                                addr,
                                reason: m.to_string(),
                            }
                        })?;
                    }
                    // SAFETY: registered guest page whose lock we hold.
                    unsafe { sh.uffd.copy(addr, buf.0.as_ptr(), PAGE_SIZE, false, true) }?;
                }
                PageState::Staged { index, .. } => {
                    // SAFETY: moves our staged page back to its guest page.
                    unsafe { sh.staging.move_out(index, &sh.uffd, addr, true) }?;
                    sh.staging.forget(index);
                }
                PageState::Named => {
                    let m = g.mirror.expect("named page has a mirror");
                    sh.read_block(m, &mut buf.0)
                        .map_err(|kind| SwapperError::Unsupported {
                            addr,
                            reason: format!("{kind:?}"),
                        })?;
                    // SAFETY: registered guest page whose lock we hold.
                    unsafe { sh.uffd.copy(addr, buf.0.as_ptr(), PAGE_SIZE, false, true) }?;
                }
                _ => continue,
            }
            sh.budget.admit(!before.committed() as u64);
            g.installed(true)
                .expect("evicted/staged/named page can be installed");
            // Writable now: no longer a known copy of a disk block.
            g.mirror = None;
            sh.settle(idx, &before, &g, !before.committed());
            sh.policy().mapped(idx);
            n += 1;
        }
        Ok(n)
    }

    /// Tells the evictor to stop (it ends after its current victim).
    fn signal_evictor(&self) {
        self.shared.evictor_stop.store(true, Ordering::Release);
        self.shared.nudge(false);
    }

    /// Tells the fault handlers to stop (each ends after its current fault).
    fn signal_handlers(&self) {
        self.shared.stop.store(true, Ordering::Release);
        crate::handler::signal(&self.stop);
    }

    fn stop_evictor(&mut self) {
        self.signal_evictor();
        if let Some(t) = self.evictor.take() {
            let _ = t.join();
        }
    }

    fn stop_threads(&mut self) {
        self.stop_evictor();
        self.signal_handlers();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Unregisters the regions, once: at shutdown, or earlier by
    /// [`Swapper::release_waiters`].
    fn unregister_regions(&self) {
        if !self.registered || self.unregistered.swap(true, Ordering::AcqRel) {
            return;
        }
        for (r, _) in self.shared.regions.iter() {
            if let Err(e) = self.shared.uffd.unregister(r.addr, r.len) {
                tracing::warn!("swapper: {e}");
            }
        }
    }

    /// For a run that has stalled: describes what the swapper is doing (for
    /// the stall report), then stops evicting and serving faults and
    /// unregisters the regions. Unregistering wakes every thread waiting on a
    /// fault in them, and from then on they fault like plain anonymous
    /// memory: pages still evicted or staged read as zeros, so the guest's
    /// memory is no longer trustworthy (the status says `released`). A call
    /// after the first only describes. Shut the swapper down as usual
    /// afterwards; a handler blocked in the store is joined only once the
    /// store returns.
    pub fn release_waiters(&self) -> String {
        let diagnosis = self.shared.diagnose();
        self.signal_evictor();
        self.signal_handlers();
        if self.registered {
            self.shared.released.store(true, Ordering::Release);
        }
        self.unregister_regions();
        diagnosis
    }

    /// Stops the threads, unregisters the regions and frees the store (the
    /// swap file is deleted). Pages still evicted are lost (the regions read
    /// zeros there afterwards); call [`Swapper::restore_all`] first to keep
    /// them. Returns the final status.
    pub fn shutdown(mut self) -> SwapperStatus {
        self.stop_threads();
        self.unregister_regions();
        let status = self.shared.status();
        self.close_store();
        status
    }

    /// Pages the store holds per server (empty for a local store).
    pub fn store_nodes(&self) -> Result<Vec<crate::store::StoreNode>, StoreError> {
        self.shared.store.nodes()
    }

    /// Releases what the store holds outside this process (a remote store's
    /// keys); a failure is logged (the next run sweeps what is left).
    fn close_store(&self) {
        if let Err(e) = self.shared.store.close() {
            tracing::warn!(
                "swapper: closing the {} store (a later run on this host sweeps what is left): {e}",
                self.shared.store.kind()
            );
        }
    }

    /// Stops evicting, brings every page back into the regions
    /// ([`Swapper::restore_all`]), then shuts down: the regions keep their
    /// full content and are plain memory afterwards. On a store read error
    /// the swapper is still shut down and the error returned.
    pub fn shutdown_restoring(mut self) -> Result<SwapperStatus, SwapperError> {
        self.stop_evictor();
        let restored = self.restore_all();
        self.stop_threads();
        self.unregister_regions();
        self.close_store();
        restored.map(|_| self.shared.status())
    }

    /// The fatal action in effect.
    pub fn fatal_action(&self) -> FatalAction {
        self.shared.cfg.fatal_action
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop_threads();
        self.unregister_regions();
        self.close_store();
    }
}

fn create_uffd() -> Result<Uffd, UffdError> {
    Uffd::create(
        uffd::FEATURE_PAGEFAULT_FLAG_WP
            | uffd::FEATURE_EVENT_REMOVE
            | uffd::FEATURE_THREAD_ID
            | uffd::FEATURE_MOVE
            | uffd::FEATURE_POISON,
    )
}

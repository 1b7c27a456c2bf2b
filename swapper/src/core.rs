//! State shared by the handler threads, the evictor and the public API, and
//! the accounting every page transition goes through.
//!
//! Locking rules (deadlock freedom):
//! - one mutex per page; a thread blocks on at most one page lock at a time
//!   and only while holding no other page lock; additional page locks are
//!   only taken with `try_lock` (direct reclaim, prefetch, zero clusters);
//! - the policy mutex and the slot/staging allocator mutexes are leaves:
//!   never held while acquiring a page lock;
//! - nobody holding a page lock waits for a userfaultfd event to be read:
//!   the swapper never `madvise`s the guest range while holding a page lock
//!   (evictions use `UFFDIO_MOVE`, which raises no event), and an ioctl that
//!   returns `EAGAIN` (an unread `UFFD_EVENT_REMOVE`) is abandoned and
//!   retried after the locks are dropped.

use crate::budget::{Budget, Limits};
use crate::config::SwapperConfig;
use crate::fatal::FatalSink;
use crate::mirrors::MirrorIndex;
use crate::page_bits::PageBits;
use crate::page_state::{PageEntry, PageIdx, PageState};
use crate::pagemap::Pagemap;
use crate::policy::Policy;
use crate::ratelimit::RateLimiter;
use crate::region::Regions;
use crate::registry::ThreadRegistry;
use crate::slots::{Slot, SlotAllocator};
use crate::staging::Staging;
use crate::status::{Counters, PageCounts, SwapperStatus};
use crate::store::{AlignedPage, Store};
use crate::trace::{SharedHistograms, TraceRing};
use crate::uffd::Uffd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Number of distinct [`PageState`] kinds (for per-state counts).
const KINDS: usize = 8;

/// The kind of `ZeroMapped` pages.
const POOLED: usize = 1;

fn kind(s: PageState) -> usize {
    match s {
        PageState::Absent => 0,
        PageState::ZeroMapped => POOLED,
        PageState::Resident => 2,
        PageState::Staged { .. } => 3,
        PageState::Evicted => 4,
        PageState::Ballooned => 5,
        PageState::Poisoned => 6,
        PageState::Named => 7,
    }
}

/// Evictor wake-up request.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pub pending: bool,
    pub scan: bool,
}

/// Everything the swapper threads share.
pub(crate) struct Shared {
    pub cfg: SwapperConfig,
    pub regions: Regions,
    pub uffd: Uffd,
    pub pagemap: Pagemap,
    pub table: Box<[Mutex<PageEntry>]>,
    pub state_counts: [AtomicU64; KINDS],
    /// The pages in the zero-map pool (state `ZeroMapped`), kept by
    /// [`Shared::settle`] with the per-state counts.
    pub pooled: PageBits,
    pub budget: Budget,
    pub policy: Mutex<Box<dyn Policy>>,
    pub store: Box<dyn Store>,
    pub slots: Mutex<SlotAllocator>,
    pub staging: Staging,
    pub counters: Counters,
    pub trace: TraceRing,
    pub hists: SharedHistograms,
    pub registry: ThreadRegistry,
    pub fatal: FatalSink,
    pub epoch: Instant,
    /// Passive mode: the regions fit within the limit, so they are not
    /// registered with userfaultfd at all (see [`crate::residency`]).
    pub passive: bool,
    pub stop: AtomicBool,
    pub evictor_stop: AtomicBool,
    /// The regions were unregistered by [`crate::Swapper::release_waiters`].
    pub released: AtomicBool,
    pub wake: Mutex<Wake>,
    pub wake_cv: Condvar,
    pub last_fault: AtomicU32,
    /// The last store read, as `page << 32 | slot` (decayed-sequentiality count).
    pub last_store_read: AtomicU64,
    /// Which pages mirror which disk blocks, and the disks ([`crate::named`]).
    pub mirrors: MirrorIndex,
    /// The block of the last named fault (or read-ahead), for read-ahead.
    pub last_named: AtomicU64,
    pub refill_cursor: AtomicU32,
    pub shrink_cursor: AtomicU32,
    pub log: RateLimiter,
    pub zero_page: Box<AlignedPage>,
    /// Store writes are not attempted before this time (ns since start).
    pub write_backoff_until: AtomicU64,
    /// Current backoff after consecutive write failures (ns).
    pub write_backoff: AtomicU64,
}

impl Shared {
    /// Locks page `idx`.
    pub fn lock(&self, idx: PageIdx) -> MutexGuard<'_, PageEntry> {
        self.table[idx as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Locks page `idx` if nobody holds it.
    pub fn try_lock(&self, idx: PageIdx) -> Option<MutexGuard<'_, PageEntry>> {
        match self.table[idx as usize].try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> MutexGuard<'_, Box<dyn Policy>> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// ns since start.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Host address of page `idx`.
    pub fn addr(&self, idx: PageIdx) -> usize {
        self.regions.addr_of(idx)
    }

    /// Number of pages in state kind of `s`.
    pub fn count_of(&self, s: PageState) -> u64 {
        self.state_counts[kind(s)].load(Ordering::Relaxed)
    }

    /// Books a transition of page `idx` from `before` to `after`: committed
    /// and resident counters, per-state counts, and removal from the policy
    /// when the page stops holding memory. `reserved` says the caller holds
    /// one committed unit reserved for this page (consumed if the page
    /// became committed, released otherwise). Insertion into the policy is
    /// the caller's job (it knows whether the page was mapped, staged or
    /// reactivated).
    pub fn settle(&self, idx: PageIdx, before: &PageEntry, after: &PageEntry, reserved: bool) {
        let (b, a) = (before.committed(), after.committed());
        match (b, a) {
            (false, true) if !reserved => self.budget.force_reserve(1),
            (false, true) => {}
            (true, false) => {
                self.budget.release(1);
                if reserved {
                    self.budget.release(1);
                }
            }
            _ if reserved => self.budget.release(1),
            _ => {}
        }
        match (before.in_policy(), after.in_policy()) {
            (false, true) => self.budget.add_resident(1),
            (true, false) => {
                self.budget.sub_resident(1);
                self.policy().removed(idx);
            }
            _ => {}
        }
        self.mirrors.moved(idx, before.mirror, after.mirror);
        let (kb, ka) = (kind(before.state), kind(after.state));
        if kb != ka {
            self.state_counts[kb].fetch_sub(1, Ordering::Relaxed);
            self.state_counts[ka].fetch_add(1, Ordering::Relaxed);
            if ka == POOLED {
                self.pooled.set(idx);
            } else if kb == POOLED {
                self.pooled.clear(idx);
            }
        }
    }

    /// Returns a store slot to the allocator.
    pub fn free_slot(&self, slot: Option<Slot>) {
        if let Some(slot) = slot {
            self.store.discard(slot);
            let r = self
                .slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free(slot);
            debug_assert!(r.is_ok(), "{r:?}");
        }
    }

    /// Allocates a store slot.
    pub fn alloc_slot(&self) -> Option<Slot> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).alloc()
    }

    /// Asks the evictor to run (and to scan the pool if `scan`).
    pub fn nudge(&self, scan: bool) {
        let mut w = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        w.pending = true;
        w.scan |= scan;
        self.wake_cv.notify_one();
    }

    /// The resident limits now (they can change at run time).
    pub fn limits(&self) -> Limits {
        self.budget.limits()
    }

    /// Whether a fault should wake the evictor: residency (or committed
    /// memory) has gone past its wake level, half the headroom above the
    /// evictor's target (see [`crate::budget::Limits::wake_level`]).
    pub fn over_targets(&self) -> bool {
        let l = self.limits();
        self.budget.resident() > l.wake_level()
            || self.budget.committed() > l.committed_wake_level()
    }

    /// Logs a warning unless rate-limited.
    pub fn warn(&self, msg: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.log.allow() {
            if suppressed > 0 {
                tracing::warn!("swapper: {msg} ({suppressed} similar messages suppressed)");
            } else {
                tracing::warn!("swapper: {msg}");
            }
        }
    }

    /// Logs an error unless rate-limited.
    pub fn error(&self, msg: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.log.allow() {
            tracing::error!("swapper: {msg} ({suppressed} messages suppressed before)");
        }
    }

    /// Whether store writes are backing off after failures.
    pub fn writes_backing_off(&self) -> bool {
        self.now_ns() < self.write_backoff_until.load(Ordering::Relaxed)
    }

    /// Books the result of a store write: failures back off exponentially
    /// (1 ms doubling to 1 s) so a failing store is not hammered; a success
    /// resets the backoff.
    pub fn write_result(&self, ok: bool) {
        if ok {
            if self.write_backoff.load(Ordering::Relaxed) != 0 {
                self.write_backoff.store(0, Ordering::Relaxed);
            }
            return;
        }
        let b = (self.write_backoff.load(Ordering::Relaxed) * 2).clamp(1_000_000, 1_000_000_000);
        self.write_backoff.store(b, Ordering::Relaxed);
        self.write_backoff_until
            .store(self.now_ns() + b, Ordering::Relaxed);
    }

    /// Snapshot of everything countable.
    pub fn status(&self) -> SwapperStatus {
        let c = |s| self.count_of(s);
        let slots_used = self.slots.lock().unwrap_or_else(|e| e.into_inner()).used();
        let limits = self.limits();
        let (policy, policy_pages) = {
            let p = self.policy();
            (p.kind().name().to_string(), p.len() as u64)
        };
        SwapperStatus {
            passive: self.passive,
            released: self.released.load(Ordering::Relaxed),
            store: self.store.kind().to_string(),
            policy,
            region_pages: self.regions.pages() as u64,
            limit_pages: limits.limit,
            slack_pages: limits.slack,
            headroom_pages: limits.headroom,
            committed_pages: self.budget.committed(),
            resident_pages: self.budget.resident(),
            policy_pages,
            peak_resident_pages: self.budget.peak_committed(),
            peak_known_resident_pages: self.budget.peak_resident(),
            limit_overshoots: self.budget.overshoots(),
            store_bytes: self.store.bytes_used(),
            store_slots: slots_used as u64,
            staging_pages: self.staging.used() as u64,
            trace_dropped: self.trace.dropped(),
            fatal_errors: self.fatal.all().len() as u64,
            mirrored_pages: self.mirrors.len() as u64,
            latency: self
                .hists
                .summaries()
                .into_iter()
                .map(|(p, l)| (p.name().to_string(), l))
                .collect(),
            pages: PageCounts {
                absent: c(PageState::Absent),
                zero_mapped: c(PageState::ZeroMapped),
                resident: c(PageState::Resident),
                staged: c(PageState::Staged {
                    index: 0,
                    kind: crate::page_state::StageKind::Inactive,
                }),
                evicted: c(PageState::Evicted),
                ballooned: c(PageState::Ballooned),
                poisoned: c(PageState::Poisoned),
                named: c(PageState::Named),
            },
            counters: self.counters.snapshot(),
        }
    }

    /// Initial per-state counts (all pages start `Absent`).
    pub fn init_counts(pages: u32) -> [AtomicU64; KINDS] {
        let counts: [AtomicU64; KINDS] = Default::default();
        counts[0].store(pages as u64, Ordering::Relaxed);
        counts
    }
}

/// Bumps a counter.
macro_rules! bump {
    ($shared:expr, $name:ident) => {
        $shared
            .counters
            .$name
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
    ($shared:expr, $name:ident, $n:expr) => {
        $shared
            .counters
            .$name
            .fetch_add($n as u64, std::sync::atomic::Ordering::Relaxed)
    };
}
pub(crate) use bump;

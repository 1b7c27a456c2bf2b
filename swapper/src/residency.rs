//! How the swapper knows what is resident without taking a fault on first
//! touch: the zero-map pool.
//!
//! **Design.** Pages nobody has touched are mapped up front to the shared
//! zero page with `UFFDIO_ZEROPAGE` (state `ZeroMapped`). A read of such a
//! page costs nothing; the first write is the kernel's own copy-on-write
//! (no userfaultfd round trip, no swapper involvement). The swapper cannot
//! see those writes, so it *counts every pool page as committed*: the budget
//! ([`crate::budget`]) holds `committed = resident + staged + pool` and never
//! lets it exceed `cap = limit + slack`. Host memory used by the region is
//! therefore always `≤ committed ≤ limit + slack`, by construction, whatever
//! the guest does and however late the evictor runs.
//!
//! The evictor keeps the *known* resident pages at `limit − headroom` and
//! tops the pool up to `cap − headroom` in the background (address order),
//! so under steady pressure up to `slack + headroom` pages can be
//! first-touched without any fault. It learns which pool pages were written
//! with `PAGEMAP_SCAN` (present and not the zero pfn) over the runs of pool
//! pages only (a bitmap kept with the page states), promotes them to
//! resident (they become eviction candidates), and adapts the scan interval
//! (halved when a scan finds written pages, doubled up to
//! `max_scan_interval` when it finds none; a fault that finds the pool empty
//! asks for a scan at once).
//!
//! **Slack.** Residency may exceed the limit by at most `slack` pages
//! (default `max(1 MiB, limit / 16)`), and only by pool pages written since
//! the last scan. With `slack = 0` the limit is strict and the pool only
//! uses the headroom. The only way past `limit + slack` is a forced
//! reservation when nothing can be evicted (every store write failing and
//! no clean or zero victim), counted in `limit_overshoots`.
//!
//! **Passive mode.** When all regions together fit within `limit + slack`,
//! the limit can never be exceeded, so nothing ever needs evicting: the
//! swapper then does not register the regions with userfaultfd at all (not
//! even the zero page is mapped; first touches are plain anonymous faults,
//! the same cost as without a swapper), counts every page as committed, and
//! only scans to keep its resident count current. `discard` still works
//! (plain `MADV_DONTNEED`).
//!
//! **When first touch does fault.** If the guest first-touches pages faster
//! than the evictor refills the pool, the untouched page is not mapped and
//! the access takes one zero fault; that fault also zero-maps up to
//! `zero_cluster` aligned neighbours when there is room, so a streaming
//! first touch pays one round trip per cluster, not per page. When the whole
//! region fits in `limit + slack − headroom` the pool covers every page and
//! first touches never fault.

use crate::core::{bump, Shared};
use crate::page::PAGE_SIZE;
use crate::page_state::{PageEntry, PageIdx, PageState};
use crate::pagemap::{PageRegion, Query};
use std::sync::atomic::Ordering;

/// Pool runs fewer than this many pages apart are scanned in one walk.
const SCAN_JOIN: u32 = 64;

/// Longest run zero-mapped in one ioctl.
const RUN: usize = 64;

impl Shared {
    /// Scans the regions and promotes written pool pages to resident.
    /// Returns the number promoted.
    pub(crate) fn promote_scan(&self) -> u64 {
        if self.count_of(PageState::ZeroMapped) == 0 {
            return 0;
        }
        bump!(self, scans);
        let started = std::time::Instant::now();
        let promoted = self.promote_written();
        bump!(self, scan_ns, started.elapsed().as_nanos());
        promoted
    }

    /// One PAGEMAP_SCAN pass over the pool: the page tables of the runs of
    /// pool pages only (runs up to [`SCAN_JOIN`] pages apart walked as one),
    /// not of whole regions, so a scan costs what the pool holds. Promotes
    /// the pool pages found written.
    fn promote_written(&self) -> u64 {
        let mut promoted = 0;
        let mut found: Vec<PageRegion> = Vec::new();
        for (r, first) in self.regions.iter() {
            let end = first + (r.len / PAGE_SIZE) as PageIdx;
            for (lo, hi) in self.pooled.runs(first, end, SCAN_JOIN) {
                found.clear();
                let (a, b) = (self.addr(lo), self.addr(hi - 1) + PAGE_SIZE);
                if let Err(e) = self.pagemap.scan(a, b, Query::REAL, &mut found) {
                    self.warn(format_args!("{e}"));
                    bump!(self, pool_promotions, promoted);
                    return promoted;
                }
                for run in &found {
                    let mut a = run.start as usize;
                    while a < run.end as usize {
                        if let Some(idx) = self.regions.page_of(a) {
                            promoted += self.promote(idx) as u64;
                        }
                        a += PAGE_SIZE;
                    }
                }
            }
        }
        bump!(self, pool_promotions, promoted);
        promoted
    }

    fn promote(&self, idx: PageIdx) -> bool {
        let mut g = self.lock(idx);
        if g.state != PageState::ZeroMapped || g.discarding {
            return false;
        }
        let before = *g;
        g.installed(true).expect("pool page can be promoted");
        self.settle(idx, &before, &g, false);
        self.policy().mapped(idx);
        true
    }

    /// Unmaps up to `n` pool pages (untouched ones are dropped; written ones
    /// become inactive resident pages). `blocking` waits for page locks.
    /// Returns committed units freed.
    pub(crate) fn shrink_pool(&self, n: u64, blocking: bool) -> u64 {
        if self.passive {
            return 0;
        }
        let pages = self.regions.pages();
        let mut freed = 0;
        let mut visited = 0;
        while freed < n && visited < pages && self.count_of(PageState::ZeroMapped) > 0 {
            let idx = self.shrink_cursor.fetch_add(1, Ordering::Relaxed) % pages;
            visited += 1;
            let g = if blocking {
                Some(self.lock(idx))
            } else {
                self.try_lock(idx)
            };
            let Some(mut g) = g else { continue };
            if g.state != PageState::ZeroMapped || g.discarding {
                continue;
            }
            let before = *g;
            let Some(s) = self.staging.alloc() else { break };
            // SAFETY: guest page whose lock we hold.
            match unsafe { self.staging.move_in(s, self.addr(idx)) } {
                Ok(moved) => {
                    // SAFETY: slot `s` holds the page when `moved`.
                    if !moved || crate::integrity::is_zero(unsafe { self.staging.page(s) }) {
                        if moved {
                            self.staging.release(s);
                        } else {
                            self.staging.forget(s);
                        }
                        g.zeroed().expect("pool page can be zeroed");
                        bump!(self, pool_reclaims);
                        freed += 1;
                    } else {
                        // Written since the last scan: keep it, as inactive.
                        g.installed(true).expect("pool page can be promoted");
                        g.staged(s, crate::page_state::StageKind::Inactive)
                            .expect("resident page can be staged");
                        bump!(self, pool_promotions);
                        self.policy().staged(idx);
                    }
                    self.settle(idx, &before, &g, false);
                }
                Err(_) => {
                    self.staging.forget(s);
                    bump!(self, eagain_retries);
                }
            }
        }
        freed
    }

    /// Zero-maps `Absent` pages (address order, from a cursor) while
    /// committed stays at or below the soft cap. Returns pages mapped.
    pub(crate) fn refill_pool(&self) -> u64 {
        let soft = self.limits().soft_cap();
        let pages = self.regions.pages();
        let mut mapped = 0;
        let mut visited = 0u32;
        while visited < pages
            && self.count_of(PageState::Absent) > 0
            && self.budget.committed() < soft
            && !self.stop.load(Ordering::Relaxed)
        {
            let start = self.refill_cursor.load(Ordering::Relaxed) % pages;
            let room = (self.regions.pages_to_region_end(start) as usize).min(RUN);
            let mut guards = Vec::with_capacity(room);
            for i in 0..room as u32 {
                match self.try_lock(start + i) {
                    Some(g) if g.state == PageState::Absent => guards.push(g),
                    _ => break,
                }
            }
            let step = guards.len().max(1) as u32;
            self.refill_cursor.store(start + step, Ordering::Relaxed);
            visited += step;
            if guards.is_empty() {
                continue;
            }
            let mut n = guards.len() as u64;
            while n > 0 && !self.budget.try_reserve(n, soft) {
                n /= 2;
            }
            guards.truncate(n as usize);
            mapped += self.zero_map_run(start, &mut guards, false);
        }
        bump!(self, pool_refills, mapped);
        mapped
    }

    /// Zero-maps the locked run of pages starting at `start` (each guard's
    /// page is `start + i`; one committed unit reserved per guard). Pages
    /// that could not be mapped release their reservation. Returns pages
    /// mapped.
    pub(crate) fn zero_map_run(
        &self,
        start: PageIdx,
        guards: &mut [std::sync::MutexGuard<'_, PageEntry>],
        wake: bool,
    ) -> u64 {
        if guards.is_empty() {
            return 0;
        }
        let len = guards.len() * PAGE_SIZE;
        // SAFETY: the run lies in a registered guest region (raw memory) and
        // we hold the locks of all its pages.
        let res = unsafe { self.uffd.zeropage(self.addr(start), len, wake) };
        let done = match &res {
            Ok(n) => n / PAGE_SIZE,
            Err(e) => {
                if e.errno() == Some(nix::errno::Errno::EEXIST) {
                    bump!(self, eexist);
                } else {
                    bump!(self, eagain_retries);
                }
                e.done() / PAGE_SIZE
            }
        };
        for (i, g) in guards.iter_mut().enumerate() {
            let before = **g;
            let idx = start + i as u32;
            if i < done {
                let freed = g.zero_mapped().expect("absent page can be zero-mapped");
                self.free_slot(freed);
                self.settle(idx, &before, g, true);
            } else {
                self.budget.release(1);
            }
        }
        done as u64
    }

    /// Reads the page tables of the regions at start-up: pages already
    /// populated become resident (dirty) or pool pages (zero pfn).
    pub(crate) fn import_existing(&self) -> Result<(), crate::pagemap::PagemapError> {
        let mut runs = Vec::new();
        for (r, _) in self.regions.iter() {
            runs.clear();
            self.pagemap
                .scan(r.addr, r.addr + r.len, Query::POPULATED, &mut runs)?;
            for run in &runs {
                let zero = run.categories & crate::pagemap::PAGE_IS_PFNZERO != 0;
                let mut a = run.start as usize;
                while a < run.end as usize {
                    let idx = self.regions.page_of(a).expect("scan stays in region");
                    let mut g = self.lock(idx);
                    let before = *g;
                    self.budget.admit(1);
                    if zero {
                        g.zero_mapped().expect("absent page can be zero-mapped");
                    } else {
                        g.installed(true).expect("absent page can be installed");
                        self.policy().mapped(idx);
                    }
                    self.settle(idx, &before, &g, true);
                    a += PAGE_SIZE;
                }
            }
        }
        if self.passive {
            // Every untouched page may become resident behind our back.
            for idx in 0..self.regions.pages() {
                let mut g = self.lock(idx);
                if g.state == PageState::Absent {
                    let before = *g;
                    self.budget.admit(1);
                    g.zero_mapped().expect("absent page can join the pool");
                    self.settle(idx, &before, &g, true);
                }
            }
        }
        Ok(())
    }
}

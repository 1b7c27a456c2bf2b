//! Giving memory back: [`crate::Swapper::discard`] (the balloon's path) and
//! `UFFD_EVENT_REMOVE` (someone else `madvise`d the guest range).
//!
//! `discard` makes every page of the range `Ballooned`: mapped pages are
//! moved out with `UFFDIO_MOVE` and dropped (no `MADV_DONTNEED` on the guest
//! range, so no REMOVE event: the balloon never makes vCPU faults wait for an
//! event reader), store slots and staged copies are freed, the budget is
//! released. Only pages that cannot be moved (poison markers, pinned pages)
//! are `MADV_DONTNEED`ed, with no page lock held. A later access reads zeros.
//!
//! Note: while any REMOVE event is pending, every page-table ioctl answers
//! `EAGAIN`. A thread calling `madvise(MADV_DONTNEED)` on the guest range in
//! a tight loop therefore starves fault handling; the swapper retries, but
//! cannot make progress until such madvise calls pause.
//!
//! A REMOVE event arrives *before* the kernel zaps the range. Processing
//! unmaps every mapped page of the range itself (`UFFDIO_MOVE` aside, then
//! dropped), so no scan or eviction in between can save the old content and
//! serve it later; store copies and staged pages are dropped; every page
//! becomes `Ballooned` (reads zeros). A page faulted back in before the zap
//! is simply zapped again by the kernel and found unmapped later (the
//! "external zap" path of [`crate::fault`]).

use crate::core::{bump, Shared};
use crate::page::PAGE_SIZE;
use crate::page_state::{PageIdx, PageState};

/// What a discard did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiscardStats {
    /// Pages in the range.
    pub pages: u64,
    /// Pages that held host memory (resident, staged or pool).
    pub committed_released: u64,
    /// Store slots freed.
    pub slots_freed: u64,
}

impl Shared {
    /// Page indices of the whole pages of `[start, end)` inside the regions,
    /// as (first page, host address, count) runs.
    fn runs_in(&self, start: usize, end: usize) -> Vec<(PageIdx, usize, usize)> {
        let start = start.next_multiple_of(PAGE_SIZE);
        let end = end - end % PAGE_SIZE;
        self.regions
            .iter()
            .filter_map(|(r, first)| {
                let s = start.max(r.addr);
                let e = end.min(r.addr + r.len);
                (s < e).then(|| {
                    (
                        first + ((s - r.addr) / PAGE_SIZE) as PageIdx,
                        s,
                        (e - s) / PAGE_SIZE,
                    )
                })
            })
            .collect()
    }

    /// Discards `[addr, addr + len)` (whole pages only).
    pub(crate) fn discard(&self, addr: usize, len: usize) -> std::io::Result<DiscardStats> {
        if self.passive {
            return self.discard_passive(addr, len);
        }
        let mut st = DiscardStats::default();
        let mut zap = Vec::new();
        for (first, _, n) in self.runs_in(addr, addr.saturating_add(len)) {
            for idx in first..first + n as PageIdx {
                loop {
                    let mut g = self.lock(idx);
                    let before = *g;
                    match g.state {
                        PageState::Resident | PageState::ZeroMapped => match self.try_unmap(idx) {
                            Unmap::Done => {}
                            Unmap::Again => {
                                // An unread event blocks page-table changes:
                                // let go of the page so a handler can run.
                                drop(g);
                                bump!(self, eagain_retries);
                                std::thread::yield_now();
                                continue;
                            }
                            Unmap::Pinned => zap.push(idx),
                        },
                        PageState::Staged { index, .. } => self.staging.release(index),
                        // Poison markers cannot be moved: zap them below.
                        PageState::Poisoned => zap.push(idx),
                        _ => {}
                    }
                    let freed = g.ballooned();
                    st.pages += 1;
                    st.committed_released += before.committed() as u64;
                    st.slots_freed += freed.is_some() as u64;
                    self.free_slot(freed);
                    self.settle(idx, &before, &g, false);
                    break;
                }
            }
        }
        bump!(self, discarded_pages, st.pages);
        for idx in zap {
            // SAFETY: a page of the registered guest regions (raw memory the
            // caller gave us) whose content is being discarded on purpose;
            // no page lock is held, so the handler threads can read the
            // REMOVE event this raises.
            let r = unsafe {
                libc::madvise(
                    self.addr(idx) as *mut libc::c_void,
                    PAGE_SIZE,
                    libc::MADV_DONTNEED,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(st)
    }

    /// Passive mode (regions not registered): the pages are dropped with
    /// `MADV_DONTNEED` (no event: nothing is registered) and stay counted as
    /// pool pages, since a later touch re-populates them without us.
    fn discard_passive(&self, addr: usize, len: usize) -> std::io::Result<DiscardStats> {
        let mut st = DiscardStats::default();
        let runs = self.runs_in(addr, addr.saturating_add(len));
        for &(first, a, n) in &runs {
            for idx in first..first + n as PageIdx {
                let mut g = self.lock(idx);
                let before = *g;
                let freed = g.zero_mapped().expect("passive pages are mapped or pool");
                st.slots_freed += freed.is_some() as u64;
                self.free_slot(freed);
                self.settle(idx, &before, &g, false);
            }
            // SAFETY: a range of the caller's guest regions whose content is
            // discarded on purpose; not registered, so no event is raised.
            let r = unsafe {
                libc::madvise(a as *mut libc::c_void, n * PAGE_SIZE, libc::MADV_DONTNEED)
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            st.pages += n as u64;
        }
        bump!(self, discarded_pages, st.pages);
        Ok(st)
    }

    /// Processes `UFFD_EVENT_REMOVE` for `[start, end)`. Returns the mapped
    /// pages that could not be unmapped yet (another non-cooperative event is
    /// pending): the caller retries them with [`Shared::retry_remove`] after
    /// reading more events.
    pub(crate) fn handle_remove(&self, start: usize, end: usize) -> Vec<PageIdx> {
        bump!(self, remove_events);
        let mut mapped = Vec::new();
        for (first, _, n) in self.runs_in(start, end) {
            for idx in first..first + n as PageIdx {
                let mut g = self.lock(idx);
                let before = *g;
                let freed = match g.state {
                    PageState::Absent | PageState::Ballooned => None,
                    PageState::Resident | PageState::ZeroMapped => {
                        g.discarding = true;
                        mapped.push(idx);
                        continue;
                    }
                    PageState::Staged { index, .. } => {
                        self.staging.release(index);
                        g.ballooned()
                    }
                    PageState::Evicted | PageState::Named | PageState::Poisoned => g.ballooned(),
                };
                self.free_slot(freed);
                self.settle(idx, &before, &g, false);
            }
        }
        self.retry_remove(mapped)
    }

    /// Unmaps the pages a REMOVE event discards (so that no scan or
    /// eviction before the kernel's own zap can save the old content and
    /// serve it later). Returns the pages still pending.
    pub(crate) fn retry_remove(&self, pages: Vec<PageIdx>) -> Vec<PageIdx> {
        let mut pending = Vec::new();
        for idx in pages {
            let mut g = self.lock(idx);
            if !g.discarding {
                continue; // re-populated by a fault after the zap: keep it
            }
            let before = *g;
            match self.unmap_for_remove(idx) {
                Unmap::Done => {
                    let freed = g.ballooned();
                    self.free_slot(freed);
                    self.settle(idx, &before, &g, false);
                }
                Unmap::Again => pending.push(idx),
                Unmap::Pinned => {
                    // Cannot be moved: leave it to the kernel's zap and keep
                    // it counted until an eviction finds out what it holds.
                    let freed = g.zero_mapped().expect("mapped page can be zero-mapped");
                    self.free_slot(freed);
                    self.settle(idx, &before, &g, false);
                }
            }
        }
        pending
    }

    fn unmap_for_remove(&self, idx: PageIdx) -> Unmap {
        // A few quick retries: the madvise that raised the event clears the
        // kernel's "mmap changing" state as soon as it runs again. Bounded,
        // because this holds a page lock.
        for _ in 0..4 {
            match self.try_unmap(idx) {
                Unmap::Again => {
                    bump!(self, eagain_retries);
                    std::thread::yield_now();
                }
                done => return done,
            }
        }
        Unmap::Again
    }

    /// One attempt at unmapping page `idx` (lock held by the caller) and
    /// dropping its content, without raising a userfaultfd event.
    fn try_unmap(&self, idx: PageIdx) -> Unmap {
        let Some(s) = self.staging.alloc() else {
            return Unmap::Pinned;
        };
        // SAFETY: guest page whose lock the caller holds; its content is
        // being discarded.
        match unsafe { self.staging.move_in(s, self.addr(idx)) } {
            Ok(moved) => {
                if moved {
                    self.staging.release(s);
                } else {
                    self.staging.forget(s);
                }
                Unmap::Done
            }
            Err(e) => {
                self.staging.forget(s);
                if e.errno() == Some(nix::errno::Errno::EAGAIN) {
                    Unmap::Again
                } else {
                    Unmap::Pinned
                }
            }
        }
    }
}

enum Unmap {
    Done,
    Again,
    Pinned,
}

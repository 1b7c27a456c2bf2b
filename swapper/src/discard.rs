//! Giving memory back: [`crate::Swapper::discard`] (the balloon's path) and
//! `UFFD_EVENT_REMOVE` (someone else `madvise`d the guest range).
//!
//! `discard` marks every page of the range `Ballooned` (store slot freed,
//! staged copy dropped, budget released) and then `MADV_DONTNEED`s the range,
//! holding no page lock (the madvise waits until a handler thread has read the
//! REMOVE event it raises). A later access reads zeros.
//!
//! A REMOVE event arrives *before* the kernel zaps the range, so a page may
//! be faulted back in between; processing is therefore conservative: pages
//! that were mapped stay committed (as zero-map pool pages) until an
//! eviction or pool reclaim finds out they are empty, and pages that were not
//! mapped (evicted, staged, poisoned) lose their content and become
//! `Ballooned`.

use crate::core::{bump, Shared};
use crate::page_state::{PageIdx, PageState};
use crate::PAGE_SIZE;

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
        let mut st = DiscardStats::default();
        let runs = self.runs_in(addr, addr.saturating_add(len));
        for &(first, _, n) in &runs {
            for idx in first..first + n as PageIdx {
                let mut g = self.lock(idx);
                let before = *g;
                if let PageState::Staged { index, .. } = g.state {
                    self.staging.release(index);
                }
                let freed = g.ballooned();
                st.pages += 1;
                st.committed_released += before.committed() as u64;
                st.slots_freed += freed.is_some() as u64;
                self.free_slot(freed);
                self.settle(idx, &before, &g, false);
            }
        }
        bump!(self, discarded_pages, st.pages);
        for &(_, a, n) in &runs {
            // SAFETY: the range lies inside the registered guest regions
            // (raw memory the caller gave us) and its content is being
            // discarded on purpose; no page lock is held, so the handler
            // threads can read the REMOVE event this raises.
            let r = unsafe {
                libc::madvise(a as *mut libc::c_void, n * PAGE_SIZE, libc::MADV_DONTNEED)
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(st)
    }

    /// Processes `UFFD_EVENT_REMOVE` for `[start, end)`.
    pub(crate) fn handle_remove(&self, start: usize, end: usize) {
        bump!(self, remove_events);
        for (first, _, n) in self.runs_in(start, end) {
            for idx in first..first + n as PageIdx {
                let mut g = self.lock(idx);
                let before = *g;
                let freed = match g.state {
                    PageState::Absent | PageState::Ballooned | PageState::ZeroMapped => None,
                    PageState::Resident => g.zero_mapped().expect("resident can be zero-mapped"),
                    PageState::Staged { index, .. } => {
                        self.staging.release(index);
                        g.ballooned()
                    }
                    PageState::Evicted | PageState::Poisoned => g.ballooned(),
                };
                self.free_slot(freed);
                self.settle(idx, &before, &g, false);
            }
        }
    }
}

//! The last resort for a run that has stalled: say what the swapper is doing,
//! then let go of every fault it holds.
//!
//! A thread waiting on a userfaultfd fault sleeps until the handler resolves
//! the page or wakes it. If that never happens (a handler stuck on a hung
//! store, a fault lost to a bug), the thread waits for ever, and a vCPU
//! waiting like that cannot always be kicked out of `KVM_RUN` (KVM's own
//! faults on guest memory wait killable, not interruptible, on older
//! kernels). Unregistering the regions wakes every such waiter: the kernel
//! does so for pending faults of a range it unregisters, and later faults are
//! plain anonymous faults. The run is lost (an evicted page reads as zeros
//! afterwards), but its threads end and its results so far are kept.

use crate::core::Shared;
use crate::status::SwapperStatus;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::TryLockError;

/// Pages listed by address in a diagnosis (the rest are counted).
const LISTED_BUSY_PAGES: usize = 8;

impl Shared {
    /// A few lines on what the swapper is doing now, for a stall report:
    /// faults read against faults resolved, pages by state, the budget, and
    /// which page locks are held (a page whose lock stays held is where a
    /// handler or the evictor is stuck).
    pub(crate) fn diagnose(&self) -> String {
        let st = self.status();
        let mut busy = Vec::new();
        let mut busy_count = 0u64;
        for (idx, entry) in self.table.iter().enumerate() {
            if let Err(TryLockError::WouldBlock) = entry.try_lock() {
                busy_count += 1;
                if busy.len() < LISTED_BUSY_PAGES {
                    busy.push(format!("{:#x}", self.addr(idx as u32)));
                }
            }
        }
        let last = self.last_fault.load(Ordering::Relaxed);
        let mut s = diagnosis_text(&st);
        let _ = write!(s, "\n  page locks held now: {busy_count}");
        if !busy.is_empty() {
            let more = busy_count.saturating_sub(busy.len() as u64);
            let _ = write!(s, " ({}", busy.join(", "));
            if more > 0 {
                let _ = write!(s, " and {more} more");
            }
            s.push(')');
        }
        if (last as usize) < self.table.len() {
            let _ = write!(s, "; last fault at {:#x}", self.addr(last));
        }
        s
    }
}

/// The counters part of [`Shared::diagnose`].
fn diagnosis_text(st: &SwapperStatus) -> String {
    let c = &st.counters;
    let resolved = c.swapin_zero
        + c.swapin_store
        + c.swapin_minor
        + c.prefetch_hits
        + c.wp_faults
        + c.stale_faults;
    let p = &st.pages;
    format!(
        "host swapper ({} store, {} policy{}):\n  \
         fault events read {}, resolved {} (zero {}, store {}, minor {}, prefetch {}, \
         write-protect {}, stale {}); EAGAIN retries {}; evictions {}, busy victims {}\n  \
         pages: resident {}, staged {}, evicted {}, absent {}, zero-mapped {}, ballooned {}, \
         poisoned {}; committed {} of limit {} + slack {}; staging {}, store slots {}; \
         write errors {}, fatal errors {}",
        st.store,
        st.policy,
        if st.passive { ", passive" } else { "" },
        c.faults,
        resolved,
        c.swapin_zero,
        c.swapin_store,
        c.swapin_minor,
        c.prefetch_hits,
        c.wp_faults,
        c.stale_faults,
        c.eagain_retries,
        c.evictions,
        c.busy_victims,
        p.resident,
        p.staged,
        p.evicted,
        p.absent,
        p.zero_mapped,
        p.ballooned,
        p.poisoned,
        st.committed_pages,
        st.limit_pages,
        st.slack_pages,
        st.staging_pages,
        st.store_slots,
        c.write_errors,
        st.fatal_errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnosis_names_what_was_read_and_resolved() {
        let mut st = SwapperStatus {
            store: "file".into(),
            policy: "clock".into(),
            limit_pages: 100,
            ..Default::default()
        };
        st.counters.faults = 7;
        st.counters.swapin_zero = 2;
        st.counters.swapin_store = 3;
        st.pages.evicted = 40;
        let s = diagnosis_text(&st);
        assert!(
            s.starts_with("host swapper (file store, clock policy):"),
            "{s}"
        );
        assert!(
            s.contains("fault events read 7, resolved 5 (zero 2, store 3,"),
            "{s}"
        );
        assert!(s.contains("evicted 40,"), "{s}");
        assert!(s.contains("of limit 100 + slack 0"), "{s}");
    }
}

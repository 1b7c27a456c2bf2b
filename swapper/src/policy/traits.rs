//! What every policy implements ([`Policy`]) and what it answers ([`Victim`]).

use super::kind::PolicyKind;
use crate::page_state::PageIdx;

/// What to do with the selected page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Victim {
    /// Write it to the store (unless clean) and free its memory.
    Evict(PageIdx),
    /// Move it out of the guest mapping into staging (clock only).
    Deactivate(PageIdx),
}

/// An eviction policy.
pub trait Policy: Send {
    /// Which policy this is.
    fn kind(&self) -> PolicyKind;
    /// `page` is resident and mapped (new, or back from staging without a
    /// reference: prefetch hit, failed eviction).
    fn mapped(&mut self, page: PageIdx);
    /// `page` sits in staging (moved aside or prefetched). Access-blind policies
    /// treat it like any resident page.
    fn staged(&mut self, page: PageIdx) {
        self.mapped(page);
    }
    /// A fault hit `page` while it was moved aside: it was referenced. Access-blind
    /// policies ignore the reference and treat it like a newly mapped page.
    fn reactivated(&mut self, page: PageIdx) {
        self.mapped(page);
    }
    /// `page` left the resident set (evicted elsewhere, discarded, zeroed).
    fn removed(&mut self, page: PageIdx);
    /// The next page to act on; `urgent` asks for an eviction now (a fault is
    /// waiting for room) rather than a deactivation.
    fn select(&mut self, urgent: bool) -> Option<Victim>;
    /// Number of tracked pages.
    fn len(&self) -> usize;
    /// Whether no page is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

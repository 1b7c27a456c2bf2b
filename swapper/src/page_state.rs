//! Per-page state machine (pure: no userfaultfd, no I/O).
//!
//! ```text
//!            first touch (read)          scan finds it written
//!  Absent ─────────────────────▶ ZeroMapped ─────────────────────▶ Resident
//!    ▲  │ first touch (write) / initial zero-map pool                ▲  │  │
//!    │  └───────────────────────────────────────────────────────────┘  │  │
//!    │ zero content at eviction                      minor fault /     │  │ taken (MOVE) for
//!    ├──────────────────────────────────────────────  prefetch hit     │  │ clock deactivation
//!    │                                               ┌──────────────────┘  ▼
//!    │          store write ok / silent drop         │               Staged{Inactive}
//!    │    Evicted ◀──────────────────────────────────┼───────────────────┘
//!    │      │ fault: store read + UFFDIO_COPY ───────┘ (Resident)
//!    │      └─ prefetch ──▶ Staged{Prefetched}
//!  Ballooned ◀── discard / UFFD_EVENT_REMOVE (any state)
//!  Poisoned  ◀── store read failure or checksum mismatch (terminal)
//!  Named     ◀── a clean page mirroring a disk block, dropped at eviction
//!                (false-anonymity mitigation); a fault reads the block back
//! ```
//!
//! Mirrors (VSwapper's Swap Mapper, see [`crate::named`]): a page a virtio-blk
//! read filled holds a copy of a disk block, recorded as its [`Mirror`]. Any
//! transition that changes the content (zeroed, ballooned, poisoned, a
//! write) ends it.
//!
//! `committed` states (ZeroMapped, Resident, Staged) are the ones that count
//! against the resident limit: they are, or may silently become, backed by
//! host memory. `ZeroMapped` pages are the *zero-map pool*: mapped to the
//! shared zero page so the first write is the kernel's own copy-on-write, with
//! no userfaultfd round trip; the swapper learns about such writes from
//! `PAGEMAP_SCAN` (see [`crate::residency`]).
//!
//! Dirty tracking: a page installed for a read fault is installed
//! write-protected (`UFFDIO_COPY_MODE_WP`); its first write is a synchronous
//! write-protect fault that sets `dirty`. A page whose `dirty` flag is clear and
//! that has a store slot still has a valid copy in the store, so evicting it
//! needs no write (silent-write avoidance).

use crate::slots::Slot;
use thiserror::Error;

/// Index of a page within all regions registered with one swapper.
pub type PageIdx = u32;

/// Why a page sits in the staging area.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StageKind {
    /// Moved aside by the clock policy (inactive list); a fault is a minor fault.
    Inactive,
    /// Read ahead from the store; a fault is a prefetch hit.
    Prefetched,
}

/// Where the content of a page lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Not mapped; content is zero (never touched, or evicted while zero).
    Absent,
    /// Not mapped; given away through [`crate::Swapper::discard`] or an
    /// external `MADV_DONTNEED` (`UFFD_EVENT_REMOVE`). Content is zero.
    Ballooned,
    /// Mapped to the shared zero page by the swapper (zero-map pool). May have
    /// been written (copy-on-write by the kernel) since; a scan tells.
    ZeroMapped,
    /// Mapped with real content.
    Resident,
    /// Moved out of the guest mapping into staging slot `index`.
    Staged {
        /// Staging slot holding the page.
        index: u32,
        /// Why it is there.
        kind: StageKind,
    },
    /// Only the store copy holds the content.
    Evicted,
    /// Content lost (store read error or checksum mismatch); access fails.
    Poisoned,
    /// Not mapped; only the disk block of the page's [`Mirror`] holds the
    /// content (no store copy).
    Named,
}

/// A disk block a page holds a copy of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// The disk (as [`crate::Swapper::add_disk`] numbered it).
    pub disk: u8,
    /// Byte offset of the block on the disk (a page's worth from there).
    pub offset: u64,
    /// crc32 of the content when the disk read filled the page.
    pub crc: u32,
}

/// Illegal transition (a bug in the caller; reported, never ignored).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StateError {
    /// The transition is not allowed from the current state.
    #[error("illegal page transition {op} from {from:?}")]
    Illegal {
        /// The attempted operation.
        op: &'static str,
        /// State before.
        from: PageState,
    },
}

/// The swapper's knowledge about one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageEntry {
    /// Where the content lives.
    pub state: PageState,
    /// Content differs from the store copy (or there is none).
    pub dirty: bool,
    /// Store slot holding a copy; valid only when `!dirty`.
    pub slot: Option<Slot>,
    /// crc32 of the store copy (checked on swap-in when integrity is on).
    pub crc: u32,
    /// A `UFFD_EVENT_REMOVE` covers this mapped page and it has not been
    /// unmapped yet: its content must not be saved (it is being discarded),
    /// so scans and evictions leave it alone.
    pub discarding: bool,
    /// The disk block the page holds a copy of, if any (see [`Mirror`]).
    pub mirror: Option<Mirror>,
}

impl Default for PageEntry {
    fn default() -> Self {
        Self {
            state: PageState::Absent,
            dirty: false,
            slot: None,
            crc: 0,
            discarding: false,
            mirror: None,
        }
    }
}

impl PageEntry {
    /// Whether the page counts against the resident limit.
    pub fn committed(&self) -> bool {
        matches!(
            self.state,
            PageState::ZeroMapped | PageState::Resident | PageState::Staged { .. }
        )
    }

    /// Whether the page is known to hold real memory and is tracked by the
    /// eviction policy.
    pub fn in_policy(&self) -> bool {
        matches!(self.state, PageState::Resident | PageState::Staged { .. })
    }

    /// The slot of a valid store copy, if any.
    pub fn clean_copy(&self) -> Option<Slot> {
        if self.dirty {
            None
        } else {
            self.slot
        }
    }

    fn illegal(&self, op: &'static str) -> StateError {
        StateError::Illegal {
            op,
            from: self.state,
        }
    }

    /// Content became zero and unmapped; returns the slot to free.
    fn clear(&mut self, to: PageState) -> Option<Slot> {
        self.state = to;
        self.dirty = false;
        self.crc = 0;
        self.discarding = false;
        self.mirror = None;
        self.slot.take()
    }

    /// The swapper mapped the zero page (read fault, pool refill, or a page
    /// found zapped behind its back). Returns a store slot to free.
    pub fn zero_mapped(&mut self) -> Result<Option<Slot>, StateError> {
        match self.state {
            PageState::Absent
            | PageState::Ballooned
            | PageState::ZeroMapped
            | PageState::Resident => Ok(self.clear(PageState::ZeroMapped)),
            _ => Err(self.illegal("zero_mapped")),
        }
    }

    /// The page is mapped with real content: swapped in (from `Evicted`),
    /// moved back from staging, zero-filled for a write fault, or a zero-mapped
    /// page found written. `dirty` is whether the content now differs from the
    /// store copy.
    pub fn installed(&mut self, dirty: bool) -> Result<(), StateError> {
        match self.state {
            PageState::Evicted | PageState::Staged { .. } => {
                self.dirty |= dirty;
            }
            PageState::Absent | PageState::Ballooned | PageState::ZeroMapped => {
                // Zero content, no store copy.
                self.slot = None;
                self.dirty = true;
            }
            PageState::Resident => {
                self.dirty |= dirty;
            }
            PageState::Named => {
                // Read back from its disk block: no store copy.
                self.slot = None;
                self.dirty = true;
            }
            PageState::Poisoned => return Err(self.illegal("installed")),
        }
        self.state = PageState::Resident;
        Ok(())
    }

    /// A clean mirrored page was dropped at eviction: its disk block holds
    /// the content. Returns a store slot to free.
    pub fn named(&mut self) -> Result<Option<Slot>, StateError> {
        match (self.state, self.mirror) {
            (PageState::Resident | PageState::Staged { .. }, Some(_)) => {
                self.state = PageState::Named;
                self.dirty = false;
                self.crc = 0;
                Ok(self.slot.take())
            }
            _ => Err(self.illegal("named")),
        }
    }

    /// A write-protect fault: the resident page is being written.
    pub fn mark_dirty(&mut self) -> Result<(), StateError> {
        match self.state {
            PageState::Resident => {
                self.dirty = true;
                Ok(())
            }
            _ => Err(self.illegal("mark_dirty")),
        }
    }

    /// The page was moved into staging slot `index` (deactivated or prefetched).
    pub fn staged(&mut self, index: u32, kind: StageKind) -> Result<(), StateError> {
        match (self.state, kind) {
            (PageState::Resident, StageKind::Inactive) => {}
            (PageState::Evicted, StageKind::Prefetched) => {}
            _ => return Err(self.illegal("staged")),
        }
        self.state = PageState::Staged { index, kind };
        Ok(())
    }

    /// The content is now only in the store at `slot` with checksum `crc`.
    pub fn evicted(&mut self, slot: Slot, crc: u32) -> Result<(), StateError> {
        match self.state {
            PageState::Resident | PageState::Staged { .. } => {
                self.state = PageState::Evicted;
                self.slot = Some(slot);
                self.crc = crc;
                self.dirty = false;
                Ok(())
            }
            _ => Err(self.illegal("evicted")),
        }
    }

    /// The page was unmapped with zero content (zero page at eviction, or an
    /// untouched pool page reclaimed). Returns a store slot to free.
    pub fn zeroed(&mut self) -> Result<Option<Slot>, StateError> {
        match self.state {
            PageState::Poisoned => Err(self.illegal("zeroed")),
            _ => Ok(self.clear(PageState::Absent)),
        }
    }

    /// Discarded (balloon). Returns a store slot to free.
    pub fn ballooned(&mut self) -> Option<Slot> {
        self.clear(PageState::Ballooned)
    }

    /// Content lost. Returns a store slot to free.
    pub fn poisoned(&mut self) -> Option<Slot> {
        self.clear(PageState::Poisoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: PageState, dirty: bool, slot: Option<u32>) -> PageEntry {
        PageEntry {
            state,
            dirty,
            slot: slot.map(Slot),
            crc: 7,
            discarding: false,
            mirror: None,
        }
    }

    #[test]
    fn committed_and_policy_membership() {
        use PageState::*;
        let staged = Staged {
            index: 1,
            kind: StageKind::Inactive,
        };
        for (s, committed, policy) in [
            (Absent, false, false),
            (Ballooned, false, false),
            (ZeroMapped, true, false),
            (Resident, true, true),
            (staged, true, true),
            (Evicted, false, false),
            (Poisoned, false, false),
            (Named, false, false),
        ] {
            let e = entry(s, false, None);
            assert_eq!(e.committed(), committed, "{s:?}");
            assert_eq!(e.in_policy(), policy, "{s:?}");
        }
    }

    #[test]
    fn swap_in_for_read_keeps_valid_copy() {
        let mut e = entry(PageState::Evicted, false, Some(3));
        e.installed(false).unwrap();
        assert_eq!(e.state, PageState::Resident);
        assert_eq!(e.clean_copy(), Some(Slot(3)));
        e.mark_dirty().unwrap();
        assert_eq!(e.clean_copy(), None);
        // The stale slot is kept so the next eviction can overwrite it in place.
        assert_eq!(e.slot, Some(Slot(3)));
    }

    #[test]
    fn swap_in_for_write_is_dirty() {
        let mut e = entry(PageState::Evicted, false, Some(3));
        e.installed(true).unwrap();
        assert!(e.dirty);
        assert_eq!(e.clean_copy(), None);
    }

    #[test]
    fn zero_fill_has_no_copy() {
        let mut e = entry(PageState::Absent, false, None);
        e.installed(false).unwrap();
        assert!(e.dirty);
        assert_eq!(e.clean_copy(), None);
    }

    #[test]
    fn eviction_records_slot_and_crc() {
        let mut e = entry(PageState::Resident, true, None);
        e.evicted(Slot(9), 0xdead).unwrap();
        assert_eq!(e.state, PageState::Evicted);
        assert_eq!(e.clean_copy(), Some(Slot(9)));
        assert_eq!(e.crc, 0xdead);
        assert!(e.evicted(Slot(1), 0).is_err(), "evicting twice is a bug");
    }

    #[test]
    fn staging_rules() {
        let mut e = entry(PageState::Resident, false, Some(2));
        e.staged(4, StageKind::Inactive).unwrap();
        assert!(e.committed());
        // A minor fault brings it back, still clean.
        e.installed(false).unwrap();
        assert_eq!(e.clean_copy(), Some(Slot(2)));

        let mut p = entry(PageState::Evicted, false, Some(5));
        p.staged(1, StageKind::Prefetched).unwrap();
        assert!(matches!(p.state, PageState::Staged { index: 1, .. }));
        // Only evicted pages can be prefetched, only resident ones deactivated.
        let mut r = entry(PageState::Resident, false, None);
        assert!(r.staged(0, StageKind::Prefetched).is_err());
        let mut a = entry(PageState::Absent, false, None);
        assert!(a.staged(0, StageKind::Inactive).is_err());
    }

    #[test]
    fn discard_and_zero_free_slots() {
        let mut e = entry(PageState::Evicted, false, Some(8));
        assert_eq!(e.ballooned(), Some(Slot(8)));
        assert_eq!(e.state, PageState::Ballooned);
        assert!(!e.committed());
        let mut z = entry(PageState::Resident, true, Some(1));
        assert_eq!(z.zeroed().unwrap(), Some(Slot(1)));
        assert_eq!(z.state, PageState::Absent);
        let mut m = entry(PageState::Resident, false, Some(6));
        assert_eq!(m.zero_mapped().unwrap(), Some(Slot(6)));
        assert_eq!(m.state, PageState::ZeroMapped);
    }

    #[test]
    fn poisoned_is_terminal() {
        let mut e = entry(PageState::Evicted, false, Some(2));
        assert_eq!(e.poisoned(), Some(Slot(2)));
        assert!(e.installed(false).is_err());
        assert!(e.zeroed().is_err());
        assert!(e.zero_mapped().is_err());
        // Only a discard (which zaps the poison marker) revives it.
        e.ballooned();
        assert_eq!(e.state, PageState::Ballooned);
    }

    #[test]
    fn named_pages_need_a_mirror_and_every_content_change_ends_it() {
        let m = Mirror {
            disk: 1,
            offset: 8192,
            crc: 5,
        };
        let mut e = entry(PageState::Resident, true, Some(4));
        assert!(e.named().is_err(), "no mirror, nothing on disk");
        e.mirror = Some(m);
        assert_eq!(e.named().unwrap(), Some(Slot(4)));
        assert_eq!(e.state, PageState::Named);
        assert!(!e.committed() && !e.in_policy());
        assert!(e.named().is_err(), "named twice is a bug");
        // Read back: resident, no store copy, still a copy of the block.
        e.installed(false).unwrap();
        assert_eq!(
            (e.state, e.clean_copy(), e.mirror),
            (PageState::Resident, None, Some(m))
        );
        for end in [
            PageEntry::zeroed as fn(&mut PageEntry) -> Result<Option<Slot>, StateError>,
            PageEntry::zero_mapped,
        ] {
            let mut x = e;
            end(&mut x).unwrap();
            assert_eq!(x.mirror, None);
        }
        let mut b = e;
        b.ballooned();
        assert_eq!(b.mirror, None);
        let mut p = e;
        p.poisoned();
        assert_eq!(p.mirror, None);
    }

    #[test]
    fn write_protect_fault_only_on_resident() {
        let mut e = entry(PageState::Evicted, false, Some(2));
        assert!(e.mark_dirty().is_err());
        let mut z = entry(PageState::ZeroMapped, false, None);
        assert!(z.mark_dirty().is_err());
    }
}

//! The false-read mitigation: [`crate::Swapper::install_page`] gives an evicted
//! page its new content directly, instead of the store's stale copy.
//!
//! When a VMM device is about to overwrite a whole guest page (a virtio-blk
//! read from the guest's disk lands in it), the page's old content is dead.
//! Without help the device's first write faults, the swapper reads the old
//! copy from the store (a *stale* or *false swap read*, VSwapper's terms) and
//! the device then overwrites it. With the mitigation the device hands the
//! new bytes to the swapper, which installs them with `UFFDIO_COPY` (no store
//! read) and the device skips its own copy.

use std::sync::atomic::Ordering::Relaxed;

use nix::errno::Errno;

use crate::core::{bump, Shared};
use crate::page::PAGE_SIZE;
use crate::page_state::PageState;

/// What [`Shared::install_page`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The page was evicted; it now holds the new content.
    Yes,
    /// Nothing done (the page is mapped, staged, not ours, or busy): the
    /// caller writes the content itself as usual.
    No,
}

impl Shared {
    /// Installs `data` as the content of the evicted page at `addr` (page
    /// aligned, inside the regions). The page becomes resident and dirty; its
    /// store copy is freed.
    pub fn install_page(&self, addr: usize, data: &[u8; PAGE_SIZE]) -> Installed {
        if self.passive || addr % PAGE_SIZE != 0 {
            return Installed::No;
        }
        let Some(idx) = self.regions.page_of(addr) else {
            return Installed::No;
        };
        let mut g = self.lock(idx);
        if g.state != PageState::Evicted || g.discarding {
            return Installed::No;
        }
        if !self.budget.try_reserve_cap(1) {
            // No room without reclaiming: let the ordinary fault path do it.
            return Installed::No;
        }
        let before = *g;
        // SAFETY: a registered guest page whose lock we hold, unmapped
        // (evicted); `data` is a whole page.
        let r = unsafe { self.uffd.copy(addr, data.as_ptr(), PAGE_SIZE, false, true) };
        match r {
            Ok(_) => {}
            Err(e) if e.errno() == Some(Errno::EEXIST) => {
                bump!(self, eexist);
                self.budget.release(1);
                return Installed::No;
            }
            Err(_) => {
                self.budget.release(1);
                return Installed::No;
            }
        }
        g.installed(true).expect("evicted page can be installed");
        let slot = g.slot.take();
        self.free_slot(slot);
        self.settle(idx, &before, &g, true);
        self.policy().mapped(idx);
        bump!(self, false_reads_avoided);
        self.last_fault.store(idx, Relaxed);
        Installed::Yes
    }
}

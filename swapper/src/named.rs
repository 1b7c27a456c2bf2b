//! VSwapper's Swap Mapper: guest pages that hold a copy of a disk block.
//!
//! A virtio-blk read fills whole guest pages with disk blocks. The device
//! tells the swapper ([`crate::Swapper::disk_page`]) before it writes each
//! one, so the swapper knows which pages *mirror* which blocks (a [`Mirror`]:
//! disk, byte offset, crc32 of the content). To the host such a page looks
//! anonymous, but its content is already on disk: evicting it by writing it
//! to the store is VSwapper's *false page anonymity*.
//!
//! Two modes, by [`crate::SwapperConfig::named`]:
//!
//! - **Counting** (off): the mirror is a hint. Guest writes are not tracked;
//!   an eviction that writes a page to the store whose crc32 still equals its
//!   mirror's, whose block was not written since, counts as `false_anonymity`.
//! - **Named** (on, the `false-anonymity` mitigation): the mirror is exact. The
//!   swapper installs the disk data itself, write-protected
//!   (`UFFDIO_COPY_MODE_WP`, after moving any old content aside), so the
//!   page holds exactly the block from its first instant and the first write
//!   to it is a write-protect fault, which ends the mirror. Any install that
//!   maps the page writable ends it too. Evicting a page with a mirror drops
//!   it without a store write (state [`PageState::Named`]); a fault reads the
//!   block back from the disk (path `named`, checked against the crc32) and
//!   reads ahead by disk offset when the faults follow the disk's order.
//!
//! A mirror also ends when the block is about to change: the device calls
//! [`crate::Swapper::disk_changing`] before every write or discard, and a
//! page whose only copy is that block is read back into memory first
//! (`named_rescues`), so a named page is never served from a block that
//! changed after the page was read. And it ends with the page's content:
//! zeroed, discarded (balloon, free page reporting), poisoned, or filled by
//! another disk read.
//!
//! Every mirror is also in a per-disk index (disk, offset, page) so a disk
//! write finds the pages mirroring it; the index holds at least every
//! mirror (entries are added before a mirror is set and removed when the
//! entry no longer names it), and each hit is checked under the page lock.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::MutexGuard;
use std::time::Instant;

use nix::errno::Errno;

use crate::core::{bump, Shared};
use crate::evict::{Outcome, Taken};
use crate::fatal::FatalKind;
use crate::fault::{is, ns, Again, Fault, Served, Then};
use crate::install::Installed;
use crate::integrity::{page_crc, verify};
use crate::page::PAGE_SIZE;
use crate::page_state::{Mirror, PageEntry, PageIdx, PageState};
use crate::store::AlignedPage;
use crate::trace::FaultPath;

pub use crate::mirrors::{DiskReader, MAX_DISKS, MAX_READAHEAD};

/// `(disk, offset)` as one word, for the sequential-fault check.
fn position(disk: u8, offset: u64) -> u64 {
    (u64::from(disk) << 56) | (offset >> 9)
}

impl Shared {
    /// See [`crate::Swapper::disk_page`].
    pub(crate) fn disk_page(
        &self,
        addr: usize,
        mirror: (u8, u64),
        data: &[u8; PAGE_SIZE],
        fill_evicted: bool,
    ) -> Installed {
        if self.passive || addr % PAGE_SIZE != 0 {
            return Installed::No;
        }
        let Some(idx) = self.regions.page_of(addr) else {
            return Installed::No;
        };
        let m = Mirror {
            disk: mirror.0,
            offset: mirror.1,
            crc: page_crc(data),
        };
        if self.cfg.named {
            return self.install_named(idx, m, data);
        }
        let installed = if fill_evicted {
            self.install_page(addr, data)
        } else {
            Installed::No
        };
        // A hint: the device writes the page next (or just did).
        let mut g = self.lock(idx);
        if g.discarding || g.state == PageState::Poisoned {
            return installed;
        }
        let before = g.mirror;
        g.mirror = Some(m);
        self.mirrors.moved(idx, before, g.mirror);
        bump!(self, mirrors_registered);
        installed
    }

    /// Named mode: puts `data` in page `idx` write-protected, with its mirror.
    fn install_named(&self, idx: PageIdx, m: Mirror, data: &[u8; PAGE_SIZE]) -> Installed {
        let mut g = self.lock(idx);
        if g.discarding {
            return Installed::No;
        }
        let before = *g;
        let reserved = match g.state {
            PageState::Absent | PageState::Ballooned | PageState::Evicted | PageState::Named => {
                // Room, as the device's own fault on the page would make it.
                self.reserve_for_fault();
                true
            }
            // Mapped (a zero-map pool page too, written behind our back or
            // not): the old content is dead, the new goes in its place.
            PageState::Resident | PageState::ZeroMapped => match self.take(idx) {
                Taken::Slot(s) => {
                    self.staging.release(s);
                    false
                }
                Taken::Hole => false,
                Taken::Busy => {
                    bump!(self, mirrors_skipped);
                    return Installed::No;
                }
            },
            PageState::Staged { index, .. } => {
                self.staging.release(index);
                false
            }
            PageState::Poisoned => {
                bump!(self, mirrors_skipped);
                return Installed::No;
            }
        };
        // SAFETY: a registered guest page whose lock we hold, unmapped (it
        // was, or its content was just moved aside); `data` is a whole page.
        let r = unsafe {
            self.uffd
                .copy(self.addr(idx), data.as_ptr(), PAGE_SIZE, true, true)
        };
        if let Err(e) = r {
            if is(&e, Errno::EEXIST) {
                bump!(self, eexist);
            }
            return self.named_install_failed(idx, &mut g, before, reserved);
        }
        if before.state == PageState::Evicted {
            bump!(self, false_reads_avoided);
        }
        g.installed(true).expect("page can be installed");
        g.mirror = Some(m);
        self.settle(idx, &before, &g, reserved);
        self.policy().mapped(idx);
        bump!(self, mirrors_registered);
        Installed::Yes
    }

    /// The install of a disk page failed after the old content may have been
    /// dropped: the device writes the page itself (its content is the new
    /// data either way); the page is whatever it is now, without a mirror.
    fn named_install_failed(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        before: PageEntry,
        reserved: bool,
    ) -> Installed {
        bump!(self, mirrors_skipped);
        match before.state {
            PageState::Resident | PageState::ZeroMapped | PageState::Staged { .. } => {
                // Unmapped now (its content went): the device's write
                // faults it in as a zero page, then fills it.
                let freed = g.zeroed().expect("resident page can be zeroed");
                self.free_slot(freed);
                self.settle(idx, &before, g, false);
            }
            _ => {
                if reserved {
                    self.budget.release(1);
                }
            }
        }
        Installed::No
    }

    /// Ends the mirror of page `idx` (locked as `g`), if it has one.
    pub(crate) fn end_mirror(&self, idx: PageIdx, g: &mut PageEntry) {
        if let Some(m) = g.mirror.take() {
            self.mirrors.moved(idx, Some(m), None);
        }
    }

    /// In named mode a page mapped writable (not `wp`) stops being a known
    /// copy of its block (the guest may write it): its mirror ends.
    pub(crate) fn end_mirror_unless(&self, idx: PageIdx, g: &mut PageEntry, wp: bool) {
        if self.cfg.named && !wp && g.mirror.is_some() {
            bump!(self, mirror_ends_guest_write);
            self.end_mirror(idx, g);
        }
    }

    /// Whether a fault on page `g` installs it write-protected to keep its
    /// mirror (named mode, a read).
    pub(crate) fn keeps_mirror(&self, g: &PageEntry, write: bool) -> bool {
        self.cfg.named && !write && g.mirror.is_some()
    }

    /// Reads the block of `m` into `buf` and checks it against the mirror.
    pub(crate) fn read_block(&self, m: Mirror, buf: &mut [u8]) -> Result<(), FatalKind> {
        let failed = |error: String| FatalKind::DiskRead {
            disk: m.disk,
            offset: m.offset,
            error,
        };
        let disk = self
            .mirrors
            .disk(m.disk)
            .ok_or_else(|| failed("the disk is not registered with the swapper".into()))?;
        disk.read_at(buf, m.offset)
            .map_err(|e| failed(e.to_string()))?;
        verify(m.crc, buf).map_err(FatalKind::Corruption)
    }

    /// A clean mirrored page (named mode) in staging slot `s` at eviction:
    /// dropped, its disk block holds the content.
    pub(crate) fn drop_named(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        before: PageEntry,
        s: u32,
    ) -> Outcome {
        bump!(self, named_evictions);
        self.drop_staged(idx, g, before, s, |e| {
            e.named().expect("mirrored page can be named")
        })
    }

    /// A fault on a named page: read its block back.
    pub(crate) fn serve_named(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        f: &Fault,
        buf: &mut AlignedPage,
    ) -> Result<Served, Again> {
        let m = g.mirror.expect("named page has a mirror");
        let reclaimed = self.reserve_for_fault();
        let t = Instant::now();
        let read = self.read_block(m, &mut buf.0);
        let served = Served {
            path: FaultPath::Named,
            store_ns: ns(t),
            install_ns: 0,
            reclaimed,
            then: Then::NamedReadahead(m),
        };
        // No store copy: dirty; write-protected for a read, to keep the mirror.
        self.install_read((idx, g, f), buf, read, (!f.write, true), served)
    }

    /// After a named fault on the block of `m`: if the previous named fault
    /// was on the block just before it on the same disk, reads ahead the
    /// following blocks that named pages mirror, in one disk read, and
    /// installs them write-protected. Returns pages read.
    pub(crate) fn named_readahead(&self, m: Mirror) -> u16 {
        let page = PAGE_SIZE as u64;
        let prev = self.last_named.swap(position(m.disk, m.offset), Relaxed);
        let n = self.cfg.named_readahead.min(MAX_READAHEAD);
        if n == 0 || m.offset < page || prev != position(m.disk, m.offset - page) {
            return 0;
        }
        // The run of named pages mirroring the next blocks, locked.
        let mut run = Vec::new();
        for k in 1..=u64::from(n) {
            let off = m.offset + k * page;
            let Some(idx) = self.mirrors.at(m.disk, off) else {
                break;
            };
            let Some(g) = self.try_lock(idx) else { break };
            if g.state != PageState::Named
                || g.mirror.map(|x| (x.disk, x.offset)) != Some((m.disk, off))
            {
                break;
            }
            // Read-ahead needs room like any swap-in: make it by evicting.
            let room = self.budget.try_reserve_cap(1)
                || (self.reclaim_one() && self.budget.try_reserve_cap(1));
            if !room {
                break;
            }
            run.push((idx, g));
        }
        if run.is_empty() {
            return 0;
        }
        let got = self.fill_run(m, &mut run);
        // The rest stay named: their room goes back.
        self.budget.release((run.len() - got) as u64);
        drop(run);
        if got > 0 {
            let last = m.offset + got as u64 * page;
            self.last_named.store(position(m.disk, last), Relaxed);
        }
        bump!(self, named_readahead, got);
        got as u16
    }

    /// Reads the blocks after `m` for the locked named pages of `run` and
    /// installs them, in order; stops at the first that fails (left named,
    /// a fault will report it). Returns how many were installed.
    fn fill_run(&self, m: Mirror, run: &mut [(PageIdx, MutexGuard<'_, PageEntry>)]) -> usize {
        let Some(disk) = self.mirrors.disk(m.disk) else {
            return 0;
        };
        let mut data = vec![0u8; run.len() * PAGE_SIZE];
        if disk
            .read_at(&mut data, m.offset + PAGE_SIZE as u64)
            .is_err()
        {
            return 0;
        }
        for (i, (idx, g)) in run.iter_mut().enumerate() {
            let page = &data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
            let mirror = g.mirror.expect("named page has a mirror");
            if verify(mirror.crc, page).is_err() {
                return i;
            }
            // SAFETY: registered guest page whose lock we hold, unmapped
            // (named); `page` is a whole page.
            let r = unsafe {
                self.uffd
                    .copy(self.addr(*idx), page.as_ptr(), PAGE_SIZE, true, true)
            };
            if r.is_err() {
                return i;
            }
            let before = **g;
            g.installed(true).expect("named page can be installed");
            self.settle(*idx, &before, g, true);
            self.policy().mapped(*idx);
        }
        run.len()
    }

    /// See [`crate::Swapper::disk_changing`].
    pub(crate) fn disk_changing(&self, disk: u8, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = offset.saturating_add(len);
        for (off, idx) in self.mirrors.overlapping(disk, offset, end) {
            loop {
                let mut g = self.lock(idx);
                let Some(m) = g.mirror.filter(|m| m.disk == disk && m.offset == off) else {
                    break;
                };
                bump!(self, mirror_ends_disk_write);
                if g.state != PageState::Named {
                    self.end_mirror(idx, &mut g);
                    break;
                }
                match self.rescue(idx, &mut g, m) {
                    Ok(()) => break,
                    Err(Again) => {
                        // An unread event blocks page-table changes: let
                        // go of the page so a handler can run.
                        drop(g);
                        bump!(self, eagain_retries);
                        std::thread::yield_now();
                    }
                }
            }
        }
    }

    /// The block of named page `idx` is about to change: its content comes
    /// back into memory first (writable, no mirror). A block that cannot be
    /// read back poisons the page (never wrong data).
    fn rescue(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        m: Mirror,
    ) -> Result<(), Again> {
        let mut buf = AlignedPage::boxed();
        let f = Fault {
            addr: self.addr(idx),
            write: true,
            wp: false,
            tid: nix::unistd::gettid().as_raw(),
        };
        if let Err(kind) = self.read_block(m, &mut buf.0) {
            self.fatal(idx, g, &f, kind);
            return Ok(());
        }
        self.reserve_for_fault();
        let before = **g;
        // SAFETY: registered guest page whose lock we hold, unmapped
        // (named); `buf` is a page.
        let r = unsafe {
            self.uffd
                .copy(f.addr, buf.0.as_ptr(), PAGE_SIZE, false, true)
        };
        match r {
            Ok(_) => {}
            Err(e) if is(&e, Errno::EAGAIN) => {
                self.budget.release(1);
                return Err(Again);
            }
            Err(e) => {
                self.budget.release(1);
                let errno = e.errno().map_or(0, |e| e as i32);
                let op = "UFFDIO_COPY".into();
                self.fatal(idx, g, &f, FatalKind::Uffd { op, errno });
                return Ok(());
            }
        }
        g.installed(true).expect("named page can be installed");
        self.end_mirror(idx, g);
        self.settle(idx, &before, g, true);
        self.policy().mapped(idx);
        bump!(self, named_rescues);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_tell_disks_and_sectors_apart() {
        assert_ne!(position(0, 4096), position(1, 4096));
        assert_eq!(position(2, 8192), position(2, 4096) + 8);
    }
}

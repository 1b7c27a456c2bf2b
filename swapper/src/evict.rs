//! Eviction: taking a page out of the guest mapping and saving it.
//!
//! Every eviction starts by *moving* the page into a staging slot
//! (`UFFDIO_MOVE`): atomic, no copy, and from then on a guest access faults
//! and waits for the page lock, so the content saved is exactly the content
//! the guest last saw. Then, in order:
//! 1. the page is clean and its store copy is valid → drop it, no write
//!    (silent-write avoidance);
//! 2. named mode, the page mirrors a disk block → drop it, no write (its
//!    block holds it; see [`crate::named`]);
//! 3. the page is all zeros → drop it, not stored (`zero_pages`);
//! 4. otherwise write it to the store (crc32 recorded when checksums are on);
//!    one that still equals the disk block it mirrors counts as
//!    `false_anonymity`.
//!
//! The evictor writes in batches ([`WRITE_BATCH`] pages, one
//! [`Store::write_batch`](crate::store::Store::write_batch): one round trip
//! for a remote store): it holds the page lock of every page of the batch
//! until the batch is written. It waits for a page lock only while it holds
//! none; with a batch open it skips a busy page, so it never waits holding
//! a lock another thread could be waiting for.
//!
//! If the store write fails (ENOSPC, EIO, short write) the page is *not*
//! lost: it stays in staging — still resident, still counted — as an
//! inactive page that a fault moves back, and the error is counted. The next
//! attempt reuses the same slot. After a failure, eviction pauses (1 ms,
//! doubling up to 1 s while failures continue): faults that need room then
//! go over the limit (counted as `limit_overshoots`) instead of hammering a
//! failing store.

use crate::core::{bump, Shared};
use crate::integrity::{is_zero, page_crc};
use crate::page_state::{PageEntry, PageIdx, PageState, StageKind};
use crate::policy::Victim;
use crate::slots::Slot;
use nix::errno::Errno;
use std::sync::MutexGuard;

/// Most pages the evictor writes in one batch; a store's
/// [`Store::batch_pages`](crate::store::Store::batch_pages) may ask for fewer
/// (a local store: 1).
pub(crate) const WRITE_BATCH: usize = crate::store::MAX_BATCH_PAGES;

/// Result of acting on one victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The page no longer holds memory.
    Freed,
    /// The page still holds memory (deactivated, or the write failed).
    Kept,
    /// Nothing done (page busy, moved elsewhere, or the move was refused).
    Busy,
}

/// A store write to make: the page is in staging slot `s`, and goes to
/// `slot` with checksum `crc`.
#[derive(Clone, Copy)]
pub(crate) struct Write {
    before: PageEntry,
    s: u32,
    slot: Slot,
    crc: u32,
    /// Whether it equals the disk block it mirrors (named mode).
    mirror: Option<bool>,
}

/// An eviction waiting for its store write, holding its page lock.
pub(crate) struct Pending<'a> {
    idx: PageIdx,
    g: MutexGuard<'a, PageEntry>,
    w: Write,
}

/// What acting on a victim came to.
pub(crate) enum Step<'a> {
    /// Done.
    Done(Outcome),
    /// It needs a store write (see [`Shared::write_pending`]).
    Write(Pending<'a>),
}

/// Result of moving a mapped page into staging.
pub(crate) enum Taken {
    /// The page is in this staging slot.
    Slot(u32),
    /// There was no page (unmapped behind our back).
    Hole,
    /// Could not move it now.
    Busy,
}

impl Shared {
    /// Acts on a victim the policy chose (and already dropped). `blocking`:
    /// wait for the page lock (evictor) or skip a busy page (fault handlers,
    /// which already hold a page lock).
    pub(crate) fn act(&self, v: Victim, blocking: bool) -> Outcome {
        match self.act_step(v, blocking) {
            Step::Done(o) => o,
            Step::Write(p) => {
                let mut one = vec![p];
                if self.write_pending(&mut one) == 1 {
                    Outcome::Freed
                } else {
                    Outcome::Kept
                }
            }
        }
    }

    /// [`Self::act`], leaving a needed store write to the caller (who
    /// batches it).
    pub(crate) fn act_step(&self, v: Victim, blocking: bool) -> Step<'_> {
        let idx = match v {
            Victim::Evict(p) | Victim::Deactivate(p) => p,
        };
        let mut g = if blocking {
            self.lock(idx)
        } else if let Some(g) = self.try_lock(idx) {
            g
        } else {
            bump!(self, busy_victims);
            self.policy().mapped(idx);
            return Step::Done(Outcome::Busy);
        };
        if g.discarding {
            // Being discarded by a REMOVE event: never save its content.
            return Step::Done(Outcome::Busy);
        }
        let done = match (v, g.state) {
            (Victim::Evict(_), PageState::Resident) => self.evict_mapped(idx, &mut g),
            (Victim::Evict(_), PageState::Staged { index, kind }) => {
                self.evict_staged(idx, &mut g, index, kind)
            }
            (Victim::Deactivate(_), PageState::Resident) => Ok(self.deactivate(idx, &mut g)),
            (Victim::Deactivate(_), PageState::Staged { .. }) => {
                self.policy().staged(idx);
                Ok(Outcome::Kept)
            }
            // A stale policy entry: the page left the resident set already.
            _ => Ok(Outcome::Busy),
        };
        match done {
            Ok(o) => Step::Done(o),
            Err(w) => Step::Write(Pending { idx, g, w }),
        }
    }

    /// Writes the pending evictions in one store batch and finishes each
    /// (freed, or kept resident if the write failed). Empties `batch`;
    /// returns pages freed.
    pub(crate) fn write_pending(&self, batch: &mut Vec<Pending<'_>>) -> u64 {
        if batch.is_empty() {
            return 0;
        }
        let pages: Vec<(Slot, &[u8])> = batch
            .iter()
            // SAFETY: slot `p.w.s` holds page `p.idx`, whose lock the batch
            // holds until after the write.
            .map(|p| (p.w.slot, unsafe { self.staging.page(p.w.s) }))
            .collect();
        let written = self.store.write_batch(&pages);
        drop(pages);
        bump!(self, store_write_batches);
        self.write_result(written.is_ok());
        if let Err(e) = &written {
            bump!(self, write_errors, batch.len());
            self.warn(format_args!(
                "store write failed, {} page(s) from page {} stay resident: {e}",
                batch.len(),
                batch[0].idx
            ));
        }
        let mut freed = 0;
        for Pending { idx, mut g, w } in batch.drain(..) {
            if self.finish_write(idx, &mut g, w, written.is_ok()) == Outcome::Freed {
                freed += 1;
            }
        }
        freed
    }

    /// Moves mapped page `idx` into a fresh staging slot.
    pub(crate) fn take(&self, idx: PageIdx) -> Taken {
        let Some(s) = self.staging.alloc() else {
            return Taken::Busy;
        };
        // SAFETY: `idx` is a page of the registered guest regions (raw
        // memory) and its lock is held by our caller.
        match unsafe { self.staging.move_in(s, self.addr(idx)) } {
            Ok(true) => Taken::Slot(s),
            Ok(false) => {
                self.staging.forget(s);
                Taken::Hole
            }
            Err(e) => {
                self.staging.forget(s);
                match e.errno() {
                    Some(Errno::EAGAIN) => bump!(self, eagain_retries),
                    Some(Errno::EBUSY) => bump!(self, busy_victims),
                    _ => {
                        self.warn(format_args!("moving page {idx} aside: {e}"));
                        bump!(self, busy_victims)
                    }
                };
                Taken::Busy
            }
        }
    }

    /// Evicts a resident, mapped page.
    fn evict_mapped(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
    ) -> Result<Outcome, Write> {
        let before = **g;
        match self.take(idx) {
            Taken::Slot(s) => self.save_staged(idx, g, before, s, false),
            Taken::Hole => {
                bump!(self, external_zaps);
                let freed = g.zeroed().expect("resident page can be zeroed");
                self.free_slot(freed);
                self.settle(idx, &before, g, false);
                Ok(Outcome::Freed)
            }
            Taken::Busy => {
                self.policy().mapped(idx);
                Ok(Outcome::Busy)
            }
        }
    }

    /// Evicts a page sitting in staging slot `s`.
    fn evict_staged(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        s: u32,
        kind: StageKind,
    ) -> Result<Outcome, Write> {
        let before = **g;
        self.save_staged(idx, g, before, s, kind == StageKind::Prefetched)
    }

    /// The page of `idx`, in staging slot `s`, is all zeros: drop it (it
    /// reads back as zero without a store copy). One that had come back from
    /// the store was zeroed by the guest since: the read was a false read.
    fn drop_zero(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        before: PageEntry,
        s: u32,
    ) -> Outcome {
        if g.slot.is_some() {
            bump!(self, false_reads);
        }
        bump!(self, zero_pages);
        self.drop_staged(idx, g, before, s, |e| {
            e.zeroed().expect("resident page can be zeroed")
        })
    }

    /// Releases staging slot `s` of page `idx`, whose content needs no store
    /// write, moving the page on with `to` (which returns a slot to free).
    pub(crate) fn drop_staged(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        before: PageEntry,
        s: u32,
        to: impl FnOnce(&mut PageEntry) -> Option<crate::slots::Slot>,
    ) -> Outcome {
        self.staging.release(s);
        let freed = to(g);
        self.free_slot(freed);
        self.settle(idx, &before, g, false);
        Outcome::Freed
    }

    /// The page of `idx` is in staging slot `s`: drop it if clean or zero,
    /// otherwise say what to write to the store ([`Write`]). `g.state` is
    /// still what it was before the page went to staging.
    fn save_staged(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        before: PageEntry,
        s: u32,
        prefetched: bool,
    ) -> Result<Outcome, Write> {
        if let Some(slot) = g.clean_copy() {
            self.staging.release(s);
            let crc = g.crc;
            g.evicted(slot, crc)
                .expect("staged/resident page can be evicted");
            if prefetched {
                bump!(self, prefetch_wasted);
            } else {
                bump!(self, silent_writes_avoided);
            }
            self.settle(idx, &before, g, false);
            return Ok(Outcome::Freed);
        }
        if self.cfg.named && g.mirror.is_some() {
            // A copy of its disk block, unwritten since (write-protected).
            return Ok(self.drop_named(idx, g, before, s));
        }
        // SAFETY: slot `s` holds this page and we hold its page lock.
        let data = unsafe { self.staging.page(s) };
        if is_zero(data) {
            return Ok(self.drop_zero(idx, g, before, s));
        }
        let slot = match g.slot.or_else(|| self.alloc_slot()) {
            Some(slot) => slot,
            None => {
                bump!(self, store_full);
                self.warn(format_args!("store full: page {idx} stays resident"));
                return Ok(self.keep_staged(idx, g, before, s));
            }
        };
        // Without dirty tracking every page is written; checksums tell which
        // of those writes were silent (same content as the store copy).
        let crc = if self.cfg.checksums || !self.cfg.dirty_tracking || g.mirror.is_some() {
            page_crc(data)
        } else {
            0
        };
        if !self.cfg.dirty_tracking && g.slot.is_some() && g.crc == crc {
            bump!(self, silent_writes);
        }
        // False page anonymity: written although its disk block holds it.
        let mirror = g.mirror.map(|m| m.crc == crc);
        Err(Write {
            before,
            s,
            slot,
            crc,
            mirror,
        })
    }

    /// After the store write of `w` (`written`: it succeeded): the page is
    /// evicted, or stays resident in staging for the next attempt.
    fn finish_write(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        w: Write,
        written: bool,
    ) -> Outcome {
        let Write {
            before,
            s,
            slot,
            crc,
            mirror,
        } = w;
        if !written {
            // Keep the slot for the next attempt; the page is dirty so its
            // (torn) content is never trusted.
            g.slot = Some(slot);
            return self.keep_staged(idx, g, before, s);
        }
        self.staging.release(s);
        g.evicted(slot, crc)
            .expect("staged/resident page can be evicted");
        bump!(self, evictions);
        match mirror {
            Some(true) => bump!(self, false_anonymity),
            Some(false) => bump!(self, mirror_mismatches),
            None => 0,
        };
        self.settle(idx, &before, g, false);
        Outcome::Freed
    }

    /// Leaves the page in staging as an inactive (resident) page.
    fn keep_staged(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        before: PageEntry,
        s: u32,
    ) -> Outcome {
        if let PageState::Staged { .. } = g.state {
            // Already in staging (same slot): stays there as inactive.
            g.state = PageState::Staged {
                index: s,
                kind: StageKind::Inactive,
            };
        } else {
            g.staged(s, StageKind::Inactive)
                .expect("resident page can be staged");
        }
        self.settle(idx, &before, g, false);
        self.policy().staged(idx);
        Outcome::Kept
    }

    /// Clock deactivation: moves the page aside; a zero page is dropped.
    fn deactivate(&self, idx: PageIdx, g: &mut MutexGuard<'_, PageEntry>) -> Outcome {
        let before = **g;
        let s = match self.take(idx) {
            Taken::Slot(s) => s,
            Taken::Hole => {
                bump!(self, external_zaps);
                let freed = g.zeroed().expect("resident page can be zeroed");
                self.free_slot(freed);
                self.settle(idx, &before, g, false);
                return Outcome::Freed;
            }
            Taken::Busy => {
                self.policy().mapped(idx);
                return Outcome::Busy;
            }
        };
        // SAFETY: slot `s` holds this page and we hold its page lock.
        if is_zero(unsafe { self.staging.page(s) }) {
            return self.drop_zero(idx, g, before, s);
        }
        g.staged(s, StageKind::Inactive)
            .expect("resident page can be staged");
        bump!(self, deactivations);
        self.settle(idx, &before, g, false);
        self.policy().staged(idx);
        Outcome::Kept
    }

    /// Evicts until known-resident pages are at or below `target`, `max`
    /// pages were freed, or no progress is possible. Returns pages freed.
    /// Each round over the target is counted, and so is why one stopped short
    /// (write backoff, no victim, too many busy victims), so a stalled evictor
    /// explains itself in the status.
    pub(crate) fn reclaim_to(&self, target: u64, max: u64) -> u64 {
        if self.passive || self.budget.resident() <= target {
            return 0;
        }
        bump!(self, evictor_rounds);
        if self.writes_backing_off() {
            bump!(self, evictor_backoffs);
            return 0;
        }
        let started = std::time::Instant::now();
        let freed = self.reclaim_round(target, max);
        bump!(self, evictor_ns, started.elapsed().as_nanos());
        freed
    }

    /// The body of [`Self::reclaim_to`]: evicts until resident pages are at
    /// `target` or `max` were freed.
    fn reclaim_round(&self, target: u64, max: u64) -> u64 {
        let mut freed = 0;
        let mut idle = 0u32;
        let mut budget_steps = 4 * self.policy().len() as u64 + 64;
        let batch_pages = self.store.batch_pages().clamp(1, WRITE_BATCH);
        let mut batch = Vec::with_capacity(batch_pages);
        // Pages of the open batch count as gone already.
        while self.budget.resident().saturating_sub(batch.len() as u64) > target
            && freed + (batch.len() as u64) < max
            && budget_steps > 0
        {
            if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if idle >= 64 {
                bump!(self, evictor_busy_stops);
                break;
            }
            budget_steps -= 1;
            let Some(v) = self.policy().select(false) else {
                bump!(self, evictor_no_victim);
                break;
            };
            // Wait for a page lock only while holding none.
            match self.act_step(v, batch.is_empty()) {
                Step::Write(p) => {
                    batch.push(p);
                    idle = 0;
                    if batch.len() >= batch_pages {
                        freed += self.write_pending(&mut batch);
                        if self.writes_backing_off() {
                            break;
                        }
                    }
                }
                Step::Done(Outcome::Freed) => {
                    freed += 1;
                    idle = 0;
                }
                Step::Done(Outcome::Kept) => {}
                Step::Done(Outcome::Busy) => {
                    idle += 1;
                    std::thread::yield_now();
                }
            }
        }
        freed + self.write_pending(&mut batch)
    }

    /// Direct reclaim for a fault that found no room: frees one committed
    /// unit if it can (evicting, or shrinking the zero-map pool). Never
    /// blocks on a page lock. Returns whether something was freed.
    pub(crate) fn reclaim_one(&self) -> bool {
        if self.passive {
            return false;
        }
        if self.writes_backing_off() {
            return self.shrink_pool(1, false) > 0;
        }
        for _ in 0..8 {
            let v = self.policy().select(true);
            match v {
                Some(v) => {
                    if self.act(v, false) == Outcome::Freed {
                        return true;
                    }
                }
                None => return self.shrink_pool(1, false) > 0,
            }
        }
        false
    }
}

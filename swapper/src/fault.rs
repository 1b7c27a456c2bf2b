//! Serving one page fault, by state of the page:
//!
//! | state | missing fault | path |
//! |---|---|---|
//! | Absent / Ballooned | `UFFDIO_ZEROPAGE` (read) or `UFFDIO_COPY` of zeros (write), plus a zero cluster | zero |
//! | Evicted | store read, crc check, `UFFDIO_COPY` (write-protected for reads), then prefetch (into the mapping, or the staging cache) | store |
//! | Staged (inactive) | `UFFDIO_MOVE` back (+ re-protect if clean) | minor |
//! | Staged (prefetched) | `UFFDIO_MOVE` back, then prefetch further | prefetch_hit |
//! | ZeroMapped / Resident | `UFFDIO_ZEROPAGE`: `EEXIST` means already resolved, success means the page was zapped behind our back | stale / zero |
//! | Named | disk read of its mirror's block, crc check, `UFFDIO_COPY` (write-protected for reads), then read-ahead by disk offset (see [`crate::named`]) | named |
//! | Poisoned | poison again (never serve data) | fatal |
//!
//! A write-protect fault on a resident page marks it dirty and removes the
//! protection. Any ioctl answering `EAGAIN` (an unread non-cooperative
//! event) abandons the fault; the handler retries it after reading events.

use crate::config::{FatalAction, PrefetchMode};
use crate::core::{bump, Shared};
use crate::fatal::{FatalError, FatalKind};
use crate::integrity::verify;
use crate::page::PAGE_SIZE;
use crate::page_state::{Mirror, PageEntry, PageIdx, PageState, StageKind};
use crate::store::AlignedPage;
use crate::trace::{FaultPath, FaultRecord};
use crate::uffd::UffdError;
use nix::errno::Errno;
use std::sync::MutexGuard;
use std::time::Instant;

/// A fault event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    pub addr: usize,
    pub write: bool,
    pub wp: bool,
    pub tid: i32,
}

/// Whether the fault was handled or must be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    Done,
    Retry,
}

/// How a fault was served.
pub(crate) struct Served {
    pub path: FaultPath,
    /// Time reading the store (or, for a named page, the disk).
    pub store_ns: u64,
    pub install_ns: u64,
    pub reclaimed: u16,
    /// Follow-up work after the faulting thread was woken.
    pub then: Then,
}

/// Work after the faulting thread was woken.
pub(crate) enum Then {
    Nothing,
    Prefetch,
    ZeroCluster,
    /// Read ahead by disk offset after a named fault on this block.
    NamedReadahead(Mirror),
}

/// `EAGAIN`: retry later.
pub(crate) struct Again;

pub(crate) fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

pub(crate) fn is(e: &UffdError, errno: Errno) -> bool {
    e.errno() == Some(errno)
}

impl Shared {
    /// Serves one fault; `t0` is when its event was read.
    pub(crate) fn handle_fault(&self, f: &Fault, t0: Instant, buf: &mut AlignedPage) -> Handled {
        let Some(idx) = self.regions.page_of(f.addr) else {
            self.warn(format_args!("fault outside the regions at {:#x}", f.addr));
            let _ = self.uffd.wake(f.addr & !(PAGE_SIZE - 1), PAGE_SIZE);
            return Handled::Done;
        };
        let t_read_ns = t0.duration_since(self.epoch).as_nanos() as u64;
        let mut g = self.lock(idx);
        let served = if f.wp {
            self.serve_wp(idx, &mut g)
        } else {
            match g.state {
                PageState::Absent | PageState::Ballooned => self.serve_zero(idx, &mut g, f),
                PageState::Evicted => self.serve_store(idx, &mut g, f, buf),
                PageState::Staged { index, kind } => self.serve_staged(idx, &mut g, f, index, kind),
                PageState::ZeroMapped | PageState::Resident => self.serve_mapped(idx, &mut g),
                PageState::Named => self.serve_named(idx, &mut g, f, buf),
                PageState::Poisoned => Ok(self.serve_poisoned(idx)),
            }
        };
        drop(g);
        let total_ns = ns(t0);
        let s = match served {
            Ok(s) => s,
            Err(Again) => {
                bump!(self, eagain_retries);
                return Handled::Retry;
            }
        };
        let prefetched = match s.then {
            Then::Prefetch => self.prefetch(idx, buf, f.write),
            Then::ZeroCluster => {
                self.zero_cluster(idx);
                0
            }
            Then::NamedReadahead(m) => self.named_readahead(m),
            Then::Nothing => 0,
        };
        match s.path {
            FaultPath::Zero => bump!(self, swapin_zero),
            FaultPath::Store => bump!(self, swapin_store),
            FaultPath::Minor => bump!(self, swapin_minor),
            FaultPath::PrefetchHit => bump!(self, prefetch_hits),
            FaultPath::Named => bump!(self, swapin_named),
            FaultPath::WriteProtect => bump!(self, wp_faults),
            FaultPath::Stale => bump!(self, stale_faults),
            FaultPath::Fatal => 0,
        };
        self.hists.record(s.path, total_ns);
        self.trace.push(FaultRecord {
            seq: 0, // numbered by the ring
            page: idx,
            addr: self.addr(idx) as u64,
            tid: f.tid,
            thread: self.registry.lookup(f.tid),
            path: s.path,
            write: f.write,
            t_read_ns,
            store_read_ns: s.store_ns.min(u32::MAX as u64) as u32,
            install_ns: s.install_ns.min(u32::MAX as u64) as u32,
            total_ns: total_ns.min(u32::MAX as u64) as u32,
            prefetched,
            reclaimed: s.reclaimed,
        });
        Handled::Done
    }

    pub(crate) fn served(path: FaultPath, install_ns: u64) -> Served {
        Served {
            path,
            store_ns: 0,
            install_ns,
            reclaimed: 0,
            then: Then::Nothing,
        }
    }

    fn stale(&self, idx: PageIdx) -> Result<Served, Again> {
        let t = Instant::now();
        let _ = self.uffd.wake(self.addr(idx), PAGE_SIZE);
        Ok(Self::served(FaultPath::Stale, ns(t)))
    }

    fn serve_wp(&self, idx: PageIdx, g: &mut MutexGuard<'_, PageEntry>) -> Result<Served, Again> {
        if g.state != PageState::Resident {
            return self.stale(idx);
        }
        g.mark_dirty().expect("resident page can be dirtied");
        // Writable from here on.
        self.end_mirror_unless(idx, g, false);
        let t = Instant::now();
        match self
            .uffd
            .write_protect(self.addr(idx), PAGE_SIZE, false, true)
        {
            Ok(()) => Ok(Self::served(FaultPath::WriteProtect, ns(t))),
            Err(e) if is(&e, Errno::EAGAIN) => Err(Again),
            Err(e) => {
                self.warn(format_args!("unprotecting page {idx}: {e}"));
                self.stale(idx)
            }
        }
    }

    /// Reserves one committed unit for a page being brought in, reclaiming
    /// directly if there is no room. Returns pages reclaimed.
    pub(crate) fn reserve_for_fault(&self) -> u16 {
        if self.budget.try_reserve_cap(1) {
            if self.over_targets() {
                self.nudge(false);
            }
            return 0;
        }
        self.nudge(true);
        let mut reclaimed = 0;
        for _ in 0..16 {
            if self.reclaim_one() {
                reclaimed += 1;
                bump!(self, direct_reclaims);
            }
            if self.budget.try_reserve_cap(1) {
                return reclaimed;
            }
        }
        self.budget.force_reserve(1);
        reclaimed
    }

    fn serve_zero(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        f: &Fault,
    ) -> Result<Served, Again> {
        let first_touch = g.state == PageState::Absent;
        let reclaimed = self.reserve_for_fault();
        let before = **g;
        let addr = self.addr(idx);
        let t = Instant::now();
        let r = if f.write {
            // SAFETY: registered guest page whose lock we hold; the source is
            // our zero page.
            unsafe {
                self.uffd
                    .copy(addr, self.zero_page.0.as_ptr(), PAGE_SIZE, false, true)
            }
        } else {
            // SAFETY: registered guest page whose lock we hold.
            unsafe { self.uffd.zeropage(addr, PAGE_SIZE, true) }
        };
        let install_ns = ns(t);
        match r {
            Ok(_) if !f.write => {
                let freed = g.zero_mapped().expect("absent page can be zero-mapped");
                self.free_slot(freed);
                self.settle(idx, &before, g, true);
            }
            Ok(_) => {
                g.installed(true).expect("absent page can be installed");
                self.settle(idx, &before, g, true);
                self.policy().mapped(idx);
            }
            Err(e) if is(&e, Errno::EAGAIN) => {
                self.budget.release(1);
                return Err(Again);
            }
            Err(e) => {
                // Populated behind our back: content unknown, keep it.
                bump!(self, eexist);
                self.warn(format_args!("zero-filling page {idx}: {e}"));
                g.installed(true).expect("absent page can be installed");
                self.settle(idx, &before, g, true);
                self.policy().mapped(idx);
                let _ = self.uffd.wake(addr, PAGE_SIZE);
            }
        }
        Ok(Served {
            path: FaultPath::Zero,
            store_ns: 0,
            install_ns,
            reclaimed,
            then: if first_touch {
                Then::ZeroCluster
            } else {
                Then::Nothing
            },
        })
    }

    fn serve_store(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        f: &Fault,
        buf: &mut AlignedPage,
    ) -> Result<Served, Again> {
        let reclaimed = self.reserve_for_fault();
        let slot = g.slot.expect("evicted page has a slot");
        self.note_store_read(idx, slot.0);
        let t = Instant::now();
        let read = self.store.read(slot, &mut buf.0);
        let store_ns = ns(t);
        let read = match read {
            Err(e) => Err(FatalKind::StoreRead {
                error: e.to_string(),
            }),
            Ok(()) if self.cfg.checksums => verify(g.crc, &buf.0).map_err(FatalKind::Corruption),
            Ok(()) => Ok(()),
        };
        let dirty = f.write || !self.cfg.dirty_tracking;
        let wp = !dirty || self.keeps_mirror(g, f.write);
        let served = Served {
            path: FaultPath::Store,
            store_ns,
            install_ns: 0,
            reclaimed,
            then: Then::Prefetch,
        };
        self.install_read((idx, g, f), buf, read, (wp, dirty), served)
    }

    /// The rest of a fault on an unmapped page whose content was just read
    /// into `buf` (from the store, or a named page's disk block), with one
    /// committed unit reserved for it: a failed `read` is fatal (never
    /// served); otherwise `buf` is copied in, write-protected when `wp`, and
    /// the page installed (`dirty`: it differs from any store copy) and
    /// served as `served`. A page found mapped already is kept as it is.
    pub(crate) fn install_read(
        &self,
        (idx, g, f): (PageIdx, &mut MutexGuard<'_, PageEntry>, &Fault),
        buf: &AlignedPage,
        read: Result<(), FatalKind>,
        (wp, dirty): (bool, bool),
        served: Served,
    ) -> Result<Served, Again> {
        if let Err(kind) = read {
            self.budget.release(1);
            self.fatal(idx, g, f, kind);
            return Ok(Served {
                store_ns: served.store_ns,
                ..Self::served(FaultPath::Fatal, 0)
            });
        }
        let before = **g;
        let t = Instant::now();
        // SAFETY: registered guest page whose lock we hold, unmapped; `buf`
        // is a page.
        let r = unsafe {
            self.uffd
                .copy(self.addr(idx), buf.0.as_ptr(), PAGE_SIZE, wp, true)
        };
        let install_ns = ns(t);
        match r {
            Ok(_) => {}
            Err(e) if is(&e, Errno::EAGAIN) => {
                self.budget.release(1);
                return Err(Again);
            }
            Err(e) if is(&e, Errno::EEXIST) => {
                bump!(self, eexist);
                self.warn(format_args!("unmapped page {idx} found mapped"));
                let _ = self.uffd.wake(self.addr(idx), PAGE_SIZE);
                g.installed(true).expect("unmapped page can be installed");
                self.end_mirror(idx, g);
                self.settle(idx, &before, g, true);
                self.policy().mapped(idx);
                return Ok(Self::served(FaultPath::Stale, install_ns));
            }
            Err(e) => {
                self.budget.release(1);
                let errno = e.errno().map_or(0, |e| e as i32);
                let op = "UFFDIO_COPY".into();
                self.fatal(idx, g, f, FatalKind::Uffd { op, errno });
                return Ok(Self::served(FaultPath::Fatal, install_ns));
            }
        }
        g.installed(dirty).expect("unmapped page can be installed");
        self.end_mirror_unless(idx, g, wp);
        self.settle(idx, &before, g, true);
        self.policy().mapped(idx);
        Ok(Served {
            install_ns,
            ..served
        })
    }

    /// Counts sequential store reads and those whose slots are not
    /// sequential too (decayed swap sequentiality).
    fn note_store_read(&self, idx: PageIdx, slot: u32) {
        let now = (u64::from(idx) << 32) | u64::from(slot);
        let prev = self
            .last_store_read
            .swap(now, std::sync::atomic::Ordering::Relaxed);
        let (prev_page, prev_slot) = ((prev >> 32) as u32, prev as u32);
        if prev != u64::MAX && prev_page.wrapping_add(1) == idx {
            bump!(self, sequential_store_reads);
            if prev_slot.wrapping_add(1) != slot {
                bump!(self, decayed_sequential_reads);
            }
        }
    }

    fn serve_staged(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        f: &Fault,
        s: u32,
        kind: StageKind,
    ) -> Result<Served, Again> {
        let before = **g;
        let addr = self.addr(idx);
        let protect =
            (self.cfg.dirty_tracking && !g.dirty && !f.write) || self.keeps_mirror(g, f.write);
        let t = Instant::now();
        let r = if protect {
            // A clean page goes back write-protected from its first instant:
            // copied in with UFFDIO_COPY_MODE_WP. A move would map it
            // writable until a later UFFDIO_WRITEPROTECT, and any thread (or
            // KVM, mapping it for a read) that touched it in between would
            // write unseen: the page would later be dropped as clean and the
            // write lost (the swapper soak lost 2 pages in 10^7 round trips).
            // SAFETY: slot `s` holds this staged page and the page lock we
            // hold owns it.
            let data = unsafe { self.staging.page(s) };
            // SAFETY: copies it to its registered guest page, which no Rust
            // reference covers; `data` is a whole page.
            unsafe { self.uffd.copy(addr, data.as_ptr(), PAGE_SIZE, true, true) }.map(|_| ())
        } else {
            // SAFETY: moves our staged page back to its registered guest page;
            // we hold the page lock, which owns the staging slot.
            unsafe { self.staging.move_out(s, &self.uffd, addr, true) }
        };
        match r {
            Ok(_) => {}
            Err(e) if is(&e, Errno::EAGAIN) => return Err(Again),
            Err(e) => {
                bump!(self, eexist);
                self.warn(format_args!("moving page {idx} back: {e}"));
                return self.stale(idx);
            }
        }
        if protect {
            self.staging.release(s);
        } else {
            self.staging.forget(s);
        }
        let dirty = f.write || !self.cfg.dirty_tracking;
        let install_ns = ns(t);
        g.installed(dirty).expect("staged page can be installed");
        self.end_mirror_unless(idx, g, protect);
        self.settle(idx, &before, g, false);
        let path = match kind {
            StageKind::Inactive => {
                self.policy().reactivated(idx);
                FaultPath::Minor
            }
            StageKind::Prefetched => {
                self.policy().mapped(idx);
                FaultPath::PrefetchHit
            }
        };
        Ok(Served {
            then: if path == FaultPath::PrefetchHit {
                Then::Prefetch
            } else {
                Then::Nothing
            },
            ..Self::served(path, install_ns)
        })
    }

    fn serve_mapped(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
    ) -> Result<Served, Again> {
        let t = Instant::now();
        // SAFETY: registered guest page whose lock we hold.
        match unsafe { self.uffd.zeropage(self.addr(idx), PAGE_SIZE, true) } {
            Err(e) if is(&e, Errno::EEXIST) => self.stale(idx),
            Err(e) if is(&e, Errno::EAGAIN) => Err(Again),
            Err(e) => {
                self.warn(format_args!("re-mapping page {idx}: {e}"));
                self.stale(idx)
            }
            Ok(_) => {
                // Unmapped behind our back (e.g. MADV_DONTNEED racing with us):
                // its content is zero now.
                bump!(self, external_zaps);
                let before = **g;
                let freed = g.zero_mapped().expect("mapped page can be zero-mapped");
                self.free_slot(freed);
                self.settle(idx, &before, g, false);
                Ok(Self::served(FaultPath::Zero, ns(t)))
            }
        }
    }

    fn serve_poisoned(&self, idx: PageIdx) -> Served {
        if self.cfg.fatal_action == FatalAction::Poison {
            // SAFETY: registered guest page whose lock we hold.
            let _ = unsafe { self.uffd.poison(self.addr(idx), PAGE_SIZE, true) };
            let _ = self.uffd.wake(self.addr(idx), PAGE_SIZE);
        }
        Self::served(FaultPath::Fatal, 0)
    }

    /// The page's content cannot be produced: never serve it.
    pub(crate) fn fatal(
        &self,
        idx: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        f: &Fault,
        kind: FatalKind,
    ) {
        match kind {
            FatalKind::Corruption(_) => bump!(self, integrity_errors),
            _ => bump!(self, store_read_errors),
        };
        let addr = self.addr(idx);
        // Poison without waking: the error is recorded and the hook has run
        // (so the VMM can stop its vCPUs) before the faulting thread resumes.
        let poisoned = self.cfg.fatal_action == FatalAction::Poison
            // SAFETY: registered guest page whose lock we hold.
            && unsafe { self.uffd.poison(addr, PAGE_SIZE, false) }.is_ok();
        let before = **g;
        let freed = g.poisoned();
        self.free_slot(freed);
        self.settle(idx, &before, g, false);
        let e = FatalError {
            page: idx,
            addr: addr as u64,
            tid: f.tid,
            thread: self.registry.lookup(f.tid),
            at_ns: self.now_ns(),
            kind,
            poisoned,
        };
        self.error(format_args!("fatal: {e}"));
        self.fatal.report(e);
        if poisoned {
            let _ = self.uffd.wake(addr, PAGE_SIZE);
        }
    }

    /// After a first-touch zero fault: zero-map the page's aligned cluster.
    fn zero_cluster(&self, idx: PageIdx) {
        self.nudge(true);
        let z = self.cfg.zero_cluster;
        if z <= 1 {
            return;
        }
        let (first, last) = self.regions.bounds_of(idx);
        let start = (idx - idx % z).max(first);
        let end = (idx - idx % z + z).min(last);
        let mut p = start;
        while p < end {
            let run_start = p;
            let mut guards = Vec::new();
            while p < end {
                match self.try_lock(p) {
                    Some(g) if g.state == PageState::Absent => guards.push(g),
                    _ => break,
                }
                p += 1;
            }
            p += 1;
            let mut n = guards.len() as u64;
            while n > 0 && !self.budget.try_reserve(n, self.limits().soft_cap()) {
                n /= 2;
            }
            guards.truncate(n as usize);
            self.zero_map_run(run_start, &mut guards, true);
        }
    }

    /// Reads ahead the evicted pages following `idx` when the fault
    /// continues a sequential run (the previous store fault or prefetch
    /// window ended just before it). Returns pages read.
    ///
    /// [`PrefetchMode::Map`] installs them in the guest mapping: the guest
    /// walks through them without faulting, so a sequential scan takes one
    /// fault per cluster; their use is not observable. After a read fault
    /// they are installed clean (write-protected); after a write fault
    /// (`write`) writable and dirty, since a write scan would otherwise take
    /// a write-protect fault on every one of them. [`PrefetchMode::Cache`] keeps them in staging, like the
    /// kernel's swap cache: each use is a (cheap, no I/O) `prefetch_hit`
    /// fault, so hits and waste are counted exactly.
    fn prefetch(&self, idx: PageIdx, buf: &mut AlignedPage, write: bool) -> u16 {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_fault.swap(idx, Relaxed);
        let n = self.cfg.prefetch;
        if n == 0 || last.wrapping_add(1) != idx {
            return 0;
        }
        let end = idx + 1 + n.min(self.regions.pages_to_region_end(idx) - 1);
        // The window's evicted pages, locked, each with room reserved; read
        // in one batch (one round trip for a remote store). A local store
        // reads and places each page as it comes, holding one lock at a time.
        let batching = self.store.batch_pages() > 1;
        let mut window = Vec::new();
        let mut got = 0;
        for p in idx + 1..end {
            let Some(g) = self.try_lock(p) else {
                continue;
            };
            if g.state != PageState::Evicted {
                continue;
            }
            // Read-ahead needs room like any swap-in: make it by evicting
            // (the faulting thread is already running again).
            let room = self.budget.try_reserve_cap(1)
                || (self.reclaim_one() && self.budget.try_reserve_cap(1));
            if !room {
                break;
            }
            window.push((p, g));
            if !batching {
                got += self.prefetch_window(&mut window, buf, write);
            }
        }
        got += self.prefetch_window(&mut window, buf, write);
        if self.cfg.prefetch_mode == PrefetchMode::Map {
            // The guest walks through the window without faulting: the next
            // sequential fault is just past it.
            self.last_fault.store(end - 1, Relaxed);
        }
        bump!(self, prefetched, got);
        got
    }

    /// Reads the locked, room-reserved pages of a prefetch window in one
    /// store batch and places each (mapped or cached, per the prefetch
    /// mode), emptying `window` (its locks go with it). A page whose read or
    /// checksum fails stays evicted (a real fault reports it). Returns pages
    /// placed.
    fn prefetch_window(
        &self,
        window: &mut Vec<(PageIdx, MutexGuard<'_, PageEntry>)>,
        buf: &mut AlignedPage,
        write: bool,
    ) -> u16 {
        let mut bufs: Vec<Box<AlignedPage>> = match window.len() {
            0 => return 0,
            1 => Vec::new(),
            n => (0..n).map(|_| AlignedPage::boxed()).collect(),
        };
        let read = {
            let slot = |g: &PageEntry| g.slot.expect("evicted page has a slot");
            let mut reads: Vec<(crate::slots::Slot, &mut [u8])> = if bufs.is_empty() {
                vec![(slot(&window[0].1), &mut buf.0[..])]
            } else {
                window
                    .iter()
                    .zip(bufs.iter_mut())
                    .map(|((_, g), b)| (slot(g), &mut b.0[..]))
                    .collect()
            };
            self.store.read_batch(&mut reads).is_ok()
        };
        let mut got = 0;
        for (i, (p, mut g)) in window.drain(..).enumerate() {
            let data: &AlignedPage = bufs.get(i).map_or(&*buf, |b| b);
            let ok = read && (!self.cfg.checksums || verify(g.crc, &data.0).is_ok());
            if ok && self.place_prefetched(p, &mut g, data, write) {
                got += 1;
            } else {
                // Leave it evicted: a real fault will report any problem.
                self.budget.release(1);
            }
        }
        got
    }

    /// Places one prefetched page read into `data`; false if it could not be.
    fn place_prefetched(
        &self,
        p: PageIdx,
        g: &mut MutexGuard<'_, PageEntry>,
        data: &AlignedPage,
        write: bool,
    ) -> bool {
        let before = **g;
        let placed = match self.cfg.prefetch_mode {
            PrefetchMode::Map => {
                let clean = self.cfg.dirty_tracking && !write;
                let wp = clean || self.keeps_mirror(g, write);
                // SAFETY: registered guest page whose lock we hold; `data`
                // is a page.
                let r = unsafe {
                    self.uffd
                        .copy(self.addr(p), data.0.as_ptr(), PAGE_SIZE, wp, true)
                };
                r.is_ok() && {
                    g.installed(!clean).expect("evicted page can be installed");
                    self.end_mirror_unless(p, g, wp);
                    true
                }
            }
            PrefetchMode::Cache => match self.staging.alloc() {
                Some(s) if self.staging.copy_in(s, &data.0).is_ok() => {
                    g.staged(s, StageKind::Prefetched)
                        .expect("evicted page can be prefetched");
                    true
                }
                Some(s) => {
                    self.staging.forget(s);
                    false
                }
                None => false,
            },
        };
        if placed {
            self.settle(p, &before, g, true);
            match self.cfg.prefetch_mode {
                PrefetchMode::Map => self.policy().mapped(p),
                PrefetchMode::Cache => self.policy().staged(p),
            }
        }
        placed
    }
}

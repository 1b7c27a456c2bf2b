//! Staging memory: swapper-owned private anonymous pages that hold guest
//! pages moved out of the guest mapping (`UFFDIO_MOVE`, no copy).
//!
//! Used for (a) eviction: a page is moved aside atomically, so the guest can
//! no longer write it while it is saved; (b) the clock's inactive list; (c)
//! the prefetch cache. A staging slot is either empty (no page table entry:
//! a valid `UFFDIO_MOVE`/`UFFDIO_COPY` destination) or holds exactly one page.
//!
//! The area is registered with its own userfaultfd (a move destination must
//! be registered with the userfaultfd the ioctl is issued on). That
//! userfaultfd has `UFFD_FEATURE_SIGBUS` and no `EVENT_REMOVE`: releasing a
//! slot with `MADV_DONTNEED` never waits for an event reader, and touching an
//! empty slot by mistake is a loud `SIGBUS`/`EFAULT`, not a silent hang.

use crate::page::PAGE_SIZE;
use crate::slots::SlotAllocator;
use crate::uffd::{Uffd, UffdError, FEATURE_MOVE, FEATURE_SIGBUS};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use thiserror::Error;

/// Errors of this module.
#[derive(Debug, Error)]
pub enum StagingError {
    /// mmap failed.
    #[error("cannot map {pages} staging pages: {source}")]
    Map {
        /// Pages requested.
        pages: u32,
        /// Cause.
        source: std::io::Error,
    },
    /// userfaultfd setup failed.
    #[error("staging userfaultfd: {0}")]
    Uffd(#[from] UffdError),
}

/// The staging area.
#[derive(Debug)]
pub struct Staging {
    base: usize,
    pages: u32,
    uffd: Uffd,
    alloc: Mutex<SlotAllocator>,
    /// Held shared by every move between guest memory and a slot, and
    /// exclusively by [`Staging::without_moves`]: a page-table scan of guest
    /// memory then staging must not see a page on both sides of a move (or
    /// on neither).
    moves: RwLock<()>,
}

impl Staging {
    /// Maps and registers `pages` staging pages (address space only; memory
    /// is used only by occupied slots).
    pub fn new(pages: u32) -> Result<Self, StagingError> {
        let len = pages as usize * PAGE_SIZE;
        // SAFETY: a fresh anonymous private mapping; no existing memory is
        // affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(StagingError::Map {
                pages,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = p as usize;
        // Unmaps on early return.
        let guard = Unmap(base, len);
        for advice in [libc::MADV_NOHUGEPAGE, libc::MADV_DONTFORK] {
            // SAFETY: advice on the mapping created above; failure only loses
            // an optimisation.
            unsafe { libc::madvise(p, len, advice) };
        }
        let uffd = Uffd::create(FEATURE_MOVE | FEATURE_SIGBUS)?;
        uffd.register(base, len, false)?;
        std::mem::forget(guard);
        Ok(Self {
            base,
            pages,
            uffd,
            alloc: Mutex::new(SlotAllocator::new(pages)),
            moves: RwLock::new(()),
        })
    }

    /// Runs `f` while no page moves between guest memory and staging (moves
    /// already under way finish first; new ones wait). Pages still arrive by
    /// copy and leave by release meanwhile, but none is in two places.
    pub fn without_moves<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.moves.write().unwrap_or_else(|e| e.into_inner());
        f()
    }

    fn moving(&self) -> RwLockReadGuard<'_, ()> {
        self.moves.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.pages
    }

    /// Slots in use.
    pub fn used(&self) -> u32 {
        self.alloc.lock().unwrap_or_else(|e| e.into_inner()).used()
    }

    /// Reserves an empty slot.
    pub fn alloc(&self) -> Option<u32> {
        self.alloc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alloc()
            .map(|s| s.0)
    }

    /// Address of slot `s`.
    pub fn addr(&self, s: u32) -> usize {
        debug_assert!(s < self.pages);
        self.base + s as usize * PAGE_SIZE
    }

    /// The page held in slot `s`.
    ///
    /// # Safety
    ///
    /// Slot `s` must hold a page (be populated) and the caller must own it
    /// (hold the lock of the guest page staged there) for the lifetime of
    /// the returned slice.
    pub unsafe fn page(&self, s: u32) -> &[u8] {
        // SAFETY: the caller guarantees the slot is populated and exclusively
        // owned; the address range lies inside our mapping.
        unsafe { std::slice::from_raw_parts(self.addr(s) as *const u8, PAGE_SIZE) }
    }

    /// Frees slot `s`, which must already be empty (its page was moved out).
    pub fn forget(&self, s: u32) {
        let r = self
            .alloc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free(crate::slots::Slot(s));
        debug_assert!(r.is_ok(), "staging slot {s}: {r:?}");
    }

    /// Drops the page in slot `s` (returns its memory) and frees the slot.
    pub fn release(&self, s: u32) {
        // SAFETY: the slot lies inside our private mapping and its page is
        // no longer needed; MADV_DONTNEED there raises no event (no
        // EVENT_REMOVE on the staging userfaultfd).
        unsafe {
            libc::madvise(
                self.addr(s) as *mut libc::c_void,
                PAGE_SIZE,
                libc::MADV_DONTNEED,
            )
        };
        self.forget(s);
    }

    /// Whether slot `s` holds a page (`mincore(2)`).
    pub fn is_populated(&self, s: u32) -> bool {
        let mut v = 0u8;
        // SAFETY: the slot address is page aligned and inside our mapping;
        // `v` receives one byte for the one page queried.
        let r = unsafe { libc::mincore(self.addr(s) as *mut libc::c_void, PAGE_SIZE, &mut v) };
        r == 0 && v & 1 != 0
    }

    /// Moves the page at guest address `src` into empty slot `s`. Returns
    /// `Ok(false)` if `src` had no page (nothing moved; the move is asked
    /// without `ALLOW_SRC_HOLES`, which would report holes as moved).
    ///
    /// `UFFDIO_MOVE` can report an error after it did move the page (seen
    /// on 6.18 while the source range is being zapped concurrently: an
    /// internal retry then finds the destination populated and answers
    /// `EEXIST`). The slot belongs to the caller, so after any error its
    /// occupancy says what really happened.
    ///
    /// # Safety
    ///
    /// `src` must be a page of raw private anonymous memory (guest RAM) whose
    /// lock the caller holds.
    pub unsafe fn move_in(&self, s: u32, src: usize) -> Result<bool, UffdError> {
        let _moving = self.moving();
        // SAFETY: destination is an empty slot of our registered area; the
        // source contract comes from the caller.
        match unsafe {
            self.uffd
                .move_pages(self.addr(s), src, PAGE_SIZE, false, false)
        } {
            Ok(_) => Ok(true),
            Err(_) if self.is_populated(s) => Ok(true),
            Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves the page in slot `s` back to guest address `dst` through the
    /// guest's userfaultfd `guest` (the destination must be registered with
    /// it), waking waiters on `dst` if `wake`. Like [`Staging::move_in`],
    /// an error is checked against the slot: if the page left, it moved.
    ///
    /// # Safety
    ///
    /// `dst` must be an unpopulated page of raw guest memory registered with
    /// `guest`, whose lock the caller holds; slot `s` must hold its page.
    pub unsafe fn move_out(
        &self,
        s: u32,
        guest: &Uffd,
        dst: usize,
        wake: bool,
    ) -> Result<(), UffdError> {
        let _moving = self.moving();
        // SAFETY: moves our staged page to the caller's registered guest
        // page (contract above).
        match unsafe { guest.move_pages(dst, self.addr(s), PAGE_SIZE, wake, false) } {
            Ok(_) => Ok(()),
            Err(_) if !self.is_populated(s) => {
                if wake {
                    let _ = guest.wake(dst, PAGE_SIZE);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Copies `data` into empty slot `s`.
    pub fn copy_in(&self, s: u32, data: &[u8]) -> Result<(), UffdError> {
        debug_assert_eq!(data.len(), PAGE_SIZE);
        // SAFETY: the destination is an empty slot of our registered area,
        // which no Rust reference covers; `data` is a readable page.
        unsafe {
            self.uffd
                .copy(self.addr(s), data.as_ptr(), PAGE_SIZE, false, false)
        }
        .map(|_| ())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self
            .uffd
            .unregister(self.base, self.pages as usize * PAGE_SIZE);
        drop(Unmap(self.base, self.pages as usize * PAGE_SIZE));
    }
}

struct Unmap(usize, usize);

impl Drop for Unmap {
    fn drop(&mut self) {
        // SAFETY: unmaps the staging mapping this module created; nothing
        // refers to it any more.
        unsafe { libc::munmap(self.0 as *mut libc::c_void, self.1) };
    }
}

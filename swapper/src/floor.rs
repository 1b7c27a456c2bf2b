//! The userfaultfd floor: the least any userfaultfd swapper's fault costs.
//!
//! No merged kernel lets a faulting vCPU serve its own fault, so every
//! swap-in through userfaultfd is a round trip: the vCPU thread blocks in
//! `handle_userfault`, a handler thread wakes, reads the event and answers
//! with `UFFDIO_COPY`, which wakes the vCPU. [`Floor`] is that round trip and
//! nothing else: one handler thread, waiting exactly as the swapper's do
//! (`poll`, then a non-blocking read), that answers every missing fault with
//! a copy of one page prepared in advance. No store, no page state, no
//! eviction, no checksum, no histogram. [`Floor::zap`] drops every page so
//! that each next access faults again.
//!
//! A benchmark runs the same probe under [`Floor`] and under the swapper and
//! reports the swapper's fault latency as a ratio to the floor's: everything
//! above it is the swapper's own work.

use crate::handler::{poll, signal, stop_fd};
use crate::page::PAGE_SIZE;
use crate::region::GuestRegion;
use crate::store::AlignedPage;
use crate::uffd::{EventBuffer, Uffd, UffdError, UffdEvent};
use nix::errno::Errno;
use nix::sys::mman::{madvise, MmapAdvise};
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Why the floor could not start or zap.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// The userfaultfd could not be made or the region registered.
    #[error(transparent)]
    Uffd(#[from] UffdError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// The call.
        what: &'static str,
        /// Its error.
        source: std::io::Error,
    },
}

/// What the floor's handler did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FloorStats {
    /// Missing faults answered with `UFFDIO_COPY`.
    pub faults: u64,
    /// Faults whose page was already there (`EEXIST`): woken only.
    pub already_mapped: u64,
    /// Copies that failed otherwise (the thread was woken all the same).
    pub errors: u64,
}

struct Shared {
    uffd: Uffd,
    page: Box<AlignedPage>,
    stop: AtomicBool,
    faults: AtomicU64,
    already_mapped: AtomicU64,
    errors: AtomicU64,
}

/// A bare userfaultfd handler over one region (see the module docs).
pub struct Floor {
    shared: Arc<Shared>,
    region: GuestRegion,
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Floor {
    /// Registers `region` for missing faults and starts the handler thread.
    ///
    /// # Safety
    ///
    /// `region` must be a private anonymous mapping, page aligned, that no
    /// Rust reference covers and that stays mapped until the floor is shut
    /// down or dropped: the handler installs pages into it and
    /// [`Floor::zap`] drops them.
    pub unsafe fn start(region: GuestRegion) -> Result<Self, FloorError> {
        let uffd = Uffd::create(0)?;
        uffd.register(region.addr, region.len, false)?;
        let mut page = AlignedPage::boxed();
        // A recognisable page, so a served access reads something other than zeros.
        for (i, b) in page.0.iter_mut().enumerate() {
            *b = i as u8;
        }
        let shared = Arc::new(Shared {
            uffd,
            page,
            stop: AtomicBool::new(false),
            faults: AtomicU64::new(0),
            already_mapped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let stop = Arc::new(stop_fd().map_err(|source| FloorError::Os {
            what: "eventfd",
            source,
        })?);
        let thread = std::thread::Builder::new()
            .name("swapper-floor".into())
            .spawn({
                let (shared, stop) = (shared.clone(), stop.clone());
                move || run(&shared, &stop)
            })
            .map_err(|source| FloorError::Os {
                what: "spawning the floor's handler",
                source,
            })?;
        Ok(Self {
            shared,
            region,
            stop,
            thread: Some(thread),
        })
    }

    /// Drops every page of the region (`MADV_DONTNEED`): each next access is
    /// a missing fault again.
    pub fn zap(&self) -> Result<(), FloorError> {
        let addr =
            NonNull::new(self.region.addr as *mut std::ffi::c_void).ok_or(FloorError::Os {
                what: "madvise(MADV_DONTNEED)",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        // SAFETY: the region is a private anonymous mapping that no Rust
        // reference covers (`start`'s contract); dropping its pages only
        // makes the next accesses fault, which the handler serves.
        unsafe { madvise(addr, self.region.len, MmapAdvise::MADV_DONTNEED) }.map_err(|e| {
            FloorError::Os {
                what: "madvise(MADV_DONTNEED)",
                source: e.into(),
            }
        })
    }

    /// What the handler did so far.
    pub fn stats(&self) -> FloorStats {
        let s = &self.shared;
        FloorStats {
            faults: s.faults.load(Ordering::Acquire),
            already_mapped: s.already_mapped.load(Ordering::Acquire),
            errors: s.errors.load(Ordering::Acquire),
        }
    }

    /// Stops the handler and unregisters the region: plain memory again.
    pub fn shutdown(mut self) -> FloorStats {
        self.stop_thread();
        self.stats()
    }

    fn stop_thread(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.stop.store(true, Ordering::Release);
            signal(&self.stop);
            let _ = t.join();
            // Unregistering wakes any thread still waiting on the region.
            let _ = self
                .shared
                .uffd
                .unregister(self.region.addr, self.region.len);
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn run(s: &Shared, stop: &OwnedFd) {
    let mut evbuf = EventBuffer::new(64);
    let mut events = Vec::with_capacity(64);
    let uffd = s.uffd.as_raw_fd();
    while !s.stop.load(Ordering::Acquire) {
        events.clear();
        poll(uffd, stop.as_raw_fd(), -1);
        if s.uffd.read_events(&mut evbuf, &mut events).is_err() {
            s.errors.fetch_add(1, Ordering::Relaxed);
        }
        for ev in &events {
            let UffdEvent::Fault { addr, .. } = *ev else {
                continue;
            };
            let page = addr & !(PAGE_SIZE - 1);
            // Counted before the copy wakes the faulting thread, so that
            // thread sees its own fault counted.
            s.faults.fetch_add(1, Ordering::Release);
            // SAFETY: `page` lies in the registered region (the kernel only
            // reports faults there), which no Rust reference covers; the
            // source is our own page.
            if let Err(e) = unsafe { s.uffd.copy(page, s.page.0.as_ptr(), PAGE_SIZE, false, true) }
            {
                s.faults.fetch_sub(1, Ordering::Release);
                let counter = if e.errno() == Some(Errno::EEXIST) {
                    &s.already_mapped
                } else {
                    &s.errors
                };
                counter.fetch_add(1, Ordering::Release);
                let _ = s.uffd.wake(page, PAGE_SIZE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private anonymous mapping of `pages` pages, unmapped on drop.
    struct Map(NonNull<std::ffi::c_void>, usize);

    impl Map {
        fn new(pages: usize) -> Self {
            let len = std::num::NonZeroUsize::new(pages * PAGE_SIZE).expect("pages > 0");
            let prot = nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE;
            let flags = nix::sys::mman::MapFlags::MAP_PRIVATE;
            // SAFETY: a fresh anonymous mapping; no existing memory is touched.
            let p = unsafe { nix::sys::mman::mmap_anonymous(None, len, prot, flags) };
            Self(p.expect("mmap"), len.get())
        }

        fn addr(&self) -> usize {
            self.0.as_ptr() as usize
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: our own mapping, no longer used.
            let _ = unsafe { nix::sys::mman::munmap(self.0, self.1) };
        }
    }

    #[test]
    fn every_access_after_a_zap_is_one_served_fault() {
        let map = Map::new(8);
        let region = GuestRegion {
            addr: map.addr(),
            len: map.1,
        };
        // SAFETY: `map` is a private anonymous mapping only read below
        // through raw pointers, and it outlives the floor.
        let floor = match unsafe { Floor::start(region) } {
            Ok(f) => f,
            Err(e) => panic!("userfaultfd is this tier's: {e}"),
        };
        let read = |i: usize| {
            // SAFETY: inside the mapping; a volatile read through a raw pointer.
            unsafe { std::ptr::read_volatile((map.addr() + i * PAGE_SIZE + 5) as *const u8) }
        };
        for i in 0..8 {
            assert_eq!(read(i), 5, "page {i} holds the prepared page");
        }
        assert_eq!(floor.stats().faults, 8);
        for i in 0..8 {
            read(i);
        }
        assert_eq!(floor.stats().faults, 8, "resident pages do not fault");
        floor.zap().unwrap();
        for i in 0..8 {
            read(i);
        }
        let s = floor.shutdown();
        assert_eq!(s.faults, 16);
        assert_eq!(s.errors, 0);
    }
}

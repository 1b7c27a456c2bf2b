//! Thin userfaultfd layer: creation and registration through the
//! `userfaultfd` crate, plus raw ioctls for what the crate lacks
//! (`UFFDIO_COPY_MODE_WP`, `UFFDIO_MOVE`, `UFFDIO_POISON`, partial-progress
//! reporting of `UFFDIO_ZEROPAGE`).
//!
//! Every operation that changes page tables is an `unsafe fn`: it changes the
//! contents of memory behind the compiler's back, so callers must only aim it
//! at raw memory that no Rust reference covers (guest RAM, staging memory).

use nix::errno::Errno;
use std::os::fd::{AsRawFd, RawFd};
use thiserror::Error;
use userfaultfd::{FeatureFlags, RegisterMode, Uffd as CrateUffd, UffdBuilder};

/// `UFFD_FEATURE_PAGEFAULT_FLAG_WP`.
pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFD_FEATURE_SIGBUS`.
pub const FEATURE_SIGBUS: u64 = 1 << 7;
/// `UFFD_FEATURE_THREAD_ID`.
pub const FEATURE_THREAD_ID: u64 = 1 << 8;
/// `UFFD_FEATURE_POISON`.
pub const FEATURE_POISON: u64 = 1 << 14;
/// `UFFD_FEATURE_MOVE`.
pub const FEATURE_MOVE: u64 = 1 << 16;

const UFFDIO: u8 = 0xAA;
const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1 << 0;
const UFFDIO_COPY_MODE_WP: u64 = 1 << 1;
const UFFDIO_ZEROPAGE_MODE_DONTWAKE: u64 = 1 << 0;
const UFFDIO_MOVE_MODE_DONTWAKE: u64 = 1 << 0;
const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 1 << 1;
const UFFDIO_POISON_MODE_DONTWAKE: u64 = 1 << 0;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const UFFDIO_WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

#[repr(C)]
struct UffdioMove {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    moved: i64,
}

#[repr(C)]
struct UffdioPoison {
    range: UffdioRange,
    mode: u64,
    updated: i64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

nix::ioctl_readwrite!(ioctl_copy, UFFDIO, 0x03, UffdioCopy);
nix::ioctl_readwrite!(ioctl_zeropage, UFFDIO, 0x04, UffdioZeropage);
nix::ioctl_readwrite!(ioctl_move, UFFDIO, 0x05, UffdioMove);
nix::ioctl_readwrite!(ioctl_writeprotect, UFFDIO, 0x06, UffdioWriteprotect);
nix::ioctl_readwrite!(ioctl_poison, UFFDIO, 0x08, UffdioPoison);
nix::ioctl_read!(ioctl_wake, UFFDIO, 0x02, UffdioRange);

/// Errors of this module.
#[derive(Debug, Error)]
pub enum UffdError {
    /// Creating the userfaultfd or negotiating features failed.
    #[error("cannot create userfaultfd with features {features:#x}: {source}")]
    Create {
        /// Requested feature bits.
        features: u64,
        /// Cause.
        source: userfaultfd::Error,
    },
    /// `UFFDIO_REGISTER` / `UFFDIO_UNREGISTER` failed.
    #[error("cannot {op} {len:#x} bytes at {addr:#x}: {source}")]
    Register {
        /// Which operation.
        op: &'static str,
        /// Range start.
        addr: usize,
        /// Range length.
        len: usize,
        /// Cause.
        source: userfaultfd::Error,
    },
    /// A page-table ioctl failed after `done` bytes.
    #[error("{op} failed after {done} bytes: {errno}")]
    Ioctl {
        /// Which ioctl.
        op: &'static str,
        /// Bytes processed before the failure.
        done: usize,
        /// The error.
        errno: Errno,
    },
    /// Reading events failed.
    #[error("reading userfaultfd events: {0}")]
    Read(userfaultfd::Error),
}

impl UffdError {
    /// The errno of a failed ioctl.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Ioctl { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Bytes processed before an ioctl failed.
    pub fn done(&self) -> usize {
        match self {
            Self::Ioctl { done, .. } => *done,
            _ => 0,
        }
    }
}

/// A userfaultfd event, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UffdEvent {
    /// A page fault.
    Fault {
        /// Faulting address (page aligned by the kernel unless EXACT_ADDRESS).
        addr: usize,
        /// The access was a write.
        write: bool,
        /// A write-protect fault (the page is present but protected).
        wp: bool,
        /// Faulting thread (needs `UFFD_FEATURE_THREAD_ID`).
        tid: i32,
    },
    /// `madvise(MADV_DONTNEED/REMOVE)` on `[start, end)`: the pages are
    /// about to be zapped.
    Remove {
        /// Start of the range.
        start: usize,
        /// End of the range.
        end: usize,
    },
    /// An event this swapper does not request (fork, remap, unmap).
    Unexpected,
}

/// An owned userfaultfd.
#[derive(Debug)]
pub struct Uffd {
    inner: CrateUffd,
}

fn ioctl_result(op: &'static str, r: nix::Result<i32>, done: i64) -> Result<usize, UffdError> {
    match r {
        Ok(_) => Ok(done.max(0) as usize),
        Err(errno) => Err(UffdError::Ioctl {
            op,
            done: done.max(0) as usize,
            errno,
        }),
    }
}

impl Uffd {
    /// Creates a non-blocking, close-on-exec userfaultfd that also handles
    /// kernel-mode faults (needed for KVM and for syscalls touching guest
    /// memory from VMM threads), with the given feature bits.
    pub fn create(features: u64) -> Result<Self, UffdError> {
        let inner = UffdBuilder::new()
            .close_on_exec(true)
            .non_blocking(true)
            .user_mode_only(false)
            .require_features(FeatureFlags::from_bits_retain(features))
            .create()
            .map_err(|source| UffdError::Create { features, source })?;
        Ok(Self { inner })
    }

    /// Registers `[addr, addr + len)` for missing faults and, if `wp`, for
    /// write-protect faults.
    pub fn register(&self, addr: usize, len: usize, wp: bool) -> Result<(), UffdError> {
        let mut mode = RegisterMode::MISSING;
        if wp {
            mode |= RegisterMode::WRITE_PROTECT;
        }
        self.inner
            .register_with_mode(addr as *mut libc::c_void, len, mode)
            .map(|_| ())
            .map_err(|source| UffdError::Register {
                op: "register",
                addr,
                len,
                source,
            })
    }

    /// Unregisters a range (wakes any thread still waiting on it).
    pub fn unregister(&self, addr: usize, len: usize) -> Result<(), UffdError> {
        self.inner
            .unregister(addr as *mut libc::c_void, len)
            .map_err(|source| UffdError::Register {
                op: "unregister",
                addr,
                len,
                source,
            })
    }

    /// Reads all pending events (non-blocking; empty when none).
    pub fn read_events(
        &self,
        buf: &mut userfaultfd::EventBuffer,
        out: &mut Vec<UffdEvent>,
    ) -> Result<(), UffdError> {
        for ev in self.inner.read_events(buf).map_err(UffdError::Read)? {
            let ev = ev.map_err(UffdError::Read)?;
            out.push(match ev {
                userfaultfd::Event::Pagefault {
                    kind,
                    rw,
                    addr,
                    thread_id,
                } => UffdEvent::Fault {
                    addr: addr as usize,
                    write: rw == userfaultfd::ReadWrite::Write,
                    wp: kind == userfaultfd::FaultKind::WriteProtected,
                    tid: thread_id.as_raw(),
                },
                userfaultfd::Event::Remove { start, end } => UffdEvent::Remove {
                    start: start as usize,
                    end: end as usize,
                },
                _ => UffdEvent::Unexpected,
            });
        }
        Ok(())
    }

    /// `UFFDIO_COPY`: atomically installs a copy of `len` bytes at `src` at
    /// `dst`, write-protected if `wp`. Returns bytes copied.
    ///
    /// # Safety
    ///
    /// `dst..dst+len` must be raw memory registered with this userfaultfd that
    /// no Rust reference covers; `src..src+len` must be readable.
    pub unsafe fn copy(
        &self,
        dst: usize,
        src: *const u8,
        len: usize,
        wp: bool,
        wake: bool,
    ) -> Result<usize, UffdError> {
        let mut arg = UffdioCopy {
            dst: dst as u64,
            src: src as u64,
            len: len as u64,
            mode: if wp { UFFDIO_COPY_MODE_WP } else { 0 }
                | if wake { 0 } else { UFFDIO_COPY_MODE_DONTWAKE },
            copy: 0,
        };
        // SAFETY: `arg` is a valid uffdio_copy that outlives the call; the
        // caller guarantees the destination is raw registered memory.
        let r = unsafe { ioctl_copy(self.as_raw_fd(), &mut arg) };
        ioctl_result("UFFDIO_COPY", r, arg.copy)
    }

    /// `UFFDIO_ZEROPAGE`: maps the shared zero page over `[dst, dst+len)`.
    ///
    /// # Safety
    ///
    /// As for [`Uffd::copy`] (destination only).
    pub unsafe fn zeropage(&self, dst: usize, len: usize, wake: bool) -> Result<usize, UffdError> {
        let mut arg = UffdioZeropage {
            range: UffdioRange {
                start: dst as u64,
                len: len as u64,
            },
            mode: if wake {
                0
            } else {
                UFFDIO_ZEROPAGE_MODE_DONTWAKE
            },
            zeropage: 0,
        };
        // SAFETY: valid argument struct; destination contract from the caller.
        let r = unsafe { ioctl_zeropage(self.as_raw_fd(), &mut arg) };
        ioctl_result("UFFDIO_ZEROPAGE", r, arg.zeropage)
    }

    /// `UFFDIO_MOVE`: moves the pages at `src` to `dst` (which must be
    /// registered with this userfaultfd and unpopulated). With `allow_holes`,
    /// unpopulated source pages are skipped. Returns bytes processed.
    ///
    /// # Safety
    ///
    /// Both ranges must be raw private anonymous memory no Rust reference
    /// covers: the source loses its content.
    pub unsafe fn move_pages(
        &self,
        dst: usize,
        src: usize,
        len: usize,
        wake: bool,
        allow_holes: bool,
    ) -> Result<usize, UffdError> {
        let mut arg = UffdioMove {
            dst: dst as u64,
            src: src as u64,
            len: len as u64,
            mode: if wake { 0 } else { UFFDIO_MOVE_MODE_DONTWAKE }
                | if allow_holes {
                    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES
                } else {
                    0
                },
            moved: 0,
        };
        // SAFETY: valid argument struct; range contract from the caller.
        let r = unsafe { ioctl_move(self.as_raw_fd(), &mut arg) };
        ioctl_result("UFFDIO_MOVE", r, arg.moved)
    }

    /// `UFFDIO_POISON`: installs poison markers; any later access fails
    /// (`SIGBUS` in user mode, `EFAULT`/`EHWPOISON` for kernel accesses).
    ///
    /// # Safety
    ///
    /// As for [`Uffd::copy`] (destination only).
    pub unsafe fn poison(&self, dst: usize, len: usize, wake: bool) -> Result<usize, UffdError> {
        let mut arg = UffdioPoison {
            range: UffdioRange {
                start: dst as u64,
                len: len as u64,
            },
            mode: if wake { 0 } else { UFFDIO_POISON_MODE_DONTWAKE },
            updated: 0,
        };
        // SAFETY: valid argument struct; destination contract from the caller.
        let r = unsafe { ioctl_poison(self.as_raw_fd(), &mut arg) };
        ioctl_result("UFFDIO_POISON", r, arg.updated)
    }

    /// `UFFDIO_WRITEPROTECT`: sets (`protect`) or clears write protection.
    /// Clearing wakes waiters unless `wake` is false.
    pub fn write_protect(
        &self,
        addr: usize,
        len: usize,
        protect: bool,
        wake: bool,
    ) -> Result<(), UffdError> {
        let mut arg = UffdioWriteprotect {
            range: UffdioRange {
                start: addr as u64,
                len: len as u64,
            },
            mode: if protect {
                UFFDIO_WRITEPROTECT_MODE_WP
            } else if wake {
                0
            } else {
                UFFDIO_WRITEPROTECT_MODE_DONTWAKE
            },
        };
        // SAFETY: valid argument struct; changing protection never changes
        // memory contents, and the kernel validates the range.
        let r = unsafe { ioctl_writeprotect(self.as_raw_fd(), &mut arg) };
        ioctl_result("UFFDIO_WRITEPROTECT", r, 0).map(|_| ())
    }

    /// `UFFDIO_WAKE`: wakes threads waiting on faults in the range.
    pub fn wake(&self, addr: usize, len: usize) -> Result<(), UffdError> {
        let mut arg = UffdioRange {
            start: addr as u64,
            len: len as u64,
        };
        // SAFETY: valid argument struct; waking changes no memory.
        let r = unsafe { ioctl_wake(self.as_raw_fd(), &mut arg) };
        ioctl_result("UFFDIO_WAKE", r, 0).map(|_| ())
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

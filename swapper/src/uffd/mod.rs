//! Thin userfaultfd layer over the kernel's uAPI ([`sys`]): creation (the
//! `userfaultfd(2)` syscall, falling back to `/dev/userfaultfd`), the
//! `UFFDIO_API` handshake, registration, the page-table ioctls swaplab uses
//! (`UFFDIO_COPY` with `MODE_WP`, `ZEROPAGE`, `MOVE`, `POISON`,
//! `WRITEPROTECT`, `WAKE`) and event reading ([`UffdEvent`]).
//!
//! Every operation that changes page tables is an `unsafe fn`: it changes the
//! contents of memory behind the compiler's back, so callers must only aim it
//! at raw memory that no Rust reference covers (guest RAM, staging memory).
//!
//! Errors keep the kernel's errno and, for the page-table ioctls, how many
//! bytes were done before it ([`UffdError::errno`], [`UffdError::done`]):
//! callers rely on `EAGAIN` (mappings changing under the ioctl, or a partial
//! range), `EEXIST` (the page was installed meanwhile) and `ENOENT` (a move
//! whose source is gone).

mod event;
pub mod sys;

pub use event::{EventBuffer, UffdEvent};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use sys::*;
use thiserror::Error;

/// `UFFD_FEATURE_PAGEFAULT_FLAG_WP`.
pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = UFFD_FEATURE_PAGEFAULT_FLAG_WP;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const FEATURE_EVENT_REMOVE: u64 = UFFD_FEATURE_EVENT_REMOVE;
/// `UFFD_FEATURE_SIGBUS`.
pub const FEATURE_SIGBUS: u64 = UFFD_FEATURE_SIGBUS;
/// `UFFD_FEATURE_THREAD_ID`.
pub const FEATURE_THREAD_ID: u64 = UFFD_FEATURE_THREAD_ID;
/// `UFFD_FEATURE_POISON`.
pub const FEATURE_POISON: u64 = UFFD_FEATURE_POISON;
/// `UFFD_FEATURE_MOVE`.
pub const FEATURE_MOVE: u64 = UFFD_FEATURE_MOVE;

/// The device `create` falls back to when the syscall is refused (e.g.
/// `vm.unprivileged_userfaultfd = 0` without `CAP_SYS_PTRACE`, or a seccomp
/// filter); access to it is governed by its file permissions.
pub const DEVICE_PATH: &str = "/dev/userfaultfd";

/// Errors of this module.
#[derive(Debug, Error)]
pub enum UffdError {
    /// Neither the syscall nor the device gave a userfaultfd.
    #[error(
        "cannot create a userfaultfd: userfaultfd(2) failed with {syscall}, \
         {DEVICE_PATH} with {device}"
    )]
    Open {
        /// Why the syscall failed.
        syscall: Errno,
        /// Why opening the device or `USERFAULTFD_IOC_NEW` failed.
        device: Errno,
    },
    /// `/dev/userfaultfd` gave no userfaultfd ([`Source::Device`]).
    #[error("cannot create a userfaultfd from {DEVICE_PATH}: {0}")]
    Device(Errno),
    /// The kernel lacks some requested features.
    #[error(
        "the kernel's userfaultfd lacks features {missing:#x} \
         (requested {requested:#x}, offered {offered:#x})"
    )]
    Features {
        /// Requested feature bits.
        requested: u64,
        /// Feature bits the kernel offers.
        offered: u64,
        /// `requested & !offered`.
        missing: u64,
    },
    /// The `UFFDIO_API` handshake failed otherwise.
    #[error("UFFDIO_API with features {features:#x} failed: {errno}")]
    Api {
        /// Requested feature bits.
        features: u64,
        /// The error.
        errno: Errno,
    },
    /// `UFFDIO_REGISTER` / `UFFDIO_UNREGISTER` failed.
    #[error("cannot {op} {len:#x} bytes at {addr:#x}: {errno}")]
    Register {
        /// Which operation.
        op: &'static str,
        /// Range start.
        addr: usize,
        /// Range length.
        len: usize,
        /// The error.
        errno: Errno,
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
    Read(Errno),
    /// `read(2)` returned a length that is not a whole number of messages.
    #[error("read {0} bytes from a userfaultfd, not a multiple of {UFFD_MSG_SIZE}")]
    PartialMessage(usize),
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

/// An owned userfaultfd, past the `UFFDIO_API` handshake.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    /// Features the kernel offers (`uffdio_api.features` after the handshake).
    offered: u64,
}

/// The flags every userfaultfd here is created with: non-blocking (handler
/// threads poll), close-on-exec, and no `UFFD_USER_MODE_ONLY` (faults from
/// KVM and from syscalls on guest memory must reach the handler too).
const CREATE_FLAGS: i32 = libc::O_CLOEXEC | libc::O_NONBLOCK;

/// A new userfaultfd from the `userfaultfd(2)` syscall.
fn open_syscall() -> Result<OwnedFd, Errno> {
    // SAFETY: userfaultfd(2) takes one flags argument and returns a new
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, CREATE_FLAGS) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A new userfaultfd from `/dev/userfaultfd` (Linux 6.1+).
fn open_device() -> Result<OwnedFd, Errno> {
    let dev = nix::fcntl::open(DEVICE_PATH, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: `dev` is an open /dev/userfaultfd; USERFAULTFD_IOC_NEW takes
    // the creation flags by value and returns a new descriptor.
    let fd = unsafe { sys::new_from_device(dev.as_raw_fd(), CREATE_FLAGS) }?;
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `UFFDIO_API` on a fresh descriptor; returns the features the kernel offers.
fn handshake(fd: BorrowedFd<'_>, features: u64) -> Result<u64, Errno> {
    let mut arg = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: `fd` is a userfaultfd and `arg` a valid uffdio_api that
    // outlives the call.
    unsafe { sys::api(fd.as_raw_fd(), &mut arg) }?;
    Ok(arg.features)
}

/// Which way [`Uffd::create_via`] obtains the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The syscall, then the device if the syscall is refused.
    Any,
    /// `/dev/userfaultfd` only.
    Device,
}

impl Uffd {
    /// Creates a non-blocking, close-on-exec userfaultfd that also handles
    /// kernel-mode faults (needed for KVM and for syscalls touching guest
    /// memory from VMM threads), with the given feature bits enabled.
    pub fn create(features: u64) -> Result<Self, UffdError> {
        Self::create_via(Source::Any, features)
    }

    /// [`Uffd::create`], choosing where the descriptor comes from.
    pub fn create_via(source: Source, features: u64) -> Result<Self, UffdError> {
        let fd = match source {
            Source::Any => match open_syscall() {
                Ok(fd) => fd,
                Err(syscall) => {
                    open_device().map_err(|device| UffdError::Open { syscall, device })?
                }
            },
            Source::Device => open_device().map_err(UffdError::Device)?,
        };
        match handshake(fd.as_fd(), features) {
            Ok(offered) if offered & features == features => Ok(Self { fd, offered }),
            // Accepted, yet not every requested feature is on offer: refuse
            // rather than run without one.
            Ok(offered) => Err(UffdError::Features {
                requested: features,
                offered,
                missing: features & !offered,
            }),
            // An unknown feature is EINVAL, and the kernel then reports no
            // features at all: ask a fresh descriptor what it offers.
            Err(Errno::EINVAL) if features != 0 => match Self::offered_features(source) {
                Ok(offered) if features & !offered != 0 => Err(UffdError::Features {
                    requested: features,
                    offered,
                    missing: features & !offered,
                }),
                _ => Err(UffdError::Api {
                    features,
                    errno: Errno::EINVAL,
                }),
            },
            Err(errno) => Err(UffdError::Api { features, errno }),
        }
    }

    /// The features this kernel's userfaultfd offers (a handshake on a
    /// throwaway descriptor).
    pub fn offered_features(source: Source) -> Result<u64, UffdError> {
        Ok(Self::create_via(source, 0)?.offered)
    }

    /// The features the kernel offers (not only those enabled here).
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Registers `[addr, addr + len)` for missing faults and, if `wp`, for
    /// write-protect faults.
    pub fn register(&self, addr: usize, len: usize, wp: bool) -> Result<(), UffdError> {
        let mut arg = UffdioRegister {
            range: UffdioRange {
                start: addr as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING | if wp { UFFDIO_REGISTER_MODE_WP } else { 0 },
            ioctls: 0,
        };
        // SAFETY: valid argument struct; registering changes no memory (the
        // kernel validates the range and the mapping type).
        unsafe { sys::register(self.as_raw_fd(), &mut arg) }
            .map(|_| ())
            .map_err(|errno| UffdError::Register {
                op: "register",
                addr,
                len,
                errno,
            })
    }

    /// Unregisters a range (wakes any thread still waiting on it).
    pub fn unregister(&self, addr: usize, len: usize) -> Result<(), UffdError> {
        let mut arg = UffdioRange {
            start: addr as u64,
            len: len as u64,
        };
        // SAFETY: valid argument struct; unregistering changes no memory.
        unsafe { sys::unregister(self.as_raw_fd(), &mut arg) }
            .map(|_| ())
            .map_err(|errno| UffdError::Register {
                op: "unregister",
                addr,
                len,
                errno,
            })
    }

    /// Reads all pending events that fit in `buf` into `out` (non-blocking:
    /// nothing is added when none are pending).
    pub fn read_events(
        &self,
        buf: &mut EventBuffer,
        out: &mut Vec<UffdEvent>,
    ) -> Result<(), UffdError> {
        let n = match nix::unistd::read(self.fd.as_fd(), buf.bytes_mut()) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(UffdError::Read(e)),
        };
        if n % UFFD_MSG_SIZE != 0 {
            return Err(UffdError::PartialMessage(n));
        }
        for msg in buf.msgs(n / UFFD_MSG_SIZE) {
            if msg.event == UFFD_EVENT_FORK {
                // SAFETY: the kernel installed this descriptor for us during
                // the read and nothing else knows it; closing it here is
                // its only use.
                drop(unsafe { OwnedFd::from_raw_fd(msg.arg_u32(0) as RawFd) });
            }
            out.push(UffdEvent::from_msg(&msg));
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
        let r = unsafe { sys::copy(self.as_raw_fd(), &mut arg) };
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
        let r = unsafe { sys::zeropage(self.as_raw_fd(), &mut arg) };
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
        let r = unsafe { sys::move_pages(self.as_raw_fd(), &mut arg) };
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
        let r = unsafe { sys::poison(self.as_raw_fd(), &mut arg) };
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
        let r = unsafe { sys::writeprotect(self.as_raw_fd(), &mut arg) };
        ioctl_result("UFFDIO_WRITEPROTECT", r, 0).map(|_| ())
    }

    /// `UFFDIO_WAKE`: wakes threads waiting on faults in the range.
    pub fn wake(&self, addr: usize, len: usize) -> Result<(), UffdError> {
        let mut arg = UffdioRange {
            start: addr as u64,
            len: len as u64,
        };
        // SAFETY: valid argument struct; waking changes no memory.
        let r = unsafe { sys::wake(self.as_raw_fd(), &mut arg) };
        ioctl_result("UFFDIO_WAKE", r, 0).map(|_| ())
    }
}

/// The result of a page-table ioctl whose struct reports progress in `done`
/// (bytes, or a negated errno, which counts as none).
fn ioctl_result(op: &'static str, r: nix::Result<i32>, done: i64) -> Result<usize, UffdError> {
    let done = done.max(0) as usize;
    match r {
        Ok(_) => Ok(done),
        Err(errno) => Err(UffdError::Ioctl { op, done, errno }),
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_result_keeps_progress_and_errno() {
        assert_eq!(ioctl_result("X", Ok(0), 4096).unwrap(), 4096);
        let e = ioctl_result("X", Err(Errno::EAGAIN), 8192).unwrap_err();
        assert_eq!((e.errno(), e.done()), (Some(Errno::EAGAIN), 8192));
        // The kernel stores -errno in the progress field when nothing was done.
        let e = ioctl_result("X", Err(Errno::EEXIST), -(libc::EEXIST as i64)).unwrap_err();
        assert_eq!((e.errno(), e.done()), (Some(Errno::EEXIST), 0));
    }

    /// The `/dev/userfaultfd` fallback gives a working descriptor (the
    /// syscall path is exercised by every swapper test).
    #[test]
    fn device_fallback_works() {
        let u = match Uffd::create_via(Source::Device, FEATURE_THREAD_ID) {
            Ok(u) => u,
            Err(e @ UffdError::Device(_)) => {
                base::tier::skip(base::tier::Tier::Userfaultfd, &e.to_string());
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_ne!(u.offered() & FEATURE_THREAD_ID, 0);
        let mut buf = EventBuffer::new(4);
        let mut out = Vec::new();
        u.read_events(&mut buf, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn unknown_feature_is_reported_as_missing() {
        let bogus = 1 << 62;
        match Uffd::create(FEATURE_THREAD_ID | bogus) {
            Err(UffdError::Features { missing, .. }) => assert_eq!(missing, bogus),
            Err(e @ UffdError::Open { .. }) => base::tier::skip(
                base::tier::Tier::Userfaultfd,
                &format!("no userfaultfd here: {e}"),
            ),
            other => panic!("{other:?}"),
        }
    }
}

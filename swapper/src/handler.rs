//! Fault-handler threads: wait on the userfaultfd, serve faults, process
//! REMOVE events, retry what answered `EAGAIN`.
//!
//! All handler threads read the same (non-blocking) userfaultfd; each keeps
//! a private retry queue. A retried fault keeps the time its event was first
//! read, so its trace record shows the whole wait.

use crate::core::Shared;
use crate::fault::{Fault, Handled};
use crate::store::AlignedPage;
use crate::uffd::{EventBuffer, UffdEvent};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Creates the eventfd used to stop the threads.
pub(crate) fn stop_fd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor we own.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Wakes every thread polling `fd`.
pub(crate) fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

pub(crate) fn poll(uffd: RawFd, stop: RawFd, timeout_ms: i32) {
    let mut fds = [
        libc::pollfd {
            fd: uffd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two pollfd structures.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
}

/// Body of a handler thread.
pub(crate) fn run(shared: Arc<Shared>, stop: Arc<OwnedFd>) {
    let mut buf = AlignedPage::boxed();
    let mut evbuf = EventBuffer::new(64);
    let mut events = Vec::with_capacity(64);
    let mut retry: VecDeque<(Fault, Instant)> = VecDeque::new();
    let mut removing: Vec<crate::page_state::PageIdx> = Vec::new();
    let uffd = shared.uffd.as_raw_fd();
    let spin = std::time::Duration::from_micros(shared.cfg.handler_spin_us as u64);
    loop {
        events.clear();
        let idle = retry.is_empty() && removing.is_empty();
        if idle && !spin.is_zero() {
            // Busy-poll a while before sleeping: saves the handler's own
            // wake-up on the fault path, at the cost of a CPU.
            let t = Instant::now();
            while events.is_empty() && t.elapsed() < spin && !shared.stop.load(Ordering::Relaxed) {
                if let Err(e) = shared.uffd.read_events(&mut evbuf, &mut events) {
                    shared.warn(format_args!("{e}"));
                    break;
                }
                std::hint::spin_loop();
            }
        }
        if events.is_empty() {
            poll(uffd, stop.as_raw_fd(), if idle { -1 } else { 1 });
            if let Err(e) = shared.uffd.read_events(&mut evbuf, &mut events) {
                shared.warn(format_args!("{e}"));
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let t0 = Instant::now();
        for ev in &events {
            match *ev {
                UffdEvent::Fault {
                    addr,
                    write,
                    wp,
                    tid,
                } => {
                    crate::core::bump!(shared, faults);
                    let f = Fault {
                        addr,
                        write,
                        wp,
                        tid,
                    };
                    if shared.handle_fault(&f, t0, &mut buf) == Handled::Retry {
                        retry.push_back((f, t0));
                    }
                }
                UffdEvent::Remove { start, end } => {
                    removing.extend(shared.handle_remove(start, end));
                }
                // Not requested (no EVENT_REMAP, EVENT_UNMAP or EVENT_FORK).
                other => {
                    shared.warn(format_args!("unexpected userfaultfd event {other:?}"));
                }
            }
        }
        if !removing.is_empty() {
            removing = shared.retry_remove(std::mem::take(&mut removing));
        }
        for _ in 0..retry.len() {
            let (f, t) = retry.pop_front().expect("length checked");
            if shared.handle_fault(&f, t, &mut buf) == Handled::Retry {
                retry.push_back((f, t));
            }
        }
        if !retry.is_empty() || !removing.is_empty() {
            std::thread::yield_now();
        }
    }
}

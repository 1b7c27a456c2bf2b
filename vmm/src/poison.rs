//! Guest memory the host swapper poisoned, as `SIGBUS`.
//!
//! When the host swapper cannot produce a page's content (a store read that
//! failed, a checksum that did not match), it installs a poison marker
//! (`UFFDIO_POISON`) instead of serving anything, and its fatal hook stops
//! the VM. An access to that page afterwards is a memory error:
//!
//! - from a vCPU, through KVM (`KVM_RUN` faulting the page in, on the vCPU
//!   thread or for it in an async page fault worker): KVM sends the vCPU
//!   thread `SIGBUS` with `BUS_MCEERR_AR` and returns to its loop. Left to the
//!   default action, that kills the whole process with a core dump, and the
//!   run ends as a crash instead of the failed run the swapper's error
//!   describes. The handler records the address on the thread and returns;
//!   `KVM_RUN` returns `EINTR` and the loop stops the VM (usually already
//!   stopping: the swapper's hook ran before it woke anyone).
//! - from a VMM thread in user mode (a device copying guest memory):
//!   returning would repeat the access forever, so the handler writes one line
//!   to stderr and ends the process with status 1. No wrong data was served
//!   either way.
//! - any other `SIGBUS` (not a memory error: a truncated file mapping, a
//!   misaligned access) keeps the default action: the handler restores it
//!   and returns, and the repeated access ends the process as before.
//!
//! QEMU handles the same signal the same way round (`kvm_on_sigbus_vcpu` for
//! a vCPU, abort elsewhere); it injects a machine check into the guest where
//! swaplab stops the VM instead.

use std::cell::Cell;
use std::io;
use std::sync::OnceLock;

thread_local! {
    /// Whether this thread is inside `KVM_RUN`.
    static IN_KVM_RUN: Cell<bool> = const { Cell::new(false) };
    /// The address KVM reported poisoned on this thread during its last
    /// `KVM_RUN` (0: none).
    static POISONED_AT: Cell<usize> = const { Cell::new(0) };
}

/// The line a VMM thread's access to poisoned memory ends the process with.
const USER_ACCESS: &[u8] = b"swaplab: a VMM thread read guest memory that the host swapper had \
poisoned (it could not read that page back; its error is above): stopping, no wrong data was \
served\n";

/// Whether `code` is a memory error's (the poison marker's, from KVM or from
/// a user-mode access).
fn memory_error(code: libc::c_int) -> bool {
    code == libc::BUS_MCEERR_AR || code == libc::BUS_MCEERR_AO
}

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Async-signal-safe only: const-initialised thread-locals without
    // destructors (plain TLS slots), and plain syscalls.
    // SAFETY: the kernel passes an SA_SIGINFO handler a valid siginfo (or
    // none); it lives until the handler returns.
    let (code, addr) = match unsafe { info.as_ref() } {
        // SAFETY: for SIGBUS the union's `si_addr` member is the one in use.
        Some(i) => (i.si_code, unsafe { i.si_addr() } as usize),
        // Not a memory error: the default action below.
        None => (0, 0),
    };
    if !memory_error(code) {
        // SAFETY: restoring the default action is async-signal-safe; the
        // faulting access then repeats and the process ends as it would have.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGBUS,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
        return;
    }
    if IN_KVM_RUN.try_with(Cell::get).unwrap_or(false) {
        let _ = POISONED_AT.try_with(|p| p.set(addr.max(1)));
        return;
    }
    // SAFETY: fd 2 (stderr) stays open for the life of the process; it is
    // borrowed only for this one write.
    let stderr = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    let _ = nix::unistd::write(stderr, USER_ACCESS);
    // SAFETY: ends the process without running anything else (no atexit, no
    // destructors), which is what a signal handler may do. (nix has no `_exit`.)
    unsafe { libc::_exit(1) }
}

/// Installs the handler (once per process; later calls return the first
/// result).
pub(crate) fn install_sigbus_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        vmm_sys_util::signal::register_signal_handler(libc::SIGBUS, on_sigbus)
            .map_err(|e| e.errno())
    });
    r.map_err(io::Error::from_raw_os_error)
}

/// Marks this thread as inside `KVM_RUN` for as long as it lives.
pub(crate) struct InKvmRun;

impl InKvmRun {
    pub(crate) fn enter() -> Self {
        IN_KVM_RUN.with(|c| c.set(true));
        Self
    }
}

impl Drop for InKvmRun {
    fn drop(&mut self) {
        IN_KVM_RUN.with(|c| c.set(false));
    }
}

/// The address KVM reported poisoned on this thread since the last call, if
/// any.
pub(crate) fn take_poisoned() -> Option<usize> {
    let a = POISONED_AT.with(|p| p.replace(0));
    (a != 0).then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_memory_errors_are_the_poison_markers() {
        assert!(memory_error(libc::BUS_MCEERR_AR));
        assert!(memory_error(libc::BUS_MCEERR_AO));
        assert!(!memory_error(libc::BUS_ADRERR));
        assert!(!memory_error(libc::BUS_ADRALN));
        assert!(!memory_error(libc::BUS_OBJERR));
    }

    /// A memory error raised on a thread inside `KVM_RUN` is recorded and
    /// returns (as KVM's `SIGBUS` does); outside, it would end the process.
    #[test]
    fn a_memory_error_in_kvm_run_is_recorded_and_returns() {
        install_sigbus_handler().unwrap();
        std::thread::spawn(|| {
            assert_eq!(take_poisoned(), None);
            let guard = InKvmRun::enter();
            // SAFETY: a zeroed siginfo is plain data; the fields set are the
            // ones the handler reads.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            info.si_signo = libc::SIGBUS;
            info.si_code = libc::BUS_MCEERR_AR;
            // The handler, called as the kernel would call it on this
            // thread (a real KVM `SIGBUS` needs a poisoned guest page).
            on_sigbus(libc::SIGBUS, &mut info, std::ptr::null_mut());
            drop(guard);
            assert!(take_poisoned().is_some(), "recorded");
            assert_eq!(take_poisoned(), None, "taken once");
        })
        .join()
        .unwrap();
    }
}

//! How a VM stops: the flag, abort reason and kick slots its threads and
//! handles share ([`Shared`]), and kicking vCPU threads out of `KVM_RUN`.
//!
//! [`crate::VmHandle::stop`] sets the VM's stop flag and sends [`kick_signal`] to every
//! running vCPU thread. The signal's handler runs on the vCPU thread itself and sets
//! `kvm_run.immediate_exit` through a thread-local pointer, so:
//! - a vCPU inside `KVM_RUN` (guest code, or blocked in a host page fault that userfaultfd
//!   lets be interrupted) returns `EINTR`;
//! - a vCPU between two `KVM_RUN`s re-enters with `immediate_exit` set and returns at once.
//!
//! The loop checks the stop flag before every `KVM_RUN`, after clearing a stale
//! `immediate_exit`, so a stop request is never lost. The handler is installed once per
//! process (it is stateless: all state is per thread or per VM).
//!
//! `vm.rs` creates the [`Shared`] state and hands it to each vCPU thread
//! (`vcpu.rs`); both import this module and neither the other for it.

use std::cell::Cell;
use std::io;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use base::sync::lock;
use kvm_ioctls::VcpuFd;

/// What a VM's threads and handles share to stop it: the stop flag, the abort
/// reason and one kick slot per vCPU.
#[derive(Debug)]
pub(crate) struct Shared {
    stop: AtomicBool,
    abort_reason: Mutex<Option<String>>,
    pub(crate) kick_slots: Vec<KickSlot>,
}

impl Shared {
    /// Not stopping, no abort reason, `vcpus` empty kick slots.
    pub(crate) fn new(vcpus: usize) -> Self {
        Self {
            stop: AtomicBool::new(false),
            abort_reason: Mutex::new(None),
            kick_slots: (0..vcpus).map(|_| KickSlot::default()).collect(),
        }
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for slot in &self.kick_slots {
            slot.kick();
        }
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops the VM with `reason` (the first reason wins).
    pub(crate) fn abort(&self, reason: String) {
        lock(&self.abort_reason).get_or_insert(reason);
        self.request_stop();
    }

    /// The abort reason, if the VM was aborted (taken: later calls get `None`).
    pub(crate) fn take_abort_reason(&self) -> Option<String> {
        lock(&self.abort_reason).take()
    }
}

/// The real-time signal used to kick vCPU threads out of `KVM_RUN` (`SIGRTMIN + 0`).
///
/// Embedders must not use it for anything else.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

thread_local! {
    /// `&kvm_run.immediate_exit` of the vCPU running on this thread, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Async-signal-safe: a const-initialised thread-local without a destructor is a plain
    // TLS slot, and the store is a single volatile byte write.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer is set by this thread's vCPU loop to a byte of its live
            // kvm_run mapping and cleared before that mapping is dropped.
            unsafe { p.write_volatile(1) };
        }
    });
}

/// Install the kick handler (once per process; later calls return the first result).
pub(crate) fn install_kick_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| e.errno())
    });
    r.map_err(io::Error::from_raw_os_error)
}

/// Unblock the kick signal on the calling (vCPU) thread.
pub(crate) fn unblock_kick_signal() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: as above; the signal number is a valid real-time signal.
    unsafe { libc::sigaddset(&mut set, kick_signal()) };
    // SAFETY: changes only this thread's signal mask; `set` is valid, the old mask unused.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Where another thread can find a running vCPU thread to kick it.
#[derive(Debug, Default)]
pub(crate) struct KickSlot(Mutex<Option<libc::pthread_t>>);

impl KickSlot {
    /// Signal the thread, if it is still running its loop.
    pub(crate) fn kick(&self) {
        let slot = lock(&self.0);
        if let Some(thread) = *slot {
            // SAFETY: the vCPU thread clears the slot (under this lock) before it exits, so
            // `thread` names a live thread for as long as we hold the lock.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }

    fn set(&self, thread: Option<libc::pthread_t>) {
        *lock(&self.0) = thread;
    }
}

/// Publishes the thread for kicking on creation and withdraws it (and the TLS pointer)
/// on drop, before the vCPU fd and its kvm_run mapping go away.
pub(crate) struct KickRegistration<'a> {
    slot: &'a KickSlot,
}

impl<'a> KickRegistration<'a> {
    pub(crate) fn new(slot: &'a KickSlot, fd: &mut VcpuFd) -> Self {
        let run = fd.get_kvm_run();
        IMMEDIATE_EXIT.with(|p| p.set(&raw mut run.immediate_exit));
        // SAFETY: pthread_self has no preconditions.
        slot.set(Some(unsafe { libc::pthread_self() }));
        Self { slot }
    }
}

impl Drop for KickRegistration<'_> {
    fn drop(&mut self) {
        self.slot.set(None);
        IMMEDIATE_EXIT.with(|p| p.set(null_mut()));
    }
}

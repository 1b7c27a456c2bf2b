//! Ctrl-C (and `SIGTERM`, `SIGHUP`) during a run, without a process-wide handler.
//!
//! A [`SignalScope`] blocks the three signals in the calling thread (threads started
//! after it inherit the mask) and reads them from a `signalfd` on a thread of its own.
//! A caught signal is recorded and the scope's current action runs (stop the VM, kill
//! a child), so the run unwinds normally and every cleanup guard's `Drop` runs. When
//! the scope drops, the watcher ends and the old mask is restored.
//!
//! Create it before the run starts any thread: a thread that existed before and does
//! not block the signals would take them with their default action.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What to do when a signal arrives (runs on the watcher thread).
pub type SignalAction = Box<dyn Fn(i32) + Send>;

/// The run was interrupted by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}", signal_name(*.0))]
pub struct Interrupted(pub i32);

/// `SIGINT` → "SIGINT".
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        n => format!("signal {n}"),
    }
}

#[derive(Default)]
struct State {
    caught: AtomicI32,
    action: Mutex<Option<SignalAction>>,
}

impl State {
    fn on_signal(&self, sig: i32) {
        let _ = self
            .caught
            .compare_exchange(0, sig, Ordering::AcqRel, Ordering::Acquire);
        if let Some(a) = self
            .action
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            a(sig);
        }
    }
}

/// Signals caught for the duration of a run; see the module docs.
pub struct SignalScope {
    old_mask: libc::sigset_t,
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
    state: Arc<State>,
}

fn cvt(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

fn watched() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is valid storage for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: initialises the local set.
    unsafe { libc::sigemptyset(&mut set) };
    for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: adds a valid signal number to the local set.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

impl SignalScope {
    /// Blocks `SIGINT`, `SIGTERM` and `SIGHUP` in this thread and starts watching them.
    pub fn new() -> io::Result<Self> {
        let set = watched();
        // SAFETY: a zeroed sigset_t is a valid output buffer for pthread_sigmask.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: changes only this thread's mask; both sets are valid.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let restore = |e: io::Error| {
            // SAFETY: restores this thread's previous mask.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            e
        };
        // SAFETY: creates a new signalfd for `set`; the fd is owned below.
        let sfd = cvt(
            unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) },
            "signalfd",
        )
        .map_err(restore)?;
        // SAFETY: `sfd` is a fresh descriptor nobody else owns.
        let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
        // SAFETY: creates a new eventfd; the fd is owned below.
        let efd =
            cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }, "eventfd").map_err(restore)?;
        // SAFETY: `efd` is a fresh descriptor nobody else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(efd) };
        let stop_watch = stop.try_clone().map_err(restore)?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("swaplab-signals".into())
            .spawn(move || watch(sfd, stop_watch, st))
            .map_err(restore)?;
        Ok(Self {
            old_mask,
            stop,
            thread: Some(thread),
            state,
        })
    }

    /// The first signal caught, if any.
    pub fn caught(&self) -> Option<i32> {
        match self.state.caught.load(Ordering::Acquire) {
            0 => None,
            s => Some(s),
        }
    }

    /// `Err` if a signal was caught.
    pub fn check(&self) -> Result<(), Interrupted> {
        self.caught().map_or(Ok(()), |s| Err(Interrupted(s)))
    }

    /// Sets (or clears) what to do on a signal. If one was already caught, the new
    /// action runs at once.
    pub fn set_action(&self, action: Option<SignalAction>) {
        self.handle().set_action(action);
    }

    /// A handle for setting actions from elsewhere (e.g. a VM's start hook).
    pub fn handle(&self) -> SignalHandle {
        SignalHandle(self.state.clone())
    }
}

/// Sets the action of a [`SignalScope`]; cheap to clone. Actions set after the scope
/// dropped never run.
#[derive(Clone)]
pub struct SignalHandle(Arc<State>);

impl SignalHandle {
    /// See [`SignalScope::set_action`].
    pub fn set_action(&self, action: Option<SignalAction>) {
        let mut a = self.0.action.lock().unwrap_or_else(|e| e.into_inner());
        *a = action;
        let caught = self.0.caught.load(Ordering::Acquire);
        if let (true, Some(f)) = (caught != 0, a.as_ref()) {
            f(caught);
        }
    }
}

fn watch(sfd: OwnedFd, stop: OwnedFd, state: Arc<State>) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            // SAFETY: a zeroed signalfd_siginfo is a valid read buffer.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let len = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `len` bytes into `info`.
            let n = unsafe {
                libc::read(
                    sfd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    len,
                )
            };
            if n == len as isize {
                state.on_signal(info.ssi_signo as i32);
            }
        }
    }
}

impl Drop for SignalScope {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: restores this thread's previous mask (a signal still pending is then
        // delivered with its normal disposition, after the run has cleaned up).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::mpsc;

    #[test]
    fn a_signal_to_this_thread_is_caught_and_runs_the_action() {
        // Runs in a fresh thread so the test harness's threads keep their masks (a
        // thread-directed signal cannot reach them anyway).
        std::thread::spawn(|| {
            let scope = SignalScope::new().unwrap();
            assert_eq!(scope.caught(), None);
            let (tx, rx) = mpsc::channel();
            scope.set_action(Some(Box::new(move |s| {
                let _ = tx.send(s);
            })));
            // A process-directed signal could land in another test thread (which does
            // not block it); direct it at the watcher thread instead, which blocks it
            // (inherited mask) and reads it from its signalfd.
            let watcher = scope.thread.as_ref().unwrap().as_pthread_t();
            // SAFETY: the watcher thread is alive until the scope drops.
            assert_eq!(unsafe { libc::pthread_kill(watcher, libc::SIGTERM) }, 0);
            assert_eq!(rx.recv().unwrap(), libc::SIGTERM);
            assert_eq!(scope.caught(), Some(libc::SIGTERM));
            assert_eq!(scope.check(), Err(Interrupted(libc::SIGTERM)));
            assert_eq!(
                Interrupted(libc::SIGTERM).to_string(),
                "interrupted by SIGTERM"
            );
            // A late action runs at once.
            let (tx2, rx2) = mpsc::channel();
            scope.set_action(Some(Box::new(move |s| {
                let _ = tx2.send(s);
            })));
            assert_eq!(rx2.try_recv(), Ok(libc::SIGTERM));
            drop(scope);
            // The old mask is back: SIGTERM is not blocked in this thread.
            // SAFETY: a zeroed sigset_t is valid output storage.
            let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: reads this thread's mask (no change: null new set).
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur) };
            // SAFETY: `cur` is an initialised set.
            let blocked = unsafe { libc::sigismember(&cur, libc::SIGTERM) };
            assert_eq!(blocked, 0);
        })
        .join()
        .unwrap();
    }
}

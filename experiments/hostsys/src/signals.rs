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
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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
    old_mask: SigSet,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    state: Arc<State>,
}

fn sys(what: &str) -> impl FnOnce(Errno) -> io::Error + '_ {
    move |e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }
}

fn watched() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Sets this thread's signal mask to `mask` (nothing to report if it fails:
/// `mask` is a mask this thread had).
fn restore_mask(mask: &SigSet) {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
}

impl SignalScope {
    /// Blocks `SIGINT`, `SIGTERM` and `SIGHUP` in this thread and starts watching them.
    pub fn new() -> io::Result<Self> {
        let set = watched();
        let mut old_mask = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old_mask))?;
        let restore = |e: io::Error| {
            restore_mask(&old_mask);
            e
        };
        let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)
            .map_err(sys("signalfd"))
            .map_err(restore)?;
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)
            .map_err(sys("eventfd"))
            .map_err(restore)?;
        let stop = Arc::new(stop);
        let stop_watch = stop.clone();
        let state = Arc::new(State::default());
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("swaplab-signals".into())
            .spawn(move || watch(sfd, &stop_watch, st))
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

fn watch(sfd: SignalFd, stop: &EventFd, state: Arc<State>) {
    loop {
        let mut fds = [
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        if fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            if let Ok(Some(info)) = sfd.read_signal() {
                state.on_signal(info.ssi_signo as i32);
            }
        }
    }
}

impl Drop for SignalScope {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Restores this thread's previous mask (a signal still pending is then
        // delivered with its normal disposition, after the run has cleaned up).
        restore_mask(&self.old_mask);
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
            let cur = SigSet::thread_get_mask().unwrap();
            assert!(!cur.contains(Signal::SIGTERM));
        })
        .join()
        .unwrap();
    }
}

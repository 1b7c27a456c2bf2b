//! Child processes: what a child does between fork and exec ([`ChildSetup`]),
//! and killing a child from another thread without ever signalling a reused
//! pid ([`Reaper`]).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::{getpid, getppid, Pid};

/// What a child does between fork and exec, in this order: join a cgroup,
/// unblock every signal, die with its parent, let some descriptors survive
/// exec. Only async-signal-safe calls run in the child, and nothing allocates.
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// An open `cgroup.procs` file: the child writes `0` to it, which moves it
    /// into that cgroup (so everything it touches is charged there).
    pub join_cgroup: Option<OwnedFd>,
    /// Unblock every signal. The parent may block `SIGINT`/`SIGTERM` to read
    /// them from a signalfd ([`crate::signals`]), and a blocked mask survives
    /// exec: the child would ignore them.
    pub unblock_signals: bool,
    /// The signal the child gets when the thread that started it dies
    /// (`PR_SET_PDEATHSIG`). If the parent died before that took effect,
    /// starting the child fails with `ESRCH`.
    pub death_signal: Option<Signal>,
    /// Descriptors the child keeps over exec (their close-on-exec flag is
    /// cleared in the child only). This process's copies close when the
    /// `Command` is dropped.
    pub keep: Vec<OwnedFd>,
}

impl ChildSetup {
    /// Makes `cmd` run this setup in its children.
    pub fn apply(self, cmd: &mut Command) {
        let parent = getpid();
        // SAFETY: `run` makes only async-signal-safe calls (write, sigprocmask,
        // prctl, getppid, fcntl) on descriptors and values prepared before the
        // fork, and does not allocate, as required between fork and exec.
        unsafe {
            cmd.pre_exec(move || self.run(parent));
        }
    }

    fn run(&self, parent: Pid) -> io::Result<()> {
        if let Some(procs) = &self.join_cgroup {
            if nix::unistd::write(procs, b"0")? != 1 {
                return Err(Errno::EIO.into());
            }
        }
        if self.unblock_signals {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        }
        if let Some(sig) = self.death_signal {
            set_pdeathsig(sig)?;
            if getppid() != parent {
                // The parent died before PR_SET_PDEATHSIG took effect.
                return Err(Errno::ESRCH.into());
            }
        }
        for fd in &self.keep {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        Ok(())
    }
}

/// Waits for a child while [`KillHandle`]s may signal it from other threads
/// (a signal watcher, say). A handle signals the child only until it is
/// reaped, so never a process that reused its pid.
#[derive(Debug)]
pub struct Reaper {
    child: Child,
    /// Whether the child is not yet reaped (its pid is still its own).
    unreaped: Arc<Mutex<bool>>,
}

/// Signals a [`Reaper`]'s child while it is not yet reaped; cheap to clone.
#[derive(Debug, Clone)]
pub struct KillHandle {
    pid: Pid,
    unreaped: Arc<Mutex<bool>>,
}

impl KillHandle {
    /// Sends `sig` to the child unless it was reaped (then does nothing).
    pub fn signal(&self, sig: Signal) {
        let unreaped = self.unreaped.lock().unwrap_or_else(|e| e.into_inner());
        if *unreaped {
            // The lock keeps the reaper from reaping meanwhile.
            let _ = kill(self.pid, sig);
        }
    }
}

impl Reaper {
    /// Takes over `child`, which nothing has waited for yet.
    pub fn new(child: Child) -> Self {
        Self {
            child,
            unreaped: Arc::new(Mutex::new(true)),
        }
    }

    /// The child (for its pipes and id).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// A handle that signals the child until it is reaped.
    pub fn kill_handle(&self) -> KillHandle {
        KillHandle {
            pid: Pid::from_raw(self.child.id() as i32),
            unreaped: self.unreaped.clone(),
        }
    }

    /// Waits for the child to exit and reaps it. It stays a zombie (its pid
    /// reserved) until every handle has stopped signalling it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let pid = Pid::from_raw(self.child.id() as i32);
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                // Already reaped (ECHILD): std's wait below reports the status.
                Err(_) => break,
            }
        }
        *self.unreaped.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.child.wait()
    }

    /// Kills the child (`SIGKILL`) and reaps it, unless it was reaped already.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.kill_handle().signal(Signal::SIGKILL);
        self.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn a_kill_handle_stops_after_the_reap() {
        let mut cmd = Command::new("sleep");
        cmd.arg("60").stdin(Stdio::null());
        ChildSetup {
            unblock_signals: true,
            death_signal: Some(Signal::SIGKILL),
            ..ChildSetup::default()
        }
        .apply(&mut cmd);
        let mut r = Reaper::new(cmd.spawn().unwrap());
        let h = r.kill_handle();
        h.signal(Signal::SIGTERM);
        let st = r.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM));
        // Reaped: the handle does nothing now.
        h.signal(Signal::SIGKILL);
        assert!(r.kill().is_ok());
    }

    #[test]
    fn kept_descriptors_survive_exec() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        use std::os::fd::AsRawFd;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("echo kept >&{}", w.as_raw_fd()))
            .stdin(Stdio::null());
        ChildSetup {
            keep: vec![w],
            ..ChildSetup::default()
        }
        .apply(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        assert!(child.wait().unwrap().success());
        let mut s = String::new();
        use std::io::Read;
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "kept\n");
    }
}

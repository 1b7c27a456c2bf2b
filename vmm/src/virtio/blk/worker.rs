//! The device's worker thread and its control: one thread per device, started at
//! the first activation and kept across resets (so its TID, which the swapper knows
//! it by, stays valid). It waits on the queue's ioeventfd and a control eventfd;
//! [`super::serve`] does the work for each notification.
//!
//! A reset detaches the queue and waits until the worker has acknowledged, so when
//! [`WorkerCtl::deactivate`] returns the device no longer touches the queue or guest
//! RAM. Dropping the [`WorkerCtl`] stops and joins the thread.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::BlkBackend;
use super::request::ID_BYTES;
use super::serve::Engine;
use super::shared::Locked;
use super::shared::{Active, Shared};
use super::trace::bump;

enum Command {
    Activate(Box<Active>),
    Deactivate,
    Exit,
}

const KICK: u64 = 0;
const NOTIFY: u64 = 1;

/// The device's side of the worker thread.
pub(crate) struct WorkerCtl {
    tx: Sender<Command>,
    kick: EventFd,
    ack: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// What the worker needs besides the queue.
pub(crate) struct WorkerSetup {
    pub shared: Arc<Shared>,
    pub id: [u8; ID_BYTES],
    pub epoch: Instant,
    pub on_start: Option<Box<dyn FnOnce(i32) + Send>>,
}

impl WorkerCtl {
    /// Starts the worker thread on the shared `disk`.
    pub fn spawn(
        setup: WorkerSetup,
        disk: &Arc<Mutex<Box<dyn BlkBackend>>>,
    ) -> std::io::Result<Self> {
        let kick = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            std::os::fd::AsRawFd::as_raw_fd(&kick),
            EpollEvent::new(EventSet::IN, KICK),
        )?;
        let (tx, rx) = mpsc::channel();
        let (ack_tx, ack) = mpsc::channel();
        let worker_kick = kick.try_clone()?;
        let shared = setup.shared.clone();
        let disk = Locked(disk.clone());
        let thread = std::thread::Builder::new()
            .name("vmm-blk".into())
            .spawn(move || {
                seccomp::enter(seccomp::ThreadClass::BlkWorker);
                let tid = nix::unistd::gettid().as_raw();
                setup.shared.tid.store(tid, Ordering::SeqCst);
                if let Some(f) = setup.on_start {
                    f(tid);
                }
                let backend = Box::new(disk);
                Worker {
                    engine: Engine::new(backend, setup.shared, setup.id, setup.epoch, tid),
                    epoll,
                    kick: worker_kick,
                    rx,
                    ack: ack_tx,
                    active: None,
                }
                .run();
            })?;
        Ok(Self {
            tx,
            kick,
            ack,
            thread: Some(thread),
            shared,
        })
    }

    fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok() && self.kick.write(1).is_ok()
    }

    /// Hands the worker a queue to serve; false if the worker is gone.
    pub fn activate(&self, active: Active) -> bool {
        self.shared.preempt.store(false, Ordering::SeqCst);
        self.send(Command::Activate(Box::new(active)))
    }

    /// Takes the queue away and waits until the worker has let go of it (it finishes
    /// the request it is serving first).
    pub fn deactivate(&self) {
        self.shared.preempt.store(true, Ordering::SeqCst);
        if self.send(Command::Deactivate) {
            // An error means the worker exited: nothing holds the queue either way.
            let _ = self.ack.recv();
        }
    }
}

impl Drop for WorkerCtl {
    fn drop(&mut self) {
        self.shared.preempt.store(true, Ordering::SeqCst);
        self.send(Command::Exit);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(device = %self.shared.name, "virtio-blk worker thread panicked");
            }
        }
    }
}

struct Worker {
    engine: Engine,
    epoll: Epoll,
    kick: EventFd,
    rx: Receiver<Command>,
    ack: Sender<()>,
    active: Option<Box<Active>>,
}

impl Worker {
    fn run(mut self) {
        let mut events = [EpollEvent::default(); 4];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(
                        device = %self.engine.shared.name,
                        "virtio-blk worker cannot wait for events, stopping: {e}"
                    );
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    KICK => {
                        let _ = self.kick.read();
                        if !self.commands() {
                            return;
                        }
                    }
                    _ => {
                        if let Some(a) = self.active.as_mut() {
                            // Reset the eventfd before looking at the ring, so a
                            // notification racing with the scan is not lost.
                            let _ = a.notify.read();
                            bump(&self.engine.shared.counters.kicks);
                            self.engine.process(a);
                        }
                    }
                }
            }
        }
    }

    /// Runs pending commands; false when the worker must exit.
    fn commands(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Command::Activate(a)) => {
                    self.detach();
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&a.notify);
                    if let Err(e) = self.epoll.ctl(
                        ControlOperation::Add,
                        fd,
                        EpollEvent::new(EventSet::IN, NOTIFY),
                    ) {
                        tracing::error!(
                            device = %self.engine.shared.name,
                            "virtio-blk cannot watch the queue notifier: {e}"
                        );
                    }
                    let a = self.active.insert(a);
                    // Serve what the driver queued before the worker was watching.
                    self.engine.process(a);
                }
                Ok(Command::Deactivate) => {
                    self.detach();
                    let _ = self.ack.send(());
                }
                Ok(Command::Exit) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn detach(&mut self) {
        if let Some(a) = self.active.take() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&a.notify);
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }
}

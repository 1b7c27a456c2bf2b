//! The balloon's worker thread: one epoll loop over the queues' ioeventfds, a stop
//! eventfd, a stats-request eventfd and the statistics timer.
//!
//! - inflate: each buffer's PFNs are coalesced into ranges ([`walk_pfns`]) and
//!   released through the [`PageReleaser`] before the buffer is returned;
//! - deflate: the same, with [`PageReleaser::reclaim`];
//! - reporting: each reported range is released, then the buffer returned;
//! - stats: the buffer is parsed and kept; the timer (or a request) returns it so
//!   the guest refills it with fresh statistics. A second buffer while one is
//!   held (a driver breaking the protocol) makes the device return the older one.
//!
//! Every buffer is returned with a used length of 0 and one used-buffer interrupt
//! per queue per wake-up. Anything malformed is counted and logged (rate-limited);
//! the worker never stops serving because of what the guest wrote.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{QueueOwnedT, QueueT};
use vmm::memory::GuestMemoryExt;
use vmm::virtio::{ActiveQueue, VirtioInterrupt};
use vmm::vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::metrics::{BalloonEventKind, BatchTimes};
use crate::queues::{read_stats, walk_pfns, walk_reported, RamMap, Role, Tally};
use crate::release::PageReleaser;
use crate::shared::Shared;
use crate::stats::GuestStats;

/// Errors starting the device's worker.
#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    /// An eventfd, the epoll instance or the stats timer could not be created.
    #[error("cannot create the worker's {what}")]
    Fd {
        /// Which descriptor.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The worker thread could not be spawned.
    #[error("cannot spawn the balloon worker thread")]
    Spawn(#[source] std::io::Error),
}

const TOKEN_STOP: u64 = u64::MAX;
const TOKEN_TIMER: u64 = u64::MAX - 1;
const TOKEN_KICK: u64 = u64::MAX - 2;

/// Everything the worker thread owns.
pub(crate) struct Worker {
    mem: GuestMemoryMmap,
    ram: RamMap,
    queues: Vec<(Role, ActiveQueue)>,
    interrupt: VirtioInterrupt,
    shared: Arc<Shared>,
    releaser: Arc<dyn PageReleaser>,
    stop: Arc<AtomicBool>,
    /// Kept open while it is in the epoll set.
    _stop_evt: EventFd,
    kick: EventFd,
    timer: Option<TimerFd>,
    epoll: Epoll,
    stats_head: Option<u16>,
}

impl Worker {
    /// Sets up the epoll set (and arms the stats timer every `stats_interval`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mem: GuestMemoryMmap,
        queues: Vec<(Role, ActiveQueue)>,
        interrupt: VirtioInterrupt,
        shared: Arc<Shared>,
        releaser: Arc<dyn PageReleaser>,
        stop: Arc<AtomicBool>,
        stop_evt: EventFd,
        kick: EventFd,
        stats_interval: Option<Duration>,
    ) -> Result<Self, BalloonError> {
        let fd_err = |what| move |source| BalloonError::Fd { what, source };
        let epoll = Epoll::new().map_err(fd_err("epoll instance"))?;
        let timer = match stats_interval {
            Some(d) => {
                let mut t = TimerFd::new().map_err(|e| BalloonError::Fd {
                    what: "stats timer",
                    source: std::io::Error::from_raw_os_error(e.errno()),
                })?;
                t.reset(d, Some(d)).map_err(|e| BalloonError::Fd {
                    what: "stats timer",
                    source: std::io::Error::from_raw_os_error(e.errno()),
                })?;
                Some(t)
            }
            None => None,
        };
        let add = |fd: i32, token: u64| {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(fd_err("epoll registration"))
        };
        add(stop_evt.as_raw_fd(), TOKEN_STOP)?;
        add(kick.as_raw_fd(), TOKEN_KICK)?;
        if let Some(t) = &timer {
            add(t.as_raw_fd(), TOKEN_TIMER)?;
        }
        for (i, (_, q)) in queues.iter().enumerate() {
            add(q.notify.as_raw_fd(), i as u64)?;
        }
        Ok(Self {
            ram: RamMap::new(&mem.host_regions()),
            mem,
            queues,
            interrupt,
            shared,
            releaser,
            stop,
            _stop_evt: stop_evt,
            kick,
            timer,
            epoll,
            stats_head: None,
        })
    }

    /// Serves the queues until told to stop.
    pub fn run(mut self) {
        let mut events = vec![EpollEvent::default(); self.queues.len() + 3];
        // Buffers the driver queued before the worker started (e.g. the first
        // statistics buffer, kicked before the ioeventfd was polled) are served
        // now; their notifications may still be pending as well.
        for i in 0..self.queues.len() {
            self.drain(i);
        }
        self.shared.changed();
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-balloon: epoll_wait failed, worker stops: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                self.shared.counters.wakeups.fetch_add(1, Ordering::Relaxed);
                match ev.data() {
                    TOKEN_STOP => return,
                    TOKEN_TIMER => {
                        if let Some(t) = &mut self.timer {
                            let _ = t.wait();
                        }
                        self.return_stats();
                    }
                    TOKEN_KICK => {
                        let _ = self.kick.read();
                        self.return_stats();
                    }
                    i => {
                        let i = i as usize;
                        if let Some((_, q)) = self.queues.get(i) {
                            let _ = q.notify.read();
                            self.drain(i);
                        }
                    }
                }
            }
            self.shared.changed();
        }
    }

    fn count(
        &self,
        f: impl Fn(&crate::metrics::Counters) -> &std::sync::atomic::AtomicU64,
        n: u64,
    ) {
        f(&self.shared.counters).fetch_add(n, Ordering::Relaxed);
    }

    fn queue_error(&self, role: Role, what: String) {
        self.count(|c| &c.queue_errors, 1);
        self.shared
            .warn(|| format!("{role:?} queue: {what}; buffer skipped"));
    }

    fn tally(&self, role: Role, t: &Tally) {
        self.count(|c| &c.invalid_pfns, t.invalid_pfns);
        self.count(|c| &c.invalid_descriptors, t.invalid_descriptors);
        if t.invalid_pfns > 0 || t.invalid_descriptors > 0 {
            self.shared.warn(|| {
                format!(
                    "{role:?} buffer: {} PFNs outside guest RAM, {} bad descriptors ({}); \
                     the rest was used",
                    t.invalid_pfns,
                    t.invalid_descriptors,
                    t.first_error
                        .as_ref()
                        .map_or("-".to_string(), |e| e.to_string())
                )
            });
        }
    }

    /// Handles every available buffer of queue `qi`.
    pub(crate) fn drain(&mut self, qi: usize) {
        let mem = self.mem.clone();
        let role = self.queues[qi].0;
        let mut used = false;
        while !self.stop.load(Ordering::SeqCst) {
            let q = &mut self.queues[qi].1.queue;
            let size = q.size();
            let chain = match q.iter(&mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    self.queue_error(role, format!("cannot read the available ring: {e}"));
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            if head >= size {
                self.queue_error(role, format!("head index {head} >= queue size {size}"));
                continue;
            }
            match role {
                Role::Inflate | Role::Deflate | Role::Reporting => {
                    let t0 = Instant::now();
                    let t_ns = self.shared.now_ns();
                    let (tally, bytes, failed) = self.release_chain(role, chain, &mem);
                    let ns = t0.elapsed().as_nanos() as u64;
                    self.record_batch(role, &tally, bytes, failed, t_ns, ns);
                }
                Role::Stats => {
                    self.stats_arrived(head, chain, &mem);
                    continue;
                }
                Role::FreePageHint => {}
            }
            used |= self.add_used(qi, head);
        }
        if used {
            self.notify(qi);
        }
    }

    /// Releases (or reclaims) what one buffer names. Returns the tally, bytes
    /// handled successfully, ranges that failed.
    fn release_chain(
        &self,
        role: Role,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> (Tally, u64, u64) {
        let (mut bytes, mut failed) = (0u64, 0u64);
        let mut first_err = None;
        let mut sink = |gpa: u64, len: u64| {
            let r = match role {
                Role::Deflate => self.releaser.reclaim(gpa, len),
                _ => self.releaser.release(gpa, len),
            };
            match r {
                Ok(()) => bytes += len,
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert(e);
                }
            }
        };
        let tally = match role {
            Role::Reporting => walk_reported(chain, &self.ram, &mut sink),
            _ => walk_pfns(chain, mem, &self.ram, &self.stop, &mut sink),
        };
        if let Some(e) = first_err {
            self.shared
                .warn(|| format!("{role:?}: {failed} ranges not released: {e}"));
        }
        (tally, bytes, failed)
    }

    fn record_batch(&self, role: Role, t: &Tally, bytes: u64, failed: u64, t_ns: u64, ns: u64) {
        self.tally(role, t);
        let c = &self.shared.counters;
        c.release_errors.fetch_add(failed, Ordering::Relaxed);
        let kind = match role {
            Role::Inflate => {
                c.inflate_batches.fetch_add(1, Ordering::Relaxed);
                c.inflate_pages.fetch_add(t.pages, Ordering::Relaxed);
                c.released_bytes.fetch_add(bytes, Ordering::Relaxed);
                BalloonEventKind::Inflate
            }
            Role::Deflate => {
                c.deflate_batches.fetch_add(1, Ordering::Relaxed);
                c.deflate_pages.fetch_add(t.pages, Ordering::Relaxed);
                c.reclaimed_bytes.fetch_add(bytes, Ordering::Relaxed);
                BalloonEventKind::Deflate
            }
            _ => {
                c.report_batches.fetch_add(1, Ordering::Relaxed);
                c.reported_pages.fetch_add(t.pages, Ordering::Relaxed);
                c.released_bytes.fetch_add(bytes, Ordering::Relaxed);
                BalloonEventKind::Report
            }
        };
        {
            let mut times = self.shared.lock_times();
            let bt: &mut BatchTimes = match role {
                Role::Inflate => &mut times.inflate,
                Role::Deflate => &mut times.deflate,
                _ => &mut times.report,
            };
            bt.record(ns);
        }
        self.shared.event(kind, t_ns, t.pages, ns);
    }

    fn stats_arrived(
        &mut self,
        head: u16,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) {
        let t_ns = self.shared.now_ns();
        let (buf, mut tally) = read_stats(chain, mem);
        let (stats, err) = GuestStats::parse(&buf, t_ns);
        if let Some(e) = err {
            tally.bad_descriptor(e.into());
        }
        self.tally(Role::Stats, &tally);
        self.shared.set_stats(stats);
        self.count(|c| &c.stats_updates, 1);
        self.shared.event(BalloonEventKind::Stats, t_ns, 0, 0);
        if let Some(prev) = self.stats_head.replace(head) {
            self.count(|c| &c.extra_stats_buffers, 1);
            self.shared
                .warn(|| "a second statistics buffer arrived; returning the first".into());
            if let Some(qi) = self.index_of(Role::Stats) {
                if self.add_used(qi, prev) {
                    self.notify(qi);
                }
            }
        }
    }

    /// Gives the held statistics buffer back so the guest sends fresh statistics.
    fn return_stats(&mut self) {
        let Some(qi) = self.index_of(Role::Stats) else {
            return;
        };
        if let Some(head) = self.stats_head.take() {
            if self.add_used(qi, head) {
                self.count(|c| &c.stats_requests, 1);
                self.notify(qi);
            }
        }
    }

    fn index_of(&self, role: Role) -> Option<usize> {
        self.queues.iter().position(|(r, _)| *r == role)
    }

    fn add_used(&mut self, qi: usize, head: u16) -> bool {
        let role = self.queues[qi].0;
        match self.queues[qi].1.queue.add_used(&self.mem, head, 0) {
            Ok(()) => true,
            Err(e) => {
                self.queue_error(role, format!("cannot return buffer {head}: {e}"));
                false
            }
        }
    }

    fn notify(&mut self, qi: usize) {
        let role = self.queues[qi].0;
        let needed = match self.queues[qi].1.queue.needs_notification(&self.mem) {
            Ok(n) => n,
            Err(e) => {
                self.queue_error(role, format!("cannot read the used event index: {e}"));
                true
            }
        };
        if !needed {
            return;
        }
        match self.interrupt.signal_used_queue() {
            Ok(()) => self.count(|c| &c.used_interrupts, 1),
            Err(e) => {
                self.count(|c| &c.interrupt_errors, 1);
                self.shared
                    .warn(|| format!("cannot raise the used-buffer interrupt: {e}"));
            }
        }
    }
}

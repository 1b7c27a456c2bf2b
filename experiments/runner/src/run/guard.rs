//! The stall guard: the last resort for a run that does not end.
//!
//! A run normally ends by itself, or when the VMM's watchdog stops its guest
//! at the scenario's `timeout_s`. Two things escape that watchdog: a hang
//! while the machine is being assembled (the watchdog starts with the
//! guest), and a stop that never completes (a thread waiting on a host fault
//! nobody resolves cannot be kicked out of it). Either would hold a whole
//! matrix for ever, silently.
//!
//! The guard is a thread started with the run. If the run has not ended
//! [`STALL_SLACK`] after its time limit, it:
//! 1. logs the stage the run was in, every thread of this process with its
//!    kernel stack, and the host swapper's state (which page locks are held,
//!    faults read against faults resolved);
//! 2. aborts the guest (at once, or as soon as it starts), so the run fails
//!    with a reason that names the stall;
//! 3. releases the swapper's faults ([`swapper::Swapper::release_waiters`]),
//!    which wakes every thread waiting on one.
//!
//! If even that does not end the run within another [`STALL_SLACK`], it logs
//! the threads again and says how to get out (the process cannot end a
//! thread stuck in the kernel; Ctrl-C ends swaplab, and the finished runs'
//! results are kept).

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use swapper::Swapper;
use vmm::VmHandle;

use base::lock;

use super::interrupt::Interrupter;

/// How long after its time limit a run may take to stop before the guard
/// acts, and again before it gives up.
pub const STALL_SLACK: Duration = Duration::from_secs(60);

/// What the guard thread and the run share.
#[derive(Default)]
struct State {
    done: bool,
    stage: &'static str,
    swapper: Option<Weak<Swapper>>,
    /// Keeps guest RAM mapped for as long as the guard may hold the swapper.
    memory: Option<vm_memory::GuestMemoryMmap>,
    fired: Option<String>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    abort: Interrupter,
}

/// Watches one run; see the module docs. End it with [`StallGuard::finish`].
pub struct StallGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl StallGuard {
    /// Starts watching a run called `name` that should end within `limit`
    /// (the guard acts [`STALL_SLACK`] later).
    pub fn start(name: &str, limit: Duration) -> Self {
        Self::start_with(name, limit, STALL_SLACK)
    }

    fn start_with(name: &str, limit: Duration, slack: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        lock(&shared.state).stage = "starting";
        let (s, name) = (shared.clone(), name.to_string());
        let thread = std::thread::Builder::new()
            .name("swaplab-stall-guard".into())
            .spawn(move || watch(&s, &name, limit, slack))
            .map_err(|e| tracing::warn!("cannot start the stall guard: {e}"))
            .ok();
        Self { shared, thread }
    }

    /// The run moved on to `stage` (named in the stall report).
    pub fn stage(&self, stage: &'static str) {
        lock(&self.shared.state).stage = stage;
    }

    /// The run's host swapper, whose faults a stall releases, and the guest
    /// RAM it manages (kept mapped for as long as the guard lives, since the
    /// guard may hold the swapper while the run ends).
    pub fn swapper(&self, sw: &Arc<Swapper>, memory: &vm_memory::GuestMemoryMmap) {
        let mut g = lock(&self.shared.state);
        g.swapper = Some(Arc::downgrade(sw));
        g.memory = Some(memory.clone());
    }

    /// The run's guest, aborted on a stall (at once if it already stalled).
    pub fn vm(&self, vm: VmHandle) {
        self.shared.abort.attach(vm);
    }

    /// The guest has ended: nothing left to abort.
    pub fn vm_ended(&self) {
        self.shared.abort.detach();
    }

    /// The run ended; why the guard had to act, if it did.
    pub fn finish(mut self) -> Option<String> {
        self.end();
        lock(&self.shared.state).fired.take()
    }

    /// Tells the guard thread the run is done and waits for it.
    fn end(&mut self) {
        lock(&self.shared.state).done = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        self.end();
    }
}

/// Waits until the run is done or `until`; whether it is done.
fn wait_done(shared: &Shared, until: Instant) -> bool {
    let left = until.saturating_duration_since(Instant::now());
    let (g, _) = shared
        .cv
        .wait_timeout_while(lock(&shared.state), left, |s| !s.done)
        .unwrap_or_else(|e| e.into_inner());
    g.done
}

fn watch(shared: &Shared, name: &str, limit: Duration, slack: Duration) {
    let started = Instant::now();
    if wait_done(shared, started + limit + slack) {
        return;
    }
    let (stage, swapper) = {
        let g = lock(&shared.state);
        (g.stage, g.swapper.as_ref().and_then(Weak::upgrade))
    };
    let reason = format!(
        "the run stalled: still {stage} {} s after it began (time limit {} s); \
         its faults were released",
        started.elapsed().as_secs(),
        limit.as_secs()
    );
    tracing::error!(
        "{name}: {reason}. This process's threads (tid comm state wchan [kernel stack]):\n{}",
        vmm::threads::dump()
    );
    shared.abort.interrupt(&reason);
    lock(&shared.state).fired = Some(reason.clone());
    shared.cv.notify_all();
    if let Some(sw) = swapper {
        let diagnosis = sw.release_waiters();
        tracing::error!("{name}: at the stall, the {diagnosis}");
    }
    if wait_done(shared, Instant::now() + slack) {
        return;
    }
    tracing::error!(
        "{name}: the run is still stuck {} s after its faults were released; a thread \
         stuck in the kernel cannot be ended from here. Ctrl-C ends swaplab; the finished \
         runs' results are kept (swaplab run --out DIR --resume goes on). Threads now:\n{}",
        slack.as_secs(),
        vmm::threads::dump()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_ends_in_time_leaves_no_trace() {
        let g = StallGuard::start_with("quick", Duration::from_secs(3600), Duration::ZERO);
        g.stage("running");
        assert_eq!(g.finish(), None);
    }

    #[test]
    fn a_stalled_run_is_reported_with_its_stage() {
        let g = StallGuard::start_with("stuck", Duration::ZERO, Duration::ZERO);
        g.stage("assembling the machine");
        // The guard acts at once (no limit, no slack): wait for its verdict.
        let reason = {
            let mut st = lock(&g.shared.state);
            while st.fired.is_none() {
                st = g.shared.cv.wait(st).unwrap();
            }
            st.fired.clone().unwrap()
        };
        assert!(reason.contains("the run stalled: still "), "{reason}");
        // A guest attached after the stall is aborted at once.
        assert_eq!(g.shared.abort.reason().as_deref(), Some(reason.as_str()));
        assert_eq!(g.finish().as_deref(), Some(reason.as_str()));
    }
}

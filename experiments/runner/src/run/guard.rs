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
//! the threads again and ends the process with [`STUCK_STATUS`] (a thread
//! stuck in the kernel cannot be ended on its own, but the process can: its
//! exit kills every thread). A matrix keeps the finished runs' results
//! (`swaplab run --out DIR --resume` goes on); what the process set up on
//! the host is swept by the next swaplab to start, as after a kill. So no
//! run, boot or matrix outlives its time limit by more than twice the slack.

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

/// Exit status of a process the guard ended because a run stayed stuck (as
/// `timeout(1)` exits 125 when it fails itself): a swaplab bug, whose log has
/// every thread's kernel stack.
pub const STUCK_STATUS: i32 = 125;

/// Ends the process (the guard's last resort).
fn exit_process(status: i32) {
    std::process::exit(status)
}

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
        Self::start_with(name, limit, STALL_SLACK, exit_process)
    }

    /// `give_up` ends the process with a status when the run stays stuck
    /// (unit tests, which share their process, record it instead).
    fn start_with(name: &str, limit: Duration, slack: Duration, give_up: fn(i32)) -> Self {
        let shared = Arc::new(Shared::default());
        lock(&shared.state).stage = "starting";
        let (s, name) = (shared.clone(), name.to_string());
        let thread = std::thread::Builder::new()
            .name("swaplab-stall-guard".into())
            .spawn(move || watch(&s, &name, limit, slack, give_up))
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

fn watch(shared: &Shared, name: &str, limit: Duration, slack: Duration, give_up: fn(i32)) {
    let started = Instant::now();
    if wait_done(shared, started + limit + slack) {
        return;
    }
    let (stage, swapper) = {
        let g = lock(&shared.state);
        (g.stage, g.swapper.as_ref().and_then(Weak::upgrade))
    };
    let reason = format!(
        "the run stalled: still {stage} {} s after it began (time limit {} s){}",
        started.elapsed().as_secs(),
        limit.as_secs(),
        if swapper.is_some() {
            "; its faults were released"
        } else {
            ""
        }
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
        "{name}: the run is still stuck {} s after the guard stepped in; a thread \
         stuck in the kernel cannot be ended on its own. Threads now:\n{}",
        slack.as_secs(),
        vmm::threads::dump()
    );
    eprintln!(
        "swaplab: {name}: {reason}, and it was still stuck {} s later: swaplab ends \
         itself (status {STUCK_STATUS}); finished runs' results are kept (swaplab run \
         --out DIR --resume goes on)",
        slack.as_secs()
    );
    give_up(STUCK_STATUS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};

    /// What the quick test's guard would have ended the process with.
    static QUICK_GAVE_UP: AtomicI32 = AtomicI32::new(0);
    /// The same for the stuck test's guard, with a condvar to wait for it.
    static STUCK_GAVE_UP: (Mutex<i32>, Condvar) = (Mutex::new(0), Condvar::new());

    fn quick_gave_up(status: i32) {
        QUICK_GAVE_UP.store(status, Ordering::SeqCst);
    }

    fn stuck_gave_up(status: i32) {
        *lock(&STUCK_GAVE_UP.0) = status;
        STUCK_GAVE_UP.1.notify_all();
    }

    /// For a guard whose giving up (or not) races the test's own finish.
    fn either_way(_: i32) {}

    #[test]
    fn a_run_that_ends_in_time_leaves_no_trace() {
        let g = StallGuard::start_with(
            "quick",
            Duration::from_secs(3600),
            Duration::ZERO,
            quick_gave_up,
        );
        g.stage("running");
        assert_eq!(g.finish(), None);
        assert_eq!(QUICK_GAVE_UP.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_stalled_run_is_reported_with_its_stage() {
        let g = StallGuard::start_with("stalled", Duration::ZERO, Duration::ZERO, either_way);
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

    #[test]
    fn a_run_still_stuck_after_the_slack_ends_the_process() {
        let g = StallGuard::start_with("stuck", Duration::ZERO, Duration::ZERO, stuck_gave_up);
        g.stage("running the guest");
        // The run never says it is done: the guard acts, waits the (zero)
        // slack, and ends the process with STUCK_STATUS.
        let status = {
            let mut st = lock(&STUCK_GAVE_UP.0);
            while *st == 0 {
                st = STUCK_GAVE_UP.1.wait(st).unwrap();
            }
            *st
        };
        assert_eq!(status, STUCK_STATUS);
        assert!(g.finish().is_some());
    }
}

//! Stopping a running machine from another thread: Ctrl-C ([`super::cmd`]),
//! the host swapper's fatal errors and the stall guard ([`super::guard`]) all
//! abort the guest through an [`Interrupter`].

use std::sync::{Arc, Mutex};

use base::lock;
use vmm::VmHandle;

/// Stops whichever machine is running from another thread (Ctrl-C): the
/// machine attaches its VM while the guest runs. Once interrupted, it stays
/// so: a machine attached later is stopped at once.
#[derive(Clone, Default)]
pub struct Interrupter(Arc<Mutex<InterruptState>>);

#[derive(Default)]
struct InterruptState {
    vm: Option<VmHandle>,
    reason: Option<String>,
}

impl Interrupter {
    /// Stops the running machine, if any, and every later one.
    pub fn interrupt(&self, reason: &str) {
        let mut g = lock(&self.0);
        if let Some(vm) = &g.vm {
            vm.abort(reason.to_string());
        }
        g.reason.get_or_insert_with(|| reason.to_string());
    }

    /// Why it was interrupted, if it was.
    pub fn reason(&self) -> Option<String> {
        lock(&self.0).reason.clone()
    }

    pub(crate) fn attach(&self, vm: VmHandle) {
        let mut g = lock(&self.0);
        if let Some(r) = &g.reason {
            vm.abort(r.clone());
        }
        g.vm = Some(vm);
    }

    pub(crate) fn detach(&self) {
        lock(&self.0).vm = None;
    }
}

//! Naming the machine's threads in the host swapper's thread registry: the
//! device numbers ([`BLK_DEVICE`], [`BALLOON_DEVICE`], [`ROOT_DEVICE`]) its fault records and
//! the trace carry, and the registry the vCPUs and device workers join as
//! they start ([`LateRegistry`]).

use std::sync::{Arc, Mutex};

use base::lock;
use swapper::{ThreadKind, ThreadRegistry};

/// Device numbers in the swapper's thread registry.
pub const BLK_DEVICE: u32 = 0;
/// The balloon's worker.
pub const BALLOON_DEVICE: u32 = 1;
/// The root disk's worker (`guest.root_disk`).
pub const ROOT_DEVICE: u32 = 2;

/// The swapper's thread registry, filled in once the swapper has started
/// (the VM and its devices are configured before it). Threads that start
/// while it is empty, or in a run without a host swapper, are not registered.
#[derive(Clone, Default)]
pub struct LateRegistry(Arc<Mutex<Option<ThreadRegistry>>>);

impl LateRegistry {
    /// From now on threads register in `registry`.
    pub fn set(&self, registry: ThreadRegistry) {
        *lock(&self.0) = Some(registry);
    }

    /// Registers thread `tid` as `kind`, if there is a registry.
    pub fn register(&self, tid: i32, kind: ThreadKind) {
        if let Some(r) = lock(&self.0).as_ref() {
            r.register(tid, kind);
        }
    }
}

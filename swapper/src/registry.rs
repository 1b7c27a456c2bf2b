//! Thread registry: which thread (by TID) is a vCPU, a device thread, or
//! another VMM thread. The VMM fills it; the fault handler looks up the TID
//! that `UFFD_FEATURE_THREAD_ID` reports for each fault.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base::sync::{read, write};

/// What kind of thread faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadKind {
    /// vCPU thread number `n`.
    Vcpu(u32),
    /// A VMM device thread; the number is chosen by the VMM (e.g. its index
    /// in the device list).
    Device(u32),
    /// Another registered VMM thread (main loop, control socket, …).
    Vmm,
    /// A thread nobody registered.
    Unknown,
}

/// TID → kind map, cheap to clone and share.
#[derive(Clone, Debug, Default)]
pub struct ThreadRegistry {
    map: Arc<RwLock<HashMap<i32, ThreadKind>>>,
}

impl ThreadRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or re-registers) `tid`.
    pub fn register(&self, tid: i32, kind: ThreadKind) {
        write(&self.map).insert(tid, kind);
    }

    /// Registers the calling thread.
    pub fn register_current(&self, kind: ThreadKind) {
        self.register(nix::unistd::gettid().as_raw(), kind);
    }

    /// Forgets `tid` (thread exited; TIDs are reused by the kernel).
    pub fn unregister(&self, tid: i32) {
        write(&self.map).remove(&tid);
    }

    /// The kind of `tid` ([`ThreadKind::Unknown`] if not registered).
    pub fn lookup(&self, tid: i32) -> ThreadKind {
        read(&self.map)
            .get(&tid)
            .copied()
            .unwrap_or(ThreadKind::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_unregister() {
        let r = ThreadRegistry::new();
        assert_eq!(r.lookup(42), ThreadKind::Unknown);
        r.register(42, ThreadKind::Vcpu(1));
        let r2 = r.clone();
        assert_eq!(r2.lookup(42), ThreadKind::Vcpu(1));
        r2.register_current(ThreadKind::Device(3));
        assert_eq!(
            r.lookup(nix::unistd::gettid().as_raw()),
            ThreadKind::Device(3)
        );
        r.unregister(42);
        assert_eq!(r2.lookup(42), ThreadKind::Unknown);
    }

    #[test]
    fn kinds_serialize_readably() {
        let s = serde_json::to_string(&[ThreadKind::Vcpu(0), ThreadKind::Vmm]).unwrap();
        assert_eq!(s, r#"[{"vcpu":0},"vmm"]"#);
    }
}

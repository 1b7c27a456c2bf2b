//! Fatal errors: faults the swapper refuses to serve because it cannot
//! produce the right data. The VMM must stop the VM (kick vCPUs out of
//! `KVM_RUN`); the swapper never serves wrong data.

use crate::integrity::ChecksumMismatch;
use crate::registry::ThreadKind;
use std::sync::{Arc, Mutex};

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FatalKind {
    /// The store could not read the page back.
    StoreRead {
        /// The store error, rendered.
        error: String,
    },
    /// The page read back does not match its checksum.
    Corruption(ChecksumMismatch),
    /// The disk block a named page mirrors could not be read.
    DiskRead {
        /// The disk.
        disk: u8,
        /// Byte offset of the block.
        offset: u64,
        /// The error, rendered.
        error: String,
    },
    /// A userfaultfd operation failed in a way that leaves the page unusable.
    Uffd {
        /// The operation.
        op: String,
        /// errno.
        errno: i32,
    },
}

/// A fatal error for one page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FatalError {
    /// Page index.
    pub page: u32,
    /// Host address of the page.
    pub addr: u64,
    /// Thread whose fault hit it.
    pub tid: i32,
    /// Its kind.
    pub thread: ThreadKind,
    /// ns since the swapper started.
    pub at_ns: u64,
    /// What happened.
    pub kind: FatalKind,
    /// Whether the page was poisoned (any later access fails) rather than
    /// left blocked.
    pub poisoned: bool,
}

impl std::fmt::Display for FatalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "page {} ({:#x}) faulted by tid {} ({:?}): ",
            self.page, self.addr, self.tid, self.thread
        )?;
        match &self.kind {
            FatalKind::StoreRead { error } => write!(f, "store read failed: {error}"),
            FatalKind::Corruption(m) => write!(f, "corruption: {m}"),
            FatalKind::DiskRead {
                disk,
                offset,
                error,
            } => write!(f, "reading disk {disk} at byte {offset} failed: {error}"),
            FatalKind::Uffd { op, errno } => write!(f, "{op} failed: errno {errno}"),
        }
    }
}

/// Callback invoked (from a handler thread) on each fatal error.
pub type FatalHook = Arc<dyn Fn(&FatalError) + Send + Sync>;

/// Collects fatal errors and notifies the hook.
pub(crate) struct FatalSink {
    errors: Mutex<Vec<FatalError>>,
    hook: Option<FatalHook>,
}

impl FatalSink {
    pub(crate) fn new(hook: Option<FatalHook>) -> Self {
        Self {
            errors: Mutex::new(Vec::new()),
            hook,
        }
    }

    /// Records `e`, then calls the hook. In that order: the hook stops the
    /// VM, and whoever then asks for the errors (the probe, as soon as its
    /// VM has ended) must find this one.
    pub(crate) fn report(&self, e: FatalError) {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e.clone());
        if let Some(h) = &self.hook {
            h(&e);
        }
    }

    pub(crate) fn all(&self) -> Vec<FatalError> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn any(&self) -> bool {
        !self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{OnceLock, Weak};

    /// The hook stops the VM, and the VMM then asks for the errors at once:
    /// the error must be recorded before the hook hears of it.
    #[test]
    fn an_error_is_recorded_before_the_hook_hears_of_it() {
        let me: Arc<OnceLock<Weak<FatalSink>>> = Arc::default();
        let seen = Arc::new(AtomicBool::new(false));
        let hook: FatalHook = {
            let (me, seen) = (Arc::clone(&me), Arc::clone(&seen));
            Arc::new(move |_| {
                let sink = me.get().and_then(Weak::upgrade).expect("the sink");
                seen.store(sink.any(), Ordering::SeqCst);
            })
        };
        let sink = Arc::new(FatalSink::new(Some(hook)));
        me.set(Arc::downgrade(&sink)).expect("set once");
        sink.report(FatalError {
            page: 1,
            addr: 0x1000,
            tid: 7,
            thread: ThreadKind::Vmm,
            at_ns: 0,
            kind: FatalKind::StoreRead {
                error: "test".into(),
            },
            poisoned: true,
        });
        assert!(
            seen.load(Ordering::SeqCst),
            "the hook saw no error recorded"
        );
        assert_eq!(sink.all().len(), 1);
    }
}

//! The probe runner's hooks (what a caller may run at each point of a probe) and
//! the latency that marks a host fault.

use std::sync::Arc;

use vmm::{HostRegion, VmHandle};

/// An error a hook returns to abort the run.
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Receives test RAM's host placement before any vCPU runs.
pub type TestRamHook = Box<dyn FnOnce(&HostRegion) -> Result<(), HookError>>;

/// Receives a handle to the running VM.
pub type StartedHook = Box<dyn FnOnce(VmHandle)>;

/// Called once as [`super::run_probe`] ends on every path (success, error, panic) after guest
/// memory was created, while test RAM is still mapped.
pub type FinishHook = Box<dyn FnOnce()>;

/// Called with the 1-based number of each pass as it ends, on the vCPU thread while the
/// guest waits (so it may take its time: nothing it does is inside a timed access).
pub type PassEndHook = Arc<dyn Fn(u32) + Send + Sync>;

/// Accesses at least this slow took a host page fault: a resident access costs well
/// under a microsecond (p99 ≈ 0.5 µs under PVM), the cheapest host fault (first touch
/// of anonymous memory) ≈ 4 µs.
pub const FAULT_THRESHOLD_NS: u64 = 2_000;

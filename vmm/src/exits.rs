//! Exit accounting: how many userspace VM exits of each kind, and how long the VMM spent on them.
//!
//! `time_ns` for a reason is the wall time from `KVM_RUN` returning with that reason to the
//! vCPU thread calling `KVM_RUN` again, i.e. the cost of handling the exit in the VMM
//! (device emulation included). Time inside `KVM_RUN` is counted separately
//! ([`ExitStats::in_kvm_run_ns`]). Exits KVM handles in the kernel never reach userspace;
//! see [`crate::stats`] for those.

use std::collections::BTreeMap;

use serde::Serialize;

/// Why `KVM_RUN` returned to the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// `KVM_EXIT_MMIO`, guest write.
    MmioWrite,
    /// `KVM_EXIT_MMIO`, guest read.
    MmioRead,
    /// `KVM_EXIT_IO`, OUT.
    IoOut,
    /// `KVM_EXIT_IO`, IN.
    IoIn,
    /// `KVM_EXIT_HLT`.
    Hlt,
    /// `KVM_EXIT_SHUTDOWN` (triple fault).
    Shutdown,
    /// `KVM_RUN` returned `EINTR` (a signal, e.g. a stop request) or `KVM_EXIT_INTR`.
    Intr,
    /// `KVM_EXIT_SYSTEM_EVENT`.
    SystemEvent,
    /// `KVM_EXIT_INTERNAL_ERROR`.
    InternalError,
    /// `KVM_EXIT_FAIL_ENTRY`.
    FailEntry,
    /// `KVM_EXIT_MEMORY_FAULT`.
    MemoryFault,
    /// Anything else.
    Other,
}

impl ExitReason {
    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::MmioWrite => "mmio_write",
            Self::MmioRead => "mmio_read",
            Self::IoOut => "io_out",
            Self::IoIn => "io_in",
            Self::Hlt => "hlt",
            Self::Shutdown => "shutdown",
            Self::Intr => "intr",
            Self::SystemEvent => "system_event",
            Self::InternalError => "internal_error",
            Self::FailEntry => "fail_entry",
            Self::MemoryFault => "memory_fault",
            Self::Other => "other",
        }
    }
}

/// Count and total handling time of one exit reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExitCount {
    /// Number of exits.
    pub count: u64,
    /// Total wall time spent handling them in the VMM, in nanoseconds.
    pub time_ns: u64,
}

impl ExitCount {
    /// Mean handling time, in nanoseconds (0 when there were none).
    pub fn mean_ns(&self) -> u64 {
        self.time_ns.checked_div(self.count).unwrap_or(0)
    }
}

/// Userspace exits by reason for one vCPU, or summed over a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExitStats {
    /// Exits by reason (only reasons that occurred).
    pub by_reason: BTreeMap<ExitReason, ExitCount>,
    /// Total wall time spent inside `KVM_RUN`, in nanoseconds.
    pub in_kvm_run_ns: u64,
}

impl ExitStats {
    /// Record one exit that took `time_ns` to handle.
    pub fn record(&mut self, reason: ExitReason, time_ns: u64) {
        let c = self.by_reason.entry(reason).or_default();
        c.count += 1;
        c.time_ns += time_ns;
    }

    /// Add `other` into `self`.
    pub fn merge(&mut self, other: &ExitStats) {
        for (reason, c) in &other.by_reason {
            let e = self.by_reason.entry(*reason).or_default();
            e.count += c.count;
            e.time_ns += c.time_ns;
        }
        self.in_kvm_run_ns += other.in_kvm_run_ns;
    }

    /// Total exits of all reasons.
    pub fn total(&self) -> u64 {
        self.by_reason.values().map(|c| c.count).sum()
    }

    /// The count for one reason (zero if it never happened).
    pub fn get(&self, reason: ExitReason) -> ExitCount {
        self.by_reason.get(&reason).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merges_and_serialises_by_name() {
        let mut a = ExitStats::default();
        a.record(ExitReason::MmioWrite, 100);
        a.record(ExitReason::MmioWrite, 300);
        a.in_kvm_run_ns = 7;
        let mut b = ExitStats::default();
        b.record(ExitReason::Intr, 5);
        b.record(ExitReason::MmioWrite, 600);
        b.in_kvm_run_ns = 3;
        a.merge(&b);
        assert_eq!(
            a.get(ExitReason::MmioWrite),
            ExitCount {
                count: 3,
                time_ns: 1000
            }
        );
        assert_eq!(a.get(ExitReason::MmioWrite).mean_ns(), 333);
        assert_eq!(a.get(ExitReason::Hlt), ExitCount::default());
        assert_eq!(a.total(), 4);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["by_reason"]["mmio_write"]["count"], 3);
        assert_eq!(v["by_reason"]["intr"]["time_ns"], 5);
        assert_eq!(v["in_kvm_run_ns"], 10);
        assert_eq!(ExitReason::MmioWrite.name(), "mmio_write");
    }
}

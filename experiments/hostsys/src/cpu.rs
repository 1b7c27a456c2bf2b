//! Pinning a thread to a CPU, and reading its time-stamp counter.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The CPU is not in this process's allowed set (or beyond what a set holds).
    #[error("CPU {0} is not a CPU this process may use")]
    NotAllowed(usize),
    /// Reading or setting the affinity failed.
    #[error("{0}")]
    Sys(&'static str, #[source] nix::Error),
}

/// Pins the calling thread (and the threads and processes it starts afterwards) to
/// `cpu`, which must be in the thread's allowed set.
pub fn pin_to_cpu(cpu: usize) -> Result<(), CpuError> {
    let allowed =
        sched_getaffinity(Pid::from_raw(0)).map_err(|e| CpuError::Sys("sched_getaffinity", e))?;
    if !allowed.is_set(cpu).unwrap_or(false) {
        return Err(CpuError::NotAllowed(cpu));
    }
    let mut one = CpuSet::new();
    one.set(cpu).map_err(|_| CpuError::NotAllowed(cpu))?;
    sched_setaffinity(Pid::from_raw(0), &one).map_err(|e| CpuError::Sys("sched_setaffinity", e))
}

/// The time-stamp counter (`RDTSC`).
#[cfg(target_arch = "x86_64")]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter and touches no memory; Linux does not set
    // CR4.TSD for user space, so it does not fault.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_to_an_allowed_cpu_and_refuses_others() {
        let allowed = sched_getaffinity(Pid::from_raw(0)).unwrap();
        let cpu = (0..CpuSet::count())
            .find(|&c| allowed.is_set(c).unwrap())
            .unwrap();
        // In a thread of its own, so the test runner's threads keep their CPUs.
        std::thread::spawn(move || {
            pin_to_cpu(cpu).unwrap();
            let now = sched_getaffinity(Pid::from_raw(0)).unwrap();
            assert!(now.is_set(cpu).unwrap());
            assert!(matches!(
                pin_to_cpu(CpuSet::count() + 5),
                Err(CpuError::NotAllowed(_))
            ));
        })
        .join()
        .unwrap();
    }
}

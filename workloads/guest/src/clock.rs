//! Clocks for the guest programs: a cheap cycle counter for per-access timing, and
//! the kernel's clocks for timestamps and wall time.
//!
//! Per-access latencies are taken with `lfence; rdtsc` around the access and turned
//! into nanoseconds with the rate seen over the whole pass ([`Rate`]: cycles against
//! `CLOCK_MONOTONIC`), so nothing needs calibrating first and a guest whose TSC rate
//! is unknown still gets nanoseconds.

/// Cycle counter: `lfence; rdtsc` on x86-64 (the fence keeps earlier loads from
/// drifting past it), monotonic nanoseconds elsewhere.
#[inline(always)]
pub fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: lfence only orders loads; every x86-64 CPU has it (SSE2 is part of
        // the baseline).
        unsafe { core::arch::x86_64::_mm_lfence() };
        // SAFETY: rdtsc only reads the time-stamp counter, present on every x86-64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        monotonic_ns()
    }
}

/// Nanoseconds on `clock` (0 if the kernel refuses it).
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_BOOTTIME` in nanoseconds (counts time suspended, too).
pub fn boottime_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// A stretch of time measured on both clocks, giving the cycle rate over it.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    start_ns: u64,
    start_cycles: u64,
}

impl Rate {
    /// Start measuring now.
    pub fn start() -> Self {
        Self {
            start_ns: monotonic_ns(),
            start_cycles: cycles(),
        }
    }

    /// `(wall ns, ns per cycle)` since [`Rate::start`].
    pub fn stop(&self) -> (u64, f64) {
        let cyc = cycles().saturating_sub(self.start_cycles);
        let ns = monotonic_ns().saturating_sub(self.start_ns);
        let per = if cyc == 0 {
            1.0
        } else {
            ns as f64 / cyc as f64
        };
        (ns, per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let (a, b) = (monotonic_ns(), boottime_ns());
        let r = Rate::start();
        let mut x = 0u64;
        for i in 0..200_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let (ns, per) = r.stop();
        assert!(monotonic_ns() >= a && boottime_ns() >= b);
        assert!(
            a > 0 && b >= a,
            "boot time includes monotonic time: {a} {b}"
        );
        assert!(ns > 0 && per > 0.0 && per.is_finite(), "{ns} {per}");
    }
}

//! The background evictor thread (the swapper's kswapd).
//!
//! Each round: scan the zero-map pool if due ([`crate::residency`]), evict
//! until known-resident pages are at `limit − headroom`, shrink the pool if
//! committed pages exceed `cap − headroom`, and top the pool up again.
//! It sleeps until a handler nudges it (room is short, or a first touch
//! found the pool empty) or the scan interval elapses.
//!
//! **Scan duty cycle.** A pool scan walks the page tables of the pool's
//! runs of pages (`PAGEMAP_SCAN`; see `Shared::promote_written`). It used to
//! walk every region: natively about a hundred microseconds per 256 MiB, but
//! in the nested sandbox, where the host kernel itself is emulated, 7.8 ms,
//! and scanning at the 1 ms pressure interval spent 83 s of a 174 s run
//! walking page tables on the one CPU the guest also needs (walking only the
//! pool brought a scan there to 1.9 ms). Whatever a scan costs on this host,
//! the next scan never starts sooner than [`SCAN_DUTY`]
//! times the last scan's own duration after it: scans take at most
//! 1/(1 + `SCAN_DUTY`) of the evictor's time, whatever a scan costs on this
//! host. A scan asked for sooner (a fault found the pool empty, or
//! pressure) is kept and done as soon as that gap has passed. Limits do not
//! depend on it: pool pages count as committed until a scan promotes them.

use crate::core::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIN_SCAN: Duration = Duration::from_millis(1);
/// Most pages freed per round, so scans and pool work are not starved.
const ROUND: u64 = 256;
/// The gap after a scan is at least this many times the scan's duration.
pub(crate) const SCAN_DUTY: u32 = 10;

fn stopping(shared: &Shared) -> bool {
    shared.stop.load(Ordering::Acquire) || shared.evictor_stop.load(Ordering::Acquire)
}

/// The shortest gap after a scan that took `cost`.
pub(crate) fn scan_gap(cost: Duration) -> Duration {
    cost.saturating_mul(SCAN_DUTY).max(MIN_SCAN)
}

/// Body of the evictor thread.
pub(crate) fn run(shared: Arc<Shared>) {
    let max_scan = shared.cfg.max_scan_interval.max(MIN_SCAN);
    let mut interval = Duration::from_millis(10).min(max_scan);
    let mut last_scan = Instant::now();
    let mut gap = MIN_SCAN;
    // A scan was asked for (by a fault or by pressure) and not done yet.
    let mut wanted = false;
    loop {
        {
            let mut w = shared.wake.lock().unwrap_or_else(|e| e.into_inner());
            while !w.pending && !stopping(&shared) {
                let next = if wanted { gap } else { interval };
                let left = next.saturating_sub(last_scan.elapsed());
                if left.is_zero() {
                    break;
                }
                w = shared
                    .wake_cv
                    .wait_timeout(w, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            w.pending = false;
            wanted |= std::mem::take(&mut w.scan);
        }
        if stopping(&shared) {
            break;
        }
        // Under pressure, pool pages written behind our back must become
        // eviction candidates quickly: scan as soon as the duty cycle allows.
        wanted |= !shared.passive
            && shared.budget.committed() > shared.limits().soft_cap()
            && shared.budget.pool() > 0;
        let since = last_scan.elapsed();
        if since >= interval || (wanted && since >= gap) {
            wanted = false;
            let started = Instant::now();
            let promoted = shared.promote_scan();
            last_scan = Instant::now();
            gap = scan_gap(last_scan - started);
            // Passive mode scans only to keep the status current: slowly.
            // Written pool pages only need to become eviction candidates
            // when resident memory heads for the target: far from it, scan
            // slowly and leave the CPU to the guest.
            let near_cap = shared.budget.resident() + promoted + shared.limits().headroom
                >= shared.limits().resident_target();
            interval = if shared.passive {
                max_scan
            } else if promoted > 0 && near_cap {
                interval / 2
            } else {
                (interval * 2).min(max_scan)
            }
            .max(gap);
        }
        if shared.reclaim_to(shared.limits().resident_target(), ROUND) == ROUND {
            // More to do: come back without sleeping (after the checks above).
            shared.nudge(false);
        }
        let committed = shared.budget.committed();
        let soft = shared.limits().soft_cap();
        if committed > soft {
            shared.shrink_pool(committed - soft, true);
        }
        shared.refill_pool();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_after_a_scan_is_duty_times_its_cost_never_under_the_minimum() {
        assert_eq!(scan_gap(Duration::ZERO), MIN_SCAN);
        assert_eq!(scan_gap(Duration::from_micros(50)), MIN_SCAN);
        assert_eq!(
            scan_gap(Duration::from_micros(7_800)),
            Duration::from_millis(78)
        );
        assert_eq!(scan_gap(Duration::MAX), Duration::MAX);
    }
}

//! The background evictor thread (the swapper's kswapd).
//!
//! Each round: scan the zero-map pool if due ([`crate::residency`]), evict
//! until known-resident pages are at `limit − headroom`, shrink the pool if
//! committed pages exceed `cap − headroom`, and top the pool up again.
//! It sleeps until a handler nudges it (room is short, or a first touch
//! found the pool empty) or the scan interval elapses.

use crate::core::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIN_SCAN: Duration = Duration::from_millis(1);
/// Most pages freed per round, so scans and pool work are not starved.
const ROUND: u64 = 256;

fn stopping(shared: &Shared) -> bool {
    shared.stop.load(Ordering::Acquire) || shared.evictor_stop.load(Ordering::Acquire)
}

/// Body of the evictor thread.
pub(crate) fn run(shared: Arc<Shared>) {
    let max_scan = shared.cfg.max_scan_interval.max(MIN_SCAN);
    let mut interval = Duration::from_millis(10).min(max_scan);
    let mut last_scan = Instant::now();
    loop {
        let scan_now = {
            let mut w = shared.wake.lock().unwrap_or_else(|e| e.into_inner());
            while !w.pending && !stopping(&shared) {
                let left = interval.saturating_sub(last_scan.elapsed());
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
            std::mem::take(&mut w.scan)
        };
        if stopping(&shared) {
            break;
        }
        // Under pressure, pool pages written behind our back must become
        // eviction candidates quickly: scan at the minimum interval.
        let pressure = !shared.passive
            && shared.budget.committed() > shared.limits().soft_cap()
            && shared.budget.pool() > 0
            && last_scan.elapsed() >= MIN_SCAN;
        if scan_now || pressure || last_scan.elapsed() >= interval {
            let promoted = shared.promote_scan();
            last_scan = Instant::now();
            // Passive mode scans only to keep the status current: slowly.
            // Written pool pages only need to become eviction candidates
            // when resident memory heads for the target: far from it, scan
            // slowly and leave the CPU to the guest.
            let near_cap = shared.budget.resident() + promoted + shared.limits().headroom
                >= shared.limits().resident_target();
            interval = if shared.passive {
                max_scan
            } else if promoted > 0 && near_cap {
                (interval / 2).max(MIN_SCAN)
            } else {
                (interval * 2).min(max_scan)
            };
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

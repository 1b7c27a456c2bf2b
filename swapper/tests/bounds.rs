//! Resource bounds under a guest that faults as fast as it can: the trace ring
//! keeps its capacity and counts what it drops, and the swapper's own store never
//! holds more than one slot per guest page, however many faults and evictions.

mod common;

use common::*;
use swapper::*;

const PAGES: usize = 4096;
const LIMIT: usize = 256;
const TRACE: usize = 1024;

#[test]
fn trace_ring_and_store_stay_bounded_under_a_fault_storm() {
    if !uffd_available() {
        return;
    }
    let map = Mapping::new(PAGES);
    let cfg = SwapperConfig {
        limit_bytes: (LIMIT * PAGE_SIZE) as u64,
        slack_bytes: Some(0),
        trace_capacity: TRACE,
        ..Default::default()
    };
    // SAFETY: the mapping outlives the swapper.
    let sw = unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap();
    let base = map.addr;
    // Two vCPUs dirty every page three times over in random order: each touch of
    // an evicted page is a fault, and keeping 256 of 4096 resident evicts as fast.
    for pass in 0..3u64 {
        vcpus(&sw, 2, move |v| {
            for p in shuffled(PAGES, pass * 31 + v as u64 + 1) {
                if p % 2 == v {
                    fill(base + p * PAGE_SIZE, p, pass);
                }
            }
        });
    }
    vcpus(&sw, 2, move |v| {
        for p in (v..PAGES).step_by(2) {
            assert_eq!(check(base + p * PAGE_SIZE, p, 2), 0, "page {p}");
        }
    });
    let st = sw.status();
    assert!(
        st.counters.faults > 8 * TRACE as u64,
        "{} faults",
        st.counters.faults
    );
    // The store: at most one slot per guest page, each at most a page.
    assert!(st.store_slots <= st.region_pages, "{st:?}");
    assert!(
        st.store_bytes <= st.store_slots * PAGE_SIZE as u64,
        "{st:?}"
    );
    assert!(st.counters.evictions > 2 * PAGES as u64);
    // The trace: exactly its capacity, the rest counted as dropped.
    let dropped = st.trace_dropped;
    let recs = sw.drain_trace();
    assert_eq!(recs.len(), TRACE);
    assert!(dropped > 0);
    for w in recs.windows(2) {
        assert_eq!(w[0].seq + 1, w[1].seq, "records are the newest, gap-free");
    }
    let last = recs.last().expect("records").seq;
    assert!(last + 1 >= dropped + TRACE as u64, "every record numbered");
    let end = shutdown(sw);
    assert_eq!(end.counters.integrity_errors, 0);
    assert!(end.trace_dropped >= dropped);
}

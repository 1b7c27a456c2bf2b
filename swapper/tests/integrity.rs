//! A million pages of random content through eviction and swap-in, with
//! checksums on: zero corruption.

mod common;

use common::*;
use std::time::Instant;
use swapper::*;

#[test]
fn million_page_round_trip() {
    if !uffd_available() {
        return;
    }
    let n = 16384; // 64 MiB
    let map = Mapping::new(n);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cfg = SwapperConfig {
        limit_bytes: 16 << 20,
        store: StoreKind::File {
            dir: dir.path().to_path_buf(),
            direct: false,
        },
        checksums: true,
        handler_threads: 2,
        ..Default::default()
    };
    // SAFETY: the mapping outlives the swapper.
    let sw = unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap();
    let base = map.addr;
    let t = Instant::now();
    vcpus(&sw, 2, move |i| {
        for p in (0..n).filter(|p| p % 2 == i) {
            fill(base + p * PAGE_SIZE, p, 1);
        }
    });
    // Pass k verifies the content of the last write; every other pass also
    // rewrites every page with new random content (the others only read, so
    // pages come back clean and are dropped again without a write).
    let mut seed = 1u64;
    let mut passes = 0;
    while sw.status().swap_ins() < 1_000_000 {
        passes += 1;
        let rewrite = passes % 2 == 1;
        let (old, new) = (seed, seed + 1);
        vcpus(&sw, 2, move |i| {
            for p in shuffled(n, old * 31 + i as u64)
                .into_iter()
                .filter(|p| p % 2 == i)
            {
                let addr = base + p * PAGE_SIZE;
                assert_eq!(check(addr, p, old), 0, "page {p} corrupt (seed {old})");
                if rewrite {
                    fill(addr, p, new);
                }
            }
        });
        if rewrite {
            seed = new;
        }
    }
    let last = seed;
    vcpus(&sw, 2, move |i| {
        for p in (0..n).filter(|p| p % 2 == i) {
            assert_eq!(check(base + p * PAGE_SIZE, p, last), 0, "page {p}");
        }
    });
    let elapsed = t.elapsed();
    let st = shutdown(sw);
    eprintln!(
        "million-page round trip: {passes} passes in {elapsed:.1?}: {} swap-ins ({} store, {} prefetch hits, {} minor), \
         {} evictions written, {} clean drops, {} write-protect faults, peak committed {} (limit {} + slack {})",
        st.swap_ins(),
        st.counters.swapin_store,
        st.counters.prefetch_hits,
        st.counters.swapin_minor,
        st.counters.evictions,
        st.counters.silent_writes_avoided,
        st.counters.wp_faults,
        st.peak_resident_pages,
        st.limit_pages,
        st.slack_pages,
    );
    assert!(st.swap_ins() >= 1_000_000);
    assert_eq!(st.counters.integrity_errors, 0);
    assert_eq!(st.counters.store_read_errors, 0);
    assert_eq!(st.fatal_errors, 0);
    assert!(st.peak_resident_pages <= st.limit_pages + st.slack_pages);
}

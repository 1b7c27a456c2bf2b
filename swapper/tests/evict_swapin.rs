//! Eviction and swap-in on a real mapping, for every store and policy.

mod common;

use common::*;
use std::sync::Arc;
use swapper::*;

fn stores(dir: &std::path::Path) -> Vec<StoreKind> {
    vec![
        StoreKind::File {
            dir: dir.to_path_buf(),
            direct: false,
        },
        StoreKind::File {
            dir: dir.to_path_buf(),
            direct: true,
        },
        StoreKind::Memory,
        StoreKind::Lz4,
    ]
}

/// 16 MiB region, 4 MiB limit, two vCPU threads: write everything, verify in
/// random order, rewrite, verify again. Nothing may be lost and resident
/// memory (sampled from smaps) must stay within limit + slack.
fn round_trip(store: StoreKind, policy: PolicyKind) {
    let pages = 4096;
    let map = Mapping::new(pages);
    let cfg = SwapperConfig {
        limit_bytes: 4 << 20,
        store: store.clone(),
        policy,
        checksums: true,
        handler_threads: 2,
        ..Default::default()
    };
    // SAFETY: the mapping outlives the swapper (dropped at the end).
    let sw = Arc::new(unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap());
    let sampler = RssSampler::start(&sw);
    let base = map.addr;
    for (pass, seed) in [(0u64, 11u64), (1, 22)] {
        vcpus(&sw, 2, move |t| {
            let order = shuffled(pages, seed + t as u64);
            for &p in order.iter().filter(|p| *p % 2 == t) {
                if pass > 0 {
                    assert_eq!(check(base + p * PAGE_SIZE, p, seed - 11), 0, "page {p}");
                }
                fill(base + p * PAGE_SIZE, p, seed);
            }
        });
    }
    vcpus(&sw, 2, move |t| {
        for p in shuffled(pages, 99).into_iter().filter(|p| p % 2 == t) {
            assert_eq!(check(base + p * PAGE_SIZE, p, 22), 0, "page {p}");
        }
    });
    let st = sw.status();
    let trace = sw.drain_trace();
    let limit = st.limit_pages + st.slack_pages;
    let rss = sampler.assert_within(limit);
    eprintln!(
        "{:>6}/{:<6} evictions {:>6} store {:>6} minor {:>5} wp {:>5} zero {:>5} silent {:>5} werr {} \
         peak {:>5} rss max {:>5}/{:>5} ({:?} samples) limit+slack {limit}",
        store.name(),
        policy.name(),
        st.counters.evictions,
        st.counters.swapin_store,
        st.counters.swapin_minor,
        st.counters.wp_faults,
        st.counters.swapin_zero,
        st.counters.silent_writes_avoided,
        st.counters.write_errors,
        st.peak_resident_pages,
        rss.smaps_region,
        rss.scanned,
        rss.samples,
    );
    assert!(st.counters.evictions > 4000, "{st:?}");
    assert!(st.swap_ins() > 4000, "{st:?}");
    assert_eq!(st.counters.integrity_errors, 0);
    assert_eq!(st.fatal_errors, 0);
    assert!(st.peak_resident_pages <= limit, "{st:?}");
    assert_eq!(st.limit_overshoots, 0);
    assert!(!trace.is_empty());
    assert!(trace
        .iter()
        .filter(|r| r.path == FaultPath::Store)
        .all(|r| matches!(r.thread, ThreadKind::Vcpu(0 | 1)) && r.store_read_ns > 0));
    let sw = Arc::try_unwrap(sw).ok().unwrap();
    let end = shutdown(sw);
    assert_eq!(end.fatal_errors, 0);
}

#[test]
fn every_store_and_policy() {
    if !uffd_available() {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for store in stores(dir.path()) {
        for policy in [PolicyKind::Fifo, PolicyKind::Random, PolicyKind::Clock] {
            round_trip(store.clone(), policy);
        }
    }
    // Every swap file was deleted on shutdown.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

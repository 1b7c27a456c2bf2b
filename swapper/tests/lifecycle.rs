//! Start/stop: threads joined, regions unregistered, store deleted; several
//! swappers in one process; restore; trace records and histograms.
//!
//! One test function (run sequentially) because it inspects the process's
//! thread list, which parallel tests would disturb.

mod common;

use common::*;
use swapper::*;

fn swapper_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s.starts_with("swapper-"))
        .collect()
}

fn cfg(store: StoreKind, policy: PolicyKind) -> SwapperConfig {
    SwapperConfig {
        limit_bytes: 1 << 20,
        store,
        policy,
        checksums: true,
        handler_threads: 3,
        ..Default::default()
    }
}

fn shutdown_cleans_up(dir: &std::path::Path) {
    let n = 1024;
    let map = Mapping::new(n);
    let store = StoreKind::File {
        dir: dir.to_path_buf(),
        direct: false,
    };
    // SAFETY: the mapping outlives the swapper.
    let sw = unsafe { Swapper::start(cfg(store, PolicyKind::Fifo), &[map.region()]) }.unwrap();
    // Threads name themselves when they start running.
    let want = [
        "swapper-evict",
        "swapper-fault-0",
        "swapper-fault-1",
        "swapper-fault-2",
    ];
    let t = std::time::Instant::now();
    loop {
        let mut names = swapper_threads();
        names.sort();
        if names == want {
            break;
        }
        assert!(t.elapsed().as_secs() < 5, "{names:?}");
        std::thread::yield_now();
    }
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| fill(base + p * PAGE_SIZE, p, 1))
    });
    // The swap file holds guest memory: it is open but has no name in `dir`.
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "no named file");
    assert_eq!(open_files_in(dir), 1, "the swap file is open");
    let st = shutdown(sw);
    assert!(st.counters.evictions > 500);
    assert!(swapper_threads().is_empty(), "threads joined");
    assert_eq!(open_files_in(dir), 0, "swap file closed");
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "nothing left");
    // Unregistered: evicted pages now read as plain zero memory, no fault
    // handler involved (this would hang if the range were still registered).
    assert_eq!(touch_read(map.page(0)), 0);
}

fn drop_cleans_up_too(dir: &std::path::Path) {
    let map = Mapping::new(256);
    let store = StoreKind::File {
        dir: dir.to_path_buf(),
        direct: true,
    };
    // SAFETY: the mapping outlives the swapper.
    let sw = unsafe { Swapper::start(cfg(store, PolicyKind::Clock), &[map.region()]) }.unwrap();
    fill(map.page(3), 3, 3);
    drop(sw);
    assert!(swapper_threads().is_empty());
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    assert_eq!(
        check(map.page(3), 3, 3),
        0,
        "resident page untouched by drop"
    );
}

fn restore_keeps_content() {
    let n = 2048;
    let map = Mapping::new(n);
    // SAFETY: the mapping outlives the swapper.
    let sw =
        unsafe { Swapper::start(cfg(StoreKind::Lz4, PolicyKind::Clock), &[map.region()]) }.unwrap();
    let base = map.addr;
    vcpus(&sw, 2, move |i| {
        (0..n)
            .filter(|p| p % 2 == i)
            .for_each(|p| fill(base + p * PAGE_SIZE, p, 4))
    });
    assert!(sw.status().pages.evicted > 1000);
    let st = sw.shutdown_restoring().unwrap();
    assert!(st.committed_pages > 1500, "everything back: {st:?}");
    assert_eq!(st.pages.evicted + st.pages.staged, 0);
    for p in 0..n {
        assert_eq!(check(base + p * PAGE_SIZE, p, 4), 0, "page {p}");
    }
}

fn several_swappers_at_once() {
    let maps: Vec<_> = (0..3).map(|_| Mapping::new(1536)).collect();
    let configs = [
        cfg(StoreKind::Memory, PolicyKind::Fifo),
        cfg(StoreKind::Lz4, PolicyKind::Random),
        cfg(StoreKind::Memory, PolicyKind::Clock),
    ];
    let sws: Vec<_> = maps
        .iter()
        .zip(configs)
        // SAFETY: the mappings outlive the swappers.
        .map(|(m, c)| unsafe { Swapper::start(c, &[m.region()]) }.unwrap())
        .collect();
    std::thread::scope(|s| {
        for (k, (m, sw)) in maps.iter().zip(&sws).enumerate() {
            let base = m.addr;
            s.spawn(move || {
                vcpus(sw, 2, move |i| {
                    for seed in [10 + k as u64, 20 + k as u64] {
                        for p in shuffled(1536, seed).into_iter().filter(|p| p % 2 == i) {
                            fill(base + p * PAGE_SIZE, p, seed);
                        }
                    }
                    for p in (0..1536).filter(|p| p % 2 == i) {
                        assert_eq!(check(base + p * PAGE_SIZE, p, 20 + k as u64), 0);
                    }
                });
            });
        }
    });
    for sw in sws {
        let st = shutdown(sw);
        assert!(st.counters.evictions > 1000, "{st:?}");
        assert!(st.peak_resident_pages <= st.limit_pages + st.slack_pages);
        assert_eq!(st.fatal_errors, 0);
    }
}

fn trace_and_histograms() {
    let n = 1024;
    let map = Mapping::new(n);
    // SAFETY: the mapping outlives the swapper.
    let sw = unsafe { Swapper::start(cfg(StoreKind::Memory, PolicyKind::Fifo), &[map.region()]) }
        .unwrap();
    let base = map.addr;
    vcpus(&sw, 2, move |i| {
        (0..n)
            .filter(|p| p % 2 == i)
            .for_each(|p| fill(base + p * PAGE_SIZE, p, 5))
    });
    // An unregistered thread's faults are attributed to `Unknown`.
    std::thread::spawn(move || {
        (0..n).for_each(|p| assert_eq!(check(base + p * PAGE_SIZE, p, 5), 0))
    })
    .join()
    .unwrap();
    // Records are pushed after the faulting thread is woken: collect until
    // there is one per fault.
    let mut trace = Vec::new();
    let t = std::time::Instant::now();
    let st = loop {
        trace.extend(sw.drain_trace());
        let st = sw.status();
        if trace.len() as u64 == st.counters.faults {
            break st;
        }
        assert!(t.elapsed().as_secs() < 5, "{} records, {st:?}", trace.len());
        std::thread::yield_now();
    };
    assert!(trace.windows(2).all(|w| w[0].seq < w[1].seq));
    for r in &trace {
        assert!(r.total_ns >= r.install_ns, "{r:?}");
        assert_eq!(r.addr, (base + r.page as usize * PAGE_SIZE) as u64);
        match r.path {
            FaultPath::Store => assert!(r.store_read_ns > 0 && r.install_ns > 0),
            FaultPath::Zero => assert_eq!(r.store_read_ns, 0),
            _ => {}
        }
    }
    assert!(trace.iter().any(|r| r.thread == ThreadKind::Vcpu(0)));
    assert!(trace.iter().any(|r| r.thread == ThreadKind::Vcpu(1)));
    assert!(trace
        .iter()
        .any(|r| r.thread == ThreadKind::Unknown && r.path == FaultPath::Store));
    let lat = sw.latency();
    let store = lat.iter().find(|(p, _)| *p == FaultPath::Store).unwrap().1;
    assert_eq!(store.count, st.counters.swapin_store);
    assert!(store.p50_ns > 0 && store.p50_ns <= store.p99_ns && store.p99_ns <= store.max_ns);
    let json = serde_json::to_value(&st).unwrap();
    assert!(json["counters"]["swapin_store"].as_u64().unwrap() > 0);
    assert!(json["latency"]["store"]["p99_ns"].as_u64().unwrap() > 0);
    shutdown(sw);
}

/// Memory written before the swapper starts (a VMM loading a kernel) is
/// imported as resident and evicted down to the limit without loss.
fn prepopulated_memory_is_imported() {
    let n = 1024;
    let map = Mapping::new(n);
    for p in 0..768 {
        fill(map.page(p), p, 6);
    }
    // Read-only touches map the zero page: imported as pool pages.
    for p in 768..800 {
        assert_eq!(touch_read(map.page(p)), 0);
    }
    // SAFETY: the mapping outlives the swapper.
    let sw = unsafe { Swapper::start(cfg(StoreKind::Memory, PolicyKind::Fifo), &[map.region()]) }
        .unwrap();
    quiesce(&sw);
    let st = sw.status();
    assert!(st.counters.evictions >= 768 - 256, "{st:?}");
    assert_eq!(st.limit_overshoots, 0);
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        for p in 0..n {
            if p < 768 {
                assert_eq!(check(base + p * PAGE_SIZE, p, 6), 0, "page {p}");
            } else {
                assert_eq!(touch_read(base + p * PAGE_SIZE), 0);
            }
        }
    });
    shutdown(sw);
}

#[test]
fn lifecycle() {
    if !uffd_available() {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    shutdown_cleans_up(dir.path());
    drop_cleans_up_too(dir.path());
    restore_keeps_content();
    several_swappers_at_once();
    trace_and_histograms();
    prepopulated_memory_is_imported();
    assert!(swapper_threads().is_empty());
}

/// This process's open files that live (or lived, unlinked) in `dir`.
fn open_files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

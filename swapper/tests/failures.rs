//! Store failures: write errors (ENOSPC, EIO, short) lose no page; read errors
//! (EIO, short) and corruption are fatal, never serve data and name the cause; a
//! slow store loses nothing and its time shows in the trace.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swapper::*;

const PAGES: usize = 2048;

fn fill_all(sw: &Swapper, base: usize, seed: u64) {
    vcpus(sw, 1, move |_| {
        for p in shuffled(PAGES, seed) {
            fill(base + p * PAGE_SIZE, p, seed);
        }
    });
}

fn check_all(sw: &Swapper, base: usize, seed: u64) {
    vcpus(sw, 1, move |_| {
        for p in shuffled(PAGES, seed ^ 0xff) {
            assert_eq!(check(base + p * PAGE_SIZE, p, seed), 0, "page {p} lost");
        }
    });
}

/// Arms `arm`, dirties every page, and checks none was lost. With `recover`, then
/// disarms and checks that residency returns under the limit and the content survives
/// another trip through the store.
fn write_failures_keep_pages(store: StoreKind, arm: impl Fn(&FaultInjector), recover: bool) {
    let map = Mapping::new(PAGES);
    let inj = FaultInjector::new();
    let sw = start_faulty(&map, &inj, store);
    fill_all(&sw, map.addr, 1);
    let before = sw.status();
    assert!(before.counters.evictions > 1000);
    // From now on every store write fails: dirtied pages cannot be evicted.
    arm(&inj);
    fill_all(&sw, map.addr, 2);
    check_all(&sw, map.addr, 2);
    let st = sw.status();
    assert!(st.counters.write_errors > 0, "{st:?}");
    assert!(inj.injected() > 0);
    assert_eq!(st.fatal_errors, 0);
    // The pages that could not be written stayed resident (over the limit,
    // reported as overshoots).
    assert!(st.limit_overshoots > 0, "{st:?}");
    if !recover {
        let end = shutdown(sw);
        assert_eq!(end.counters.integrity_errors, 0);
        return;
    }
    // Disarm: the evictor brings residency back under the limit and the
    // content survives another trip through the store.
    inj.clear();
    let target = st.limit_pages;
    settle(&sw, |s| s.resident_pages <= target).unwrap_or_else(|e| panic!("{e}"));
    check_all(&sw, map.addr, 2);
    let end = shutdown(sw);
    assert_eq!(end.counters.integrity_errors, 0);
    eprintln!(
        "write errors {} overshoots {} peak {}",
        end.counters.write_errors, end.limit_overshoots, end.peak_resident_pages
    );
}

#[test]
fn enospc_on_write_loses_no_page() {
    if !uffd_available() {
        return;
    }
    write_failures_keep_pages(
        StoreKind::Memory,
        |inj| inj.fail_writes(u64::MAX, libc::ENOSPC),
        true,
    );
}

#[test]
fn eio_on_write_loses_no_page() {
    if !uffd_available() {
        return;
    }
    write_failures_keep_pages(
        StoreKind::Lz4,
        |inj| inj.fail_writes(u64::MAX, libc::EIO),
        true,
    );
}

/// Every store write is torn (half written, then an error).
fn short_writes(recover: bool) {
    if !uffd_available() {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    write_failures_keep_pages(
        StoreKind::File {
            dir: dir.path().to_path_buf(),
            direct: false,
        },
        |inj| inj.short_writes(u64::MAX),
        recover,
    );
}

#[test]
fn short_writes_lose_no_page() {
    short_writes(false);
}

/// Once torn writes stop, the evictor brings residency back under the limit and
/// every page survives another trip through the store. (Ignored as a known bug
/// until 2026-12: 140 runs in a row passed on this build, under load, so it runs.)
#[test]
fn short_writes_then_residency_recovers() {
    short_writes(true);
}

/// Arms `arm`, has a device thread read an evicted page and checks it is never
/// served. `expect_error`: the store-read error's message contains this; `None`:
/// the failure is a checksum mismatch.
fn fatal_read(arm: impl Fn(&FaultInjector), expect_error: Option<&str>) {
    let expect_corruption = expect_error.is_none();
    let map = Mapping::new(PAGES);
    let inj = FaultInjector::new();
    let hooked: Arc<Mutex<Vec<FatalError>>> = Arc::default();
    let h = hooked.clone();
    let cfg = SwapperConfig {
        on_fatal: Some(Arc::new(move |e: &FatalError| {
            h.lock().unwrap().push(e.clone())
        })),
        ..faulty_config(&inj, StoreKind::Memory)
    };
    // SAFETY: the mapping outlives the swapper.
    let sw = unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap();
    // Sequential fill with fifo: page 0 is among the first evicted.
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        for p in 0..PAGES {
            fill(base + p * PAGE_SIZE, p, 5);
        }
    });
    settle(&sw, |s| s.pages.evicted > 1000).unwrap_or_else(|e| panic!("{e}"));
    arm(&inj);
    // A device thread reads page 0 through the kernel.
    device_read_refused(&sw, base);
    // The page stays unreadable.
    assert_eq!(kernel_read(base), Err(libc::EFAULT));
    let fatal = sw.fatal_errors();
    assert_eq!(
        fatal.len(),
        1,
        "{fatal:?} {:?} injected {}",
        sw.status(),
        inj.injected()
    );
    let e = &fatal[0];
    assert_eq!(e.page, 0);
    assert_eq!(e.thread, ThreadKind::Device(7));
    assert!(e.poisoned);
    match &e.kind {
        FatalKind::Corruption(m) => {
            assert!(expect_corruption);
            assert_ne!(m.expected, m.actual);
        }
        FatalKind::StoreRead { error } => {
            let want = expect_error.expect("a store read error");
            assert!(error.contains(want), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hooked.lock().unwrap().as_slice(), fatal.as_slice());
    let st = sw.status();
    if expect_corruption {
        assert_eq!(st.counters.integrity_errors, 1);
    } else {
        assert_eq!(st.counters.store_read_errors, 1);
    }
    assert_eq!(st.pages.poisoned, 1);
    // Every other page is intact.
    vcpus(&sw, 1, move |_| {
        for p in 1..PAGES {
            assert_eq!(check(base + p * PAGE_SIZE, p, 5), 0, "page {p}");
        }
    });
    let trace = sw.drain_trace();
    assert!(trace
        .iter()
        .any(|r| r.path == FaultPath::Fatal && r.thread == ThreadKind::Device(7)));
    drop(sw);
}

#[test]
fn store_read_failure_is_fatal_and_serves_nothing() {
    if !uffd_available() {
        return;
    }
    fatal_read(
        |inj| inj.fail_reads(1, libc::EIO),
        Some("Input/output error"),
    );
}

#[test]
fn corruption_is_detected_and_serves_nothing() {
    if !uffd_available() {
        return;
    }
    fatal_read(|inj| inj.corrupt_reads(1), None);
}

#[test]
fn short_store_read_is_fatal_and_serves_nothing() {
    if !uffd_available() {
        return;
    }
    // Half the page arrives: the swapper must neither install it nor retry into a
    // page of mixed content.
    fatal_read(|inj| inj.short_reads(1), Some("short store read of slot"));
}

#[test]
fn slow_store_loses_no_page_and_shows_in_the_trace() {
    if !uffd_available() {
        return;
    }
    let delay = Duration::from_micros(200);
    let map = Mapping::new(PAGES);
    let inj = FaultInjector::new();
    let sw = start_faulty(&map, &inj, StoreKind::Memory);
    fill_all(&sw, map.addr, 1);
    // Every store read and write from now on is slow.
    inj.slow(u64::MAX, delay);
    fill_all(&sw, map.addr, 2);
    check_all(&sw, map.addr, 2);
    let st = sw.status();
    assert_eq!(st.fatal_errors, 0, "{st:?}");
    assert_eq!(st.counters.write_errors, 0);
    assert!(inj.injected() > 100, "injected {}", inj.injected());
    let from_store: Vec<_> = sw
        .drain_trace()
        .into_iter()
        .filter(|r| r.path == FaultPath::Store)
        .collect();
    assert!(!from_store.is_empty());
    // Sleeping never returns early, so each swap-in read while the store was slow
    // took at least the delay (records from before arming are faster).
    let slow = from_store
        .iter()
        .filter(|r| u64::from(r.store_read_ns) >= delay.as_nanos() as u64)
        .count();
    assert!(slow > 100, "{slow} of {} swap-ins slow", from_store.len());
    inj.clear();
    let end = shutdown(sw);
    assert_eq!(end.counters.integrity_errors, 0);
}

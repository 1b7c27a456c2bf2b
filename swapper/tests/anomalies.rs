//! The VSwapper anomaly counters and the false-read mitigation, on a real
//! userfaultfd-registered mapping.

mod common;

use common::*;
use swapper::*;

const PAGES: usize = 1024;

fn start(map: &Mapping, dirty_tracking: bool, policy: PolicyKind) -> Swapper {
    let cfg = SwapperConfig {
        limit_bytes: 256 * PAGE_SIZE as u64,
        slack_bytes: Some(0),
        store: StoreKind::Memory,
        policy,
        dirty_tracking,
        checksums: true,
        ..Default::default()
    };
    // SAFETY: the mapping outlives the swapper.
    unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap()
}

/// Fills every page, then reads every page twice more (no writes): each
/// re-eviction of an unchanged page is a silent write without dirty
/// tracking and an avoided one with it.
fn read_only_passes(dirty_tracking: bool) -> status::CounterSnapshot {
    let map = Mapping::new(PAGES);
    let sw = start(&map, dirty_tracking, PolicyKind::Fifo);
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..PAGES).for_each(|p| fill(base + p * PAGE_SIZE, p, 3));
        for _ in 0..2 {
            (0..PAGES).for_each(|p| assert_eq!(check(base + p * PAGE_SIZE, p, 3), 0));
        }
    });
    quiesce(&sw);
    let end = shutdown(sw);
    assert_eq!(end.counters.integrity_errors, 0);
    end.counters
}

#[test]
fn silent_writes_are_counted_without_dirty_tracking_and_avoided_with_it() {
    if !uffd_available() {
        return;
    }
    let plain = read_only_passes(false);
    assert!(plain.silent_writes > 500, "{plain:?}");
    assert_eq!(plain.silent_writes_avoided, 0);
    let mitigated = read_only_passes(true);
    assert_eq!(mitigated.silent_writes, 0);
    assert!(mitigated.silent_writes_avoided > 500, "{mitigated:?}");
    // The mitigation writes fewer pages to the store.
    assert!(
        mitigated.evictions < plain.evictions,
        "{mitigated:?} vs {plain:?}"
    );
}

#[test]
fn sequential_reads_of_randomly_evicted_pages_show_decayed_sequentiality() {
    if !uffd_available() {
        return;
    }
    let run = |order: Vec<usize>| {
        let map = Mapping::new(PAGES);
        let sw = start(&map, true, PolicyKind::Fifo);
        let base = map.addr;
        vcpus(&sw, 1, move |_| {
            order.iter().for_each(|&p| fill(base + p * PAGE_SIZE, p, 9));
            (0..PAGES).for_each(|p| assert_eq!(check(base + p * PAGE_SIZE, p, 9), 0));
        });
        shutdown(sw).counters
    };
    // Filled in order: fifo evicts in order, slots follow pages.
    let seq = run((0..PAGES).collect());
    // Filled in random order: fifo evicts in that order, slots are scattered.
    let scattered = run(shuffled(PAGES, 5));
    assert!(seq.sequential_store_reads > 500, "{seq:?}");
    assert!(scattered.sequential_store_reads > 500, "{scattered:?}");
    let ratio = |c: &status::CounterSnapshot| {
        c.decayed_sequential_reads as f64 / c.sequential_store_reads as f64
    };
    assert!(ratio(&seq) < 0.2, "{seq:?}");
    assert!(ratio(&scattered) > 0.8, "{scattered:?}");
}

#[test]
fn install_page_replaces_a_stale_store_read() {
    if !uffd_available() {
        return;
    }
    let map = Mapping::new(PAGES);
    let sw = start(&map, true, PolicyKind::Fifo);
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..PAGES).for_each(|p| fill(base + p * PAGE_SIZE, p, 1))
    });
    quiesce(&sw);
    // Page 0 was evicted first (fifo, sequential fill).
    let before = sw.status().counters;
    let mut data = [0u8; PAGE_SIZE];
    data.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 7) as u8);
    assert_eq!(sw.install_page(base, &data), Installed::Yes);
    // Misaligned or outside: refused.
    assert_eq!(sw.install_page(base + 8, &data), Installed::No);
    assert_eq!(
        sw.install_page(base + PAGES * PAGE_SIZE, &data),
        Installed::No
    );
    // Now resident: a second install is refused, the caller writes itself.
    assert_eq!(sw.install_page(base, &data), Installed::No);
    let got = vcpus_read(&sw, base);
    assert_eq!(got[..], data[..]);
    let after = sw.status().counters;
    assert_eq!(after.false_reads_avoided - before.false_reads_avoided, 1);
    assert_eq!(after.swapin_store, before.swapin_store, "no store read");
    // Every other page still has its own content.
    vcpus(&sw, 1, move |_| {
        (1..PAGES).for_each(|p| assert_eq!(check(base + p * PAGE_SIZE, p, 1), 0))
    });
    assert_eq!(shutdown(sw).counters.integrity_errors, 0);
}

/// Reads a page on a registered vCPU thread.
fn vcpus_read(sw: &Swapper, addr: usize) -> Vec<u8> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = out.clone();
    vcpus(sw, 1, move |_| {
        let mut v = vec![0u8; PAGE_SIZE];
        // SAFETY: `addr` is a page of the test mapping, alive for the test.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, v.as_mut_ptr(), PAGE_SIZE) };
        *o.lock().unwrap() = v;
    });
    let v = out.lock().unwrap().clone();
    v
}

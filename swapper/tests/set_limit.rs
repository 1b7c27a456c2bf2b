//! Changing the resident limit while the swapper runs (`Swapper::set_limit`):
//! lowering it evicts down to the new limit, raising it again lets a re-read
//! keep more pages resident, and out-of-range or passive cases are refused.

mod common;

use common::*;
use swapper::*;

fn start(map: &Mapping, cfg: SwapperConfig) -> Swapper {
    // SAFETY: every test keeps its mapping alive until the swapper is gone.
    unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap()
}

fn cfg(limit_pages: u64) -> SwapperConfig {
    SwapperConfig {
        limit_bytes: limit_pages * PAGE_SIZE as u64,
        checksums: true,
        ..Default::default()
    }
}

#[test]
fn lowering_the_limit_evicts_and_raising_it_gives_room_back() {
    if !uffd_available() {
        return;
    }
    let n = 2048;
    let map = Mapping::new(n);
    let sw = start(&map, cfg(1024));
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| fill(base + p * PAGE_SIZE, p, 5))
    });
    quiesce(&sw);
    let before = sw.status();
    assert_eq!(before.limit_pages, 1024);
    assert!(before.resident_pages > 512, "{}", before.resident_pages);

    let limits = sw.set_limit(256 * PAGE_SIZE as u64).unwrap();
    assert_eq!(limits.limit, 256);
    assert_eq!(sw.status().limit_pages, 256);
    // The evictor brings residency under the new limit by itself.
    quiesce(&sw);
    let low = sw.status();
    assert!(low.resident_pages <= 256, "{}", low.resident_pages);
    assert!(low.counters.evictions > before.counters.evictions);

    // Every page still reads back what was written.
    vcpus(&sw, 1, move |_| {
        for p in 0..n {
            assert_eq!(check(base + p * PAGE_SIZE, p, 5), 0, "page {p}");
        }
    });
    quiesce(&sw);
    assert!(sw.status().resident_pages <= 256);

    // Raised back: a re-read may keep up to the old limit resident.
    sw.set_limit(1024 * PAGE_SIZE as u64).unwrap();
    vcpus(&sw, 1, move |_| {
        for p in 0..n {
            assert_eq!(check(base + p * PAGE_SIZE, p, 5), 0, "page {p}");
        }
    });
    quiesce(&sw);
    let high = sw.status();
    assert_eq!(high.limit_pages, 1024);
    assert!(high.resident_pages > 256, "{}", high.resident_pages);
    assert_eq!(high.counters.integrity_errors, 0);
    shutdown(sw);
}

#[test]
fn limits_outside_the_range_are_refused() {
    if !uffd_available() {
        return;
    }
    let map = Mapping::new(1024);
    let sw = start(&map, cfg(512));
    let page = PAGE_SIZE as u64;
    let e = sw.set_limit(513 * page).unwrap_err().to_string();
    assert!(e.contains("starting limit"), "{e}");
    assert!(sw.set_limit(15 * page).is_err());
    assert_eq!(sw.status().limit_pages, 512);
    assert_eq!(sw.set_limit(16 * page).unwrap().limit, 16);
    shutdown(sw);

    // Passive: everything fits, nothing is registered.
    let map = Mapping::new(64);
    let sw = start(&map, cfg(512));
    assert!(sw.status().passive);
    let e = sw.set_limit(32 * page).unwrap_err().to_string();
    assert!(e.contains("passive"), "{e}");
    shutdown(sw);
}

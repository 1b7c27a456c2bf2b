//! Discard, zero pages, silent-write avoidance, first touch, slack,
//! prefetch, policies under a skewed pattern, external MADV_DONTNEED.

mod common;

use common::*;
use std::time::Instant;
use swapper::*;

fn start(map: &Mapping, cfg: SwapperConfig) -> Swapper {
    // SAFETY: every test keeps its mapping alive until the swapper is gone.
    unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap()
}

fn pages_cfg(limit_pages: u64) -> SwapperConfig {
    SwapperConfig {
        limit_bytes: limit_pages * PAGE_SIZE as u64,
        checksums: true,
        ..Default::default()
    }
}

#[test]
fn discard_returns_memory_and_frees_slots() {
    if !uffd_available() {
        return;
    }
    let n = 1024;
    let map = Mapping::new(n);
    let sw = start(
        &map,
        SwapperConfig {
            policy: PolicyKind::Clock,
            ..pages_cfg(256)
        },
    );
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| fill(base + p * PAGE_SIZE, p, 3))
    });
    quiesce(&sw);
    let before = sw.status();
    assert!(before.store_slots > 500);
    // Balloon inflate: pages 100..600.
    let d = sw.discard(map.page(100), 500 * PAGE_SIZE).unwrap();
    assert_eq!(d.pages, 500);
    let st = sw.status();
    assert_eq!(st.pages.ballooned, 500);
    assert_eq!(st.store_slots, before.store_slots - d.slots_freed);
    assert!(d.slots_freed > 0);
    assert_eq!(
        st.committed_pages,
        before.committed_pages - d.committed_released
    );
    // Memory is really gone from the discarded range.
    let pm = swapper::pagemap::Pagemap::open().unwrap();
    assert_eq!(pm.count_real(map.page(100), map.page(600)).unwrap(), 0);
    // The balloon path raises no REMOVE event (nothing for faults to wait on).
    assert_eq!(sw.status().counters.remove_events, 0);
    // Discarded pages read zeros; the rest kept their content.
    vcpus(&sw, 1, move |_| {
        for p in 0..n {
            if (100..600).contains(&p) {
                assert_eq!(touch_read(base + p * PAGE_SIZE), 0, "page {p}");
            } else {
                assert_eq!(check(base + p * PAGE_SIZE, p, 3), 0, "page {p}");
            }
        }
    });
    assert!(sw.status().pages.ballooned < 500);
    shutdown(sw);
}

#[test]
fn external_madvise_is_seen_as_remove() {
    if !uffd_available() {
        return;
    }
    let n = 512;
    let map = Mapping::new(n);
    let sw = start(&map, pages_cfg(128));
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| fill(base + p * PAGE_SIZE, p, 4))
    });
    let slots = sw.status().store_slots;
    // Someone else (not the swapper) drops the whole range.
    // SAFETY: the test's own mapping; content is discarded on purpose.
    let r = unsafe {
        libc::madvise(
            base as *mut libc::c_void,
            n * PAGE_SIZE,
            libc::MADV_DONTNEED,
        )
    };
    assert_eq!(r, 0);
    // madvise returns once a handler has read the event; processing follows.
    settle(&sw, |st| {
        st.counters.remove_events >= 1 && st.store_slots == 0
    })
    .unwrap_or_else(|e| panic!("stale store copies not freed (had {slots}): {e}"));
    vcpus(&sw, 1, move |_| {
        for p in 0..n {
            assert_eq!(touch_read(base + p * PAGE_SIZE), 0, "page {p}");
        }
    });
    assert!(sw.fatal_errors().is_empty());
    shutdown(sw);
}

#[test]
fn zero_pages_are_not_stored() {
    if !uffd_available() {
        return;
    }
    let n = 1024;
    let map = Mapping::new(n);
    let sw = start(&map, pages_cfg(128));
    let base = map.addr;
    // Written, but with zeros: real pages whose content is zero.
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| touch_write(base + p * PAGE_SIZE, 0))
    });
    settle(&sw, |st| st.counters.zero_pages > 700).unwrap_or_else(|e| panic!("{e}"));
    let st = sw.status();
    assert_eq!(st.store_slots, 0, "{st:?}");
    assert_eq!(st.store_bytes, 0);
    assert_eq!(st.counters.evictions, 0);
    assert_eq!(st.counters.false_reads, 0, "nothing came from the store");
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| assert_eq!(touch_read(base + p * PAGE_SIZE), 0))
    });
    shutdown(sw);
}

#[test]
fn pages_zeroed_after_coming_back_from_the_store_are_false_reads() {
    if !uffd_available() {
        return;
    }
    let n = 1024;
    let map = Mapping::new(n);
    let sw = start(&map, pages_cfg(128));
    let base = map.addr;
    // One non-zero word per page: stored when evicted.
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| touch_write(base + p * PAGE_SIZE, p as u64 + 1))
    });
    settle(&sw, |st| st.counters.evictions > 700).unwrap_or_else(|e| panic!("{e}"));
    // Read each back (most from the store), then zero it, as a guest
    // freeing memory would: the read was for nothing.
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| {
            assert_eq!(touch_read(base + p * PAGE_SIZE), p as u64 + 1);
            touch_write(base + p * PAGE_SIZE, 0);
        })
    });
    settle(&sw, |st| st.counters.false_reads > 500).unwrap_or_else(|e| panic!("{e}"));
    let c = sw.status().counters;
    assert!(c.false_reads <= c.zero_pages && c.false_reads <= c.swapin_store + c.swapin_minor);
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| assert_eq!(touch_read(base + p * PAGE_SIZE), 0))
    });
    assert!(sw.fatal_errors().is_empty());
    shutdown(sw);
}

#[test]
fn rereading_clean_pages_writes_nothing() {
    if !uffd_available() {
        return;
    }
    let n = 2048;
    let map = Mapping::new(n);
    let sw = start(
        &map,
        SwapperConfig {
            slack_bytes: Some(0),
            ..pages_cfg(256)
        },
    );
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| fill(base + p * PAGE_SIZE, p, 6))
    });
    let a = sw.status();
    // Two read-only passes: every page comes back clean (write-protected)
    // and is dropped again without a store write.
    for _ in 0..2 {
        vcpus(&sw, 1, move |_| {
            for p in 0..n {
                assert_eq!(check(base + p * PAGE_SIZE, p, 6), 0);
            }
        });
    }
    let b = sw.status();
    let written = b.counters.evictions - a.counters.evictions;
    let silent = b.counters.silent_writes_avoided - a.counters.silent_writes_avoided;
    eprintln!("read passes: {written} store writes, {silent} silent writes avoided");
    // Only the pages that were resident and dirty after the fill get written.
    assert!(written <= b.limit_pages, "{written}");
    assert!(
        silent >= 2 * n as u64 - 2 * b.limit_pages - written,
        "{silent}"
    );
    assert_eq!(
        b.counters.wp_faults, a.counters.wp_faults,
        "no writes, no WP faults"
    );
    shutdown(sw);
}

#[test]
fn first_touch_takes_no_fault_when_memory_fits() {
    if !uffd_available() {
        return;
    }
    let n = 8192;
    let map = Mapping::new(n);
    let sw = start(&map, pages_cfg(16384));
    let base = map.addr;
    vcpus(&sw, 2, move |t| {
        for p in (0..n).filter(|p| p % 2 == t) {
            touch_write(base + p * PAGE_SIZE, p as u64);
            assert_eq!(touch_read(base + p * PAGE_SIZE), p as u64);
        }
    });
    let st = sw.status();
    assert!(st.passive, "fits within the limit: nothing registered");
    assert_eq!(st.counters.faults, 0, "{st:?}");
    settle(&sw, |st| st.resident_pages == n as u64).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sw.status().committed_pages, n as u64);
    // Discard still returns memory.
    let d = sw.discard(base, n / 2 * PAGE_SIZE).unwrap();
    assert_eq!(d.pages, n as u64 / 2);
    assert_eq!(sw.scanned_resident_pages().unwrap(), n as u64 / 2);
    assert_eq!(touch_read(base), 0);
    let st = shutdown(sw);
    assert_eq!(st.counters.evictions, 0);
    // One page more than limit + slack: active (registered, zero-map pool).
    let map = Mapping::new(16384 + 1024 + 1);
    let sw = start(&map, pages_cfg(16384));
    assert!(!sw.status().passive);
    shutdown(sw);
}

/// First-touch writes over 4x the limit, as fast as one thread can go:
/// resident memory must stay within limit + slack. Prints the measured
/// overshoot above the limit.
#[test]
fn slack_bounds_residency_under_first_touch_storm() {
    if !uffd_available() {
        return;
    }
    let n = 16384;
    let map = Mapping::new(n);
    let sw = start(
        &map,
        SwapperConfig {
            checksums: false,
            ..pages_cfg(4096)
        },
    );
    let sampler = RssSampler::start(&sw);
    let base = map.addr;
    let t = Instant::now();
    vcpus(&sw, 2, move |i| {
        for p in (0..n).filter(|p| p % 2 == i) {
            touch_write(base + p * PAGE_SIZE, 1 + p as u64);
        }
    });
    let elapsed = t.elapsed();
    let st = sw.status();
    let bound = st.limit_pages + st.slack_pages;
    let rss = sampler.assert_within(bound);
    eprintln!(
        "first-touch storm: {n} pages in {elapsed:?}; zero faults {} (pool hits {}); \
         limit {} slack {}; peak committed {} (+{} over limit); sampled max {:?}",
        st.counters.swapin_zero,
        n as u64 - st.counters.swapin_zero,
        st.limit_pages,
        st.slack_pages,
        st.peak_resident_pages,
        st.peak_resident_pages.saturating_sub(st.limit_pages),
        rss,
    );
    assert!(st.peak_resident_pages <= bound);
    assert_eq!(st.limit_overshoots, 0);
    vcpus(&sw, 1, move |_| {
        for p in 0..n {
            assert_eq!(touch_read(base + p * PAGE_SIZE), 1 + p as u64);
        }
    });
    shutdown(sw);
}

#[test]
fn strict_limit_with_zero_slack() {
    if !uffd_available() {
        return;
    }
    let n = 4096;
    let map = Mapping::new(n);
    let sw = start(
        &map,
        SwapperConfig {
            slack_bytes: Some(0),
            policy: PolicyKind::Random,
            ..pages_cfg(512)
        },
    );
    let sampler = RssSampler::start(&sw);
    let base = map.addr;
    vcpus(&sw, 2, move |i| {
        for p in shuffled(n, 8 + i as u64).into_iter().filter(|p| p % 2 == i) {
            fill(base + p * PAGE_SIZE, p, 8);
        }
    });
    let st = sw.status();
    sampler.assert_within(512);
    assert!(st.peak_resident_pages <= 512, "{st:?}");
    shutdown(sw);
}

fn sequential_reread(prefetch: u32, mode: PrefetchMode) -> SwapperStatus {
    let n = 4096;
    let map = Mapping::new(n);
    let sw = start(
        &map,
        SwapperConfig {
            prefetch,
            prefetch_mode: mode,
            ..pages_cfg(512)
        },
    );
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| fill(base + p * PAGE_SIZE, p, 9))
    });
    let a = sw.status();
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| assert_eq!(check(base + p * PAGE_SIZE, p, 9), 0))
    });
    let b = sw.status();
    let trace = sw.drain_trace();
    shutdown(sw);
    if prefetch > 0 {
        assert!(trace.iter().any(|r| r.prefetched > 0));
        assert_eq!(
            trace.iter().any(|r| r.path == FaultPath::PrefetchHit),
            mode == PrefetchMode::Cache
        );
    }
    let mut d = b.clone();
    d.counters.faults -= a.counters.faults;
    d.counters.swapin_store -= a.counters.swapin_store;
    d.counters.prefetch_hits -= a.counters.prefetch_hits;
    d.counters.prefetched -= a.counters.prefetched;
    d
}

#[test]
fn prefetch_serves_sequential_faults() {
    if !uffd_available() {
        return;
    }
    let off = sequential_reread(0, PrefetchMode::Map);
    let cache = sequential_reread(16, PrefetchMode::Cache);
    let map = sequential_reread(16, PrefetchMode::Map);
    eprintln!(
        "sequential re-read of 4096 evicted pages: no prefetch: {} faults ({} store); \
         prefetch 16 cache: {} faults ({} store, {} prefetch hits, {} wasted); \
         prefetch 16 map: {} faults ({} store, {} pages prefetched)",
        off.counters.faults,
        off.counters.swapin_store,
        cache.counters.faults,
        cache.counters.swapin_store,
        cache.counters.prefetch_hits,
        cache.counters.prefetch_wasted,
        map.counters.faults,
        map.counters.swapin_store,
        map.counters.prefetched,
    );
    assert_eq!(off.counters.prefetch_hits, 0);
    // Cache: every page still faults, but nearly all without store I/O.
    assert!(cache.counters.prefetch_hits > 3000, "{cache:?}");
    assert!(cache.counters.swapin_store * 4 < off.counters.swapin_store);
    // Map: about one fault per cluster.
    assert!(map.counters.faults * 8 < off.counters.faults, "{map:?}");
    assert!(map.counters.prefetched > 3000);
    for s in [&off, &cache, &map] {
        assert_eq!(s.counters.integrity_errors, 0);
    }
}

/// 90% of reads go to 10% of the pages, memory is 4x the limit: the
/// access-aware clock must take fewer faults than fifo.
fn skewed(policy: PolicyKind) -> (u64, u64) {
    let n = 8192;
    let map = Mapping::new(n);
    let sw = start(
        &map,
        SwapperConfig {
            policy,
            checksums: false,
            ..pages_cfg(2048)
        },
    );
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        (0..n).for_each(|p| touch_write(base + p * PAGE_SIZE, p as u64))
    });
    let a = sw.status();
    vcpus(&sw, 1, move |_| {
        let mut x = 77u64;
        let hot = n / 10;
        for _ in 0..300_000 {
            x = mix(x);
            let p = if x % 10 < 9 {
                (x >> 8) as usize % hot
            } else {
                hot + (x >> 8) as usize % (n - hot)
            };
            assert_eq!(touch_read(base + p * PAGE_SIZE), p as u64);
        }
    });
    let b = sw.status();
    shutdown(sw);
    (
        b.counters.swapin_store - a.counters.swapin_store,
        b.counters.swapin_minor - a.counters.swapin_minor,
    )
}

#[test]
fn clock_takes_fewer_faults_than_fifo_on_skewed_access() {
    if !uffd_available() {
        return;
    }
    let (fifo_major, fifo_minor) = skewed(PolicyKind::Fifo);
    let (clock_major, clock_minor) = skewed(PolicyKind::Clock);
    let (random_major, _) = skewed(PolicyKind::Random);
    let ratio = (clock_major + clock_minor) as f64 / (fifo_major + fifo_minor) as f64;
    eprintln!(
        "90/10: fifo {fifo_major} faults, random {random_major}, clock {} ({clock_major} major + \
         {clock_minor} minor): clock/fifo = {ratio:.2}",
        clock_major + clock_minor
    );
    assert!(clock_major + clock_minor < fifo_major, "ratio {ratio}");
}

/// One handler thread, two vCPUs, the balloon discarding and someone else
/// madvising at the same time: REMOVE events arrive while faults are in
/// flight (every page-table ioctl answers EAGAIN until they are read).
/// Nothing may hang, no page may show another page's data, and the
/// accounting must add up afterwards. The external madvise is paced by the
/// vCPUs' progress: a tight madvise loop keeps a REMOVE pending at all times,
/// which starves every userfaultfd page-table operation (kernel behaviour).
#[test]
fn concurrent_discards_madvise_and_faults() {
    if !uffd_available() {
        return;
    }
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let n = 2048;
    let map = Mapping::new(n);
    let sw = std::sync::Arc::new(start(
        &map,
        SwapperConfig {
            handler_threads: 1,
            policy: PolicyKind::Clock,
            ..pages_cfg(256)
        },
    ));
    let base = map.addr;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let progress = std::sync::Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        let (sw2, stop2) = (sw.clone(), stop.clone());
        s.spawn(move || {
            let mut x = 5u64;
            while !stop2.load(Ordering::Relaxed) {
                x = mix(x);
                let p = (x % n as u64) as usize;
                let len = 1 + (x >> 20) as usize % 64;
                sw2.discard(base + p * PAGE_SIZE, len.min(n - p) * PAGE_SIZE)
                    .unwrap();
            }
        });
        let (stop3, prog3) = (stop.clone(), progress.clone());
        s.spawn(move || {
            let mut x = 9u64;
            let mut next = 0;
            while !stop3.load(Ordering::Relaxed) {
                if prog3.load(Ordering::Relaxed) < next {
                    std::thread::yield_now();
                    continue;
                }
                next += 200;
                x = mix(x);
                let p = (x % n as u64) as usize;
                let len = 1 + (x >> 20) as usize % 64;
                // SAFETY: the test's own mapping; discarding is the point.
                let r = unsafe {
                    libc::madvise(
                        (base + p * PAGE_SIZE) as *mut libc::c_void,
                        len.min(n - p) * PAGE_SIZE,
                        libc::MADV_DONTNEED,
                    )
                };
                assert_eq!(r, 0);
            }
        });
        let prog = progress.clone();
        vcpus(&sw, 2, move |t| {
            let mut x = 13 + t as u64;
            for i in 0..50_000u64 {
                x = mix(x);
                let p = (x % n as u64) as usize;
                let addr = base + p * PAGE_SIZE;
                let v = touch_read(addr);
                assert!(v == 0 || v >> 32 == p as u64, "page {p} holds {v:#x}");
                touch_write(addr, (p as u64) << 32 | i);
                prog.fetch_add(1, Ordering::Relaxed);
            }
        });
        stop.store(true, Ordering::Relaxed);
    });
    let sw = std::sync::Arc::try_unwrap(sw).ok().unwrap();
    quiesce(&sw);
    let st = sw.status();
    assert_consistent(&st);
    assert!(st.counters.remove_events > 100, "{st:?}");
    assert!(st.counters.discarded_pages > 1000, "{st:?}");
    assert_eq!(st.fatal_errors, 0);
    eprintln!(
        "concurrent discard: {} REMOVE events, {} EAGAIN retries, {} discarded pages",
        st.counters.remove_events, st.counters.eagain_retries, st.counters.discarded_pages
    );
    shutdown(sw);
}

/// Guest RAM split in two regions (below and above a hole), one swapper,
/// one limit for both.
#[test]
fn two_regions_share_one_limit() {
    if !uffd_available() {
        return;
    }
    let (lo, hi) = (Mapping::new(1536), Mapping::new(2560));
    // SAFETY: both mappings outlive the swapper.
    let sw = unsafe {
        Swapper::start(
            SwapperConfig {
                slack_bytes: Some(0),
                ..pages_cfg(512)
            },
            &[hi.region(), lo.region()],
        )
    }
    .unwrap();
    let (a, b) = (lo.addr, hi.addr);
    vcpus(&sw, 2, move |t| {
        let (base, n) = if t == 0 { (a, 1536) } else { (b, 2560) };
        for seed in [1u64, 2] {
            for p in shuffled(n, seed + t as u64) {
                fill(base + p * PAGE_SIZE, p, seed + 10 * t as u64);
            }
        }
        for p in 0..n {
            assert_eq!(check(base + p * PAGE_SIZE, p, 2 + 10 * t as u64), 0);
        }
    });
    let st = sw.status();
    assert_eq!(st.region_pages, 4096);
    assert!(st.peak_resident_pages <= 512, "{st:?}");
    assert!(st.counters.evictions > 3000);
    // Page indices run through the regions in address order.
    let regions = sw.regions();
    assert!(regions[0].addr < regions[1].addr);
    let first = regions[0].len / PAGE_SIZE;
    let trace = sw.drain_trace();
    for r in &trace {
        let want = match r.page as usize {
            p if p < first => regions[0].addr + p * PAGE_SIZE,
            p => regions[1].addr + (p - first) * PAGE_SIZE,
        };
        assert_eq!(r.addr as usize, want, "{r:?}");
    }
    assert!(trace.iter().any(|r| (r.page as usize) < first));
    assert!(trace.iter().any(|r| (r.page as usize) >= first));
    shutdown(sw);
}

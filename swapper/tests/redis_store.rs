//! The Redis store against real `redis-server`s on loopback (started and
//! killed by each test, see `base::redis_server`): round trip, batches,
//! corruption behind the store's back, a server killed mid-run (writes keep
//! their pages resident, reads poison), reconnection, key cleanup after the
//! run and after errors, the sweep of a dead run's keys, and a three-node
//! cluster spreading pages by hash slot.
//!
//! No skips: without `redis-server` these tests fail, saying to run
//! `scripts/setup.sh`.

mod common;

use base::redis_server::{RedisCluster, RedisServer};
use common::*;
use redis::Commands;
use std::sync::{Arc, Mutex};
use swapper::slots::Slot;
use swapper::store::redis::keys::{RunId, REGISTRY};
use swapper::store::redis::RedisStore;
use swapper::store::{Store, StoreError};
use swapper::*;

const PAGES: usize = 2048;
/// Every page key of every run (the registry key has one colon fewer).
const PAGE_KEYS: &str = "swaplab:*:*";

fn page(seed: u8) -> Vec<u8> {
    (0..PAGE_SIZE)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn client(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn registry(server: &RedisServer) -> Vec<String> {
    let mut c = client(&server.url());
    c.smembers(REGISTRY).unwrap()
}

/// Replaces the value of every page key on `server` by `value`.
fn overwrite_all(server: &RedisServer, value: &[u8]) -> usize {
    let keys = server.keys(PAGE_KEYS);
    let mut c = client(&server.url());
    for k in &keys {
        let () = c.set(k, value).unwrap();
    }
    keys.len()
}

/// Writes `pages` to slots from `first` on, in one batch.
fn write_pages(store: &RedisStore, first: u32, pages: &[Vec<u8>]) {
    let batch: Vec<(Slot, &[u8])> = (first..)
        .zip(pages)
        .map(|(s, p)| (Slot(s), &p[..]))
        .collect();
    store.write_batch(&batch).unwrap();
}

/// Reads `n` pages from slots from `first` on, in one batch.
fn read_pages(store: &RedisStore, first: u32, n: usize) -> Vec<Vec<u8>> {
    let mut bufs = vec![vec![0u8; PAGE_SIZE]; n];
    let mut reads: Vec<(Slot, &mut [u8])> = (first..)
        .zip(bufs.iter_mut())
        .map(|(s, b)| (Slot(s), &mut b[..]))
        .collect();
    store.read_batch(&mut reads).unwrap();
    bufs
}

#[test]
fn round_trip_batches_discard_and_close() {
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url(), 256).unwrap();
    assert_eq!(store.kind(), "redis");
    assert_eq!(registry(&server), [store.run().as_str()]);
    let mut buf = vec![0u8; PAGE_SIZE];
    assert!(matches!(
        store.read(Slot(0), &mut buf),
        Err(StoreError::Empty(0))
    ));
    store.write(Slot(0), &page(1)).unwrap();
    store.read(Slot(0), &mut buf).unwrap();
    assert_eq!(buf, page(1));
    // One pipeline each way.
    let pages: Vec<Vec<u8>> = (0..64).map(|i| page(i as u8 + 10)).collect();
    write_pages(&store, 100, &pages);
    assert_eq!(read_pages(&store, 100, 64), pages);
    assert_eq!(store.bytes_used(), 65 * PAGE_SIZE as u64);
    assert_eq!(server.keys(PAGE_KEYS).len(), 65);
    // Overwrite, discard, bounds.
    store.write(Slot(0), &page(99)).unwrap();
    store.read(Slot(0), &mut buf).unwrap();
    assert_eq!(buf, page(99));
    store.discard(Slot(0));
    assert!(matches!(
        store.read(Slot(0), &mut buf),
        Err(StoreError::Empty(0))
    ));
    assert_eq!(store.bytes_used(), 64 * PAGE_SIZE as u64);
    assert!(matches!(
        store.write(Slot(256), &page(0)),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.write(Slot(1), &page(0)[..100]),
        Err(StoreError::BadBuffer(100))
    ));
    // One node, named by URL.
    let nodes = store.nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node, server.url());
    assert_eq!(nodes[0].pages, 64);
    store.close().unwrap();
    assert!(server.keys(PAGE_KEYS).is_empty());
    assert!(registry(&server).is_empty());
}

#[test]
fn wrong_or_missing_values_are_errors_never_data() {
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url(), 16).unwrap();
    store.write(Slot(3), &page(3)).unwrap();
    store.write(Slot(4), &page(4)).unwrap();
    let mut c = client(&server.url());
    let () = c.set(store.run().key(3), b"short").unwrap();
    let () = c.del(store.run().key(4)).unwrap();
    let mut buf = vec![0xaa; PAGE_SIZE];
    let e = store.read(Slot(3), &mut buf).unwrap_err().to_string();
    assert!(e.contains("5 bytes") && e.contains("not one page"), "{e}");
    let e = store.read(Slot(4), &mut buf).unwrap_err().to_string();
    assert!(e.contains("lost key"), "{e}");
    assert!(buf.iter().all(|&b| b == 0xaa), "nothing copied out");
    drop(store);
    assert!(server.keys(PAGE_KEYS).is_empty(), "dropped store left keys");
}

#[test]
fn bad_urls_and_dead_servers_are_clear_errors() {
    let e = RedisStore::open("http://127.0.0.1:1", 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("redis://"), "{e}");
    let mut server = RedisServer::start();
    let url = server.url().replace("127.0.0.1", "user:secret@127.0.0.1");
    server.kill();
    let e = RedisStore::open(&url, 8).unwrap_err().to_string();
    assert!(e.contains(&server.url()) && e.contains("connect"), "{e}");
    assert!(!e.contains("secret"), "credentials in a message: {e}");
}

#[test]
fn a_hung_server_times_out_and_the_store_recovers_when_it_answers() {
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url(), 16).unwrap();
    store.write(Slot(2), &page(2)).unwrap();
    server.pause();
    let mut buf = vec![0u8; PAGE_SIZE];
    let t = std::time::Instant::now();
    let read = store.read(Slot(2), &mut buf);
    let write = store.write(Slot(3), &page(3));
    let took = t.elapsed();
    server.resume();
    let e = read.unwrap_err().to_string();
    assert!(
        e.contains(&server.url()) && e.contains("read of slot 2"),
        "{e}"
    );
    assert!(write.is_err(), "a write to a hung server succeeded");
    // Two requests, each tried twice with a 1 s timeout.
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    // Answering again: fresh connections, the stored page intact.
    store.read(Slot(2), &mut buf).unwrap();
    assert_eq!(buf, page(2));
    store.write(Slot(3), &page(3)).unwrap();
}

#[test]
fn the_next_run_sweeps_the_keys_of_a_dead_run() {
    let server = RedisServer::start();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let host = swapper::store::redis::keys::host_tag();
    let dead = RunId::new(&host, dead_pid, 1);
    let alive = RunId::new(&host, std::process::id(), 2);
    let elsewhere = RunId::new("some.other.host", dead_pid, 3);
    let mut c = client(&server.url());
    for run in [&dead, &alive, &elsewhere] {
        for slot in 0..700 {
            let () = c.set(run.key(slot), &page(1)[..]).unwrap();
        }
        let () = c.sadd(REGISTRY, run.as_str()).unwrap();
    }
    let store = RedisStore::open(&server.url(), 8).unwrap();
    assert!(
        server.keys(&dead.pattern()).is_empty(),
        "dead run not swept"
    );
    assert_eq!(server.keys(&alive.pattern()).len(), 700);
    assert_eq!(server.keys(&elsewhere.pattern()).len(), 700);
    let mut reg = registry(&server);
    reg.sort();
    let mut want = vec![
        alive.as_str().to_string(),
        elsewhere.as_str().to_string(),
        store.run().as_str().to_string(),
    ];
    want.sort();
    assert_eq!(reg, want);
}

#[test]
fn cluster_spreads_pages_over_three_nodes() {
    let cluster = RedisCluster::start(3);
    let store = RedisStore::open(&cluster.url(), 1024).unwrap();
    let pages: Vec<Vec<u8>> = (0..300).map(|i| page(i as u8)).collect();
    for (n, chunk) in pages.chunks(50).enumerate() {
        write_pages(&store, n as u32 * 50, chunk);
    }
    assert_eq!(read_pages(&store, 0, 300), pages);
    let per_node = cluster.keys_per_node(PAGE_KEYS);
    let reported: Vec<u64> = store.nodes().unwrap().iter().map(|n| n.pages).collect();
    eprintln!("pages per node: {per_node:?} (store says {reported:?})");
    assert_eq!(per_node.iter().sum::<usize>(), 300);
    assert!(per_node.iter().all(|&n| n > 50), "{per_node:?}");
    let mut sorted_reported = reported.clone();
    sorted_reported.sort_unstable();
    let mut sorted_seen: Vec<u64> = per_node.iter().map(|&n| n as u64).collect();
    sorted_seen.sort_unstable();
    assert_eq!(sorted_reported, sorted_seen);
    drop(store);
    assert_eq!(cluster.keys_per_node(PAGE_KEYS), [0, 0, 0]);
}

fn fill_range(sw: &Swapper, base: usize, pages: std::ops::Range<usize>, seed: u64) {
    vcpus(sw, 1, move |_| {
        for p in pages.clone() {
            fill(base + p * PAGE_SIZE, p, seed);
        }
    });
}

fn check_range(sw: &Swapper, base: usize, pages: std::ops::Range<usize>, seed: u64) {
    vcpus(sw, 1, move |_| {
        for p in pages.clone() {
            assert_eq!(check(base + p * PAGE_SIZE, p, seed), 0, "page {p} lost");
        }
    });
}

/// A swapper over `map` on the store at `url` (512-page limit, no slack,
/// checksums, read-ahead; no fault injector: the store's own batches run),
/// fatal errors collected.
fn start_on(map: &Mapping, url: &str) -> (Swapper, Arc<Mutex<Vec<FatalError>>>) {
    let hooked: Arc<Mutex<Vec<FatalError>>> = Arc::default();
    let h = hooked.clone();
    let cfg = SwapperConfig {
        limit_bytes: 512 * PAGE_SIZE as u64,
        slack_bytes: Some(0),
        store: StoreKind::Redis { url: url.into() },
        checksums: true,
        on_fatal: Some(Arc::new(move |e: &FatalError| {
            h.lock().unwrap().push(e.clone())
        })),
        prefetch: 8,
        ..Default::default()
    };
    // SAFETY: every test drops its swapper before its mapping.
    (
        unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap(),
        hooked,
    )
}

#[test]
fn pages_round_trip_through_the_swapper_and_keys_go_at_shutdown() {
    if !uffd_available() {
        return;
    }
    let cluster = RedisCluster::start(3);
    let map = Mapping::new(PAGES);
    let (sw, _) = start_on(&map, &cluster.url());
    fill_range(&sw, map.addr, 0..PAGES, 1);
    check_range(&sw, map.addr, 0..PAGES, 1);
    let per_node = sw.store_nodes().unwrap();
    eprintln!("cluster pages per node: {per_node:?}");
    assert_eq!(per_node.len(), 3);
    assert!(per_node.iter().all(|n| n.pages > 100), "{per_node:?}");
    let st = shutdown(sw);
    assert!(st.counters.evictions > 1000, "{st:?}");
    // Sequential checks: most pages come back by batched read-ahead.
    assert!(st.counters.swapin_store > 0, "{st:?}");
    assert!(
        st.counters.swapin_store + st.counters.prefetched > 1000,
        "{st:?}"
    );
    assert_eq!(st.counters.integrity_errors, 0);
    assert_eq!(st.fatal_errors, 0);
    assert_eq!(cluster.keys_per_node(PAGE_KEYS), [0, 0, 0]);
}

#[test]
fn corrupted_pages_are_never_served_and_keys_go_after_the_error() {
    if !uffd_available() {
        return;
    }
    let server = RedisServer::start();
    let map = Mapping::new(PAGES);
    let (sw, hooked) = start_on(&map, &server.url());
    fill_range(&sw, map.addr, 0..PAGES, 5);
    settle(&sw, |s| s.pages.evicted > 1000).unwrap_or_else(|e| panic!("{e}"));
    // Page-sized garbage behind the store's back: only the checksum sees it.
    assert!(overwrite_all(&server, &page(0xee)) > 1000);
    device_read_refused(&sw, map.addr);
    let fatal = sw.fatal_errors();
    assert_eq!(fatal.len(), 1, "{fatal:?}");
    assert!(
        matches!(fatal[0].kind, FatalKind::Corruption(_)),
        "{fatal:?}"
    );
    assert!(fatal[0].poisoned);
    assert_eq!(hooked.lock().unwrap().as_slice(), fatal.as_slice());
    assert_eq!(sw.status().counters.integrity_errors, 1);
    drop(sw);
    assert!(
        server.keys(PAGE_KEYS).is_empty(),
        "keys left after a fatal error"
    );
    assert!(registry(&server).is_empty());
}

#[test]
fn a_killed_server_loses_no_page_serves_nothing_and_is_reconnected() {
    if !uffd_available() {
        return;
    }
    let mut server = RedisServer::start();
    let map = Mapping::new(PAGES);
    let (sw, _) = start_on(&map, &server.url());
    let half = PAGES / 2;
    // The first half goes out to the server (the limit is 512 pages).
    fill_range(&sw, map.addr, 0..half, 1);
    settle(&sw, |s| s.pages.evicted > 400).unwrap_or_else(|e| panic!("{e}"));
    server.kill();
    // New pages need room, but every write fails: they stay resident.
    fill_range(&sw, map.addr, half..PAGES, 2);
    check_range(&sw, map.addr, half..PAGES, 2);
    let st = sw.status();
    assert!(st.counters.write_errors > 0, "{st:?}");
    assert!(st.limit_overshoots > 0, "{st:?}");
    assert_eq!(st.fatal_errors, 0, "{st:?}");
    // An evicted page cannot be read: poisoned, with the URL in the error.
    device_read_refused(&sw, map.addr);
    let fatal = sw.fatal_errors();
    assert_eq!(fatal.len(), 1, "{fatal:?}");
    match &fatal[0].kind {
        FatalKind::StoreRead { error } => {
            assert!(error.contains(&server.url()), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // The server comes back (empty): evictions resume on fresh
    // connections, and the second half survives a trip through it.
    server.restart();
    let target = st.limit_pages;
    settle(&sw, |s| s.resident_pages <= target).unwrap_or_else(|e| panic!("{e}"));
    check_range(&sw, map.addr, half..PAGES, 2);
    // First-half pages evicted before the kill are gone from the restarted
    // server: each read is an error, never data; the rest are intact.
    let reg = sw.registry();
    let base = map.addr;
    let served: Vec<usize> = std::thread::spawn(move || {
        reg.register_current(ThreadKind::Device(8));
        (0..half)
            .filter(|&p| kernel_read(base + p * PAGE_SIZE).is_ok())
            .collect()
    })
    .join()
    .unwrap();
    let lost = half - served.len();
    assert!(lost > 1, "no first-half page was lost with the server");
    assert_eq!(
        sw.fatal_errors().len(),
        lost,
        "one fatal error per lost page"
    );
    vcpus(&sw, 1, move |_| {
        for &p in &served {
            assert_eq!(check(base + p * PAGE_SIZE, p, 1), 0, "page {p}");
        }
    });
    drop(sw);
    assert!(server.keys(PAGE_KEYS).is_empty());
}

#[test]
fn a_remote_store_connects_by_name_under_its_seccomp_filter() {
    let server = RedisServer::start();
    let url = format!("redis://localhost:{}", server.port());
    // What a fault handler or the evictor of a Redis store does, in a thread
    // with their filter: a forbidden syscall would end this test process.
    let done = std::thread::spawn(move || {
        seccomp::apply(seccomp::ThreadClass::SwapperRemote).unwrap();
        let store = RedisStore::open(&url, 4).unwrap();
        store.write(Slot(1), &page(7)).unwrap();
        let mut buf = vec![0u8; PAGE_SIZE];
        store.read(Slot(1), &mut buf).unwrap();
        assert_eq!(buf, page(7));
        store.close().unwrap();
    })
    .join();
    assert!(done.is_ok());
    assert!(server.keys(PAGE_KEYS).is_empty());
}

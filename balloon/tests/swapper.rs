//! The balloon releasing through a real userfaultfd host swapper: inflating gives
//! resident pages and store slots back, deflated pages read zeros, the rest of
//! guest memory keeps its content.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use balloon::queues::Role;
use balloon::SwapperReleaser;
use common::*;
use swapper::{GuestRegion, Swapper, SwapperConfig, ThreadKind};
use vmm::memory::{create_guest_memory, GuestMemoryExt, RegionSpec};

/// Whether this host can run userfaultfd tests; says why not.
fn uffd_available() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    let ok = std::path::Path::new("/dev/userfaultfd").exists() || root;
    if !ok {
        base::tier::skip(
            base::tier::Tier::Userfaultfd,
            "no /dev/userfaultfd and not root",
        );
    }
    ok
}

/// Waits until the evictor has brought residency down to its target.
fn quiesce(sw: &Swapper) {
    let t = Instant::now();
    loop {
        let st = sw.status();
        if st.resident_pages <= st.limit_pages - st.headroom_pages {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "never idle: {st:?}");
        std::thread::yield_now();
    }
}

/// Inflates `pfns` in buffers of at most 256 PFNs, like the Linux driver.
fn balloon_pages(rig: &mut Rig, role: Role, pfns: &[u32]) {
    for chunk in pfns.chunks(256) {
        let before = rig.h.metrics();
        let len = rig.write_pfns(BUFFERS, chunk);
        rig.q(role).add(&[(BUFFERS, len, false)]);
        rig.q(role).kick();
        rig.wait("a batch", |h| {
            let m = h.metrics();
            m.inflate_batches + m.deflate_batches > before.inflate_batches + before.deflate_batches
        });
    }
}

#[test]
fn inflating_through_the_swapper_frees_residency_and_store_slots() {
    if !uffd_available() {
        return;
    }
    let mem = leaked_memory(create_guest_memory(&[RegionSpec::new(0, RAM)]).unwrap());
    let regions = mem.host_regions();
    let cfg = SwapperConfig {
        limit_bytes: 4 << 20,
        ..Default::default()
    };
    let guest: Vec<GuestRegion> = regions
        .iter()
        .map(|r| GuestRegion {
            addr: r.host_addr,
            len: r.len,
        })
        .collect();
    // SAFETY: the guest memory is private anonymous RW memory, leaked for the
    // whole test (so mapped until after the swapper is shut down), and reached
    // only through vm-memory's volatile accesses.
    let sw = Arc::new(unsafe { Swapper::start(cfg, &guest) }.unwrap());
    assert!(!sw.status().passive);

    let total = (RAM / 4096) as u32;
    let fresh: Vec<u32> = (total - 512..total).collect(); // written last: resident
    let old: Vec<u32> = (DATA_PFN + 1024..DATA_PFN + 1536).collect(); // evicted
    let sr = Arc::new(SwapperReleaser::new(sw.clone(), regions));
    let releaser = Recording::new(sr.clone());
    let registry = sw.registry();
    let mut rig = Rig::with(
        mem,
        releaser.clone(),
        RigConfig {
            on_thread_start: Some(Box::new(move |tid| {
                registry.register(tid, ThreadKind::Device(5))
            })),
            ..Default::default()
        },
    );
    for p in DATA_PFN..total {
        rig.fill(p);
    }
    quiesce(&sw);
    let before = sw.status();
    assert!(before.store_slots > 1024, "{before:?}");

    let mut both = old.clone();
    both.extend(&fresh);
    balloon_pages(&mut rig, Role::Inflate, &both);

    let after = sw.status();
    assert_eq!(after.pages.ballooned, 1024, "{after:?}");
    assert_eq!(after.counters.discarded_pages, 1024);
    assert_eq!(
        after.counters.remove_events, 0,
        "the balloon path raises no REMOVE"
    );
    assert!(
        after.resident_pages + 256 < before.resident_pages,
        "resident {} -> {}",
        before.resident_pages,
        after.resident_pages
    );
    assert!(
        after.store_slots + 256 < before.store_slots,
        "{before:?} {after:?}"
    );
    let totals = sr.totals();
    assert_eq!(totals.pages, 1024);
    assert!(totals.committed_released >= 256, "{totals:?}");
    assert!(totals.slots_freed >= 256, "{totals:?}");
    assert_eq!(rig.h.metrics().released_bytes, 1024 * 4096);
    // The memory is really gone (the kernel's page tables, not the swapper's books).
    let pm = swapper::pagemap::Pagemap::open().unwrap();
    let host = |pfn: u32| mem.host_regions()[0].host_addr + pfn as usize * 4096;
    assert_eq!(
        pm.count_real(host(fresh[0]), host(total - 1) + 4096)
            .unwrap(),
        0
    );
    assert_eq!(
        pm.count_real(host(old[0]), host(old[511]) + 4096).unwrap(),
        0
    );

    // Deflate the old range; the guest reads zeros there, its data elsewhere.
    balloon_pages(&mut rig, Role::Deflate, &old);
    assert_eq!(rig.h.metrics().deflate_pages, 512);
    for &p in old.iter().step_by(37) {
        assert_eq!(rig.content(p), (false, true), "deflated page {p}");
    }
    for p in (DATA_PFN..DATA_PFN + 1024).step_by(53) {
        assert_eq!(rig.content(p), (true, false), "evicted page {p}");
    }
    assert!(sw.status().pages.ballooned < 1024);
    assert!(!sw.has_fatal());

    drop(rig);
    drop(releaser);
    drop(sr);
    let sw = Arc::try_unwrap(sw).ok().expect("no other swapper users");
    let st = sw.shutdown();
    assert_eq!(st.fatal_errors, 0);
}

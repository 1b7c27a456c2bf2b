//! The balloon device driven like the Linux driver would, over real guest memory
//! and split queues: inflate, deflate, free page reporting, statistics, config
//! space and interrupts.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balloon::features::{DEFLATE_ON_OOM, STATS_VQ};
use balloon::queues::Role;
use balloon::stats::encode;
use balloon::{Balloon, BalloonConfig, BalloonEventKind, MadviseReleaser, DEVICE_TYPE};
use common::*;
use vmm::memory::{create_guest_memory, RegionSpec};
use vmm::virtio::{VirtioDevice, INT_CONFIG, INT_USED_RING, VIRTIO_F_VERSION_1};

#[test]
fn inflate_releases_exactly_the_named_pages() {
    let mut rig = Rig::new(RigConfig::default());
    let pages: Vec<u32> = (DATA_PFN..DATA_PFN + 64).collect();
    for &p in &pages {
        rig.fill(p);
        assert!(rig.resident(p));
    }
    let named = [
        DATA_PFN + 31,
        DATA_PFN + 10,
        DATA_PFN + 11,
        DATA_PFN + 12,
        DATA_PFN + 40,
    ];
    let len = rig.write_pfns(BUFFERS, &named);
    let irqs = rig.line.0.load(Ordering::SeqCst);
    let head = rig.q(Role::Inflate).add(&[(BUFFERS, len, false)]);
    rig.q(Role::Inflate).kick();
    rig.wait("the inflate batch", |h| h.metrics().inflate_batches == 1);

    for &p in &pages {
        let released = named.contains(&p);
        assert_eq!(rig.resident(p), !released, "page {p} residency");
        let (kept, zero) = rig.content(p);
        assert_eq!((kept, zero), (!released, released), "page {p} content");
    }
    // Sorted and coalesced: 10..=12 in one range.
    let base = u64::from(DATA_PFN) << 12;
    assert_eq!(
        rig.releaser.released(),
        vec![
            (base + 10 * 4096, 3 * 4096),
            (base + 31 * 4096, 4096),
            (base + 40 * 4096, 4096)
        ]
    );
    let m = rig.h.metrics();
    assert_eq!(m.inflate_pages, 5);
    assert_eq!(m.released_bytes, 5 * 4096);
    assert_eq!(m.invalid_pfns + m.invalid_descriptors + m.queue_errors, 0);
    assert_eq!(m.inflate_time.count, 1);
    // The buffer came back, with an interrupt.
    let q = rig.q(Role::Inflate);
    assert_eq!(q.used_idx(), 1);
    assert_eq!(q.used(0), (u32::from(head), 0));
    assert!(rig.line.0.load(Ordering::SeqCst) > irqs);
    assert_ne!(rig.interrupt.status() & INT_USED_RING, 0);
    let ev = rig.h.drain_events();
    let inflate: Vec<_> = ev
        .iter()
        .filter(|e| e.kind == BalloonEventKind::Inflate)
        .collect();
    assert_eq!(inflate.len(), 1);
    assert_eq!(inflate[0].pages, 5);
}

#[test]
fn contiguous_pfns_coalesce_across_chunks_and_buffers() {
    let mut rig = Rig::new(RigConfig::default());
    // 1000 ascending PFNs (four 256-PFN chunks): one range.
    let up: Vec<u32> = (DATA_PFN..DATA_PFN + 1000).collect();
    let len = rig.write_pfns(BUFFERS, &up);
    rig.q(Role::Inflate).add(&[(BUFFERS, len, false)]);
    // 200 descending PFNs (one chunk, sorted by the device): one range.
    let down: Vec<u32> = (DATA_PFN + 2000..DATA_PFN + 2200).rev().collect();
    let len2 = rig.write_pfns(BUFFERS + 0x1_0000, &down);
    rig.q(Role::Inflate)
        .add(&[(BUFFERS + 0x1_0000, len2, false)]);
    rig.q(Role::Inflate).kick();
    rig.wait("two inflate batches", |h| h.metrics().inflate_batches == 2);
    let base = u64::from(DATA_PFN) << 12;
    assert_eq!(
        rig.releaser.released(),
        vec![(base, 1000 * 4096), (base + 2000 * 4096, 200 * 4096)]
    );
    assert_eq!(rig.h.metrics().inflate_pages, 1200);
    assert_eq!(rig.q(Role::Inflate).used_idx(), 2);
}

#[test]
fn out_of_range_pfns_are_counted_and_the_rest_released() {
    let mut rig = Rig::new(RigConfig::default());
    let last = (RAM / 4096) as u32 - 1;
    for p in [DATA_PFN, last] {
        rig.fill(p);
    }
    let pfns = [DATA_PFN, u32::MAX, last + 1, 0x10_0000, last];
    let len = rig.write_pfns(BUFFERS, &pfns);
    rig.q(Role::Inflate).add(&[(BUFFERS, len, false)]);
    rig.q(Role::Inflate).kick();
    rig.wait("the inflate batch", |h| h.metrics().inflate_batches == 1);
    let m = rig.h.metrics();
    assert_eq!(m.invalid_pfns, 3);
    assert_eq!(m.inflate_pages, 2);
    assert_eq!(rig.content(DATA_PFN), (false, true));
    assert_eq!(rig.content(last), (false, true));
    assert_eq!(rig.q(Role::Inflate).used_idx(), 1);
}

#[test]
fn malformed_buffers_are_counted_returned_and_survived() {
    let mut rig = Rig::new(RigConfig::default());
    rig.fill(DATA_PFN);
    let len = rig.write_pfns(BUFFERS, &[DATA_PFN]);
    let q = rig.q(Role::Inflate);
    q.add(&[(BUFFERS, 6, false)]); // not a multiple of 4
    q.add(&[(BUFFERS, len, true)]); // device-writable
    q.add(&[(1 << 40, 4096, false)]); // outside guest RAM
    q.add(&[(RAM - 4, 8, false)]); // runs off the end of RAM
    q.kick();
    rig.wait("four inflate batches", |h| h.metrics().inflate_batches == 4);
    let m = rig.h.metrics();
    assert_eq!(m.invalid_descriptors, 4);
    assert_eq!(m.inflate_pages, 0);
    assert_eq!(rig.content(DATA_PFN), (true, false), "nothing released");
    assert_eq!(rig.q(Role::Inflate).used_idx(), 4);
    // A chain mixing a bad and a good descriptor: the good one is used.
    let q = rig.q(Role::Inflate);
    q.add(&[(BUFFERS, 3, false), (BUFFERS, len, false)]);
    q.kick();
    rig.wait("the mixed batch", |h| h.metrics().inflate_batches == 5);
    assert_eq!(rig.h.metrics().invalid_descriptors, 5);
    assert_eq!(rig.content(DATA_PFN), (false, true));
    // The deflate queue rejects writable buffers the same way.
    let q = rig.q(Role::Deflate);
    q.add(&[(BUFFERS, len, true)]);
    q.kick();
    rig.wait("the deflate batch", |h| h.metrics().deflate_batches == 1);
    assert_eq!(rig.h.metrics().invalid_descriptors, 6);
    assert!(rig.releaser.reclaimed().is_empty());
}

#[test]
fn deflate_reclaims_and_pages_come_back_as_zeros() {
    let mut rig = Rig::new(RigConfig::default());
    let pfns: Vec<u32> = (DATA_PFN..DATA_PFN + 8).collect();
    for &p in &pfns {
        rig.fill(p);
    }
    let len = rig.write_pfns(BUFFERS, &pfns);
    rig.q(Role::Inflate).add(&[(BUFFERS, len, false)]);
    rig.q(Role::Inflate).kick();
    rig.wait("the inflate batch", |h| h.metrics().inflate_batches == 1);
    rig.q(Role::Deflate).add(&[(BUFFERS, len, false)]);
    rig.q(Role::Deflate).kick();
    rig.wait("the deflate batch", |h| h.metrics().deflate_batches == 1);
    let base = u64::from(DATA_PFN) << 12;
    assert_eq!(rig.releaser.reclaimed(), vec![(base, 8 * 4096)]);
    let m = rig.h.metrics();
    assert_eq!(m.deflate_pages, 8);
    assert_eq!(m.reclaimed_bytes, 8 * 4096);
    assert_eq!(rig.q(Role::Deflate).used_idx(), 1);
    // The guest uses the pages again: zeros first, then what it writes.
    for &p in &pfns {
        assert_eq!(rig.content(p), (false, true));
        rig.fill(p);
        assert_eq!(rig.content(p), (true, false));
    }
}

#[test]
fn statistics_are_parsed_kept_and_returned_on_request() {
    let mut rig = Rig::new(RigConfig::default());
    assert!(rig.h.stats().is_none());
    let entries: Vec<(u16, u64)> = (0u16..10).map(|t| (t, 100 + u64::from(t))).collect();
    let buf = encode(&entries);
    rig.mem_write(BUFFERS, &buf);
    let head = rig
        .q(Role::Stats)
        .add(&[(BUFFERS, buf.len() as u32, false)]);
    rig.q(Role::Stats).kick();
    rig.wait("the statistics", |h| h.metrics().stats_updates == 1);
    let s = rig.h.stats().unwrap();
    let named = s.named();
    assert_eq!(named.len(), 10);
    for (i, name) in [
        "swap-in",
        "swap-out",
        "major-faults",
        "minor-faults",
        "free-memory",
        "total-memory",
        "available-memory",
        "disk-caches",
        "hugetlb-allocations",
        "hugetlb-failures",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(named[i], (name.to_string(), 100 + i as u64));
    }
    // The device holds the buffer until asked.
    assert_eq!(rig.q(Role::Stats).used_idx(), 0);
    assert!(rig.h.request_stats());
    rig.wait("the returned buffer", |h| h.metrics().stats_requests == 1);
    assert_eq!(rig.q(Role::Stats).used_idx(), 1);
    assert_eq!(rig.q(Role::Stats).used(0), (u32::from(head), 0));
    // The guest refills it with fresh numbers (and a tag this device does not know).
    let buf = encode(&[(6, 4242), (77, 1)]);
    rig.mem_write(BUFFERS, &buf);
    rig.q(Role::Stats)
        .add(&[(BUFFERS, buf.len() as u32, false)]);
    rig.q(Role::Stats).kick();
    rig.wait("fresh statistics", |h| h.metrics().stats_updates == 2);
    let s2 = rig.h.stats().unwrap();
    assert_eq!(s2.available_memory, Some(4242));
    assert_eq!(s2.swap_in, None);
    assert_eq!(s2.unknown.get(&77), Some(&1));
    assert!(s2.t_ns >= s.t_ns);
}

#[test]
fn statistics_timer_returns_the_buffer_periodically() {
    let mut rig = Rig::new(RigConfig {
        stats_interval: Some(Duration::from_millis(5)),
        ..Default::default()
    });
    for round in 1..=3u64 {
        let buf = encode(&[(4, round)]);
        rig.mem_write(BUFFERS, &buf);
        rig.q(Role::Stats)
            .add(&[(BUFFERS, buf.len() as u32, false)]);
        rig.q(Role::Stats).kick();
        // The timer, not the test, returns the buffer.
        rig.wait("the timer", |h| h.metrics().stats_requests == round);
        assert_eq!(rig.h.stats().unwrap().free_memory, Some(round));
        assert_eq!(rig.q(Role::Stats).used_idx(), round as u16);
    }
}

#[test]
fn a_second_statistics_buffer_returns_the_first() {
    let mut rig = Rig::new(RigConfig::default());
    let buf = encode(&[(4, 1)]);
    rig.mem_write(BUFFERS, &buf);
    let first = rig
        .q(Role::Stats)
        .add(&[(BUFFERS, buf.len() as u32, false)]);
    rig.q(Role::Stats)
        .add(&[(BUFFERS, buf.len() as u32, false)]);
    rig.q(Role::Stats).kick();
    rig.wait("two statistics buffers", |h| h.metrics().stats_updates == 2);
    assert_eq!(rig.h.metrics().extra_stats_buffers, 1);
    assert_eq!(rig.q(Role::Stats).used_idx(), 1);
    assert_eq!(rig.q(Role::Stats).used(0).0, u32::from(first));
    // Partial entries are counted, whole ones used.
    let mut bad = encode(&[(5, 9)]);
    bad.push(0);
    rig.mem_write(BUFFERS, &bad);
    rig.q(Role::Stats)
        .add(&[(BUFFERS, bad.len() as u32, false)]);
    rig.q(Role::Stats).kick();
    rig.wait("the third buffer", |h| h.metrics().stats_updates == 3);
    assert_eq!(rig.h.stats().unwrap().total_memory, Some(9));
    assert_eq!(rig.h.metrics().invalid_descriptors, 1);
}

#[test]
fn free_page_reports_are_released_with_shifted_queue_indices() {
    // STATS_VQ not negotiated: reporting is queue 2.
    let mut rig = Rig::new(RigConfig {
        features: with_reporting(false),
        ..Default::default()
    });
    assert_eq!(rig.layout.index_of(Role::Reporting), Some(2));
    let base = u64::from(DATA_PFN) << 12;
    for p in DATA_PFN..DATA_PFN + 64 {
        rig.fill(p);
    }
    // Three free blocks (device-writable, like Linux's add_inbuf), one partly
    // outside RAM.
    let q = rig.q(Role::Reporting);
    q.add(&[
        (base, 16 * 4096, true),
        (base + 32 * 4096, 16 * 4096, true),
        (RAM - 4096, 4 * 4096, true),
    ]);
    q.kick();
    rig.wait("the report", |h| h.metrics().report_batches == 1);
    for p in DATA_PFN..DATA_PFN + 64 {
        let free = (p - DATA_PFN) < 16 || (32..48).contains(&(p - DATA_PFN));
        assert_eq!(rig.content(p), (!free, free), "page {p}");
    }
    let m = rig.h.metrics();
    assert_eq!(m.reported_pages, 33);
    assert_eq!(m.invalid_pfns, 3);
    assert_eq!(m.released_bytes, 33 * 4096);
    assert_eq!(m.report_time.count, 1);
    assert_eq!(rig.q(Role::Reporting).used_idx(), 1);
}

#[test]
fn config_space_carries_target_and_actual() {
    let (mut dev, h) = Balloon::new(BalloonConfig::new(Arc::new(MadviseReleaser::new(
        create_guest_memory(&[RegionSpec::new(0, 1 << 20)]).unwrap(),
    ))));
    assert_eq!(dev.device_type(), DEVICE_TYPE);
    assert_eq!(
        dev.features(),
        VIRTIO_F_VERSION_1 | STATS_VQ | DEFLATE_ON_OOM
    );
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(dev.config_len(), 16);
    // Before activation: stored, read by the driver at probe, no interrupt.
    h.set_target(10 << 20);
    let mut b = [0u8; 4];
    dev.read_config(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 2560);
    assert_eq!(h.target_bytes(), 10 << 20);
    assert_eq!(h.metrics().config_interrupts, 0);
    // The driver reports progress.
    dev.write_config(4, &1000u32.to_le_bytes());
    assert_eq!(h.actual_bytes(), 1000 * 4096);
    dev.write_config(5, &[0x10]); // one byte of actual
    assert_eq!(
        h.actual_bytes(),
        (1000 - 0x03 * 256 + 0x10 * 256) as u64 * 4096
    );
    let mut all = [0u8; 8];
    dev.read_config(0, &mut all);
    assert_eq!(&all[..4], &2560u32.to_le_bytes());
    assert_eq!(
        u32::from_le_bytes(all[4..].try_into().unwrap()) as u64 * 4096,
        h.actual_bytes()
    );
    // The target is the device's: driver writes are ignored and counted.
    dev.write_config(0, &7u32.to_le_bytes());
    dev.write_config(12, &7u32.to_le_bytes());
    assert_eq!(h.target_bytes(), 10 << 20);
    assert_eq!(h.metrics().invalid_config_writes, 2);
    let mut tail = [0u8; 8];
    dev.read_config(8, &mut tail);
    assert_eq!(tail, [0; 8]);
    // Rounded down to pages, capped at u32::MAX pages.
    h.set_target(8191);
    assert_eq!(h.target_bytes(), 4096);
    h.set_target(u64::MAX);
    assert_eq!(h.target_bytes(), u64::from(u32::MAX) * 4096);
}

#[test]
fn set_target_raises_a_config_interrupt_while_active() {
    let mut rig = Rig::new(RigConfig::default());
    assert!(rig.h.is_active());
    rig.interrupt.ack(u32::MAX);
    let before = rig.line.0.load(Ordering::SeqCst);
    rig.h.set_target(64 << 20);
    assert_eq!(rig.line.0.load(Ordering::SeqCst), before + 1);
    assert_eq!(rig.interrupt.status() & INT_CONFIG, INT_CONFIG);
    let m = rig.h.metrics();
    assert_eq!(
        (m.config_interrupts, m.target_sets, m.target_pages),
        (1, 1, 16384)
    );
    let ev = rig.h.drain_events();
    assert!(ev
        .iter()
        .any(|e| e.kind == BalloonEventKind::TargetSet && e.pages == 16384));
    // After a reset: no interrupt, actual forgotten, target kept.
    rig.dev.write_config(4, &5u32.to_le_bytes());
    rig.dev.reset();
    rig.dev.reset(); // idempotent
    assert!(!rig.h.is_active());
    assert!(!rig.h.request_stats());
    assert_eq!(rig.h.actual_bytes(), 0);
    assert_eq!(rig.h.metrics().resets, 1);
    rig.h.set_target(32 << 20);
    assert_eq!(rig.line.0.load(Ordering::SeqCst), before + 1);
    assert_eq!(rig.h.target_bytes(), 32 << 20);
}

#[test]
fn activation_needs_inflate_and_deflate_queues_and_restarts_the_worker() {
    let tids = Arc::new(Mutex::new(Vec::new()));
    let t2 = tids.clone();
    let mut rig = Rig::new(RigConfig {
        on_thread_start: Some(Box::new(move |tid| t2.lock().unwrap().push(tid))),
        ..Default::default()
    });
    rig.wait("the worker", |_| tids.lock().unwrap().len() == 1);
    rig.dev.reset();
    // No STATS_VQ this time: two queues.
    rig.activate(VIRTIO_F_VERSION_1).unwrap();
    rig.wait("the second worker", |_| tids.lock().unwrap().len() == 2);
    let t = tids.lock().unwrap().clone();
    assert!(t.iter().all(|&tid| tid > 0) && t[0] != t[1], "{t:?}");
    assert_eq!(rig.h.metrics().activations, 2);
    rig.fill(DATA_PFN);
    let len = rig.write_pfns(BUFFERS, &[DATA_PFN]);
    rig.q(Role::Inflate).add(&[(BUFFERS, len, false)]);
    rig.q(Role::Inflate).kick();
    rig.wait("the inflate batch", |h| h.metrics().inflate_batches == 1);
    assert_eq!(rig.content(DATA_PFN), (false, true));
    // A driver that set up only the inflate queue is refused.
    rig.dev.reset();
    let err = rig.activate_first(VIRTIO_F_VERSION_1, 1);
    assert!(
        matches!(err, Err(vmm::virtio::ActivateError::BadQueues(_))),
        "{err:?}"
    );
    assert!(!rig.h.is_active());
    // Negotiated reporting but left its queue out: served without it.
    rig.activate_first(with_reporting(true), 3).unwrap();
    assert!(rig.h.is_active());
    rig.wait("the third worker", |_| tids.lock().unwrap().len() == 3);
}

/// Random descriptors, lengths, flags, heads and ring indices thrown at every
/// queue: the device counts what it cannot use, never panics, and still works.
#[test]
fn random_descriptors_never_break_the_device() {
    let mut rig = Rig::new(RigConfig {
        features: with_reporting(true),
        stats_interval: Some(Duration::from_millis(1)),
        ..Default::default()
    });
    let mut x = 0x5eed_u64;
    let mut rnd = |n: u64| {
        x = mix(x);
        x % n
    };
    for round in 0..60 {
        for qi in 0..rig.queues.len() {
            let mut raw = Vec::new();
            for _ in 0..1 + rnd(8) {
                let addr = match rnd(4) {
                    0 => rnd(RAM),
                    1 => BUFFERS + rnd(64) * 4096,
                    2 => rnd(u64::MAX),
                    _ => (RAM - 64) + rnd(128),
                };
                let len = match rnd(4) {
                    0 => rnd(64) as u32,
                    1 => rnd(64 << 10) as u32,
                    2 => u32::MAX - rnd(8) as u32,
                    _ => 4 * rnd(1024) as u32,
                };
                let flags = rnd(8) as u16; // NEXT, WRITE, INDIRECT in any mix
                let next = rnd(u64::from(QSIZE) + 4) as u16;
                raw.push(virtio_queue::desc::RawDescriptor::from(
                    virtio_queue::desc::split::Descriptor::new(addr, len, flags, next),
                ));
            }
            // Random PFN content in the buffer area.
            let pfns: Vec<u32> = (0..64).map(|_| rnd(u64::from(u32::MAX)) as u32).collect();
            rig.write_pfns(BUFFERS + rnd(16) * 4096, &pfns);
            let q = &mut rig.queues[qi];
            let offset = rnd(u64::from(QSIZE) - 8) as u16;
            q.add_raw(&raw, offset);
            if rnd(10) == 0 {
                // A bogus available index far ahead of the device.
                let idx = q.mock.avail().idx().load();
                q.mock.avail().idx().store(idx.wrapping_add(1000));
            }
        }
        let wakeups = rig.h.metrics().wakeups;
        let n = rig.queues.len() as u64;
        for q in &rig.queues {
            q.kick();
        }
        rig.wait(&format!("round {round}"), |h| {
            h.metrics().wakeups >= wakeups + n
        });
    }
    let m = rig.h.metrics();
    assert!(
        m.invalid_descriptors + m.invalid_pfns + m.queue_errors > 0,
        "{m:?}"
    );
    // Still serving after a reset and a fresh activation.
    rig.dev.reset();
    assert_eq!(rig.h.metrics().worker_panics, 0);
    rig.activate(with_reporting(true)).unwrap();
    rig.fill(DATA_PFN);
    let len = rig.write_pfns(BUFFERS, &[DATA_PFN]);
    let batches = rig.h.metrics().inflate_batches;
    rig.q(Role::Inflate).add(&[(BUFFERS, len, false)]);
    rig.q(Role::Inflate).kick();
    rig.wait("a valid batch", |h| {
        h.metrics().inflate_batches == batches + 1
    });
    assert_eq!(rig.content(DATA_PFN), (false, true));
}

/// With `SWAPLAB_SECCOMP_PROBE=balloon` the balloon worker thread makes a syscall its seccomp filter
/// forbids right after installing it: the process ends with status 159 and one
/// line naming the thread and the syscall.
#[test]
fn seccomp_probe_stops_the_process_naming_the_thread() {
    seccomp::assert_probe_stops(
        "inflate_releases_exactly_the_named_pages",
        seccomp::ThreadClass::Balloon,
        "balloon",
    );
}

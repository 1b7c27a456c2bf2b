//! The Swap Mapper (named pages) on a real userfaultfd-registered mapping,
//! with an in-memory disk standing in for the virtio-blk device's image.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use swapper::*;

const PAGES: usize = 1024;
const LIMIT: u64 = 256;
const DISK: u8 = 0;

/// A disk image in memory, read by the swapper and written by the "device".
struct MemDisk(Mutex<Vec<u8>>);

impl DiskReader for MemDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let d = self.0.lock().unwrap();
        let off = offset as usize;
        match d.get(off..off + buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::Error::other("beyond the disk")),
        }
    }
}

/// The content of disk block `b` for `seed`: what `fill` would write for page `b`.
fn block(b: usize, seed: u64) -> [u8; PAGE_SIZE] {
    let map = Mapping::new(1);
    fill(map.addr, b, seed);
    let mut out = [0u8; PAGE_SIZE];
    // SAFETY: the (unregistered) page is ours and was just written.
    unsafe { std::ptr::copy_nonoverlapping(map.addr as *const u8, out.as_mut_ptr(), PAGE_SIZE) };
    out
}

struct Rig {
    map: Mapping,
    sw: Arc<Swapper>,
    disk: Arc<MemDisk>,
}

impl Rig {
    fn new(named: bool) -> Self {
        let map = Mapping::new(PAGES);
        let cfg = SwapperConfig {
            limit_bytes: LIMIT * PAGE_SIZE as u64,
            slack_bytes: Some(0),
            store: StoreKind::Memory,
            policy: PolicyKind::Fifo,
            // The unmitigated arrangement tracks nothing; the mitigated one
            // tracks dirtiness too, as the mitigated scenario does.
            dirty_tracking: named,
            named,
            checksums: true,
            ..Default::default()
        };
        // SAFETY: the mapping outlives the swapper (dropped after it in `finish`).
        let sw = Arc::new(unsafe { Swapper::start(cfg, &[map.region()]) }.unwrap());
        let disk = Arc::new(MemDisk(Mutex::new(
            (0..PAGES).flat_map(|b| block(b, 1)).collect(),
        )));
        sw.add_disk(DISK, disk.clone()).unwrap();
        Self { map, sw, disk }
    }

    /// The device reads disk block `b` into page `p`: offered to the swapper,
    /// written by a device thread if it did not take it.
    fn device_read(&self, p: usize, b: usize) {
        let data: [u8; PAGE_SIZE] = self.disk.0.lock().unwrap()[b * PAGE_SIZE..(b + 1) * PAGE_SIZE]
            .try_into()
            .unwrap();
        let addr = self.map.page(p);
        let off = (b * PAGE_SIZE) as u64;
        if self.sw.disk_page(addr, DISK, off, &data, false) == Installed::No {
            let reg = self.sw.registry();
            std::thread::spawn(move || {
                reg.register_current(ThreadKind::Device(0));
                for (i, w) in data.chunks(8).enumerate() {
                    let v = u64::from_ne_bytes(w.try_into().unwrap());
                    touch_write(addr + i * 8, v);
                }
            })
            .join()
            .unwrap();
        }
    }

    /// The device writes `data` to disk block `b`.
    fn device_write(&self, b: usize, data: &[u8; PAGE_SIZE]) {
        self.sw
            .disk_changing(DISK, (b * PAGE_SIZE) as u64, PAGE_SIZE as u64);
        self.disk.0.lock().unwrap()[b * PAGE_SIZE..(b + 1) * PAGE_SIZE].copy_from_slice(data);
    }

    /// Fills pages `range` with fresh content (pushing older pages out).
    fn push_out(&self, range: std::ops::Range<usize>) {
        let base = self.map.addr;
        vcpus(&self.sw, 1, move |_| {
            range
                .clone()
                .for_each(|p| fill(base + p * PAGE_SIZE, p, 77))
        });
        quiesce(&self.sw);
    }

    /// Words of page `p` that differ from block content (`b`, `seed`).
    fn wrong(&self, p: usize, b: usize, seed: u64) -> usize {
        let addr = self.map.page(p);
        let out = Arc::new(Mutex::new(0));
        let o = out.clone();
        vcpus(&self.sw, 1, move |_| {
            *o.lock().unwrap() = check(addr, b, seed)
        });
        let n = *out.lock().unwrap();
        n
    }

    fn counters(&self) -> status::CounterSnapshot {
        self.sw.status().counters
    }

    fn finish(self) -> SwapperStatus {
        let Rig { map, sw, disk } = self;
        drop(disk);
        let end = shutdown(Arc::into_inner(sw).expect("the rig holds the only swapper"));
        drop(map);
        assert_eq!(end.counters.integrity_errors, 0, "{end:?}");
        end
    }
}

/// Unmitigated: every eviction that writes a page still equal to its disk
/// block is false anonymity; a page the guest rewrote, or whose block was
/// rewritten, is not.
#[test]
fn evictions_of_unchanged_disk_pages_count_as_false_anonymity() {
    if !uffd_available() {
        return;
    }
    let rig = Rig::new(false);
    // Fewer than the limit: nothing leaves before the changes below.
    for p in 0..128 {
        rig.device_read(p, p);
    }
    // The guest rewrites 32 of them, and 32 blocks are rewritten on disk.
    let base = rig.map.addr;
    vcpus(&rig.sw, 1, move |_| {
        (0..32).for_each(|p| fill(base + p * PAGE_SIZE, p, 5))
    });
    for b in 32..64 {
        rig.device_write(b, &block(b, 9));
    }
    rig.push_out(128..PAGES);
    let c = rig.counters();
    assert_eq!(c.mirrors_registered, 128, "{c:?}");
    assert_eq!(c.mirror_ends_disk_write, 32, "{c:?}");
    assert_eq!(c.false_anonymity, 64, "{c:?}");
    // Counting changes nothing: pages went to the store and come back from it.
    assert_eq!(c.named_evictions, 0);
    assert_eq!(rig.wrong(100, 100, 1), 0);
    assert_eq!(rig.wrong(20, 20, 5), 0);
    assert_eq!(rig.wrong(40, 40, 1), 0, "the page, not the new block");
    let end = rig.finish();
    assert_eq!(end.counters.swapin_named, 0);
}

/// Mitigated: mirrored pages leave without store writes and come back from
/// the disk, read ahead when the faults follow the disk.
#[test]
fn named_pages_are_dropped_and_read_back_from_the_disk() {
    if !uffd_available() {
        return;
    }
    let rig = Rig::new(true);
    for p in 0..512 {
        rig.device_read(p, p);
    }
    let c = rig.counters();
    assert_eq!(c.mirrors_registered, 512, "{c:?}");
    rig.push_out(512..PAGES);
    let c = rig.counters();
    assert_eq!(c.false_anonymity, 0, "{c:?}");
    assert!(c.named_evictions >= 500, "{c:?}");
    // The store saw only the pages that mirror nothing.
    assert!(c.evictions <= (PAGES - 512) as u64, "{c:?}");
    // Read back in disk order: named faults, then read-ahead.
    let base = rig.map.addr;
    vcpus(&rig.sw, 1, move |_| {
        (0..512).for_each(|p| assert_eq!(check(base + p * PAGE_SIZE, p, 1), 0))
    });
    let c = rig.counters();
    assert!(c.swapin_named > 0, "{c:?}");
    assert!(c.named_readahead > 0, "{c:?}");
    assert!(c.swapin_named + c.named_readahead >= 500, "{c:?}");
    assert!(rig.sw.status().latency.contains_key("named"));
    // Every named fault has its trace record with the disk read's time (the
    // last may still be on its way: the handler records after waking).
    let named: Vec<_> = rig
        .sw
        .drain_trace()
        .into_iter()
        .filter(|r| r.path == FaultPath::Named)
        .collect();
    assert!(named.len() as u64 + 1 >= c.swapin_named && !named.is_empty());
    assert!(named.iter().all(|r| r.store_read_ns > 0));
    rig.finish();
}

/// Each way a mirror ends, in named mode, and what the page holds after.
#[test]
fn every_way_a_mirror_ends_keeps_the_pages_content() {
    if !uffd_available() {
        return;
    }
    let rig = Rig::new(true);
    let base = rig.map.addr;
    let mirrored = || rig.sw.status().mirrored_pages;
    for p in 0..6 {
        rig.device_read(p, p);
    }
    assert_eq!(mirrored(), 6);
    // 1. The guest writes page 0: a write-protect fault ends its mirror.
    vcpus(&rig.sw, 1, move |_| fill(base, 0, 5));
    assert_eq!(rig.counters().mirror_ends_guest_write, 1);
    assert_eq!(mirrored(), 5);
    // 2. Block 1 is rewritten while page 1 is resident: the mirror ends.
    rig.device_write(1, &block(1, 9));
    assert_eq!(mirrored(), 4);
    // 3. Page 2 is discarded (balloon): gone with its content.
    rig.sw.discard(rig.map.page(2), PAGE_SIZE).unwrap();
    assert_eq!(mirrored(), 3);
    // 4. Another block is read into page 3: it mirrors that one now.
    rig.device_read(3, 40);
    assert_eq!(mirrored(), 3);
    rig.device_write(3, &block(3, 9));
    assert_eq!(mirrored(), 3, "block 3 is no longer page 3's");
    // 5. Pages 4 and 5 go named; block 4 is rewritten: page 4 is read back
    //    first (a rescue) and keeps what the guest had.
    rig.push_out(64..PAGES);
    let c = rig.counters();
    assert!(c.named_evictions >= 3, "{c:?}");
    assert_eq!(rig.sw.status().pages.named, c.named_evictions);
    rig.device_write(4, &block(4, 9));
    assert_eq!(rig.counters().named_rescues, 1);
    assert_eq!(rig.counters().mirror_ends_disk_write, 2);
    // What every page holds.
    assert_eq!(rig.wrong(0, 0, 5), 0, "the guest's write");
    assert_eq!(rig.wrong(1, 1, 1), 0, "the page, not the new block");
    assert_eq!(rig.wrong(3, 40, 1), 0, "the second read");
    assert_eq!(rig.wrong(4, 4, 1), 0, "rescued before the block changed");
    assert_eq!(rig.wrong(5, 5, 1), 0, "named, read back");
    assert_eq!(touch_read_on_vcpu(&rig, 2), 0, "discarded: zero");
    let end = rig.finish();
    assert_eq!(end.fatal_errors, 0);
}

fn touch_read_on_vcpu(rig: &Rig, p: usize) -> u64 {
    let addr = rig.map.page(p);
    let out = Arc::new(Mutex::new(1));
    let o = out.clone();
    vcpus(&rig.sw, 1, move |_| *o.lock().unwrap() = touch_read(addr));
    let v = *out.lock().unwrap();
    v
}

/// A block changed behind the swapper's back (no `disk_changing`): the named
/// page's checksum catches it, and nothing is served.
#[test]
fn a_block_changed_unannounced_is_never_served() {
    if !uffd_available() {
        return;
    }
    let rig = Rig::new(true);
    for p in 0..4 {
        rig.device_read(p, p);
    }
    rig.push_out(64..PAGES);
    assert_eq!(rig.sw.status().pages.named, 4);
    rig.disk.0.lock().unwrap()[0] ^= 1;
    assert_eq!(kernel_read(rig.map.page(0)), Err(libc::EFAULT));
    let fatal = rig.sw.fatal_errors();
    assert_eq!(fatal.len(), 1, "{fatal:?}");
    assert!(
        matches!(fatal[0].kind, FatalKind::Corruption(_)),
        "{fatal:?}"
    );
    // The others are intact.
    assert_eq!(rig.wrong(1, 1, 1), 0);
    let end = shutdown(Arc::into_inner(rig.sw).unwrap());
    assert_eq!(end.counters.integrity_errors, 1);
}

//! The body of the `balloon` fuzz target (`fuzz/`), as a plain function so that a
//! stable `cargo test` replays the committed seed corpus (`fuzz/corpus/balloon/`).
//!
//! The input describes buffers the guest driver puts in the balloon's queues —
//! inflate and deflate PFN arrays (valid PFNs in either RAM region, PFNs outside
//! RAM, raw descriptors of any address, length and direction), statistics buffers
//! (known and unknown tags, trailing bytes) and free page reports — for a feature
//! set from the input. The device's worker code ([`Worker`]) serves every queue
//! over real guest memory (anonymous mappings) and releases pages through the real
//! [`MadviseReleaser`], wrapped in a releaser that checks what it is given.
//!
//! Checks: no panic; every range released or reclaimed is whole 4 KiB pages inside
//! one RAM region; every buffer comes back once (in order, used length 0) except
//! the statistics buffer the device holds; the counters add up (batches, pages,
//! bytes released, release errors); the event ring stays within its capacity.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueState};
use vmm::fuzzing::{CountingLine, Encoder, Input};
use vmm::memory::{create_guest_memory, RegionSpec};
use vmm::virtio::{ActiveQueue, VirtioInterrupt};
use vmm::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::EVENT_CAPACITY;
use crate::queues::{QueueLayout, Role};
use crate::release::{MadviseReleaser, PageReleaser, ReleaseError};
use crate::shared::Shared;
use crate::spec::features::{REPORTING, STATS_VQ};
use crate::spec::BALLOON_PAGE_SIZE;
use crate::worker::Worker;

const LOW: u64 = 0x40000;
const HIGH: u64 = 0x80000;
const HIGH_LEN: u64 = 0x10000;
const QSIZE: u16 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const STATS_TAGS: u16 = 16;
/// The queues' rings lie below this.
const RINGS_END: u64 = 0x8000;

/// Queue `i`'s rings.
fn rings(i: usize) -> (u64, u64, u64) {
    let base = 0x1000 * (1 + i as u64);
    (base, base + 0x400, base + 0x800)
}

/// Checks every range it is given, then releases it with madvise; fails every
/// other call when asked to.
struct Checking {
    inner: MadviseReleaser,
    fail: bool,
    calls: AtomicU64,
    ok_released: AtomicU64,
    ok_reclaimed: AtomicU64,
    failed: AtomicU64,
    pages: AtomicU64,
}

impl Checking {
    fn check(&self, gpa: u64, len: u64) -> Result<(), ReleaseError> {
        assert!(len > 0 && gpa % BALLOON_PAGE_SIZE == 0 && len % BALLOON_PAGE_SIZE == 0);
        let end = gpa.checked_add(len).expect("range overflows");
        assert!(
            end <= LOW || (gpa >= HIGH && end <= HIGH + HIGH_LEN),
            "range {gpa:#x}+{len:#x} is not inside one RAM region"
        );
        self.pages
            .fetch_add(len / BALLOON_PAGE_SIZE, Ordering::Relaxed);
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fail && n % 2 == 1 {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(ReleaseError::OutOfRange { gpa, len });
        }
        Ok(())
    }
}

impl PageReleaser for Checking {
    fn release(&self, gpa: u64, len: u64) -> Result<(), ReleaseError> {
        self.check(gpa, len)?;
        // The rings stay (a guest that balloons its own rings only stalls itself,
        // but then the harness could not read what the device returned).
        if gpa >= RINGS_END {
            self.inner.release(gpa, len)?;
        }
        self.ok_released.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn reclaim(&self, gpa: u64, len: u64) -> Result<(), ReleaseError> {
        self.check(gpa, len)?;
        self.inner.reclaim(gpa, len)?;
        self.ok_reclaimed.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

/// A RAM page (4 KiB) by index over both regions.
fn ram_page(i: u16) -> u64 {
    let pages = (LOW + HIGH_LEN) / BALLOON_PAGE_SIZE;
    let p = u64::from(i) % pages * BALLOON_PAGE_SIZE;
    if p < LOW {
        p
    } else {
        HIGH + (p - LOW)
    }
}

/// One descriptor of a buffer, read from the input (its contents written to RAM).
fn read_desc(
    inp: &mut Input<'_>,
    role: Role,
    mem: &GuestMemoryMmap,
    next_buf: &mut u64,
) -> (u64, u32, bool) {
    let mode = inp.u8();
    if mode & 0x80 != 0 {
        // Anything at all.
        return (inp.u64(), inp.u32(), mode & 1 != 0);
    }
    let mut bytes = Vec::new();
    let write = match role {
        Role::Inflate | Role::Deflate => {
            for _ in 0..inp.u8() % 65 {
                let sel = inp.u8();
                let pfn = if sel & 0x80 != 0 {
                    inp.u32()
                } else {
                    (ram_page(inp.u16()) / BALLOON_PAGE_SIZE) as u32
                };
                bytes.extend_from_slice(&pfn.to_le_bytes());
            }
            false
        }
        Role::Stats => {
            for _ in 0..inp.u8() % 20 {
                let t = inp.u8();
                let tag = if t & 0x80 != 0 {
                    inp.u16()
                } else {
                    u16::from(t) % STATS_TAGS
                };
                bytes.extend_from_slice(&tag.to_le_bytes());
                bytes.extend_from_slice(&inp.u64().to_le_bytes());
            }
            if mode & 2 != 0 {
                bytes.push(0); // a trailing partial entry
            }
            false
        }
        _ => {
            // A free page report names a range; nothing is read or written.
            let at = ram_page(inp.u16()) + u64::from(inp.u8() & 0x0f) * 0x100;
            let len = u32::from(inp.u8()) * 0x400;
            return (at, len, true);
        }
    };
    let at = *next_buf;
    *next_buf = (at + bytes.len() as u64 + 15) & !15;
    if mem.write_slice(&bytes, GuestAddress(at)).is_err() {
        return (0, 0, false);
    }
    (at, bytes.len() as u32, write)
}

/// The `balloon` fuzz target.
pub fn balloon(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = inp.u8();
    let mut features = 0;
    if cfg & 1 != 0 {
        features |= STATS_VQ;
    }
    if cfg & 2 != 0 {
        features |= REPORTING;
    }
    let layout = QueueLayout::for_features(features);
    let mem = create_guest_memory(&[RegionSpec::new(0, LOW), RegionSpec::new(HIGH, HIGH_LEN)])
        .expect("guest memory");
    let mut next_desc = vec![0u16; layout.len()];
    let mut heads: Vec<Vec<u16>> = vec![Vec::new(); layout.len()];
    let mut next_buf = RINGS_END;
    let mut chains = 0;
    while !inp.is_empty() && chains < 48 {
        chains += 1;
        let qi = usize::from(inp.u8()) % layout.len();
        let role = layout.role(qi as u16).expect("a role");
        let n = 1 + u16::from(inp.u8() % 3);
        if next_desc[qi] + n > QSIZE || next_buf > LOW - 0x2000 {
            break;
        }
        let (desc, avail, _) = rings(qi);
        let head = next_desc[qi];
        for k in 0..n {
            let (addr, len, write) = read_desc(&mut inp, role, &mem, &mut next_buf);
            let mut flags = if write { F_WRITE } else { 0 };
            if k + 1 < n {
                flags |= F_NEXT;
            }
            let i = head + k;
            let raw = RawDescriptor::from(Descriptor::new(addr, len, flags, i + 1));
            mem.write_obj(raw, GuestAddress(desc + 16 * u64::from(i)))
                .expect("table in RAM");
        }
        next_desc[qi] += n;
        let idx = heads[qi].len() as u16;
        mem.write_obj(head, GuestAddress(avail + 4 + 2 * u64::from(idx % QSIZE)))
            .expect("avail in RAM");
        mem.write_obj(idx + 1, GuestAddress(avail + 2))
            .expect("avail in RAM");
        heads[qi].push(head);
    }
    let releaser = Arc::new(Checking {
        inner: MadviseReleaser::new(mem.clone()),
        fail: cfg & 4 != 0,
        calls: AtomicU64::new(0),
        ok_released: AtomicU64::new(0),
        ok_reclaimed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        pages: AtomicU64::new(0),
    });
    let mut queues = Vec::new();
    for qi in 0..layout.len() {
        let (desc, avail, used) = rings(qi);
        let state = QueueState {
            max_size: QSIZE,
            next_avail: 0,
            next_used: 0,
            event_idx_enabled: cfg & 8 != 0,
            size: QSIZE,
            ready: true,
            desc_table: desc,
            avail_ring: avail,
            used_ring: used,
        };
        let queue = Queue::try_from(state).expect("queue");
        let notify = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        let role = layout.role(qi as u16).expect("a role");
        queues.push((
            role,
            ActiveQueue {
                index: qi as u16,
                queue,
                notify,
            },
        ));
    }
    let shared = Arc::new(Shared::new(std::time::Instant::now(), EVENT_CAPACITY));
    let interrupt = VirtioInterrupt::new(Arc::new(CountingLine::default()));
    let mut worker = Worker::new(
        mem.clone(),
        queues,
        interrupt,
        shared.clone(),
        releaser.clone(),
        Arc::new(AtomicBool::new(false)),
        EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        None,
    )
    .expect("worker");
    for qi in 0..layout.len() {
        worker.drain(qi);
    }

    let m = shared.counters.snapshot();
    for (qi, hs) in heads.iter().enumerate() {
        let role = layout.role(qi as u16).expect("a role");
        let (_, _, used) = rings(qi);
        let used_idx: u16 = mem.read_obj(GuestAddress(used + 2)).expect("used in RAM");
        // The device holds the latest statistics buffer and returns the older ones.
        let returned = if role == Role::Stats {
            hs.len().saturating_sub(1)
        } else {
            hs.len()
        };
        assert_eq!(usize::from(used_idx), returned, "{role:?} buffers returned");
        for (k, h) in hs.iter().take(returned).enumerate() {
            let at = used + 4 + 8 * k as u64;
            let id: u32 = mem.read_obj(GuestAddress(at)).expect("used in RAM");
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).expect("used in RAM");
            assert_eq!((id, len), (u32::from(*h), 0), "{role:?} used entry {k}");
        }
        let batches = match role {
            Role::Inflate => m.inflate_batches,
            Role::Deflate => m.deflate_batches,
            Role::Reporting => m.report_batches,
            _ => continue,
        };
        assert_eq!(batches, hs.len() as u64, "{role:?} batches");
    }
    let stats_bufs = layout
        .index_of(Role::Stats)
        .map_or(0, |i| heads[usize::from(i)].len() as u64);
    assert_eq!(m.stats_updates, stats_bufs);
    assert_eq!(m.extra_stats_buffers, stats_bufs.saturating_sub(1));
    assert_eq!(
        m.inflate_pages + m.deflate_pages + m.reported_pages,
        releaser.pages.load(Ordering::Relaxed),
        "pages counted = pages handed to the releaser"
    );
    assert_eq!(
        m.released_bytes,
        releaser.ok_released.load(Ordering::Relaxed)
    );
    assert_eq!(
        m.reclaimed_bytes,
        releaser.ok_reclaimed.load(Ordering::Relaxed)
    );
    assert_eq!(m.release_errors, releaser.failed.load(Ordering::Relaxed));
    let events = shared.events.drain();
    assert!(events.len() <= EVENT_CAPACITY);
    assert_eq!(m.queue_errors, 0, "{m:?}");
}

/// Seeds: inflate and deflate batches of contiguous, scattered, duplicate and
/// out-of-RAM PFNs, statistics buffers, free page reports, raw descriptors, with
/// each feature set and with failing releases.
pub fn seeds() -> Vec<Vec<u8>> {
    let pfns = |e: &mut Encoder, list: &[u16], bad: &[u32]| {
        e.u8(0).u8((list.len() + bad.len()) as u8);
        for p in list {
            e.u8(0).u16(*p);
        }
        for b in bad {
            e.u8(0x80).u32(*b);
        }
    };
    let stats = |e: &mut Encoder, tags: &[(u8, u64)], trailing: bool| {
        e.u8(if trailing { 2 } else { 0 }).u8(tags.len() as u8);
        for (t, v) in tags {
            e.u8(*t).u64(*v);
        }
    };
    let mut out = Vec::new();
    for cfg in [0u8, 1, 3, 7, 11] {
        let mut e = Encoder::default();
        e.u8(cfg);
        // inflate: 16 contiguous pages from 0x10000 and 8 in the high region
        e.u8(0).u8(1);
        let list: Vec<u16> = (16..32).chain(64..72).collect();
        pfns(&mut e, &list, &[]);
        pfns(&mut e, &[40, 41, 41, 3, 70, 2], &[0xffff_ffff, 0x100]);
        // deflate: the same pages back
        e.u8(1).u8(0);
        pfns(&mut e, &list, &[]);
        if cfg & 1 != 0 {
            // stats (queue 2): all tags, then a second buffer with a trailing byte
            e.u8(2).u8(0);
            stats(
                &mut e,
                &(0..10)
                    .map(|t| (t, 1000 + u64::from(t)))
                    .collect::<Vec<_>>(),
                false,
            );
            e.u8(2).u8(0);
            stats(&mut e, &[(0x80, 7)], true);
            e.u16(0x1234).u64(9);
        }
        if cfg & 2 != 0 {
            // reporting (queue 3 or 2): two 2 MiB-ish ranges, one unaligned
            let q = if cfg & 1 != 0 { 3 } else { 2 };
            e.u8(q).u8(1);
            e.u8(0).u16(8).u8(0).u8(32);
            e.u8(0).u16(66).u8(3).u8(20);
        }
        out.push(e.0);
    }
    // Raw descriptors: outside RAM, device-writable, odd lengths.
    let mut e = Encoder::default();
    e.u8(1);
    e.u8(0).u8(2);
    e.u8(0x80).u64(0x1_0000_0000).u32(1024);
    e.u8(0x81).u64(0x8000).u32(64);
    e.u8(0x80).u64(0x8000).u32(6);
    e.u8(2).u8(0);
    e.u8(0x80).u64(0x3f_fff0).u32(0x1000);
    out.push(e.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balloon_corpus() {
        base::corpus::replay("balloon", balloon);
        for s in seeds() {
            balloon(&s);
        }
        for tiny in [&[][..], &[0xff], &[0; 64], &[0xff; 64]] {
            balloon(tiny);
        }
    }

    /// `cargo test -p balloon --lib -- --ignored write_seeds` regenerates the seeds.
    #[test]
    #[ignore]
    fn write_seeds() {
        base::corpus::write_seeds("balloon", &seeds()).expect("write seeds");
    }
}

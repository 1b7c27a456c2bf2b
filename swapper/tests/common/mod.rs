//! Helpers for the privileged swapper tests: mappings, page content,
//! toucher threads, resident-memory sampling.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use swapper::{FaultInjector, GuestRegion, StoreKind, Swapper, SwapperConfig, PAGE_SIZE};

/// Whether this host can run userfaultfd tests; prints why not.
pub fn uffd_available() -> bool {
    let ok = std::path::Path::new("/dev/userfaultfd").exists() || unsafe_free_euid_is_root();
    if !ok {
        base::tier::skip(
            base::tier::Tier::Userfaultfd,
            "no /dev/userfaultfd and not root",
        );
    }
    ok
}

fn unsafe_free_euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// An anonymous private mapping, unmapped on drop.
pub struct Mapping {
    pub addr: usize,
    pub pages: usize,
}

impl Mapping {
    pub fn new(pages: usize) -> Self {
        // SAFETY: fresh anonymous private mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Self {
            addr: p as usize,
            pages,
        }
    }

    pub fn region(&self) -> GuestRegion {
        GuestRegion {
            addr: self.addr,
            len: self.pages * PAGE_SIZE,
        }
    }

    pub fn page(&self, i: usize) -> usize {
        assert!(i < self.pages);
        self.addr + i * PAGE_SIZE
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping created in `new`; the swapper using it
        // has been shut down by then (tests drop it first).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.pages * PAGE_SIZE) };
    }
}

/// The store-failure tests' swapper settings: a 512-page limit without
/// slack, checksums on, `store` wrapped in `inj`.
pub fn faulty_config(inj: &Arc<FaultInjector>, store: StoreKind) -> SwapperConfig {
    SwapperConfig {
        limit_bytes: 512 * PAGE_SIZE as u64,
        slack_bytes: Some(0),
        store,
        checksums: true,
        fault_injector: Some(inj.clone()),
        ..Default::default()
    }
}

/// A swapper over `map` with [`faulty_config`].
pub fn start_faulty(map: &Mapping, inj: &Arc<FaultInjector>, store: StoreKind) -> Swapper {
    // SAFETY: every test drops its swapper before its mapping.
    unsafe { Swapper::start(faulty_config(inj, store), &[map.region()]) }.unwrap()
}

/// xorshift64*.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The 512 words of page `page` for `seed` (random content).
fn word(seed: u64, page: usize, i: usize) -> u64 {
    mix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((page as u64) << 20) ^ i as u64 ^ 0x5151)
}

/// Writes the content for (`seed`, `page`) at `addr`.
pub fn fill(addr: usize, page: usize, seed: u64) {
    let p = addr as *mut u64;
    for i in 0..PAGE_SIZE / 8 {
        // SAFETY: `addr` is a page of a test mapping managed by the swapper;
        // accesses may fault and be served by it.
        unsafe { p.wrapping_add(i).write_volatile(word(seed, page, i)) };
    }
}

/// Checks the content for (`seed`, `page`) at `addr`; returns mismatching words.
pub fn check(addr: usize, page: usize, seed: u64) -> usize {
    let p = addr as *const u64;
    (0..PAGE_SIZE / 8)
        // SAFETY: as in `fill`.
        .filter(|&i| unsafe { p.wrapping_add(i).read_volatile() } != word(seed, page, i))
        .count()
}

/// Reads one word of the page (a read access).
pub fn touch_read(addr: usize) -> u64 {
    // SAFETY: as in `fill`.
    unsafe { (addr as *const u64).read_volatile() }
}

/// Writes one word of the page.
pub fn touch_write(addr: usize, v: u64) {
    // SAFETY: as in `fill`.
    unsafe { (addr as *mut u64).write_volatile(v) }
}

/// A random permutation of 0..n.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x = mix(x);
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// Resident pages of the VMAs covering `ranges`, from /proc/self/smaps
/// (independent of the swapper's own accounting).
pub fn smaps_rss_pages(ranges: &[GuestRegion]) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut total_kb = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = ranges.iter().any(|r| a < r.addr + r.len && r.addr < b);
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix("Rss:") {
                total_kb += rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap();
            }
        }
    }
    total_kb / 4
}

/// Resident memory sampled in the background, from the kernel's page
/// tables (never from the swapper's own accounting).
///
/// Neither source stops the swapper while it reads: a smaps read walks the
/// page tables, a `PAGEMAP_SCAN` of staging + regions takes two ioctls, and
/// on a 2-core host the sampling thread is often preempted in between. A
/// page evicted from an already-read range while another is installed in a
/// not-yet-read one is then counted twice. So only samples that completed
/// quickly are kept (≤ 250 µs for scans, ≤ 1 ms for smaps), and they are
/// compared with [`SAMPLING_TOLERANCE`]. The exact bound is the swapper's
/// own `peak_resident_pages`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RssMax {
    /// Highest smaps RSS of the guest regions alone.
    pub smaps_region: u64,
    /// Highest PAGEMAP_SCAN count of real pages in staging + regions.
    pub scanned: u64,
    /// Samples kept (scan, smaps).
    pub samples: (u64, u64),
}

/// Tolerance for [`RssMax`] samples (pages moved during one read).
pub const SAMPLING_TOLERANCE: u64 = 32;

/// Samples resident memory of the swapper's regions and staging.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RssMax>>,
}

impl RssSampler {
    pub fn start(sw: &Swapper) -> Self {
        let regions = sw.regions();
        let staging = sw.staging_region();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let pm = swapper::pagemap::Pagemap::open().unwrap();
            let mut m = RssMax::default();
            let mut round = 0u64;
            while !s.load(Ordering::Relaxed) {
                let t = std::time::Instant::now();
                let mut n = pm
                    .count_real(staging.addr, staging.addr + staging.len)
                    .unwrap();
                for r in &regions {
                    n += pm.count_real(r.addr, r.addr + r.len).unwrap();
                }
                if t.elapsed() <= std::time::Duration::from_micros(250) {
                    m.scanned = m.scanned.max(n);
                    m.samples.0 += 1;
                }
                round += 1;
                if round % 16 == 0 {
                    let t = std::time::Instant::now();
                    let r = smaps_rss_pages(&regions);
                    if t.elapsed() <= std::time::Duration::from_millis(1) {
                        m.smaps_region = m.smaps_region.max(r);
                        m.samples.1 += 1;
                    }
                }
            }
            m
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling.
    pub fn finish(mut self) -> RssMax {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }

    /// Asserts every kept sample stayed within `bound` (+ tolerance).
    pub fn assert_within(self, bound: u64) -> RssMax {
        let m = self.finish();
        assert!(m.samples.0 > 0, "no usable sample: {m:?}");
        assert!(
            m.smaps_region <= bound + SAMPLING_TOLERANCE,
            "{m:?} > {bound}"
        );
        assert!(m.scanned <= bound + SAMPLING_TOLERANCE, "{m:?} > {bound}");
        m
    }
}

/// Runs `f(thread_index)` on `n` threads registered as vCPUs; joins them.
pub fn vcpus<F>(sw: &Swapper, n: usize, f: F)
where
    F: Fn(usize) + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let reg = sw.registry();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, reg) = (f.clone(), reg.clone());
            std::thread::spawn(move || {
                reg.register_current(swapper::ThreadKind::Vcpu(i as u32));
                f(i);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("toucher panicked");
    }
}

/// Waits (up to 20 s) until the evictor has nothing left to do: known
/// resident pages at the target and no pool page written behind the
/// swapper's back. For tests that compare two status snapshots.
pub fn quiesce(sw: &Swapper) {
    let t = std::time::Instant::now();
    loop {
        let st = sw.status();
        if st.resident_pages <= st.limit_pages - st.headroom_pages
            && sw.scanned_resident_pages().unwrap() == st.resident_pages
        {
            return;
        }
        if t.elapsed() > std::time::Duration::from_secs(20) {
            let pm = swapper::pagemap::Pagemap::open().unwrap();
            let mut real = Vec::new();
            for r in sw.regions() {
                let mut v = Vec::new();
                pm.scan(
                    r.addr,
                    r.addr + r.len,
                    swapper::pagemap::Query::REAL,
                    &mut v,
                )
                .unwrap();
                real.extend(v.iter().map(|x| {
                    (
                        (x.start as usize - r.addr) / PAGE_SIZE,
                        (x.end - x.start) / 4096,
                    )
                }));
            }
            let s = sw.staging_region();
            panic!(
                "never idle: scanned {} (region runs {real:?}, staging {}) {st:?}",
                sw.scanned_resident_pages().unwrap(),
                pm.count_real(s.addr, s.addr + s.len).unwrap()
            );
        }
        std::thread::yield_now();
    }
}

/// The swapper's budget counters agree with its per-state page counts.
pub fn assert_consistent(st: &swapper::SwapperStatus) {
    let p = &st.pages;
    assert_eq!(
        st.committed_pages,
        p.zero_mapped + p.resident + p.staged,
        "{st:?}"
    );
    assert_eq!(st.resident_pages, p.resident + p.staged, "{st:?}");
    assert_eq!(
        st.region_pages,
        p.absent + p.zero_mapped + p.resident + p.staged + p.evicted + p.ballooned + p.poisoned
    );
    // Evicted pages have a slot; resident ones may keep one (clean copy).
    assert!(st.store_slots >= p.evicted, "{st:?}");
    assert!(
        st.store_slots <= p.evicted + p.resident + p.staged,
        "{st:?}"
    );
}

/// How long the swapper may change nothing at all before [`settle`] gives up.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest [`settle`] waits, however busy the swapper keeps.
pub const SETTLE_CAP: std::time::Duration = std::time::Duration::from_secs(600);

/// What changes when the swapper does any work: its counters (less the evictor's
/// round counts, which tick even while it stands still) and its page counts.
fn work_done(
    st: &swapper::SwapperStatus,
) -> (
    swapper::status::CounterSnapshot,
    swapper::status::PageCounts,
) {
    let mut c = st.counters.clone();
    c.evictor_rounds = 0;
    c.evictor_backoffs = 0;
    c.evictor_no_victim = 0;
    c.evictor_busy_stops = 0;
    c.scans = 0;
    (c, st.pages.clone())
}

/// Waits for the background threads to bring the swapper to `cond`: a
/// liveness check, not a speed check. It waits as long as the swapper keeps
/// working (a loaded host or a slow disk only makes it slower) and fails only
/// when nothing changed for [`STALL`], or after [`SETTLE_CAP`]. Returns the
/// status that met `cond`, or the last status seen with how long the swapper
/// had stood still.
pub fn settle(
    sw: &Swapper,
    mut cond: impl FnMut(&swapper::SwapperStatus) -> bool,
) -> Result<swapper::SwapperStatus, String> {
    let start = std::time::Instant::now();
    let mut last = sw.status();
    let mut since = std::time::Instant::now();
    loop {
        if cond(&last) {
            return Ok(last);
        }
        if since.elapsed() >= STALL || start.elapsed() >= SETTLE_CAP {
            return Err(format!(
                "not settled after {:.1} s, with no work done for the last {:.1} s: {last:?}\n\
                 threads (tid comm state wchan [kernel stack]):\n{}",
                start.elapsed().as_secs_f64(),
                since.elapsed().as_secs_f64(),
                base::threads::dump()
            ));
        }
        // Polling a condition, not standing in for synchronisation: the evictor
        // has no completion to wait on, and a hot status loop would slow it.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let st = sw.status();
        if work_done(&st) != work_done(&last) {
            since = std::time::Instant::now();
        }
        last = st;
    }
}

/// Shuts `sw` down and checks the policy's bookkeeping: once the threads are
/// stopped every known-resident page is one the policy tracks (a page missing
/// from it could never be evicted again, and residency would stay over the
/// limit for good). Returns the final status.
pub fn shutdown(sw: Swapper) -> swapper::SwapperStatus {
    let end = sw.shutdown();
    assert_eq!(
        end.policy_pages, end.resident_pages,
        "pages resident but not tracked by the policy: {end:?}"
    );
    end
}

/// A device thread (`Device(7)`) reads `addr` through the kernel: the read
/// must be refused (the page poisoned), never served.
pub fn device_read_refused(sw: &Swapper, addr: usize) {
    let reg = sw.registry();
    let got = std::thread::spawn(move || {
        reg.register_current(swapper::ThreadKind::Device(7));
        kernel_read(addr)
    })
    .join()
    .unwrap();
    assert_eq!(got, Err(libc::EFAULT), "wrong data must never be served");
}

/// Reads 8 bytes of `addr` through the kernel (like a VMM device thread
/// doing I/O on guest memory): `Err(errno)` if the kernel refuses.
pub fn kernel_read(addr: usize) -> Result<u64, i32> {
    let mut v = 0u64;
    let local = libc::iovec {
        iov_base: (&mut v as *mut u64).cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: valid iovecs; the remote range is in this process.
    let r = unsafe { libc::process_vm_readv(std::process::id() as i32, &local, 1, &remote, 1, 0) };
    if r == 8 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

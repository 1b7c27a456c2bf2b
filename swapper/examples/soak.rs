//! Soak of the host swapper without KVM: page round trips (eviction to the
//! store, swap-in) over a userfaultfd-registered anonymous mapping, through
//! every store (memory, lz4, file) × policy (fifo, random, clock) × dirty
//! tracking (on, off), with store faults injected at random moments. Every
//! page's content is checked on every read.
//!
//! `cargo run --release -p swapper --example soak -- [--round-trips N]
//! [--pages N] [--seed S] [--quick]`, or `scripts/soak.sh [ROUND_TRIPS]`.
//! Needs userfaultfd (root, or access to `/dev/userfaultfd`).
//!
//! Each configuration gets an equal share of the round trips (swap-ins, as
//! `SwapperStatus::swap_ins` counts them): a fresh swapper with a limit of a
//! quarter of the region; every page written with seeded content; then
//! passes in which two vCPU threads read every page in a random order,
//! check it and rewrite a random part of them (none, a quarter, a half or
//! all: read-only passes send clean pages back without a write), until the
//! share is reached; then a final check of every page. One page version in
//! 32 is all zeros (the evictor drops those instead of storing them).
//!
//! Store faults injected (kind, size and moment drawn from the seed, every
//! 20–200 ms, 2–20 ms with `--quick`), only those the swapper promises to
//! survive without losing a page (`swapper/tests/failures.rs`: the page
//! stays resident and is written again later):
//! - write errors (`ENOSPC`, `EIO`) or torn (short) writes, in bursts of
//!   1–4 writes, one event in 128 a long burst of 5–16, one in 128 an
//!   outage (every write fails for 1–10 ms); after such a run of failures
//!   the swapper stops writing for up to a second (its write backoff);
//! - slow reads and writes (bursts of 1–16, 10–200 µs each).
//!
//! Read errors, short reads and corrupt reads are not injected: by design
//! they are fatal for their page (poisoned, never served), which
//! `tests/failures.rs` checks; here every page must survive. So any fatal
//! error is a failure: it is printed, and the next access to the poisoned
//! page ends the run (SIGBUS, exit status 3).
//!
//! A wrong page is a read whose content differs from what was last written
//! to that page. An untracked page is one still resident at shutdown that the
//! eviction policy had lost track of (it could never be evicted again). Exit
//! status: 0 when no page was wrong or untracked and every configuration
//! reached its share; 1 otherwise (the reason printed); 2 for
//! a bad command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapper::*;

const USAGE: &str = "usage: soak [--round-trips N] [--pages N] [--seed S] [--quick]
  --round-trips N  swap-ins to reach in total, shared equally by the 18 configurations
                   (default 100000000; 18 ..= 10000000000)
  --pages N        region size in 4 KiB pages (default 16384 = 64 MiB; 1024 ..= 1048576);
                   the resident limit is a quarter of it
  --seed S         seed of page contents, access orders and injected faults (default 1)
  --quick          a tiny run (1024 pages, 36000 round trips unless given otherwise;
                   faults injected ten times as often)";

const DEFAULT_ROUND_TRIPS: u64 = 100_000_000;
const DEFAULT_PAGES: u64 = 16384;
const QUICK_ROUND_TRIPS: u64 = 36_000;
const QUICK_PAGES: u64 = 1024;
const MAX_ROUND_TRIPS: u64 = 10_000_000_000;
const MIN_PAGES: u64 = 1024;
const MAX_PAGES: u64 = 1 << 20;
/// vCPU threads touching the region.
const THREADS: usize = 2;
/// Wrong pages reported in detail (all are counted).
const MAX_REPORTED: u64 = 20;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// A configuration that brings no swap-in for this long has failed (the
/// swapper's write backoff is at most 1 s).
const STALL: Duration = Duration::from_secs(30);

const POLICIES: [PolicyKind; 3] = [PolicyKind::Fifo, PolicyKind::Random, PolicyKind::Clock];
const STORES: [&str; 3] = ["memory", "lz4", "file"];

/// xorshift64* (the tests' generator).
fn mix(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A seeded generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(mix(seed ^ GOLDEN) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A random permutation of `0..n`.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        v.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    v
}

// ---------------------------------------------------------------- command line

struct Args {
    round_trips: u64,
    pages: u64,
    seed: u64,
    /// Mean time between injected faults, µs (10× shorter with `--quick`,
    /// whose configurations last a fraction of a second).
    fault_gap_us: u64,
}

/// A number (decimal, `_` separators allowed, or `0x` hex) in `min..=max`.
fn number(flag: &str, text: &str, min: u64, max: u64) -> Result<u64, String> {
    let t = text.replace('_', "");
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse::<u64>(),
    };
    let n = parsed.map_err(|_| format!("{flag}: '{text}' is not a number"))?;
    if n < min || n > max {
        return Err(format!("{flag}: {n} is out of range ({min} ..= {max})"));
    }
    Ok(n)
}

/// The arguments after the program name; `Ok(None)` for `--help`.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let (mut round_trips, mut pages, mut seed, mut quick) = (None, None, 1, false);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = String>| match inline.clone() {
            Some(v) => Ok(v),
            None => it.next().ok_or_else(|| format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" if inline.is_none() => quick = true,
            "--round-trips" => {
                let v = value(&mut it)?;
                round_trips = Some(number(
                    &flag,
                    &v,
                    (POLICIES.len() * STORES.len() * 2) as u64,
                    MAX_ROUND_TRIPS,
                )?);
            }
            "--pages" => pages = Some(number(&flag, &value(&mut it)?, MIN_PAGES, MAX_PAGES)?),
            "--seed" => seed = number(&flag, &value(&mut it)?, 0, u64::MAX)?,
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    let (rt, pg) = if quick {
        (QUICK_ROUND_TRIPS, QUICK_PAGES)
    } else {
        (DEFAULT_ROUND_TRIPS, DEFAULT_PAGES)
    };
    Ok(Some(Args {
        round_trips: round_trips.unwrap_or(rt),
        pages: pages.unwrap_or(pg),
        seed,
        fault_gap_us: if quick { 11_000 } else { 110_000 },
    }))
}

// ---------------------------------------------------------------- the region

/// An anonymous private mapping, unmapped on drop (after the swapper over it
/// is shut down: [`run_config`] drops the swapper first).
struct Mapping {
    addr: usize,
    pages: usize,
}

impl Mapping {
    fn new(pages: usize) -> Result<Self, String> {
        // SAFETY: a fresh anonymous private mapping; nothing else is touched.
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
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Self {
            addr: p as usize,
            pages,
        })
    }

    fn region(&self) -> GuestRegion {
        GuestRegion {
            addr: self.addr,
            len: self.pages * PAGE_SIZE,
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`, which nothing uses any
        // more (its swapper is shut down and its threads joined).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.pages * PAGE_SIZE) };
    }
}

/// Whether version `v` of page `p` is all zeros (one in 32).
fn zero_version(v: u64, p: usize) -> bool {
    mix(v ^ (p as u64).wrapping_mul(GOLDEN)) % 32 == 0
}

/// Word `i` of version `v` of page `p`.
fn word(v: u64, p: usize, i: usize) -> u64 {
    if zero_version(v, p) {
        0
    } else {
        mix(v.wrapping_mul(GOLDEN) ^ ((p as u64) << 20) ^ i as u64 ^ 0x5151)
    }
}

/// Writes version `v` of page `p` at `addr`.
fn fill(addr: usize, p: usize, v: u64) {
    let w = addr as *mut u64;
    for i in 0..PAGE_SIZE / 8 {
        // SAFETY: `addr` is a page of the soak's mapping, which the swapper
        // manages and no Rust reference covers; the access may fault and be
        // served by the swapper.
        unsafe { w.wrapping_add(i).write_volatile(word(v, p, i)) };
    }
}

/// Mismatching words of page `p` at `addr` against version `v`, and the
/// first one (index, found, expected).
fn check(addr: usize, p: usize, v: u64) -> (usize, Option<(usize, u64, u64)>) {
    let w = addr as *const u64;
    let (mut bad, mut first) = (0, None);
    for i in 0..PAGE_SIZE / 8 {
        // SAFETY: as in `fill`.
        let got = unsafe { w.wrapping_add(i).read_volatile() };
        let want = word(v, p, i);
        if got != want {
            bad += 1;
            first.get_or_insert((i, got, want));
        }
    }
    (bad, first)
}

/// The pages of one configuration's region and what was last written to
/// each.
struct Pages {
    addr: usize,
    label: String,
    /// Version last written to each page (each page is touched by one
    /// thread per pass; passes are joined).
    version: Vec<AtomicU64>,
    verified: AtomicU64,
    wrong: AtomicU64,
}

/// Wrong pages reported in detail so far (whole run).
static REPORTED: AtomicU64 = AtomicU64::new(0);

impl Pages {
    fn addr(&self, p: usize) -> usize {
        self.addr + p * PAGE_SIZE
    }

    fn write(&self, p: usize, v: u64) {
        fill(self.addr(p), p, v);
        self.version[p].store(v, Relaxed);
    }

    /// Checks page `p` against its last version; a wrong page is counted,
    /// reported and written afresh with `fresh` (so later reads test new
    /// content, not the same damage again).
    fn verify(&self, p: usize, pass: u64, fresh: u64) {
        let v = self.version[p].load(Relaxed);
        let (bad, first) = check(self.addr(p), p, v);
        self.verified.fetch_add(1, Relaxed);
        if bad == 0 {
            return;
        }
        self.wrong.fetch_add(1, Relaxed);
        if REPORTED.fetch_add(1, Relaxed) < MAX_REPORTED {
            let (i, got, want) = first.unwrap_or_default();
            eprintln!(
                "soak: WRONG PAGE: {} pass {pass}: page {p} (addr {:#x}) version {v:#x}{}: \
                 {bad} of 512 words differ, first word {i}: {got:#018x}, expected {want:#018x}",
                self.label,
                self.addr(p),
                if zero_version(v, p) { " (zeros)" } else { "" },
            );
        }
        self.write(p, fresh);
    }
}

/// Runs `f(i)` on [`THREADS`] threads registered as vCPU `i`; joins them.
fn on_vcpus(sw: &Swapper, f: impl Fn(usize) + Sync) {
    let reg = sw.registry();
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let (f, reg) = (&f, reg.clone());
            s.spawn(move || {
                reg.register_current(ThreadKind::Vcpu(i as u32));
                f(i)
            });
        }
    });
}

// ---------------------------------------------------------------- faults

/// Faults armed by [`inject`].
#[derive(Default)]
struct Armed {
    /// Write-error bursts and outages.
    write_bursts: u64,
    /// Torn-write bursts and outages.
    short_bursts: u64,
    /// Of those, long bursts.
    long_bursts: u64,
    /// Of those, outages.
    outages: u64,
    slow_bursts: u64,
}

/// Sleeps `d` or until `stop`; whether to go on.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(1)));
    }
}

/// Arms a random survivable store fault every 0.18–1.82 × `gap_us` (20–200
/// ms by default, 2–20 ms with `--quick`) until `stop`.
///
/// The swapper backs off after consecutive write failures (1 ms doubling to
/// 1 s, `Shared::write_result`) and meanwhile evicts nothing: the pages stay
/// resident over the limit, and touching them brings no swap-in. So most
/// events are short bursts (1–4 failed writes: a few ms without eviction);
/// one in 128 is a long burst (5–16 writes) and one in 128 an outage (every
/// write fails for 1–10 ms), each about a second without eviction.
fn inject(inj: &FaultInjector, stop: &AtomicBool, seed: u64, gap_us: u64) -> Armed {
    let mut rng = Rng::new(seed);
    let mut armed = Armed::default();
    while nap(
        Duration::from_micros(rng.range(gap_us * 2 / 11, gap_us * 20 / 11)),
        stop,
    ) {
        let errno = if rng.next() % 2 == 0 {
            libc::ENOSPC
        } else {
            libc::EIO
        };
        // Torn writes rather than errors.
        let torn = rng.next() % 2 == 0;
        let fail = |n: u64| {
            if torn {
                inj.short_writes(n);
            } else {
                inj.fail_writes(n, errno);
            }
        };
        match rng.next() % 256 {
            0..=223 => fail(rng.range(1, 4)),
            224..=253 => {
                let delay = Duration::from_micros(rng.range(10, 200));
                inj.slow(rng.range(1, 16), delay);
                armed.slow_bursts += 1;
                continue;
            }
            254 => {
                fail(rng.range(5, 16));
                armed.long_bursts += 1;
            }
            _ => {
                fail(base::countdown::FOREVER);
                armed.outages += 1;
                nap(Duration::from_micros(rng.range(1000, 10_000)), stop);
                fail(0);
            }
        }
        if torn {
            armed.short_bursts += 1;
        } else {
            armed.write_bursts += 1;
        }
    }
    inj.clear();
    armed
}

// ---------------------------------------------------------------- one configuration

/// One point of the matrix.
struct Conf {
    store: &'static str,
    policy: PolicyKind,
    dirty_tracking: bool,
}

impl Conf {
    fn label(&self) -> String {
        format!(
            "store={} policy={} dirty_tracking={}",
            self.store,
            self.policy.name(),
            if self.dirty_tracking { "on" } else { "off" }
        )
    }
}

/// What one configuration did.
#[derive(Default)]
struct Outcome {
    swap_ins: u64,
    store_reads: u64,
    evictions: u64,
    clean_drops: u64,
    injected: u64,
    write_errors: u64,
    verified: u64,
    wrong: u64,
    untracked: u64,
    fatal: u64,
    passes: u64,
    reached: bool,
    elapsed: Duration,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.swap_ins as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs one configuration until `share` swap-ins, then checks every page.
fn run_config(
    conf: &Conf,
    share: u64,
    pages: usize,
    seed: u64,
    fault_gap_us: u64,
    dir: &Path,
) -> Result<Outcome, String> {
    let label = conf.label();
    let map = Mapping::new(pages)?;
    let inj = FaultInjector::new();
    let fatal = Arc::new(AtomicU64::new(0));
    let (f, l) = (fatal.clone(), label.clone());
    let store = match conf.store {
        "memory" => StoreKind::Memory,
        "lz4" => StoreKind::Lz4,
        _ => StoreKind::File {
            dir: dir.to_path_buf(),
            direct: false,
        },
    };
    let cfg = SwapperConfig {
        limit_bytes: (pages / 4 * PAGE_SIZE) as u64,
        store,
        policy: conf.policy,
        dirty_tracking: conf.dirty_tracking,
        checksums: true,
        handler_threads: 2,
        fault_injector: Some(inj.clone()),
        on_fatal: Some(Arc::new(move |e: &FatalError| {
            f.fetch_add(1, Relaxed);
            eprintln!(
                "soak: FATAL ERROR: {l}: {e} (no read fault is injected: every page must survive)"
            );
        })),
        seed: mix(seed ^ 0x7001),
        ..Default::default()
    };
    // SAFETY: `map` is a private anonymous mapping no Rust reference covers;
    // the swapper is shut down (below) before `map` is dropped.
    let sw = unsafe { Swapper::start(cfg, &[map.region()]) }
        .map_err(|e| format!("{label}: starting the swapper: {e}"))?;
    if sw.status().passive {
        return Err(format!("{label}: the swapper is passive (region fits)"));
    }
    let state = Pages {
        addr: map.addr,
        label: label.clone(),
        version: (0..pages).map(|_| AtomicU64::new(0)).collect(),
        verified: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
    };
    let stop = AtomicBool::new(false);
    let mut rng = Rng::new(seed);
    let t = Instant::now();
    let (armed, passes, reached) = std::thread::scope(|s| {
        let injector = s.spawn(|| inject(&inj, &stop, mix(seed ^ 0x1ec7), fault_gap_us));
        let v0 = rng.next();
        on_vcpus(&sw, |i| {
            for p in (i..pages).step_by(THREADS) {
                state.write(p, v0);
            }
        });
        let (mut passes, mut last, mut progress) = (0u64, 0u64, Instant::now());
        let mut outcome = Ok(());
        loop {
            let swap_ins = sw.status().swap_ins();
            if swap_ins >= share {
                break;
            }
            // While writes back off (up to 1 s) every page may be resident:
            // passes then bring no swap-in for a while.
            if swap_ins > last {
                (last, progress) = (swap_ins, Instant::now());
            } else if passes > 0 {
                // Leave the CPUs to others until writes resume.
                std::thread::sleep(Duration::from_millis(20));
            }
            if progress.elapsed() > STALL {
                outcome = Err(format!(
                    "{label}: no swap-in for {STALL:?} ({swap_ins} of {share})"
                ));
                break;
            }
            if fatal.load(Relaxed) > 0 {
                outcome = Err(format!("{label}: fatal errors"));
                break;
            }
            passes += 1;
            // Rewrite none, a quarter, half or all of the pages.
            let quarters = [0, 1, 2, 4][(rng.next() % 4) as usize];
            let (order, v) = (rng.next(), rng.next());
            on_vcpus(&sw, |i| {
                for p in shuffled(pages, order ^ i as u64)
                    .into_iter()
                    .filter(|p| p % THREADS == i)
                {
                    state.verify(p, passes, v);
                    if mix(v ^ p as u64) % 4 < quarters {
                        state.write(p, v);
                    }
                }
            });
        }
        let reached = outcome.map(|()| sw.status().swap_ins() >= share);
        // The final check of every page (faults still injected).
        let fresh = rng.next();
        on_vcpus(&sw, |i| {
            for p in (i..pages).step_by(THREADS) {
                state.verify(p, passes + 1, fresh);
            }
        });
        stop.store(true, Relaxed);
        let armed = injector.join().unwrap_or_default();
        (armed, passes, reached)
    });
    let elapsed = t.elapsed();
    let injected = inj.injected();
    let st = sw.shutdown();
    drop(map);
    let c = &st.counters;
    let out = Outcome {
        swap_ins: st.swap_ins(),
        store_reads: c.swapin_store,
        evictions: c.evictions,
        clean_drops: c.silent_writes_avoided,
        injected,
        write_errors: c.write_errors,
        verified: state.verified.load(Relaxed),
        wrong: state.wrong.load(Relaxed),
        untracked: st.resident_pages.abs_diff(st.policy_pages),
        fatal: fatal
            .load(Relaxed)
            .max(st.fatal_errors)
            .max(c.integrity_errors + c.store_read_errors),
        passes,
        reached: reached.as_ref().is_ok_and(|r| *r),
        elapsed,
    };
    println!(
        "soak: {label} swap_ins={} (store {}) evictions={} clean_drops={} faults_injected={} \
         (write_errors={}; armed: {} error, {} torn, of which {} long and {} outages; {} slow) \
         verified={} wrong={} untracked={} fatal={} passes={} elapsed={:.1}s rate={:.0}/s",
        out.swap_ins,
        out.store_reads,
        out.evictions,
        out.clean_drops,
        out.injected,
        out.write_errors,
        armed.write_bursts,
        armed.short_bursts,
        armed.long_bursts,
        armed.outages,
        armed.slow_bursts,
        out.verified,
        out.wrong,
        out.untracked,
        out.fatal,
        out.passes,
        out.elapsed.as_secs_f64(),
        out.rate(),
    );
    reached?;
    Ok(out)
}

// ---------------------------------------------------------------- main

/// Ends the process on SIGBUS (an access to a page the swapper poisoned
/// after a fatal error, printed before) with a message and status 3.
extern "C" fn on_sigbus(_: libc::c_int) {
    const MSG: &[u8] =
        b"soak: FAIL: SIGBUS: a vCPU thread read a page the swapper poisoned (see the fatal error above)\n";
    // SAFETY: write(2) is async-signal-safe; MSG is a valid buffer.
    unsafe { libc::write(2, MSG.as_ptr().cast(), MSG.len()) };
    // SAFETY: _exit(2) is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(3) };
}

fn catch_sigbus() -> Result<(), String> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_sigbus),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions.
    unsafe { sigaction(Signal::SIGBUS, &act) }
        .map(|_| ())
        .map_err(|e| format!("sigaction(SIGBUS): {e}"))
}

/// The file store's directory's parent: disk-backed `/var/tmp` when there
/// is one (`/tmp` may be tmpfs), else the system's temporary directory.
fn scratch_base() -> PathBuf {
    let var_tmp = Path::new("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn run(args: &Args) -> Result<(), String> {
    catch_sigbus()?;
    let dir = base::scratch::dir_in(&scratch_base(), "swaplab-soak-")
        .map_err(|e| format!("scratch directory: {e}"))?;
    let mut confs = Vec::new();
    for store in STORES {
        for policy in POLICIES {
            for dirty_tracking in [true, false] {
                confs.push(Conf {
                    store,
                    policy,
                    dirty_tracking,
                });
            }
        }
    }
    let n = confs.len() as u64;
    let pages = args.pages as usize;
    println!(
        "soak: {} round trips over {n} configurations ({} each), {pages} pages ({} MiB, limit {} MiB), \
         seed {}, file store in {}",
        args.round_trips,
        args.round_trips / n,
        (pages * PAGE_SIZE) >> 20,
        (pages / 4 * PAGE_SIZE) >> 20,
        args.seed,
        dir.path().display(),
    );
    let mut total = Outcome::default();
    let mut failures = Vec::new();
    let t = Instant::now();
    for (k, conf) in confs.iter().enumerate() {
        let share = args.round_trips / n + u64::from((k as u64) < args.round_trips % n);
        let seed = mix(args.seed ^ (k as u64 + 1).wrapping_mul(GOLDEN));
        let o = run_config(conf, share, pages, seed, args.fault_gap_us, dir.path())?;
        if o.wrong > 0 {
            failures.push(format!("{}: {} wrong pages", conf.label(), o.wrong));
        }
        if o.untracked > 0 {
            failures.push(format!(
                "{}: {} resident pages the policy lost track of",
                conf.label(),
                o.untracked
            ));
        }
        if o.fatal > 0 {
            failures.push(format!("{}: {} fatal errors", conf.label(), o.fatal));
        }
        if !o.reached {
            failures.push(format!(
                "{}: {} swap-ins of {share}",
                conf.label(),
                o.swap_ins
            ));
        }
        total.swap_ins += o.swap_ins;
        total.store_reads += o.store_reads;
        total.evictions += o.evictions;
        total.clean_drops += o.clean_drops;
        total.injected += o.injected;
        total.write_errors += o.write_errors;
        total.verified += o.verified;
        total.wrong += o.wrong;
        total.untracked += o.untracked;
        total.fatal += o.fatal;
        total.passes += o.passes;
    }
    total.elapsed = t.elapsed();
    println!(
        "soak: total configurations={n} swap_ins={} (store {}) evictions={} clean_drops={} \
         faults_injected={} (write_errors={}) verified={} wrong={} untracked={} fatal={} \
         passes={} elapsed={:.1}s rate={:.0}/s",
        total.swap_ins,
        total.store_reads,
        total.evictions,
        total.clean_drops,
        total.injected,
        total.write_errors,
        total.verified,
        total.wrong,
        total.untracked,
        total.fatal,
        total.passes,
        total.elapsed.as_secs_f64(),
        total.rate(),
    );
    if failures.is_empty() {
        println!(
            "soak: PASS: {} swap-ins, 0 wrong pages, every configuration reached its share",
            total.swap_ins
        );
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            // Ignored: a closed stdout (`soak --help | head -1`) is no error.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("soak: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("soak: FAIL: {e}");
        std::process::exit(1);
    }
}

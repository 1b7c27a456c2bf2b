//! `swaplab bench host-swap`: in one run, the same probe workloads under swaplab's
//! userfaultfd swapper and under kernel swap on the same class of medium, and the
//! ratios the host-swapper issue sets targets for.
//!
//! - Media: memory (uffd memory store ↔ kernel zram) and file (uffd store file ↔
//!   kernel swap file), both in `--store-path`.
//! - Workloads: uniform random, sequential re-scan, zipf 90/10 (the exponent that puts
//!   90% of the accesses on 10% of the pages, computed for the page count).
//! - Every figure comes from the passes after the first (pass 1 first-touches test
//!   RAM): per-fault p50/p99 as the guest measured them (accesses slower than
//!   [`runner::probe_run::FAULT_THRESHOLD_NS`]), accesses per second, faults per pass.
//! - The floor ([`swapper::floor`]): the bare userfaultfd round trip (a missing fault
//!   answered with `UFFDIO_COPY` of a page prepared in advance) from the same probe
//!   vCPU, random pattern, in the same run. Every uffd fault p50 is also given as a
//!   ratio to the floor's: what is above it is the swapper's own work.
//! - The swapper runs with checksums on (crc32 on every eviction, verified on every
//!   swap-in), as it runs everywhere else.
//! - Access awareness: `hotcold` 20:80 (20% of the pages take 80% of the accesses; the
//!   first pass loads every page) at a limit of half of test RAM, under fifo and clock:
//!   store swap-ins per pass in the steady state (the second half of the passes) and
//!   in the clock's warm-up (pass 3 to the middle: it learns the hot set only as its
//!   hand comes round), and the minor faults the clock pays to see access.
//! - Also: the swapper with a limit ≥ test RAM against plain memory (first-touch pass
//!   and all passes, median of three interleaved pairs), and zipf swap-ins under clock
//!   against fifo.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;
use swapper::kswap::SwapKind;
use swapper::{PolicyKind, StoreKind, SwapperConfig};
use workloads::probe::Pattern;

use base::stats::midpoint_median;
use base::ByteSize;
use hostsys::signals::SignalScope;
use report::stats::fmt_ns;
use runner::cli::usage;
use runner::probe_run::kernel::{default_cold_sweep_ms, is_root, KernelSettings};
use runner::probe_run::plan::{run_plan, ProbeOutput, SwapPlan};
use runner::probe_run::ProbeConfig;

/// `swaplab bench host-swap`.
#[derive(Debug, Clone)]
pub struct HostSwapOptions {
    /// Test RAM.
    pub mem: ByteSize,
    /// Host resident limit (the uffd limit and the kernel's guest budget).
    pub limit: ByteSize,
    /// Passes per run (the first is not measured).
    pub passes: u32,
    /// Passes of the zipf runs (its touched set grows over the first passes).
    pub zipf_passes: u32,
    /// Passes of the hotcold runs (the first half is the load and the
    /// policy's warm-up; the second half is measured).
    pub hotcold_passes: u32,
    /// uffd prefetch cluster, pages.
    pub prefetch: u32,
    /// uffd fault-handler threads.
    pub handlers: usize,
    /// uffd handler busy-poll before sleeping, µs.
    pub spin_us: u32,
    /// Directory for the store file and the swap file (not tmpfs).
    pub store_path: PathBuf,
    /// Host CPU for every run (uffd and kernel alike), or `none` to let the
    /// scheduler place threads [default: the CPU the bench starts on].
    pub cpu: Option<String>,
    /// Print one JSON object instead of tables.
    pub json: bool,
    /// Run the VMM's and the swapper's threads under their seccomp filters
    /// (`--no-seccomp` turns this off).
    pub seccomp: bool,
}

/// Pins this thread (and the threads it starts from now on) to `--cpu`'s
/// CPU, and returns it.
pub(crate) fn pin_chosen_cpu(flag: Option<&str>) -> anyhow::Result<Option<usize>> {
    let cpu = cpu_of(flag)?;
    if let Some(c) = cpu {
        hostsys::cpu::pin_to_cpu(c).map_err(|e| runner::cli::usage(format!("--cpu {c}: {e}")))?;
    }
    Ok(cpu)
}

/// `--cpu`'s CPU: `N`, none for `none`, else the current one.
pub(crate) fn cpu_of(flag: Option<&str>) -> anyhow::Result<Option<usize>> {
    match flag {
        Some("none") => Ok(None),
        Some(n) => n
            .parse()
            .map(Some)
            .map_err(|_| usage(format!("--cpu takes a CPU number or none, got {n}"))),
        None => Ok(nix::sched::sched_getcpu().ok()),
    }
}

/// Most passes accepted.
const MAX_PASSES: u32 = 100;
/// Idle comparison repetitions (median taken).
const IDLE_PAIRS: usize = 3;
/// The hotcold split of the policy comparison: the Pareto 20:80.
const HOTCOLD: Pattern = Pattern::HotCold {
    hot_pct: 20,
    access_pct: 80,
};
/// Passes no hotcold figure counts: the load, and the pass that turns the
/// load's residency into the policy's.
const HOTCOLD_LOAD_PASSES: usize = 2;
/// Fewest hotcold passes: the load passes, a warm-up pass and a steady one.
const HOTCOLD_MIN_PASSES: u32 = HOTCOLD_LOAD_PASSES as u32 + 2;

/// Passes of a hotcold run of `passes` that its steady-state figures leave
/// out: the first half. The clock learns the hot set only as its hand comes
/// round to pages it moved aside, which takes more than a revolution; the
/// passes between the load and the middle are its warm-up, reported apart.
fn hotcold_warm_passes(passes: u32) -> usize {
    (passes as usize / 2).max(HOTCOLD_LOAD_PASSES + 1)
}

/// One probe run's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunFigures {
    /// `memory`, `lz4`, `file`, `plain` for the idle comparison, or `none`
    /// for the floor.
    pub medium: String,
    /// `random`, `sequential`, `zipf`, `hotcold`, or `idle`.
    pub workload: String,
    /// `uffd`, `kernel`, `floor` or `none`.
    pub swap: String,
    /// uffd policy.
    pub policy: Option<String>,
    /// Median latency of faulted accesses (passes after the first), ns.
    pub fault_p50_ns: Option<u64>,
    /// Their 99th percentile, ns.
    pub fault_p99_ns: Option<u64>,
    /// Accesses per second (passes after the first).
    pub accesses_per_sec: Option<f64>,
    /// Accesses per second over all passes.
    pub all_passes_accesses_per_sec: Option<f64>,
    /// Accesses per second in the first pass (first touches of test RAM).
    pub first_pass_accesses_per_sec: Option<f64>,
    /// Faulted accesses per pass (passes after the first), as the guest saw them.
    pub faults_per_pass: Option<f64>,
    /// Swap-ins per pass (passes after the first; hotcold: its second half): pages
    /// brought back from the store, by a fault or by a prefetch the guest then used
    /// (uffd store + prefetch hits), or the kernel's major faults. Minor faults (a
    /// page the clock moved aside, taken back without I/O) are not swap-ins, as the
    /// kernel's swap-cache hits are not.
    pub swap_ins_per_pass: Option<f64>,
    /// uffd minor faults per pass, over the same passes.
    pub minor_faults_per_pass: Option<f64>,
    /// hotcold: swap-ins per pass in the policy's warm-up (from pass 3 to
    /// the middle of the run).
    pub warmup_swap_ins_per_pass: Option<f64>,
    /// The swapper's own time for a store swap-in (the fault read to the
    /// page copied in, store read included), p50, ns (uffd runs).
    pub handler_store_p50_ns: Option<u64>,
    /// Fault p50 ÷ the floor's (uffd runs).
    pub p50_floor_ratio: Option<f64>,
    /// Pages written out over the run.
    pub evictions: Option<u64>,
    /// Swap-ins over the run.
    pub swap_ins: Option<u64>,
    /// Peak resident test-RAM pages.
    pub peak_resident_pages: Option<u64>,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

/// uffd ÷ kernel on one medium and workload.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Medium.
    pub medium: String,
    /// Workload.
    pub workload: String,
    /// Fault p50 ratio.
    pub p50_ratio: Option<f64>,
    /// Fault p99 ratio.
    pub p99_ratio: Option<f64>,
    /// Throughput ratio.
    pub throughput_ratio: Option<f64>,
    /// Faults-per-pass ratio.
    pub faults_ratio: Option<f64>,
    /// The uffd run's fault p50 ÷ the floor's.
    pub p50_floor_ratio: Option<f64>,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct HostSwapBench {
    /// Test RAM.
    pub mem_bytes: u64,
    /// Limit.
    pub limit_bytes: u64,
    /// Passes per run.
    pub passes: u32,
    /// Passes per zipf run.
    pub zipf_passes: u32,
    /// Passes per hotcold run.
    pub hotcold_passes: u32,
    /// Whether the swapper checksummed every page (always, here).
    pub checksums: bool,
    /// uffd prefetch cluster.
    pub prefetch: u32,
    /// uffd handler threads.
    pub handlers: usize,
    /// uffd handler busy-poll, µs.
    pub spin_us: u32,
    /// Host CPU every run was pinned to (none: not pinned).
    pub cpu: Option<usize>,
    /// The zipf exponent used (90% of accesses on 10% of pages).
    pub zipf_skew: f64,
    /// The kernel runs' cold sweep period (see `probe_run::kernel`), ms.
    pub kernel_cold_sweep_ms: u64,
    /// Why the kernel runs were skipped, if they were.
    pub kernel_skipped: Option<String>,
    /// The floor's random fault p50: the bare userfaultfd round trip, ns.
    pub floor_p50_ns: Option<u64>,
    /// Its p99, ns.
    pub floor_p99_ns: Option<u64>,
    /// Random fault p50, uffd memory store ÷ the floor (target ≤ 1.15).
    pub random_p50_floor_ratio: Option<f64>,
    /// The same, lz4 store (target ≤ 1.3).
    pub random_p50_floor_ratio_lz4: Option<f64>,
    /// The same, store file (target ≤ 1.3).
    pub random_p50_floor_ratio_file: Option<f64>,
    /// The hotcold limit: half of test RAM.
    pub hotcold_limit_bytes: u64,
    /// hotcold swap-ins per pass in the steady state (the second half of
    /// the passes), clock ÷ fifo (target ≤ 0.7).
    pub hotcold_swap_in_ratio: Option<f64>,
    /// The same in the clock's warm-up (pass 3 to the middle of the run).
    pub hotcold_warmup_swap_in_ratio: Option<f64>,
    /// hotcold faults the guest took per pass (swap-ins and the clock's minor
    /// faults), clock ÷ fifo.
    pub hotcold_fault_ratio: Option<f64>,
    /// Every run.
    pub runs: Vec<RunFigures>,
    /// uffd ÷ kernel per medium and workload.
    pub comparisons: Vec<Comparison>,
    /// Random faults, p50 uffd ÷ kernel, memory store ÷ zram (target ≤ 1.5).
    pub random_p50_ratio: Option<f64>,
    /// The same, store file ÷ swap file.
    pub random_p50_ratio_file: Option<f64>,
    /// Sequential re-scan throughput, uffd ÷ kernel, memory ÷ zram (target ≥ 1.0).
    pub sequential_throughput_ratio: Option<f64>,
    /// The same, file ÷ swap file.
    pub sequential_throughput_ratio_file: Option<f64>,
    /// zipf swap-ins per pass (faults that bring evicted data back; first touches,
    /// which no policy avoids, excluded), clock ÷ fifo, memory store (target ≤ 0.7).
    pub zipf_fault_ratio: Option<f64>,
    /// zipf faulted accesses per pass as the guest saw them (first touches included),
    /// clock ÷ fifo.
    pub zipf_guest_fault_ratio: Option<f64>,
    /// Limit ≥ test RAM: uffd throughput ÷ plain memory over all passes.
    pub idle_throughput_ratio: Option<f64>,
    /// Limit ≥ test RAM: first-touch (pass 1) throughput, uffd ÷ plain memory
    /// (target ≥ 0.95).
    pub first_touch_throughput_ratio: Option<f64>,
}

fn validate(a: &HostSwapOptions) -> anyhow::Result<()> {
    let (mem, limit) = (a.mem.bytes(), a.limit.bytes());
    if mem == 0 || mem % 4096 != 0 {
        return Err(usage(format!(
            "--mem must be a non-zero multiple of 4K, got {}",
            a.mem
        )));
    }
    if limit < 16 * 4096 || limit % 4096 != 0 || limit >= mem {
        return Err(usage(format!(
            "--limit must be a multiple of 4K, at least 64K and below --mem {}, got {}",
            a.mem, a.limit
        )));
    }
    if !(2..=MAX_PASSES).contains(&a.passes) {
        return Err(usage(format!(
            "--passes must be between 2 and {MAX_PASSES} (the first is not measured), got {}",
            a.passes
        )));
    }
    if !(2..=MAX_PASSES).contains(&a.zipf_passes) {
        return Err(usage(format!(
            "--zipf-passes must be between 2 and {MAX_PASSES}, got {}",
            a.zipf_passes
        )));
    }
    if !(HOTCOLD_MIN_PASSES..=MAX_PASSES).contains(&a.hotcold_passes) {
        return Err(usage(format!(
            "--hotcold-passes must be between {HOTCOLD_MIN_PASSES} and {MAX_PASSES} (the first {HOTCOLD_LOAD_PASSES} are the load, then a warm-up and a measured half), got {}",
            a.hotcold_passes
        )));
    }
    if !(1..=64).contains(&a.handlers) {
        return Err(usage(format!(
            "--handlers must be between 1 and 64, got {}",
            a.handlers
        )));
    }
    if !a.store_path.is_dir() {
        return Err(usage(format!(
            "--store-path {} is not a directory",
            a.store_path.display()
        )));
    }
    Ok(())
}

fn f(v: &serde_json::Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(serde_json::Value::as_f64)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A run's figures; per-pass swap counts leave out the first `warm` passes,
/// and those of passes `warmup_from..warm` are the warm-up's (none when
/// `warmup_from >= warm`).
fn figures(out: &ProbeOutput, warmup_from: usize, warm: usize) -> RunFigures {
    let j = &out.json;
    let passes = j["passes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rate = |ps: &[serde_json::Value]| {
        let (acc, wall) = ps.iter().fold((0.0, 0.0), |(a, w), p| {
            (
                a + p["accesses"].as_f64().unwrap_or(0.0),
                w + p["wall_ns"].as_f64().unwrap_or(0.0),
            )
        });
        (wall > 0.0).then(|| acc * 1e9 / wall)
    };
    let s = out.summary.as_ref();
    let sum = |p: &serde_json::Value, keys: &[&str]| -> f64 {
        keys.iter()
            .map(|k| p["swap_ins"][k].as_f64().unwrap_or(0.0))
            .sum()
    };
    // Per-pass swap-ins of passes `range`: the swapper's or the kernel child's.
    let swaps = |range: std::ops::Range<usize>| -> (Vec<f64>, Vec<f64>) {
        let n = range.end.saturating_sub(range.start);
        if let Some(ps) = j["swapper"]["passes"].as_array() {
            ps.iter()
                .skip(range.start)
                .take(n)
                .map(|p| (sum(p, &["store", "prefetch_hit"]), sum(p, &["minor"])))
                .unzip()
        } else if let Some(ps) = j["kernel_swap"]["child"]["passes"].as_array() {
            let majors = ps.iter().skip(range.start).take(n);
            (
                majors
                    .map(|p| p["major_faults"].as_f64().unwrap_or(0.0))
                    .collect(),
                Vec::new(),
            )
        } else {
            (Vec::new(), Vec::new())
        }
    };
    let (per_pass, minor) = swaps(warm..usize::MAX);
    let warmup = (warmup_from < warm).then(|| swaps(warmup_from..warm).0);
    RunFigures {
        swap_ins_per_pass: mean(&per_pass),
        minor_faults_per_pass: mean(&minor),
        warmup_swap_ins_per_pass: warmup.as_deref().and_then(mean),
        fault_p50_ns: f(j, &["steady", "fault_latency_ns", "p50"]).map(|v| v as u64),
        fault_p99_ns: f(j, &["steady", "fault_latency_ns", "p99"]).map(|v| v as u64),
        handler_store_p50_ns: f(j, &["fault_latency_ns", "store", "p50"]).map(|v| v as u64),
        accesses_per_sec: f(j, &["steady", "accesses_per_sec"]),
        all_passes_accesses_per_sec: rate(passes),
        first_pass_accesses_per_sec: rate(passes.get(..1).unwrap_or_default()),
        faults_per_pass: f(j, &["steady", "faults_per_pass"]),
        evictions: s.map(|s| s.evictions),
        swap_ins: s.and_then(|s| s.swap_ins.get("total").copied()),
        peak_resident_pages: s.map(|s| s.peak_resident_pages),
        ..Default::default()
    }
}

/// Runs one probe under `plan` and takes its [`figures`]; a failed run is
/// recorded in them, not fatal (except an interruption).
pub(crate) fn probe_figures(
    config: &ProbeConfig,
    plan: &SwapPlan,
    scope: &SignalScope,
    warmup_from: usize,
    warm: usize,
) -> anyhow::Result<RunFigures> {
    Ok(match run_plan(config, plan, scope) {
        Ok(out) => figures(&out, warmup_from, warm),
        Err(e) => {
            scope.check()?;
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            RunFigures {
                error: Some(chain.join(": ")),
                ..Default::default()
            }
        }
    })
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

struct Bench<'a> {
    args: &'a HostSwapOptions,
    scope: &'a SignalScope,
    runs: Vec<RunFigures>,
    cold_sweep_ms: u64,
    /// The floor's random fault p50, once its run is done: every uffd run
    /// after it gets its p50 as a ratio to it.
    floor_p50: Option<f64>,
}

impl Bench<'_> {
    fn uffd_plan(&self, limit: u64, store: StoreKind, policy: PolicyKind) -> SwapPlan {
        SwapPlan::Uffd {
            limit_bytes: limit,
            config: SwapperConfig {
                limit_bytes: limit,
                store,
                policy,
                prefetch: self.args.prefetch,
                handler_threads: self.args.handlers,
                handler_spin_us: self.args.spin_us,
                checksums: true,
                ..Default::default()
            },
            inject: Default::default(),
        }
    }

    fn kernel_plan(&self, swap: SwapKind) -> SwapPlan {
        SwapPlan::Kernel {
            settings: KernelSettings {
                guest_limit_bytes: self.args.limit.bytes(),
                swap,
                swap_bytes: self.args.mem.bytes() + (64 << 20),
                sweep_dirs: vec![self.args.store_path.clone()],
            },
            cold_sweep_ms: self.cold_sweep_ms,
            child_extra: Vec::new(),
        }
    }

    /// Runs one probe; a failed run is recorded, not fatal (except an interruption).
    fn run(
        &mut self,
        labels: (&str, &str, &str, Option<PolicyKind>),
        pattern: Pattern,
        plan: &SwapPlan,
    ) -> anyhow::Result<RunFigures> {
        let (passes, warmup_from, warm) = match pattern {
            Pattern::Zipf { .. } => (self.args.zipf_passes, 1, 1),
            Pattern::HotCold { .. } => {
                let p = self.args.hotcold_passes;
                (p, HOTCOLD_LOAD_PASSES, hotcold_warm_passes(p))
            }
            _ => (self.args.passes, 1, 1),
        };
        let config = ProbeConfig {
            mem_bytes: self.args.mem.bytes(),
            pattern,
            passes,
            seed: 1,
            verify: false,
            seccomp: self.args.seccomp,
        };
        let (medium, workload, swap, policy) = labels;
        if !self.args.json {
            eprintln!(
                "bench: {medium} {workload} {swap}{}",
                policy.map(|p| format!(" {}", p.name())).unwrap_or_default()
            );
        }
        let mut fig = probe_figures(&config, plan, self.scope, warmup_from, warm)?;
        fig.medium = medium.into();
        fig.workload = workload.into();
        fig.swap = swap.into();
        fig.policy = policy.map(|p| p.name().to_string());
        if swap == "uffd" {
            fig.p50_floor_ratio = ratio(fig.fault_p50_ns.map(|v| v as f64), self.floor_p50);
        }
        self.runs.push(fig.clone());
        Ok(fig)
    }
}

/// The media: the uffd store and the kernel's swap device of the same class
/// (lz4 has no kernel run of its own: zram is the memory medium's).
fn media(dir: &std::path::Path) -> [(&'static str, StoreKind, Option<SwapKind>); 3] {
    [
        ("memory", StoreKind::Memory, Some(SwapKind::Zram)),
        ("lz4", StoreKind::Lz4, None),
        (
            "file",
            StoreKind::File {
                dir: dir.to_path_buf(),
                direct: false,
            },
            Some(SwapKind::File {
                dir: dir.to_path_buf(),
            }),
        ),
    ]
}

fn compare(medium: &str, workload: &str, u: &RunFigures, k: &RunFigures) -> Comparison {
    let ns = |v: Option<u64>| v.map(|v| v as f64);
    Comparison {
        medium: medium.to_string(),
        workload: workload.to_string(),
        p50_ratio: ratio(ns(u.fault_p50_ns), ns(k.fault_p50_ns)),
        p99_ratio: ratio(ns(u.fault_p99_ns), ns(k.fault_p99_ns)),
        throughput_ratio: ratio(u.accesses_per_sec, k.accesses_per_sec),
        faults_ratio: ratio(u.faults_per_pass, k.faults_per_pass),
        p50_floor_ratio: u.p50_floor_ratio,
    }
}

/// The hotcold runs' limit: half of test RAM, in whole pages.
fn hotcold_limit(args: &HostSwapOptions) -> u64 {
    args.mem.bytes() / 2 / 4096 * 4096
}

/// What the runs of one bench came to.
struct Measured {
    floor: RunFigures,
    comparisons: Vec<Comparison>,
    idle: Vec<f64>,
    first_touch: Vec<f64>,
    hotcold_fifo: RunFigures,
    hotcold_clock: RunFigures,
    zipf_fifo: RunFigures,
}

impl Bench<'_> {
    /// Every medium and workload under uffd (and the kernel, as root),
    /// beginning with the floor.
    fn media_runs(
        &mut self,
        skew: f64,
        kernel: bool,
    ) -> anyhow::Result<(RunFigures, Vec<Comparison>)> {
        let floor = self.run(
            ("none", "random", "floor", None),
            Pattern::Random,
            &SwapPlan::Floor,
        )?;
        self.floor_p50 = floor.fault_p50_ns.map(|v| v as f64);
        let limit = self.args.limit.bytes();
        let workloads = [
            ("random", Pattern::Random),
            ("sequential", Pattern::Seq),
            ("zipf", Pattern::Zipf { skew }),
        ];
        let mut comparisons = Vec::new();
        for (medium, store, swap) in media(&self.args.store_path) {
            for (workload, pattern) in workloads {
                // lz4 stands for the fault path only.
                if swap.is_none() && workload != "random" {
                    continue;
                }
                let plan = self.uffd_plan(limit, store.clone(), PolicyKind::Clock);
                let labels = (medium, workload, "uffd", Some(PolicyKind::Clock));
                let u = self.run(labels, pattern, &plan)?;
                let Some(swap) = swap.as_ref().filter(|_| kernel) else {
                    continue;
                };
                let plan = self.kernel_plan(swap.clone());
                let k = self.run((medium, workload, "kernel", None), pattern, &plan)?;
                comparisons.push(compare(medium, workload, &u, &k));
            }
        }
        Ok((floor, comparisons))
    }

    /// The policies side by side: hotcold at half of test RAM, zipf at the limit.
    fn policy_runs(&mut self, skew: f64) -> anyhow::Result<[RunFigures; 3]> {
        let half = hotcold_limit(self.args);
        let mut hotcold = Vec::new();
        for policy in [PolicyKind::Fifo, PolicyKind::Clock] {
            let plan = self.uffd_plan(half, StoreKind::Memory, policy);
            hotcold.push(self.run(("memory", "hotcold", "uffd", Some(policy)), HOTCOLD, &plan)?);
        }
        let plan = self.uffd_plan(self.args.limit.bytes(), StoreKind::Memory, PolicyKind::Fifo);
        let zipf = self.run(
            ("memory", "zipf", "uffd", Some(PolicyKind::Fifo)),
            Pattern::Zipf { skew },
            &plan,
        )?;
        let clock = hotcold.pop().unwrap_or_default();
        let fifo = hotcold.pop().unwrap_or_default();
        Ok([fifo, clock, zipf])
    }

    /// Limit ≥ test RAM against plain memory, in interleaved pairs: (all
    /// passes, first-touch pass) throughput ratios.
    fn idle_runs(&mut self) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let (mut all, mut first) = (Vec::new(), Vec::new());
        for _ in 0..IDLE_PAIRS {
            let plain = self.run(
                ("plain", "idle", "none", None),
                Pattern::Random,
                &SwapPlan::None,
            )?;
            let plan = self.uffd_plan(self.args.mem.bytes(), StoreKind::Memory, PolicyKind::Clock);
            let u = self.run(
                ("memory", "idle", "uffd", Some(PolicyKind::Clock)),
                Pattern::Random,
                &plan,
            )?;
            all.extend(ratio(
                u.all_passes_accesses_per_sec,
                plain.all_passes_accesses_per_sec,
            ));
            first.extend(ratio(
                u.first_pass_accesses_per_sec,
                plain.first_pass_accesses_per_sec,
            ));
        }
        Ok((all, first))
    }

    fn measure(&mut self, skew: f64, kernel: bool) -> anyhow::Result<Measured> {
        let (floor, comparisons) = self.media_runs(skew, kernel)?;
        let [hotcold_fifo, hotcold_clock, zipf_fifo] = self.policy_runs(skew)?;
        let (idle, first_touch) = self.idle_runs()?;
        Ok(Measured {
            floor,
            comparisons,
            idle,
            first_touch,
            hotcold_fifo,
            hotcold_clock,
            zipf_fifo,
        })
    }

    fn find(&self, medium: &str, workload: &str, policy: &str) -> RunFigures {
        self.runs
            .iter()
            .find(|r| {
                r.medium == medium
                    && r.workload == workload
                    && r.swap == "uffd"
                    && r.policy.as_deref() == Some(policy)
            })
            .cloned()
            .unwrap_or_default()
    }
}

/// Runs the benchmark.
pub fn bench(args: &HostSwapOptions, scope: &SignalScope) -> anyhow::Result<HostSwapBench> {
    validate(args)?;
    let cpu = pin_chosen_cpu(args.cpu.as_deref())?;
    let pages = args.mem.bytes() / 4096;
    let skew = super::zipf_skew::skew_for(pages, 0.1, 0.9);
    let kernel_skipped = (!is_root()).then(|| "not root".to_string());
    let mut b = Bench {
        args,
        scope,
        runs: Vec::new(),
        cold_sweep_ms: default_cold_sweep_ms(),
        floor_p50: None,
    };
    let m = b.measure(skew, kernel_skipped.is_none())?;
    let zipf_clock = b.find("memory", "zipf", "clock");
    let floor_ratio = |medium: &str| b.find(medium, "random", "clock").p50_floor_ratio;
    let pick = |medium: &str, workload: &str, f: fn(&Comparison) -> Option<f64>| {
        m.comparisons
            .iter()
            .find(|c| c.medium == medium && c.workload == workload)
            .and_then(f)
    };
    let faults = |r: &RunFigures| {
        r.swap_ins_per_pass
            .map(|s| s + r.minor_faults_per_pass.unwrap_or(0.0))
    };
    Ok(HostSwapBench {
        mem_bytes: args.mem.bytes(),
        limit_bytes: args.limit.bytes(),
        passes: args.passes,
        zipf_passes: args.zipf_passes,
        hotcold_passes: args.hotcold_passes,
        checksums: true,
        prefetch: args.prefetch,
        handlers: args.handlers,
        spin_us: args.spin_us,
        cpu,
        zipf_skew: skew,
        kernel_cold_sweep_ms: b.cold_sweep_ms,
        kernel_skipped,
        floor_p50_ns: m.floor.fault_p50_ns,
        floor_p99_ns: m.floor.fault_p99_ns,
        random_p50_floor_ratio: floor_ratio("memory"),
        random_p50_floor_ratio_lz4: floor_ratio("lz4"),
        random_p50_floor_ratio_file: floor_ratio("file"),
        hotcold_limit_bytes: hotcold_limit(args),
        hotcold_swap_in_ratio: ratio(
            m.hotcold_clock.swap_ins_per_pass,
            m.hotcold_fifo.swap_ins_per_pass,
        ),
        hotcold_warmup_swap_in_ratio: ratio(
            m.hotcold_clock.warmup_swap_ins_per_pass,
            m.hotcold_fifo.warmup_swap_ins_per_pass,
        ),
        hotcold_fault_ratio: ratio(faults(&m.hotcold_clock), faults(&m.hotcold_fifo)),
        random_p50_ratio: pick("memory", "random", |c| c.p50_ratio),
        random_p50_ratio_file: pick("file", "random", |c| c.p50_ratio),
        sequential_throughput_ratio: pick("memory", "sequential", |c| c.throughput_ratio),
        sequential_throughput_ratio_file: pick("file", "sequential", |c| c.throughput_ratio),
        zipf_fault_ratio: ratio(zipf_clock.swap_ins_per_pass, m.zipf_fifo.swap_ins_per_pass),
        zipf_guest_fault_ratio: ratio(zipf_clock.faults_per_pass, m.zipf_fifo.faults_per_pass),
        idle_throughput_ratio: midpoint_median(&m.idle),
        first_touch_throughput_ratio: midpoint_median(&m.first_touch),
        runs: b.runs,
        comparisons: m.comparisons,
    })
}

pub(crate) fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

pub(crate) fn verdict(v: Option<f64>, ok: impl Fn(f64) -> bool) -> &'static str {
    match v {
        Some(x) if ok(x) => "met",
        Some(_) => "MISSED",
        None => "n/a",
    }
}

/// The tables.
pub fn render_text(b: &HostSwapBench) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "host-swap bench: test RAM {}, limit {}, {} passes (zipf {}, hotcold {}; figures from pass 2 on, hotcold's from pass {} on, its warm-up from pass 3), uffd prefetch {}, checksums {}, {} handler{}, zipf skew {:.3} (90% of accesses on 10% of pages)",
        ByteSize(b.mem_bytes),
        ByteSize(b.limit_bytes),
        b.passes,
        b.zipf_passes,
        b.hotcold_passes,
        hotcold_warm_passes(b.hotcold_passes) + 1,
        b.prefetch,
        if b.checksums { "on" } else { "off" },
        b.handlers,
        if b.handlers == 1 { "" } else { "s" },
        b.zipf_skew
    );
    let _ = writeln!(
        s,
        "every run on {}",
        b.cpu
            .map(|c| format!("host CPU {c} (vCPU, swapper threads and the kernel child together)"))
            .unwrap_or_else(|| "any CPU (not pinned)".into())
    );
    match &b.kernel_skipped {
        Some(why) => {
            let _ = writeln!(s, "kernel swap runs skipped: {why}");
        }
        None => {
            let _ = writeln!(
                s,
                "kernel swap: the VMM in a memory cgroup (guest budget = limit), cold sweep {}",
                if b.kernel_cold_sweep_ms == 0 {
                    "off".to_string()
                } else {
                    format!("every {} ms (PVM)", b.kernel_cold_sweep_ms)
                }
            );
        }
    }
    let _ = writeln!(
        s,
        "\n{:<7} {:<11} {:<7} {:<7} {:>10} {:>7} {:>10} {:>12} {:>12} {:>13} {:>11} {:>10}",
        "medium",
        "workload",
        "swap",
        "policy",
        "fault p50",
        "÷floor",
        "fault p99",
        "accesses/s",
        "faults/pass",
        "swap-ins/pass",
        "minor/pass",
        "evictions"
    );
    for r in &b.runs {
        if let Some(e) = &r.error {
            let _ = writeln!(
                s,
                "{:<7} {:<11} {:<7} {:<7} failed: {e}",
                r.medium,
                r.workload,
                r.swap,
                r.policy.as_deref().unwrap_or("-")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "{:<7} {:<11} {:<7} {:<7} {:>10} {:>7} {:>10} {:>12} {:>12} {:>13} {:>11} {:>10}",
            r.medium,
            r.workload,
            r.swap,
            r.policy.as_deref().unwrap_or("-"),
            opt(r.fault_p50_ns, fmt_ns),
            opt(r.p50_floor_ratio, |v| format!("{v:.2}")),
            opt(r.fault_p99_ns, fmt_ns),
            opt(r.accesses_per_sec, |v| format!("{v:.0}")),
            opt(r.faults_per_pass, |v| format!("{v:.0}")),
            opt(r.swap_ins_per_pass, |v| format!("{v:.0}")),
            opt(r.minor_faults_per_pass, |v| format!("{v:.0}")),
            opt(r.evictions, |v| v.to_string())
        );
    }
    let x = |v: Option<f64>| opt(v, |v| format!("{v:.2}"));
    if !b.comparisons.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<19} {:>8} {:>8} {:>11} {:>8} {:>14}",
            "uffd ÷ kernel", "p50", "p99", "throughput", "faults", "uffd p50÷floor"
        );
        for c in &b.comparisons {
            let _ = writeln!(
                s,
                "{:<7} {:<11} {:>8} {:>8} {:>11} {:>8} {:>14}",
                c.medium,
                c.workload,
                x(c.p50_ratio),
                x(c.p99_ratio),
                x(c.throughput_ratio),
                x(c.faults_ratio),
                x(c.p50_floor_ratio)
            );
        }
    }
    render_targets(b, &mut s);
    s
}

/// The floor's random p50 ÷ the kernel's on zram: how much of the uffd ÷
/// kernel ratio no userfaultfd swapper can avoid.
fn floor_over_kernel(b: &HostSwapBench) -> Option<f64> {
    let kernel = b
        .runs
        .iter()
        .find(|r| r.medium == "memory" && r.workload == "random" && r.swap == "kernel")?;
    ratio(
        b.floor_p50_ns.map(|v| v as f64),
        kernel.fault_p50_ns.map(|v| v as f64),
    )
}

/// The floor and the targets, after the tables.
fn render_targets(b: &HostSwapBench, s: &mut String) {
    let x = |v: Option<f64>| opt(v, |v| format!("{v:.2}"));
    let _ = writeln!(
        s,
        "\nfloor (bare userfaultfd round trip, random): p50 {}, p99 {}",
        opt(b.floor_p50_ns, fmt_ns),
        opt(b.floor_p99_ns, fmt_ns)
    );
    let _ = writeln!(s, "\ntargets:");
    let _ = writeln!(
        s,
        "  random fault p50 uffd ÷ floor, memory store:   {:>6}  (≤ 1.15)  {}   lz4: {} {}   file: {} {} (≤ 1.3)",
        x(b.random_p50_floor_ratio),
        verdict(b.random_p50_floor_ratio, |v| v <= 1.15),
        x(b.random_p50_floor_ratio_lz4),
        verdict(b.random_p50_floor_ratio_lz4, |v| v <= 1.3),
        x(b.random_p50_floor_ratio_file),
        verdict(b.random_p50_floor_ratio_file, |v| v <= 1.3)
    );
    let _ = writeln!(
        s,
        "  hotcold 20:80 at {}, swap-ins clock ÷ fifo: {:>6}  (≤ 0.7)   {}   (with the clock's minor faults: {}; in its warm-up: {})",
        ByteSize(b.hotcold_limit_bytes),
        x(b.hotcold_swap_in_ratio),
        verdict(b.hotcold_swap_in_ratio, |v| v <= 0.7),
        x(b.hotcold_fault_ratio),
        x(b.hotcold_warmup_swap_in_ratio)
    );
    let _ = writeln!(
        s,
        "  limit ≥ test RAM, first touch ÷ plain memory:  {:>6}  (≥ 0.95)  {}   (all passes: {})",
        x(b.first_touch_throughput_ratio),
        verdict(b.first_touch_throughput_ratio, |v| v >= 0.95),
        x(b.idle_throughput_ratio)
    );
    let _ = writeln!(
        s,
        "  random fault p50 uffd ÷ kernel, memory/zram:   {:>6}  (≤ 1.5)   {}   file: {} {}   (the floor alone ÷ zram: {})",
        x(b.random_p50_ratio),
        verdict(b.random_p50_ratio, |v| v <= 1.5),
        x(b.random_p50_ratio_file),
        verdict(b.random_p50_ratio_file, |v| v <= 1.5),
        x(floor_over_kernel(b))
    );
    let _ = writeln!(
        s,
        "  sequential throughput uffd ÷ kernel, memory:   {:>6}  (≥ 1.0)   {}   file: {} {}",
        x(b.sequential_throughput_ratio),
        verdict(b.sequential_throughput_ratio, |v| v >= 1.0),
        x(b.sequential_throughput_ratio_file),
        verdict(b.sequential_throughput_ratio_file, |v| v >= 1.0)
    );
    let _ = writeln!(
        s,
        "  zipf swap-ins clock ÷ fifo:                    {:>6}  (reported; the policy bar is hotcold's)   all faults, first touches included: {}",
        x(b.zipf_fault_ratio),
        x(b.zipf_guest_fault_ratio)
    );
}

/// Run `swaplab bench host-swap`.
pub fn run(args: &HostSwapOptions) -> anyhow::Result<()> {
    validate(args)?;
    cpu_of(args.cpu.as_deref())?;
    let scope = SignalScope::new().context("watching for Ctrl-C")?;
    let b = bench(args, &scope)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", render_text(&b));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(hotcold_passes: u32) -> HostSwapOptions {
        HostSwapOptions {
            mem: ByteSize(16 << 20),
            limit: ByteSize(4 << 20),
            passes: 2,
            zipf_passes: 3,
            hotcold_passes,
            prefetch: 16,
            handlers: 1,
            spin_us: 0,
            store_path: std::env::temp_dir(),
            cpu: None,
            json: true,
            seccomp: true,
        }
    }

    #[test]
    fn hotcold_measures_the_second_half_after_a_warm_up() {
        // Pass 1 and 2 are the load; the warm-up is never empty.
        assert_eq!(hotcold_warm_passes(HOTCOLD_MIN_PASSES), 3);
        assert_eq!(hotcold_warm_passes(20), 10);
        assert_eq!(hotcold_warm_passes(21), 10);
        assert!(validate(&options(HOTCOLD_MIN_PASSES)).is_ok());
        let e = validate(&options(HOTCOLD_MIN_PASSES - 1)).unwrap_err();
        assert!(e.to_string().contains("--hotcold-passes"), "{e}");
        assert!(validate(&options(MAX_PASSES + 1)).is_err());
    }
}

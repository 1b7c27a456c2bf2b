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
//! - Also: the swapper with a limit ≥ test RAM against plain memory (throughput over
//!   all passes, median of three interleaved pairs), and zipf faults under clock
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

/// The CPU to pin to: `--cpu N`, none for `--cpu none`, else the current one.
fn chosen_cpu(a: &HostSwapOptions) -> anyhow::Result<Option<usize>> {
    match a.cpu.as_deref() {
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

/// One probe run's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunFigures {
    /// `memory`, `file`, or `plain` for the idle comparison.
    pub medium: String,
    /// `random`, `sequential`, `zipf`, or `idle`.
    pub workload: String,
    /// `uffd`, `kernel` or `none`.
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
    /// Faulted accesses per pass (passes after the first), as the guest saw them.
    pub faults_per_pass: Option<f64>,
    /// Swap-ins per pass (passes after the first): uffd store + minor + prefetch hits
    /// (first-touch zero fills excluded); kernel major faults.
    pub swap_ins_per_pass: Option<f64>,
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
    /// Limit ≥ test RAM: uffd throughput ÷ plain memory (target ≥ 0.95).
    pub idle_throughput_ratio: Option<f64>,
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

fn figures(out: &ProbeOutput) -> RunFigures {
    let j = &out.json;
    let (acc, wall) = j["passes"]
        .as_array()
        .map(|ps| {
            ps.iter().fold((0.0, 0.0), |(a, w), p| {
                (
                    a + p["accesses"].as_f64().unwrap_or(0.0),
                    w + p["wall_ns"].as_f64().unwrap_or(0.0),
                )
            })
        })
        .unwrap_or((0.0, 0.0));
    let s = out.summary.as_ref();
    // Per-pass swap-ins after the first pass: the swapper's or the kernel child's.
    let per_pass: Vec<f64> = if let Some(ps) = j["swapper"]["passes"].as_array() {
        ps.iter()
            .skip(1)
            .map(|p| {
                ["store", "minor", "prefetch_hit"]
                    .iter()
                    .map(|k| p["swap_ins"][k].as_f64().unwrap_or(0.0))
                    .sum()
            })
            .collect()
    } else if let Some(ps) = j["kernel_swap"]["child"]["passes"].as_array() {
        ps.iter()
            .skip(1)
            .map(|p| p["major_faults"].as_f64().unwrap_or(0.0))
            .collect()
    } else {
        Vec::new()
    };
    RunFigures {
        swap_ins_per_pass: (!per_pass.is_empty())
            .then(|| per_pass.iter().sum::<f64>() / per_pass.len() as f64),
        fault_p50_ns: f(j, &["steady", "fault_latency_ns", "p50"]).map(|v| v as u64),
        fault_p99_ns: f(j, &["steady", "fault_latency_ns", "p99"]).map(|v| v as u64),
        accesses_per_sec: f(j, &["steady", "accesses_per_sec"]),
        all_passes_accesses_per_sec: (wall > 0.0).then(|| acc * 1e9 / wall),
        faults_per_pass: f(j, &["steady", "faults_per_pass"]),
        evictions: s.map(|s| s.evictions),
        swap_ins: s.and_then(|s| s.swap_ins.get("total").copied()),
        peak_resident_pages: s.map(|s| s.peak_resident_pages),
        ..Default::default()
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
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
                checksums: false,
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
        let passes = if matches!(pattern, Pattern::Zipf { .. }) {
            self.args.zipf_passes
        } else {
            self.args.passes
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
        let mut fig = match run_plan(&config, plan, self.scope) {
            Ok(out) => figures(&out),
            Err(e) => {
                self.scope.check()?;
                let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                RunFigures {
                    error: Some(chain.join(": ")),
                    ..Default::default()
                }
            }
        };
        fig.medium = medium.into();
        fig.workload = workload.into();
        fig.swap = swap.into();
        fig.policy = policy.map(|p| p.name().to_string());
        self.runs.push(fig.clone());
        Ok(fig)
    }
}

/// Runs the benchmark.
pub fn bench(args: &HostSwapOptions, scope: &SignalScope) -> anyhow::Result<HostSwapBench> {
    validate(args)?;
    let cpu = chosen_cpu(args)?;
    if let Some(c) = cpu {
        hostsys::cpu::pin_to_cpu(c).map_err(|e| runner::cli::usage(format!("--cpu {c}: {e}")))?;
    }
    let pages = args.mem.bytes() / 4096;
    let skew = super::zipf_skew::skew_for(pages, 0.1, 0.9);
    let kernel_skipped = (!is_root()).then(|| "not root".to_string());
    let mut b = Bench {
        args,
        scope,
        runs: Vec::new(),
        cold_sweep_ms: default_cold_sweep_ms(),
    };
    let limit = args.limit.bytes();
    let dir = args.store_path.clone();
    let workloads = [
        ("random", Pattern::Random),
        ("sequential", Pattern::Seq),
        ("zipf", Pattern::Zipf { skew }),
    ];
    let media = [
        ("memory", StoreKind::Memory, SwapKind::Zram),
        (
            "file",
            StoreKind::File {
                dir: dir.clone(),
                direct: false,
            },
            SwapKind::File { dir },
        ),
    ];
    let mut comparisons = Vec::new();
    for (medium, store, swap) in &media {
        for (workload, pattern) in workloads {
            let plan = b.uffd_plan(limit, store.clone(), PolicyKind::Clock);
            let u = b.run(
                (medium, workload, "uffd", Some(PolicyKind::Clock)),
                pattern,
                &plan,
            )?;
            if kernel_skipped.is_some() {
                continue;
            }
            let plan = b.kernel_plan(swap.clone());
            let k = b.run((medium, workload, "kernel", None), pattern, &plan)?;
            comparisons.push(Comparison {
                medium: medium.to_string(),
                workload: workload.to_string(),
                p50_ratio: ratio(
                    u.fault_p50_ns.map(|v| v as f64),
                    k.fault_p50_ns.map(|v| v as f64),
                ),
                p99_ratio: ratio(
                    u.fault_p99_ns.map(|v| v as f64),
                    k.fault_p99_ns.map(|v| v as f64),
                ),
                throughput_ratio: ratio(u.accesses_per_sec, k.accesses_per_sec),
                faults_ratio: ratio(u.faults_per_pass, k.faults_per_pass),
            });
        }
    }
    let plan = b.uffd_plan(limit, StoreKind::Memory, PolicyKind::Fifo);
    let fifo = b.run(
        ("memory", "zipf", "uffd", Some(PolicyKind::Fifo)),
        Pattern::Zipf { skew },
        &plan,
    )?;
    let clock = b
        .runs
        .iter()
        .find(|r| r.medium == "memory" && r.workload == "zipf" && r.swap == "uffd")
        .cloned()
        .unwrap_or_default();
    let zipf_fault_ratio = ratio(clock.swap_ins_per_pass, fifo.swap_ins_per_pass);
    let zipf_guest_fault_ratio = ratio(clock.faults_per_pass, fifo.faults_per_pass);
    let mut idle = Vec::new();
    for _ in 0..IDLE_PAIRS {
        let plain = b.run(
            ("plain", "idle", "none", None),
            Pattern::Random,
            &SwapPlan::None,
        )?;
        let plan = b.uffd_plan(args.mem.bytes(), StoreKind::Memory, PolicyKind::Clock);
        let u = b.run(
            ("memory", "idle", "uffd", Some(PolicyKind::Clock)),
            Pattern::Random,
            &plan,
        )?;
        if let Some(r) = ratio(
            u.all_passes_accesses_per_sec,
            plain.all_passes_accesses_per_sec,
        ) {
            idle.push(r);
        }
    }
    let pick = |medium: &str, workload: &str, f: fn(&Comparison) -> Option<f64>| {
        comparisons
            .iter()
            .find(|c| c.medium == medium && c.workload == workload)
            .and_then(f)
    };
    Ok(HostSwapBench {
        mem_bytes: args.mem.bytes(),
        limit_bytes: limit,
        passes: args.passes,
        zipf_passes: args.zipf_passes,
        prefetch: args.prefetch,
        handlers: args.handlers,
        spin_us: args.spin_us,
        cpu,
        zipf_skew: skew,
        kernel_cold_sweep_ms: b.cold_sweep_ms,
        kernel_skipped,
        random_p50_ratio: pick("memory", "random", |c| c.p50_ratio),
        random_p50_ratio_file: pick("file", "random", |c| c.p50_ratio),
        sequential_throughput_ratio: pick("memory", "sequential", |c| c.throughput_ratio),
        sequential_throughput_ratio_file: pick("file", "sequential", |c| c.throughput_ratio),
        zipf_fault_ratio,
        zipf_guest_fault_ratio,
        idle_throughput_ratio: midpoint_median(&idle),
        runs: b.runs,
        comparisons,
    })
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn verdict(v: Option<f64>, ok: impl Fn(f64) -> bool) -> &'static str {
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
        "host-swap bench: test RAM {}, limit {}, {} passes (zipf {}; figures from pass 2 on), uffd prefetch {}, {} handler{}, zipf skew {:.3} (90% of accesses on 10% of pages)",
        ByteSize(b.mem_bytes),
        ByteSize(b.limit_bytes),
        b.passes,
        b.zipf_passes,
        b.prefetch,
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
        "\n{:<7} {:<11} {:<7} {:<7} {:>10} {:>10} {:>12} {:>12} {:>12} {:>10}",
        "medium",
        "workload",
        "swap",
        "policy",
        "fault p50",
        "fault p99",
        "accesses/s",
        "faults/pass",
        "swap-ins/pass",
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
            "{:<7} {:<11} {:<7} {:<7} {:>10} {:>10} {:>12} {:>12} {:>12} {:>10}",
            r.medium,
            r.workload,
            r.swap,
            r.policy.as_deref().unwrap_or("-"),
            opt(r.fault_p50_ns, fmt_ns),
            opt(r.fault_p99_ns, fmt_ns),
            opt(r.accesses_per_sec, |v| format!("{v:.0}")),
            opt(r.faults_per_pass, |v| format!("{v:.0}")),
            opt(r.swap_ins_per_pass, |v| format!("{v:.0}")),
            opt(r.evictions, |v| v.to_string())
        );
    }
    let x = |v: Option<f64>| opt(v, |v| format!("{v:.2}"));
    if !b.comparisons.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<19} {:>8} {:>8} {:>11} {:>8}",
            "uffd ÷ kernel", "p50", "p99", "throughput", "faults"
        );
        for c in &b.comparisons {
            let _ = writeln!(
                s,
                "{:<7} {:<11} {:>8} {:>8} {:>11} {:>8}",
                c.medium,
                c.workload,
                x(c.p50_ratio),
                x(c.p99_ratio),
                x(c.throughput_ratio),
                x(c.faults_ratio)
            );
        }
    }
    let _ = writeln!(s, "\ntargets:");
    let _ = writeln!(
        s,
        "  limit ≥ test RAM, throughput ÷ plain memory:   {:>6}  (≥ 0.95)  {}",
        x(b.idle_throughput_ratio),
        verdict(b.idle_throughput_ratio, |v| v >= 0.95)
    );
    let _ = writeln!(
        s,
        "  random fault p50 uffd ÷ kernel, memory/zram:   {:>6}  (≤ 1.5)   {}   file: {} {}",
        x(b.random_p50_ratio),
        verdict(b.random_p50_ratio, |v| v <= 1.5),
        x(b.random_p50_ratio_file),
        verdict(b.random_p50_ratio_file, |v| v <= 1.5)
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
        "  zipf swap-ins clock ÷ fifo:                    {:>6}  (≤ 0.7)   {}   (all faults, first touches included: {})",
        x(b.zipf_fault_ratio),
        verdict(b.zipf_fault_ratio, |v| v <= 0.7),
        x(b.zipf_guest_fault_ratio)
    );
    s
}

/// Run `swaplab bench host-swap`.
pub fn run(args: &HostSwapOptions) -> anyhow::Result<()> {
    validate(args)?;
    chosen_cpu(args)?;
    let scope = SignalScope::new().context("watching for Ctrl-C")?;
    let b = bench(args, &scope)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", render_text(&b));
    }
    Ok(())
}

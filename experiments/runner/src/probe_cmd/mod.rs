//! `swaplab probe`: run a no-OS probe guest that touches test RAM in a pattern and times
//! every access (see `workloads::probe` and [`crate::probe_run`]).
//!
//! With `--host-limit`, the host keeps at most that much of test RAM resident and swaps
//! the rest: `--host-swap uffd` (the default) with swaplab's userfaultfd swapper
//! ([`crate::probe_run::uffd`]), `--host-swap kernel` with the kernel's own swap
//! ([`crate::probe_run::kernel`]). Both add the same top-level JSON fields
//! ([`crate::probe_run::summary::SwapSummary`]).

mod plan;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use swapper::PolicyKind;
use workloads::probe::Pattern;

use crate::cli::usage;
use crate::probe_run::summary::HostSwapMode;
use crate::probe_run::{ProbeConfig, ProbeResult};
use hostsys::signals::SignalScope;
use scenario::size::ByteSize;

pub use plan::{
    child_args, plan_from_args, run_plan, Injections, ProbeOutput, SwapPlan, DEFAULT_STORE_DIR,
};

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// Test RAM size (e.g. 256M, 1G); at most this host's memory.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub mem: ByteSize,
    /// Access pattern: seq, random, zipf[:SKEW] (default skew 0.99) or phase[:WINDOWS].
    #[arg(long, value_name = "PATTERN", default_value = "random")]
    pub pattern: Pattern,
    /// Passes over test RAM; each gets its own latency histogram.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        allow_negative_numbers = true
    )]
    pub passes: i64,
    /// Seed for the pattern's random choices.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Skip the host's check of every touched page afterwards.
    #[arg(long)]
    pub no_verify: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run the whole VMM (vCPU, swapper threads, the kernel baseline's child) on this
    /// host CPU. Co-located, the swapper's evictions never interrupt a running vCPU.
    #[arg(long, value_name = "CPU")]
    pub cpu: Option<usize>,
    #[command(flatten)]
    pub swap: SwapArgs,
}

/// Pins the calling thread (and the threads and processes it starts afterwards) to
/// `cpu`; a CPU outside the allowed set is a usage error.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid, empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads this thread's affinity into `allowed`, whose size is passed.
    let r =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    // SAFETY: CPU_ISSET reads a bit of an initialised set (out-of-range is false).
    if cpu >= libc::CPU_SETSIZE as usize || !unsafe { libc::CPU_ISSET(cpu, &allowed) } {
        return Err(usage(format!(
            "--cpu {cpu} is not a CPU this process may use"
        )));
    }
    // SAFETY: a zeroed cpu_set_t is a valid, empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sets one in-range bit of the local set.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: sets this thread's affinity from an initialised set of the given size.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}

/// Backing store (`--store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreArg {
    /// A swap file (kernel: a swap file too).
    File,
    /// Plain copies in memory (kernel: zram).
    Memory,
    /// lz4-compressed copies in memory, like zram (kernel: zram).
    Lz4,
}

/// Eviction policy (`--policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyArg {
    /// First in, first out.
    Fifo,
    /// Uniform random victims.
    Random,
    /// Second-chance clock: pages are moved aside first, a re-touch is a minor fault.
    Clock,
}

impl From<PolicyArg> for PolicyKind {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Fifo => PolicyKind::Fifo,
            PolicyArg::Random => PolicyKind::Random,
            PolicyArg::Clock => PolicyKind::Clock,
        }
    }
}

/// Host-swap arguments.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct SwapArgs {
    /// Keep at most this much of test RAM resident on the host (e.g. 64M); swap the rest.
    #[arg(long, value_name = "SIZE")]
    pub host_limit: Option<ByteSize>,
    /// Who swaps: uffd (swaplab's userfaultfd swapper, the default with --host-limit),
    /// kernel (the VMM in a memory cgroup swapping to a swap device made for the run;
    /// needs root), none.
    #[arg(long, value_enum, value_name = "MODE")]
    pub host_swap: Option<HostSwapMode>,
    /// Backing store [default: memory]; with --host-swap kernel it picks the swap
    /// device: zram for memory and lz4, a swap file for file.
    #[arg(long, value_enum, value_name = "STORE")]
    pub store: Option<StoreArg>,
    /// Eviction policy (uffd) [default: clock].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub policy: Option<PolicyArg>,
    /// Prefetch cluster on sequential faults, pages (uffd) [default: 0].
    #[arg(long, value_name = "N")]
    pub prefetch: Option<u32>,
    /// Fault-handler threads (uffd) [default: 1].
    #[arg(long, value_name = "N")]
    pub handlers: Option<usize>,
    /// Handler threads busy-poll this long for the next fault before sleeping (uffd):
    /// lower latency, a CPU burnt while faults keep coming [default: 0].
    #[arg(long, value_name = "US")]
    pub spin_us: Option<u32>,
    /// Checksum every stored page and verify it on swap-in (uffd; the default).
    #[arg(long, overrides_with = "no_checksums")]
    pub checksums: bool,
    /// Do not checksum stored pages.
    #[arg(long, overrides_with = "checksums")]
    pub no_checksums: bool,
    /// Directory for the store file (--store file) or the kernel's swap file
    /// [default: /var/tmp]; not tmpfs.
    #[arg(long, value_name = "DIR")]
    pub store_path: Option<PathBuf>,
    /// Open the store file with O_DIRECT (bypass the host page cache).
    #[arg(long)]
    pub o_direct: bool,
    /// Kernel swap: apply MADV_COLD to test RAM every MS milliseconds, standing in for
    /// the page aging KVM guest memory lacks under PVM (without it the cgroup OOM-kills
    /// the VMM there); 0 = off [default: 10 under PVM, else 0].
    #[arg(long, value_name = "MS")]
    pub kernel_cold_sweep: Option<u64>,
    /// Testing: the first N store reads fail with EIO.
    #[arg(long, value_name = "N", hide = true)]
    pub inject_read_errors: Option<u64>,
    /// Testing: the first N store reads return a flipped bit.
    #[arg(long, value_name = "N", hide = true)]
    pub inject_corrupt_reads: Option<u64>,
    /// Testing: the first N store writes fail with ENOSPC.
    #[arg(long, value_name = "N", hide = true)]
    pub inject_write_errors: Option<u64>,
    /// Internal: run as the kernel-swap child in this cgroup.
    #[arg(long = "internal-kernel-child", value_name = "CGROUP", hide = true)]
    pub internal_kernel_child: Option<PathBuf>,
    /// Internal: the kernel-swap child's guest budget, bytes.
    #[arg(long = "internal-guest-limit", value_name = "BYTES", hide = true)]
    pub internal_guest_limit: Option<u64>,
    /// Testing: an extra argument for the kernel-swap child (to make it fail).
    #[arg(
        long = "internal-child-arg",
        value_name = "ARG",
        hide = true,
        allow_hyphen_values = true
    )]
    pub internal_child_arg: Vec<String>,
}

/// Most passes accepted (a typo guard, not a hard limit of the design).
const MAX_PASSES: i64 = 1_000_000;

/// Check the arguments against each other and this host; user errors exit 2.
pub fn config_from_args(args: &ProbeArgs, host_mem: Option<u64>) -> anyhow::Result<ProbeConfig> {
    let mem = args.mem.bytes();
    if mem == 0 {
        return Err(usage("--mem must be at least 4K (one page), got 0"));
    }
    if mem % 4096 != 0 {
        return Err(usage(format!(
            "--mem must be a multiple of 4K (the page size), got {mem} bytes"
        )));
    }
    if let Some(host) = host_mem {
        if mem > host {
            return Err(usage(format!(
                "--mem {} is more than this host's memory ({})",
                args.mem,
                human_bytes(host)
            )));
        }
    }
    if !(1..=MAX_PASSES).contains(&args.passes) {
        return Err(usage(format!(
            "--passes must be between 1 and {MAX_PASSES}, got {}",
            args.passes
        )));
    }
    Ok(ProbeConfig {
        mem_bytes: mem,
        pattern: args.pattern,
        passes: args.passes as u32,
        seed: args.seed,
        verify: !args.no_verify,
    })
}

/// Run the subcommand.
pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let config = config_from_args(args, sandbox::host::host_mem_total_bytes())?;
    let plan = plan_from_args(&args.swap, config.mem_bytes)?;
    if let Some(cpu) = args.cpu {
        pin_to_cpu(cpu)?;
    }
    let scope = SignalScope::new().context("watching for Ctrl-C")?;
    let out = run_plan(&config, &plan, &scope)?;
    if args.json || matches!(plan, SwapPlan::KernelChild { .. }) {
        println!("{}", serde_json::to_string_pretty(&out.json)?);
    } else {
        print!("{}", out.text);
    }
    if let Some(why) = out.integrity_failure {
        anyhow::bail!(why);
    }
    Ok(())
}

/// `1536M` → "1.5 GiB".
fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if b >= unit {
            return format!("{:.1} {name}", b as f64 / unit as f64);
        }
    }
    format!("{b} B")
}

/// A duration in ns, short and readable: "850ns", "4.21µs", "12.3ms", "1.52s".
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.2}µs", f / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", f / 1e6),
        _ => format!("{:.2}s", f / 1e9),
    }
}

/// The human-readable report.
pub fn render_text(r: &ProbeResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "probe: {} test RAM ({} pages), pattern {}, {} pass{}, seed {}",
        ByteSize(r.mem_bytes),
        r.pages,
        r.pattern,
        r.passes.len(),
        if r.passes.len() == 1 { "" } else { "es" },
        r.seed
    );
    let _ = writeln!(
        s,
        "TSC {:.3} MHz ({:?})\n",
        r.tsc_khz as f64 / 1000.0,
        r.tsc_source
    );
    let _ = writeln!(
        s,
        "{:>4} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "pass", "accesses", "pages", "new", "wall", "min", "p50", "p90", "p99", "max"
    );
    for p in &r.passes {
        let l = &p.latency_ns;
        let _ = writeln!(
            s,
            "{:>4} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            p.pass,
            p.accesses,
            p.pages,
            p.new_pages,
            fmt_ns(p.wall_ns),
            fmt_ns(l.min),
            fmt_ns(l.p50),
            fmt_ns(l.p90),
            fmt_ns(l.p99),
            fmt_ns(l.max)
        );
    }
    let i = &r.integrity;
    let _ = writeln!(
        s,
        "\npages touched {} of {}, {} accesses, wall {}, integrity {}",
        r.pages_touched,
        r.pages,
        r.accesses,
        fmt_ns(r.wall_ns),
        if i.ok {
            format!("ok ({} pages checked)", i.pages_checked)
        } else {
            format!(
                "FAILED ({} bad tags, {} pages mismatched)",
                i.bad_tags, i.pages_mismatched
            )
        }
    );
    let _ = writeln!(
        s,
        "\nVM exits to the VMM (vCPU in KVM_RUN {}):",
        fmt_ns(r.vcpu_in_kvm_run_ns)
    );
    let _ = writeln!(
        s,
        "  {:<14} {:>8} {:>10} {:>10}",
        "reason", "count", "total", "mean"
    );
    for (reason, c) in &r.exits {
        let _ = writeln!(
            s,
            "  {:<14} {:>8} {:>10} {:>10}",
            reason.name(),
            c.count,
            fmt_ns(c.time_ns),
            fmt_ns(c.mean_ns())
        );
    }
    let k = &r.kvm_stats;
    if k.available {
        let pick = [
            "exits",
            "pf_taken",
            "pf_fixed",
            "pf_emulate",
            "mmio_exits",
            "halt_exits",
            "signal_exits",
        ];
        let shown: Vec<String> = pick
            .iter()
            .filter_map(|n| k.vcpu.get(*n).map(|v| format!("{n} {v}")))
            .collect();
        let _ = writeln!(s, "KVM stats (in kernel): {}", shown.join(", "));
    } else {
        let _ = writeln!(
            s,
            "KVM stats: unavailable ({})",
            k.unavailable_reason.as_deref().unwrap_or("unknown")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mem: &str, passes: i64) -> ProbeArgs {
        ProbeArgs {
            mem: mem.parse().unwrap(),
            pattern: Pattern::Random,
            passes,
            seed: 1,
            no_verify: false,
            json: false,
            cpu: None,
            swap: SwapArgs::default(),
        }
    }

    fn usage_msg(r: anyhow::Result<ProbeConfig>) -> String {
        let e = r.unwrap_err();
        assert!(e.downcast_ref::<crate::cli::UsageError>().is_some(), "{e}");
        e.to_string()
    }

    #[test]
    fn validates_sizes_and_passes() {
        let host = Some(24 << 30);
        assert!(usage_msg(config_from_args(&args("0", 2), host)).contains("--mem"));
        assert!(usage_msg(config_from_args(&args("4097", 2), host)).contains("multiple of 4K"));
        let m = usage_msg(config_from_args(&args("1T", 2), host));
        assert!(m.contains("1T") && m.contains("24.0 GiB"), "{m}");
        assert!(usage_msg(config_from_args(&args("256M", -1), host)).contains("--passes"));
        assert!(usage_msg(config_from_args(&args("256M", 0), host)).contains("got 0"));
        let c = config_from_args(&args("256M", 3), host).unwrap();
        assert_eq!(c.mem_bytes, 256 << 20);
        assert_eq!(c.passes, 3);
        assert!(c.verify);
        // Unknown host size: no upper bound check.
        assert!(config_from_args(&args("1T", 1), None).is_ok());
    }

    #[test]
    fn formats_durations() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(4_210), "4.21µs");
        assert_eq!(fmt_ns(12_300_000), "12.30ms");
        assert_eq!(fmt_ns(1_520_000_000), "1.52s");
        assert_eq!(human_bytes(24 << 30), "24.0 GiB");
    }
}

//! `swaplab probe`: run a no-OS probe guest that touches test RAM in a pattern and times
//! every access (see `workloads::probe` and [`runner::probe_run`]).
//!
//! With `--host-limit`, the host keeps at most that much of test RAM resident and swaps
//! the rest: `--host-swap uffd` (the default) with swaplab's userfaultfd swapper
//! ([`runner::probe_run::uffd`]), `--host-swap kernel` with the kernel's own swap
//! ([`runner::probe_run::kernel`]). Both add the same top-level JSON fields
//! ([`runner::probe_run::summary::SwapSummary`]). This module resolves the flags into
//! a [`SwapPlan`]; the runner runs it.

use std::path::PathBuf;

use anyhow::Context as _;
use base::ByteSize;
use hostsys::signals::SignalScope;
use runner::cli::usage;
use runner::probe_run::kernel::{self, KernelSettings};
use runner::probe_run::plan::{run_plan, Injections, SwapPlan, DEFAULT_STORE_DIR};
use runner::probe_run::summary::HostSwapMode;
use runner::probe_run::ProbeConfig;
use swapper::kswap::SwapKind;
use swapper::{PolicyKind, StoreKind, SwapperConfig};
use workloads::probe::Pattern;

/// Most fault-handler threads accepted.
const MAX_HANDLERS: usize = 64;
/// Longest busy-poll accepted, µs.
const MAX_SPIN_US: u32 = 10_000;
/// Largest prefetch cluster accepted.
const MAX_PREFETCH: u32 = 4096;
/// Smallest limit the swapper takes (16 pages).
const MIN_LIMIT: u64 = 16 * 4096;
/// Swap device size beyond test RAM (room for the VMM's own pages).
const SWAP_MARGIN: u64 = 64 << 20;
/// Arguments.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// Test RAM size (e.g. 256M, 1G); at most this host's memory.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub mem: ByteSize,
    /// Access pattern: seq, random, zipf[:SKEW] (default skew 0.99), hotcold[:H:P] (H% of the pages take P% of the accesses; default 20:80) or phase[:WINDOWS].
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
    #[command(flatten)]
    pub seccomp: crate::cli::SeccompFlag,
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

/// Backing store (`--store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreArg {
    /// A swap file (kernel: a swap file too).
    File,
    /// Plain copies in memory (kernel: zram).
    Memory,
    /// lz4-compressed copies in memory, like zram (kernel: zram).
    Lz4,
    /// Far memory: a Redis server or cluster at --store-url (uffd only).
    Redis,
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
    pub host_swap: Option<HostSwapArg>,
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
    /// The Redis server of --store redis: redis://HOST:PORT[/DB], or comma-separated
    /// nodes of one Redis Cluster (one node is enough; found by INFO).
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
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
        seccomp: args.seccomp.enabled(),
    })
}

/// Run the subcommand.
pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let config = config_from_args(args, sandbox::host::host_mem_total_bytes())?;
    let plan = plan_from_args(&args.swap, config.mem_bytes)?;
    if let Some(cpu) = args.cpu {
        hostsys::cpu::pin_to_cpu(cpu).map_err(|e| usage(format!("--cpu {cpu}: {e}")))?;
    }
    let scope = SignalScope::new().context("watching for Ctrl-C")?;
    let out = run_plan(&config, &plan, &scope)?;
    if args.json || matches!(plan, SwapPlan::KernelChild { .. }) {
        runner::cli::print_out(&format!("{}\n", serde_json::to_string_pretty(&out.json)?))?;
    } else {
        runner::cli::print_out(&out.text)?;
    }
    if !out.failures.is_empty() {
        anyhow::bail!(out.failures.join("; "));
    }
    Ok(())
}

/// Who swaps (`--host-swap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostSwapArg {
    /// swaplab's userfaultfd swapper.
    Uffd,
    /// The kernel: the VMM in a memory cgroup, swapping to a swap device.
    Kernel,
    /// No host swapping.
    None,
}

impl From<HostSwapArg> for HostSwapMode {
    fn from(a: HostSwapArg) -> Self {
        match a {
            HostSwapArg::Uffd => Self::Uffd,
            HostSwapArg::Kernel => Self::Kernel,
            HostSwapArg::None => Self::None,
        }
    }
}

/// The flags that only mean something with the userfaultfd swapper.
fn uffd_only_flags(a: &SwapArgs) -> Vec<&'static str> {
    [
        (a.policy.is_some(), "--policy"),
        (a.prefetch.is_some(), "--prefetch"),
        (a.handlers.is_some(), "--handlers"),
        (a.spin_us.is_some(), "--spin-us"),
        (a.checksums, "--checksums"),
        (a.no_checksums, "--no-checksums"),
        (a.o_direct, "--o-direct"),
        (a.inject_read_errors.is_some(), "--inject-read-errors"),
        (a.inject_corrupt_reads.is_some(), "--inject-corrupt-reads"),
        (a.inject_write_errors.is_some(), "--inject-write-errors"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

/// Resolve the host-swap arguments for test RAM of `mem` bytes; user errors exit 2.
pub fn plan_from_args(a: &SwapArgs, mem: u64) -> anyhow::Result<SwapPlan> {
    if let Some(cgroup) = &a.internal_kernel_child {
        let guest_limit_bytes = a
            .internal_guest_limit
            .ok_or_else(|| usage("--internal-kernel-child needs --internal-guest-limit"))?;
        if a.host_limit.is_some() || a.host_swap.is_some_and(|m| m != HostSwapArg::None) {
            return Err(usage("--internal-kernel-child runs with --host-swap none"));
        }
        return Ok(SwapPlan::KernelChild {
            cgroup: cgroup.clone(),
            guest_limit_bytes,
            cold_sweep_ms: a.kernel_cold_sweep.unwrap_or(0),
        });
    }
    let mode = match (a.host_limit, a.host_swap.map(HostSwapMode::from)) {
        (None, None | Some(HostSwapMode::None)) => HostSwapMode::None,
        (None, Some(m)) => {
            return Err(usage(format!(
                "--host-swap {} needs --host-limit SIZE",
                m.name()
            )))
        }
        (Some(_), Some(HostSwapMode::None)) => {
            return Err(usage(
                "--host-limit needs --host-swap uffd or kernel, not none",
            ))
        }
        (Some(_), m) => m.unwrap_or(HostSwapMode::Uffd),
    };
    let mut given: Vec<&str> = uffd_only_flags(a);
    if mode == HostSwapMode::None {
        given.extend(
            [
                (a.store.is_some(), "--store"),
                (a.store_path.is_some(), "--store-path"),
                (a.store_url.is_some(), "--store-url"),
            ]
            .into_iter()
            .filter_map(|(set, name)| set.then_some(name)),
        );
        if a.kernel_cold_sweep.is_some() {
            given.push("--kernel-cold-sweep");
        }
        if let Some(f) = given.first() {
            return Err(usage(format!("{f} needs --host-limit SIZE")));
        }
        if !a.internal_child_arg.is_empty() {
            return Err(usage("--internal-child-arg needs --host-swap kernel"));
        }
        return Ok(SwapPlan::None);
    }
    let limit = a
        .host_limit
        .expect("a mode other than none has a limit")
        .bytes();
    if limit < MIN_LIMIT || limit % 4096 != 0 {
        return Err(usage(format!(
            "--host-limit must be a multiple of 4K and at least 64K (16 pages), got {limit} bytes"
        )));
    }
    if limit > mem {
        return Err(usage(format!(
            "--host-limit {} is more than --mem {}",
            ByteSize(limit),
            ByteSize(mem)
        )));
    }
    let store = a.store.unwrap_or(StoreArg::Memory);
    let needs_dir = store == StoreArg::File;
    let dir = a
        .store_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE_DIR));
    if (needs_dir || a.store_path.is_some()) && !dir.is_dir() {
        return Err(usage(format!(
            "--store-path {} is not a directory",
            dir.display()
        )));
    }
    if a.o_direct && store != StoreArg::File {
        return Err(usage("--o-direct needs --store file"));
    }
    let url = store_url(a, store)?;
    if mode == HostSwapMode::Kernel {
        if let Some(f) = given.first() {
            return Err(usage(format!(
                "{f} applies to --host-swap uffd only (the kernel has its own policy)"
            )));
        }
        let swap = match store {
            StoreArg::File => SwapKind::File { dir: dir.clone() },
            StoreArg::Memory | StoreArg::Lz4 => SwapKind::Zram,
            StoreArg::Redis => {
                return Err(usage(
                    "--store redis applies to --host-swap uffd only (the kernel swaps to a local device)",
                ))
            }
        };
        return Ok(SwapPlan::Kernel {
            settings: KernelSettings {
                guest_limit_bytes: limit,
                swap,
                swap_bytes: mem + SWAP_MARGIN,
                sweep_dirs: vec![dir],
            },
            cold_sweep_ms: a
                .kernel_cold_sweep
                .unwrap_or_else(kernel::default_cold_sweep_ms),
            child_extra: a.internal_child_arg.clone(),
        });
    }
    if !a.internal_child_arg.is_empty() || a.kernel_cold_sweep.is_some() {
        return Err(usage(
            "--kernel-cold-sweep and --internal-child-arg need --host-swap kernel",
        ));
    }
    uffd_plan(a, limit, (store, url), dir)
}

/// Longest `--store-url` taken (several cluster nodes fit easily).
const MAX_STORE_URL: usize = 1024;

/// `--store-url`: required by `--store redis` and only taken with it, checked
/// for form here (reachability when the store opens).
fn store_url(a: &SwapArgs, store: StoreArg) -> anyhow::Result<Option<String>> {
    match (&a.store_url, store) {
        (None, StoreArg::Redis) => Err(usage(
            "--store redis needs --store-url redis://HOST:PORT[/DB]",
        )),
        (None, _) => Ok(None),
        (Some(_), s) if s != StoreArg::Redis => Err(usage("--store-url needs --store redis")),
        (Some(u), _) if u.len() > MAX_STORE_URL => Err(usage(format!(
            "--store-url is {} bytes long, at most {MAX_STORE_URL}",
            u.len()
        ))),
        (Some(u), _) => match swapper::store::redis::conn::parse_url(u) {
            Ok(_) => Ok(Some(u.clone())),
            Err(e) => Err(usage(format!("--store-url: {e}"))),
        },
    }
}

/// The userfaultfd swapper's plan: the uffd-only flags, checked.
fn uffd_plan(
    a: &SwapArgs,
    limit: u64,
    (store, url): (StoreArg, Option<String>),
    dir: PathBuf,
) -> anyhow::Result<SwapPlan> {
    let handlers = a.handlers.unwrap_or(1);
    if !(1..=MAX_HANDLERS).contains(&handlers) {
        return Err(usage(format!(
            "--handlers must be between 1 and {MAX_HANDLERS}, got {handlers}"
        )));
    }
    let prefetch = at_most("--prefetch", a.prefetch.unwrap_or(0), MAX_PREFETCH)?;
    let spin_us = at_most("--spin-us", a.spin_us.unwrap_or(0), MAX_SPIN_US)?;
    let config = SwapperConfig {
        limit_bytes: limit,
        store: match store {
            StoreArg::File => StoreKind::File {
                dir,
                direct: a.o_direct,
            },
            StoreArg::Memory => StoreKind::Memory,
            StoreArg::Lz4 => StoreKind::Lz4,
            StoreArg::Redis => StoreKind::Redis {
                url: url.unwrap_or_default(),
            },
        },
        policy: a.policy.unwrap_or(PolicyArg::Clock).into(),
        prefetch,
        handler_threads: handlers,
        handler_spin_us: spin_us,
        checksums: !a.no_checksums,
        ..Default::default()
    };
    config.validate().map_err(|e| usage(e.to_string()))?;
    Ok(SwapPlan::Uffd {
        limit_bytes: limit,
        config,
        inject: Injections {
            read_errors: a.inject_read_errors.unwrap_or(0),
            corrupt_reads: a.inject_corrupt_reads.unwrap_or(0),
            write_errors: a.inject_write_errors.unwrap_or(0),
        },
    })
}

/// `value` of `flag`, a usage error above `max`.
fn at_most(flag: &str, value: u32, max: u32) -> anyhow::Result<u32> {
    if value > max {
        return Err(usage(format!("{flag} must be at most {max}, got {value}")));
    }
    Ok(value)
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
            seccomp: Default::default(),
            json: false,
            cpu: None,
            swap: SwapArgs::default(),
        }
    }

    fn usage_msg(r: anyhow::Result<ProbeConfig>) -> String {
        let e = r.unwrap_err();
        assert!(e.downcast_ref::<runner::cli::UsageError>().is_some(), "{e}");
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
        assert_eq!(report::stats::fmt_ns(850), "850ns");
        assert_eq!(report::stats::fmt_ns(4_210), "4.21µs");
        assert_eq!(report::stats::fmt_ns(12_300_000), "12.30ms");
        assert_eq!(report::stats::fmt_ns(1_520_000_000), "1.52s");
        assert_eq!(human_bytes(24 << 30), "24.0 GiB");
    }
}

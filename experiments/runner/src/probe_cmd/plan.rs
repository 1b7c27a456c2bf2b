//! Resolving the host-swap flags into a plan, and running a probe by plan (used by
//! `swaplab probe` and `swaplab bench host-swap`).

use std::path::PathBuf;

use swapper::kswap::SwapKind;
use swapper::{FaultInjector, StoreKind, SwapperConfig};

use super::{render_text, PolicyArg, StoreArg, SwapArgs};
use crate::cli::usage;
use crate::probe_run::kernel::{self, ChildCommand, KernelSettings};
use crate::probe_run::summary::{self, HostSwapMode, SwapSummary};
use crate::probe_run::uffd::run_probe_uffd;
use crate::probe_run::{run_probe, ProbeConfig, ProbeHooks, ProbeResult};
use hostsys::signals::{Interrupted, SignalScope};
use scenario::size::ByteSize;

/// Most fault-handler threads accepted.
const MAX_HANDLERS: usize = 64;
/// Largest prefetch cluster accepted.
const MAX_PREFETCH: u32 = 4096;
/// Smallest limit the swapper takes (16 pages).
const MIN_LIMIT: u64 = 16 * 4096;
/// Swap device size beyond test RAM (room for the VMM's own pages).
const SWAP_MARGIN: u64 = 64 << 20;
/// Default directory for store and swap files.
pub const DEFAULT_STORE_DIR: &str = "/var/tmp";

/// How the host swaps, resolved from the arguments.
#[derive(Debug, Clone)]
pub enum SwapPlan {
    /// Plain anonymous memory.
    None,
    /// swaplab's swapper (hooks and injector added at run time).
    Uffd {
        /// The limit as given.
        limit_bytes: u64,
        /// Its configuration.
        config: SwapperConfig,
        /// Injected store failures (testing).
        inject: Injections,
    },
    /// The kernel baseline (parent).
    Kernel {
        /// Its settings.
        settings: KernelSettings,
        /// Cold sweep period for the child, ms.
        cold_sweep_ms: u64,
        /// Extra child arguments (testing).
        child_extra: Vec<String>,
    },
    /// The kernel baseline's child.
    KernelChild {
        /// Its cgroup.
        cgroup: PathBuf,
        /// The guest budget.
        guest_limit_bytes: u64,
        /// Cold sweep period, ms.
        cold_sweep_ms: u64,
    },
}

/// Store failures to inject (hidden testing flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injections {
    /// Failing reads.
    pub read_errors: u64,
    /// Corrupt reads.
    pub corrupt_reads: u64,
    /// Failing writes.
    pub write_errors: u64,
}

/// The flags that only mean something with the userfaultfd swapper.
fn uffd_only_flags(a: &SwapArgs) -> Vec<&'static str> {
    [
        (a.policy.is_some(), "--policy"),
        (a.prefetch.is_some(), "--prefetch"),
        (a.handlers.is_some(), "--handlers"),
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
        if a.host_limit.is_some() || a.host_swap.is_some_and(|m| m != HostSwapMode::None) {
            return Err(usage("--internal-kernel-child runs with --host-swap none"));
        }
        return Ok(SwapPlan::KernelChild {
            cgroup: cgroup.clone(),
            guest_limit_bytes,
            cold_sweep_ms: a.kernel_cold_sweep.unwrap_or(0),
        });
    }
    let mode = match (a.host_limit, a.host_swap) {
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
    if mode == HostSwapMode::Kernel {
        if let Some(f) = given.first() {
            return Err(usage(format!(
                "{f} applies to --host-swap uffd only (the kernel has its own policy)"
            )));
        }
        return Ok(SwapPlan::Kernel {
            settings: KernelSettings {
                guest_limit_bytes: limit,
                swap: match store {
                    StoreArg::File => SwapKind::File { dir: dir.clone() },
                    StoreArg::Memory | StoreArg::Lz4 => SwapKind::Zram,
                },
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
    let handlers = a.handlers.unwrap_or(1);
    if !(1..=MAX_HANDLERS).contains(&handlers) {
        return Err(usage(format!(
            "--handlers must be between 1 and {MAX_HANDLERS}, got {handlers}"
        )));
    }
    let prefetch = a.prefetch.unwrap_or(0);
    if prefetch > MAX_PREFETCH {
        return Err(usage(format!(
            "--prefetch must be at most {MAX_PREFETCH} pages, got {prefetch}"
        )));
    }
    let config = SwapperConfig {
        limit_bytes: limit,
        store: match store {
            StoreArg::File => StoreKind::File {
                dir,
                direct: a.o_direct,
            },
            StoreArg::Memory => StoreKind::Memory,
            StoreArg::Lz4 => StoreKind::Lz4,
        },
        policy: a.policy.unwrap_or(PolicyArg::Clock).into(),
        prefetch,
        handler_threads: handlers,
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

/// What a probe run produced, ready to print.
#[derive(Debug, Clone)]
pub struct ProbeOutput {
    /// The whole result as JSON (probe fields, then the host-swap ones).
    pub json: serde_json::Value,
    /// The text report.
    pub text: String,
    /// The host-swap summary, if the host swapped.
    pub summary: Option<SwapSummary>,
    /// Why the data cannot be trusted, if it cannot.
    pub integrity_failure: Option<String>,
}

fn probe_integrity(r: &ProbeResult) -> Option<String> {
    (!r.integrity.ok).then(|| {
        format!(
            "test RAM integrity check failed: {} bad tags, {} of {} pages mismatched",
            r.integrity.bad_tags, r.integrity.pages_mismatched, r.integrity.pages_checked
        )
    })
}

fn merge(json: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (json.as_object_mut(), extra) {
        a.extend(b);
    }
}

/// The arguments of the kernel-swap child for `config`.
pub fn child_args(config: &ProbeConfig, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "probe",
        "--json",
        "--host-swap",
        "none",
        "--mem",
        &config.mem_bytes.to_string(),
        "--pattern",
        &config.pattern.to_string(),
        "--passes",
        &config.passes.to_string(),
        "--seed",
        &config.seed.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !config.verify {
        v.push("--no-verify".into());
    }
    v.extend(extra.iter().cloned());
    v
}

/// A start hook that makes a caught signal abort the VM.
fn abort_on_signal(scope: &SignalScope) -> crate::probe_run::StartedHook {
    let handle = scope.handle();
    Box::new(move |h: vmm::VmHandle| {
        handle.set_action(Some(Box::new(move |s| {
            h.abort(Interrupted(s).to_string());
        })));
    })
}

/// Run a probe as `plan` says. `scope` turns Ctrl-C into a clean stop.
pub fn run_plan(
    config: &ProbeConfig,
    plan: &SwapPlan,
    scope: &SignalScope,
) -> anyhow::Result<ProbeOutput> {
    match plan {
        SwapPlan::None => {
            let hooks = ProbeHooks {
                on_started: Some(abort_on_signal(scope)),
                ..Default::default()
            };
            let r = run_probe(config, hooks);
            scope.set_action(None);
            scope.check()?;
            let r = r?;
            Ok(ProbeOutput {
                json: serde_json::to_value(&r)?,
                text: render_text(&r),
                summary: None,
                integrity_failure: probe_integrity(&r),
            })
        }
        SwapPlan::KernelChild {
            cgroup,
            guest_limit_bytes,
            cold_sweep_ms,
        } => {
            let (hooks, info) = kernel::kernel_child_hooks(
                cgroup.clone(),
                *guest_limit_bytes,
                config.mem_bytes,
                config.passes,
                *cold_sweep_ms,
            );
            let r = run_probe(config, hooks)?;
            let text = render_text(&r);
            let mut json = serde_json::to_value(&r)?;
            let info = info.lock().unwrap_or_else(|e| e.into_inner()).clone();
            merge(
                &mut json,
                serde_json::json!({ kernel::CHILD_KEY: info, kernel::TEXT_KEY: text }),
            );
            Ok(ProbeOutput {
                json,
                text,
                summary: None,
                integrity_failure: probe_integrity(&r),
            })
        }
        SwapPlan::Uffd {
            limit_bytes,
            config: swap,
            inject,
        } => {
            let mut swap = swap.clone();
            if *inject != Injections::default() {
                let inj = FaultInjector::new();
                if inject.read_errors > 0 {
                    inj.fail_reads(inject.read_errors, libc::EIO);
                }
                if inject.corrupt_reads > 0 {
                    inj.corrupt_reads(inject.corrupt_reads);
                }
                if inject.write_errors > 0 {
                    inj.fail_writes(inject.write_errors, libc::ENOSPC);
                }
                swap.fault_injector = Some(inj);
            }
            if let StoreKind::File { dir, .. } = &swap.store {
                // Store files of a crashed earlier run (dead pid in the name).
                if let Err(e) = swapper::kswap::sweep_leftovers(&[dir.as_path()]) {
                    tracing::warn!("sweeping leftovers: {e}");
                }
            }
            let hooks = ProbeHooks {
                on_started: Some(abort_on_signal(scope)),
                ..Default::default()
            };
            let run = run_probe_uffd(config, swap, hooks);
            scope.set_action(None);
            scope.check()?;
            let run = run?;
            let m = summary::uffd_summary(&run, *limit_bytes);
            let mut json = serde_json::to_value(&run.result)?;
            merge(&mut json, serde_json::to_value(&m)?);
            merge(&mut json, serde_json::json!({ "swapper": &run.swap }));
            let mut text = render_text(&run.result);
            text.push_str(&summary::render_uffd(&run, &m));
            let integrity_failure = probe_integrity(&run.result).or_else(|| {
                (m.integrity_errors > 0)
                    .then(|| format!("{} checksum mismatches on swap-in", m.integrity_errors))
            });
            Ok(ProbeOutput {
                json,
                text,
                summary: Some(m),
                integrity_failure,
            })
        }
        SwapPlan::Kernel {
            settings,
            cold_sweep_ms,
            child_extra,
        } => {
            let mut args = child_args(config, &[]);
            args.extend(["--kernel-cold-sweep".to_string(), cold_sweep_ms.to_string()]);
            args.extend(child_extra.iter().cloned());
            let child = ChildCommand {
                program: PathBuf::from("/proc/self/exe"),
                args,
            };
            let run = kernel::run_kernel_probe(settings, &child, scope)?;
            let m = summary::kernel_summary(&run);
            let mut json = run.probe.clone();
            merge(&mut json, serde_json::to_value(&m)?);
            merge(&mut json, serde_json::json!({ "kernel_swap": &run.report }));
            let mut text = run.text.clone();
            text.push_str(&summary::render_kernel(&run, &m));
            let integrity_failure = (m.integrity_errors > 0).then(|| {
                format!(
                    "test RAM integrity check failed: {} errors",
                    m.integrity_errors
                )
            });
            Ok(ProbeOutput {
                json,
                text,
                summary: Some(m),
                integrity_failure,
            })
        }
    }
}

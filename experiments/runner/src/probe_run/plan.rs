//! How the host swaps test RAM (a plan the command line resolves from its flags),
//! and running a probe by plan (for `swaplab probe` and `swaplab bench host-swap`).

use std::path::PathBuf;

use swapper::{FaultInjector, StoreKind, SwapperConfig};

use super::floor::run_probe_floor;
use super::kernel::{self, ChildCommand, KernelSettings};
use super::render::render_text;
use super::summary::{self, SwapSummary};
use super::uffd::run_probe_uffd;
use super::{run_probe, ProbeConfig, ProbeHooks, ProbeResult};
use hostsys::signals::{Interrupted, SignalScope};

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
    /// The userfaultfd floor ([`super::floor`]): every access of every pass
    /// after the first is one bare round trip. Test RAM's content is not
    /// kept (each fault installs the same prepared page), so nothing is
    /// verified.
    Floor,
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

/// What a probe run produced, ready to print.
#[derive(Debug, Clone)]
pub struct ProbeOutput {
    /// The whole result as JSON (probe fields, then the host-swap ones).
    pub json: serde_json::Value,
    /// The text report.
    pub text: String,
    /// The host-swap summary, if the host swapped.
    pub summary: Option<SwapSummary>,
    /// Why the run failed, if it did, one line per reason: test RAM came back wrong
    /// (integrity), or the host limit was not held. Empty for a good run.
    pub failures: Vec<String>,
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
    if !config.seccomp {
        v.push("--no-seccomp".into());
    }
    v.extend(extra.iter().cloned());
    v
}

/// A start hook that makes a caught signal abort the VM.
fn abort_on_signal(scope: &SignalScope) -> super::StartedHook {
    let handle = scope.handle();
    Box::new(move |h: vmm::VmHandle| {
        handle.set_action(Some(Box::new(move |s| {
            h.abort(Interrupted(s).to_string());
        })));
    })
}

/// Runs `run` with hooks that abort the VM on a signal `scope` catches; a
/// caught signal is the error then, whatever the run returned.
fn stop_on_signal<T, E>(
    scope: &SignalScope,
    run: impl FnOnce(ProbeHooks) -> Result<T, E>,
) -> anyhow::Result<T>
where
    anyhow::Error: From<E>,
{
    let hooks = ProbeHooks {
        on_started: Some(abort_on_signal(scope)),
        ..Default::default()
    };
    let r = run(hooks);
    scope.set_action(None);
    scope.check()?;
    Ok(r?)
}

/// The floor's arm of [`run_plan`].
fn run_floor(config: &ProbeConfig, scope: &SignalScope) -> anyhow::Result<ProbeOutput> {
    let (r, stats) = stop_on_signal(scope, |hooks| run_probe_floor(config, hooks))?;
    let mut json = serde_json::to_value(&r)?;
    merge(&mut json, serde_json::json!({ "floor": stats }));
    let mut text = render_text(&r);
    text.push_str(&format!(
        "\nuserfaultfd floor: {} faults served by UFFDIO_COPY of a prepared page, {} already mapped, {} errors\n",
        stats.faults, stats.already_mapped, stats.errors
    ));
    Ok(ProbeOutput {
        json,
        text,
        summary: None,
        failures: Vec::new(),
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
            let r = stop_on_signal(scope, |hooks| run_probe(config, hooks))?;
            Ok(ProbeOutput {
                json: serde_json::to_value(&r)?,
                text: render_text(&r),
                summary: None,
                failures: probe_integrity(&r).into_iter().collect(),
            })
        }
        SwapPlan::Floor => run_floor(config, scope),
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
                failures: probe_integrity(&r).into_iter().collect(),
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
            let run = stop_on_signal(scope, |hooks| run_probe_uffd(config, swap, hooks))?;
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
            let failures = integrity_failure
                .into_iter()
                .chain(summary::limit_failure(&m))
                .collect();
            Ok(ProbeOutput {
                json,
                text,
                summary: Some(m),
                failures,
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
            let failures = integrity_failure
                .into_iter()
                .chain(summary::limit_failure(&m))
                .collect();
            Ok(ProbeOutput {
                json,
                text,
                summary: Some(m),
                failures,
            })
        }
    }
}

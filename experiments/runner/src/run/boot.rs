//! `swaplab boot --api-sock PATH [--balloon] [--host-limit SIZE]`: the guest
//! image booted on the scenario machine ([`super::machine`]), so it gets the
//! balloon, the host swapper and the control socket, running the `--run`
//! command instead of a workload.

use anyhow::Context;

use super::machine::{run_machine, MachineOptions};
use crate::boot::console::Show;
use crate::boot::options::BootOptions;
use crate::cli::usage;
use base::ByteSize;
use scenario::{
    BalloonConfig, BalloonPolicy, GuestConfig, HostConfig, Mitigation, Scenario, StoreChoice,
    WorkloadConfig, WorkloadKind,
};

/// The machine `boot` asks for, as a scenario.
pub fn scenario(args: &BootOptions) -> Scenario {
    Scenario {
        name: "boot".into(),
        description: String::new(),
        repetitions: 1,
        timeout_s: args.timeout,
        quick: true,
        guest: GuestConfig {
            mem: args.mem,
            cpus: args.cpus,
            swap: None,
            root_disk: args.root_disk,
            kernel: None,
        },
        host: args.host_limit.map(|limit| HostConfig {
            swapper: scenario::HostSwapper::Uffd,
            limit,
            store: StoreChoice::Memory,
            store_url: None,
            policy: scenario::PolicyKind::Clock,
            prefetch: 0,
            mitigations: vec![Mitigation::SilentWrites],
        }),
        balloon: BalloonConfig {
            policy: if args.balloon {
                BalloonPolicy::Manual {
                    target: ByteSize(0),
                }
            } else {
                BalloonPolicy::None
            },
            stats_interval_ms: 1000,
        },
        // Not run: `--run` replaces it.
        workload: WorkloadConfig {
            kind: WorkloadKind::Touch,
            mb: 1,
            pattern: workloads::probe::Pattern::Seq,
            passes: 1,
            seed: 1,
            write_ratio: 1.0,
            disk_read_mb: 0,
            disk_cache_mb: 0,
            duration_s: 0,
            command: None,
            metric: None,
            app: None,
        },
        origin: Default::default(),
    }
}

/// Boots with the devices; the command's exit status.
pub fn boot_with_devices(args: &BootOptions) -> anyhow::Result<u8> {
    if args.kernel.is_some() || args.initrd.is_some() || args.cmdline.is_some() || args.bzimage {
        return Err(usage(
            "--api-sock, --balloon, --host-limit and --root-disk boot the guest image; drop --kernel, --initrd, --cmdline and --bzimage",
        ));
    }
    boot_scenario(args, &scenario(args))
}

/// Boots `spec` (a [`scenario`] of `args`, possibly changed, e.g. given a guest
/// swap disk) running `args`' command; its exit status.
pub fn boot_scenario(args: &BootOptions, spec: &Scenario) -> anyhow::Result<u8> {
    let scratch = base::scratch::dir("swaplab-boot-").context("creating a scratch directory")?;
    let command = args
        .run
        .clone()
        .unwrap_or_else(|| workloads::image::init::DEFAULT_COMMAND.to_string());
    let raw = run_machine(
        spec,
        MachineOptions {
            scratch: scratch.path(),
            show: if args.run.is_some() && !args.boot_log {
                Show::Command
            } else {
                Show::All
            },
            console_log: args.console.as_deref(),
            api_sock: args.api_sock.as_deref().map(sandbox::api_sock_listen_path),
            command: Some(command),
            console_to_stdout: true,
            interrupter: None,
            triple_fault_first: false,
        },
    )
    .context("booting the guest")?;
    crate::boot::verdict(&raw.guest, args.run.is_some()).map_err(anyhow::Error::from)
}

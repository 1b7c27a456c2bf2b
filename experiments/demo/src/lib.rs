//! `swaplab demo`: a live terminal view of ballooning and host swapping, for
//! lectures.
//!
//! The demo boots the guest image (through the nested sandbox when this host
//! needs it) as a child process ([`vm`]) with a balloon, the userfaultfd host
//! swapper, a guest swap disk and the guest agent (`swaplab-guest agent`), and
//! is itself only a control-socket client ([`client`]): it polls the VM and
//! draws ([`ui`]) guest memory, the balloon, host residency and limit, guest and
//! host swap rates ([`model`]: deltas between polls), recent fault latencies and
//! events. Keys ([`action`]): `+`/`-` inflate/deflate the balloon by a step, `w`
//! starts/stops the workload in the guest, `l` moves to the next host limit,
//! `q` (or Ctrl-C) quits; `--script FILE` plays them on a timer ([`script`]).
//!
//! The terminal is always given back as it was ([`term`]): on quit, on an
//! error, on a panic and on SIGINT/SIGTERM/SIGHUP; the VM is stopped on every
//! one of those paths too.

pub mod action;
pub mod app;
pub mod client;
pub mod model;
pub mod script;
pub mod term;
pub mod ui;
pub mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use sandbox::SandboxFlag;
use scenario::size::ByteSize;

/// Arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Guest RAM.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub mem: ByteSize,
    /// vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// The guest's swap disk.
    #[arg(long, value_name = "SIZE", default_value = "128M")]
    pub guest_swap: ByteSize,
    /// Host limits `l` cycles through, the first (the largest) at start
    /// (default: 7/8, 1/2 and 1/4 of --mem).
    #[arg(long, value_name = "SIZE,SIZE,...", value_delimiter = ',')]
    pub host_limits: Vec<ByteSize>,
    /// Balloon step of `+` and `-`.
    #[arg(long, value_name = "SIZE", default_value = "32M")]
    pub step: ByteSize,
    /// MiB the workload (`w`) touches (default: 3/8 of --mem).
    #[arg(long, value_name = "N")]
    pub workload_mb: Option<u64>,
    /// The workload's access pattern (`swaplab-guest touch --pattern`).
    #[arg(long, value_name = "P", default_value = "random")]
    pub pattern: String,
    /// Play this script of timed actions (see `swaplab demo --help`).
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Poll the VM this often.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub interval_ms: u64,
    /// Where the VM serves its control socket (default: in a temporary directory).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Do not boot a VM: show the one serving this control socket.
    #[arg(long, value_name = "PATH", conflicts_with = "api_sock")]
    pub attach: Option<PathBuf>,
    /// Write the VM's output here (default: in a temporary directory, kept on failure).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Stop the VM after this many seconds.
    #[arg(long, value_name = "S", default_value_t = 3600)]
    pub timeout: u64,
    /// Run the demo's VM (the child the demo starts); no terminal UI.
    #[arg(long, hide = true)]
    pub serve: bool,
    #[command(flatten)]
    pub sandbox: SandboxFlag,
}

impl DemoArgs {
    /// The host limit levels, bytes: `--host-limits` or the defaults.
    pub fn limits(&self) -> Vec<u64> {
        if !self.host_limits.is_empty() {
            return self.host_limits.iter().map(|l| l.bytes()).collect();
        }
        let mib = |b: u64| b >> 20 << 20;
        let m = self.mem.bytes();
        vec![mib(m / 8 * 7), mib(m / 2), mib(m / 4)]
    }

    /// MiB the workload touches.
    pub fn workload_mb(&self) -> u64 {
        self.workload_mb
            .unwrap_or((self.mem.bytes() / 8 * 3) >> 20)
            .max(1)
    }

    /// Checks what clap cannot; the message is a usage error.
    pub fn validate(&self) -> Result<(), String> {
        let limits = self.limits();
        let mem = self.mem.bytes();
        if mem < 128 << 20 {
            return Err(format!(
                "--mem {} is too small for the demo (at least 128M)",
                self.mem
            ));
        }
        let first = limits[0];
        for &l in &limits {
            if l < 32 << 20 || l >= mem {
                return Err(format!(
                    "host limit {} must be at least 32M and below --mem {}",
                    ByteSize(l),
                    self.mem
                ));
            }
            if l > first {
                return Err(format!(
                    "host limit {} is above the first one ({}): the first is the largest (the VM starts with it)",
                    ByteSize(l),
                    ByteSize(first)
                ));
            }
        }
        if self.step.bytes() < 1 << 20 || self.step.bytes() >= mem {
            return Err(format!(
                "--step {} must be at least 1M and below --mem",
                self.step
            ));
        }
        if self.workload_mb() >= mem >> 20 {
            return Err(format!(
                "--workload-mb {} must be below --mem ({} MiB)",
                self.workload_mb(),
                mem >> 20
            ));
        }
        if !(50..=10_000).contains(&self.interval_ms) {
            return Err(format!(
                "--interval-ms must be between 50 and 10000, got {}",
                self.interval_ms
            ));
        }
        if !(1..=24 * 3600).contains(&self.timeout) {
            return Err(format!(
                "--timeout must be between 1 and 86400 s, got {}",
                self.timeout
            ));
        }
        Ok(())
    }
}

/// Sizes as `--host-limits` takes them.
pub fn limits_arg(limits: &[u64]) -> String {
    limits
        .iter()
        .map(|l| ByteSize(*l).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `swaplab demo`: the exit status.
pub fn main(args: &DemoArgs) -> ExitCode {
    let result = match args.validate() {
        Err(msg) => Err(runner::cli::usage(msg)),
        Ok(()) if args.serve => vm::serve(args),
        Ok(()) => app::run(args).map(|()| 0),
    };
    runner::cli::finish_status(result)
}

#[cfg(test)]
pub(crate) fn parse_args(argv: &[&str]) -> Result<DemoArgs, clap::Error> {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        demo: DemoArgs,
    }
    Wrap::try_parse_from(argv).map(|w| w.demo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_memory_size() {
        let a = parse_args(&["demo"]).unwrap();
        assert_eq!(a.limits(), [224 << 20, 128 << 20, 64 << 20]);
        assert_eq!(a.workload_mb(), 96);
        assert_eq!(limits_arg(&a.limits()), "224M,128M,64M");
        a.validate().unwrap();
        let a = parse_args(&["demo", "--mem", "512M", "--host-limits", "400M,100M"]).unwrap();
        assert_eq!(a.limits(), [400 << 20, 100 << 20]);
        a.validate().unwrap();
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let bad = |argv: &[&str], needle: &str| {
            let e = parse_args(argv).unwrap().validate().unwrap_err();
            assert!(e.contains(needle), "{argv:?}: {e}");
        };
        bad(
            &["demo", "--host-limits", "100M,200M"],
            "first is the largest",
        );
        bad(&["demo", "--host-limits", "300M"], "below --mem");
        bad(&["demo", "--host-limits", "16M"], "at least 32M");
        bad(&["demo", "--mem", "64M"], "too small");
        bad(&["demo", "--workload-mb", "256"], "below --mem");
        bad(&["demo", "--interval-ms", "1"], "interval");
        bad(&["demo", "--step", "0"], "--step");
        assert!(parse_args(&["demo", "--api-sock", "a", "--attach", "b"]).is_err());
    }
}

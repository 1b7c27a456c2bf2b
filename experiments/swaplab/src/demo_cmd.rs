//! `swaplab demo`: the command line of the live terminal view.

use std::path::PathBuf;
use std::process::ExitCode;

use base::ByteSize;
use demo::DemoOptions;

use crate::sandbox_cmd::SandboxFlag;

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
    #[command(flatten)]
    pub seccomp: crate::cli::SeccompFlag,
}

impl DemoArgs {
    /// The runner's options.
    pub fn options(&self) -> DemoOptions {
        DemoOptions {
            mem: self.mem,
            cpus: self.cpus,
            guest_swap: self.guest_swap,
            host_limits: self.host_limits.clone(),
            step: self.step,
            workload_mb: self.workload_mb,
            pattern: self.pattern.clone(),
            script: self.script.clone(),
            interval_ms: self.interval_ms,
            api_sock: self.api_sock.clone(),
            attach: self.attach.clone(),
            log: self.log.clone(),
            timeout: self.timeout,
            serve: self.serve,
            sandbox: self.sandbox.mode(),
            seccomp: self.seccomp.enabled(),
        }
    }
}

/// Runs `swaplab demo`: the exit status.
pub fn main(args: &DemoArgs) -> ExitCode {
    runner::cli::finish_status(demo::run(&args.options()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(argv: &[&str]) -> Result<DemoOptions, clap::Error> {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            demo: DemoArgs,
        }
        Wrap::try_parse_from(argv).map(|w| w.demo.options())
    }

    #[test]
    fn defaults_follow_the_memory_size() {
        let a = parse_args(&["demo"]).unwrap();
        assert_eq!(a.limits(), [224 << 20, 128 << 20, 64 << 20]);
        assert_eq!(a.workload_mb(), 96);
        assert_eq!(demo::limits_arg(&a.limits()), "224M,128M,64M");
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

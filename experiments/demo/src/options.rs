//! What `swaplab demo` is asked for, as plain options, and their checks.

use std::path::PathBuf;

use base::ByteSize;
use sandbox::SandboxMode;

/// Arguments.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Guest RAM.
    pub mem: ByteSize,
    /// vCPUs.
    pub cpus: u32,
    /// The guest's swap disk.
    pub guest_swap: ByteSize,
    /// Host limits `l` cycles through, the first (the largest) at start
    /// (default: 7/8, 1/2 and 1/4 of --mem).
    pub host_limits: Vec<ByteSize>,
    /// Balloon step of `+` and `-`.
    pub step: ByteSize,
    /// MiB the workload (`w`) touches (default: 3/8 of --mem).
    pub workload_mb: Option<u64>,
    /// The workload's access pattern (`swaplab-guest touch --pattern`).
    pub pattern: String,
    /// Play this script of timed actions (see `swaplab demo --help`).
    pub script: Option<PathBuf>,
    /// Poll the VM this often.
    pub interval_ms: u64,
    /// Where the VM serves its control socket (default: in a temporary directory).
    pub api_sock: Option<PathBuf>,
    /// Do not boot a VM: show the one serving this control socket.
    pub attach: Option<PathBuf>,
    /// Write the VM's output here (default: in a temporary directory, kept on failure).
    pub log: Option<PathBuf>,
    /// Stop the VM after this many seconds.
    pub timeout: u64,
    /// Run the demo's VM (the child the demo starts); no terminal UI.
    pub serve: bool,
    pub sandbox: SandboxMode,
    /// Run the VMM's threads under their seccomp filters (`--no-seccomp` turns
    /// this off).
    pub seccomp: bool,
}

impl DemoOptions {
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

/// The options `swaplab demo` gets with no flags (for tests).
#[cfg(test)]
pub(crate) fn default_options() -> DemoOptions {
    DemoOptions {
        mem: ByteSize(256 << 20),
        cpus: 1,
        guest_swap: ByteSize(128 << 20),
        host_limits: Vec::new(),
        step: ByteSize(32 << 20),
        workload_mb: None,
        pattern: "random".into(),
        script: None,
        interval_ms: 500,
        api_sock: None,
        attach: None,
        log: None,
        timeout: 3600,
        serve: false,
        sandbox: SandboxMode::Auto,
        seccomp: true,
    }
}

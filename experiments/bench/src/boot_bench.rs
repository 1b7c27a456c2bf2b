//! `swaplab bench boot`: boot the same kernel, initramfs and command line with swaplab
//! and with QEMU's microvm machine, several times each (interleaved), in the same
//! environment (both inside the sandbox on a host that needs it), and compare the
//! medians of the time to `/init` and to power-off.
//!
//! Times are wall-clock from the start of each VMM's work (swaplab: building the VM,
//! loading the kernel included; QEMU: spawning the process) to the `/init` marker on
//! the console, and to the VM's end.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::qemu::run_microvm;
use base::ByteSize;
use runner::boot::console::Show;
use runner::boot::{run_guest, verdict, BootFiles, GuestSpec};
use runner::cli::usage;
use sandbox::SandboxMode;

/// `swaplab bench boot`.
#[derive(Debug, Clone)]
pub struct BootBenchOptions {
    /// Boots per VMM.
    pub runs: u32,
    /// Guest RAM.
    pub mem: ByteSize,
    /// vCPUs.
    pub cpus: u32,
    /// Limit per boot, in seconds.
    pub timeout: u64,
    /// The QEMU binary.
    pub qemu: OsString,
    /// Print JSON instead of a table.
    pub json: bool,
    pub sandbox: SandboxMode,
    /// Run the VMM's threads under their seccomp filters (`--no-seccomp` turns
    /// this off).
    pub seccomp: bool,
}

/// The command each guest runs (then `/init` powers off).
const GUEST_COMMAND: &str = "true";
/// Most runs accepted.
const MAX_RUNS: u32 = 100;

/// Times of one VMM's boots, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// To `/init`, per run.
    pub to_init_ms: Vec<f64>,
    /// To the end, per run.
    pub total_ms: Vec<f64>,
    /// Guest uptime at `/init` (its own clock), per run.
    pub guest_uptime_at_init_ms: Vec<f64>,
    /// Median of `to_init_ms`.
    pub median_to_init_ms: f64,
    /// Median of `total_ms`.
    pub median_total_ms: f64,
}

impl Series {
    fn push(&mut self, to_init: Option<Duration>, total: Duration, uptime: Option<f64>) {
        self.to_init_ms
            .push(to_init.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3));
        self.total_ms.push(total.as_secs_f64() * 1e3);
        self.guest_uptime_at_init_ms
            .push(uptime.map_or(f64::NAN, |u| u * 1e3));
    }

    fn finish(&mut self) {
        self.median_to_init_ms = median(&self.to_init_ms);
        self.median_total_ms = median(&self.total_ms);
    }
}

/// Median of the finite values (mean of the middle two for an even count);
/// NaN for none, so a missing figure prints as such.
pub fn median(v: &[f64]) -> f64 {
    base::stats::midpoint_median(v).unwrap_or(f64::NAN)
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BootBench {
    /// Where it ran (the sandbox note, if in the sandbox).
    pub environment: Option<String>,
    /// Kernel.
    pub kernel: String,
    /// initramfs.
    pub initrd: Option<String>,
    /// Full command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// swaplab's boots.
    pub swaplab: Series,
    /// QEMU microvm's boots.
    pub qemu_microvm: Series,
    /// swaplab median / QEMU median, to `/init`.
    pub ratio_to_init: f64,
    /// swaplab median / QEMU median, to the end.
    pub ratio_total: f64,
}

fn validate(args: &BootBenchOptions) -> anyhow::Result<()> {
    if !(1..=MAX_RUNS).contains(&args.runs) {
        return Err(usage(format!(
            "--runs must be between 1 and {MAX_RUNS}, got {}",
            args.runs
        )));
    }
    let boot = runner::boot::cmd::BootOptions::guest_image(
        args.mem,
        args.cpus,
        args.timeout,
        args.sandbox,
    );
    runner::boot::cmd::validate(&boot)
}

/// Run the benchmark here.
pub fn bench_boot(args: &BootBenchOptions, files: BootFiles) -> anyhow::Result<BootBench> {
    let spec = GuestSpec {
        files,
        run: Some(GUEST_COMMAND.into()),
        mem: args.mem.bytes(),
        cpus: args.cpus,
        timeout: Duration::from_secs(args.timeout),
        null_devices: Vec::new(),
        channel: false,
    };
    let cmdline = spec.cmdline()?;
    let mut ours = Series::default();
    let mut theirs = Series::default();
    for i in 0..args.runs {
        let run = run_guest(&spec, Show::Nothing, Box::new(std::io::sink()), None)?;
        verdict(&run, true).map_err(|e| anyhow::anyhow!("swaplab boot {}: {e}", i + 1))?;
        ours.push(run.to_init(), run.total(), run.marks.init_uptime);
        let q = run_microvm(
            &args.qemu,
            &spec.files,
            &cmdline,
            spec.mem,
            spec.cpus,
            spec.timeout,
        )
        .map_err(|e| anyhow::anyhow!("QEMU microvm boot {}: {e}", i + 1))?;
        theirs.push(q.to_init(), q.total(), q.marks.init_uptime);
    }
    ours.finish();
    theirs.finish();
    Ok(BootBench {
        environment: sandbox::environment_note().map(str::to_string),
        kernel: spec.files.kernel.display().to_string(),
        initrd: spec.files.initrd.as_ref().map(|p| p.display().to_string()),
        cmdline,
        mem_mib: spec.mem >> 20,
        cpus: spec.cpus,
        ratio_to_init: ours.median_to_init_ms / theirs.median_to_init_ms,
        ratio_total: ours.median_total_ms / theirs.median_total_ms,
        swaplab: ours,
        qemu_microvm: theirs,
    })
}

/// The table.
pub fn render_text(b: &BootBench) -> String {
    let mut s = String::new();
    let ms = |v: f64| {
        if v.is_nan() {
            "-".to_string()
        } else {
            format!("{:.0} ms", v)
        }
    };
    let _ = writeln!(
        s,
        "boot: {} MiB, {} vCPUs, {} runs each, kernel {}",
        b.mem_mib,
        b.cpus,
        b.swaplab.total_ms.len(),
        b.kernel
    );
    if let Some(env) = &b.environment {
        let _ = writeln!(s, "environment: {env}");
    }
    let _ = writeln!(
        s,
        "\n{:<14} {:>16} {:>18} {:>22}",
        "", "to /init (median)", "to end (median)", "guest uptime at /init"
    );
    for (name, series) in [("swaplab", &b.swaplab), ("qemu microvm", &b.qemu_microvm)] {
        let _ = writeln!(
            s,
            "{:<14} {:>16} {:>18} {:>22}",
            name,
            ms(series.median_to_init_ms),
            ms(series.median_total_ms),
            ms(median(&series.guest_uptime_at_init_ms))
        );
    }
    let _ = writeln!(
        s,
        "{:<14} {:>16.2} {:>18.2}",
        "ratio", b.ratio_to_init, b.ratio_total
    );
    s
}

/// Runs the benchmark as `args` say: 0, 1 on failure, 2 on a usage error.
pub fn run(args: &BootBenchOptions) -> anyhow::Result<u8> {
    validate(args)?;
    seccomp::set_enabled(args.seccomp);
    let how = crate::SideBySide {
        sandbox: args.sandbox,
        mem: args.mem.bytes(),
        timeout: Duration::from_secs(args.timeout) * 2 * args.runs,
        json: args.json,
    };
    crate::side_by_side(how, |files| bench_boot(args, files), render_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }
}

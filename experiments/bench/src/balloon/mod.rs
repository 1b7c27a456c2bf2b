//! `swaplab bench balloon`: how fast the balloon inflates and deflates under swaplab
//! and under QEMU's virtio-balloon, with the same kernel, initramfs, guest size and
//! guest state, in the same environment (both inside the sandbox on a host that
//! needs it), several times each (interleaved), comparing the medians.
//!
//! Each run boots a fresh VM whose guest first touches most of its RAM
//! (`swaplab-guest touch`, which then exits: the memory is free in the guest and
//! resident on the host), then
//! - inflate: the target goes from 0 to `--balloon`; timed from sending the
//!   request to the first poll that sees the guest's `actual` equal to it;
//! - deflate: the target goes back to 0, timed the same way.
//!
//! Both VMMs are child processes driven over a Unix socket: swaplab (`swaplab boot
//! --balloon --api-sock`) through its control socket (`balloon.set`, and
//! `balloon.stats`' `actual_bytes`), QEMU microvm (`-device
//! virtio-balloon-device,deflate-on-oom=on`) through QMP (`balloon` with the
//! logical RAM size, `query-balloon`'s `actual`). Both offer `DEFLATE_ON_OOM` and
//! ask the guest for statistics every second. `actual` is what the guest wrote in
//! the config space on both. The poll interval (`--poll-ms`) plus one round trip
//! is the resolution.

mod driver;
mod vm;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::boot_bench::median;
use base::ByteSize;
use driver::{measure, BalloonBenchError};
use runner::boot::BootFiles;
use runner::cli::usage;
use sandbox::SandboxMode;
use vm::{guest_command, start_qemu, start_swaplab, Setup, Vm};

/// `swaplab bench balloon`.
#[derive(Debug, Clone)]
pub struct BalloonBenchOptions {
    /// Boots per VMM (one inflate and one deflate each).
    pub runs: u32,
    /// Guest RAM.
    pub mem: ByteSize,
    /// Balloon size to inflate to (and deflate from).
    pub balloon: ByteSize,
    /// Memory the guest touches (and frees) before the balloon moves (default:
    /// three quarters of --mem).
    pub touch: Option<ByteSize>,
    /// vCPUs.
    pub cpus: u32,
    /// Poll interval for the balloon's size, in milliseconds.
    pub poll_ms: u64,
    /// Limit per boot (boot, touch, inflate, deflate), in seconds.
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

/// Most runs accepted.
const MAX_RUNS: u32 = 100;

/// One VMM's runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// Inflate times (0 to the balloon size), ms, per run.
    pub inflate_ms: Vec<f64>,
    /// Deflate times (back to 0), ms, per run.
    pub deflate_ms: Vec<f64>,
    /// Inflate rates, MiB/s, per run.
    pub inflate_mib_s: Vec<f64>,
    /// Deflate rates, MiB/s, per run.
    pub deflate_mib_s: Vec<f64>,
    /// Median of `inflate_mib_s`.
    pub median_inflate_mib_s: f64,
    /// Median of `deflate_mib_s`.
    pub median_deflate_mib_s: f64,
}

impl Series {
    fn push(&mut self, mib: f64, inflate: Duration, deflate: Duration) {
        self.inflate_ms.push(inflate.as_secs_f64() * 1e3);
        self.deflate_ms.push(deflate.as_secs_f64() * 1e3);
        self.inflate_mib_s.push(mib / inflate.as_secs_f64());
        self.deflate_mib_s.push(mib / deflate.as_secs_f64());
        self.median_inflate_mib_s = median(&self.inflate_mib_s);
        self.median_deflate_mib_s = median(&self.deflate_mib_s);
    }
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BalloonBench {
    /// Where it ran (the sandbox note, if in the sandbox).
    pub environment: Option<String>,
    /// Kernel.
    pub kernel: String,
    /// initramfs.
    pub initrd: Option<String>,
    /// QEMU's command line (swaplab's adds `swaplab.channel=1`).
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Balloon size inflated to, MiB.
    pub balloon_mib: u64,
    /// The guest's state when the balloon moves.
    pub guest_state: String,
    /// Poll interval, ms (the resolution, plus one round trip).
    pub poll_ms: u64,
    /// swaplab's runs.
    pub swaplab: Series,
    /// QEMU microvm's runs.
    pub qemu: Series,
    /// swaplab median / QEMU median, inflate MiB/s.
    pub ratio_inflate: f64,
    /// swaplab median / QEMU median, deflate MiB/s.
    pub ratio_deflate: f64,
}

/// Default `--touch`: three quarters of the guest's RAM.
fn touch_mib(args: &BalloonBenchOptions) -> u64 {
    args.touch.map_or(args.mem.bytes() * 3 / 4, |t| t.bytes()) >> 20
}

fn validate(args: &BalloonBenchOptions) -> anyhow::Result<()> {
    if !(1..=MAX_RUNS).contains(&args.runs) {
        return Err(usage(format!(
            "--runs must be between 1 and {MAX_RUNS}, got {}",
            args.runs
        )));
    }
    let (mem, balloon) = (args.mem.bytes(), args.balloon.bytes());
    if balloon == 0 || balloon % (1 << 20) != 0 || balloon > mem / 2 {
        return Err(usage(format!(
            "--balloon must be a whole number of MiB, at most half of --mem {}, got {}",
            args.mem, args.balloon
        )));
    }
    let touch = touch_mib(args);
    if touch == 0 || touch > (mem >> 20).saturating_sub(96) {
        return Err(usage(format!(
            "--touch must be at least 1M and leave the guest 96M, got {touch}M"
        )));
    }
    if !(1..=1000).contains(&args.poll_ms) {
        return Err(usage(format!(
            "--poll-ms must be between 1 and 1000, got {}",
            args.poll_ms
        )));
    }
    let boot = runner::boot::cmd::BootOptions {
        run: Some(guest_command(touch)),
        balloon: true,
        seccomp: args.seccomp,
        ..runner::boot::cmd::BootOptions::guest_image(
            args.mem,
            args.cpus,
            args.timeout,
            args.sandbox,
        )
    };
    runner::boot::cmd::validate(&boot)
}

/// One run of one VM: boot, inflate, deflate.
fn one_run(
    vm: Result<Vm, BalloonBenchError>,
    bytes: u64,
    poll: Duration,
    limit: Duration,
) -> Result<(Duration, Duration), BalloonBenchError> {
    let mut vm = vm?;
    let inflate = measure(vm.driver.as_mut(), bytes, poll, limit)?;
    let deflate = measure(vm.driver.as_mut(), 0, poll, limit)?;
    Ok((inflate, deflate))
}

/// Where the sockets go: L1's own tmpfs in the sandbox (its `/tmp` is the host's,
/// over 9p), the temp dir elsewhere.
fn socket_dir() -> PathBuf {
    if sandbox::in_sandbox() {
        PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    }
}

/// Run the benchmark here.
pub fn bench_balloon(args: &BalloonBenchOptions, files: BootFiles) -> anyhow::Result<BalloonBench> {
    let touch = touch_mib(args);
    let setup = Setup {
        files,
        mem: args.mem.bytes(),
        cpus: args.cpus,
        command: guest_command(touch),
        limit: Duration::from_secs(args.timeout),
    };
    let cmdline = setup.qemu_cmdline()?;
    let bytes = args.balloon.bytes();
    let mib = (bytes >> 20) as f64;
    let poll = Duration::from_millis(args.poll_ms);
    let mut ours = Series::default();
    let mut theirs = Series::default();
    for i in 0..args.runs {
        let dir = base::scratch::dir_in(&socket_dir(), "swaplab-bench-balloon-")?;
        let (inf, def) = one_run(start_swaplab(&setup, dir.path()), bytes, poll, setup.limit)
            .map_err(|e| anyhow::anyhow!("swaplab run {}: {e}", i + 1))?;
        ours.push(mib, inf, def);
        let (inf, def) = one_run(
            start_qemu(&setup, &args.qemu, dir.path()),
            bytes,
            poll,
            setup.limit,
        )
        .map_err(|e| anyhow::anyhow!("QEMU run {}: {e}", i + 1))?;
        theirs.push(mib, inf, def);
    }
    Ok(BalloonBench {
        environment: sandbox::environment_note().map(str::to_string),
        kernel: setup.files.kernel.display().to_string(),
        initrd: setup.files.initrd.as_ref().map(|p| p.display().to_string()),
        cmdline,
        mem_mib: setup.mem >> 20,
        cpus: setup.cpus,
        balloon_mib: bytes >> 20,
        guest_state: format!(
            "touched {touch} MiB, then freed it (free in the guest, resident on the host)"
        ),
        poll_ms: args.poll_ms,
        ratio_inflate: ours.median_inflate_mib_s / theirs.median_inflate_mib_s,
        ratio_deflate: ours.median_deflate_mib_s / theirs.median_deflate_mib_s,
        swaplab: ours,
        qemu: theirs,
    })
}

/// The table.
pub fn render_text(b: &BalloonBench) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "balloon: 0 -> {} MiB -> 0 in a {} MiB guest ({} vCPUs), {} runs each, poll every {} ms",
        b.balloon_mib,
        b.mem_mib,
        b.cpus,
        b.swaplab.inflate_ms.len(),
        b.poll_ms
    );
    let _ = writeln!(s, "guest: {}; kernel {}", b.guest_state, b.kernel);
    if let Some(env) = &b.environment {
        let _ = writeln!(s, "environment: {env}");
    }
    let _ = writeln!(
        s,
        "\n{:<14} {:>16} {:>16} {:>20} {:>20}",
        "", "inflate (median)", "deflate (median)", "inflate ms", "deflate ms"
    );
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for (name, series) in [("swaplab", &b.swaplab), ("qemu microvm", &b.qemu)] {
        let _ = writeln!(
            s,
            "{:<14} {:>10.0} MiB/s {:>10.0} MiB/s {:>20} {:>20}",
            name,
            series.median_inflate_mib_s,
            series.median_deflate_mib_s,
            list(&series.inflate_ms),
            list(&series.deflate_ms)
        );
    }
    let _ = writeln!(
        s,
        "{:<14} {:>16.2} {:>16.2}",
        "ratio", b.ratio_inflate, b.ratio_deflate
    );
    s
}

/// Runs the benchmark as `args` say: 0, 1 on failure, 2 on a usage error.
pub fn run(args: &BalloonBenchOptions) -> anyhow::Result<u8> {
    validate(args)?;
    seccomp::set_enabled(args.seccomp);
    let how = super::SideBySide {
        sandbox: args.sandbox,
        mem: args.mem.bytes(),
        timeout: Duration::from_secs(args.timeout) * 2 * args.runs,
        json: args.json,
    };
    super::side_by_side(how, |files| bench_balloon(args, files), render_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_rates_and_medians() {
        let mut s = Series::default();
        s.push(
            256.0,
            Duration::from_millis(500),
            Duration::from_millis(250),
        );
        s.push(
            256.0,
            Duration::from_millis(1000),
            Duration::from_millis(500),
        );
        s.push(
            256.0,
            Duration::from_millis(250),
            Duration::from_millis(1000),
        );
        assert_eq!(s.inflate_mib_s, [512.0, 256.0, 1024.0]);
        assert_eq!(s.median_inflate_mib_s, 512.0);
        assert_eq!(s.median_deflate_mib_s, 512.0);
    }
}

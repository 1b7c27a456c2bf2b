//! `swaplab bench`: the command line of the benchmarks (they print numbers and
//! assert nothing).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use base::ByteSize;
use bench::balloon::BalloonBenchOptions;
use bench::boot_bench::BootBenchOptions;
use bench::far_memory::FarMemoryOptions;
use bench::host_swap::HostSwapOptions;
use bench::qemu::QEMU;
use runner::probe_run::plan::DEFAULT_STORE_DIR;

use crate::sandbox_cmd::SandboxFlag;

/// `swaplab bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// Benchmarks.
#[derive(clap::Subcommand, Debug)]
pub enum BenchWhat {
    /// Boot time: swaplab against QEMU microvm, same kernel and initramfs.
    Boot(BenchBootArgs),
    /// Balloon inflate and deflate rates: swaplab against QEMU's virtio-balloon, same
    /// kernel, initramfs and guest.
    Balloon(BenchBalloonArgs),
    /// Host swapping: the userfaultfd swapper against kernel swap (zram, swap file) on
    /// random, sequential and zipf 90/10 probe workloads; needs root for the kernel side.
    HostSwap(HostSwapArgs),
    /// Far memory: the userfaultfd swapper with its store in Redis at emulated
    /// distances (a delay relay on loopback), against the userfaultfd floor and the
    /// store's GET round trip measured in the same run.
    FarMemory(FarMemoryArgs),
}

/// Run `swaplab bench`.
pub fn main(args: &BenchArgs) -> ExitCode {
    match &args.what {
        BenchWhat::Boot(a) => runner::cli::finish_status(bench::boot_bench::run(&a.options())),
        BenchWhat::Balloon(a) => runner::cli::finish_status(bench::balloon::run(&a.options())),
        BenchWhat::HostSwap(a) => runner::cli::finish(bench::host_swap::run(&a.options())),
        BenchWhat::FarMemory(a) => runner::cli::finish(bench::far_memory::run(&a.options())),
    }
}

/// `swaplab bench boot`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchBootArgs {
    /// Boots per VMM.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub runs: u32,
    /// Guest RAM.
    #[arg(long, value_name = "SIZE", default_value = "512M")]
    pub mem: ByteSize,
    /// vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// Limit per boot, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub timeout: u64,
    /// The QEMU binary.
    #[arg(long, value_name = "PROGRAM", default_value = QEMU)]
    pub qemu: OsString,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxFlag,
    #[command(flatten)]
    pub seccomp: crate::cli::SeccompFlag,
}

impl BenchBootArgs {
    /// The runner's options.
    pub fn options(&self) -> BootBenchOptions {
        BootBenchOptions {
            runs: self.runs,
            mem: self.mem,
            cpus: self.cpus,
            timeout: self.timeout,
            qemu: self.qemu.clone(),
            json: self.json,
            sandbox: self.sandbox.mode(),
            seccomp: self.seccomp.enabled(),
        }
    }
}

/// `swaplab bench balloon`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchBalloonArgs {
    /// Boots per VMM (one inflate and one deflate each).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: u32,
    /// Guest RAM.
    #[arg(long, value_name = "SIZE", default_value = "512M")]
    pub mem: ByteSize,
    /// Balloon size to inflate to (and deflate from).
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub balloon: ByteSize,
    /// Memory the guest touches (and frees) before the balloon moves (default:
    /// three quarters of --mem).
    #[arg(long, value_name = "SIZE")]
    pub touch: Option<ByteSize>,
    /// vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Poll interval for the balloon's size, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5)]
    pub poll_ms: u64,
    /// Limit per boot (boot, touch, inflate, deflate), in seconds.
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub timeout: u64,
    /// The QEMU binary.
    #[arg(long, value_name = "PROGRAM", default_value = QEMU)]
    pub qemu: OsString,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxFlag,
    #[command(flatten)]
    pub seccomp: crate::cli::SeccompFlag,
}

impl BenchBalloonArgs {
    /// The runner's options.
    pub fn options(&self) -> BalloonBenchOptions {
        BalloonBenchOptions {
            runs: self.runs,
            mem: self.mem,
            balloon: self.balloon,
            touch: self.touch,
            cpus: self.cpus,
            poll_ms: self.poll_ms,
            timeout: self.timeout,
            qemu: self.qemu.clone(),
            json: self.json,
            sandbox: self.sandbox.mode(),
            seccomp: self.seccomp.enabled(),
        }
    }
}

/// `swaplab bench host-swap`.
#[derive(clap::Args, Debug, Clone)]
pub struct HostSwapArgs {
    /// Test RAM.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub mem: ByteSize,
    /// Host resident limit (the uffd limit and the kernel's guest budget).
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    pub limit: ByteSize,
    /// Passes per run (the first is not measured).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub passes: u32,
    /// Passes of the zipf runs (its touched set grows over the first passes).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub zipf_passes: u32,
    /// Passes of the hotcold policy runs: the first half is the load and the
    /// clock's warm-up (reported apart), the second half is measured.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub hotcold_passes: u32,
    /// uffd prefetch cluster, pages.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub prefetch: u32,
    /// uffd fault-handler threads.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub handlers: usize,
    /// uffd handler busy-poll before sleeping, µs.
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub spin_us: u32,
    /// Directory for the store file and the swap file (not tmpfs).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE_DIR)]
    pub store_path: PathBuf,
    /// Host CPU for every run (uffd and kernel alike), or `none` to let the
    /// scheduler place threads [default: the CPU the bench starts on].
    #[arg(long, value_name = "CPU|none")]
    pub cpu: Option<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub seccomp: crate::cli::SeccompFlag,
}

impl HostSwapArgs {
    /// The runner's options.
    pub fn options(&self) -> HostSwapOptions {
        HostSwapOptions {
            mem: self.mem,
            limit: self.limit,
            passes: self.passes,
            zipf_passes: self.zipf_passes,
            hotcold_passes: self.hotcold_passes,
            prefetch: self.prefetch,
            handlers: self.handlers,
            spin_us: self.spin_us,
            store_path: self.store_path.clone(),
            cpu: self.cpu.clone(),
            json: self.json,
            seccomp: self.seccomp.enabled(),
        }
    }
}

/// `swaplab bench far-memory`.
#[derive(clap::Args, Debug, Clone)]
pub struct FarMemoryArgs {
    /// Test RAM.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub mem: ByteSize,
    /// Host resident limit.
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    pub limit: ByteSize,
    /// Passes per run (the first is not measured).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub passes: u32,
    /// One-way delays to emulate, µs, comma-separated (each crossed twice per
    /// round trip).
    #[arg(
        long,
        value_name = "US,...",
        value_delimiter = ',',
        default_value = "0,10,50,200"
    )]
    pub delays_us: Vec<u64>,
    /// GET round trips timed per delay.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub gets: u32,
    /// Prefetch cluster of the prefetching run, pages.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub prefetch: u32,
    /// A real Redis (`redis://HOST:PORT[/DB]`) instead of a private server on
    /// loopback; its distance is real, no delay is added.
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
    /// How distance is emulated for the private server: `netem` (the server
    /// in a network namespace behind a veth pair with `tc netem` on both
    /// ends), `relay` (a userspace delay relay on loopback), or `auto`: netem
    /// where the kernel has it, else the relay (the JSON's `distance_note`
    /// says why).
    #[arg(long, value_name = "auto|netem|relay", default_value = "auto")]
    pub distance: String,
    /// Host CPU for the probe and the swapper, or `none` [default: the CPU the
    /// bench starts on]; the private server and the relays are not pinned.
    #[arg(long, value_name = "CPU|none")]
    pub cpu: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub seccomp: crate::cli::SeccompFlag,
}

impl FarMemoryArgs {
    /// The runner's options.
    pub fn options(&self) -> FarMemoryOptions {
        FarMemoryOptions {
            mem: self.mem,
            limit: self.limit,
            passes: self.passes,
            delays_us: self.delays_us.clone(),
            gets: self.gets,
            prefetch: self.prefetch,
            store_url: self.store_url.clone(),
            cpu: self.cpu.clone(),
            json: self.json,
            seccomp: self.seccomp.enabled(),
            distance: self.distance.clone(),
        }
    }
}

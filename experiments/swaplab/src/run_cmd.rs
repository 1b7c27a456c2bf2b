//! `swaplab run [SCENARIO|FILE]...`: the command line of the scenario runner.

use std::path::PathBuf;
use std::process::ExitCode;

use base::ByteSize;
use runner::run::cmd::{self, RunOptions};

use crate::sandbox_cmd::SandboxFlag;

/// Arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Scenarios or matrices to run: built-in names (default, baseline, guest-swap,
    /// host-swap, host-swap-mitigated, double-paging, balloon, soak, papers, kernel-vs-uffd) or
    /// TOML files.
    /// None: the standard matrix (`default`).
    #[arg(value_name = "SCENARIO")]
    pub scenarios: Vec<String>,
    /// Where results go (default: results/<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print each run's result as one JSON line on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Override every scenario's repetitions.
    #[arg(long, value_name = "N")]
    pub repetitions: Option<u32>,
    /// A quick look: one repetition of each scenario, and only the scenarios a matrix
    /// keeps for it (`quick = false` leaves one out; `papers` keeps two pressure levels).
    #[arg(long)]
    pub quick: bool,
    /// Override the guest's RAM.
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<ByteSize>,
    /// Override the guest swap disk size.
    #[arg(long, value_name = "SIZE")]
    pub guest_swap: Option<ByteSize>,
    /// Override the host limit (only for scenarios with host swapping).
    #[arg(long, value_name = "SIZE")]
    pub host_limit: Option<ByteSize>,
    /// Override who swaps guest RAM out on the host, for scenarios with host swapping:
    /// `uffd` (swaplab's userfaultfd swapper) or `kernel` (the Linux kernel, the VMM in a
    /// memory cgroup swapping to zram or a swap file made for the run; needs root).
    #[arg(long, value_name = "uffd|kernel", value_parser = parse_host_swapper)]
    pub host_swapper: Option<scenario::HostSwapper>,
    /// Override the workload's working set.
    #[arg(long, value_name = "SIZE")]
    pub working_set: Option<ByteSize>,
    /// Override the workload's passes.
    #[arg(long, value_name = "N")]
    pub passes: Option<u32>,
    /// Override the per-run time limit, seconds.
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Show the guest's console (kernel messages and the command's output) on stderr.
    #[arg(long)]
    pub console: bool,
    /// Serve the control socket here while each guest runs (`swaplab ctl --sock PATH`).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    // runreport: --ktrace
    /// Record KVM's kernel trace events (kvm:kvm_exit, kvm:kvm_page_fault, kvmmmu:*, …)
    /// during each run and merge them into trace.json (needs root and tracefs, which is
    /// mounted for the run if it is not; without them the run goes on without).
    #[arg(long)]
    pub ktrace: bool,
    /// Continue the matrix in --out DIR: runs whose result.json is there (for the same
    /// settings) are kept, the rest run. A run that started but wrote no result runs again.
    /// In the nested sandbox swaplab does this by itself when L1's kernel dies mid-matrix.
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// Why the matrix is resumed, for the report (set by swaplab when it restarts L1).
    #[arg(long, value_name = "TEXT", requires = "resume", hide = true)]
    pub resume_reason: Option<String>,
    /// In the nested sandbox, run the matrix as N shards in N L1 VMs at once, then gather
    /// their results into one report (each shard's trace: --out/shards/I/trace.json).
    /// The L1s share this host's CPUs: faster, and noisier timings. `auto`: one shard per
    /// CPU (at most one per run, and 16); 1 with --shard, --api-sock or no sandbox.
    #[arg(
        long,
        value_name = "N|auto",
        default_value = "auto",
        env = "SWAPLAB_JOBS"
    )]
    pub jobs: cmd::Jobs,
    /// Run only every Nth run of the matrix, starting with the Ith (to spread a matrix over
    /// machines: each writes its runs into --out DIR; then `--out DIR --resume` gathers them).
    #[arg(long, value_name = "I/N", requires = "out")]
    pub shard: Option<cmd::Shard>,
    /// With --shard: take the matrix's runs first come, first served with the other
    /// shards of --out (set by swaplab for the shards of --jobs).
    #[arg(long, requires = "shard", hide = true)]
    pub claim_runs: bool,
    #[command(flatten)]
    pub sandbox: SandboxFlag,
    #[command(flatten)]
    pub seccomp: crate::cli::SeccompFlag,
}

impl RunArgs {
    /// The runner's options.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            scenarios: self.scenarios.clone(),
            out: self.out.clone(),
            json: self.json,
            repetitions: self.repetitions,
            quick: self.quick,
            mem: self.mem,
            guest_swap: self.guest_swap,
            host_limit: self.host_limit,
            host_swapper: self.host_swapper,
            working_set: self.working_set,
            passes: self.passes,
            timeout: self.timeout,
            console: self.console,
            api_sock: self.api_sock.clone(),
            ktrace: self.ktrace,
            resume: self.resume,
            resume_reason: self.resume_reason.clone(),
            sandbox: self.sandbox.mode(),
            seccomp: self.seccomp.enabled(),
            jobs: self.jobs,
            shard: self.shard,
            claim_runs: self.claim_runs,
        }
    }
}

/// `--host-swapper`'s value.
fn parse_host_swapper(s: &str) -> Result<scenario::HostSwapper, String> {
    scenario::HostSwapper::ALL
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, w)| *w)
        .ok_or_else(|| format!("{s:?} is not a host swapper (uffd or kernel)"))
}

/// Run `swaplab run`: 0 when every run finished and verified its pages, 1 when
/// one failed, 2 on usage errors (bad scenario files included).
pub fn main(args: &RunArgs) -> ExitCode {
    runner::cli::finish_status(cmd::run(&args.options()))
}

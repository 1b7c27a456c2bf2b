//! The `swaplab` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use swaplab::{
    bench_cmd, boot_cmd, ctl, demo_cmd, doctor, image_cmd, probe_cmd, run_cmd, sandbox_cmd,
};

/// swaplab: a memory-overcommit and swapping testbed.
#[derive(Parser, Debug)]
#[command(name = "swaplab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Report what this host offers (KVM flavour, userfaultfd, cgroups, swap).
    Doctor(doctor::DoctorArgs),
    /// Build the guest image (kernel, modules, busybox, guest programs) into the cache.
    Image(image_cmd::ImageArgs),
    /// Run a no-OS probe guest that touches guest memory in a pattern.
    Probe(probe_cmd::ProbeArgs),
    /// Run a command in the nested sandbox (an L1 Linux VM under QEMU TCG with kvm_amd).
    Sandbox(sandbox_cmd::SandboxArgs),
    /// Boot a Linux guest (the guest image by default); with --run, run a command in it.
    Boot(boot_cmd::BootArgs),
    /// Benchmarks: `bench boot` compares boot times with QEMU microvm, `bench host-swap`
    /// the userfaultfd swapper with kernel swap.
    Bench(bench_cmd::BenchArgs),
    /// Talk to a running VM's control socket: `ctl --sock PATH balloon set 256M`,
    /// `balloon stats`, `swapper status`, `vm stats`, `help`, or `--raw JSON`.
    Ctl(ctl::CtlArgs),
    /// Run scenarios (guest swap, host swap, double paging, balloon) with a Linux guest;
    /// no arguments: the standard matrix. Writes results, a report and a trace.
    Run(run_cmd::RunArgs),
    /// A live terminal view of ballooning and host swapping for lectures: keys +/- (balloon),
    /// w (guest workload), l (host limit), q (quit); --script FILE plays them on a timer.
    Demo(demo_cmd::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return swaplab::cli::clap_exit(e),
    };
    swaplab::cli::init_tracing();
    let result = match cli.command {
        Command::Doctor(a) => doctor::run(&a),
        Command::Image(a) => image_cmd::run(&a),
        Command::Probe(a) => probe_cmd::run(&a),
        Command::Sandbox(a) => return sandbox_cmd::main(&a),
        Command::Boot(a) => return boot_cmd::main(&a),
        Command::Bench(a) => return bench_cmd::main(&a),
        Command::Ctl(a) => return ctl::main(&a),
        Command::Run(a) => return run_cmd::main(&a),
        Command::Demo(a) => return demo_cmd::main(&a),
    };
    runner::cli::finish(result)
}

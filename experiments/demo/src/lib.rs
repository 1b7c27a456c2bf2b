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
pub mod options;
pub mod script;
pub mod term;
pub mod ui;
pub mod vm;

pub use options::{limits_arg, DemoOptions};

/// Runs the demo as `args` say (the VM child with `serve`): the exit status.
pub fn run(args: &DemoOptions) -> anyhow::Result<u8> {
    match args.validate() {
        Err(msg) => Err(runner::cli::usage(msg)),
        Ok(()) if args.serve => vm::serve(args),
        Ok(()) => app::run(args).map(|()| 0),
    }
}

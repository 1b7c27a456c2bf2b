//! Scenarios, the runner, results and reports, and the `swaplab` subcommands.
//!
//! Each subcommand lives in its own module and exposes `XxxArgs` (clap) and
//! `run(&XxxArgs) -> anyhow::Result<()>`.

pub mod bench;
pub mod boot;
pub mod cli;
pub mod ctl;
pub mod demo;
pub mod doctor;
pub mod host;
pub mod image_cmd;
pub mod probe_cmd;
pub mod probe_run;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod scenario;
pub mod size;

//! The `swaplab` command line: clap's argument structs and thin adapters that turn
//! them into the runners' options. The only crate that knows clap.

pub mod bench_cmd;
pub mod boot_cmd;
pub mod cli;
pub mod ctl;
pub mod demo_cmd;
pub mod doctor;
pub mod image_cmd;
pub mod probe_cmd;
pub mod run_cmd;
pub mod sandbox_cmd;

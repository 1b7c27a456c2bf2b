//! The `swaplab` command line: clap's argument structs and thin adapters that turn
//! them into the runners' options. The only crate that knows clap.

pub mod cli;
pub mod ctl;
pub mod doctor;
pub mod image_cmd;

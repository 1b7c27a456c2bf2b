//! The runners: machine assembly, booting the guest image, the scenario runner
//! (joins, stall guard, kernel tracing, results) and the probe runner.

pub mod boot;
pub mod cli;
pub mod probe_run;
pub mod run;

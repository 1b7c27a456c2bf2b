//! The names this module gives what it creates (`swaplab-<pid>-<n>` cgroups,
//! `swaplab-swapfile-<pid>-<n>.swap` files, swap label `swaplab-<pid>`), and telling
//! a live run's from a crashed one's.

/// Prefix of every name this module creates.
pub const PREFIX: &str = "swaplab-";

pub(crate) use base::scratch::{pid_alive, pid_in_name};

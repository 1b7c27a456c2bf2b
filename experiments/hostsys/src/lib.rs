//! Process-level plumbing the swaplab commands share: signal handling.

pub mod signals;

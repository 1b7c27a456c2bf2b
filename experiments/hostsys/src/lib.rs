//! Process-level plumbing the swaplab commands share: signal handling, CPU pinning.

pub mod cpu;
pub mod signals;

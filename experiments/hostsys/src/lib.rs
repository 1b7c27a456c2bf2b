//! Process-level plumbing the swaplab commands share: signal handling, child
//! processes, CPU pinning, the few memory queries nix does not wrap, and a
//! delaying TCP relay and a network namespace behind a `tc netem` delay
//! (emulated distance for a remote store).
//!
//! This is the experiments' one small sys module: system calls go through nix
//! everywhere else, and the few that nix leaves raw (`mincore`, a cold hint,
//! `pre_exec`, `rdtsc`) are wrapped here, each `unsafe` block with a
//! `// SAFETY:` comment, behind a safe API.

pub mod child;
pub mod cpu;
pub mod mem;
pub mod netns;
pub mod proc;
pub mod relay;
pub mod signals;

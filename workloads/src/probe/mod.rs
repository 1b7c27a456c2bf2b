//! Probe guests: tiny no-OS payloads that touch test RAM in a pattern and time each access.
//!
//! The design keeps the pattern logic on the host, where it is unit-testable Rust:
//! - [`pattern`]: `seq`, `random`, `zipf[:SKEW]`, `hotcold[:H:P]`, `phase[:WINDOWS]` as an [`AccessPlan`]
//!   that yields each pass's page indices in chunks (with [`rng`] and [`zipf`], it lives
//!   in the `swaplab-guest` crate, whose `touch` walks the same orders inside a Linux
//!   guest, and is re-exported here);
//! - [`payload`]: the guest code (assembled with iced-x86), a loop that, for each index
//!   the host wrote into the control region, does `lfence; rdtsc`, a read-modify-write of
//!   a tag and a counter in that page, `lfence; rdtsc`, and stores the cycle count;
//! - [`abi`]: the guest-physical layout and the doorbell protocol between the two.
//!
//! The host driver (building the VM, serving the doorbell, histograms) lives in
//! `experiments::probe_run`.

pub mod abi;
pub mod payload;
pub use swaplab_guest::{pattern, rng, zipf};

pub use pattern::{AccessPlan, Pattern, PatternError};
pub use payload::{assemble, PayloadError};

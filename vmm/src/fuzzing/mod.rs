//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz), as plain functions, so that
//! a stable `cargo test` replays the committed seed corpus (`fuzz/corpus/<target>/`)
//! through exactly the code the fuzzer runs.
//!
//! Each body takes arbitrary bytes, drives real device code over real guest memory
//! (anonymous mappings from [`create_guest_memory`], as the VMM uses for guest RAM)
//! and panics only when an invariant breaks:
//!
//! - [`virtqueue`]: a raw split virtqueue (descriptor table, available ring, indirect
//!   tables and buffers all fuzzer-written) served by the virtio-blk request engine;
//! - [`blk_request`]: sequences of virtio-blk requests, well-formed or mangled, laid
//!   out over any number of descriptors, with backend faults, checked against a model
//!   disk;
//! - [`mmio`]: register reads and writes on the virtio-mmio transport of a live
//!   virtio-blk device (with its worker thread), and guest-memory writes in between;
//! - [`api`]: a byte stream sent to a real control-socket server, checked line by line
//!   against [`crate::api::parse_request`].
//!
//! Built with the `fuzzing` feature (and in this crate's unit tests). The seeds are
//! produced by [`seeds`]; `cargo test -p vmm -- --ignored write_seeds` rewrites them.

mod api;
mod blk;
mod harness;
mod mmio;
mod queue;
#[cfg(test)]
mod tests;

pub use api::api;
pub use blk::blk_request;
pub use harness::{guest_memory, CountingLine, Encoder, Input, SharedDisk};
pub use mmio::mmio;
pub use queue::virtqueue;

/// The seed inputs of each target, built from valid (and a few invalid) requests.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "virtqueue" => queue::seeds(),
        "blk_request" => blk::seeds(),
        "mmio" => mmio::seeds(),
        "api" => api::seeds(),
        _ => Vec::new(),
    }
}

/// The targets this crate holds.
pub const TARGETS: [&str; 4] = ["virtqueue", "blk_request", "mmio", "api"];

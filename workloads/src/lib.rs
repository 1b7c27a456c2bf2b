//! workloads crate (see DESIGN.md).
pub mod apps;
pub mod image;
pub mod probe;

/// The guest programs (the `swaplab-guest` crate; built static into the guest image).
pub use swaplab_guest as guest;

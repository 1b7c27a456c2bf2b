//! workloads crate (see DESIGN.md).
pub mod guest;
pub mod image;
pub mod probe;

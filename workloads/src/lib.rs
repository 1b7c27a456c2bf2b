//! workloads crate (see DESIGN.md).
pub mod image;

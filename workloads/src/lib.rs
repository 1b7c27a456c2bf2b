//! workloads crate (see DESIGN.md).

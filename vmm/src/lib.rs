//! vmm crate (see DESIGN.md).

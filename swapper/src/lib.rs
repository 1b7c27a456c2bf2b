//! swapper crate (see DESIGN.md).

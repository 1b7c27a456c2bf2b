//! balloon crate (see DESIGN.md).

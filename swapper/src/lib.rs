//! swapper crate (see DESIGN.md). Documentation is being written.

pub mod budget;
pub mod page_state;
pub mod pagemap;
pub mod policy;
pub mod slots;
pub mod uffd;

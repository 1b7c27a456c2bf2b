//! The page size the swapper works in, in a module of its own so that `lib.rs`
//! (which re-exports it) and the modules that use it do not import each other.

/// Page size the swapper works in (x86-64 base pages).
pub const PAGE_SIZE: usize = 4096;

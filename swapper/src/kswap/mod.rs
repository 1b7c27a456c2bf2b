//! Kernel-swap baseline helpers (being written).

//! The kernel-swap helpers' error type.

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors of the kernel-swap helpers.
#[derive(Debug, Error)]
pub enum KswapError {
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// No cgroup hierarchy with a memory controller is mounted.
    #[error("no memory cgroup controller found (neither v1 nor v2)")]
    NoMemoryController,
    /// No zram device could be obtained.
    #[error("no zram device available: {0}")]
    NoZram(String),
    /// The requested swap size is too small for a swap header.
    #[error("swap size {0} bytes is too small (need at least 40 KiB)")]
    TooSmall(u64),
}

/// Maps an I/O error on `path` while doing `what` to [`KswapError::Io`].
pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KswapError {
    let path = path.to_path_buf();
    move |source| KswapError::Io { what, path, source }
}

//! The stores' error type.

use crate::page::PAGE_SIZE;
use std::path::PathBuf;
use thiserror::Error;

/// Errors of the stores.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The backing file could not be created or sized.
    #[error("cannot create store file {path}: {source}")]
    Create {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// An I/O call failed.
    #[error("store {op} of slot {slot} failed: {source}")]
    Io {
        /// `read` or `write`.
        op: &'static str,
        /// The slot.
        slot: u32,
        /// Cause.
        source: std::io::Error,
    },
    /// Fewer bytes than a page were transferred.
    #[error("short store {op} of slot {slot}: {done} of {PAGE_SIZE} bytes")]
    Short {
        /// `read` or `write`.
        op: &'static str,
        /// The slot.
        slot: u32,
        /// Bytes transferred.
        done: usize,
    },
    /// The slot holds nothing (never written or discarded).
    #[error("slot {0} holds no page")]
    Empty(u32),
    /// The slot is beyond the store capacity.
    #[error("slot {slot} beyond store capacity {capacity}")]
    OutOfRange {
        /// The slot.
        slot: u32,
        /// Capacity in slots.
        capacity: u32,
    },
    /// Stored data could not be decoded.
    #[error("slot {slot} is corrupt: {reason}")]
    Corrupt {
        /// The slot.
        slot: u32,
        /// Why.
        reason: String,
    },
    /// A remote store (Redis) could not be reached or refused a request.
    /// `url` never carries credentials.
    #[error("redis store {url}: {op} failed: {reason}")]
    Remote {
        /// The server or cluster, as `redis://HOST:PORT[/DB]`.
        url: String,
        /// What was asked (`connect`, `write of slot 7`, `read of 32 pages`, ...).
        op: String,
        /// The client's error.
        reason: String,
    },
    /// The store's configuration is unusable (e.g. a malformed URL).
    #[error("store configuration: {0}")]
    Config(String),
    /// The buffer handed to the store is not one page long.
    #[error("buffer of {0} bytes is not one page")]
    BadBuffer(usize),
}

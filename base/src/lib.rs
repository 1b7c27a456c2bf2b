//! The basics every swaplab crate shares, one of each, with no knowledge of
//! KVM, userfaultfd or devices.
//!
//! - [`size`]: the one size grammar (`4096`, `64K`, `256MiB`, `2G`) and
//!   [`ByteSize`].
//! - [`countdown`]: the fault-injection [`Countdown`] (arm `n`, take, clear;
//!   `u64::MAX` = forever).
//! - [`counters!`]: a struct of relaxed atomic counters and its snapshot.
//! - [`sync`]: poison-ignoring [`lock`] (and `RwLock` [`read`] / [`write`])
//!   and the [`Stop`] flag that a periodic thread waits on.
//! - [`stats`]: nearest-rank [`percentile`] / [`median`], and the midpoint
//!   median of measurements.
//! - [`scratch`]: scratch directories named after their process, and the
//!   sweep of those whose process was killed.
//! - [`corpus`]: where the committed fuzz corpora are, their replay in
//!   `cargo test` and the seeds' regeneration.
//! - [`redis_server`]: a private `redis-server` or Redis Cluster on
//!   loopback for the far-memory store's tests (killed on drop).
//! - [`retry_log`]: the line a retry after an emulation residue leaves for
//!   the test script's summary.
//!
//! Dependencies: std, thiserror and tempfile only; no unsafe code.

#![forbid(unsafe_code)]

pub mod corpus;
pub mod countdown;
mod counters;
pub mod redis_server;
pub mod retry_log;
pub mod scratch;
pub mod size;
pub mod stats;
pub mod sync;
pub mod threads;
pub mod tier;

pub use countdown::{Countdown, Sabotage};
pub use size::{ByteSize, SizeError};
pub use stats::{median, percentile};
pub use sync::{lock, read, write, Stop};

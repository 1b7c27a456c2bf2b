//! Choosing a store: [`StoreKind`] and [`open`].

use super::backend::Store;
use super::error::StoreError;
use super::{file, lz4, memory, redis};
use std::path::PathBuf;

/// Which store to open.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A swap file created in `dir`.
    File {
        /// Directory for the file (must not be tmpfs if `direct`).
        dir: PathBuf,
        /// Open with `O_DIRECT` (bypass the host page cache).
        direct: bool,
    },
    /// Uncompressed copies in memory.
    Memory,
    /// lz4-compressed copies in memory.
    Lz4,
    /// Far memory: a Redis server or cluster.
    Redis {
        /// `redis://HOST:PORT[/DB]`, or several comma-separated nodes of one
        /// cluster (a single node of a cluster is enough).
        url: String,
    },
}

impl StoreKind {
    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Memory => "memory",
            Self::Lz4 => "lz4",
            Self::Redis { .. } => "redis",
        }
    }

    /// Whether the store is reached over the network.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Redis { .. })
    }
}

/// Opens a store of `kind` with `capacity` slots; a remote one with
/// `timeout` on every request.
pub fn open(
    kind: &StoreKind,
    capacity: u32,
    timeout: std::time::Duration,
) -> Result<Box<dyn Store>, StoreError> {
    Ok(match kind {
        StoreKind::File { dir, direct } => {
            Box::new(file::FileStore::create(dir, capacity, *direct)?)
        }
        StoreKind::Memory => Box::new(memory::MemoryStore::new(capacity)),
        StoreKind::Lz4 => Box::new(lz4::Lz4Store::new(capacity)),
        StoreKind::Redis { url } => Box::new(redis::RedisStore::open_with(
            url,
            capacity,
            redis::keys::RunId::fresh(),
            timeout,
        )?),
    })
}

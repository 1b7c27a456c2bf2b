//! Backing stores: where evicted pages go.
//!
//! One trait, [`Store`], addressed by [`Slot`] (the core owns the slot
//! allocator, so every store sees the same slot numbers and the same
//! next-fit layout). Implementations:
//! - [`file::FileStore`]: a swap file, one 4 KiB block per slot, optional
//!   `O_DIRECT`, deleted on drop; freed slots are hole-punched.
//! - [`memory::MemoryStore`]: plain copies in host memory.
//! - [`lz4::Lz4Store`]: lz4-compressed copies in host memory (zram-like).
//! - [`faulty::FaultyStore`]: wraps any store and fails on demand (tests).
//!
//! Stores are `Sync`: several handler threads read while the evictor writes.
//! The core guarantees that one slot is never accessed concurrently (a slot
//! belongs to one page and page operations are serialized by the page lock).

pub mod faulty;
pub mod file;
pub mod lz4;
pub mod memory;

use crate::slots::Slot;
use crate::PAGE_SIZE;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The buffer handed to the store is not one page long.
    #[error("buffer of {0} bytes is not one page")]
    BadBuffer(usize),
}

/// A backing store for evicted pages.
pub trait Store: Send + Sync {
    /// Short name (`file`, `memory`, `lz4`).
    fn kind(&self) -> &'static str;
    /// Number of slots.
    fn capacity(&self) -> u32;
    /// Stores one page (`page.len() == PAGE_SIZE`) in `slot`, replacing any
    /// previous content. On error the slot content is unspecified.
    fn write(&self, slot: Slot, page: &[u8]) -> Result<(), StoreError>;
    /// Reads the page in `slot` into `buf` (`buf.len() == PAGE_SIZE`).
    fn read(&self, slot: Slot, buf: &mut [u8]) -> Result<(), StoreError>;
    /// Forgets the page in `slot` and releases its space.
    fn discard(&self, slot: Slot);
    /// Bytes of backing medium in use (compressed size for lz4).
    fn bytes_used(&self) -> u64;
}

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
}

impl StoreKind {
    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Memory => "memory",
            Self::Lz4 => "lz4",
        }
    }
}

/// Opens a store of `kind` with `capacity` slots.
pub fn open(kind: &StoreKind, capacity: u32) -> Result<Box<dyn Store>, StoreError> {
    Ok(match kind {
        StoreKind::File { dir, direct } => {
            Box::new(file::FileStore::create(dir, capacity, *direct)?)
        }
        StoreKind::Memory => Box::new(memory::MemoryStore::new(capacity)),
        StoreKind::Lz4 => Box::new(lz4::Lz4Store::new(capacity)),
    })
}

/// One page-aligned page buffer (suitable for `O_DIRECT`).
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct AlignedPage(pub [u8; PAGE_SIZE]);

impl AlignedPage {
    /// A zeroed page on the heap.
    pub fn boxed() -> Box<Self> {
        Box::new(Self([0; PAGE_SIZE]))
    }
}

/// Per-slot occupancy plus a running count (shared by the stores).
#[derive(Debug)]
pub(crate) struct Occupancy {
    used: Vec<AtomicBool>,
    count: AtomicU64,
}

impl Occupancy {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            used: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn check(&self, slot: Slot) -> Result<(), StoreError> {
        if slot.index() < self.used.len() {
            Ok(())
        } else {
            Err(StoreError::OutOfRange {
                slot: slot.0,
                capacity: self.used.len() as u32,
            })
        }
    }

    pub(crate) fn set(&self, slot: Slot) {
        if !self.used[slot.index()].swap(true, Ordering::AcqRel) {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Clears the slot; returns whether it was set.
    pub(crate) fn clear(&self, slot: Slot) -> bool {
        let was =
            slot.index() < self.used.len() && self.used[slot.index()].swap(false, Ordering::AcqRel);
        if was {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        was
    }

    pub(crate) fn is_set(&self, slot: Slot) -> bool {
        self.used[slot.index()].load(Ordering::Acquire)
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

pub(crate) fn check_len(len: usize) -> Result<(), StoreError> {
    if len == PAGE_SIZE {
        Ok(())
    } else {
        Err(StoreError::BadBuffer(len))
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn page(seed: u8) -> Vec<u8> {
        (0..PAGE_SIZE)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Round trip, overwrite, discard, bounds: the contract every store meets.
    pub fn exercise(store: &dyn Store) {
        let cap = store.capacity();
        let mut buf = vec![0u8; PAGE_SIZE];
        assert!(matches!(
            store.read(Slot(0), &mut buf),
            Err(StoreError::Empty(0))
        ));
        for s in 0..cap.min(8) {
            store.write(Slot(s), &page(s as u8)).unwrap();
        }
        for s in 0..cap.min(8) {
            store.read(Slot(s), &mut buf).unwrap();
            assert_eq!(buf, page(s as u8), "slot {s}");
        }
        store.write(Slot(1), &page(99)).unwrap();
        store.read(Slot(1), &mut buf).unwrap();
        assert_eq!(buf, page(99));
        assert!(store.bytes_used() > 0);
        let before = store.bytes_used();
        store.discard(Slot(1));
        assert!(store.bytes_used() < before);
        assert!(matches!(
            store.read(Slot(1), &mut buf),
            Err(StoreError::Empty(1))
        ));
        assert!(matches!(
            store.write(Slot(cap), &page(0)),
            Err(StoreError::OutOfRange { .. })
        ));
        assert!(matches!(
            store.write(Slot(0), &page(0)[..100]),
            Err(StoreError::BadBuffer(100))
        ));
        for s in 0..cap.min(8) {
            store.discard(Slot(s));
        }
        assert_eq!(store.bytes_used(), 0);
    }
}

//! Backing stores: where evicted pages go.
//!
//! One trait, [`Store`], addressed by [`Slot`](crate::slots::Slot) (the core owns the slot
//! allocator, so every store sees the same slot numbers and the same
//! next-fit layout). Implementations:
//! - [`file::FileStore`]: a swap file, one 4 KiB block per slot, optional
//!   `O_DIRECT`, deleted on drop; freed slots are hole-punched.
//! - [`memory::MemoryStore`]: plain copies in host memory.
//! - [`lz4::Lz4Store`]: lz4-compressed copies in host memory (zram-like).
//! - [`redis::RedisStore`]: far memory, one key per slot on a Redis server
//!   or spread over a Redis Cluster.
//! - [`faulty::FaultyStore`]: wraps any store and fails on demand (tests).
//!
//! Stores are `Sync`: several handler threads read while the evictor writes.
//! The core guarantees that one slot is never accessed concurrently (a slot
//! belongs to one page and page operations are serialized by the page lock).

mod backend;
mod error;
pub mod faulty;
pub mod file;
mod kind;
pub mod lz4;
pub mod memory;
mod occupancy;
pub mod redis;

pub use backend::{AlignedPage, Store, StoreNode, MAX_BATCH_PAGES};
pub use error::StoreError;
pub use kind::{open, StoreKind};

#[cfg(test)]
pub(crate) mod testutil {
    use super::{Store, StoreError};
    use crate::page::PAGE_SIZE;
    use crate::slots::Slot;

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

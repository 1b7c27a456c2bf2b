//! What every store implements and shares: the [`Store`] trait, the page buffer
//! it moves, and the buffer-length check.

use super::error::StoreError;
use crate::page::PAGE_SIZE;
use crate::slots::Slot;

/// Most pages a store is asked to take in one batch: 128 KiB, one pipeline
/// to a remote store. Faults that need one of them wait for the whole batch,
/// so it stays small.
pub const MAX_BATCH_PAGES: usize = 32;

/// A backing store for evicted pages.
pub trait Store: Send + Sync {
    /// Short name (`file`, `memory`, `lz4`, `redis`).
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

    /// Pages worth sending in one [`Store::write_batch`] or
    /// [`Store::read_batch`]: 1 for a local store (a batch saves nothing and
    /// would hold the batch's page locks longer: the core then writes and
    /// reads one page at a time, as before batches existed), more for a
    /// store that pays a round trip per request.
    fn batch_pages(&self) -> usize {
        1
    }

    /// Stores several pages, as [`Store::write`] each. A remote store sends
    /// them in one round trip. On error any page of the batch may or may not
    /// be stored: the caller trusts none of them.
    fn write_batch(&self, pages: &[(Slot, &[u8])]) -> Result<(), StoreError> {
        pages
            .iter()
            .try_for_each(|(slot, page)| self.write(*slot, page))
    }

    /// Reads several pages, as [`Store::read`] each (one round trip for a
    /// remote store). On error no buffer of the batch may be used.
    fn read_batch(&self, reads: &mut [(Slot, &mut [u8])]) -> Result<(), StoreError> {
        reads
            .iter_mut()
            .try_for_each(|(slot, buf)| self.read(*slot, buf))
    }

    /// Pages held per server, for a store spread over several (empty for a
    /// local store).
    fn nodes(&self) -> Result<Vec<StoreNode>, StoreError> {
        Ok(Vec::new())
    }

    /// Releases what the store holds outside this process (a remote store's
    /// keys) before the store is dropped, so a failure can be reported.
    /// Dropping the store does it too; calling it twice is harmless.
    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Pages one server of a distributed store holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreNode {
    /// The server, as `redis://HOST:PORT`.
    pub node: String,
    /// Pages of this run it holds.
    pub pages: u64,
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

/// Checks that a buffer handed to a store is one page long.
pub(crate) fn check_len(len: usize) -> Result<(), StoreError> {
    if len == PAGE_SIZE {
        Ok(())
    } else {
        Err(StoreError::BadBuffer(len))
    }
}

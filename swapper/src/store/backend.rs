//! What every store implements and shares: the [`Store`] trait, the page buffer
//! it moves, and the buffer-length check.

use super::error::StoreError;
use crate::page::PAGE_SIZE;
use crate::slots::Slot;

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
